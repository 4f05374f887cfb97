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

The service's own records go through ``write_batch`` too: ``DeadLetterRecord`` (table ``dead_letters``,
read by ``dead_letters``) and ``TradingStatusChange`` (table ``trading_status``, stamped with the same
version sequence as candles so the last change applied wins; ``trading_status`` reads the latest per
instrument).

Reads: ``candles``, ``trades`` and ``replay`` (merged event-time order across tables, keyset-paginated
per table in bounded chunks; see ``Store``).
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Final, NamedTuple, Self

from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Trade, TradingStatusChange
from server.storage import rowbinary
from server.storage._chdb import ChdbConnection, Params, StorageError, param_str, param_str_array
from server.storage.codec import (
    ALL_KINDS,
    ENCODE_CHUNK_ROWS,
    RECORD_KINDS,
    SPECS,
    Columns,
    Kind,
    StoredRecord,
    TableSpec,
    candle_row,
    decode,
    pricing_row,
    record_messages,
    stream,
    trading_status_row,
)
from server.storage.dead_letters import DeadLetterRecord
from server.storage.migrations import MIGRATIONS_DIR, apply_migrations

_REPLAY_RANK: Final = {
    Kind.BOOK_SNAPSHOTS: 0,
    Kind.BOOK_DELTAS: 1,
    Kind.QUOTES: 2,
    Kind.TRADES: 3,
    Kind.CANDLES: 4,
    Kind.PRICING: 5,
}
_DIRECT_KINDS: Final = (Kind.TRADES, Kind.QUOTES, Kind.BOOK_SNAPSHOTS, Kind.BOOK_DELTAS, Kind.DEAD_LETTERS)
"""Kinds whose record tuples are already rows of their table."""
_ROW_BINARY: Final[dict[Kind, Callable[[list[Any]], bytes]]] = {
    Kind.TRADES: rowbinary.trades,
    Kind.BOOK_DELTAS: rowbinary.book_deltas,
    Kind.BOOK_SNAPSHOTS: rowbinary.book_snapshots,
    Kind.QUOTES: rowbinary.quotes,
}
"""The tables written as RowBinary when ``rowbinary`` is compiled (their rows are the records themselves)."""

# Expression used in ORDER BY / keyset comparisons for an order column whose stored type differs.
_ORDER_EXPR: Final = {"kind": "CAST(kind, 'Int8')"}
_ORDER_TYPE: Final = {"kind": "Int8"}

ROW_KINDS: Final = (Kind.BOOK_SNAPSHOTS, Kind.BOOK_DELTAS, Kind.QUOTES, Kind.TRADES)
"""Kinds ``replay_rows`` reads as RowBinary rows (the high-volume ones), by replay rank; candles and pricing
go through records."""
ROW_SELECT: Final = {
    # Every row: ts_event, symbol, venue, then what its replay item needs (server.service.replay_codec).
    Kind.BOOK_SNAPSHOTS: "ts_event, symbol, venue, seq, bids, asks, ts_recv",
    Kind.BOOK_DELTAS: "ts_event, symbol, venue, seq, bids, asks, ts_recv",
    Kind.QUOTES: "ts_event, symbol, venue, bid_price, bid_size, ask_price, ask_size, ts_recv",
    Kind.TRADES: "ts_event, symbol, venue, trade_id, price, size, side, ts_recv",
}
"""The columns of each ``ROW_KINDS`` table that ``replay_rows`` reads, in RowBinary order."""


def _sorting_key(kind: Kind) -> str:
    """The table's sorting key: its replay order with symbol and venue first (time comes first there)."""
    names = [name for name, _ in SPECS[kind].order]
    return ", ".join(names[1:3] + names[:1] + names[3:])


class RowPage(NamedTuple):
    """One window ``[lo, hi)`` of a replay (``EmbeddedStore.replay_rows``). ``rows``: per ``ROW_KINDS``
    kind, its rows as RowBinary in the table's sorting-key order (symbol, venue, event time, the rest of
    the key); empty for a kind not replayed. ``extra``: ``(ts, framed item)`` of other kinds, in replay
    order."""

    lo: int
    hi: int
    rows: list[bytes]
    extra: list[tuple[int, bytes]]


ExtraItems = Callable[[int, int], list[tuple[int, bytes]]]
"""``(lo, hi) -> [(ts, framed item)]`` in order: items of other kinds (candles, pricing) to merge into a
page's ``[lo, hi)``; each goes after every trade and book update at or before its ``ts``."""


def _check_range(start_ns: int, end_ns: int, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if end_ns < start_ns:
        raise ValueError(f"end_ns {end_ns} < start_ns {start_ns}")


class PreparedRecords:
    """Records encoded for insertion (``EmbeddedStore.prepare``), per table: serialized Arrow record batch
    messages (``batches``; an insert joins them behind the table's schema), or, for the tables
    ``rowbinary`` encodes when it is compiled, RowBinary rows (``row_binary``)."""

    __slots__ = ("batches", "row_binary", "rows")

    def __init__(self) -> None:
        self.batches: dict[Kind, list[bytes]] = {}
        self.row_binary: dict[Kind, list[bytes]] = {}
        self.rows = 0


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
            store = cls(conn, path)
            latest = conn.fetch_column("SELECT greatest((SELECT max(version) FROM candles), "
                                       "(SELECT max(version) FROM trading_status))")
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
        return self.write_prepared([self.prepare(records)])

    @staticmethod
    def storable(records: list[object]) -> list[object]:
        """A new list of the records ``prepare`` stores (``RECORD_KINDS``), in order."""
        return rowbinary.of_types(records, RECORD_KINDS)

    def prepare(self, records: Sequence[object]) -> PreparedRecords:
        """Encode the storable records now (RowBinary pieces or Arrow record batch messages per table, each
        of at most ``ENCODE_CHUNK_ROWS`` rows), to be written later by
        ``write_prepared``. The service's engine task prepares records in steps as they come
        (``server.runtime.PREPARE_RECORDS``), so its storage thread runs almost no Python. Raises
        StorageError when a value does not fit its column."""
        groups: dict[Kind, list[Any]] = rowbinary.group_by_type(
            records if isinstance(records, list) else list(records), RECORD_KINDS)
        prepared = PreparedRecords()
        for kind, recs in groups.items():
            spec = SPECS[kind]
            row_binary = _ROW_BINARY.get(kind) if rowbinary.COMPILED else None
            if row_binary is not None:
                try:  # in pieces of ENCODE_CHUNK_ROWS: a compiled call holds the GIL throughout
                    prepared.row_binary[kind] = [row_binary(recs[i:i + ENCODE_CHUNK_ROWS])
                                                 for i in range(0, len(recs), ENCODE_CHUNK_ROWS)]
                except (OverflowError, TypeError, ValueError) as exc:
                    raise StorageError(f"cannot encode {spec.table} rows: {exc}") from exc
                prepared.rows += len(recs)
                continue
            if kind in _DIRECT_KINDS:
                rows = recs
            elif kind is Kind.CANDLES:
                rows = [candle_row(c, self._next_version()) for c in recs]
            elif kind is Kind.TRADING_STATUS:
                rows = [trading_status_row(t, self._next_version()) for t in recs]
            else:
                rows = [pricing_row(r) for r in recs]
            prepared.batches[kind] = record_messages(spec, rows)
            prepared.rows += len(rows)
        return prepared

    def write_prepared(self, prepared: Sequence[PreparedRecords]) -> int:
        """Insert prepared records, one bulk insert per table for all of them; returns the rows written."""
        tables: dict[Kind, list[bytes]] = {}
        row_tables: dict[Kind, list[bytes]] = {}
        for p in prepared:
            for kind, batches in p.batches.items():
                tables.setdefault(kind, []).extend(batches)
            for kind, pieces in p.row_binary.items():
                row_tables.setdefault(kind, []).extend(pieces)
        written = 0
        with self._lock:
            for kind, batches in tables.items():
                spec = SPECS[kind]
                written += self._conn.insert_arrow_stream(spec.table, spec.columns, stream(spec, batches))
            for kind, pieces in row_tables.items():
                spec = SPECS[kind]
                written += self._conn.insert_row_binary(spec.table, spec.columns, pieces)
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

    def replay_rows(
        self,
        symbols: Collection[str],
        kinds: Collection[str],
        start_ns: int,
        end_ns: int,
        *,
        venues: Collection[str] = (),
        chunk: int = 100_000,
        extra: ExtraItems | None = None,
        extra_kinds: Collection[str] = (),
    ) -> Iterator[RowPage]:
        """Trades and book updates of ``[start_ns, end_ns)`` as RowBinary rows (``RowPage``), window by
        window in time order, with the window's ``extra`` items (of ``extra_kinds``). Windows hold about
        ``chunk`` rows and items each (more only when one nanosecond holds more), sized by ``_windows``;
        time without any is skipped. Each table is read in its sorting-key order, so no query sorts:
        ``server.service.replay_codec`` merges the runs into ``replay``'s order. ``kinds`` are ``ROW_KINDS``
        values; ``venues`` filters them (empty: all).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        _check_range(start_ns, end_ns, None)
        wanted = set(kinds)
        selected = [k for k in ROW_KINDS if k.value in wanted]
        syms = sorted(set(symbols))
        if not syms or (not selected and extra is None) or start_ns == end_ns:
            return
        where = ["ts_event >= {lo:Int64}", "ts_event < {hi:Int64}", "symbol IN {symbols:Array(String)}"]
        base: Params = {"symbols": param_str_array(syms)}
        if venues:
            where.append("venue IN {venues:Array(String)}")
            base["venues"] = param_str_array(sorted(set(venues)))
        cond = " AND ".join(where)
        sql = {k: f"SELECT {ROW_SELECT[k]} FROM {k.value} FINAL WHERE {cond} ORDER BY {_sorting_key(k)} "
                  "SETTINGS max_threads = 1" for k in selected}
        counted = [SPECS[k] for k in selected]
        counted += [SPECS[Kind(k)] for k in sorted(set(extra_kinds)) if Kind(k) not in ROW_KINDS]
        for lo, hi, rows in self._windows(counted, base, start_ns, end_ns, chunk):
            window: Params = {**base, "lo": lo, "hi": hi}
            items = extra(lo, hi) if extra is not None else []
            data = [self._query_rows(sql[k], window) if k in sql and rows else b"" for k in ROW_KINDS]
            yield RowPage(lo, hi, data, items)

    _HISTOGRAM_BUCKETS: Final = 1024

    def _windows(self, specs: list[TableSpec], base: Params, lo: int, hi: int,
                 chunk: int) -> Iterator[tuple[int, int, int]]:
        """``(lo, hi, rows)`` windows in ``[lo, hi)``, in order, holding every row of ``specs``' tables there,
        of at most ``chunk`` rows unless one nanosecond holds more; time without rows is left out. One query
        counts the rows per bucket of a 1024-bucket histogram of the range (by symbol and time: an estimate,
        before deduplication and other filters); a bucket of more than ``chunk`` rows is split the same
        way."""
        width = -(-(hi - lo) // self._HISTOGRAM_BUCKETS)
        union = " UNION ALL ".join(
            f"SELECT {s.time_column} AS t FROM {s.table} WHERE {s.time_column} >= {{lo:Int64}} AND "
            f"{s.time_column} < {{hi:Int64}} AND symbol IN {{symbols:Array(String)}}" for s in specs)
        sql = (f"SELECT intDiv(t - {{lo:Int64}}, {{width:Int64}}) AS b, count() AS n FROM ({union}) "
               "GROUP BY b ORDER BY b")
        table = self._query(sql, {"symbols": base["symbols"], "lo": lo, "hi": hi, "width": width})
        start, rows = lo, 0
        for b, n in zip(table.column("b").to_pylist(), table.column("n").to_pylist(), strict=True):
            b_lo = lo + b * width
            if rows and (rows + n > chunk or (n > chunk and width > 1)):
                yield start, b_lo, rows
                rows = 0
            if rows == 0:
                start = b_lo
            if n > chunk and width > 1:
                b_hi = min(hi, b_lo + width)
                yield from self._windows(specs, base, b_lo, b_hi, chunk)
                start = b_hi
                continue
            rows += n
        if rows:
            yield start, hi, rows

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

    # -- the service's own records (migration 0002)

    def dead_letters(self, feed: str = "", start_ns: int = 0, end_ns: int = 2**63 - 1, limit: int = 100,
                     code: str = "") -> list[DeadLetterRecord]:
        """Stored dead letters of ``feed`` ('' any) with reason code ``code`` ('' any) and
        ``start_ns <= ts_recv < end_ns``: the newest ``limit``, newest first."""
        _check_range(start_ns, end_ns, limit)
        spec = SPECS[Kind.DEAD_LETTERS]
        where = ["ts_recv >= {lo:Int64}", "ts_recv < {hi:Int64}"]
        params: Params = {"lo": start_ns, "hi": end_ns}
        if feed:
            where.append("feed = {feed:String}")
            params["feed"] = param_str(feed)
        if code:
            where.append("reason_code = {code:String}")
            params["code"] = param_str(code)
        sql = (f"SELECT {', '.join(spec.select)} FROM dead_letters FINAL WHERE {' AND '.join(where)} "
               f"ORDER BY ts_recv DESC, feed DESC, seq DESC LIMIT {int(limit)}")
        return [r for r in decode(spec, self._query(sql, params))[0] if isinstance(r, DeadLetterRecord)]

    def trading_status(self) -> list[TradingStatusChange]:
        """Per (venue, symbol), its last stored trading status change (the last the engine applied), by
        venue and symbol: what a restart restores."""
        spec = SPECS[Kind.TRADING_STATUS]
        sql = ("SELECT venue, symbol, argMax(halted, version), argMax(reason, version), "
               "argMax(ts_event, version), argMax(ts_recv, version) FROM trading_status FINAL "
               "GROUP BY venue, symbol ORDER BY venue, symbol")
        return [r for r in decode(spec, self._query(sql, {}))[0] if isinstance(r, TradingStatusChange)]

    # -- restore after a restart (server.restore)

    def trade_series(self) -> dict[tuple[str, str], int]:
        """(venue, symbol) -> event time of its latest stored trade, for every series with trades."""
        table = self._query("SELECT venue, symbol, max(ts_event) AS last FROM trades GROUP BY venue, symbol", {})
        return {(str(v), str(s)): int(t) for v, s, t in zip(
            table.column("venue").to_pylist(), table.column("symbol").to_pylist(),
            table.column("last").to_pylist(), strict=True)}

    def count_trades_since(self, starts: dict[tuple[str, str], int]) -> int:
        """Stored trades of the series in ``starts`` with ``ts_event >= starts[(venue, symbol)]``.

        An estimate from above: a row written twice counts twice until the table merges it.
        """
        if not starts:
            return 0
        keys = [f"{v}\x1f{s}" for v, s in starts]
        sql = ("SELECT count() FROM trades WHERE ts_event >= transform(concat(venue, char(31), symbol), "
               "{keys:Array(String)}, {starts:Array(Int64)}, toInt64(9223372036854775807))")
        params: Params = {"keys": param_str_array(keys), "starts": "[" + ",".join(map(str, starts.values())) + "]"}
        with self._lock:
            values = self._conn.fetch_column(sql, params)
        return int(str(values[0])) if values else 0

    def trades_since(self, venue: str, symbol: str, start_ns: int, chunk: int = 50_000) -> Iterator[list[Trade]]:
        """Trades of one series with ``ts_event >= start_ns`` in pages of at most ``chunk``, in the order a
        restore applies them: event time, then trade id (shorter first, so numeric ids of one
        nanosecond come in number order), then the identity of trades without an id."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        spec = SPECS[Kind.TRADES]
        order = "ts_event, length(trade_id), trade_id, dedup_key"
        where = "venue = {venue:String} AND symbol = {symbol:String} AND ts_event >= {lo:Int64}"
        keyset = (" AND ts_event >= {k0:Int64}"
                  f" AND ({order}) > ({{k0:Int64}}, {{k1:UInt64}}, {{k2:String}}, {{k3:UInt64}})")
        head = f"SELECT {', '.join(spec.select)}, {order} FROM trades FINAL WHERE "
        params: Params = {"venue": param_str(venue), "symbol": param_str(symbol), "lo": start_ns}
        cursor: list[Any] | None = None
        while True:
            if cursor is not None:
                params.update({"k0": int(cursor[0]), "k1": int(cursor[1]), "k2": param_str(str(cursor[2])),
                               "k3": int(cursor[3])})
            sql = f"{head}{where}{keyset if cursor is not None else ''} ORDER BY {order} LIMIT {int(chunk)}"
            recs, keys = decode(spec, self._query(sql, params), extra=4)
            page = [t for t in recs if isinstance(t, Trade)]
            if page:
                yield page
            if len(recs) < chunk:
                return
            cursor = [col[-1] for col in keys]

    def book_marks(self) -> dict[tuple[str, str], int]:
        """(venue, symbol) -> the highest book sequence stored (deltas and snapshots); books without
        sequences (0) are left out."""
        table = self._query(
            "SELECT venue, symbol, max(seq) AS mark FROM (SELECT venue, symbol, seq FROM book_deltas "
            "UNION ALL SELECT venue, symbol, seq FROM book_snapshots) GROUP BY venue, symbol HAVING mark > 0", {})
        return {(str(v), str(s)): int(m) for v, s, m in zip(
            table.column("venue").to_pylist(), table.column("symbol").to_pylist(),
            table.column("mark").to_pylist(), strict=True)}

    def latest_book_snapshots(self) -> list[BookSnapshot]:
        """Per (venue, symbol), the stored snapshot with the highest sequence (> 0), by venue and symbol."""
        spec = SPECS[Kind.BOOK_SNAPSHOTS]
        sql = (f"SELECT {', '.join(spec.select)} FROM book_snapshots FINAL WHERE (venue, symbol, seq) IN "
               "(SELECT venue, symbol, max(seq) FROM book_snapshots WHERE seq > 0 GROUP BY venue, symbol) "
               "ORDER BY venue, symbol, ts_event")
        latest: dict[tuple[str, str], BookSnapshot] = {}
        for snap in decode(spec, self._query(sql, {}))[0]:
            if isinstance(snap, BookSnapshot):
                latest[snap.venue, snap.symbol] = snap
        return list(latest.values())

    def count_book_deltas_after(self, venue: str, symbol: str, seq: int) -> int:
        """Stored deltas of one book with a sequence above ``seq`` (an estimate from above, as
        ``count_trades_since``)."""
        return self._count(SPECS[Kind.BOOK_DELTAS],
                           ["venue = {venue:String}", "symbol = {symbol:String}", "seq > {seq:Int64}"],
                           {"venue": param_str(venue), "symbol": param_str(symbol), "seq": seq})

    def book_deltas_after(self, venue: str, symbol: str, seq: int, chunk: int = 50_000) -> Iterator[list[BookDelta]]:
        """Stored deltas of one book with a sequence above ``seq``, in sequence order, in pages of at most
        ``chunk``."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        spec = SPECS[Kind.BOOK_DELTAS]
        order = "seq, first_seq, ts_event, content_hash"
        where = "venue = {venue:String} AND symbol = {symbol:String} AND seq > {seq:Int64}"
        keyset = f" AND seq >= {{k0:Int64}} AND ({order}) > ({{k0:Int64}}, {{k1:Int64}}, {{k2:Int64}}, {{k3:UInt64}})"
        head = f"SELECT {', '.join(spec.select)}, {order} FROM book_deltas FINAL WHERE "
        params: Params = {"venue": param_str(venue), "symbol": param_str(symbol), "seq": seq}
        cursor: list[Any] | None = None
        while True:
            if cursor is not None:
                params.update({f"k{i}": int(v) for i, v in enumerate(cursor)})
            sql = f"{head}{where}{keyset if cursor is not None else ''} ORDER BY {order} LIMIT {int(chunk)}"
            recs, keys = decode(spec, self._query(sql, params), extra=4)
            page = [d for d in recs if isinstance(d, BookDelta)]
            if page:
                yield page
            if len(recs) < chunk:
                return
            cursor = [col[-1] for col in keys]

    def latest_candle_times(self) -> dict[tuple[str, str, Interval], int]:
        """(venue, symbol, interval) -> open time of its latest stored candle."""
        table = self._query("SELECT venue, symbol, interval, max(open_time) AS t FROM candles "
                            "GROUP BY venue, symbol, interval", {})
        return {(str(v), str(s), Interval(int(i))): int(t) for v, s, i, t in zip(
            table.column("venue").to_pylist(), table.column("symbol").to_pylist(),
            table.column("interval").to_pylist(), table.column("t").to_pylist(), strict=True)}

    # -- helpers

    def _count(self, spec: TableSpec, where: list[str], params: Params) -> int:
        sql = f"SELECT count() FROM {spec.table} WHERE {' AND '.join(where)}"
        with self._lock:
            values = self._conn.fetch_column(sql, params)
        return int(str(values[0])) if values else 0

    def _query(self, sql: str, params: Params) -> Any:
        with self._lock:
            return self._conn.query_arrow(sql, params)

    def _query_rows(self, sql: str, params: Params) -> bytes:
        with self._lock:
            return self._conn.query_row_binary(sql, params)

