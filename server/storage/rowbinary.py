"""ClickHouse RowBinary encoding of the most frequent stored records: trades, book deltas, book snapshots
and quotes, for ``INSERT ... FORMAT RowBinary``.

The service encodes what it stores on its event loop, in steps (``server.runtime.PREPARE_RECORDS``).
Through Arrow (``codec.record_messages``) a step of 256 records held the loop about 0.8 ms. mypyc compiles
this module with the engine (``scripts/build_native.py``), and then a record costs a fraction of a
microsecond. Interpreted it is slower than Arrow, so the store uses it only when it is compiled
(``COMPILED``).

Rows are the records themselves, in the columns order of their table (migrations/clickhouse/0001_init.sql):
``LowCardinality(String)`` and ``String`` as a varint length and UTF-8 bytes, ``Int64`` as 8 bytes and
``Int8`` as 1 byte little-endian, ``Array(Tuple(Int64, Int64))`` as a varint count and the pairs. A
number that does not fit its column raises ValueError naming the column, as the Arrow path refuses it.
Levels are tuples, as ``server.engine.events`` declares them: compiled, a list is a TypeError, which the
store reports like any record it cannot encode.

It also holds the two loops over every record the store sorts before encoding (``of_types``,
``group_by_type``), compiled for the same reason.
"""

from __future__ import annotations

from typing import Final, TypeVar

from librt.strings import BytesWriter, write_i64_le
from mypy_extensions import i64, u8

K = TypeVar("K")

COMPILED: Final = not __file__.endswith(".py")
"""True when this module runs as mypyc's extension (then faster than Arrow), False when interpreted."""

_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1
_SHORT_MAX: Final = (1 << 62) - 1
"""Compiled, an int within +-_SHORT_MAX is a tagged machine word and compares with a constant that fits
one as a machine comparison; _I64_MIN and _I64_MAX take the big-integer path. Numbers within it skip
the full range check (as in ``server.service.wire``)."""

TradeRow = tuple[str, str, str, int, int, int, int, int]
BookDeltaRow = tuple[str, str, int, int, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], int, int]
BookSnapshotRow = tuple[str, str, int, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...], int, int]
QuoteRow = tuple[str, str, int, int, int, int, int, int]


def of_types(records: list[object], types: dict[type, K]) -> list[object]:
    """A new list of the records whose exact type is a key of ``types``, in order."""
    return [r for r in records if type(r) in types]


def group_by_type(records: list[object], types: dict[type, K]) -> dict[K, list[object]]:
    """The records whose exact type is a key of ``types``, grouped by its value, each group in order."""
    groups: dict[K, list[object]] = {}
    for r in records:
        kind = types.get(type(r))
        if kind is not None:
            group = groups.get(kind)
            if group is None:
                groups[kind] = [r]
            else:
                group.append(r)
    return groups


def _uvarint(out: BytesWriter, n: i64) -> None:
    while n > 0x7F:
        out.append(u8((n & 0x7F) | 0x80))
        n >>= 7
    out.append(u8(n))


def _string(out: BytesWriter, s: str) -> None:
    b = s.encode()
    _uvarint(out, len(b))
    out.write(b)


def _int64(out: BytesWriter, n: int, column: str) -> None:
    if -_SHORT_MAX <= n <= _SHORT_MAX:
        write_i64_le(out, i64(n))
        return
    if n < _I64_MIN or n > _I64_MAX:
        raise ValueError(f"{column} does not fit Int64: {n}")
    write_i64_le(out, i64(n))


def _levels(out: BytesWriter, levels: tuple[tuple[int, int], ...], column: str) -> None:
    _uvarint(out, len(levels))
    for price, size in levels:
        _int64(out, price, column)
        _int64(out, size, column)


def _book_tail(out: BytesWriter, seq: int, bids: tuple[tuple[int, int], ...], asks: tuple[tuple[int, int], ...],
               ts_event: int, ts_recv: int) -> None:
    """The columns both book tables end with: seq, bids, asks, ts_event, ts_recv."""
    _int64(out, seq, "seq")
    _levels(out, bids, "bids")
    _levels(out, asks, "asks")
    _int64(out, ts_event, "ts_event")
    _int64(out, ts_recv, "ts_recv")


def trades(rows: list[TradeRow]) -> bytes:
    """Trades as RowBinary rows of (venue, symbol, trade_id, price, size, side, ts_event, ts_recv)."""
    out = BytesWriter()
    for venue, symbol, trade_id, price, size, side, ts_event, ts_recv in rows:
        _string(out, venue)
        _string(out, symbol)
        _string(out, trade_id)
        _int64(out, price, "price")
        _int64(out, size, "size")
        if side < -128 or side > 127:
            raise ValueError(f"side does not fit Int8: {side}")
        out.append(u8(side & 0xFF))  # Int8: two's complement
        _int64(out, ts_event, "ts_event")
        _int64(out, ts_recv, "ts_recv")
    return out.getvalue()


def book_deltas(rows: list[BookDeltaRow]) -> bytes:
    """Book deltas as RowBinary rows of (venue, symbol, first_seq, seq, bids, asks, ts_event, ts_recv)."""
    out = BytesWriter()
    for venue, symbol, first_seq, seq, bids, asks, ts_event, ts_recv in rows:
        _string(out, venue)
        _string(out, symbol)
        _int64(out, first_seq, "first_seq")
        _book_tail(out, seq, bids, asks, ts_event, ts_recv)
    return out.getvalue()


def book_snapshots(rows: list[BookSnapshotRow]) -> bytes:
    """Book snapshots as RowBinary rows of (venue, symbol, seq, bids, asks, ts_event, ts_recv)."""
    out = BytesWriter()
    for venue, symbol, seq, bids, asks, ts_event, ts_recv in rows:
        _string(out, venue)
        _string(out, symbol)
        _book_tail(out, seq, bids, asks, ts_event, ts_recv)
    return out.getvalue()


def quotes(rows: list[QuoteRow]) -> bytes:
    """Quotes as RowBinary rows of (venue, symbol, bid_price, bid_size, ask_price, ask_size, ts_event,
    ts_recv)."""
    out = BytesWriter()
    for venue, symbol, bid_price, bid_size, ask_price, ask_size, ts_event, ts_recv in rows:
        _string(out, venue)
        _string(out, symbol)
        _int64(out, bid_price, "bid_price")
        _int64(out, bid_size, "bid_size")
        _int64(out, ask_price, "ask_price")
        _int64(out, ask_size, "ask_size")
        _int64(out, ts_event, "ts_event")
        _int64(out, ts_recv, "ts_recv")
    return out.getvalue()
