"""Dead letters and trading status in the embedded store: bounded records, round trip, no duplicates on a
rewrite, filters, and both found again after a restart (the store reopened)."""

from __future__ import annotations

import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.file_feed import DeadLetterLog
from feeds.protocols import DeadLetter, reason_code
from server.engine.events import TradingStatusChange
from server.storage import EmbeddedStore
from server.storage.dead_letters import (
    MAX_RAW_BYTES,
    DeadLetterRecord,
    DeadLetterRecorder,
    location_of,
    to_record,
)

T0 = 1_700_000_000_000_000_000
KAFKA_RAW = "engine.event.v1[3]@1234 key=b'BTC/USD' value=0a0b"


def letter(reason: str = "bad_field: no price", raw: str = "{}", source: str = "tardis", ts: int = 0) -> DeadLetter:
    return DeadLetter(source, reason, raw, ts)


def test_records_are_bounded_and_say_where_and_why() -> None:
    big = "é" * MAX_RAW_BYTES  # 2 bytes a character: the cut falls inside one
    rec = to_record("file:x", letter(raw=big), T0, 1)
    assert len(rec.raw.encode()) <= MAX_RAW_BYTES and rec.raw == "é" * (MAX_RAW_BYTES // 2)
    assert rec.raw_length == 2 * MAX_RAW_BYTES
    assert rec.reason_code == "bad_field" and rec.ts_recv == T0 and rec.ts_source == 0
    kafka = to_record("kafka", letter("undecodable: not a EngineEvent", KAFKA_RAW, "kafka", T0 - 5), T0, 2)
    assert kafka.location == "engine.event.v1[3]@1234" and kafka.reason_code == "undecodable"
    assert kafka.ts_source == T0 - 5
    assert location_of(letter(raw="{not kafka[1]@2")) == ""
    assert reason_code("") == "unknown" and reason_code("price is not a decimal") == "price is not a decimal"
    # A lone surrogate (a hostile input) cannot reach storage as invalid UTF-8.
    assert to_record("f", letter(reason="x\ud800: y", raw="\udfff"), T0, 3).raw == "?"


def test_round_trip_filters_and_no_duplicates(store: EmbeddedStore) -> None:
    recs = [to_record("feed-a" if i % 2 else "feed-b", letter("bad_field: x" if i % 3 else "too_large: y",
                                                                f"line {i}"), T0 + i, i) for i in range(30)]
    assert store.write_batch(recs) == 30
    store.write_batch(recs[:10])  # a retried batch: rows replace by identity
    assert len(store.dead_letters(limit=1000)) == 30
    newest = store.dead_letters(limit=5)
    assert newest == sorted(recs, key=lambda r: r.ts_recv, reverse=True)[:5]
    a = store.dead_letters("feed-a", limit=1000)
    assert a and all(r.feed == "feed-a" for r in a)
    big = store.dead_letters(code="too_large", limit=1000)
    assert {r.seq for r in big} == {i for i in range(30) if i % 3 == 0}
    ranged = store.dead_letters(start_ns=T0 + 10, end_ns=T0 + 20, limit=1000)
    assert sorted(r.seq for r in ranged) == list(range(10, 20))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300), st.text(max_size=100), st.text(max_size=30), st.integers(-(2**70), 2**70))
def test_any_letter_can_be_stored(store: EmbeddedStore, raw: str, reason: str, source: str, ts: int) -> None:
    rec = to_record("hyp", DeadLetter(source, reason, raw, ts), T0, abs(hash((raw, reason, source, ts))) % 2**63)
    assert store.write_batch([rec]) == 1
    got = [r for r in store.dead_letters("hyp", limit=10_000) if r.seq == rec.seq]
    assert got == [rec]


def test_dead_letters_and_trading_status_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "db"
    recs = [to_record("kafka", letter("undecodable: x", KAFKA_RAW, "kafka"), T0 + i, i) for i in range(3)]
    with EmbeddedStore.open(path) as store:
        store.write_batch([*recs,
                           TradingStatusChange("engine", "BTC/USD", True, "circuit breaker", T0, T0),
                           TradingStatusChange("engine", "ETH/USD", True, "", T0, T0),
                           TradingStatusChange("engine", "ETH/USD", False, "", T0 + 5, T0 + 5)])
    with EmbeddedStore.open(path) as store:
        assert store.dead_letters(limit=10) == recs[::-1]
        assert store.trading_status() == [
            TradingStatusChange("engine", "BTC/USD", True, "circuit breaker", T0, T0),
            TradingStatusChange("engine", "ETH/USD", False, "", T0 + 5, T0 + 5)]
        # Written after the restart, an older-stamped change still wins: the last applied is the latest.
        store.write_batch([TradingStatusChange("engine", "BTC/USD", False, "", T0 - 10, T0 + 9)])
        store.write_batch([TradingStatusChange("engine", "ETH/USD", True, "again", T0 + 1, T0 + 9)])
    with EmbeddedStore.open(path) as store:
        assert [(s.symbol, s.halted, s.reason) for s in store.trading_status()] == [
            ("BTC/USD", False, ""), ("ETH/USD", True, "again")]


def test_the_recorder_keeps_forwards_and_bounds() -> None:
    clock = iter(range(T0, T0 + 10**6))
    recorder = DeadLetterRecorder(clock=lambda: next(clock), keep=5, max_pending=3)
    seen: list[DeadLetter] = []
    feed_log = DeadLetterLog(forward=seen)  # a feed's own log, already forwarding somewhere

    class Feed:
        name = "file:tardis-jsonl:x.jsonl"
        dead_letters = feed_log

    assert recorder.attach([Feed(), object()]) == ["file:tardis-jsonl:x.jsonl"]
    feed_log.append(letter())
    assert seen == [letter()] and feed_log.total == 1
    assert recorder.recent() == [to_record(Feed.name, letter(), T0, 1)]
    assert recorder.drain() == []  # not persisting: nothing queued for storage

    wakes: list[int] = []
    recorder.persist(lambda: wakes.append(1))
    for i in range(6):
        feed_log.append(letter(raw=str(i)))
    assert wakes == [1]  # one wake when the queue turned non-empty
    assert [r.raw for r in recorder.drain()] == ["0", "1", "2"] and recorder.unstored == 3
    assert len(recorder.recent(limit=100)) == 5 and feed_log.total == 7
    assert [r.raw for r in recorder.recent(limit=2)] == ["5", "4"]


def test_the_recorder_takes_letters_from_many_threads() -> None:
    recorder = DeadLetterRecorder(keep=100_000)
    recorder.persist(lambda: None)
    sinks = [recorder.sink(f"f{i}") for i in range(4)]

    def write(i: int) -> None:
        for k in range(2000):
            sinks[i].append(letter(raw=str(k)))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drained: list[DeadLetterRecord] = recorder.drain()
    assert len(drained) == 8000 and len({r.seq for r in drained}) == 8000
    assert recorder.recorded == 8000
