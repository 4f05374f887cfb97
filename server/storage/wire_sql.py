"""Protobuf wire encoding written in ClickHouse SQL: a max-speed replay has the storage engine encode
trades and book updates, vectorized, instead of building one Python message per record.

``FUNCTIONS`` are SQL user-defined functions (``CREATE OR REPLACE FUNCTION mds_pb_*``), applied when a
store opens: ``mds_pb_varint`` (base-128 varint of a UInt64; negative Int64 values are two's complement,
as protobuf writes int64), ``mds_pb_zz`` (zigzag for sint64), and field writers that omit default values,
as protobuf's own serializer does, so the bytes equal ``SerializeToString`` of the same message.

The expressions below build each record's ``MarketDataUpdate`` body; ``frame_sql`` wraps a body with the
book sequence into the ``updates`` item of a ``ReplayStreamResponse`` (field 2). Field numbers come from
the generated descriptors, so a contract change cannot leave this file silently wrong (a test compares
the bytes with ``server.service.convert``).

Each length-prefix level of a record is computed in its own subquery, so the query stays small to analyse
(a query costs tens of milliseconds to plan: replay reads pages of 100k rows).
"""

from __future__ import annotations

from typing import Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from marketdata.v1 import book_pb2, common_pb2, market_data_service_pb2, trade_pb2

_VARINT_BYTES: Final = " + ".join(f"(v >= {1 << (7 * k)})" for k in range(1, 10))
_VARINT_CHARS: Final = ", ".join(
    f"bitOr(bitAnd(bitShiftRight(v, {7 * k}), 127), if(v >= {1 << (7 * (k + 1))}, 128, 0))"
    if k < 9 else "bitShiftRight(v, 63)"
    for k in range(10)
)

# ``arrayMap(v -> ..., [x])[1]`` binds an argument once: a UDF body that repeats its argument would copy
# the argument's whole expression at every use when inlined, and the query analysis time would explode.
FUNCTIONS: Final[tuple[str, ...]] = (
    "CREATE OR REPLACE FUNCTION mds_pb_varint AS (x) -> arrayElement(arrayMap(v -> if(v < 128, char(v), "
    f"substring(char({_VARINT_CHARS}), 1, 1 + {_VARINT_BYTES})), [toUInt64(x)]), 1)",
    "CREATE OR REPLACE FUNCTION mds_pb_zz AS (x) -> "
    "arrayElement(arrayMap(v -> bitXor(bitShiftLeft(v, 1), bitShiftRight(v, 63)), [toInt64(x)]), 1)",
    "CREATE OR REPLACE FUNCTION mds_pb_ld AS (key, payload) -> "
    "arrayElement(arrayMap(p -> concat(char(key), mds_pb_varint(length(p)), p), [payload]), 1)",
    "CREATE OR REPLACE FUNCTION mds_pb_str AS (key, v) -> if(v = '', '', mds_pb_ld(key, v))",
    "CREATE OR REPLACE FUNCTION mds_pb_int AS (key, v) -> if(v = 0, '', concat(char(key), mds_pb_varint(v)))",
    "CREATE OR REPLACE FUNCTION mds_pb_sint AS (key, v) -> "
    "if(v = 0, '', concat(char(key), mds_pb_varint(mds_pb_zz(v))))",
)
"""Applied by ``EmbeddedStore.open`` (idempotent)."""


def _key(message: Descriptor, name: str) -> int:
    """The one-byte key (field number << 3 | wire type) of a field; all fields used here are < 16."""
    field = message.fields_by_name[name]
    wire = 2 if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE,
                               FieldDescriptor.TYPE_BYTES) else 0
    key = field.number << 3 | wire
    assert key < 128, f"{message.name}.{name}: a field number >= 16 needs a two-byte key"
    return key


def _field(message: Descriptor, name: str, expr: str) -> str:
    """A writer for scalar field ``name`` of ``message`` from SQL ``expr`` (omitted when default)."""
    field = message.fields_by_name[name]
    key = _key(message, name)
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"mds_pb_str({key}, {expr})"
    if field.type == FieldDescriptor.TYPE_SINT64:
        return f"mds_pb_sint({key}, {expr})"
    return f"mds_pb_int({key}, {expr})"


_TRADE = trade_pb2.Trade.DESCRIPTOR
_SNAPSHOT = book_pb2.BookSnapshot.DESCRIPTOR
_DELTA = book_pb2.BookDelta.DESCRIPTOR
_LEVEL = book_pb2.PriceLevel.DESCRIPTOR
_BOOK_UPDATE = book_pb2.BookUpdate.DESCRIPTOR
_UPDATE = market_data_service_pb2.MarketDataUpdate.DESCRIPTOR
_RESPONSE = market_data_service_pb2.ReplayStreamResponse.DESCRIPTOR

CONSISTENT: Final = int(book_pb2.BOOK_STATUS_CONSISTENT)
CROSSED: Final = int(book_pb2.BOOK_STATUS_CROSSED)
assert [int(v) for v in (common_pb2.SIDE_UNSPECIFIED, common_pb2.SIDE_BUY, common_pb2.SIDE_SELL)] == [0, 1, 2], \
    "stored sides (engine Side) are written as they are"


def _levels(message: Descriptor, name: str, prices: str, sizes: str) -> str:
    """A repeated PriceLevel field from two parallel arrays."""
    key = _key(message, name)
    level = f"concat({_field(_LEVEL, 'price', 'p')}, {_field(_LEVEL, 'size', 's')})"
    return f"arrayStringConcat(arrayMap((p, s) -> mds_pb_ld({key}, {level}), {prices}, {sizes}))"


def _status(bid_prices: str, bid_sizes: str, ask_prices: str, ask_sizes: str) -> str:
    """BOOK_STATUS_CROSSED when the best bid >= the best ask (zero sizes ignored), else CONSISTENT."""
    best_bid = f"arrayMax(arrayFilter((p, s) -> s != 0, {bid_prices}, {bid_sizes}))"
    best_ask = f"arrayMin(arrayFilter((p, s) -> s != 0, {ask_prices}, {ask_sizes}))"
    has = f"arrayExists(s -> s != 0, {bid_sizes}) AND arrayExists(s -> s != 0, {ask_sizes})"
    return f"if({has} AND {best_bid} >= {best_ask}, {CROSSED}, {CONSISTENT})"


TRADE_BODY: Final = "concat(" + ", ".join([
    _field(_TRADE, "venue", "venue"), _field(_TRADE, "symbol", "symbol"), _field(_TRADE, "trade_id", "trade_id"),
    _field(_TRADE, "price", "price"), _field(_TRADE, "size", "size"), _field(_TRADE, "side", "side"),
    _field(_TRADE, "ts_event_ns", "ts_event"), _field(_TRADE, "ts_recv_ns", "ts_recv"),
]) + ")"
"""Trade fields, from a ``trades`` row."""


def _book_body(message: Descriptor, bids: tuple[str, str], asks: tuple[str, str], venue_seq: str,
               status: str) -> tuple[str, str]:
    """(fields before ``sequence``, fields after it) of a BookSnapshot or BookDelta: the sequence is the
    replay stream's own and is written between them."""
    head = f"concat({_field(message, 'venue', 'venue')}, {_field(message, 'symbol', 'symbol')})"
    tail = "concat(" + ", ".join([
        _field(message, "venue_sequence", venue_seq),
        _levels(message, "bids", *bids), _levels(message, "asks", *asks),
        _field(message, "status", status),
        _field(message, "ts_event_ns", "ts_event"), _field(message, "ts_recv_ns", "ts_recv"),
    ]) + ")"
    return head, tail


SNAPSHOT_BODY: Final = _book_body(_SNAPSHOT, ("bids.price", "bids.size"), ("asks.price", "asks.size"), "seq",
                                  _status("bids.price", "bids.size", "asks.price", "asks.size"))
"""A ``book_snapshots`` row as a BookSnapshot (status from its levels, as ``convert`` computes it)."""
DELTA_BODY: Final = _book_body(_DELTA, ("bids.price", "bids.size"), ("asks.price", "asks.size"), "seq",
                               str(CONSISTENT))
"""A ``book_deltas`` row as a BookDelta (status CONSISTENT, as the record path replays it)."""
_Q_BID = ("if(bid_size != 0, [bid_price], [])", "if(bid_size != 0, [bid_size], [])")
_Q_ASK = ("if(ask_size != 0, [ask_price], [])", "if(ask_size != 0, [ask_size], [])")
QUOTE_BODY: Final = _book_body(
    _SNAPSHOT, _Q_BID, _Q_ASK, "0",
    f"if(bid_size != 0 AND ask_size != 0 AND bid_price != 0 AND ask_price != 0 AND bid_price >= ask_price, "
    f"{CROSSED}, {CONSISTENT})")
"""A ``quotes`` row as a one-level BookSnapshot (venue_sequence 0), as ``convert.quote_book_pb``."""

TRADE_KEY: Final = _key(_UPDATE, "trade")
BOOK_KEY: Final = _key(_UPDATE, "book")
SNAPSHOT_KEY: Final = _key(_BOOK_UPDATE, "snapshot")
DELTA_KEY: Final = _key(_BOOK_UPDATE, "delta")
ITEM_KEY: Final = _key(_RESPONSE, "updates")
SEQUENCE_KEYS: Final = {SNAPSHOT_KEY: _key(_SNAPSHOT, "sequence"), DELTA_KEY: _key(_DELTA, "sequence")}
assert len(set(SEQUENCE_KEYS.values())) == 1
SEQUENCE_KEY: Final = SEQUENCE_KEYS[SNAPSHOT_KEY]
