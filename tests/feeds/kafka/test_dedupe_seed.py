"""``Deduper.seed_book``: a book's mark from storage after a restart drops redelivered book events."""

from __future__ import annotations

from feeds.kafka.dedupe import Deduper
from feeds.kafka.parser import BookHash
from server.engine.events import BookDelta, BookSnapshot, Side, Trade


def delta(seq: int, symbol: str = "BTC/USD") -> BookDelta:
    return BookDelta("engine", symbol, seq, seq, ((1, 1),), (), seq, seq)


def test_seeded_mark_drops_redelivered_book_events_and_counts_nothing() -> None:
    d = Deduper()
    d.seed_book("engine", "BTC/USD", 40)
    d.seed_book("engine", "BTC/USD", 12)  # lower: ignored
    assert d.book_mark("engine", "BTC/USD") == 40 and d.duplicates == 0
    assert not d.admit(delta(40))
    assert not d.admit(BookSnapshot("engine", "BTC/USD", 39, (), (), 0, 0))
    assert not d.admit(BookHash("engine", "BTC/USD", 38, 37, 10, 0, 0, 0))
    assert d.admit(delta(41)) and d.admit(delta(1, "ETH/USD"))
    assert d.admit(Trade("engine", "BTC/USD", "7", 1, 1, Side.BUY, 0, 0))  # trades: by id
    assert d.duplicates == 3


def test_seeded_marks_stay_bounded() -> None:
    d = Deduper(max_streams=3)
    for i in range(10):
        d.seed_book("engine", f"S{i}", 5)
    assert sum(d.book_mark("engine", f"S{i}") == 5 for i in range(10)) == 3
    assert d.book_mark("engine", "S9") == 5


def test_a_rolled_back_batch_keeps_the_seeded_mark() -> None:
    d = Deduper()
    d.seed_book("engine", "BTC/USD", 10)
    d.begin()
    assert d.admit(delta(11))
    d.rollback()
    assert d.book_mark("engine", "BTC/USD") == 10
    assert not d.admit(delta(10)) and d.admit(delta(11))
