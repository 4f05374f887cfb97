"""Restore at start: the engine state that stored data implies, so a restart continues where the last run
stopped, and the seeding of at-least-once feeds' duplicate filters.

Owns ``restore(engine, store, dedupers)``, run by ``server.serve`` before the runtime starts (nothing
reads the engine yet). Everything restored is applied through ``Engine.apply_batch`` into a discarded
list: it is neither published to subscribers nor written to storage again.

- **Trades -> candles, 24h ticker, recent trades.** Per stored (venue, symbol) series, its trades from
  the UTC day start of the oldest still-open period it has: the 24h ticker's window (1439 minutes
  before the minute of the series' last stored trade) when the engine builds 1m candles, so the
  previous day too; else the current day. Day-aligned, so every 1s .. 1d candle in memory is whole.
  When those windows hold more than ``trade_budget`` trades in all, only the current day is restored
  (the ticker then misses the previous day's minutes until they leave its window). 1w and 1M candles
  in progress are NOT whole: they lack the trades before the window (the engine has no way to seed
  them from stored candles).
- **Candles closed during the restore** that storage lacks (after the latest candle it holds for the
  series and interval: the last run may have died between writing trades and their candle) are
  written; the ones it holds are not written again (rows replace by identity anyway).
- **Books**: per (venue, symbol) with sequences, the stored snapshot with the highest sequence, then the
  stored deltas after it (at most ``max_book_deltas``, else the book is left to the feed's next
  snapshot). A book consistent at the last stored sequence seeds the dedupers' mark for it, so
  redelivered book events at or below it are dropped; other books are not marked (a redelivered
  snapshot may still bring them back).
- **Dedupers** (``Seedable``: ``feeds.kafka.dedupe.Deduper``) get every restored trade.

After the trades, ``Engine.forget_receive_lag`` makes every series' receive lag unknown: clock ticks do
not close its candles until its feed delivers a trade again. Otherwise the ticks after a restart would
close the periods the feed is still replaying (the downtime looks like receive lag) and the redelivered
trades would land as late. A series whose feed stays silent therefore keeps its last candle open until its
next trade.

- **Trading status**: per (venue, symbol), the last stored trading status change (``trading_status``,
  written by the runtime as the engine applies halts and resumes) is applied last, after the books and
  trades (they were accepted before any halt that followed them): an instrument halted before the
  restart is still halted after it, with its reason. ``restore_trading_status`` does this alone; it runs
  whenever there is storage, with or without a feed that redelivers.

Quotes are not restored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from server.engine.candles import MINUTE_NS, Candle, Interval, period_start
from server.engine.engine import Engine
from server.engine.events import Trade, TradingStatusChange
from server.engine.ticker import WINDOW_MINUTES
from server.storage.store import EmbeddedStore

log = logging.getLogger("mds.restore")

DEFAULT_TRADE_BUDGET: Final = 3_000_000
"""Trades restored at most with the previous day (the 24h ticker); above it only the current day. A
restore applies about 100k trades/s (interpreted engine, one core), so about 30 s at most."""
DEFAULT_MAX_BOOK_DELTAS: Final = 1_000_000
"""Stored deltas after a book's last snapshot above which the book is not restored."""


@runtime_checkable
class Seedable(Protocol):
    """A feed's duplicate filter that can learn what storage holds (``feeds.kafka.dedupe.Deduper``)."""

    def seed(self, items: Iterable[Trade]) -> None: ...

    def seed_book(self, venue: str, symbol: str, seq: int) -> None: ...


def dedupers(feeds: Iterable[object]) -> list[Seedable]:
    """The duplicate filters of the feeds that redeliver after a restart (a ``deduper`` attribute)."""
    found = []
    for feed in feeds:
        d = getattr(feed, "deduper", None)
        if isinstance(d, Seedable):
            found.append(d)
    return found


@dataclass(slots=True)
class RestoreReport:
    """What ``restore`` did."""

    series: int = 0
    trades: int = 0
    with_ticker: bool = False
    """True: trades back to the 24h ticker's window; False: the current day only."""
    candles_written: int = 0
    books: int = 0
    book_deltas: int = 0
    books_skipped: int = 0
    marks: dict[tuple[str, str], int] = field(default_factory=dict)
    """The books restored consistent at their last stored sequence (the dedupers' marks)."""
    halted: int = 0
    """Instruments restored halted."""
    seconds: float = 0.0


def restore_start(last_ns: int, *, ticker: bool) -> int:
    """Where a series whose last stored trade is at ``last_ns`` is restored from (see the module docstring)."""
    lo = period_start(Interval.M1, last_ns) - (WINDOW_MINUTES - 1) * MINUTE_NS if ticker else last_ns
    return period_start(Interval.D1, lo)


def restore(engine: Engine, store: EmbeddedStore, seeds: Sequence[Seedable] = (), *,
            trade_budget: int = DEFAULT_TRADE_BUDGET, max_book_deltas: int = DEFAULT_MAX_BOOK_DELTAS,
            chunk: int = 50_000) -> RestoreReport:
    """Restore ``engine`` from ``store`` and seed ``seeds``; synchronous (see the module docstring)."""
    started = time.perf_counter()
    report = RestoreReport()
    out: list[object] = []
    _restore_books(engine, store, seeds, max_book_deltas, chunk, out, report)
    series = store.trade_series()
    report.series = len(series)
    ticker = Interval.M1 in engine.config.candles.intervals
    starts = {k: restore_start(last, ticker=ticker) for k, last in series.items()}
    if ticker and store.count_trades_since(starts) > trade_budget:
        starts = {k: restore_start(last, ticker=False) for k, last in series.items()}
    else:
        report.with_ticker = ticker
    stored = store.latest_candle_times()
    missing: dict[tuple[str, str, Interval, int], Candle] = {}
    for (venue, symbol), start in starts.items():
        for page in store.trades_since(venue, symbol, start, chunk):
            for s in seeds:
                s.seed(page)
            engine.apply_batch(page, out)
            report.trades += len(page)
            _collect(out, start, stored, missing)
    engine.forget_receive_lag()  # see the module docstring
    if missing:
        report.candles_written = len(missing)
        store.write_batch(list(missing.values()))
    report.halted = len(restore_trading_status(engine, store))
    report.seconds = time.perf_counter() - started
    log.info("restored %d trades of %d series (%s), %d books (%d deltas, %d skipped), %d halted instruments, "
             "wrote %d missing candles, in %.2f s", report.trades, report.series,
             "24h ticker window" if report.with_ticker else "current day", report.books, report.book_deltas,
             report.books_skipped, report.halted, report.candles_written, report.seconds)
    return report


def restore_trading_status(engine: Engine, store: EmbeddedStore) -> list[TradingStatusChange]:
    """Apply each instrument's last stored trading status change; returns the halts applied.

    Only halts need applying (an engine starts with every instrument trading); a stored resume is the
    latest state of an instrument that trades, and is skipped."""
    halts = [s for s in store.trading_status() if s.halted]
    out: list[object] = []
    engine.apply_batch(halts, out)
    for h in halts:
        log.info("%s %s restored halted%s", h.venue, h.symbol, f": {h.reason}" if h.reason else "")
    return halts


def _collect(out: list[object], start: int, stored: dict[tuple[str, str, Interval], int],
             missing: dict[tuple[str, str, Interval, int], Candle]) -> None:
    """Keep the whole candles closed by the restore that storage lacks; empty ``out``."""
    for rec in out:
        if type(rec) is Candle and rec.closed and rec.open_time >= start:
            latest = stored.get((rec.venue, rec.symbol, rec.interval))
            if latest is None or rec.open_time > latest:
                missing[rec.venue, rec.symbol, rec.interval, rec.open_time] = rec
    out.clear()


def _restore_books(engine: Engine, store: EmbeddedStore, seeds: Sequence[Seedable], max_deltas: int,
                   chunk: int, out: list[object], report: RestoreReport) -> None:
    marks = store.book_marks()
    for snap in store.latest_book_snapshots():
        key = (snap.venue, snap.symbol)
        if store.count_book_deltas_after(snap.venue, snap.symbol, snap.seq) > max_deltas:
            report.books_skipped += 1
            log.warning("book %s %s not restored: more than %d deltas after its last stored snapshot",
                        snap.venue, snap.symbol, max_deltas)
            continue
        engine.apply(snap, out)
        for page in store.book_deltas_after(snap.venue, snap.symbol, snap.seq, chunk):
            engine.apply_batch(page, out)
            report.book_deltas += len(page)
            out.clear()
        out.clear()
        report.books += 1
        book = engine.book(snap.venue, snap.symbol)
        mark = marks.get(key)
        if book is not None and book.synced and mark is not None and book.seq == mark:
            report.marks[key] = mark
            for s in seeds:
                s.seed_book(snap.venue, snap.symbol, mark)

