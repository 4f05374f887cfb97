"""The runtime's barrier: what an at-least-once feed waits for before it commits its source offsets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from server.engine.engine import Engine
from server.engine.events import Event, Side, Trade
from server.runtime import Runtime, StorageFailedError
from server.storage import EmbeddedStore

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def _trades(start: int, n: int) -> list[Event]:
    return [Trade("v", "S", str(i), 100 * S, S, Side.BUY, T0 + i, T0 + i) for i in range(start, start + n)]


def test_barrier_returns_once_everything_before_it_is_applied_and_stored(tmp_path: Path) -> None:
    store = EmbeddedStore.open(tmp_path / "db")

    async def run() -> tuple[int, int]:
        runtime = Runtime(Engine(), [], storage=store, tick_interval_s=60.0)
        await runtime.start()
        try:
            for k in range(10):
                await runtime.put(_trades(k * 100, 100))
            await runtime.barrier()
            # The storage thread batches for 250 ms; the barrier flushed it: the rows are there now.
            stored = len(store.trades("S", T0, T0 + 10_000))
            return runtime.events_applied, stored
        finally:
            await runtime.stop(1.0)

    applied, stored = asyncio.run(run())
    assert applied == 1000 and stored == 1000


def test_barrier_without_storage_waits_for_the_engine() -> None:
    async def run() -> int:
        runtime = Runtime(Engine(), [], tick_interval_s=60.0)
        await runtime.start()
        try:
            await runtime.put(_trades(0, 50))
            await runtime.barrier()
            return runtime.events_applied
        finally:
            await runtime.stop(1.0)

    assert asyncio.run(run()) == 50


class _FailingWriter:
    """Storage that cannot write (a full disk, a lost server): the barrier must say so, not succeed."""

    def write_batch(self, records: list[object]) -> int:
        raise OSError("disk full")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_barrier_fails_when_the_storage_write_fails() -> None:
    async def run() -> None:
        runtime = Runtime(Engine(), [], storage=_FailingWriter(), tick_interval_s=60.0)
        await runtime.start()
        try:
            await runtime.put(_trades(0, 10))
            with pytest.raises(RuntimeError, match="storage write failed"):
                await runtime.barrier()
        finally:
            await runtime.stop(1.0)

    asyncio.run(run())


class _AtLeastOnceFeed:
    """A feed that commits after each barrier, as the Kafka feed does."""

    name = "at-least-once"

    async def run(self, sink: Runtime) -> None:
        await sink.put(_trades(0, 10))
        await sink.barrier()  # raises StorageFailedError: the feed does not catch it


def test_a_failed_barrier_under_an_at_least_once_feed_stops_the_service() -> None:
    """Its input is applied but not durable, and its deduplication would drop a redelivery: the runtime
    flags a failure (``mds serve`` then stops and exits 1, so a restart recovers from storage)."""
    async def run() -> BaseException | None:
        runtime = Runtime(Engine(), [_AtLeastOnceFeed()], storage=_FailingWriter(),  # type: ignore[list-item]
                          tick_interval_s=60.0)
        await runtime.start()
        try:
            await asyncio.wait_for(runtime.failed.wait(), 10)
            return runtime.failure
        finally:
            await runtime.stop(1.0)

    failure = asyncio.run(run())
    assert isinstance(failure, StorageFailedError) and "storage write failed" in str(failure)


class _CountingWriter:
    """Storage that counts its writes (each takes 1 ms)."""

    def __init__(self) -> None:
        self.writes = 0

    def write_batch(self, records: list[object]) -> int:
        self.writes += 1
        time.sleep(0.001)
        return len(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_barriers_force_at_most_one_write_per_gap() -> None:
    """A feed sending a batch and a barrier every 5 ms must not turn into a write every 5 ms: barriers that
    arrive within ``barrier_gap_s`` (100 ms) of a forced write wait and share the next one."""
    writer = _CountingWriter()

    async def run() -> tuple[int, float]:
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        await runtime.start()
        try:
            started = time.monotonic()
            waits = []
            for k in range(100):
                await runtime.put(_trades(k * 10, 10))
                waits.append(asyncio.ensure_future(runtime.barrier()))
                await asyncio.sleep(0.005)
            await asyncio.gather(*waits)
            return writer.writes, time.monotonic() - started
        finally:
            await runtime.stop(1.0)

    writes, seconds = asyncio.run(run())
    assert writes <= seconds / 0.1 + 2, (writes, seconds)  # one per gap, plus the first and the last
    assert writes < 50
