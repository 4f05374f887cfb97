"""HistData EURUSD ticks (2020-01-01, EST = UTC-5 fixed): 9,500 quotes with exact prices and UTC times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feeds.histdata.parser import NOMINAL_SIZE, HistDataParser, est_to_ns
from feeds.protocols import DeadLetter
from feeds.tardis.reader import read_lines
from server.engine.engine import Engine
from server.engine.events import Quote
from server.engine.numbers import SCALE, parse_fixed

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "fx"
FILE = DATA / "histdata_EURUSD_ticks_2020-01-01.csv"
needs_data = pytest.mark.skipif(not FILE.exists(), reason=f"shared real data missing: {FILE}")


def _ns(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int) -> int:
    """UTC wall time to ns, independently of the parser."""
    seconds = int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + ms * 1_000_000


def test_est_is_utc_minus_5_without_dst() -> None:
    assert est_to_ns("20200101 170000065") == _ns(2020, 1, 1, 22, 0, 0, 65)
    # July: still +5 h (no DST), not +4 h.
    assert est_to_ns("20200701 120000000") == _ns(2020, 7, 1, 17, 0, 0, 0)
    # Crossing midnight UTC.
    assert est_to_ns("20201231 230000999") == _ns(2021, 1, 1, 4, 0, 0, 999)


@needs_data
def test_real_file_exact_first_last_and_times() -> None:
    dead: list[DeadLetter] = []
    parser = HistDataParser("EUR/USD")
    quotes = list(parser.parse(read_lines(FILE), dead))
    assert dead == []
    assert len(quotes) == 9500 == parser.stats.events == parser.stats.lines
    assert quotes[0] == Quote("histdata", "EUR/USD", parse_fixed("1.121200"), SCALE, parse_fixed("1.121720"),
                              SCALE, _ns(2020, 1, 1, 22, 0, 0, 65), _ns(2020, 1, 1, 22, 0, 0, 65))
    assert quotes[0].bid_price == 1_121_200_000 and quotes[0].ask_price == 1_121_720_000
    last = quotes[-1]
    assert (last.bid_price, last.ask_price) == (1_121_300_000, 1_121_320_000)
    assert last.ts_event == last.ts_recv == _ns(2020, 1, 2, 4, 0, 52, 125)
    # Times never go backwards; sizes are the documented nominal 1 unit on both sides.
    assert all(a.ts_event <= b.ts_event for a, b in itertools.pairwise(quotes))
    assert {q.bid_size for q in quotes} == {q.ask_size for q in quotes} == {NOMINAL_SIZE}
    assert all(q.bid_price < q.ask_price for q in quotes)  # no crossed or locked tick in this file
    spreads = [q.ask_price - q.bid_price for q in quotes]
    # Exact spread statistics: 0.1 pip to 72 pips, total 0.46829 over 9,500 ticks.
    assert (min(spreads), max(spreads), sum(spreads)) == (10_000, 720_000, 468_290_000)
    # Through the engine: the book is the last tick, both sides present.
    engine = Engine()
    out: list[object] = []
    engine.apply_batch(quotes, out)
    book = engine.book("histdata", "EUR/USD")
    assert book is not None and book.synced
    assert book.top() == (1_121_300_000, SCALE, 1_121_320_000, SCALE)


def test_malformed_rows_become_dead_letters() -> None:
    lines = [
        "20200101 170000065,1.121200,1.121720,0\n",
        "\n",  # blank: skipped, counted
        "20200101 170000065,1.121200,1.121720\n",  # 3 cells
        "2020-01-01 17:00:00,1.1,1.2,0\n",  # wrong time layout
        "20200230 170000065,1.1,1.2,0\n",  # 30 Feb
        "20200101 246000065,1.1,1.2,0\n",  # hour 24
        "20200101 170000065,abc,1.2,0\n",  # bad bid
        "20200101 170000065,1.1,0,0\n",  # ask 0
        "20200101 170000065,1.1,1.2,x\n",  # bad volume
        "20200101 170000065,1.1,1.2,-1\n",  # negative volume
        "20200101 170000065,1.1234567891,1.2,0\n",  # 10 decimals
    ]
    dead: list[DeadLetter] = []
    parser = HistDataParser("EUR/USD")
    quotes = list(parser.parse(lines, dead))
    assert len(quotes) == 1
    assert len(dead) == 9 == parser.stats.dead_letters
    assert parser.stats.skipped["blank line"] == 1
    assert all(d.source == "histdata" and d.reason and not d.raw.endswith("\n") for d in dead)
    assert "4 cells" in dead[0].reason or "3 cells" in dead[0].reason
    assert "out of range" in dead[2].reason
    assert "more than 9 decimal places" in dead[-1].reason
