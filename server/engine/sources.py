"""Per-instrument source priority and failover: a ranked list of venues feeds one composite venue.

This module owns ``SourcePolicy`` (one instrument's ranked sources and its text form), ``SourceRouter``
(the failover state machine) and ``SourceSwitch`` (the record of one switch).

Pure: no I/O, no clock but event receive times and ``ClockTick``s. The router reads what the engine
*accepted*: the runtime applies a batch, hands the router the updates it produced, and applies the
events the router derives from them. So duplicates, sequence gaps and deltas to unsynced books never
reach the composite, and a book gap of the active source is seen as the engine's
``BookStatusChange(AWAITING_RESYNC)``.

For each policy, the accepted events of the *active* source are copied to the composite venue (same
symbol, venue ``composite``): trades with ids prefixed ``<source>:``, book snapshots and deltas renumbered
with the composite's own contiguous sequence, quotes as they are. Each venue keeps its own state; the
composite's book, trades, candles and ticker run on across switches.

A source is *healthy* when it delivered an accepted event within its silence threshold (receive time;
judged at clock ticks), its book is not awaiting a resync, and its feed does not report itself
disconnected. The active source is the highest-ranked healthy one, with a hold-down: a recovered source
ranked above a *healthy* active source takes over only once it has been healthy for ``hold_ns``. An
unhealthy active source is replaced at once (silence at the next tick; a resync or a lost source at the
end of the batch), by the best healthy source whatever its hold-down.

Every switch is said: a ``QualityFlag`` (``SOURCE_FAILOVER`` when moving down the ranking or to no
source, ``SOURCE_RESTORED`` when moving up or from no source) on the composite venue, with the gap
(``ts_event`` = receive time of the last event taken from the source left, ``ts_recv`` = the switch,
``value`` = their difference in ns). Then the new source's trades received during the gap are replayed
(the router keeps each standby source's recent trades) and its current book is sent as a snapshot; a
composite left without a consistent book gets a ``BookReset``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from server.engine.book import BookStatus
from server.engine.events import BookDelta, BookReset, BookSnapshot, Event, Level, Quote, Trade
from server.engine.quality import QualityFlag, QualityKind
from server.engine.updates import BookStatusChange

SECOND_NS: Final = 1_000_000_000
MS_NS: Final = 1_000_000
DEFAULT_SILENCE_NS: Final = SECOND_NS
DEFAULT_HOLD_NS: Final = 2 * SECOND_NS
DEFAULT_COMPOSITE: Final = "primary"

BookView = tuple[tuple[Level, ...], tuple[Level, ...], int, int]
"""(bids, asks, ts_event, ts_recv) of a consistent venue book."""
BookReader = Callable[[str, str], BookView | None]
"""(venue, symbol) -> that venue's consistent book, or None (no book, or awaiting a resync)."""
_Accepted = BookDelta | Trade | BookSnapshot | Quote

_UNITS: Final = (("ns", 1), ("us", 1_000), ("ms", MS_NS), ("s", SECOND_NS), ("m", 60 * SECOND_NS))
_FORBIDDEN: Final = ",:=@; "


def parse_duration(text: str) -> int:
    """``500ms``, ``2s``, ``1m``, ``250us``, ``10ns`` (no unit: milliseconds) -> ns; ValueError if bad."""
    t = text.strip()
    for suffix, scale in sorted(_UNITS, key=lambda u: -len(u[0])):
        if t.endswith(suffix) and t[: -len(suffix)].isdigit():
            return int(t[: -len(suffix)]) * scale
    if t.isdigit():
        return int(t) * MS_NS
    raise ValueError(f"bad duration {text!r} (e.g. 500ms, 2s)")


@dataclass(frozen=True, slots=True, kw_only=True)
class SourcePolicy:
    """One instrument's ranked sources (best first), each with its silence threshold, and the composite.

    ``hold_ns``: how long a recovered source must be healthy before it takes over from a healthy
    lower-ranked one (against flapping). ``backfill_ns``: how far back a standby source's trades are kept
    for replay into the gap of a switch (0: twice the largest silence threshold plus one second);
    ``max_backfill`` bounds how many.
    """

    symbol: str
    sources: tuple[str, ...]
    silence_ns: tuple[int, ...]
    composite: str = DEFAULT_COMPOSITE
    hold_ns: int = DEFAULT_HOLD_NS
    backfill_ns: int = 0
    max_backfill: int = 10_000

    def __post_init__(self) -> None:
        if not self.symbol or any(c in self.symbol for c in "=@; "):
            raise ValueError(f"source policy: bad symbol {self.symbol!r}")
        if not self.sources:
            raise ValueError(f"{self.symbol}: at least one source is needed")
        for name in (*self.sources, self.composite):
            if not name or any(c in name for c in _FORBIDDEN):
                raise ValueError(f"{self.symbol}: bad venue name {name!r}")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"{self.symbol}: a source is listed twice")
        if self.composite in self.sources:
            raise ValueError(f"{self.symbol}: the composite venue {self.composite!r} cannot also be a source")
        if len(self.silence_ns) != len(self.sources) or any(s <= 0 for s in self.silence_ns):
            raise ValueError(f"{self.symbol}: one silence threshold > 0 per source is needed")
        if self.hold_ns < 0 or self.backfill_ns < 0 or self.max_backfill < 0:
            raise ValueError(f"{self.symbol}: hold_ns, backfill_ns and max_backfill must be >= 0")

    @property
    def backfill_window_ns(self) -> int:
        return self.backfill_ns or 2 * max(self.silence_ns) + SECOND_NS


def parse_source_spec(text: str, *, default_silence_ns: int = DEFAULT_SILENCE_NS,
                      hold_ns: int = DEFAULT_HOLD_NS) -> SourcePolicy:
    """``SYMBOL=VENUE[:SILENCE]{,VENUE[:SILENCE]}[@COMPOSITE]`` -> ``SourcePolicy``; ValueError if bad.

    E.g. ``BTC/USD=mx:500ms,binance,kraken:2s@primary`` (a source without a threshold gets
    ``default_silence_ns``; without ``@`` the composite is ``primary``).
    """
    symbol, eq, rest = text.strip().partition("=")
    if not eq or not symbol.strip() or not rest.strip():
        raise ValueError(f"bad source spec {text!r}: expected SYMBOL=VENUE[:SILENCE],...[@COMPOSITE]")
    body, at, composite = rest.partition("@")
    sources: list[str] = []
    silences: list[int] = []
    for item in body.split(","):
        venue, colon, silence = item.strip().partition(":")
        sources.append(venue.strip())
        try:
            silences.append(parse_duration(silence) if colon else default_silence_ns)
        except ValueError as exc:
            raise ValueError(f"source spec {text!r}: {exc}") from None
    return SourcePolicy(symbol=symbol.strip(), sources=tuple(sources), silence_ns=tuple(silences),
                        composite=composite.strip() if at else DEFAULT_COMPOSITE, hold_ns=hold_ns)


class SourceSwitch(NamedTuple):
    """One switch of a policy's active source (kept by the router for reads and tests)."""

    symbol: str
    composite: str
    kind: QualityKind
    """SOURCE_FAILOVER or SOURCE_RESTORED."""
    from_source: str
    """'' when there was none."""
    to_source: str
    """'' when no source is healthy."""
    reason: str
    """Why the source left was left: silent, resync, down; recovered (a restore); start."""
    gap_start: int
    """Receive time of the last event taken from the source left (the switch time for the first one)."""
    gap_end: int
    """The switch (router time: the newest clock tick or receive time)."""
    replayed_trades: int
    """Trades of the new source received during the gap, replayed into the composite."""


class PolicyState(NamedTuple):
    """A read of one policy, for metrics and status."""

    symbol: str
    composite: str
    sources: tuple[str, ...]
    active: str
    healthy: tuple[bool, ...]
    failovers: int
    restores: int
    last_gap_ns: int


class _Source:
    __slots__ = ("down", "halted", "last_recv", "rank", "resync", "silence_ns", "since", "trades", "venue")

    def __init__(self, venue: str, rank: int, silence_ns: int, max_backfill: int) -> None:
        self.venue = venue
        self.rank = rank
        self.silence_ns = silence_ns
        self.last_recv = 0
        """Receive time of the newest accepted event (0: none yet)."""
        self.since = 0
        """Start of the current healthy run (for the hold-down)."""
        self.resync = False
        self.halted = False
        self.down = False
        self.trades: deque[Trade] = deque(maxlen=max_backfill)
        """Recent trades while not active, for the replay into a switch's gap."""

    def healthy(self, now: int) -> bool:
        return bool(self.last_recv) and now - self.last_recv <= self.silence_ns and not self.resync \
            and not self.halted and not self.down

    def why_not(self, now: int) -> str:
        if self.down:
            return "down"
        if self.resync:
            return "resync"
        if self.halted:
            return "halted"
        return "silent"


class _Policy:
    __slots__ = ("active", "book", "by_venue", "composite", "config", "ever_active", "failovers", "last_forwarded",
                 "last_gap_ns", "restores", "seq", "sources", "symbol")

    def __init__(self, config: SourcePolicy) -> None:
        self.config = config
        self.symbol = config.symbol
        self.composite = config.composite
        self.sources = [_Source(v, i, s, config.max_backfill)
                        for i, (v, s) in enumerate(zip(config.sources, config.silence_ns, strict=True))]
        self.by_venue = {s.venue: s for s in self.sources}
        self.active: _Source | None = None
        self.ever_active = False
        self.seq = 0
        """The composite book's own sequence: snapshots and deltas take the next number each."""
        self.book = False
        """Whether the composite book was last given a consistent state (else it awaits one)."""
        self.last_forwarded = 0
        self.failovers = 0
        self.restores = 0
        self.last_gap_ns = 0


class SourceRouter:
    """The failover state machine over a set of ``SourcePolicy`` (see the module docstring).

    ``route`` reads a slice of engine updates; ``tick`` judges silence and feed health at a clock tick.
    Both append the events to apply for the composite venues to ``derived`` and the switch flags to
    ``notes``; the caller publishes the notes and applies ``derived`` to the engine, in that order.
    """

    def __init__(self, policies: Iterable[SourcePolicy], book_reader: BookReader | None = None,
                 history: int = 1000, sequence_of: Callable[[str, str], int] | None = None) -> None:
        """``sequence_of(venue, symbol)``: the last sequence of a book the engine already holds (restored
        from storage after a restart), so a composite book's numbering continues instead of starting
        again at 1."""
        self._policies = [_Policy(p) for p in policies]
        if sequence_of is not None:
            for p in self._policies:
                p.seq = sequence_of(p.composite, p.symbol)
        self._by_symbol: dict[str, _Policy] = {}
        composites: set[tuple[str, str]] = set()
        for p in self._policies:
            if p.symbol in self._by_symbol:
                raise ValueError(f"two source policies for {p.symbol}")
            self._by_symbol[p.symbol] = p
            composites.add((p.composite, p.symbol))
        for p in self._policies:
            for s in p.sources:
                if (s.venue, p.symbol) in composites:
                    raise ValueError(f"{p.symbol}: {s.venue} is a composite venue, not a source")
        self._reader = book_reader
        self.now = 0
        """Router time: the newest clock tick or accepted receive time."""
        self.switches: deque[SourceSwitch] = deque(maxlen=history)

    # -- input ----------------------------------------------------------------------------------

    def route(self, updates: list[object], start: int, derived: list[Event], notes: list[QualityFlag]) -> None:
        """Read ``updates[start:]`` (what the engine emitted for one batch)."""
        by_symbol = self._by_symbol
        now = self.now
        dirty: list[_Policy] | None = None
        for i in range(start, len(updates)):
            u = updates[i]
            kind = type(u)
            if kind is BookDelta or kind is Trade or kind is BookSnapshot or kind is Quote:
                ev: _Accepted = u  # type: ignore[assignment]  # one of the four, tested just above
                pol = by_symbol.get(ev.symbol)
                if pol is None:
                    continue
                src = pol.by_venue.get(ev.venue)
                if src is None:
                    continue
                r = ev.ts_recv
                if r > now:  # noqa: PLR1730  # hot path: a compare beats a max() call
                    now = r
                last = src.last_recv
                if r > last:
                    if not last or r - last > src.silence_ns:
                        src.since = r  # a new healthy run (first event, or back after a silence)
                    src.last_recv = r
                if src is pol.active:
                    pol.last_forwarded = r
                    if kind is BookDelta:
                        d: BookDelta = ev  # type: ignore[assignment]
                        if pol.book:  # (an accepted delta always finds the composite consistent)
                            seq = pol.seq = pol.seq + 1
                            derived.append(BookDelta(pol.composite, d.symbol, seq, seq, d.bids, d.asks, d.ts_event,
                                                     r))
                    elif kind is Trade:
                        derived.append(self._composite_trade(pol, ev))  # type: ignore[arg-type]
                    elif kind is BookSnapshot:
                        b: BookSnapshot = ev  # type: ignore[assignment]
                        seq = pol.seq = pol.seq + 1
                        derived.append(BookSnapshot(pol.composite, b.symbol, seq, b.bids, b.asks, b.ts_event, r))
                        pol.book = True
                    else:
                        q: Quote = ev  # type: ignore[assignment]
                        derived.append(q._replace(venue=pol.composite))
                        pol.book = True
                    continue
                if kind is Trade:
                    src.trades.append(ev)  # type: ignore[arg-type]
                if pol.active is None and pol.ever_active and (dirty is None or dirty[-1] is not pol):
                    if dirty is None:
                        dirty = []
                    dirty.append(pol)  # a lost composite takes a source back at the end of the batch
            elif kind is BookStatusChange:
                change: BookStatusChange = u  # type: ignore[assignment]
                pol = by_symbol.get(change.symbol)
                if pol is None:
                    continue
                src = pol.by_venue.get(change.venue)
                if src is None:
                    continue
                status = change.status
                if status in (BookStatus.AWAITING_RESYNC, BookStatus.HALTED):
                    halted = status == BookStatus.HALTED  # a halted book is as unusable as one awaiting resync
                    if not (src.halted if halted else src.resync):
                        if halted:
                            src.halted = True
                        else:
                            src.resync = True
                        if src is pol.active:
                            if dirty is None:
                                dirty = []
                            dirty.append(pol)
                elif (src.resync or src.halted) and status in (BookStatus.CONSISTENT, BookStatus.CROSSED):
                    src.resync = src.halted = False
                    src.since = max(src.since, change.ts_recv)
                    if pol.active is None and pol.ever_active:
                        if dirty is None:
                            dirty = []
                        dirty.append(pol)
        self.now = now
        if dirty is not None:
            seen: set[str] = set()
            for pol in dirty:
                if pol.symbol not in seen:
                    seen.add(pol.symbol)
                    self._evaluate(pol, now, derived, notes)

    def tick(self, ts: int, down: Collection[str], derived: list[Event], notes: list[QualityFlag]) -> None:
        """A clock tick at ``ts``; ``down``: venues whose feed reports itself disconnected."""
        self.now = max(self.now, ts)
        now = self.now
        for pol in self._policies:
            limit = now - pol.config.backfill_window_ns
            for src in pol.sources:
                d = src.venue in down
                if d != src.down:
                    src.down = d
                    if not d and now > src.since:
                        src.since = now
                trades = src.trades
                while trades and trades[0].ts_recv < limit:
                    trades.popleft()
            self._evaluate(pol, now, derived, notes)

    # -- reads ----------------------------------------------------------------------------------

    def active(self, symbol: str) -> str:
        """The active source of ``symbol`` ('' if none or no policy)."""
        pol = self._by_symbol.get(symbol)
        return pol.active.venue if pol is not None and pol.active is not None else ""

    def policies(self) -> list[SourcePolicy]:
        return [p.config for p in self._policies]

    def states(self) -> list[PolicyState]:
        now = self.now
        return [PolicyState(p.symbol, p.composite, tuple(s.venue for s in p.sources),
                            p.active.venue if p.active is not None else "",
                            tuple(s.healthy(now) for s in p.sources), p.failovers, p.restores, p.last_gap_ns)
                for p in self._policies]

    def composite_venues(self) -> frozenset[str]:
        return frozenset(p.composite for p in self._policies)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _composite_trade(pol: _Policy, t: Trade) -> Trade:
        return Trade(pol.composite, t.symbol, f"{t.venue}:{t.trade_id}" if t.trade_id else "", t.price, t.size,
                     t.side, t.ts_event, t.ts_recv)

    def _evaluate(self, pol: _Policy, now: int, derived: list[Event], notes: list[QualityFlag]) -> None:
        active = pol.active
        if active is not None and active.healthy(now):
            hold = pol.config.hold_ns
            for src in pol.sources[:active.rank]:
                if src.healthy(now) and now - src.since >= hold:
                    self._switch(pol, src, now, "recovered", derived, notes)
                    return
            return
        best: _Source | None = None
        for src in pol.sources:
            if src.healthy(now):
                best = src
                break
        if best is active:
            return
        reason = active.why_not(now) if active is not None else ("start" if not pol.ever_active else "recovered")
        self._switch(pol, best, now, reason, derived, notes)

    def _switch(self, pol: _Policy, new: _Source | None, now: int, reason: str, derived: list[Event],
                notes: list[QualityFlag]) -> None:
        old = pol.active
        first = not pol.ever_active
        gap_start = now if first else min(pol.last_forwarded, now)
        if old is None or (new is not None and new.rank < old.rank):
            kind = QualityKind.SOURCE_RESTORED
            pol.restores += 0 if first else 1
            reference = pol.config.hold_ns
        else:
            kind = QualityKind.SOURCE_FAILOVER
            pol.failovers += 1
            reference = old.silence_ns
        pol.active = new
        replayed = 0
        book_note: str
        if new is not None:
            pol.ever_active = True
            trades = new.trades
            if not first:
                for t in trades:
                    if t.ts_recv > gap_start:
                        derived.append(self._composite_trade(pol, t))
                        replayed += 1
            trades.clear()
            view = self._reader(new.venue, pol.symbol) if self._reader is not None else None
            if view is not None:
                bids, asks, ts_event, ts_recv = view
                pol.seq += 1
                derived.append(BookSnapshot(pol.composite, pol.symbol, pol.seq, bids, asks, ts_event, ts_recv))
                pol.book = True
                book_note = f"book from a snapshot of {new.venue}"
            else:
                book_note = self._reset(pol, f"{new.venue} has no consistent book", now, derived)
            pol.last_forwarded = max(pol.last_forwarded, new.last_recv)
        else:
            book_note = self._reset(pol, "no healthy source", now, derived)
        gap = now - gap_start
        pol.last_gap_ns = gap
        frm = old.venue if old is not None else ""
        to = new.venue if new is not None else ""
        detail = (f"{frm or 'none'} -> {to or 'none'} ({reason}); gap {gap // MS_NS} ms; "
                  f"{replayed} trades of the gap replayed; {book_note}")
        notes.append(QualityFlag(pol.composite, pol.symbol, kind, gap, reference, detail, gap_start, now))
        self.switches.append(SourceSwitch(pol.symbol, pol.composite, kind, frm, to, reason, gap_start, now,
                                          replayed))

    @staticmethod
    def _reset(pol: _Policy, why: str, now: int, derived: list[Event]) -> str:
        if pol.book:
            derived.append(BookReset(pol.composite, pol.symbol, why, now, now))
            pol.book = False
            return f"book reset: {why}"
        return f"no book: {why}"


__all__ = ["BookReader", "BookView", "PolicyState", "SourcePolicy", "SourceRouter", "SourceSwitch",
           "parse_duration", "parse_source_spec"]
