"""The server-streaming RPCs of MarketDataService and AlertService, served from the fan-out hub.

Each stream validates its request (INVALID_ARGUMENT / NOT_FOUND with a message), subscribes its topics,
sends what a new subscriber needs first (book snapshots, the latest NBBO, pricing), then yields batch
responses built from shared, pre-encoded bytes. The stream methods are registered with an identity
response serializer (``service_handlers``) so those bytes go to the wire as they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from marketdata.v1 import alert_service_pb2, market_data_service_pb2

from server.engine.engine import Engine
from server.service import convert, replay
from server.service.fanout import (
    FUNDING,
    INDEX,
    MARK,
    NBBO,
    Encoded,
    Hub,
    HubClosedError,
    Subscriber,
    SubscriberOverflowError,
    Topic,
)
from server.service.market_data import Alerts, MarketData

pb = market_data_service_pb2
Ctx = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimits:
    """Per-stream limits (documented in the README's configuration section)."""

    max_symbols: int = 1000
    max_pending: int = 20_000
    max_items_per_message: int = 4000
    book_snapshot_every_s: float = 30.0


async def _abort(context: Ctx, code: grpc.StatusCode, message: str) -> None:
    await context.abort(code, message)


class Streams:
    """Stream handlers over one hub; ``run_polling`` publishes tickers and in-progress candles."""

    def __init__(self, engine: Engine, hub: Hub, *, max_depth: int = 1000, poll_interval_s: float = 1.0,
                 store: replay.ReplaySource | None = None, max_replay_range_ns: int = 31 * 24 * 3600 * 10**9,
                 limits: StreamLimits | None = None) -> None:
        self.engine = engine
        self.hub = hub
        self.store = store
        self.max_replay_range_ns = max_replay_range_ns
        self.max_depth = max_depth
        self.poll_interval_s = poll_interval_s
        self.limits = limits or StreamLimits()

    async def run_polling(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            for _ in self.hub.publish_polled_steps():
                await asyncio.sleep(0)  # a whole round takes milliseconds: let ticks and sends in between

    def _known(self, symbol: str) -> bool:
        return symbol in self.engine.instruments or bool(self.engine.venues(symbol))

    async def _symbols(self, symbols: Iterable[str], context: Ctx, *, check: bool = True) -> list[str]:
        found = list(dict.fromkeys(symbols))
        if not found:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "at least one symbol is required")
        if len(found) > self.limits.max_symbols:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"{len(found)} symbols exceed the limit of {self.limits.max_symbols} per stream")
        if check:
            unknown = [s for s in found if not self._known(s)]
            if unknown:
                await _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown symbol(s): {', '.join(unknown)}")
        return found

    async def _stream(self, topics: list[Topic], first: list[Encoded], context: Ctx,
                      book_resync: Callable[[Hashable], Encoded | None] | None = None,
                      refresh: Callable[[], list[Encoded]] | None = None) -> AsyncIterator[bytes]:
        sub = Subscriber(max_pending=self.limits.max_pending,
                         max_items_per_message=self.limits.max_items_per_message, book_resync=book_resync)
        self.hub.subscribe(sub, topics)
        next_refresh = time.monotonic() + self.limits.book_snapshot_every_s
        try:
            if first:
                sub.sequence += 1
                yield convert.batch_from_items(sub.sequence, [sub.frame(e) for e in first])
            while True:
                if refresh is not None and time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + self.limits.book_snapshot_every_s
                    items = refresh()
                    if items:
                        sub.sequence += 1
                        yield convert.batch_from_items(sub.sequence, [sub.frame(e) for e in items])
                try:
                    if refresh is None:
                        message = await sub.next_message()
                    else:
                        message = await asyncio.wait_for(sub.next_message(),
                                                         max(0.0, next_refresh - time.monotonic()))
                except TimeoutError:
                    continue
                yield message
        except SubscriberOverflowError as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except HubClosedError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            self.hub.unsubscribe(sub)

    # -- MarketDataService streams --------------------------------------------------------------

    async def StreamOrderBook(self, request: pb.StreamOrderBookRequest, context: Ctx) -> AsyncIterator[bytes]:
        (symbol,) = await self._symbols([request.symbol], context)
        depth = request.depth or 20
        if depth > self.max_depth:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"depth {depth} is out of range: 1..{self.max_depth}")
        venues = [request.venue] if request.venue else self.engine.venues(symbol)
        if request.venue and request.venue not in self.engine.venues(symbol):
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"venue {request.venue!r} has no book for {symbol}")

        def snapshot(key: Hashable) -> Encoded | None:
            venue, sym = cast(tuple[str, str], key)
            return self.hub.book_snapshot_item(venue, sym, depth)

        def all_snapshots() -> list[Encoded]:
            return [s for s in (snapshot((v, symbol)) for v in venues) if s is not None]

        async for message in self._stream([("book", v, symbol) for v in venues], all_snapshots(), context,
                                          book_resync=snapshot, refresh=all_snapshots):
            yield message

    async def StreamTrades(self, request: pb.StreamTradesRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)
        venues = list(request.venues) or [""]
        async for message in self._stream([("trades", s, v) for s in symbols for v in venues], [], context):
            yield message

    async def StreamNbbo(self, request: pb.StreamNbboRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)
        first = [Encoded(convert.nbbo_pb(n).SerializeToString(), NBBO)
                 for n in (self.engine.nbbo(s) for s in symbols) if n is not None]
        async for message in self._stream([("nbbo", s) for s in symbols], first, context):
            yield message

    async def StreamCandles(self, request: pb.StreamCandlesRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)
        try:
            interval = convert.interval_from_pb(request.interval)
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        if not request.venue:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "venue is required for candles")
        topics: list[Topic] = [("candles", request.venue, s, str(int(interval))) for s in symbols]
        async for message in self._stream(topics, [], context):
            yield message

    async def StreamTicker(self, request: pb.StreamTickerRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)
        if not request.venue:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "venue is required for tickers")
        async for message in self._stream([("ticker", request.venue, s) for s in symbols], [], context):
            yield message

    async def _pricing_stream(self, kind: str, symbols: list[str], context: Ctx,
                              latest: Callable[[str], Encoded | None]) -> AsyncIterator[bytes]:
        first = [item for item in (latest(s) for s in symbols) if item is not None]
        async for message in self._stream([(kind, s) for s in symbols], first, context):
            yield message

    async def StreamIndexPrice(self, request: pb.StreamIndexPriceRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context, check=False)

        def latest(s: str) -> Encoded | None:
            p = self.engine.index_price(s)
            return Encoded(convert.index_price_pb(p).SerializeToString(), INDEX) if p else None

        async for message in self._pricing_stream("index", symbols, context, latest):
            yield message

    async def StreamMarkPrice(self, request: pb.StreamMarkPriceRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)

        def latest(s: str) -> Encoded | None:
            p = self.engine.mark_price(s)
            return Encoded(convert.mark_price_pb(p).SerializeToString(), MARK) if p else None

        async for message in self._pricing_stream("mark", symbols, context, latest):
            yield message

    async def StreamFundingRate(self, request: pb.StreamFundingRateRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)

        def latest(s: str) -> Encoded | None:
            r = self.engine.funding_rate(s)
            return Encoded(convert.funding_rate_pb(r).SerializeToString(), FUNDING) if r else None

        async for message in self._pricing_stream("funding", symbols, context, latest):
            yield message

    async def Subscribe(self, requests: AsyncIterator[pb.SubscribeRequest], context: Ctx) -> AsyncIterator[bytes]:
        """One stream, many (channel, symbol) items: a status per item, pongs, and batches of updates."""
        sub = Subscriber(max_pending=self.limits.max_pending, max_items_per_message=self.limits.max_items_per_message,
                         multiplexed=True)
        sub.book_resync = lambda key: self.hub.book_snapshot_item(*cast(tuple[str, str], key), 20)
        mux = _Multiplexed(self, sub)

        async def read() -> None:
            async for request in requests:
                mux.handle(request)

        reader = asyncio.create_task(read())
        try:
            while True:
                if reader.done() and reader.exception() is not None:
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {reader.exception()}")
                yield await sub.next_message()
        except SubscriberOverflowError as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except HubClosedError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            reader.cancel()
            self.hub.unsubscribe(sub)

    async def ReplayStream(self, request: pb.ReplayStreamRequest, context: Ctx) -> AsyncIterator[bytes]:
        """History from storage in event-time order, as the same messages as live; bounded memory."""
        try:
            plan = replay.validate_replay(request, max_range_ns=self.max_replay_range_ns,
                                          known_symbols=_KnownSymbols(self.engine))
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        except replay.ReplayNotFoundError as exc:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
            return
        if self.store is None:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "replay needs storage, and this server has none")
            return
        async for data in replay.replay_responses(self.store, plan):
            yield data

    async def StreamAlertTriggers(self, request: Any, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context, check=False)
        async for message in self._stream([("alerts", s) for s in symbols], [], context):
            yield message

    async def StreamQuality(self, request: pb.StreamQualityRequest, context: Ctx) -> AsyncIterator[bytes]:
        symbols = await self._symbols(request.symbols, context)
        venues = list(request.venues) or [""]
        async for message in self._stream([("quality", s, v) for s in symbols for v in venues], [], context):
            yield message


class _KnownSymbols:
    """Symbols a replay may ask for: instruments, symbols with books or trades, and configured indices."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.indices = {c.symbol for c in engine.config.indices}

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and (
            symbol in self.engine.instruments or symbol in self.indices or bool(self.engine.venues(symbol))
            or bool(self.engine.recent_trades(symbol, 1)))


class _Multiplexed:
    """State of one Subscribe stream: its items, their topics, and the status replies."""

    def __init__(self, streams: Streams, sub: Subscriber) -> None:
        self.streams = streams
        self.sub = sub
        self.items: dict[bytes, list[Topic] | None] = {}

    def _status(self, item: pb.SubscriptionItem, status: pb.SubscriptionStatus.ValueType, message: str = "") -> None:
        reply = pb.SubscribeResponse(status=pb.SubscriptionStatusUpdate(item=item, status=status, message=message))
        self.sub.control.append(reply.SerializeToString())
        self.sub.wake.set()

    def _bad_depth(self, depth: int) -> str:
        return f"depth {depth} is out of range: 1..{self.streams.max_depth}"

    def topics_for(
        self, item: pb.SubscriptionItem
    ) -> tuple[list[Topic], list[Encoded], pb.SubscriptionStatus.ValueType, str]:
        """(topics, initial items, status, message) for one requested item."""
        engine = self.streams.engine
        ch = item.channel
        symbol = item.symbol
        ok = pb.SUBSCRIPTION_STATUS_OK
        if ch in (pb.CHANNEL_INDEX_PRICE, pb.CHANNEL_ALERTS):
            if not symbol:
                return [], [], pb.SUBSCRIPTION_STATUS_UNKNOWN_SYMBOL, "symbol is required"
        elif not self.streams._known(symbol):
            return [], [], pb.SUBSCRIPTION_STATUS_UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}"
        venue = item.venue
        if ch == pb.CHANNEL_BOOK:
            depth = item.depth or 20
            if depth > self.streams.max_depth:
                return [], [], pb.SUBSCRIPTION_STATUS_INVALID_DEPTH, self._bad_depth(depth)
            venues = [venue] if venue else engine.venues(symbol)
            if venue and venue not in engine.venues(symbol):
                return [], [], pb.SUBSCRIPTION_STATUS_UNKNOWN_SYMBOL, f"venue {venue!r} has no book for {symbol}"
            first = [e for e in (self.streams.hub.book_snapshot_item(v, symbol, depth) for v in venues) if e]
            return [("book", v, symbol) for v in venues], first, ok, ""
        if ch == pb.CHANNEL_CONSOLIDATED_BOOK:
            depth = item.depth or 20
            if depth > self.streams.max_depth:
                return [], [], pb.SUBSCRIPTION_STATUS_INVALID_DEPTH, self._bad_depth(depth)
            return [("consolidated", symbol, str(depth))], [], ok, ""
        if ch == pb.CHANNEL_NBBO:
            nbbo = engine.nbbo(symbol)
            first = [Encoded(convert.nbbo_pb(nbbo).SerializeToString(), NBBO)] if nbbo else []
            return [("nbbo", symbol)], first, ok, ""
        if ch == pb.CHANNEL_TRADES:
            return [("trades", symbol, venue)], [], ok, ""
        if ch == pb.CHANNEL_CANDLES:
            try:
                interval = convert.interval_from_pb(item.interval)
            except ValueError as exc:
                return [], [], pb.SUBSCRIPTION_STATUS_INVALID_INTERVAL, str(exc)
            if not venue:
                return [], [], pb.SUBSCRIPTION_STATUS_UNKNOWN_SYMBOL, "venue is required for candles"
            return [("candles", venue, symbol, str(int(interval)))], [], ok, ""
        if ch == pb.CHANNEL_TICKER:
            if not venue:
                return [], [], pb.SUBSCRIPTION_STATUS_UNKNOWN_SYMBOL, "venue is required for tickers"
            return [("ticker", venue, symbol)], [], ok, ""
        if ch == pb.CHANNEL_INDEX_PRICE:
            return [("index", symbol)], [], ok, ""
        if ch == pb.CHANNEL_MARK_PRICE:
            return [("mark", symbol)], [], ok, ""
        if ch == pb.CHANNEL_FUNDING_RATE:
            return [("funding", symbol)], [], ok, ""
        if ch == pb.CHANNEL_ALERTS:
            return [("alerts", symbol)], [], ok, ""
        if ch == pb.CHANNEL_QUALITY:
            return [("quality", symbol, venue)], [], ok, ""
        return [], [], pb.SUBSCRIPTION_STATUS_UNSPECIFIED, f"unknown channel {ch}"

    def handle(self, request: pb.SubscribeRequest) -> None:
        action = request.WhichOneof("action")
        if action == "ping":
            ping = request.ping
            pong = pb.SubscribeResponse(pong=pb.Pong(nonce=ping.nonce, client_time_ns=ping.client_time_ns,
                                                     server_time_ns=time.time_ns()))
            self.sub.control.append(pong.SerializeToString())
            self.sub.wake.set()
        elif action == "subscribe":
            for item in request.subscribe.items:
                key = item.SerializeToString(deterministic=True)
                if key in self.items:
                    self._status(item, pb.SUBSCRIPTION_STATUS_OK, "already subscribed")
                    continue
                if len(self.items) >= self.streams.limits.max_symbols:
                    self._status(item, pb.SUBSCRIPTION_STATUS_LIMIT_EXCEEDED,
                                 f"at most {self.streams.limits.max_symbols} items per stream")
                    continue
                topics, first, status, message = self.topics_for(item)
                if status != pb.SUBSCRIPTION_STATUS_OK:
                    self._status(item, status, message)
                    continue
                self.items[key] = topics
                self.streams.hub.subscribe(self.sub, topics)
                self._status(item, status, message)
                if first:
                    self.sub.sequence += 1
                    self.sub.control.append(convert.subscribe_batch(self.sub.sequence, [e.update() for e in first]))
        elif action == "unsubscribe":
            for item in request.unsubscribe.items:
                dropped = self.items.pop(item.SerializeToString(deterministic=True), None)
                if dropped is None:
                    self._status(item, pb.SUBSCRIPTION_STATUS_UNSPECIFIED, "not subscribed")
                    continue
                still = {t for ts in self.items.values() if ts for t in ts}
                self.streams.hub.unsubscribe_topics(self.sub, [t for t in dropped if t not in still])
                self._status(item, pb.SUBSCRIPTION_STATUS_UNSUBSCRIBED)


def _identity(data: bytes) -> bytes:
    return data


def _serializer(response_class: Any) -> Callable[[Any], bytes]:
    """A unary response's serializer; bytes (a response a handler encoded once and cached) pass through."""
    serialize = response_class.SerializeToString

    def encode(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return encode


def service_handlers(unary: MarketData, alerts: Alerts, streams: Streams) -> list[Any]:
    """Generic handlers for both services: unary methods with the protobuf serializers, streams with an
    identity serializer (their handlers yield bytes encoded once and shared)."""
    handlers: list[Any] = []
    for module, service_name, impls in (
        (market_data_service_pb2, "MarketDataService", (unary, streams)),
        (alert_service_pb2, "AlertService", (alerts, streams)),
    ):
        service = module.DESCRIPTOR.services_by_name[service_name]
        methods: dict[str, Any] = {}
        for method in service.methods:
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            if method.server_streaming and not method.client_streaming:
                impl = getattr(streams, method.name, None)
                if impl is None:
                    continue
                methods[method.name] = grpc.unary_stream_rpc_method_handler(
                    impl, request_deserializer=request_class.FromString, response_serializer=_identity)
            elif method.server_streaming and method.client_streaming:
                methods[method.name] = grpc.stream_stream_rpc_method_handler(
                    getattr(streams, method.name), request_deserializer=request_class.FromString,
                    response_serializer=_identity)
            elif not method.server_streaming and not method.client_streaming:
                owner = impls[0]
                methods[method.name] = grpc.unary_unary_rpc_method_handler(
                    getattr(owner, method.name), request_deserializer=request_class.FromString,
                    response_serializer=_serializer(response_class))
        handlers.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return handlers


def register(unary: MarketData, alerts: Alerts, streams: Streams) -> Callable[[grpc.aio.Server], list[str]]:
    def add(server: grpc.aio.Server) -> list[str]:
        server.add_generic_rpc_handlers(service_handlers(unary, alerts, streams))
        return [market_data_service_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name,
                alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name]

    return add


__all__ = ["Streams", "register", "service_handlers"]
