"""The running service core: feeds -> bounded ingest queue -> engine -> listeners and storage.

One asyncio task owns the engine; feeds and the clock only enqueue batches, so the engine is never
touched concurrently and gRPC handlers (same event loop) read it without locks. The ingest queue is bounded
in batches and in events; the engine applies it in rounds of at most ``ROUND_EVENTS`` events, each followed
by the listeners and a turn for everything else on the loop. Storage writes run on a
thread of their own behind a bounded queue: when storage falls behind, the engine loop waits, the
ingest queue fills and feeds wait; nothing accepted is dropped. With a ``PreparingWriter`` (the embedded
store), the engine task itself encodes the records once the streams had their turn and it has caught up
with its feeds (``PREPARE_RECORDS``, ``PREPARE_STEP``, ``PREPARE_BACKLOG``), and the thread only inserts:
Python work on that thread would make the event loop wait for the GIL.

With source policies (``server.engine.sources``), each applied batch's updates go through the
``SourceRouter``, and the composite-venue events it derives are applied right after, in the same round;
clock ticks also carry the venues whose feed reports itself disconnected.

The service's own records go to storage on the same thread: every feed's dead letters (the runtime chains
its ``DeadLetterRecorder`` behind each feed's dead-letter log; the storage thread drains it into its bulk
writes, and a barrier covers the letters recorded before it), and the trading status changes (halts,
resumes) the engine applied, so a restart restores them (``server.restore``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from feeds.protocols import Feed
from server.engine.engine import Engine
from server.engine.events import ClockTick, Event
from server.engine.quality import QualityFlag
from server.engine.sources import BookView, SourcePolicy, SourceRouter
from server.storage.dead_letters import DeadLetterRecorder

log = logging.getLogger("mds.runtime")

UpdateListener = Callable[[list[object]], None]
"""Called on the event loop with every batch of engine updates, in order; must not block."""


class BatchWriter(Protocol):
    """What the runtime needs from storage: synchronous batch writes (run on the writer thread)."""

    def write_batch(self, records: list[object]) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Prepared(Protocol):
    """Records a ``PreparingWriter`` encoded ahead of their write."""

    @property
    def rows(self) -> int: ...


@runtime_checkable
class PreparingWriter(Protocol):
    """A ``BatchWriter`` that can encode records ahead of their write and write many such pieces at once:
    the runtime encodes on the engine task (see ``PREPARE_RECORDS``), and the storage thread only inserts."""

    def storable(self, records: list[object]) -> list[object]:
        """A new list of the records ``prepare`` would store, in order (only these wait to be encoded)."""
        ...

    def prepare(self, records: list[object]) -> Prepared: ...

    def write_prepared(self, prepared: list[Prepared]) -> int: ...


PREPARE_RECORDS = 256
"""With a ``PreparingWriter``, the engine task encodes records for storage once this many wait (up to
``PREPARE_STEP`` at a time), right after the streams had their turn. Encoding on the storage thread
instead would make the event loop wait for the GIL whenever that thread runs Python, and on a busy box
the hand-over of the GIL costs milliseconds."""
PREPARE_WAIT_S = 0.05
"""Once the engine has caught up, records wait at most about this long (plus a round) before they are encoded,
however few they are."""
STORAGE_FLUSH_S = 5.0
"""Storage writes what waited this long (``ServiceConfig.storage_flush_ms``): each ClickHouse insert makes a
part whose cost hardly depends on its size (BENCHMARKS.md, twelfth round)."""
PREPARE_STEP = 4096
"""The engine task encodes at most this many waiting records after a round (a few milliseconds' work), so
encoding a backlog never holds the loop for long."""
PREPARE_BACKLOG = 100_000
"""While the ingest queue holds events (the engine is behind), the engine task does not encode for storage:
live updates go first, and the records wait, until the queue is empty or this many are waiting (then the
oldest go, down to ``PREPARE_BACKLOG - PREPARE_STEP``). Encoding is about a sixth of the loop's work per
event, so when the box's speed dips the streams keep up and storage catches up afterwards (BENCHMARKS.md,
thirteenth round). A graceful stop, a barrier and a finished feed still write everything."""
GC_OBJECTS_PER_RECORD = 8
"""Objects the collector tracks per waiting record, at most: an update, its level tuples and so on."""
ROUND_EVENTS = 2048
"""The engine applies at most this many events per round before the listeners, the streams and storage
have their turn; a larger batch is applied over several rounds, in order. Short rounds keep latency even
when a feed delivers in bursts (or catches up), and keep the collector's young generation small: every
update of a round is alive until its round ends, and a young collection visits each of them."""


def _try_prepare(writer: PreparingWriter, records: list[object]) -> Prepared | None:
    """``writer.prepare(records)``, or None (logged) when a value cannot be stored: those records are lost
    and the caller counts a failure; the rest goes on."""
    try:
        return writer.prepare(records)
    except Exception:
        log.exception("storage could not encode %d records", len(records))
        return None


class StorageFailedError(RuntimeError):
    """A storage write failed: what was accepted before a barrier may not be durable."""


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
    waited ``flush_interval_s``. ``submit`` waits (off the loop) when the queue is full.

    A barrier is released once what came before it is written: at once if it is, else by a write it
    forces, at most one per ``barrier_gap_s`` (barriers arriving meanwhile, and those already queued,
    share it), so a feed's barriers do not turn into a write of a tiny batch each. It fails if any
    write since the previous release failed."""

    _STOP = object()
    _WAKE = object()
    barrier_gap_s = 0.1
    """Least time between the starts of two writes forced by barriers."""

    def __init__(self, writer: BatchWriter, max_batches: int = 256, max_records: int = 200_000,
                 flush_interval_s: float = STORAGE_FLUSH_S,
                 drain: Callable[[], Sequence[object]] | None = None) -> None:
        self.writer = writer
        self.drain = drain
        """Records queued outside ``queue`` (dead letters), taken on every turn of the thread."""
        self.queue: queue.Queue[object] = queue.Queue(maxsize=max_batches)
        self.max_records = max_records
        self.flush_interval_s = flush_interval_s
        self.written = 0
        self.errors = 0
        """Failed writes and encodings on this thread."""
        self.encode_failures = 0
        """Records the engine task could not encode (it counts them; this thread only reads the count)."""
        self.thread = threading.Thread(target=self._run, name="mds-storage", daemon=True)
        self.thread.start()

    def _write(self, pending: list[Any], raw: list[object], rows: int) -> None:
        writer = self.writer
        try:
            if isinstance(writer, PreparingWriter):
                self._prepare(pending, raw)
                self.written += writer.write_prepared(pending)
            else:
                self.written += writer.write_batch(raw)
        except Exception:  # keep the service up; the error is logged and counted
            self.errors += 1
            log.exception("storage write of %d records failed", rows)

    def _prepare(self, pending: list[Any], raw: list[object]) -> None:
        """Encode the records in ``raw`` into a piece of ``pending`` (a ``PreparingWriter``); empties raw."""
        if not raw:
            return
        assert isinstance(self.writer, PreparingWriter)
        piece = _try_prepare(self.writer, raw)
        if piece is None:
            self.errors += 1
        elif piece.rows:
            pending.append(piece)
        raw.clear()

    def _add(self, pending: list[Any], raw: list[object], item: Sequence[object] | Prepared) -> int:
        """Take records (or a piece prepared by the runtime) for the next write; returns how many."""
        if not isinstance(item, Sequence):
            pending.append(item)
            return item.rows
        raw.extend(item)
        if isinstance(self.writer, PreparingWriter):  # records the runtime did not prepare (dead letters)
            self._prepare(pending, raw)
        return len(item)

    def _run(self) -> None:
        pending: list[Any] = []  # prepared pieces (with a PreparingWriter)
        raw: list[object] = []  # records not prepared yet
        rows = 0  # records taken since the last write
        held: list[_Barrier] = []  # released once everything before them is written
        first_at = 0.0
        last_forced = -self.barrier_gap_s  # start of the last write a barrier forced
        reported = 0  # failures (errors + encode_failures) when barriers were last released
        stopping = False
        while not stopping:
            due = [first_at + self.flush_interval_s] if rows else []
            if held:
                due.append(last_forced + self.barrier_gap_s)
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            while True:  # with a barrier held, take what else is queued now: one write for all of it
                if isinstance(item, _Barrier):
                    held.append(item)
                elif item is self._STOP:
                    stopping = True
                elif item is not None and item is not self._WAKE:  # records, or a prepared piece
                    if not rows:
                        first_at = time.monotonic()
                    rows += self._add(pending, raw, item)  # type: ignore[arg-type]
                if stopping or not held or rows >= self.max_records:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if self.drain is not None and (extra := self.drain()):
                if not rows:
                    first_at = time.monotonic()
                rows += self._add(pending, raw, extra)
            now = time.monotonic()
            forced = bool(held) and now - last_forced >= self.barrier_gap_s
            if rows and (stopping or forced or rows >= self.max_records
                         or now - first_at >= self.flush_interval_s):
                if forced:
                    last_forced = now
                self._write(pending, raw, rows)
                pending = []
                raw = []
                rows = 0
            if held and not rows:
                failures = self.errors + self.encode_failures
                error = StorageFailedError("storage write failed; see the log") if failures != reported else None
                reported = failures
                for barrier in held:
                    barrier.release(error)
                held = []
        try:
            self.writer.flush()
        finally:
            self.writer.close()

    def wake(self) -> None:
        """Make the thread take a turn soon (from any thread; never waits: a full queue turns anyway)."""
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(self._WAKE)

    async def submit(self, records: list[object] | Prepared | _Barrier) -> None:
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
        if book is None or not book.synced or book.halted:
            return None
        return tuple(book.bid_levels()), tuple(book.ask_levels()), book.last_ts_event, book.last_ts_recv
    return read


def _book_sequence(engine: Engine) -> Callable[[str, str], int]:
    """The last sequence of a book the engine holds (0: none), for the router's composite numbering."""
    def seq(venue: str, symbol: str) -> int:
        book = engine.book(venue, symbol)
        return book.seq if book is not None else 0
    return seq


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
                 ingest_queue_events: int = 20_000, storage_flush_s: float = STORAGE_FLUSH_S,
                 clock: Callable[[], int] = time.time_ns, sources: Sequence[SourcePolicy] = (),
                 dead_letters: DeadLetterRecorder | None = None) -> None:
        self.engine = engine
        self.feeds = feeds
        self.listeners: list[UpdateListener] = []
        self._clock = clock
        self._tick_interval_s = tick_interval_s
        self._queue: asyncio.Queue[list[Event] | _Barrier] = asyncio.Queue(maxsize=ingest_queue_batches)
        if ingest_queue_events < 1:
            raise ValueError("ingest_queue_events must be >= 1")
        self._max_queued_events = ingest_queue_events
        self._queued_events = 0
        """Events in the queue, or taken from it and not applied yet (the rest of a cut batch)."""
        self._room = asyncio.Event()
        """Set when queued events fell below ``_max_queued_events``: waiting feeds check again."""
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterRecorder()
        """Every feed's dead letters (kept in memory; stored when there is storage)."""
        self.dead_letters.attach(feeds)
        self._storage = (_StorageThread(storage, flush_interval_s=storage_flush_s, drain=self.dead_letters.drain)
                         if storage is not None else None)
        self._preparing = storage if isinstance(storage, PreparingWriter) else None
        self._unprepared: deque[list[object]] = deque()
        """Records for a ``PreparingWriter`` not encoded yet, oldest first, one list per engine round (the
        engine task encodes them in steps; taking a step never copies what is left)."""
        self._unprepared_count = 0
        self._unprepared_since = 0.0
        self._gc_threshold: tuple[int, int, int] | None = None
        """The collector's thresholds before records waited (see ``_young_threshold_for_backlog``)."""
        self._gc_applied: tuple[int, int, int] = (0, 0, 0)
        """The thresholds this runtime set last (others were set by someone else)."""
        if self._storage is not None:
            self.dead_letters.persist(self._storage.wake)
        self._feed_tasks: list[asyncio.Task[None]] = []
        self.failed = asyncio.Event()
        """Set when the service must stop (see ``failure``); ``mds serve`` then exits non-zero."""
        self.failure: BaseException | None = None
        self._engine_task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self.events_applied = 0
        self.batches_applied = 0
        self.last_batch_lag_ns = 0
        self.router = SourceRouter(sources, engine_book_reader(engine), sequence_of=_book_sequence(engine)) \
            if sources else None
        """Per-instrument source priority and failover (None without source policies)."""
        self._feed_venues = [(f, v) for f in feeds if (v := _feed_venues(f))]

    # -- the sink feeds write to ----------------------------------------------------------------

    async def put(self, batch: list[Event], /) -> None:
        """EventSink: enqueue a batch for the engine (waits while the queue is full: ``ingest_queue_batches``
        batches, or ``ingest_queue_events`` events unless it is empty). Nothing accepted is dropped;
        ``barrier`` tells when it is applied and stored."""
        if batch:
            while self._queued_events and self._queued_events + len(batch) > self._max_queued_events:
                self._room.clear()
                await self._room.wait()
            self._queued_events += len(batch)
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

    @property
    def storage_backlog(self) -> int:
        """Records accepted by the engine that wait to be encoded for storage (see ``PREPARE_BACKLOG``)."""
        return self._unprepared_count

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
            await self._submit_unprepared()
            self._young_threshold_for_backlog()  # nothing waits now: the collector's threshold is set back
            await self._storage.stop()

    async def _run_feed(self, feed: Feed) -> None:
        try:
            await feed.run(self)
            log.info("feed %s finished", feed.name)
            if self._storage is not None:
                try:  # a finished feed's data (a replayed file) is in storage at once
                    await self.barrier()
                except StorageFailedError as exc:
                    log.error("feed %s finished, but storage could not write all of its data: %s", feed.name, exc)
        except asyncio.CancelledError:
            raise
        except StorageFailedError as exc:
            # An at-least-once feed cannot go on: its uncommitted input is applied but not durable, and its
            # deduplication would drop the redelivery. Stop the service so a restart reloads from storage.
            log.critical("feed %s: %s; the service stops so that a restart recovers from storage", feed.name, exc)
            self.failure = exc
            self.failed.set()
        except Exception:
            log.exception("feed %s failed", feed.name)

    async def _clock_loop(self) -> None:
        interval = self._tick_interval_s
        while True:
            await asyncio.sleep(interval)
            self._queued_events += 1
            await self._queue.put([ClockTick(self._clock())])

    async def _engine_loop(self) -> None:
        q = self._queue
        apply = self.engine.apply_batch if self.router is None else self._apply_routed
        limit = ROUND_EVENTS
        rest: list[Event] = []  # the part of a large batch this round left for the next; it goes first
        owed = 0  # 1 while the queue item ``rest`` came from is not finished (``task_done``)
        while True:
            if rest:
                batch: list[Event] | _Barrier = rest
                rest = []
                done, owed = owed, 0  # queue items this round finishes
            else:
                batch = await q.get()
                done = 1
            out: list[object] = []
            barrier: _Barrier | None = None
            applied = 0
            applying = False  # True while the engine applies: a failure there skips the rest of its batch
            try:
                if isinstance(batch, _Barrier):
                    barrier = batch
                else:
                    # Rounds of at most ROUND_EVENTS events: take what else is ready now (fewer, larger
                    # update batches downstream), and cut a batch that would pass the bound.
                    while True:
                        room = limit - applied
                        if len(batch) > room:
                            rest = batch[room:]
                            batch = batch[:room]
                            done -= 1  # its last part finishes it
                            owed = 1
                        applied += len(batch)  # counted before: a failed batch leaves the bound too
                        applying = True
                        apply(batch, out)
                        applying = False
                        if rest or applied >= limit or q.empty():
                            break
                        nxt = q.get_nowait()
                        done += 1
                        if isinstance(nxt, _Barrier):
                            barrier = nxt  # it ends this round: it must follow what came before it
                            break
                        batch = nxt
                self.events_applied += applied
                self.batches_applied += done
                if applied:
                    last = batch[-1]  # type: ignore[index]  # a list when anything was applied
                    recv = getattr(last, "ts_recv", None)
                    if isinstance(recv, int):
                        self.last_batch_lag_ns = self._clock() - recv
                if out:
                    for listener in self.listeners:
                        listener(out)
                if self._storage is not None:
                    status = self.engine.take_status_changes()
                    if self._preparing is not None:
                        if out or status:
                            # Only what storage keeps waits: the rest (NBBO, book statuses) goes with its round.
                            chunk = self._preparing.storable(out)
                            chunk += status
                            if chunk:
                                if not self._unprepared_count:
                                    self._unprepared_since = time.monotonic()
                                self._unprepared.append(chunk)
                                self._unprepared_count += len(chunk)
                    elif status:
                        await self._storage.submit([*out, *status])
                    elif out:
                        await self._storage.submit(out)
                if barrier is not None:
                    if self._storage is not None:
                        await self._submit_unprepared()
                        await self._storage.submit(barrier)
                    else:
                        barrier.release()
            except Exception as exc:
                if applying:  # the rest of that batch is skipped with it
                    log.exception("engine failed on a batch; it was skipped")
                    applied += len(rest)
                    rest = []
                    done += owed
                    owed = 0
                else:
                    log.exception("a listener or storage failed on an engine round; its updates were not all "
                                  "passed on")
                if barrier is not None:
                    barrier.release(exc)
            finally:
                self._release(applied)
                for _ in range(done):
                    q.task_done()
            # Queue.get() does not suspend while batches are waiting: give the gRPC handlers a turn after
            # every round, so a busy feed can never starve the service.
            await asyncio.sleep(0)
            # Encode for storage after the streams had their turn: once the engine caught up (at least
            # PREPARE_RECORDS, in steps of at most PREPARE_STEP while no events wait), or the oldest
            # beyond PREPARE_BACKLOG.
            while self._unprepared_count:
                waiting = self._unprepared_count
                if waiting >= PREPARE_BACKLOG:
                    await self._submit_unprepared(waiting - PREPARE_BACKLOG + PREPARE_STEP)
                elif q.empty() and (waiting >= PREPARE_RECORDS
                                    or time.monotonic() - self._unprepared_since >= PREPARE_WAIT_S):
                    await self._submit_unprepared(PREPARE_STEP)
                else:
                    break
                if self._unprepared_count:
                    await asyncio.sleep(0)  # the streams and feeds get a turn between steps of a backlog
            self._young_threshold_for_backlog()

    def _young_threshold_for_backlog(self) -> None:
        """Raise the collector's young-generation threshold by ``GC_OBJECTS_PER_RECORD`` per record waiting
        to be encoded, and lower it back as they go. Those records are acyclic and refcounting frees them
        once encoded; counted as young objects they would start a collection every few thousand records,
        and each walked some 60,000 live objects for 16-28 ms (a throwaway ``gc.callbacks`` probe at
        100,000 events/s). Thresholds someone else sets meanwhile (``mds serve`` sets its own once it has
        started) become the ones raised, and stay once nothing waits."""
        waiting = self._unprepared_count
        if self._gc_threshold is None and not waiting:
            return
        current = gc.get_threshold()
        if self._gc_threshold is None or current != self._gc_applied:
            self._gc_threshold = current
        young, middle, old = self._gc_threshold
        self._gc_applied = (young + GC_OBJECTS_PER_RECORD * waiting, middle, old)
        gc.set_threshold(*self._gc_applied)
        if not waiting:
            self._gc_threshold = None

    def _release(self, applied: int) -> None:
        """``applied`` events left the ingest queue's bound: wake the feeds waiting for room."""
        self._queued_events = max(0, self._queued_events - applied)
        if self._queued_events < self._max_queued_events:
            self._room.set()

    async def _submit_unprepared(self, limit: int | None = None) -> None:
        """Encode the records waiting for storage (the oldest ``limit`` of them, or all) and hand them to the
        storage thread as one piece."""
        chunks = self._unprepared
        if not chunks or self._storage is None or self._preparing is None:
            return
        if limit is None or limit >= self._unprepared_count:
            records = [r for chunk in chunks for r in chunk] if len(chunks) > 1 else chunks[0]
            chunks.clear()
            self._unprepared_count = 0
        else:
            records = []
            while len(records) < limit:
                chunk = chunks.popleft()
                room = limit - len(records)
                if len(chunk) > room:
                    chunks.appendleft(chunk[room:])
                    chunk = chunk[:room]
                records += chunk
            self._unprepared_count -= len(records)
        piece = _try_prepare(self._preparing, records)
        if piece is None:
            self._storage.encode_failures += 1  # the next barrier fails
        elif piece.rows:
            await self._storage.submit(piece)

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
