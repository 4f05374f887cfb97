"""The state engine: applies normalized events and emits typed updates; owns all per-symbol state.

Pure: no I/O, no asyncio, no clock but the times carried by events and ``ClockTick``s. Feed adapters
call ``apply_batch(events, out)``; every update the batch produced is appended to ``out`` in order.
Reads (books, NBBO, consolidated book, heatmap, trades, candles, tickers, pricing) are plain methods.

A trading halt (``TradingStatusChange``) freezes one (venue, symbol) until it resumes: its trades, deltas
and quotes are refused, counted and flagged, its book reports HALTED and leaves the NBBO and the
consolidated book, its ticker says halted. A venue's book hash (``BookCheck``) is compared with the book
at the same sequence; a mismatch marks the book AWAITING_RESYNC, as a ``BookReset`` does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from heapq import merge
from itertools import islice
from typing import cast

from server.engine.alerts import Alert, AlertBook, AlertSource, AlertTrigger
from server.engine.book import BookStatus, L2Book
from server.engine.candles import Candle, CandleConfig, CandleSeries, Interval
from server.engine.events import (
    NO_SEQUENCE,
    BookCheck,
    BookDelta,
    BookReset,
    BookSnapshot,
    ClockTick,
    Event,
    Quote,
    Trade,
    TradingStatusChange,
)
from server.engine.instruments import InstrumentRegistry
from server.engine.numbers import SCALE, div_round
from server.engine.pricing import (
    FundingConfig,
    FundingRate,
    FundingTracker,
    IndexCalculator,
    IndexConfig,
    IndexPrice,
    MarkConfig,
    MarkPrice,
    MarkPriceTracker,
)
from server.engine.quality import QualityCounters, QualityFlag, QualityKind, SpikeConfig, SpikeDetector
from server.engine.ticker import RollingTicker, Ticker
from server.engine.updates import (
    BookStatusChange,
    ConsolidatedBook,
    ConsolidatedLevel,
    DepthHeatmap,
    ExcludedVenue,
    HeatmapBucket,
    Nbbo,
    VenueSize,
)

SECOND_NS = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Engine settings; frozen, keyword-only (an unknown key is a TypeError)."""

    stale_after_ns: int = 30 * SECOND_NS
    """A venue book not updated for this long (by receive time) is left out of NBBO and consolidation."""
    trade_ring_size: int = 1000
    """Recent trades kept per symbol (all venues)."""
    dedupe_window: int = 100_000
    """Trade ids remembered per (venue, symbol) to drop duplicates."""
    derived_venues: frozenset[str] = frozenset()
    """Venues made from other venues' data (the composite venue of a source policy, see ``sources``):
    their books stay out of the NBBO, the consolidated book and the heatmap, and their trades out of a
    symbol's all-venue recent trades, which already count the sources."""
    candles: CandleConfig = field(default_factory=CandleConfig)
    candle_close_delay_ns: int = 2 * SECOND_NS
    """A clock tick at T closes a series's candles up to T minus its receive lag minus this delay."""
    trade_spikes: SpikeConfig | None = field(default_factory=SpikeConfig)
    """Spike detection on trade prices per (venue, symbol); None turns it off."""
    quote_spikes: SpikeConfig | None = field(default_factory=SpikeConfig)
    """Spike detection on each venue's mid when its top of book changes; None turns it off."""
    indices: tuple[IndexConfig, ...] = ()
    marks: tuple[MarkConfig, ...] = ()
    funding: tuple[FundingConfig, ...] = ()
    """Each funding symbol needs a mark config for the same symbol (its index comes from there)."""
    pricing_interval_ns: int = SECOND_NS
    """Index, mark and funding are recomputed and emitted on the first clock tick of each interval."""

    def __post_init__(self) -> None:
        if self.stale_after_ns <= 0:
            raise ValueError("stale_after_ns must be > 0")
        if self.trade_ring_size <= 0:
            raise ValueError("trade_ring_size must be > 0")
        if self.dedupe_window <= 0:
            raise ValueError("dedupe_window must be > 0")
        if self.candle_close_delay_ns < 0 or self.pricing_interval_ns <= 0:
            raise ValueError("candle_close_delay_ns must be >= 0 and pricing_interval_ns > 0")
        indices = {c.symbol for c in self.indices}
        marks = {c.symbol: c for c in self.marks}
        for m in self.marks:
            if m.index_symbol not in indices:
                raise ValueError(f"mark {m.symbol}: index {m.index_symbol} is not configured")
        for f in self.funding:
            if f.symbol not in marks:
                raise ValueError(f"funding {f.symbol}: needs a mark config for the same symbol")


@dataclass(slots=True)
class EngineCounters:
    """Counts of what the engine refused or flagged, for metrics; keys are (venue, symbol)."""

    sequence_gaps: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicate_deltas: int = 0
    unsynced_deltas: int = 0
    duplicate_trades: int = 0
    resets: int = 0
    halts: int = 0
    """Trading halts applied (a halt of an instrument already halted is not counted)."""
    halted_trades: int = 0
    """Trades refused because the instrument was halted."""
    halted_book_changes: int = 0
    """Deltas and quotes refused because the instrument was halted."""
    checksum_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    """Book checks (venue hashes) that disagreed with the book: it then awaits a resync."""
    book_checks_verified: int = 0
    """Book checks that matched the book."""
    book_checks_unverifiable: int = 0
    """Book checks that could not be compared: no book, a book awaiting resync, or another sequence."""


class _SymbolState:
    """Per symbol: its venue books (by venue name) and the NBBO last emitted, as plain fields."""

    __slots__ = ("ask_price", "ask_size", "ask_venue", "bid_price", "bid_size", "bid_venue", "books",
                 "derived", "excluded", "known")

    def __init__(self) -> None:
        self.books: list[L2Book] = []
        self.derived: list[L2Book] = []  # books of derived venues: not consolidated
        self.known = False
        self.bid_price = self.bid_size = self.ask_price = self.ask_size = 0
        self.bid_venue = self.ask_venue = ""
        self.excluded: tuple[ExcludedVenue, ...] = ()


class _TradeState:
    """Per (venue, symbol) trade state: recent ids, candles with the 24h ticker, the spike detector.

    ``ids`` is an insertion-ordered dict used as a set; when it holds twice the dedupe window it is cut
    back to the newest ``window`` ids (amortized O(1) per trade, one structure on the hot path).
    """

    __slots__ = ("candles", "ids", "ids_limit", "last_event", "last_ts", "open24", "open24_until", "recent",
                 "recent_price", "spikes", "window")

    def __init__(self, venue: str, symbol: str, config: EngineConfig, recent: deque[Trade]) -> None:
        self.ids: dict[str, None] = {}
        self.window = config.dedupe_window
        self.ids_limit = 2 * config.dedupe_window
        self.recent = recent
        self.recent_price = 0
        self.open24 = 0
        self.open24_until = 0
        """The 24h ticker's open, cached until the end of the minute it was read in (for change-% alerts)."""
        self.last_ts = 0
        self.last_event = 0
        """Receive and event time of the newest accepted trade (index staleness; clock-driven closes)."""
        ticker = RollingTicker(venue, symbol) if Interval.M1 in config.candles.intervals else None
        self.candles = CandleSeries(venue, symbol, config.candles, ticker=ticker)
        self.spikes = SpikeDetector(config.trade_spikes) if config.trade_spikes is not None else None


class Engine:
    """All market state; see the module docstring."""

    def __init__(self, config: EngineConfig | None = None,
                 instruments: InstrumentRegistry | None = None) -> None:
        self.config = config or EngineConfig()
        self.instruments = instruments or InstrumentRegistry()
        self.counters = EngineCounters()
        self.quality = QualityCounters()
        self.alerts = AlertBook()
        self.now = 0
        """Time of the latest ClockTick (reads that need "now" also take the newest book receive time)."""
        self._books: dict[tuple[str, str], L2Book] = {}
        self._symbols: dict[str, _SymbolState] = {}
        self._nbbo: dict[str, Nbbo] = {}
        self._trades: dict[tuple[str, str], _TradeState] = {}
        self._recent: dict[str, deque[Trade]] = {}
        self._recent_derived: dict[str, dict[str, deque[Trade]]] = {}  # venue -> symbol -> ring
        self._quote_spikes: dict[tuple[str, str], SpikeDetector] = {}
        self._alert_symbols: set[str] = set()
        self._halted: dict[tuple[str, str], str] = {}
        self._status_applied: list[TradingStatusChange] = []  # since the last take_status_changes()
        """(venue, symbol) -> why trading is halted ('' if no reason given), while it is."""
        cfg = self.config
        self._indices = {c.symbol: IndexCalculator(c) for c in cfg.indices}
        self._marks = {c.symbol: MarkPriceTracker(c) for c in cfg.marks}
        self._mark_index = {c.symbol: c.index_symbol for c in cfg.marks}
        self._funding = {c.symbol: FundingTracker(c) for c in cfg.funding}
        self._index_prices: dict[str, IndexPrice] = {}
        self._mark_prices: dict[str, MarkPrice] = {}
        self._funding_rates: dict[str, FundingRate] = {}
        self._next_pricing = 0
        self._has_ticker = Interval.M1 in cfg.candles.intervals
        self._quote_spikes_on = cfg.quote_spikes is not None

    # -- input ----------------------------------------------------------------------------------

    def apply(self, event: Event, out: list[object]) -> None:
        """Apply one event; its updates are appended to ``out``."""
        self.apply_batch((event,), out)

    def apply_batch(self, events: Iterable[Event], out: list[object]) -> None:
        """Apply events in order; their updates are appended to ``out`` in order."""
        for event in events:
            # Explicit type tests: compiled, these are direct calls (a dict of bound methods is not).
            kind = type(event)
            if kind is BookDelta:
                self._on_delta(cast(BookDelta, event), out)
            elif kind is Trade:
                self._on_trade(cast(Trade, event), out)
            elif kind is BookSnapshot:
                self._on_snapshot(cast(BookSnapshot, event), out)
            elif kind is Quote:
                self._on_quote(cast(Quote, event), out)
            elif kind is ClockTick:
                self._on_tick(cast(ClockTick, event), out)
            elif kind is BookReset:
                self._on_reset(cast(BookReset, event), out)
            elif kind is BookCheck:
                self._on_book_check(cast(BookCheck, event), out)
            elif kind is TradingStatusChange:
                self._on_trading_status(cast(TradingStatusChange, event), out)
            else:
                raise TypeError(f"not an engine event: {type(event).__name__}")

    # -- books ----------------------------------------------------------------------------------

    def _book(self, venue: str, symbol: str) -> L2Book:
        book = self._books.get((venue, symbol))
        if book is None:
            book = L2Book(venue, symbol)
            book.halted = (venue, symbol) in self._halted
            self._books[venue, symbol] = book
            state = self._symbols.get(symbol)
            if state is None:
                state = self._symbols[symbol] = _SymbolState()
            books = state.derived if venue in self.config.derived_venues else state.books
            books.append(book)
            books.sort(key=lambda b: b.venue)
        return book

    def _on_snapshot(self, ev: BookSnapshot, out: list[object]) -> None:
        book = self._books.get((ev.venue, ev.symbol)) or self._book(ev.venue, ev.symbol)
        was_synced, was_crossed = book.synced, book.crossed
        book.replace(ev.bids, ev.asks)
        book.seq = ev.seq
        self._replaced(book, ev, ev.seq, "snapshot", was_synced, was_crossed, out)

    def _on_quote(self, ev: Quote, out: list[object]) -> None:
        book = self._books.get((ev.venue, ev.symbol)) or self._book(ev.venue, ev.symbol)
        if book.halted:
            self._halted_book_change(book, ev, NO_SEQUENCE, out)
            return
        was_synced, was_crossed = book.synced, book.crossed
        book.set_top(ev.bid_price, ev.bid_size, ev.ask_price, ev.ask_size)
        self._replaced(book, ev, 0, "quote", was_synced, was_crossed, out)

    def _replaced(self, book: L2Book, ev: BookSnapshot | Quote, seq: int, reason: str, was_synced: bool,
                  was_crossed: bool, out: list[object]) -> None:
        """After a snapshot or quote replaced a whole book: it is consistent again."""
        book.synced = True
        book.crossed = book.is_crossed()
        book.version += 1
        book.last_ts_event = ev.ts_event
        book.last_ts_recv = ev.ts_recv
        out.append(ev)
        if self._quote_spikes_on:
            self._check_quote(book, ev, out)
        if not was_synced or was_crossed != book.crossed:
            self._status_change(book, seq, seq, reason, ev.ts_event, ev.ts_recv, out)
        self._update_nbbo(ev.symbol, ev.ts_event, ev.ts_recv, out)

    def _on_delta(self, ev: BookDelta, out: list[object]) -> None:
        venue, symbol, first_seq, seq, bids, asks, ts_event, ts_recv = ev  # unpacking beats attributes
        book = self._books.get((venue, symbol))
        if book is None or not book.synced or book.halted:
            if book is not None and book.synced:
                self._halted_book_change(book, ev, seq, out)
                return
            self.counters.unsynced_deltas += 1
            if book is None:  # a new venue awaiting its snapshot is listed as excluded
                self._book(venue, symbol)
                self._update_nbbo(symbol, ts_event, ts_recv, out)
            return
        if seq != NO_SEQUENCE:
            last = book.seq
            if seq <= last:
                self.counters.duplicate_deltas += 1
                return
            if first_seq > last + 1:
                self._gap(book, last + 1, first_seq, "sequence gap", ts_event, ts_recv, out)
                return
            book.seq = seq
        book.version += 1
        book.last_ts_event = ts_event
        book.last_ts_recv = ts_recv
        touched = book.apply(bids, asks)  # True when the top may have moved (the book refreshed it)
        out.append(ev)
        if touched:
            if self._quote_spikes_on:
                self._check_quote(book, ev, out)
            crossed = book.is_crossed()
            if crossed != book.crossed:
                book.crossed = crossed
                self._status_change(book, seq, seq, "crossed" if crossed else "uncrossed",
                                    ts_event, ts_recv, out)
            self._update_nbbo(symbol, ts_event, ts_recv, out)

    def _on_reset(self, ev: BookReset, out: list[object]) -> None:
        book = self._books.get((ev.venue, ev.symbol)) or self._book(ev.venue, ev.symbol)
        self.counters.resets += 1
        if book.synced:
            book.synced = False
            self._status_change(book, book.seq + 1, 0, ev.reason, ev.ts_event, ev.ts_recv, out)
        self._update_nbbo(ev.symbol, ev.ts_event, ev.ts_recv, out)

    def _halted_book_change(self, book: L2Book, ev: BookDelta | Quote, seq: int, out: list[object]) -> None:
        """A delta or quote while trading is halted: refused, counted and flagged (the book keeps its
        sequence, so the first delta after the resume reveals the gap)."""
        self.counters.halted_book_changes += 1
        self._flag(ev, QualityKind.BOOK_CHANGE_WHILE_HALTED, seq, book.seq,
                   "book change while trading is halted: not applied", out)

    def _on_trading_status(self, ev: TradingStatusChange, out: list[object]) -> None:
        """Halt or resume (venue, symbol); the book's status change is emitted when its status changes."""
        key = (ev.venue, ev.symbol)
        halts = self._halted
        if ev.halted:
            if key in halts:
                if halts[key] != ev.reason:  # still halted; only the reason is news
                    halts[key] = ev.reason
                    self._status_applied.append(ev)
                return
            halts[key] = ev.reason
            self.counters.halts += 1
            reason = f"halted: {ev.reason}" if ev.reason else "halted"
        else:
            if halts.pop(key, None) is None:
                return
            reason = "resumed"
        self._status_applied.append(ev)
        book = self._books.get(key)
        if book is None:  # no book yet: it starts halted (see _book)
            return
        book.halted = ev.halted
        if book.synced:  # AWAITING_RESYNC wins over HALTED: an unsynced book's status does not change
            self._status_change(book, book.seq, book.seq, reason, ev.ts_event, ev.ts_recv, out)
        self._update_nbbo(ev.symbol, ev.ts_event, ev.ts_recv, out)

    def _on_book_check(self, ev: BookCheck, out: list[object]) -> None:
        """Compare the venue's hash with the book's at the same sequence; a mismatch means resync."""
        book = self._books.get((ev.venue, ev.symbol))
        if book is None or not book.synced or book.seq != ev.book_seq or ev.depth < 1:
            self.counters.book_checks_unverifiable += 1
            return
        crc = book.hash(ev.depth)
        if crc == ev.crc32:
            self.counters.book_checks_verified += 1
            return
        key = (book.venue, book.symbol)
        failures = self.counters.checksum_failures
        failures[key] = failures.get(key, 0) + 1
        detail = (f"book hash mismatch at sequence {book.seq} (depth {ev.depth}): "
                  f"crc32 {crc:#010x}, the venue's {ev.crc32:#010x}")
        self._flag(ev, QualityKind.BOOK_HASH_MISMATCH, crc, ev.crc32, detail, out)
        book.synced = False
        self._status_change(book, book.seq + 1, 0, detail, ev.ts_event, ev.ts_recv, out)
        self._update_nbbo(ev.symbol, ev.ts_event, ev.ts_recv, out)

    def _gap(self, book: L2Book, expected: int, received: int, reason: str,
             ts_event: int, ts_recv: int, out: list[object]) -> None:
        """A gap on one (venue, symbol): that book alone awaits a snapshot; nothing else is reset."""
        key = (book.venue, book.symbol)
        gaps = self.counters.sequence_gaps
        gaps[key] = gaps.get(key, 0) + 1
        book.synced = False
        self._status_change(book, expected, received, reason, ts_event, ts_recv, out)
        self._update_nbbo(book.symbol, ts_event, ts_recv, out)

    def _status_change(self, book: L2Book, expected: int, received: int, reason: str,
                       ts_event: int, ts_recv: int, out: list[object]) -> None:
        out.append(BookStatusChange(book.venue, book.symbol, book.status, expected, received, reason,
                                    ts_event, ts_recv))

    # -- NBBO -----------------------------------------------------------------------------------

    def _usable(self, book: L2Book, now: int) -> str:
        """'' when the book may be used for NBBO / consolidation, else why not."""
        if not book.synced:
            return "resync"
        if book.halted:
            return "halted"
        if now - book.last_ts_recv > self.config.stale_after_ns:
            return "stale"
        return ""

    def _update_nbbo(self, symbol: str, ts_event: int, ts_recv: int, out: list[object]) -> None:
        """Recompute the symbol's NBBO; emit it only when it changed."""
        fresh_after = (ts_recv if ts_recv > self.now else self.now) - self.config.stale_after_ns
        bp = bs = bmax = ap = as_ = amax = 0
        bv = av = ""
        excluded: list[ExcludedVenue] | None = None
        st = self._symbols[symbol]
        for b in st.books:
            if not b.synced or b.halted or b.last_ts_recv < fresh_after:
                if excluded is None:
                    excluded = []
                reason = "resync" if not b.synced else "halted" if b.halted else "stale"
                excluded.append(_excluded(b.venue, reason))
                continue
            p = b.bid_price
            if p:
                s = b.bid_size
                if p > bp:
                    bp, bs, bv, bmax = p, s, b.venue, s
                elif p == bp:
                    bs += s
                    if s > bmax:
                        bv, bmax = b.venue, s
            p = b.ask_price
            if p:
                s = b.ask_size
                if not ap or p < ap:
                    ap, as_, av, amax = p, s, b.venue, s
                elif p == ap:
                    as_ += s
                    if s > amax:
                        av, amax = b.venue, s
        ex = tuple(excluded) if excluded is not None else ()
        if (st.bid_price == bp and st.bid_size == bs and st.ask_price == ap and st.ask_size == as_
                and st.bid_venue == bv and st.ask_venue == av and st.excluded == ex and st.known):
            return
        st.known = True
        st.bid_price, st.bid_size, st.bid_venue = bp, bs, bv
        st.ask_price, st.ask_size, st.ask_venue = ap, as_, av
        st.excluded = ex
        both = bool(bp and ap)
        # tuple.__new__ skips the NamedTuple's generated __new__, a Python frame (about 0.2 us here).
        nbbo = tuple.__new__(Nbbo, (symbol, bp, bs, bv, ap, as_, av, both and bp == ap, both and bp > ap, ex,
                                    ts_event, ts_recv))
        self._nbbo[symbol] = nbbo
        out.append(nbbo)
        if symbol in self._alert_symbols and bp and ap:
            self._evaluate_alerts(symbol, AlertSource.NBBO_MID, div_round(bp + ap, 2), None, ts_event, out)

    # -- trades ---------------------------------------------------------------------------------

    def _on_trade(self, ev: Trade, out: list[object]) -> None:
        venue, symbol, tid, price, size, side, ts_event, ts_recv = ev  # unpacking beats attributes
        if self._halted and (venue, symbol) in self._halted:
            self.counters.halted_trades += 1
            self._flag(ev, QualityKind.TRADE_WHILE_HALTED, price, 0,
                       f"trade {tid} while trading is halted: not applied" if tid else
                       "trade while trading is halted: not applied", out)
            return
        state = self._trades.get((venue, symbol))
        if state is None:
            state = self._new_trade_state(venue, symbol)
        if tid:
            ids = state.ids
            if tid in ids:
                self.counters.duplicate_trades += 1
                self._flag(ev, QualityKind.DUPLICATE_TRADE, price, 0, f"trade id {tid} seen before", out)
                return
            ids[tid] = None
            if len(ids) > state.ids_limit:
                state.ids = dict.fromkeys(list(ids)[-state.window:])
        spikes = state.spikes
        if spikes is not None and spikes.check(price):
            self._flag(ev, QualityKind.PRICE_SPIKE, price, spikes.median, "trade far from the median", out)
        if not state.candles.add_trade(price, size, side, ts_event, ts_recv, out):
            self._flag(ev, QualityKind.LATE_TRADE, price, state.candles.watermark or 0,
                       "trade older than the candle grace period: kept in the tape, not in candles", out)
        state.recent.append(ev)
        state.recent_price = price
        state.last_ts = ts_recv
        state.last_event = ts_event
        out.append(ev)
        if symbol in self._alert_symbols:
            change: int | None = None
            if self._has_ticker:
                if ts_event >= state.open24_until:
                    # The 24h open moves only at minute boundaries: read the ticker once a minute.
                    ticker = state.candles.ticker(ts_event)
                    if ticker is not None:
                        state.open24, state.open24_until = ticker.open, ticker.window_end
                if state.open24:
                    change = div_round(100 * SCALE * (price - state.open24), state.open24)
            self._evaluate_alerts(symbol, AlertSource.LAST_TRADE, price, change, ts_event, out, venue)

    def _new_trade_state(self, venue: str, symbol: str) -> _TradeState:
        rings = self._recent if venue not in self.config.derived_venues else self._recent_derived.setdefault(venue, {})
        recent = rings.get(symbol)
        if recent is None:
            recent = rings[symbol] = deque(maxlen=self.config.trade_ring_size)
        state = self._trades[venue, symbol] = _TradeState(venue, symbol, self.config, recent)
        return state

    def _flag(self, ev: Trade | BookDelta | BookSnapshot | Quote | BookCheck, kind: QualityKind, value: int,
              reference: int, detail: str, out: list[object]) -> None:
        flag = QualityFlag(ev.venue, ev.symbol, kind, value, reference, detail, ev.ts_event, ev.ts_recv)
        self.quality.record(flag)
        out.append(flag)

    def _check_quote(self, book: L2Book, ev: BookDelta | BookSnapshot | Quote, out: list[object]) -> None:
        """Spike check on the venue's mid after its top of book changed."""
        if not (book.bid_price and book.ask_price):
            return
        key = (book.venue, book.symbol)
        detector = self._quote_spikes.get(key)
        if detector is None:
            detector = self._quote_spikes[key] = SpikeDetector(self.config.quote_spikes)
        mid = (book.bid_price + book.ask_price) >> 1  # floor is fine for a spike reference
        if detector.check(mid):
            self._flag(ev, QualityKind.QUOTE_SPIKE, mid, detector.median, "mid far from rolling median", out)

    # -- alerts ---------------------------------------------------------------------------------

    def add_alert(self, alert: Alert) -> None:
        """Register a price alert (ValueError if invalid or a duplicate id)."""
        self.alerts.add(alert)
        self._alert_symbols.add(alert.symbol)

    def remove_alert(self, alert_id: str) -> bool:
        alert = self.alerts.get(alert_id)
        removed = self.alerts.remove(alert_id)
        if alert is not None and not self.alerts.list(alert.symbol):
            self._alert_symbols.discard(alert.symbol)
        return removed

    def _evaluate_alerts(self, symbol: str, source: AlertSource, price: int, change_pct: int | None, ts: int,
                         out: list[object], venue: str = "") -> None:
        fired: list[AlertTrigger] = []
        self.alerts.evaluate(symbol, source, price, change_pct, ts, fired, venue)
        if fired:
            out.extend(fired)
            if not self.alerts.list(symbol):
                self._alert_symbols.discard(symbol)

    def forget_receive_lag(self) -> None:
        """After state was restored from storage: every trade series' receive lag is unknown until its
        feed delivers again, so clock ticks do not close candles a redelivery may still complete (the
        downtime would otherwise look like lag), and a restored last trade is not a fresh index price."""
        for state in self._trades.values():
            state.last_ts = 0

    # -- clock ----------------------------------------------------------------------------------

    def _on_tick(self, ev: ClockTick, out: list[object]) -> None:
        ts = ev.ts
        self.now = max(self.now, ts)
        for symbol in self._symbols:
            self._update_nbbo(symbol, ts, ts, out)
        delay = self.config.candle_close_delay_ns
        for state in self._trades.values():
            # Advance each series in its own event time: the tick minus that series' receive lag (a live
            # venue's latency, or years for a replay), so a clock tick never makes replayed trades late.
            if state.last_ts:
                state.candles.advance(ts - (state.last_ts - state.last_event) - delay, out)
        if ts >= self._next_pricing:
            interval = self.config.pricing_interval_ns
            self._next_pricing = ts - ts % interval + interval
            self._publish_pricing(ts, out)

    def _venue_price(self, venue: str, symbol: str) -> tuple[int, int] | None:
        """A venue's price for an index: the mid of a consistent book, else its last trade."""
        book = self._books.get((venue, symbol))
        if book is not None and book.synced and not book.halted and book.bid_keys and book.ask_keys:
            # The mid, rounded half-even to 1e-9 (the index then rounds its weighted mean once more).
            return div_round(book.bid_keys[-1] - book.ask_keys[-1], 2), book.last_ts_recv
        state = self._trades.get((venue, symbol))
        if state is not None and state.last_ts:
            return state.recent_price, state.last_ts
        return None

    def _publish_pricing(self, now: int, out: list[object]) -> None:
        for symbol, calc in self._indices.items():
            prices: dict[tuple[str, str], tuple[int, int]] = {}
            for comp in calc.config.components:
                got = self._venue_price(comp.venue, comp.symbol)
                if got is not None:
                    prices[comp.venue, comp.symbol] = got
            index = calc.compute(prices, now)
            if index is not None:
                self._index_prices[symbol] = index
                out.append(index)
        for symbol, tracker in self._marks.items():
            index = self._index_prices.get(self._mark_index[symbol])
            nbbo = self._nbbo.get(symbol)
            if index is None or index.ts != now:
                continue
            bid = nbbo.bid_price if nbbo is not None else 0
            ask = nbbo.ask_price if nbbo is not None else 0
            mark = tracker.update(index.price, bid, ask, now)
            self._mark_prices[symbol] = mark
            out.append(mark)
            if symbol in self._alert_symbols:
                self._evaluate_alerts(symbol, AlertSource.MARK, mark.mark_price, None, now, out)
            funding = self._funding.get(symbol)
            if funding is not None:
                # Impact bid/ask approximated by the best bid/ask (see pricing.premium_index).
                if bid and ask:
                    funding.sample(index.price, bid, ask, now)
                out.extend(funding.settle(now))
                rate = funding.rate(now)
                self._funding_rates[symbol] = rate
                out.append(rate)

    # -- reads ----------------------------------------------------------------------------------

    def book(self, venue: str, symbol: str) -> L2Book | None:
        return self._books.get((venue, symbol))

    def venues(self, symbol: str) -> list[str]:
        state = self._symbols.get(symbol)
        return sorted(b.venue for b in [*state.books, *state.derived]) if state is not None else []

    def symbols(self) -> list[str]:
        return sorted(set(self._symbols) | set(self._recent))

    def nbbo(self, symbol: str) -> Nbbo | None:
        return self._nbbo.get(symbol)

    def candles(self, venue: str, symbol: str, interval: Interval, start_ns: int | None = None,
                end_ns: int | None = None, limit: int | None = None) -> list[Candle]:
        """Closed candles (oldest first) then the in-progress one when it falls in [start_ns, end_ns)."""
        state = self._trades.get((venue, symbol))
        if state is None:
            return []
        series = state.candles
        result = series.closed(interval, start_ns, end_ns, limit)
        current = series.current(interval)
        if (current is not None and (start_ns is None or current.open_time >= start_ns)
                and (end_ns is None or current.open_time < end_ns)
                and (limit is None or len(result) < limit or start_ns is None)):
            result.append(current)
            if limit is not None and len(result) > limit:
                result = result[-limit:]
        return result

    def ticker(self, venue: str, symbol: str) -> Ticker | None:
        """24h rolling ticker of one venue's trades, with that venue's current best bid and ask."""
        state = self._trades.get((venue, symbol))
        if state is None or state.candles.watermark is None or not self._has_ticker:
            return None
        ticker = state.candles.ticker(max(self.now, state.candles.watermark))
        if ticker is None:
            return None
        book = self._books.get((venue, symbol))
        if book is not None and book.synced:
            bid = book.best_bid() or 0
            ask = book.best_ask() or 0
            ticker = ticker._replace(best_bid=bid, best_ask=ask)
        if (venue, symbol) in self._halted:
            ticker = ticker._replace(halted=True)
        return ticker

    def halted(self, venue: str, symbol: str) -> bool:
        """Trading in ``symbol`` is halted on ``venue``."""
        return (venue, symbol) in self._halted

    def halts(self) -> dict[tuple[str, str], str]:
        """Every halted (venue, symbol) and why ('' when no reason was given)."""
        return dict(self._halted)

    def take_status_changes(self) -> list[TradingStatusChange]:
        """The trading status changes applied since the last call (halts, reason changes, resumes; not the
        ones that changed nothing), in order: what storage keeps so a restart can restore them."""
        if not self._status_applied:
            return []
        taken, self._status_applied = self._status_applied, []
        return taken

    def index_price(self, symbol: str) -> IndexPrice | None:
        return self._index_prices.get(symbol)

    def mark_price(self, symbol: str) -> MarkPrice | None:
        return self._mark_prices.get(symbol)

    def funding_rate(self, symbol: str) -> FundingRate | None:
        return self._funding_rates.get(symbol)

    def recent_trades(self, symbol: str, limit: int = 100, venue: str = "") -> list[Trade]:
        """Newest last; at most ``limit``; only ``venue``'s when given."""
        if venue in self.config.derived_venues:
            derived = self._recent_derived.get(venue, {}).get(symbol)
            return list(islice(reversed(derived), limit))[::-1] if derived else []
        ring = self._recent.get(symbol)
        if not ring:
            return []
        if venue:
            picked = [t for t in reversed(ring) if t.venue == venue]
            return picked[:limit][::-1]
        return list(islice(reversed(ring), limit))[::-1]

    def _consolidation_inputs(self, symbol: str) -> tuple[list[L2Book], tuple[ExcludedVenue, ...], int]:
        """Usable books, the excluded venues and "now" (latest tick or newest book receive time)."""
        state = self._symbols.get(symbol)
        books = state.books if state is not None else []
        now = max([self.now, *(b.last_ts_recv for b in books)])
        usable: list[L2Book] = []
        excluded: list[ExcludedVenue] = []
        for b in books:
            reason = self._usable(b, now)
            if reason:
                excluded.append(ExcludedVenue(b.venue, reason))
            else:
                usable.append(b)
        return usable, tuple(excluded), now

    def consolidated_book(self, symbol: str, depth: int) -> ConsolidatedBook:
        """Top ``depth`` price levels summed over usable venues, with each venue's size."""
        books, excluded, now = self._consolidation_inputs(symbol)
        bids = _consolidate([(b.venue, b.bids, list(islice(reversed(b.bid_keys), depth)))
                             for b in books], depth, descending=True)
        asks = _consolidate([(b.venue, b.asks, [-k for k in islice(reversed(b.ask_keys), depth)])
                             for b in books], depth, descending=False)
        return ConsolidatedBook(symbol, bids, asks, excluded, now)

    def depth_heatmap(self, symbol: str, bucket_size: int, buckets: int) -> DepthHeatmap:
        """Consolidated depth in ``bucket_size`` price buckets, ``buckets`` per side from the best."""
        if bucket_size <= 0 or buckets <= 0:
            raise ValueError("bucket_size and buckets must be > 0")
        books, _, now = self._consolidation_inputs(symbol)
        bid_sums: dict[int, int] = {}
        ask_sums: dict[int, int] = {}
        for b in books:
            # The global top-N buckets are among each book's own top-N buckets.
            _bucket_sums(((k, b.bids[k]) for k in reversed(b.bid_keys)), bucket_size, buckets, bid_sums)
            _bucket_sums(((-k, b.asks[-k]) for k in reversed(b.ask_keys)), bucket_size, buckets, ask_sums)
        bids = tuple(HeatmapBucket(p, s) for p, s in sorted(bid_sums.items(), reverse=True)[:buckets])
        asks = tuple(HeatmapBucket(p, s) for p, s in sorted(ask_sums.items())[:buckets])
        return DepthHeatmap(symbol, bucket_size, bids, asks, now)


_EXCLUDED: dict[tuple[str, str], ExcludedVenue] = {}


def _excluded(venue: str, reason: str) -> ExcludedVenue:
    """Shared ExcludedVenue records (they are immutable), so an NBBO recompute allocates none."""
    ev = _EXCLUDED.get((venue, reason))
    if ev is None:
        ev = _EXCLUDED[venue, reason] = ExcludedVenue(venue, reason)
    return ev


def _bucket_sums(levels: Iterable[tuple[int, int]], bucket_size: int, buckets: int,
                 sums: dict[int, int]) -> None:
    seen = 0
    last = None
    for price, size in levels:
        start = (price // bucket_size) * bucket_size
        if start != last:
            seen += 1
            if seen > buckets:
                return
            last = start
        sums[start] = sums.get(start, 0) + size


def _consolidate(sides: list[tuple[str, dict[int, int], list[int]]], depth: int,
                 descending: bool) -> tuple[ConsolidatedLevel, ...]:
    prices = merge(*(p for _, _, p in sides), reverse=descending)
    levels: list[ConsolidatedLevel] = []
    last: int | None = None
    for price in prices:
        if price == last:
            continue
        last = price
        venues = tuple(VenueSize(v, levels_[price]) for v, levels_, _ in sides if price in levels_)
        levels.append(ConsolidatedLevel(price, sum(vs.size for vs in venues), venues))
        if len(levels) == depth:
            break
    return tuple(levels)


__all__ = ["BookStatus", "Engine", "EngineConfig", "EngineCounters"]
