"""FileFeed: the pure pacing schedule (no sleeping), batching, streaming, warm-up, cancellation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest

from feeds.file_feed import (
    MAX_BATCH,
    MAX_SPEED,
    REALTIME,
    DeadLetterLog,
    FileFeed,
    Speed,
    release_offsets,
    schedule,
)
from feeds.protocols import FEED_STATES, DeadLetter
from server.engine.events import ClockTick, Event, Side, Trade

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S


def _trade(ts: int, recv: int | None = None, n: int = 0) -> Trade:
    return Trade("x", "A/B", str(n), S, S, Side.BUY, ts, ts + 7 if recv is None else recv)


def test_speed_parse_and_str() -> None:
    assert Speed.parse("max") == MAX_SPEED and MAX_SPEED.is_max
    assert Speed.parse("1x") == REALTIME
    assert Speed.parse("10X").factor == 10
    assert Speed.parse("0.5x").factor == Fraction(1, 2)
    assert [str(Speed.parse(t)) for t in ("max", "1x", "10x", "2.5x")] == ["max", "1x", "10x", "2.5x"]
    for bad in ("", "x", "fast", "10", "0x", "0.0x", "-1x", "nanx", "infx", "1e3x", "1_000x", "x2"):
        with pytest.raises(ValueError, match="bad speed"):
            Speed.parse(bad)


def test_release_offsets_pure() -> None:
    times = [T0, T0 + 100, T0 + 50, T0 + 400, 0, T0 + 401]
    assert list(release_offsets(times, REALTIME)) == [0, 100, 100, 400, 400, 401]
    assert list(release_offsets(times, Speed.parse("2x"))) == [0, 50, 50, 200, 200, 200]
    assert list(release_offsets(times, Speed.parse("0.5x"))) == [0, 200, 200, 800, 800, 802]
    assert list(release_offsets(times, MAX_SPEED)) == [0] * 6
    # Unknown (<= 0) leading times wait for the first real one.
    assert list(release_offsets([0, 0, T0, T0 + 5], REALTIME)) == [0, 0, 0, 5]


def test_schedule_batches_by_window_and_cap() -> None:
    evs: list[Event] = [_trade(T0), _trade(T0 + 1 * MS), _trade(T0 + 4 * MS), _trade(T0 + 5 * MS),
                        _trade(T0 + 1 * S), ClockTick(T0 + 1 * S + 2 * MS), _trade(T0 + 3 * S)]
    plan = list(schedule(evs, REALTIME, window_ns=5 * MS))
    # A batch: events due within 5 ms of its first; delivered when its last one is due.
    assert [(due, len(b)) for due, b in plan] == [(4 * MS, 3), (5 * MS, 1), (1 * S + 2 * MS, 2), (3 * S, 1)]
    assert [e for _, b in plan for e in b] == evs  # file order kept, nothing restamped
    assert [(due, len(b)) for due, b in schedule(evs, Speed.parse("1000x"), window_ns=5 * MS)] == \
        [(3 * MS, 7)]
    plan = list(schedule(evs, REALTIME, window_ns=5 * MS, max_batch=2))
    assert [len(b) for _, b in plan] == [2, 2, 2, 1]  # a full batch restarts the window
    many = (_trade(T0 + i) for i in range(10_000))
    assert [(due, len(b)) for due, b in schedule(many, MAX_SPEED)] == [(0, 4096), (0, 4096), (0, 1808)]
    with pytest.raises(ValueError):
        list(schedule(evs, REALTIME, max_batch=0))


def test_schedule_streams_an_endless_source() -> None:
    pulled = 0

    def endless() -> Iterator[Event]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield _trade(T0 + i * MS)

    first = list(itertools.islice(schedule(endless(), MAX_SPEED), 3))
    assert [len(b) for _, b in first] == [MAX_BATCH] * 3
    assert pulled == 3 * MAX_BATCH + 1  # one look-ahead event, never the whole source


class _Sink:
    def __init__(self, feed: FileFeed | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.warm_at_put: list[bool] = []
        self.feed = feed

    async def put(self, batch: list[Event]) -> None:
        if self.feed is not None:
            self.warm_at_put.append(self.feed.warm)
        self.batches.append(batch)


class _FakeTime:
    def __init__(self) -> None:
        self.now = 5 * S
        self.sleeps: list[float] = []

    def clock(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9)


@pytest.mark.parametrize("offload", [False, True])
def test_file_feed_paces_with_an_injected_clock(offload: bool) -> None:
    evs: list[Event] = [_trade(T0, recv=1), _trade(T0 + 1 * S + 1 * MS, recv=2),
                        _trade(T0 + 1 * S + 2 * MS, recv=3), _trade(T0 + 3 * S, recv=4)]
    fake = _FakeTime()
    feed = FileFeed("t", lambda: iter(evs), REALTIME, clock=fake.clock, sleep=fake.sleep, offload=offload,
                    restamp=False)
    sink = _Sink(feed)
    assert not feed.warm
    asyncio.run(feed.run(sink))
    assert [len(b) for b in sink.batches] == [1, 2, 1]
    assert fake.sleeps == pytest.approx([1.002, 1.998])
    assert sink.warm_at_put == [False, True, True] and feed.warm and feed.done
    assert feed.events_delivered == 4 and feed.batches_delivered == 3
    # Receive times are kept as recorded.
    assert [e.ts_recv for b in sink.batches for e in b if isinstance(e, Trade)] == [1, 2, 3, 4]
    # By default a replay is stamped with the time this service received each batch.
    stamped = FileFeed("t", lambda: iter(evs), REALTIME, clock=fake.clock, sleep=fake.sleep, offload=offload,
                       wall_clock=lambda: 777)
    sink2 = type(sink)()
    asyncio.run(stamped.run(sink2))
    assert [e.ts_recv for b in sink2.batches for e in b if isinstance(e, Trade)] == [777] * 4


def test_file_feed_at_max_speed_never_sleeps_and_bounds_outstanding_events() -> None:
    produced = 0
    delivered = 0
    worst = 0

    def source() -> Iterator[Event]:
        nonlocal produced
        for i in range(20_000):
            produced += 1
            yield _trade(T0 + i * S)  # 20,000 s of data

    class Counting:
        async def put(self, batch: list[Event]) -> None:
            nonlocal delivered, worst
            delivered += len(batch)
            worst = max(worst, produced - delivered)

    fake = _FakeTime()
    feed = FileFeed("m", source, MAX_SPEED, clock=fake.clock, sleep=fake.sleep)
    asyncio.run(feed.run(Counting()))
    assert delivered == 20_000 and fake.sleeps == []
    assert worst <= MAX_BATCH + 1


def test_file_feed_cancellation_stops_mid_file() -> None:
    evs: list[Event] = [_trade(T0), _trade(T0 + 3600 * S)]  # an hour apart at 1x

    async def main() -> _Sink:
        sink = _Sink()
        task = asyncio.create_task(FileFeed("c", lambda: iter(evs), REALTIME).run(sink))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if sink.batches:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sink

    sink = asyncio.run(main())
    assert [len(b) for b in sink.batches] == [1]


def test_dead_letter_log_is_bounded_and_forwards() -> None:
    forwarded: list[DeadLetter] = []
    log = DeadLetterLog(keep=3, forward=forwarded)
    for i in range(10):
        log.append(DeadLetter("src", f"r{i}", "", 0))
    assert log.total == 10 and len(log.recent) == 3 and log.recent[0].reason == "r7"
    assert log.by_source == {"src": 10} and len(forwarded) == 10


def test_status_follows_the_replay() -> None:
    events = [Trade("v", "S", str(i), 100, 1, Side.BUY, i, i) for i in range(10)]
    feed = FileFeed("f", lambda: iter(events), MAX_SPEED, offload=False)
    before = feed.status()
    assert before.state == "stopped" and before.events == 0 and before.last_event_age_ns is None

    class Sink:
        async def put(self, batch: list[Any], /) -> None:
            pass

    asyncio.run(feed.run(Sink()))
    after = feed.status()
    assert after.state == "done" and after.events == 10 and after.kind == "file"
    assert after.last_event_age_ns is not None and after.state in FEED_STATES
