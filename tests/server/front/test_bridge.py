"""The front process and the bridge, started for real: a grpc client talks to the front, handlers run here.

The handlers stand in for services under real method names (health and reflection), so the front's method
table comes from the real descriptors: unary, server streaming and bidirectional calls, statuses, metadata
and deadlines, client cancellation, the flow-control window, and the front's end with the service.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2  # noqa: F401  (puts the service in the descriptor pool)

from server.front.bridge import FrontServer, HandlerCollector
from server.front.protocol import WINDOW

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
Req = health_pb2.HealthCheckRequest
Resp = health_pb2.HealthCheckResponse


class Handlers:
    def __init__(self) -> None:
        self.produced = 0
        self.closed = asyncio.Event()
        self.seen_timeout: float | None = None

    async def check(self, request: Any, context: Any) -> Any:
        self.seen_timeout = context.time_remaining()
        if request.service == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such service")
        if request.service == "boom":
            raise ValueError("broken handler")
        if request.service == "meta":
            return Resp(status=Resp.SERVING if ("x-test", "yes") in context.invocation_metadata() else Resp.UNKNOWN)
        return Resp(status=Resp.SERVING)

    async def watch(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """Raw bytes both ways: the request is a count, each response 100 kB."""
        try:
            for _ in range(int(request or b"1000000")):
                self.produced += 1
                yield b"x" * 100_000
        finally:
            self.closed.set()

    async def echo(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request


def _collector(h: Handlers) -> HandlerCollector:
    collector = HandlerCollector()
    collector.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(HEALTH, {
            "Check": grpc.unary_unary_rpc_method_handler(h.check, request_deserializer=Req.FromString,
                                                         response_serializer=Resp.SerializeToString),
            "Watch": grpc.unary_stream_rpc_method_handler(h.watch)}),
        grpc.method_handlers_generic_handler(REFLECTION, {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(h.echo)}),
    ))
    return collector


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(test: Callable[[FrontServer, grpc.aio.Channel, Handlers], Awaitable[None]]) -> None:
    async def main() -> None:
        handlers = Handlers()
        front = await FrontServer.start(host="127.0.0.1", port=_port(), options=[],
                                        service_names=[HEALTH, REFLECTION], collector=_collector(handlers))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{front.port}") as channel:
                await test(front, channel, handlers)
        finally:
            await front.stop(1.0)
        assert front.process is not None and front.process.returncode == 0

    asyncio.run(main())


def test_unary_calls_statuses_metadata_and_deadline() -> None:
    async def test(front: FrontServer, channel: grpc.aio.Channel, h: Handlers) -> None:
        check = channel.unary_unary(f"/{HEALTH}/Check", request_serializer=Req.SerializeToString,
                                    response_deserializer=Resp.FromString)
        assert (await check(Req())).status == Resp.SERVING
        assert h.seen_timeout is None
        assert (await check(Req(service="meta"), metadata=(("x-test", "yes"),), timeout=30)).status == Resp.SERVING
        assert h.seen_timeout is not None and 20 < h.seen_timeout < 31  # grpc rounds deadlines up
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(Req(service="abort"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "no such service"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(Req(service="boom"))
        assert err.value.code() == grpc.StatusCode.UNKNOWN and "broken handler" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:  # bytes that are not a request
            await channel.unary_unary(f"/{HEALTH}/Check")(b"\xff\xff")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/no.Such/Method")(b"")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

    run(test)


def test_streams_in_both_directions() -> None:
    async def test(front: FrontServer, channel: grpc.aio.Channel, h: Handlers) -> None:
        got = [len(r) async for r in channel.unary_stream(f"/{HEALTH}/Watch", None, None)(b"500")]
        assert got == [100_000] * 500
        echo = channel.stream_stream(f"/{REFLECTION}/ServerReflectionInfo", None, None)
        call = echo(None)
        for i in range(50):
            await call.write(bytes([i]) * 1000)
            assert await call.read() == bytes([i]) * 1000
        await call.done_writing()
        assert await call.read() == EOF
        assert await call.code() == grpc.StatusCode.OK

    run(test)


def test_a_client_that_stops_reading_holds_the_handler_back_and_cancelling_ends_it() -> None:
    async def test(front: FrontServer, channel: grpc.aio.Channel, h: Handlers) -> None:
        call = channel.unary_stream(f"/{HEALTH}/Watch", None, None)(b"")
        await call.read()
        await asyncio.sleep(1.5)
        # The handler ran ahead of the reader only by what the front's window, grpc's flow-control windows
        # and the socket buffers hold (a few MB of 100 kB messages), never the endless stream.
        assert WINDOW < h.produced < 200
        held = h.produced
        await asyncio.sleep(0.5)
        assert h.produced == held
        call.cancel()
        await asyncio.wait_for(h.closed.wait(), 5)
        assert not front.calls

    run(test)


def test_the_front_ends_calls_when_the_service_goes() -> None:
    async def test(front: FrontServer, channel: grpc.aio.Channel, h: Handlers) -> None:
        call = channel.unary_stream(f"/{HEALTH}/Watch", None, None)(b"")
        await call.read()
        front._lose()  # as if the service process died: the socket pair closes
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while await call.read() != EOF:
                pass
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "the service process is gone"
        assert front.process is not None
        assert await asyncio.wait_for(front.process.wait(), 10) == 0

    run(test)
