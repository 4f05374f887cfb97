"""The small contracts every feed parser meets, and the dead-letter record for what cannot be parsed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol, runtime_checkable

from server.engine.events import Event


class DeadLetter(NamedTuple):
    """One input that could not be turned into events: kept with the reason, never dropped silently."""

    source: str
    reason: str
    raw: str
    ts_recv: int


MAX_REASON_CODE_CHARS = 64


def reason_code(reason: str) -> str:
    """A dead letter's reason code: its reason up to the first colon (Kafka's reasons start with one of
    its codes), at most 64 characters; 'unknown' if empty. Feeds count by it and storage keeps it."""
    return reason.partition(":")[0].strip()[:MAX_REASON_CODE_CHARS] or "unknown"


class DeadLetterSink(Protocol):
    """Where parsers put what they could not parse (a list works: it has ``append``)."""

    def append(self, item: DeadLetter, /) -> None: ...


@runtime_checkable
class ForwardsDeadLetters(Protocol):
    """A feed's own dead-letter log (``feeds.file_feed.DeadLetterLog``, a feed's ``dead_letters``): it keeps
    and counts every letter and passes it on to ``forward`` when set. The runtime sets ``forward`` to its
    recorder, which stores the letters (``server.storage.dead_letters``)."""

    forward: DeadLetterSink | None

    def append(self, item: DeadLetter, /) -> None: ...


class RecordParser(Protocol):
    """Pure: raw records of one source in, normalized events out; no I/O, no clock."""

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Event]: ...


class EventSink(Protocol):
    """Where a running feed delivers its events, in batches (a batch is one list, in order).

    ``put`` may wait (backpressure from a bounded queue); it never drops.
    """

    async def put(self, batch: list[Event], /) -> None: ...


class Feed(Protocol):
    """A running source: an I/O handler that feeds parsed events to the engine's sink.

    ``run`` returns when the source is exhausted (a file) or is cancelled (a live source).
    ``warm`` is True once the feed has delivered its initial state (snapshots), for health checks.
    """

    name: str

    @property
    def warm(self) -> bool: ...

    async def run(self, sink: EventSink) -> None: ...


FEED_STATES = ("connecting", "live", "stale", "circuit_open", "done", "stopped")
"""What ``FeedStatus.state`` may be (marketdata.v1.FeedState, lowercase, without the prefix)."""


class FeedStatus(NamedTuple):
    """One reading of a feed's health (served by GetFeedStatus and exported as md_feed_* metrics)."""

    name: str
    kind: str
    state: str
    """One of ``FEED_STATES``."""
    last_event_age_ns: int | None
    """Since the feed last delivered data; None before the first delivery."""
    events: int
    reconnects: int = 0
    gaps: int = 0
    checksum_failures: int = 0
    dead_letters: int = 0
    detail: str = ""


class ReportsStatus(Protocol):
    """A feed that can say how it is doing (every feed in this repository does)."""

    def status(self) -> FeedStatus: ...
