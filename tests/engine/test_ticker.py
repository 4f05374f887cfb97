"""RollingTicker (fed by CandleSeries) against a rescan of all trades in the window."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.candles import MINUTE_NS, SECOND_NS, CandleConfig, CandleSeries, EmptyPolicy, Interval
from server.engine.events import Side
from server.engine.numbers import SCALE, div_round
from server.engine.ticker import RollingTicker, Ticker

HOUR = 60 * MINUTE_NS
T0 = (datetime(2024, 2, 28, 22, 0, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days * 86400 * SECOND_NS


class T(NamedTuple):
    price: int
    size: int
    side: Side
    ts: int


def rescan(trades: list[T], now: int, minutes: int) -> Ticker | None:
    end = now - now % MINUTE_NS + MINUTE_NS
    start = end - minutes * MINUTE_NS
    win = sorted((t for t in trades if start <= t.ts < end), key=lambda t: t.ts)
    if not win:
        return None
    o, last = win[0].price, win[-1].price
    vol = sum(t.size for t in win)
    quote = sum(t.price * t.size for t in win)
    return Ticker(
        "v",
        "s",
        start,
        end,
        o,
        max(t.price for t in win),
        min(t.price for t in win),
        last,
        last - o,
        div_round(100 * SCALE * (last - o), o),
        vol,
        quote,
        div_round(quote, vol),
        len(win),
        win[-1].ts,
    )


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[T], list[int], int, int]:
    """Trades (arrival order, within the grace) and, after each, how far the snapshot clock moves."""
    grace = draw(st.sampled_from([0, 5 * SECOND_NS, 90 * SECOND_NS]))
    gap = st.one_of(
        st.just(0), st.integers(0, 5 * SECOND_NS), st.integers(0, 3 * MINUTE_NS), st.integers(0, 3 * HOUR)
    )
    n = draw(st.integers(1, 80))
    t = T0 + draw(st.integers(0, HOUR))
    trades = []
    for _ in range(n):
        t += draw(gap)
        trades.append(
            T(
                draw(st.integers(1, 99)) * 10**7,
                draw(st.integers(1, 10**9)),
                draw(st.sampled_from(list(Side))),
                t,
            )
        )
    jitter = st.one_of(st.just(0), st.just(grace), st.integers(0, grace))
    keys = [tr.ts + draw(jitter) for tr in trades]
    order = sorted(range(n), key=keys.__getitem__)
    clock = [draw(st.integers(0, 2 * MINUTE_NS)) for _ in range(n)]
    minutes = draw(st.sampled_from([1, 3, 60, 1440]))
    return [trades[i] for i in order], clock, grace, minutes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.booleans())
def test_ticker_matches_rescan(sc: tuple[list[T], list[int], int, int], flat: bool) -> None:
    trades, clock, grace, minutes = sc
    policy = EmptyPolicy.FLAT if flat else EmptyPolicy.SKIP
    cfg = CandleConfig(intervals=(Interval.S1, Interval.M1, Interval.H1), grace_ns=grace, empty_policy=policy)
    series = CandleSeries("v", "s", cfg, ticker=RollingTicker("v", "s", minutes))
    out: list[object] = []
    seen: list[T] = []
    now = 0
    for tr, dt in zip(trades, clock, strict=True):
        assert series.add_trade(tr.price, tr.size, tr.side, tr.ts, tr.ts, out)
        seen.append(tr)
        wm = series.watermark
        assert wm is not None
        now = max(now, wm)
        assert series.ticker(now) == rescan(seen, now, minutes)
        now += dt  # the clock may run ahead of the trades (no advance: stale in-progress minute)
        assert series.ticker(now) == rescan(seen, now, minutes)


def test_ticker_window_edges_and_expiry() -> None:
    series = CandleSeries("v", "s", CandleConfig(intervals=(Interval.M1,)), ticker=RollingTicker("v", "s"))
    out: list[object] = []
    series.add_trade(100 * SCALE, SCALE, Side.BUY, T0 + 10 * SECOND_NS, 0, out)
    series.add_trade(110 * SCALE, SCALE, Side.SELL, T0 + MINUTE_NS + 1, 0, out)
    tk = series.ticker(T0 + MINUTE_NS + 5)
    assert tk is not None
    assert (tk.open, tk.high, tk.low, tk.last) == (100 * SCALE, 110 * SCALE, 100 * SCALE, 110 * SCALE)
    assert tk.change == 10 * SCALE
    assert tk.change_pct == 10 * SCALE and tk.volume == 2 * SCALE and tk.trade_count == 2
    assert tk.window_end - tk.window_start == 1440 * MINUTE_NS
    # 1439 minutes later the first minute is still in (it is the oldest of the 1440), one more and it leaves
    tk = series.ticker(T0 + 1439 * MINUTE_NS)
    assert tk is not None and tk.trade_count == 2
    tk = series.ticker(T0 + 1440 * MINUTE_NS)
    assert tk is not None and tk.trade_count == 1 and tk.open == 110 * SCALE
    assert series.ticker(T0 + 1441 * MINUTE_NS) is None


def test_ticker_needs_m1() -> None:
    with pytest.raises(ValueError, match="M1"):
        CandleSeries("v", "s", CandleConfig(intervals=(Interval.M5,)), ticker=RollingTicker("v", "s"))
    with pytest.raises(ValueError, match="RollingTicker"):
        CandleSeries("v", "s").ticker(0)
