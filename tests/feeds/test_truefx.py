"""TrueFX USDJPY ticks (2013-01-01, UTC ms): 1,000 quotes, both file layouts, malformed rows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feeds.protocols import DeadLetter
from feeds.tardis.reader import read_lines
from feeds.truefx.parser import NOMINAL_SIZE, TrueFxParser
from server.engine.engine import Engine
from server.engine.events import Quote
from server.engine.numbers import SCALE

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "fx"
FILE = DATA / "truefx_USDJPY_ticks_2013-01-01.csv"
needs_data = pytest.mark.skipif(not FILE.exists(), reason=f"shared real data missing: {FILE}")


def _ns(year: int, month: int, day: int, hour: int, minute: int, second: int, ms: int) -> int:
    """UTC wall time to ns, independently of the parser."""
    seconds = int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + ms * 1_000_000


@needs_data
def test_real_file_exact() -> None:
    dead: list[DeadLetter] = []
    parser = TrueFxParser("USD/JPY")
    quotes = list(parser.parse(read_lines(FILE), dead))
    assert dead == []
    assert parser.layout == "header"
    assert len(quotes) == 1000 == parser.stats.events
    t0 = _ns(2013, 1, 1, 22, 0, 0, 295)
    assert quotes[0] == Quote("truefx", "USD/JPY", 86_655_000_000, SCALE, 86_728_000_000, SCALE, t0, t0)
    last = quotes[-1]
    assert (last.bid_price, last.ask_price) == (86_836_000_000, 86_854_000_000)
    assert last.ts_event == _ns(2013, 1, 1, 22, 35, 13, 494)
    assert all(a.ts_event <= b.ts_event for a, b in itertools.pairwise(quotes))
    assert {q.bid_size for q in quotes} == {NOMINAL_SIZE}
    engine = Engine()
    out: list[object] = []
    engine.apply_batch(quotes, out)
    book = engine.book("truefx", "USD/JPY")
    assert book is not None and book.top() == (86_836_000_000, SCALE, 86_854_000_000, SCALE)


def test_truefx_raw_layout_names_the_pair() -> None:
    dead: list[DeadLetter] = []
    parser = TrueFxParser()
    quotes = list(parser.parse(["USD/JPY,20130101 22:00:00.295,86.655,86.728\n",
                                "EUR/USD,20130101 22:00:01.5,1.31,1.3102\n"], dead))
    assert dead == [] and parser.layout == "raw"
    assert quotes[0] == Quote("truefx", "USD/JPY", 86_655_000_000, SCALE, 86_728_000_000, SCALE,
                              _ns(2013, 1, 1, 22, 0, 0, 295), _ns(2013, 1, 1, 22, 0, 0, 295))
    assert quotes[1].symbol == "EUR/USD" and quotes[1].ts_event == _ns(2013, 1, 1, 22, 0, 1, 500)


def test_malformed_rows_become_dead_letters() -> None:
    lines = [
        "timestamp,bid,ask\n",
        "2013-01-01 22:00:00.295000+00:00,86.655,86.728\n",
        "2013-01-01T22:00:00.300Z,86.655,86.728\n",  # Z and T: fine
        "2013-01-01 22:00:00.295000+01:00,86.655,86.728\n",  # not UTC
        "2013-01-01 22:00:00.295000+00:00,86.655\n",  # 2 cells
        "yesterday,86.655,86.728\n",  # bad time
        "2013-01-01 22:00:00.295000+00:00,-1,86.728\n",  # negative bid
        "2013-01-01 22:00:00.295000+00:00,86.655,eight\n",  # bad ask
    ]
    dead: list[DeadLetter] = []
    parser = TrueFxParser("USD/JPY")
    quotes = list(parser.parse(lines, dead))
    assert len(quotes) == 2
    assert [d.reason.split(" ")[0] for d in dead] == ["time", "2", "bad", "bid", "ask:"]
    assert all(d.source == "truefx" for d in dead)
    # A header-layout file without a symbol cannot name its quotes.
    dead2: list[DeadLetter] = []
    assert list(TrueFxParser().parse(lines[:2], dead2)) == []
    assert "no symbol" in dead2[0].reason
