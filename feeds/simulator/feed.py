"""``SimulatorFeed``: runs the market model in real time and delivers its events to a sink in batches.

Every tick (``SimulatorConfig.tick_ns``, 2 ms by default) the feed reads the event loop's monotonic clock,
works out how many events are due at the configured rate since it started, asks the model for exactly
those and awaits ``sink.put(batch)``: one batch per tick, never a task per event. A batch's events carry
the wall clock (``time.time_ns()``) at the moment they are generated, held non-decreasing, so event-to-client
latency measured against them is the service's own.
The initial snapshots go out first, in their own batch, before any paced event; ``warm`` turns True once
that batch was accepted by the sink.

If the sink holds the feed back (backpressure) for longer than ``max_lag_seconds``, the backlog beyond
that is skipped rather than delivered in one huge burst (the market is synthetic; nothing is lost that a
consumer could miss). A backlog within that bound goes out in batches of about ``max_batch_events``, each
generated when the sink takes the one before: one long step would hold the event loop for its whole
length. Cancelling ``run`` is safe at any await: the model is only advanced for batches
that are handed to the sink.
"""

from __future__ import annotations

import asyncio
import time

from feeds.protocols import EventSink, FeedStatus
from feeds.simulator.config import SimulatorConfig
from feeds.simulator.model import MarketSimulator
from server.engine.events import Event

_NS_PER_S = 1_000_000_000


class SimulatorFeed:
    """The simulator as a ``feeds.protocols.Feed``."""

    def __init__(self, config: SimulatorConfig | None = None, *, name: str = "simulator",
                 tick_seconds: float | None = None, max_lag_seconds: float = 1.0,
                 max_batch_events: int = 1000) -> None:
        self.config = config if config is not None else SimulatorConfig()
        if tick_seconds is None:
            tick_seconds = self.config.tick_ns / _NS_PER_S
        if not 0.0 < tick_seconds <= 1.0:
            raise ValueError("tick_seconds must be within (0, 1]")
        if max_lag_seconds < tick_seconds:
            raise ValueError("max_lag_seconds must be >= tick_seconds")
        if max_batch_events < 1:
            raise ValueError("max_batch_events must be >= 1")
        self.name = name
        self.model = MarketSimulator(self.config)
        self.tick_seconds = tick_seconds
        self.max_lag_seconds = max_lag_seconds
        self.max_batch_events = max_batch_events
        self.batches = 0
        self.events = 0
        self.skipped = 0
        """Events not generated because the sink held the feed back for more than ``max_lag_seconds``."""
        self._warm = False
        self._running = False
        self._last_ns = 0

    @property
    def warm(self) -> bool:
        return self._warm

    async def run(self, sink: EventSink) -> None:
        """Generate and deliver events until cancelled."""
        self._running = True
        loop = asyncio.get_running_loop()
        rate = self.config.events_per_second
        model = self.model
        start = loop.time()
        max_lag = int(self.max_lag_seconds * rate)
        max_batch = self.max_batch_events
        last_ns = 0

        def now_ns() -> int:
            nonlocal last_ns
            last_ns = max(time.time_ns(), last_ns)
            return last_ns

        if model.pending_snapshots:
            await self._deliver(sink, model.step(now_ns(), model.pending_snapshots))
        self._warm = model.warm
        done = 0  # events accounted for at the configured rate since start (delivered or skipped)
        tick = self.tick_seconds
        next_tick = start
        while True:
            next_tick += tick
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()  # late: do not try to catch up on ticks, only on events
                await asyncio.sleep(0)
            elapsed = loop.time() - start
            due = int(elapsed * rate) - done
            if due > max_lag:
                self.skipped += due - max_lag
                done += due - max_lag
                due = max_lag
            if due <= 0:
                continue
            due = min(due, max_batch)  # the rest is still due at the next turn
            batch = model.step(now_ns(), due)
            done += due
            await self._deliver(sink, batch)
            if not self._warm:
                self._warm = model.warm

    def status(self) -> FeedStatus:
        """ReportsStatus: the simulator is live once its snapshots are out."""
        state = "live" if self._warm else "connecting" if self._running else "stopped"
        age = time.monotonic_ns() - self._last_ns if self._last_ns else None
        detail = f"{self.config.events_per_second} events/s"
        if self.skipped:
            detail += f"; {self.skipped} events skipped while the sink held the feed back"
        return FeedStatus(self.name, "sim", state, age, self.events, detail=detail)

    async def _deliver(self, sink: EventSink, batch: list[Event]) -> None:
        if batch:
            await sink.put(batch)
            self.batches += 1
            self.events += len(batch)
            self._last_ns = time.monotonic_ns()
