"""ReplayStream end to end over gRPC: a grpc.aio server on loopback serves the pre-serialized responses of
``replay_responses`` through an identity serializer, and the typed ``MarketDataServiceStub`` decodes them.

Also measures the replay rate to one client at speed 0 (printed; not asserted: run with ``-s`` to see it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from marketdata.v1 import market_data_service_pb2, market_data_service_pb2_grpc

if TYPE_CHECKING:  # the async stub type exists in the generated stubs only
    from marketdata.v1.market_data_service_pb2_grpc import MarketDataServiceAsyncStub as Stub

from server.engine.events import BookSnapshot, Side, Trade
from server.engine.pricing import MarkPrice
from server.service.replay import ReplayNotFoundError, ReplaySource, replay_responses, validate_replay
from server.storage import EmbeddedStore

pb = market_data_service_pb2
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
HOUR = 3600 * S
METHOD = "/marketdata.v1.MarketDataService/ReplayStream"
Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")


def replay_handler(store: ReplaySource, known_symbols: set[str], **options: Any) -> Callable[
        [pb.ReplayStreamRequest, Ctx], AsyncIterator[bytes]]:
    """The ReplayStream handler as the service wires it: validate, map errors to codes, stream bytes."""

    async def handler(request: pb.ReplayStreamRequest, context: Ctx) -> AsyncIterator[bytes]:
        try:
            plan = validate_replay(request, max_range_ns=24 * HOUR, known_symbols=known_symbols)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ReplayNotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        async for data in replay_responses(store, plan, **options):
            yield data

    return handler


async def with_server(store: ReplaySource, known: set[str],
                      body: Callable[[Stub], Awaitable[R]],
                      **options: Any) -> R:
    """Start a server with only ReplayStream on 127.0.0.1:0, run ``body`` with a typed stub, stop."""
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(
        replay_handler(store, known, **options),
        request_deserializer=pb.ReplayStreamRequest.FromString,
        response_serializer=lambda b: b,  # the responses are already serialized
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "marketdata.v1.MarketDataService", {"ReplayStream": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await body(market_data_service_pb2_grpc.MarketDataServiceStub(channel))
    finally:
        await server.stop(None)


def _records() -> list[object]:
    out: list[object] = [Trade("kraken" if i % 2 else "binance", "BTC/USD", f"t{i}", 60_000 * S + i, S + i,
                               Side.BUY if i % 2 else Side.SELL, T0 + i * 1000, T0 + i * 1000 + 5)
                         for i in range(1234)]
    out.append(BookSnapshot("kraken", "BTC/USD", 42, ((59_999 * S, 2 * S),), ((60_001 * S, S),), T0 + 500,
                            T0 + 501))
    out.append(MarkPrice("BTC-PERP", 60_010 * S, 60_000 * S, 10 * S, T0 + 700))
    return out


def test_replay_stream_over_grpc(tmp_path: Path) -> None:
    store = EmbeddedStore.open(tmp_path / "db")
    try:
        store.write_batch(_records())
        known = {"BTC/USD", "BTC-PERP"}

        async def body(stub: Stub) -> None:
            request = pb.ReplayStreamRequest(symbols=["BTC/USD", "BTC-PERP"], start_ns=T0, end_ns=T0 + HOUR)
            responses = [r async for r in stub.ReplayStream(request)]
            assert [r.sequence for r in responses] == list(range(1, len(responses) + 1))
            assert [len(r.updates) for r in responses] == [100] * 12 + [36]
            updates = [u for r in responses for u in r.updates]
            kinds = [u.WhichOneof("update") for u in updates]
            assert kinds.count("trade") == 1234 and kinds.index("book") == 1 and kinds.index("mark_price") == 2
            # ties at T0 + 500 / 700 are impossible: trades are at multiples of 1000 ns
            assert [u.trade.trade_id for u in updates if u.HasField("trade")] == [f"t{i}" for i in range(1234)]
            last = updates[-1].trade
            assert (last.venue, last.symbol, last.price, last.size, last.side, last.ts_event_ns, last.ts_recv_ns) \
                == ("kraken", "BTC/USD", 60_000 * S + 1233, S + 1233, 1, T0 + 1233_000, T0 + 1233_005)
            snap = updates[1].book.snapshot
            assert (snap.venue_sequence, snap.sequence, snap.bids[0].price, snap.asks[0].size) == (42, 1, 59_999 * S, S)
            assert updates[2].mark_price.mark_price == 60_010 * S

            kraken = pb.ReplayStreamRequest(symbols=["BTC/USD"], venues=["kraken"], channels=[pb.CHANNEL_TRADES],
                                            start_ns=T0, end_ns=T0 + 10_000, speed=1000.0)
            got = [u.trade.trade_id async for r in stub.ReplayStream(kraken) for u in r.updates]
            assert got == ["t1", "t3", "t5", "t7", "t9"]

            for bad, code, words in [
                (pb.ReplayStreamRequest(symbols=["BTC/USD"], start_ns=T0 + 1, end_ns=T0),
                 grpc.StatusCode.INVALID_ARGUMENT, "is after end_ns"),
                (pb.ReplayStreamRequest(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, channels=[pb.CHANNEL_NBBO]),
                 grpc.StatusCode.INVALID_ARGUMENT, "cannot be replayed"),
                (pb.ReplayStreamRequest(symbols=["NOPE"], start_ns=T0, end_ns=T0 + 1),
                 grpc.StatusCode.NOT_FOUND, "unknown symbol 'NOPE'"),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    [r async for r in stub.ReplayStream(bad)]
                assert err.value.code() == code
                assert words in (err.value.details() or "")

        asyncio.run(with_server(store, known, body, max_updates_per_message=100))
    finally:
        store.close()


def test_replay_rate_to_one_client(tmp_path: Path) -> None:
    """~200k stored trades replayed at speed 0 to one client over loopback; prints updates/s.

    Client and server share this process (and its GIL), so this is a lower bound for a separate client.
    """
    n = 200_000
    store = EmbeddedStore.open(tmp_path / "db")
    try:
        store.write_batch([Trade("binance" if i % 3 else "kraken", "BTC/USD", str(i), 60_000 * S + i, S + i,
                                 Side.BUY if i % 2 else Side.SELL, T0 + i * 1000, T0 + i * 1000 + 7)
                           for i in range(n)])

        async def body(stub: Stub) -> tuple[int, int, float]:
            request = pb.ReplayStreamRequest(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + HOUR)
            started = time.perf_counter()
            updates = messages = 0
            async for r in stub.ReplayStream(request):
                updates += len(r.updates)
                messages += 1
            return updates, messages, time.perf_counter() - started

        updates, messages, seconds = asyncio.run(with_server(store, {"BTC/USD"}, body))
        assert updates == n
        print(f"\nreplay: {updates} updates in {messages} messages, {seconds:.3f} s: "
              f"{updates / seconds:,.0f} updates/s to one in-process client")
    finally:
        store.close()
