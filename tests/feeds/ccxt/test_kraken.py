"""The ccxt feed against a loopback Kraken (WebSocket v2 translated from the recorded v1 book capture).

The final books must equal the cryptofeed-capture Kraken parser's reading of the same capture (whose
checksums all verify, see tests/feeds/test_cryptofeed_kraken.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from feeds.ccxt.feed import CcxtFeed
from feeds.cryptofeed_capture.kraken import KrakenParser
from feeds.cryptofeed_capture.reader import read_lines
from feeds.registry import VenueSymbols
from server.engine.events import BookDelta, BookReset, Event
from tests.feeds.ccxt.helpers import Books, replay_to_feed, run
from tests.feeds.ccxt.venues import CAPTURES, KrakenVenue

pytestmark = pytest.mark.usefixtures("captures")

SYMBOLS = ("XMR/USD", "BTC/CHF", "ETH/CHF")
DEPTH = 10


def reference() -> Books:
    dead: list[Any] = []
    events = list(KrakenParser(VenueSymbols("kraken")).parse(read_lines(CAPTURES / "KRAKEN.ws.50.0"), dead))
    assert not dead
    return Books().apply(events)


async def replay(expected: Books) -> tuple[CcxtFeed, list[Event], KrakenVenue]:
    venue = KrakenVenue(speed=20, start_when=set(SYMBOLS))
    feed, events = await replay_to_feed(
        venue, lambda base: f"ccxt:exchange=kraken,symbols={'+'.join(SYMBOLS)},channels=book,depth={DEPTH},"
                            f"limit=1000,url_base={base}",
        expected, SYMBOLS, DEPTH)
    return feed, events, venue


def test_books_match_the_capture() -> None:
    expected = reference()
    feed, seen, venue = run(lambda: replay(expected))
    books = Books(strict=True).apply(seen)
    for symbol in SYMBOLS:
        assert books.top(symbol, DEPTH) == expected.top(symbol, DEPTH), symbol
    assert not [e for e in seen if isinstance(e, BookReset)]
    assert sorted(venue.subscribes) == sorted(SYMBOLS)
    deltas = [e for e in seen if isinstance(e, BookDelta)]
    assert len(deltas) > 100
    # the venue's level times (2021) survive as ts_event; ts_recv is now
    assert all(1618678130 * 10**9 < d.ts_event < 1618678170 * 10**9 < d.ts_recv for d in deltas)
    health = feed.health()
    assert feed.warm and health.dead_letters == 0 and health.checksum_failures == 0
