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

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from server.config import ServiceConfig
from server.runtime import Runtime
from server.service.interceptors import ObservabilityInterceptor

log = logging.getLogger("mds.server")

Registrar = Callable[[grpc.aio.Server], Sequence[str]]
"""Adds one service to the server and returns the full service names it registered."""


@dataclass
class ServerHandle:
    """A started server: its bound port, health servicer and the graceful stop."""

    server: grpc.aio.Server
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
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor()], options=options)
    names: list[str] = []
    for register in registrars:
        names.extend(register(server))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    names.append(reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{config.grpc_host}:{config.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind gRPC on {config.grpc_host}:{config.grpc_port}")
    for name in ("", *names):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await runtime.start()
    await server.start()
    handle = ServerHandle(server, runtime, health, port, tuple(names))
    handle._watch = asyncio.create_task(_serve_when_warm(runtime, health, names))
    log.info("gRPC serving on %s:%d", config.grpc_host, port)
    return handle


async def _serve_when_warm(runtime: Runtime, health: HealthServicer, names: Sequence[str]) -> None:
    while not runtime.warm:
        await asyncio.sleep(0.05)
    for name in ("", *names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("feeds warm: health SERVING")
