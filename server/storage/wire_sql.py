"""Replay responses encoded by the storage engine: ClickHouse's own Protobuf output format, with the
contract itself (protos/marketdata/v1) as its schema.

A max-speed replay of trades and book updates has chdb write each row as a ``MarketDataUpdate``
(``formatRowNoNewline('Protobuf', ...)`` over columns named by field path, e.g. ``trade.price``), framed as a
``ReplayStreamResponse.updates`` item and joined per response message. ClickHouse omits default values
and all-default nested messages as protobuf's own serializer does, so the bytes equal
``SerializeToString`` of the same messages (a test compares them with ``server.service.convert``).

The column paths and types are derived from the generated descriptors, so a renamed or retyped field
fails here rather than writing something else; the byte tests catch the rest.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from marketdata.v1 import book_pb2, common_pb2, market_data_service_pb2, trade_pb2

PROTO_DIR: Final = Path(__file__).resolve().parents[2] / "protos" / "marketdata" / "v1"
"""The contract's source files (the schema chdb is given)."""

_CH_TYPES: Final = {
    FieldDescriptor.TYPE_STRING: "String",
    FieldDescriptor.TYPE_SINT64: "Int64",
    FieldDescriptor.TYPE_INT64: "Int64",
    FieldDescriptor.TYPE_UINT64: "UInt64",
    FieldDescriptor.TYPE_ENUM: "Int32",
    FieldDescriptor.TYPE_BOOL: "Bool",
}


@cache
def schema_text() -> str:
    """Every contract file joined into one self-contained proto3 file (all share package marketdata.v1)."""
    parts = ['syntax = "proto3";', "package marketdata.v1;"]
    parts.extend(re.sub(r"^(syntax|package|import|option) .*$", "", path.read_text(), flags=re.M)
                 for path in sorted(PROTO_DIR.glob("*.proto")))
    return "\n".join(parts)


SCHEMA_FILE: Final = "format_schemas/marketdata_v1.proto"
"""Where a store writes ``schema_text()``, under its data directory (chdb reads schemas from files; the
inline ``format_schema_source = 'string'`` would cache a copy under the process's working directory)."""


def write_schema(data_dir: Path) -> Path:
    """Write the joined contract under ``data_dir`` (replacing an older one); its absolute path.

    ValueError for a directory whose path a SQL string literal cannot hold as it is (a quote or a
    backslash)."""
    path = data_dir / SCHEMA_FILE
    if "'" in str(path) or "\\" in str(path):
        raise ValueError(f"the data directory's path may not hold a quote or a backslash: {data_dir}")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = schema_text()
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def settings(schema: Path, message: str) -> str:
    """The SETTINGS clause item that selects ``message`` of the schema file ``schema`` (``write_schema``'s)."""
    return f"format_schema = '{schema}:{message}'"


_TRADE = trade_pb2.Trade.DESCRIPTOR
_SNAPSHOT = book_pb2.BookSnapshot.DESCRIPTOR
_DELTA = book_pb2.BookDelta.DESCRIPTOR
_LEVEL = book_pb2.PriceLevel.DESCRIPTOR
_BOOK_UPDATE = book_pb2.BookUpdate.DESCRIPTOR
_UPDATE = market_data_service_pb2.MarketDataUpdate.DESCRIPTOR
_RESPONSE = market_data_service_pb2.ReplayStreamResponse.DESCRIPTOR
UPDATE_MESSAGE: Final = _UPDATE.name

assert [f.name for f in _LEVEL.fields] == ["price", "size"]
LEVELS: Final = "Array(Tuple(price Int64, size Int64))"
"""Stored book levels; written as repeated PriceLevel."""
_DEFAULTS: Final = {"String": "''", "Int64": "0", "UInt64": "0", "Int32": "0", "Bool": "false", LEVELS: "[]"}


def _columns(path: str, message: Descriptor, values: dict[str, str], when: str) -> list[str]:
    """``expr AS `path.field``` for each field of ``message`` in ``values`` (a SQL expression each), the
    field's default where ``when`` is false: a message whose fields are all defaults is not written."""
    out: list[str] = []
    for name, expr in values.items():
        f = message.fields_by_name[name]
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            assert f.message_type is _LEVEL and f.is_repeated, name
            kind = LEVELS
        else:
            kind = _CH_TYPES[f.type]
        out.append(f"if({when}, CAST({expr}, '{kind}'), {_DEFAULTS[kind]}) AS `{path}.{name}`")
    return out


def update_columns(kind: str, trade: dict[str, str], book: dict[str, str]) -> str:
    """The SELECT list of a ``MarketDataUpdate`` per row: ``trade`` where ``kind`` is 3, the book
    ``snapshot`` where it is 0 or 2 (a quote is a one-level snapshot), the ``delta`` where it is 1."""
    trade_field = _UPDATE.fields_by_name["trade"]
    book_field = _UPDATE.fields_by_name["book"]
    assert trade_field.message_type is _TRADE and book_field.message_type is _BOOK_UPDATE
    snapshot = _BOOK_UPDATE.fields_by_name["snapshot"]
    delta = _BOOK_UPDATE.fields_by_name["delta"]
    assert snapshot.message_type is _SNAPSHOT and delta.message_type is _DELTA
    return ", ".join([
        *_columns(trade_field.name, _TRADE, trade, f"{kind} = 3"),
        *_columns(f"{book_field.name}.{snapshot.name}", _SNAPSHOT, book, f"{kind} IN (0, 2)"),
        *_columns(f"{book_field.name}.{delta.name}", _DELTA, book, f"{kind} = 1"),
    ])


ITEM_KEY: Final = _RESPONSE.fields_by_name["updates"].number << 3 | 2
"""The key byte of a ``ReplayStreamResponse.updates`` item (length-delimited)."""
assert _RESPONSE.fields_by_name["updates"].message_type is _UPDATE and ITEM_KEY < 128

CONSISTENT: Final = int(book_pb2.BOOK_STATUS_CONSISTENT)
CROSSED: Final = int(book_pb2.BOOK_STATUS_CROSSED)
assert [int(v) for v in (common_pb2.SIDE_UNSPECIFIED, common_pb2.SIDE_BUY, common_pb2.SIDE_SELL)] == [0, 1, 2], \
    "stored sides (engine Side) are written as they are"


def book_status(bids: str, asks: str) -> str:
    """BOOK_STATUS_CROSSED when the best bid >= the best ask (zero sizes ignored), else CONSISTENT, from
    two arrays of (price, size) tuples."""
    best_bid = f"arrayMax(arrayMap(l -> l.1, arrayFilter(l -> l.2 != 0, {bids})))"
    best_ask = f"arrayMin(arrayMap(l -> l.1, arrayFilter(l -> l.2 != 0, {asks})))"
    has = f"arrayExists(l -> l.2 != 0, {bids}) AND arrayExists(l -> l.2 != 0, {asks})"
    return f"if({has} AND {best_bid} >= {best_ask}, {CROSSED}, {CONSISTENT})"
