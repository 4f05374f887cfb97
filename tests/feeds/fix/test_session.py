"""End to end: ``FixFeed`` (a quickfix initiator) against a quickfix acceptor playing the LP on loopback.

The LP (tests/feeds/fix/lp.py) answers the feed's MarketDataRequests with snapshots (W) and a reject (Y)
for a symbol it does not quote, then streams incrementals (X) with level changes and trades. The events
the feed delivers, applied to the engine, must rebuild the LP's books exactly; the trades must arrive
exactly; a lost update (RptSeq gap) and a garbled message must lead to a reset and a fresh snapshot; an
LP logout and a stopped LP must make the feed stale, and a restarted LP must see it log on again and
re-subscribe. Everything started is stopped in ``finally`` blocks.

quickfix is an optional dependency (extra ``fix``): without it these tests fail with the install hint,
unless ``MDS_SKIP_FIX=1``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from feeds.fix.config import FixFeedConfig
from server.engine.engine import Engine
from server.engine.events import BookReset, BookSnapshot, Event, Side, Trade
from server.engine.numbers import SCALE

if TYPE_CHECKING:
    from feeds.fix.session import FixFeed
    from tests.feeds.fix.lp import LiquidityProvider

E5 = SCALE // 100_000


def _require_quickfix() -> None:
    try:
        importlib.import_module("quickfix")
        return
    except ImportError:
        pass
    if os.environ.get("MDS_SKIP_FIX") == "1":
        pytest.skip("quickfix not installed and MDS_SKIP_FIX=1")
    pytest.fail("quickfix is not installed: pip install -e '.[fix]' (builds for several minutes on first "
                "install; pip caches the wheel), or set MDS_SKIP_FIX=1 to skip the FIX tests", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class CollectSink:
    """An ``EventSink`` that keeps every batch, readable from the test thread; ``delay`` slows it down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[Event] = []
        self.batches = 0
        self.delay = delay
        self.lock = threading.Lock()

    async def put(self, batch: list[Event], /) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.events.extend(batch)
            self.batches += 1

    def snapshot(self) -> list[Event]:
        with self.lock:
            return list(self.events)


class FeedRunner:
    """Runs ``FixFeed.run`` on its own event loop in a thread; ``stop`` cancels it and joins."""

    def __init__(self, feed: FixFeed, sink: CollectSink) -> None:
        self.feed = feed
        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="fix-feed", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.feed.run(self.sink))
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self.loop.close()

    def stop(self) -> None:
        _wait(lambda: self.task is not None or not self.thread.is_alive(), "feed task")
        if self.thread.is_alive() and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)
        assert not self.thread.is_alive(), "feed did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LiquidityProvider]:
    _require_quickfix()
    from tests.feeds.fix.lp import LiquidityProvider, ModelBook

    books = {
        "EUR/USD": ModelBook({110_000 * E5: 1_000_000 * SCALE, 109_990 * E5: 2_000_000 * SCALE},
                             {110_010 * E5: 1_500_000 * SCALE}, rpt_seq=100),
        "USDJPY": ModelBook({15_000_000 * E5: 1_000_000 * SCALE}, {15_001_000 * E5: 1_000_000 * SCALE}),
    }
    provider = LiquidityProvider(_free_port(), tmp_path / "lp", books)
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def feed(lp: LiquidityProvider, tmp_path: Path) -> Iterator[tuple[FixFeed, CollectSink]]:
    from feeds.fix.session import FixFeed

    config = FixFeedConfig.from_spec(f"fix:host=127.0.0.1,port={lp.port},sender=MDS,target=LP,"
                                     f"symbols=EUR/USD+USDJPY+XAU/USD,venue=lp1,depth=10,reconnect=1,"
                                     f"heartbeat=5,log=1,data_dir={tmp_path / 'feed'}")
    fix_feed = FixFeed(config)
    sink = CollectSink()
    runner = FeedRunner(fix_feed, sink)
    try:
        yield fix_feed, sink
    finally:
        runner.stop()
    assert fix_feed.health.state == "stopped"


def _engine(events: list[Event]) -> Engine:
    engine = Engine()
    engine.apply_batch(events, [])
    return engine


def _book_matches(sink: CollectSink, lp: LiquidityProvider, symbol: str, canonical: str) -> bool:
    book = _engine(sink.snapshot()).book("lp1", canonical)
    model = lp.books[symbol]
    with lp.lock:
        return (book is not None and book.synced and dict(book.bids) == model.bids
                and dict(book.asks) == model.asks)


def _random_round(rng: random.Random, lp: LiquidityProvider, symbol: str, mid: int) -> list[tuple[str, int, int]]:
    book = lp.books[symbol]
    levels: list[tuple[str, int, int]] = []
    for _ in range(rng.randint(1, 4)):
        side = rng.choice("01")
        prices = book.bids if side == "0" else book.asks
        if prices and rng.random() < 0.3:
            levels.append((side, rng.choice(sorted(prices)), 0))
        else:
            offset = rng.randint(1, 8) * 10 * E5
            price = mid - offset if side == "0" else mid + offset
            levels.append((side, price, rng.randint(1, 50) * 100_000 * SCALE))
    # one change per price per message, as an LP sends
    seen: dict[tuple[str, int], tuple[str, int, int]] = {}
    for lv in levels:
        if lv[2] == 0 and (lv[0], lv[1]) in seen:
            continue
        seen.setdefault((lv[0], lv[1]), lv)
    return list(seen.values())


def test_fix_feed_end_to_end(lp: LiquidityProvider, feed: tuple[FixFeed, CollectSink]) -> None:
    fix_feed, sink = feed
    # logon, one V per symbol (snapshot + updates, depth, incremental, bid/offer/trade)
    subs = lp.wait_requests(3)
    assert sorted(s.symbol for s in subs) == ["EUR/USD", "USDJPY", "XAU/USD"]
    assert {s.kind for s in subs} == {"1"}
    for s in subs:
        assert all(f in s.raw for f in ("\x01264=10\x01", "\x01265=1\x01", "\x01266=Y\x01", "\x01267=3\x01",
                                        "\x01269=0\x01", "\x01269=1\x01", "\x01269=2\x01"))
    _wait(lambda: fix_feed.warm, "warm feed")
    assert fix_feed.health.state == "connected" and fix_feed.health.logons == 1
    assert fix_feed.status().state == "live" and fix_feed.status().kind == "fix"
    rejects = list(fix_feed.rejects)
    assert len(rejects) == 1 and rejects[0].symbol == "XAU/USD" and rejects[0].reason == "unknown symbol"
    assert rejects[0].text == "unknown symbol XAU/USD" and fix_feed.health.rejects == 1
    _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD") and _book_matches(sink, lp, "USDJPY", "USD/JPY"),
          "snapshots")

    # a stream of incrementals and trades
    rng = random.Random(7)
    expected: list[tuple[str, int, int, Side, int]] = []
    for i in range(60):
        symbol, mid = ("EUR/USD", 110_005 * E5) if i % 3 else ("USDJPY", 15_000_500 * E5)
        trades = []
        if i % 4 == 0:
            size, side = rng.randint(1, 9) * 100_000 * SCALE, rng.choice("12")
            trades.append((mid, size, side))
        now = datetime.now(UTC)
        entry_time = now.strftime("%H:%M:%S.%f")[:-3]
        ids = lp.update(symbol, _random_round(rng, lp, symbol, mid), trades, entry_time=entry_time)
        day = int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp()) * 1_000_000_000
        ts = day + int(entry_time[:2]) * 3_600_000_000_000 + int(entry_time[3:5]) * 60_000_000_000 \
            + int(entry_time[6:8]) * 1_000_000_000 + int(entry_time[9:]) * 1_000_000
        for trade_id, (price, size, side) in zip(ids, trades, strict=True):
            expected.append((trade_id, price, size, Side.BUY if side == "1" else Side.SELL, ts))
    last_id = expected[-1][0]
    _wait(lambda: any(isinstance(e, Trade) and e.trade_id == last_id for e in sink.snapshot()), "last trade")
    _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD") and _book_matches(sink, lp, "USDJPY", "USD/JPY"),
          "books equal to the LP's")
    trades_seen = [e for e in sink.snapshot() if isinstance(e, Trade)]
    assert [(t.trade_id, t.price, t.size, t.side, t.ts_event) for t in trades_seen] == expected
    assert all(t.venue == "lp1" and t.ts_recv >= t.ts_event - 1_000_000_000 for t in trades_seen)
    assert {t.symbol for t in trades_seen} == {"EUR/USD", "USD/JPY"}
    assert fix_feed.health.gaps == 0 and fix_feed.dead_letters.total == 0
    age = fix_feed.health.last_event_age_s()
    assert age is not None and 0 <= age < 10

    # a lost update: RptSeq gap -> reset -> snapshot request (V 263=0) -> consistent again
    lp.update("EUR/USD", [("0", 109_900 * E5, 7 * SCALE)], send=False)
    lp.update("EUR/USD", [("1", 110_100 * E5, 8 * SCALE)])
    resync = lp.wait_requests(4)[3]
    assert resync.kind == "0" and resync.symbol == "EUR/USD"
    _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD"), "resync after the gap")
    assert fix_feed.health.gaps == 1
    assert any(isinstance(e, BookReset) and e.reason.startswith("RptSeq gap") for e in sink.snapshot())

    # a malformed message: dead letter with a reason, counted, and the book re-requested
    n = len(lp.requests)
    lp.garbled("EUR/USD")
    assert [s.symbol for s in lp.wait_requests(n + 1)[n:]] == ["EUR/USD"]
    _wait(lambda: fix_feed.dead_letters.total == 1, "dead letter")
    letter = fix_feed.dead_letters.recent[0]
    assert letter.reason.startswith("missing tag: entry 1 MDEntryPx") and letter.source == "fix"
    assert fix_feed.health.dead_letters["missing tag"] == 1
    _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD"), "resync after the dead letter")

    # a message quickfix itself refuses (no Symbol in a W): a dead letter too, and every book re-requested
    n = len(lp.requests)
    lp.refused()
    assert sorted(s.symbol for s in lp.wait_requests(n + 2)[n:]) == ["EUR/USD", "USDJPY"]
    _wait(lambda: fix_feed.dead_letters.total == 2, "second dead letter")
    letter = fix_feed.dead_letters.recent[1]
    assert letter.reason.startswith("refused by quickfix: W") and "|372=W|" in letter.raw
    assert fix_feed.health.dead_letters["refused by quickfix"] == 1 and fix_feed.health.gaps == 2
    _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD") and _book_matches(sink, lp, "USDJPY", "USD/JPY"),
          "resync after the refused message")

    # the LP logs out: stale and reset; quickfix logs on again by itself and the feed re-subscribes
    n = len(lp.requests)
    lp.logout("end of session")
    _wait(lambda: fix_feed.health.disconnects == 1, "disconnect")

    def down_resets() -> set[str]:
        return {e.symbol for e in sink.snapshot() if isinstance(e, BookReset) and e.reason == "fix session down"}

    _wait(lambda: down_resets() == {"EUR/USD", "USD/JPY"}, "resets on the way down")
    assert fix_feed.health.last_logout == "end of session"
    assert {s.kind for s in lp.wait_requests(n + 3, timeout=20)[n:]} == {"1"}
    _wait(lambda: fix_feed.health.state == "connected" and fix_feed.health.reconnects == 1, "logon again")

    # the LP stops: the feed stays stale; it comes back when the LP does
    lp.stop()
    _wait(lambda: fix_feed.health.state == "stale", "stale after the LP stopped")
    time.sleep(1.5)  # more than ReconnectInterval: quickfix retries and fails meanwhile
    assert fix_feed.health.state == "stale"
    assert fix_feed.status().state == "stale" and fix_feed.status().reconnects == 1
    engine = _engine(sink.snapshot())
    book = engine.book("lp1", "EUR/USD")
    assert book is not None and not book.synced
    lp.update("EUR/USD", [("0", 109_950 * E5, 3 * SCALE)], send=False)  # the market moved meanwhile
    snapshots_before = sum(isinstance(e, BookSnapshot) for e in sink.snapshot())
    n = len(lp.requests)
    lp.start()
    _wait(lambda: fix_feed.health.reconnects == 2 and fix_feed.health.state == "connected", "reconnect", 30)
    lp.wait_requests(n + 3, timeout=20)
    _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD") and _book_matches(sink, lp, "USDJPY", "USD/JPY"),
          "books after the reconnect")
    assert sum(isinstance(e, BookSnapshot) for e in sink.snapshot()) >= snapshots_before + 2
    assert fix_feed.health.dead_letters == {"missing tag": 1, "refused by quickfix": 1}
    assert fix_feed.health.logons == 3 and fix_feed.health.disconnects == 2 and fix_feed.warm


def test_fix_feed_defaults_and_backpressure(lp: LiquidityProvider) -> None:
    """No data_dir (a temp dir, removed at the end), no file log; a slow sink and a one-event buffer:
    the quickfix thread waits for the loop, and every event still arrives in order."""
    from feeds.fix.session import FixFeed

    config = FixFeedConfig.from_spec(f"fix:host=127.0.0.1,port={lp.port},sender=MDS,target=LP,"
                                     f"symbols=EUR/USD,venue=lp1,reconnect=1")
    fix_feed = FixFeed(config, max_buffer=1)
    sink = CollectSink(delay=0.01)
    runner = FeedRunner(fix_feed, sink)
    data_dir: Path | None = None
    try:
        _wait(lambda: fix_feed.warm, "warm feed")
        data_dir = fix_feed.data_dir
        assert data_dir is not None and data_dir.is_dir() and not (data_dir / "log").exists()
        rng = random.Random(3)
        ids: list[str] = []
        for _ in range(40):
            ids += lp.update("EUR/USD", _random_round(rng, lp, "EUR/USD", 110_005 * E5),
                             [(110_005 * E5, SCALE, "1")])
        _wait(lambda: _book_matches(sink, lp, "EUR/USD", "EUR/USD"), "book equal to the LP's")
        _wait(lambda: sum(isinstance(e, Trade) for e in sink.snapshot()) == len(ids), "all trades")
        assert [e.trade_id for e in sink.snapshot() if isinstance(e, Trade)] == ids
        assert fix_feed.health.gaps == 0 and fix_feed.dead_letters.total == 0
    finally:
        runner.stop()
    assert fix_feed.health.state == "stopped" and data_dir is not None and not data_dir.exists()
