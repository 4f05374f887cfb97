"""Where the event loop's time goes: ``mds serve`` with its main-loop pieces timed, for latency tails.

    python -m load.loop_probe --out probe.json -- [mds serve options]
    python -m load.stream_load --target 127.0.0.1:<port> ...      # then stop the probe with Ctrl-C

Runs the service in this process, as ``mds serve`` would, after wrapping the pieces that run on its event
loop or hold the GIL (each wrapper adds about a microsecond per call):

- ``hub``: ``Hub.on_updates`` (fan-out of one engine round);
- ``prepare``: ``EmbeddedStore.prepare`` (Arrow encoding for storage, on the loop in steps);
- ``polled_step``: one step of ``Hub.publish_polled_steps`` (tickers, consolidated books, candles);
- ``metrics``: ``MetricsUpdater.on_updates``;
- ``chdb_insert``: one bulk insert, Arrow or RowBinary (``ChdbConnection._insert``, on the storage thread);
- ``gc0`` / ``gc1`` / ``gc2``: the collector's pauses, per generation (``gc.callbacks``);
- ``loop_lag``: how late a 1 ms sleep on the loop wakes up (a task of its own, 1000 wakeups/s).

At exit (after a graceful stop) it writes, per piece, the count, p50/p99/p99.9/max in milliseconds, how
many took over 1 and 2 ms, and the total, as one JSON object to ``--out`` (and prints it). The figures are
a diagnosis, not a benchmark: the wrappers and the monitor task cost a little CPU of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

Samples = dict[str, list[float]]


def summary(samples: Samples) -> dict[str, dict[str, float]]:
    """Per piece: n, p50, p99, p999, max (ms), over_1ms, over_2ms, total_ms."""
    out: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        if not values:
            continue
        v = sorted(values)
        n = len(v)
        out[name] = {
            "n": n,
            "p50": round(v[n // 2] * 1e3, 3),
            "p99": round(v[min(n - 1, int(n * 0.99))] * 1e3, 3),
            "p999": round(v[min(n - 1, int(n * 0.999))] * 1e3, 3),
            "max": round(v[-1] * 1e3, 3),
            "over_1ms": sum(1 for x in v if x > 0.001),
            "over_2ms": sum(1 for x in v if x > 0.002),
            "total_ms": round(sum(v) * 1e3, 1),
        }
    return out


def _timed(samples: Samples, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    values = samples.setdefault(name, [])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            values.append(time.perf_counter() - started)

    return wrapper


def _timed_steps(samples: Samples, name: str, fn: Callable[..., Iterator[None]]) -> Callable[..., Iterator[None]]:
    values = samples.setdefault(name, [])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[None]:
        steps = fn(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                next(steps)
            except StopIteration:
                values.append(time.perf_counter() - started)
                return
            values.append(time.perf_counter() - started)
            yield None

    return wrapper


def instrument(samples: Samples) -> None:
    """Wrap the service's loop pieces and hook the collector; every duration goes to ``samples``."""
    from server.metrics import MetricsUpdater
    from server.service.fanout import Hub
    from server.storage._chdb import ChdbConnection
    from server.storage.store import EmbeddedStore

    Hub.on_updates = _timed(samples, "hub", Hub.on_updates)  # type: ignore[method-assign]
    Hub.publish_polled_steps = _timed_steps(  # type: ignore[method-assign]
        samples, "polled_step", Hub.publish_polled_steps)
    EmbeddedStore.prepare = _timed(samples, "prepare", EmbeddedStore.prepare)  # type: ignore[method-assign]
    MetricsUpdater.on_updates = _timed(samples, "metrics", MetricsUpdater.on_updates)  # type: ignore[method-assign]
    ChdbConnection._insert = _timed(samples, "chdb_insert", ChdbConnection._insert)  # type: ignore[method-assign]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            samples.setdefault(f"gc{info['generation']}", []).append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    original_run = asyncio.Runner.run

    def run(self: asyncio.Runner, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        async def lag_monitor() -> None:
            lags = samples.setdefault("loop_lag", [])
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(max(0.0, time.perf_counter() - t - 0.001))

        async def with_monitor() -> Any:
            monitor = asyncio.ensure_future(lag_monitor())
            try:
                return await coro
            finally:
                monitor.cancel()

        return original_run(self, with_monitor(), **kwargs)

    asyncio.Runner.run = run  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.loop_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the JSON summary")
    parser.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- then `mds serve` options")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    serve_args = args.serve_args[1:] if args.serve_args[:1] == ["--"] else args.serve_args
    samples: Samples = {}
    instrument(samples)
    from server.cli import main as mds_main

    try:
        code = mds_main(["serve", *serve_args])
    finally:
        figures = summary(samples)
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
        print(json.dumps(figures))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
