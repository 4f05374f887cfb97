"""A stand-in for the matching engine's publisher: encodes engine_event.proto records and sends them.

Owns the producer side of the contract, for tests and tools:

- ``EngineEncoder`` (pure): builds ``Record(topic, key, value)`` for trades, book deltas, snapshots,
  hashes, engine snapshots and instrument events of one venue, numbering them as the engine does: one
  ``sequence`` per (venue, symbol) for all EngineEvents (+1 each, from 1), each delta naming the book
  event before it (``prev_book_sequence``), one counter per (venue, symbol) for instrument events. The
  key is the symbol.
- ``EngineProducer``: sends records with aiokafka (idempotent, ``acks=all``), so each partition keeps
  the order records were sent in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from marketdata.v1 import book_pb2, engine_event_pb2, instrument_pb2

from feeds.kafka.parser import (
    INSTRUMENT_TOPICS,
    SCHEMA_VERSION,
    TOPIC_EVENTS,
    TOPIC_SNAPSHOTS,
    book_hash,
)
from server.engine.events import AssetClass, Level, Side

_KIND_TOPIC = {kind: topic for topic, kind in INSTRUMENT_TOPICS.items()}
_KIND_ENUM = {
    "created": engine_event_pb2.INSTRUMENT_EVENT_KIND_CREATED,
    "updated": engine_event_pb2.INSTRUMENT_EVENT_KIND_UPDATED,
    "halted": engine_event_pb2.INSTRUMENT_EVENT_KIND_HALTED,
    "resumed": engine_event_pb2.INSTRUMENT_EVENT_KIND_RESUMED,
}


class Record(NamedTuple):
    """One Kafka record to send."""

    topic: str
    key: bytes
    value: bytes


class Written(NamedTuple):
    """Where the broker put a record."""

    topic: str
    partition: int
    offset: int


def _levels(levels: Iterable[Level]) -> list[book_pb2.PriceLevel]:
    return [book_pb2.PriceLevel(price=p, size=s) for p, s in levels]


class EngineEncoder:
    """Encodes one venue's engine events with the engine's numbering (see the module docstring)."""

    def __init__(self, venue: str, topic_prefix: str = "") -> None:
        self.venue = venue
        self.topic_prefix = topic_prefix
        self.sequence: dict[str, int] = {}
        """Last EngineEvent sequence per symbol."""
        self.book_sequence: dict[str, int] = {}
        """Sequence of the last book event (delta or snapshot) per symbol."""
        self.instrument_sequence: dict[str, int] = {}
        self.reference: dict[str, instrument_pb2.Instrument] = {}
        """Last reference data sent per symbol."""

    def _event(self, symbol: str, ts_ns: int, **body: Any) -> tuple[int, Record]:
        seq = self.sequence.get(symbol, 0) + 1
        self.sequence[symbol] = seq
        msg = engine_event_pb2.EngineEvent(schema_version=SCHEMA_VERSION, venue=self.venue, symbol=symbol,
                                           sequence=seq, ts_engine_ns=ts_ns, **body)
        return seq, Record(self.topic_prefix + TOPIC_EVENTS, symbol.encode(), msg.SerializeToString())

    def trade(self, symbol: str, trade_id: str, price: int, size: int, side: Side, ts_ns: int) -> Record:
        body = engine_event_pb2.EngineTrade(trade_id=trade_id, price=price, size=size, side=int(side))  # type: ignore[arg-type]
        return self._event(symbol, ts_ns, trade=body)[1]

    def delta(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level], ts_ns: int) -> Record:
        body = engine_event_pb2.EngineBookDelta(prev_book_sequence=self.book_sequence.get(symbol, 0),
                                                bids=_levels(bids), asks=_levels(asks))
        seq, record = self._event(symbol, ts_ns, book_delta=body)
        self.book_sequence[symbol] = seq
        return record

    def snapshot(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level], ts_ns: int) -> Record:
        body = engine_event_pb2.EngineBookSnapshot(bids=_levels(bids), asks=_levels(asks))
        seq, record = self._event(symbol, ts_ns, book_snapshot=body)
        self.book_sequence[symbol] = seq
        return record

    def book_hash(self, symbol: str, bids: Iterable[Level], asks: Iterable[Level], depth: int, ts_ns: int) -> Record:
        """A hash of the book (``bids``/``asks`` as they are after the last book event) at ``depth``."""
        body = engine_event_pb2.EngineBookHash(book_sequence=self.book_sequence.get(symbol, 0), depth=depth,
                                               crc32=book_hash(bids, asks, depth))
        return self._event(symbol, ts_ns, book_hash=body)[1]

    def engine_snapshot(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level], ts_ns: int) -> Record:
        """The book as of the last EngineEvent of ``symbol`` (topic engine.snapshot.v1)."""
        msg = engine_event_pb2.EngineSnapshot(schema_version=SCHEMA_VERSION, venue=self.venue, symbol=symbol,
                                              sequence=self.sequence.get(symbol, 0), ts_engine_ns=ts_ns,
                                              bids=_levels(bids), asks=_levels(asks))
        return Record(self.topic_prefix + TOPIC_SNAPSHOTS, symbol.encode(), msg.SerializeToString())

    def instrument(self, kind: str, symbol: str, ts_ns: int, *, asset_class: AssetClass | None = None,
                   base: str | None = None, quote: str | None = None, tick_size: int | None = None,
                   lot_size: int | None = None, reason: str = "") -> Record:
        """An instrument event of ``kind`` ('created', 'updated', 'halted', 'resumed').

        Every event carries the full reference data, as the engine sends it: what is not given is the
        symbol's last value (asset class CRYPTO, empty names and sizes 0 at first).
        """
        seq = self.instrument_sequence.get(symbol, 0) + 1
        self.instrument_sequence[symbol] = seq
        ref = self.reference.get(symbol) or instrument_pb2.Instrument(
            symbol=symbol, asset_class=instrument_pb2.ASSET_CLASS_CRYPTO)
        if asset_class is not None:
            ref.asset_class = int(asset_class)  # type: ignore[assignment]
        for name, value in (("base", base), ("quote", quote), ("tick_size", tick_size), ("lot_size", lot_size)):
            if value is not None:
                setattr(ref, name, value)
        self.reference[symbol] = ref
        status = (engine_event_pb2.TRADING_STATUS_HALTED if kind == "halted"
                  else engine_event_pb2.TRADING_STATUS_TRADING)
        msg = engine_event_pb2.InstrumentEvent(schema_version=SCHEMA_VERSION, kind=_KIND_ENUM[kind],
                                               venue=self.venue, instrument=ref, trading_status=status,
                                               reason=reason, sequence=seq, ts_engine_ns=ts_ns)
        return Record(self.topic_prefix + _KIND_TOPIC[kind], symbol.encode(), msg.SerializeToString())


class EngineProducer:
    """Sends ``Record``s to Kafka (idempotent producer, ``acks=all``); an async context manager."""

    def __init__(self, bootstrap: str, client_id: str = "mds-engine-producer") -> None:
        self._producer: Any = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks="all",
                                               enable_idempotence=True, linger_ms=5)
        self.sent = 0

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> EngineProducer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def send(self, records: Iterable[Record]) -> list[Written]:
        """Send ``records`` in order; returns once the broker has them all, with where each went."""
        pending = [await self._producer.send(r.topic, r.value, key=r.key) for r in records]
        written = []
        for future in pending:
            meta = await future
            written.append(Written(meta.topic, meta.partition, meta.offset))
        self.sent += len(written)
        return written

    async def send_raw(self, topic: str, value: bytes | None, key: bytes | None) -> Written:
        """One arbitrary record (a poison message, a tombstone); returns once the broker has it."""
        meta = await self._producer.send_and_wait(topic, value, key=key)
        self.sent += 1
        return Written(meta.topic, meta.partition, meta.offset)
