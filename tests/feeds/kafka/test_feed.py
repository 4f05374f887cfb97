"""``KafkaFeed`` against a real Apache Kafka broker (KRaft, loopback; tests/kafka_broker.py).

A test producer (``feeds.kafka.producer``) plays the matching engine; an in-memory ``DurableSink``
stands in for the engine and its storage (``put`` stores, ``barrier`` confirms). Each test has its own
topic prefix and consumer group on the session's broker. Checked: every event arrives once and in
order per symbol with offsets committed; a crash before the commit is redelivered and deduplicated;
poison records become dead letters and the feed carries on; rebalances, including a commit that
fails because of one, do not stop the feed; instrument halts and resumes reach the callback in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from marketdata.v1 import engine_event_pb2

from feeds.kafka.consumer import DurableSink, KafkaFeed, KafkaFeedConfig
from feeds.kafka.dedupe import Deduper
from feeds.kafka.parser import (
    ALL_TOPICS,
    TOPIC_EVENTS,
    BookHash,
    InstrumentStatus,
    book_hash,
    engine_event,
    parse_record,
)
from feeds.kafka.producer import EngineEncoder, EngineProducer, Record, Written
from server.engine.events import BookCheck, BookDelta, BookSnapshot, Event, Level, Side, Trade, TradingStatusChange
from tests.kafka_broker import KafkaBroker, free_port, kafka_broker

PARTITIONS = 4
SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD")
T0 = 1_700_000_000_000_000_000
TIMEOUT_S = 60.0


class MemorySink:
    """Engine + durable storage stand-in: ``put`` stores; ``barrier`` confirms, or hangs to play a crash.

    With ``crash_after`` set, the first barrier once that many events are stored never returns (the
    process dies after storing, before the commit); ``crashed`` is then set. ``stored_only`` keeps only
    what durable storage keeps (trades and book events; not book checks or trading status changes).
    """

    def __init__(self, crash_after: int | None = None, barrier_delay: float = 0.0, stored_only: bool = False) -> None:
        self.stored_only = stored_only
        self.events: list[Event] = []
        self.barriers = 0
        self.crash_after = crash_after
        self.barrier_delay = barrier_delay
        self.crashed = asyncio.Event()

    async def put(self, batch: list[Event], /) -> None:
        self.events.extend(_stored(batch) if self.stored_only else batch)

    async def barrier(self) -> None:
        self.barriers += 1
        if self.crash_after is not None and len(self.events) >= self.crash_after:
            self.crashed.set()
            await asyncio.Event().wait()
        if self.barrier_delay:
            await asyncio.sleep(self.barrier_delay)


def _strip(ev: Event) -> Event:
    if isinstance(ev, Trade | BookDelta | BookSnapshot | BookCheck | TradingStatusChange):
        return ev._replace(ts_recv=0)
    return ev


def _stored(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Trade | BookDelta | BookSnapshot)]


def _key(ev: Event) -> tuple[object, ...]:
    if isinstance(ev, Trade):
        return ("trade", ev.venue, ev.symbol, ev.trade_id)
    if isinstance(ev, BookCheck):  # the hashes of _engine_stream have distinct times
        return ("check", ev.venue, ev.symbol, ev.book_seq, ev.ts_event)
    assert isinstance(ev, BookDelta | BookSnapshot)
    return ("book", ev.venue, ev.symbol, ev.seq)


def _engine_stream(enc: EngineEncoder, n: int, seed: int, symbols: Sequence[str] = SYMBOLS) -> list[Record]:
    """A snapshot per symbol, then ``n`` random deltas / trades / hashes across symbols, from a real book."""
    rnd = random.Random(seed)
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    records = []
    for s in symbols:
        bids = {1000 - i: rnd.randint(1, 9) for i in range(1, 6)}
        asks = {1000 + i: rnd.randint(1, 9) for i in range(1, 6)}
        books[s] = (bids, asks)
        records.append(enc.snapshot(s, list(bids.items()), list(asks.items()), T0))
    for i in range(n):
        s = rnd.choice(symbols)
        bids, asks = books[s]
        roll = rnd.random()
        if roll < 0.4:
            records.append(enc.trade(s, f"{s}-{seed}-{i}", 1000 * 10**9, rnd.randint(1, 5) * 10**9, Side.BUY, T0 + i))
        elif roll < 0.9:
            side = bids if rnd.random() < 0.5 else asks
            price = (995 + rnd.randint(0, 4)) if side is bids else (1001 + rnd.randint(0, 4))
            size = rnd.randint(0, 9)
            if size:
                side[price] = size
            else:
                side.pop(price, None)
            level: list[Level] = [(price, size)]
            records.append(enc.delta(s, level if side is bids else [], level if side is asks else [], T0 + i))
        else:
            records.append(enc.book_hash(s, bids.items(), asks.items(), 5, T0 + i))
    return records


def _expected(records: Sequence[Record], prefix: str) -> list[Event]:
    out: list[Event] = []
    for r in records:
        item = parse_record(r.topic[len(prefix):], 0, 0, r.key, r.value, 0)
        if isinstance(item, BookHash | InstrumentStatus):
            out.append(_strip(engine_event(item)))  # the feed delivers them in record order too
        elif isinstance(item, Trade | BookDelta | BookSnapshot):
            out.append(_strip(item))
    return out


def _end_offsets(written: Sequence[Written]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for w in written:
        ends[w.topic, w.partition] = max(ends.get((w.topic, w.partition), 0), w.offset + 1)
    return ends


async def _create_topics(bootstrap: str, prefix: str) -> None:
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + t, PARTITIONS, 1) for t in ALL_TOPICS])
    finally:
        await admin.close()


async def _group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}


async def _wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _running(feed: KafkaFeed, sink: DurableSink) -> Any:
    """Run ``feed`` into ``sink`` for the block; cancel it afterwards, and fail if it died on its own."""
    task = asyncio.create_task(feed.run(sink))
    try:
        yield task
        assert not task.done(), f"the feed stopped: {task.exception() if not task.cancelled() else 'cancelled'}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _config(broker: KafkaBroker, prefix: str, group: str, **kw: Any) -> KafkaFeedConfig:
    return KafkaFeedConfig(bootstrap=broker.bootstrap, group_id=group, topic_prefix=prefix, client_id=group,
                           session_timeout_ms=6000, heartbeat_interval_ms=500, **kw)


def _run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 150))


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"t{tag}.", f"g{tag}"


def test_every_event_arrives_once_in_order_and_offsets_are_committed(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 600, seed=1)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(records)
        assert len({w.partition for w in written if w.topic == prefix + TOPIC_EVENTS}) > 1
        expected = _expected(records, prefix)
        sink = MemorySink()
        hashes: list[object] = []
        feed = KafkaFeed(_config(kafka_broker, prefix, group, max_records=100), on_book_hash=hashes.append)
        ends = _end_offsets(written)
        async with _running(feed, sink):
            await _wait_for(lambda: len(sink.events) >= len(expected) and feed.committed == ends,
                            "all events and their commits")
            await _wait_for(lambda: feed.warm, "warm")
            status = feed.status()
            assert status.state == "live" and status.events == len(expected) and status.last_event_age_ns is not None
        assert feed.status().state == "stopped"
        assert len(sink.events) == len(expected)
        for symbol in SYMBOLS:  # per-symbol order is the engine's
            got = [_strip(e) for e in sink.events if getattr(e, "symbol", "") == symbol]
            assert got == [e for e in expected if getattr(e, "symbol", "") == symbol]
        assert feed.events == len(expected)
        assert feed.consumed == len(records)
        assert feed.duplicates == 0 and feed.dead_letters.total == 0
        assert feed.commits >= 1 and feed.commit_failures == 0
        assert sink.barriers == feed.batches
        assert len(hashes) == sum(isinstance(parse_record(r.topic[len(prefix):], 0, 0, r.key, r.value, 0), BookHash)
                                  for r in records) > 0
        for h in feed.book_hashes.values():  # the engine's hash matches a book rebuilt from the events
            bids: dict[int, int] = {}
            asks: dict[int, int] = {}
            for ev in sink.events:
                if isinstance(ev, BookSnapshot | BookDelta) and ev.symbol == h.symbol and ev.seq <= h.book_seq:
                    if isinstance(ev, BookSnapshot):
                        bids, asks = dict(ev.bids), dict(ev.asks)
                    else:
                        bids.update(ev.bids)
                        asks.update(ev.asks)
            assert book_hash(bids.items(), asks.items(), h.depth) == h.crc32
        assert await _group_offsets(kafka_broker.bootstrap, group) == ends

    _run(scenario)


def test_crash_before_commit_is_redelivered_and_deduplicated(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 800, seed=2)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(records)
        # Storage keeps no book checks: after the restart, a redelivered hash is checked again (harmless).
        expected = _stored(_expected(records, prefix))
        storage = MemorySink(crash_after=len(expected) // 2, stored_only=True)
        first = KafkaFeed(_config(kafka_broker, prefix, group, max_records=50))
        async with _running(first, storage):
            await asyncio.wait_for(storage.crashed.wait(), TIMEOUT_S)
        stored_at_crash = len(storage.events)
        committed = await _group_offsets(kafka_broker.bootstrap, group)
        assert sum(committed.values()) < len(records), "the crash came before the last commit"
        # The restarted process seeds its deduper from what storage holds, then resumes the group.
        storage.crash_after = None
        deduper = Deduper()
        deduper.seed(storage.events)
        second = KafkaFeed(_config(kafka_broker, prefix, group, max_records=50), deduper=deduper)
        ends = _end_offsets(written)
        async with _running(second, storage):
            await _wait_for(lambda: len(storage.events) >= len(expected), "the rest after the restart")
            for _ in range(200):
                if await _group_offsets(kafka_broker.bootstrap, group) == ends:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing more may come
        assert second.duplicates > 0, "records after the last commit were redelivered"
        assert len(storage.events) == len(expected), (stored_at_crash, second.duplicates)
        counts = Counter(_key(e) for e in storage.events)
        assert max(counts.values()) == 1
        for symbol in SYMBOLS:
            got = [_strip(e) for e in storage.events if getattr(e, "symbol", "") == symbol]
            assert got == [e for e in expected if getattr(e, "symbol", "") == symbol]
        assert await _group_offsets(kafka_broker.bootstrap, group) == ends

    _run(scenario)


def test_poison_records_are_dead_letters_and_the_feed_carries_on(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        enc = EngineEncoder("mx", prefix)
        topic = prefix + TOPIC_EVENTS
        good1 = _engine_stream(enc, 50, seed=3, symbols=SYMBOLS[:2])
        good2 = _engine_stream(enc, 50, seed=4, symbols=SYMBOLS[:2])[2:]  # no second snapshot
        valid = good1[2]
        no_body = engine_event_pb2.EngineEvent(schema_version=1, venue="mx", symbol="BTC/USD", sequence=10**9)
        future = engine_event_pb2.EngineEvent.FromString(valid.value)
        future.schema_version = 2
        poison: list[tuple[bytes | None, bytes | None, str]] = [
            (b"BTC/USD", b"\xff\xfe garbage", "undecodable"),
            (b"BTC/USD", no_body.SerializeToString(), "unknown_body"),
            (b"BTC/USD", future.SerializeToString(), "unsupported_schema_version"),
            (b"nope", valid.value, "key_mismatch"),
            (b"BTC/USD", None, "empty"),
        ]
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            written = await producer.send(good1)
            for key, value, _ in poison:
                written.append(await producer.send_raw(topic, value, key))
            written += await producer.send(good2)
        expected = _expected(good1 + good2, prefix)
        dead: list[object] = []
        sink = MemorySink()
        feed = KafkaFeed(_config(kafka_broker, prefix, group), dead_letters=dead)
        ends = _end_offsets(written)
        async with _running(feed, sink):
            await _wait_for(lambda: len(sink.events) >= len(expected) and feed.committed == ends, "all records")
        assert [_strip(e) for e in sink.events if getattr(e, "symbol", "") == "BTC/USD"] == \
            [e for e in expected if getattr(e, "symbol", "") == "BTC/USD"]
        assert len(sink.events) == len(expected)
        assert feed.dead_letter_reasons == Counter(code for _, _, code in poison)
        assert feed.dead_letters.total == len(poison) == len(dead)
        assert all(d.raw.startswith(TOPIC_EVENTS) for d in feed.dead_letters.recent)

    _run(scenario)


def test_rebalances_keep_every_event_and_a_failed_commit_does_not_stop_the_feed(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        enc = EngineEncoder("mx", prefix)
        sink_a = MemorySink()
        feed_a = KafkaFeed(_config(kafka_broker, prefix, group, revoke_timeout_s=0.3), name="a")
        sink_b = MemorySink()
        feed_b = KafkaFeed(_config(kafka_broker, prefix, group), name="b")
        produced: list[Record] = []
        async with EngineProducer(kafka_broker.bootstrap) as producer:

            async def send(records: list[Record]) -> None:
                produced.extend(records)
                await producer.send(records)

            def union() -> set[tuple[object, ...]]:
                return {_key(e) for e in sink_a.events + sink_b.events}

            def all_in() -> bool:
                return union() >= {_key(e) for e in _expected(produced, prefix)}

            async with _running(feed_a, sink_a):
                await _wait_for(lambda: feed_a.warm, "consumer a to join")
                await send(_engine_stream(enc, 200, seed=5))
                await _wait_for(all_in, "the first batch at a")
                # A slow barrier holds a's batch past the rebalance that b's arrival starts.
                sink_a.barrier_delay = 3.0
                called = sink_a.barriers
                await send([enc.trade(s, f"slow-{s}", 10**9, 10**9, Side.SELL, T0) for s in SYMBOLS])
                await _wait_for(lambda: sink_a.barriers > called, "a in its slow barrier")
                async with _running(feed_b, sink_b):
                    await _wait_for(lambda: bool(feed_b.assignment) and feed_a.rebalances >= 1
                                    and bool(feed_a.assignment), "b to join and a to rebalance")
                    await _wait_for(lambda: feed_a.commit_skipped + feed_a.commit_failures >= 1,
                                    "a's commit of revoked partitions to fail")
                    sink_a.barrier_delay = 0.0
                    assert not (feed_a.assignment & feed_b.assignment)
                    await send(_engine_stream(enc, 200, seed=6)[len(SYMBOLS):])
                    await _wait_for(all_in, "every event at a or b")
                    await asyncio.sleep(0.5)
        assert feed_a.rebalances >= 1
        expected_keys = {_key(e) for e in _expected(produced, prefix)}
        assert union() == expected_keys
        # Redeliveries of a's uncommitted batch went to b (another process: its own storage) or back
        # to a, where its deduper dropped them; a never stored anything twice.
        assert max(Counter(_key(e) for e in sink_a.events).values()) == 1
        assert max(Counter(_key(e) for e in sink_b.events).values()) == 1

    _run(scenario)


def test_instrument_halt_and_resume_reach_the_callback_in_order(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        enc = EngineEncoder("mx", prefix)
        seen: list[InstrumentStatus] = []
        feed = KafkaFeed(_config(kafka_broker, prefix, group), on_instrument=seen.append)
        key = ("mx", "BTC/USD")
        async with EngineProducer(kafka_broker.bootstrap) as producer, _running(feed, MemorySink()):
            await producer.send([enc.instrument("created", "BTC/USD", T0, base="BTC", quote="USD",
                                               tick_size=10**7, lot_size=10**5)])
            await _wait_for(lambda: key in feed.instruments, "created")
            assert not feed.instruments[key].halted
            await producer.send([enc.instrument("halted", "BTC/USD", T0 + 1, reason="circuit breaker")])
            await _wait_for(lambda: feed.instruments[key].halted, "halt")
            assert feed.instruments[key].reason == "circuit breaker"
            await producer.send([enc.instrument("resumed", "BTC/USD", T0 + 2)])
            await _wait_for(lambda: not feed.instruments[key].halted, "resume")
            # A stale halt (an older sequence, e.g. read late from its topic) changes nothing.
            stale = EngineEncoder("mx", prefix).instrument("halted", "BTC/USD", T0)
            await producer.send([stale])
            await _wait_for(lambda: feed.duplicates >= 1, "the stale halt to be dropped")
        assert [(s.kind, s.halted, s.seq) for s in seen] == \
            [("created", False, 1), ("halted", True, 2), ("resumed", False, 3)]
        assert feed.instruments[key].tick_size == 10**7

    _run(scenario)


def test_a_failed_put_loses_nothing_when_the_feed_runs_again(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    class FailingOnce(MemorySink):
        failed = False

        async def put(self, batch: list[Event], /) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("the engine queue is closed")
            await super().put(batch)

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        records = _engine_stream(EngineEncoder("mx", prefix), 100, seed=8)
        async with EngineProducer(kafka_broker.bootstrap) as producer:
            await producer.send(records)
        expected = _expected(records, prefix)
        sink = FailingOnce()
        feed = KafkaFeed(_config(kafka_broker, prefix, group))
        with pytest.raises(RuntimeError, match="queue is closed"):
            await asyncio.wait_for(feed.run(sink), TIMEOUT_S)
        assert feed.commits == 0
        async with _running(feed, sink):  # the same feed (and deduper) again
            await _wait_for(lambda: len(sink.events) >= len(expected), "the batch that failed, again")
            await asyncio.sleep(0.3)
        assert [_strip(e) for e in sink.events if getattr(e, "symbol", "") == "BTC/USD"] == \
            [e for e in expected if getattr(e, "symbol", "") == "BTC/USD"]
        assert len(sink.events) == len(expected)
        assert feed.duplicates == 0

    _run(scenario)


@contextlib.asynccontextmanager
async def _broker_in_thread(directory: Path, port: int, cport: int) -> Any:
    """``kafka_broker`` started and stopped in a worker thread, so this event loop (the feed) runs on."""
    manager = kafka_broker(directory=directory, port=port, controller_port=cport)
    broker = await asyncio.to_thread(manager.__enter__)
    try:
        yield broker
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


def test_the_feed_reconnects_after_a_broker_restart(tmp_path: Path) -> None:
    """A broker of its own (stopped and started again on the same data), not the session's."""
    if os.environ.get("MDS_SKIP_KAFKA") == "1":
        pytest.skip("MDS_SKIP_KAFKA=1: no Kafka broker")
    prefix, group = _names()
    port, cport = free_port(), free_port()
    enc = EngineEncoder("mx", prefix)
    first = _engine_stream(enc, 100, seed=9)
    second = _engine_stream(enc, 100, seed=10)[len(SYMBOLS):]
    expected = _expected(first + second, prefix)

    async def produce(bootstrap: str, records: list[Record]) -> None:
        async with EngineProducer(bootstrap) as producer:
            await producer.send(records)

    async def scenario() -> None:
        sink = MemorySink()
        feed: KafkaFeed | None = None
        task: asyncio.Task[None] | None = None
        try:
            async with _broker_in_thread(tmp_path / "kafka", port, cport) as broker:
                await _create_topics(broker.bootstrap, prefix)
                await produce(broker.bootstrap, first)
                feed = KafkaFeed(_config(broker, prefix, group))
                task = asyncio.create_task(feed.run(sink))
                await _wait_for(lambda: len(sink.events) >= len(_expected(first, prefix)), "the first events")
            await asyncio.sleep(1.0)  # the feed is without a broker now
            assert not task.done()
            async with _broker_in_thread(tmp_path / "kafka", port, cport) as broker:
                await produce(broker.bootstrap, second)
                await _wait_for(lambda: len(sink.events) >= len(expected), "the events after the restart")
                await asyncio.sleep(0.3)
                assert not task.done()
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert feed is not None
        assert len(sink.events) == len(expected)
        assert [_strip(e) for e in sink.events if getattr(e, "symbol", "") == "ETH/USD"] == \
            [e for e in expected if getattr(e, "symbol", "") == "ETH/USD"]

    _run(scenario)


def test_no_broker_means_reconnect_attempts_not_a_crash() -> None:
    async def scenario() -> None:
        config = KafkaFeedConfig(bootstrap=f"127.0.0.1:{free_port()}", reconnect_backoff_s=0.05,
                                 reconnect_max_backoff_s=0.1)
        feed = KafkaFeed(config)
        async with _running(feed, MemorySink()):
            await _wait_for(lambda: feed.reconnects >= 3, "reconnect attempts", timeout=30)
            status = feed.status()
            assert status.state == "stale" and status.reconnects >= 3 and status.kind == "kafka"
        assert not feed.warm

    _run(scenario)
