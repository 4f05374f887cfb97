"""Dead letters kept by the service: the stored record (``DeadLetterRecord``) and the recorder feeds write to.

A feed keeps its own bounded log and counter of what it could not parse (``feeds.file_feed.DeadLetterLog``);
``DeadLetterRecorder.attach`` chains the runtime's sink behind each feed's log (its ``forward``), so every
letter is also stamped (feed name, wall-clock ``ts_recv``, a sequence), cut to ``MAX_RAW_BYTES`` and

* kept in memory (the last ``keep`` letters; ``recent`` serves ListDeadLetters without storage), and
* with storage, queued for the runtime's storage thread, which drains it (``drain``) into its next bulk
  write. Feeds append from any thread (parser threads, quickfix threads) and never wait: past
  ``max_pending`` letters or ``max_pending_bytes`` of raw input waiting for storage, a letter is kept in
  memory and counted by the feed, but not stored (``unstored`` counts them, and a warning says so).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

from feeds.protocols import MAX_REASON_CODE_CHARS, DeadLetter, DeadLetterSink, ForwardsDeadLetters, reason_code

log = logging.getLogger("mds.dead_letters")

MAX_RAW_BYTES: Final = 64 * 1024
"""Raw input kept per letter (UTF-8 bytes); ``raw_length`` says how long it was."""
MAX_REASON_CHARS: Final = 4096
MAX_CODE_CHARS: Final = MAX_REASON_CODE_CHARS

_LOCATION = re.compile(r"([^\s\[\]]{1,512}\[\d{1,10}\]@\d{1,20})(?:\s|$)")
"""A raw text that starts with Kafka coordinates (``feeds.kafka.parser``): ``topic[partition]@offset``."""


class DeadLetterRecord(NamedTuple):
    """One dead letter as stored (the ``dead_letters`` table, columns in this order)."""

    feed: str
    source: str
    location: str
    reason_code: str
    reason: str
    raw: str
    raw_length: int
    ts_recv: int
    """ns, wall clock: when the service recorded it."""
    ts_source: int
    """ns: the receive time the parser gave (0 if none)."""
    seq: int
    """Recording order within one run; (feed, ts_recv, seq) is the record's identity."""


def location_of(letter: DeadLetter) -> str:
    """Where the input came from, when the raw text starts with it (Kafka: ``topic[partition]@offset``)."""
    m = _LOCATION.match(letter.raw)
    return m.group(1) if m else ""


def _text(s: str) -> str:
    """``s`` as valid UTF-8 text (a lone surrogate from a hostile input becomes '?')."""
    return s.encode("utf-8", "replace").decode("utf-8")


def to_record(feed: str, letter: DeadLetter, ts_recv: int, seq: int) -> DeadLetterRecord:
    """A feed's letter as stored: raw cut to ``MAX_RAW_BYTES`` (on a character boundary), reason bounded,
    every text valid UTF-8."""
    data = letter.raw.encode("utf-8", "replace")
    ts_source = letter.ts_recv if isinstance(letter.ts_recv, int) else 0
    raw = data[:MAX_RAW_BYTES].decode("utf-8", "ignore")
    reason = _text(letter.reason[:MAX_REASON_CHARS])
    return DeadLetterRecord(_text(feed), _text(letter.source), _text(location_of(letter)), reason_code(reason),
                            reason, raw, len(data), ts_recv, ts_source if -(2**63) <= ts_source < 2**63 else 0, seq)


class FeedDeadLetters:
    """The ``DeadLetterSink`` the recorder gives one feed."""

    __slots__ = ("feed", "recorder")

    def __init__(self, recorder: DeadLetterRecorder, feed: str) -> None:
        self.recorder = recorder
        self.feed = feed

    def append(self, item: DeadLetter, /) -> None:
        self.recorder.record(self.feed, item)


class _Both:
    """Forwards to a sink the feed already had, then to the recorder's."""

    __slots__ = ("first", "second")

    def __init__(self, first: DeadLetterSink, second: FeedDeadLetters) -> None:
        self.first = first
        self.second = second

    def append(self, item: DeadLetter, /) -> None:
        try:
            self.first.append(item)
        finally:
            self.second.append(item)


def matches(rec: DeadLetterRecord, feed: str, start_ns: int, end_ns: int, code: str) -> bool:
    """``rec`` is of ``feed`` ('' any) and ``code`` ('' any) with ``start_ns <= ts_recv < end_ns``."""
    return ((not feed or rec.feed == feed) and (not code or rec.reason_code == code)
            and start_ns <= rec.ts_recv < end_ns)


class DeadLetterRecorder:
    """Thread-safe recorder of every feed's dead letters (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], int] = time.time_ns, keep: int = 10_000,
                 max_pending: int = 100_000, max_pending_bytes: int = 32 << 20) -> None:
        if keep < 1 or max_pending < 1 or max_pending_bytes < 1:
            raise ValueError("keep, max_pending and max_pending_bytes must be >= 1")
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[DeadLetterRecord] = deque(maxlen=keep)
        self._pending: list[DeadLetterRecord] = []
        self._pending_bytes = 0
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._wake: Callable[[], None] | None = None
        self._seq = 0
        self.recorded = 0
        """Letters recorded since start."""
        self.unstored = 0
        """Letters not queued for storage because too many were waiting for it."""

    # -- wiring

    def sink(self, feed: str) -> FeedDeadLetters:
        """The sink of feed ``feed`` (its name, as GetFeedStatus reports it)."""
        return FeedDeadLetters(self, feed)

    def attach(self, feeds: Iterable[object]) -> list[str]:
        """Chain this recorder behind the dead-letter log of every feed that keeps one (a ``dead_letters``
        attribute meeting ``feeds.protocols.ForwardsDeadLetters``); returns the names of those feeds."""
        names: list[str] = []
        for feed in feeds:
            log_ = getattr(feed, "dead_letters", None)
            if not isinstance(log_, ForwardsDeadLetters):
                continue
            name = str(getattr(feed, "name", "") or type(feed).__name__)
            ours = self.sink(name)
            prev = log_.forward
            if prev is None or isinstance(prev, FeedDeadLetters):
                log_.forward = ours
            elif isinstance(prev, _Both):
                log_.forward = _Both(prev.first, ours)
            else:
                log_.forward = _Both(prev, ours)
            names.append(name)
        return names

    def persist(self, wake: Callable[[], None]) -> None:
        """Queue letters for storage from now on; ``wake()`` (callable from any thread, never blocking) is
        called when the queue turns non-empty, so the storage thread drains it soon."""
        with self._lock:
            self._wake = wake

    # -- recording (any thread)

    def record(self, feed: str, letter: DeadLetter) -> None:
        ts = self._clock()
        with self._lock:
            self._seq += 1
            rec = to_record(feed, letter, ts, self._seq)
            self.recorded += 1
            self._recent.append(rec)
            wake = None
            if self._wake is not None:
                size = len(rec.raw.encode()) + len(rec.reason.encode())  # bytes, as the bound says
                if len(self._pending) >= self._max_pending or self._pending_bytes + size > self._max_pending_bytes:
                    self.unstored += 1
                    if self.unstored == 1 or self.unstored % 10_000 == 0:
                        log.warning("storage is behind: %d dead letters kept in memory only", self.unstored)
                else:
                    if not self._pending:
                        wake = self._wake
                    self._pending.append(rec)
                    self._pending_bytes += size
        if wake is not None:
            wake()

    def drain(self) -> list[DeadLetterRecord]:
        """The letters waiting for storage (the storage thread calls it); the queue is empty after."""
        with self._lock:
            out, self._pending, self._pending_bytes = self._pending, [], 0
        return out

    # -- reading

    def recent(self, feed: str = "", start_ns: int = 0, end_ns: int = 2**63 - 1, limit: int = 100,
               code: str = "") -> list[DeadLetterRecord]:
        """The newest ``limit`` letters kept in memory that match (see ``matches``), newest first."""
        with self._lock:
            kept = list(self._recent)
        out: list[DeadLetterRecord] = []
        for rec in reversed(kept):
            if len(out) >= limit:
                break
            if matches(rec, feed, start_ns, end_ns, code):
                out.append(rec)
        return out
