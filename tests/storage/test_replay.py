"""Replay merges the tables in event-time order, in bounded chunks, with filters."""

from __future__ import annotations

import itertools

import pytest

from server.engine.events import BookSnapshot, Quote, Side, Trade
from server.engine.pricing import FundingRate, IndexPrice, MarkPrice
from server.storage import EmbeddedStore, StoredRecord
from tests.storage.records import T0, candle

MINUTE = 60_000_000_000


def _event_time(r: StoredRecord) -> int:
    return r.ts if isinstance(r, (IndexPrice, MarkPrice, FundingRate)) else r.ts_event


def _mixed(n: int) -> list[object]:
    """Trades, quotes and snapshots on two symbols with interleaved (and some equal) event times."""
    out: list[object] = []
    for i in range(n):
        sym = "BTCUSDT" if i % 3 else "ETHUSDT"
        ts = T0 + (i // 2) * 1_000  # pairs of equal times
        out.append(Trade("binance", sym, str(i), 100 + i, 1 + i, Side.BUY, ts, ts + 1))
        if i % 4 == 0:
            out.append(Quote("binance", sym, 99 + i, 5, 101 + i, 6, ts + 500, ts + 501))
        if i % 25 == 0:
            out.append(BookSnapshot("binance", sym, i, ((99, 1),), ((101, 2),), ts, ts + 2))
    return out


def test_replay_event_time_order_in_small_chunks(store: EmbeddedStore) -> None:
    records = _mixed(400)
    records.append(candle(T0 + 10_000, ts_event=T0 + 77_000))
    store.write_batch(records[::2])  # several inserts (parts): the order must not depend on them
    store.write_batch(records[1::2])
    chunks = list(store.replay(None, None, T0, T0 + MINUTE, chunk=7))
    assert all(1 <= len(c) <= 7 for c in chunks)
    assert all(len(c) == 7 for c in chunks[:-1])
    got = [r for c in chunks for r in c]
    assert len(got) == len(records)
    assert sorted(map(repr, got)) == sorted(map(repr, records))
    times = [_event_time(r) for r in got]
    assert times == sorted(times)


def test_replay_is_deterministic_and_snapshot_first_on_ties(store: EmbeddedStore) -> None:
    store.write_batch(_mixed(100))
    a = [r for c in store.replay(None, None, T0, T0 + MINUTE, chunk=5) for r in c]
    b = [r for c in store.replay(None, None, T0, T0 + MINUTE, chunk=1000) for r in c]
    assert a == b
    first = a[0]
    assert isinstance(first, BookSnapshot)  # a snapshot and a trade share T0: snapshots come first


def test_replay_filters(store: EmbeddedStore) -> None:
    records = _mixed(200)
    store.write_batch(records)
    eth = [r for c in store.replay(["ETHUSDT"], ["trades"], T0, T0 + MINUTE, chunk=9) for r in c]
    want = [r for r in records if isinstance(r, Trade) and r.symbol == "ETHUSDT"]
    assert eth == want
    window = [
        r for c in store.replay(None, ["trades", "quotes"], T0 + 10_000, T0 + 20_000, chunk=3) for r in c
    ]
    assert window and all(T0 + 10_000 <= _event_time(r) < T0 + 20_000 for r in window)
    assert list(store.replay([], None, T0, T0 + MINUTE)) == []
    assert list(store.replay(["NOPE"], None, T0, T0 + MINUTE)) == []
    with pytest.raises(ValueError, match="unknown kind"):
        list(store.replay(None, ["bogus"], T0, T0 + MINUTE))
    with pytest.raises(ValueError, match="chunk"):
        list(store.replay(None, None, T0, T0 + MINUTE, chunk=0))


def test_replay_many_rows_at_one_timestamp(store: EmbeddedStore) -> None:
    same = [Trade("binance", "BTCUSDT", f"{i:04d}", 1, 1, Side.SELL, T0, T0) for i in range(50)]
    store.write_batch(same)
    chunks = list(store.replay(None, ["trades"], T0, T0 + 1, chunk=4))
    assert [r for c in chunks for r in c] == same
    assert max(len(c) for c in chunks) == 4


def test_replay_sparse_and_dense_regions(store: EmbeddedStore) -> None:
    # A dense burst, a long gap, then a few rows: the adaptive window must neither skip nor repeat.
    dense = [Trade("binance", "BTCUSDT", f"d{i}", 1, 1, Side.BUY, T0 + i, T0 + i) for i in range(300)]
    sparse = [
        Trade("binance", "BTCUSDT", f"s{i}", 1, 1, Side.BUY, T0 + 10**12 * (i + 1), 0) for i in range(5)
    ]
    store.write_batch(dense + sparse)
    got = [r for c in store.replay(None, ["trades"], T0, T0 + 10**13, chunk=16) for r in c]
    assert got == dense + sparse


def _row_windows(store: EmbeddedStore, kinds: list[str], start: int, end: int, chunk: int,
                 extra_kinds: tuple[str, ...] = ()) -> list[tuple[int, int, int]]:
    """(lo, hi, rows) of each ``replay_rows`` page (rows counted from its RowBinary trades)."""
    from server.service import replay_codec

    out = []
    for page in store.replay_rows(["BTCUSDT"], kinds, start, end, chunk=chunk,
                                  extra=(lambda lo, hi: []) if extra_kinds else None, extra_kinds=extra_kinds):
        encoder = replay_codec.PageEncoder(replay_codec.BookSequences(), page.rows, page.extra)
        n, _ = encoder.take(10**9)
        out.append((page.lo, page.hi, n))
    return out


def test_row_windows_are_bounded_ordered_and_hold_every_row(store: EmbeddedStore) -> None:
    """Windows of ``replay_rows`` over a dense burst, a long gap and sparse rows: every row once, in time
    order, at most ``chunk`` rows per window (the burst is split by a finer histogram), empty time skipped."""
    dense = [Trade("binance", "BTCUSDT", f"d{i}", 1, 1, Side.BUY, T0 + i, T0 + i) for i in range(300)]
    sparse = [Trade("kraken", "BTCUSDT", f"s{i}", 1, 1, Side.BUY, T0 + 10**12 * (i + 1), 0) for i in range(5)]
    store.write_batch(dense + sparse)
    windows = _row_windows(store, ["trades"], T0, T0 + 10**13, chunk=16)
    assert sum(n for _, _, n in windows) == len(dense) + len(sparse)
    assert all(0 < n <= 16 for _, _, n in windows)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows))
    assert len(windows) <= 2 * (len(dense) + len(sparse)) // 16 + 6
    assert _row_windows(store, ["trades"], T0 + 301, T0 + 10**12, chunk=16) == []  # nothing there: no page


def test_row_windows_keep_one_nanosecond_whole(store: EmbeddedStore) -> None:
    same = [Trade("binance", "BTCUSDT", f"{i:04d}", 1, 1, Side.SELL, T0 + 5, T0) for i in range(50)]
    store.write_batch(same)
    [(lo, hi, n)] = _row_windows(store, ["trades"], T0, T0 + 10**9, chunk=4)
    assert lo == T0 + 5 and hi > lo and n == 50


def test_row_windows_count_the_extra_kinds(store: EmbeddedStore) -> None:
    """Candles and pricing merged into the pages count toward their size too."""
    store.write_batch([MarkPrice("BTCUSDT", 1, 1, 0, T0 + i) for i in range(40)]
                      + [Trade("binance", "BTCUSDT", "t", 1, 1, Side.BUY, T0 + 20, T0)])
    pages = list(store.replay_rows(["BTCUSDT"], ["trades"], T0, T0 + 100, chunk=10,
                                   extra=lambda lo, hi: [], extra_kinds=["pricing"]))
    assert len(pages) >= 4  # 41 rows and items in windows of about 10
