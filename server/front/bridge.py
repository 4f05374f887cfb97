"""The service's side of the gRPC front: start the front process, run each forwarded RPC's handler.

``FrontServer.start`` creates a socket pair, starts ``python -m server.front`` with one end, sends HELLO
(the method table from the services' descriptors, the bind address and the server options) and waits for
READY. Each OPEN then runs the RPC's real handler, found through the same generic handlers and
interceptors a ``grpc.aio.Server`` would use, with a ``BridgeContext`` in place of grpc's context. Response
messages are written to the socket as soon as the handler yields them (a direct write: no wait for this
loop to be idle), within the per-call window the front acknowledges (``server.front.protocol``).

The front process ends with the service: ``stop(grace)`` sends STOP and waits for it to exit; if the
front dies first, ``on_lost`` is called (``mds serve`` then stops with an error).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor_pool

from server.front.protocol import (
    CreditWindow,
    Frame,
    FrameReader,
    Kind,
    ProtocolError,
    control,
    credit,
    decode_metadata,
    frame,
    read_credit,
    read_json,
)

log = logging.getLogger("mds.front")

SOCKET_BUFFER = 4 << 20
"""Send buffer asked for on the service's end of the socket pair."""
START_TIMEOUT_S = 30.0
"""How long ``FrontServer.start`` waits for the front to bind."""

Handler = Any  # grpc.RpcMethodHandler (generic only in grpc's stubs)


class HandlerCollector:
    """Takes services the way a ``grpc.aio.Server`` does (``add_generic_rpc_handlers``,
    ``add_registered_method_handlers``) and finds a method's handler."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.registered[f"/{service}/{name}"] = handler

    def lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self.registered.get(details.method)
        if handler is not None:
            return handler
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


def method_table(service_names: Iterable[str]) -> dict[str, str]:
    """``/package.Service/Method`` -> cardinality, for every method of the named services (from the
    descriptor pool: the generated modules are imported by then)."""
    pool = descriptor_pool.Default()
    table: dict[str, str] = {}
    for name in service_names:
        service = pool.FindServiceByName(name)
        for m in service.methods:
            kind = {(False, False): Kind.UNARY_UNARY, (False, True): Kind.UNARY_STREAM,
                    (True, False): Kind.STREAM_UNARY, (True, True): Kind.STREAM_STREAM}[
                (m.client_streaming, m.server_streaming)]
            table[f"/{name}/{m.name}"] = kind.value
    return table


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class _BadRequestError(Exception):
    """A request message that does not parse."""


class _ClosedError(Exception):
    """The front is gone or cancelled the call: stop sending."""


class BridgeContext:
    """What a handler may ask of its call (the parts of ``grpc.aio.ServicerContext`` handlers use)."""

    def __init__(self, call: _BridgeCall, metadata: tuple[tuple[str, str | bytes], ...], peer: str,
                 timeout: float | None) -> None:
        self._call = call
        self._metadata = metadata
        self._peer = peer
        self._deadline = time.monotonic() + timeout if timeout is not None else None
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._done_callbacks: list[Callable[[Any], None]] = []

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort with OK")
        self._code = code
        self._details = details
        raise grpc.aio.AbortError(f"aborted with {code.name}: {details}")

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancelled(self) -> bool:
        return self._call.cancelled

    def done(self) -> bool:
        return self._call.finished

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._done_callbacks.append(callback)

    async def write(self, message: Any) -> None:
        await self._call.send(message)

    async def read(self) -> Any:
        return await self._call.read()

    async def send_initial_metadata(self, metadata: Any) -> None:
        """Initial metadata is not forwarded by the front (no mds handler sends any)."""

    def set_trailing_metadata(self, metadata: Any) -> None:
        """Trailing metadata is not forwarded by the front (no mds handler sets any)."""

    def set_compression(self, compression: Any) -> None:
        """Compression is the front's (grpc's defaults)."""

    def disable_next_message_compression(self) -> None:
        """Compression is the front's (grpc's defaults)."""


_EOF = object()
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what ServicerContext.read returns at the end


class _BridgeCall:
    """One forwarded RPC on the service's side."""

    def __init__(self, bridge: FrontServer, call_id: int, handler: Handler) -> None:
        self.bridge = bridge
        self.id = call_id
        self.handler = handler
        self.requests: asyncio.Queue[object] = asyncio.Queue()  # bounded by the front's window
        self.window = CreditWindow()
        self.cancelled = False
        self.finished = False
        self.task: asyncio.Task[None] | None = None

    async def send(self, message: Any) -> None:
        if not await self.window.wait():
            raise _ClosedError
        self.window.take()
        serialize = self.handler.response_serializer
        self.bridge.write(frame(Frame.MSG, self.id, serialize(message) if serialize is not None else message))

    async def read(self) -> Any:
        item = await self.requests.get()
        if item is _EOF:
            return EOF
        self.bridge.write(credit(self.id, 1))
        deserialize = self.handler.request_deserializer
        if deserialize is None:
            return item
        try:
            return deserialize(item)
        except Exception as exc:  # as grpc does: INTERNAL
            raise _BadRequestError from exc

    async def request_stream(self) -> AsyncIterator[Any]:
        while True:
            item = await self.read()
            if item is EOF:
                return
            yield item


class FrontServer:
    """The started front: its bound port, and ``stop(grace)``. Duck-types the part of ``grpc.aio.Server``
    that ``ServerHandle`` uses."""

    def __init__(self, collector: HandlerCollector, interceptors: Sequence[Any],
                 on_lost: Callable[[str], None]) -> None:
        self.collector = collector
        self.interceptors = list(interceptors)
        self.on_lost = on_lost
        self.port = 0
        self.sock: socket.socket | None = None
        self._backlog: collections.deque[bytes | memoryview] = collections.deque()
        """What the socket did not take yet, in order (never copied as a whole)."""
        self.process: asyncio.subprocess.Process | None = None
        self.calls: dict[int, _BridgeCall] = {}
        self.reader = FrameReader()
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.stopping = False

    @classmethod
    async def start(cls, *, host: str, port: int, options: Sequence[tuple[str, Any]], service_names: Iterable[str],
                    collector: HandlerCollector, interceptors: Sequence[Any] = (), log_level: str = "INFO",
                    on_lost: Callable[[str], None] = lambda reason: None) -> FrontServer:
        """Start the front process and wait until it serves ``host:port``; OSError if it cannot bind."""
        self = cls(collector, interceptors, on_lost)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.front", "--fd", str(theirs.fileno()), "--log-level", log_level,
                pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._attach(ours)
        self.write(control(Frame.HELLO, 0, {"methods": method_table(service_names), "host": host, "port": port,
                                            "options": [list(o) for o in options]}))
        try:
            ready = await asyncio.wait_for(asyncio.shield(self.ready), START_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            await self._reap()
            raise OSError(f"the gRPC front process did not start: {str(exc) or 'timeout'}") from None
        if "error" in ready:
            await self._reap()
            raise OSError(str(ready["error"]))
        self.port = int(ready["port"])
        return self

    # -- the socket pair, read and written directly: a response goes out the moment it is written, not at
    # the end of the loop's turn (where an asyncio transport would flush it, after the engine's work)

    def _attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # fewer partial writes when many streams send at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def write(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            return
        if self._backlog:
            self._backlog.append(data)
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lose()
            return
        if sent < len(data):
            self._backlog.append(memoryview(data)[sent:])
            asyncio.get_running_loop().add_writer(sock.fileno(), self._writable)

    def _writable(self) -> None:
        sock = self.sock
        backlog = self._backlog
        while sock is not None and backlog:
            head = backlog[0]
            try:
                sent = sock.send(head)
            except BlockingIOError:
                return
            except OSError:
                self._lose()
                return
            if sent < len(head):
                backlog[0] = memoryview(head)[sent:]
                return
            backlog.popleft()
        if sock is not None:
            asyncio.get_running_loop().remove_writer(sock.fileno())

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lose()
                return
            self.received(data)
            if self.sock is None:
                return

    def _lose(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        loop.remove_writer(sock.fileno())
        sock.close()
        self.connection_lost()

    # -- frames from the front

    def received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            log.error("front: %s; closing", exc)
            self._lose()
            return
        for kind, call_id, body in frames:
            if kind == Frame.MSG:
                call = self.calls.get(call_id)
                if call is not None:
                    call.requests.put_nowait(body)
            elif kind == Frame.CREDIT:
                call = self.calls.get(call_id)
                if call is not None:
                    call.window.grant(read_credit(body))
            elif kind == Frame.OPEN:
                self._open(call_id, read_json(body))
            elif kind == Frame.HALF_CLOSE:
                call = self.calls.get(call_id)
                if call is not None:
                    call.requests.put_nowait(_EOF)
            elif kind == Frame.CANCEL:
                call = self.calls.get(call_id)
                if call is not None:
                    self._cancel(call)
            elif kind == Frame.READY and not self.ready.done():
                self.ready.set_result(read_json(body))

    def connection_lost(self) -> None:
        for call in list(self.calls.values()):
            self._cancel(call)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the front process closed the socket"))
        if not self.stopping and self.port:  # serving (not a failed start) and not stopped by us
            self.on_lost("the gRPC front process ended unexpectedly")

    @staticmethod
    def _cancel(call: _BridgeCall) -> None:
        call.cancelled = True
        call.window.close()
        if call.task is not None:
            call.task.cancel()

    def _open(self, call_id: int, spec: dict[str, Any]) -> None:
        call = _BridgeCall(self, call_id, None)
        self.calls[call_id] = call
        call.task = asyncio.ensure_future(self._run(call, spec))

    async def _resolve(self, details: _Details) -> Handler | None:
        async def base(d: grpc.HandlerCallDetails) -> Handler | None:
            return self.collector.lookup(d)

        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]] = base
        for interceptor in reversed(self.interceptors):
            continuation = _chain(interceptor, continuation)
        return await continuation(details)

    async def _run(self, call: _BridgeCall, spec: dict[str, Any]) -> None:
        """Run one RPC's handler to its status (the front ends the client's call with it)."""
        metadata = decode_metadata(spec.get("metadata", ()))
        method = str(spec["method"])
        context = BridgeContext(call, metadata, str(spec.get("peer", "")), spec.get("timeout"))
        code, details = grpc.StatusCode.OK, ""
        try:
            handler = await self._resolve(_Details(method, metadata))
            if handler is None:
                code, details = grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {method}"
            else:
                call.handler = handler
                await self._invoke(call, handler, context)
                code, details = context.code() or grpc.StatusCode.OK, context.details()
        except grpc.aio.AbortError:
            code, details = context.code() or grpc.StatusCode.UNKNOWN, context.details()
        except _BadRequestError:
            code, details = grpc.StatusCode.INTERNAL, "Exception deserializing request!"
        except (_ClosedError, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        except Exception as exc:  # as grpc does: the client gets UNKNOWN, the log gets the traceback
            log.exception("handler of %s failed", method)
            code, details = grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"
        finally:
            call.finished = True
            self.calls.pop(call.id, None)
            for callback in context._done_callbacks:
                with contextlib.suppress(Exception):
                    callback(context)
        if not call.cancelled:
            self.write(control(Frame.END, call.id, {"code": code.value[0], "details": details}))

    @staticmethod
    async def _invoke(call: _BridgeCall, handler: Handler, context: BridgeContext) -> None:
        if handler.request_streaming:
            request: Any = call.request_stream()
        else:
            first = await call.read()
            if first is EOF:
                raise grpc.aio.AbortError("no request") from None
            request = first
        if not handler.response_streaming:
            fn = handler.stream_unary if handler.request_streaming else handler.unary_unary
            await call.send(await fn(request, context))
            return
        fn = handler.stream_stream if handler.request_streaming else handler.unary_stream
        result = fn(request, context)
        if not inspect.isasyncgen(result):  # the write() style: the handler sends through the context
            await result
            return
        try:
            while True:
                await call.window.wait()  # pull the next message only when it can go (send() sees a close)
                try:
                    message = await result.__anext__()
                except StopAsyncIteration:
                    return
                await call.send(message)
        finally:
            await result.aclose()

    async def stop(self, grace: float | None) -> None:
        """STOP the front (it stops its grpc server with ``grace``: running RPCs may finish), wait for it."""
        self.stopping = True
        self.write(control(Frame.STOP, 0, {"grace": grace or 0.0}))
        await self._reap((grace or 0.0) + 10.0)

    async def _reap(self, timeout: float = 5.0) -> None:
        proc = self.process
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("the gRPC front process did not stop within %.1fs; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._lose()
        for call in list(self.calls.values()):
            self._cancel(call)


def _chain(interceptor: Any, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
           ) -> Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]:
    async def step(details: grpc.HandlerCallDetails) -> Handler | None:
        return await interceptor.intercept_service(continuation, details)
    return step
