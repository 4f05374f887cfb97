"""Candles from real trades against the venue's own klines (Binance) and a brute-force recomputation (Kraken).

Data: ../shared/data/real beside the repo (see SOURCES.md sections 1 and 2); skipped when absent.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from feeds.freqtrade.parser import parse_dump
from feeds.kraken_rest.parser import parse_page
from feeds.protocols import DeadLetter
from server.engine.candles import Candle, CandleConfig, CandleSeries, EmptyPolicy, Interval, period_start
from server.engine.events import Trade
from server.engine.numbers import parse_fixed

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
BINANCE = REAL / "binance_xrpeth_2019-10-11"
KRAKEN = REAL / "kraken_xbtusdt_rest_2025-11-10" / "http_trades.json"
MS = 1_000_000


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data/real beside the repo)")
    return path


def binance_trades() -> list[Trade]:
    text = gzip.decompress(need(BINANCE / "XRP_ETH-trades.json.gz").read_bytes()).decode()
    dead: list[DeadLetter] = []
    trades = list(parse_dump(text, "XRP/ETH", dead))
    assert dead == []
    assert len(trades) == 12_477
    return trades


def klines(name: str) -> list[tuple[int, int, int, int, int, int]]:
    rows = json.loads(need(BINANCE / name).read_text(), parse_float=str, parse_int=str)
    return [(int(r[0]) * MS, *(parse_fixed(v) for v in r[1:6])) for r in rows]  # type: ignore[misc]


def build(trades: list[Trade], cfg: CandleConfig) -> CandleSeries:
    series = CandleSeries(trades[0].venue, trades[0].symbol, cfg)
    out: list[object] = []
    for t in trades:
        assert series.add_trade(t.price, t.size, t.side, t.ts_event, t.ts_recv, out)
    series.advance(trades[-1].ts_event + 31 * 86_400 * 10**9, out)
    return series


@pytest.mark.parametrize(
    ("interval", "name", "matches", "empty"),
    [(Interval.M1, "XRP_ETH-1m.json", 2469, 1091), (Interval.M5, "XRP_ETH-5m.json", 706, 6)],
)
def test_binance_klines_exact(interval: Interval, name: str, matches: int, empty: int) -> None:
    trades = binance_trades()
    ks = klines(name)
    skip_series = build(trades, CandleConfig(intervals=(interval,), history=10**5))
    skip = {c.open_time: c for c in skip_series.closed(interval)}
    flat_cfg = CandleConfig(intervals=(interval,), empty_policy=EmptyPolicy.FLAT, history=10**5)
    flat = {c.open_time: c for c in build(trades, flat_cfg).closed(interval)}
    got_match = got_empty = mismatches = 0
    for t, o, h, lo, c, v in ks:
        kline = (o, h, lo, c, v)
        if v == 0:
            got_empty += 1
            assert t not in skip  # SKIP: no candle for a minute without trades
            fc = flat[t]  # FLAT: a zero-volume bar at the previous close, like Binance's empty kline
            assert (fc.open, fc.high, fc.low, fc.close, fc.volume, fc.trade_count) == (*kline, 0)
            continue
        cd = skip[t]
        if (cd.open, cd.high, cd.low, cd.close, cd.volume) == kline:
            got_match += 1
        else:
            mismatches += 1
        assert flat[t] == cd
    assert (got_match, got_empty, mismatches) == (matches, empty, 0)
    assert len(skip) == matches  # no candle Binance does not have
    assert sum(c.volume for c in skip.values()) == sum(t.size for t in trades)


def test_binance_1h_and_larger_are_folds_of_1m() -> None:
    trades = binance_trades()
    series = build(trades, CandleConfig(history=10**5))
    m1 = series.closed(Interval.M1)
    for iv in list(Interval)[2:]:
        for c in series.closed(iv):
            parts = [m for m in m1 if period_start(iv, m.open_time) == c.open_time]
            assert c.open == parts[0].open and c.close == parts[-1].close
            assert c.high == max(m.high for m in parts) and c.low == min(m.low for m in parts)
            assert c.volume == sum(m.volume for m in parts)
            assert c.quote_volume == sum(m.quote_volume for m in parts)
            assert c.trade_count == sum(m.trade_count for m in parts)


def kraken_trades() -> list[Trade]:
    dead: list[DeadLetter] = []
    page = parse_page(need(KRAKEN).read_text(), dead)
    assert dead == []
    assert page.last == "1762820035982277754"
    assert len(page.trades) == 1000
    ids = [int(t.trade_id) for t in page.trades]
    assert ids == list(range(10218208, 10219208))
    return page.trades


def test_kraken_time_is_exact() -> None:
    first = kraken_trades()[0]
    assert first.ts_event == 1762795433_971744500  # "1762795433.9717445" read as text, no float
    assert first.price == parse_fixed("105433.60000") and first.size == parse_fixed("0.00027625")


@pytest.mark.parametrize("interval", [Interval.M1, Interval.M5, Interval.M15, Interval.M30, Interval.H1])
def test_kraken_candles_vs_brute_force(interval: Interval) -> None:
    trades = kraken_trades()
    series = build(
        trades,
        CandleConfig(
            intervals=(Interval.M1, Interval.M5, Interval.M15, Interval.M30, Interval.H1), history=10**5
        ),
    )
    first_full = period_start(interval, trades[0].ts_event) + 1  # skip the partial first period
    groups: dict[int, list[Trade]] = {}
    for t in trades:
        groups.setdefault(period_start(interval, t.ts_event), []).append(t)
    got = {c.open_time: c for c in series.closed(interval) if c.open_time >= first_full}
    ref = {k: g for k, g in groups.items() if k >= first_full}
    assert set(got) == set(ref)
    for k, g in ref.items():
        c: Candle = got[k]
        prices = [t.price for t in g]
        assert (c.open, c.high, c.low, c.close) == (g[0].price, max(prices), min(prices), g[-1].price)
        assert c.volume == sum(t.size for t in g)
        assert c.quote_volume == sum(t.price * t.size for t in g)
        assert c.trade_count == len(g)
        assert c.buy_volume + c.sell_volume == c.volume
    all_c = series.closed(interval)
    assert sum(c.volume for c in all_c) == sum(t.size for t in trades)
    assert sum(c.trade_count for c in all_c) == 1000
    if interval is Interval.M1:
        span_minutes = (trades[-1].ts_event - trades[0].ts_event) // (60 * 10**9)
        assert len(all_c) < span_minutes  # many minutes without a trade
