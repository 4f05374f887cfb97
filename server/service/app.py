"""build_server(): the one place that wires the gRPC server.

Interceptors (request id, access log, metrics), grpc.health.v1 health (SERVING only once the feeds are
warm, NOT_SERVING during a graceful stop), server reflection, message-size limits, the services, and
graceful ``stop(grace)`` that stops feeds, drains and flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from server.config import ServiceConfig
from server.runtime import Runtime
from server.service.interceptors import ObservabilityInterceptor

log = logging.getLogger("mds.server")

Registrar = Callable[[Any], Sequence[str]]
"""Adds one service to the server and returns the full service names it registered."""


class Transport(Protocol):
    """What serves the RPCs: a ``grpc.aio.Server`` here, or the front process (``server.front``)."""

    async def stop(self, grace: float | None) -> None: ...


@dataclass
class ServerHandle:
    """A started server: its bound port, health servicer and the graceful stop."""

    server: Transport
    runtime: Runtime
    health: HealthServicer
    port: int
    services: tuple[str, ...]
    _watch: asyncio.Task[None] | None = field(default=None, repr=False)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks that live as long as the server (stopped first on stop)."""
    before_stop: list[Callable[[], None]] = field(default_factory=list)
    """Called once NOT_SERVING is set, before the server stops (e.g. end the streams after a drain)."""

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new RPCs, let running ones finish within the grace, then stop the core."""
        for task in (self._watch, *self.background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.enter_graceful_shutdown()
        for hook in self.before_stop:
            hook()
        await self.server.stop(grace_s)
        await self.runtime.stop(grace_s)


async def build_server(config: ServiceConfig, runtime: Runtime,
                       registrars: Sequence[Registrar] = ()) -> ServerHandle:
    """Create, bind and start the server and the runtime behind it."""
    options = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    interceptors = [ObservabilityInterceptor()]
    if config.grpc_front:
        return await _build_front(config, runtime, registrars, options, interceptors)
    server = grpc.aio.server(interceptors=interceptors, options=options)
    health, names = _register(server, registrars)
    reflection.enable_server_reflection(names, server)
    try:
        port = server.add_insecure_port(f"{config.grpc_host}:{config.grpc_port}")
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot bind gRPC on {config.grpc_host}:{config.grpc_port} (in use, or not an address "
                      "of this host)")
    await _not_serving(health, names)
    await runtime.start()
    await server.start()
    handle = ServerHandle(server, runtime, health, port, tuple(names))
    handle._watch = asyncio.create_task(_serve_when_warm(runtime, health, names))
    log.info("gRPC serving on %s:%d", config.grpc_host, port)
    return handle


def _register(server: Any, registrars: Sequence[Registrar]) -> tuple[HealthServicer, list[str]]:
    """The services, health and (by the caller) reflection; returns health and every service name."""
    names: list[str] = []
    for register in registrars:
        names.extend(register(server))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    names.append(reflection.SERVICE_NAME)
    return health, names


async def _not_serving(health: HealthServicer, names: Sequence[str]) -> None:
    for name in ("", *names):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


async def _build_front(config: ServiceConfig, runtime: Runtime, registrars: Sequence[Registrar],
                       options: Sequence[tuple[str, Any]], interceptors: Sequence[Any]) -> ServerHandle:
    """``grpc_front``: the same services, run here for a front process that owns the public port."""
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    from server.front.bridge import FrontServer, HandlerCollector

    reflection_servicer: Any = reflection.aio.ReflectionServicer  # type: ignore[attr-defined]
    collector = HandlerCollector()
    health, names = _register(collector, registrars)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection_servicer(names), collector)
    await _not_serving(health, names)

    def lost(reason: str) -> None:
        log.critical("%s; the service stops", reason)
        runtime.failure = RuntimeError(reason)
        runtime.failed.set()

    await runtime.start()
    try:
        front = await FrontServer.start(host=config.grpc_host, port=config.grpc_port, options=options,
                                        service_names=names, collector=collector, interceptors=interceptors,
                                        log_level=config.log_level, on_lost=lost)
    except BaseException:
        await runtime.stop(0)
        raise
    handle = ServerHandle(front, runtime, health, front.port, tuple(names))
    handle._watch = asyncio.create_task(_serve_when_warm(runtime, health, names))
    log.info("gRPC serving on %s:%d through the front process", config.grpc_host, front.port)
    return handle


async def _serve_when_warm(runtime: Runtime, health: HealthServicer, names: Sequence[str]) -> None:
    while not runtime.warm:
        await asyncio.sleep(0.05)
    for name in ("", *names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("feeds warm: health SERVING")
