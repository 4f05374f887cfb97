"""The market model of the simulator: pure and deterministic (no I/O, no asyncio, no clock).

Per symbol a *fair value* follows a random walk whose variance clusters like GARCH(1,1): market time is
cut into one-second bars and each bar's variance is ``h' = w + a * r^2 + b * h`` with ``r`` the return of
the bar just ended (``a = 0.06``, ``b = 0.92``, long-run variance from the symbol's annualized
volatility). A perpetual follows its underlying's fair value times ``1 + premium``, the premium a
mean-reverting (Ornstein-Uhlenbeck) process of a few basis points.

Each (venue, symbol) has its own L2 book around the fair value: best bid and ask straddle it with a
spread of a few ticks, deeper levels are 1..``level_gap`` ticks apart, sizes are whole lots. A book event
either moves the touch to follow the fair value (levels crossed by the move are deleted, a new touch is
inserted, the far end trimmed or extended to ``book_depth`` levels) or changes one level (a size, a
cancel, a new level in a gap, near the top more often). A trade takes liquidity at the touch (sometimes
sweeping through it into the second level: one print per level, each with an id unique per venue) and is
followed by the delta that removes what it took. Books are never crossed: every delta keeps best bid <
best ask, and what a consumer rebuilds from the snapshot and deltas equals ``book_levels``. Venues do not
cross each other either: when a book's new touch crosses another venue's, that venue follows the fair
value at once (an extra delta, as arbitrage would force), within the same step. Between steps a
consolidated book is crossed only while a venue is silent or a book awaits its snapshot.

Sequence numbers are per (venue, symbol): a ``BookSnapshot`` first, then ``BookDelta``s with
``first_seq == seq == previous + 1``. Faults, when configured: a delta that skips 1..3 numbers (the
venue then re-sends a snapshot of that book the next time it is picked), a trade delivered twice (same
id), an extra 10x print, a venue silent for a while (it re-sends snapshots when it comes back).

Market time advances ``1 / events_per_second`` per event, so the market's path depends only on the seed
and on how many events were drawn, not on how calls are chunked; ``now_ns`` only stamps events
(``ts_recv = now_ns``, ``ts_event = now_ns - venue latency``) and schedules the stale venue. Floats are
used inside the random walk only: every emitted price is a whole number of ticks times the tick size and
every size a whole number of lots times the lot size, in int arithmetic at 1e-9.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from feeds.simulator.config import SimulatorConfig, SymbolSpec, VenueSpec
from server.engine.events import BookDelta, BookSnapshot, Event, Level, Side, Trade
from server.engine.instruments import Instrument
from server.engine.numbers import SCALE

SECONDS_PER_YEAR: Final = 365 * 24 * 3600
BAR_SECONDS: Final = 1.0
GARCH_ALPHA: Final = 0.06
GARCH_BETA: Final = 0.92
MAX_VARIANCE_RATIO: Final = 16.0
"""A bar's variance is capped at this multiple of the long-run variance (volatility at most 4x)."""
PREMIUM_REVERSION_PER_S: Final = math.log(2) / 60.0
"""Premium of a perpetual: mean reversion with a 60 s half-life..."""
PREMIUM_MEAN: Final = 1.5e-4
PREMIUM_SD: Final = 3e-4
"""...around 1.5 bp with a stationary standard deviation of 3 bp."""
SWEEP_PROBABILITY: Final = 0.08
"""Share of trades that take the whole touch and part of the next level."""
SPREAD_JITTER_PROBABILITY: Final = 0.1
"""Share of touch updates quoting one tick wider than the venue's usual spread."""
SPIKE_FACTOR: Final = 10
_SQRT3: Final = math.sqrt(3.0)



@dataclass(slots=True)
class SimulatorStats:
    """What the model emitted and injected so far (for tests and metrics)."""

    events: int = 0
    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    gaps: int = 0
    duplicates: int = 0
    spikes: int = 0
    arbitrage_moves: int = 0
    """Deltas that moved a book crossed by another venue's new touch back to the fair value."""


class _FairValue:
    """A fair value random walk with GARCH(1,1)-like variance per one-second bar (see module docstring)."""

    __slots__ = ("bar_end", "bar_start", "bar_var", "last_t", "long_var", "price", "sigma")

    def __init__(self, price: float, volatility: float) -> None:
        self.price = price
        self.long_var = volatility * volatility / SECONDS_PER_YEAR * BAR_SECONDS
        self.bar_var = self.long_var
        self.sigma = math.sqrt(self.bar_var / BAR_SECONDS)  # per sqrt(second)
        self.bar_start = price
        self.bar_end = BAR_SECONDS
        self.last_t = 0.0

    def roll(self, t: float) -> None:
        """Close the bar(s) ending at or before ``t``: update the variance from the realized return."""
        r = self.price / self.bar_start - 1.0
        long_var = self.long_var
        h = long_var * (1.0 - GARCH_ALPHA - GARCH_BETA) + GARCH_ALPHA * r * r + GARCH_BETA * self.bar_var
        skipped = int((t - self.bar_end) / BAR_SECONDS)  # whole bars with no update: expected decay
        if skipped > 0:
            h = long_var + (h - long_var) * (GARCH_ALPHA + GARCH_BETA) ** skipped
        h = min(h, long_var * MAX_VARIANCE_RATIO)
        self.bar_var = h
        self.sigma = math.sqrt(h / BAR_SECONDS)
        self.bar_start = self.price
        self.bar_end += (skipped + 1) * BAR_SECONDS


class _Symbol:
    """Per symbol: its fair value process (shared with its underlying), premium, tick and lot."""

    __slots__ = ("books", "fair", "gap", "lot", "max_lots", "perp", "premium", "premium_t", "spec", "spread",
                 "tick", "ticks_per_unit")

    def __init__(self, spec: SymbolSpec, fair: _FairValue, premium: float | None) -> None:
        self.spec = spec
        self.fair = fair
        self.perp = premium is not None
        self.premium = premium or 0.0
        self.premium_t = 0.0
        self.tick = spec.tick_size
        self.lot = spec.lot_size
        self.ticks_per_unit = SCALE / spec.tick_size
        self.spread = spec.spread_ticks
        self.gap = spec.level_gap
        self.max_lots = spec.max_lots
        self.books: list[_Book] = []
        """Its book on every venue that lists it (arbitrage keeps them from crossing each other)."""


class _Venue:
    __slots__ = ("books", "extra_spread", "latency", "name", "next_trade_id", "stamp_now", "ts_event", "ts_recv")

    def __init__(self, spec: VenueSpec, first_trade_id: int) -> None:
        self.name = spec.name
        self.latency = spec.latency_ns
        # The event times of the last ``now_ns`` as int objects, shared by every event stamped with it:
        # compiled, an int-typed value put into a tuple allocates a new int object each time.
        self.stamp_now = -1
        self.ts_event: object = 0
        self.ts_recv: object = 0
        self.extra_spread = spec.extra_spread_ticks
        self.next_trade_id = first_trade_id
        self.books: list[_Book] = []

    def stamp(self, now_ns: int) -> None:
        """Make ``ts_event`` and ``ts_recv`` this venue's event times at ``now_ns``."""
        if now_ns != self.stamp_now:
            self.stamp_now = now_ns
            self.ts_event = now_ns - self.latency
            self.ts_recv = now_ns


class _Book:
    """One venue's book of one symbol, in ticks and lots: bids best (highest) first, asks best first."""

    __slots__ = ("ap", "as_", "basis", "bp", "bs", "needs_snapshot", "seq", "spread", "sym", "symbol",
                 "trades", "venue", "venue_name", "weight")

    def __init__(self, venue: _Venue, sym: _Symbol, seq: int, basis: float) -> None:
        self.venue = venue
        self.venue_name = venue.name
        self.sym = sym
        self.symbol = sym.spec.symbol
        self.seq = seq
        self.basis = basis  # a venue's small, persistent offset from the fair value, in ticks
        self.spread = sym.spread + venue.extra_spread
        self.weight = sym.spec.weight
        self.bp: list[int] = []
        self.bs: list[int] = []
        self.ap: list[int] = []
        self.as_: list[int] = []
        self.needs_snapshot = False
        self.trades = 0


class MarketSimulator:
    """Deterministic multi-venue market: ``step(now_ns, n)`` returns the next ``n`` events.

    Same config (seed included) and same calls give identical events.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        cfg = config if config is not None else SimulatorConfig()
        self.config = cfg
        self.stats = SimulatorStats()
        self._rng = random.Random(cfg.seed)
        self._rnd = rnd = self._rng.random
        self._dt = 1.0 / cfg.events_per_second
        self._count = 0
        self._depth = cfg.book_depth
        self._trade_p = cfg.trade_probability
        self._gap_p = cfg.gap_probability
        self._spike_p = cfg.spike_probability
        self._dup_p = cfg.duplicate_probability
        self._spike_warmup = cfg.spike_warmup_trades
        specs = {s.symbol: s for s in cfg.symbols}
        fairs: dict[str, _FairValue] = {}
        self._symbols: dict[str, _Symbol] = {}
        for spec in cfg.symbols:  # spot (and anything without a configured underlying) first
            if not (spec.underlying and spec.underlying in specs):
                fairs[spec.symbol] = _FairValue(spec.price / SCALE, spec.volatility)
                self._symbols[spec.symbol] = _Symbol(spec, fairs[spec.symbol], None)
        for spec in cfg.symbols:
            if spec.underlying and spec.underlying in specs:
                under = specs[spec.underlying]
                premium = spec.price / under.price - 1.0
                self._symbols[spec.symbol] = _Symbol(spec, fairs[under.symbol], premium)
        self._venues: dict[str, _Venue] = {}
        for vspec in cfg.venues:
            self._venues[vspec.name] = _Venue(vspec, 1 + int(rnd() * 1_000_000) * 100)
        self._books: dict[tuple[str, str], _Book] = {}
        for symbol, venue_names in cfg.listings():
            for name in venue_names:
                venue = self._venues[name]
                book = _Book(venue, self._symbols[symbol], 1 + int(rnd() * 1_000_000), rnd() - 0.5)
                venue.books.append(book)
                book.sym.books.append(book)
                self._books[name, symbol] = book
        self._t0: int | None = None
        self._silent = ""
        self._table: list[_Book] = []
        self._rebuild_table()
        self._queue: list[_Book] = list(self._books.values())
        """Books whose snapshot is due before anything else (at start, after a stale venue returns)."""
        self._ahead = 0
        """Events returned beyond the counts asked so far (taken from the next calls' counts)."""
        self._warm = False

    # -- reference data and reads ------------------------------------------------------------------

    def instruments(self) -> list[Instrument]:
        """One ``Instrument`` per configured symbol, with each listing venue's own symbol."""
        result: list[Instrument] = []
        venues = {v.name: v for v in self.config.venues}
        for (symbol, names), spec in zip(self.config.listings(), self.config.symbols, strict=True):
            result.append(Instrument(
                symbol=symbol, asset_class=spec.asset_class, base=spec.base, quote=spec.quote,
                tick_size=spec.tick_size, lot_size=spec.lot_size, price_decimals=spec.price_decimals,
                size_decimals=spec.size_decimals, underlying=spec.underlying,
                venue_symbols=tuple((n, venues[n].venue_symbol(symbol)) for n in names)))
        return result

    def books(self) -> list[tuple[str, str]]:
        """Every simulated (venue, symbol), venues in config order."""
        return list(self._books)

    def book_levels(self, venue: str, symbol: str) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """The model's current book (bids, asks), best first, at 1e-9: what a consumer should hold."""
        b = self._books[venue, symbol]
        tick, lot = b.sym.tick, b.sym.lot
        return (tuple((p * tick, s * lot) for p, s in zip(b.bp, b.bs, strict=True)),
                tuple((p * tick, s * lot) for p, s in zip(b.ap, b.as_, strict=True)))

    def fair_price(self, symbol: str) -> int:
        """The current fair value of ``symbol`` rounded to its tick, at 1e-9."""
        sym = self._symbols[symbol]
        price = sym.fair.price * (1.0 + sym.premium)
        return round(price * sym.ticks_per_unit) * sym.tick

    @property
    def warm(self) -> bool:
        """True once every book (of venues not silent at the time) has had its first snapshot emitted."""
        return self._warm

    @property
    def pending_snapshots(self) -> int:
        """Snapshots due before any other event (at start and after a stale venue comes back)."""
        return len(self._queue)

    @property
    def silent_venue(self) -> str:
        """The venue currently silent because of ``stale_venue`` ('' if none)."""
        return self._silent

    # -- generation --------------------------------------------------------------------------------

    def step(self, now_ns: int, n_events: int) -> list[Event]:
        """About the next ``n_events`` events, stamped ``ts_recv = now_ns``, ``ts_event = now_ns - latency``.

        What belongs together is never split: a trade and its follow-up delta, a move and the other venues'
        deltas it forces (``_arbitrage``). So a call may return a few events more than asked; the excess
        is taken from the next calls' counts (which may then return fewer, even none), and over many
        calls the total is what was asked. Returns fewer also when no venue can send anything.
        """
        if n_events <= 0:
            return []
        ahead = self._ahead
        if ahead >= n_events:
            self._ahead = ahead - n_events
            return []
        budget = n_events - ahead
        if self._t0 is None:
            self._t0 = now_ns
        self._schedule(now_ns)
        out: list[Event] = []
        queue = self._queue
        while queue and len(out) < budget:
            self._snapshot(queue.pop(0), self._count * self._dt, now_ns, out)
        if not queue:
            self._warm = True
        table = self._table
        size = len(table)
        if size:
            rnd = self._rnd
            trade_p = self._trade_p
            dt = self._dt
            count = self._count
            while len(out) < budget:
                book = table[int(rnd() * size)]
                count += 1
                if book.needs_snapshot:
                    self._snapshot(book, count * dt, now_ns, out)
                    self._arbitrage(book, self._fair_ticks(book.sym, count * dt), now_ns, out)
                elif rnd() < trade_p:
                    self._trade(book, count * dt, now_ns, out)
                else:
                    self._move(book, count * dt, now_ns, out)
            self._count = count
        self._ahead = max(len(out) - budget, 0)
        self.stats.events += len(out)
        return out

    def _schedule(self, now_ns: int) -> None:
        """Start or end the stale venue's silence according to ``now_ns``."""
        stale = self.config.stale_venue
        if stale is None or self._t0 is None:
            return
        offset = now_ns - self._t0
        silent = stale.venue if stale.start_ns <= offset < stale.start_ns + stale.duration_ns else ""
        if silent == self._silent:
            return
        self._silent = silent
        self._rebuild_table()
        venue = self._venues[stale.venue]
        if silent:
            self._queue = [b for b in self._queue if b.venue is not venue]
        else:
            self._queue.extend(b for b in venue.books if b not in self._queue)

    def _rebuild_table(self) -> None:
        table: list[_Book] = []
        for venue in self._venues.values():
            if venue.name != self._silent:
                for book in venue.books:
                    table.extend([book] * book.weight)
        self._table = table

    def _fair_ticks(self, sym: _Symbol, t: float) -> float:
        """Advance ``sym``'s fair value to market time ``t``; its value in (fractional) ticks."""
        rnd = self._rnd
        fair = sym.fair
        dt = t - fair.last_t
        if dt > 0.0:
            fair.last_t = t
            if t >= fair.bar_end:
                fair.roll(t)
            fair.price *= 1.0 + fair.sigma * math.sqrt(dt) * (rnd() * 2.0 - 1.0) * _SQRT3
        price = fair.price
        if sym.perp:
            dtp = t - sym.premium_t
            if dtp > 0.0:
                sym.premium_t = t
                k = min(dtp * PREMIUM_REVERSION_PER_S, 1.0)
                sym.premium += (k * (PREMIUM_MEAN - sym.premium)
                                + PREMIUM_SD * math.sqrt(2.0 * k) * (rnd() * 2.0 - 1.0) * _SQRT3)
            price *= 1.0 + sym.premium
        return price * sym.ticks_per_unit

    def _touch(self, book: _Book, t: float) -> tuple[int, int]:
        """Target best bid and ask (ticks) around the fair value now; best bid >= 1 tick."""
        return self._touch_at(book, self._fair_ticks(book.sym, t))

    def _touch_at(self, book: _Book, fair: float) -> tuple[int, int]:
        """Target best bid and ask (ticks) around ``fair`` (ticks); best bid >= 1 tick."""
        spread = book.spread
        if self._rnd() < SPREAD_JITTER_PROBABILITY:
            spread += 1
        bid = math.floor(fair + book.basis - spread / 2.0)
        bid = max(bid, 1)
        return bid, bid + spread

    def _reconcile(self, book: _Book, bid: int, ask: int, bc: list[Level], ac: list[Level]) -> None:
        """Move the touch to (bid, ask) ticks; the changed levels (1e-9) are appended to bc / ac."""
        sym = book.sym
        tick, lot = sym.tick, sym.lot
        rnd = self._rnd
        bp, bs = book.bp, book.bs
        while bp and bp[0] > bid:
            bc.append((bp[0] * tick, 0))
            del bp[0]
            del bs[0]
        if not bp or bp[0] != bid:
            u = rnd()
            s = 1 + int(u * u * sym.max_lots)
            bp.insert(0, bid)
            bs.insert(0, s)
            bc.append((bid * tick, s * lot))
        self._fill(bp, bs, -1, sym, bc)
        ap, as_ = book.ap, book.as_
        while ap and ap[0] < ask:
            ac.append((ap[0] * tick, 0))
            del ap[0]
            del as_[0]
        if not ap or ap[0] != ask:
            u = rnd()
            s = 1 + int(u * u * sym.max_lots)
            ap.insert(0, ask)
            as_.insert(0, s)
            ac.append((ask * tick, s * lot))
        self._fill(ap, as_, 1, sym, ac)

    def _fill(self, prices: list[int], sizes: list[int], direction: int, sym: _Symbol,
              changes: list[Level]) -> None:
        """Trim or extend one side (best first, non-empty) to ``book_depth`` levels."""
        depth = self._depth
        n = len(prices)
        tick = sym.tick
        if n > depth:
            changes.extend((p * tick, 0) for p in prices[depth:])
            del prices[depth:]
            del sizes[depth:]
            return
        if n == depth or not n:
            return
        rnd = self._rnd
        gap, lot, max_lots = sym.gap, sym.lot, sym.max_lots
        last = prices[-1]
        while n < depth:
            last += direction * (1 + int(rnd() * gap))
            if last <= 0:
                break
            u = rnd()
            s = 1 + int(u * u * max_lots)
            prices.append(last)
            sizes.append(s)
            changes.append((last * tick, s * lot))
            n += 1

    def _move(self, book: _Book, t: float, now_ns: int, out: list[Event]) -> None:
        """A book event: follow the fair value, or change one level when the touch is where it should be."""
        fair = self._fair_ticks(book.sym, t)
        bid, ask = self._touch_at(book, fair)
        bc: list[Level] = []
        ac: list[Level] = []
        if book.bp and book.ap and book.bp[0] == bid and book.ap[0] == ask:
            self._level_change(book, bc, ac)
        else:
            self._reconcile(book, bid, ask, bc, ac)
        if bc or ac:
            self._delta(book, bc, ac, now_ns, out)
            if len(book.sym.books) > 1:
                self._arbitrage(book, fair, now_ns, out)

    def _arbitrage(self, book: _Book, fair: float, now_ns: int, out: list[Event]) -> None:
        """Other venues' books of the symbol whose touch no longer straddles the fair value follow it now,
        as arbitrage against ``book``'s fresh quote would make them: an extra delta each. ``fair`` is the
        symbol's fair value in ticks at ``book``'s event. A consolidated book then crosses only while a
        venue is silent or a book awaits its snapshot (a gap)."""
        for other in book.sym.books:
            if (other is book or other.needs_snapshot or not other.bp or not other.ap
                    or other.venue_name == self._silent):
                continue
            # A fresh touch has bid <= mid < ask for mid = fair + basis - 1/2 (see _touch); books that all
            # hold that cannot cross each other, as bases differ by less than a tick.
            mid = fair + other.basis - 0.5
            if other.bp[0] > mid or other.ap[0] <= mid:
                bid, ask = self._touch_at(other, fair)
                bc: list[Level] = []
                ac: list[Level] = []
                self._reconcile(other, bid, ask, bc, ac)
                if bc or ac:
                    self._delta(other, bc, ac, now_ns, out)
                    self.stats.arbitrage_moves += 1

    def _level_change(self, book: _Book, bc: list[Level], ac: list[Level]) -> None:
        """Change one level, near the top more often: a new size, a cancel, or a new level in a gap."""
        rnd = self._rnd
        sym = book.sym
        tick, lot = sym.tick, sym.lot
        if rnd() < 0.5:
            prices, sizes, direction, changes = book.bp, book.bs, -1, bc
        else:
            prices, sizes, direction, changes = book.ap, book.as_, 1, ac
        n = len(prices)
        u = rnd()
        i = int(u * u * n)
        v = rnd()
        if i and v < 0.15:  # a level below the touch is cancelled; the far end refills
            changes.append((prices[i] * tick, 0))
            del prices[i]
            del sizes[i]
            self._fill(prices, sizes, direction, sym, changes)
            return
        if v < 0.3 and i + 1 < n and abs(prices[i + 1] - prices[i]) > 1:  # a new level in a gap
            p = prices[i] + direction
            s = 1 + int(rnd() * sym.max_lots)
            prices.insert(i + 1, p)
            sizes.insert(i + 1, s)
            changes.append((p * tick, s * lot))
            self._fill(prices, sizes, direction, sym, changes)
            return
        w = rnd()
        s = 1 + int(w * w * sym.max_lots)
        if s == sizes[i]:
            s = s + 1 if s < sym.max_lots else s - 1 if s > 1 else s
        if s != sizes[i]:
            sizes[i] = s
            changes.append((prices[i] * tick, s * lot))

    def _delta(self, book: _Book, bc: list[Level], ac: list[Level], now_ns: int, out: list[Event]) -> None:
        seq = book.seq + 1
        if self._gap_p and self._rnd() < self._gap_p:
            seq += 1 + int(self._rnd() * 3)  # 1..3 updates lost on the way
            book.needs_snapshot = True
            self.stats.gaps += 1
        book.seq = seq
        venue = book.venue
        venue.stamp(now_ns)
        seq_obj: object = seq  # one int object for both fields
        # tuple.__new__ skips the NamedTuple's generated __new__, a Python frame (one delta per event).
        out.append(tuple.__new__(BookDelta, (book.venue_name, book.symbol, seq_obj, seq_obj, tuple(bc), tuple(ac),
                                             venue.ts_event, venue.ts_recv)))
        self.stats.deltas += 1

    def _snapshot(self, book: _Book, t: float, now_ns: int, out: list[Event]) -> None:
        """The whole book, brought to the fair value first (that counts as one more update)."""
        bid, ask = self._touch(book, t)
        scratch: list[Level] = []
        self._reconcile(book, bid, ask, scratch, scratch)
        if scratch:
            book.seq += 1
        book.needs_snapshot = False
        tick, lot = book.sym.tick, book.sym.lot
        out.append(BookSnapshot(
            book.venue_name, book.symbol, book.seq,
            tuple([(p * tick, s * lot) for p, s in zip(book.bp, book.bs, strict=True)]),
            tuple([(p * tick, s * lot) for p, s in zip(book.ap, book.as_, strict=True)]),
            now_ns - book.venue.latency, now_ns))
        self.stats.snapshots += 1

    def _trade(self, book: _Book, t: float, now_ns: int, out: list[Event]) -> None:
        """A trade at (or through) the touch and the delta that removes what it took."""
        rnd = self._rnd
        buy = rnd() < 0.5
        prices, sizes = (book.ap, book.as_) if buy else (book.bp, book.bs)
        if not prices:
            self._move(book, t, now_ns, out)
            return
        side = Side.BUY if buy else Side.SELL
        sym = book.sym
        tick, lot = sym.tick, sym.lot
        if self._spike_p and book.trades >= self._spike_warmup and rnd() < self._spike_p:
            self._print(book, prices[0] * tick * SPIKE_FACTOR, (1 + int(rnd() * 10)) * lot, side, now_ns, out,
                        duplicable=False)
            self.stats.spikes += 1
            return
        changes: list[Level] = []
        if len(prices) > 1 and rnd() < SWEEP_PROBABILITY:  # takes the touch and part of the next level
            take = 1 + int(rnd() * sizes[1])
            self._print(book, prices[0] * tick, sizes[0] * lot, side, now_ns, out)
            self._print(book, prices[1] * tick, take * lot, side, now_ns, out)
            changes.append((prices[0] * tick, 0))
            left = sizes[1] - take
            changes.append((prices[1] * tick, left * lot))
            del prices[0]
            del sizes[0]
            if left:
                sizes[0] = left
            else:
                del prices[0]
                del sizes[0]
        else:
            u = rnd()
            take = 1 + int(u * u * sizes[0])
            take = min(take, sizes[0])
            self._print(book, prices[0] * tick, take * lot, side, now_ns, out)
            left = sizes[0] - take
            changes.append((prices[0] * tick, left * lot))
            if left:
                sizes[0] = left
            else:
                del prices[0]
                del sizes[0]
        if buy:
            self._delta(book, [], changes, now_ns, out)
        else:
            self._delta(book, changes, [], now_ns, out)

    def _print(self, book: _Book, price: int, size: int, side: Side, now_ns: int, out: list[Event],
               duplicable: bool = True) -> None:
        venue = book.venue
        venue.stamp(now_ns)
        trade = tuple.__new__(Trade, (book.venue_name, book.symbol, str(venue.next_trade_id), price, size, side,
                                      venue.ts_event, venue.ts_recv))  # as in _delta
        venue.next_trade_id += 1
        book.trades += 1
        out.append(trade)
        self.stats.trades += 1
        if duplicable and self._dup_p and self._rnd() < self._dup_p:
            out.append(trade)
            self.stats.duplicates += 1
