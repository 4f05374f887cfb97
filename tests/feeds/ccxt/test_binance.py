"""The ccxt feed against a loopback Binance replaying the recorded capture: real ccxt, real messages.

Checks the final books against the cryptofeed-capture parser's reading of the same capture, the trades
against the capture's aggTrades, a per-symbol resync after a sequence break (ccxt's ChecksumError), a
reconnect after the server drops the connection, and the circuit breaker when the venue refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from feeds.ccxt.feed import CcxtFeed, CcxtFeedConfig
from feeds.cryptofeed_capture.binance import BinanceParser
from feeds.cryptofeed_capture.reader import merged_lines
from feeds.registry import VenueSymbols
from server.engine.events import BookReset, BookSnapshot, ClockTick, Event, Trade
from tests.feeds.ccxt.helpers import Books, ListSink, replay_to_feed, run, wait_until
from tests.feeds.ccxt.venues import CAPTURES, BinanceVenue

pytestmark = pytest.mark.usefixtures("captures")

SYMBOLS = ("NKN/USDT", "LRC/BTC")
STREAMS = {f"{s.replace('/', '').lower()}@{k}" for s in SYMBOLS for k in ("depth@100ms", "aggTrade")}
DEPTH = 10


def reference() -> list[Event]:
    """The capture read by feeds/cryptofeed_capture (REST snapshot + depth diffs, aggTrades)."""
    parser = BinanceParser(VenueSymbols("binance"))
    dead: list[Any] = []
    lines = merged_lines(CAPTURES / "BINANCE.ws.1.0", CAPTURES / "BINANCE.http.0.0")
    events = list(parser.parse(lines, dead))
    assert not dead
    return events


def config(venue: BinanceVenue, **extra: Any) -> CcxtFeedConfig:
    base = CcxtFeedConfig.from_spec(
        f"ccxt:exchange=binance,symbols={'+'.join(SYMBOLS)},channels=book+trades,depth={DEPTH},"
        f"url_base={venue.base},opt.fetchMarkets.types=[spot],opt.watchTrades.name=aggTrade,backoff=0.05,"
        "backoff_max=0.2")
    fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
    fields.update(extra)
    return CcxtFeedConfig(**fields)


def depth_frames(venue: BinanceVenue, stream: str) -> list[int]:
    return [i for i, f in enumerate(venue.frames) if f.stream == stream]


async def replay(venue: BinanceVenue, expected: Books, **extra: Any) -> tuple[CcxtFeed, list[Event]]:
    """Run a feed until the replay ended and its books equal ``expected``; the feed and the events seen
    until then (before the feed's own shutdown resets)."""
    return await replay_to_feed(venue, lambda _base: config(venue, **extra), expected, SYMBOLS, DEPTH)


def test_books_and_trades_match_the_capture() -> None:
    events = reference()
    expected = Books().apply(events)
    venue = BinanceVenue(speed=20, start_when=STREAMS)
    feed, seen = run(lambda: replay(venue, expected))

    books = Books(strict=True).apply(seen)  # feed seqs are contiguous per symbol
    for symbol in SYMBOLS:
        assert books.top(symbol, DEPTH) == expected.top(symbol, DEPTH), symbol
    assert not books.resets
    trades = [e for e in seen if isinstance(e, Trade)]
    want = [e for e in events if isinstance(e, Trade) and e.symbol in SYMBOLS]
    assert len(want) == 2
    assert sorted((t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in trades) == \
        sorted((t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in want)
    assert all(e.ts_recv > 0 and e.ts_event > 0 for e in seen if not isinstance(e, ClockTick))
    assert sorted(venue.depth_requests) == ["LRCBTC", "NKNUSDT"]
    health = feed.health()
    assert feed.warm and health.reconnects == 0 and health.checksum_failures == 0 and health.dead_letters == 0
    assert health.last_event_age_ns is not None


def test_sequence_break_resyncs_that_symbol_only() -> None:
    expected = Books().apply(reference())
    probe = BinanceVenue()
    corrupt = depth_frames(probe, "nknusdt@depth@100ms")[60]
    venue = BinanceVenue(speed=20, start_when=STREAMS, corrupt={corrupt})
    feed, seen = run(lambda: replay(venue, expected))

    resets = [e for e in seen if isinstance(e, BookReset)]
    assert [r.symbol for r in resets] == ["NKN/USDT"]
    assert "ChecksumError" in resets[0].reason
    assert feed.counters.checksum_failures == 1
    assert feed.status().checksum_failures == 1
    assert feed.counters.resyncs_by_symbol == {"NKN/USDT": 1}
    assert feed.counters.reconnects == 0 and feed.counters.sessions == 1
    assert sorted(venue.depth_requests) == ["LRCBTC", "NKNUSDT", "NKNUSDT"]  # a new snapshot for NKN only
    assert venue.subscribes.count("nknusdt@depth@100ms") == 2 and venue.subscribes.count("lrcbtc@depth@100ms") == 1
    books = Books(strict=True).apply(seen)
    snapshots = [e.symbol for e in seen if isinstance(e, BookSnapshot)]
    assert snapshots.count("NKN/USDT") == 2 and snapshots.count("LRC/BTC") == 1
    for symbol in SYMBOLS:  # the resynced book is right again
        assert books.top(symbol, DEPTH) == expected.top(symbol, DEPTH), symbol


def test_dropped_connection_reconnects_with_backoff() -> None:
    expected = Books().apply(reference())
    probe = BinanceVenue()
    drop = depth_frames(probe, "nknusdt@depth@100ms")[50]
    venue = BinanceVenue(speed=20, start_when=STREAMS, drop_after=drop)
    feed, seen = run(lambda: replay(venue, expected))

    assert feed.counters.reconnects == 1 and feed.counters.sessions == 2
    assert venue.ws_connects > 4  # every stream subscribed again on new connections
    # Every book emitted before the drop is reset (LRC/BTC's REST snapshot is usually still waiting
    # for ccxt's rate limiter then), and every book gets a fresh snapshot after the reconnect.
    resets = [(i, e.symbol) for i, e in enumerate(seen) if isinstance(e, BookReset)]
    assert "NKN/USDT" in {s for _, s in resets} <= set(SYMBOLS)
    assert len(resets) == len({s for _, s in resets})
    after = {e.symbol for e in seen[max(i for i, _ in resets):] if isinstance(e, BookSnapshot)}
    assert after == set(SYMBOLS)
    books = Books(strict=True).apply(seen)
    for symbol in SYMBOLS:
        assert books.top(symbol, DEPTH) == expected.top(symbol, DEPTH), symbol
    health = feed.health()
    assert health.reconnects == 1 and health.breaker == "closed" and "closed" in health.last_error.lower()


def test_circuit_breaker_opens_then_half_open_attempt_closes_it() -> None:
    async def scenario() -> None:
        venue = BinanceVenue(speed=20, start_when=STREAMS, refuse=True)
        await venue.start()
        feed = CcxtFeed(config(venue, breaker=3, cooldown=1.5))
        task = asyncio.create_task(feed.run(ListSink()))
        try:
            assert await wait_until(lambda: feed.breaker.state == "open", 15)
            assert feed.health().consecutive_failures == 3 and feed.counters.sessions == 3
            await asyncio.sleep(0.1)
            assert feed.health().state == "circuit-open"
            assert feed.status().state == "circuit_open"
            requests = venue.requests
            await asyncio.sleep(0.8)
            assert venue.requests == requests  # nothing is tried while the breaker is open
            venue.refuse = False
            assert await wait_until(lambda: feed.warm, 15)
            assert feed.breaker.state == "closed" and feed.breaker.opened == 1
            assert feed.health().state == "live"
            assert feed.status().state == "live" and feed.status().events > 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await venue.stop()
    run(scenario)
