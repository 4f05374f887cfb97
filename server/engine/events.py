"""Normalized input events of the engine, and the small enums they share.

Events are immutable ``NamedTuple``s: cheap to build and to read on the hot path. Prices and sizes are
ints at scale 1e-9 (see ``numbers``); times are ints in nanoseconds since the Unix epoch, UTC:
``ts_event`` is the venue's (exchange) time and ``ts_recv`` the time we received the message.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

Level = tuple[int, int]
"""(price, size) at scale 1e-9. In a delta, size 0 deletes the level."""


class Side(IntEnum):
    """Aggressor side of a trade; numbers match marketdata.v1.Side."""

    UNSPECIFIED = 0
    BUY = 1
    SELL = 2


class AssetClass(IntEnum):
    """Numbers match marketdata.v1.AssetClass."""

    UNSPECIFIED = 0
    EQUITY = 1
    CRYPTO = 2
    FOREX = 3
    COMMODITY = 4
    PERPETUAL = 5
    FUTURE = 6
    INDEX = 7


NO_SEQUENCE = 0
"""``seq`` of an event from a venue that does not number its book messages."""


class BookSnapshot(NamedTuple):
    """A full L2 book for one (venue, symbol); replaces whatever was there and ends any resync."""

    venue: str
    symbol: str
    seq: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_event: int
    ts_recv: int


class BookDelta(NamedTuple):
    """Changed levels for one (venue, symbol); size 0 deletes a level.

    ``first_seq``..``seq`` is the range of venue update ids this message covers (Binance's U..u; equal
    for venues with one id per message). The delta applies when ``first_seq <= last + 1 <= seq``;
    ``seq <= last`` is a duplicate; ``first_seq > last + 1`` is a gap. ``NO_SEQUENCE`` disables checks.
    """

    venue: str
    symbol: str
    first_seq: int
    seq: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_event: int
    ts_recv: int


class BookReset(NamedTuple):
    """A feed found the book wrong (checksum mismatch, reconnect): mark it inconsistent until a snapshot."""

    venue: str
    symbol: str
    reason: str
    ts_event: int
    ts_recv: int


class Quote(NamedTuple):
    """Top of book only (FX ticks, venues that publish BBO); 0 size means that side is empty."""

    venue: str
    symbol: str
    bid_price: int
    bid_size: int
    ask_price: int
    ask_size: int
    ts_event: int
    ts_recv: int


class Trade(NamedTuple):
    """One print. ``trade_id`` is the venue's id, unique per (venue, symbol); '' when it has none."""

    venue: str
    symbol: str
    trade_id: str
    price: int
    size: int
    side: Side
    ts_event: int
    ts_recv: int


class TradingStatusChange(NamedTuple):
    """An instrument's trading status on a venue: ``halted`` True stops it, False resumes it.

    While halted, trades and book changes (deltas, quotes) of (venue, symbol) are refused, counted and
    flagged; a snapshot is still applied. The book reports HALTED and is left out of NBBO and
    consolidation; the ticker says halted. A change to the status it already has does nothing.
    ``reason`` is free text (why trading halted), '' if none.
    """

    venue: str
    symbol: str
    halted: bool
    reason: str
    ts_event: int
    ts_recv: int


class BookCheck(NamedTuple):
    """The venue's integrity hash of its book after book event ``book_seq``.

    ``crc32`` is CRC-32 of the text of the best ``depth`` levels per side (``book.book_hash_text``). The
    engine compares it only when its book is consistent and its last applied sequence is ``book_seq``; a
    mismatch marks the book AWAITING_RESYNC, like a ``BookReset``.
    """

    venue: str
    symbol: str
    book_seq: int
    depth: int
    crc32: int
    ts_event: int
    ts_recv: int


class ClockTick(NamedTuple):
    """The only clock the engine reads: emitted by the runtime (or a replay) at a steady cadence.

    Drives what depends on time passing rather than on events: closing candles with no trades,
    excluding stale venues, index / mark / funding publication.
    """

    ts: int


Event = BookSnapshot | BookDelta | BookReset | Quote | Trade | ClockTick | TradingStatusChange | BookCheck
