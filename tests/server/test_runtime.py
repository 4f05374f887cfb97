"""The runtime's barrier: what an at-least-once feed waits for before it commits its source offsets."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import cast

import pytest

from server import runtime as runtime_module
from server.engine.engine import Engine
from server.engine.events import BookSnapshot, Event, Side, Trade
from server.runtime import Runtime, StorageFailedError
from server.storage import EmbeddedStore

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def _trades(start: int, n: int) -> list[Event]:
    return [Trade("v", "S", str(i), 100 * S, S, Side.BUY, T0 + i, T0 + i) for i in range(start, start + n)]


def _applied(runtime: Runtime, *batches: list[Event]) -> int:
    """Queue ``batches`` before the engine starts (its first rounds see them together), start it, wait
    for all of them, stop; returns the events applied."""

    async def run() -> int:
        for batch in batches:
            await runtime.put(batch)
        await runtime.start()
        try:
            await runtime.barrier()
            return runtime.events_applied
        finally:
            await runtime.stop(1.0)

    return asyncio.run(run())


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


class _FiniteFeed:
    """A feed that delivers a few batches and ends, as a file replay does."""

    name = "finite"
    warm = True

    async def run(self, sink: Runtime) -> None:
        for k in range(5):
            await sink.put(_trades(k * 10, 10))


def test_records_wait_for_storage_flush_s_and_a_finished_feed_forces_a_write() -> None:
    """Storage writes what waited ``storage_flush_s`` (fewer ClickHouse parts); a feed that ends (a replayed
    file) forces a write at once, so its history can be queried without waiting for the interval."""
    async def run() -> tuple[int, int, int]:
        idle, ended = _CountingWriter(), _CountingWriter()
        quiet = Runtime(Engine(), [], storage=idle, tick_interval_s=60.0, storage_flush_s=60.0)
        finite = Runtime(Engine(), [_FiniteFeed()], storage=ended,  # type: ignore[list-item]
                         tick_interval_s=60.0, storage_flush_s=60.0)
        await quiet.start()
        await finite.start()
        try:
            for k in range(5):
                await quiet.put(_trades(k * 10, 10))
            deadline = time.monotonic() + 10
            while not ended.writes and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            applied = quiet.events_applied
            return idle.writes, ended.writes, applied
        finally:
            await quiet.stop(1.0)
            await finite.stop(1.0)

    idle_writes, ended_writes, applied = asyncio.run(run())
    assert applied == 50 and idle_writes == 0  # applied, and still waiting for the interval
    assert ended_writes >= 1


def test_storage_flush_s_sets_when_waiting_records_are_written() -> None:
    async def run() -> int:
        writer = _CountingWriter()
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0, storage_flush_s=0.05)
        await runtime.start()
        try:
            await runtime.put(_trades(0, 10))
            deadline = time.monotonic() + 2  # well within the 5 s default: the 0.05 s interval must be used
            while not writer.writes and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return writer.writes
        finally:
            await runtime.stop(1.0)

    assert asyncio.run(run()) >= 1  # no barrier, no stop: the interval alone wrote them


def test_a_finished_feed_whose_write_fails_is_logged_and_the_service_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """Only an at-least-once feed stops the service on a failed write; a replayed file's is logged."""
    async def run() -> bool:
        runtime = Runtime(Engine(), [_FiniteFeed()], storage=_FailingWriter(),  # type: ignore[list-item]
                          tick_interval_s=60.0)
        await runtime.start()
        try:
            deadline = time.monotonic() + 10
            while "could not write" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return runtime.failed.is_set()
        finally:
            await runtime.stop(1.0)

    assert asyncio.run(run()) is False
    assert "feed finite finished, but storage could not write all of its data" in caplog.text


class _PreparingWriter:
    """A ``PreparingWriter``: encodes each engine round as it arrives; a round holding trade id "bad"
    cannot be encoded (a value its column cannot hold)."""

    class Piece:
        def __init__(self, records: list[object]) -> None:
            self.records = records

        @property
        def rows(self) -> int:
            return len(self.records)

    def __init__(self) -> None:
        self.prepared = 0
        self.written: list[object] = []

    def storable(self, records: list[object]) -> list[object]:
        return list(records)

    def prepare(self, records: list[object]) -> _PreparingWriter.Piece:
        if any(isinstance(r, Trade) and r.trade_id == "bad" for r in records):
            raise ValueError("price does not fit Int64")
        self.prepared += 1
        return self.Piece([r for r in records if isinstance(r, Trade)])

    def write_prepared(self, prepared: list[_PreparingWriter.Piece]) -> int:
        rows = [r for p in prepared for r in p.records]
        self.written.extend(rows)
        return len(rows)

    def write_batch(self, records: list[object]) -> int:
        raise AssertionError("a preparing writer is written through write_prepared")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_preparing_writer_encodes_as_records_arrive_and_loses_only_what_it_cannot_encode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine task prepares records ``PREPARE_RECORDS`` at a time as they arrive and the storage thread
    writes the pieces together; records that cannot be encoded are counted as a failed write (the next
    barrier says so) and the others around them are still written. Here each round is prepared alone."""
    monkeypatch.setattr(runtime_module, "PREPARE_RECORDS", 1)
    writer = _PreparingWriter()
    bad: list[Event] = [Trade("v", "S", "bad", 100 * S, S, Side.BUY, T0 + 500, T0 + 500)]

    async def run() -> None:
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        await runtime.start()
        try:
            await runtime.put(_trades(0, 10))
            await runtime.barrier()
            for batch in (_trades(10, 10), bad, _trades(20, 10)):
                await runtime.put(batch)
                await asyncio.sleep(0.05)  # its own engine round (queued batches are applied together)
            with pytest.raises(StorageFailedError):
                await runtime.barrier()
            await runtime.put(_trades(30, 10))
            await runtime.barrier()  # no failure since the last barrier: it succeeds
        finally:
            await runtime.stop(1.0)

    asyncio.run(run())
    ids = sorted(int(t.trade_id) for t in writer.written if isinstance(t, Trade))
    assert ids == list(range(40))
    assert writer.prepared >= 3


def test_a_preparing_writer_gets_records_in_steps_of_prepare_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the step may cut a piece here: a loaded machine once stretched 5 rounds past PREPARE_WAIT_S (50 ms).
    monkeypatch.setattr(runtime_module, "PREPARE_WAIT_S", 60.0)
    writer = _PreparingWriter()
    sizes: list[int] = []
    prepare = writer.prepare

    def recording(records: list[object]) -> _PreparingWriter.Piece:
        sizes.append(len(records))
        return prepare(records)

    writer.prepare = recording  # type: ignore[method-assign]

    async def run() -> None:
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        await runtime.start()
        try:
            for k in range(30):
                await runtime.put(_trades(k * 50, 50))
                await asyncio.sleep(0.002)
            await runtime.barrier()
        finally:
            await runtime.stop(1.0)

    asyncio.run(run())
    step = runtime_module.PREPARE_RECORDS
    assert len(writer.written) == 1500
    assert len(sizes) >= 2 and all(n >= step for n in sizes[:-1])  # the last one: what the barrier wrote


def _deferred_run(monkeypatch: pytest.MonkeyPatch, backlog: int,
                  step: int = 10) -> tuple[list[int], list[int], list[int]]:
    """Ten batches of ten trades queued before the engine starts, applied in rounds of ten; returns the
    events applied when each prepare began, the records each prepare got and the storage backlog each round
    began with; checks that every trade was written, in order."""
    monkeypatch.setattr(runtime_module, "ROUND_EVENTS", 10)
    monkeypatch.setattr(runtime_module, "PREPARE_RECORDS", 1)
    monkeypatch.setattr(runtime_module, "PREPARE_STEP", step)
    monkeypatch.setattr(runtime_module, "PREPARE_BACKLOG", backlog)
    writer = _PreparingWriter()
    runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
    applied_at: list[int] = []
    sizes: list[int] = []
    backlogs: list[int] = []
    prepare = writer.prepare

    def recording(records: list[object]) -> _PreparingWriter.Piece:
        applied_at.append(runtime.events_applied)
        sizes.append(len(records))
        return prepare(records)

    writer.prepare = recording  # type: ignore[method-assign]
    young = gc.get_threshold()[0]
    raised: list[int] = []

    def listener(out: list[object]) -> None:
        backlogs.append(runtime.storage_backlog)
        raised.append(gc.get_threshold()[0] - young)

    runtime.listeners.append(listener)

    async def run() -> None:
        for k in range(10):
            await runtime.put(_trades(k * 10, 10))
        await runtime.start()
        try:  # no barrier: it would encode everything at once
            deadline = time.monotonic() + 5.0
            while (runtime.events_applied < 100 or runtime.storage_backlog) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert runtime.events_applied == 100 and runtime.storage_backlog == 0
        finally:
            await runtime.stop(1.0)

    asyncio.run(run())
    assert [int(t.trade_id) for t in writer.written if isinstance(t, Trade)] == list(range(100))
    # the collector's young threshold follows the waiting records (no collections over them), then returns
    assert raised == [runtime_module.GC_OBJECTS_PER_RECORD * n for n in backlogs]
    assert gc.get_threshold()[0] == young
    return applied_at, sizes, backlogs


def test_records_wait_to_be_encoded_while_the_engine_is_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the ingest queue holds events, the engine task applies them and leaves storage encoding for
    later: the first prepare comes once the queue is empty, and the backlog is encoded in steps of
    PREPARE_STEP without waiting for another event."""
    applied_at, sizes, backlogs = _deferred_run(monkeypatch, backlog=10_000)
    assert applied_at[0] == 100
    assert sizes == [10] * 10
    assert backlogs == [10 * k for k in range(10)]  # waiting as each round's listeners ran


def test_steps_cut_across_engine_rounds_and_keep_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The records wait as one list per round; a step of PREPARE_STEP takes the oldest across rounds,
    splitting one where it has to, and every record is encoded once, in order (``_deferred_run``)."""
    _, sizes, _ = _deferred_run(monkeypatch, backlog=10_000, step=7)
    assert sizes == [7] * 14 + [2]


def test_only_what_storage_keeps_waits_to_be_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's other updates (here the book snapshot's NBBO) are not held for storage: the backlog
    is what the writer's ``storable`` kept, and that is what it gets to encode."""
    monkeypatch.setattr(runtime_module, "PREPARE_RECORDS", 10**9)  # nothing is encoded before the stop
    monkeypatch.setattr(runtime_module, "PREPARE_WAIT_S", 60.0)
    writer = _PreparingWriter()
    writer.storable = lambda records: [r for r in records if isinstance(r, Trade)]  # type: ignore[method-assign]
    given: list[object] = []
    prepare = writer.prepare

    def recording(records: list[object]) -> _PreparingWriter.Piece:
        given.extend(records)
        return prepare(records)

    writer.prepare = recording  # type: ignore[method-assign]
    updates: list[object] = []
    backlog: list[int] = []

    async def run() -> None:
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        runtime.listeners.append(updates.extend)
        await runtime.start()
        try:
            book = BookSnapshot("v", "S", 1, ((99 * S, S),), ((101 * S, S),), T0, T0)
            await runtime.put([book, *_trades(0, 5)])
            deadline = time.monotonic() + 5.0
            while runtime.events_applied < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            backlog.append(runtime.storage_backlog)
        finally:
            await runtime.stop(1.0)

    asyncio.run(run())
    assert any(not isinstance(u, Trade) for u in updates)  # the listeners got the others
    assert backlog == [5]
    assert [int(cast(Trade, t).trade_id) for t in given] == list(range(5))


def test_records_waiting_for_encoding_are_bounded_by_prepare_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond PREPARE_BACKLOG waiting records, the oldest are encoded even while the engine is behind,
    down to PREPARE_BACKLOG - PREPARE_STEP."""
    applied_at, _, backlogs = _deferred_run(monkeypatch, backlog=30)
    assert applied_at[0] == 30
    assert backlogs == [0, 10, 20, 20, 20, 20, 20, 20, 20, 20]


def test_stop_encodes_and_writes_the_waiting_records_and_sets_the_collector_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Records still waiting at a stop are encoded and written, and the collector's threshold is set back."""
    monkeypatch.setattr(runtime_module, "PREPARE_RECORDS", 10**9)  # nothing is encoded before the stop
    monkeypatch.setattr(runtime_module, "PREPARE_WAIT_S", 60.0)
    writer = _PreparingWriter()
    young = gc.get_threshold()[0]
    raised: list[int] = []

    async def run() -> None:
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        await runtime.start()
        try:
            await runtime.put(_trades(0, 50))
            deadline = time.monotonic() + 5.0
            while runtime.storage_backlog < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            raised.append(gc.get_threshold()[0] - young)
        finally:
            await runtime.stop(1.0)

    asyncio.run(run())
    assert raised == [runtime_module.GC_OBJECTS_PER_RECORD * 50]
    assert [int(t.trade_id) for t in writer.written if isinstance(t, Trade)] == list(range(50))
    assert gc.get_threshold()[0] == young


def test_thresholds_set_by_someone_else_while_records_wait_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mds serve`` sets the collector's thresholds after the runtime started, perhaps while records wait:
    those become the ones the runtime raises, and they stay once the records are written."""
    monkeypatch.setattr(runtime_module, "PREPARE_RECORDS", 10**9)  # nothing is encoded before the stop
    monkeypatch.setattr(runtime_module, "PREPARE_WAIT_S", 60.0)
    writer = _PreparingWriter()
    before = gc.get_threshold()
    theirs = (before[0] + 12_345, before[1] + 1, before[2] + 1)
    seen: list[tuple[int, int, int]] = []

    async def run() -> None:
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        await runtime.start()
        try:
            for n in (10, 20):
                await runtime.put(_trades(n - 10, 10))
                deadline = time.monotonic() + 5.0
                while runtime.storage_backlog < n and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                if n == 10:
                    gc.set_threshold(*theirs)  # as serve does once started
            seen.append(gc.get_threshold())
        finally:
            await runtime.stop(1.0)
        seen.append(gc.get_threshold())

    try:
        asyncio.run(run())
    finally:
        gc.set_threshold(*before)
    per = runtime_module.GC_OBJECTS_PER_RECORD
    assert seen == [(theirs[0] + per * 20, theirs[1], theirs[2]), theirs]
    assert len(writer.written) == 20


def test_a_large_batch_is_applied_in_rounds_of_round_events_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds hold at most ROUND_EVENTS events: a batch above that is cut, its parts applied in order in
    rounds of their own (listeners called per round), and a barrier behind it waits for its last part."""
    monkeypatch.setattr(runtime_module, "ROUND_EVENTS", 64)
    rounds: list[list[str]] = []
    runtime = Runtime(Engine(), [], tick_interval_s=60.0)
    runtime.listeners.append(lambda out: rounds.append([t.trade_id for t in out if isinstance(t, Trade)]))

    assert _applied(runtime, _trades(0, 150), _trades(150, 10)) == 160
    assert [len(r) for r in rounds] == [64, 64, 32]  # the last part of the cut batch takes the next one along
    assert [int(i) for r in rounds for i in r] == list(range(160))


def test_feeds_wait_while_the_queue_holds_ingest_queue_events() -> None:
    """The ingest queue is bounded in events too: a put that would pass the bound waits until the engine
    applied enough; a batch larger than the bound is still taken whole when the queue is empty."""

    async def run() -> tuple[bool, bool, int]:
        runtime = Runtime(Engine(), [], tick_interval_s=60.0, ingest_queue_events=100)
        await runtime.put(_trades(0, 250))  # empty queue: taken whole
        blocked = asyncio.create_task(runtime.put(_trades(250, 1)))
        await asyncio.sleep(0.05)
        waited = not blocked.done()
        await runtime.start()  # the engine applies the first batch: room again
        try:
            await asyncio.wait_for(blocked, 5.0)
            await runtime.barrier()
            return waited, blocked.done(), runtime.events_applied
        finally:
            await runtime.stop(1.0)

    waited, put, applied = asyncio.run(run())
    assert waited and put and applied == 251
    with pytest.raises(ValueError, match="ingest_queue_events"):
        Runtime(Engine(), [], ingest_queue_events=0)


def test_a_failing_listener_does_not_cost_the_rest_of_a_cut_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a failure of the engine itself skips the rest of its batch: when a listener fails on a round,
    the later parts of a cut batch are still applied."""
    monkeypatch.setattr(runtime_module, "ROUND_EVENTS", 64)
    calls = [0]

    def failing_once(out: list[object]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("listener bug")

    runtime = Runtime(Engine(), [], tick_interval_s=60.0)
    runtime.listeners.append(failing_once)

    assert _applied(runtime, _trades(0, 150)) == 150
    assert calls[0] == 3


class _FailingEngine:
    """An engine that fails on the trade "bad" (the runtime needs only these two calls without sources)."""

    def __init__(self) -> None:
        self.engine = Engine()

    def apply_batch(self, events: list[Event], out: list[object]) -> None:
        if any(isinstance(e, Trade) and e.trade_id == "bad" for e in events):
            raise ValueError("engine bug")
        self.engine.apply_batch(events, out)

    def take_status_changes(self) -> list[object]:
        return []


def test_an_engine_failure_skips_the_rest_of_its_cut_batch_and_frees_its_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure inside the engine skips the failing part of a cut batch and the parts after it, as a
    failure skipped the whole batch before batches were cut; those events leave the ingest bound, so the
    feeds are not held back by events that will never be applied."""
    monkeypatch.setattr(runtime_module, "ROUND_EVENTS", 64)
    batch = _trades(0, 150)
    batch[70] = Trade("v", "S", "bad", 100 * S, S, Side.BUY, T0 + 70, T0 + 70)
    runtime = Runtime(cast(Engine, _FailingEngine()), [], tick_interval_s=60.0, ingest_queue_events=200)

    async def run() -> int:
        await runtime.put(batch)
        await runtime.start()
        try:
            await runtime.barrier()
            await asyncio.wait_for(runtime.put(_trades(150, 200)), 2.0)  # the whole bound is free again
            await runtime.barrier()
            return runtime.events_applied
        finally:
            await runtime.stop(1.0)

    assert asyncio.run(run()) == 64 + 200
