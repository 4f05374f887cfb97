"""Trading halts (TradingStatusChange) and venue book hashes (BookCheck) in the engine.

Halts: the book reports HALTED and leaves the NBBO and consolidation, the ticker says halted, trades and
book changes are refused, counted and flagged, a snapshot still applies, and a resume returns to
CONSISTENT (or AWAITING_RESYNC when the book lost sequence). Hashes: a match is counted, a mismatch marks
the book AWAITING_RESYNC like a reset, another sequence is unverifiable; the engine's hash equals an
independent reading of the proto's text (engine_event.proto, EngineBookHash) checksummed with zlib.crc32.
"""

from __future__ import annotations

import zlib
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.book import BookStatus, L2Book, book_hash, book_hash_text
from server.engine.candles import CandleConfig, Interval
from server.engine.engine import Engine, EngineConfig
from server.engine.events import (
    BookCheck,
    BookDelta,
    BookReset,
    BookSnapshot,
    ClockTick,
    Level,
    Quote,
    Side,
    Trade,
    TradingStatusChange,
)
from server.engine.quality import QualityFlag, QualityKind
from server.engine.updates import BookStatusChange, ExcludedVenue, Nbbo

SEC = 1_000_000_000
T0 = 1_700_000_040 * SEC
SYM = "BTC/USD"
ONE = 1_000_000_000
T = TypeVar("T")


def of_type(out: list[object], kind: type[T]) -> list[T]:
    return [u for u in out if isinstance(u, kind)]


def flags(out: list[object], kind: QualityKind) -> list[QualityFlag]:
    return [f for f in of_type(out, QualityFlag) if f.kind is kind]


def engine() -> Engine:
    return Engine(EngineConfig(candles=CandleConfig(intervals=(Interval.S1, Interval.M1)), trade_spikes=None,
                               quote_spikes=None))


def snap(venue: str, seq: int, bid: int, ask: int, ts: int = T0) -> BookSnapshot:
    return BookSnapshot(venue, SYM, seq, ((bid * ONE, ONE), ((bid - 1) * ONE, 2 * ONE)),
                        ((ask * ONE, ONE), ((ask + 1) * ONE, 3 * ONE)), ts, ts)


def delta(venue: str, first: int, seq: int, bid: int, size: int = ONE, ts: int = T0) -> BookDelta:
    return BookDelta(venue, SYM, first, seq, ((bid * ONE, size),), (), ts, ts)


def halt(venue: str, halted: bool = True, reason: str = "circuit breaker", ts: int = T0) -> TradingStatusChange:
    return TradingStatusChange(venue, SYM, halted, reason if halted else "", ts, ts)


def trade(venue: str, tid: str, price: int, ts: int = T0) -> Trade:
    return Trade(venue, SYM, tid, price * ONE, ONE, Side.BUY, ts, ts)


def check(venue: str, book_seq: int, crc: int, depth: int = 10, ts: int = T0) -> BookCheck:
    return BookCheck(venue, SYM, book_seq, depth, crc, ts, ts)


def run(e: Engine, *events: object) -> list[object]:
    out: list[object] = []
    e.apply_batch(events, out)  # type: ignore[arg-type]
    return out


def two_venues() -> Engine:
    """kraken (best bid 100, ask 102) and binance (bid 99, ask 101), both consistent."""
    e = engine()
    run(e, snap("kraken", 1, 100, 102), snap("binance", 1, 99, 101))
    return e


# ------------------------------------------------------------------------------------------- halts


def test_halt_emits_a_status_change_and_leaves_the_nbbo_with_a_reason() -> None:
    e = two_venues()
    nbbo = e.nbbo(SYM)
    assert nbbo is not None and (nbbo.bid_venue, nbbo.ask_venue) == ("kraken", "binance")
    out = run(e, halt("kraken"))
    (change,) = of_type(out, BookStatusChange)
    assert (change.venue, change.status, change.reason) == ("kraken", BookStatus.HALTED, "halted: circuit breaker")
    assert (change.expected_seq, change.received_seq) == (1, 1)
    (nbbo,) = of_type(out, Nbbo)
    assert (nbbo.bid_price, nbbo.bid_venue) == (99 * ONE, "binance")
    assert nbbo.excluded == (ExcludedVenue("kraken", "halted"),)
    book = e.book("kraken", SYM)
    assert book is not None and book.status is BookStatus.HALTED and book.halted
    assert e.halted("kraken", SYM) and not e.halted("binance", SYM)
    assert e.halts() == {("kraken", SYM): "circuit breaker"}
    consolidated = e.consolidated_book(SYM, 5)
    assert consolidated.excluded == (ExcludedVenue("kraken", "halted"),)
    assert {v.venue for lv in consolidated.bids for v in lv.venues} == {"binance"}
    assert e.counters.halts == 1
    # A second halt changes nothing but the reason.
    assert run(e, halt("kraken", reason="still")) == []
    assert e.halts() == {("kraken", SYM): "still"} and e.counters.halts == 1


def test_a_halted_book_refuses_deltas_and_quotes_and_flags_them() -> None:
    e = two_venues()
    run(e, halt("kraken"))
    before = e.book("kraken", SYM)
    assert before is not None
    levels = (before.bid_levels(), before.ask_levels())
    out = run(e, delta("kraken", 2, 2, 101), Quote("kraken", SYM, 1, 1, 2, 1, T0, T0))
    assert [u.kind for u in of_type(out, QualityFlag)] == [QualityKind.BOOK_CHANGE_WHILE_HALTED] * 2
    assert not of_type(out, BookDelta) and not of_type(out, Quote) and not of_type(out, Nbbo)
    assert (flags(out, QualityKind.BOOK_CHANGE_WHILE_HALTED)[0].value,
            flags(out, QualityKind.BOOK_CHANGE_WHILE_HALTED)[0].reference) == (2, 1)
    assert (before.bid_levels(), before.ask_levels()) == levels and before.seq == 1
    assert e.counters.halted_book_changes == 2
    assert e.quality.get(QualityKind.BOOK_CHANGE_WHILE_HALTED, "kraken", SYM) == 2


def test_a_trade_during_a_halt_is_refused_counted_and_flagged() -> None:
    e = two_venues()
    run(e, trade("kraken", "t1", 100))
    ticker = e.ticker("kraken", SYM)
    assert ticker is not None and not ticker.halted
    run(e, halt("kraken"))
    out = run(e, trade("kraken", "t2", 150, T0 + 1), trade("binance", "b1", 99, T0 + 1))
    (flag,) = flags(out, QualityKind.TRADE_WHILE_HALTED)
    assert (flag.venue, flag.value, flag.reference) == ("kraken", 150 * ONE, 0) and "t2" in flag.detail
    assert [t.trade_id for t in of_type(out, Trade)] == ["b1"]  # the other venue trades on
    assert e.counters.halted_trades == 1
    assert [t.trade_id for t in e.recent_trades(SYM, venue="kraken")] == ["t1"]
    ticker = e.ticker("kraken", SYM)
    assert ticker is not None and ticker.halted and ticker.last == 100 * ONE and ticker.trade_count == 1
    binance = e.ticker("binance", SYM)
    assert binance is not None and not binance.halted
    run(e, halt("kraken", halted=False))
    out = run(e, trade("kraken", "t2", 101, T0 + 2))
    assert [t.trade_id for t in of_type(out, Trade)] == ["t2"]  # the refused id was not remembered
    ticker = e.ticker("kraken", SYM)
    assert ticker is not None and not ticker.halted and ticker.trade_count == 2


def test_resume_returns_to_consistent_and_the_nbbo() -> None:
    e = two_venues()
    run(e, halt("kraken"))
    out = run(e, halt("kraken", halted=False, ts=T0 + 5))
    (change,) = of_type(out, BookStatusChange)
    assert (change.status, change.reason, change.ts_event) == (BookStatus.CONSISTENT, "resumed", T0 + 5)
    (nbbo,) = of_type(out, Nbbo)
    assert (nbbo.bid_venue, nbbo.excluded) == ("kraken", ())
    out = run(e, delta("kraken", 2, 2, 100, 5 * ONE))
    assert of_type(out, BookDelta) and e.book("kraken", SYM).bid_size == 5 * ONE  # type: ignore[union-attr]
    assert run(e, halt("kraken", halted=False)) == []  # resuming what trades is nothing
    assert e.halts() == {}


def test_a_change_refused_during_the_halt_makes_the_next_delta_a_gap() -> None:
    e = two_venues()
    run(e, halt("kraken"), delta("kraken", 2, 2, 101), halt("kraken", halted=False))
    out = run(e, delta("kraken", 3, 3, 100, 7 * ONE))
    (change,) = of_type(out, BookStatusChange)
    assert (change.status, change.expected_seq, change.received_seq) == (BookStatus.AWAITING_RESYNC, 2, 3)
    out = run(e, snap("kraken", 4, 100, 102))
    assert of_type(out, BookStatusChange)[0].status is BookStatus.CONSISTENT


def test_a_snapshot_during_a_halt_applies_and_the_book_stays_halted() -> None:
    e = engine()
    run(e, halt("kraken"))  # before any book: the book starts halted
    assert e.book("kraken", SYM) is None
    out = run(e, snap("kraken", 5, 100, 102))
    assert of_type(out, BookSnapshot)
    (change,) = of_type(out, BookStatusChange)
    assert change.status is BookStatus.HALTED
    (nbbo,) = of_type(out, Nbbo)
    assert nbbo.excluded == (ExcludedVenue("kraken", "halted"),) and nbbo.bid_price == 0
    book = e.book("kraken", SYM)
    assert book is not None and book.seq == 5 and book.bid_price == 100 * ONE
    out = run(e, halt("kraken", halted=False))
    assert of_type(out, BookStatusChange)[0].status is BookStatus.CONSISTENT
    assert of_type(out, Nbbo)[0].bid_price == 100 * ONE


def test_an_unsynced_book_stays_awaiting_resync_through_halt_and_resume() -> None:
    e = two_venues()
    run(e, BookReset("kraken", SYM, "reconnect", T0, T0))
    out = run(e, halt("kraken"))
    assert not of_type(out, BookStatusChange)  # AWAITING_RESYNC wins: no status change, no second gap
    book = e.book("kraken", SYM)
    assert book is not None and book.status is BookStatus.AWAITING_RESYNC and book.halted
    assert e.nbbo(SYM).excluded == (ExcludedVenue("kraken", "resync"),)  # type: ignore[union-attr]
    assert not of_type(run(e, halt("kraken", halted=False)), BookStatusChange)
    assert book.status is BookStatus.AWAITING_RESYNC and not book.halted


def test_halt_then_crossed_book_resumes_crossed() -> None:
    e = engine()
    run(e, BookSnapshot("kraken", SYM, 1, ((102 * ONE, ONE),), ((101 * ONE, ONE),), T0, T0))
    assert e.book("kraken", SYM).status is BookStatus.CROSSED  # type: ignore[union-attr]
    assert of_type(run(e, halt("kraken")), BookStatusChange)[0].status is BookStatus.HALTED
    assert of_type(run(e, halt("kraken", halted=False)), BookStatusChange)[0].status is BookStatus.CROSSED


def test_a_halted_venue_stays_excluded_across_clock_ticks() -> None:
    e = two_venues()
    run(e, halt("binance"))
    out = run(e, ClockTick(T0 + SEC))
    assert not of_type(out, Nbbo)  # nothing changed
    nbbo = e.nbbo(SYM)
    assert nbbo is not None and nbbo.excluded == (ExcludedVenue("binance", "halted"),)
    assert (nbbo.ask_price, nbbo.ask_venue) == (102 * ONE, "kraken")


# ------------------------------------------------------------------------------------------ hashes


def test_a_matching_hash_is_verified() -> None:
    e = two_venues()
    book = e.book("kraken", SYM)
    assert book is not None
    crc = book_hash(book.bid_levels(), book.ask_levels(), 10)
    assert run(e, check("kraken", 1, crc)) == []
    assert e.counters.book_checks_verified == 1 and not e.counters.checksum_failures
    assert book.status is BookStatus.CONSISTENT


def test_a_mismatching_hash_marks_the_book_for_resync() -> None:
    e = two_venues()
    run(e, delta("kraken", 2, 2, 100, 4 * ONE))
    book = e.book("kraken", SYM)
    assert book is not None
    good = book.hash(10)
    out = run(e, check("kraken", 2, good ^ 1, ts=T0 + 3))
    (flag,) = flags(out, QualityKind.BOOK_HASH_MISMATCH)
    assert (flag.value, flag.reference) == (good, good ^ 1)
    (change,) = of_type(out, BookStatusChange)
    assert change.status is BookStatus.AWAITING_RESYNC and change.reason.startswith("book hash mismatch")
    assert (change.expected_seq, change.received_seq, change.ts_event) == (3, 0, T0 + 3)
    (nbbo,) = of_type(out, Nbbo)
    assert nbbo.excluded == (ExcludedVenue("kraken", "resync"),)
    assert e.counters.checksum_failures == {("kraken", SYM): 1}
    assert e.quality.get(QualityKind.BOOK_HASH_MISMATCH, "kraken", SYM) == 1
    # Deltas wait for the snapshot; the snapshot resyncs.
    assert not of_type(run(e, delta("kraken", 3, 3, 100)), BookDelta)
    out = run(e, snap("kraken", 4, 100, 102))
    assert of_type(out, BookStatusChange)[0].status is BookStatus.CONSISTENT


def test_a_hash_of_another_sequence_or_an_unsynced_book_is_unverifiable() -> None:
    e = two_venues()
    run(e, delta("kraken", 2, 2, 100, 4 * ONE))
    assert run(e, check("kraken", 1, 0)) == []  # the book moved on
    assert run(e, check("kraken", 3, 0)) == []  # not there yet
    assert run(e, check("nowhere", 1, 0)) == []  # no book
    assert run(e, check("kraken", 2, 0, depth=0)) == []  # a depth nothing can match
    run(e, BookReset("kraken", SYM, "reconnect", T0, T0))
    assert run(e, check("kraken", 2, 0)) == []  # awaiting resync
    assert e.counters.book_checks_unverifiable == 5
    assert e.counters.book_checks_verified == 0 and not e.counters.checksum_failures


def test_a_hash_is_checked_during_a_halt() -> None:
    e = two_venues()
    run(e, halt("kraken"))
    book = e.book("kraken", SYM)
    assert book is not None
    assert run(e, check("kraken", 1, book.hash(3), depth=3)) == []
    out = run(e, check("kraken", 1, 0, depth=3))
    assert of_type(out, BookStatusChange)[0].status is BookStatus.AWAITING_RESYNC
    assert e.counters.book_checks_verified == 1 and e.counters.checksum_failures == {("kraken", SYM): 1}


def test_the_hash_text_of_the_proto() -> None:
    assert book_hash_text([], [], 1) == "|"
    assert book_hash_text([(1, 2), (3, 4), (2, 0)], [(7, 1), (5, 6)], 10) == "3:4,1:2|5:6,7:1"
    assert book_hash_text([(1, 2), (3, 4)], [(7, 1), (5, 6)], 1) == "3:4|5:6"
    assert book_hash_text([(-5, 1)], [(-3, 2)], 2) == "-5:1|-3:2"
    assert book_hash([], [], 5) == zlib.crc32(b"|")
    with pytest.raises(ValueError, match="depth"):
        book_hash_text([], [], 0)
    with pytest.raises(ValueError, match="depth"):
        L2Book("v", "s").hash(0)


def _reference_text(bids: dict[int, int], asks: dict[int, int], depth: int) -> str:
    """The proto's text, read independently: best `depth` bids high to low, '|', asks low to high."""
    b = [f"{p}:{bids[p]}" for p in sorted(bids, reverse=True) if bids[p] > 0][:depth]
    a = [f"{p}:{asks[p]}" for p in sorted(asks) if asks[p] > 0][:depth]
    return ",".join(b) + "|" + ",".join(a)


prices = st.integers(-(10**15), 10**15)
sizes = st.integers(0, 10**18)
sides = st.dictionaries(prices, sizes, max_size=40)


@settings(max_examples=300, deadline=None)
@given(sides, sides, st.lists(st.tuples(st.booleans(), prices, sizes), max_size=30), st.integers(1, 25))
def test_engine_hash_equals_the_reference(bids: dict[int, int], asks: dict[int, int],
                                          changes: list[tuple[bool, int, int]], depth: int) -> None:
    """For random books (a snapshot and deltas), the engine's verdict follows zlib.crc32 of the proto's text."""
    e = engine()
    snap_bids: tuple[Level, ...] = tuple((p, s) for p, s in bids.items() if s)
    snap_asks: tuple[Level, ...] = tuple((p, s) for p, s in asks.items() if s)
    run(e, BookSnapshot("v", SYM, 1, snap_bids, snap_asks, T0, T0))
    ref_bids, ref_asks = dict(snap_bids), dict(snap_asks)
    for i, (is_bid, price, size) in enumerate(changes, start=2):
        side = ref_bids if is_bid else ref_asks
        if size:
            side[price] = size
        else:
            side.pop(price, None)
        level = ((price, size),)
        run(e, BookDelta("v", SYM, i, i, level if is_bid else (), () if is_bid else level, T0, T0))
    seq = len(changes) + 1
    book = e.book("v", SYM)
    assert book is not None and book.synced and book.seq == seq
    expected = zlib.crc32(_reference_text(ref_bids, ref_asks, depth).encode("ascii"))
    assert book.hash_text(depth) == _reference_text(ref_bids, ref_asks, depth)
    assert book.hash(depth) == expected == book_hash(ref_bids.items(), ref_asks.items(), depth)
    assert run(e, check("v", seq, expected, depth=depth)) == []
    assert e.counters.book_checks_verified == 1
    out = run(e, check("v", seq, expected ^ 0xFFFFFFFF, depth=depth))
    assert of_type(out, BookStatusChange)[0].status is BookStatus.AWAITING_RESYNC


def test_take_status_changes_gives_only_what_changed_a_status() -> None:
    """What the runtime stores for a restart: applied halts, reason changes and resumes, nothing else."""
    e = Engine()
    out: list[object] = []

    def status(halted: bool, reason: str = "", venue: str = "v") -> TradingStatusChange:
        return TradingStatusChange(venue, "S", halted, reason, 1, 1)

    e.apply_batch([status(False), status(True, "news"), status(True, "news"), status(True, "vol"),
                   status(False, venue="w"), status(False)], out)
    assert e.take_status_changes() == [status(True, "news"), status(True, "vol"), status(False)]
    assert e.take_status_changes() == []
