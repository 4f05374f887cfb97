"""``server.restore``: an engine restored from storage after a crash continues exactly like the engine
that never stopped (candles, 24h ticker, books), and seeds the Kafka deduper."""

from __future__ import annotations

from collections.abc import Iterable

from feeds.kafka.dedupe import Deduper
from server.engine.candles import DAY_NS, Candle, Interval, period_start
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, ClockTick, Event, Side, Trade
from server.restore import restore, restore_start
from server.storage import EmbeddedStore

S = 1_000_000_000
T0 = 1_700_000_000 * S
"""2023-11-14T22:13:20Z."""
VENUE = "engine"
SMALL = (Interval.S1, Interval.M1, Interval.M5, Interval.M15, Interval.M30, Interval.H1, Interval.H4,
         Interval.D1)


def trades(first: int, count: int, *, symbol: str = "BTC/USD", step: int = 37 * S) -> list[Trade]:
    return [Trade(VENUE, symbol, str(i), (100 + i % 17) * S, (1 + i % 5) * S // 10, Side.BUY if i % 3 else Side.SELL,
                  T0 + i * step, T0 + i * step + 5_000_000) for i in range(first, first + count)]


def run(engine: Engine, store: EmbeddedStore | None, events: Iterable[Event], batch: int = 100,
        keep: type | None = None) -> list[object]:
    """Apply like the runtime (batches, every batch's updates written); returns the updates."""
    events = list(events)
    updates: list[object] = []
    for i in range(0, len(events), batch):
        out: list[object] = []
        engine.apply_batch(events[i:i + batch], out)
        if store is not None:
            store.write_batch(out if keep is None else [u for u in out if not isinstance(u, keep)])
        updates.extend(out)
    return updates


def bare(candles: Iterable[object]) -> list[Candle]:
    """Candles without ts_recv (the last restored trade is applied without its receive time)."""
    return [c._replace(ts_recv=0) for c in candles if isinstance(c, Candle)]


def test_restored_engine_continues_exactly(store: EmbeddedStore) -> None:
    live = Engine()
    before = trades(0, 5000) + trades(0, 300, symbol="ETH/USD", step=600 * S)
    run(live, store, before)
    restored = Engine()
    deduper = Deduper()
    report = restore(restored, store, [deduper])
    last = T0 + 4999 * 37 * S
    start = restore_start(last, ticker=True)
    assert start == period_start(Interval.D1, last) - DAY_NS  # the previous day: the 24h ticker's window
    assert report.with_ticker and report.series == 2
    assert report.trades == sum(1 for t in before if t.ts_event >= restore_start(
        T0 + (4999 * 37 if t.symbol == "BTC/USD" else 299 * 600) * S, ticker=True))
    assert report.candles_written == 0
    for symbol in ("BTC/USD", "ETH/USD"):
        for iv in SMALL:
            got = bare(restored.candles(VENUE, symbol, iv, start))
            assert got and got == bare(live.candles(VENUE, symbol, iv, start)), (symbol, iv)
        assert restored.ticker(VENUE, symbol) == live.ticker(VENUE, symbol)
    assert restored.recent_trades("BTC/USD", 5)[:-1] == live.recent_trades("BTC/USD", 5)[:-1]

    # A clock tick long after the restart closes nothing: the series' receive lag is unknown until a trade.
    out: list[object] = []
    restored.apply(ClockTick(last + 3600 * S), out)
    assert not bare(out)

    # Redelivered trades are dropped by the seeded deduper; new ones give the same candles as if no crash.
    after = trades(5000, 400)
    redelivered = before[4900:5000] + after
    admitted = [t for t in redelivered if deduper.admit(t)]
    assert admitted == after and deduper.duplicates == 100
    assert bare(run(restored, None, admitted)) == bare(run(live, None, after))
    for iv in SMALL:
        assert bare(restored.candles(VENUE, "BTC/USD", iv, start)) == bare(live.candles(VENUE, "BTC/USD", iv, start))


def test_candles_lost_with_the_crash_are_written(store: EmbeddedStore) -> None:
    live = Engine()
    before = trades(0, 200)
    run(live, store, before[:150])
    closed = [u for u in run(live, store, before[150:], batch=1000, keep=Candle) if isinstance(u, Candle)]
    assert closed  # the last batch closed candles, and the process died before writing them
    report = restore(Engine(), store, [])
    assert report.candles_written >= len({(c.interval, c.open_time) for c in closed})
    for c in closed:
        got = store.candles(VENUE, "BTC/USD", c.interval, c.open_time, c.open_time + 1)
        assert [g._replace(ts_recv=0) for g in got] == [c._replace(ts_recv=0)]
    assert restore(Engine(), store, []).candles_written == 0  # once written, not again


def test_over_the_budget_only_the_current_day(store: EmbeddedStore) -> None:
    before = trades(0, 5000)
    run(Engine(), store, before)
    report = restore(Engine(), store, [], trade_budget=100)
    assert not report.with_ticker
    day = period_start(Interval.D1, before[-1].ts_event)
    assert report.trades == sum(1 for t in before if t.ts_event >= day)


def test_books_restored_and_marked(store: EmbeddedStore) -> None:
    def delta(seq: int, symbol: str = "BTC/USD", first: int | None = None) -> BookDelta:
        return BookDelta(VENUE, symbol, seq if first is None else first, seq, ((100 * S - seq * S // 100, seq),),
                         ((101 * S + seq * S // 100, seq),) if seq % 3 else ((101 * S, 0),), T0 + seq, T0 + seq + 1)

    snap = BookSnapshot(VENUE, "BTC/USD", 1, ((99 * S, 5),), ((101 * S, 5),), T0, T0 + 1)
    gap_snap = snap._replace(symbol="ETH/USD")
    live = Engine()
    run(live, store, [snap, *(delta(s) for s in range(2, 60)), gap_snap, *(delta(s, "ETH/USD") for s in range(2, 9))],
        batch=7)
    store.write_batch([delta(12, "ETH/USD", first=12)])  # stored after a gap: that book cannot be rebuilt
    restored = Engine()
    deduper = Deduper()
    report = restore(restored, store, [deduper])
    assert report.books == 2 and report.book_deltas == 58 + 8
    assert report.marks == {(VENUE, "BTC/USD"): 59}
    a, b = live.book(VENUE, "BTC/USD"), restored.book(VENUE, "BTC/USD")
    assert a is not None and b is not None and b.synced
    assert (b.seq, b.bid_levels(), b.ask_levels()) == (a.seq, a.bid_levels(), a.ask_levels())
    assert deduper.book_mark(VENUE, "BTC/USD") == 59 and deduper.book_mark(VENUE, "ETH/USD") == 0
    assert not deduper.admit(delta(59)) and deduper.admit(delta(60))
    eth = restored.book(VENUE, "ETH/USD")
    assert eth is not None and not eth.synced  # awaits the feed's next snapshot


def test_book_with_too_many_deltas_is_left_to_the_feed(store: EmbeddedStore) -> None:
    snap = BookSnapshot(VENUE, "BTC/USD", 1, ((99 * S, 5),), ((101 * S, 5),), T0, T0 + 1)
    run(Engine(), store, [snap, *(BookDelta(VENUE, "BTC/USD", s, s, ((98 * S, s),), (), T0 + s, T0 + s)
                                  for s in range(2, 30))])
    deduper = Deduper()
    report = restore(Engine(), store, [deduper], max_book_deltas=10)
    assert report.books == 0 and report.books_skipped == 1 and not report.marks
    assert deduper.book_mark(VENUE, "BTC/USD") == 0
