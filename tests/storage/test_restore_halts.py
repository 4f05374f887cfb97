"""Trading status across a restart: the runtime stores the halts and resumes the engine applied, and the
restore at start (``server.restore``) halts again what was halted, after the books and trades."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.engine.book import BookStatus
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Event, Side, Trade, TradingStatusChange
from server.restore import restore, restore_trading_status
from server.runtime import Runtime
from server.serve import restore_state
from server.storage import EmbeddedStore

S = 1_000_000_000
T0 = 1_700_000_000 * S
V = "engine"


def halt(symbol: str, halted: bool, t: int, reason: str = "") -> TradingStatusChange:
    return TradingStatusChange(V, symbol, halted, reason, T0 + t, T0 + t)


def snapshot(symbol: str, t: int) -> BookSnapshot:
    return BookSnapshot(V, symbol, 1, ((100 * S, S),), ((101 * S, S),), T0 + t, T0 + t)


def trade(symbol: str, i: int, t: int) -> Trade:
    return Trade(V, symbol, str(i), 100 * S, S, Side.BUY, T0 + t, T0 + t)


def run_then_stop(path: Path, batches: list[list[Event]]) -> Engine:
    """A runtime over storage at ``path`` applies ``batches`` and stops (closing the store), like a run of
    the service that ends; returns its engine."""
    engine = Engine()

    async def go() -> None:
        runtime = Runtime(engine, [], storage=EmbeddedStore.open(path), tick_interval_s=60.0)
        await runtime.start()
        try:
            for b in batches:
                await runtime.put(b)
            await runtime.barrier()
        finally:
            await runtime.stop(1.0)

    asyncio.run(go())
    return engine


BATCHES: list[list[Event]] = [
    [snapshot("BTC/USD", 0), trade("BTC/USD", 1, 1), halt("BTC/USD", True, 2, "volatility auction")],
    [halt("ETH/USD", True, 3)],                                      # no book: the engine emits no update
    [halt("XRP/USD", True, 4), halt("XRP/USD", False, 5)],           # halted and resumed in one batch
    [snapshot("SOL/USD", 6), halt("SOL/USD", True, 7, "news"), halt("SOL/USD", True, 8, "news pending")],
    [snapshot("ADA/USD", 9), halt("ADA/USD", True, 10)],
    [BookDelta(V, "ADA/USD", 2, 2, ((100 * S, 0),), (), T0 + 11, T0 + 11),  # refused while halted
     halt("ADA/USD", False, 12)],
]


def test_halts_are_stored_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "db"
    live = run_then_stop(path, BATCHES)
    assert live.halts() == {(V, "BTC/USD"): "volatility auction", (V, "ETH/USD"): "",
                            (V, "SOL/USD"): "news pending"}
    with EmbeddedStore.open(path) as store:
        assert {(s.symbol, s.halted, s.reason) for s in store.trading_status()} == {
            ("BTC/USD", True, "volatility auction"), ("ETH/USD", True, ""), ("XRP/USD", False, ""),
            ("SOL/USD", True, "news pending"), ("ADA/USD", False, "")}
        restored = Engine()
        report = restore(restored, store)
        assert report.halted == 3 and report.books == 3
        assert restored.halts() == live.halts()
        # The book restored from storage first, then halted: it reports HALTED, and stays out of trading.
        book = restored.book(V, "BTC/USD")
        assert book is not None and book.status == BookStatus.HALTED
        adabook = restored.book(V, "ADA/USD")
        assert adabook is not None and adabook.status != BookStatus.HALTED
        out: list[object] = []
        restored.apply(trade("BTC/USD", 2, 20), out)
        assert restored.counters.halted_trades == 1
        ticker = restored.ticker(V, "BTC/USD")
        assert ticker is not None and ticker.halted
        # A halted instrument without a book yet: its first book starts halted.
        restored.apply(snapshot("ETH/USD", 21), out)
        ethbook = restored.book(V, "ETH/USD")
        assert ethbook is not None and ethbook.status == BookStatus.HALTED


def test_a_restart_without_a_redelivering_feed_restores_halts_alone(tmp_path: Path) -> None:
    path = tmp_path / "db"
    run_then_stop(path, BATCHES[:2])
    with EmbeddedStore.open(path) as store:
        engine = Engine()
        asyncio.run(restore_state(engine, store, []))  # what `mds serve` runs with, e.g., the simulator
        assert engine.halts() == {(V, "BTC/USD"): "volatility auction", (V, "ETH/USD"): ""}
        assert engine.book(V, "BTC/USD") is None  # no feed that redelivers: books are not restored

        # The restored halts are the runtime's baseline: nothing is written again, a resume is.
        async def resume() -> None:
            runtime = Runtime(engine, [], storage=store, tick_interval_s=60.0)
            await runtime.start()
            try:
                await runtime.put([halt("ETH/USD", False, 30)])
                await runtime.barrier()
            finally:
                await runtime.stop(1.0)

        asyncio.run(resume())
    with EmbeddedStore.open(path) as store:
        again = Engine()
        assert [h.symbol for h in restore_trading_status(again, store)] == ["BTC/USD"]
        assert again.halts() == {(V, "BTC/USD"): "volatility auction"}
