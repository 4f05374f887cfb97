"""Frozen dataclasses returned by :class:`mds_client.MarketDataClient`, and their protobuf converters.

Every price, size, rate, percent and volume is an exact :class:`decimal.Decimal` converted with
:mod:`mds_client.fixed` (``sint64`` at scale 1e-9, or ``marketdata.v1.Decimal``); times stay integer
nanoseconds since the Unix epoch (UTC), as on the wire. Enum values are lower-case strings (see
:mod:`mds_client.enums`). Each class has a ``from_pb`` class method taking the generated message.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Self

from marketdata.v1 import (
    alert_pb2,
    book_pb2,
    candle_pb2,
    common_pb2,
    feed_pb2,
    instrument_pb2,
    pricing_pb2,
    ticker_pb2,
    trade_pb2,
)

from mds_client.enums import condition_from_pb, enum_name, interval_from_pb, source_from_pb
from mds_client.fixed import from_decimal_pb, from_fixed

__all__ = [
    "Alert",
    "Candle",
    "ConsolidatedBook",
    "ConsolidatedLevel",
    "DeadLetter",
    "ExcludedVenue",
    "FeedStatus",
    "FundingRate",
    "IndexComponent",
    "IndexPrice",
    "Instrument",
    "MarkPrice",
    "Nbbo",
    "OrderBook",
    "PriceLevel",
    "Ticker",
    "Trade",
    "VenueSize",
    "VenueSymbol",
]


def _interval_name(value: int) -> str:
    try:
        return interval_from_pb(value)
    except ValueError:
        return f"unknown({value})"


@dataclass(frozen=True, slots=True)
class VenueSymbol:
    """How one venue spells an instrument."""

    venue: str
    venue_symbol: str

    @classmethod
    def from_pb(cls, msg: instrument_pb2.VenueSymbol) -> Self:
        """Convert a ``marketdata.v1.VenueSymbol``."""
        return cls(msg.venue, msg.venue_symbol)


@dataclass(frozen=True, slots=True)
class Instrument:
    """An instrument of the catalogue; ``asset_class`` is e.g. ``"crypto"``, ``"perpetual"``."""

    symbol: str
    asset_class: str
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    price_decimals: int
    size_decimals: int
    venue_symbols: tuple[VenueSymbol, ...]
    underlying: str

    @property
    def venues(self) -> tuple[str, ...]:
        """The venues listing the instrument, in catalogue order."""
        return tuple(vs.venue for vs in self.venue_symbols)

    @classmethod
    def from_pb(cls, msg: instrument_pb2.Instrument) -> Self:
        """Convert a ``marketdata.v1.Instrument``."""
        return cls(
            symbol=msg.symbol,
            asset_class=enum_name(instrument_pb2.AssetClass, msg.asset_class),
            base=msg.base,
            quote=msg.quote,
            tick_size=from_fixed(msg.tick_size),
            lot_size=from_fixed(msg.lot_size),
            price_decimals=msg.price_decimals,
            size_decimals=msg.size_decimals,
            venue_symbols=tuple(VenueSymbol.from_pb(vs) for vs in msg.venue_symbols),
            underlying=msg.underlying,
        )


@dataclass(frozen=True, slots=True)
class ExcludedVenue:
    """A venue left out of a consolidated view; ``reason`` is e.g. ``"stale"``, ``"crossed"``, ``"halted"``."""

    venue: str
    reason: str
    detail: str

    @classmethod
    def from_pb(cls, msg: common_pb2.ExcludedVenue) -> Self:
        """Convert a ``marketdata.v1.ExcludedVenue``."""
        return cls(msg.venue, enum_name(common_pb2.ExclusionReason, msg.reason), msg.detail)


@dataclass(frozen=True, slots=True)
class PriceLevel:
    """One level of a venue book."""

    price: Decimal
    size: Decimal

    @classmethod
    def from_pb(cls, msg: book_pb2.PriceLevel) -> Self:
        """Convert a ``marketdata.v1.PriceLevel``."""
        return cls(from_fixed(msg.price), from_fixed(msg.size))


@dataclass(frozen=True, slots=True)
class OrderBook:
    """The L2 book of one venue (``order_book(symbol, venue)``); ``status`` is ``"consistent"``, ``"crossed"``,
    ``"awaiting_resync"`` or ``"halted"`` (trading halted on the venue: the book is frozen)."""

    symbol: str
    venue: str
    sequence: int
    venue_sequence: int
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]
    status: str
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: book_pb2.BookSnapshot) -> Self:
        """Convert a ``marketdata.v1.BookSnapshot``."""
        return cls(
            symbol=msg.symbol,
            venue=msg.venue,
            sequence=msg.sequence,
            venue_sequence=msg.venue_sequence,
            bids=tuple(PriceLevel.from_pb(level) for level in msg.bids),
            asks=tuple(PriceLevel.from_pb(level) for level in msg.asks),
            status=enum_name(book_pb2.BookStatus, msg.status),
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
        )


@dataclass(frozen=True, slots=True)
class VenueSize:
    """The size one venue contributes to a consolidated level."""

    venue: str
    size: Decimal

    @classmethod
    def from_pb(cls, msg: book_pb2.VenueSize) -> Self:
        """Convert a ``marketdata.v1.VenueSize``."""
        return cls(msg.venue, from_fixed(msg.size))


@dataclass(frozen=True, slots=True)
class ConsolidatedLevel:
    """One level of the consolidated book; ``size`` is the wire's ``total_size``."""

    price: Decimal
    size: Decimal
    venue_sizes: tuple[VenueSize, ...]

    @classmethod
    def from_pb(cls, msg: book_pb2.ConsolidatedLevel) -> Self:
        """Convert a ``marketdata.v1.ConsolidatedLevel``."""
        return cls(from_fixed(msg.price), from_fixed(msg.total_size),
                   tuple(VenueSize.from_pb(vs) for vs in msg.venue_sizes))


@dataclass(frozen=True, slots=True)
class ConsolidatedBook:
    """The cross-venue book of a symbol (``order_book(symbol)`` without a venue)."""

    symbol: str
    bids: tuple[ConsolidatedLevel, ...]
    asks: tuple[ConsolidatedLevel, ...]
    excluded_venues: tuple[ExcludedVenue, ...]
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: book_pb2.ConsolidatedBook) -> Self:
        """Convert a ``marketdata.v1.ConsolidatedBook``."""
        return cls(
            symbol=msg.symbol,
            bids=tuple(ConsolidatedLevel.from_pb(level) for level in msg.bids),
            asks=tuple(ConsolidatedLevel.from_pb(level) for level in msg.asks),
            excluded_venues=tuple(ExcludedVenue.from_pb(ev) for ev in msg.excluded_venues),
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
        )


@dataclass(frozen=True, slots=True)
class Nbbo:
    """Cross-venue best bid and offer. A side without quotes has price 0 and an empty venue."""

    symbol: str
    bid_price: Decimal
    bid_size: Decimal
    bid_venue: str
    ask_price: Decimal
    ask_size: Decimal
    ask_venue: str
    locked: bool
    crossed: bool
    excluded_venues: tuple[ExcludedVenue, ...]
    ts_event_ns: int
    ts_recv_ns: int

    @property
    def spread(self) -> Decimal | None:
        """``ask_price - bid_price`` (exact), or None when a side has no quote."""
        if not (self.bid_venue and self.ask_venue):
            return None
        return self.ask_price - self.bid_price

    @classmethod
    def from_pb(cls, msg: book_pb2.Nbbo) -> Self:
        """Convert a ``marketdata.v1.Nbbo``."""
        return cls(
            symbol=msg.symbol,
            bid_price=from_fixed(msg.bid_price),
            bid_size=from_fixed(msg.bid_size),
            bid_venue=msg.bid_venue,
            ask_price=from_fixed(msg.ask_price),
            ask_size=from_fixed(msg.ask_size),
            ask_venue=msg.ask_venue,
            locked=msg.locked,
            crossed=msg.crossed,
            excluded_venues=tuple(ExcludedVenue.from_pb(ev) for ev in msg.excluded_venues),
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
        )


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution; ``side`` is the aggressor: ``"buy"``, ``"sell"`` or ``"unspecified"``."""

    venue: str
    symbol: str
    trade_id: str
    price: Decimal
    size: Decimal
    side: str
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: trade_pb2.Trade) -> Self:
        """Convert a ``marketdata.v1.Trade``."""
        return cls(
            venue=msg.venue,
            symbol=msg.symbol,
            trade_id=msg.trade_id,
            price=from_fixed(msg.price),
            size=from_fixed(msg.size),
            side=enum_name(common_pb2.Side, msg.side),
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
        )


@dataclass(frozen=True, slots=True)
class Ticker:
    """24-hour rolling statistics; ``change_pct`` is in percent points (``Decimal("2.5")`` = +2.5 %).

    ``halted`` is True while trading in the instrument is halted on the venue (the figures stand still).
    """

    venue: str
    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    change: Decimal
    change_pct: Decimal
    volume: Decimal
    quote_volume: Decimal
    vwap: Decimal
    best_bid: Decimal
    best_ask: Decimal
    window_start_ns: int
    trade_count: int
    ts_event_ns: int
    ts_recv_ns: int
    halted: bool = False

    @classmethod
    def from_pb(cls, msg: ticker_pb2.Ticker) -> Self:
        """Convert a ``marketdata.v1.Ticker``."""
        return cls(
            venue=msg.venue,
            symbol=msg.symbol,
            open=from_fixed(msg.open),
            high=from_fixed(msg.high),
            low=from_fixed(msg.low),
            last=from_fixed(msg.last),
            change=from_fixed(msg.change),
            change_pct=from_fixed(msg.change_pct),
            volume=from_decimal_pb(msg.volume),
            quote_volume=from_decimal_pb(msg.quote_volume),
            vwap=from_fixed(msg.vwap),
            best_bid=from_fixed(msg.best_bid),
            best_ask=from_fixed(msg.best_ask),
            window_start_ns=msg.window_start_ns,
            trade_count=msg.trade_count,
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
            halted=msg.halted,
        )


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar; ``interval`` is a string such as ``"1m"``; volumes are exact Decimals."""

    venue: str
    symbol: str
    interval: str
    open_time_ns: int
    close_time_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    trade_count: int
    vwap: Decimal
    closed: bool
    correction: bool
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: candle_pb2.Candle) -> Self:
        """Convert a ``marketdata.v1.Candle``."""
        return cls(
            venue=msg.venue,
            symbol=msg.symbol,
            interval=_interval_name(msg.interval),
            open_time_ns=msg.open_time_ns,
            close_time_ns=msg.close_time_ns,
            open=from_fixed(msg.open),
            high=from_fixed(msg.high),
            low=from_fixed(msg.low),
            close=from_fixed(msg.close),
            volume=from_decimal_pb(msg.volume),
            quote_volume=from_decimal_pb(msg.quote_volume),
            buy_volume=from_decimal_pb(msg.buy_volume),
            sell_volume=from_decimal_pb(msg.sell_volume),
            trade_count=msg.trade_count,
            vwap=from_fixed(msg.vwap),
            closed=msg.closed,
            correction=msg.correction,
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
        )


@dataclass(frozen=True, slots=True)
class IndexComponent:
    """One source of an index; ``weight`` is a fraction (``Decimal("0.25")``); ``exclusion_reason`` as ExcludedVenue."""

    venue: str
    symbol: str
    price: Decimal
    weight: Decimal
    included: bool
    exclusion_reason: str

    @classmethod
    def from_pb(cls, msg: pricing_pb2.IndexComponent) -> Self:
        """Convert a ``marketdata.v1.IndexComponent``."""
        return cls(
            venue=msg.venue,
            symbol=msg.symbol,
            price=from_fixed(msg.price),
            weight=from_fixed(msg.weight),
            included=msg.included,
            exclusion_reason=enum_name(common_pb2.ExclusionReason, msg.exclusion_reason),
        )


@dataclass(frozen=True, slots=True)
class IndexPrice:
    """A computed index value with all its configured components."""

    symbol: str
    price: Decimal
    components: tuple[IndexComponent, ...]
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: pricing_pb2.IndexPrice) -> Self:
        """Convert a ``marketdata.v1.IndexPrice``."""
        return cls(msg.symbol, from_fixed(msg.price), tuple(IndexComponent.from_pb(c) for c in msg.components),
                   msg.ts_event_ns, msg.ts_recv_ns)


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """Mark price of a perpetual: ``mark_price = index_price + premium_ema``."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal
    premium_ema: Decimal
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: pricing_pb2.MarkPrice) -> Self:
        """Convert a ``marketdata.v1.MarkPrice``."""
        return cls(msg.symbol, from_fixed(msg.mark_price), from_fixed(msg.index_price), from_fixed(msg.premium_ema),
                   msg.ts_event_ns, msg.ts_recv_ns)


@dataclass(frozen=True, slots=True)
class FundingRate:
    """Funding of a perpetual; rates are fractions (``Decimal("0.0001")`` = 0.01 %) per interval."""

    symbol: str
    rate: Decimal
    premium_rate: Decimal
    interest_rate: Decimal
    next_funding_time_ns: int
    countdown_ns: int
    interval_ns: int
    ts_event_ns: int
    ts_recv_ns: int

    @classmethod
    def from_pb(cls, msg: pricing_pb2.FundingRate) -> Self:
        """Convert a ``marketdata.v1.FundingRate``."""
        return cls(
            symbol=msg.symbol,
            rate=from_fixed(msg.rate),
            premium_rate=from_fixed(msg.premium_rate),
            interest_rate=from_fixed(msg.interest_rate),
            next_funding_time_ns=msg.next_funding_time_ns,
            countdown_ns=msg.countdown_ns,
            interval_ns=msg.interval_ns,
            ts_event_ns=msg.ts_event_ns,
            ts_recv_ns=msg.ts_recv_ns,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """A standing alert; ``condition`` / ``source`` as in :data:`mds_client.enums.ALERT_CONDITIONS` / ``ALERT_SOURCES``.

    ``threshold`` is a price for ``price_*`` conditions and percent points for ``change_pct_*``.
    """

    alert_id: str
    symbol: str
    venue: str
    condition: str
    source: str
    threshold: Decimal
    created_ns: int
    triggered: bool

    @classmethod
    def from_pb(cls, msg: alert_pb2.Alert) -> Self:
        """Convert a ``marketdata.v1.Alert``."""
        return cls(
            alert_id=msg.alert_id,
            symbol=msg.symbol,
            venue=msg.venue,
            condition=condition_from_pb(msg.condition),
            source=source_from_pb(msg.source),
            threshold=from_fixed(msg.threshold),
            created_ns=msg.created_ns,
            triggered=msg.triggered,
        )


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """The health of one of the service's feeds; ``state`` is lowercase ("live", "stale", ...)."""

    name: str
    kind: str
    state: str
    last_event_age_ms: int | None
    """None before the feed delivered anything."""
    events: int
    reconnects: int
    gaps: int
    checksum_failures: int
    dead_letters: int
    detail: str

    @classmethod
    def from_pb(cls, msg: feed_pb2.FeedStatus) -> Self:
        """Convert a ``marketdata.v1.FeedStatus``."""
        state = feed_pb2.FeedState.Name(msg.state).removeprefix("FEED_STATE_").lower()
        return cls(
            name=msg.name,
            kind=msg.kind,
            state=state,
            last_event_age_ms=None if msg.last_event_age_ms < 0 else msg.last_event_age_ms,
            events=msg.events,
            reconnects=msg.reconnects,
            gaps=msg.gaps,
            checksum_failures=msg.checksum_failures,
            dead_letters=msg.dead_letters,
            detail=msg.detail,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input a feed could not parse, as the service recorded it (``ListDeadLetters``)."""

    feed: str
    source: str
    location: str
    """Where in the source when known (Kafka: ``topic[partition]@offset``); else empty."""
    reason_code: str
    reason: str
    raw: str
    """The input as the parser kept it, cut to its first 64 KiB (``raw_length`` is the whole length)."""
    raw_length: int
    recorded_ns: int
    """When the service recorded it (ns since the epoch); ``dead_letters``' time range applies to it."""
    source_time_ns: int
    sequence: int

    @classmethod
    def from_pb(cls, msg: feed_pb2.DeadLetter) -> Self:
        """Convert a ``marketdata.v1.DeadLetter``."""
        return cls(
            feed=msg.feed,
            source=msg.source,
            location=msg.location,
            reason_code=msg.reason_code,
            reason=msg.reason,
            raw=msg.raw,
            raw_length=msg.raw_length,
            recorded_ns=msg.recorded_ns,
            source_time_ns=msg.source_time_ns,
            sequence=msg.sequence,
        )
