"""The L2 order book of one (venue, symbol): levels, sequence state, consistency, crossed and halted
flags, and the book integrity hash (``book_hash``) venues check books with.

Each side is a dict ``price -> size`` plus a sorted list of keys kept with ``bisect`` (the fastest of the
structures measured in ../shared/docs/python-ceilings.md). Both key lists end with the best level (bids
ascending by price, asks ascending by ``-price``), so the frequent changes near the top of the book
insert and delete near the end of the list and move few elements. Prices and sizes are ints at 1e-9.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Iterable
from enum import IntEnum
from itertools import islice
from typing import Any, cast

from server.engine.events import Level


class BookStatus(IntEnum):
    """Numbers match marketdata.v1.BookStatus."""

    UNSPECIFIED = 0
    CONSISTENT = 1
    AWAITING_RESYNC = 2
    CROSSED = 3
    HALTED = 4


def _side_text(levels: Iterable[Level], depth: int) -> str:
    """The first ``depth`` levels of size > 0 (already best first) as ``p:s,p:s``."""
    parts: list[str] = []
    for price, size in levels:
        if size > 0:
            parts.append(f"{price}:{size}")
            if len(parts) == depth:
                break
    return ",".join(parts)


def book_hash_text(bids: Iterable[Level], asks: Iterable[Level], depth: int) -> str:
    """The text ``book_hash`` checksums: best ``depth`` bids high to low, '|', best asks low to high.

    As ``EngineBookHash`` in protos/marketdata/v1/engine_event.proto defines it: decimal integers at
    1e-9, ``price:size`` joined by ',', no spaces; levels of size <= 0 are left out; the input may be in
    any order. An empty book is ``|``.
    """
    if depth < 1:
        raise ValueError("depth must be >= 1")
    top_bids = sorted(bids, key=lambda lv: -lv[0])
    top_asks = sorted(asks, key=lambda lv: lv[0])
    return _side_text(top_bids, depth) + "|" + _side_text(top_asks, depth)


def book_hash(bids: Iterable[Level], asks: Iterable[Level], depth: int) -> int:
    """CRC-32 (zlib, ISO-HDLC) of ``book_hash_text``: the integrity hash of a book's top ``depth`` levels."""
    return zlib.crc32(book_hash_text(bids, asks, depth).encode("ascii"))


class L2Book:
    """Levels of one venue's book for one symbol.

    ``version`` counts accepted snapshots and deltas (one each), so a snapshot taken at version v is
    followed exactly by the deltas that carry v+1, v+2, ... in the engine's emission order.
    """

    __slots__ = (
        "ask_keys",
        "ask_price",
        "ask_size",
        "asks",
        "bid_keys",
        "bid_price",
        "bid_size",
        "bids",
        "crossed",
        "halted",
        "last_ts_event",
        "last_ts_recv",
        "seq",
        "symbol",
        "synced",
        "venue",
        "version",
    )

    def __init__(self, venue: str, symbol: str) -> None:
        self.venue = venue
        self.symbol = symbol
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_keys: list[int] = []  # price, ascending: best bid last
        self.ask_keys: list[int] = []  # -price, ascending: best ask last
        self.seq = 0
        self.version = 0
        self.synced = False  # False until a snapshot, and again after a gap or reset
        self.crossed = False
        self.halted = False  # trading halted: deltas and quotes are refused until it resumes
        self.last_ts_event = 0
        self.last_ts_recv = 0
        # The top of book, kept beside the levels so NBBO reads it without touching them (0 = empty).
        self.bid_price = 0
        self.bid_size = 0
        self.ask_price = 0
        self.ask_size = 0

    # -- mutation -------------------------------------------------------------------------------

    def replace(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
        """Replace both sides with a snapshot's levels (a repeated price: the last wins; zeros dropped)."""
        self.bids = {p: s for p, s in dict(bids).items() if s}
        self.asks = {p: s for p, s in dict(asks).items() if s}
        self.bid_keys = sorted(self.bids)
        self.ask_keys = sorted(-p for p in self.asks)
        self.refresh_top()

    def apply(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> bool:
        """Apply changed levels; size 0 deletes (deleting an absent level is a no-op).

        Returns True when a change was at or better than the old best, so the top may have moved; the
        cached top is then refreshed (and only then: most changes are deeper in the book).
        """
        # Prices and sizes stay the event's own int objects (Any): compiled, an int-typed local is a
        # machine word, and storing it in a dict or list again would allocate a new int object each time.
        touched = False
        if bids:
            book: dict[Any, Any] = self.bids
            keys: list[Any] = self.bid_keys
            best = self.bid_price  # 0 when the side is empty: any price touches it
            for level in cast("tuple[tuple[Any, Any], ...]", bids):
                price = level[0]
                size = level[1]
                p: int = price
                if p >= best:
                    touched = True
                if size:
                    if price not in book:
                        insort(keys, price)
                    book[price] = size
                elif book.pop(price, None) is not None:
                    del keys[bisect_left(keys, price)]
        if asks:
            book = self.asks
            keys = self.ask_keys
            best = self.ask_price
            for level in cast("tuple[tuple[Any, Any], ...]", asks):
                price = level[0]
                size = level[1]
                p = price
                if p <= best or not best:
                    touched = True
                if size:
                    if price not in book:
                        insort(keys, -p)
                    book[price] = size
                elif book.pop(price, None) is not None:
                    del keys[bisect_left(keys, -p)]
        if touched:
            self.refresh_top()
        return touched

    def refresh_top(self) -> None:
        """Recompute the cached top of book after the levels changed."""
        keys: list[Any] = self.bid_keys
        if keys:
            k = keys[-1]  # the stored int object: the dict lookup below allocates nothing
            self.bid_price = k
            self.bid_size = self.bids[k]
        else:
            self.bid_price = self.bid_size = 0
        keys = self.ask_keys
        if keys:
            p: int = keys[-1]
            p = -p
            self.ask_price = p
            self.ask_size = self.asks[p]
        else:
            self.ask_price = self.ask_size = 0

    def set_top(self, bid_price: int, bid_size: int, ask_price: int, ask_size: int) -> None:
        """Replace the book with one level per side (a quote-only venue); size 0 empties a side."""
        self.bids = {bid_price: bid_size} if bid_size else {}
        self.asks = {ask_price: ask_size} if ask_size else {}
        self.bid_keys = [bid_price] if bid_size else []
        self.ask_keys = [-ask_price] if ask_size else []
        self.refresh_top()

    # -- reading --------------------------------------------------------------------------------

    def best_bid(self) -> int | None:
        keys = self.bid_keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self.ask_keys
        return -keys[-1] if keys else None

    def top(self) -> tuple[int, int, int, int]:
        """(bid price, bid size, ask price, ask size); an empty side reads as 0, 0."""
        return self.bid_price, self.bid_size, self.ask_price, self.ask_size

    def is_crossed(self) -> bool:
        """Best bid at or above best ask (a locked single-venue book counts as crossed)."""
        return bool(self.bid_price and self.ask_price and self.bid_price >= self.ask_price)

    def bid_levels(self, depth: int | None = None) -> list[Level]:
        """Bids best first, at most ``depth`` levels (all when None)."""
        book = self.bids
        keys = reversed(self.bid_keys) if depth is None else islice(reversed(self.bid_keys), depth)
        return [(k, book[k]) for k in keys]

    def ask_levels(self, depth: int | None = None) -> list[Level]:
        """Asks best first, at most ``depth`` levels (all when None)."""
        book = self.asks
        keys = reversed(self.ask_keys) if depth is None else islice(reversed(self.ask_keys), depth)
        return [(-k, book[-k]) for k in keys]

    def hash_text(self, depth: int) -> str:
        """``book_hash_text`` of this book, read from the sorted keys (no sort)."""
        if depth < 1:
            raise ValueError("depth must be >= 1")
        bids, asks = self.bids, self.asks
        return (_side_text(((k, bids[k]) for k in reversed(self.bid_keys)), depth) + "|"
                + _side_text(((-k, asks[-k]) for k in reversed(self.ask_keys)), depth))

    def hash(self, depth: int) -> int:
        """``book_hash`` of this book's top ``depth`` levels."""
        return zlib.crc32(self.hash_text(depth).encode("ascii"))

    @property
    def status(self) -> BookStatus:
        """AWAITING_RESYNC wins over HALTED (an untrusted book is untrusted, halted or not)."""
        if not self.synced:
            return BookStatus.AWAITING_RESYNC
        if self.halted:
            return BookStatus.HALTED
        return BookStatus.CROSSED if self.crossed else BookStatus.CONSISTENT
