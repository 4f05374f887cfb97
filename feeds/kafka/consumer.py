"""``KafkaFeed``: the matching engine's Kafka topics as a ``Feed`` (aiokafka consumer group, at least once).

Owns the I/O of the Kafka source: the consumer group, the poll / parse / deliver / commit loop,
rebalances, reconnects and the feed's counters. Parsing is ``feeds.kafka.parser`` (pure), duplicate
filtering ``feeds.kafka.dedupe`` (pure).

The loop, per ``getmany`` batch (records of several partitions, each partition in order):

1. parse every record (one item each); dead letters go to ``dead_letters`` and are counted by reason
   code; duplicates (a redelivery) are dropped by the ``Deduper`` and counted; book hashes become
   ``BookCheck`` and instrument events ``TradingStatusChange`` events, in the batch in record order (a
   hash is checked after exactly the book events before it; a mismatch leaves that book awaiting the
   engine's next snapshot, as a gap does);
2. ``await sink.put(events)`` (it may wait: backpressure); if it fails or is cancelled, the deduper
   forgets the batch, so a later run of the same feed does not drop its redelivery;
3. if the sink is a ``DurableSink``, start ``sink.barrier()`` (it resolves once everything put so far
   is applied by the engine and handed to durable storage) and, without waiting for it, queue the batch
   as *in flight* and poll the next one: the next batches reach the engine while storage writes;
4. a committer task takes the batches in flight in order: it waits for the oldest one's barrier, then,
   for it and every later batch whose barrier has resolved too, runs the callbacks for book hashes and
   instrument events in record order and commits, in one commit, the offset after each partition's
   last record.

So a commit never covers a record that is not applied and stored (at least once), commits never go
out of order, and a crash with batches in flight only causes a redelivery that the ``Deduper`` drops
(seed it from storage after a process restart). A failed barrier commits nothing more: ``run`` raises
its error as the feed's failure, and the batches after it stay uncommitted. A sink without ``barrier``
is committed after ``put`` returns, by the same committer.

In flight (polled, not yet committed) are at most ``max_in_flight`` batches and ``max_in_flight_records``
records: a poll asks for no more records than the room left, and the loop waits for a commit before
polling when either bound is reached. ``max_in_flight=1`` is the strict poll / barrier / commit cycle.

Rebalances: when partitions are revoked, the listener waits (up to ``revoke_timeout_s``) for the batch
being delivered and for every batch in flight that holds a revoked partition to be committed, so the
next owner starts after them. A batch still in flight after that wait never commits (aiokafka revokes
every partition at a rebalance, so its partitions may be another member's by then; counted in
``commit_skipped``). A commit that fails because the group moved on (``CommitFailedError``, a
partition no longer assigned, a timeout) is logged and counted, never raised: its records come again
(to this consumer or another) and are deduplicated. A fatal client error (the broker unreachable at
start, ...) drops the batches in flight uncommitted, closes the consumer and starts a new one after a
backoff (``reconnects``); ``run`` only ends when cancelled or when the sink fails.

Topics default to all of the contract's (``parser.ALL_TOPICS``); records are keyed by symbol, so each
symbol's events keep their order. ``warm`` turns True once the consumer has caught up with its
partitions (a poll returned nothing while partitions were assigned).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError  # type: ignore[import-untyped]
from aiokafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

from feeds.file_feed import DeadLetterLog
from feeds.kafka.dedupe import Deduper
from feeds.kafka.parser import ALL_TOPICS, BookHash, InstrumentStatus, engine_event, parse_record, reason_code
from feeds.protocols import DeadLetter, DeadLetterSink, EventSink, FeedStatus
from server.engine.events import Event

log = logging.getLogger(__name__)

SPEC_HELP: Final = ("expected 'kafka[:brokers=h:p+h:p,group=G,instance=I,topics=t1+t2,prefix=P,client=C,"
                    "reset=earliest|latest,max_records=N,poll_ms=N,session_ms=N,in_flight=N,in_flight_records=N]' "
                    "(brokers default to $KAFKA_BROKERS)")
_SPEC_KEYS: Final = ("brokers", "group", "instance", "topics", "prefix", "client", "reset", "max_records", "poll_ms",
                     "session_ms", "in_flight", "in_flight_records")
_LOGGED_PER_REASON: Final = 10
DEFAULT_MAX_IN_FLIGHT: Final = 16


class DurableSink(EventSink, Protocol):
    """An ``EventSink`` that can say when what it was given is safe.

    ``barrier`` returns once every batch ``put`` before it was applied by the engine and handed to
    durable storage; the feed commits Kafka offsets only after it.
    """

    async def barrier(self) -> None: ...


@dataclass(frozen=True, slots=True)
class KafkaFeedConfig:
    """Settings of a ``KafkaFeed``. ``bootstrap`` is 'host:port[,host:port...]'."""

    bootstrap: str
    group_id: str = "mds"
    group_instance_id: str = ""
    """Static group membership (KIP-345) when set: an id unique to this service instance in the group
    (e.g. its host name). A restarted instance with the same id gets its partitions back at once, with no
    rebalance; the group waits up to ``session_timeout_ms`` for an instance that does not come back."""
    topics: tuple[str, ...] = ALL_TOPICS
    client_id: str = "mds"
    topic_prefix: str = ""
    """Prepended to every topic name (an environment's namespace, e.g. 'staging.'); the parser sees the
    name without it."""
    auto_offset_reset: str = "earliest"
    """Where a partition with no committed offset starts: 'earliest' (replay what is kept) or 'latest'."""
    max_records: int = 5000
    """Most records per poll (one sink batch)."""
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    """Most batches delivered to the sink and not yet committed (their barriers pending); 1 waits for each
    batch's barrier and commit before the next poll."""
    max_in_flight_records: int = 40_000
    """Most records polled and not yet committed (a poll asks for no more than the room left)."""
    poll_timeout_ms: int = 200
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    commit_timeout_s: float = 30.0
    revoke_timeout_s: float = 30.0
    reconnect_backoff_s: float = 0.2
    reconnect_max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise ValueError("kafka: no brokers (give brokers=host:port or set KAFKA_BROKERS)")
        if not self.group_id:
            raise ValueError("kafka: the group id must not be empty")
        if not self.topics or any(not t for t in self.topics):
            raise ValueError("kafka: give at least one topic, none empty")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"kafka: reset must be 'earliest' or 'latest', not {self.auto_offset_reset!r}")
        if self.max_records < 1 or self.poll_timeout_ms < 1 or self.session_timeout_ms < 1:
            raise ValueError("kafka: max_records, poll_ms and session_ms must be >= 1")
        if self.max_in_flight < 1 or self.max_in_flight_records < 1:
            raise ValueError("kafka: in_flight and in_flight_records must be >= 1")

    @classmethod
    def from_spec(cls, text: str, env: Mapping[str, str] | None = None) -> KafkaFeedConfig:
        """Parse ``kafka[:k=v,...]`` (see ``SPEC_HELP``); ValueError for an unknown key or a bad value.

        Lists inside a value are separated by '+'. Without ``brokers``, ``KAFKA_BROKERS`` (comma-separated)
        from ``env`` (default: the process environment) is used.
        """
        spec = text.strip()
        kind, sep, rest = spec.partition(":")
        if kind != "kafka":
            raise ValueError(f"not a kafka spec: {text!r}: {SPEC_HELP}")
        if sep and not rest.strip():
            raise ValueError(f"nothing after 'kafka:' in {text!r}: {SPEC_HELP}")
        options: dict[str, str] = {}
        for item in rest.split(",") if rest.strip() else ():
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not key or not value:
                raise ValueError(f"bad kafka option {item!r} in {text!r}: expected k=v")
            if key not in _SPEC_KEYS:
                raise ValueError(f"unknown kafka option {key!r} in {text!r}; known: {', '.join(_SPEC_KEYS)}")
            if key in options:
                raise ValueError(f"kafka option {key!r} given twice in {text!r}")
            options[key] = value
        environ = os.environ if env is None else env
        brokers = options.get("brokers", "").replace("+", ",") or environ.get("KAFKA_BROKERS", "")
        bootstrap = ",".join(b.strip() for b in brokers.split(",") if b.strip())
        kwargs: dict[str, Any] = {"bootstrap": bootstrap}
        if "group" in options:
            kwargs["group_id"] = options["group"]
        if "instance" in options:
            kwargs["group_instance_id"] = options["instance"]
        if "topics" in options:
            kwargs["topics"] = tuple(t.strip() for t in options["topics"].split("+"))
        if "prefix" in options:
            kwargs["topic_prefix"] = options["prefix"]
        if "client" in options:
            kwargs["client_id"] = options["client"]
        if "reset" in options:
            kwargs["auto_offset_reset"] = options["reset"]
        for key, attr in (("max_records", "max_records"), ("poll_ms", "poll_timeout_ms"),
                          ("session_ms", "session_timeout_ms"), ("in_flight", "max_in_flight"),
                          ("in_flight_records", "max_in_flight_records")):
            if key in options:
                if not options[key].isdigit():
                    raise ValueError(f"kafka option {key} must be a whole number, not {options[key]!r}")
                kwargs[attr] = int(options[key])
        return cls(**kwargs)


InstrumentCallback = Callable[[InstrumentStatus], None]
BookHashCallback = Callable[[BookHash], None]


@dataclass(eq=False, slots=True)
class _InFlight:
    """A batch delivered to the sink and not yet committed."""

    offsets: dict[Any, int]
    """TopicPartition -> the offset after its last record in the batch."""
    side: list[InstrumentStatus | BookHash]
    records: int
    epoch: int
    """How many revocations the feed had seen when the batch was polled: an older batch never commits."""
    durable: asyncio.Future[None] | None
    """The batch's barrier (None: nothing to wait for)."""
    retired: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the batch is committed (or its commit skipped or failed), or dropped."""


class KafkaFeed:
    """The matching engine's topics as a ``feeds.protocols.Feed``; see the module docstring.

    Counters (plain attributes): ``consumed`` records, ``events`` delivered, ``batches`` delivered,
    ``dead_letter_reasons`` (Counter by reason code; the letters themselves are in ``dead_letters``),
    ``duplicates`` dropped, ``commits``, ``commit_failures``, ``commit_skipped`` (partitions revoked
    before their commit), ``rebalances``, ``reconnects``, ``in_flight_peak`` and
    ``in_flight_records_peak`` (the most batches / records in flight at once). ``committed`` maps
    (topic, partition) to the next offset committed by this feed. ``instruments`` and ``book_hashes``
    keep the latest of each per (venue, symbol).
    """

    def __init__(self, config: KafkaFeedConfig, *, name: str = "kafka", deduper: Deduper | None = None,
                 dead_letters: DeadLetterSink | None = None, on_instrument: InstrumentCallback | None = None,
                 on_book_hash: BookHashCallback | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.name = name
        self.config = config
        self.deduper = deduper if deduper is not None else Deduper()
        self.dead_letters = DeadLetterLog(forward=dead_letters)
        self.on_instrument = on_instrument
        self.on_book_hash = on_book_hash
        self._clock = clock
        self.consumed = 0
        self.events = 0
        self.batches = 0
        self.dead_letter_reasons: Counter[str] = Counter()
        self.commits = 0
        self.commit_failures = 0
        self.commit_skipped = 0
        self.rebalances = 0
        self.reconnects = 0
        self.in_flight_peak = 0
        self.in_flight_records_peak = 0
        self.committed: dict[tuple[str, int], int] = {}
        self.assignment: frozenset[tuple[str, int]] = frozenset()
        self.instruments: dict[tuple[str, str], InstrumentStatus] = {}
        self.book_hashes: dict[tuple[str, str], BookHash] = {}
        self._warm = False
        self._idle: asyncio.Event | None = None
        self._queued: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._in_flight_records = 0
        self._epoch = 0
        self._connected = False
        self._running = False
        self._last_ns = 0

    @property
    def warm(self) -> bool:
        return self._warm

    @property
    def duplicates(self) -> int:
        return self.deduper.duplicates

    @property
    def in_flight(self) -> int:
        """Batches delivered to the sink and not yet committed."""
        return len(self._in_flight)

    @property
    def in_flight_records(self) -> int:
        """Records polled and not yet committed."""
        return self._in_flight_records

    def status(self) -> FeedStatus:
        """ReportsStatus: live once partitions are assigned and polled; stale while reconnecting."""
        if not self._running:
            state = "stopped"
        elif self._connected:
            state = "live" if self._warm else "connecting"
        else:
            state = "stale" if self.reconnects else "connecting"
        age = time.monotonic_ns() - self._last_ns if self._last_ns else None
        detail = (f"group {self.config.group_id}; {self.commits} commits, {self.commit_failures} failed; "
                  f"{len(self._in_flight)} batches in flight")
        return FeedStatus(self.name, "kafka", state, age, self.events, reconnects=self.reconnects,
                          dead_letters=self.dead_letters.total, detail=detail)

    async def run(self, sink: EventSink) -> None:
        """Consume until cancelled; reconnects on fatal client errors (see the module docstring)."""
        barrier: Callable[[], Awaitable[None]] | None = getattr(sink, "barrier", None)
        self._idle = asyncio.Event()
        self._idle.set()
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._running = True
        backoff = self.config.reconnect_backoff_s
        try:
            while True:
                consumer = self._new_consumer()
                try:
                    await consumer.start()
                    self._connected = True
                    backoff = self.config.reconnect_backoff_s
                    await self._consume(consumer, sink, barrier)
                except KafkaError as exc:
                    self.reconnects += 1
                    log.warning("kafka feed %s: %s; reconnecting in %.1f s", self.name, exc, backoff)
                finally:
                    self._connected = False
                    self.assignment = frozenset()
                    try:
                        await consumer.stop()
                    except Exception as exc:  # a half-started client may fail to close; it holds nothing then
                        log.debug("kafka feed %s: stop failed: %s", self.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_backoff_s)
        finally:
            self._running = False

    def _new_consumer(self) -> Any:
        c = self.config
        return AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap,
            client_id=c.client_id,
            group_id=c.group_id,
            group_instance_id=c.group_instance_id or None,
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_interval_ms=c.max_poll_interval_ms,
        )

    async def _consume(self, consumer: Any, sink: EventSink, barrier: Callable[[], Awaitable[None]] | None) -> None:
        """The poll loop and the committer, until either fails (its error is raised) or this is cancelled."""
        prefix = self.config.topic_prefix
        consumer.subscribe(topics=[prefix + t for t in self.config.topics], listener=_Listener(self))
        poller = asyncio.create_task(self._poll(consumer, sink, barrier), name=f"kafka-poll-{self.name}")
        committer = asyncio.create_task(self._committer(consumer), name=f"kafka-commit-{self.name}")
        try:
            done, _ = await asyncio.wait((poller, committer), return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # both loop until they fail
        finally:
            tasks: list[asyncio.Future[None]] = [poller, committer]
            tasks += [b.durable for b in self._in_flight if b.durable is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # also takes the errors of failed barriers
            for b in self._in_flight:  # dropped uncommitted: redelivered, then deduplicated
                b.retired.set()
            self._in_flight.clear()
            self._in_flight_records = 0

    async def _poll(self, consumer: Any, sink: EventSink, barrier: Callable[[], Awaitable[None]] | None) -> None:
        """Poll, parse, deliver, start the barrier, queue the batch for the committer; bounded in flight."""
        config = self.config
        idle, queued, room = self._idle, self._queued, self._room
        assert idle is not None and queued is not None and room is not None
        pending = self._in_flight
        while True:
            while len(pending) >= config.max_in_flight or self._in_flight_records >= config.max_in_flight_records:
                room.clear()
                await room.wait()
            limit = min(config.max_records, config.max_in_flight_records - self._in_flight_records)
            records: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=config.poll_timeout_ms,
                                                                   max_records=limit)
            if not records:
                if consumer.assignment():
                    self._warm = True
                continue
            idle.clear()
            try:
                self.deduper.begin()
                try:
                    events, side, offsets, count = self._process(records)
                    if events:
                        await sink.put(events)
                except BaseException:
                    self.deduper.rollback()  # never delivered: a redelivery must not count as a duplicate
                    raise
                self.deduper.end()
                durable: asyncio.Future[None] | None = None
                if events:
                    self.events += len(events)
                    self.batches += 1
                    self._last_ns = time.monotonic_ns()
                    if barrier is not None:
                        durable = asyncio.ensure_future(barrier())
                pending.append(_InFlight(offsets, side, count, self._epoch, durable))
                self._in_flight_records += count
                self.in_flight_peak = max(self.in_flight_peak, len(pending))
                self.in_flight_records_peak = max(self.in_flight_records_peak, self._in_flight_records)
                queued.set()
                if durable is not None:
                    await asyncio.sleep(0)  # the barrier task's first step: its marker right behind the batch
            finally:
                idle.set()

    async def _committer(self, consumer: Any) -> None:
        """Commit the batches in flight in order, each once its barrier resolved; raise a failed barrier."""
        queued, room = self._queued, self._room
        assert queued is not None and room is not None
        pending = self._in_flight
        while True:
            while not pending:
                queued.clear()
                await queued.wait()
            head = pending[0]
            if head.durable is not None:
                await head.durable  # a failed barrier raises: nothing more is committed
            ready = 0  # the head, and every batch right behind it that is durable too: one commit
            for b in pending:
                d = b.durable
                if d is not None and (not d.done() or d.cancelled() or d.exception() is not None):
                    break
                ready += 1
            batches = [pending[i] for i in range(ready)]
            offsets: dict[Any, int] = {}
            stale = 0
            for b in batches:
                self._callbacks(b.side)
                if b.epoch == self._epoch:
                    offsets.update(b.offsets)
                else:
                    stale += len(b.offsets)
            if stale:
                self.commit_skipped += stale
                log.info("kafka feed %s: %d partition offset(s) of batches polled before a rebalance not "
                         "committed; their records will be redelivered and deduplicated", self.name, stale)
            await self._commit(consumer, offsets)
            for b in batches:
                pending.popleft()
                self._in_flight_records -= b.records
                b.retired.set()
            room.set()

    def _process(self, records: Mapping[Any, list[Any]]
                 ) -> tuple[list[Event], list[InstrumentStatus | BookHash], dict[Any, int], int]:
        """The batch's events, its side items, each partition's next offset and its record count."""
        ts_recv = self._clock()
        count = 0
        events: list[Event] = []
        side: list[InstrumentStatus | BookHash] = []
        offsets: dict[Any, int] = {}
        admit = self.deduper.admit
        cut = len(self.config.topic_prefix)
        for tp, batch in records.items():
            topic = tp.topic[cut:]
            for rec in batch:
                item = parse_record(topic, rec.partition, rec.offset, rec.key, rec.value, ts_recv)
                if isinstance(item, DeadLetter):
                    self._dead_letter(item)
                elif not admit(item):
                    pass
                elif isinstance(item, InstrumentStatus | BookHash):
                    side.append(item)
                    events.append(engine_event(item))  # in record order: a hash follows its book events
                else:
                    events.append(item)
            if batch:
                count += len(batch)
                offsets[tp] = batch[-1].offset + 1
        self.consumed += count
        return events, side, offsets, count

    def _dead_letter(self, item: DeadLetter) -> None:
        code = reason_code(item)
        self.dead_letter_reasons[code] += 1
        self.dead_letters.append(item)
        if self.dead_letter_reasons[code] <= _LOGGED_PER_REASON:
            log.warning("kafka feed %s: dead letter (%s) %s", self.name, item.reason, item.raw[:200])

    def _callbacks(self, items: list[InstrumentStatus | BookHash]) -> None:
        for item in items:
            if isinstance(item, InstrumentStatus):
                self.instruments[item.venue, item.symbol] = item
                if self.on_instrument is not None:
                    self.on_instrument(item)
            else:
                self.book_hashes[item.venue, item.symbol] = item
                if self.on_book_hash is not None:
                    self.on_book_hash(item)

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        assigned = consumer.assignment()
        todo = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in assigned}
        if len(todo) < len(offsets):
            self.commit_skipped += len(offsets) - len(todo)
            log.info("kafka feed %s: %d partition(s) revoked before their commit; their records will be "
                     "redelivered and deduplicated", self.name, len(offsets) - len(todo))
        if not todo:
            return
        try:
            await asyncio.wait_for(consumer.commit(todo), self.config.commit_timeout_s)
        except (CommitFailedError, IllegalStateError, KafkaError, TimeoutError) as exc:
            self.commit_failures += 1
            log.warning("kafka feed %s: commit failed (%s: %s); the records will be redelivered and "
                        "deduplicated", self.name, type(exc).__name__, exc)
            return
        self.commits += 1
        for tp, om in todo.items():
            self.committed[tp.topic, tp.partition] = om.offset

    async def _on_revoked(self, revoked: set[Any]) -> None:
        idle = self._idle
        if idle is None or not revoked:
            return  # the first join revokes nothing
        self.rebalances += 1
        try:
            async with asyncio.timeout(self.config.revoke_timeout_s):
                await idle.wait()  # the batch being delivered joins those in flight
                last = next((b for b in reversed(self._in_flight) if not revoked.isdisjoint(b.offsets)), None)
                if last is not None:
                    await last.retired.wait()  # commits go in order: every batch before it is retired too
        except TimeoutError:
            log.warning("kafka feed %s: the batches in flight did not commit within %.1f s of a rebalance; "
                        "their records will be redelivered", self.name, self.config.revoke_timeout_s)
        finally:
            self._epoch += 1  # what is still in flight now never commits

    def _on_assigned(self, assigned: set[Any]) -> None:
        self.assignment = frozenset((tp.topic, tp.partition) for tp in assigned)
        log.info("kafka feed %s: assigned %d partition(s)", self.name, len(assigned))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Rebalance hooks of a ``KafkaFeed``: commit the batches in flight before partitions go."""

    def __init__(self, feed: KafkaFeed) -> None:
        self._feed = feed

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._feed._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._feed._on_assigned(assigned)
