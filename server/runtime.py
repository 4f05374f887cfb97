"""The running service core: feeds -> bounded ingest queue -> engine -> listeners and storage.

One asyncio task owns the engine; feeds and the clock only enqueue batches, so the engine is never
touched concurrently and gRPC handlers (same event loop) read it without locks. Storage writes run on a
thread of their own behind a bounded queue: when storage falls behind, the engine loop waits, the
ingest queue fills and feeds wait; nothing accepted is dropped.

With source policies (``server.engine.sources``), each applied batch's updates go through the
``SourceRouter``, and the composite-venue events it derives are applied right after, in the same round;
clock ticks also carry the venues whose feed reports itself disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from feeds.protocols import Feed
from server.engine.engine import Engine
from server.engine.events import ClockTick, Event
from server.engine.quality import QualityFlag
from server.engine.sources import BookView, SourcePolicy, SourceRouter

log = logging.getLogger("mds.runtime")

UpdateListener = Callable[[list[object]], None]
"""Called on the event loop with every batch of engine updates, in order; must not block."""


class BatchWriter(Protocol):
    """What the runtime needs from storage: synchronous batch writes (run on the writer thread)."""

    def write_batch(self, records: list[object]) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class _Barrier:
    """A marker sent down the ingest queue and on to storage; ``done`` resolves once everything before it
    is applied by the engine and written by storage (see ``Runtime.barrier``)."""

    __slots__ = ("done", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()

    def release(self, error: BaseException | None = None) -> None:
        """Resolve ``done`` from any thread."""
        def settle() -> None:
            if not self.done.done():
                if error is None:
                    self.done.set_result(None)
                else:
                    self.done.set_exception(error)
        self.loop.call_soon_threadsafe(settle)


class _StorageThread:
    """Writes update batches on a thread, accumulated into large bulk writes (a write has a fixed cost
    of milliseconds, so many small ones would fall behind): up to ``max_records`` per write, or whatever
    waited ``flush_interval_s``. ``submit`` waits (off the loop) when the queue is full."""

    _STOP = object()

    def __init__(self, writer: BatchWriter, max_batches: int = 256, max_records: int = 50_000,
                 flush_interval_s: float = 0.25) -> None:
        self.writer = writer
        self.queue: queue.Queue[object] = queue.Queue(maxsize=max_batches)
        self.max_records = max_records
        self.flush_interval_s = flush_interval_s
        self.written = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name="mds-storage", daemon=True)
        self.thread.start()

    def _write(self, pending: list[object]) -> None:
        try:
            self.written += self.writer.write_batch(pending)
        except Exception:  # keep the service up; the error is logged and counted
            self.errors += 1
            log.exception("storage write of %d records failed", len(pending))

    def _run(self) -> None:
        pending: list[object] = []
        first_at = 0.0
        stopping = False
        while not stopping:
            timeout = None if not pending else max(0.0, first_at + self.flush_interval_s - time.monotonic())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            barrier = item if isinstance(item, _Barrier) else None
            if item is self._STOP:
                stopping = True
            elif isinstance(item, list):
                if not pending:
                    first_at = time.monotonic()
                pending.extend(item)
            if pending and (stopping or barrier is not None or len(pending) >= self.max_records
                            or time.monotonic() - first_at >= self.flush_interval_s):
                errors = self.errors
                self._write(pending)
                pending = []
                if barrier is not None and self.errors != errors:
                    barrier.release(RuntimeError("storage write failed; see the log"))
                    barrier = None
            if barrier is not None:
                barrier.release()
        try:
            self.writer.flush()
        finally:
            self.writer.close()

    async def submit(self, records: list[object] | _Barrier) -> None:
        try:
            self.queue.put_nowait(records)
        except queue.Full:
            await asyncio.to_thread(self.queue.put, records)

    async def stop(self) -> None:
        await asyncio.to_thread(self.queue.put, self._STOP)
        await asyncio.to_thread(self.thread.join)


def engine_book_reader(engine: Engine) -> Callable[[str, str], BookView | None]:
    """The router's read of a venue's consistent book, from the engine's public ``book``."""
    def read(venue: str, symbol: str) -> BookView | None:
        book = engine.book(venue, symbol)
        if book is None or not book.synced:
            return None
        return tuple(book.bid_levels()), tuple(book.ask_levels()), book.last_ts_event, book.last_ts_recv
    return read


_LIVE_STATES = ("live", "done")


def _feed_venues(feed: object) -> tuple[str, ...]:
    """The venues a feed serves, when it says (``venue`` or ``venues``): its health marks them down."""
    venues = getattr(feed, "venues", None)
    if isinstance(venues, Iterable) and not isinstance(venues, str):
        return tuple(v for v in venues if isinstance(v, str))
    venue = getattr(feed, "venue", None)
    return (venue,) if isinstance(venue, str) and venue else ()


class Runtime:
    """Owns the engine and the tasks around it. ``start`` then ``stop(grace)``."""

    def __init__(self, engine: Engine, feeds: list[Feed], *, storage: BatchWriter | None = None,
                 tick_interval_s: float = 0.1, ingest_queue_batches: int = 1024,
                 clock: Callable[[], int] = time.time_ns, sources: Sequence[SourcePolicy] = ()) -> None:
        self.engine = engine
        self.feeds = feeds
        self.listeners: list[UpdateListener] = []
        self._clock = clock
        self._tick_interval_s = tick_interval_s
        self._queue: asyncio.Queue[list[Event] | _Barrier] = asyncio.Queue(maxsize=ingest_queue_batches)
        self._storage = _StorageThread(storage) if storage is not None else None
        self._feed_tasks: list[asyncio.Task[None]] = []
        self._engine_task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self.events_applied = 0
        self.batches_applied = 0
        self.last_batch_lag_ns = 0
        self.router = SourceRouter(sources, engine_book_reader(engine)) if sources else None
        """Per-instrument source priority and failover (None without source policies)."""
        self._feed_venues = [(f, v) for f in feeds if (v := _feed_venues(f))]

    # -- the sink feeds write to ----------------------------------------------------------------

    async def put(self, batch: list[Event], /) -> None:
        """EventSink: enqueue a batch for the engine (waits while the queue is full). Nothing accepted is
        dropped; ``barrier`` tells when it is applied and stored."""
        if batch:
            await self._queue.put(batch)

    async def barrier(self) -> None:
        """Return once every batch put before this call is applied by the engine and written to storage
        (at-least-once feeds commit their source offsets after it). Raises if that storage write failed."""
        marker = _Barrier(asyncio.get_running_loop())
        await self._queue.put(marker)
        await marker.done

    @property
    def warm(self) -> bool:
        """True once every feed delivered its initial state."""
        return all(f.warm for f in self.feeds)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._engine_task = asyncio.create_task(self._engine_loop(), name="mds-engine")
        self._clock_task = asyncio.create_task(self._clock_loop(), name="mds-clock")
        for feed in self.feeds:
            self._feed_tasks.append(asyncio.create_task(self._run_feed(feed), name=f"mds-feed-{feed.name}"))

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop feeds and the clock, let the engine apply what was accepted, flush storage."""
        for task in (*self._feed_tasks, self._clock_task):
            if task is not None:
                task.cancel()
        for task in (*self._feed_tasks, self._clock_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await asyncio.wait_for(self._queue.join(), timeout=max(grace_s, 0.001))
        except TimeoutError:
            log.warning("engine did not drain %d queued batches within %.1fs", self._queue.qsize(), grace_s)
        if self._engine_task is not None:
            self._engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._engine_task
        if self._storage is not None:
            await self._storage.stop()

    async def _run_feed(self, feed: Feed) -> None:
        try:
            await feed.run(self)
            log.info("feed %s finished", feed.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("feed %s failed", feed.name)

    async def _clock_loop(self) -> None:
        interval = self._tick_interval_s
        while True:
            await asyncio.sleep(interval)
            await self._queue.put([ClockTick(self._clock())])

    async def _engine_loop(self) -> None:
        q = self._queue
        apply = self.engine.apply_batch if self.router is None else self._apply_routed
        while True:
            batch = await q.get()
            out: list[object] = []
            taken = 1
            barrier: _Barrier | None = None
            try:
                applied = 0
                if isinstance(batch, _Barrier):
                    barrier = batch
                else:
                    apply(batch, out)
                    applied = len(batch)
                    # Take what else is ready now: fewer, larger update batches downstream.
                    while taken < 64 and not q.empty():
                        nxt = q.get_nowait()
                        taken += 1
                        if isinstance(nxt, _Barrier):
                            barrier = nxt  # it ends this round: it must follow what came before it
                            break
                        batch = nxt
                        apply(batch, out)
                        applied += len(batch)
                self.events_applied += applied
                self.batches_applied += taken
                if applied:
                    last = batch[-1]  # type: ignore[index]  # a list when anything was applied
                    recv = getattr(last, "ts_recv", None)
                    if isinstance(recv, int):
                        self.last_batch_lag_ns = self._clock() - recv
                if out:
                    for listener in self.listeners:
                        listener(out)
                    if self._storage is not None:
                        await self._storage.submit(out)
                if barrier is not None:
                    if self._storage is not None:
                        await self._storage.submit(barrier)
                    else:
                        barrier.release()
            except Exception as exc:
                log.exception("engine failed on a batch; it was skipped")
                if barrier is not None:
                    barrier.release(exc)
            finally:
                for _ in range(taken):
                    q.task_done()
            # Queue.get() does not suspend while batches are waiting: give the gRPC handlers a turn after
            # every round, so a busy feed can never starve the service.
            await asyncio.sleep(0)

    def _apply_routed(self, batch: list[Event], out: list[object]) -> None:
        """Apply a batch, let the router read what the engine emitted, then apply the composite events."""
        router = self.router
        assert router is not None
        engine = self.engine
        mark = len(out)
        engine.apply_batch(batch, out)
        derived: list[Event] = []
        notes: list[QualityFlag] = []
        if len(batch) == 1 and type(batch[0]) is ClockTick:
            router.tick(batch[0].ts, self._down_venues(), derived, notes)
        else:
            router.route(out, mark, derived, notes)
        if notes:
            for note in notes:
                engine.quality.record(note)
            out.extend(notes)
        if derived:
            engine.apply_batch(derived, out)

    def _down_venues(self) -> set[str]:
        """Venues whose feed reports a state other than live or done (read at each clock tick)."""
        down: set[str] = set()
        for feed, venues in self._feed_venues:
            status = getattr(feed, "status", None)
            if callable(status):
                try:
                    state = status().state
                except Exception:  # a broken status() must not stop the engine
                    log.exception("status() of feed %s failed", getattr(feed, "name", "?"))
                    continue
                if state not in _LIVE_STATES:
                    down.update(venues)
        return down
