"""Replay of a recorded file as a ``Feed``: the same sink (and so the same engine path) as a live feed.

``FileFeed(name, events_factory, speed)`` pulls events from ``events_factory()`` (an iterator over
the file, streamed: memory is bounded by one batch, however large the file) and delivers them in file
order with ``await sink.put(batch)``.

Pacing is by **event time** (``ts_event``; ``ts`` of a ``ClockTick``):

- ``Speed`` ``1x`` replays at the original pace, ``Nx`` N times faster (N may be a decimal such as
  ``0.5x``), ``max`` as fast as the sink accepts;
- the schedule is a pure function (``release_offsets`` / ``schedule``): event i is due
  ``(T_i - T_0) / N`` after the replay started, where ``T_i`` is the largest event time seen up to
  event i. Files are in receive order and event times may step back (BitMEX stamps trail their
  receipt; snapshots carry older times), so time never runs backwards: such an event is due at once.
  An event time <= 0 (unknown) is treated the same way. Large gaps in the data (a closed market) are
  waited out at 1x, as they happened;
- events are batched: a batch holds consecutive events due within ``window_ns`` (default 5 ms) of its
  first one, at most ``max_batch`` (4096); it is delivered when its *last* event is due (no event is
  ever early, none later than the window). At ``max`` every batch is ``max_batch`` events.

Times: ``ts_event`` keeps the file's value. ``ts_recv`` is, by default (``restamp=True``), the wall-clock
time this service received the batch, as for any live feed, so staleness, latency and the engine's
clock-driven candle closes treat a replay like live data shifted in event time. ``restamp=False`` keeps
the recorded receive times instead (a faithful re-run of the capture's timing).

File reading and parsing run in a worker thread (``asyncio.to_thread``), one batch at a time, so the
event loop stays responsive while a large file streams. ``warm`` becomes True after the first batch
(a file's initial state, its snapshots, comes first). Dead letters go to the sink given to the
factory's owner (see ``feeds.registry``); ``DeadLetterLog`` keeps a bounded record of them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Final

from feeds.protocols import DeadLetter, DeadLetterSink, EventSink, FeedStatus
from server.engine.events import ClockTick, Event

DEFAULT_WINDOW_NS: Final = 5_000_000
"""Events due within 5 ms of a batch's first event share its batch."""
MAX_BATCH: Final = 4096
_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Speed:
    """Replay speed: ``factor`` N (event time runs N times faster than wall time), or None for max."""

    factor: Fraction | None

    @classmethod
    def parse(cls, text: str) -> Speed:
        """``'max'``, ``'1x'``, ``'10x'``, ``'0.5x'`` (case-insensitive); ValueError otherwise."""
        s = text.strip().lower()
        if s == "max":
            return cls(None)
        number = s[:-1]
        if not s.endswith("x") or _NUMBER.fullmatch(number) is None:
            raise ValueError(f"bad speed {text!r}: use 'max' or '<N>x' such as '1x', '10x', '0.5x'")
        factor = Fraction(number)
        if factor <= 0:
            raise ValueError(f"bad speed {text!r}: the factor must be positive")
        return cls(factor)

    @property
    def is_max(self) -> bool:
        return self.factor is None

    def __str__(self) -> str:
        if self.factor is None:
            return "max"
        f = self.factor
        return f"{f.numerator}x" if f.denominator == 1 else f"{Decimal(f.numerator) / f.denominator}x"


MAX_SPEED: Final = Speed(None)
REALTIME: Final = Speed(Fraction(1))


def event_time(event: Event) -> int:
    """The time that paces a replay: ``ts_event`` (``ts`` for a ``ClockTick``)."""
    return event.ts if isinstance(event, ClockTick) else event.ts_event


class Pacer:
    """Incremental form of ``release_offsets``: ``due(t)`` is the offset of the next event, time ``t``."""

    __slots__ = ("_den", "_high", "_num", "_t0")

    def __init__(self, speed: Speed) -> None:
        factor = speed.factor
        self._num = 0 if factor is None else factor.numerator
        self._den = 0 if factor is None else factor.denominator
        self._t0 = 0
        self._high = 0

    def due(self, t: int) -> int:
        if not self._num:
            return 0
        if t > 0:
            if not self._t0:
                self._t0 = self._high = t
            elif t > self._high:
                self._high = t
        return (self._high - self._t0) * self._den // self._num if self._t0 else 0


def release_offsets(times: Iterable[int], speed: Speed) -> Iterator[int]:
    """Pure pacing: for each event time, ns after the replay start at which that event is due.

    Offsets never decrease (time does not run backwards); all are 0 at ``max``; integer arithmetic.
    """
    pacer = Pacer(speed)
    for t in times:
        yield pacer.due(t)


def schedule(events: Iterable[Event], speed: Speed, window_ns: int = DEFAULT_WINDOW_NS,
             max_batch: int = MAX_BATCH) -> Iterator[tuple[int, list[Event]]]:
    """Pure: ``(due offset ns, batch)`` pairs for the events in order (see the module docstring).

    Streams: holds one batch at a time.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    pacer = Pacer(speed)
    batch: list[Event] = []
    first = last = 0
    for event in events:
        offset = pacer.due(event_time(event))
        if batch and (offset - first >= window_ns or len(batch) >= max_batch):
            yield last, batch
            batch = []
        if not batch:
            first = offset
        batch.append(event)
        last = offset
    if batch:
        yield last, batch


class DeadLetterLog:
    """A bounded dead-letter sink: the last ``keep`` letters and counts by source; ``forward`` (if
    given) receives every letter too."""

    def __init__(self, keep: int = 1000, forward: DeadLetterSink | None = None) -> None:
        self.recent: deque[DeadLetter] = deque(maxlen=keep)
        self.total = 0
        self.by_source: Counter[str] = Counter()
        self.forward = forward

    def append(self, item: DeadLetter, /) -> None:
        self.recent.append(item)
        self.total += 1
        self.by_source[item.source] += 1
        if self.forward is not None:
            self.forward.append(item)


Clock = Callable[[], int]
Sleep = Callable[[float], Awaitable[None]]


class FileFeed:
    """A ``Feed`` replaying ``events_factory()`` at ``speed``; see the module docstring.

    ``clock`` (monotonic ns) and ``sleep`` are injectable for tests; ``offload=False`` parses on the
    event loop instead of a worker thread.
    """

    def __init__(self, name: str, events_factory: Callable[[], Iterable[Event]], speed: Speed = REALTIME,
                 *, window_ns: int = DEFAULT_WINDOW_NS, max_batch: int = MAX_BATCH,
                 dead_letters: DeadLetterLog | None = None, clock: Clock = time.monotonic_ns,
                 sleep: Sleep = asyncio.sleep, offload: bool = True, restamp: bool = True,
                 wall_clock: Clock = time.time_ns) -> None:
        self.name = name
        self.restamp = restamp
        self._wall = wall_clock
        self.speed = speed
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterLog()
        self.events_delivered = 0
        self.batches_delivered = 0
        self.done = False
        self._factory = events_factory
        self._window = window_ns
        self._max_batch = max_batch
        self._clock = clock
        self._sleep = sleep
        self._offload = offload
        self._warm = False
        self._started = False
        self._last_ns = 0

    @property
    def warm(self) -> bool:
        return self._warm

    def status(self) -> FeedStatus:
        """ReportsStatus: live while replaying, done at the end of the file."""
        state = "done" if self.done else "live" if self._warm else "connecting" if self._started else "stopped"
        age = self._clock() - self._last_ns if self._last_ns else None
        return FeedStatus(self.name, "file", state, age, self.events_delivered,
                          dead_letters=self.dead_letters.total, detail=f"speed {self.speed}")

    async def run(self, sink: EventSink) -> None:
        """Deliver the whole file, paced; returns at its end (or raises CancelledError when cancelled)."""
        self._started = True
        plan = schedule(self._factory(), self.speed, self._window, self._max_batch)
        start = self._clock()
        paced = not self.speed.is_max
        while True:
            item = await asyncio.to_thread(next, plan, None) if self._offload else next(plan, None)
            if item is None:
                break
            offset, batch = item
            if paced:
                delay = start + offset - self._clock()
                if delay > 0:
                    await self._sleep(delay / 1e9)
            if self.restamp:
                now = self._wall()
                batch = [e if isinstance(e, ClockTick) else e._replace(ts_recv=now) for e in batch]
            await sink.put(batch)
            self.events_delivered += len(batch)
            self.batches_delivered += 1
            self._last_ns = self._clock()
            self._warm = True
            if not paced:
                await asyncio.sleep(0)  # let other tasks run between full-speed batches
        self.done = True
