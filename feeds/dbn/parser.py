"""Pure parser of decoded Databento DBN records (``databento_dbn`` objects) to engine events.

Owns:

- **MBO** (``MBOMsg``, L3) -> L2. Orders are kept by ``order_id`` per instrument, with the aggregate
  size of every (side, price). A *snapshot phase* starts with a ``SNAPSHOT``-flagged record or a clear
  (``R``): the book is emptied, snapshot adds build it, and the phase ends at a record flagged ``LAST``
  or at the first record without the ``SNAPSHOT`` flag; the book is then emitted as one
  ``BookSnapshot`` (an ``R`` alone therefore yields an empty snapshot: the venue cleared the book).
  Live records: ``A`` adds, ``C`` cancels ``size`` (partial or full), ``M`` moves an order to a new
  price/size (an unknown order id is treated as an add, Databento's convention), ``T`` (an aggressor's
  trade) becomes a ``Trade``, ``F`` (a resting order's fill) and ``N`` do not change the book (the venue
  sends the resulting ``C``/``M``). Changes are accumulated until the record flagged ``LAST`` (the end
  of one venue event for that instrument): only then is one ``BookDelta`` emitted with the new
  aggregate size of every touched level (0 deletes), so the engine never sees a half-applied event.
  A cancel of an unknown order, or larger than the order, is a dead letter and changes nothing.
- **trades** (``TradeMsg``) -> ``Trade``; ``side`` is the aggressor (``B`` buy, ``A`` sell, ``N``
  unspecified). DBN has no trade id (``sequence`` repeats within a packet): ``trade_id=''``.
- **mbp-1** (``MBP1Msg``) -> ``Quote`` of the level-0 bid/ask, one per record flagged ``LAST`` (the
  intermediate records of one event, such as the ``T`` record before its book change, are skipped and
  counted). An undefined price or size 0 is an empty side. Trades in mbp-1 (action ``T``) are *not*
  emitted: read the trades schema for them (the two would double count).
- Definitions (``InstrumentDefMsg``) teach ``instrument_id -> raw_symbol``; other record types are
  counted in ``stats.skipped``.

Numbers: DBN prices are ``i64`` at 1e-9, the engine's scale (``numbers.from_scaled(price, 9)`` is the
identity); sizes are whole contracts (``numbers.from_int``). Times: ``ts_event`` and ``ts_recv`` come
from the records (ns since the epoch). A ``BookSnapshot`` is stamped with the ``ts_recv`` of its last
record for both times: the snapshot records' ``ts_event`` are the orders' original times, while the
snapshot describes the book as of ``ts_recv``. Book events carry ``NO_SEQUENCE``: DBN ``sequence`` is
per venue channel, shared by instruments, so it has gaps per instrument by design.

Symbols: ``symbols`` (``instrument_id -> symbol``, e.g. from ``reader.symbols_from_definitions``)
wins; otherwise the metadata's symbology mappings (raw symbol -> instrument id) are used; an unknown id
becomes its decimal text. The venue is the caller's, else derived from the metadata's dataset
(``GLBX.MDP3`` -> ``cme``; see ``VENUES``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

import databento_dbn as dbn

from feeds.cryptofeed_capture.common import INT64, FeedError, ParserStats
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import NO_SEQUENCE, BookDelta, BookSnapshot, Event, Level, Quote, Side, Trade
from server.engine.numbers import SCALE, from_int, from_scaled

SOURCE: Final = "dbn"
PRICE_DECIMALS: Final = 9
UNDEF_PRICE: Final = dbn.UNDEF_PRICE
F_LAST: Final = dbn.F_LAST
F_SNAPSHOT: Final = dbn.F_SNAPSHOT
VENUES: Final = {
    "GLBX.MDP3": "cme",
    "XNAS.ITCH": "nasdaq",
    "XNAS.BASIC": "nasdaq",
    "XNYS.PILLAR": "nyse",
    "ARCX.PILLAR": "nyse-arca",
    "IFEU.IMPACT": "ice",
    "NDEX.IMPACT": "ice",
    "OPRA.PILLAR": "opra",
    "XEUR.EOBI": "eurex",
}
"""Databento dataset -> venue name; another dataset becomes its lowercased prefix ('DBEQ.BASIC' -> 'dbeq')."""
_AGGRESSOR: Final = {"B": Side.BUY, "A": Side.SELL, "N": Side.UNSPECIFIED}

Item = dbn.DBNRecord | dbn.Metadata


def venue_of_dataset(dataset: str) -> str:
    """The venue name of a Databento dataset code."""
    return VENUES.get(dataset) or dataset.partition(".")[0].lower() or "databento"


def symbols_from_metadata(metadata: dbn.Metadata) -> dict[int, str]:
    """``instrument_id -> raw symbol`` from the metadata's symbology mappings.

    Date ranges are not distinguished (an id maps to the last symbol listed for it): a file covers a
    few days at most, over which CME does not reuse an instrument id.
    """
    out: dict[int, str] = {}
    for raw_symbol, intervals in metadata.mappings.items():
        for interval in intervals:
            target = str(interval["symbol"])
            if target.isdigit():
                out[int(target)] = raw_symbol
    return out


class _MboBook:
    """One instrument's orders and aggregate levels (prices at 1e-9, sizes in contracts)."""

    __slots__ = ("asks", "bids", "dirty_asks", "dirty_bids", "in_snapshot", "last_ts_event", "last_ts_recv",
                 "orders")

    def __init__(self) -> None:
        self.orders: dict[int, tuple[bool, int, int]] = {}  # order_id -> (is_bid, price, size)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.dirty_bids: dict[int, None] = {}
        self.dirty_asks: dict[int, None] = {}
        self.in_snapshot = False
        self.last_ts_event = 0
        self.last_ts_recv = 0

    def clear(self) -> None:
        self.orders.clear()
        self.bids.clear()
        self.asks.clear()
        self.dirty_bids.clear()
        self.dirty_asks.clear()

    def level(self, is_bid: bool, price: int, change: int) -> None:
        levels = self.bids if is_bid else self.asks
        size = levels.get(price, 0) + change
        if size:
            levels[price] = size
        else:
            levels.pop(price, None)
        (self.dirty_bids if is_bid else self.dirty_asks)[price] = None

    def add(self, order_id: int, is_bid: bool, price: int, size: int) -> None:
        self.orders[order_id] = (is_bid, price, size)
        self.level(is_bid, price, size)

    def remove(self, order_id: int) -> None:
        is_bid, price, size = self.orders.pop(order_id)
        self.level(is_bid, price, -size)


def _side(code: str) -> bool:
    """True for a bid, False for an ask; FeedError for 'N' or anything else."""
    if code == "B":
        return True
    if code == "A":
        return False
    raise FeedError(f"order side {code!r} is neither B nor A")


def _price(price: int) -> int:
    if price == UNDEF_PRICE:
        raise FeedError("undefined price")
    return from_scaled(price, PRICE_DECIMALS)


class DbnParser:
    """Decoded DBN records (metadata first, if any) to events; see the module docstring."""

    source = SOURCE

    def __init__(self, symbols: Mapping[int, str] | None = None, venue: str | None = None) -> None:
        self.symbols: dict[int, str] = dict(symbols or {})
        self._explicit = frozenset(self.symbols)
        self.venue = venue or ""
        self.stats = ParserStats()
        self.actions: Counter[str] = Counter()
        """MBO records by action code, snapshot records included."""
        self.snapshot_records = 0
        self._books: dict[int, _MboBook] = {}

    # -- input ----------------------------------------------------------------------------------

    def on_metadata(self, metadata: dbn.Metadata) -> None:
        """Learn the venue (unless given) and the symbology mappings (explicit symbols win)."""
        if not self.venue:
            self.venue = venue_of_dataset(metadata.dataset)
        for iid, symbol in symbols_from_metadata(metadata).items():
            if iid not in self._explicit:
                self.symbols[iid] = symbol

    def parse(self, records: Iterable[Item], dead_letters: DeadLetterSink) -> Iterator[Event]:
        """Events of the records in order; at the end, pending snapshots and deltas are flushed."""
        for rec in records:
            out: list[Event] = []
            self.stats.lines += 1
            try:
                self.parse_record(rec, out)
            except ValueError as exc:  # FeedError, DecimalFormatError
                self.stats.dead_letters += 1
                dead_letters.append(DeadLetter(SOURCE, str(exc), repr(rec)[:1000],
                                               int(getattr(rec, "ts_recv", 0) or 0)))
            self.stats.events += len(out)
            yield from out
        out = self.finish()
        self.stats.events += len(out)
        yield from out

    def parse_record(self, rec: Item, out: list[Event]) -> None:
        """One record's events appended to ``out``; FeedError when it cannot be applied."""
        for ts in (getattr(rec, "ts_event", 0), getattr(rec, "ts_recv", 0)):
            if isinstance(ts, int) and ts >= INT64:  # u64 in DBN; the engine's times are int64
                raise FeedError(f"time out of range: {ts}")
        if isinstance(rec, dbn.MBOMsg):
            self._mbo(rec, out)
        elif isinstance(rec, dbn.TradeMsg):
            self._trade(rec, out)
        elif isinstance(rec, dbn.MBP1Msg):
            self._mbp1(rec, out)
        elif isinstance(rec, dbn.Metadata):
            self.on_metadata(rec)
        elif isinstance(rec, dbn.InstrumentDefMsg | dbn.InstrumentDefMsgV1 | dbn.InstrumentDefMsgV2):
            if rec.instrument_id not in self._explicit:
                self.symbols[rec.instrument_id] = rec.raw_symbol
            self.stats.skipped["definition"] += 1
        else:
            self.stats.skipped[type(rec).__name__] += 1

    def finish(self) -> list[Event]:
        """Flush what the end of input leaves pending: an unfinished snapshot phase or event group."""
        out: list[Event] = []
        for iid, book in self._books.items():
            if book.in_snapshot:
                out.append(self._snapshot(iid, book))
            else:
                self._flush(iid, book, book.last_ts_event, book.last_ts_recv, out)
        return out

    # -- helpers --------------------------------------------------------------------------------

    def symbol(self, instrument_id: int) -> str:
        return self.symbols.get(instrument_id) or str(instrument_id)

    def _venue(self) -> str:
        return self.venue or "databento"

    def book_levels(self, instrument_id: int) -> tuple[list[Level], list[Level]]:
        """The parser's own L2 view (bids, asks best first; sizes at 1e-9), for checks."""
        book = self._books.get(instrument_id)
        if book is None:
            return [], []
        return ([(p, s * SCALE) for p, s in sorted(book.bids.items(), reverse=True)],
                [(p, s * SCALE) for p, s in sorted(book.asks.items())])

    def _snapshot(self, iid: int, book: _MboBook) -> BookSnapshot:
        book.in_snapshot = False
        book.dirty_bids.clear()
        book.dirty_asks.clear()
        bids, asks = self.book_levels(iid)
        ts = book.last_ts_recv
        return BookSnapshot(self._venue(), self.symbol(iid), NO_SEQUENCE, tuple(bids), tuple(asks), ts, ts)

    def _flush(self, iid: int, book: _MboBook, ts_event: int, ts_recv: int, out: list[Event]) -> None:
        if not (book.dirty_bids or book.dirty_asks):
            return
        bids = tuple((p, book.bids.get(p, 0) * SCALE) for p in book.dirty_bids)
        asks = tuple((p, book.asks.get(p, 0) * SCALE) for p in book.dirty_asks)
        book.dirty_bids.clear()
        book.dirty_asks.clear()
        out.append(BookDelta(self._venue(), self.symbol(iid), NO_SEQUENCE, NO_SEQUENCE, bids, asks,
                             ts_event, ts_recv))

    # -- schemas --------------------------------------------------------------------------------

    def _mbo(self, rec: dbn.MBOMsg, out: list[Event]) -> None:
        iid = rec.instrument_id
        book = self._books.get(iid)
        if book is None:
            book = self._books[iid] = _MboBook()
        flags = rec.flags
        action = str(rec.action)
        self.actions[action] += 1
        if flags & F_SNAPSHOT or action == "R":
            if not book.in_snapshot:
                book.clear()
                book.in_snapshot = True
            book.last_ts_event, book.last_ts_recv = rec.ts_event, rec.ts_recv
            self.snapshot_records += bool(flags & F_SNAPSHOT)
            try:
                if action == "R":
                    book.clear()
                elif action == "A":
                    self._add(book, rec)
                else:
                    raise FeedError(f"snapshot record with action {action!r}")
            finally:
                if flags & F_LAST:
                    out.append(self._snapshot(iid, book))
            return
        if book.in_snapshot:
            out.append(self._snapshot(iid, book))
        book.last_ts_event, book.last_ts_recv = rec.ts_event, rec.ts_recv
        try:
            if action == "A":
                self._add(book, rec)
            elif action == "C":
                self._cancel(book, rec)
            elif action == "M":
                self._modify(book, rec)
            elif action == "T":
                out.append(self._trade_event(rec.instrument_id, rec.price, rec.size, str(rec.side),
                                             rec.ts_event, rec.ts_recv))
            elif action == "F":
                self.stats.skipped["mbo fill"] += 1
            elif action == "N":
                self.stats.skipped["mbo none"] += 1
            else:
                raise FeedError(f"unknown MBO action {action!r}")
        finally:
            if flags & F_LAST:
                self._flush(iid, book, rec.ts_event, rec.ts_recv, out)

    def _add(self, book: _MboBook, rec: dbn.MBOMsg) -> None:
        if rec.order_id in book.orders:
            raise FeedError(f"add of order {rec.order_id}, which is already in the book")
        if rec.size <= 0:
            raise FeedError(f"add of size {rec.size}")
        book.add(rec.order_id, _side(str(rec.side)), _price(rec.price), rec.size)

    def _cancel(self, book: _MboBook, rec: dbn.MBOMsg) -> None:
        order = book.orders.get(rec.order_id)
        if order is None:
            raise FeedError(f"cancel of unknown order {rec.order_id}")
        is_bid, price, size = order
        if not 0 < rec.size <= size:
            raise FeedError(f"cancel of {rec.size} from order {rec.order_id} of size {size}")
        if rec.size == size:
            book.remove(rec.order_id)
        else:
            book.orders[rec.order_id] = (is_bid, price, size - rec.size)
            book.level(is_bid, price, -rec.size)

    def _modify(self, book: _MboBook, rec: dbn.MBOMsg) -> None:
        order = book.orders.get(rec.order_id)
        if order is None:
            self.stats.skipped["modify of unknown order -> add"] += 1
            self._add(book, rec)
            return
        side_code = str(rec.side)
        is_bid = _side(side_code) if side_code != "N" else order[0]
        price = _price(rec.price)
        if rec.size <= 0:
            raise FeedError(f"modify of order {rec.order_id} to size {rec.size}")
        book.remove(rec.order_id)
        book.add(rec.order_id, is_bid, price, rec.size)

    def _trade_event(self, iid: int, price: int, size: int, side: str, ts_event: int, ts_recv: int) -> Trade:
        aggressor = _AGGRESSOR.get(side)
        if aggressor is None:
            raise FeedError(f"bad trade side {side!r}")
        if size <= 0:
            raise FeedError(f"trade of size {size}")
        return Trade(self._venue(), self.symbol(iid), "", _price(price), from_int(size), aggressor,
                     ts_event, ts_recv)

    def _trade(self, rec: dbn.TradeMsg, out: list[Event]) -> None:
        action = str(rec.action)
        if action != "T":
            raise FeedError(f"trades record with action {action!r}")
        out.append(self._trade_event(rec.instrument_id, rec.price, rec.size, str(rec.side),
                                     rec.ts_event, rec.ts_recv))

    def _mbp1(self, rec: dbn.MBP1Msg, out: list[Event]) -> None:
        if not rec.flags & F_LAST:
            self.stats.skipped["mbp-1 record without LAST"] += 1
            return
        level = rec.levels[0]  # level 0: the top of book after this event
        bid_size = level.bid_sz if level.bid_px != UNDEF_PRICE else 0
        ask_size = level.ask_sz if level.ask_px != UNDEF_PRICE else 0
        bid_price = from_scaled(level.bid_px, PRICE_DECIMALS) if bid_size else 0
        ask_price = from_scaled(level.ask_px, PRICE_DECIMALS) if ask_size else 0
        out.append(Quote(self._venue(), self.symbol(rec.instrument_id), bid_price, from_int(bid_size),
                         ask_price, from_int(ask_size), rec.ts_event, rec.ts_recv))
