"""ccxt feed parse throughput on the recorded venue captures, with the capture parsers as the peer.

``python -m load.ccxt_bench [--rounds N] [--json]``

Per venue (Binance, Kraken, Coinbase Advanced Trade, Coinbase Exchange, BitMEX) one round is:

1. setup (not timed): a loopback venue from tests/feeds/ccxt/venues.py with its replay held back; the
   ccxt.pro exchange the feed would build (``CcxtFeed.make_exchange``, URLs pointed at loopback) loads
   its markets and subscribes book and trades of every instrument in the capture
   (``watch_order_book`` / ``watch_trades``), Binance also fetching its REST depth snapshots; the venue
   texts of every recorded frame of a subscribed stream are prepared (Kraken's v1 -> v2 translation);
2. timed: each text goes through ``client.handle_text_or_binary_message`` -- ccxt's own path for a
   received frame: JSON decode, ``exchange.handle_message``, book / trade cache update, future
   resolution -- and then, as the feed does on every resolved watch, the structure goes through
   ``CcxtParser`` into engine events (``book`` on the top N; ``trades`` on the new trades). This is
   one read per message, the most work the feed can do (the live feed reads less often when ccxt
   conflates).

The peer, in the same run: ``feeds.cryptofeed_capture`` parsing the same capture file (every recorded
line, all channels, JSON decode included). ccxt ``coinbaseexchange`` (formerly Coinbase Pro) reads the
2021 ``COINBASE.ws.28.0`` that the Coinbase capture parser reads; ccxt ``coinbase`` (Advanced Trade)
reads ``v3_jsonl/COINBASE.jsonl.zst``, which no capture parser reads (no peer row).

The best and median rounds are reported (messages/s, events/s). BitMEX is skipped when the installed
ccxt no longer has it (removed after 4.5.78). Run time is bounded: each setup step times out and the
whole run stays well under a minute (about 15-25 s with the default 3 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt.pro  # type: ignore[import-untyped]

from feeds.ccxt.feed import CcxtFeed, CcxtFeedConfig
from feeds.ccxt.parser import CcxtParser
from feeds.ccxt.symbols import SymbolMap
from feeds.cryptofeed_capture.binance import BinanceParser
from feeds.cryptofeed_capture.bitmex import BitmexParser
from feeds.cryptofeed_capture.coinbase import CoinbaseParser
from feeds.cryptofeed_capture.common import CaptureParser
from feeds.cryptofeed_capture.kraken import KrakenParser
from feeds.cryptofeed_capture.reader import merged_lines, read_lines
from feeds.registry import VenueSymbols
from tests.feeds.ccxt.venues import (
    CAPTURES,
    BinanceVenue,
    BitmexVenue,
    CoinbaseExchangeVenue,
    CoinbaseVenue,
    KrakenVenue,
    VenueServer,
)

DEPTH = 20
SETUP_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class Venue:
    """How one venue is benchmarked: its loopback server, feed spec and frame -> (channel, market id)."""

    name: str
    make: Callable[..., VenueServer]
    spec: str
    route: Callable[[str], tuple[str, str] | None]
    """A venue stream name -> (``book`` | ``trades``, venue market id); None: not a subscribed stream."""
    peer: Callable[[], CaptureParser] | None
    """A fresh capture parser of this venue (the peer); None: no parser reads this capture."""
    peer_files: tuple[Path, ...]
    capture: str
    dummy_credentials: bool = False
    """ccxt subscribes the book only with credentials (Coinbase Exchange ``level2``); loopback ignores them."""


def _binance_route(stream: str) -> tuple[str, str] | None:
    market, _, kind = stream.partition("@")
    channel = {"depth@100ms": "book", "aggTrade": "trades"}.get(kind)
    return (channel, market.upper()) if channel else None


def _split_route(book: str, trades: str) -> Callable[[str], tuple[str, str] | None]:
    def route(stream: str) -> tuple[str, str] | None:
        kind, _, market = stream.partition(":")
        channel = {book: "book", trades: "trades"}.get(kind)
        return (channel, market) if channel else None
    return route


VENUES: tuple[Venue, ...] = (
    Venue("binance", BinanceVenue,
          "exchange=binance,channels=book+trades,opt.fetchMarkets.types=[spot],opt.watchTrades.name=aggTrade",
          _binance_route, lambda: BinanceParser(VenueSymbols("binance")),
          (CAPTURES / "BINANCE.ws.1.0", CAPTURES / "BINANCE.http.0.0"), "BINANCE.ws.1.0 (+http)"),
    Venue("kraken", KrakenVenue, "exchange=kraken,channels=book,limit=1000",
          lambda stream: ("book", stream), lambda: KrakenParser(VenueSymbols("kraken")),
          (CAPTURES / "KRAKEN.ws.50.0",), "KRAKEN.ws.50.0"),
    Venue("coinbase", CoinbaseVenue, "exchange=coinbase,channels=book+trades",
          _split_route("level2", "market_trades"), None, (), "v3_jsonl/COINBASE.jsonl.zst (Advanced Trade)"),
    Venue("coinbaseexchange", CoinbaseExchangeVenue, "exchange=coinbaseexchange,channels=book+trades",
          _split_route("level2", "matches"), lambda: CoinbaseParser(VenueSymbols("coinbase")),
          (CAPTURES / "COINBASE.ws.28.0",), "COINBASE.ws.28.0 (Coinbase Pro)", dummy_credentials=True),
    Venue("bitmex", BitmexVenue, "exchange=bitmex,channels=book+trades",
          _split_route("orderBookL2", "trade"), lambda: BitmexParser(VenueSymbols("bitmex")),
          (CAPTURES / "BITMEX.ws.1.0",), "BITMEX.ws.1.0"),
)


@dataclass(slots=True)
class Round:
    messages: int
    events: int
    seconds: float
    dead_letters: int = 0
    errors: int = 0
    in_ccxt: float = 0.0
    """Of ``seconds``, the time spent inside ccxt (the rest: our parser and the loop)."""


@dataclass(slots=True)
class Result:
    venue: str
    capture: str
    ccxt: list[Round] = field(default_factory=list)
    peer: list[Round] = field(default_factory=list)
    skipped: str = ""


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("setup did not complete")
        await asyncio.sleep(0.02)


def _client_for(exchange: Any, market_id: str, channel: str) -> Any:
    """The ccxt WebSocket client that subscribed this market's channel (Binance may open several)."""
    clients = list(exchange.clients.values())
    if len(clients) == 1:
        return clients[0]
    needle = market_id.lower()
    for client in clients:
        keys = " ".join(str(k) for k in client.subscriptions).lower()
        if needle in keys and (channel != "book" or "depth" in keys or "orderbook" in keys):
            return client
    return clients[0]


async def ccxt_round(venue: Venue) -> Round:
    server = venue.make(speed=1.0, start_when={"(held back)"}, start_timeout=1e9)
    await server.start()
    markets = sorted({r[1] for f in server.frames if (r := venue.route(f.stream)) is not None})
    cfg = CcxtFeedConfig.from_spec(f"ccxt:{venue.spec},symbols={'+'.join(markets)},depth={DEPTH},"
                                   f"url_base={server.base}")
    feed = CcxtFeed(cfg)
    exchange = feed.make_exchange()
    exchange.enableRateLimit = False  # loopback: setup need not wait for the venue's rate limits
    if venue.dummy_credentials:
        exchange.apiKey, exchange.secret, exchange.password = "loopback", "bG9vcGJhY2s=", "loopback"
    watches: list[asyncio.Task[Any]] = []
    try:
        await asyncio.wait_for(exchange.load_markets(), SETUP_TIMEOUT)
        symbols = SymbolMap(venue.name, exchange.markets)
        unified = {m: symbols.resolve(m) for m in markets}
        for m in markets:
            if "book" in cfg.channels:
                watches.append(asyncio.create_task(exchange.watch_order_book(unified[m], cfg.limit)))
            if "trades" in cfg.channels:
                watches.append(asyncio.create_task(exchange.watch_trades(unified[m])))
        wanted = {f.stream for f in server.frames if venue.route(f.stream) is not None}
        await _until(lambda: wanted <= set(server.subscribes), SETUP_TIMEOUT)
        if isinstance(server, BinanceVenue):
            await _until(lambda: len(server.depth_requests) >= len(markets), SETUP_TIMEOUT)
        await asyncio.sleep(0.3)  # let ccxt apply what setup delivered (Binance REST snapshots)

        items: list[tuple[Any, str, str, str, str]] = []
        for i, frame in enumerate(server.frames):
            route = venue.route(frame.stream)
            text = server.advance(i, frame)
            if route is None or text is None:
                continue
            channel, market = route
            items.append((_client_for(exchange, market, channel), text, channel, unified[market],
                          symbols.canonical(unified[market])))

        parser = CcxtParser(venue.name, DEPTH)
        dead: list[Any] = []
        events = errors = 0
        orderbooks, trades = exchange.orderbooks, exchange.trades
        in_ccxt = 0.0
        clock = time.perf_counter
        start = clock()
        for client, text, channel, sym, canon in items:
            t0 = clock()
            try:
                client.handle_text_or_binary_message(text)
            except Exception:  # a venue message ccxt refuses counts, it does not stop the run
                errors += 1
                continue
            finally:
                in_ccxt += clock() - t0
            now = time.time_ns()
            if channel == "book":
                book = orderbooks.get(sym)
                if book is not None and parser.book(canon, book.limit(), now, dead) is not None:
                    events += 1
            else:
                cache = trades.get(sym)
                if cache is not None:
                    n = cache.getLimit(sym, None) or 0
                    if n:
                        events += len(parser.trades(canon, cache[-n:], now, dead))
        seconds = clock() - start
        return Round(len(items), events, seconds, len(dead), errors, in_ccxt)
    finally:
        for task in watches:
            task.cancel()
        for task in watches:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await exchange.close()
        await server.stop()


def peer_round(venue: Venue) -> Round | None:
    if venue.peer is None:
        return None
    parser = venue.peer()
    files = venue.peer_files
    lines = list(merged_lines(*files)) if len(files) > 1 else list(read_lines(files[0]))
    dead: list[Any] = []
    start = time.perf_counter()
    events = sum(1 for _ in parser.parse(lines, dead))
    seconds = time.perf_counter() - start
    messages = sum(1 for line in lines if line[:1].isdigit())  # received frames (and http bodies: no)
    return Round(messages, events, seconds, len(dead))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _summary(rounds: Iterable[Round]) -> dict[str, Any]:
    rs = list(rounds)
    if not rs:
        return {}
    msg_rates = [_rate(r.messages, r.seconds) for r in rs]
    ev_rates = [_rate(r.events, r.seconds) for r in rs]
    return {"messages": rs[0].messages, "events": rs[0].events, "dead_letters": rs[0].dead_letters,
            "errors": rs[0].errors, "best_msg_s": max(msg_rates), "median_msg_s": statistics.median(msg_rates),
            "best_ev_s": max(ev_rates), "median_ev_s": statistics.median(ev_rates),
            "ccxt_share": statistics.median(r.in_ccxt / r.seconds if r.seconds > 0 else 0.0 for r in rs)}


async def bench(rounds: int, only: Iterable[str] = ()) -> list[Result]:
    chosen = set(only)
    results = []
    for venue in VENUES:
        if chosen and venue.name not in chosen:
            continue
        result = Result(venue.name, venue.capture)
        results.append(result)
        if not hasattr(ccxt.pro, venue.name):
            result.skipped = f"ccxt {ccxt.pro.__version__} has no {venue.name}"
        else:
            for _ in range(rounds):
                result.ccxt.append(await ccxt_round(venue))
        for _ in range(rounds):
            peer = peer_round(venue)
            if peer is not None:
                result.peer.append(peer)
    return results


def render(results: list[Result], rounds: int) -> str:
    out = [f"ccxt feed parse throughput (ccxt {ccxt.pro.__version__}, top {DEPTH} levels, {rounds} rounds; "
           "rates best / median)", ""]
    head = f"{'venue':16} {'path':27} {'messages':>8} {'events':>7} {'msg/s best':>11} {'msg/s med':>10} " \
           f"{'ev/s best':>10} {'ev/s med':>10}  notes"
    out += [head, "-" * len(head)]
    for r in results:
        for label, rs in (("ccxt handle_message+parser", r.ccxt), ("cryptofeed_capture (peer)", r.peer)):
            s = _summary(rs)
            if not s:
                why = r.skipped if rs is r.ccxt else "no parser of this capture"
                out.append(f"{r.venue:16} {label:27} skipped: {why}")
                continue
            notes = [f"{s['ccxt_share']:.0%} of the time in ccxt"] if rs is r.ccxt else []
            if s["dead_letters"]:
                notes.append(f"{s['dead_letters']} dead letters")
            if s["errors"]:
                notes.append(f"{s['errors']} ccxt errors")
            out.append(f"{r.venue:16} {label:27} {s['messages']:>8} {s['events']:>7} {s['best_msg_s']:>11,.0f} "
                       f"{s['median_msg_s']:>10,.0f} {s['best_ev_s']:>10,.0f} {s['median_ev_s']:>10,.0f}  "
                       f"{', '.join(notes)}")
        out.append(f"{'':16} capture: {r.capture}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per venue and path (3)")
    ap.add_argument("--venue", action="append", default=[], help="only this venue (repeatable)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    if not (CAPTURES / "BINANCE.ws.1.0").is_file():
        print(f"shared real data missing: {CAPTURES}", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = asyncio.run(bench(max(1, args.rounds), args.venue))
    if args.json:
        print(json.dumps([{"venue": r.venue, "capture": r.capture, "skipped": r.skipped,
                           "ccxt": _summary(r.ccxt), "peer": _summary(r.peer)} for r in results], indent=2))
    else:
        print(render(results, args.rounds))
        print(f"\nwall time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
