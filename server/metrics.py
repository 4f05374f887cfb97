"""Prometheus metrics: the seed list (md_*) refreshed from the engine and runtime once a second.

Values are copied on the event loop (where the engine lives) into prometheus_client gauges, which the
HTTP exporter thread reads; the exporter never touches engine state.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter, Gauge, start_http_server

from server.runtime import Runtime
from server.service.fanout import Hub
from server.service.market_data import feed_statuses

INGEST_LAG_MS = Gauge("md_ingest_lag_ms", "Receive-to-engine lag of the last applied batch, ms", ["topic"])
SEQ_GAPS = Gauge("md_seq_gap_total", "Sequence gaps detected per symbol (resyncs requested)", ["symbol"])
WS_CLIENTS = Gauge("md_ws_clients", "Connected WebSocket gateway clients (0 until the gateway exists)")
CANDLES_CLOSED = Counter("md_ohlcv_candles_closed_total", "Candles closed (all intervals)")
INDEX_STALENESS_MS = Gauge("md_index_price_source_staleness_ms", "Age of each index source price, ms",
                           ["index", "venue", "symbol"])
EVENTS_APPLIED = Gauge("md_events_applied_total", "Events applied by the engine")
INGEST_QUEUE = Gauge("md_ingest_queue_batches", "Batches waiting in the ingest queue")
STORAGE_BACKLOG = Gauge("md_storage_unencoded_records",
                        "Records waiting to be encoded for storage (they wait while the engine is behind)")
DUPLICATES = Gauge("md_duplicate_trades_total", "Duplicate trades dropped")
BOOK_HASH_MISMATCHES = Gauge("md_book_hash_mismatch_total",
                             "Venue book hashes that disagreed with the book (it then resyncs), per symbol", ["symbol"])
BOOK_CHECKS = Gauge("md_book_checks_total", "Venue book hashes checked, by outcome", ["outcome"])
HALTED_REFUSED = Gauge("md_halted_refused_total", "Trades and book changes refused because the instrument is halted",
                       ["kind"])
STREAM_SUBSCRIBERS = Gauge("md_stream_subscribers", "Open stream subscriptions")
STREAM_QUEUED = Gauge("md_stream_queued_updates", "Updates queued for subscribers (all streams)")
STREAM_CONFLATED = Gauge("md_stream_conflated_total", "Updates replaced by newer ones for slow subscribers")
STREAM_DROPPED = Gauge("md_stream_dropped_total", "Book deltas dropped for lagging subscribers (resynced)")
FEED_UP = Gauge("md_feed_up", "1 while a feed is live (or done replaying), else 0", ["feed"])
FEED_AGE_MS = Gauge("md_feed_last_event_age_ms", "Milliseconds since the feed last delivered data (-1: never)",
                    ["feed"])
FEED_EVENTS = Gauge("md_feed_events_total", "Events a feed delivered", ["feed"])
FEED_RECONNECTS = Gauge("md_feed_reconnects_total", "Reconnections of a feed", ["feed"])
FEED_GAPS = Gauge("md_feed_gaps_total", "Sequence gaps a feed detected", ["feed"])
FEED_CHECKSUMS = Gauge("md_feed_checksum_failures_total", "Book checksum failures of a feed", ["feed"])
FEED_DEAD_LETTERS = Gauge("md_feed_dead_letters_total", "Inputs a feed could not parse (dead letters)", ["feed"])
SOURCE_ACTIVE = Gauge("md_source_active", "1 for the active source of a composite venue, else 0",
                      ["symbol", "source"])
SOURCE_HEALTHY = Gauge("md_source_healthy", "1 while a ranked source is healthy, else 0", ["symbol", "source"])
SOURCE_FAILOVERS = Gauge("md_source_failovers_total", "Failovers of a symbol's composite venue", ["symbol"])
SOURCE_RESTORES = Gauge("md_source_restores_total", "Restores to a higher-ranked source", ["symbol"])
SOURCE_GAP_MS = Gauge("md_source_last_gap_ms", "Gap of the last source switch of a symbol, ms", ["symbol"])


class MetricsUpdater:
    """Copies engine/runtime state into the gauges every ``interval_s``."""

    def __init__(self, runtime: Runtime, interval_s: float = 1.0, hub: Hub | None = None) -> None:
        self.runtime = runtime
        self.hub = hub
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def on_updates(self, updates: list[object]) -> None:
        """Runtime listener: counts closed candles as they are emitted."""
        closed = 0
        for u in updates:
            if getattr(u, "closed", False) is True and type(u).__name__ == "Candle":
                closed += 1
        if closed:
            CANDLES_CLOSED.inc(closed)

    def refresh(self) -> None:
        engine = self.runtime.engine
        INGEST_LAG_MS.labels("engine").set(self.runtime.last_batch_lag_ns / 1e6)
        EVENTS_APPLIED.set(self.runtime.events_applied)
        INGEST_QUEUE.set(self.runtime.queue_depth)
        STORAGE_BACKLOG.set(self.runtime.storage_backlog)
        DUPLICATES.set(engine.counters.duplicate_trades)
        if self.hub is not None:
            subscribers, queued, conflated, dropped = self.hub.stats()
            STREAM_SUBSCRIBERS.set(subscribers)
            STREAM_QUEUED.set(queued)
            STREAM_CONFLATED.set(conflated)
            STREAM_DROPPED.set(dropped)
        for status in feed_statuses(self.runtime.feeds):
            name = status.name
            FEED_UP.labels(name).set(1 if status.state in ("live", "done") else 0)
            FEED_AGE_MS.labels(name).set(-1 if status.last_event_age_ns is None else status.last_event_age_ns / 1e6)
            FEED_EVENTS.labels(name).set(status.events)
            FEED_RECONNECTS.labels(name).set(status.reconnects)
            FEED_GAPS.labels(name).set(status.gaps)
            FEED_CHECKSUMS.labels(name).set(status.checksum_failures)
            FEED_DEAD_LETTERS.labels(name).set(status.dead_letters)
        per_symbol: dict[str, int] = {}
        for (_, symbol), n in engine.counters.sequence_gaps.items():
            per_symbol[symbol] = per_symbol.get(symbol, 0) + n
        for symbol, n in per_symbol.items():
            SEQ_GAPS.labels(symbol).set(n)
        counters = engine.counters
        mismatches: dict[str, int] = {}
        for (_, symbol), n in counters.checksum_failures.items():
            mismatches[symbol] = mismatches.get(symbol, 0) + n
        for symbol, n in mismatches.items():
            BOOK_HASH_MISMATCHES.labels(symbol).set(n)
        BOOK_CHECKS.labels("verified").set(counters.book_checks_verified)
        BOOK_CHECKS.labels("mismatch").set(sum(mismatches.values()))
        BOOK_CHECKS.labels("unverifiable").set(counters.book_checks_unverifiable)
        HALTED_REFUSED.labels("trade").set(counters.halted_trades)
        HALTED_REFUSED.labels("book").set(counters.halted_book_changes)
        router = self.runtime.router
        if router is not None:
            for state in router.states():
                for source, healthy in zip(state.sources, state.healthy, strict=True):
                    SOURCE_ACTIVE.labels(state.symbol, source).set(1 if source == state.active else 0)
                    SOURCE_HEALTHY.labels(state.symbol, source).set(1 if healthy else 0)
                SOURCE_FAILOVERS.labels(state.symbol).set(state.failovers)
                SOURCE_RESTORES.labels(state.symbol).set(state.restores)
                SOURCE_GAP_MS.labels(state.symbol).set(state.last_gap_ns / 1e6)
        for index_config in engine.config.indices:
            index = engine.index_price(index_config.symbol)
            if index is None:
                continue
            for src in index.components:
                INDEX_STALENESS_MS.labels(index_config.symbol, src.venue, src.symbol).set(
                    max(0, engine.now - index.ts) / 1e6)

    async def run(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(self.interval_s)

    def start(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the exporter (port 0: a free one) and the refresher; returns the bound port."""
        server, _thread = start_http_server(port, addr=host)
        self._task = asyncio.create_task(self.run(), name="mds-metrics")
        return int(server.server_port)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
