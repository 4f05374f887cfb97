"""mds_client: a small typed asyncio facade over the generated ``marketdata.v1`` gRPC stubs.

:class:`MarketDataClient` wraps the unary calls of the mds market data service (instruments, books,
NBBO, trades, tickers, candles, index / mark / funding, feed status, dead letters, alert CRUD, health)
and returns frozen dataclasses with exact :class:`decimal.Decimal` numbers; gRPC errors become :class:`MdsError`.
:mod:`mds_client.fixed` holds the exact number conversions of the API's conventions (``sint64``
fixed point at scale 1e-9, ``marketdata.v1.Decimal``), :mod:`mds_client.enums` the string names of
candle intervals and alert conditions / sources.
"""

from __future__ import annotations

from mds_client.client import DEFAULT_TARGET, MarketDataClient
from mds_client.enums import (
    ALERT_CONDITIONS,
    ALERT_SOURCES,
    INTERVALS,
    interval_from_pb,
    interval_to_pb,
)
from mds_client.errors import MdsError, from_rpc_error
from mds_client.fixed import DecimalLike, from_decimal_pb, from_fixed, to_decimal_pb, to_fixed
from mds_client.models import (
    Alert,
    Candle,
    ConsolidatedBook,
    ConsolidatedLevel,
    DeadLetter,
    ExcludedVenue,
    FeedStatus,
    FundingRate,
    IndexComponent,
    IndexPrice,
    Instrument,
    MarkPrice,
    Nbbo,
    OrderBook,
    PriceLevel,
    Ticker,
    Trade,
    VenueSize,
    VenueSymbol,
)

__all__ = [
    "ALERT_CONDITIONS",
    "ALERT_SOURCES",
    "DEFAULT_TARGET",
    "INTERVALS",
    "Alert",
    "Candle",
    "ConsolidatedBook",
    "ConsolidatedLevel",
    "DeadLetter",
    "DecimalLike",
    "ExcludedVenue",
    "FeedStatus",
    "FundingRate",
    "IndexComponent",
    "IndexPrice",
    "Instrument",
    "MarkPrice",
    "MarketDataClient",
    "MdsError",
    "Nbbo",
    "OrderBook",
    "PriceLevel",
    "Ticker",
    "Trade",
    "VenueSize",
    "VenueSymbol",
    "from_decimal_pb",
    "from_fixed",
    "from_rpc_error",
    "interval_from_pb",
    "interval_to_pb",
    "to_decimal_pb",
    "to_fixed",
]
