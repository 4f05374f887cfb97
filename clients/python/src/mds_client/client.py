"""``MarketDataClient``: a typed asyncio facade over the generated marketdata.v1 gRPC stubs.

It covers the unary calls of MarketDataService and AlertService plus grpc.health.v1, converts every
response into the frozen dataclasses of :mod:`mds_client.models` (exact Decimals, string enums) and
raises :class:`mds_client.MdsError` instead of gRPC errors. Streams are not wrapped: use the raw
async stubs :attr:`MarketDataClient.stub` and :attr:`MarketDataClient.alerts_stub`.

    async with MarketDataClient("127.0.0.1:50051") as client:
        nbbo = await client.nbbo("BTC/USD")
        print(nbbo.bid_price, nbbo.ask_price)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketdata.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    instrument_pb2,
    market_data_service_pb2,
    market_data_service_pb2_grpc,
)

from mds_client.enums import condition_to_pb, interval_to_pb, source_to_pb
from mds_client.errors import from_rpc_error
from mds_client.fixed import DecimalLike, to_fixed
from mds_client.models import (
    Alert,
    Candle,
    ConsolidatedBook,
    DeadLetter,
    FeedStatus,
    FundingRate,
    IndexPrice,
    Instrument,
    MarkPrice,
    Nbbo,
    OrderBook,
    Ticker,
    Trade,
)

__all__ = ["DEFAULT_TARGET", "MarketDataClient"]

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where ``mds serve`` listens by default."""

_R = TypeVar("_R")
_md = market_data_service_pb2
_alerts = alert_service_pb2
_ASSET_CLASSES = {"": instrument_pb2.ASSET_CLASS_UNSPECIFIED} | {
    name.removeprefix("ASSET_CLASS_").lower(): instrument_pb2.AssetClass.Value(name)
    for name in instrument_pb2.AssetClass.keys()  # noqa: SIM118 - an EnumTypeWrapper, not a dict
    if name != "ASSET_CLASS_UNSPECIFIED"
}


class MarketDataClient:
    """Async client of one mds service over an insecure ``grpc.aio`` channel.

    Use it as an async context manager (or call :meth:`connect` and :meth:`close`): the channel
    is created on entry, inside the running event loop, and closed on exit.

    ``channel_options`` are passed to ``grpc.aio.insecure_channel`` (e.g.
    ``[("grpc.max_receive_message_length", 64 << 20)]``); ``timeout`` (seconds) is the deadline of
    every unary call, None for none.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, channel_options: Sequence[tuple[str, Any]] | None = None,
                 timeout: float | None = None) -> None:
        self.target = target
        self.channel_options: tuple[tuple[str, Any], ...] = tuple(channel_options or ())
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: market_data_service_pb2_grpc.MarketDataServiceAsyncStub | None = None
        self._alerts_stub: alert_service_pb2_grpc.AlertServiceAsyncStub | None = None
        self._health_stub: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> Self:
        """Open the channel and the stubs (idempotent). Does not wait for the server; see :meth:`wait_ready`."""
        if self._channel is None:
            channel = grpc.aio.insecure_channel(self.target, options=list(self.channel_options))
            self._channel = channel
            # The *AsyncStub classes exist only in the type stubs: the runtime stub classes, given an
            # aio channel, are typed (by overload) as them.
            self._stub = market_data_service_pb2_grpc.MarketDataServiceStub(channel)
            self._alerts_stub = alert_service_pb2_grpc.AlertServiceStub(channel)
            self._health_stub = health_pb2_grpc.HealthStub(channel)
        return self

    async def close(self) -> None:
        """Close the channel (idempotent); calls still in flight are cancelled."""
        channel, self._channel = self._channel, None
        self._stub = self._alerts_stub = self._health_stub = None
        if channel is not None:
            await channel.close(None)

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the channel is connected; ``TimeoutError`` after ``timeout`` seconds."""
        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying ``grpc.aio`` channel."""
        if self._channel is None:
            raise RuntimeError("MarketDataClient is not connected: use 'async with MarketDataClient(...)'")
        return self._channel

    @property
    def stub(self) -> market_data_service_pb2_grpc.MarketDataServiceAsyncStub:
        """The raw async MarketDataService stub (for the streaming RPCs)."""
        if self._stub is None:
            raise RuntimeError("MarketDataClient is not connected: use 'async with MarketDataClient(...)'")
        return self._stub

    @property
    def alerts_stub(self) -> alert_service_pb2_grpc.AlertServiceAsyncStub:
        """The raw async AlertService stub (for StreamAlertTriggers)."""
        if self._alerts_stub is None:
            raise RuntimeError("MarketDataClient is not connected: use 'async with MarketDataClient(...)'")
        return self._alerts_stub

    async def _call(self, call: Awaitable[_R]) -> _R:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err

    # -- MarketDataService -----------------------------------------------------------------------

    async def list_instruments(self, *, asset_class: str = "", venue: str = "") -> list[Instrument]:
        """The instruments the service knows, ordered by symbol.

        ``asset_class`` filters by class name (``"crypto"``, ``"perpetual"``, ``"equity"`` ...;
        ValueError for an unknown one); ``venue`` to the instruments that venue lists.
        """
        try:
            cls = _ASSET_CLASSES[asset_class]
        except KeyError:
            raise ValueError(f"unknown asset class {asset_class!r}; valid: {', '.join(map(repr, _ASSET_CLASSES))}") \
                from None
        request = _md.ListInstrumentsRequest(asset_class=cls, venue=venue)
        response = await self._call(self.stub.ListInstruments(request, timeout=self.timeout))
        return [Instrument.from_pb(msg) for msg in response.instruments]

    async def order_book(self, symbol: str, venue: str = "", depth: int = 20) -> OrderBook | ConsolidatedBook:
        """The current book: a venue's :class:`OrderBook`, or the :class:`ConsolidatedBook` when ``venue`` is empty.

        ``depth`` levels per side; 0 for the service's default (its full-book limit).
        """
        request = _md.GetOrderBookRequest(symbol=symbol, venue=venue, depth=depth)
        response = await self._call(self.stub.GetOrderBook(request, timeout=self.timeout))
        if response.WhichOneof("book") == "venue_book":
            return OrderBook.from_pb(response.venue_book)
        return ConsolidatedBook.from_pb(response.consolidated_book)

    async def nbbo(self, symbol: str) -> Nbbo:
        """The current cross-venue best bid and offer of ``symbol``."""
        response = await self._call(self.stub.GetNbbo(_md.GetNbboRequest(symbol=symbol), timeout=self.timeout))
        return Nbbo.from_pb(response.nbbo)

    async def recent_trades(self, symbol: str, venue: str = "", limit: int = 100) -> list[Trade]:
        """The most recent trades, newest first; all venues when ``venue`` is empty (capped by the service)."""
        request = _md.GetRecentTradesRequest(symbol=symbol, venue=venue, limit=limit)
        response = await self._call(self.stub.GetRecentTrades(request, timeout=self.timeout))
        return [Trade.from_pb(msg) for msg in response.trades]

    async def ticker(self, symbol: str, venue: str) -> Ticker:
        """The current 24-hour rolling ticker of ``symbol`` on ``venue``."""
        request = _md.GetTickerRequest(symbol=symbol, venue=venue)
        response = await self._call(self.stub.GetTicker(request, timeout=self.timeout))
        return Ticker.from_pb(response.ticker)

    async def candles(self, symbol: str, venue: str, interval: str, start_ns: int = 0, end_ns: int = 0,
                      limit: int = 0) -> list[Candle]:
        """Candles of ``interval`` (``"1s"``, ``"1m"`` ... ``"1M"``) with ``start_ns <= open_time_ns < end_ns``.

        Oldest first; the last may still be open. 0 means no lower bound / now / the service's
        default limit. ValueError (before any call) for an unknown interval string.
        """
        request = _md.GetCandlesRequest(symbol=symbol, venue=venue, interval=interval_to_pb(interval),
                                        start_ns=start_ns, end_ns=end_ns, limit=limit)
        response = await self._call(self.stub.GetCandles(request, timeout=self.timeout))
        return [Candle.from_pb(msg) for msg in response.candles]

    async def index_price(self, symbol: str) -> IndexPrice:
        """The current value of index ``symbol`` (e.g. ``"BTC/USD.INDEX"``) with its components."""
        request = _md.GetIndexPriceRequest(symbol=symbol)
        response = await self._call(self.stub.GetIndexPrice(request, timeout=self.timeout))
        return IndexPrice.from_pb(response.index_price)

    async def mark_price(self, symbol: str) -> MarkPrice:
        """The current mark price of perpetual ``symbol``."""
        request = _md.GetMarkPriceRequest(symbol=symbol)
        response = await self._call(self.stub.GetMarkPrice(request, timeout=self.timeout))
        return MarkPrice.from_pb(response.mark_price)

    async def funding_rate(self, symbol: str) -> FundingRate:
        """The current (predicted) funding rate of perpetual ``symbol``."""
        request = _md.GetFundingRateRequest(symbol=symbol)
        response = await self._call(self.stub.GetFundingRate(request, timeout=self.timeout))
        return FundingRate.from_pb(response.funding_rate)

    async def feed_status(self) -> list[FeedStatus]:
        """The health of every feed the service reads from, in the order it was started with."""
        response = await self._call(self.stub.GetFeedStatus(_md.GetFeedStatusRequest(), timeout=self.timeout))
        return [FeedStatus.from_pb(msg) for msg in response.feeds]

    async def dead_letters(self, feed: str = "", start_ns: int = 0, end_ns: int = 0, limit: int = 0,
                           reason_code: str = "") -> list[DeadLetter]:
        """The dead letters the service recorded (inputs its feeds could not parse), newest first.

        Filters: ``feed`` (a feed name, as :meth:`feed_status` reports it), ``reason_code``, and
        ``start_ns <= recorded_ns < end_ns``; ``""`` / 0 mean no filter / no bound; ``limit`` 0 means the
        service's default (100), at most 10,000. The letters survive a restart when the service has storage.
        """
        request = _md.ListDeadLettersRequest(feed=feed, start_ns=start_ns, end_ns=end_ns, limit=limit,
                                             reason_code=reason_code)
        response = await self._call(self.stub.ListDeadLetters(request, timeout=self.timeout))
        return [DeadLetter.from_pb(msg) for msg in response.dead_letters]

    # -- AlertService ----------------------------------------------------------------------------

    async def create_alert(self, symbol: str, condition: str, threshold: DecimalLike, source: str = "last_trade",
                           *, venue: str = "") -> Alert:
        """Create an alert that fires once.

        ``condition``: ``"price_above"``, ``"price_below"``, ``"change_pct_above"`` or
        ``"change_pct_below"``; ``source``: ``"last_trade"``, ``"nbbo_mid"`` or ``"mark"``;
        ``threshold``: a price, or percent points for ``change_pct_*`` (exact: at most 9 decimal
        places). ValueError (before any call) for an unknown name or an unrepresentable threshold.
        """
        request = _alerts.CreateAlertRequest(symbol=symbol, venue=venue, condition=condition_to_pb(condition),
                                             source=source_to_pb(source), threshold=to_fixed(threshold))
        response = await self._call(self.alerts_stub.CreateAlert(request, timeout=self.timeout))
        return Alert.from_pb(response.alert)

    async def get_alert(self, alert_id: str) -> Alert:
        """One alert by id (MdsError NOT_FOUND for an unknown id)."""
        request = _alerts.GetAlertRequest(alert_id=alert_id)
        response = await self._call(self.alerts_stub.GetAlert(request, timeout=self.timeout))
        return Alert.from_pb(response.alert)

    async def list_alerts(self, symbol: str = "", *, include_triggered: bool = False) -> list[Alert]:
        """Alerts on ``symbol`` (all symbols when empty), oldest first; fired ones only with ``include_triggered``."""
        request = _alerts.ListAlertsRequest(symbol=symbol, include_triggered=include_triggered)
        response = await self._call(self.alerts_stub.ListAlerts(request, timeout=self.timeout))
        return [Alert.from_pb(msg) for msg in response.alerts]

    async def delete_alert(self, alert_id: str) -> Alert | None:
        """Delete an alert; MdsError NOT_FOUND for an unknown id.

        Returns the alert as it was when deleted, or None when the service's response does not carry
        it (the current service answers with an empty DeleteAlertResponse).
        """
        request = _alerts.DeleteAlertRequest(alert_id=alert_id)
        response = await self._call(self.alerts_stub.DeleteAlert(request, timeout=self.timeout))
        return Alert.from_pb(response.alert) if response.HasField("alert") else None

    # -- grpc.health.v1 --------------------------------------------------------------------------

    async def health(self, service: str = "") -> str:
        """The grpc.health.v1 status name of ``service`` (the whole server when empty).

        ``"SERVING"`` once the service's feeds are warm, ``"NOT_SERVING"`` before that and while it
        shuts down; MdsError NOT_FOUND for a service name the server does not register.
        """
        if self._health_stub is None:
            raise RuntimeError("MarketDataClient is not connected: use 'async with MarketDataClient(...)'")
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(self._health_stub.Check(request, timeout=self.timeout))
        status: int = response.status
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
