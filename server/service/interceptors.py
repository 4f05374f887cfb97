"""Server interceptors: a request id per call, a JSON access log line, and RPC metrics.

Each RPC's handler is wrapped once (per method, cached) so the per-call cost is a few attribute reads,
a clock read and a log call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("mds.access")

RPC_TOTAL = Counter("md_rpc_total", "RPCs finished, by method and status code", ["method", "code"])
RPC_LATENCY = Histogram("md_rpc_latency_ms", "Unary RPC latency in milliseconds", ["method"],
                        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000))
SNAPSHOT_LATENCY_MS = Gauge("md_snapshot_latency_ms", "Latency of the last snapshot RPC (Get*/List*) served, ms")
REQUEST_ID_KEY = "x-request-id"


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            return value
    return uuid.uuid4().hex


def _code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    if isinstance(error, grpc.aio.AbortError) or error is None:
        code = context.code()
        if code is None:
            return "OK" if error is None else "UNKNOWN"
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    return "CANCELLED" if type(error).__name__ == "CancelledError" else "UNKNOWN"


if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


class ObservabilityInterceptor(_Interceptor):
    """Request id (echoed as initial metadata), access log and metrics for every RPC."""

    def __init__(self) -> None:
        self._cache: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = _wrap(handler, method)
        self._cache[method] = wrapped
        return wrapped


def _finish(method: str, rid: str, started: float, context: Any, error: BaseException | None) -> None:
    ms = (time.perf_counter() - started) * 1000
    code = _code(context, error)
    RPC_TOTAL.labels(method, code).inc()
    log.info("rpc", extra={"method": method, "code": code, "ms": round(ms, 3), "request_id": rid})


def _wrap(handler: Handler, method: str) -> Handler:
    latency = RPC_LATENCY.labels(method)
    name = method.rsplit("/", 1)[-1]
    is_snapshot = name.startswith(("Get", "List"))
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            rid = _request_id(context)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return await inner_uu(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                ms = (time.perf_counter() - started) * 1000
                latency.observe(ms)
                if is_snapshot:
                    SNAPSHOT_LATENCY_MS.set(ms)
                _finish(method, rid, started, context, error)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def streaming(inner: Any) -> Callable[[Any, Any], AsyncIterator[Any]]:
        """Wrap an async-generator stream handler (the form every mds stream handler takes)."""

        async def wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
            rid = _request_id(context)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                async for item in inner(request, context):
                    yield item
            except BaseException as exc:
                error = exc
                raise
            finally:
                _finish(method, rid, started, context, error)

        return wrapper

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            streaming(handler.stream_stream), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    return handler
