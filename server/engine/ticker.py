"""24h rolling ticker of one (venue, symbol), kept incrementally from 1-minute candles.

Owns ``Ticker`` and ``RollingTicker``. The window has 1-minute granularity: at ``now_ns`` it covers the
minute containing ``now_ns`` (the in-progress 1m candle) plus the 1439 minutes before it, i.e.
``[minute_start(now) - 1439 min, minute_start(now) + 1 min)``. Trades are never rescanned: running sums
(volume, quote volume, trade count) of the closed minutes in the window are updated when a minute closes
(``on_closed_minute``) and when one leaves the window; window high/low come from monotonic deques.

Feeding: a ``CandleSeries`` built with ``ticker=RollingTicker(...)`` calls ``on_closed_minute`` for every
closed 1m candle and for every corrected one (late trades), and ``CandleSeries.ticker(now_ns)`` returns
``snapshot(series.current(M1), now_ns)``. Minutes without trades (flat bars) contribute nothing.
``now_ns`` must not go backwards between snapshots (expired minutes are forgotten).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from server.engine.candles import MINUTE_NS, Candle
from server.engine.numbers import SCALE, div_round

WINDOW_MINUTES = 1440


class Ticker(NamedTuple):
    """Rolling statistics over [window_start, window_end). Prices at 1e-9, quote_volume at 1e-18."""

    venue: str
    symbol: str
    window_start: int
    window_end: int
    open: int
    """Open of the first minute with trades in the window."""
    high: int
    low: int
    last: int
    change: int
    """last - open."""
    change_pct: int
    """100 * (last - open) / open at scale 1e-9, rounded half-even (0 when open is 0)."""
    volume: int
    quote_volume: int
    vwap: int
    trade_count: int
    ts_event: int
    """Event time of the last trade in the window."""
    best_bid: int = 0
    """The venue's best bid when the ticker was read (filled in by the engine; 0 when unknown)."""
    best_ask: int = 0
    """The venue's best ask when the ticker was read (filled in by the engine; 0 when unknown)."""
    halted: bool = False
    """Trading in the instrument is halted on the venue (filled in by the engine): no trade is applied."""


class RollingTicker:
    """Incremental 24h window over closed 1m candles; see the module docstring."""

    __slots__ = ("_floor", "_hi", "_lo", "_minutes", "_n", "_quote", "_vol", "_win", "symbol", "venue")

    def __init__(self, venue: str, symbol: str, minutes: int = WINDOW_MINUTES) -> None:
        if minutes < 1:
            raise ValueError(f"RollingTicker window must be >= 1 minute: {minutes!r}")
        self.venue = venue
        self.symbol = symbol
        self._minutes = minutes
        self._win: deque[Candle] = deque()  # closed minutes with trades, by open_time
        self._hi: deque[Candle] = deque()  # highs strictly decreasing
        self._lo: deque[Candle] = deque()  # lows strictly increasing
        self._vol = 0
        self._quote = 0
        self._n = 0
        self._floor = -(1 << 62)  # minutes before this have left the window

    def on_closed_minute(self, candle: Candle) -> None:
        """A 1m candle closed, or a closed one was corrected (replaces the one with that open_time)."""
        t = candle.open_time
        if t < self._floor:
            return
        win = self._win
        if not win or t > win[-1].open_time:
            if candle.trade_count:
                win.append(candle)
                self._vol += candle.volume
                self._quote += candle.quote_volume
                self._n += candle.trade_count
                hi = self._hi
                while hi and hi[-1].high <= candle.high:
                    hi.pop()
                hi.append(candle)
                lo = self._lo
                while lo and lo[-1].low >= candle.low:
                    lo.pop()
                lo.append(candle)
            return
        self._replace(candle)

    def _replace(self, candle: Candle) -> None:
        """Rare path (corrections): replace or insert by open_time, adjust sums, rebuild high/low."""
        win = self._win
        t = candle.open_time
        i = len(win) - 1
        while i >= 0 and win[i].open_time > t:
            i -= 1
        pos = i + 1
        if i >= 0 and win[i].open_time == t:
            old = win[i]
            self._vol -= old.volume
            self._quote -= old.quote_volume
            self._n -= old.trade_count
            del win[i]
            pos = i
        if candle.trade_count:
            win.insert(pos, candle)
            self._vol += candle.volume
            self._quote += candle.quote_volume
            self._n += candle.trade_count
        self._rebuild()

    def _rebuild(self) -> None:
        hi: deque[Candle] = deque()
        lo: deque[Candle] = deque()
        for c in self._win:
            while hi and hi[-1].high <= c.high:
                hi.pop()
            hi.append(c)
            while lo and lo[-1].low >= c.low:
                lo.pop()
            lo.append(c)
        self._hi = hi
        self._lo = lo

    def _expire(self, window_start: int) -> None:
        if window_start <= self._floor:
            return
        self._floor = window_start
        win = self._win
        while win and win[0].open_time < window_start:
            c = win.popleft()
            self._vol -= c.volume
            self._quote -= c.quote_volume
            self._n -= c.trade_count
        hi = self._hi
        while hi and hi[0].open_time < window_start:
            hi.popleft()
        lo = self._lo
        while lo and lo[0].open_time < window_start:
            lo.popleft()

    def snapshot(self, current_minute: Candle | None, now_ns: int) -> Ticker | None:
        """Ticker at ``now_ns``: closed minutes in the window + ``current_minute`` (the in-progress 1m
        candle, used when it has trades and lies in the window). None when the window has no trade."""
        window_end = now_ns - now_ns % MINUTE_NS + MINUTE_NS
        window_start = window_end - self._minutes * MINUTE_NS
        self._expire(window_start)
        cur = current_minute
        if cur is not None and not (cur.trade_count and window_start <= cur.open_time < window_end):
            cur = None
        win = self._win
        if cur is None:
            if not win:
                return None
            first = win[0]
            latest = win[-1]
            high = self._hi[0].high
            low = self._lo[0].low
            vol, quote, n = self._vol, self._quote, self._n
        else:
            first = win[0] if win else cur
            latest = cur
            high = max(self._hi[0].high, cur.high) if win else cur.high
            low = min(self._lo[0].low, cur.low) if win else cur.low
            vol = self._vol + cur.volume
            quote = self._quote + cur.quote_volume
            n = self._n + cur.trade_count
        open_ = first.open
        last = latest.close
        change = last - open_
        return Ticker(
            self.venue,
            self.symbol,
            window_start,
            window_end,
            open_,
            high,
            low,
            last,
            change,
            div_round(100 * SCALE * change, open_) if open_ else 0,
            vol,
            quote,
            div_round(quote, vol) if vol else last,
            n,
            latest.ts_event,
        )
