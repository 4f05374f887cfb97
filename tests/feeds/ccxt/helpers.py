"""Test helpers for the ccxt feed: a list sink, a book replayer for event streams, a bounded runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from feeds.ccxt.feed import CcxtFeed, CcxtFeedConfig
from server.engine.events import NO_SEQUENCE, BookDelta, BookReset, BookSnapshot, Event, Level
from tests.feeds.ccxt.venues import VenueServer

T = TypeVar("T")


class ListSink:
    """An ``EventSink`` that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.events: list[Event] = []

    async def put(self, batch: list[Event], /) -> None:
        self.batches.append(batch)
        self.events.extend(batch)


class Books:
    """Applies book events like the engine (seq rules included); ``strict`` also requires contiguous seqs."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self.seq: dict[str, int] = {}
        self.resets: list[BookReset] = []

    def apply(self, events: Iterable[Event]) -> Books:
        for ev in events:
            if isinstance(ev, BookSnapshot):
                self.books[ev.symbol] = (dict(ev.bids), dict(ev.asks))
                if self.strict and ev.symbol in self.seq:
                    assert ev.seq == self.seq[ev.symbol] + 1, ev
                self.seq[ev.symbol] = ev.seq
            elif isinstance(ev, BookDelta):
                if ev.symbol not in self.books:
                    assert not self.strict, f"delta before snapshot: {ev}"
                    continue
                last = self.seq[ev.symbol]
                if ev.seq != NO_SEQUENCE:
                    if self.strict:
                        assert ev.first_seq == ev.seq == last + 1, (last, ev)
                    if ev.seq <= last or not ev.first_seq <= last + 1:
                        continue
                    self.seq[ev.symbol] = ev.seq
                bids, asks = self.books[ev.symbol]
                for side, levels in ((bids, ev.bids), (asks, ev.asks)):
                    for price, size in levels:
                        if size:
                            side[price] = size
                        else:
                            side.pop(price, None)
            elif isinstance(ev, BookReset):
                self.resets.append(ev)
                self.books.pop(ev.symbol, None)
        return self

    def top(self, symbol: str, depth: int) -> tuple[list[Level], list[Level]]:
        bids, asks = self.books[symbol]
        return (sorted(bids.items(), reverse=True)[:depth], sorted(asks.items())[:depth])


async def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``timeout`` seconds passed; its final value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def run(make: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run one test coroutine on a fresh loop, bounded in time."""
    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout)
    return asyncio.run(bounded())


async def replay_to_feed(venue: VenueServer, spec: Callable[[str], str | CcxtFeedConfig], expected: Books,
                         symbols: Iterable[str], depth: int) -> tuple[CcxtFeed, list[Event]]:
    """Start ``venue``, run a ``CcxtFeed`` (``spec(venue.base)``: a feed spec or a whole config) against it
    until the venue has replayed its capture and the feed's top ``depth`` books of ``symbols`` equal
    ``expected`` (or 5 s more), then stop both."""
    sink = ListSink()
    await venue.start()
    made = spec(venue.base)
    feed = CcxtFeed(CcxtFeedConfig.from_spec(made) if isinstance(made, str) else made)
    task = asyncio.create_task(feed.run(sink))
    try:
        assert await wait_until(venue.done.is_set, 30), "replay did not finish"

        def books_match() -> bool:
            books = Books().apply(sink.events)
            return all(s in books.books and books.top(s, depth) == expected.top(s, depth) for s in symbols)

        await wait_until(books_match, 5)
        return feed, list(sink.events)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await venue.stop()

