"""`mds serve`: build the engine, feeds, storage, gRPC server and metrics from a ServiceConfig, and run
until SIGINT/SIGTERM, then stop gracefully (NOT_SERVING, drain streams, flush storage)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from feeds.protocols import Feed
from server.config import ServiceConfig
from server.engine.engine import Engine, EngineConfig
from server.engine.events import AssetClass
from server.engine.instruments import Instrument, InstrumentRegistry
from server.engine.pricing import FundingConfig, IndexComponent, IndexConfig, MarkConfig
from server.metrics import MetricsUpdater
from server.runtime import Runtime
from server.service.app import ServerHandle, build_server
from server.service.fanout import Hub
from server.service.market_data import Alerts, MarketData
from server.service.streams import Streams
from server.service.streams import register as register_services

log = logging.getLogger("mds.serve")


def index_symbol(underlying: str) -> str:
    """Name of the index of an underlying: ``BTC/USD`` -> ``BTC/USD.INDEX``."""
    return f"{underlying}.INDEX"


def pricing_for(instruments: Iterable[Instrument]) -> tuple[tuple[IndexConfig, ...], tuple[MarkConfig, ...],
                                                            tuple[FundingConfig, ...]]:
    """An index over the spot venues of each perpetual's underlying, and the perpetual's mark and funding."""
    by_symbol = {i.symbol: i for i in instruments}
    indices: list[IndexConfig] = []
    marks: list[MarkConfig] = []
    funding: list[FundingConfig] = []
    for inst in by_symbol.values():
        if inst.asset_class != AssetClass.PERPETUAL or not inst.underlying:
            continue
        spot = by_symbol.get(inst.underlying)
        if spot is None or not spot.venue_symbols:
            continue
        name = index_symbol(spot.symbol)
        if all(c.symbol != name for c in indices):
            comps = tuple(IndexComponent(venue, spot.symbol, 1) for venue, _ in spot.venue_symbols)
            indices.append(IndexConfig(name, comps))
        marks.append(MarkConfig(inst.symbol, name))
        funding.append(FundingConfig(inst.symbol))
    return tuple(indices), tuple(marks), tuple(funding)


def build_feeds(specs: Iterable[str]) -> list[Feed]:
    from feeds.registry import build_feed

    return [build_feed(spec) for spec in specs]


def feed_instruments(feeds: Iterable[Feed]) -> list[Instrument]:
    found: list[Instrument] = []
    for feed in feeds:
        source = getattr(feed, "model", feed)  # the simulator keeps them on its model
        get = getattr(source, "instruments", None)
        if callable(get):
            found.extend(get())
    return found


def open_store(config: ServiceConfig) -> Any:
    """The embedded store (chdb) under ``data_dir``."""
    from server.storage.store import EmbeddedStore

    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    return EmbeddedStore.open(config.data_dir)


async def restore_state(engine: Engine, store: Any, feeds: Iterable[Feed]) -> None:
    """Before the runtime starts (``server.restore``): with storage, the instruments' trading status
    (halts); with a feed that redelivers after a restart (Kafka), also the engine's trades and books, and
    that feed's duplicate filter."""
    from server import restore

    if store is None:
        return
    seeds = restore.dedupers(feeds)
    if seeds:
        await asyncio.to_thread(restore.restore, engine, store, seeds)
    else:
        await asyncio.to_thread(restore.restore_trading_status, engine, store)


async def start(config: ServiceConfig, *, with_storage: bool = True) -> tuple[ServerHandle, MetricsUpdater, int]:
    """Everything started; returns the server handle, the metrics updater and the metrics port (-1: off)."""
    feeds = build_feeds(config.feeds)
    instruments = feed_instruments(feeds)
    indices, marks, funding = pricing_for(instruments)
    policies = config.source_policies()
    engine = Engine(EngineConfig(indices=indices, marks=marks, funding=funding,
                                 derived_venues=frozenset(p.composite for p in policies)),
                    InstrumentRegistry(tuple(instruments)))
    store = open_store(config) if with_storage else None
    await restore_state(engine, store, feeds)
    runtime = Runtime(engine, feeds, storage=store, tick_interval_s=config.tick_interval_ms / 1000,
                      ingest_queue_batches=config.ingest_queue_batches,
                      ingest_queue_events=config.ingest_queue_events,
                      storage_flush_s=config.storage_flush_ms / 1000, sources=policies)
    hub = Hub(engine)
    runtime.listeners.append(hub.on_updates)
    metrics = MetricsUpdater(runtime, hub=hub)
    runtime.listeners.append(metrics.on_updates)
    streams = Streams(engine, hub, max_depth=config.max_book_depth, store=store)
    # Registered through generic handlers (streams send pre-encoded bytes), not the generated base classes.
    market_data = MarketData(engine, max_depth=config.max_book_depth, store=store, feeds=feeds,
                             dead_letters=runtime.dead_letters)
    alerts = Alerts(engine)
    try:
        handle = await build_server(config, runtime, [register_services(market_data, alerts, streams)])
    except BaseException:
        if store is not None and not store.closed:  # e.g. the port is taken: close the data directory cleanly
            store.close()
        raise
    handle.background.append(asyncio.create_task(streams.run_polling(), name="mds-stream-polling"))
    handle.before_stop.append(hub.close)
    metrics_port = metrics.start(config.metrics_port, config.grpc_host) if config.metrics_port >= 0 else -1
    return handle, metrics, metrics_port


async def serve(config: ServiceConfig) -> None:
    handle, metrics, metrics_port = await start(config)
    # Long-lived state (instruments, books, series) leaves the collector's view, and young-generation
    # collections run less often: full collections over a large heap are the main source of latency spikes.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # Printed once a stop signal is handled gracefully: a supervisor may signal as soon as it sees this.
    print(f"mds: gRPC on {config.grpc_host}:{handle.port}, metrics on {metrics_port}, "
          f"feeds {', '.join(config.feeds)}", flush=True)
    failed = handle.runtime.failed
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    log.info("stopping: grace %.1fs", config.grace_s)
    await handle.stop(config.grace_s)
    await metrics.stop()
    log.info("stopped")
    if failed.is_set():
        raise ServiceFailedError(str(handle.runtime.failure))


class ServiceFailedError(RuntimeError):
    """The service stopped itself (e.g. storage failed under an at-least-once feed)."""
