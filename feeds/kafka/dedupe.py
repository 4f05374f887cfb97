"""Pure, bounded duplicate filter of the Kafka feed: a redelivered record is applied once.

Kafka delivers at least once: after a crash or a rebalance, the records after the last committed
offset come again, and some of them were already applied. ``Deduper.admit(item)`` says whether an
item is new (and remembers it) or a duplicate:

- book events (``BookSnapshot``, ``BookDelta``, ``BookHash``) by (venue, symbol, sequence): the
  engine's sequence only grows per (venue, symbol) and one symbol's records stay in order in one
  partition, so a high-water mark per (venue, symbol) is exact: a sequence at or below it is a
  duplicate (or a stale snapshot, already overtaken by later events, which must not roll the book
  back either);
- trades by (venue, symbol, trade_id): the ids seen, a window of the last ``trade_window`` per
  (venue, symbol) (as the engine's own trade dedupe). A snapshot does not touch them: trades below
  a snapshot's sequence are not in the snapshot;
- instrument events by (venue, symbol) and their own sequence: only a newer one is applied (the
  four instrument topics are not ordered with each other).

Memory is bounded: one mark per (venue, symbol), at most ``max_streams`` of them (the oldest
forgotten first), and at most ``2 * trade_window`` ids per stream. After a process crash, seed a new
``Deduper`` from what durable storage holds (``seed`` with the stored trades, ``seed_book`` with the
last stored sequence of each book restored from storage; ``server.restore`` does both), so
redelivered records that were already stored are still recognized.

``begin`` / ``rollback`` / ``end`` bracket one batch: if the batch never reached the sink (``put``
failed or was cancelled), ``rollback`` forgets what it admitted, so its redelivery is not mistaken for
a duplicate (except for streams evicted meanwhile by ``max_streams``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from feeds.kafka.parser import BookHash, InstrumentStatus
from server.engine.events import BookDelta, BookSnapshot, Event, Trade

Admissible = Trade | BookDelta | BookSnapshot | BookHash | InstrumentStatus

DEFAULT_TRADE_WINDOW: Final = 100_000
DEFAULT_MAX_STREAMS: Final = 100_000

_Key = tuple[str, str]
_TRACKED: Final = (Trade, BookDelta, BookSnapshot, BookHash, InstrumentStatus)


class Deduper:
    """See the module docstring. ``duplicates`` counts the items refused."""

    __slots__ = ("_book", "_instruments", "_trades", "_undo", "_undo_duplicates", "duplicates", "max_streams",
                 "trade_window")

    def __init__(self, trade_window: int = DEFAULT_TRADE_WINDOW, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        if trade_window < 1 or max_streams < 1:
            raise ValueError("trade_window and max_streams must be >= 1")
        self.trade_window = trade_window
        self.max_streams = max_streams
        self.duplicates = 0
        self._book: dict[_Key, int] = {}
        self._instruments: dict[_Key, int] = {}
        self._trades: dict[_Key, dict[str, None]] = {}
        self._undo: list[tuple[dict[_Key, int], _Key, int | None] | tuple[_Key, str]] | None = None
        self._undo_duplicates = 0

    def admit(self, item: Admissible) -> bool:
        """True if ``item`` is new (it is remembered); False for a duplicate (counted)."""
        if isinstance(item, Trade):
            new = self._admit_trade(item.venue, item.symbol, item.trade_id)
        elif isinstance(item, InstrumentStatus):
            new = self._advance(self._instruments, (item.venue, item.symbol), item.seq)
        else:
            new = self._advance(self._book, (item.venue, item.symbol), item.seq)
        if not new:
            self.duplicates += 1
        return new

    def seed(self, items: Iterable[Event | BookHash | InstrumentStatus]) -> None:
        """Remember ``items`` as applied (e.g. what storage holds after a restart); counts nothing.

        Events the deduper does not track (quotes, resets, clock ticks) are skipped.
        """
        for item in items:
            if isinstance(item, _TRACKED) and not self.admit(item):
                self.duplicates -= 1

    def seed_book(self, venue: str, symbol: str, seq: int) -> None:
        """Remember book events of (venue, symbol) up to ``seq`` as applied (the last sequence storage
        holds for a book restored from it); a lower mark than the current one is ignored. Counts nothing."""
        self._advance(self._book, (venue, symbol), seq)

    def begin(self) -> None:
        """Start remembering how to undo what ``admit`` changes (one batch)."""
        self._undo = []
        self._undo_duplicates = self.duplicates

    def rollback(self) -> None:
        """Forget everything admitted since ``begin`` (the batch did not reach the sink)."""
        undo, self._undo = self._undo, None
        if undo is None:
            return
        for entry in reversed(undo):
            if len(entry) == 3:
                marks, key, old = entry
                if old is None:
                    marks.pop(key, None)
                else:
                    marks[key] = old
            else:
                stream, trade_id = entry
                ids = self._trades.get(stream)
                if ids is not None:
                    ids.pop(trade_id, None)
        self.duplicates = self._undo_duplicates

    def end(self) -> None:
        """Keep what was admitted since ``begin``."""
        self._undo = None

    def book_mark(self, venue: str, symbol: str) -> int:
        """The highest book sequence applied for (venue, symbol); 0 if none."""
        return self._book.get((venue, symbol), 0)

    def _advance(self, marks: dict[_Key, int], key: _Key, seq: int) -> bool:
        mark = marks.get(key)
        if mark is not None and seq <= mark:
            return False
        marks[key] = seq
        if self._undo is not None:
            self._undo.append((marks, key, mark))
        if mark is None and len(marks) > self.max_streams:
            del marks[next(iter(marks))]
        return True

    def _admit_trade(self, venue: str, symbol: str, trade_id: str) -> bool:
        key = (venue, symbol)
        ids = self._trades.get(key)
        if ids is None:
            ids = self._trades[key] = {}
            if len(self._trades) > self.max_streams:
                del self._trades[next(iter(self._trades))]
        if trade_id in ids:
            return False
        ids[trade_id] = None
        if self._undo is not None:
            self._undo.append((key, trade_id))
        if len(ids) > 2 * self.trade_window:
            self._trades[key] = dict.fromkeys(list(ids)[-self.trade_window:])
        return True
