"""Integration tests of the Engine's wiring: trades, candles, ticker, alerts, pricing, quality, order."""

from __future__ import annotations

from fractions import Fraction
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.alerts import Alert, AlertCondition, AlertSource, AlertTrigger
from server.engine.book import BookStatus
from server.engine.candles import Candle, CandleConfig, Interval
from server.engine.engine import Engine, EngineConfig
from server.engine.events import (
    NO_SEQUENCE,
    BookDelta,
    BookSnapshot,
    ClockTick,
    Event,
    Level,
    Quote,
    Side,
    Trade,
)
from server.engine.numbers import SCALE, div_round
from server.engine.pricing import (
    FundingConfig,
    FundingRate,
    IndexComponent,
    IndexConfig,
    IndexPrice,
    MarkConfig,
    MarkPrice,
    premium_index,
)
from server.engine.quality import QualityFlag, QualityKind
from server.engine.updates import BookStatusChange, Nbbo

SEC = 1_000_000_000
T0 = 1_700_000_040 * SEC  # minute-aligned (and so second-aligned)
assert T0 % (60 * SEC) == 0
SYM = "BTC/USD"
PERP = "BTC-PERP"
SMALL_CANDLES = CandleConfig(intervals=(Interval.S1, Interval.M1))
T = TypeVar("T")


def px(units: int | str) -> int:
    """A price or size at 1e-9 from whole units or a decimal string."""
    return int(Fraction(str(units)) * SCALE)


def trade(venue: str, tid: str, price: int, size: int, ts: int, symbol: str = SYM,
          side: Side = Side.BUY) -> Trade:
    return Trade(venue, symbol, tid, price, size, side, ts, ts)


def snap(venue: str, bid: int, ask: int, ts: int, symbol: str = SYM, seq: int = NO_SEQUENCE,
         size: int = SCALE) -> BookSnapshot:
    return BookSnapshot(venue, symbol, seq, ((bid, size),), ((ask, size),), ts, ts)


def of_type(out: list[object], kind: type[T]) -> list[T]:
    return [u for u in out if isinstance(u, kind)]


def flags(out: list[object], kind: QualityKind) -> list[QualityFlag]:
    return [f for f in of_type(out, QualityFlag) if f.kind is kind]


def quiet_config(**kw: object) -> EngineConfig:
    """Small candles, no spike detection (tests that want it pass their own)."""
    base: dict[str, object] = {"candles": SMALL_CANDLES, "trade_spikes": None, "quote_spikes": None}
    base.update(kw)
    return EngineConfig(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ trades


def test_duplicate_trade_dropped_counted_and_flagged() -> None:
    engine = Engine(quiet_config())
    out: list[object] = []
    t1 = trade("a", "1", px(100), px(1), T0)
    dup = trade("a", "1", px(999), px(5), T0 + 1)
    engine.apply(t1, out)
    out.clear()
    engine.apply(dup, out)
    assert dup not in out and not of_type(out, Trade)
    (flag,) = of_type(out, QualityFlag)
    assert flag.kind is QualityKind.DUPLICATE_TRADE
    assert (flag.venue, flag.symbol, flag.value) == ("a", SYM, px(999))
    assert engine.counters.duplicate_trades == 1
    assert engine.quality.get(QualityKind.DUPLICATE_TRADE, "a", SYM) == 1
    assert engine.recent_trades(SYM) == [t1]
    # candles unaffected by the duplicate
    (cur,) = engine.candles("a", SYM, Interval.M1)
    assert cur.volume == px(1) and cur.high == px(100)


def test_same_trade_id_on_other_venue_or_symbol_is_not_duplicate() -> None:
    engine = Engine(quiet_config())
    out: list[object] = []
    events = [trade("a", "7", px(100), px(1), T0), trade("b", "7", px(100), px(1), T0 + 1),
              trade("a", "7", px(100), px(1), T0 + 2, symbol="ETH/USD")]
    engine.apply_batch(events, out)
    assert of_type(out, Trade) == events
    assert not of_type(out, QualityFlag)
    assert engine.counters.duplicate_trades == 0
    # empty ids are never deduplicated
    engine.apply_batch([trade("a", "", px(100), px(1), T0 + 3), trade("a", "", px(100), px(1), T0 + 4)], out)
    assert engine.counters.duplicate_trades == 0
    assert len(engine.recent_trades(SYM, venue="a")) == 3


trade_stream = st.lists(
    st.tuples(st.sampled_from(("a", "b")), st.sampled_from((SYM, "ETH/USD")),
              st.sampled_from(("", "1", "2", "3", "4", "5", "6")), st.integers(1, 5)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(trade_stream, st.integers(1, 8), st.integers(1, 4), st.integers(0, 10))
def test_recent_trades_and_dedupe_match_list_model(
    stream: list[tuple[str, str, str, int]], ring: int, window: int, limit: int
) -> None:
    """Dedupe: an id among the last ``window`` accepted ids of its (venue, symbol) is a duplicate; one not
    among the last ``2 * window`` (the most remembered, see ``_TradeState``) is new; in between either."""
    engine = Engine(quiet_config(trade_ring_size=ring, dedupe_window=window))
    out: list[object] = []
    accepted: list[Trade] = []
    history: dict[tuple[str, str], list[str]] = {}
    dups = 0
    for i, (venue, symbol, tid, price) in enumerate(stream):
        t = trade(venue, tid, px(price), px(1), T0 + i * SEC, symbol=symbol)
        mark = len(out)
        engine.apply(t, out)
        emitted = t in out[mark:]
        ids = history.setdefault((venue, symbol), [])
        if tid and tid in ids[-window:]:
            assert not emitted
        elif not tid or tid not in ids[-2 * window:]:
            assert emitted
        if not emitted:
            dups += 1
            continue
        if tid:
            ids.append(tid)
        accepted.append(t)
    assert engine.counters.duplicate_trades == dups
    assert len(flags(out, QualityKind.DUPLICATE_TRADE)) == dups
    assert of_type(out, Trade) == accepted
    for symbol in (SYM, "ETH/USD"):
        kept = [t for t in accepted if t.symbol == symbol][-ring:]
        for venue in ("", "a", "b"):
            picked = [t for t in kept if not venue or t.venue == venue]
            expected = picked[-limit:] if limit else []
            assert engine.recent_trades(symbol, limit=limit, venue=venue) == expected


def test_dedupe_memory_is_bounded() -> None:
    engine = Engine(quiet_config(dedupe_window=2))
    out: list[object] = []
    for i in range(10):
        engine.apply(trade("a", str(i), px(100), px(1), T0 + i), out)
    engine.apply_batch([trade("a", "9", px(100), px(1), T0 + 20),
                        trade("a", "8", px(100), px(1), T0 + 21)], out)
    assert engine.counters.duplicate_trades == 2  # the last `window` ids are remembered
    old = trade("a", "0", px(100), px(1), T0 + 22)
    engine.apply(old, out)  # long forgotten: accepted again
    assert out[-1] == old and engine.counters.duplicate_trades == 2


# ----------------------------------------------------------------------------------------- candles


def test_tick_closes_candles_after_the_delay() -> None:
    delay = 2 * SEC
    engine = Engine(quiet_config(candle_close_delay_ns=delay))
    out: list[object] = []
    engine.apply_batch([trade("a", "1", px(100), px("0.5"), T0 + SEC // 2),
                        trade("a", "2", px(102), px("0.25"), T0 + SEC // 2 + 1)], out)
    assert not of_type(out, Candle)
    # the S1 period [T0, T0+1s) ends at T0+1s: a tick at T closes it once T - delay >= T0 + 1s
    engine.apply(ClockTick(T0 + SEC + delay - 1), out)
    assert not of_type(out, Candle)
    engine.apply(ClockTick(T0 + SEC + delay), out)
    (c,) = of_type(out, Candle)
    assert c.closed and not c.correction and c.interval is Interval.S1
    assert (c.open_time, c.close_time) == (T0, T0 + SEC)
    assert (c.open, c.high, c.low, c.close) == (px(100), px(102), px(100), px(102))
    assert c.volume == px("0.75") and c.trade_count == 2
    assert c.quote_volume == px(100) * px("0.5") + px(102) * px("0.25")
    # the minute is still in progress
    (m,) = engine.candles("a", SYM, Interval.M1)
    assert not m.closed and m.open_time == T0 and m.volume == px("0.75")
    # closing the minute emits the closed M1 candle
    out.clear()
    engine.apply(ClockTick(T0 + 60 * SEC + delay), out)
    (m,) = of_type(out, Candle)
    assert m.closed and m.interval is Interval.M1 and m.volume == px("0.75")
    assert engine.candles("a", SYM, Interval.M1) == [m]


def test_candles_query_returns_closed_then_in_progress() -> None:
    engine = Engine(quiet_config(candle_close_delay_ns=0))
    out: list[object] = []
    for i in range(5):
        engine.apply(trade("a", str(i), px(100 + i), px(1), T0 + i * SEC + 1), out)
    closed = of_type(out, Candle)
    assert [c.open_time for c in closed] == [T0 + i * SEC for i in range(4)]
    assert all(c.closed and c.interval is Interval.S1 for c in closed)
    got = engine.candles("a", SYM, Interval.S1)
    assert got[:4] == closed
    assert not got[4].closed and got[4].open_time == T0 + 4 * SEC and got[4].close == px(104)
    assert engine.candles("a", SYM, Interval.S1, limit=2) == got[-2:]
    assert engine.candles("a", SYM, Interval.S1, start_ns=T0 + SEC, end_ns=T0 + 3 * SEC) == got[1:3]
    assert engine.candles("a", SYM, Interval.S1, start_ns=T0 + 3 * SEC) == got[3:]
    assert engine.candles("a", SYM, Interval.S1, start_ns=T0, limit=2) == got[:2]
    assert engine.candles("b", SYM, Interval.S1) == []
    with pytest.raises(KeyError):
        engine.candles("a", SYM, Interval.H1)


def test_late_trade_flagged_kept_in_tape_not_in_candles() -> None:
    grace = 5 * SEC
    engine = Engine(quiet_config(candles=CandleConfig(intervals=(Interval.S1, Interval.M1), grace_ns=grace),
                                 candle_close_delay_ns=0))
    out: list[object] = []
    engine.apply(trade("a", "1", px(100), px(1), T0 + 30 * SEC), out)
    within = trade("a", "2", px(90), px(2), T0 + 30 * SEC - grace)
    late = trade("a", "3", px(80), px(4), T0 + 30 * SEC - grace - 1)
    out.clear()
    engine.apply(within, out)
    assert not flags(out, QualityKind.LATE_TRADE)
    engine.apply(late, out)
    (flag,) = flags(out, QualityKind.LATE_TRADE)
    assert flag.value == px(80) and flag.reference == T0 + 30 * SEC
    assert of_type(out, Trade) == [within, late]
    assert engine.recent_trades(SYM)[-1] == late
    assert engine.quality.get(QualityKind.LATE_TRADE, "a", SYM) == 1
    (m,) = engine.candles("a", SYM, Interval.M1)
    assert m.volume == px(3) and m.low == px(90)


def test_tick_watermark_makes_trades_late() -> None:
    grace = 5 * SEC
    delay = 2 * SEC
    cfg = quiet_config(candles=CandleConfig(intervals=(Interval.S1, Interval.M1), grace_ns=grace),
                       candle_close_delay_ns=delay)
    engine = Engine(cfg)
    out: list[object] = []
    engine.apply(trade("a", "1", px(100), px(1), T0), out)
    engine.apply(ClockTick(T0 + 20 * SEC), out)  # candle watermark: T0 + 18 s
    out.clear()
    late = trade("a", "2", px(101), px(1), T0 + 18 * SEC - grace - 1)
    engine.apply(late, out)
    assert len(flags(out, QualityKind.LATE_TRADE)) == 1
    assert late in out and engine.recent_trades(SYM)[-1] == late


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4 * SEC - 1), st.integers(1, 10**12), st.integers(1, 10**13),
                          st.sampled_from(list(Side))), min_size=1, max_size=40))
def test_candle_volumes_are_exact_sums(rows: list[tuple[int, int, int, Side]]) -> None:
    engine = Engine(quiet_config(candle_close_delay_ns=0))
    out: list[object] = []
    rows = sorted(rows, key=lambda r: r[0])
    for i, (dt, price, size, side) in enumerate(rows):
        engine.apply(trade("a", str(i), price, size, T0 + dt, side=side), out)
    engine.apply(ClockTick(T0 + 2 * 60 * SEC), out)
    closed = of_type(out, Candle)
    assert all(c.closed and not c.correction for c in closed)
    by_second: dict[int, list[tuple[int, int, int, Side]]] = {}
    for r in rows:
        by_second.setdefault(r[0] // SEC, []).append(r)
    s1 = [c for c in closed if c.interval is Interval.S1]
    assert [c.open_time for c in s1] == [T0 + s * SEC for s in sorted(by_second)]
    for c in s1:
        grp = by_second[(c.open_time - T0) // SEC]
        assert c.volume == sum(r[2] for r in grp)
        assert c.quote_volume == sum(r[1] * r[2] for r in grp)
        assert c.buy_volume == sum(r[2] for r in grp if r[3] is Side.BUY)
        assert c.sell_volume == sum(r[2] for r in grp if r[3] is Side.SELL)
        assert (c.open, c.close) == (grp[0][1], grp[-1][1])
        assert (c.high, c.low) == (max(r[1] for r in grp), min(r[1] for r in grp))
        assert c.trade_count == len(grp)
    (m1,) = [c for c in closed if c.interval is Interval.M1]
    assert m1.volume == sum(r[2] for r in rows)
    assert m1.quote_volume == sum(r[1] * r[2] for r in rows)
    assert m1.trade_count == len(rows)


# ------------------------------------------------------------------------------------------ ticker


def test_ticker_after_trades_with_venue_best_bid_ask() -> None:
    engine = Engine(quiet_config())
    out: list[object] = []
    assert engine.ticker("a", SYM) is None
    prices = [px(100), px(105), px(98), px(101)]
    sizes = [px("0.5"), px(2), px("1.25"), px(1)]
    for i, (p, s) in enumerate(zip(prices, sizes, strict=True)):
        engine.apply(trade("a", str(i), p, s, T0 + i * 20 * SEC), out)  # spans two minutes
    engine.apply(trade("b", "x", px(500), px(9), T0), out)  # another venue: not in a's ticker
    engine.apply(snap("a", px("100.5"), px("101.5"), T0 + 61 * SEC), out)
    engine.apply(snap("b", px(499), px(501), T0 + 61 * SEC), out)
    t = engine.ticker("a", SYM)
    assert t is not None
    assert (t.venue, t.symbol) == ("a", SYM)
    assert (t.open, t.high, t.low, t.last) == (px(100), px(105), px(98), px(101))
    assert t.volume == sum(sizes) and t.trade_count == 4
    assert t.quote_volume == sum(p * s for p, s in zip(prices, sizes, strict=True))
    assert t.change == px(1)
    assert t.change_pct == SCALE  # +1%
    assert (t.best_bid, t.best_ask) == (px("100.5"), px("101.5"))
    tb = engine.ticker("b", SYM)
    assert tb is not None and (tb.best_bid, tb.best_ask, tb.last) == (px(499), px(501), px(500))
    engine.apply(trade("c", "1", px(7), px(1), T0), out)  # no book: 0, 0
    tc = engine.ticker("c", SYM)
    assert tc is not None and (tc.best_bid, tc.best_ask) == (0, 0)


def test_ticker_none_without_m1() -> None:
    engine = Engine(quiet_config(candles=CandleConfig(intervals=(Interval.S1,))))
    engine.apply(trade("a", "1", px(100), px(1), T0), [])
    assert engine.ticker("a", SYM) is None


# ------------------------------------------------------------------------------------------ alerts


def test_price_above_last_trade_fires_exactly_once() -> None:
    engine = Engine(quiet_config())
    alert = Alert("up", SYM, AlertCondition.PRICE_ABOVE, px(101), AlertSource.LAST_TRADE)
    engine.add_alert(alert)
    engine.add_alert(Alert("other", "ETH/USD", AlertCondition.PRICE_ABOVE, 1, AlertSource.LAST_TRADE))
    out: list[object] = []
    engine.apply(trade("a", "1", px(100), px(1), T0), out)
    assert not of_type(out, AlertTrigger)
    t = trade("a", "2", px(101), px(1), T0 + 1)
    engine.apply(t, out)
    engine.apply_batch([trade("a", "3", px(102), px(1), T0 + 2), trade("b", "4", px(103), px(1), T0 + 3)],
                       out)
    (trig,) = of_type(out, AlertTrigger)
    assert trig.alert == alert and trig.price == px(101) and trig.ts == T0 + 1
    assert out.index(trig) == out.index(t) + 1  # right after the trade that crossed
    assert engine.alerts.get("up") is None
    assert engine.remove_alert("up") is False
    assert [a.alert_id for a in engine.alerts.list()] == ["other"]


def test_venue_specific_alert_only_fires_on_that_venue() -> None:
    engine = Engine(quiet_config())
    engine.add_alert(Alert("v", SYM, AlertCondition.PRICE_ABOVE, px(100), AlertSource.LAST_TRADE, venue="b"))
    out: list[object] = []
    engine.apply(trade("a", "1", px(200), px(1), T0), out)
    assert not of_type(out, AlertTrigger)
    engine.apply(trade("b", "1", px(100), px(1), T0 + 1), out)
    (trig,) = of_type(out, AlertTrigger)
    assert trig.alert.alert_id == "v"


def test_price_below_nbbo_mid_fires_on_book_update() -> None:
    engine = Engine(quiet_config())
    alert = Alert("down", SYM, AlertCondition.PRICE_BELOW, px(99), AlertSource.NBBO_MID)
    engine.add_alert(alert)
    out: list[object] = []
    engine.apply(snap("a", px(100), px(102), T0, seq=1), out)  # mid 101
    engine.apply(trade("a", "1", px(50), px(1), T0), out)  # a trade is not the NBBO source
    assert not of_type(out, AlertTrigger)
    delta = BookDelta("a", SYM, 2, 2, ((px(100), 0), (px(97), SCALE)), ((px(102), 0), (px(99), SCALE)),
                      T0 + 1, T0 + 1)
    engine.apply(delta, out)
    (trig,) = of_type(out, AlertTrigger)
    assert trig.alert == alert and trig.price == px(98)
    nbbo = of_type(out, Nbbo)[-1]
    assert out.index(trig) == out.index(nbbo) + 1
    engine.apply(BookDelta("a", SYM, 3, 3, ((px(90), SCALE),), (), T0 + 2, T0 + 2), out)
    assert len(of_type(out, AlertTrigger)) == 1


def test_change_pct_above_fires_from_ticker_change() -> None:
    engine = Engine(quiet_config())
    alert = Alert("pct", SYM, AlertCondition.CHANGE_PCT_ABOVE, 2_500_000_000, AlertSource.LAST_TRADE)
    engine.add_alert(alert)
    out: list[object] = []
    engine.apply_batch([trade("a", "1", px(100), px(1), T0), trade("a", "2", px("102.4"), px(1), T0 + SEC)],
                       out)
    assert not of_type(out, AlertTrigger)
    engine.apply(trade("a", "3", px("102.5"), px(1), T0 + 2 * SEC), out)
    (trig,) = of_type(out, AlertTrigger)
    assert trig.alert == alert and trig.change_pct == 2_500_000_000 and trig.price == px("102.5")
    t = engine.ticker("a", SYM)
    assert t is not None and t.change_pct == 2_500_000_000


def test_remove_alert_and_other_symbols_never_fire() -> None:
    engine = Engine(quiet_config())
    engine.add_alert(Alert("x", SYM, AlertCondition.PRICE_ABOVE, px(100), AlertSource.LAST_TRADE))
    engine.add_alert(Alert("eth", "ETH/USD", AlertCondition.PRICE_BELOW, px(10**6), AlertSource.NBBO_MID))
    engine.add_alert(Alert("eth2", "ETH/USD", AlertCondition.PRICE_ABOVE, 1, AlertSource.LAST_TRADE))
    assert engine.remove_alert("x") is True
    assert engine.remove_alert("x") is False
    out: list[object] = []
    engine.apply_batch([trade("a", "1", px(200), px(1), T0), snap("a", px(1), px(2), T0)], out)
    assert not of_type(out, AlertTrigger)
    assert {a.alert_id for a in engine.alerts.list()} == {"eth", "eth2"}
    with pytest.raises(ValueError, match="duplicate"):
        engine.add_alert(Alert("eth", SYM, AlertCondition.PRICE_ABOVE, 1, AlertSource.LAST_TRADE))


# ----------------------------------------------------------------------------------------- pricing

WEIGHTS = {"a": 1, "b": 2, "c": 3}
STALENESS = 10 * SEC


def pricing_config(**kw: object) -> EngineConfig:
    index = IndexConfig(symbol="BTC-INDEX",
                        components=tuple(IndexComponent(v, SYM, w) for v, w in WEIGHTS.items()),
                        max_staleness_ns=STALENESS, outlier_band=500_000_000)
    return quiet_config(indices=(index,), marks=(MarkConfig(symbol=PERP, index_symbol="BTC-INDEX"),),
                        funding=(FundingConfig(symbol=PERP),), **kw)


def round_half_even(x: Fraction) -> int:
    return div_round(x.numerator, x.denominator)


def expected_index(books: dict[str, tuple[int, int]]) -> int:
    num = sum((WEIGHTS[v] * Fraction(b + a, 2) for v, (b, a) in books.items()), Fraction(0))
    den = sum(WEIGHTS[v] for v in books)
    return round_half_even(num / den)


def test_tick_emits_index_mark_funding() -> None:
    engine = Engine(pricing_config())
    books = {"a": (px(100), px(102)), "b": (px(101), px(103)), "c": (px("100.5"), px("101.5"))}
    out: list[object] = []
    for v, (b, a) in books.items():
        engine.apply(snap(v, b, a, T0), out)
    pb, pa = px(104), px(106)
    engine.apply(snap("x", pb, pa, T0, symbol=PERP), out)
    assert not of_type(out, IndexPrice)
    out.clear()
    engine.apply(ClockTick(T0 + SEC), out)
    (index,) = of_type(out, IndexPrice)
    want = expected_index(books)
    assert index.price == want and index.ts == T0 + SEC and index.symbol == "BTC-INDEX"
    assert all(s.included for s in index.components)
    (mark,) = of_type(out, MarkPrice)
    premium = round_half_even(Fraction(pb + pa, 2) - want)
    assert (mark.symbol, mark.index_price, mark.premium_ema, mark.mark_price) == (PERP, want, premium,
                                                                                want + premium)
    rates = of_type(out, FundingRate)
    assert len(rates) == 1
    rate = rates[0]
    cfg = FundingConfig(symbol=PERP)
    expected_rate = max(-cfg.clamp, min(cfg.clamp, premium_index(want, pb, pa) + cfg.interest_rate))
    assert rate.symbol == PERP and rate.rate == expected_rate
    assert rate.next_funding_time % cfg.interval_ns == 0 and rate.next_funding_time > T0
    assert out.index(index) < out.index(mark) < out.index(rate)
    assert engine.index_price("BTC-INDEX") == index
    assert engine.mark_price(PERP) == mark
    assert engine.funding_rate(PERP) == rate


def test_index_of_half_nano_mids_is_rounded_once() -> None:
    engine = Engine(pricing_config())
    books = {v: (px(100) + 1, px(100) + 2) for v in WEIGHTS}  # every mid is 100 + 1.5e-9
    out: list[object] = []
    for v, (b, a) in books.items():
        engine.apply(snap(v, b, a, T0), out)
    engine.apply(ClockTick(T0 + SEC), out)
    (index,) = of_type(out, IndexPrice)
    assert index.price == expected_index(books) == px(100) + 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(px(95), px(105)), st.integers(1, px(1))), min_size=3, max_size=3))
def test_index_matches_fraction_model_for_whole_nano_mids(quotes: list[tuple[int, int]]) -> None:
    engine = Engine(pricing_config())
    books = {v: (bid, bid + 2 * half) for v, (bid, half) in zip(WEIGHTS, quotes, strict=True)}
    out: list[object] = []
    for v, (b, a) in books.items():
        engine.apply(snap(v, b, a, T0), out)
    engine.apply(ClockTick(T0), out)
    (index,) = of_type(out, IndexPrice)
    assert index.price == expected_index(books)


def test_stale_component_excluded() -> None:
    engine = Engine(pricing_config())
    out: list[object] = []
    engine.apply(snap("c", px(200), px(202), T0), out)
    fresh = {"a": (px(100), px(102)), "b": (px(101), px(103))}
    now = T0 + STALENESS + SEC
    for v, (b, a) in fresh.items():
        engine.apply(snap(v, b, a, now - SEC), out)
    out.clear()
    engine.apply(ClockTick(now), out)
    (index,) = of_type(out, IndexPrice)
    assert index.price == expected_index(fresh)
    by_venue = {s.venue: s for s in index.components}
    assert not by_venue["c"].included and by_venue["c"].exclusion_reason == "stale"
    assert by_venue["a"].included and by_venue["b"].included


def test_trades_only_component_goes_stale() -> None:
    engine = Engine(pricing_config())
    out: list[object] = []
    engine.apply(trade("c", "1", px("101.5"), px(1), T0), out)  # venue c: trades only, no book
    now = T0 + 60 * SEC
    fresh = {"a": (px(100), px(102)), "b": (px(101), px(103))}
    for v, (b, a) in fresh.items():
        engine.apply(snap(v, b, a, now - SEC), out)
    for t in range(T0 + SEC, now + 1, SEC):
        engine.apply(ClockTick(t), out)
    index = engine.index_price("BTC-INDEX")
    assert index is not None and index.ts == now
    by_venue = {s.venue: s for s in index.components}
    assert by_venue["c"].exclusion_reason == "stale"
    assert index.price == expected_index(fresh)


def test_trades_only_component_uses_last_trade() -> None:
    engine = Engine(pricing_config())
    out: list[object] = []
    engine.apply(trade("c", "1", px(101), px(1), T0), out)
    engine.apply(trade("c", "2", px(102), px(1), T0 + 1), out)
    engine.apply(ClockTick(T0 + SEC), out)
    (index,) = of_type(out, IndexPrice)
    assert index.price == px(102)
    assert [s.exclusion_reason for s in index.components] == ["missing", "missing", ""]


def test_pricing_at_most_once_per_interval() -> None:
    engine = Engine(pricing_config(pricing_interval_ns=SEC))
    out: list[object] = []
    for v in WEIGHTS:
        engine.apply(snap(v, px(100), px(102), T0), out)
    engine.apply(snap("x", px(100), px(102), T0, symbol=PERP), out)
    ticks = [T0, T0 + 300_000_000, T0 + 999_999_999, T0 + SEC, T0 + SEC + 1, T0 + 3 * SEC + 5]
    for t in ticks:
        engine.apply(ClockTick(t), out)
    assert [i.ts for i in of_type(out, IndexPrice)] == [T0, T0 + SEC, T0 + 3 * SEC + 5]
    assert [m.ts for m in of_type(out, MarkPrice)] == [T0, T0 + SEC, T0 + 3 * SEC + 5]
    assert [r.ts for r in of_type(out, FundingRate)] == [T0, T0 + SEC, T0 + 3 * SEC + 5]
    idx = engine.index_price("BTC-INDEX")
    assert idx is not None and idx.ts == T0 + 3 * SEC + 5


def test_no_mark_without_index() -> None:
    engine = Engine(pricing_config())
    out: list[object] = []
    engine.apply(snap("x", px(100), px(102), T0, symbol=PERP), out)
    engine.apply(ClockTick(T0), out)
    assert not of_type(out, IndexPrice) and not of_type(out, MarkPrice) and not of_type(out, FundingRate)
    assert engine.index_price("BTC-INDEX") is None and engine.mark_price(PERP) is None
    assert engine.funding_rate(PERP) is None


def test_config_validation() -> None:
    index = IndexConfig(symbol="I", components=(IndexComponent("a", SYM, 1),))
    with pytest.raises(ValueError, match="index"):
        EngineConfig(marks=(MarkConfig(symbol=PERP, index_symbol="I"),))
    with pytest.raises(ValueError, match="mark"):
        EngineConfig(indices=(index,), funding=(FundingConfig(symbol=PERP),))
    with pytest.raises(TypeError):
        EngineConfig(no_such_key=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        EngineConfig(30 * SEC)  # type: ignore[call-arg]
    EngineConfig(indices=(index,), marks=(MarkConfig(symbol=PERP, index_symbol="I"),),
                 funding=(FundingConfig(symbol=PERP),))


# ----------------------------------------------------------------------------------------- quality


def test_price_spike_flagged_never_dropped() -> None:
    engine = Engine(EngineConfig(candles=SMALL_CANDLES, quote_spikes=None))
    out: list[object] = []
    warm = [px(100) + (i % 5) * px("0.1") for i in range(30)]
    for i, p in enumerate(warm):
        engine.apply(trade("a", str(i), p, px(1), T0 + i), out)
    assert not of_type(out, QualityFlag)
    spike = trade("a", "spike", px(1000), px(3), T0 + 100)
    engine.apply(spike, out)
    (flag,) = of_type(out, QualityFlag)
    assert flag.kind is QualityKind.PRICE_SPIKE and flag.value == px(1000)
    assert px(100) <= flag.reference <= px("100.4")
    assert out[-1] == spike and out.index(flag) < out.index(spike)
    assert engine.recent_trades(SYM)[-1] == spike
    assert engine.quality.get(QualityKind.PRICE_SPIKE, "a", SYM) == 1
    assert engine.quality.get(QualityKind.PRICE_SPIKE, "b", SYM) == 0
    (m,) = engine.candles("a", SYM, Interval.M1)
    assert m.high == px(1000) and m.volume == px(33) and m.trade_count == 31


def _warm_book(engine: Engine, venue: str, out: list[object], n: int = 30) -> int:
    engine.apply(snap(venue, px(100), px(101), T0, seq=1), out)
    seq = 1
    for i in range(n):
        seq += 1
        bids = ((px(100), px(1) + i + 1),)  # size change at the best bid: touches the top
        engine.apply(BookDelta(venue, SYM, seq, seq, bids, (), T0 + seq, T0 + seq), out)
    return seq


def test_quote_spike_on_ten_x_mid_move() -> None:
    engine = Engine(EngineConfig(candles=SMALL_CANDLES, trade_spikes=None))
    out: list[object] = []
    seq = _warm_book(engine, "a", out)
    assert not of_type(out, QualityFlag)
    seq += 1
    jump = BookDelta("a", SYM, seq, seq, ((px(100), 0), (px(1000), SCALE)), ((px(101), 0), (px(1001), SCALE)),
                     T0 + seq, T0 + seq)
    engine.apply(jump, out)
    (flag,) = of_type(out, QualityFlag)
    assert flag.kind is QualityKind.QUOTE_SPIKE and (flag.venue, flag.symbol) == ("a", SYM)
    assert flag.value == (px(1000) + px(1001)) // 2
    assert flag.reference == (px(100) + px(101)) // 2
    assert engine.quality.get(QualityKind.QUOTE_SPIKE, "a", SYM) == 1
    book = engine.book("a", SYM)
    assert book is not None and book.best_bid() == px(1000)  # applied, not dropped
    assert jump in out


def test_quote_spike_on_quote_events() -> None:
    engine = Engine(EngineConfig(candles=SMALL_CANDLES, trade_spikes=None))
    out: list[object] = []
    for i in range(30):
        engine.apply(Quote("fx", SYM, px(100), px(1) + i, px(101), px(1), T0 + i, T0 + i), out)
    engine.apply(Quote("fx", SYM, px(1000), px(1), px(1001), px(1), T0 + 99, T0 + 99), out)
    assert [f.kind for f in of_type(out, QualityFlag)] == [QualityKind.QUOTE_SPIKE]


# ------------------------------------------------------------------------------------ emission order


def test_closed_candle_precedes_trade_that_closes_it() -> None:
    engine = Engine(quiet_config())
    out: list[object] = []
    engine.apply(trade("a", "1", px(100), px(1), T0 + 10), out)
    out.clear()
    t = trade("a", "2", px(101), px(1), T0 + SEC + 10)
    engine.apply(t, out)
    assert [type(u) for u in out] == [Candle, Trade]
    c = out[0]
    assert isinstance(c, Candle) and c.closed and c.interval is Interval.S1 and c.close_time == T0 + SEC
    assert out[1] == t


def test_gap_status_change_precedes_nbbo_excluding_venue() -> None:
    engine = Engine(quiet_config())
    out: list[object] = []
    engine.apply(snap("a", px(100), px(101), T0, seq=10), out)
    engine.apply(snap("b", px(99), px(102), T0, seq=5), out)
    out.clear()
    engine.apply(BookDelta("a", SYM, 12, 12, ((px(100), px(2)),), (), T0 + 1, T0 + 1), out)
    assert [type(u) for u in out] == [BookStatusChange, Nbbo]
    status, nbbo = out
    assert isinstance(status, BookStatusChange) and isinstance(nbbo, Nbbo)
    assert (status.venue, status.status, status.expected_seq, status.received_seq) == (
        "a", BookStatus.AWAITING_RESYNC, 11, 12)
    assert [(x.venue, x.reason) for x in nbbo.excluded] == [("a", "resync")]
    assert (nbbo.bid_price, nbbo.bid_venue, nbbo.ask_price) == (px(99), "b", px(102))
    assert engine.counters.sequence_gaps == {("a", SYM): 1}



def test_views_are_stamped_with_the_newest_receive_time() -> None:
    """Engine.now is the latest clock tick; views use the newer of it and the books' receive times."""
    engine = Engine(quiet_config())
    engine.apply(snap("a", px(100), px(101), T0 + 5), [])
    assert engine.now == 0
    assert engine.consolidated_book(SYM, 1).ts_recv == T0 + 5
    assert engine.depth_heatmap(SYM, px(1), 1).ts_recv == T0 + 5
    engine.apply(ClockTick(T0 + 9), [])
    assert engine.now == T0 + 9
    assert engine.consolidated_book(SYM, 1).ts_recv == T0 + 9

# --------------------------------------------------------------------------- apply_batch == apply


VENUES = ("a", "b")
SYMS = (SYM, PERP)
price_st = st.integers(95, 105).map(lambda p: p * SCALE)
size_st = st.integers(0, 3).map(lambda s: s * SCALE)
levels_st = st.lists(st.tuples(price_st, size_st), max_size=4).map(tuple)

raw_event = st.one_of(
    st.tuples(st.just("snap"), st.sampled_from(VENUES), st.sampled_from(SYMS), levels_st, levels_st),
    st.tuples(st.just("delta"), st.sampled_from(VENUES), st.sampled_from(SYMS), levels_st, levels_st,
              st.sampled_from((0, 1, 1, 1, 2))),
    st.tuples(st.just("trade"), st.sampled_from(VENUES), st.sampled_from(SYMS), price_st,
              st.integers(1, 3), st.sampled_from(("", "1", "2", "3")), st.integers(-3, 0)),
    st.tuples(st.just("tick"),),
)


def build_events(raw: list[tuple[object, ...]], steps: list[int]) -> list[Event]:
    events: list[Event] = []
    seqs: dict[tuple[str, str], int] = {}
    now = T0
    for r, step in zip(raw, steps, strict=False):
        now += step
        kind = r[0]
        if kind == "tick":
            events.append(ClockTick(now))
            continue
        venue, symbol = str(r[1]), str(r[2])
        key = (venue, symbol)
        if kind == "snap":
            seqs[key] = seqs.get(key, 0) + 1
            bids: tuple[Level, ...] = r[3]  # type: ignore[assignment]
            asks: tuple[Level, ...] = r[4]  # type: ignore[assignment]
            events.append(BookSnapshot(venue, symbol, seqs[key], bids, asks, now, now))
        elif kind == "delta":
            seqs[key] = seqs.get(key, 0) + 1
            skip = int(r[5])  # type: ignore[call-overload]
            seq = seqs[key] + skip - 1  # 0: duplicate, 1: in order, 2: gap
            seqs[key] = max(seqs[key], seq)
            bids = r[3]  # type: ignore[assignment]
            asks = r[4]  # type: ignore[assignment]
            events.append(BookDelta(venue, symbol, seq, seq, bids, asks, now, now))
        else:
            back = int(r[6]) * 3 * SEC  # type: ignore[call-overload]
            events.append(Trade(venue, symbol, str(r[5]), int(r[3]), int(r[4]) * SCALE,  # type: ignore[call-overload]
                                Side.BUY, now + back, now))
    return events


def full_engine() -> Engine:
    index = IndexConfig(symbol="IDX", components=(IndexComponent("a", SYM, 1), IndexComponent("b", SYM, 2)))
    engine = Engine(EngineConfig(
        candles=CandleConfig(intervals=(Interval.S1, Interval.M1), grace_ns=2 * SEC),
        trade_ring_size=8, dedupe_window=4,
        indices=(index,), marks=(MarkConfig(symbol=PERP, index_symbol="IDX"),),
        funding=(FundingConfig(symbol=PERP),), stale_after_ns=5 * SEC,
    ))
    engine.add_alert(Alert("u", SYM, AlertCondition.PRICE_ABOVE, px(104), AlertSource.LAST_TRADE))
    engine.add_alert(Alert("d", SYM, AlertCondition.PRICE_BELOW, px(97), AlertSource.NBBO_MID))
    engine.add_alert(Alert("m", PERP, AlertCondition.PRICE_ABOVE, px(103), AlertSource.MARK))
    return engine


@settings(max_examples=120, deadline=None)
@given(st.lists(raw_event, max_size=50), st.lists(st.integers(0, 3 * SEC), min_size=50, max_size=50))
def test_apply_batch_equals_apply_in_order(raw: list[tuple[object, ...]], steps: list[int]) -> None:
    events = build_events(raw, steps)
    one, batch = full_engine(), full_engine()
    out_one: list[object] = []
    for e in events:
        one.apply(e, out_one)
    out_batch: list[object] = []
    batch.apply_batch(events, out_batch)
    assert out_batch == out_one
    for symbol in SYMS:
        assert one.nbbo(symbol) == batch.nbbo(symbol)
        assert one.recent_trades(symbol) == batch.recent_trades(symbol)
        for venue in VENUES:
            assert one.candles(venue, symbol, Interval.S1) == batch.candles(venue, symbol, Interval.S1)
            assert one.ticker(venue, symbol) == batch.ticker(venue, symbol)
    assert one.counters == batch.counters
    assert one.quality.snapshot() == batch.quality.snapshot()
    assert one.index_price("IDX") == batch.index_price("IDX")
    assert one.mark_price(PERP) == batch.mark_price(PERP)
    assert one.funding_rate(PERP) == batch.funding_rate(PERP)


def test_batch_split_anywhere_gives_same_updates() -> None:
    events: list[Event] = [snap("a", px(100), px(101), T0, seq=1), trade("a", "1", px(100), px(1), T0),
                           ClockTick(T0 + 3 * SEC), trade("a", "2", px(101), px(1), T0 + 3 * SEC),
                           BookDelta("a", SYM, 2, 2, ((px(100), 0),), (), T0 + 4 * SEC, T0 + 4 * SEC),
                           ClockTick(T0 + 9 * SEC)]
    whole: list[object] = []
    Engine(quiet_config()).apply_batch(events, whole)
    for cut in range(len(events) + 1):
        engine = Engine(quiet_config())
        out: list[object] = []
        engine.apply_batch(events[:cut], out)
        engine.apply_batch(events[cut:], out)
        assert out == whole



def test_forget_receive_lag_keeps_candles_open_until_the_feed_delivers_again() -> None:
    """After a restore, a tick long after the restored trades must not close their candles (the downtime
    is not receive lag); the first live trade makes the lag known again."""
    s = 1_000_000_000
    engine = Engine()
    out: list[object] = []
    engine.apply(Trade("v", "S", "1", 100 * s, s, Side.BUY, 10 * s, 10 * s), out)
    engine.forget_receive_lag()
    out.clear()
    engine.apply(ClockTick(10_000 * s), out)
    assert not [u for u in out if isinstance(u, Candle) and u.closed]
    engine.apply(Trade("v", "S", "2", 100 * s, s, Side.BUY, 10 * s + s // 2, 10_001 * s), out)  # redelivered
    engine.apply(ClockTick(10_100 * s), out)
    closed = [u for u in out if isinstance(u, Candle) and u.closed and u.interval == Interval.S1]
    assert [(c.open_time, c.volume, c.trade_count) for c in closed] == [(10 * s, 2 * s, 2)]
    assert not [u for u in out if isinstance(u, QualityFlag) and u.kind == QualityKind.LATE_TRADE]
