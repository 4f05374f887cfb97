"""Derived prices of perpetual contracts: the composite index, the mark price and the funding rate.

This module owns three small calculators, each pure and clock-free (times are int ns given by the caller):

* ``IndexCalculator`` -- a composite spot index over several venues, after Binance's "Price Index" FAQ and
  BitMEX's ".BXBT index" rules: stale sources are dropped, sources too far from the median are dropped,
  the rest are averaged with their weights renormalized.
* ``MarkPriceTracker`` -- mark = index + a time-decayed EMA of the basis (perp mid - index), after Binance's
  "Mark Price" FAQ (index plus a moving average of the basis) and BitMEX's "Fair Price Marking".
* ``FundingTracker`` -- the premium index of Binance's "Funding Rate" FAQ, averaged over the funding interval
  and turned into a clamped rate on an 8-hour schedule, cf. BitMEX "Perpetual Contracts Funding".

Every price, rate and weight is an int at scale 1e-9 (see ``numbers``): a rate of 0.01% is ``100_000``.
No float is used anywhere; intermediate sums are exact ints, and each output is rounded half-even to 1e-9
once, at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Final, NamedTuple

from server.engine.numbers import SCALE, div_round

SECOND_NS: Final = 1_000_000_000
MINUTE_NS: Final = 60 * SECOND_NS
HOUR_NS: Final = 60 * MINUTE_NS

EXCLUDED_NONE: Final = ""
EXCLUDED_STALE: Final = "stale"
EXCLUDED_OUTLIER: Final = "outlier"
EXCLUDED_MISSING: Final = "missing"


# --------------------------------------------------------------------------------------------- index


class IndexComponent(NamedTuple):
    """One constituent of an index: a (venue, symbol) spot market and its weight (any positive int)."""

    venue: str
    symbol: str
    weight: int


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Definition of one composite index.

    ``components``: the constituents (unique (venue, symbol) pairs, positive weights; only the ratios of the
    weights matter). ``max_staleness_ns``: a price older than this (``now - ts > max_staleness_ns``) is
    excluded as 'stale'. ``outlier_band``: relative deviation from the median of the fresh prices beyond
    which a source is excluded as 'outlier', at 1e-9 (5% = ``50_000_000``). ``min_components``: fewest
    sources that must survive for the index to be published.
    """

    symbol: str
    components: tuple[IndexComponent, ...]
    max_staleness_ns: int = 10 * SECOND_NS
    outlier_band: int = 50_000_000
    min_components: int = 1

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("IndexConfig.symbol must be non-empty")
        if not self.components:
            raise ValueError(f"IndexConfig {self.symbol}: components must be non-empty")
        seen: set[tuple[str, str]] = set()
        for c in self.components:
            if not isinstance(c, IndexComponent):
                raise ValueError(f"IndexConfig {self.symbol}: component {c!r} is not an IndexComponent")
            if c.weight <= 0:
                raise ValueError(f"IndexConfig {self.symbol}: weight of {c.venue}:{c.symbol} must be > 0")
            key = (c.venue, c.symbol)
            if key in seen:
                raise ValueError(f"IndexConfig {self.symbol}: duplicate component {c.venue}:{c.symbol}")
            seen.add(key)
        if self.max_staleness_ns < 0:
            raise ValueError(f"IndexConfig {self.symbol}: max_staleness_ns must be >= 0")
        if self.outlier_band < 0:
            raise ValueError(f"IndexConfig {self.symbol}: outlier_band must be >= 0")
        if not 1 <= self.min_components <= len(self.components):
            raise ValueError(
                f"IndexConfig {self.symbol}: min_components must be in 1..{len(self.components)}"
            )


class IndexSource(NamedTuple):
    """How one constituent fared in one index computation.

    ``price`` is 0 when the source was missing. ``weight`` is the configured weight (not renormalized).
    ``exclusion_reason`` is '' when included, else 'missing', 'stale' or 'outlier'.
    """

    venue: str
    symbol: str
    price: int
    weight: int
    included: bool
    exclusion_reason: str


class IndexPrice(NamedTuple):
    """A published index value (1e-9) with the fate of every constituent, computed at ``ts`` (ns)."""

    symbol: str
    price: int
    components: tuple[IndexSource, ...]
    ts: int


class IndexCalculator:
    """Composite spot index of one symbol.

    Method (Binance "Price Index" FAQ; BitMEX ".BXBT index"):

    1. A constituent with no price, or a non-positive one, is 'missing'; one whose price is older than
       ``max_staleness_ns`` is 'stale' (BitMEX drops an exchange that stops updating; Binance drops an
       exchange whose data is delayed or abnormal).
    2. ``m`` = the median of the fresh prices (unweighted; the mean of the two middle prices when their
       count is even, kept exact as a rational).
    3. A fresh source with ``|p - m| / m > outlier_band`` is an 'outlier' (Binance: an exchange deviating
       from the median by more than a band gets weight 0). The comparison is exact integer arithmetic.
    4. index = sum(w_i * p_i) / sum(w_i) over the survivors (weights renormalized over the survivors),
       rounded half-even to 1e-9.

    ``compute`` returns ``None`` when fewer than ``min_components`` survive: no index is published rather
    than a misleading one (the caller keeps the last value and may report a quality flag). To learn which
    sources failed, call ``explain``, which always returns the per-source breakdown.
    """

    __slots__ = ("config",)

    def __init__(self, config: IndexConfig) -> None:
        self.config = config

    def explain(
        self, prices: Mapping[tuple[str, str], tuple[int, int]], now_ns: int
    ) -> tuple[int | None, tuple[IndexSource, ...]]:
        """The index price (or None) and the per-source breakdown, whatever the outcome."""
        cfg = self.config
        oldest = now_ns - cfg.max_staleness_ns
        fresh: list[int] = []
        reasons: list[str] = []
        quoted: list[int] = []
        for c in cfg.components:
            entry = prices.get((c.venue, c.symbol))
            if entry is None or entry[0] <= 0:
                reasons.append(EXCLUDED_MISSING)
                quoted.append(entry[0] if entry is not None and entry[0] > 0 else 0)
                continue
            price, ts = entry
            quoted.append(price)
            if ts < oldest:
                reasons.append(EXCLUDED_STALE)
            else:
                reasons.append(EXCLUDED_NONE)
                fresh.append(price)
        if not fresh:
            return None, self._sources(quoted, reasons)
        fresh.sort()
        n = len(fresh)
        # Median as the rational mid2 / 2, so that the band test stays exact for an even count.
        mid2 = 2 * fresh[n // 2] if n & 1 else fresh[n // 2 - 1] + fresh[n // 2]
        # |p - mid2/2| / (mid2/2) > band / SCALE  <=>  |2p - mid2| * SCALE > band * mid2
        limit = cfg.outlier_band * mid2
        num = 0
        den = 0
        count = 0
        for i, c in enumerate(cfg.components):
            if reasons[i]:
                continue
            p = quoted[i]
            if abs(2 * p - mid2) * SCALE > limit:
                reasons[i] = EXCLUDED_OUTLIER
                continue
            num += c.weight * p
            den += c.weight
            count += 1
        sources = self._sources(quoted, reasons)
        if count < cfg.min_components:
            return None, sources
        return div_round(num, den), sources

    def compute(self, prices: Mapping[tuple[str, str], tuple[int, int]], now_ns: int) -> IndexPrice | None:
        """The index at ``now_ns`` from ``(venue, symbol) -> (price, ts_ns)``; None if too few survive."""
        price, sources = self.explain(prices, now_ns)
        if price is None:
            return None
        return IndexPrice(self.config.symbol, price, sources, now_ns)

    def _sources(self, quoted: list[int], reasons: list[str]) -> tuple[IndexSource, ...]:
        return tuple(
            IndexSource(c.venue, c.symbol, quoted[i], c.weight, not reasons[i], reasons[i])
            for i, c in enumerate(self.config.components)
        )


# -------------------------------------------------------------------------------- time-decay factor

DECAY_BITS: Final = 62
"""Decay factors are ints at scale ``2**DECAY_BITS`` (``DECAY_ONE`` is 1.0)."""
DECAY_ONE: Final = 1 << DECAY_BITS
_FRACTION_BITS: Final = 48


def _build_root_table() -> tuple[int, ...]:
    # 2 ** -(2 ** -i) at scale 2**62 for i = 1..48, computed once with 60 significant digits. Decimal
    # arithmetic is specified digit for digit, so the table is the same on every platform.
    ctx = Context(prec=60)
    table = []
    for i in range(1, _FRACTION_BITS + 1):
        exponent = ctx.divide(Decimal(-1), Decimal(2) ** i)
        value = ctx.power(Decimal(2), exponent)
        table.append(int(ctx.multiply(value, Decimal(DECAY_ONE)).to_integral_value()))
    return tuple(table)


_ROOTS: Final = _build_root_table()


def decay_factor(elapsed_ns: int, half_life_ns: int) -> int:
    """``2 ** (-elapsed / half_life)`` as an int at scale ``2**62``, by integer arithmetic only.

    The exponent ``q = elapsed / half_life`` is an exact rational. Its integer part is a shift; its
    fractional part is expanded to 48 binary digits ``b_i`` and ``2**-f = prod(2 ** -(b_i / 2**i))`` is a
    product of table entries. Truncating the exponent (at most 2**-48) and each product (2**-62) keeps
    the result within ~3e-15 relative of the true value. Deterministic; at most 48 int multiplications.
    """
    if elapsed_ns <= 0:
        return DECAY_ONE
    whole, rem = divmod(elapsed_ns, half_life_ns)
    if whole >= DECAY_BITS:
        return 0
    acc = DECAY_ONE
    for root in _ROOTS:
        if not rem:
            break
        rem <<= 1
        if rem >= half_life_ns:
            rem -= half_life_ns
            acc = (acc * root) >> DECAY_BITS
    return acc >> whole


# ------------------------------------------------------------------------------------------- mark


@dataclass(frozen=True, slots=True)
class MarkConfig:
    """Mark price of one perpetual.

    ``symbol``: the perpetual; ``index_symbol``: its index. ``ema_half_life_ns``: half-life of the basis
    EMA. The default, 104 s, gives the EMA the same mean age (150 s) as the 5-minute simple moving average
    of the basis in Binance's "Mark Price" FAQ (an EMA with time constant tau = 150 s has half-life
    150 s * ln 2 ~= 104 s).
    """

    symbol: str
    index_symbol: str
    ema_half_life_ns: int = 104 * SECOND_NS

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("MarkConfig.symbol must be non-empty")
        if not self.index_symbol:
            raise ValueError(f"MarkConfig {self.symbol}: index_symbol must be non-empty")
        if self.ema_half_life_ns <= 0:
            raise ValueError(f"MarkConfig {self.symbol}: ema_half_life_ns must be > 0")


class MarkPrice(NamedTuple):
    """``mark_price = index_price + premium_ema`` (all 1e-9), as of ``ts`` (ns)."""

    symbol: str
    mark_price: int
    index_price: int
    premium_ema: int
    ts: int


class MarkPriceTracker:
    """mark = index + EMA(premium), premium = mid(perp impact bid, impact ask) - index.

    Sources: Binance "Mark Price" FAQ (mark = median(index * (1 + last funding rate * time to funding /
    interval), index + 5-minute moving average of the basis, last price)); BitMEX "Fair Price Marking"
    (mark = index * (1 + funding basis)). This tracker implements the "index + moving average of the
    basis" term only, with the moving average replaced by a continuous-time EMA.

    EMA: the premium is treated as a step function, each observed premium holding until the next
    observation. Over an elapsed ``dt`` the EMA moves toward the held premium by ``1 - d`` with
    ``d = 2 ** (-dt / half_life)`` (see ``decay_factor``):  ``ema' = d * ema + (1 - d) * held``. Hence the
    result does not depend on how often ``update`` is called (splitting dt multiplies the decay factors),
    and a new premium starts to count only as time passes. The first valid premium seeds the EMA. The EMA
    is kept at scale 1e-18 internally and rounded half-even to 1e-9 on output.

    A missing side (price <= 0) or a crossed impact book (bid > ask) gives no new premium observation: the
    held premium keeps holding. Until a first premium is seen, ``premium_ema`` is 0 and mark = index. A
    ``now_ns`` earlier than the last update is treated as no time passing.
    """

    __slots__ = ("_ema", "_held", "_last_ns", "config")

    def __init__(self, config: MarkConfig) -> None:
        self.config = config
        self._ema: int | None = None  # 1e-18
        self._held = 0  # premium at 1e-18 currently held
        self._last_ns = 0

    def update(self, index_price: int, perp_bid: int, perp_ask: int, now_ns: int) -> MarkPrice:
        """Fold the time elapsed since the last call, record the new premium, return the mark."""
        ema = self._ema
        if ema is not None:
            dt = now_ns - self._last_ns
            if dt > 0:
                d = decay_factor(dt, self.config.ema_half_life_ns)
                ema = (ema * d + self._held * (DECAY_ONE - d)) >> DECAY_BITS
                self._last_ns = now_ns
        if perp_bid > 0 and perp_ask > 0 and perp_bid <= perp_ask:
            # premium = (bid + ask) / 2 - index, at 1e-18: ((bid + ask) * SCALE) // 2 is exact (SCALE even).
            self._held = (perp_bid + perp_ask - 2 * index_price) * (SCALE // 2)
            if ema is None:
                ema = self._held
                self._last_ns = now_ns
        self._ema = ema
        premium = div_round(ema, SCALE) if ema is not None else 0
        return MarkPrice(self.config.symbol, index_price + premium, index_price, premium, now_ns)

    @property
    def premium_ema(self) -> int:
        """The current EMA of the premium at 1e-9 (0 before the first observation)."""
        return div_round(self._ema, SCALE) if self._ema is not None else 0

    def reset(self) -> None:
        """Forget all history (e.g. after a long outage of the perp book)."""
        self._ema = None
        self._held = 0
        self._last_ns = 0


# ---------------------------------------------------------------------------------------- funding


@dataclass(frozen=True, slots=True)
class FundingConfig:
    """Funding schedule and limits of one perpetual.

    ``interval_ns``: funding period (8 h). ``interest_rate``: per interval at 1e-9 (0.01% = ``100_000``).
    ``clamp``: |rate| cap at 1e-9 (0.75% = ``7_500_000``). ``anchor_ns``: a funding time; funding times are
    ``anchor_ns + k * interval_ns``. The default 0 (the Unix epoch, midnight UTC) with 8 h gives
    00:00/08:00/16:00 UTC. ``max_hold_ns``: a premium sample counts for at most this long after it was
    taken (so a dead feed does not stretch one old sample over hours).
    """

    symbol: str
    interval_ns: int = 8 * HOUR_NS
    interest_rate: int = 100_000
    clamp: int = 7_500_000
    anchor_ns: int = 0
    max_hold_ns: int = MINUTE_NS

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("FundingConfig.symbol must be non-empty")
        if self.interval_ns <= 0:
            raise ValueError(f"FundingConfig {self.symbol}: interval_ns must be > 0")
        if self.clamp < 0:
            raise ValueError(f"FundingConfig {self.symbol}: clamp must be >= 0")
        if abs(self.interest_rate) > SCALE:
            raise ValueError(f"FundingConfig {self.symbol}: interest_rate must be within +-100%")
        if self.max_hold_ns <= 0:
            raise ValueError(f"FundingConfig {self.symbol}: max_hold_ns must be > 0")


class FundingRate(NamedTuple):
    """A funding rate (1e-9 per interval) and its schedule.

    Predicted (from ``FundingTracker.rate``): the rate that would apply at ``next_funding_time`` given the
    premium so far; ``countdown_ns = next_funding_time - ts``. Settled (from ``FundingTracker.settle``): the
    rate that applied at a funding time; then ``next_funding_time == ts ==`` that funding time and
    ``countdown_ns == 0``.
    """

    symbol: str
    rate: int
    premium_rate: int
    interest_rate: int
    next_funding_time: int
    countdown_ns: int
    interval_ns: int
    ts: int


def next_funding_time(now_ns: int, interval_ns: int, anchor_ns: int = 0) -> int:
    """The first funding time strictly after ``now_ns`` (at a funding time exactly, the next one)."""
    return anchor_ns + ((now_ns - anchor_ns) // interval_ns + 1) * interval_ns


def premium_index(index: int, impact_bid: int, impact_ask: int) -> int:
    """Binance's premium index at 1e-9: ``(max(0, bid - index) - max(0, index - ask)) / index``."""
    if index <= 0:
        raise ValueError(f"premium_index: index must be > 0, got {index}")
    return div_round((max(0, impact_bid - index) - max(0, index - impact_ask)) * SCALE, index)


class FundingTracker:
    """Premium index averaged over the funding interval, and the clamped funding rate.

    Formula (the spec given to this project): ``rate = clamp(P_avg + I, -clamp, +clamp)`` per interval,
    funding at 00:00/08:00/16:00 UTC, where ``P`` is the premium index of Binance's "Funding Rate" FAQ,
    ``P = (max(0, impact_bid - index) - max(0, index - impact_ask)) / index``, and ``I`` the interest rate
    (0.01% per 8 h).

    Difference from the venues: Binance and BitMEX ("Perpetual Contracts Funding") use
    ``F = P_avg + clamp(I - P_avg, -0.05%, +0.05%)`` -- when |P_avg - I| <= 0.05% the rate is exactly I --
    and then cap F (Binance per contract, e.g. +-0.75%; BitMEX at 75% of the initial-minus-maintenance
    margin). Binance averages its 5-second premium samples with weights 1, 2, ..., n (later samples count
    more); BitMEX takes a TWAP of minute samples. Here there is no dead band around I.

    Averaging (this implementation): time-weighted. Each sample holds its value until the next sample, at
    most ``max_hold_ns``; ``P_avg = integral(P dt) / covered time`` over the current interval, exact ints,
    rounded half-even to 1e-9. With no covered time yet, ``P_avg`` is the held sample if one is held, else
    0. A held sample straddling a funding time is split: the part before counts in the closing interval,
    the rest in the new one. The first interval after start-up averages only the time observed.

    Settlement: when ``sample``, ``rate`` or ``settle`` sees a time at or past the end of the interval, the
    interval closes: its rate is queued as a settled ``FundingRate`` (``ts`` = the funding time) and the
    average restarts. ``settle(now_ns)`` returns the queued settlements in order and forgets them, so each
    is returned exactly once (normally zero or one per call; several after a gap longer than an interval,
    the skipped intervals settling with P_avg = 0 unless a held sample reached into them).
    """

    __slots__ = (
        "_covered",
        "_end",
        "_held",
        "_held_until",
        "_integral",
        "_last_ns",
        "_settled",
        "config",
    )

    def __init__(self, config: FundingConfig) -> None:
        self.config = config
        self._end: int | None = None  # funding time that closes the current interval
        self._integral = 0  # sum of P * dt (1e-9 * ns) over the current interval
        self._covered = 0  # ns of the current interval covered by samples
        self._held: int | None = None  # last premium index sample
        self._last_ns = 0  # time up to which the held sample has been integrated
        self._held_until = 0  # the held sample stops counting after this time
        self._settled: list[FundingRate] = []

    # -- public

    def sample(self, index: int, impact_bid: int, impact_ask: int, now_ns: int) -> int | None:
        """Record the premium index at ``now_ns``; returns it, or None when a side is missing (<= 0).

        Raises ValueError for a non-positive index.
        """
        if index <= 0:
            raise ValueError(f"FundingTracker {self.config.symbol}: index must be > 0, got {index}")
        self._advance(now_ns)
        if impact_bid <= 0 or impact_ask <= 0:
            return None
        p = premium_index(index, impact_bid, impact_ask)
        self._held = p
        self._last_ns = max(now_ns, self._last_ns)
        self._held_until = self._last_ns + self.config.max_hold_ns
        return p

    def rate(self, now_ns: int) -> FundingRate:
        """The predicted rate for the next funding time, from the premium averaged so far."""
        self._advance(now_ns)
        assert self._end is not None
        avg = self._average()
        end = self._end
        return self._make(avg, end, max(0, end - now_ns), now_ns)

    def settle(self, now_ns: int) -> tuple[FundingRate, ...]:
        """Settlements of intervals that ended at or before ``now_ns`` not yet returned, oldest first."""
        self._advance(now_ns)
        out = tuple(self._settled)
        self._settled.clear()
        return out

    @property
    def next_funding_time(self) -> int | None:
        """End of the current interval (None before the first call)."""
        return self._end

    # -- internals

    def _make(self, avg: int, end: int, countdown: int, ts: int) -> FundingRate:
        cfg = self.config
        raw = avg + cfg.interest_rate
        rate = -cfg.clamp if raw < -cfg.clamp else min(raw, cfg.clamp)
        return FundingRate(cfg.symbol, rate, avg, cfg.interest_rate, end, countdown, cfg.interval_ns, ts)

    def _average(self) -> int:
        if self._covered:
            return div_round(self._integral, self._covered)
        if self._held is not None and self._last_ns < self._held_until:
            return self._held
        return 0

    def _integrate_to(self, t: int) -> None:
        """Add the held sample's contribution over (_last_ns, t], capped at _held_until."""
        if self._held is None or t <= self._last_ns:
            return
        stop = min(t, self._held_until)
        if stop > self._last_ns:
            dt = stop - self._last_ns
            self._integral += self._held * dt
            self._covered += dt
        self._last_ns = t

    def _advance(self, now_ns: int) -> None:
        cfg = self.config
        if self._end is None:
            self._end = next_funding_time(now_ns, cfg.interval_ns, cfg.anchor_ns)
            self._last_ns = now_ns
            return
        while now_ns >= self._end:
            end = self._end
            self._integrate_to(end)
            self._settled.append(self._make(self._average(), end, 0, end))
            self._integral = 0
            self._covered = 0
            self._end = end + cfg.interval_ns
            if self._held is not None and self._held_until <= end:
                self._held = None  # expired: the next interval starts with no sample
        self._integrate_to(now_ns)
