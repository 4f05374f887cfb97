"""Pure parser of the matching engine's Kafka records (protos/marketdata/v1/engine_event.proto).

Owns the mapping of one record ``(topic, partition, offset, key, value, ts_recv)`` to exactly one item:

- ``engine.event.v1`` ``EngineEvent``: ``trade`` -> ``Trade``; ``book_delta`` -> ``BookDelta`` with
  ``first_seq = prev_book_sequence + 1`` and ``seq = sequence`` (the engine's per-(venue, symbol)
  sequence counts trades too, so a delta names the book event before it: the engine's range check
  ``first_seq <= last + 1 <= seq`` then applies it exactly when no book event was missed);
  ``book_snapshot`` -> ``BookSnapshot``; ``book_hash`` -> ``BookHash``;
- ``engine.snapshot.v1`` ``EngineSnapshot`` -> ``BookSnapshot``;
- ``md.instrument.{created,updated,halt,resume}.v1`` ``InstrumentEvent`` -> ``InstrumentStatus``;
- anything unusable -> one ``DeadLetter`` (source ``kafka``) whose reason starts with a code from
  ``REASONS`` (``reason_code`` reads it back) followed by the detail; ``raw`` names the record
  (topic, partition, offset, key) and holds its value in hex (truncated).

No I/O, no clock: ``ts_recv`` is the caller's. ``ts_event`` is the engine's ``ts_engine_ns``, or
``ts_recv`` when the engine sent 0. ``book_hash`` is the integrity hash both the engine (producer) and
mds compute over the top of a book; it lives in ``server.engine.book`` (the engine checks books with it)
and is re-exported here.

``engine_event`` turns a ``BookHash`` into the engine's ``BookCheck`` and an ``InstrumentStatus`` into
a ``TradingStatusChange``: the feed puts them in its batches in record order, so a hash is checked after
exactly the book events before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from google.protobuf import unknown_fields
from google.protobuf.message import Message
from marketdata.v1 import book_pb2, engine_event_pb2

from feeds import protocols
from feeds.protocols import DeadLetter
from server.engine.book import book_hash, book_hash_text
from server.engine.events import (
    AssetClass,
    BookCheck,
    BookDelta,
    BookSnapshot,
    Level,
    Side,
    Trade,
    TradingStatusChange,
)

__all__ = [
    "ALL_TOPICS",
    "INSTRUMENT_TOPICS",
    "REASONS",
    "SCHEMA_VERSION",
    "SOURCE",
    "TOPIC_EVENTS",
    "TOPIC_SNAPSHOTS",
    "BookHash",
    "InstrumentStatus",
    "Parsed",
    "book_hash",
    "book_hash_text",
    "engine_event",
    "parse_record",
    "reason_code",
]

SOURCE: Final = "kafka"
SCHEMA_VERSION: Final = 1
"""The ``schema_version`` this parser reads; any other is dead-lettered."""

TOPIC_EVENTS: Final = "engine.event.v1"
TOPIC_SNAPSHOTS: Final = "engine.snapshot.v1"
INSTRUMENT_TOPICS: Final[Mapping[str, str]] = {
    "md.instrument.created.v1": "created",
    "md.instrument.updated.v1": "updated",
    "md.instrument.halt.v1": "halted",
    "md.instrument.resume.v1": "resumed",
}
"""Instrument topic -> the kind of its events."""
ALL_TOPICS: Final = (TOPIC_EVENTS, TOPIC_SNAPSHOTS, *INSTRUMENT_TOPICS)

MAX_VALUE_BYTES: Final = 8 * 1024 * 1024
MAX_NAME_CHARS: Final = 128
RAW_BYTES: Final = 512
"""Bytes of a dead record's value kept (as hex) in its dead letter."""

REASONS: Final = (
    "empty",                      # no value (a tombstone) or zero bytes
    "too_large",                  # value over MAX_VALUE_BYTES
    "unknown_topic",              # not a topic of this contract
    "undecodable",                # not a protobuf of the topic's message
    "unsupported_schema_version",  # schema_version is not SCHEMA_VERSION
    "unknown_body",               # EngineEvent with no body this parser knows
    "bad_field",                  # a missing or inconsistent field (venue, symbol, sequence, kind, side...)
    "bad_number",                 # a price, size, time or depth out of its range
    "key_mismatch",               # the record key is not the symbol
)  # fmt: skip

_KINDS: Final = {
    engine_event_pb2.INSTRUMENT_EVENT_KIND_CREATED: "created",
    engine_event_pb2.INSTRUMENT_EVENT_KIND_UPDATED: "updated",
    engine_event_pb2.INSTRUMENT_EVENT_KIND_HALTED: "halted",
    engine_event_pb2.INSTRUMENT_EVENT_KIND_RESUMED: "resumed",
}
_SIDES: Final = {int(s): s for s in Side}
_ASSET_CLASSES: Final = {int(a): a for a in AssetClass}


class BookHash(NamedTuple):
    """The engine's hash of its book after book event ``book_seq`` (see ``book_hash``).

    ``seq`` is the hash event's own sequence. Checking it against mds's book is the engine wiring's job:
    compare only when the book's last applied sequence is ``book_seq``; a mismatch means resync.
    """

    venue: str
    symbol: str
    seq: int
    book_seq: int
    depth: int
    crc32: int
    ts_event: int
    ts_recv: int


class InstrumentStatus(NamedTuple):
    """An instrument's reference data and trading status after an instrument event.

    ``kind`` is 'created', 'updated', 'halted' or 'resumed'; ``halted`` is the status after it (a
    halted instrument gets no trades or book changes until it resumes). Sizes are at scale 1e-9, 0 if
    unknown. ``seq`` orders the events of one (venue, symbol) across the four topics.
    """

    venue: str
    symbol: str
    kind: str
    halted: bool
    seq: int
    asset_class: AssetClass
    base: str
    quote: str
    tick_size: int
    lot_size: int
    reason: str
    ts_event: int
    ts_recv: int


Parsed = Trade | BookDelta | BookSnapshot | BookHash | InstrumentStatus | DeadLetter
"""What one record becomes."""


class _RecordError(ValueError):
    """A record that cannot be used: ``code`` (one of REASONS) and the detail."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def reason_code(dead: DeadLetter) -> str:
    """The code (one of ``REASONS``) a dead letter's reason starts with (``feeds.protocols.reason_code``)."""
    return protocols.reason_code(dead.reason)


def engine_event(item: BookHash | InstrumentStatus) -> BookCheck | TradingStatusChange:
    """The engine's event for a book hash (``BookCheck``) or an instrument event (``TradingStatusChange``:
    halted after it or not, whatever its kind; the engine ignores a status it already has)."""
    if isinstance(item, BookHash):
        return BookCheck(item.venue, item.symbol, item.book_seq, item.depth, item.crc32, item.ts_event,
                         item.ts_recv)
    return TradingStatusChange(item.venue, item.symbol, item.halted, item.reason, item.ts_event, item.ts_recv)


def _raw(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> str:
    where = f"{topic}[{partition}]@{offset} key={key[:64]!r}" if key is not None else \
        f"{topic}[{partition}]@{offset} key=None"
    if value is None:
        return where + " value=None"
    more = "..." if len(value) > RAW_BYTES else ""
    return f"{where} value={value[:RAW_BYTES].hex()}{more}"


def _decode(message: Message, value: bytes) -> None:
    try:
        message.ParseFromString(value)
    except Exception as exc:  # DecodeError, and whatever else a hostile buffer makes the runtime raise
        raise _RecordError("undecodable", f"not a {message.DESCRIPTOR.name}: {exc}") from exc


def _name(text: str, what: str) -> str:
    if not text or len(text) > MAX_NAME_CHARS or not text.isprintable() or text.strip() != text:
        raise _RecordError("bad_field", f"{what} {text[:MAX_NAME_CHARS]!r} is empty or not a plain name")
    return text


def _check_version(version: int) -> None:
    if version != SCHEMA_VERSION:
        raise _RecordError("unsupported_schema_version",
                           f"schema_version {version} (this parser reads {SCHEMA_VERSION})")


def _check_key(key: bytes | None, symbol: str) -> None:
    if key != symbol.encode("utf-8"):
        raise _RecordError("key_mismatch", f"record key {key[:64] if key is not None else None!r} is not the symbol "
                                   f"{symbol!r}")


def _sequence(value: int, what: str = "sequence") -> int:
    if value < 1:
        raise _RecordError("bad_field", f"{what} {value} (must be >= 1)")
    return value


def _ts_event(ts_engine_ns: int, ts_recv: int) -> int:
    if ts_engine_ns < 0:
        raise _RecordError("bad_number", f"ts_engine_ns {ts_engine_ns} is negative")
    return ts_engine_ns or ts_recv


def _levels(rows: Iterable[book_pb2.PriceLevel], what: str, *, snapshot: bool) -> tuple[Level, ...]:
    out: list[Level] = []
    for row in rows:
        price, size = row.price, row.size
        if price <= 0:
            raise _RecordError("bad_number", f"{what} price {price} (must be > 0)")
        if size < 0 or (snapshot and size == 0):
            limit = "> 0" if snapshot else ">= 0"
            raise _RecordError("bad_number", f"{what} size {size} at price {price} (must be {limit})")
        out.append((price, size))
    if len({p for p, _ in out}) != len(out):
        raise _RecordError("bad_field", f"{what}: a price appears twice")
    return tuple(out)


def _side(value: int) -> Side:
    side = _SIDES.get(value)
    if side is None:
        raise _RecordError("bad_field", f"unknown side {value}")
    return side


def _engine_event(key: bytes | None, value: bytes, ts_recv: int) -> Parsed:
    msg = engine_event_pb2.EngineEvent()
    _decode(msg, value)
    _check_version(msg.schema_version)
    venue, symbol = _name(msg.venue, "venue"), _name(msg.symbol, "symbol")
    _check_key(key, symbol)
    seq = _sequence(msg.sequence)
    ts_event = _ts_event(msg.ts_engine_ns, ts_recv)
    body = msg.WhichOneof("body")
    if body == "trade":
        t = msg.trade
        trade_id = _name(t.trade_id, "trade_id")
        if t.price <= 0:
            raise _RecordError("bad_number", f"trade price {t.price} (must be > 0)")
        if t.size <= 0:
            raise _RecordError("bad_number", f"trade size {t.size} (must be > 0)")
        return Trade(venue, symbol, trade_id, t.price, t.size, _side(t.side), ts_event, ts_recv)
    if body == "book_delta":
        d = msg.book_delta
        if d.prev_book_sequence >= seq:
            raise _RecordError("bad_field", f"prev_book_sequence {d.prev_book_sequence} is not before sequence {seq}")
        return BookDelta(venue, symbol, d.prev_book_sequence + 1, seq, _levels(d.bids, "bid", snapshot=False),
                         _levels(d.asks, "ask", snapshot=False), ts_event, ts_recv)
    if body == "book_snapshot":
        s = msg.book_snapshot
        return BookSnapshot(venue, symbol, seq, _levels(s.bids, "bid", snapshot=True),
                            _levels(s.asks, "ask", snapshot=True), ts_event, ts_recv)
    if body == "book_hash":
        h = msg.book_hash
        if h.book_sequence >= seq:
            raise _RecordError("bad_field", f"book_sequence {h.book_sequence} is not before sequence {seq}")
        if h.depth < 1:
            raise _RecordError("bad_number", f"book hash depth {h.depth} (must be >= 1)")
        return BookHash(venue, symbol, seq, h.book_sequence, h.depth, h.crc32, ts_event, ts_recv)
    extra = unknown_fields.UnknownFieldSet(msg)
    unknown = sorted({extra[i].field_number for i in range(len(extra))})
    detail = f"no body this parser knows (unknown fields {unknown})" if unknown else "no body"
    raise _RecordError("unknown_body", detail)


def _engine_snapshot(key: bytes | None, value: bytes, ts_recv: int) -> Parsed:
    msg = engine_event_pb2.EngineSnapshot()
    _decode(msg, value)
    _check_version(msg.schema_version)
    venue, symbol = _name(msg.venue, "venue"), _name(msg.symbol, "symbol")
    _check_key(key, symbol)
    return BookSnapshot(venue, symbol, _sequence(msg.sequence), _levels(msg.bids, "bid", snapshot=True),
                        _levels(msg.asks, "ask", snapshot=True), _ts_event(msg.ts_engine_ns, ts_recv), ts_recv)


def _instrument_event(kind: str, key: bytes | None, value: bytes, ts_recv: int) -> Parsed:
    msg = engine_event_pb2.InstrumentEvent()
    _decode(msg, value)
    _check_version(msg.schema_version)
    if msg.kind != engine_event_pb2.INSTRUMENT_EVENT_KIND_UNSPECIFIED and _KINDS.get(msg.kind) != kind:
        raise _RecordError("bad_field", f"kind {_KINDS.get(msg.kind, msg.kind)!r} on a topic of {kind!r} events")
    venue = _name(msg.venue, "venue")
    if not msg.HasField("instrument"):
        raise _RecordError("bad_field", "no instrument")
    ins = msg.instrument
    symbol = _name(ins.symbol, "symbol")
    _check_key(key, symbol)
    status = msg.trading_status
    if status == engine_event_pb2.TRADING_STATUS_UNSPECIFIED:
        halted = kind == "halted"
    elif status in (engine_event_pb2.TRADING_STATUS_TRADING, engine_event_pb2.TRADING_STATUS_HALTED):
        halted = status == engine_event_pb2.TRADING_STATUS_HALTED
        if (kind == "halted" and not halted) or (kind == "resumed" and halted):
            raise _RecordError("bad_field", f"a {kind!r} event with trading_status {status}")
    else:
        raise _RecordError("bad_field", f"unknown trading_status {status}")
    asset_class = _ASSET_CLASSES.get(ins.asset_class)
    if asset_class is None:
        raise _RecordError("bad_field", f"unknown asset_class {ins.asset_class}")
    if ins.tick_size < 0 or ins.lot_size < 0:
        raise _RecordError("bad_number", f"tick_size {ins.tick_size} / lot_size {ins.lot_size} (must be >= 0)")
    return InstrumentStatus(venue, symbol, kind, halted, _sequence(msg.sequence), asset_class, ins.base,
                            ins.quote, ins.tick_size, ins.lot_size, msg.reason[:1000],
                            _ts_event(msg.ts_engine_ns, ts_recv), ts_recv)


def parse_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 ts_recv: int) -> Parsed:
    """One Kafka record to one item (see the module docstring); never raises for bad input."""
    try:
        if not value:
            raise _RecordError("empty", "no value" if value is None else "zero bytes")
        if len(value) > MAX_VALUE_BYTES:
            raise _RecordError("too_large", f"{len(value)} bytes (limit {MAX_VALUE_BYTES})")
        if topic == TOPIC_EVENTS:
            return _engine_event(key, value, ts_recv)
        if topic == TOPIC_SNAPSHOTS:
            return _engine_snapshot(key, value, ts_recv)
        kind = INSTRUMENT_TOPICS.get(topic)
        if kind is not None:
            return _instrument_event(kind, key, value, ts_recv)
        raise _RecordError("unknown_topic", f"topic {topic[:MAX_NAME_CHARS]!r} is not one of {', '.join(ALL_TOPICS)}")
    except _RecordError as bad:
        return DeadLetter(SOURCE, f"{bad.code}: {bad}", _raw(topic, partition, offset, key, value), ts_recv)
