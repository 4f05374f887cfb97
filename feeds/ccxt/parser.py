"""ccxt's unified structures (order books, trades, tickers) to engine events: pure, no I/O, no clock.

Books: ccxt (pro) keeps each venue book synced itself (REST snapshot + diff stream, sequence and checksum
checks) and hands out the whole book on every ``watch_order_book``. ``CcxtParser.book`` emits the top
``depth`` levels of it as follows:

- the first book of a symbol (and the first after ``reset``) is a ``BookSnapshot`` of the top N;
- every later book is diffed against the top N last emitted: a ``BookDelta`` with the changed levels and
  size 0 for levels that left the top N (deleted, or pushed below N), so the engine's book is always
  exactly the venue's top N; nothing is emitted when the top N did not change;
- sequence numbers are the **feed's own**, per symbol and contiguous: snapshot ``seq = k``, then deltas
  ``first_seq = seq = k + 1, k + 2, ...``. ccxt's ``nonce`` is not used as ``seq``: ccxt conflates
  (several venue messages may land between two reads), so venue ids are not contiguous here, while the
  feed's numbering lets the engine still catch a lost batch. After a ``reset`` (checksum failure, gap,
  reconnect) numbering continues from where it was, with a fresh snapshot.

Numbers: ccxt turns venue strings into Python floats. Each float is converted with
``Decimal(repr(x))``: ``repr`` is the shortest decimal that round-trips to the same double, which is
exactly the venue's decimal string whenever that string has at most 15 significant digits (every
price and size the venues here send), e.g. ``"0.35130000"`` -> 0.3513 -> ``'0.3513'`` ->
351300000e-9. A value that needs more than 9 decimals (a float that is not a venue decimal, such as
0.1 + 0.2) is refused as a dead letter rather than rounded. Strings, ints and ``Decimal`` are taken
digit by digit (``numbers.parse_fixed``).

Times: ``ts_event`` is ccxt's ``timestamp`` (the venue's event time, ms) in ns, or ``ts_recv`` when
the venue gives none; ``ts_recv`` is passed in by the feed (wall clock in ns when ccxt handed the
structure over).

Tickers: a ticker with bid, ask and both sizes becomes a ``Quote`` (the venue's top of book: a spot
price for the index). The feed sends tickers only for symbols whose book it does not watch, because a
``Quote`` replaces the engine's whole book for that venue. A ticker without bid/ask prices or sizes is
counted in ``stats.skipped``; anything malformed becomes a ``DeadLetter`` with the reason.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import BookDelta, BookReset, BookSnapshot, Level, Quote, Side, Trade
from server.engine.numbers import SCALE, DecimalFormatError, parse_fixed

SOURCE: Final = "ccxt"
MAX_RAW: Final = 4000
"""Characters of a bad structure kept in its dead letter."""
_NS_PER_MS: Final = 1_000_000


class CcxtParseError(ValueError):
    """A structure that cannot be turned into events; the message is the dead letter's reason."""


@dataclass(slots=True)
class CcxtParserStats:
    """What the parser made of its input: nothing is dropped without a count."""

    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    quotes: int = 0
    resets: int = 0
    dead_letters: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def to_fixed(value: Any, what: str) -> int:
    """A ccxt number (float, int, str, Decimal) to an exact 1e-9 int; CcxtParseError otherwise."""
    if isinstance(value, bool) or value is None:
        raise CcxtParseError(f"{what} is not a number: {value!r}")
    try:
        if isinstance(value, int):
            return value * SCALE
        if isinstance(value, float):
            if not math.isfinite(value):
                raise CcxtParseError(f"{what} is not finite: {value!r}")
            return parse_fixed(repr(value))
        if isinstance(value, Decimal):
            return parse_fixed(str(value))
        if isinstance(value, str):
            return parse_fixed(value)
    except DecimalFormatError as exc:
        raise CcxtParseError(f"{what}: {exc}") from exc
    raise CcxtParseError(f"{what} is not a number: {value!r}")


def ms_to_ns(value: Any, default: int) -> int:
    """ccxt's millisecond ``timestamp`` to ns; ``default`` when the venue gave none."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CcxtParseError(f"bad timestamp {value!r}")
    return value * _NS_PER_MS


def _raw(obj: Any) -> str:
    try:
        text = json.dumps(obj, default=repr, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(obj)
    return text[:MAX_RAW]


def _side_levels(rows: Any, what: str, depth: int, descending: bool) -> dict[int, int]:
    """The first ``depth`` levels of one book side, checked (strictly sorted, positive)."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise CcxtParseError(f"{what} is not a list")
    out: dict[int, int] = {}
    last: int | None = None
    for row in rows[:depth]:
        if not isinstance(row, Sequence) or isinstance(row, (str, bytes)) or len(row) < 2:
            raise CcxtParseError(f"{what}: bad level {row!r}"[:200])
        price = to_fixed(row[0], f"{what} price")
        size = to_fixed(row[1], f"{what} size")
        if price <= 0 or size <= 0:
            raise CcxtParseError(f"{what}: level {row!r} is not positive"[:200])
        if last is not None and (price >= last if descending else price <= last):
            raise CcxtParseError(f"{what} not sorted at {row!r}"[:200])
        last = price
        out[price] = size
    return out


def _changes(old: dict[int, int], new: dict[int, int], descending: bool) -> tuple[Level, ...]:
    changed = [(p, s) for p, s in new.items() if old.get(p) != s]
    changed += [(p, 0) for p in old if p not in new]
    changed.sort(reverse=descending)
    return tuple(changed)


class _Emitted:
    __slots__ = ("asks", "bids", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


class CcxtParser:
    """ccxt structures of one venue to events; keeps the top N last emitted per symbol (see above)."""

    def __init__(self, venue: str, depth: int = 20) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.venue = venue
        self.depth = depth
        self.stats = CcxtParserStats()
        self._books: dict[str, _Emitted] = {}
        self._seq: dict[str, int] = {}

    def _dead(self, sink: DeadLetterSink, reason: str, obj: Any, ts_recv: int) -> None:
        self.stats.dead_letters += 1
        sink.append(DeadLetter(f"{SOURCE}:{self.venue}", reason, _raw(obj), ts_recv))

    def book(self, symbol: str, book: Any, ts_recv: int,
             dead_letters: DeadLetterSink) -> BookSnapshot | BookDelta | None:
        """ccxt's order book of ``symbol`` (canonical) to a snapshot, a delta, or None (top N unchanged)."""
        try:
            if not isinstance(book, Mapping):
                raise CcxtParseError("order book is not a mapping")
            bids = _side_levels(book.get("bids"), "bids", self.depth, descending=True)
            asks = _side_levels(book.get("asks"), "asks", self.depth, descending=False)
            ts_event = ms_to_ns(book.get("timestamp"), ts_recv)
        except CcxtParseError as exc:
            self._dead(dead_letters, str(exc), book, ts_recv)
            return None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            self._dead(dead_letters, f"malformed order book: {type(exc).__name__}: {exc}", book, ts_recv)
            return None
        last = self._books.get(symbol)
        if last is None:
            seq = self._seq.get(symbol, 0) + 1
            self._seq[symbol] = seq
            state = self._books[symbol] = _Emitted(seq)
            state.bids, state.asks = bids, asks
            self.stats.snapshots += 1
            return BookSnapshot(self.venue, symbol, seq, tuple(bids.items()), tuple(asks.items()),
                                ts_event, ts_recv)
        bid_changes = _changes(last.bids, bids, descending=True)
        ask_changes = _changes(last.asks, asks, descending=False)
        if not bid_changes and not ask_changes:
            self.stats.skipped["book top unchanged"] += 1
            return None
        seq = last.seq + 1
        last.seq = self._seq[symbol] = seq
        last.bids, last.asks = bids, asks
        self.stats.deltas += 1
        return BookDelta(self.venue, symbol, seq, seq, bid_changes, ask_changes, ts_event, ts_recv)

    def reset(self, symbol: str, reason: str, ts_recv: int) -> BookReset:
        """The book of ``symbol`` is no longer right: a ``BookReset``; the next book is a snapshot."""
        self._books.pop(symbol, None)
        self.stats.resets += 1
        return BookReset(self.venue, symbol, reason, ts_recv, ts_recv)

    def trades(self, symbol: str, trades: Any, ts_recv: int, dead_letters: DeadLetterSink) -> list[Trade]:
        """ccxt trade dicts of ``symbol`` (canonical) to ``Trade`` events; a bad trade is a dead letter."""
        if not isinstance(trades, Sequence) or isinstance(trades, (str, bytes)):
            self._dead(dead_letters, "trades is not a list", trades, ts_recv)
            return []
        out: list[Trade] = []
        for item in trades:
            try:
                out.append(self._trade(symbol, item, ts_recv))
            except CcxtParseError as exc:
                self._dead(dead_letters, str(exc), item, ts_recv)
            except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
                self._dead(dead_letters, f"malformed trade: {type(exc).__name__}: {exc}", item, ts_recv)
        self.stats.trades += len(out)
        return out

    def _trade(self, symbol: str, item: Any, ts_recv: int) -> Trade:
        if not isinstance(item, Mapping):
            raise CcxtParseError("trade is not a mapping")
        price = to_fixed(item.get("price"), "trade price")
        size = to_fixed(item.get("amount"), "trade amount")
        if price <= 0 or size <= 0:
            raise CcxtParseError(f"trade price {price}e-9 / amount {size}e-9 not positive")
        side_text = item.get("side")
        side = {"buy": Side.BUY, "sell": Side.SELL, None: Side.UNSPECIFIED}.get(side_text) \
            if isinstance(side_text, str | None) else None
        if side is None:
            raise CcxtParseError(f"bad trade side {side_text!r}"[:200])
        trade_id = item.get("id")
        if trade_id is None:
            trade_id = ""
        elif isinstance(trade_id, bool) or not isinstance(trade_id, str | int):
            raise CcxtParseError(f"bad trade id {trade_id!r}"[:200])
        return Trade(self.venue, symbol, str(trade_id), price, size, side,
                     ms_to_ns(item.get("timestamp"), ts_recv), ts_recv)

    def ticker(self, symbol: str, ticker: Any, ts_recv: int, dead_letters: DeadLetterSink) -> Quote | None:
        """A ccxt ticker to a ``Quote`` (top of book), or None when it carries no full top of book."""
        try:
            if not isinstance(ticker, Mapping):
                raise CcxtParseError("ticker is not a mapping")
            raw = [ticker.get(k) for k in ("bid", "bidVolume", "ask", "askVolume")]
            if raw[0] is None or raw[2] is None:
                self.stats.skipped["ticker without bid/ask"] += 1
                return None
            if raw[1] is None or raw[3] is None:
                self.stats.skipped["ticker without bid/ask sizes"] += 1
                return None
            bid, bid_size, ask, ask_size = (to_fixed(v, k) for v, k in zip(
                raw, ("bid", "bidVolume", "ask", "askVolume"), strict=True))
            if bid <= 0 or ask <= 0 or bid_size < 0 or ask_size < 0:
                raise CcxtParseError("ticker bid/ask not positive")
            ts_event = ms_to_ns(ticker.get("timestamp"), ts_recv)
        except CcxtParseError as exc:
            self._dead(dead_letters, str(exc), ticker, ts_recv)
            return None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            self._dead(dead_letters, f"malformed ticker: {type(exc).__name__}: {exc}", ticker, ts_recv)
            return None
        self.stats.quotes += 1
        return Quote(self.venue, symbol, bid, bid_size, ask, ask_size, ts_event, ts_recv)
