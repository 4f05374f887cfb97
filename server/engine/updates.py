"""Typed updates the engine emits for books and NBBO, and the read-only views it builds on demand.

Accepted ``BookSnapshot``, ``BookDelta`` and ``Trade`` events are emitted as they are (they are
immutable), so nothing is copied on the hot path. Candles, tickers, pricing, alerts and quality flags have
their records in their own modules.
"""

from __future__ import annotations

from typing import NamedTuple

from server.engine.book import BookStatus


class BookStatusChange(NamedTuple):
    """A book changed state: a sequence gap, reset or hash mismatch (resync needed), a resync, crossed or
    uncrossed, halted or resumed.

    This is the explicit "gap / resync" marker of a book stream: after AWAITING_RESYNC the book is not
    consistent and is left out of the NBBO and the consolidated book until the next snapshot. HALTED
    (reason "halted" or "halted: <why>") leaves it out until a change with reason "resumed".
    """

    venue: str
    symbol: str
    status: BookStatus
    expected_seq: int
    received_seq: int
    reason: str
    ts_event: int
    ts_recv: int


class ExcludedVenue(NamedTuple):
    venue: str
    reason: str  # "stale", "resync", "halted", "empty"


class Nbbo(NamedTuple):
    """Best bid and offer over the venues of one symbol.

    Size at a side is the sum over venues quoting the best price; the side's venue is the one with the
    largest size there (ties: venue name order). Locked: bid == ask; crossed: bid > ask. Prices 0 with
    an empty venue mean that side has no quote.
    """

    symbol: str
    bid_price: int
    bid_size: int
    bid_venue: str
    ask_price: int
    ask_size: int
    ask_venue: str
    locked: bool
    crossed: bool
    excluded: tuple[ExcludedVenue, ...]
    ts_event: int
    ts_recv: int


class VenueSize(NamedTuple):
    venue: str
    size: int


class ConsolidatedLevel(NamedTuple):
    price: int
    size: int
    venues: tuple[VenueSize, ...]


class ConsolidatedBook(NamedTuple):
    """Levels summed over the consistent, fresh venue books of one symbol, with per-venue sizes."""

    symbol: str
    bids: tuple[ConsolidatedLevel, ...]
    asks: tuple[ConsolidatedLevel, ...]
    excluded: tuple[ExcludedVenue, ...]
    ts_recv: int


class HeatmapBucket(NamedTuple):
    price_start: int  # bucket covers [price_start, price_start + bucket_size)
    size: int


class DepthHeatmap(NamedTuple):
    """Consolidated depth summed into fixed price buckets, for depth heatmaps."""

    symbol: str
    bucket_size: int
    bids: tuple[HeatmapBucket, ...]  # best (highest) bucket first
    asks: tuple[HeatmapBucket, ...]  # best (lowest) bucket first
    ts_recv: int
