"""The latency floor of a Python grpc.aio server stream on this box: the peer figure for stream_load.

``python -m load.grpc_floor [--rate 100] [--seconds 10] [--streams 1]`` starts a minimal grpc.aio server
(uvloop, one generic server-streaming method, nothing else running) in a subprocess. Every 1/rate s it
stamps ``time.time_ns()`` into a message (8 bytes, or ``--size``) and sends it to every open stream. Client
streams in this process (uvloop) measure receive time minus that stamp. It prints p50/p99/p99.9 and, last,
one JSON line.

It isolates what any Python gRPC service pays per message between two processes on loopback: the event
loop, grpc's completion-queue thread and the GIL hand-offs between them. No engine, no storage, no fan-out.
Everything runs on 127.0.0.1, bounded in time; the server subprocess is stopped at the end.

Two options put a service's other work next to the stream, to see what it costs the floor:

- ``--busy-ms X``: after each send (one turn of the loop later, when grpc has the message), the server's
  event loop runs X ms of Python, as a service's engine and fan-out do after handing a batch to its streams.
- ``--cpu-load F``: a separate process keeps a fraction F of one core busy (1.2 ms bursts), as other
  processes on the box would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

METHOD = "/floor.Floor/Stream"


def _identity(data: bytes) -> bytes:
    return data


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _cpu_load(fraction: float) -> None:
    """Keep ``fraction`` of one core busy, in 1.2 ms bursts (the --cpu-load process), until the parent
    process is gone (it kills this one at the end; this also ends if the parent itself is killed)."""
    burst = 0.0012
    parent = os.getppid()
    while os.getppid() == parent:
        _busy(burst)
        time.sleep(burst * (1 - fraction) / fraction)


async def _serve(port: int, rate: float, size: int, busy_s: float = 0.0) -> None:
    subscribers: set[asyncio.Queue[bytes]] = set()

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
        subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            subscribers.discard(q)

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("floor.Floor", {
        "Stream": grpc.unary_stream_rpc_method_handler(stream, request_deserializer=_identity,
                                                       response_serializer=_identity)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        data = struct.pack("<q", time.time_ns()) + bytes(max(0, size - 8))
        for q in subscribers:
            if not q.full():
                q.put_nowait(data)
        if busy_s:
            await asyncio.sleep(0)  # the streams take their message and hand it to grpc
            _busy(busy_s)


async def _client(target: str, streams: int, seconds: float) -> list[int]:
    latencies: list[int] = []
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(streams)]
    end = time.monotonic() + seconds + 1.0
    warm = time.monotonic() + 1.0

    async def one(channel: grpc.aio.Channel) -> None:
        call = channel.unary_stream(METHOD, request_serializer=_identity, response_deserializer=_identity)(b"")
        async for data in call:
            now = time.time_ns()
            if time.monotonic() >= warm:
                latencies.append(now - struct.unpack_from("<q", data)[0])
            if time.monotonic() >= end:
                call.cancel()
                return

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in channels)), seconds + 30)
    for c in channels:
        await c.close(grace=None)
    return latencies


def _pct(values: list[int], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))] / 1e6 if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="messages/s sent to each stream (default 100)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--size", type=int, default=8, help="message size in bytes (default 8; stream_load's are ~10 KB)")
    p.add_argument("--busy-ms", type=float, default=0.0,
                   help="ms of Python the server's event loop runs after each send (default 0)")
    p.add_argument("--cpu-load", type=float, default=0.0,
                   help="fraction of one core a separate process keeps busy meanwhile (default 0)")
    p.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--burn", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.burn:
        _cpu_load(args.cpu_load)
        return 0
    if args.serve:
        uvloop.run(_serve(args.serve, args.rate, args.size, args.busy_ms / 1e3))
        return 0
    if not 0 < args.seconds <= 120 or not 0 < args.rate <= 10_000 or not 0 < args.streams <= 100:
        p.error("--seconds 0..120, --rate 0..10000, --streams 1..100")
    if not 0 <= args.busy_ms < 1e3 / args.rate or not 0 <= args.cpu_load < 1:
        p.error("--busy-ms must be below the send interval (1000 / rate) and --cpu-load in [0, 1)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "load.grpc_floor", "--serve", str(port), "--rate", str(args.rate),
                               "--size", str(args.size), "--busy-ms", str(args.busy_ms)],
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    burner = (subprocess.Popen([sys.executable, "-m", "load.grpc_floor", "--burn", "--cpu-load", str(args.cpu_load)])
              if args.cpu_load else None)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        lat = sorted(uvloop.run(_client(f"127.0.0.1:{port}", args.streams, args.seconds)))
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    lm = {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99), "p999": _pct(lat, 0.999),
          "max": lat[-1] / 1e6 if lat else float("nan")}
    print(f"grpc.aio floor: {len(lat)} messages; latency p50 {lm['p50']:.3f} ms, p99 {lm['p99']:.3f} ms, "
          f"p99.9 {lm['p999']:.3f} ms")
    print(json.dumps({"bench": "grpc_floor", "rate": args.rate, "streams": args.streams, "size": args.size,
                      "busy_ms": args.busy_ms, "cpu_load": args.cpu_load, "samples": len(lat),
                      "latency_ms": lm}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
