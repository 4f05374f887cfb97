"""LOBSTER AAPL 2012-06-21: L3 messages -> L2 events, compared with LOBSTER's own top 10 after each one.

What is compared: after message i (i = 1..998) the engine's book holds only levels the parser knows
exactly (see feeds/lobster/parser.py); those levels must equal the same number of best levels of
orderbook row i on each side, sizes included. With ``refill`` (the orderbook row extends knowledge
beyond the boundary, never overriding a known level) the engine must equal row i on all 10 levels of
both sides after the refill, for every row; before the refill, the message-derived levels must equal
the row's prefix.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from feeds.lobster.parser import LobsterParser
from feeds.lobster.reader import find_pair, read_lines
from feeds.protocols import DeadLetter
from server.engine.engine import Engine
from server.engine.events import BookDelta, Side, Trade

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "lobster_aapl_2012-06-21"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared real data missing: {DATA}")


def _files() -> tuple[list[str], list[str]]:
    msg, book = find_pair(DATA, "AAPL")
    return list(read_lines(msg)), list(read_lines(book))


def _run(refill: bool) -> dict[str, int]:
    msgs, rows = _files()
    parser = LobsterParser("AAPL", date(2012, 6, 21))
    engine = Engine()
    dead: list[DeadLetter] = []
    out: list[object] = []
    snap = parser.seed(msgs[0], rows[0], dead)
    assert snap is not None
    engine.apply(snap, out)
    figures = {"rows": 0, "prefix_ok": 0, "full_after_message": 0, "full_after_refill": 0,
               "min_known": 10, "trades": 0}
    for i in range(1, len(msgs)):
        events = parser.parse_message(msgs[i])
        engine.apply_batch(events, out)
        figures["trades"] += sum(1 for e in events if isinstance(e, Trade))
        true_bids, true_asks = parser.book_row(rows[i])
        book = engine.book("NASDAQ", "AAPL")
        assert book is not None
        bids, asks = book.bid_levels(10), book.ask_levels(10)
        figures["rows"] += 1
        assert bids == true_bids[:len(bids)], f"bids differ after message {i}: {msgs[i]}"
        assert asks == true_asks[:len(asks)], f"asks differ after message {i}: {msgs[i]}"
        figures["prefix_ok"] += 1
        figures["full_after_message"] += bids == true_bids and asks == true_asks
        figures["min_known"] = min(figures["min_known"], len(bids), len(asks))
        if refill:
            delta = parser.refill(rows[i], snap.ts_recv)
            if delta is not None:
                engine.apply(delta, out)
            bids, asks = book.bid_levels(10), book.ask_levels(10)
            assert (bids, asks) == (true_bids, true_asks), f"row {i} differs after refill"
            figures["full_after_refill"] += 1
    assert dead == []
    figures["beyond"] = parser.stats.skipped["beyond known depth"]
    return figures


@needs_data
def test_messages_only_known_prefix_matches_every_row() -> None:
    f = _run(refill=False)
    assert f["rows"] == f["prefix_ok"] == 998
    # Knowledge only shrinks without the orderbook file: 20 rows are fully known on both sides.
    assert f["full_after_message"] == 20
    assert f["beyond"] == 338
    assert f["trades"] == 98 + 61


@needs_data
def test_with_refill_every_row_matches_all_ten_levels() -> None:
    f = _run(refill=True)
    assert f["rows"] == f["prefix_ok"] == f["full_after_refill"] == 998
    # Before the refill, 680 rows match on all 10 levels from messages alone; in the other 318 one
    # side lost one level to an emptied level (its replacement, the 11th, is not in any message).
    assert f["full_after_message"] == 680
    assert f["min_known"] == 9
    # Every message lands within the visible 10 levels: LOBSTER's file omits deeper activity.
    assert f["beyond"] == 0


@needs_data
def test_times_prices_and_trades_are_exact() -> None:
    msgs, rows = _files()
    parser = LobsterParser("AAPL", date(2012, 6, 21))
    dead: list[DeadLetter] = []
    snap = parser.seed(msgs[0], rows[0], dead)
    assert snap is not None
    # 2012-06-21 is EDT (UTC-4): midnight = 04:00 UTC = 1340251200 s.
    assert snap.ts_event == snap.ts_recv == 1340251200_000000000 + 34200_004241176
    assert snap.asks[0] == (585_940_000_000, 200_000_000_000)  # 58.94 x 200
    assert snap.bids[0] == (585_330_000_000, 18_000_000_000)
    events = list(parser.parse(msgs[1:], dead))
    assert dead == []
    first = events[0]
    assert isinstance(first, BookDelta)
    # The add at 58.532 pushes the 10th bid (58.427) beyond the known depth: it is forgotten.
    assert first.bids == ((585_320_000_000, 18_000_000_000), (584_270_000_000, 0))
    assert first.ts_event == 1340251200_000000000 + 34200_004260640
    hidden = [e for e in events if isinstance(e, Trade)]
    assert len(hidden) == 98 + 61
    assert all(t.side in (Side.BUY, Side.SELL) for t in hidden)


def test_malformed_lobster_lines_go_to_dead_letters() -> None:
    parser = LobsterParser("AAPL", date(2012, 6, 21))
    dead: list[DeadLetter] = []
    assert list(parser.parse(["34200.1,1,1,10,5850000,1"], dead)) == []  # before the seed
    assert parser.seed("34200.0,1,1,1,5850000,1", "5860000,100,5850000,100", dead) is not None
    bad = [
        "34200.2,1,1,10,5850000",  # truncated row
        "34200.2,9,1,10,5850000,1",  # unknown type
        "34200.2,1,1,ten,5850000,1",  # wrong type
        "34200.2,3,1,500,5850000,1",  # deletes more than the level holds
        "abc,1,1,10,5850000,1",  # bad time
        "34200.2,1,1,10,5850000,0",  # bad direction
    ]
    assert list(parser.parse(bad, dead)) == []
    assert len(dead) == 1 + len(bad)
    assert all(d.reason and d.source == "lobster" for d in dead)
    assert "before the seed" in dead[0].reason
    assert "unknown event type" in dead[2].reason
