"""Tests of server.engine.pricing: index vs. a brute-force Fraction model, mark EMA, funding schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.numbers import SCALE, parse_fixed
from server.engine.pricing import (
    DECAY_ONE,
    HOUR_NS,
    MINUTE_NS,
    SECOND_NS,
    FundingConfig,
    FundingTracker,
    IndexCalculator,
    IndexComponent,
    IndexConfig,
    MarkConfig,
    MarkPriceTracker,
    decay_factor,
    next_funding_time,
    premium_index,
)

NOW = 1_700_000_000 * SECOND_NS


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    dt = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(dt.timestamp()) * SECOND_NS


# ------------------------------------------------------------------------------------------- index


def reference_index(
    config: IndexConfig, prices: dict[tuple[str, str], tuple[int, int]], now: int
) -> tuple[int | None, list[str]]:
    """Brute force with Fractions, straight from the definition."""
    reasons: list[str] = []
    fresh: list[int] = []
    for c in config.components:
        e = prices.get((c.venue, c.symbol))
        if e is None or e[0] <= 0:
            reasons.append("missing")
        elif now - e[1] > config.max_staleness_ns:
            reasons.append("stale")
        else:
            reasons.append("")
            fresh.append(e[0])
    if not fresh:
        return None, reasons
    s = sorted(fresh)
    n = len(s)
    med = Fraction(s[n // 2]) if n % 2 else Fraction(s[n // 2 - 1] + s[n // 2], 2)
    band = Fraction(config.outlier_band, SCALE)
    num = Fraction(0)
    den = 0
    count = 0
    for i, c in enumerate(config.components):
        if reasons[i]:
            continue
        p = prices[(c.venue, c.symbol)][0]
        if abs(p - med) / med > band:
            reasons[i] = "outlier"
            continue
        num += c.weight * p
        den += c.weight
        count += 1
    if count < config.min_components:
        return None, reasons
    return round(num / den), reasons  # round() of a Fraction is half-even


@st.composite
def index_case(draw: st.DrawFn) -> tuple[IndexConfig, dict[tuple[str, str], tuple[int, int]], int]:
    n = draw(st.integers(1, 7))
    comps = tuple(IndexComponent(f"v{i}", "BTC-USD", draw(st.integers(1, 10**9))) for i in range(n))
    config = IndexConfig(
        "BTC-IDX",
        comps,
        max_staleness_ns=draw(st.integers(0, 20)) * SECOND_NS,
        outlier_band=draw(st.integers(0, 200_000_000)),
        min_components=draw(st.integers(1, n)),
    )
    base = draw(st.integers(1, 100_000)) * SCALE
    prices: dict[tuple[str, str], tuple[int, int]] = {}
    for c in comps:
        kind = draw(st.sampled_from(["ok", "ok", "ok", "missing", "zero"]))
        if kind == "missing":
            continue
        price = 0 if kind == "zero" else base + draw(st.integers(-base // 5, base // 5))
        age = draw(st.integers(-SECOND_NS, 25 * SECOND_NS))
        prices[(c.venue, c.symbol)] = (price, NOW - age)
    return config, prices, NOW


@settings(max_examples=400, deadline=None)
@given(index_case())
def test_index_matches_fraction_reference(
    case: tuple[IndexConfig, dict[tuple[str, str], tuple[int, int]], int],
) -> None:
    config, prices, now = case
    calc = IndexCalculator(config)
    want, reasons = reference_index(config, prices, now)
    got = calc.compute(prices, now)
    price, sources = calc.explain(prices, now)
    assert price == want
    assert [s.exclusion_reason for s in sources] == reasons
    assert [s.included for s in sources] == [r == "" for r in reasons]
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got.price == want
        assert got.ts == now
        assert got.components == sources
        assert got.symbol == "BTC-IDX"


def _cfg(**kw: int) -> IndexConfig:
    comps = (
        IndexComponent("binance", "BTCUSDT", 1),
        IndexComponent("coinbase", "BTC-USD", 1),
        IndexComponent("kraken", "XBT/USD", 2),
    )
    return IndexConfig("BTC-IDX", comps, **kw)


def test_index_weighted_average_and_rounding() -> None:
    calc = IndexCalculator(_cfg())
    p = {
        ("binance", "BTCUSDT"): (parse_fixed("100"), NOW),
        ("coinbase", "BTC-USD"): (parse_fixed("101"), NOW),
        ("kraken", "XBT/USD"): (parse_fixed("102"), NOW),
    }
    got = calc.compute(p, NOW)
    assert got is not None
    assert got.price == parse_fixed("101.25")  # (100 + 101 + 2*102) / 4
    # half-even on ties: extra ulps (3, 3, 0) -> 6/4 = 1.5 -> 2; (1, 1, 0) -> 2/4 = 0.5 -> 0
    for extra, want in (((3, 3, 0), 2), ((1, 1, 0), 0), ((0, 1, 2), 1)):
        p2 = {k: (v + e, NOW) for e, (k, (v, _)) in zip(extra, p.items(), strict=True)}
        got2 = calc.compute(p2, NOW)
        assert got2 is not None
        assert got2.price == parse_fixed("101.25") + want


def test_index_stale_and_missing() -> None:
    calc = IndexCalculator(_cfg(max_staleness_ns=10 * SECOND_NS))
    p = {
        ("binance", "BTCUSDT"): (parse_fixed("100"), NOW - 10 * SECOND_NS),  # exactly at the limit: fresh
        ("coinbase", "BTC-USD"): (parse_fixed("200"), NOW - 10 * SECOND_NS - 1),  # stale
    }
    got = calc.compute(p, NOW)
    assert got is not None
    assert got.price == parse_fixed("100")
    assert [s.exclusion_reason for s in got.components] == ["", "stale", "missing"]
    assert got.components[1].price == parse_fixed("200")
    assert got.components[2].price == 0


def test_index_outlier_band_is_inclusive() -> None:
    calc = IndexCalculator(_cfg(outlier_band=50_000_000))
    p = {
        ("binance", "BTCUSDT"): (parse_fixed("100"), NOW),
        ("coinbase", "BTC-USD"): (parse_fixed("105"), NOW),  # exactly 5% above the median
        ("kraken", "XBT/USD"): (parse_fixed("94.999999999"), NOW),  # just over 5% below
    }
    got = calc.compute(p, NOW)
    assert got is not None
    assert [s.exclusion_reason for s in got.components] == ["", "", "outlier"]
    assert got.price == parse_fixed("102.5")


def test_index_none_below_min_components() -> None:
    calc = IndexCalculator(_cfg(min_components=2))
    p = {("binance", "BTCUSDT"): (parse_fixed("100"), NOW)}
    assert calc.compute(p, NOW) is None
    price, sources = calc.explain(p, NOW)
    assert price is None
    assert [s.exclusion_reason for s in sources] == ["", "missing", "missing"]
    assert IndexCalculator(_cfg()).compute({}, NOW) is None


def test_index_two_sources_far_apart_all_outliers() -> None:
    calc = IndexCalculator(_cfg())
    p = {
        ("binance", "BTCUSDT"): (parse_fixed("100"), NOW),
        ("coinbase", "BTC-USD"): (parse_fixed("120"), NOW),
    }
    assert calc.compute(p, NOW) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"components": ()}, "components"),
        ({"components": (IndexComponent("a", "x", 0),)}, "weight"),
        ({"components": (IndexComponent("a", "x", 1), IndexComponent("a", "x", 2))}, "duplicate"),
        ({"max_staleness_ns": -1}, "max_staleness_ns"),
        ({"outlier_band": -1}, "outlier_band"),
        ({"min_components": 0}, "min_components"),
        ({"min_components": 2}, "min_components"),
    ],
)
def test_index_config_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"symbol": "I", "components": (IndexComponent("a", "x", 1),)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        IndexConfig(**args)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- decay / mark


def _exact_decay(dt: int, h: int) -> Decimal:
    ctx = Context(prec=50)
    return ctx.power(Decimal(2), ctx.divide(Decimal(-dt), Decimal(h)))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**13), st.integers(1, 10**12))
def test_decay_factor_close_to_exact(dt: int, h: int) -> None:
    got = decay_factor(dt, h)
    want = _exact_decay(dt, h) * DECAY_ONE
    assert 0 <= got <= DECAY_ONE
    # exponent truncated to 48 bits, products truncated: within ~3e-15 relative (+ a few ulps of 2**-62)
    assert abs(want - Decimal(got)) <= want * Decimal("5e-15") + 64


def test_decay_factor_exact_points() -> None:
    assert decay_factor(0, 5) == DECAY_ONE
    assert decay_factor(-3, 5) == DECAY_ONE
    assert decay_factor(5, 5) == DECAY_ONE // 2
    assert decay_factor(15, 5) == DECAY_ONE // 8
    assert decay_factor(10**9, 1) == 0


def test_mark_seeds_then_converges_to_constant_premium() -> None:
    cfg = MarkConfig("BTC-PERP", "BTC-IDX", ema_half_life_ns=60 * SECOND_NS)
    tr = MarkPriceTracker(cfg)
    index = parse_fixed("50000")
    # before any valid quote: mark = index
    m0 = tr.update(index, 0, parse_fixed("50010"), NOW)
    assert (m0.mark_price, m0.premium_ema) == (index, 0)
    m = tr.update(index, parse_fixed("50010"), parse_fixed("50020"), NOW)
    assert m.premium_ema == parse_fixed("15")  # seeded
    # premium switches to 5: after one half-life the EMA is halfway, then converges
    t = NOW
    bid, ask = parse_fixed("50004"), parse_fixed("50006")
    tr.update(index, bid, ask, t)
    m = tr.update(index, bid, ask, t + 60 * SECOND_NS)
    assert m.premium_ema == parse_fixed("10")
    for i in range(1, 200):
        m = tr.update(index + i, bid + i, ask + i, t + i * 30 * SECOND_NS)
    assert m.premium_ema == parse_fixed("5")
    assert m.mark_price == m.index_price + parse_fixed("5")
    assert m.symbol == "BTC-PERP"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(10**12), 10**12),
    st.integers(-(10**12), 10**12),
    st.lists(st.integers(1, 10**11), min_size=1, max_size=8),
)
def test_mark_ema_independent_of_update_frequency(p0: int, p1: int, gaps: list[int]) -> None:
    """Folding one held premium in several steps equals one step (to rounding), and matches Decimal."""
    cfg = MarkConfig("P", "I", ema_half_life_ns=30 * SECOND_NS)
    index = 100_000 * SCALE

    def quote(p: int) -> tuple[int, int]:
        return index + p - SCALE, index + p + SCALE

    a = MarkPriceTracker(cfg)
    b = MarkPriceTracker(cfg)
    for tr in (a, b):
        tr.update(index, *quote(p0), NOW)
        tr.update(index, *quote(p1), NOW)  # same time: replaces the held premium, EMA stays p0
    t = NOW
    for g in gaps:
        t += g
        ma = a.update(index, 0, 0, t)  # no new observation: p1 keeps holding
    mb = b.update(index, 0, 0, t)
    assert abs(ma.premium_ema - mb.premium_ema) <= 2
    d = _exact_decay(t - NOW, cfg.ema_half_life_ns)
    want = d * p0 + (1 - d) * p1
    assert abs(Decimal(mb.premium_ema) - want) <= 1


def test_mark_ignores_crossed_and_backward_time() -> None:
    tr = MarkPriceTracker(MarkConfig("P", "I"))
    index = parse_fixed("100")
    tr.update(index, parse_fixed("101"), parse_fixed("101"), NOW)
    m = tr.update(index, parse_fixed("90"), parse_fixed("89"), NOW + HOUR_NS)  # crossed: held stays +1
    assert m.premium_ema == parse_fixed("1")
    m = tr.update(index, parse_fixed("100"), parse_fixed("100"), NOW)  # backwards: no decay
    assert m.premium_ema == parse_fixed("1")
    tr.reset()
    assert tr.premium_ema == 0


def test_mark_config_validation() -> None:
    with pytest.raises(ValueError, match="ema_half_life_ns"):
        MarkConfig("P", "I", ema_half_life_ns=0)
    with pytest.raises(ValueError, match="index_symbol"):
        MarkConfig("P", "")


# ------------------------------------------------------------------------------------------ funding


def test_next_funding_time_schedule_utc() -> None:
    day = utc_ns(2024, 3, 9)
    cases = [
        (utc_ns(2024, 3, 9, 0, 0, 0), utc_ns(2024, 3, 9, 8)),
        (utc_ns(2024, 3, 9, 0, 0, 0) - 1, utc_ns(2024, 3, 9, 0)),
        (utc_ns(2024, 3, 9, 7, 59, 59) + 999_999_999, utc_ns(2024, 3, 9, 8)),
        (utc_ns(2024, 3, 9, 8), utc_ns(2024, 3, 9, 16)),
        (utc_ns(2024, 3, 9, 15, 30), utc_ns(2024, 3, 9, 16)),
        (utc_ns(2024, 3, 9, 16), utc_ns(2024, 3, 10, 0)),
        (utc_ns(2024, 3, 9, 23, 59, 59), utc_ns(2024, 3, 10, 0)),
    ]
    for now, want in cases:
        assert next_funding_time(now, 8 * HOUR_NS) == want, (now - day) / HOUR_NS
    tr = FundingTracker(FundingConfig("BTC-PERP"))
    r = tr.rate(utc_ns(2024, 3, 9, 23, 59))
    assert r.next_funding_time == utc_ns(2024, 3, 10)
    assert r.countdown_ns == MINUTE_NS
    assert r.interval_ns == 8 * HOUR_NS
    r = tr.rate(utc_ns(2024, 3, 10, 0, 0, 1))
    assert r.next_funding_time == utc_ns(2024, 3, 10, 8)
    assert r.countdown_ns == 8 * HOUR_NS - SECOND_NS


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**15),
    st.integers(1, 10**15),
    st.integers(1, 10**15),
)
def test_premium_index_matches_reference(index: int, bid: int, ask: int) -> None:
    want = Fraction(max(0, bid - index) - max(0, index - ask), index)
    assert premium_index(index, bid, ask) == round(want * SCALE)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 120), st.integers(-50_000, 50_000), st.integers(-50_000, 50_000)),
        min_size=1,
        max_size=30,
    ),
    st.integers(-10_000_000, 10_000_000),
    st.integers(0, 20_000_000),
)
def test_funding_rate_clamped_time_weighted(
    samples: list[tuple[int, int, int]], interest: int, clamp: int
) -> None:
    cfg = FundingConfig("P", interest_rate=interest, clamp=clamp, max_hold_ns=HOUR_NS)
    tr = FundingTracker(cfg)
    start = utc_ns(2024, 1, 1, 0, 0, 1)
    index = 1_000 * SCALE
    t = start
    integral = Fraction(0)
    covered = 0
    prev: tuple[int, int] | None = None
    for gap_s, db, da in samples:
        bid, ask = index + db * SCALE // 1000, index + da * SCALE // 1000
        p = tr.sample(index, bid, ask, t)
        assert p is not None
        if prev is not None:
            integral += prev[1] * (t - prev[0])
            covered += t - prev[0]
        prev = (t, p)
        t += gap_s * SECOND_NS  # gaps <= 2 min: all within the first 8 h and within max_hold
    assert prev is not None
    integral += prev[1] * (t - prev[0])
    covered += t - prev[0]
    r = tr.rate(t)
    want_avg = round(integral / covered)
    assert r.premium_rate == want_avg
    assert r.rate == max(-clamp, min(clamp, want_avg + interest))
    assert -clamp <= r.rate <= clamp
    assert r.interest_rate == interest
    assert r.next_funding_time == utc_ns(2024, 1, 1, 8)
    assert tr.settle(t) == ()


def test_funding_first_sample_and_no_sample() -> None:
    cfg = FundingConfig("P")
    tr = FundingTracker(cfg)
    t = utc_ns(2024, 1, 1, 1)
    assert tr.rate(t).rate == 100_000  # no premium yet: interest only
    index = parse_fixed("100")
    assert tr.sample(index, parse_fixed("100.5"), parse_fixed("100.6"), t) == 5_000_000  # +0.5%
    assert tr.rate(t).premium_rate == 5_000_000  # no time covered yet: the held sample
    assert tr.rate(t).rate == 5_100_000
    assert tr.sample(index, parse_fixed("101"), parse_fixed("101.1"), t + 1) == 10_000_000
    assert tr.rate(t + 1).rate == 5_100_000  # 1 ns of +0.5% covered so far
    assert tr.rate(t + 2).rate == 7_500_000  # (0.5% + 1%) / 2 + 0.01% = 0.76% -> clamped 0.75%
    assert tr.sample(index, 0, parse_fixed("101"), t + 3) is None  # missing side: ignored
    with pytest.raises(ValueError, match="index"):
        tr.sample(0, 1, 1, t)


def test_funding_settles_once_and_splits_held_sample() -> None:
    cfg = FundingConfig("P", max_hold_ns=HOUR_NS)
    tr = FundingTracker(cfg)
    index = parse_fixed("100")
    t0 = utc_ns(2024, 1, 1, 7, 0)
    tr.sample(index, parse_fixed("100.2"), parse_fixed("100.3"), t0)  # +0.2% held 7:00..8:00
    tr.sample(index, parse_fixed("100.2"), parse_fixed("100.3"), utc_ns(2024, 1, 1, 7, 30))
    assert tr.settle(utc_ns(2024, 1, 1, 7, 44)) == ()
    tr.sample(index, parse_fixed("99.6"), parse_fixed("99.7"), utc_ns(2024, 1, 1, 7, 45))  # -0.3%
    settled = tr.settle(utc_ns(2024, 1, 1, 8, 15))
    assert len(settled) == 1
    s = settled[0]
    eight = utc_ns(2024, 1, 1, 8)
    # 45 min of +0.2% and 15 min of -0.3%: avg = 0.075%
    assert s.premium_rate == 750_000
    assert s.rate == 850_000
    assert (s.ts, s.next_funding_time, s.countdown_ns) == (eight, eight, 0)
    assert tr.settle(utc_ns(2024, 1, 1, 8, 16)) == ()
    # the -0.3% sample keeps holding into the new interval (until 8:45)
    r = tr.rate(utc_ns(2024, 1, 1, 9))
    assert r.premium_rate == -3_000_000
    assert r.next_funding_time == utc_ns(2024, 1, 1, 16)


def test_funding_gap_settles_every_interval() -> None:
    tr = FundingTracker(FundingConfig("P", max_hold_ns=MINUTE_NS))
    index = parse_fixed("100")
    tr.sample(index, parse_fixed("101"), parse_fixed("101"), utc_ns(2024, 1, 1, 1))
    settled = tr.settle(utc_ns(2024, 1, 2, 1))  # 24 h later: 08:00, 16:00, 00:00
    assert [s.ts for s in settled] == [utc_ns(2024, 1, 1, 8), utc_ns(2024, 1, 1, 16), utc_ns(2024, 1, 2)]
    assert settled[0].premium_rate == 10_000_000  # 1 min of +1% covered
    assert settled[0].rate == 7_500_000
    assert [s.rate for s in settled[1:]] == [100_000, 100_000]


def test_funding_custom_clamp_bounds() -> None:
    tr = FundingTracker(FundingConfig("P", clamp=500_000))
    t = utc_ns(2024, 1, 1, 1)
    index = parse_fixed("100")
    tr.sample(index, parse_fixed("50"), parse_fixed("50"), t)  # -50%
    assert tr.rate(t + MINUTE_NS).rate == -500_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_ns": 0}, "interval_ns"),
        ({"clamp": -1}, "clamp"),
        ({"interest_rate": 2 * SCALE}, "interest_rate"),
        ({"max_hold_ns": 0}, "max_hold_ns"),
        ({"symbol": ""}, "symbol"),
    ],
)
def test_funding_config_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"symbol": "P"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FundingConfig(**args)  # type: ignore[arg-type]
