"""``KafkaFeed`` pipelining against a real broker: batches reach the sink while earlier barriers are pending.

Checked: each commit covers only records whose own barrier, and every earlier one, returned, even when
barriers finish out of order, and commits never go back; with a real ``Runtime`` whose storage writer is
held shut, batches reach the engine but nothing is committed and the in-flight bounds stop the polls
until the writer opens (then barriers arriving together share a write); a failed barrier stops the
commits (later barriers that succeeded included) and fails the feed; a crash with batches in flight is
redelivered without loss or duplicates; a rebalance waits for the batches in flight and commits them
before the partitions go, so the next owner gets no redelivery.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from feeds.kafka.consumer import KafkaFeed, KafkaFeedConfig
from feeds.kafka.dedupe import Deduper
from feeds.kafka.parser import BookHash, InstrumentStatus, engine_event, parse_record
from feeds.kafka.producer import EngineEncoder, EngineProducer, Record, Written
from feeds.protocols import DeadLetter
from server.engine.engine import Engine
from server.engine.events import Event
from server.runtime import Runtime
from tests.feeds.kafka.test_feed import (
    SYMBOLS,
    TIMEOUT_S,
    MemorySink,
    _config,
    _create_topics,
    _end_offsets,
    _engine_stream,
    _expected,
    _group_offsets,
    _key,
    _names,
    _run,
    _running,
    _stored,
    _strip,
    _wait_for,
)
from tests.kafka_broker import KafkaBroker


class BarrierLog(MemorySink):
    """A sink whose barriers finish after a random delay (so out of order), or fail, as told.

    ``calls[i]`` is how many events were stored when barrier ``i`` was called; ``finished`` the barriers
    that returned. ``durable()`` is what a feed may commit: the events before the last barrier of the
    unbroken run of returned ones from the first (a failed barrier never returns).
    """

    def __init__(self, seed: int, max_delay: float, fail_at: int | None = None, fail_delay: float = 0.0) -> None:
        super().__init__()
        self.rnd = random.Random(seed)
        self.max_delay = max_delay
        self.fail_at = fail_at
        self.fail_delay = fail_delay
        self.calls: list[int] = []
        self.finished: set[int] = set()
        self.overtaken = 0

    async def barrier(self) -> None:
        i = len(self.calls)
        self.calls.append(len(self.events))
        self.barriers += 1
        if i == self.fail_at:
            await asyncio.sleep(self.fail_delay)
            raise RuntimeError("disk full")
        await asyncio.sleep(self.rnd.random() * self.max_delay)
        if any(j not in self.finished for j in range(i)):
            self.overtaken += 1
        self.finished.add(i)

    def durable(self) -> int:
        k = 0
        while k in self.finished:
            k += 1
        return self.calls[k - 1] if k else 0


class CommitLog(KafkaFeed):
    """A ``KafkaFeed`` noting, at each commit it sends, the offsets and what its sink had made durable."""

    def __init__(self, config: KafkaFeedConfig, sink: BarrierLog) -> None:
        super().__init__(config)
        self.sink = sink
        self.log: list[tuple[dict[tuple[str, int], int], int]] = []

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        self.log.append(({(tp.topic, tp.partition): o for tp, o in offsets.items()}, self.sink.durable()))
        await super()._commit(consumer, offsets)


def _events_by_record(records: Sequence[Record], written: Sequence[Written], prefix: str
                      ) -> dict[tuple[str, int, int], Event]:
    """(topic, partition, offset) -> the event the feed delivers for that record (ts_recv zeroed)."""
    out: dict[tuple[str, int, int], Event] = {}
    for r, w in zip(records, written, strict=True):
        item = parse_record(r.topic[len(prefix):], 0, 0, r.key, r.value, 0)
        assert not isinstance(item, DeadLetter)
        out[w.topic, w.partition, w.offset] = _strip(
            engine_event(item) if isinstance(item, BookHash | InstrumentStatus) else item)
    return out


def _check_commits(feed: CommitLog, sink: BarrierLog, by_record: dict[tuple[str, int, int], Event]) -> None:
    """Every commit covers only durable events, and no partition's offset goes back."""
    last: dict[tuple[str, int], int] = {}
    for offsets, durable in feed.log:
        durable_keys = {_key(e) for e in sink.events[:durable]}
        for (topic, partition), offset in offsets.items():
            assert offset >= last.get((topic, partition), 0), "a commit went back"
            last[topic, partition] = offset
            covered = {_key(ev) for (t, p, o), ev in by_record.items() if t == topic and p == partition and o < offset}
            assert covered <= durable_keys, f"committed {topic}/{partition} up to {offset} before it was durable"


def test_commits_follow_each_batchs_own_barrier_in_order(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 600, seed=21)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(records)
        expected = _expected(records, prefix)
        sink = BarrierLog(seed=21, max_delay=0.08)
        feed = CommitLog(_config(kafka_broker, prefix, group, max_records=20), sink)
        ends = _end_offsets(written)
        async with _running(feed, sink):
            await _wait_for(lambda: len(sink.events) >= len(expected) and feed.in_flight == 0,
                            "all events and their commits")
        assert sink.overtaken > 0, "no barrier finished before an earlier one: the test proved nothing"
        assert feed.in_flight_peak > 1
        _check_commits(feed, sink, _events_by_record(records, written, prefix))
        assert feed.committed == ends
        assert len(sink.events) == len(expected)
        for symbol in SYMBOLS:
            got = [_strip(e) for e in sink.events if getattr(e, "symbol", "") == symbol]
            assert got == [e for e in expected if getattr(e, "symbol", "") == symbol]
        assert sink.barriers == feed.batches
        assert await _group_offsets(kafka_broker.bootstrap, group) == ends

    _run(scenario)


class GatedWriter:
    """A storage writer (``BatchWriter``) that holds every write until ``gate`` opens: a stalled disk."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.writes = 0
        self.records = 0

    def write_batch(self, records: list[object]) -> int:
        if not self.gate.wait(TIMEOUT_S):
            raise OSError("the gate never opened")
        self.writes += 1
        self.records += len(records)
        return len(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_nothing_is_committed_before_storage_writes_and_the_bounds_hold(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 600, seed=22)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(records)
        writer = GatedWriter()
        runtime = Runtime(Engine(), [], storage=writer, tick_interval_s=60.0)
        feed = KafkaFeed(_config(kafka_broker, prefix, group, max_records=40, max_in_flight=3,
                                 max_in_flight_records=100))
        ends = _end_offsets(written)
        await runtime.start()
        try:
            async with _running(feed, runtime):
                await _wait_for(lambda: feed.in_flight >= 3, "three batches in flight")
                await asyncio.sleep(1.0)  # room for more polls, were the bounds not kept
                await _wait_for(lambda: runtime.events_applied == feed.events, "the engine to apply them")
                assert feed.in_flight == 3 and feed.in_flight_records <= 100
                assert 0 < feed.consumed <= 100 and feed.events > 0
                assert feed.committed == {} and feed.commits == 0 and writer.writes == 0
                assert await _group_offsets(kafka_broker.bootstrap, group) == {}
                writer.gate.set()
                await _wait_for(lambda: feed.committed == ends, "every commit once storage writes")
            assert 0 < writer.writes < feed.batches, "barriers arriving together share a storage write"
            assert feed.consumed == len(records)
            assert feed.in_flight_peak <= 3 and feed.in_flight_records_peak <= 100
            assert await _group_offsets(kafka_broker.bootstrap, group) == ends
        finally:
            writer.gate.set()
            await runtime.stop(5.0)

    _run(scenario)


def test_a_failed_barrier_stops_the_commits_and_fails_the_feed(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 600, seed=23)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(records)
        # Barrier 3 fails late: the barriers after it (batches put meanwhile) have returned by then.
        sink = BarrierLog(seed=23, max_delay=0.01, fail_at=3, fail_delay=1.0)
        feed = CommitLog(_config(kafka_broker, prefix, group, max_records=20), sink)
        with pytest.raises(RuntimeError, match="disk full"):
            await asyncio.wait_for(feed.run(sink), TIMEOUT_S)
        assert any(i > 3 for i in sink.finished), "no later barrier returned before the failure"
        assert feed.commits >= 1
        _check_commits(feed, sink, _events_by_record(records, written, prefix))
        committed = await _group_offsets(kafka_broker.bootstrap, group)
        assert committed == feed.committed
        by_record = _events_by_record(records, written, prefix)
        covered = {_key(ev) for (t, p, o), ev in by_record.items() if o < committed.get((t, p), 0)}
        assert covered <= {_key(e) for e in sink.events[:sink.calls[2]]}  # nothing from batch 3 on
        assert feed.in_flight == 0  # dropped with the consumer

    _run(scenario)


def test_a_crash_with_batches_in_flight_loses_nothing_and_stores_nothing_twice(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 800, seed=24)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(records)
        expected = _stored(_expected(records, prefix))
        # From half way, storage stores but no barrier returns: the process dies with batches in flight.
        storage = MemorySink(crash_after=len(expected) // 2, stored_only=True)
        first = KafkaFeed(_config(kafka_broker, prefix, group, max_records=30, max_in_flight=5))
        async with _running(first, storage):
            await _wait_for(lambda: first.in_flight == 5, "a full pipeline behind the stuck barrier")
        assert first.in_flight == 0 and first.in_flight_peak == 5
        committed = await _group_offsets(kafka_broker.bootstrap, group)
        by_record = _events_by_record(records, written, prefix)
        stored_keys = {_key(e) for e in storage.events}
        uncommitted = {_key(ev) for (t, p, o), ev in by_record.items()
                       if o >= committed.get((t, p), 0) and _stored([ev])}
        assert uncommitted & stored_keys, "batches in flight were stored and not committed"
        storage.crash_after = None
        deduper = Deduper()
        deduper.seed(storage.events)
        second = KafkaFeed(_config(kafka_broker, prefix, group, max_records=30), deduper=deduper)
        ends = _end_offsets(written)
        async with _running(second, storage):
            await _wait_for(lambda: len(storage.events) >= len(expected), "the rest after the restart")
            for _ in range(200):  # second commits only the partitions it got records of
                if await _group_offsets(kafka_broker.bootstrap, group) == ends:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing more may come
        assert second.duplicates > 0
        assert len(storage.events) == len(expected)
        assert max(Counter(_key(e) for e in storage.events).values()) == 1
        for symbol in SYMBOLS:
            got = [_strip(e) for e in storage.events if getattr(e, "symbol", "") == symbol]
            assert got == [e for e in expected if getattr(e, "symbol", "") == symbol]
        assert await _group_offsets(kafka_broker.bootstrap, group) == ends

    _run(scenario)


def test_a_rebalance_commits_the_batches_in_flight_before_the_partitions_go(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        enc = EngineEncoder("mx", prefix)
        sink_a, sink_b = MemorySink(barrier_delay=3.0), MemorySink()
        feed_a = KafkaFeed(_config(kafka_broker, prefix, group, max_records=20, revoke_timeout_s=30.0), name="a")
        feed_b = KafkaFeed(_config(kafka_broker, prefix, group), name="b")
        first = _engine_stream(enc, 300, seed=25)
        second = _engine_stream(enc, 200, seed=26)[len(SYMBOLS):]
        async with EngineProducer(kafka_broker.bootstrap) as producer, _running(feed_a, sink_a):
            await _wait_for(lambda: feed_a.warm, "consumer a to join")
            await producer.send(first)
            await _wait_for(lambda: feed_a.in_flight >= 2, "batches in flight at a")
            async with _running(feed_b, sink_b):
                await _wait_for(lambda: bool(feed_b.assignment) and bool(feed_a.assignment), "b to join")
                assert feed_a.rebalances >= 1
                sink_a.barrier_delay = 0.0
                await producer.send(second)
                want = {_key(e) for e in _expected(first + second, prefix)}
                await _wait_for(lambda: {_key(e) for e in sink_a.events + sink_b.events} >= want, "every event")
                await asyncio.sleep(0.5)
        assert feed_a.commit_skipped == 0 and feed_a.commit_failures == 0
        # a committed everything it had in flight before giving partitions up: b got none of it again.
        assert not {_key(e) for e in sink_a.events} & {_key(e) for e in sink_b.events}
        assert {_key(e) for e in sink_a.events + sink_b.events} == want
        assert max(Counter(_key(e) for e in sink_a.events).values()) == 1

    _run(scenario)
