"""CcxtParser: exact numbers from ccxt floats, top-N snapshot/delta emission, and fuzzing (hypothesis)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.ccxt.parser import CcxtParseError, CcxtParser, to_fixed
from feeds.protocols import DeadLetter
from server.engine.events import BookDelta, BookSnapshot, Quote, Side, Trade
from tests.feeds.ccxt.helpers import Books

TS = 1_700_000_000_000_000_000


@pytest.mark.parametrize(("value", "expected"), [
    (0.3513, 351_300_000),
    (float("0.35130000"), 351_300_000),
    (65013.1, 65_013_100_000_000),
    (1e-05, 10_000),
    (0.000000001, 1),
    (7, 7_000_000_000),
    ("0.10000000", 100_000_000),
    (Decimal("2.5"), 2_500_000_000),
    (1e9, 10**18),
    (9223372036.0, 9_223_372_036_000_000_000),
])
def test_to_fixed_is_exact(value: Any, expected: int) -> None:
    assert to_fixed(value, "x") == expected


@pytest.mark.parametrize("value", [0.1 + 0.2, 1e-10, float("nan"), float("inf"), None, True, "abc", [1],
                                   1e16, 9999999997.0, -1e10, 10**10])  # the last four: beyond sint64 at 1e-9
def test_to_fixed_refuses(value: Any) -> None:
    with pytest.raises(CcxtParseError):
        to_fixed(value, "x")


@given(st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("99999999"), places=9,
                   allow_nan=False, allow_infinity=False))
def test_float_of_a_venue_decimal_comes_back_exact(d: Decimal) -> None:
    # ≤ 15 significant digits: every such decimal survives the double and repr
    if len(d.normalize().as_tuple().digits) <= 15:
        assert to_fixed(float(d), "x") == int(d.scaleb(9))


def book(bids: list[list[float]], asks: list[list[float]], ts: int | None = 1_700_000_000_123) -> dict[str, Any]:
    return {"symbol": "BTC/USDT", "bids": bids, "asks": asks, "timestamp": ts, "nonce": 5}


def test_first_book_is_a_snapshot_then_deltas_with_contiguous_seq() -> None:
    parser = CcxtParser("binance", depth=2)
    dead: list[DeadLetter] = []
    snap = parser.book("BTC/USDT", book([[100.5, 1.0], [100.4, 2.0], [100.3, 9.0]], [[100.6, 3.0]]), TS, dead)
    assert snap == BookSnapshot("binance", "BTC/USDT", 1, ((100_500_000_000, 1_000_000_000),
                                                          (100_400_000_000, 2_000_000_000)),
                                ((100_600_000_000, 3_000_000_000),), 1_700_000_000_123_000_000, TS)
    assert parser.book("BTC/USDT", book([[100.5, 1.0], [100.4, 2.0]], [[100.6, 3.0]]), TS, dead) is None
    delta = parser.book("BTC/USDT", book([[100.55, 0.5], [100.5, 1.0]], [[100.6, 2.5]], None), TS + 1, dead)
    # 100.55 enters, 100.4 is pushed out of the top 2, the ask size changes; no venue time -> ts_recv
    assert delta == BookDelta("binance", "BTC/USDT", 2, 2, ((100_550_000_000, 500_000_000), (100_400_000_000, 0)),
                              ((100_600_000_000, 2_500_000_000),), TS + 1, TS + 1)
    reset = parser.reset("BTC/USDT", "checksum", TS + 2)
    assert reset.symbol == "BTC/USDT" and reset.reason == "checksum"
    again = parser.book("BTC/USDT", book([[100.5, 1.0]], []), TS + 3, dead)
    assert isinstance(again, BookSnapshot) and again.seq == 3
    assert not dead


def test_trades_and_ticker() -> None:
    parser = CcxtParser("okx")
    dead: list[DeadLetter] = []
    trades = parser.trades("BTC/USDT", [
        {"id": "42", "price": 65013.1, "amount": 0.00123, "side": "sell", "timestamp": 1_700_000_000_001},
        {"id": None, "price": 65013.2, "amount": 1, "side": None, "timestamp": None},
        {"id": "43", "price": -1.0, "amount": 1.0, "side": "buy", "timestamp": 1},
    ], TS, dead)
    assert trades == [Trade("okx", "BTC/USDT", "42", 65_013_100_000_000, 1_230_000, Side.SELL,
                            1_700_000_000_001_000_000, TS),
                      Trade("okx", "BTC/USDT", "", 65_013_200_000_000, 1_000_000_000, Side.UNSPECIFIED, TS, TS)]
    assert len(dead) == 1 and "not positive" in dead[0].reason and dead[0].source == "ccxt:okx"
    quote = parser.ticker("BTC/USDT", {"bid": 1.5, "bidVolume": 2.0, "ask": 1.6, "askVolume": 3.0,
                                       "timestamp": 1_700_000_000_000}, TS, dead)
    assert quote == Quote("okx", "BTC/USDT", 1_500_000_000, 2_000_000_000, 1_600_000_000, 3_000_000_000,
                          1_700_000_000_000_000_000, TS)
    assert parser.ticker("BTC/USDT", {"bid": None, "ask": 1.6}, TS, dead) is None
    assert parser.ticker("BTC/USDT", {"bid": 1.5, "ask": 1.6}, TS, dead) is None
    assert parser.stats.skipped == {"ticker without bid/ask": 1, "ticker without bid/ask sizes": 1}
    assert len(dead) == 1


@pytest.mark.parametrize("bad", [
    None, 5, "book", {"bids": None, "asks": []}, {"bids": [[1.0]], "asks": []},
    {"bids": [[1.0, 1.0], [2.0, 1.0]], "asks": []},  # bids not descending
    {"bids": [], "asks": [[2.0, 1.0], [1.0, 1.0]]},  # asks not ascending
    {"bids": [[1.0, 0.0]], "asks": []}, {"bids": [[float("nan"), 1.0]], "asks": []},
    {"bids": [], "asks": [], "timestamp": "yesterday"}, {"bids": [], "asks": [], "timestamp": -5},
])
def test_bad_books_are_dead_letters(bad: Any) -> None:
    parser = CcxtParser("kraken")
    dead: list[DeadLetter] = []
    assert parser.book("XMR/USD", bad, TS, dead) is None
    assert len(dead) == 1 and dead[0].reason and dead[0].ts_recv == TS


# -- fuzzing ----------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                     st.text(max_size=12), st.decimals(allow_nan=True))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                       max_leaves=20)
_level = st.one_of(st.lists(_scalars, max_size=3),
                   st.tuples(st.floats(min_value=0, max_value=1e9), st.floats(min_value=0, max_value=1e9)), _values)
_book = st.one_of(_values, st.fixed_dictionaries({"bids": st.lists(_level, max_size=5),
                                                  "asks": st.lists(_level, max_size=5)},
                                                 optional={"timestamp": _scalars, "nonce": _scalars}))
_trade = st.one_of(_values, st.fixed_dictionaries({}, optional={
    "id": _scalars, "price": _scalars, "amount": _scalars, "side": _scalars, "timestamp": _scalars}))
_ticker = st.one_of(_values, st.fixed_dictionaries({}, optional={
    "bid": _scalars, "ask": _scalars, "bidVolume": _scalars, "askVolume": _scalars, "timestamp": _scalars}))


@settings(max_examples=300, deadline=None)
@given(st.lists(_book, max_size=6))
def test_fuzz_books(books: list[Any]) -> None:
    parser = CcxtParser("binance", depth=3)
    dead: list[DeadLetter] = []
    events = []
    for i, item in enumerate(books):
        before = len(dead)
        event = parser.book("BTC/USDT", item, TS + i, dead)
        assert event is None or isinstance(event, BookSnapshot | BookDelta)
        assert len(dead) - before <= 1
        if event is None and len(dead) == before:
            assert parser.stats.skipped["book top unchanged"] > 0
        if event is not None:
            events.append(event)
            levels = event.bids + event.asks
            assert all(isinstance(p, int) and isinstance(s, int) and p > 0 and s >= 0 for p, s in levels)
    Books(strict=True).apply(events)  # contiguous seqs, snapshot first
    assert all(d.reason and d.source == "ccxt:binance" and len(d.raw) <= 4000 for d in dead)
    assert parser.stats.dead_letters == len(dead)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_values, st.lists(_trade, max_size=5)))
def test_fuzz_trades(trades: Any) -> None:
    parser = CcxtParser("binance")
    dead: list[DeadLetter] = []
    out = parser.trades("BTC/USDT", trades, TS, dead)
    assert all(isinstance(t, Trade) and t.price > 0 and t.size > 0 for t in out)
    if isinstance(trades, list):
        assert len(out) + len(dead) == len(trades)  # every trade is an event or a dead letter
    else:
        assert len(dead) == 1 and not out


@settings(max_examples=300, deadline=None)
@given(_ticker)
def test_fuzz_ticker(ticker: Any) -> None:
    parser = CcxtParser("binance")
    dead: list[DeadLetter] = []
    quote = parser.ticker("BTC/USDT", ticker, TS, dead)
    skipped = sum(parser.stats.skipped.values())
    assert (quote is not None) + len(dead) + skipped == 1  # each ticker has exactly one fate
