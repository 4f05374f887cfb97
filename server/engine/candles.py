"""OHLCV candles for one (venue, symbol) at ten UTC-aligned intervals, built from trades.

Owns: the ``Interval`` enum and period arithmetic (``period_start`` / ``period_end``: fixed-length
intervals are aligned to the Unix epoch, 1w to Monday 00:00 UTC, 1M to the calendar month, all by event
time), the ``Candle`` record, ``CandleConfig`` and ``CandleSeries``.

How a series works (fast path first):

* Per trade only the smallest configured interval's in-progress accumulator is touched (plain slot
  attributes, no allocation). When its period rolls over, the closed candle is folded into the next
  larger interval whose periods contain it (S1 -> M1 -> ... -> D1, and D1 -> W1, D1 -> MN1: weeks do not
  nest in months), and so on upward, so a larger interval costs something only when a smaller one closes.
* The series keeps a watermark: the largest event time seen (trades or ``advance``). A period closes
  once the watermark reaches its end (``end`` is exclusive: a trade at exactly ``end`` closes it).
* A trade behind the watermark by at most ``grace_ns`` still lands. If its period is still in progress
  at some level it is added there; the closed candles of every smaller level that cover it are amended
  and re-emitted with ``correction=True``. A trade further behind is refused (``add_trade`` -> False).
* Candles are defined as those of the trades stably sorted by event time in arrival order: trades with
  distinct times give the same candles whatever order they arrive in (within the grace); for equal
  times the later arrival counts as later (Binance klines: the first trade id of the ms is the open).

Prices and sizes are ints at 1e-9; ``quote_volume`` is the exact sum of price*size at 1e-18.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, NamedTuple

from server.engine.events import Side
from server.engine.numbers import div_round

if TYPE_CHECKING:
    from server.engine.ticker import RollingTicker, Ticker

SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
WEEK_NS = 7 * DAY_NS
_MONDAY_OFFSET_NS = 4 * DAY_NS  # 1970-01-01 was a Thursday; 1970-01-05 a Monday
_NEVER = -(1 << 62)


class Interval(IntEnum):
    """Candle interval; numbers match marketdata.v1.Interval."""

    S1 = 1
    M1 = 2
    M5 = 3
    M15 = 4
    M30 = 5
    H1 = 6
    H4 = 7
    D1 = 8
    W1 = 9
    MN1 = 10


ALL_INTERVALS: tuple[Interval, ...] = tuple(Interval)

# Index = Interval value; 0 for the calendar month.
_LENGTH: tuple[int, ...] = (
    0,
    SECOND_NS,
    MINUTE_NS,
    5 * MINUTE_NS,
    15 * MINUTE_NS,
    30 * MINUTE_NS,
    HOUR_NS,
    4 * HOUR_NS,
    DAY_NS,
    WEEK_NS,
    0,
)


def interval_length(interval: Interval) -> int:
    """Length in ns of a fixed-length interval; 0 for MN1 (calendar month)."""
    return _LENGTH[interval]


def _civil_from_days(days: int) -> tuple[int, int]:
    """(year, month) of a day number since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month


def _days_from_civil(year: int, month: int) -> int:
    """Day number since 1970-01-01 of the first day of (year, month)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_bounds(ts_ns: int) -> tuple[int, int]:
    year, month = _civil_from_days(ts_ns // DAY_NS)
    start = _days_from_civil(year, month) * DAY_NS
    end = _days_from_civil(year + 1, 1) if month == 12 else _days_from_civil(year, month + 1)
    return start, end * DAY_NS


def period_start(interval: Interval, ts_ns: int) -> int:
    """Start (ns, inclusive) of the UTC period of ``interval`` that contains ``ts_ns``."""
    n = _LENGTH[interval]
    if n:
        if interval is Interval.W1:
            return ts_ns - (ts_ns - _MONDAY_OFFSET_NS) % n
        return ts_ns - ts_ns % n
    return _month_bounds(ts_ns)[0]


def period_end(interval: Interval, ts_ns: int) -> int:
    """End (ns, exclusive) of the UTC period of ``interval`` that contains ``ts_ns``."""
    n = _LENGTH[interval]
    if n:
        return period_start(interval, ts_ns) + n
    return _month_bounds(ts_ns)[1]


class Candle(NamedTuple):
    """One OHLCV bar. ``close_time`` is the exclusive end. Flat bars (no trades) have trade_count 0,
    all four prices at the previous close and ``ts_event == ts_recv == open_time``."""

    venue: str
    symbol: str
    interval: Interval
    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    """Exact sum of price*size, scale 1e-18."""
    buy_volume: int
    sell_volume: int
    trade_count: int
    closed: bool
    correction: bool
    ts_event: int
    """Event time of the last trade included."""
    ts_recv: int
    """Largest receive time among the trades included."""

    @property
    def vwap(self) -> int:
        """quote_volume / volume at 1e-9, rounded half-even; the close when volume is 0."""
        return div_round(self.quote_volume, self.volume) if self.volume else self.close


class EmptyPolicy(Enum):
    """What a period without trades produces."""

    SKIP = "skip"
    """No candle (Binance REST klines with the zero-volume ones dropped)."""
    FLAT = "flat"
    """A zero-volume bar at the previous close (Kraken OHLC, Binance empty klines)."""


@dataclass(frozen=True, slots=True)
class CandleConfig:
    """Which intervals a series builds and how it treats late trades and empty periods."""

    intervals: tuple[Interval, ...] = ALL_INTERVALS
    grace_ns: int = 5 * SECOND_NS
    empty_policy: EmptyPolicy = EmptyPolicy.SKIP
    max_flat_fill: int = 1440
    """At most this many flat bars per interval per rollover (the most recent ones)."""
    history: int = 1000
    """Closed candles kept per interval."""

    def __post_init__(self) -> None:
        ivs = tuple(self.intervals)
        if not ivs:
            raise ValueError("CandleConfig.intervals must not be empty")
        if not all(isinstance(i, Interval) for i in ivs):
            raise ValueError(f"CandleConfig.intervals must be Interval members: {ivs!r}")
        if len(set(ivs)) != len(ivs):
            raise ValueError(f"CandleConfig.intervals has duplicates: {ivs!r}")
        object.__setattr__(self, "intervals", tuple(sorted(ivs)))
        if not isinstance(self.grace_ns, int) or self.grace_ns < 0:
            raise ValueError(f"CandleConfig.grace_ns must be an int >= 0: {self.grace_ns!r}")
        if not isinstance(self.empty_policy, EmptyPolicy):
            raise ValueError(f"CandleConfig.empty_policy must be an EmptyPolicy: {self.empty_policy!r}")
        if not isinstance(self.max_flat_fill, int) or self.max_flat_fill < 0:
            raise ValueError(f"CandleConfig.max_flat_fill must be an int >= 0: {self.max_flat_fill!r}")
        if not isinstance(self.history, int) or self.history < 1:
            raise ValueError(f"CandleConfig.history must be an int >= 1: {self.history!r}")


class _Level:
    """One interval: the in-progress accumulator (plain slots) and the closed history."""

    __slots__ = (
        "buy",
        "close",
        "end",
        "first",
        "hfirst",
        "high",
        "hist",
        "hstart",
        "interval",
        "last",
        "low",
        "n",
        "open",
        "quote",
        "recv",
        "sell",
        "src",
        "start",
        "ups",
        "visible",
        "vol",
    )

    def __init__(self, interval: Interval, visible: bool) -> None:
        self.interval = interval
        self.visible = visible
        self.start = _NEVER
        self.end = _NEVER
        self.src: _Level | None = None
        self.ups: list[_Level] = []
        self.hist: list[Candle] = []
        self.hstart: list[int] = []  # open_time of each hist entry (for bisect)
        self.hfirst: list[int] = []  # event time of each hist entry's first trade
        self.n = 0
        self.open = self.high = self.low = self.close = 0
        self.first = self.last = 0
        self.vol = self.quote = self.buy = self.sell = 0
        self.recv = _NEVER

    def add(self, price: int, size: int, side: Side, ts: int, recv: int) -> None:
        """Add one trade in any time order."""
        if self.n:
            if ts < self.first:
                self.open = price
                self.first = ts
            if ts >= self.last:
                self.close = price
                self.last = ts
            self.high = max(self.high, price)
            self.low = min(self.low, price)
        else:
            self.open = self.high = self.low = self.close = price
            self.first = self.last = ts
        self.n += 1
        self.vol += size
        self.quote += price * size
        if side is Side.BUY:
            self.buy += size
        elif side is Side.SELL:
            self.sell += size
        self.recv = max(self.recv, recv)

    def fold(self, lo: _Level) -> None:
        """Add the accumulated trades of ``lo`` (a period inside this one)."""
        if self.n:
            if lo.first < self.first:
                self.open = lo.open
                self.first = lo.first
            if lo.last >= self.last:
                self.close = lo.close
                self.last = lo.last
            if lo.high > self.high:  # noqa: PLR1730 (if is faster than max on this path)
                self.high = lo.high
            if lo.low < self.low:  # noqa: PLR1730
                self.low = lo.low
        else:
            self.open = lo.open
            self.high = lo.high
            self.low = lo.low
            self.close = lo.close
            self.first = lo.first
            self.last = lo.last
        self.n += lo.n
        self.vol += lo.vol
        self.quote += lo.quote
        self.buy += lo.buy
        self.sell += lo.sell
        if lo.recv > self.recv:  # noqa: PLR1730
            self.recv = lo.recv

    def reset(self) -> None:
        self.n = 0
        self.vol = self.quote = self.buy = self.sell = 0
        self.recv = _NEVER


def _nests(small: Interval, large: Interval) -> bool:
    """Every ``small`` period lies inside one ``large`` period (small < large)."""
    return not (small is Interval.W1 and large is Interval.MN1)


class CandleSeries:
    """Candles of one (venue, symbol) for the configured intervals. Not thread-safe; no clock.

    Feed ``add_trade`` with every trade and ``advance`` with clock ticks (event-time domain: the
    watermark also bounds the grace, so a tick ahead of venue event time makes trades late).
    Optionally owns a ``RollingTicker`` fed with every closed (and corrected) 1m candle.
    """

    __slots__ = (
        "_base",
        "_by_iv",
        "_flat",
        "_grace",
        "_keep",
        "_levels",
        "_max_fill",
        "_minute",
        "_started",
        "_ticker",
        "_wm",
        "config",
        "symbol",
        "venue",
    )

    def __init__(
        self,
        venue: str,
        symbol: str,
        config: CandleConfig | None = None,
        *,
        ticker: RollingTicker | None = None,
    ) -> None:
        cfg = config if config is not None else CandleConfig()
        self.venue = venue
        self.symbol = symbol
        self.config = cfg
        ivs = list(cfg.intervals)
        visible = set(ivs)
        if Interval.W1 in visible and Interval.MN1 in visible and ivs[0] >= Interval.W1:
            ivs.insert(0, Interval.D1)  # hidden common source of W1 and MN1
        self._levels = [_Level(iv, iv in visible) for iv in ivs]
        for i, lv in enumerate(self._levels[1:], start=1):
            for lo in reversed(self._levels[:i]):
                if _nests(lo.interval, lv.interval):
                    lv.src = lo
                    lo.ups.append(lv)
                    break
        self._base = self._levels[0]
        self._by_iv = {lv.interval: lv for lv in self._levels if lv.visible}
        self._wm = _NEVER
        self._grace = cfg.grace_ns
        self._flat = cfg.empty_policy is EmptyPolicy.FLAT
        self._max_fill = cfg.max_flat_fill
        self._keep = cfg.history
        self._started = False
        self._ticker = ticker
        self._minute: _Level | None = None
        if ticker is not None:
            self._minute = self._by_iv.get(Interval.M1)
            if self._minute is None:
                raise ValueError("a RollingTicker needs Interval.M1 in CandleConfig.intervals")

    # ---- hot path -------------------------------------------------------------------------------

    def add_trade(
        self, price: int, size: int, side: Side, ts_event: int, ts_recv: int, out: list[object]
    ) -> bool:
        """Add one trade; append to ``out`` the candles it closed and any corrected closed candles.

        Returns False (nothing changed) when ``ts_event`` is more than ``grace_ns`` behind the watermark.
        """
        b = self._base
        if self._wm <= ts_event < b.end:
            self._wm = ts_event
            if b.n:
                if price > b.high:
                    b.high = price
                elif price < b.low:
                    b.low = price
                b.n += 1
            else:
                b.open = b.high = b.low = price
                b.first = ts_event
                b.n = 1
            b.close = price
            b.last = ts_event
            b.vol += size
            b.quote += price * size
            if side is Side.BUY:
                b.buy += size
            elif side is Side.SELL:
                b.sell += size
            if ts_recv > b.recv:  # noqa: PLR1730 (if is faster than max here)
                b.recv = ts_recv
            return True
        return self._add_slow(price, size, side, ts_event, ts_recv, out)

    def _add_slow(self, price: int, size: int, side: Side, ts: int, recv: int, out: list[object]) -> bool:
        wm = self._wm
        if ts < wm - self._grace:
            return False
        b = self._base
        if not self._started:
            self._started = True
            for lv in self._levels:
                lv.start = period_start(lv.interval, ts)
                lv.end = period_end(lv.interval, ts)
            if b.end <= wm:
                self._roll(b, wm, out)
        if ts >= b.end:
            self._roll(b, ts, out)
        if ts > wm:
            self._wm = ts
        if ts >= b.start:
            b.add(price, size, side, ts, recv)
            return True
        for lv in self._levels:  # late: the period of ts is closed at the base level
            if ts >= lv.start:
                src = lv.src
                if src is None or ts < src.start:
                    lv.add(price, size, side, ts, recv)
            elif lv.visible:
                self._amend(lv, price, size, side, ts, recv, out)
        return True

    def advance(self, ts: int, out: list[object]) -> None:
        """Move the watermark to ``ts`` (if later) and close every period whose end is <= ``ts``."""
        if ts <= self._wm:
            return
        self._wm = ts
        b = self._base
        if self._started and b.end <= ts:
            self._roll(b, ts, out)

    # ---- rollover -------------------------------------------------------------------------------

    def _roll(self, lv: _Level, t: int, out: list[object]) -> None:
        """Close ``lv``'s period (end <= t), fold it upward, move to the period containing ``t``."""
        end = lv.end
        if lv.n:
            for up in lv.ups:
                up.fold(lv)
            if lv.visible:
                self._push(
                    lv,
                    Candle(
                        self.venue,
                        self.symbol,
                        lv.interval,
                        lv.start,
                        end,
                        lv.open,
                        lv.high,
                        lv.low,
                        lv.close,
                        lv.vol,
                        lv.quote,
                        lv.buy,
                        lv.sell,
                        lv.n,
                        True,
                        False,
                        lv.last,
                        lv.recv,
                    ),
                    lv.first,
                    out,
                )
            lv.reset()
        elif self._flat and lv.visible and lv.hist:
            self._push(lv, self._flat_bar(lv, lv.start, end, lv.hist[-1].close), lv.start, out)
        n = _LENGTH[lv.interval]
        if n and t < end + n:
            lv.start = end
            lv.end = end + n
        else:
            new_start = period_start(lv.interval, t)
            if self._flat and lv.visible and lv.hist and new_start > end:
                self._fill(lv, end, new_start, out)
            lv.start = new_start
            lv.end = period_end(lv.interval, t)
        for up in lv.ups:
            if up.end <= t:
                self._roll(up, t, out)

    def _flat_bar(self, lv: _Level, start: int, end: int, price: int, correction: bool = False) -> Candle:
        return Candle(
            self.venue,
            self.symbol,
            lv.interval,
            start,
            end,
            price,
            price,
            price,
            price,
            0,
            0,
            0,
            0,
            0,
            True,
            correction,
            start,
            start,
        )

    def _fill(self, lv: _Level, start: int, stop: int, out: list[object]) -> None:
        """Flat bars for the empty periods in [start, stop) at the last close (the latest max_flat_fill)."""
        cap = self._max_fill
        if not cap:
            return
        n = _LENGTH[lv.interval]
        starts: Sequence[int]
        if n:
            starts = range(max(start, stop - cap * n), stop, n)
        else:
            found: list[int] = []
            p = start
            while p < stop:
                found.append(p)
                p = period_end(lv.interval, p)
            starts = found[-cap:]
        price = lv.hist[-1].close
        for s in starts:
            self._push(lv, self._flat_bar(lv, s, period_end(lv.interval, s), price), s, out)

    def _push(self, lv: _Level, c: Candle, first: int, out: list[object]) -> None:
        out.append(c)
        hist = lv.hist
        hist.append(c)
        lv.hstart.append(c.open_time)
        lv.hfirst.append(first)
        if len(hist) > self._keep + 256:
            self._trim(lv)
        if lv is self._minute:
            self._ticker.on_closed_minute(c)  # type: ignore[union-attr]

    def _trim(self, lv: _Level) -> None:
        """Drop history beyond ``history`` entries, keeping what a late trade could still amend."""
        cut = len(lv.hist) - self._keep
        horizon = self._wm - self._grace
        while cut > 0 and lv.hist[cut - 1].close_time > horizon:
            cut -= 1
        if cut > 0:
            del lv.hist[:cut], lv.hstart[:cut], lv.hfirst[:cut]

    # ---- late trades ----------------------------------------------------------------------------

    def _amend(
        self, lv: _Level, price: int, size: int, side: Side, ts: int, recv: int, out: list[object]
    ) -> None:
        """Add a late trade to the closed candle of ``lv`` covering ``ts`` and re-emit it as a correction."""
        start = period_start(lv.interval, ts)
        hist, hstart, hfirst = lv.hist, lv.hstart, lv.hfirst
        i = bisect_left(hstart, start)
        buy = size if side is Side.BUY else 0
        sell = size if side is Side.SELL else 0
        inserted = False
        if i < len(hist) and hstart[i] == start and hist[i].trade_count:
            c = hist[i]
            first = hfirst[i]
            o = c.open
            if ts < first:
                o = price
                first = ts
            close, last = (price, ts) if ts >= c.ts_event else (c.close, c.ts_event)
            new = Candle(
                self.venue,
                self.symbol,
                lv.interval,
                start,
                c.close_time,
                o,
                max(c.high, price),
                min(c.low, price),
                close,
                c.volume + size,
                c.quote_volume + price * size,
                c.buy_volume + buy,
                c.sell_volume + sell,
                c.trade_count + 1,
                True,
                True,
                last,
                max(c.ts_recv, recv),
            )
            hist[i] = new
            hfirst[i] = first
        else:
            new = Candle(
                self.venue,
                self.symbol,
                lv.interval,
                start,
                period_end(lv.interval, ts),
                price,
                price,
                price,
                price,
                size,
                price * size,
                buy,
                sell,
                1,
                True,
                True,
                ts,
                recv,
            )
            if i < len(hist) and hstart[i] == start:  # replaces a flat bar
                hist[i] = new
                hfirst[i] = ts
            else:
                hist.insert(i, new)
                hstart.insert(i, start)
                hfirst.insert(i, ts)
                inserted = True
        out.append(new)
        if lv is self._minute:
            self._ticker.on_closed_minute(new)  # type: ignore[union-attr]
        if self._flat:
            if inserted:  # before the first candle: the periods up to the next one become flat bars
                stop = hstart[i + 1] if i + 1 < len(hist) else lv.start
                gap: list[Candle] = []
                p = new.close_time
                while p < stop and len(gap) < self._max_fill:
                    gap.append(self._flat_bar(lv, p, period_end(lv.interval, p), new.close, True))
                    p = gap[-1].close_time
                hist[i + 1 : i + 1] = gap
                hstart[i + 1 : i + 1] = [g.open_time for g in gap]
                hfirst[i + 1 : i + 1] = [g.open_time for g in gap]
                out.extend(gap)
                i += len(gap)
            j = i + 1
            while j < len(hist) and hist[j].trade_count == 0 and hist[j].close != hist[i].close:
                c = hist[j]
                hist[j] = self._flat_bar(lv, c.open_time, c.close_time, hist[i].close, True)
                out.append(hist[j])
                j += 1

    # ---- queries --------------------------------------------------------------------------------

    def _level(self, interval: Interval) -> _Level:
        lv = self._by_iv.get(interval)
        if lv is None:
            raise KeyError(f"interval {interval!r} is not configured for {self.venue}:{self.symbol}")
        return lv

    @property
    def watermark(self) -> int | None:
        """Largest event time seen (trades and ``advance``), or None before any."""
        return None if self._wm == _NEVER else self._wm

    def current(self, interval: Interval) -> Candle | None:
        """The in-progress candle (closed=False), folded on demand; None if it has no trade (SKIP)
        or nothing has traded yet; a flat bar at the last close when empty under FLAT."""
        lv = self._level(interval)
        if not self._started:
            return None
        acc = _Level(interval, False)
        node: _Level | None = lv
        while node is not None:
            if node.n:
                acc.fold(node)
            node = node.src
        if acc.n:
            return Candle(
                self.venue,
                self.symbol,
                interval,
                lv.start,
                lv.end,
                acc.open,
                acc.high,
                acc.low,
                acc.close,
                acc.vol,
                acc.quote,
                acc.buy,
                acc.sell,
                acc.n,
                False,
                False,
                acc.last,
                acc.recv,
            )
        if self._flat and lv.hist:
            return self._flat_bar(lv, lv.start, lv.end, lv.hist[-1].close)._replace(closed=False)
        return None

    def closed(
        self,
        interval: Interval,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Closed candles, oldest first, with start_ns <= open_time < end_ns, from the last ``history``.

        With ``limit``: the first ``limit`` from ``start_ns`` if given, else the most recent ``limit``.
        """
        lv = self._level(interval)
        hist, hstart = lv.hist, lv.hstart
        lo = max(0, len(hist) - self._keep)
        if start_ns is not None:
            lo = max(lo, bisect_left(hstart, start_ns))
        hi = len(hist) if end_ns is None else bisect_left(hstart, end_ns)
        if limit is not None:
            if limit <= 0:
                return []
            if start_ns is not None:
                hi = min(hi, lo + limit)
            else:
                lo = max(lo, hi - limit)
        return hist[lo:hi]

    @property
    def last_price(self) -> int | None:
        """Price of the latest trade by event time (None before any trade)."""
        iv = next(iter(self._by_iv))
        cur = self.current(iv)
        if cur is not None:
            return cur.close
        hist = self._by_iv[iv].hist
        return hist[-1].close if hist else None

    def ticker(self, now_ns: int) -> Ticker | None:
        """24h rolling ticker at ``now_ns`` (needs a RollingTicker passed at construction)."""
        if self._ticker is None:
            raise ValueError("this CandleSeries was built without a RollingTicker")
        return self._ticker.snapshot(self.current(Interval.M1), now_ns)
