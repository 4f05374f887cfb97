"""Property tests: the engine's L2 books against a dict-of-levels reference model.

Random streams of snapshots, in-order deltas, duplicates, overlaps, gaps and resets per (venue, symbol);
the model applies Binance's sequencing rule independently and must agree with the engine on every
level, on the sequence state and on which books await a resync.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.book import BookStatus, L2Book
from server.engine.engine import Engine
from server.engine.events import NO_SEQUENCE, BookDelta, BookReset, BookSnapshot, Level
from server.engine.updates import BookStatusChange

VENUES = ("a", "b")
SYMBOLS = ("X", "Y")
prices = st.integers(min_value=1, max_value=40).map(lambda p: p * 1_000_000_000)
sizes = st.integers(min_value=0, max_value=5).map(lambda s: s * 500_000_000)
levels = st.lists(st.tuples(prices, sizes), max_size=6).map(tuple)


@dataclass
class ModelBook:
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    seq: int = 0
    synced: bool = False


def _apply(side: dict[int, int], changes: tuple[Level, ...]) -> None:
    for price, size in changes:
        if size:
            side[price] = size
        else:
            side.pop(price, None)


op = st.one_of(
    st.tuples(st.just("snapshot"), st.sampled_from(VENUES), st.sampled_from(SYMBOLS), levels, levels,
              st.integers(0, 50)),
    st.tuples(st.just("delta"), st.sampled_from(VENUES), st.sampled_from(SYMBOLS), levels, levels,
              st.integers(-2, 3), st.integers(0, 3)),
    st.tuples(st.just("reset"), st.sampled_from(VENUES), st.sampled_from(SYMBOLS)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=80))
def test_books_match_dict_model(ops: list[tuple[object, ...]]) -> None:
    engine = Engine()
    model: dict[tuple[str, str], ModelBook] = {}
    for t, item in enumerate(ops, start=1):
        kind, venue, symbol = item[0], str(item[1]), str(item[2])
        m = model.setdefault((venue, symbol), ModelBook())
        out: list[object] = []
        if kind == "snapshot":
            bids, asks, seq = item[3], item[4], item[5]
            assert isinstance(bids, tuple) and isinstance(asks, tuple) and isinstance(seq, int)
            engine.apply(BookSnapshot(venue, symbol, seq, bids, asks, t, t), out)
            m.bids = {p: s for p, s in dict(bids).items() if s}
            m.asks = {p: s for p, s in dict(asks).items() if s}
            m.seq, m.synced = seq, True
        elif kind == "delta":
            bids, asks, offset, span = item[3], item[4], item[5], item[6]
            assert isinstance(bids, tuple) and isinstance(asks, tuple)
            assert isinstance(offset, int) and isinstance(span, int)
            first = max(1, m.seq + offset)  # offset<=0: duplicate/overlap, 1: next, >1: gap
            last = first + span
            engine.apply(BookDelta(venue, symbol, first, last, bids, asks, t, t), out)
            if m.synced and last > m.seq:
                if first > m.seq + 1:
                    m.synced = False
                    assert any(isinstance(u, BookStatusChange) and u.status == BookStatus.AWAITING_RESYNC
                               for u in out)
                else:
                    _apply(m.bids, bids)
                    _apply(m.asks, asks)
                    m.seq = last
                    assert out and out[0][0:2] == (venue, symbol)  # type: ignore[index]
        else:
            engine.apply(BookReset(venue, symbol, "test", t, t), out)
            m.synced = False
        for (v, s), mb in model.items():
            book = engine.book(v, s)
            assert book is not None
            assert book.synced == mb.synced
            if mb.synced:
                _assert_same(book, mb)


def _assert_same(book: L2Book, m: ModelBook) -> None:
    assert book.bids == m.bids
    assert book.asks == m.asks
    assert book.seq == m.seq
    assert book.bid_levels() == sorted(m.bids.items(), reverse=True)
    assert book.ask_levels() == sorted(m.asks.items())
    assert book.bid_levels(3) == sorted(m.bids.items(), reverse=True)[:3]
    assert book.is_crossed() == bool(m.bids and m.asks and max(m.bids) >= min(m.asks))
    best_bid = max(m.bids, default=0)
    best_ask = min(m.asks, default=0)
    assert book.top() == (best_bid, m.bids.get(best_bid, 0), best_ask, m.asks.get(best_ask, 0))


@settings(max_examples=200, deadline=None)
@given(levels, levels, st.lists(st.tuples(levels, levels), max_size=30))
def test_unsequenced_deltas_always_apply(bids: tuple[Level, ...], asks: tuple[Level, ...],
                                         deltas: list[tuple[tuple[Level, ...], tuple[Level, ...]]]) -> None:
    engine = Engine()
    out: list[object] = []
    engine.apply(BookSnapshot("v", "S", NO_SEQUENCE, bids, asks, 1, 1), out)
    m = ModelBook({p: s for p, s in dict(bids).items() if s},
                  {p: s for p, s in dict(asks).items() if s}, 0, True)
    for b, a in deltas:
        engine.apply(BookDelta("v", "S", NO_SEQUENCE, NO_SEQUENCE, b, a, 2, 2), out)
        _apply(m.bids, b)
        _apply(m.asks, a)
    book = engine.book("v", "S")
    assert book is not None
    _assert_same(book, m)
    assert book.version == 1 + len(deltas)


def test_gap_resyncs_one_symbol_only() -> None:
    engine = Engine()
    out: list[object] = []
    lv = ((100, 1),)
    for sym in SYMBOLS:
        engine.apply(BookSnapshot("a", sym, 10, lv, ((200, 1),), 1, 1), out)
    engine.apply(BookDelta("a", "X", 12, 12, ((101, 1),), (), 2, 2), out)  # gap: expected 11
    x, y = engine.book("a", "X"), engine.book("a", "Y")
    assert x is not None and y is not None
    assert x.status == BookStatus.AWAITING_RESYNC and y.status == BookStatus.CONSISTENT
    gap = [u for u in out if isinstance(u, BookStatusChange)][-1]
    assert (gap.symbol, gap.expected_seq, gap.received_seq) == ("X", 11, 12)
    assert engine.counters.sequence_gaps == {("a", "X"): 1}
    engine.apply(BookDelta("a", "X", 13, 13, ((102, 1),), (), 3, 3), out)  # ignored until snapshot
    assert x.bids == {100: 1}
    engine.apply(BookSnapshot("a", "X", 20, ((99, 2),), ((200, 1),), 4, 4), out)
    assert x.status == BookStatus.CONSISTENT and x.bids == {99: 2}


def test_crossed_book_is_flagged_and_cleared() -> None:
    engine = Engine()
    out: list[object] = []
    engine.apply(BookSnapshot("a", "X", 1, ((100, 1),), ((101, 1),), 1, 1), out)
    engine.apply(BookDelta("a", "X", 2, 2, ((102, 1),), (), 2, 2), out)
    book = engine.book("a", "X")
    assert book is not None and book.status == BookStatus.CROSSED
    assert [u.status for u in out if isinstance(u, BookStatusChange)][-1] == BookStatus.CROSSED
    engine.apply(BookDelta("a", "X", 3, 3, ((102, 0),), (), 3, 3), out)
    assert book.status == BookStatus.CONSISTENT
