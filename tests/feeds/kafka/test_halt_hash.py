"""Halts, resumes and book hashes from a real Kafka broker into a real ``Engine`` (tests/kafka_broker.py).

A test producer plays the matching engine; the sink applies every batch the ``KafkaFeed`` delivers to an
``Engine``. Checked: book hashes travel in the batches in record order (each is checked after exactly the
deltas before it and verifies); a halt makes the book HALTED, the ticker halted and the venue leave the
NBBO, and a trade printed during it is refused and flagged; a resume restores all of it; a wrong hash
marks the book AWAITING_RESYNC until the next snapshot. The feed's callbacks still see every item.
"""

from __future__ import annotations

import asyncio

from feeds.kafka import parser
from feeds.kafka.consumer import KafkaFeed
from feeds.kafka.parser import BookHash, InstrumentStatus, book_hash, engine_event, parse_record
from feeds.kafka.producer import EngineEncoder, EngineProducer
from server.engine import book as engine_book
from server.engine.book import BookStatus
from server.engine.candles import CandleConfig, Interval
from server.engine.engine import Engine, EngineConfig
from server.engine.events import BookCheck, Event, Side, TradingStatusChange
from server.engine.quality import QualityFlag, QualityKind
from server.engine.updates import BookStatusChange, ExcludedVenue
from tests.feeds.kafka.test_feed import T0, _config, _create_topics, _names, _run, _running, _wait_for
from tests.kafka_broker import KafkaBroker

SYM = "BTC/USD"
ONE = 1_000_000_000


class EngineSink:
    """Applies each delivered batch to an ``Engine`` at once (so ``barrier`` has nothing to wait for)."""

    def __init__(self) -> None:
        self.engine = Engine(EngineConfig(candles=CandleConfig(intervals=(Interval.S1, Interval.M1)),
                                          trade_spikes=None, quote_spikes=None))
        self.updates: list[object] = []
        self.batches: list[list[Event]] = []

    async def put(self, batch: list[Event], /) -> None:
        self.batches.append(list(batch))
        self.engine.apply_batch(batch, self.updates)

    async def barrier(self) -> None:
        return None


def _parse(record: tuple[str, bytes, bytes]) -> object:
    topic, key, value = record
    return parse_record(topic, 0, 0, key, value, 7)


def test_engine_event_of_a_hash_and_of_instrument_events() -> None:
    assert parser.book_hash is engine_book.book_hash and parser.book_hash_text is engine_book.book_hash_text
    enc = EngineEncoder("mx")
    enc.snapshot(SYM, [(ONE, ONE)], [], T0)
    h = _parse(enc.book_hash(SYM, [(ONE, ONE)], [], 3, T0 + 1))
    assert isinstance(h, BookHash)
    assert engine_event(h) == BookCheck("mx", SYM, 1, 3, book_hash([(ONE, ONE)], [], 3), T0 + 1, 7)
    for kind, halted, reason in (("created", False, ""), ("halted", True, "news pending"),
                                 ("updated", False, ""), ("resumed", False, "")):
        item = _parse(enc.instrument(kind, SYM, T0 + 2, reason=reason))
        assert isinstance(item, InstrumentStatus)
        assert engine_event(item) == TradingStatusChange("mx", SYM, halted, reason, T0 + 2, 7)


def _status(engine: Engine, venue: str) -> BookStatus | None:
    book = engine.book(venue, SYM)
    return book.status if book is not None else None


def test_halt_resume_and_a_wrong_hash_reach_the_engine(kafka_broker: KafkaBroker) -> None:
    prefix, group = _names()

    async def scenario() -> None:
        await _create_topics(kafka_broker.bootstrap, prefix)
        mx, other = EngineEncoder("mx", prefix), EngineEncoder("other", prefix)
        sink = EngineSink()
        engine = sink.engine
        counters = engine.counters
        instruments: list[InstrumentStatus] = []
        hashes: list[BookHash] = []
        feed = KafkaFeed(_config(kafka_broker, prefix, group, max_records=1000), on_instrument=instruments.append,
                         on_book_hash=hashes.append)
        bids = {100 * ONE: ONE, 99 * ONE: 2 * ONE}
        asks = {102 * ONE: ONE, 103 * ONE: 3 * ONE}
        async with EngineProducer(kafka_broker.bootstrap) as producer, _running(feed, sink):
            # Deltas and hashes interleaved in one send: each hash holds only after the deltas before it.
            records = [mx.instrument("created", SYM, T0, base="BTC", quote="USD"),
                       mx.snapshot(SYM, list(bids.items()), list(asks.items()), T0),
                       other.snapshot(SYM, [(99 * ONE, ONE)], [(101 * ONE, ONE)], T0),
                       mx.book_hash(SYM, bids.items(), asks.items(), 10, T0),
                       mx.trade(SYM, "t1", 101 * ONE, ONE, Side.BUY, T0 + 1)]
            for i in range(5):
                bids[(100 + i) * ONE] = (i + 1) * ONE
                records.append(mx.delta(SYM, [((100 + i) * ONE, (i + 1) * ONE)], [], T0 + 2 + i))
                records.append(mx.book_hash(SYM, bids.items(), asks.items(), 1 + i, T0 + 2 + i))
            await producer.send(records)
            await _wait_for(lambda: counters.book_checks_verified == 6, "six verified hashes")
            assert counters.book_checks_unverifiable == 0 and not counters.checksum_failures
            assert _status(engine, "mx") is BookStatus.CROSSED  # bid 104 over ask 102: still in sequence
            await producer.send([mx.delta(SYM, [(104 * ONE, 0), (103 * ONE, 0), (102 * ONE, 0)], [], T0 + 10)])
            for p in (102, 103, 104):
                bids.pop(p * ONE)
            await _wait_for(lambda: _status(engine, "mx") is BookStatus.CONSISTENT, "uncrossed")
            nbbo = engine.nbbo(SYM)
            assert nbbo is not None and (nbbo.bid_venue, nbbo.excluded) == ("mx", ())

            await producer.send([mx.instrument("halted", SYM, T0 + 20, reason="volatility auction")])
            await _wait_for(lambda: _status(engine, "mx") is BookStatus.HALTED, "the halt")
            ticker = engine.ticker("mx", SYM)
            assert ticker is not None and ticker.halted
            nbbo = engine.nbbo(SYM)
            assert nbbo is not None and nbbo.excluded == (ExcludedVenue("mx", "halted"),)
            assert nbbo.bid_venue == "other"
            change = [u for u in sink.updates if isinstance(u, BookStatusChange)][-1]
            assert (change.status, change.reason) == (BookStatus.HALTED, "halted: volatility auction")

            # The engine misbehaves: a trade and a delta during the halt are refused and flagged.
            await producer.send([mx.trade(SYM, "t2", 150 * ONE, ONE, Side.SELL, T0 + 21),
                                 mx.delta(SYM, [(101 * ONE, ONE)], [], T0 + 22)])
            await _wait_for(lambda: counters.halted_trades == 1 and counters.halted_book_changes == 1,
                            "the refused trade and delta")
            kinds = [u.kind for u in sink.updates if isinstance(u, QualityFlag)]
            assert QualityKind.TRADE_WHILE_HALTED in kinds and QualityKind.BOOK_CHANGE_WHILE_HALTED in kinds
            assert [t.trade_id for t in engine.recent_trades(SYM, venue="mx")] == ["t1"]

            await producer.send([mx.instrument("resumed", SYM, T0 + 30)])
            await _wait_for(lambda: not engine.halted("mx", SYM), "the resume")
            assert _status(engine, "mx") is BookStatus.CONSISTENT
            ticker = engine.ticker("mx", SYM)
            assert ticker is not None and not ticker.halted
            nbbo = engine.nbbo(SYM)
            assert nbbo is not None and nbbo.excluded == () and nbbo.bid_venue == "mx"

            # The delta refused during the halt is missing: the next delta is a gap; a snapshot resyncs.
            bids[101 * ONE] = ONE
            await producer.send([mx.delta(SYM, [(98 * ONE, ONE)], [], T0 + 31)])
            bids[98 * ONE] = ONE
            await _wait_for(lambda: _status(engine, "mx") is BookStatus.AWAITING_RESYNC, "the gap")
            await producer.send([mx.snapshot(SYM, list(bids.items()), list(asks.items()), T0 + 32)])
            await _wait_for(lambda: _status(engine, "mx") is BookStatus.CONSISTENT, "the resync")

            # A wrong hash: the book awaits a resync, flagged and counted; a snapshot ends it.
            good = mx.book_hash(SYM, bids.items(), asks.items(), 10, T0 + 40)
            wrong = mx.book_hash(SYM, [(ONE, ONE)], [], 10, T0 + 41)  # the hash of another book
            await producer.send([good, wrong])
            await _wait_for(lambda: _status(engine, "mx") is BookStatus.AWAITING_RESYNC, "the mismatch")
            assert counters.checksum_failures == {("mx", SYM): 1}
            assert counters.book_checks_verified == 7
            flag = [u for u in sink.updates if isinstance(u, QualityFlag)][-1]
            assert flag.kind is QualityKind.BOOK_HASH_MISMATCH
            assert (flag.value, flag.reference) == (book_hash(bids.items(), asks.items(), 10),
                                                    book_hash([(ONE, ONE)], [], 10))
            change = [u for u in sink.updates if isinstance(u, BookStatusChange)][-1]
            assert change.status is BookStatus.AWAITING_RESYNC and change.reason.startswith("book hash mismatch")
            nbbo = engine.nbbo(SYM)
            assert nbbo is not None and nbbo.excluded == (ExcludedVenue("mx", "resync"),)
            await producer.send([mx.snapshot(SYM, list(bids.items()), list(asks.items()), T0 + 50)])
            await _wait_for(lambda: _status(engine, "mx") is BookStatus.CONSISTENT, "the resync after the mismatch")
            await asyncio.sleep(0.2)
        assert [(s.kind, s.halted) for s in instruments] == [("created", False), ("halted", True), ("resumed", False)]
        assert len(hashes) == 8
        assert counters.halts == 1

    _run(scenario)
