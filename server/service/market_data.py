"""MarketDataService and AlertService: the unary snapshot RPCs and alert CRUD, served from the engine.

Bad requests end with INVALID_ARGUMENT and a message that says what was wrong; unknown symbols or
venues with NOT_FOUND. Candles beyond what memory holds come from storage when one is configured.
ListDeadLetters reads storage (what a restart kept) merged with the recorder's memory (letters not
written yet), or memory alone without storage.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, Protocol, runtime_checkable

import grpc
from marketdata.v1 import alert_service_pb2, market_data_service_pb2

from feeds.protocols import FeedStatus
from server.engine.alerts import AlertSource
from server.engine.candles import Candle
from server.engine.engine import Engine
from server.engine.events import AssetClass
from server.engine.instruments import Instrument
from server.service import convert
from server.storage.dead_letters import DeadLetterRecord, DeadLetterRecorder

pb = market_data_service_pb2
apb = alert_service_pb2
Ctx = grpc.aio.ServicerContext[Any, Any]
_FOREVER = 2**63 - 1
DEFAULT_DEPTH = 20
DEFAULT_TRADES = 100
MAX_TRADES = 10_000
MAX_CANDLES = 10_000
DEFAULT_DEAD_LETTERS = 100
MAX_DEAD_LETTERS = 10_000
_MAX_CACHED_BOOKS = 4096
"""Encoded GetOrderBook responses kept (one per venue, symbol and depth asked for); cleared when full."""


class CandleStore(Protocol):
    """The part of storage GetCandles needs (blocking; called off the event loop)."""

    def candles(self, venue: str, symbol: str, interval: Any, start_ns: int, end_ns: int,
                limit: int | None = None, *, latest: bool = False) -> list[Candle]: ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """The part of storage ListDeadLetters needs (blocking; called off the event loop)."""

    def dead_letters(self, feed: str = "", start_ns: int = 0, end_ns: int = 2**63 - 1, limit: int = 100,
                     code: str = "") -> list[DeadLetterRecord]: ...


async def _invalid(context: Ctx, message: str) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    raise AssertionError("unreachable")


async def _not_found(context: Ctx, message: str) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, message)
    raise AssertionError("unreachable")


class MarketData:
    """Unary snapshot RPCs of MarketDataService (streams live in ``streams``; ``streams.register`` wires both)."""

    def __init__(self, engine: Engine, *, max_depth: int = 1000, store: CandleStore | None = None,
                 feeds: Sequence[object] = (), dead_letters: DeadLetterRecorder | None = None) -> None:
        self.engine = engine
        self.max_depth = max_depth
        self.store = store
        self.feeds = feeds
        """The running feeds; those with ``status()`` (feeds.protocols.ReportsStatus) answer GetFeedStatus."""
        self.dead_letters = dead_letters
        """The runtime's dead-letter recorder (``Runtime.dead_letters``); None: ListDeadLetters from storage only."""
        self._book_responses: dict[tuple[str, str, int], tuple[tuple[int, int, int, object, int], bytes]] = {}

    # -- validation helpers ---------------------------------------------------------------------

    async def _symbol(self, symbol: str, context: Ctx) -> str:
        if not symbol:
            await _invalid(context, "symbol is required")
        if symbol not in self.engine.instruments and not self.engine.venues(symbol) \
                and not self.engine.recent_trades(symbol, 1):
            await _not_found(context, f"unknown symbol {symbol!r}; ListInstruments lists the symbols")
        return symbol

    async def _depth(self, depth: int, context: Ctx) -> int:
        if depth == 0:
            return DEFAULT_DEPTH
        if depth > self.max_depth:
            await _invalid(context, f"depth {depth} is out of range: 1..{self.max_depth}")
        return depth

    async def _venue(self, symbol: str, venue: str, context: Ctx, *, required: bool = False) -> str:
        venues = self.engine.venues(symbol) or sorted(
            {t.venue for t in self.engine.recent_trades(symbol, 1000)})
        if venue:
            if venue not in venues:
                await _not_found(context,
                                 f"venue {venue!r} has no data for {symbol}; venues: {', '.join(venues)}")
            return venue
        if required:
            if len(venues) == 1:
                return venues[0]
            await _invalid(context, f"venue is required for {symbol}: one of {', '.join(venues)}")
        return ""

    # -- RPCs -----------------------------------------------------------------------------------

    async def ListInstruments(self, request: pb.ListInstrumentsRequest,
                              context: Ctx) -> pb.ListInstrumentsResponse:
        resp = pb.ListInstrumentsResponse()
        registry = self.engine.instruments
        # Symbols seen in the data but without reference data (e.g. a file replay) are listed too.
        seen = [Instrument(symbol=s, asset_class=AssetClass.UNSPECIFIED,
                           venue_symbols=tuple((v, s) for v in self.engine.venues(s)))
                for s in self.engine.symbols() if s not in registry]
        for inst in [*registry.all(), *seen]:
            if request.asset_class and convert.asset_class_pb(inst.asset_class) != request.asset_class:
                continue
            if request.venue and request.venue not in dict(inst.venue_symbols) \
                    and request.venue not in self.engine.venues(inst.symbol):
                continue
            resp.instruments.append(convert.instrument_pb(inst))
        return resp

    async def GetOrderBook(self, request: pb.GetOrderBookRequest, context: Ctx) -> pb.GetOrderBookResponse | bytes:
        """A venue book is returned serialized (its response serializer passes bytes through)."""
        symbol = await self._symbol(request.symbol, context)
        depth = await self._depth(request.depth, context)
        venue = await self._venue(symbol, request.venue, context)
        resp = pb.GetOrderBookResponse()
        if venue:
            book = self.engine.book(venue, symbol)
            if book is None:
                await _not_found(context, f"no book for {symbol} on {venue}")
            # Encoded once per book state and depth: callers polling a book between its updates share it.
            stamp = (id(book), book.version, book.seq, book.status, book.last_ts_recv)
            key = (venue, symbol, depth)
            hit = self._book_responses.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            convert.fill_book_snapshot(resp.venue_book, book, depth, book.version)
            data = resp.SerializeToString()
            if len(self._book_responses) >= _MAX_CACHED_BOOKS:
                self._book_responses.clear()
            self._book_responses[key] = (stamp, data)
            return data
        else:
            resp.consolidated_book.CopyFrom(
                convert.consolidated_book_pb(self.engine.consolidated_book(symbol, depth)))
        return resp

    async def GetConsolidatedBook(self, request: pb.GetConsolidatedBookRequest,
                                  context: Ctx) -> pb.GetConsolidatedBookResponse:
        symbol = await self._symbol(request.symbol, context)
        depth = await self._depth(request.depth, context)
        book = self.engine.consolidated_book(symbol, depth)
        return pb.GetConsolidatedBookResponse(book=convert.consolidated_book_pb(book))

    async def GetDepthHeatmap(self, request: pb.GetDepthHeatmapRequest,
                              context: Ctx) -> pb.GetDepthHeatmapResponse:
        symbol = await self._symbol(request.symbol, context)
        if request.bucket_size <= 0:
            await _invalid(context, "bucket_size must be > 0 (a price step at scale 1e-9)")
        count = request.bucket_count or 50
        if count > self.max_depth:
            await _invalid(context, f"bucket_count {count} is out of range: 1..{self.max_depth}")
        if request.venue:
            await _invalid(context, "per-venue heatmaps are not served; leave venue empty (consolidated)")
        heat = self.engine.depth_heatmap(symbol, request.bucket_size, count)
        return pb.GetDepthHeatmapResponse(heatmap=convert.depth_heatmap_pb(heat))

    async def GetNbbo(self, request: pb.GetNbboRequest, context: Ctx) -> pb.GetNbboResponse:
        symbol = await self._symbol(request.symbol, context)
        nbbo = self.engine.nbbo(symbol)
        if nbbo is None:
            await _not_found(context, f"no NBBO for {symbol} yet")
        return pb.GetNbboResponse(nbbo=convert.nbbo_pb(nbbo))

    async def GetRecentTrades(self, request: pb.GetRecentTradesRequest, context: Ctx) -> pb.GetRecentTradesResponse:
        symbol = await self._symbol(request.symbol, context)
        limit = request.limit or DEFAULT_TRADES
        if limit > MAX_TRADES:
            await _invalid(context, f"limit {limit} is out of range: 1..{MAX_TRADES}")
        venue = await self._venue(symbol, request.venue, context)
        resp = pb.GetRecentTradesResponse()
        for trade in reversed(self.engine.recent_trades(symbol, limit, venue)):  # newest first
            resp.trades.append(convert.trade_pb(trade))
        return resp

    async def GetTicker(self, request: pb.GetTickerRequest, context: Ctx) -> pb.GetTickerResponse:
        symbol = await self._symbol(request.symbol, context)
        venue = await self._venue(symbol, request.venue, context, required=True)
        ticker = self.engine.ticker(venue, symbol)
        if ticker is None:
            await _not_found(context, f"no trades for {symbol} on {venue} in the last 24h")
        return pb.GetTickerResponse(ticker=convert.ticker_pb(ticker))

    async def GetCandles(self, request: pb.GetCandlesRequest, context: Ctx) -> pb.GetCandlesResponse:
        symbol = await self._symbol(request.symbol, context)
        try:
            interval = convert.interval_from_pb(request.interval)
        except ValueError as exc:
            await _invalid(context, str(exc))
        start = request.start_ns or None
        end = request.end_ns or None
        if start is not None and end is not None and start > end:
            await _invalid(context, f"start_ns {start} is after end_ns {end}")
        limit = request.limit or 1000
        if limit > MAX_CANDLES:
            await _invalid(context, f"limit {limit} is out of range: 1..{MAX_CANDLES}")
        venue = await self._venue(symbol, request.venue, context, required=True)
        candles = self.engine.candles(venue, symbol, interval, start, end, limit)
        oldest_in_memory = candles[0].open_time if candles else None
        if self.store is not None and (start is None or oldest_in_memory is None or start < oldest_in_memory) \
                and len(candles) < limit:
            stored_end = oldest_in_memory if oldest_in_memory is not None else end
            older = await asyncio.to_thread(
                functools.partial(self.store.candles, venue, symbol, interval, start or 0,
                                  stored_end if stored_end is not None else _FOREVER, limit - len(candles),
                                  latest=start is None))
            candles = [c for c in older if oldest_in_memory is None or c.open_time < oldest_in_memory] + candles
        resp = pb.GetCandlesResponse()
        for candle in candles[-limit:]:
            resp.candles.append(convert.candle_pb(candle))
        return resp

    async def GetIndexPrice(self, request: pb.GetIndexPriceRequest, context: Ctx) -> pb.GetIndexPriceResponse:
        if not request.symbol:
            await _invalid(context, "symbol is required")
        price = self.engine.index_price(request.symbol)
        if price is None:
            await _not_found(context, f"no index price for {request.symbol!r}")
        return pb.GetIndexPriceResponse(index_price=convert.index_price_pb(price))

    async def GetMarkPrice(self, request: pb.GetMarkPriceRequest, context: Ctx) -> pb.GetMarkPriceResponse:
        if not request.symbol:
            await _invalid(context, "symbol is required")
        price = self.engine.mark_price(request.symbol)
        if price is None:
            await _not_found(context, f"no mark price for {request.symbol!r}")
        return pb.GetMarkPriceResponse(mark_price=convert.mark_price_pb(price))

    async def GetFundingRate(self, request: pb.GetFundingRateRequest, context: Ctx) -> pb.GetFundingRateResponse:
        if not request.symbol:
            await _invalid(context, "symbol is required")
        rate = self.engine.funding_rate(request.symbol)
        if rate is None:
            await _not_found(context, f"no funding rate for {request.symbol!r}")
        return pb.GetFundingRateResponse(funding_rate=convert.funding_rate_pb(rate))

    async def GetFeedStatus(self, request: pb.GetFeedStatusRequest, context: Ctx) -> pb.GetFeedStatusResponse:
        return pb.GetFeedStatusResponse(feeds=[convert.feed_status_pb(s) for s in feed_statuses(self.feeds)])

    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                              context: Ctx) -> pb.ListDeadLettersResponse:
        if request.start_ns < 0 or request.end_ns < 0:
            await _invalid(context, f"start_ns {request.start_ns} and end_ns {request.end_ns} must be >= 0 "
                                    "(ns since the Unix epoch; 0: no bound)")
        start = request.start_ns
        end = request.end_ns or _FOREVER
        if start > end:
            await _invalid(context, f"start_ns {start} is after end_ns {end}")
        limit = request.limit or DEFAULT_DEAD_LETTERS
        if limit > MAX_DEAD_LETTERS:
            await _invalid(context, f"limit {limit} is out of range: 1..{MAX_DEAD_LETTERS} (0: {DEFAULT_DEAD_LETTERS})")
        feed, code = request.feed, request.reason_code
        found: dict[tuple[str, int, int], DeadLetterRecord] = {}
        store = self.store
        if isinstance(store, DeadLetterStore):
            stored = await asyncio.to_thread(store.dead_letters, feed, start, end, limit + 1, code)
            found.update(((r.feed, r.ts_recv, r.seq), r) for r in stored)
        if self.dead_letters is not None:  # letters not written yet (or no storage)
            kept = self.dead_letters.recent(feed, start, end, limit + 1, code)
            found.update(((r.feed, r.ts_recv, r.seq), r) for r in kept)
        newest = sorted(found.values(), key=lambda r: (r.ts_recv, r.feed, r.seq), reverse=True)
        resp = pb.ListDeadLettersResponse(more=len(newest) > limit)
        resp.dead_letters.extend(convert.dead_letter_pb(r) for r in newest[:limit])
        return resp


def feed_statuses(feeds: Iterable[object]) -> list[FeedStatus]:
    """The status of every feed that reports one (all of this repository's feeds do)."""
    out: list[FeedStatus] = []
    for feed in feeds:
        status = getattr(feed, "status", None)
        if callable(status):
            out.append(status())
    return out


class Alerts:
    """Alert CRUD on the engine's alert book (triggers stream through the fan-out layer)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def CreateAlert(self, request: apb.CreateAlertRequest, context: Ctx) -> apb.CreateAlertResponse:
        if not request.symbol:
            await _invalid(context, "symbol is required")
        try:
            alert = convert.alert_from_create_request(request, uuid.uuid4().hex, time.time_ns())
            if alert.source == AlertSource.MARK and alert.symbol not in {m.symbol for m in self.engine.config.marks}:
                raise ValueError(f"{alert.symbol} has no mark price: MARK alerts are for perpetuals")
            self.engine.add_alert(alert)
        except (ValueError, TypeError) as exc:
            await _invalid(context, str(exc))
        return apb.CreateAlertResponse(alert=convert.alert_pb(alert))

    async def GetAlert(self, request: apb.GetAlertRequest, context: Ctx) -> apb.GetAlertResponse:
        alert = self.engine.alerts.get(request.alert_id)
        if alert is None:
            await _not_found(context, f"no live alert {request.alert_id!r} (it may have fired)")
        return apb.GetAlertResponse(alert=convert.alert_pb(alert))

    async def ListAlerts(self, request: apb.ListAlertsRequest, context: Ctx) -> apb.ListAlertsResponse:
        resp = apb.ListAlertsResponse()
        for alert in self.engine.alerts.list(request.symbol or None):
            resp.alerts.append(convert.alert_pb(alert))
        return resp

    async def DeleteAlert(self, request: apb.DeleteAlertRequest, context: Ctx) -> apb.DeleteAlertResponse:
        alert = self.engine.alerts.get(request.alert_id)
        if alert is None or not self.engine.remove_alert(request.alert_id):
            await _not_found(context, f"no live alert {request.alert_id!r}")
        return apb.DeleteAlertResponse(alert=convert.alert_pb(alert))
