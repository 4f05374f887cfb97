"""CandleSeries against a brute-force model: trades grouped by period with Python's datetime in UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.candles import (
    ALL_INTERVALS,
    SECOND_NS,
    Candle,
    CandleConfig,
    CandleSeries,
    EmptyPolicy,
    Interval,
    period_end,
    period_start,
)
from server.engine.events import Side

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN = 60 * SECOND_NS
HOUR = 60 * MIN
DAY = 24 * HOUR


def ns(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1) * 1000


# Interesting starts: leap day, year end into a Monday, month end on a Sunday, DST-free UTC anyway.
ANCHORS = [
    ns(datetime(2024, 2, 27, 22, 0, tzinfo=UTC)),
    ns(datetime(2023, 12, 30, 20, 0, tzinfo=UTC)),
    ns(datetime(2024, 3, 30, 21, 30, tzinfo=UTC)),
    ns(datetime(2100, 2, 27, 23, 0, tzinfo=UTC)),  # not a leap year
    ns(datetime(2000, 2, 28, 23, 59, tzinfo=UTC)),  # leap year (div by 400)
    ns(datetime(1969, 12, 28, 23, 0, tzinfo=UTC)),  # negative times
]


def ref_bounds(iv: Interval, ts: int) -> tuple[int, int]:
    """Reference period [start, end) computed with datetime only."""
    dt = EPOCH + timedelta(seconds=ts // SECOND_NS)
    z = dt.replace(microsecond=0)
    if iv is Interval.S1:
        s, e = z, z + timedelta(seconds=1)
    elif iv in (Interval.M1, Interval.M5, Interval.M15, Interval.M30):
        k = {Interval.M1: 1, Interval.M5: 5, Interval.M15: 15, Interval.M30: 30}[iv]
        s = z.replace(minute=z.minute - z.minute % k, second=0)
        e = s + timedelta(minutes=k)
    elif iv in (Interval.H1, Interval.H4):
        k = 1 if iv is Interval.H1 else 4
        s = z.replace(hour=z.hour - z.hour % k, minute=0, second=0)
        e = s + timedelta(hours=k)
    elif iv is Interval.D1:
        s = z.replace(hour=0, minute=0, second=0)
        e = s + timedelta(days=1)
    elif iv is Interval.W1:
        s = z.replace(hour=0, minute=0, second=0) - timedelta(days=z.weekday())
        e = s + timedelta(days=7)
    else:
        s = z.replace(day=1, hour=0, minute=0, second=0)
        e = s.replace(year=s.year + 1, month=1) if s.month == 12 else s.replace(month=s.month + 1)
    return ns(s), ns(e)


class T(NamedTuple):
    price: int
    size: int
    side: Side
    ts: int
    recv: int


Key = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]


def key(c: Candle) -> Key:
    return (
        c.open_time,
        c.close_time,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.quote_volume,
        c.buy_volume,
        c.sell_volume,
        c.trade_count,
        c.ts_event,
        c.ts_recv,
    )


def ref_candles(trades: list[T], iv: Interval, flat: bool = False) -> list[Key]:
    """Brute force: stable sort by event time (arrival order breaks ties), group by period."""
    groups: dict[int, list[T]] = {}
    for t in sorted(trades, key=lambda t: t.ts):
        groups.setdefault(ref_bounds(iv, t.ts)[0], []).append(t)
    out: list[Key] = []
    for s in sorted(groups):
        g = groups[s]
        if flat and out:
            p = out[-1][1]
            while p < s:
                e = ref_bounds(iv, p)[1]
                c = out[-1][5]
                out.append((p, e, c, c, c, c, 0, 0, 0, 0, 0, p, p))
                p = e
        prices = [t.price for t in g]
        out.append(
            (
                s,
                ref_bounds(iv, s)[1],
                g[0].price,
                max(prices),
                min(prices),
                g[-1].price,
                sum(t.size for t in g),
                sum(t.price * t.size for t in g),
                sum(t.size for t in g if t.side is Side.BUY),
                sum(t.size for t in g if t.side is Side.SELL),
                len(g),
                g[-1].ts,
                max(t.recv for t in g),
            )
        )
    return out


def gaps(long: bool) -> st.SearchStrategy[int]:
    """Mostly short gaps (ties, same second, crossing second/minute boundaries), some hours/days."""
    short = [st.just(0), st.integers(0, 1000), st.integers(0, 3 * SECOND_NS), st.integers(0, 3 * SECOND_NS)]
    if long:
        return st.one_of(*short, st.integers(0, 2 * MIN), st.integers(0, 3 * HOUR), st.integers(0, DAY))
    return st.one_of(*short, st.integers(0, 2 * MIN))


@st.composite
def trade_lists(draw: st.DrawFn, max_size: int = 60, long: bool = True) -> list[T]:
    t = draw(st.sampled_from(ANCHORS)) + draw(st.integers(0, 4 * HOUR))
    n = draw(st.integers(1, max_size))
    out: list[T] = []
    gap = gaps(long)
    for i in range(n):
        t += draw(gap)
        price = draw(st.integers(1, 50)) * 10**8
        size = draw(st.integers(1, 10**10))
        side = draw(st.sampled_from(list(Side)))
        out.append(T(price, size, side, t, i))
    return out


def arrival(data: st.DataObject, trades: list[T], grace: int) -> list[T]:
    """Reorder so that no trade is behind the running max time by more than ``grace``."""
    jitter = st.one_of(st.just(0), st.just(grace), st.integers(0, grace))
    jit = [data.draw(jitter) for _ in trades]
    order = sorted(range(len(trades)), key=lambda i: trades[i].ts + jit[i])
    return [trades[i]._replace(recv=k) for k, i in enumerate(order)]


def run(series: CandleSeries, trades: list[T]) -> list[object]:
    out: list[object] = []
    for t in trades:
        assert series.add_trade(t.price, t.size, t.side, t.ts, t.recv, out)
    return out


def check_against_reference(series: CandleSeries, trades: list[T], out: list[object], flat: bool) -> None:
    wm = series.watermark
    assert wm is not None and wm >= max(t.ts for t in trades)
    for iv in series.config.intervals:
        ref = ref_candles(trades, iv, flat)
        got = [key(c) for c in series.closed(iv) if c.open_time <= ref[-1][0]]
        cur = series.current(iv)
        if cur is not None and cur.open_time <= ref[-1][0]:
            assert not cur.closed and cur.open_time == period_start(iv, wm)
            got.append(key(cur))
        assert got == ref, iv
    # the stream: the last emitted version of each candle equals the history
    latest: dict[tuple[Interval, int], Candle] = {}
    for c in out:
        assert isinstance(c, Candle) and c.closed
        latest[c.interval, c.open_time] = c
    for iv in series.config.intervals:
        assert sorted(key(c) for (i, _), c in latest.items() if i is iv) == [
            key(c) for c in series.closed(iv)
        ]
    # advancing closes everything
    end: list[object] = []
    series.advance(max(period_end(iv, wm) for iv in series.config.intervals), end)
    for iv in series.config.intervals:
        want = ref_candles(trades, iv, flat)
        after = series.closed(iv, end_ns=want[-1][0] + 1)
        assert [key(c) for c in after] == want, iv
        assert series.current(iv) is None or flat


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(trade_lists())
def test_in_order_matches_reference(trades: list[T]) -> None:
    series = CandleSeries("v", "s", CandleConfig(history=10**6))
    out = run(series, trades)
    assert not any(isinstance(c, Candle) and c.correction for c in out)
    check_against_reference(series, trades, out, flat=False)
    opened = [(c.interval, c.open_time) for c in out if isinstance(c, Candle)]
    assert len(opened) == len(set(opened))


@SETTINGS
@given(st.data(), trade_lists(), st.sampled_from([SECOND_NS // 2, 2 * SECOND_NS, 5 * SECOND_NS, 3 * MIN]))
def test_shuffled_within_grace_matches_sorted(data: st.DataObject, trades: list[T], grace: int) -> None:
    arrived = arrival(data, trades, grace)
    series = CandleSeries("v", "s", CandleConfig(grace_ns=grace, history=10**6))
    out = run(series, arrived)
    check_against_reference(series, arrived, out, flat=False)


@st.composite
def grid_trades(draw: st.DrawFn) -> list[T]:
    """Times on a coarse grid around a month/week/day boundary: many ties and exact boundaries."""
    boundary = draw(
        st.sampled_from([ns(datetime(2024, 3, 1, tzinfo=UTC)), ns(datetime(2024, 1, 1, tzinfo=UTC))])
    )
    step = draw(st.sampled_from([SECOND_NS // 4, SECOND_NS, 20 * SECOND_NS]))
    ks = draw(st.lists(st.integers(-12, 12), min_size=1, max_size=40))
    return [
        T(
            draw(st.integers(1, 9)) * 10**8,
            draw(st.integers(1, 9)) * 10**9,
            draw(st.sampled_from(list(Side))),
            boundary + k * step,
            i,
        )
        for i, k in enumerate(sorted(ks))
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), grid_trades(), st.sampled_from([SECOND_NS, 5 * SECOND_NS, 2 * MIN]), st.booleans())
def test_grid_ties_and_boundaries_any_order(
    data: st.DataObject, trades: list[T], grace: int, flat: bool
) -> None:
    arrived = arrival(data, trades, grace)
    policy = EmptyPolicy.FLAT if flat else EmptyPolicy.SKIP
    ivs = ALL_INTERVALS[:7] if flat else ALL_INTERVALS
    cfg = CandleConfig(intervals=ivs, grace_ns=grace, empty_policy=policy, max_flat_fill=10**6, history=10**6)
    series = CandleSeries("v", "s", cfg)
    out: list[object] = []
    tick_every = data.draw(st.integers(1, 6))
    for k, t in enumerate(arrived):
        assert series.add_trade(t.price, t.size, t.side, t.ts, t.recv, out)
        if k % tick_every == 0 and k + 1 < len(arrived):
            # a clock tick as far ahead as the trades still to come allow: it closes periods early
            series.advance(min(u.ts for u in arrived[k + 1 :]) + grace, out)
    check_against_reference(series, arrived, out, flat=flat)


interval_subsets = st.lists(st.sampled_from(ALL_INTERVALS[1:]), min_size=1, max_size=9, unique=True)
small_subsets = st.lists(st.sampled_from(ALL_INTERVALS[:7]), min_size=1, max_size=7, unique=True)


@SETTINGS
@given(st.data(), st.sampled_from([0, SECOND_NS, 5 * SECOND_NS]))
def test_flat_policy_and_interval_subsets(data: st.DataObject, grace: int) -> None:
    # with S1 keep the span and the largest interval short: every empty second is a bar
    with_s1 = data.draw(st.booleans())
    ivs = data.draw(small_subsets if with_s1 else interval_subsets)
    trades = data.draw(trade_lists(max_size=40, long=not with_s1))
    if with_s1:
        ivs = [Interval.S1, *[i for i in ivs if i <= Interval.H1 and i is not Interval.S1]]
    arrived = arrival(data, trades, grace)
    cfg = CandleConfig(
        intervals=tuple(ivs),
        grace_ns=grace,
        empty_policy=EmptyPolicy.FLAT,
        max_flat_fill=10**7,
        history=10**7,
    )
    series = CandleSeries("v", "s", cfg)
    out = run(series, arrived)
    check_against_reference(series, arrived, out, flat=True)


@SETTINGS
@given(st.data(), trade_lists(max_size=30), interval_subsets)
def test_skip_policy_interval_subsets(data: st.DataObject, trades: list[T], ivs: list[Interval]) -> None:
    arrived = arrival(data, trades, 5 * SECOND_NS)
    series = CandleSeries("v", "s", CandleConfig(intervals=tuple(ivs), history=10**6))
    out = run(series, arrived)
    check_against_reference(series, arrived, out, flat=False)


@SETTINGS
@given(trade_lists(max_size=30), st.integers(1, 10 * SECOND_NS))
def test_late_beyond_grace_is_refused_and_changes_nothing(trades: list[T], behind: int) -> None:
    grace = 5 * SECOND_NS
    series = CandleSeries("v", "s", CandleConfig(grace_ns=grace))
    run(series, trades)
    wm = max(t.ts for t in trades)
    before = [(series.current(iv), series.closed(iv)) for iv in ALL_INTERVALS]
    out: list[object] = []
    ok = series.add_trade(10**9, 10**9, Side.BUY, wm - grace - behind, 0, out)
    assert not ok and out == []
    assert [(series.current(iv), series.closed(iv)) for iv in ALL_INTERVALS] == before
    assert series.add_trade(10**9, 10**9, Side.BUY, wm - grace, 0, out)  # exactly at the grace: lands


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**11) * SECOND_NS, 2 * 10**11 * SECOND_NS), st.sampled_from(ALL_INTERVALS))
def test_period_bounds_match_datetime(ts: int, iv: Interval) -> None:
    ts = ts // SECOND_NS * SECOND_NS + ts % 7  # keep datetime in range; sub-second part stays
    ts = max(min(ts, ns(datetime(9999, 11, 1, tzinfo=UTC))), ns(datetime(1, 2, 1, tzinfo=UTC)))
    assert (period_start(iv, ts), period_end(iv, ts)) == ref_bounds(iv, ts)


def test_period_examples() -> None:
    t = ns(datetime(2024, 2, 29, 13, 47, 12, tzinfo=UTC))
    assert period_start(Interval.MN1, t) == ns(datetime(2024, 2, 1, tzinfo=UTC))
    assert period_end(Interval.MN1, t) == ns(datetime(2024, 3, 1, tzinfo=UTC))
    assert period_start(Interval.W1, t) == ns(datetime(2024, 2, 26, tzinfo=UTC))  # a Monday
    assert period_start(Interval.H4, t) == ns(datetime(2024, 2, 29, 12, tzinfo=UTC))
    end = ns(datetime(2024, 3, 1, tzinfo=UTC))
    assert period_start(Interval.MN1, end) == end  # the end is exclusive
    assert period_end(Interval.MN1, end - 1) == end


def test_rollover_emits_closed_candles_and_vwap() -> None:
    s = CandleSeries("v", "s", CandleConfig(intervals=(Interval.M1, Interval.M5)))
    out: list[object] = []
    t0 = ns(datetime(2024, 1, 1, tzinfo=UTC))
    s.add_trade(3 * 10**9, 10**9, Side.BUY, t0 + 1, t0 + 5, out)
    s.add_trade(4 * 10**9, 2 * 10**9, Side.SELL, t0 + MIN - 1, t0 + MIN, out)
    assert out == []
    cur = s.current(Interval.M1)
    assert cur is not None and cur.vwap == div_exact(3 * 1 + 4 * 2, 3)
    assert s.last_price == 4 * 10**9
    s.advance(t0 + MIN, out)  # watermark reaches the end: the minute closes
    assert len(out) == 1
    c = out[0]
    assert isinstance(c, Candle) and c.closed and not c.correction and c.interval is Interval.M1
    assert (c.open, c.high, c.low, c.close, c.volume, c.buy_volume, c.sell_volume) == (
        3 * 10**9,
        4 * 10**9,
        3 * 10**9,
        4 * 10**9,
        3 * 10**9,
        10**9,
        2 * 10**9,
    )
    assert c.quote_volume == 11 * 10**18
    assert s.current(Interval.M1) is None
    assert s.last_price == 4 * 10**9
    # a late trade inside the grace amends the closed 1m; the 5m is still in progress
    out.clear()
    assert s.add_trade(5 * 10**9, 10**9, Side.BUY, t0 + MIN - 2, t0 + MIN + 1, out)
    assert len(out) == 1
    fix = out[0]
    assert isinstance(fix, Candle) and fix.correction and fix.high == 5 * 10**9 and fix.close == 4 * 10**9
    cur5 = s.current(Interval.M5)
    assert cur5 is not None and cur5.trade_count == 3 and cur5.high == 5 * 10**9


def div_exact(num: int, den: int) -> int:
    """num/den in units at 1e-9, rounded half-even (small helper for the vwap check)."""
    from server.engine.numbers import div_round

    return div_round(num * 10**9, den)


def test_flat_fill_cap_keeps_most_recent() -> None:
    cfg = CandleConfig(intervals=(Interval.M1,), empty_policy=EmptyPolicy.FLAT, max_flat_fill=3)
    s = CandleSeries("v", "s", cfg)
    out: list[object] = []
    t0 = ns(datetime(2024, 1, 1, tzinfo=UTC))
    s.add_trade(7 * 10**9, 10**9, Side.BUY, t0, t0, out)
    s.add_trade(8 * 10**9, 10**9, Side.BUY, t0 + 10 * MIN + 1, t0, out)
    got = [c for c in out if isinstance(c, Candle)]
    assert [c.open_time for c in got] == [t0, t0 + 7 * MIN, t0 + 8 * MIN, t0 + 9 * MIN]
    assert all(c.trade_count == 0 and c.open == c.close == 7 * 10**9 for c in got[1:])
    cur = s.current(Interval.M1)
    assert cur is not None and cur.open == 8 * 10**9


def test_history_is_bounded_and_queries() -> None:
    s = CandleSeries("v", "s", CandleConfig(intervals=(Interval.S1, Interval.M1), history=5, grace_ns=0))
    out: list[object] = []
    t0 = ns(datetime(2024, 1, 1, tzinfo=UTC))
    for i in range(1000):
        s.add_trade(10**9 + i, 10**9, Side.BUY, t0 + i * SECOND_NS, 0, out)
    closed = s.closed(Interval.S1)
    assert [c.open_time for c in closed] == [t0 + k * SECOND_NS for k in range(994, 999)]
    assert len(s.closed(Interval.S1, limit=2)) == 2
    assert s.closed(Interval.S1, limit=2)[-1].open_time == t0 + 998 * SECOND_NS
    sel = s.closed(Interval.S1, start_ns=t0 + 995 * SECOND_NS, end_ns=t0 + 997 * SECOND_NS)
    assert [c.open_time for c in sel] == [t0 + 995 * SECOND_NS, t0 + 996 * SECOND_NS]
    assert s.closed(Interval.S1, start_ns=t0 + 995 * SECOND_NS, limit=1)[0].open_time == t0 + 995 * SECOND_NS
    with pytest.raises(KeyError):
        s.closed(Interval.H1)


def test_late_trade_before_first_trade_flat_fills_gap() -> None:
    cfg = CandleConfig(intervals=(Interval.S1, Interval.M1), empty_policy=EmptyPolicy.FLAT)
    s = CandleSeries("v", "s", cfg)
    out: list[object] = []
    t0 = ns(datetime(2024, 1, 1, tzinfo=UTC))
    assert s.add_trade(5 * 10**9, 10**9, Side.BUY, t0 + 10 * SECOND_NS, 0, out)
    assert s.add_trade(4 * 10**9, 10**9, Side.BUY, t0 + 6 * SECOND_NS, 0, out)
    got = [(c.open_time - t0, c.close, c.trade_count, c.correction) for c in out if isinstance(c, Candle)]
    assert got == [(k * SECOND_NS, 4 * 10**9, int(k == 6), True) for k in range(6, 10)]
    m1 = s.current(Interval.M1)
    assert m1 is not None and (m1.open, m1.close, m1.trade_count) == (4 * 10**9, 5 * 10**9, 2)


def test_clock_before_first_trade() -> None:
    s = CandleSeries("v", "s", CandleConfig(intervals=(Interval.S1, Interval.M1), grace_ns=5 * SECOND_NS))
    out: list[object] = []
    t0 = ns(datetime(2024, 1, 1, tzinfo=UTC))
    s.advance(t0 + 63 * SECOND_NS, out)
    assert out == [] and s.current(Interval.M1) is None and s.last_price is None
    assert not s.add_trade(10**9, 10**9, Side.SELL, t0 + 57 * SECOND_NS, 0, out)
    assert s.add_trade(10**9, 10**9, Side.SELL, t0 + 59 * SECOND_NS, 0, out)
    # the clock had already closed the trade's (empty) periods: they come out as corrections
    assert [(c.interval, c.open_time - t0, c.correction) for c in out if isinstance(c, Candle)] == [
        (Interval.S1, 59 * SECOND_NS, True),
        (Interval.M1, 0, True),
    ]
    assert s.current(Interval.M1) is None and s.last_price == 10**9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"intervals": ()},
        {"intervals": (Interval.M1, Interval.M1)},
        {"grace_ns": -1},
        {"max_flat_fill": -1},
        {"history": 0},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="CandleConfig"):
        CandleConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"intervals": (2,)}, {"empty_policy": "flat"}])
def test_config_rejects_wrong_types(kwargs: dict[str, object]) -> None:
    """ValueError interpreted; TypeError when compiled with mypyc (it checks annotated types)."""
    with pytest.raises((ValueError, TypeError)):
        CandleConfig(**kwargs)  # type: ignore[arg-type]


def bench_candles(n: int = 1_000_000, step_ns: int = 1_000_000, ticker: bool = False) -> float:
    """In-order trades/s for one symbol, all ten intervals (not a test: call by hand).

    ``step_ns`` is the event-time spacing: 1 ms -> an S1 rollover every 1000 trades.
    """
    from server.engine.ticker import RollingTicker

    series = CandleSeries("v", "s", ticker=RollingTicker("v", "s") if ticker else None)
    out: list[object] = []
    add = series.add_trade
    buy = Side.BUY
    t0 = ns(datetime(2024, 1, 1, tzinfo=UTC))
    prices = [10**11 + (i % 97) * 1000 for i in range(997)]
    start = time.perf_counter()
    for i in range(n):
        t = t0 + i * step_ns
        add(prices[i % 997], 10**6, buy, t, t, out)
        if len(out) > 4096:
            out.clear()
    return n / (time.perf_counter() - start)
