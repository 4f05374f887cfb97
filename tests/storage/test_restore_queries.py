"""The store's reads for a restore after a restart: series, trades since, book marks, snapshots and
deltas after them, the latest candle times."""

from __future__ import annotations

from server.engine.candles import Interval
from server.engine.events import BookDelta, BookSnapshot
from server.storage import EmbeddedStore
from tests.storage.records import T0, candle, trade


def _delta(seq: int, *, symbol: str = "BTCUSDT", first_seq: int | None = None, ts: int | None = None) -> BookDelta:
    return BookDelta("binance", symbol, seq if first_seq is None else first_seq, seq, ((100 + seq, 1),), (),
                     T0 + seq if ts is None else ts, T0 + seq + 5)


def _snap(seq: int, *, symbol: str = "BTCUSDT") -> BookSnapshot:
    return BookSnapshot("binance", symbol, seq, ((100, seq),), ((200, seq),), T0 + seq, T0 + seq + 5)


def test_trade_series_and_counts(store: EmbeddedStore) -> None:
    store.write_batch([trade(i) for i in range(10)] + [trade(i, symbol="ETHUSDT") for i in range(3)]
                      + [trade(5, venue="kraken")])
    series = store.trade_series()
    assert series == {("binance", "BTCUSDT"): T0 + 9_000, ("binance", "ETHUSDT"): T0 + 2_000,
                      ("kraken", "BTCUSDT"): T0 + 5_000}
    assert store.count_trades_since({("binance", "BTCUSDT"): T0 + 4_000}) == 6
    assert store.count_trades_since({("binance", "BTCUSDT"): T0 + 4_000, ("binance", "ETHUSDT"): 0}) == 9
    assert store.count_trades_since({}) == 0


def test_trades_since_pages_in_restore_order(store: EmbeddedStore) -> None:
    # Same nanosecond: numeric ids in number order ("9" before "10"), not text order.
    same = [trade(1, trade_id=str(n))._replace(ts_event=T0) for n in (10, 9, 11, 100)]
    later = [trade(i) for i in range(2, 12)]
    store.write_batch(same + later + [trade(3, symbol="ETHUSDT")])
    store.write_batch(later[:4])  # written twice: read once
    pages = list(store.trades_since("binance", "BTCUSDT", T0, chunk=3))
    assert all(0 < len(p) <= 3 for p in pages)
    got = [t for p in pages for t in p]
    assert [t.trade_id for t in got[:4]] == ["9", "10", "11", "100"]
    assert got[4:] == later
    assert [t.trade_id for p in store.trades_since("binance", "BTCUSDT", T0 + 10_000) for t in p] == ["10", "11"]
    assert list(store.trades_since("binance", "NOPE", 0)) == []


def test_book_marks_snapshots_and_deltas_after(store: EmbeddedStore) -> None:
    store.write_batch([_snap(3), *(_delta(s) for s in range(4, 12)), _snap(7), _delta(5, symbol="ETHUSDT"),
                       BookDelta("kraken", "BTCUSDT", 0, 0, ((1, 1),), (), T0, T0)])
    store.write_batch([_delta(9)])  # written twice: read once
    assert store.book_marks() == {("binance", "BTCUSDT"): 11, ("binance", "ETHUSDT"): 5}
    assert store.latest_book_snapshots() == [_snap(7)]
    assert store.count_book_deltas_after("binance", "BTCUSDT", 7) >= 4
    pages = list(store.book_deltas_after("binance", "BTCUSDT", 7, chunk=3))
    assert [len(p) for p in pages] == [3, 1]
    assert [d for p in pages for d in p] == [_delta(s) for s in range(8, 12)]


def test_deltas_after_are_in_sequence_order_whatever_their_times(store: EmbeddedStore) -> None:
    store.write_batch([_delta(s, ts=T0 + 100 - s) for s in range(1, 6)])
    assert [d.seq for p in store.book_deltas_after("binance", "BTCUSDT", 0, chunk=2) for d in p] == [1, 2, 3, 4, 5]


def test_latest_candle_times(store: EmbeddedStore) -> None:
    store.write_batch([candle(T0), candle(T0 + 60 * 10**9), candle(T0, interval=Interval.H1)])
    assert store.latest_candle_times() == {("binance", "BTCUSDT", Interval.M1): T0 + 60 * 10**9,
                                           ("binance", "BTCUSDT", Interval.H1): T0}
