"""The pure parser of the engine's Kafka records: every body, every dead-letter reason, the book hash,
and hypothesis fuzzing (random bytes, mutated valid records, random field values): no exception, and
every bad record is exactly one dead letter with a known reason."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marketdata.v1 import book_pb2, engine_event_pb2, instrument_pb2

from feeds.kafka.parser import (
    ALL_TOPICS,
    INSTRUMENT_TOPICS,
    MAX_VALUE_BYTES,
    REASONS,
    TOPIC_EVENTS,
    TOPIC_SNAPSHOTS,
    BookHash,
    InstrumentStatus,
    Parsed,
    book_hash,
    book_hash_text,
    parse_record,
    reason_code,
)
from feeds.kafka.producer import EngineEncoder, Record
from feeds.protocols import DeadLetter
from server.engine.events import AssetClass, BookDelta, BookSnapshot, Side, Trade

T0 = 1_700_000_000_000_000_000
RECV = T0 + 5_000_000
SYM = "BTC/USD"
KEY = SYM.encode()
P = 65_000_000_000_000  # 65,000.0
Q = 1_500_000_000  # 1.5


def _parse(record: Record, offset: int = 7) -> Parsed:
    return parse_record(record.topic, 0, offset, record.key, record.value, RECV)


def _dead(item: Parsed, code: str) -> DeadLetter:
    assert isinstance(item, DeadLetter), item
    assert reason_code(item) == code, item.reason
    assert item.source == "kafka"
    return item


def _event(**fields: object) -> bytes:
    base: dict[str, object] = {"schema_version": 1, "venue": "mx", "symbol": SYM, "sequence": 5, "ts_engine_ns": T0}
    base.update(fields)
    return engine_event_pb2.EngineEvent(**base).SerializeToString()  # type: ignore[arg-type]


def _trade_body(**fields: object) -> engine_event_pb2.EngineTrade:
    base: dict[str, object] = {"trade_id": "t1", "price": P, "size": Q, "side": 1}
    base.update(fields)
    return engine_event_pb2.EngineTrade(**base)  # type: ignore[arg-type]


# -- valid records ----------------------------------------------------------------------------------


def test_trade() -> None:
    enc = EngineEncoder("mx")
    item = _parse(enc.trade(SYM, "42", P, Q, Side.SELL, T0))
    assert item == Trade("mx", SYM, "42", P, Q, Side.SELL, T0, RECV)


def test_snapshot_then_deltas_chain_through_trades_and_hashes() -> None:
    enc = EngineEncoder("mx")
    snap = _parse(enc.snapshot(SYM, [(P, Q)], [(P + 1, Q)], T0))
    assert snap == BookSnapshot("mx", SYM, 1, ((P, Q),), ((P + 1, Q),), T0, RECV)
    _parse(enc.trade(SYM, "1", P, Q, Side.BUY, T0))  # sequence 2
    h = _parse(enc.book_hash(SYM, [(P, Q)], [(P + 1, Q)], 10, T0))  # sequence 3
    assert h == BookHash("mx", SYM, 3, 1, 10, book_hash([(P, Q)], [(P + 1, Q)], 10), T0, RECV)
    delta = _parse(enc.delta(SYM, [(P, 0)], [(P + 2, Q)], T0 + 1))  # sequence 4, follows book event 1
    assert delta == BookDelta("mx", SYM, 2, 4, ((P, 0),), ((P + 2, Q),), T0 + 1, RECV)
    delta2 = _parse(enc.delta(SYM, [], [(P + 2, 0)], T0 + 2))
    assert isinstance(delta2, BookDelta)
    assert (delta2.first_seq, delta2.seq) == (5, 5)


def test_engine_snapshot_topic() -> None:
    enc = EngineEncoder("mx")
    for i in range(3):
        enc.trade(SYM, str(i), P, Q, Side.BUY, T0)
    item = _parse(enc.engine_snapshot(SYM, [(P, Q), (P - 1, Q)], [], T0))
    assert item == BookSnapshot("mx", SYM, 3, ((P, Q), (P - 1, Q)), (), T0, RECV)


def test_missing_engine_time_is_the_receive_time() -> None:
    item = parse_record(TOPIC_EVENTS, 0, 0, KEY, _event(ts_engine_ns=0, trade=_trade_body()), RECV)
    assert isinstance(item, Trade)
    assert item.ts_event == RECV


def test_instrument_events() -> None:
    enc = EngineEncoder("mx")
    created = _parse(enc.instrument("created", SYM, T0, asset_class=AssetClass.CRYPTO, base="BTC", quote="USD",
                                    tick_size=10_000_000, lot_size=100_000))
    assert created == InstrumentStatus("mx", SYM, "created", False, 1, AssetClass.CRYPTO, "BTC", "USD",
                                       10_000_000, 100_000, "", T0, RECV)
    halted = _parse(enc.instrument("halted", SYM, T0 + 1, reason="volatility"))
    assert isinstance(halted, InstrumentStatus)
    assert (halted.kind, halted.halted, halted.seq, halted.reason) == ("halted", True, 2, "volatility")
    resumed = _parse(enc.instrument("resumed", SYM, T0 + 2))
    assert isinstance(resumed, InstrumentStatus)
    assert (resumed.kind, resumed.halted, resumed.seq) == ("resumed", False, 3)


def test_instrument_kind_defaults_to_the_topic() -> None:
    msg = engine_event_pb2.InstrumentEvent(schema_version=1, venue="mx", sequence=1,
                                           instrument=instrument_pb2.Instrument(symbol=SYM))
    item = parse_record("md.instrument.halt.v1", 0, 0, KEY, msg.SerializeToString(), RECV)
    assert isinstance(item, InstrumentStatus)
    assert item.halted
    assert item.kind == "halted"


# -- dead letters -----------------------------------------------------------------------------------


def test_empty_and_too_large() -> None:
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, None, RECV), "empty")
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, b"", RECV), "empty")
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, b"\x08" * (MAX_VALUE_BYTES + 1), RECV), "too_large")


def test_unknown_topic() -> None:
    dead = _dead(parse_record("engine.event.v2", 3, 99, KEY, _event(trade=_trade_body()), RECV), "unknown_topic")
    assert dead.raw.startswith("engine.event.v2[3]@99 key=b'BTC/USD' value=")


def test_undecodable() -> None:
    for topic in ALL_TOPICS:
        dead = _dead(parse_record(topic, 0, 1, KEY, b"\xff\xff\xff\xff", RECV), "undecodable")
        assert dead.raw.endswith("value=ffffffff")
        assert dead.ts_recv == RECV


def test_unsupported_schema_version() -> None:
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, _event(schema_version=2, trade=_trade_body()), RECV),
          "unsupported_schema_version")
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, _event(schema_version=0, trade=_trade_body()), RECV),
          "unsupported_schema_version")
    snap = engine_event_pb2.EngineSnapshot(schema_version=3, venue="mx", symbol=SYM, sequence=1)
    _dead(parse_record(TOPIC_SNAPSHOTS, 0, 0, KEY, snap.SerializeToString(), RECV), "unsupported_schema_version")


def test_unknown_body() -> None:
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, _event(), RECV), "unknown_body")
    # A body added by a later schema (field 14, length-delimited): unknown here, named in the reason.
    dead = _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, _event() + b"\x72\x02\x08\x01", RECV), "unknown_body")
    assert "14" in dead.reason


@pytest.mark.parametrize("value", [
    _event(venue="", trade=_trade_body()),
    _event(venue=" mx", trade=_trade_body()),
    _event(sequence=0, trade=_trade_body()),
    _event(trade=_trade_body(trade_id="")),
    _event(trade=_trade_body(side=7)),
    _event(sequence=3, book_delta=engine_event_pb2.EngineBookDelta(prev_book_sequence=3)),
    _event(sequence=3, book_hash=engine_event_pb2.EngineBookHash(book_sequence=3, depth=10)),
    _event(book_snapshot=engine_event_pb2.EngineBookSnapshot(
        bids=[book_pb2.PriceLevel(price=P, size=Q), book_pb2.PriceLevel(price=P, size=Q)])),
])  # fmt: skip
def test_bad_fields(value: bytes) -> None:
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, value, RECV), "bad_field")


@pytest.mark.parametrize("value", [
    _event(ts_engine_ns=-1, trade=_trade_body()),
    _event(trade=_trade_body(size=0)),
    _event(trade=_trade_body(size=-Q)),
    _event(trade=_trade_body(price=0)),
    _event(book_delta=engine_event_pb2.EngineBookDelta(asks=[book_pb2.PriceLevel(price=P, size=-1)])),
    _event(book_delta=engine_event_pb2.EngineBookDelta(bids=[book_pb2.PriceLevel(price=-P, size=1)])),
    _event(book_snapshot=engine_event_pb2.EngineBookSnapshot(bids=[book_pb2.PriceLevel(price=P, size=0)])),
    _event(book_hash=engine_event_pb2.EngineBookHash(book_sequence=1, depth=0)),
])  # fmt: skip
def test_bad_numbers(value: bytes) -> None:
    _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, value, RECV), "bad_number")


def test_key_must_be_the_symbol() -> None:
    value = _event(trade=_trade_body())
    _dead(parse_record(TOPIC_EVENTS, 0, 0, None, value, RECV), "key_mismatch")
    _dead(parse_record(TOPIC_EVENTS, 0, 0, b"ETH/USD", value, RECV), "key_mismatch")


def test_bad_instrument_events() -> None:
    ref = instrument_pb2.Instrument(symbol=SYM)
    cases: list[tuple[str, dict[str, object], str]] = [
        ("md.instrument.halt.v1", {"kind": engine_event_pb2.INSTRUMENT_EVENT_KIND_RESUMED}, "bad_field"),
        ("md.instrument.halt.v1", {"trading_status": engine_event_pb2.TRADING_STATUS_TRADING}, "bad_field"),
        ("md.instrument.resume.v1", {"trading_status": engine_event_pb2.TRADING_STATUS_HALTED}, "bad_field"),
        ("md.instrument.created.v1", {"trading_status": 9}, "bad_field"),
        ("md.instrument.created.v1", {"instrument": None}, "bad_field"),
        ("md.instrument.created.v1", {"sequence": 0}, "bad_field"),
        ("md.instrument.updated.v1", {"instrument": instrument_pb2.Instrument(symbol=SYM, tick_size=-1)},
         "bad_number"),
        ("md.instrument.updated.v1", {"instrument": instrument_pb2.Instrument(symbol=SYM, asset_class=42)},  # type: ignore[arg-type]
         "bad_field"),
        ("md.instrument.updated.v1", {"schema_version": 2}, "unsupported_schema_version"),
    ]
    for topic, fields, code in cases:
        base: dict[str, object] = {"schema_version": 1, "venue": "mx", "sequence": 1, "instrument": ref}
        base.update(fields)
        if base["instrument"] is None:
            del base["instrument"]
        value = engine_event_pb2.InstrumentEvent(**base).SerializeToString()  # type: ignore[arg-type]
        _dead(parse_record(topic, 0, 0, KEY, value, RECV), code)


def test_raw_is_truncated() -> None:
    dead = _dead(parse_record(TOPIC_EVENTS, 0, 0, KEY, b"\xff" * 5000, RECV), "undecodable")
    assert dead.raw.endswith("...")
    assert len(dead.raw) < 1200


# -- book hash --------------------------------------------------------------------------------------


def test_book_hash_text_and_value() -> None:
    bids = [(100, 5), (102, 1), (101, 0), (99, 2)]
    asks = [(105, 3), (103, 4)]
    assert book_hash_text(bids, asks, 2) == "102:1,100:5|103:4,105:3"
    assert book_hash(bids, asks, 2) == zlib.crc32(b"102:1,100:5|103:4,105:3")
    assert book_hash_text([], [], 10) == "|"
    assert book_hash_text([(-5, 1)], [], 1) == "-5:1|"
    with pytest.raises(ValueError, match="depth"):
        book_hash(bids, asks, 0)


@given(st.lists(st.tuples(st.integers(1, 10**15), st.integers(1, 10**12)), unique_by=lambda lv: lv[0]),
       st.integers(1, 30), st.randoms(use_true_random=False))
def test_book_hash_ignores_input_order(levels: list[tuple[int, int]], depth: int, rnd: object) -> None:
    shuffled = list(levels)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert book_hash(levels, levels, depth) == book_hash(shuffled, shuffled, depth)


# -- fuzzing ----------------------------------------------------------------------------------------


def _check(item: Parsed) -> None:
    """Whatever the input: a dead letter with a known code, or an item that keeps the contract."""
    if isinstance(item, DeadLetter):
        assert reason_code(item) in REASONS, item.reason
        assert item.ts_recv == RECV
        return
    assert item.venue and item.symbol
    if isinstance(item, Trade):
        assert item.price > 0 and item.size > 0 and item.trade_id
        assert item.side in tuple(Side)
    elif isinstance(item, BookDelta):
        assert 1 <= item.first_seq <= item.seq
        assert all(p > 0 and s >= 0 for p, s in item.bids + item.asks)
    elif isinstance(item, BookSnapshot):
        assert item.seq >= 1
        assert all(p > 0 and s > 0 for p, s in item.bids + item.asks)
    elif isinstance(item, BookHash):
        assert item.depth >= 1 and 0 <= item.book_seq < item.seq
    else:
        assert isinstance(item, InstrumentStatus)
        assert item.seq >= 1 and item.tick_size >= 0 and item.lot_size >= 0
    assert item.ts_event >= 0


def _valid_records() -> list[Record]:
    enc = EngineEncoder("mx")
    return [
        enc.snapshot(SYM, [(P, Q), (P - 10, Q)], [(P + 10, Q)], T0),
        enc.trade(SYM, "9", P, Q, Side.BUY, T0),
        enc.delta(SYM, [(P, 0)], [(P + 20, 2 * Q)], T0),
        enc.book_hash(SYM, [(P - 10, Q)], [(P + 10, Q), (P + 20, 2 * Q)], 5, T0),
        enc.engine_snapshot(SYM, [(P, Q)], [(P + 10, Q)], T0),
        enc.instrument("created", SYM, T0, base="BTC", quote="USD", tick_size=1, lot_size=1),
        enc.instrument("halted", SYM, T0, reason="x"),
    ]


VALID = _valid_records()


@given(st.sampled_from([*ALL_TOPICS, "other"]), st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
@settings(max_examples=500, deadline=None)
def test_fuzz_random_bytes(topic: str, value: bytes, key: bytes | None) -> None:
    _check(parse_record(topic, 0, 0, key, value, RECV))


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    record = draw(st.sampled_from(VALID))
    data = bytearray(record.value)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
    return record.topic, bytes(data)


@given(_mutated())
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_valid_records(case: tuple[str, bytes]) -> None:
    topic, value = case
    _check(parse_record(topic, 0, 0, KEY, value, RECV))


_ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3))
_uints = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 3))
_names = st.one_of(st.sampled_from(["mx", SYM, "", " x", "a\nb"]), st.text(max_size=5))
_levels = st.lists(st.builds(book_pb2.PriceLevel, price=_ints, size=_ints), max_size=4)


@st.composite
def _engine_events(draw: st.DrawFn) -> engine_event_pb2.EngineEvent:
    msg = engine_event_pb2.EngineEvent(schema_version=draw(st.sampled_from([0, 1, 1, 1, 2])), venue=draw(_names),
                                       symbol=draw(st.sampled_from([SYM, SYM, "", "ETH/USD"])),
                                       sequence=draw(_uints), ts_engine_ns=draw(_ints))
    body = draw(st.sampled_from(["trade", "book_delta", "book_snapshot", "book_hash", None]))
    if body == "trade":
        msg.trade.CopyFrom(engine_event_pb2.EngineTrade(trade_id=draw(_names), price=draw(_ints), size=draw(_ints),
                                                        side=draw(st.integers(0, 4))))  # type: ignore[arg-type]
    elif body == "book_delta":
        msg.book_delta.CopyFrom(engine_event_pb2.EngineBookDelta(prev_book_sequence=draw(_uints),
                                                                 bids=draw(_levels), asks=draw(_levels)))
    elif body == "book_snapshot":
        msg.book_snapshot.CopyFrom(engine_event_pb2.EngineBookSnapshot(bids=draw(_levels), asks=draw(_levels)))
    elif body == "book_hash":
        msg.book_hash.CopyFrom(engine_event_pb2.EngineBookHash(book_sequence=draw(_uints),
                                                               depth=draw(st.integers(0, 2**32 - 1)),
                                                               crc32=draw(st.integers(0, 2**32 - 1))))
    return msg


@given(_engine_events())
@settings(max_examples=1000, deadline=None)
def test_fuzz_field_values(msg: engine_event_pb2.EngineEvent) -> None:
    item = parse_record(TOPIC_EVENTS, 0, 0, KEY, msg.SerializeToString(), RECV)
    _check(item)
    if not isinstance(item, DeadLetter):
        assert item.symbol == SYM and msg.schema_version == 1


@given(st.sampled_from(sorted(INSTRUMENT_TOPICS)), st.integers(0, 5), st.integers(0, 3), _ints, _ints, _uints,
       st.integers(0, 9))
@settings(max_examples=300, deadline=None)
def test_fuzz_instrument_events(topic: str, kind: int, status: int, tick: int, lot: int, seq: int,
                                asset_class: int) -> None:
    msg = engine_event_pb2.InstrumentEvent(
        schema_version=1, kind=kind, venue="mx", trading_status=status, sequence=seq,  # type: ignore[arg-type]
        instrument=instrument_pb2.Instrument(symbol=SYM, tick_size=tick, lot_size=lot,
                                             asset_class=asset_class))  # type: ignore[arg-type]
    _check(parse_record(topic, 0, 0, KEY, msg.SerializeToString(), RECV))
