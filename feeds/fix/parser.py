"""Pure parser of FIX 4.4 market data (W, X, Y) into engine events; no I/O, no clock, no quickfix.

Input is the text of one FIX message (``tag=value`` fields separated by SOH, as ``quickfix.Message.
toString()`` writes it: the ``NoMDEntries`` (268) group right after its count, each entry starting with
its delimiter, 269 in W and 279 in X) and the receive time taken by the session adapter.

- ``MarketDataSnapshotFullRefresh`` (W) -> ``BookSnapshot`` of the bid (269=0) and offer (269=1)
  entries. A trade entry of a snapshot is the last trade's state, not a new print: it is counted, not
  emitted.
- ``MarketDataIncrementalRefresh`` (X) -> per symbol one ``BookDelta`` (MDUpdateAction new/change ->
  the level's size, delete -> size 0; a delete or change may name the level by MDEntryID alone) and a
  ``Trade`` per trade entry (269=2; MDEntryID is the trade id; AggressorSide 2446 when the LP sends it).
- ``MarketDataRequestReject`` (Y) -> an ``MdRequestReject`` record (not an engine event), mapped back to
  the symbol through the MDReqID the session registered with ``on_request``.

Sequencing: FIX market data has no book sequence, so the parser keeps a contiguous counter per symbol:
a snapshot takes the next number and each delta the one after, so the engine sees a gap only if an
event is lost downstream. When the LP sends RptSeq (83) on X entries (and optionally in W's body), the
parser checks it: a repeated RptSeq is a duplicate (skipped), a jump is a gap -> ``BookReset``, the
symbol's deltas are dropped until a new W, and the symbol is queued for a snapshot re-request
(``take_resync``). A malformed X loses an update just the same: it becomes a ``DeadLetter`` and the books
it touched (all subscribed books when no symbol can be read) are reset and re-requested.

Times: ``ts_event`` is the entry's MDEntryDate (272) + MDEntryTime (273) when present (the date of
SendingTime when only the time is given; a time more than an hour after SendingTime is taken as the
previous day), else the message's SendingTime (52). A delta or snapshot takes its latest entry time.
``ts_recv`` is the adapter's. Prices and sizes go through ``numbers.parse_fixed`` (exact).

Every malformed message becomes a ``DeadLetter`` with a reason ``<kind>: <detail>``; ``stats``
counts dead letters by kind. The parser never raises on input.
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import BookDelta, BookReset, BookSnapshot, Event, Level, Side, Trade
from server.engine.numbers import DecimalFormatError, parse_fixed

SOURCE: Final = "fix"
SOH: Final = "\x01"
_NS: Final = 1_000_000_000
_DAY_NS: Final = 86_400 * _NS
_HOUR_NS: Final = 3_600 * _NS

# Tags.
MSG_TYPE: Final = 35
SENDING_TIME: Final = 52
SYMBOL: Final = 55
TEXT: Final = 58
RPT_SEQ: Final = 83
MD_REQ_ID: Final = 262
NO_MD_ENTRIES: Final = 268
MD_ENTRY_TYPE: Final = 269
MD_ENTRY_PX: Final = 270
MD_ENTRY_SIZE: Final = 271
MD_ENTRY_DATE: Final = 272
MD_ENTRY_TIME: Final = 273
MD_ENTRY_ID: Final = 278
MD_UPDATE_ACTION: Final = 279
MD_REQ_REJ_REASON: Final = 281
AGGRESSOR_SIDE: Final = 2446

BID: Final = "0"
OFFER: Final = "1"
TRADE: Final = "2"
NEW: Final = "0"
CHANGE: Final = "1"
DELETE: Final = "2"

REJECT_REASONS: Final = {
    "0": "unknown symbol", "1": "duplicate MDReqID", "2": "insufficient bandwidth",
    "3": "insufficient permissions", "4": "unsupported SubscriptionRequestType",
    "5": "unsupported MarketDepth", "6": "unsupported MDUpdateType", "7": "unsupported AggregatedBook",
    "8": "unsupported MDEntryType", "9": "unsupported TradingSessionID", "A": "unsupported Scope",
    "B": "unsupported OpenCloseSettlFlag", "C": "unsupported MDImplicitDelete",
}
"""MDReqRejReason (281) values of FIX 4.4."""

_HEADER_TRAILER: Final = frozenset({8, 9, 10, 34, 35, 49, 50, 52, 56, 57, 89, 93, 97, 115, 116, 122, 128,
                                    129, 142, 143, 144, 145, 369, 627, 628, 629, 630, 1128})
GROUP_TAGS: Final = frozenset({
    # MDFullGrp / MDIncGrp of FIX 4.4
    279, 285, 269, 278, 280, 291, 292, 270, 15, 271, 272, 273, 274, 275, 336, 625, 276, 277, 282, 283,
    284, 286, 59, 432, 126, 110, 18, 287, 37, 299, 288, 289, 346, 290, 546, 811, 451, 58, 354, 355,
    # Instrument component (the parts an LP uses in an entry)
    55, 65, 48, 22, 460, 461, 167, 762, 200, 541, 201, 202, 206, 231, 207, 106, 107, 454, 455, 456,
    # common extensions: RptSeq, MDPriceLevel, MDQuoteType, TradeID, AggressorSide, MDStreamID
    83, 1023, 1070, 1003, 2446, 1500,
})
"""Tags read as part of a NoMDEntries entry; any other tag ends the group (as quickfix parses it)."""


class FixError(ValueError):
    """A malformed message: ``kind`` is a short stable reason (the counter key), ``detail`` the rest."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class FixMessage(NamedTuple):
    """One split message: fields outside the NoMDEntries group (first occurrence) and the entries."""

    msg_type: str
    fields: dict[int, str]
    entries: tuple[dict[int, str], ...]


class MdRequestReject(NamedTuple):
    """A MarketDataRequestReject (Y): the LP refused a subscription; ``symbol`` is the canonical one."""

    venue: str
    md_req_id: str
    symbol: str
    reason_code: str
    reason: str
    text: str
    ts_event: int
    ts_recv: int


def split_message(raw: str, delimiters: Mapping[str, int] | None = None) -> FixMessage:
    """Split a FIX message into fields and NoMDEntries entries (``FixError`` when malformed).

    ``delimiters`` maps a MsgType to the first tag of its entries (W: 269, X: 279).
    """
    delims = delimiters if delimiters is not None else _DELIMITERS
    fields: dict[int, str] = {}
    entries: list[dict[int, str]] = []
    msg_type = ""
    expected = -1  # entries announced by 268 and still being read; -1 outside the group
    delim = 0
    parts = raw.split(SOH)
    if parts and parts[-1] == "":
        parts.pop()
    if not parts:
        raise FixError("empty message")
    for part in parts:
        tag_text, eq, value = part.partition("=")
        if not eq or not tag_text.isdigit() or not tag_text.isascii() or len(tag_text) > 9:
            raise FixError("bad field", repr(part[:40]))
        tag = int(tag_text)
        if tag == 0:
            raise FixError("bad field", repr(part[:40]))
        if expected >= 0:
            if tag == delim:
                if len(entries) == expected:
                    raise FixError("group count", f"more than {expected} entries in NoMDEntries")
                entries.append({tag: value})
                continue
            if tag in GROUP_TAGS and tag not in _HEADER_TRAILER:
                if not entries:
                    raise FixError("group structure", f"entry does not start with tag {delim}")
                entry = entries[-1]
                if tag not in entry:
                    entry[tag] = value
                    continue
                if len(entries) != expected:
                    raise FixError("group structure", f"tag {tag} twice in one entry")
                # all entries read: a body field written after the group (quickfix sorts body tags)
            if len(entries) != expected:
                raise FixError("group count", f"NoMDEntries={expected} but {len(entries)} entries")
            expected = -1
        if tag in fields:
            raise FixError("repeated tag", str(tag))
        fields[tag] = value
        if tag == MSG_TYPE:
            msg_type = value
        elif tag == NO_MD_ENTRIES:
            if not value.isdigit() or not value.isascii() or len(value) > 6:
                raise FixError("bad NoMDEntries", repr(value[:20]))
            expected = int(value)
            delim = delims.get(msg_type, 0)
            if not delim:
                raise FixError("unexpected group", f"NoMDEntries in MsgType {msg_type!r}")
    if expected >= 0 and len(entries) != expected:
        raise FixError("group count", f"NoMDEntries={expected} but {len(entries)} entries")
    if not msg_type:
        raise FixError("missing tag", "MsgType (35)")
    return FixMessage(msg_type, fields, tuple(entries))


_DELIMITERS: Final = {"W": MD_ENTRY_TYPE, "X": MD_UPDATE_ACTION}
_NUMBER_CHARS: Final = frozenset("0123456789.-+")


# -- values -------------------------------------------------------------------------------------

def _digits(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise FixError("bad time", f"{what} {text!r}")
    return int(text)


def date_to_ns(text: str) -> int:
    """UTCDateOnly ``YYYYMMDD`` to ns at midnight UTC."""
    if len(text) != 8:
        raise FixError("bad time", f"date {text!r}")
    year, month, day = _digits(text[:4], "date"), _digits(text[4:6], "date"), _digits(text[6:], "date")
    if not (1970 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise FixError("bad time", f"date {text!r} out of range")
    return calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0)) * _NS


def time_to_ns(text: str) -> int:
    """UTCTimeOnly ``HH:MM:SS[.f]`` (up to 9 decimals) to ns since midnight."""
    head, dot, frac = text.partition(".")
    if len(head) != 8 or head[2] != ":" or head[5] != ":" or (dot and not 1 <= len(frac) <= 9):
        raise FixError("bad time", f"time {text!r}")
    hour, minute = _digits(head[:2], "time"), _digits(head[3:5], "time")
    second = _digits(head[6:], "time")
    nanos = _digits(frac, "time") * 10 ** (9 - len(frac)) if frac else 0
    if hour > 23 or minute > 59 or second > 60:
        raise FixError("bad time", f"time {text!r} out of range")
    return ((hour * 60 + minute) * 60 + second) * _NS + nanos


def timestamp_to_ns(text: str) -> int:
    """UTCTimestamp ``YYYYMMDD-HH:MM:SS[.f]`` to ns since the epoch."""
    if len(text) < 17 or text[8] != "-":
        raise FixError("bad time", f"timestamp {text!r}")
    return date_to_ns(text[:8]) + time_to_ns(text[9:])


def _fixed(text: str | None, what: str) -> int:
    if text is None:
        raise FixError("missing tag", what)
    if len(text) > 40:
        raise FixError("bad number", f"{what} too long")
    if not text or not all(c in _NUMBER_CHARS for c in text):
        # FIX numbers have no exponent (and '1e999999999' would be a billion-digit int)
        raise FixError("bad number", f"{what}: {text!r}")
    try:
        value = parse_fixed(text)
    except DecimalFormatError as exc:
        raise FixError("bad number", f"{what}: {exc}") from None
    if not -(1 << 63) < value < 1 << 63:
        raise FixError("bad number", f"{what}: out of range (the contract's sint64 at 1e-9): {text!r}")
    return value


def _size(text: str | None, what: str) -> int:
    size = _fixed(text, what)
    if size < 0:
        raise FixError("bad number", f"{what} negative: {text!r}")
    return size


def _rpt_seq(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or len(text) > 18:
        raise FixError("bad RptSeq", repr(text[:20]))
    return int(text)


# -- the parser ---------------------------------------------------------------------------------

@dataclass(slots=True)
class FixParserStats:
    """What the parser did: nothing is dropped without a count."""

    messages: int = 0
    events: int = 0
    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    rejects: int = 0
    gaps: int = 0
    resets: int = 0
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason kind."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Valid input that carries nothing for the engine, by kind."""


@dataclass(slots=True)
class _Book:
    """The parser's state of one subscribed symbol."""

    canonical: str
    seq: int = 0
    synced: bool = False
    rpt_seq: int | None = None
    ids: dict[str, tuple[str, int]] = field(default_factory=dict)
    """MDEntryID -> (entry type, price) of the book's levels, for deletes/changes by id."""


class _Change(NamedTuple):
    """One validated X entry."""

    venue_symbol: str
    action: str
    entry_type: str
    price: int
    size: int
    entry_id: str
    old_price: int | None
    rpt_seq: int | None
    side: Side
    ts: int


class FixMdParser:
    """Stateful pure parser of one FIX session's market data (see the module docstring).

    ``symbols`` maps the venue symbols subscribed to their canonical names; data for any other symbol
    is a dead letter.
    """

    def __init__(self, venue: str, symbols: Mapping[str, str], source: str = SOURCE) -> None:
        self.venue = venue
        self.source = source
        self.books: dict[str, _Book] = {s: _Book(c) for s, c in symbols.items()}
        self.requests: dict[str, str] = {}
        """MDReqID -> venue symbol, for rejects and entries without a Symbol."""
        self.stats = FixParserStats()
        self._resync: list[str] = []
        self.rejects: list[MdRequestReject] = []
        """Rejects not yet taken by the session (``take_rejects``)."""

    # -- session hooks --------------------------------------------------------------------------

    def on_request(self, md_req_id: str, venue_symbol: str) -> None:
        """The session sent a MarketDataRequest ``md_req_id`` for ``venue_symbol``."""
        self.requests[md_req_id] = venue_symbol

    def take_resync(self) -> list[str]:
        """Venue symbols whose book needs a fresh snapshot (a gap or a lost update); clears the queue."""
        out, self._resync = self._resync, []
        return out

    def take_rejects(self) -> list[MdRequestReject]:
        out, self.rejects = self.rejects, []
        return out

    def reset_all(self, reason: str, ts_event: int, ts_recv: int) -> list[Event]:
        """The session went down (or a lost message named no symbol): every synced book is reset."""
        out: list[Event] = []
        for book in self.books.values():
            if book.synced:
                out.append(self._reset(book, reason, ts_event, ts_recv))
            book.rpt_seq = None
        return out

    # -- parsing --------------------------------------------------------------------------------

    def parse(self, raw: str, ts_recv: int, dead_letters: DeadLetterSink) -> list[Event]:
        """One message to events; malformed input goes to ``dead_letters`` (never raises)."""
        self.stats.messages += 1
        try:
            msg = split_message(raw)
        except FixError as exc:
            self._dead(exc, raw, ts_recv, dead_letters)
            return []
        kind = msg.msg_type
        try:
            if kind == "W":
                out = self._snapshot(msg, ts_recv)
            elif kind == "X":
                out = self._incremental(msg, ts_recv)
            elif kind == "Y":
                self._reject(msg, ts_recv)
                out = []
            else:
                self.stats.skipped[f"MsgType {kind[:10]}"] += 1
                out = []
        except FixError as exc:
            self._dead(exc, raw, ts_recv, dead_letters)
            if kind == "X":
                return self._lost_update(msg, exc, ts_recv)
            return []
        self.stats.events += len(out)
        return out

    def parse_many(self, raws: Iterable[tuple[str, int]], dead_letters: DeadLetterSink) -> list[Event]:
        """Messages with their receive times, in order."""
        out: list[Event] = []
        for raw, ts_recv in raws:
            out.extend(self.parse(raw, ts_recv, dead_letters))
        return out

    def lost_message(self, reason: str, ts_recv: int) -> list[Event]:
        """A market data message was lost before parsing (quickfix refused it): reset every book."""
        self.stats.gaps += 1
        return self._resync_all(reason, ts_recv)

    def _dead(self, exc: FixError, raw: str, ts_recv: int, dead_letters: DeadLetterSink) -> None:
        self.stats.dead_letters[exc.kind] += 1
        dead_letters.append(DeadLetter(self.source, str(exc), raw.replace(SOH, "|")[:2000], ts_recv))

    def _resync_all(self, reason: str, ts_recv: int) -> list[Event]:
        out = self.reset_all(reason, 0, ts_recv)
        for symbol, book in self.books.items():
            if symbol not in self._resync and book.seq:
                self._resync.append(symbol)
        return out

    def _lost_update(self, msg: FixMessage, exc: FixError, ts_recv: int) -> list[Event]:
        """A malformed X lost an update: reset the books it names, or all when it names none."""
        names = {e[SYMBOL] for e in msg.entries if SYMBOL in e}
        req = msg.fields.get(MD_REQ_ID)
        if req in self.requests:
            names.add(self.requests[req])
        books = [(s, self.books[s]) for s in sorted(names) if s in self.books]
        reason = f"lost update ({exc.kind})"
        if not books:
            return self._resync_all(reason, ts_recv)
        out: list[Event] = []
        for symbol, book in books:
            if book.synced:
                out.append(self._reset(book, reason, 0, ts_recv))
            if symbol not in self._resync:
                self._resync.append(symbol)
        return out

    def _reset(self, book: _Book, reason: str, ts_event: int, ts_recv: int) -> BookReset:
        book.synced = False
        book.ids.clear()
        self.stats.resets += 1
        return BookReset(self.venue, book.canonical, reason, ts_event or ts_recv, ts_recv)

    def _book_of(self, symbol: str | None) -> tuple[str, _Book]:
        if symbol is None:
            raise FixError("missing tag", "Symbol (55)")
        book = self.books.get(symbol)
        if book is None:
            raise FixError("unsubscribed symbol", repr(symbol[:40]))
        return symbol, book

    def _sending_time(self, msg: FixMessage) -> int:
        text = msg.fields.get(SENDING_TIME)
        if text is None:
            raise FixError("missing tag", "SendingTime (52)")
        return timestamp_to_ns(text)

    @staticmethod
    def _entry_time(entry: Mapping[int, str], sending: int) -> int:
        time_text = entry.get(MD_ENTRY_TIME)
        date_text = entry.get(MD_ENTRY_DATE)
        if time_text is None:
            return date_to_ns(date_text) if date_text is not None else sending
        tod = time_to_ns(time_text)
        if date_text is not None:
            return date_to_ns(date_text) + tod
        ts = sending - sending % _DAY_NS + tod
        return ts - _DAY_NS if ts > sending + _HOUR_NS else ts

    def _snapshot(self, msg: FixMessage, ts_recv: int) -> list[Event]:
        symbol, book = self._book_of(msg.fields.get(SYMBOL))
        sending = self._sending_time(msg)
        rpt = _rpt_seq(msg.fields.get(RPT_SEQ))
        bids: list[Level] = []
        asks: list[Level] = []
        ids: dict[str, tuple[str, int]] = {}
        ts_event = 0
        for i, entry in enumerate(msg.entries, 1):
            kind = entry[MD_ENTRY_TYPE]
            if kind not in (BID, OFFER):
                if kind == "" or len(kind) > 1:
                    raise FixError("bad MDEntryType", f"entry {i}: {kind[:10]!r}")
                self.stats.skipped["snapshot trade" if kind == TRADE else f"MDEntryType {kind}"] += 1
                continue
            price = _fixed(entry.get(MD_ENTRY_PX), f"entry {i} MDEntryPx (270)")
            size = _size(entry.get(MD_ENTRY_SIZE), f"entry {i} MDEntrySize (271)")
            ts_event = max(ts_event, self._entry_time(entry, sending))
            (bids if kind == BID else asks).append((price, size))
            entry_id = entry.get(MD_ENTRY_ID)
            if entry_id:
                ids[entry_id] = (kind, price)
        book.seq += 1
        book.synced = True
        book.rpt_seq = rpt
        book.ids = ids
        if symbol in self._resync:
            self._resync.remove(symbol)
        self.stats.snapshots += 1
        return [BookSnapshot(self.venue, book.canonical, book.seq, tuple(bids), tuple(asks),
                             ts_event or sending, ts_recv)]

    def _validate(self, msg: FixMessage, sending: int) -> list[_Change]:
        """Every entry of an X checked before any state changes (all or nothing)."""
        changes: list[_Change] = []
        last_symbol = self.requests.get(msg.fields.get(MD_REQ_ID, ""))
        ids: dict[tuple[str, str], tuple[str, int]] = {}  # ids added by earlier entries of this message
        for i, entry in enumerate(msg.entries, 1):
            symbol, book = self._book_of(entry.get(SYMBOL, last_symbol))
            last_symbol = symbol
            action = entry[MD_UPDATE_ACTION]
            if action not in (NEW, CHANGE, DELETE):
                raise FixError("bad MDUpdateAction", f"entry {i}: {action[:10]!r}")
            entry_id = entry.get(MD_ENTRY_ID, "")
            known = (ids.get((symbol, entry_id)) or book.ids.get(entry_id)) if entry_id else None
            kind = entry.get(MD_ENTRY_TYPE)
            if kind is None:
                if known is None:
                    raise FixError("missing tag", f"entry {i} MDEntryType (269)")
                kind = known[0]
            if kind == "" or len(kind) > 1:
                raise FixError("bad MDEntryType", f"entry {i}: {kind[:10]!r}")
            rpt = _rpt_seq(entry.get(RPT_SEQ))
            ts = self._entry_time(entry, sending)
            side = Side.UNSPECIFIED
            price = size = 0
            old: int | None = None
            if kind == TRADE:
                if action == NEW:
                    price = _fixed(entry.get(MD_ENTRY_PX), f"entry {i} MDEntryPx (270)")
                    size = _size(entry.get(MD_ENTRY_SIZE), f"entry {i} MDEntrySize (271)")
                    if not size:
                        raise FixError("bad number", f"entry {i}: trade of size 0")
                    aggressor = entry.get(AGGRESSOR_SIDE, "")
                    side = Side.BUY if aggressor == "1" else Side.SELL if aggressor == "2" else Side.UNSPECIFIED
            elif kind in (BID, OFFER):
                if action == DELETE:
                    px = entry.get(MD_ENTRY_PX)
                    if px is not None:
                        price = _fixed(px, f"entry {i} MDEntryPx (270)")
                    elif known is not None:
                        price = known[1]
                    else:
                        raise FixError("missing tag", f"entry {i}: delete without MDEntryPx or known MDEntryID")
                else:
                    price = _fixed(entry.get(MD_ENTRY_PX), f"entry {i} MDEntryPx (270)")
                    size = _size(entry.get(MD_ENTRY_SIZE), f"entry {i} MDEntrySize (271)")
                    if action == CHANGE and known is not None and known[1] != price:
                        old = known[1]
                    if entry_id:
                        ids[(symbol, entry_id)] = (kind, price)
            changes.append(_Change(symbol, action, kind, price, size, entry_id, old, rpt, side, ts))
        return changes

    def _incremental(self, msg: FixMessage, ts_recv: int) -> list[Event]:
        sending = self._sending_time(msg)
        changes = self._validate(msg, sending)
        # Per symbol, in first-seen order: book levels and trades.
        levels: dict[str, tuple[list[Level], list[Level], list[int]]] = {}
        trades: list[Trade] = []
        out: list[Event] = []
        blocked: set[str] = set()
        for ch in changes:
            book = self.books[ch.venue_symbol]
            if ch.rpt_seq is not None:
                last = book.rpt_seq
                if last is not None and ch.rpt_seq <= last:
                    self.stats.duplicates += 1
                    continue
                book.rpt_seq = ch.rpt_seq
                if last is not None and ch.rpt_seq > last + 1 and ch.venue_symbol not in blocked:
                    self.stats.gaps += 1
                    blocked.add(ch.venue_symbol)
                    levels.pop(ch.venue_symbol, None)
                    if book.synced:
                        out.append(self._reset(book, f"RptSeq gap: expected {last + 1}, got {ch.rpt_seq}",
                                               ch.ts, ts_recv))
                    if ch.venue_symbol not in self._resync:
                        self._resync.append(ch.venue_symbol)
            if ch.entry_type == TRADE:
                if ch.action != NEW:
                    self.stats.skipped["trade correction"] += 1
                    continue
                trades.append(Trade(self.venue, book.canonical, ch.entry_id, ch.price, ch.size, ch.side,
                                    ch.ts, ts_recv))
                continue
            if ch.entry_type not in (BID, OFFER):
                self.stats.skipped[f"MDEntryType {ch.entry_type}"] += 1
                continue
            if ch.venue_symbol in blocked or not book.synced:
                self.stats.skipped["awaiting snapshot"] += 1
                continue
            bids, asks, times = levels.setdefault(ch.venue_symbol, ([], [], []))
            side = bids if ch.entry_type == BID else asks
            if ch.old_price is not None:
                side.append((ch.old_price, 0))
            side.append((ch.price, 0 if ch.action == DELETE else ch.size))
            times.append(ch.ts)
            if ch.entry_id:
                if ch.action == DELETE:
                    book.ids.pop(ch.entry_id, None)
                else:
                    book.ids[ch.entry_id] = (ch.entry_type, ch.price)
        for symbol, (bids, asks, times) in levels.items():
            book = self.books[symbol]
            book.seq += 1
            self.stats.deltas += 1
            out.append(BookDelta(self.venue, book.canonical, book.seq, book.seq, tuple(bids), tuple(asks),
                                 max(times), ts_recv))
        self.stats.trades += len(trades)
        out.extend(trades)
        return out

    def _reject(self, msg: FixMessage, ts_recv: int) -> None:
        req = msg.fields.get(MD_REQ_ID)
        if req is None:
            raise FixError("missing tag", "MDReqID (262)")
        sending = self._sending_time(msg)
        venue_symbol = self.requests.get(req, "")
        book = self.books.get(venue_symbol)
        code = msg.fields.get(MD_REQ_REJ_REASON, "")
        self.stats.rejects += 1
        self.rejects.append(MdRequestReject(self.venue, req, book.canonical if book else venue_symbol, code,
                                            REJECT_REASONS.get(code, f"reason {code!r}" if code else ""),
                                            msg.fields.get(TEXT, ""), sending, ts_recv))
