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

Cost: proportional to what changed. When the top N of a side are list/tuple rows of exact floats
(ccxt's normal output), their raw ``(price, amount)`` pairs are kept (copied: ccxt mutates its rows in
place) and the next book is compared with them: an identical side costs a list comparison, a changed
one converts only the pairs not seen last time. This is exact because floats compare exactly and the
float -> 1e-9 int conversion is one-to-one on the floats it accepts, so the raw pairs diff is the
converted levels diff. Conversions are also cached per float value (bounded, cleared when full).
Anything else (another number type, a row that is not a list or tuple, a value that does not convert,
unsorted or non-positive levels) takes the full path, which converts and checks every level as
before, so the events and dead letters are the same either way.

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

import itertools
import json
import math
import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
    """A ccxt number (float, int, str, Decimal) to an exact 1e-9 int within the contract's sint64;
    CcxtParseError otherwise."""
    if isinstance(value, bool) or value is None:
        raise CcxtParseError(f"{what} is not a number: {value!r}")
    try:
        if isinstance(value, int):
            out = value * SCALE
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise CcxtParseError(f"{what} is not finite: {value!r}")
            out = parse_fixed(repr(value))
        elif isinstance(value, Decimal):
            out = parse_fixed(str(value))
        elif isinstance(value, str):
            out = parse_fixed(value)
        else:
            raise CcxtParseError(f"{what} is not a number: {value!r}")
    except DecimalFormatError as exc:
        raise CcxtParseError(f"{what}: {exc}") from exc
    if not -_INT64 < out < _INT64:
        raise CcxtParseError(f"{what} out of range (the contract's sint64 at 1e-9): {value!r}")
    return out


_INT64: Final = 1 << 63


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


def _side_levels(rows: Any, what: str, depth: int, descending: bool,
                 fixed: Callable[[Any, str], int] = to_fixed) -> dict[int, int]:
    """The first ``depth`` levels of one book side, checked (strictly sorted, positive)."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise CcxtParseError(f"{what} is not a list")
    out: dict[int, int] = {}
    last: int | None = None
    for row in rows[:depth]:
        if not isinstance(row, Sequence) or isinstance(row, (str, bytes)) or len(row) < 2:
            raise CcxtParseError(f"{what}: bad level {row!r}"[:200])
        price = fixed(row[0], f"{what} price")
        size = fixed(row[1], f"{what} size")
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


_PAIR: Final = operator.itemgetter(0, 1)
_PRICE: Final = operator.itemgetter(0)
_ROWS: Final = frozenset((list, tuple))
_FLOATS: Final = frozenset((float,))
FIXED_CACHE_SIZE: Final = 1 << 15
"""Float -> 1e-9 int conversions kept per parser (the cache is cleared when full)."""

_Pairs = list[tuple[float, float]]


def _float_pairs(rows: Any, depth: int) -> _Pairs | None:
    """The raw (price, amount) of the top ``depth`` rows when all are list/tuple rows of floats; else None."""
    if not isinstance(rows, list):
        return None
    top = rows[:depth]
    if type(top) is not list or not _ROWS.issuperset(map(type, top)):
        return None
    try:
        pairs: _Pairs = list(map(_PAIR, top))
    except IndexError:
        return None
    # exact type: 1, True, Decimal or str can equal a float yet convert differently
    return pairs if _FLOATS.issuperset(map(type, itertools.chain.from_iterable(pairs))) else None


class _Side:
    """One side of the top N last emitted: its ``levels`` (1e-9 ints) and/or its ``raw`` float pairs."""

    __slots__ = ("_levels", "_pairs", "raw")

    def __init__(self, levels: dict[int, int] | None, raw: _Pairs | None, pairs: set[tuple[float, float]] | None = None
                 ) -> None:
        self._levels = levels
        self.raw = raw
        """The top N as ccxt's (price, amount) floats in book order; None: not all floats."""
        self._pairs = pairs

    def levels(self, fixed: Callable[[Any, str], int]) -> dict[int, int]:
        if self._levels is None:
            assert self.raw is not None
            self._levels = {fixed(p, "price"): fixed(s, "size") for p, s in self.raw}
        return self._levels

    def pairs(self) -> set[tuple[float, float]]:
        if self._pairs is None:
            assert self.raw is not None
            self._pairs = set(self.raw)
        return self._pairs


class _Emitted:
    __slots__ = ("asks", "bids", "seq")

    def __init__(self, seq: int, bids: _Side, asks: _Side) -> None:
        self.seq = seq
        self.bids = bids
        self.asks = asks


class CcxtParser:
    """ccxt structures of one venue to events; keeps the top N last emitted per symbol (see above)."""

    def __init__(self, venue: str, depth: int = 20, *, cache_size: int = FIXED_CACHE_SIZE) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.venue = venue
        self.depth = depth
        self.stats = CcxtParserStats()
        self._books: dict[str, _Emitted] = {}
        self._seq: dict[str, int] = {}
        self._cache: dict[float, int] = {}
        self._cache_size = cache_size

    def _dead(self, sink: DeadLetterSink, reason: str, obj: Any, ts_recv: int) -> None:
        self.stats.dead_letters += 1
        sink.append(DeadLetter(f"{SOURCE}:{self.venue}", reason, _raw(obj), ts_recv))

    def _fixed(self, value: Any, what: str) -> int:
        """``to_fixed`` with the per-float cache (only exact floats are cached: see ``_float_pairs``)."""
        if type(value) is not float:
            return to_fixed(value, what)
        out = self._cache.get(value)
        if out is None:
            out = to_fixed(value, what)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[value] = out
        return out

    def _incremental(self, last: _Side, pairs: _Pairs, descending: bool) -> tuple[_Side, tuple[Level, ...]] | None:
        """``pairs`` after ``last``, converting only new pairs; None: take the full path (not sure it is valid)."""
        prices = list(map(_PRICE, pairs))
        if not all(map(operator.gt if descending else operator.lt, prices, itertools.islice(prices, 1, None))):
            return None  # unsorted, duplicate or NaN prices
        now = set(pairs)
        before = last.pairs()
        fixed = self._fixed
        changes: list[Level] = []
        try:
            for p, s in now - before:  # new levels and new sizes
                price, size = fixed(p, "price"), fixed(s, "size")
                if price <= 0 or size <= 0:
                    return None
                changes.append((price, size))
        except CcxtParseError:
            return None
        gone = before - now
        if gone:
            kept = set(prices)
            changes += [(fixed(p, "price"), 0) for p, _ in gone if p not in kept]
        changes.sort(reverse=descending)
        return _Side(None, pairs, now), tuple(changes)

    def _side(self, last: _Side | None, rows: Any, what: str, descending: bool) -> tuple[_Side, tuple[Level, ...]]:
        """One side of a book: its new state, and the changes from ``last`` (all levels when None)."""
        pairs = _float_pairs(rows, self.depth)
        if pairs is not None and last is not None and last.raw is not None:
            if pairs == last.raw:
                return last, ()
            done = self._incremental(last, pairs, descending)
            if done is not None:
                return done
        levels = _side_levels(rows, what, self.depth, descending, self._fixed)
        side = _Side(levels, pairs)
        if last is None:
            return side, tuple(levels.items())
        return side, _changes(last.levels(self._fixed), levels, descending)

    def book(self, symbol: str, book: Any, ts_recv: int,
             dead_letters: DeadLetterSink) -> BookSnapshot | BookDelta | None:
        """ccxt's order book of ``symbol`` (canonical) to a snapshot, a delta, or None (top N unchanged)."""
        last = self._books.get(symbol)
        try:
            if not isinstance(book, Mapping):
                raise CcxtParseError("order book is not a mapping")
            bids, bid_changes = self._side(last.bids if last else None, book.get("bids"), "bids", True)
            asks, ask_changes = self._side(last.asks if last else None, book.get("asks"), "asks", False)
            ts_event = ms_to_ns(book.get("timestamp"), ts_recv)
        except CcxtParseError as exc:
            self._dead(dead_letters, str(exc), book, ts_recv)
            return None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            self._dead(dead_letters, f"malformed order book: {type(exc).__name__}: {exc}", book, ts_recv)
            return None
        if last is None:
            seq = self._seq.get(symbol, 0) + 1
            self._seq[symbol] = seq
            self._books[symbol] = _Emitted(seq, bids, asks)
            self.stats.snapshots += 1
            return BookSnapshot(self.venue, symbol, seq, bid_changes, ask_changes, ts_event, ts_recv)
        last.bids, last.asks = bids, asks  # the same levels when nothing changed (maybe a float view now)
        if not bid_changes and not ask_changes:
            self.stats.skipped["book top unchanged"] += 1
            return None
        seq = last.seq + 1
        last.seq = self._seq[symbol] = seq
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
