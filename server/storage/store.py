"""``EmbeddedStore``: market data persisted in ClickHouse's engine running in this process (chdb).

Synchronous and thread-safe (one chdb session guarded by a lock); no asyncio inside: the service calls it
from a worker thread. ``EmbeddedStore.open(data_dir)`` creates the directory and applies the migrations
in ``migrations/clickhouse``; a later ``open`` of the same directory (after a restart) finds the data.
chdb allows one open data directory per process: close a store before opening another path.

Writes: ``write_batch`` splits records by type and inserts each table with ONE bulk
``INSERT ... FORMAT ArrowStream`` (see ``codec``). Every table is a ReplacingMergeTree keyed on the
record's identity and every read uses ``FINAL``, so writing a record again (replay, restart, retry) never
shows it twice. Candles carry a ``version`` stamped here (monotonic across restarts: at least the largest
stored version + 1, else the wall clock in ns), so the last write of a candle -- e.g. a correction --
wins.

Reads: ``candles``, ``trades`` and ``replay`` (merged event-time order across tables, keyset-paginated
per table in bounded chunks; see ``Store``).
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Final, NamedTuple, Self

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from server.engine.candles import Candle, Interval
from server.engine.events import Trade
from server.storage import wire_sql
from server.storage._chdb import ChdbConnection, Params, StorageError, param_str, param_str_array
from server.storage.codec import (
    ALL_KINDS,
    RECORD_KINDS,
    SPECS,
    Columns,
    Kind,
    StoredRecord,
    TableSpec,
    candle_row,
    decode,
    encode,
    pricing_row,
)
from server.storage.migrations import MIGRATIONS_DIR, apply_migrations

_REPLAY_RANK: Final = {
    Kind.BOOK_SNAPSHOTS: 0,
    Kind.BOOK_DELTAS: 1,
    Kind.QUOTES: 2,
    Kind.TRADES: 3,
    Kind.CANDLES: 4,
    Kind.PRICING: 5,
}
_DIRECT_KINDS: Final = (Kind.TRADES, Kind.QUOTES, Kind.BOOK_SNAPSHOTS, Kind.BOOK_DELTAS)
"""Kinds whose record tuples are already rows of their table."""

# Expression used in ORDER BY / keyset comparisons for an order column whose stored type differs.
_ORDER_EXPR: Final = {"kind": "CAST(kind, 'Int8')"}
_ORDER_TYPE: Final = {"kind": "Int8"}

WIRE_KINDS: Final = (Kind.BOOK_SNAPSHOTS, Kind.BOOK_DELTAS, Kind.QUOTES, Kind.TRADES)
"""Kinds ``replay_wire`` encodes in SQL (the high-volume ones); candles and pricing go through records."""
_W = wire_sql
_WIRE_SELECT: Final = {
    # ts, rank, symbol, venue, tie-breaks (s1, i1..i4, u1) as in the record merge, book?, BookUpdate key,
    # fields before / after the book sequence (a trade is all "tail").
    Kind.BOOK_SNAPSHOTS: f"ts_event, 0, symbol, venue, '', seq, 0, 0, 0, content_hash, 1, {_W.SNAPSHOT_KEY}, "
                         f"{_W.SNAPSHOT_BODY[0]}, {_W.SNAPSHOT_BODY[1]}",
    Kind.BOOK_DELTAS: f"ts_event, 1, symbol, venue, '', first_seq, seq, 0, 0, content_hash, 1, {_W.DELTA_KEY}, "
                      f"{_W.DELTA_BODY[0]}, {_W.DELTA_BODY[1]}",
    Kind.QUOTES: f"ts_event, 2, symbol, venue, '', bid_price, bid_size, ask_price, ask_size, 0, 1, "
                 f"{_W.SNAPSHOT_KEY}, {_W.QUOTE_BODY[0]}, {_W.QUOTE_BODY[1]}",
    Kind.TRADES: f"ts_event, 3, symbol, venue, trade_id, 0, 0, 0, 0, dedup_key, 0, 0, '', {_W.TRADE_BODY}",
}
_WIRE_COLUMNS: Final = "ts, rank, symbol, venue, s1, i1, i2, i3, i4, u1, is_book, bkey, head, tail"
_WIRE_ORDER: Final = "ts, rank, symbol, venue, s1, i1, i2, i3, i4, u1"


class WirePage(NamedTuple):
    """Replay items of ``[lo, hi)`` in replay order: ``frames[i]`` is a ``ReplayStreamResponse.updates``
    item (field 2, framed) whose event time is ``ts[i]``. Empty pages are yielded too, so a caller can
    merge other kinds window by window."""

    lo: int
    hi: int
    ts: list[int]
    frames: list[bytes]


def _check_range(start_ns: int, end_ns: int, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if end_ns < start_ns:
        raise ValueError(f"end_ns {end_ns} < start_ns {start_ns}")


class EmbeddedStore:
    """The ``Store`` on an in-process ClickHouse engine (chdb) in one data directory."""

    def __init__(self, conn: ChdbConnection, data_dir: Path) -> None:
        """Use ``EmbeddedStore.open``."""
        self._conn = conn
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._last_version = 0

    # -- lifecycle

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, migrations_dir: Path = MIGRATIONS_DIR) -> Self:
        """Open (creating if needed) the store in ``data_dir`` and bring its schema up to date."""
        path = Path(data_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        conn = ChdbConnection(path)
        try:
            apply_migrations(conn, migrations_dir)
            for function in wire_sql.FUNCTIONS:
                conn.execute(function)
            store = cls(conn, path)
            latest = conn.fetch_column("SELECT max(version) FROM candles")
            store._last_version = int(str(latest[0])) if latest else 0
        except BaseException:
            conn.close()
            raise
        return store

    def flush(self) -> None:
        """Nothing to do: every ``write_batch`` is a completed, visible insert."""
        with self._lock:
            if self._conn.closed:
                raise StorageError("the store is closed")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes

    def write_batch(self, records: Sequence[object]) -> int:
        """Insert the storable records, one bulk insert per table; returns the number of rows written.

        Records of other types are skipped. Raises StorageError when a value does not fit its column or
        the engine fails; a failed batch may be retried as a whole (rows replace by identity).
        """
        groups: dict[Kind, list[Any]] = {}
        kinds = RECORD_KINDS
        for rec in records:
            kind = kinds.get(type(rec))
            if kind is not None:
                groups.setdefault(kind, []).append(rec)
        if not groups:
            return 0
        written = 0
        with self._lock:
            for kind, recs in groups.items():
                spec = SPECS[kind]
                if kind in _DIRECT_KINDS:
                    rows = recs
                elif kind is Kind.CANDLES:
                    rows = [candle_row(c, self._next_version()) for c in recs]
                else:
                    rows = [pricing_row(r) for r in recs]
                payload = encode(spec, rows)
                written += self._conn.insert_arrow_stream(spec.table, spec.columns, payload)
        return written

    def _next_version(self) -> int:
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    # -- queries

    def candles(
        self,
        venue: str,
        symbol: str,
        interval: Interval,
        start_ns: int,
        end_ns: int,
        limit: int | None = None,
        *,
        latest: bool = False,
    ) -> list[Candle]:
        _check_range(start_ns, end_ns, limit)
        spec = SPECS[Kind.CANDLES]
        direction = "DESC" if latest else "ASC"
        sql = (
            f"SELECT {', '.join(spec.select)} FROM candles FINAL "
            "WHERE venue = {venue:String} AND symbol = {symbol:String} AND interval = {interval:UInt8} "
            "AND open_time >= {lo:Int64} AND open_time < {hi:Int64} "
            f"ORDER BY open_time {direction}" + (f" LIMIT {int(limit)}" if limit is not None else "")
        )
        params: Params = {
            "venue": param_str(venue),
            "symbol": param_str(symbol),
            "interval": int(interval),
            "lo": start_ns,
            "hi": end_ns,
        }
        out = [c for c in decode(spec, self._query(sql, params))[0] if isinstance(c, Candle)]
        if latest:
            out.reverse()
        return out

    def trades(
        self,
        symbol: str,
        start_ns: int,
        end_ns: int,
        venue: str | None = None,
        limit: int | None = None,
        *,
        latest: bool = False,
    ) -> list[Trade]:
        _check_range(start_ns, end_ns, limit)
        spec = SPECS[Kind.TRADES]
        params: Params = {"symbol": param_str(symbol), "lo": start_ns, "hi": end_ns}
        where = "symbol = {symbol:String} AND ts_event >= {lo:Int64} AND ts_event < {hi:Int64}"
        if venue is not None:
            where += " AND venue = {venue:String}"
            params["venue"] = param_str(venue)
        d = "DESC" if latest else "ASC"
        sql = (
            f"SELECT {', '.join(spec.select)} FROM trades FINAL WHERE {where} "
            f"ORDER BY ts_event {d}, venue {d}, trade_id {d}, dedup_key {d}"
            + (f" LIMIT {int(limit)}" if limit is not None else "")
        )
        out = [t for t in decode(spec, self._query(sql, params))[0] if isinstance(t, Trade)]
        if latest:
            out.reverse()
        return out

    def replay(
        self,
        symbols: Collection[str] | None,
        kinds: Collection[str] | None,
        start_ns: int,
        end_ns: int,
        chunk: int = 50_000,
    ) -> Iterator[list[StoredRecord]]:
        """See ``Store.replay``. Each table is read in keyset pages of at most ``chunk`` rows over an
        adaptive time window, and the tables are merged lazily (``heapq.merge``)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        _check_range(start_ns, end_ns, None)
        selected = ALL_KINDS
        if kinds is not None:
            try:
                selected = tuple(sorted({Kind(k) for k in kinds}, key=ALL_KINDS.index))
            except ValueError as exc:
                known = [k.value for k in ALL_KINDS]
                raise ValueError(f"unknown kind in {sorted(kinds)!r}; known: {known}") from exc
        syms = None if symbols is None else sorted(set(symbols))
        if syms is not None and not syms:
            return
        pagers = [self._pages(SPECS[k], syms, start_ns, end_ns, chunk) for k in selected]
        if len(pagers) == 1:  # one table: its pages are already in order, only re-cut them
            buf: list[StoredRecord] = []
            for recs, _ in pagers[0]:
                buf.extend(recs)
                while len(buf) >= chunk:
                    yield buf[:chunk]
                    del buf[:chunk]
            if buf:
                yield buf
            return
        streams = [self._keyed(SPECS[k], pager) for k, pager in zip(selected, pagers, strict=True)]
        # Merge keys are unique (kind rank + a unique key per table), so records are never compared.
        merged = (rec for _, rec in heapq.merge(*streams))
        while batch := list(islice(merged, chunk)):
            yield batch

    def replay_wire(
        self,
        symbols: Collection[str],
        kinds: Collection[str],
        start_ns: int,
        end_ns: int,
        *,
        venues: Collection[str] = (),
        chunk: int = 50_000,
    ) -> Iterator[WirePage]:
        """Trades and book updates of ``[start_ns, end_ns)`` encoded by the storage engine, in the order of
        ``replay``: pages of about ``chunk`` items over adaptive time windows, every window yielded.

        Book items carry the stream's own sequence per (venue, symbol), counted from 1 across pages, as
        ``server.service.replay`` numbers them. ``kinds`` are ``WIRE_KINDS`` values; ``venues`` filters
        (empty: all).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        _check_range(start_ns, end_ns, None)
        selected = [k for k in WIRE_KINDS if k.value in set(kinds)]
        syms = sorted(set(symbols))
        if not selected or not syms:
            return
        where = ["ts_event >= {lo:Int64}", "ts_event < {hi:Int64}", "symbol IN {symbols:Array(String)}"]
        base: Params = {"symbols": param_str_array(syms)}
        if venues:
            where.append("venue IN {venues:Array(String)}")
            base["venues"] = param_str_array(sorted(set(venues)))
        cond = " AND ".join(where)
        union = " UNION ALL ".join(
            f"SELECT {_WIRE_SELECT[k]} FROM {k.value} FINAL WHERE {cond}" for k in selected)
        o = _WIRE_ORDER
        # One nesting level per length prefix (see wire_sql). Book sequences: the count so far per book
        # (cityHash64 of venue and symbol) plus the row number within this window.
        sql = (
            f"SELECT ts, bk, seq, mds_pb_ld({{item:UInt8}}, upd) AS frame FROM ("
            f" SELECT {o}, bk, seq, mds_pb_ld(if(is_book, {{book:UInt8}}, {{trade:UInt8}}), mid) AS upd FROM ("
            f"  SELECT {o}, bk, seq, is_book, if(is_book, mds_pb_ld(bkey, inner), inner) AS mid FROM ("
            f"   SELECT {o}, bk, seq, is_book, bkey,"
            f"    if(is_book, concat(head, char({{seqkey:UInt8}}), mds_pb_varint(seq), tail), tail) AS inner FROM ("
            f"    SELECT {o}, is_book, bkey, head, tail, if(is_book, cityHash64(venue, symbol), 0) AS bk,"
            f"     if(is_book, transform(bk, {{ok:Array(UInt64)}}, {{ov:Array(UInt64)}}, toUInt64(0))"
            f"      + row_number() OVER (PARTITION BY is_book, venue, symbol ORDER BY {o}), 0) AS seq"
            f"    FROM ({union}) AS u ({_WIRE_COLUMNS})))))"
            f" ORDER BY {o} LIMIT {{limit:UInt64}}"
        )
        fixed: Params = {**base, "item": wire_sql.ITEM_KEY, "book": wire_sql.BOOK_KEY, "trade": wire_sql.TRADE_KEY,
                         "seqkey": wire_sql.SEQUENCE_KEY}
        total = sum(self._count(SPECS[k], where, {**base, "lo": start_ns, "hi": end_ns}) for k in selected)
        if total == 0:
            yield WirePage(start_ns, end_ns, [], [])
            return
        offsets: dict[int, int] = {}
        span = max(1, (end_ns - start_ns) * chunk // total)
        lo = start_ns
        while lo < end_ns:
            hi = min(end_ns, lo + span)
            # A one-nanosecond window is taken whole, however many rows it holds.
            limit = 4 * chunk + 1 if hi - lo > 1 else 2**62
            params: Params = {**fixed, "lo": lo, "hi": hi, "limit": limit,
                              "ok": "[" + ",".join(map(str, offsets)) + "]",
                              "ov": "[" + ",".join(map(str, offsets.values())) + "]"}
            table = self._query(sql, params)
            if table.num_rows > 4 * chunk and hi - lo > 1:
                span = max(1, (hi - lo) // 4)  # too dense: a smaller window, same start
                continue
            if table.num_rows:
                books = table.filter(pc.greater(table.column("seq"), 0))
                if books.num_rows:
                    last = books.group_by("bk").aggregate([("seq", "max")])
                    for bk, seq in zip(last.column("bk").to_pylist(), last.column("seq_max").to_pylist(), strict=True):
                        offsets[int(bk)] = int(seq)
            yield WirePage(lo, hi, table.column("ts").to_pylist(),
                           table.column("frame").cast(pa.binary()).to_pylist())
            lo = hi
            if table.num_rows < chunk // 2:
                span *= 2

    @staticmethod
    def _keyed(
        spec: TableSpec, pages: Iterator[tuple[list[StoredRecord], Columns]]
    ) -> Iterator[tuple[tuple[Any, ...], StoredRecord]]:
        """(merge key, record) pairs: key = (event time, kind rank, rest of the table's order)."""
        rank = _REPLAY_RANK[spec.kind]
        for recs, keys in pages:
            yield from zip(zip(keys[0], repeat(rank, len(recs)), *keys[1:], strict=True), recs, strict=True)

    def _pages(
        self, spec: TableSpec, symbols: list[str] | None, start_ns: int, end_ns: int, chunk: int
    ) -> Iterator[tuple[list[StoredRecord], Columns]]:
        """Pages of at most ``chunk`` rows of one table in its replay order: (records, order columns)."""
        order_cols = [name for name, _ in spec.order]
        order_exprs = [_ORDER_EXPR.get(c, c) for c in order_cols]
        order_types = [_ORDER_TYPE.get(c, t) for c, t in spec.order]
        t = spec.time_column
        base: Params = {}
        where = [f"{t} >= {{lo:Int64}}", f"{t} < {{hi:Int64}}"]
        if symbols is not None:
            where.append("symbol IN {symbols:Array(String)}")
            base["symbols"] = param_str_array(symbols)
        select = ", ".join((*spec.select, *order_exprs))
        order_by = ", ".join(order_exprs)
        placeholders = ", ".join(f"{{k{i}:{typ}}}" for i, typ in enumerate(order_types))
        keyset = f"({order_by}) > ({placeholders})"
        sql_first = (
            f"SELECT {select} FROM {spec.table} FINAL WHERE {' AND '.join(where)} "
            f"ORDER BY {order_by} LIMIT {chunk}"
        )
        sql_next = (
            f"SELECT {select} FROM {spec.table} FINAL WHERE {' AND '.join([*where, keyset])} "
            f"ORDER BY {order_by} LIMIT {chunk}"
        )
        # Adaptive window: aim at about `chunk` rows per window from the table's density in the range.
        total = self._count(spec, where, {**base, "lo": start_ns, "hi": end_ns})
        if total == 0:
            return
        span = max(1, (end_ns - start_ns) * chunk // total)
        lo = start_ns
        cursor: list[Any] | None = None
        while lo < end_ns:
            hi = min(end_ns, lo + span)
            params: Params = {**base, "lo": lo, "hi": hi}
            if cursor is None:
                table = self._query(sql_first, params)
            else:
                for i, (v, typ) in enumerate(zip(cursor, order_types, strict=True)):
                    params[f"k{i}"] = param_str(v) if typ == "String" else int(v)
                table = self._query(sql_next, params)
            recs, keys = decode(spec, table, extra=len(order_cols))
            if recs:
                yield recs, keys
            if len(recs) >= chunk:  # the window holds more: continue after the last row, in a smaller window
                cursor = [col[-1] for col in keys]
                lo = int(cursor[0])
                span = max(1, span // 2)
            else:  # the window is exhausted
                cursor = None
                lo = hi
                if len(recs) < chunk // 2:
                    span *= 2

    # -- helpers

    def _count(self, spec: TableSpec, where: list[str], params: Params) -> int:
        sql = f"SELECT count() FROM {spec.table} WHERE {' AND '.join(where)}"
        with self._lock:
            values = self._conn.fetch_column(sql, params)
        return int(str(values[0])) if values else 0

    def _query(self, sql: str, params: Params) -> Any:
        with self._lock:
            return self._conn.query_arrow(sql, params)
