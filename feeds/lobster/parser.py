"""LOBSTER message (L3) and orderbook (L10) rows to L2 events, exact and with known-depth bookkeeping.

Owns the L3 -> L2 mapping: 1 add -> +size; 2 partial cancel, 3 delete, 4 visible execution -> -size at
that price (4 also a ``Trade``); 5 hidden execution -> a ``Trade`` and no book change; 6 cross trade ->
a ``Trade``; 7 halt/resume -> nothing (counted). A ``BookDelta`` carries the level's new absolute size.

What is knowable: LOBSTER's orderbook file shows 10 levels a side, so the seed snapshot (row 0) tells
the exact book only at prices at or better than its 10th level. The parser keeps, per side, the levels
it knows exactly and the ``boundary``: every price at or better than the boundary is known (absent
means empty). A level pushed beyond the 10th is forgotten and the boundary moves in (LOBSTER's data
shows levels changing out of view without a message). A message at a price beyond the boundary is not
applied (its level's base size is unknown); it is counted in ``stats.skipped``. So the book the engine
holds is always an exact prefix of the true book; ``refill`` may extend it from an orderbook row.

Prices are integers x10000 (``numbers.from_scaled``); times are seconds after midnight (ns decimals)
in the exchange's time zone on the trading date -> ns since the epoch exactly. LOBSTER has one time a
message, so ``ts_event == ts_recv``. Trades have no venue id (``trade_id=''``); ``direction`` is the
resting order's side, so the aggressor is the other side.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

from feeds.cryptofeed_capture.common import FeedError, ParserStats, fixed
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import NO_SEQUENCE, BookDelta, BookSnapshot, Event, Level, Side, Trade
from server.engine.numbers import from_scaled

DEPTH = 10
PRICE_DECIMALS = 4
EMPTY_ASK = 9999999999
EMPTY_BID = -9999999999
_INF = 10**30
MAX_TIME_NS = 7 * 24 * 3600 * 1_000_000_000
"""Seconds after midnight beyond a week are not a LOBSTER time (and would overflow int64 times)."""


class _Side:
    """Known levels of one side: ``keys`` ascend from the best (bids keyed by -price)."""

    __slots__ = ("boundary", "keys", "sign", "sizes")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.sizes: dict[int, int] = {}
        self.keys: list[int] = []
        self.boundary: int | None = None  # key of the worst known price; None: nothing known

    def seed(self, levels: list[Level], complete: bool) -> None:
        """``complete``: the row showed fewer levels than its depth, so the whole side is known."""
        self.sizes = dict(levels)
        self.keys = sorted(self.sign * p for p in self.sizes)
        self.boundary = _INF if complete or not self.keys else self.keys[-1]

    def known(self, price: int) -> bool:
        return self.boundary is not None and self.sign * price <= self.boundary

    def set(self, price: int, size: int) -> list[Level]:
        """Set a level; returns the levels to emit (this one, plus any pushed beyond DEPTH as deletes)."""
        key = self.sign * price
        out: list[Level] = [(price, size)]
        if size:
            if price not in self.sizes:
                self.keys.insert(bisect_left(self.keys, key), key)
            self.sizes[price] = size
            while len(self.keys) > DEPTH:
                dropped = self.keys.pop()
                del self.sizes[self.sign * dropped]
                out.append((self.sign * dropped, 0))
                self.boundary = self.keys[-1]
        elif self.sizes.pop(price, None) is not None:
            del self.keys[bisect_left(self.keys, key)]
        return out


def _int(text: str, what: str) -> int:
    """A plain ASCII integer cell (``str.isdigit`` alone also accepts '²')."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise FeedError(f"bad {what} {text!r}")
    return int(text)


def _positive(text: str) -> int:
    """A message's (or a real level's) price: > 0."""
    price = from_scaled(_int(text, "price"), PRICE_DECIMALS)
    if price <= 0:
        raise FeedError(f"price must be > 0: {text!r}")
    return price


def _size(text: str) -> int:
    if text.startswith("-"):
        raise FeedError(f"bad size {text!r}")
    return _int(text, "size") * 10**9


class LobsterParser:
    """LOBSTER rows of one instrument and day to events; call ``seed`` with row 0 first."""

    source = "lobster"

    def __init__(self, symbol: str, trading_date: date, tz: str = "America/New_York",
                 venue: str = "NASDAQ") -> None:
        self.symbol = symbol
        self.venue = venue
        midnight = datetime(trading_date.year, trading_date.month, trading_date.day, tzinfo=ZoneInfo(tz))
        self.midnight_ns = int(midnight.timestamp()) * 1_000_000_000
        self.bids = _Side(-1)
        self.asks = _Side(1)
        self.seeded = False
        self.stats = ParserStats()

    def time_ns(self, text: str) -> int:
        """Seconds after midnight ('34200.004241176') to ns since the epoch, exactly."""
        try:
            value = fixed(text, "time")  # parse_fixed, hardened: '²', '1e999999' are FeedErrors
        except FeedError as exc:
            raise FeedError(f"bad time {text!r}") from exc
        if not 0 <= value < MAX_TIME_NS:
            raise FeedError(f"time out of range {text!r}")
        return self.midnight_ns + value

    @staticmethod
    def book_row(line: str) -> tuple[list[Level], list[Level]]:
        """An orderbook row to (bids, asks) best first, empty (dummy-price) levels left out."""
        cells = line.strip().split(",")
        if len(cells) % 4 or not cells[0]:
            raise FeedError(f"orderbook row has {len(cells)} cells, not a multiple of 4")
        asks: list[Level] = []
        bids: list[Level] = []
        for i in range(0, len(cells), 4):
            ap, asz, bp, bsz = cells[i:i + 4]
            if _size(asz) and _int(ap, "price") != EMPTY_ASK:
                asks.append((_positive(ap), _size(asz)))
            if _size(bsz) and _int(bp, "price") != EMPTY_BID:
                bids.append((_positive(bp), _size(bsz)))
        return bids, asks

    def seed(self, message_line: str, book_line: str, dead_letters: DeadLetterSink) -> BookSnapshot | None:
        """Row 0 (the book after message 0) as a snapshot at message 0's time."""
        try:
            ts = self.time_ns(message_line.split(",", maxsplit=1)[0])
            bids, asks = self.book_row(book_line)
            depth = len(book_line.strip().split(",")) // 4
        except (FeedError, ValueError) as exc:
            self._dead(dead_letters, f"bad seed: {exc}", book_line, 0)
            return None
        self.bids.seed(bids, len(bids) < depth)
        self.asks.seed(asks, len(asks) < depth)
        self.seeded = True
        return BookSnapshot(self.venue, self.symbol, NO_SEQUENCE, tuple(bids), tuple(asks), ts, ts)

    def known_levels(self) -> tuple[list[Level], list[Level], bool, bool]:
        """(bids, asks) the parser knows exactly, and whether each side is known down to 10 levels."""
        bids = [(-k, self.bids.sizes[-k]) for k in self.bids.keys]
        asks = [(k, self.asks.sizes[k]) for k in self.asks.keys]
        return bids, asks, len(bids) == DEPTH, len(asks) == DEPTH

    def refill(self, book_line: str, ts: int) -> BookDelta | None:
        """Learn the levels an orderbook row reveals beyond the known boundary (None when nothing new).

        Levels at or better than the boundary are never taken from the row: they come from messages.
        """
        bids, asks = self.book_row(book_line)
        new_bids = self._refill(self.bids, bids)
        new_asks = self._refill(self.asks, asks)
        if not new_bids and not new_asks:
            return None
        return BookDelta(self.venue, self.symbol, NO_SEQUENCE, NO_SEQUENCE, tuple(new_bids),
                         tuple(new_asks), ts, ts)

    @staticmethod
    def _refill(side: _Side, row: list[Level]) -> list[Level]:
        added: list[Level] = []
        for price, size in row:
            if not side.known(price) and len(side.keys) < DEPTH:
                side.set(price, size)
                side.boundary = side.sign * price
                added.append((price, size))
        if len(row) < DEPTH:
            side.boundary = _INF  # the row shows the whole side
        return added

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Event]:
        """Message rows (after row 0) to events."""
        for line in records:
            if not line.strip():
                self.stats.skipped["blank line"] += 1
                continue
            self.stats.lines += 1
            try:
                events = self.parse_message(line)
            except ValueError as exc:  # FeedError, DecimalFormatError
                self._dead(dead_letters, str(exc), line, 0)
                continue
            self.stats.events += len(events)
            yield from events

    def replay(self, messages: Iterable[str], rows: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Event]:
        """A message file and its orderbook file (row i: the book after message i) to events.

        Row 0 seeds the book (``seed``; no seed: one dead letter, nothing else is read). Each later
        message is applied, then its row ``refill``s levels beyond the known boundary; a bad message and
        a bad row are separate dead letters (a message's events are kept when only its row is bad). A
        blank message line is counted and skipped with its row. Files of different lengths: messages
        without a row are applied without refill, and one dead letter reports the difference.
        """
        message_iter, row_iter = iter(messages), iter(rows)
        first_message, first_row = next(message_iter, None), next(row_iter, None)
        if first_message is None or first_row is None:
            self._dead(dead_letters, "empty message or orderbook file", first_message or first_row or "", 0)
            return
        self.stats.lines += 1
        snapshot = self.seed(first_message, first_row, dead_letters)
        if snapshot is None:
            return
        self.stats.events += 1
        yield snapshot
        rowless = 0
        for line in message_iter:
            row = next(row_iter, None)
            rowless += row is None
            if not line.strip():
                self.stats.skipped["blank line"] += 1
                continue
            self.stats.lines += 1
            try:
                events = self.parse_message(line)
            except ValueError as exc:
                self._dead(dead_letters, str(exc), line, 0)
                continue
            self.stats.events += len(events)
            yield from events
            if row is None:
                continue
            try:
                refill = self.refill(row, self.time_ns(line.split(",", 1)[0]))
            except ValueError as exc:
                self._dead(dead_letters, f"orderbook row: {exc}", row, 0)
                continue
            if refill is not None:
                self.stats.events += 1
                yield refill
        extra_rows = sum(1 for _ in row_iter)
        if rowless or extra_rows:
            more = f"{rowless} message(s) without an orderbook row (applied without refill)" if rowless \
                else f"{extra_rows} orderbook row(s) without a message (ignored)"
            self._dead(dead_letters, f"message and orderbook files differ in length: {more}", "", 0)

    def parse_message(self, line: str) -> list[Event]:
        """One message row to its events (possibly none)."""
        if not self.seeded:
            raise FeedError("message before the seed snapshot")
        cells = line.strip().split(",")
        if len(cells) != 6:
            raise FeedError(f"message row has {len(cells)} cells, expected 6")
        ts_text, type_text, _order_id, size_text, price_text, dir_text = cells
        ts = self.time_ns(ts_text)
        if type_text not in ("1", "2", "3", "4", "5", "6", "7"):
            raise FeedError(f"unknown event type {type_text!r}")
        if dir_text not in ("1", "-1"):
            raise FeedError(f"bad direction {dir_text!r}")
        kind = int(type_text)
        if kind == 7:
            self.stats.skipped["halt"] += 1
            return []
        price = _positive(price_text)
        size = _size(size_text)
        if not size:
            raise FeedError(f"type {kind} of size 0")
        is_bid = dir_text == "1"
        events: list[Event] = []
        if kind in (4, 5, 6):
            # direction is the resting (executed) order's side: a buy order hit by a seller.
            events.append(Trade(self.venue, self.symbol, "", price, size,
                                Side.SELL if is_bid else Side.BUY, ts, ts))
        if kind in (5, 6):
            return events
        side = self.bids if is_bid else self.asks
        if not side.known(price):
            self.stats.skipped["beyond known depth"] += 1
            return events
        old = side.sizes.get(price, 0)
        new = old + size if kind == 1 else old - size
        if new < 0:
            raise FeedError(f"type {kind} of {size_text} at {price_text} exceeds the level size")
        changed = side.set(price, new)
        levels = tuple(changed)
        events.append(BookDelta(self.venue, self.symbol, NO_SEQUENCE, NO_SEQUENCE,
                                levels if is_bid else (), () if is_bid else levels, ts, ts))
        return events

    def _dead(self, sink: DeadLetterSink, reason: str, raw: str, ts: int) -> None:
        self.stats.dead_letters += 1
        sink.append(DeadLetter(self.source, reason, raw.rstrip("\r\n"), ts))
