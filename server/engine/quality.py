"""Data-quality checks: spike detection on prices, quality flags and their counters.

This module owns ``SpikeDetector`` (a robust outlier test over a rolling window of accepted prices),
the ``QualityFlag`` record the engine emits for any data problem (spikes, late or duplicate trades,
crossed books, sequence gaps, stale venues, trades or book changes during a halt, book hash mismatches,
source switches of a composite venue (see ``sources``)) and ``QualityCounters``.

Quality checks only *flag*: the caller never drops a flagged trade or quote (the exceptions are a
duplicate trade and what arrives during a trading halt, which the engine refuses and flags). It still
publishes it (with the flag alongside) and still applies it to books and candles; the flag is information
for consumers and for operators. What a flag changes is the detector's own reference: a flagged price does not enter the
window, so one bad print does not poison the median it is judged against.

Prices are ints at 1e-9 (see ``numbers``); all arithmetic is integer.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, NamedTuple

from server.engine.numbers import SCALE

MAD_TO_SIGMA_NUM: Final = 14826
MAD_TO_SIGMA_DEN: Final = 10000
"""1.4826 = 14826 / 10000: MAD * 1.4826 estimates the standard deviation of a normal sample."""


class QualityKind(IntEnum):
    """What a quality flag is about."""

    PRICE_SPIKE = 1
    QUOTE_SPIKE = 2
    LATE_TRADE = 3
    DUPLICATE_TRADE = 4
    CROSSED_BOOK = 5
    SEQUENCE_GAP = 6
    STALE_VENUE = 7
    TRADE_WHILE_HALTED = 8
    BOOK_CHANGE_WHILE_HALTED = 9
    BOOK_HASH_MISMATCH = 10
    SOURCE_FAILOVER = 11
    """A composite venue left its active source (silent, resyncing or down) for a lower-ranked one or none."""
    SOURCE_RESTORED = 12
    """A composite venue took a higher-ranked source back (or its first source, or one after none)."""


class QualityFlag(NamedTuple):
    """One detected problem. ``value``: the suspect number (e.g. the price, 1e-9; a gap size);
    ``reference``: what it was judged against (e.g. the window median; 0 if none)."""

    venue: str
    symbol: str
    kind: QualityKind
    value: int
    reference: int
    detail: str
    ts_event: int
    ts_recv: int


class QualityCounters:
    """Counts of quality flags per (kind, venue, symbol)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[QualityKind, str, str], int] = {}

    def increment(self, kind: QualityKind, venue: str, symbol: str, n: int = 1) -> int:
        """Add ``n`` and return the new count."""
        key = (kind, venue, symbol)
        value = self._counts.get(key, 0) + n
        self._counts[key] = value
        return value

    def record(self, flag: QualityFlag) -> int:
        """``increment`` for a flag."""
        return self.increment(flag.kind, flag.venue, flag.symbol)

    def get(self, kind: QualityKind, venue: str, symbol: str) -> int:
        """The current count (0 if never incremented)."""
        return self._counts.get((kind, venue, symbol), 0)

    def snapshot(self) -> dict[tuple[QualityKind, str, str], int]:
        """A copy of all counts."""
        return dict(self._counts)

    def clear(self) -> None:
        """Reset every count to zero."""
        self._counts.clear()


@dataclass(frozen=True, slots=True)
class SpikeConfig:
    """Parameters of ``SpikeDetector``.

    ``window``: accepted prices kept. ``k``: allowed deviation in robust standard deviations
    (1.4826 * MAD), a whole number. ``min_relative``: floor of the allowed deviation relative to the
    median, at 1e-9 (0.5% = ``5_000_000``), so a quiet market (MAD ~ 0) does not flag every tick.
    ``warmup``: accepted prices needed before anything is flagged. ``refresh_every``: accepted prices
    between recomputations of median and MAD. ``reanchor_after``: consecutive flags, all on the same side of
    the median, after which the market is taken to have really moved: the window restarts from them.
    """

    window: int = 64
    k: int = 10
    min_relative: int = 5_000_000
    warmup: int = 16
    refresh_every: int = 64
    reanchor_after: int = 8

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("SpikeConfig.window must be >= 1")
        if self.k < 0:
            raise ValueError("SpikeConfig.k must be >= 0")
        if self.min_relative < 0:
            raise ValueError("SpikeConfig.min_relative must be >= 0")
        if not 1 <= self.warmup <= self.window:
            raise ValueError(f"SpikeConfig.warmup must be in 1..window ({self.window})")
        if self.refresh_every < 1:
            raise ValueError("SpikeConfig.refresh_every must be >= 1")
        if not 1 <= self.reanchor_after <= self.window:
            raise ValueError(f"SpikeConfig.reanchor_after must be in 1..window ({self.window})")


def _median(sorted_values: list[int]) -> int:
    """Median of a sorted non-empty list; the mean of the two middle values is rounded toward -inf."""
    n = len(sorted_values)
    h = n // 2
    if n & 1:
        return sorted_values[h]
    return (sorted_values[h - 1] + sorted_values[h]) // 2


def _mad(s: list[int], med: int) -> int:
    """Median of ``|x - med|`` over the sorted non-empty list ``s``, in O(log n) without a second sort.

    The deviations form two sorted runs: ``A[i] = med - s[p - 1 - i]`` (values below ``med``) and
    ``B[j] = s[p + j] - med`` (the rest). The k-th smallest of their union is found by binary search on
    how many come from A. The middle of an even count is rounded toward -inf, as in ``_median``.
    """
    n = len(s)
    p = bisect_left(s, med)
    na = p
    nb = n - p

    def kth(k: int) -> int:
        # smallest i in [lo, hi] with A[i] >= B[k - i] (A[na] = +inf, B[-1] = -inf)
        lo = k + 1 - nb if k + 1 > nb else 0
        hi = k + 1 if k + 1 < na else na
        while lo < hi:
            i = (lo + hi) >> 1
            if med - s[p - 1 - i] < s[p + k - i] - med:
                lo = i + 1
            else:
                hi = i
        j = k + 1 - lo  # taken from B
        a_last = med - s[p - lo] if lo else -1
        b_last = s[p + j - 1] - med if j else -1
        return a_last if a_last > b_last else b_last

    h = n >> 1
    if n & 1:
        return kth(h)
    return (kth(h - 1) + kth(h)) >> 1


_UNBOUNDED = 1 << 256
"""Band edge while warming up: every price is inside."""


class SpikeDetector:
    """Flags a price far from the median of recent accepted prices.

    A price ``p`` is a spike when ``|p - median| > max(k * 1.4826 * MAD, min_relative * median)``, with
    median and MAD (median absolute deviation from the median) of the window of accepted prices. Both are
    recomputed only every ``refresh_every`` accepted prices (an O(window log window) sort, amortized), and
    folded into a band [median - threshold, median + threshold], so ``check`` is O(1): one chained
    comparison and a ring write.

    During warm-up (fewer than ``warmup`` accepted prices) nothing is flagged. A flagged price is counted
    (``spikes``) but not added to the window. If ``reanchor_after`` prices in a row are flagged on the
    same side of the median, the market has moved (a real gap, not a bad print): the window restarts from
    those prices and the reference is recomputed, so the detector cannot lock out a new price level
    forever. The prices that led to the re-anchor are still reported as spikes.

    Quotes: check the mid (or each side) with a separate detector per stream.
    """

    __slots__ = (
        "_accepted_before",
        "_accepted_since",
        "_head",
        "_hi",
        "_lo",
        "_mad",
        "_median",
        "_recent_flags",
        "_refresh_every",
        "_ring",
        "_threshold",
        "_window_size",
        "config",
        "reanchors",
        "spikes",
    )

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config if config is not None else SpikeConfig()
        self._window_size = self.config.window
        self._refresh_every = self.config.refresh_every
        self._ring: list[int] = []
        self._head = 0  # next slot to overwrite once the ring is full
        self._median = 0
        self._mad = 0
        self._threshold = -1  # < 0: no reference yet (warm-up)
        self._lo = -_UNBOUNDED  # the accepted band [median - threshold, median + threshold]
        self._hi = _UNBOUNDED
        self._accepted_since = 0
        self._accepted_before = 0
        self._recent_flags: list[int] = []
        self.spikes = 0
        self.reanchors = 0

    @property
    def median(self) -> int:
        """The reference median (1e-9); 0 during warm-up."""
        return self._median

    @property
    def mad(self) -> int:
        """The reference MAD (1e-9); 0 during warm-up."""
        return self._mad

    @property
    def threshold(self) -> int:
        """Largest |p - median| not flagged; -1 during warm-up."""
        return self._threshold

    @property
    def window(self) -> tuple[int, ...]:
        """Accepted prices in the window, oldest first."""
        r, h = self._ring, self._head
        return tuple(r[h:] + r[:h])

    def check(self, price: int) -> bool:
        """True if ``price`` is a spike (not added to the window); else False (added)."""
        if self._lo <= price <= self._hi:  # the hot path: inside the band, or warming up
            ring = self._ring
            if len(ring) == self._window_size:
                h = self._head
                ring[h] = price
                h += 1
                self._head = 0 if h == len(ring) else h
            else:
                ring.append(price)
            n = self._accepted_since + 1
            self._accepted_since = n
            if n >= self._refresh_every or (self._threshold < 0 and len(ring) >= self.config.warmup):
                self._refresh()
            if self._recent_flags:
                self._recent_flags.clear()
            return False
        self.spikes += 1
        self._on_flag(price)
        return True

    @property
    def checks(self) -> int:
        """Prices checked so far (accepted + flagged)."""
        return self._accepted_before + self._accepted_since + self.spikes

    def reset(self) -> None:
        """Forget the window (e.g. after a venue reconnect); counters are kept."""
        self._ring.clear()
        self._head = 0
        self._median = 0
        self._mad = 0
        self._threshold = -1
        self._lo = -_UNBOUNDED
        self._hi = _UNBOUNDED
        self._accepted_before += self._accepted_since
        self._accepted_since = 0
        self._recent_flags.clear()

    def _accept(self, price: int) -> None:
        ring = self._ring
        if len(ring) < self.config.window:
            ring.append(price)
        else:
            ring[self._head] = price
            self._head += 1
            if self._head == len(ring):
                self._head = 0
        self._accepted_since += 1

    def _on_flag(self, price: int) -> None:
        recent = self._recent_flags
        if recent and (recent[-1] > self._median) != (price > self._median):
            recent.clear()  # a flag on the other side: bad prints both ways, not a level shift
        recent.append(price)
        if len(recent) >= self.config.reanchor_after:
            self.reanchors += 1
            moved = tuple(recent)
            self.reset()
            for p in moved:
                self._accept(p)
            self._refresh()

    def _refresh(self) -> None:
        cfg = self.config
        self._accepted_before += self._accepted_since
        self._accepted_since = 0
        values = sorted(self._ring)
        med = _median(values)
        mad = _mad(values, med)
        self._median = med
        self._mad = mad
        # d > k*1.4826*MAD  <=>  d > floor(k*14826*MAD / 10000) for an integer d; likewise for the floor.
        robust = cfg.k * MAD_TO_SIGMA_NUM * mad // MAD_TO_SIGMA_DEN
        relative = cfg.min_relative * abs(med) // SCALE
        self._threshold = t = max(robust, relative)
        self._lo = med - t
        self._hi = med + t
