"""Failover time of a composite venue when its primary source goes silent, in a real ``Runtime``.

``python -m load.failover_bench [--trials 20] [--silence-ms 600] [--threshold-ms 250] [--hold-ms 300]
[--tick-ms 100] [--rate 500] [--seed 1]`` runs the runtime (engine, clock ticks, router; no storage, no
gRPC) with two scripted feeds of one instrument, ``primary`` ranked before ``backup``, each sending book
deltas and trades at ``--rate`` events/s. Each trial waits a random 0.3-1.0 s, silences the primary for
``--silence-ms``, lets it come back with a fresh snapshot (as after a reconnect) and waits for the restore.

Figures, over the trials:

- failover time: from the primary's last event (its receive time) to the first composite event taken
  from the backup (when the runtime hands it to listeners). It is the silence threshold plus up to one
  clock tick plus the engine round;
- restore time: from the primary's first event after its silence to the first composite event taken from
  it again; it includes the hold-down (``--hold-ms``), shown apart;
- the trades of the backup received in the gap and replayed into the composite.

The whole run is bounded to about 85 s: trials that would not fit are dropped, and the output says so.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

from feeds.protocols import EventSink, FeedStatus
from server.engine.engine import Engine, EngineConfig
from server.engine.events import BookDelta, BookSnapshot, Event, Side, Trade
from server.engine.quality import QualityFlag, QualityKind
from server.engine.sources import SourcePolicy
from server.runtime import Runtime

MS = 1_000_000
SYMBOL = "BTC/USD"
COMPOSITE = "composite"
TICK = 10**8  # price tick, 0.1 at 1e-9
MID = 65_000 * 10**9
BUDGET_S = 85.0


class ScriptedFeed:
    """One venue, one symbol: a snapshot, then deltas (sizes on a fixed ladder) and trades at ``rate``.

    ``silent`` stops delivery; the first batch after a silence starts with a fresh snapshot, and
    ``returned_ns`` is its receive time."""

    def __init__(self, venue: str, rate: int, seed: int) -> None:
        self.name = f"bench-{venue}"
        self.venue = venue
        self.rate = rate
        self.silent = False
        self.returned_ns = 0
        self.last_ns = 0
        self.events = 0
        self._rnd = random.Random(seed)
        self._seq = 0
        self._tid = 0
        self._bids = {MID - k * TICK: 10**9 for k in range(1, 11)}
        self._asks = {MID + k * TICK: 10**9 for k in range(1, 11)}
        self._warm = False

    @property
    def warm(self) -> bool:
        return self._warm

    def status(self) -> FeedStatus:
        age = time.time_ns() - self.last_ns if self.last_ns else None
        return FeedStatus(self.name, "bench", "live", age, self.events)

    def _snapshot(self, now: int) -> BookSnapshot:
        self._seq += 1
        return BookSnapshot(self.venue, SYMBOL, self._seq, tuple(self._bids.items()), tuple(self._asks.items()),
                            now, now)

    def _event(self, now: int) -> Event:
        rnd = self._rnd
        if rnd.random() < 0.2:
            self._tid += 1
            return Trade(self.venue, SYMBOL, str(self._tid), MID + rnd.choice((-TICK, TICK)),
                         rnd.randint(1, 100) * 10**7, Side.BUY if rnd.random() < 0.5 else Side.SELL, now, now)
        self._seq += 1
        k = rnd.randint(1, 10)
        size = rnd.randint(1, 100) * 10**7
        if rnd.random() < 0.5:
            self._bids[MID - k * TICK] = size
            return BookDelta(self.venue, SYMBOL, self._seq, self._seq, ((MID - k * TICK, size),), (), now, now)
        self._asks[MID + k * TICK] = size
        return BookDelta(self.venue, SYMBOL, self._seq, self._seq, (), ((MID + k * TICK, size),), now, now)

    async def run(self, sink: EventSink) -> None:
        loop = asyncio.get_running_loop()
        await sink.put([self._snapshot(time.time_ns())])
        self._warm = True
        due = 0.0
        last = loop.time()
        was_silent = False
        while True:
            await asyncio.sleep(0.01)
            t = loop.time()
            due += (t - last) * self.rate
            last = t
            if self.silent:
                was_silent = True
                due = 0.0
                continue
            now = time.time_ns()
            batch: list[Event] = []
            if was_silent:
                was_silent = False
                batch.append(self._snapshot(now))
                self.returned_ns = now
            n = int(due)
            due -= n
            batch.extend(self._event(now) for _ in range(n))
            if batch:
                self.last_ns = now
                self.events += len(batch)
                await sink.put(batch)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def bench(trials: int, silence_ms: int, threshold_ms: int, hold_ms: int, tick_ms: int, rate: int,
                seed: int) -> dict[str, object]:
    rnd = random.Random(seed)
    primary = ScriptedFeed("primary-src", rate, seed)
    backup = ScriptedFeed("backup-src", rate, seed + 1)
    policy = SourcePolicy(symbol=SYMBOL, sources=(primary.venue, backup.venue),
                          silence_ns=(threshold_ms * MS, threshold_ms * MS), composite=COMPOSITE,
                          hold_ns=hold_ms * MS)
    engine = Engine(EngineConfig(trade_spikes=None, quote_spikes=None))
    runtime = Runtime(engine, [primary, backup], tick_interval_s=tick_ms / 1000, sources=[policy])
    failover_ms: list[float] = []
    restore_ms: list[float] = []
    pending: dict[str, asyncio.Future[None]] = {}

    def on_updates(updates: list[object]) -> None:
        seen = time.time_ns()
        for i, u in enumerate(updates):
            if type(u) is not QualityFlag or u.venue != COMPOSITE:
                continue
            # the switch's composite events follow its flag in the same list
            follows = any(type(v) in (BookSnapshot, Trade) and getattr(v, "venue", "") == COMPOSITE
                          for v in updates[i + 1:])
            if not follows:
                continue
            if u.kind is QualityKind.SOURCE_FAILOVER and u.detail.startswith(f"{primary.venue} -> {backup.venue}"):
                failover_ms.append((seen - u.ts_event) / MS)
                fut = pending.pop("failover", None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif u.kind is QualityKind.SOURCE_RESTORED and u.detail.startswith(f"{backup.venue} -> {primary.venue}"):
                restore_ms.append((seen - primary.returned_ns) / MS)
                fut = pending.pop("restore", None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    runtime.listeners.append(on_updates)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    per_trial_s = 0.65 + silence_ms / 1000 + hold_ms / 1000 + 2 * tick_ms / 1000 + 0.3
    planned = trials
    trials = max(1, min(trials, int((BUDGET_S - 2.0) / per_trial_s)))
    done = 0
    timeouts = 0
    await runtime.start()
    try:
        await asyncio.sleep(0.5 + hold_ms / 1000 + 2 * tick_ms / 1000)  # the composite takes the primary
        for _ in range(trials):
            if time.monotonic() - started > BUDGET_S - per_trial_s:
                break
            await asyncio.sleep(rnd.uniform(0.3, 1.0))
            pending["failover"] = loop.create_future()
            pending["restore"] = loop.create_future()
            primary.silent = True
            try:
                await asyncio.wait_for(asyncio.shield(pending["failover"]), silence_ms / 1000 + 1.0)
            except TimeoutError:
                timeouts += 1
            remaining = silence_ms / 1000 - (time.time_ns() - primary.last_ns) / 1e9
            if remaining > 0:
                await asyncio.sleep(remaining)
            primary.silent = False
            try:
                await asyncio.wait_for(asyncio.shield(pending["restore"]), hold_ms / 1000 + 2.0)
            except TimeoutError:
                timeouts += 1
            pending.clear()
            done += 1
    finally:
        await runtime.stop(1.0)
    router = runtime.router
    switches = list(router.switches) if router is not None else []
    replayed = [s.replayed_trades for s in switches if s.kind is QualityKind.SOURCE_FAILOVER]
    return {
        "trials": done,
        "trials_asked": planned,
        "silence_ms": silence_ms,
        "threshold_ms": threshold_ms,
        "hold_ms": hold_ms,
        "tick_ms": tick_ms,
        "rate_per_feed": rate,
        "failover_ms": {"p50": round(_pct(failover_ms, 0.5), 1), "p99": round(_pct(failover_ms, 0.99), 1),
                        "min": round(min(failover_ms, default=float("nan")), 1),
                        "max": round(max(failover_ms, default=float("nan")), 1), "n": len(failover_ms)},
        "failover_beyond_threshold_ms": {"p50": round(_pct(failover_ms, 0.5) - threshold_ms, 1),
                                         "p99": round(_pct(failover_ms, 0.99) - threshold_ms, 1)},
        "restore_ms": {"p50": round(_pct(restore_ms, 0.5), 1), "p99": round(_pct(restore_ms, 0.99), 1),
                       "n": len(restore_ms)},
        "restore_beyond_hold_ms": {"p50": round(_pct(restore_ms, 0.5) - hold_ms, 1),
                                   "p99": round(_pct(restore_ms, 0.99) - hold_ms, 1)},
        "gap_trades_replayed_mean": round(statistics.fmean(replayed), 1) if replayed else 0,
        "timeouts": timeouts,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.failover_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--silence-ms", type=int, default=600, help="how long the primary stays silent")
    parser.add_argument("--threshold-ms", type=int, default=250, help="the primary's silence threshold")
    parser.add_argument("--hold-ms", type=int, default=300, help="hold-down before the primary takes over again")
    parser.add_argument("--tick-ms", type=int, default=100, help="clock tick (the service's default is 100)")
    parser.add_argument("--rate", type=int, default=500, help="events/s per feed")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.trials < 1 or args.silence_ms <= args.threshold_ms or args.threshold_ms <= 0 or args.tick_ms <= 0:
        parser.error("need --trials >= 1 and --silence-ms > --threshold-ms > 0")
    result = asyncio.run(bench(args.trials, args.silence_ms, args.threshold_ms, args.hold_ms, args.tick_ms,
                               args.rate, args.seed))
    fo, rs = result["failover_ms"], result["restore_ms"]
    assert isinstance(fo, dict) and isinstance(rs, dict)
    print(f"{result['trials']} trials (asked {result['trials_asked']}), primary silent {args.silence_ms} ms, "
          f"threshold {args.threshold_ms} ms, tick {args.tick_ms} ms, hold-down {args.hold_ms} ms, "
          f"{args.rate} events/s per feed")
    print(f"failover time: p50 {fo['p50']} ms, p99 {fo['p99']} ms (min {fo['min']}, max {fo['max']}; "
          "from the primary's last event to the first composite event from the backup)")
    print(f"restore time: p50 {rs['p50']} ms, p99 {rs['p99']} ms (from the primary's return, hold-down "
          "included)")
    print(f"backup trades of the gap replayed per failover: {result['gap_trades_replayed_mean']}; "
          f"timeouts {result['timeouts']}; {result['elapsed_s']} s")
    print(json.dumps(result))
    return 0 if not result["timeouts"] else 1


if __name__ == "__main__":
    sys.exit(main())
