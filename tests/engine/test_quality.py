"""Tests of server.engine.quality: spike detector behaviour and exact threshold, flags and counters."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.numbers import SCALE
from server.engine.quality import (
    QualityCounters,
    QualityFlag,
    QualityKind,
    SpikeConfig,
    SpikeDetector,
)


def random_walk(seed: int, n: int, start: int = 30_000 * SCALE, step_bp: int = 2) -> list[int]:
    """Multiplicative walk with steps of at most ``step_bp`` basis points, ints only."""
    rng = random.Random(seed)
    p = start
    out = []
    for _ in range(n):
        p += p * rng.randint(-step_bp, step_bp) // 10_000
        out.append(p)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_smooth_random_walk_not_flagged(seed: int) -> None:
    det = SpikeDetector()
    for p in random_walk(seed, 5_000):
        assert not det.check(p)
    assert det.spikes == 0
    assert det.checks == 5_000


@pytest.mark.parametrize("seed", range(8))
def test_injected_10x_print_flagged_and_window_not_poisoned(seed: int) -> None:
    det = SpikeDetector()
    walk = random_walk(seed, 400)
    for p in walk[:200]:
        assert not det.check(p)
    window_before = det.window
    median_before = det.median
    assert det.check(walk[199] * 10)
    assert det.check(walk[199] // 10)
    assert det.window == window_before  # not added
    assert det.median == median_before
    assert det.spikes == 2
    for p in walk[200:]:
        assert not det.check(p)  # the reference was not poisoned
    assert det.spikes == 2
    assert all(p < walk[199] * 5 for p in det.window)


def test_warmup_accepts_everything() -> None:
    det = SpikeDetector(SpikeConfig(warmup=4, refresh_every=4))
    assert det.threshold == -1
    for p in (100 * SCALE, 1000 * SCALE, 100 * SCALE, 100 * SCALE):
        assert not det.check(p)
    assert det.check(1000 * SCALE)  # reference now: median 100, MAD 0 -> 0.5% floor
    assert det.median == 100 * SCALE
    assert not det.check(100 * SCALE + SCALE // 2)  # within 0.5%


def test_refresh_is_amortized() -> None:
    det = SpikeDetector(SpikeConfig(window=8, warmup=4, refresh_every=4, min_relative=10**9 // 2))
    for _ in range(4):
        det.check(100 * SCALE)  # the 4th accepted price completes the warm-up: first refresh
    assert det.median == 100 * SCALE
    det.check(101 * SCALE)
    for _ in range(2):
        det.check(110 * SCALE)
        assert det.median == 100 * SCALE  # not recomputed per sample
    det.check(110 * SCALE)  # the 4th accepted since the refresh: recomputed, this price included
    # window then: 100 x4, 101, 110 x3 -> median (100 + 101) / 2
    assert det.median == (100 * SCALE + 101 * SCALE) // 2


def test_reanchor_after_real_level_shift() -> None:
    cfg = SpikeConfig(reanchor_after=5)
    det = SpikeDetector(cfg)
    for p in random_walk(1, 100, start=100 * SCALE):
        det.check(p)
    flagged = [det.check(200 * SCALE + i * SCALE // 100) for i in range(10)]
    assert flagged == [True] * 5 + [False] * 5
    assert det.reanchors == 1
    assert det.spikes == 5
    assert 199 * SCALE < det.median < 201 * SCALE
    assert all(p > 199 * SCALE for p in det.window)


def test_alternating_bad_prints_do_not_reanchor() -> None:
    det = SpikeDetector(SpikeConfig(reanchor_after=3))
    for p in random_walk(2, 100, start=100 * SCALE):
        det.check(p)
    median = det.median
    for i in range(20):
        assert det.check(1000 * SCALE if i % 2 else 10 * SCALE)
    assert det.reanchors == 0
    assert det.median == median


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 10**6), min_size=1, max_size=40),
    st.integers(1, 2 * 10**6),
    st.integers(0, 20),
    st.integers(0, 100_000_000),
)
def test_threshold_matches_fraction_reference(window: list[int], price: int, k: int, min_rel: int) -> None:
    n = len(window)
    det = SpikeDetector(
        SpikeConfig(window=n, k=k, min_relative=min_rel, warmup=n, refresh_every=n + 5, reanchor_after=n)
    )
    for p in window:
        assert not det.check(p)
    s = sorted(window)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    devs = sorted(abs(v - med) for v in window)
    mad = devs[n // 2] if n % 2 else (devs[n // 2 - 1] + devs[n // 2]) // 2
    limit = max(k * Fraction(14826, 10000) * mad, Fraction(min_rel, SCALE) * med)
    det.check(window[0])  # first check after warm-up computes the reference (the print may be accepted)
    assert det.median == med
    assert det.mad == mad
    assert det.check(price) == (abs(price - med) > limit)


def test_spike_config_validation() -> None:
    with pytest.raises(ValueError, match="window"):
        SpikeConfig(window=0)
    with pytest.raises(ValueError, match="warmup"):
        SpikeConfig(window=8, warmup=9)
    with pytest.raises(ValueError, match="refresh_every"):
        SpikeConfig(refresh_every=0)
    with pytest.raises(ValueError, match="k"):
        SpikeConfig(k=-1)
    with pytest.raises(ValueError, match="reanchor_after"):
        SpikeConfig(reanchor_after=0)


def test_counters_and_flag() -> None:
    c = QualityCounters()
    flag = QualityFlag("binance", "BTCUSDT", QualityKind.PRICE_SPIKE, 10, 1, "10x median", 5, 6)
    assert c.record(flag) == 1
    assert c.increment(QualityKind.PRICE_SPIKE, "binance", "BTCUSDT", 2) == 3
    c.increment(QualityKind.SEQUENCE_GAP, "kraken", "XBT/USD")
    snap = c.snapshot()
    assert snap == {
        (QualityKind.PRICE_SPIKE, "binance", "BTCUSDT"): 3,
        (QualityKind.SEQUENCE_GAP, "kraken", "XBT/USD"): 1,
    }
    c.increment(QualityKind.SEQUENCE_GAP, "kraken", "XBT/USD")
    assert snap[(QualityKind.SEQUENCE_GAP, "kraken", "XBT/USD")] == 1  # a copy
    assert c.get(QualityKind.STALE_VENUE, "x", "y") == 0
    c.clear()
    assert c.snapshot() == {}
