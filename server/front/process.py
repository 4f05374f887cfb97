"""The gRPC front process: the public grpc.aio server, and nothing else on its event loop.

``mds serve --grpc-front`` starts it (``python -m server.front --fd N``) with one end of a socket pair. It
waits for the service's HELLO (method table, bind address, server options), binds, answers READY, and then
forwards every RPC to the service as frames (``server.front.protocol``): OPEN, the request messages, and
back the response messages and the status. Messages stay serialized bytes end to end; the front never
parses one. Because this loop does no other work, grpc's transport sends each message as soon as it
arrives, which is what the service's own busy loop could not do (see BENCHMARKS.md).

Its life is the service's: on STOP it stops the server with the given grace, and when the socket pair
closes (the service ended or was killed) it ends every call with UNAVAILABLE and exits. It ignores SIGINT
and SIGTERM, which a terminal or a supervisor sends to the whole process group: the service handles them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

from server.front.protocol import (
    CreditWindow,
    Frame,
    FrameReader,
    Kind,
    ProtocolError,
    control,
    credit,
    encode_metadata,
    frame,
    read_credit,
    read_json,
)

log = logging.getLogger("mds.front")

_CODES = {c.value[0]: c for c in grpc.StatusCode}
_GONE = (grpc.StatusCode.UNAVAILABLE, "the service process is gone")


class _Call:
    """One forwarded RPC: the frames the service sent for it, and the send window towards it."""

    __slots__ = ("ended", "id", "inbox", "window")

    def __init__(self, call_id: int) -> None:
        self.id = call_id
        self.inbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()  # bounded by the service's window
        self.ended = False
        self.window = CreditWindow()  # request messages we may still send


class Front(asyncio.Protocol):
    """The front's side of the socket pair, and the handlers the grpc server calls."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.calls: dict[int, _Call] = {}
        self.next_id = 1
        self.hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.stop_grace: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._out: list[bytes] = []
        self._flush_soon = False

    # -- the socket pair

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            log.error("front: %s; closing", exc)
            assert self.transport is not None
            self.transport.close()
            return
        for kind, call_id, body in frames:
            if kind in (Frame.MSG, Frame.END):
                call = self.calls.get(call_id)
                if call is not None:
                    call.inbox.put_nowait((kind, body))
            elif kind == Frame.CREDIT:
                call = self.calls.get(call_id)
                if call is not None:
                    call.window.grant(read_credit(body))
            elif kind == Frame.HELLO and not self.hello.done():
                self.hello.set_result(read_json(body))
            elif kind == Frame.STOP and not self.stop_grace.done():
                self.stop_grace.set_result(float(read_json(body)["grace"]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for call in self.calls.values():
            call.inbox.put_nowait((Frame.END, b""))
            call.window.close()
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("the service closed the socket before HELLO"))
        if not self.stop_grace.done():  # a short grace: each call ends with "the service process is gone"
            self.stop_grace.set_result(1.0)

    def send(self, data: bytes) -> None:
        """Queue a frame; frames of one loop turn go out in one write (credits are frequent and small)."""
        self._out.append(data)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        out, self._out = self._out, []
        if self.transport is not None and out:
            self.transport.write(b"".join(out))

    # -- calls

    def _open(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> _Call:
        call = _Call(self.next_id)
        self.next_id += 1
        self.calls[call.id] = call
        remaining = context.time_remaining()
        self.send(control(Frame.OPEN, call.id, {
            "method": method,
            "metadata": encode_metadata(context.invocation_metadata() or ()),
            "peer": context.peer(),
            "timeout": remaining,
        }))
        if self.transport is None:
            call.inbox.put_nowait((Frame.END, b""))
        return call

    def _close(self, call: _Call) -> None:
        self.calls.pop(call.id, None)
        if not call.ended:
            call.ended = True
            if self.transport is not None:
                self.send(frame(Frame.CANCEL, call.id))

    async def _send_requests(self, call: _Call, requests: AsyncIterator[bytes] | None, single: bytes | None) -> None:
        if requests is None:
            self.send(frame(Frame.MSG, call.id, single or b""))
        else:
            async for request in requests:
                if not await call.window.wait():
                    return
                call.window.take()
                self.send(frame(Frame.MSG, call.id, request))
        self.send(frame(Frame.HALF_CLOSE, call.id))

    async def _responses(self, call: _Call, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        while True:
            kind, body = await call.inbox.get()
            if kind == Frame.MSG:
                yield body
                self.send(credit(call.id, 1))
                continue
            call.ended = True
            code, details = _GONE
            if body:
                status = read_json(body)
                code, details = _CODES.get(int(status["code"]), grpc.StatusCode.UNKNOWN), str(status["details"])
            if code != grpc.StatusCode.OK:
                await context.abort(code, details)
            return

    def handler(self, method: str, kind: Kind) -> grpc.RpcMethodHandler[Any, Any]:
        """The grpc handler that forwards ``method`` (bytes in, bytes out: no (de)serializers)."""

        async def streamed(requests: AsyncIterator[bytes] | None, single: bytes | None,
                           context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
            call = self._open(method, context)
            pump = asyncio.ensure_future(self._send_requests(call, requests, single))
            try:
                async for body in self._responses(call, context):
                    yield body
            finally:
                pump.cancel()
                self._close(call)

        async def unary_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            async for body in streamed(None, request, context):
                yield body

        async def stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for body in streamed(requests, None, context):
                yield body

        async def unary_unary(request: bytes, context: Any) -> bytes:
            result = b""
            async for body in streamed(None, request, context):
                result = body
            return result

        async def stream_unary(requests: AsyncIterator[bytes], context: Any) -> bytes:
            result = b""
            async for body in streamed(requests, None, context):
                result = body
            return result

        make: dict[Kind, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
            Kind.UNARY_UNARY: lambda: grpc.unary_unary_rpc_method_handler(unary_unary),
            Kind.UNARY_STREAM: lambda: grpc.unary_stream_rpc_method_handler(unary_stream),
            Kind.STREAM_UNARY: lambda: grpc.stream_unary_rpc_method_handler(stream_unary),
            Kind.STREAM_STREAM: lambda: grpc.stream_stream_rpc_method_handler(stream_stream),
        }
        return make[kind]()


if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    _Generic = grpc.GenericRpcHandler[Any, Any]
else:
    _Generic = grpc.GenericRpcHandler


class _Router(_Generic):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self.handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self.handlers.get(handler_call_details.method)


async def run(fd: int) -> int:
    """Serve until STOP or until the service is gone; the exit status."""
    loop = asyncio.get_running_loop()
    front = Front()
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    await loop.create_unix_connection(lambda: front, sock=sock)
    try:
        hello = await front.hello
    except ConnectionError as exc:
        log.error("front: %s", exc)
        return 1
    options = [(str(k), v) for k, v in hello["options"]]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((_Router({m: front.handler(m, Kind(k)) for m, k in hello["methods"].items()}),))
    address = f"{hello['host']}:{hello['port']}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        reason = f"cannot bind gRPC on {address} (in use, or not an address of this host)"
        front.send(control(Frame.READY, 0, {"error": reason}))
        await asyncio.sleep(0.1)
        return 1
    await server.start()
    front.send(control(Frame.READY, 0, {"port": port}))
    grace = await front.stop_grace
    await server.stop(grace)
    if front.transport is not None:
        front.transport.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.front", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fd", type=int, required=True, help="this end of the socket pair (inherited)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal (or a stop signal to the whole process group) is the service's to handle: it
    # stops this process gracefully with STOP, or its death closes the socket pair.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from server.logs import setup_logging

    setup_logging(args.log_level)
    run_loop: Callable[..., int] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run_loop = uvloop.run
    return run_loop(run(args.fd))


if __name__ == "__main__":
    sys.exit(main())
