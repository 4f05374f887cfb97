"""The ccxt feed (ccxt ``coinbase``, Advanced Trade) against a loopback Coinbase replaying the recorded
``v3_jsonl/COINBASE`` capture: real ccxt, real ``l2_data`` / ``market_trades`` messages.

The expected books and trades are read straight from the capture here (snapshot + updates applied
per product with exact decimals; every recorded trade), independently of ccxt. ccxt's coinbase code
checks no sequence numbers, so the resync case is a dropped connection: the feed resets its books,
reconnects, and the venue's fresh snapshot makes the books right again.
"""

from __future__ import annotations

import json

import pytest

from feeds.ccxt.feed import CcxtFeed
from feeds.cryptofeed_capture.common import iso_to_ns
from server.engine.events import BookDelta, BookReset, BookSnapshot, ClockTick, Event, Side, Trade
from server.engine.numbers import parse_fixed
from tests.feeds.ccxt.helpers import Books, replay_to_feed, run
from tests.feeds.ccxt.venues import V3_CAPTURES, CoinbaseVenue, v3_records

SYMBOLS = ("BTC/USD", "ETH/USD")
PRODUCTS = {"BTC-USD": "BTC/USD", "ETH-USD": "ETH/USD"}
STREAMS = {f"{ch}:{p}" for p in PRODUCTS for ch in ("level2", "market_trades")}
DEPTH = 10
_NS_PER_MS = 1_000_000


@pytest.fixture(autouse=True)
def _capture() -> None:
    if not (V3_CAPTURES / "COINBASE.jsonl.zst").is_file():
        pytest.skip(f"shared real data missing: {V3_CAPTURES}")


TradeKey = tuple[str, str, int, int, Side, int]


def reference() -> tuple[Books, list[TradeKey]]:
    """Final books and every trade, straight from the capture (exact decimals, ms times as ccxt)."""
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    trades: list[TradeKey] = []
    for rec in v3_records(V3_CAPTURES / "COINBASE.jsonl.zst"):
        if rec["t"] != "recv":
            continue
        msg = json.loads(rec["data"])
        for event in msg.get("events", []):
            if msg["channel"] == "l2_data":
                symbol = PRODUCTS[event["product_id"]]
                if event["type"] == "snapshot":
                    books[symbol] = ({}, {})
                bids, asks = books[symbol]
                for row in event["updates"]:
                    side = bids if row["side"] == "bid" else asks
                    price, size = parse_fixed(row["price_level"]), parse_fixed(row["new_quantity"])
                    if size:
                        side[price] = size
                    else:
                        side.pop(price, None)
            elif msg["channel"] == "market_trades":
                for t in event["trades"]:
                    ts = iso_to_ns(t["time"]) // _NS_PER_MS * _NS_PER_MS
                    trades.append((PRODUCTS[t["product_id"]], t["trade_id"], parse_fixed(t["price"]),
                                   parse_fixed(t["size"]), Side.BUY if t["side"] == "BUY" else Side.SELL, ts))
    expected = Books()
    expected.books = books
    return expected, sorted(trades)


async def replay(venue: CoinbaseVenue, expected: Books) -> tuple[CcxtFeed, list[Event]]:
    def spec(base: str) -> str:
        return (f"ccxt:exchange=coinbase,symbols={'+'.join(SYMBOLS)},channels=book+trades,depth={DEPTH},"
                f"url_base={base},backoff=0.05,backoff_max=0.2")

    return await replay_to_feed(venue, spec, expected, SYMBOLS, DEPTH)


def trade_keys(events: list[Event]) -> list[TradeKey]:
    return sorted((t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_event) for t in events
                  if isinstance(t, Trade))


def test_books_and_trades_match_the_capture() -> None:
    expected, want_trades = reference()
    venue = CoinbaseVenue(speed=20, start_when=STREAMS)
    feed, seen = run(lambda: replay(venue, expected))

    books = Books(strict=True).apply(seen)
    for symbol in SYMBOLS:
        assert books.top(symbol, DEPTH) == expected.top(symbol, DEPTH), symbol
    assert not books.resets
    assert len(want_trades) == 279
    assert trade_keys(seen) == want_trades  # the snapshot's recent trades, then every update's trades
    assert sorted(venue.subscribes) == sorted(STREAMS)
    deltas = [e for e in seen if isinstance(e, BookDelta)]
    assert deltas  # how many depends on ccxt's conflation; the final books above are what counts
    # the venue's message times (2026-08-09T21:05:48..21:06:13Z) survive as ts_event
    assert all(1786309548 * 10**9 <= e.ts_event <= 1786309574 * 10**9 for e in seen
               if isinstance(e, BookSnapshot | BookDelta))
    assert all(e.ts_recv > 0 for e in seen if not isinstance(e, ClockTick))
    health = feed.health()
    assert feed.warm and health.reconnects == 0 and health.dead_letters == 0 and health.checksum_failures == 0


def test_dropped_connection_resyncs_from_a_fresh_snapshot() -> None:
    expected, want_trades = reference()
    probe = CoinbaseVenue()
    drop = [i for i, f in enumerate(probe.frames) if f.stream == "level2:BTC-USD"][150]
    venue = CoinbaseVenue(speed=20, start_when=STREAMS, drop_after=drop)
    feed, seen = run(lambda: replay(venue, expected))

    assert feed.counters.reconnects == 1 and feed.counters.sessions == 2
    resets = [(i, e.symbol) for i, e in enumerate(seen) if isinstance(e, BookReset)]
    assert {s for _, s in resets} == set(SYMBOLS) and len(resets) == 2
    after = {e.symbol for e in seen[max(i for i, _ in resets):] if isinstance(e, BookSnapshot)}
    assert after == set(SYMBOLS)  # the venue's current book, sent on the new subscription
    assert venue.subscribes.count("level2:BTC-USD") == 2
    books = Books(strict=True).apply(seen)
    for symbol in SYMBOLS:
        assert books.top(symbol, DEPTH) == expected.top(symbol, DEPTH), symbol
    got = trade_keys(seen)
    assert set(got) <= set(want_trades) and len(set(got)) == len(got)  # frames sent while down are lost
    health = feed.health()
    assert health.reconnects == 1 and health.breaker == "closed" and health.dead_letters == 0
