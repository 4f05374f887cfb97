"""Engine records <-> columnar (Apache Arrow) batches, one table spec per stored record type.

Writes: a list of records becomes ONE ``pyarrow.RecordBatch`` per table (the records' tuples are
converted by pyarrow in C, via a struct array), serialized as an Arrow IPC stream and inserted with
``INSERT ... FORMAT ArrowStream``: the fastest path measured with chdb (~2.5-3M rows/s for the insert
itself; TSV text ~1.1M rows/s, Python-built VALUES slower still). A ClickHouse server accepts the same
batches (clickhouse-connect ``insert_arrow``).

Exactness: Int64 columns travel as Arrow int64 (pyarrow raises on a Python int out of range, never
wraps). Int128 columns (candle volumes) travel as decimal *strings* that ClickHouse parses into Int128,
because Arrow has no 128-bit integer and ClickHouse silently wraps an out-of-range Int128; the range is
checked here first. Reads select Int128 columns through ``toString`` for the same reason.

Reads: the ``select`` list of each spec returns columns in the order of the record's constructor, and
``decode`` builds records from an Arrow table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]

from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Level, Quote, Side, Trade, TradingStatusChange
from server.engine.pricing import FundingRate, IndexPrice, IndexSource, MarkPrice
from server.storage._chdb import StorageError
from server.storage.dead_letters import DeadLetterRecord

INT128_MIN: Final = -(1 << 127)
INT128_MAX: Final = (1 << 127) - 1


class Kind(StrEnum):
    """A stored record kind; the value is its table name."""

    TRADES = "trades"
    QUOTES = "quotes"
    BOOK_SNAPSHOTS = "book_snapshots"
    BOOK_DELTAS = "book_deltas"
    CANDLES = "candles"
    PRICING = "pricing"
    DEAD_LETTERS = "dead_letters"
    TRADING_STATUS = "trading_status"


ALL_KINDS: Final[tuple[Kind, ...]] = (
    Kind.TRADES, Kind.QUOTES, Kind.BOOK_SNAPSHOTS, Kind.BOOK_DELTAS, Kind.CANDLES, Kind.PRICING)
"""The market data kinds: what ``replay`` reads. The service's own records (dead letters, trading status,
migration 0002) are written by ``write_batch`` too, and read by their own queries."""

PricingRecord = IndexPrice | MarkPrice | FundingRate
StoredRecord = Trade | Quote | BookSnapshot | BookDelta | Candle | IndexPrice | MarkPrice | FundingRate
"""The engine records the store persists; other records passed to ``write_batch`` are skipped."""

RECORD_KINDS: Final[dict[type, Kind]] = {
    Trade: Kind.TRADES,
    Quote: Kind.QUOTES,
    BookSnapshot: Kind.BOOK_SNAPSHOTS,
    BookDelta: Kind.BOOK_DELTAS,
    Candle: Kind.CANDLES,
    IndexPrice: Kind.PRICING,
    MarkPrice: Kind.PRICING,
    FundingRate: Kind.PRICING,
    DeadLetterRecord: Kind.DEAD_LETTERS,
    TradingStatusChange: Kind.TRADING_STATUS,
}

_LEVELS = pa.list_(pa.struct([("price", pa.int64()), ("size", pa.int64())]))
_SIDES: Final = {int(s): s for s in Side}
_INTERVALS: Final = {int(i): i for i in Interval}


Columns = list[list[Any]]
"""Query result columns as Python lists, in ``TableSpec.select`` order."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """How one record kind is stored.

    ``columns``/``arrow_type``: the inserted columns (materialized ones are computed by ClickHouse).
    ``select``: the read expressions, in the order ``decode`` expects. ``time_column`` is the event time
    used by range queries and replay; ``order``: a unique ordering of the rows (a permutation of the
    sorting key, time first) used for keyset pagination, with the ClickHouse types of its columns.
    """

    kind: Kind
    columns: tuple[str, ...]
    arrow_type: Any
    select: tuple[str, ...]
    time_column: str
    order: tuple[tuple[str, str], ...]
    decode_columns: Callable[[Columns], list[Any]]
    schema: Any = field(init=False, repr=False, compare=False)
    """The Arrow schema of the inserted columns."""
    by_column: bool = field(init=False, repr=False, compare=False)
    """Encoded column by column (tables with list columns: book levels) rather than as row structs."""
    schema_message: bytes = field(init=False, repr=False, compare=False)
    """The schema as a serialized Arrow IPC message: the head of every insert's stream."""

    @property
    def table(self) -> str:
        return self.kind.value

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", pa.schema(list(self.arrow_type)))
        object.__setattr__(self, "by_column", any(pa.types.is_list(f.type) for f in self.arrow_type))
        object.__setattr__(self, "schema_message", self.schema.serialize().to_pybytes())


def _levels(prices: Columns, sizes: Columns) -> list[tuple[Level, ...]]:
    return [tuple(zip(p, s, strict=True)) for p, s in zip(prices, sizes, strict=True)]


def _trades(c: Columns) -> list[StoredRecord]:
    sides = _SIDES
    c[5] = [sides[x] for x in c[5]]
    return list(map(Trade._make, zip(*c, strict=True)))


def _quotes(c: Columns) -> list[StoredRecord]:
    return list(map(Quote._make, zip(*c, strict=True)))


def _snapshots(c: Columns) -> list[StoredRecord]:
    cols = [*c[:3], _levels(c[3], c[4]), _levels(c[5], c[6]), *c[7:]]
    return list(map(BookSnapshot._make, zip(*cols, strict=True)))


def _deltas(c: Columns) -> list[StoredRecord]:
    cols = [*c[:4], _levels(c[4], c[5]), _levels(c[6], c[7]), *c[8:]]
    return list(map(BookDelta._make, zip(*cols, strict=True)))


def _candles(c: Columns) -> list[StoredRecord]:
    intervals = _INTERVALS
    c[2] = [intervals[x] for x in c[2]]
    for i in (9, 10, 11, 12):  # Int128 read as decimal strings
        c[i] = [int(x) for x in c[i]]
    return list(map(Candle._make, zip(*c, strict=True)))


def _pricing_row(r: tuple[Any, ...]) -> PricingRecord:
    kind, symbol, ts, value, index_price, premium, interest, next_ft, countdown, interval_ns, comps = r
    if kind == "index":
        sources = tuple(
            IndexSource(
                c["venue"], c["symbol"], c["price"], c["weight"], c["included"], c["exclusion_reason"]
            )
            for c in comps
        )
        return IndexPrice(symbol, value, sources, ts)
    if kind == "mark":
        return MarkPrice(symbol, value, index_price, premium, ts)
    return FundingRate(symbol, value, premium, interest, next_ft, countdown, interval_ns, ts)


def _pricing(c: Columns) -> list[StoredRecord]:
    return [_pricing_row(r) for r in zip(*c, strict=True)]


def _dead_letters(c: Columns) -> list[DeadLetterRecord]:
    return list(map(DeadLetterRecord._make, zip(*c, strict=True)))


def _trading_status(c: Columns) -> list[TradingStatusChange]:
    return list(map(TradingStatusChange._make, zip(*c, strict=True)))


_BOOK_COMMON = (("ts_event", "Int64"), ("symbol", "String"), ("venue", "String"))

SPECS: Final[dict[Kind, TableSpec]] = {
    Kind.TRADES: TableSpec(
        Kind.TRADES,
        ("venue", "symbol", "trade_id", "price", "size", "side", "ts_event", "ts_recv"),
        pa.struct(
            [
                ("venue", pa.string()),
                ("symbol", pa.string()),
                ("trade_id", pa.string()),
                ("price", pa.int64()),
                ("size", pa.int64()),
                ("side", pa.int8()),
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
            ]
        ),
        ("venue", "symbol", "trade_id", "price", "size", "side", "ts_event", "ts_recv"),
        "ts_event",
        (*_BOOK_COMMON, ("trade_id", "String"), ("dedup_key", "UInt64")),
        _trades,
    ),
    Kind.QUOTES: TableSpec(
        Kind.QUOTES,
        ("venue", "symbol", "bid_price", "bid_size", "ask_price", "ask_size", "ts_event", "ts_recv"),
        pa.struct(
            [
                ("venue", pa.string()),
                ("symbol", pa.string()),
                ("bid_price", pa.int64()),
                ("bid_size", pa.int64()),
                ("ask_price", pa.int64()),
                ("ask_size", pa.int64()),
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
            ]
        ),
        ("venue", "symbol", "bid_price", "bid_size", "ask_price", "ask_size", "ts_event", "ts_recv"),
        "ts_event",
        (
            *_BOOK_COMMON,
            ("bid_price", "Int64"),
            ("bid_size", "Int64"),
            ("ask_price", "Int64"),
            ("ask_size", "Int64"),
        ),
        _quotes,
    ),
    Kind.BOOK_SNAPSHOTS: TableSpec(
        Kind.BOOK_SNAPSHOTS,
        ("venue", "symbol", "seq", "bids", "asks", "ts_event", "ts_recv"),
        pa.struct(
            [
                ("venue", pa.string()),
                ("symbol", pa.string()),
                ("seq", pa.int64()),
                ("bids", _LEVELS),
                ("asks", _LEVELS),
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
            ]
        ),
        (
            "venue",
            "symbol",
            "seq",
            "bids.price",
            "bids.size",
            "asks.price",
            "asks.size",
            "ts_event",
            "ts_recv",
        ),
        "ts_event",
        (*_BOOK_COMMON, ("seq", "Int64"), ("content_hash", "UInt64")),
        _snapshots,
    ),
    Kind.BOOK_DELTAS: TableSpec(
        Kind.BOOK_DELTAS,
        ("venue", "symbol", "first_seq", "seq", "bids", "asks", "ts_event", "ts_recv"),
        pa.struct(
            [
                ("venue", pa.string()),
                ("symbol", pa.string()),
                ("first_seq", pa.int64()),
                ("seq", pa.int64()),
                ("bids", _LEVELS),
                ("asks", _LEVELS),
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
            ]
        ),
        (
            "venue",
            "symbol",
            "first_seq",
            "seq",
            "bids.price",
            "bids.size",
            "asks.price",
            "asks.size",
            "ts_event",
            "ts_recv",
        ),
        "ts_event",
        (*_BOOK_COMMON, ("first_seq", "Int64"), ("seq", "Int64"), ("content_hash", "UInt64")),
        _deltas,
    ),
    Kind.CANDLES: TableSpec(
        Kind.CANDLES,
        (
            "venue",
            "symbol",
            "interval",
            "open_time",
            "close_time",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "buy_volume",
            "sell_volume",
            "trade_count",
            "closed",
            "correction",
            "ts_event",
            "ts_recv",
            "version",
        ),
        pa.struct(
            [
                ("venue", pa.string()),
                ("symbol", pa.string()),
                ("interval", pa.uint8()),
                ("open_time", pa.int64()),
                ("close_time", pa.int64()),
                ("open", pa.int64()),
                ("high", pa.int64()),
                ("low", pa.int64()),
                ("close", pa.int64()),
                ("volume", pa.string()),
                ("quote_volume", pa.string()),
                ("buy_volume", pa.string()),
                ("sell_volume", pa.string()),
                ("trade_count", pa.uint64()),
                ("closed", pa.bool_()),
                ("correction", pa.bool_()),
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
                ("version", pa.uint64()),
            ]
        ),
        (
            "venue",
            "symbol",
            "interval",
            "open_time",
            "close_time",
            "open",
            "high",
            "low",
            "close",
            "toString(volume)",
            "toString(quote_volume)",
            "toString(buy_volume)",
            "toString(sell_volume)",
            "trade_count",
            "closed",
            "correction",
            "ts_event",
            "ts_recv",
        ),
        "ts_event",
        (*_BOOK_COMMON, ("interval", "UInt8"), ("open_time", "Int64")),
        _candles,
    ),
    Kind.PRICING: TableSpec(
        Kind.PRICING,
        (
            "kind",
            "symbol",
            "ts",
            "value",
            "index_price",
            "premium",
            "interest_rate",
            "next_funding_time",
            "countdown_ns",
            "interval_ns",
            "components",
        ),
        pa.struct(
            [
                ("kind", pa.string()),
                ("symbol", pa.string()),
                ("ts", pa.int64()),
                ("value", pa.int64()),
                ("index_price", pa.int64()),
                ("premium", pa.int64()),
                ("interest_rate", pa.int64()),
                ("next_funding_time", pa.int64()),
                ("countdown_ns", pa.int64()),
                ("interval_ns", pa.int64()),
                (
                    "components",
                    pa.list_(
                        pa.struct(
                            [
                                ("venue", pa.string()),
                                ("symbol", pa.string()),
                                ("price", pa.int64()),
                                ("weight", pa.int64()),
                                ("included", pa.bool_()),
                                ("exclusion_reason", pa.string()),
                            ]
                        )
                    ),
                ),
            ]
        ),
        (
            "toString(kind)",
            "symbol",
            "ts",
            "value",
            "index_price",
            "premium",
            "interest_rate",
            "next_funding_time",
            "countdown_ns",
            "interval_ns",
            "components",
        ),
        "ts",
        (("ts", "Int64"), ("symbol", "String"), ("kind", "String"), ("next_funding_time", "Int64")),
        _pricing,
    ),
    Kind.DEAD_LETTERS: TableSpec(
        Kind.DEAD_LETTERS,
        DeadLetterRecord._fields,
        pa.struct(
            [
                ("feed", pa.string()),
                ("source", pa.string()),
                ("location", pa.string()),
                ("reason_code", pa.string()),
                ("reason", pa.string()),
                ("raw", pa.string()),
                ("raw_length", pa.uint64()),
                ("ts_recv", pa.int64()),
                ("ts_source", pa.int64()),
                ("seq", pa.uint64()),
            ]
        ),
        DeadLetterRecord._fields,
        "ts_recv",
        (("ts_recv", "Int64"), ("feed", "String"), ("seq", "UInt64")),
        _dead_letters,
    ),
    Kind.TRADING_STATUS: TableSpec(
        Kind.TRADING_STATUS,
        ("venue", "symbol", "halted", "reason", "ts_event", "ts_recv", "version"),
        pa.struct(
            [
                ("venue", pa.string()),
                ("symbol", pa.string()),
                ("halted", pa.bool_()),
                ("reason", pa.string()),
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
                ("version", pa.uint64()),
            ]
        ),
        ("venue", "symbol", "halted", "reason", "ts_event", "ts_recv"),
        "ts_event",
        (("ts_event", "Int64"), ("venue", "String"), ("symbol", "String"), ("halted", "Bool"),
         ("reason", "String")),
        _trading_status,
    ),
}


def _int128(value: int, what: str) -> str:
    if not INT128_MIN <= value <= INT128_MAX:
        raise StorageError(f"{what} {value} does not fit Int128")
    return str(value)


def candle_row(c: Candle, version: int) -> tuple[Any, ...]:
    """A candle as a row of the ``candles`` table (Int128 columns as checked decimal strings)."""
    return (
        c.venue,
        c.symbol,
        int(c.interval),
        c.open_time,
        c.close_time,
        c.open,
        c.high,
        c.low,
        c.close,
        _int128(c.volume, "candle volume"),
        _int128(c.quote_volume, "candle quote_volume"),
        _int128(c.buy_volume, "candle buy_volume"),
        _int128(c.sell_volume, "candle sell_volume"),
        c.trade_count,
        c.closed,
        c.correction,
        c.ts_event,
        c.ts_recv,
        version,
    )


def pricing_row(r: PricingRecord) -> tuple[Any, ...]:
    """An index / mark / funding record as a row of the ``pricing`` table."""
    if isinstance(r, IndexPrice):
        return ("index", r.symbol, r.ts, r.price, 0, 0, 0, 0, 0, 0, r.components)
    if isinstance(r, MarkPrice):
        return ("mark", r.symbol, r.ts, r.mark_price, r.index_price, r.premium_ema, 0, 0, 0, 0, ())
    return (
        "funding",
        r.symbol,
        r.ts,
        r.rate,
        0,
        r.premium_rate,
        r.interest_rate,
        r.next_funding_time,
        r.countdown_ns,
        r.interval_ns,
        (),
    )


def trading_status_row(ev: TradingStatusChange, version: int) -> tuple[Any, ...]:
    """A trading status change as a row of the ``trading_status`` table."""
    return (ev.venue, ev.symbol, ev.halted, ev.reason, ev.ts_event, ev.ts_recv, version)


ENCODE_CHUNK_ROWS = 512
"""Rows per Arrow record batch of one insert's stream. Each batch is one C call that holds the GIL, so the
event loop (same process) waits at most that long for the storage thread; 512 rows take well under 1 ms."""


def record_messages(spec: TableSpec, rows: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """Rows (tuples in ``spec.columns`` order) as serialized Arrow IPC record batch messages of at most
    ``ENCODE_CHUNK_ROWS`` rows each (``stream`` frames them for one insert).

    Raises StorageError when a value does not fit its column (e.g. a price beyond Int64).
    """
    arrow_type = spec.arrow_type
    schema = spec.schema
    out: list[bytes] = []
    for start in range(0, len(rows), ENCODE_CHUNK_ROWS):
        chunk = rows[start:start + ENCODE_CHUNK_ROWS]
        try:
            if spec.by_column:
                # Book levels: column by column is ~4.5x faster than a struct array of rows (one-off measurement).
                columns = list(zip(*chunk, strict=True))
                arrays = [pa.array(c, type=f.type) for c, f in zip(columns, arrow_type, strict=True)]
                batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
            else:  # flat rows: a struct array of the tuples is fastest (~2M rows/s)
                batch = pa.RecordBatch.from_struct_array(pa.array(chunk, type=arrow_type))
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise StorageError(f"cannot encode {spec.table} rows: {exc}") from exc
        out.append(batch.serialize().to_pybytes())
    return out


_END_OF_STREAM: Final = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def stream(spec: TableSpec, messages: Sequence[bytes]) -> bytes:
    """Record batch messages of ``spec``'s table as one Arrow IPC stream (schema, batches, end): a join."""
    return b"".join((spec.schema_message, *messages, _END_OF_STREAM))


def encode(spec: TableSpec, rows: Sequence[tuple[Any, ...]]) -> bytes:
    """Rows (tuples in ``spec.columns`` order) as one Arrow IPC stream (``record_messages`` + ``stream``).

    Raises StorageError when a value does not fit its column (e.g. a price beyond Int64).
    """
    return stream(spec, record_messages(spec, rows))


def decode(spec: TableSpec, table: Any, extra: int = 0) -> tuple[list[Any], Columns]:
    """Records of an Arrow result whose columns are ``spec.select`` then ``extra`` more columns.

    Returns the records and the extra columns (what keyset pagination and merging need).
    """
    n = len(spec.select)
    cols: Columns = [table.column(i).to_pylist() for i in range(n + extra)]
    return spec.decode_columns(cols[:n]), cols[n:]
