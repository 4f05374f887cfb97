"""Binance depth diffs + REST snapshot replay: Binance's sync procedure through the engine's seq rule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from feeds.cryptofeed_capture.binance import BinanceParser
from feeds.cryptofeed_capture.common import VenueBbo
from feeds.cryptofeed_capture.reader import merged_lines
from feeds.protocols import DeadLetter
from server.engine.book import BookStatus
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Side, Trade
from server.engine.numbers import parse_fixed

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
WS = DATA / "cryptofeed_ws_captures" / "BINANCE.ws.1.0"
HTTP = DATA / "cryptofeed_ws_captures" / "BINANCE.http.0.0"
needs_data = pytest.mark.skipif(not (WS.exists() and HTTP.exists()),
                                reason=f"shared real data missing: {WS.parent}")
SYMBOLS = ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")


class Replay:
    def __init__(self, lines: list[str]) -> None:
        self.parser = BinanceParser()
        self.engine = Engine()
        self.dead: list[DeadLetter] = []
        self.out: list[object] = []
        self.bbo_at_arrival: Counter[bool] = Counter()
        self.bbo_at_seq: Counter[bool] = Counter()
        pending: dict[str, list[VenueBbo]] = {}
        for line in lines:
            frame = self.parser.parse_line(line, self.dead)
            self.engine.apply_batch(frame.events, self.out)
            for q in frame.checks:
                book = self.engine.book(q.venue, q.symbol)
                if book is not None and book.synced:
                    self.bbo_at_arrival[_top_prices(book.top()) == (q.bid_price, q.ask_price)] += 1
                pending.setdefault(q.symbol, []).append(q)
            # A bookTicker with id u describes the book once the depth stream has reached u.
            for symbol, quotes in pending.items():
                book = self.engine.book("binance", symbol)
                if book is None or not book.synced:
                    continue
                while quotes and quotes[0].seq <= book.seq:
                    q = quotes.pop(0)
                    self.bbo_at_seq[_top_prices(book.top()) == (q.bid_price, q.ask_price)] += 1

    def deltas(self, symbol: str) -> int:
        return sum(1 for e in self.out if isinstance(e, BookDelta) and e.symbol == symbol)


def _top_prices(top: tuple[int, int, int, int]) -> tuple[int, int]:
    return top[0], top[2]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    if not (WS.exists() and HTTP.exists()):
        pytest.skip(f"shared real data missing: {WS.parent}")
    return list(merged_lines(WS, HTTP))


@needs_data
def test_sync_no_gaps_and_149_nknusdt_diffs(lines: list[str]) -> None:
    r = Replay(lines)
    assert r.dead == []
    assert r.engine.counters.sequence_gaps == {}
    assert r.deltas("NKNUSDT") == 149
    nkn = r.engine.book("binance", "NKNUSDT")
    assert nkn is not None and nkn.version - 1 == 149
    for symbol in SYMBOLS:
        book = r.engine.book("binance", symbol)
        assert book is not None and book.status is BookStatus.CONSISTENT, symbol
    snaps = {e.symbol: e for e in r.out if isinstance(e, BookSnapshot)}
    assert snaps["NKNUSDT"].seq == 499869752
    assert snaps["NKNUSDT"].ts_event == snaps["NKNUSDT"].ts_recv == 1633998512320639000
    assert snaps["NKNUSDT"].bids[0] == (parse_fixed("0.35210000"), parse_fixed("672"))
    # Diffs received before their symbol's snapshot were refused as unsynced; those already covered by
    # the snapshot (u <= lastUpdateId) were dropped as duplicates: Binance's buffering rule.
    assert r.engine.counters.unsynced_deltas == 4
    assert r.engine.counters.duplicate_deltas == 1
    first = next(e for e in r.out if isinstance(e, BookDelta) and e.symbol == "NKNUSDT")
    assert (first.first_seq, first.seq) == (499869753, 499869754)
    assert first.ts_event == 1633998512568_000_000
    trades = [e for e in r.out if isinstance(e, Trade)]
    assert len(trades) == 2
    assert trades[0].trade_id == "15683430" and trades[0].side is Side.BUY
    assert trades[0].price == parse_fixed("0.35280000") and trades[0].size == parse_fixed("58")


@needs_data
def test_top_of_book_agrees_with_book_ticker(lines: list[str]) -> None:
    r = Replay(lines)
    # Measured: 53 of 84 equal at arrival (bookTicker runs ahead of the 100 ms depth stream); 72 of 84
    # once the depth stream reached the ticker's update id (a 100 ms diff may already hold later ids).
    at_arrival = r.bbo_at_arrival
    at_seq = r.bbo_at_seq
    assert sum(at_arrival.values()) == 84
    assert at_arrival[True] >= 50
    assert sum(at_seq.values()) == 84
    assert at_seq[True] >= 72


@needs_data
def test_injected_gap_resyncs_only_that_symbol(lines: list[str]) -> None:
    drop = next(i for i, line in enumerate(lines)
                if '"U":499869768,"u":499869769' in line)  # an NKNUSDT diff after its snapshot
    r = Replay(lines[:drop] + lines[drop + 1:])
    assert r.dead == []
    assert r.engine.counters.sequence_gaps == {("binance", "NKNUSDT"): 1}
    nkn = r.engine.book("binance", "NKNUSDT")
    assert nkn is not None and nkn.status is BookStatus.AWAITING_RESYNC
    for symbol in ("BLZETH", "LRCBTC", "RUNEEUR"):
        book = r.engine.book("binance", symbol)
        assert book is not None and book.status is BookStatus.CONSISTENT, symbol


def test_malformed_binance_lines_go_to_dead_letters() -> None:
    parser = BinanceParser()
    dead: list[DeadLetter] = []
    bad = [
        '1.5: {"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":',  # truncated
        '1.5: {"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":null,"u":6,"b":[],"a":[]}}',
        '1.5: {"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":7,"u":6,"b":[],"a":[]}}',
        '1.5: {"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":5,"u":6,"b":[["x","1"]],'
        '"a":[]}}',
        '1.5: {"stream":"x@foo","data":{"e":"mystery"}}',
        '1.5: [1,2,3]',
        "https://api.binance.com/api/v3/depth?symbol=X&limit=5 -> 1.5: {\"lastUpdateId\":1,\"bids\":{}}",
        '1.5: {"stream":"x@aggTrade","data":{"e":"aggTrade","E":1,"s":"X","a":1,"p":"1","q":"1",'
        '"T":1,"m":"yes"}}',
    ]
    assert list(parser.parse(bad, dead)) == []
    assert len(dead) == len(bad)
    assert all(d.reason for d in dead)
    assert "bad JSON" in dead[0].reason
    assert "U is not an unsigned integer" in dead[1].reason
    assert "U 7 > u 6" in dead[2].reason
    assert "unknown message type" in dead[4].reason
