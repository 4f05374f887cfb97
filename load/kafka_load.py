"""Kafka consume-to-engine throughput and lag: a real broker, the matching engine played by a producer.

``python -m load.kafka_load [--events 200000] [--rate 20000] [--seconds 10] [--in-flight N]`` starts an Apache
Kafka broker (KRaft, one node, 127.0.0.1; ``tests/kafka_broker.py``, jars from Maven Central), creates
``engine.event.v1`` with 4 partitions, and measures two things with ``KafkaFeed`` feeding a real
``Runtime`` (engine and embedded chdb storage; each batch's offsets committed after its
``Runtime.barrier()``, with up to ``--in-flight`` batches delivered while their barriers are pending;
``--in-flight 1`` is the strict poll / barrier / commit cycle):

1. **Backlog drain**: ``--events`` book deltas and trades over 20 symbols are produced first; then the
   feed consumes them. Prints events/s from the first applied event to the last.
2. **At a produce rate**: the producer sends ``--rate`` events/s for ``--seconds`` while the feed
   consumes. Prints applied events/s and the lag from the producer's stamp (``ts_engine_ns``, the
   record's event time) to the engine applying it: p50/p99/max, sampled per applied batch.

Both also print the feed's commits, the most batches it had in flight and the storage writes. Everything
runs on loopback, bounded in count and time; the broker is stopped at the end. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from feeds.kafka.consumer import DEFAULT_MAX_IN_FLIGHT, KafkaFeed, KafkaFeedConfig
from feeds.kafka.parser import TOPIC_EVENTS
from feeds.kafka.producer import EngineEncoder, EngineProducer, Record
from server.engine.engine import Engine
from server.engine.events import BookDelta, Side, Trade
from server.runtime import BatchWriter, Runtime
from server.storage import EmbeddedStore
from tests.kafka_broker import kafka_broker

S = 1_000_000_000
SYMBOLS = tuple(f"SYM{i}/USD" for i in range(20))
PARTITIONS = 4


class Workload:
    """Deterministic matching-engine output: per symbol a snapshot, then deltas with a trade every 8th."""

    def __init__(self, prefix: str) -> None:
        self.encoder = EngineEncoder("engine", topic_prefix=prefix)
        self.prefix = prefix
        self.n = 0

    def first(self) -> list[Record]:
        now = time.time_ns()
        return [self.encoder.snapshot(s, [(100 * S, S)], [(101 * S, S)], now) for s in SYMBOLS]

    def next(self, count: int) -> list[Record]:
        out = []
        now = time.time_ns()
        for _ in range(count):
            i = self.n
            self.n += 1
            symbol = SYMBOLS[i % len(SYMBOLS)]
            if i % 8 == 0:
                out.append(self.encoder.trade(symbol, f"{self.prefix}t{i}", 100 * S + i % 1000, S, Side.BUY, now))
            else:
                out.append(self.encoder.delta(symbol, [(100 * S - (i % 50) * S // 100, S + i % 7)], [], now))
        return out


class Probe:
    """A runtime listener: counts applied trades and deltas and samples apply-time minus event time."""

    def __init__(self) -> None:
        self.applied = 0
        self.first_ns = 0
        self.last_ns = 0
        self.lags: list[int] = []

    def __call__(self, updates: list[object]) -> None:
        now = time.time_ns()
        n = 0
        sample = None
        for u in updates:
            if type(u) is Trade or type(u) is BookDelta:
                n += 1
                if sample is None:
                    sample = u
        if n:
            if not self.first_ns:
                self.first_ns = now
            self.last_ns = now
            self.applied += n
            assert sample is not None
            self.lags.append(now - sample.ts_event)


class CountingWriter:
    """The store, counting the storage thread's writes (each barrier may force one)."""

    def __init__(self, store: BatchWriter) -> None:
        self.store = store
        self.writes = 0

    def write_batch(self, records: list[object]) -> int:
        self.writes += 1
        return self.store.write_batch(records)

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.close()


def _pct(values: list[int], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))] / 1e6 if v else float("nan")


async def _until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return False


async def run(bootstrap: str, events: int, rate: int, seconds: float, in_flight: int) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "kafka_load", "events": events, "rate": rate, "seconds": seconds,
                              "in_flight": in_flight}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{p}{TOPIC_EVENTS}", PARTITIONS, 1) for p in ("drain.", "rate.")])
    finally:
        await admin.close()
    with tempfile.TemporaryDirectory(prefix="mds-kafka-load.") as tmp:
        store = CountingWriter(EmbeddedStore.open(tmp))
        async with EngineProducer(bootstrap) as producer:
            # 1. Backlog drain.
            work = Workload("drain.")
            await producer.send(work.first())
            started = time.perf_counter()
            for _ in range(0, events, 5000):
                await producer.send(work.next(5000))
            result["produce_events_per_s"] = round(work.n / (time.perf_counter() - started))
            probe = Probe()
            runtime = Runtime(Engine(), [], storage=store, tick_interval_s=0.1)  # stopped at the very end
            runtime.listeners.append(probe)
            feed = KafkaFeed(KafkaFeedConfig(bootstrap=bootstrap, group_id="drain", topic_prefix="drain.",
                                             topics=(TOPIC_EVENTS,), max_in_flight=in_flight), name="kafka-drain")
            await runtime.start()
            writes = store.writes
            task = asyncio.create_task(feed.run(runtime))
            await _until(lambda: probe.applied >= work.n, 300)
            await _until(lambda: feed.in_flight == 0, 10)  # the last commits
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            span = (probe.last_ns - probe.first_ns) / 1e9
            result["drain_applied"] = probe.applied
            result["drain_events_per_s"] = round(probe.applied / span) if span > 0 else None
            result["drain_commits"] = feed.commits
            result["drain_batches"] = feed.batches
            result["drain_in_flight_peak"] = feed.in_flight_peak
            result["drain_storage_writes"] = store.writes - writes
            print(f"drain: {probe.applied:,} events applied at {result['drain_events_per_s']:,} events/s "
                  f"(produced at {result['produce_events_per_s']:,}/s beforehand); {feed.batches} batches, "
                  f"{feed.commits} commits, at most {feed.in_flight_peak} batches in flight, "
                  f"{result['drain_storage_writes']} storage writes")

            # 2. At a produce rate.
            work = Workload("rate.")
            probe = Probe()
            runtime.listeners[-1] = probe
            feed = KafkaFeed(KafkaFeedConfig(bootstrap=bootstrap, group_id="rate", topic_prefix="rate.",
                                             topics=(TOPIC_EVENTS,), auto_offset_reset="earliest",
                                             max_in_flight=in_flight), name="kafka-rate")
            task = asyncio.create_task(feed.run(runtime))
            await producer.send(work.first())
            await _until(lambda: feed.warm, 60)
            probe.lags.clear()
            writes, commits, batches = store.writes, feed.commits, feed.batches
            tick = 0.01
            started = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(elapsed * rate) - sent
                if due > 0:
                    await producer.send(work.next(due))
                    sent += due
                await asyncio.sleep(tick)
            await _until(lambda: probe.applied >= sent, 60)
            await _until(lambda: feed.in_flight == 0, 10)
            result["rate_batches"] = feed.batches - batches
            result["rate_commits"] = feed.commits - commits
            result["rate_in_flight_peak"] = feed.in_flight_peak
            result["rate_storage_writes"] = store.writes - writes
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.stop(5.0)  # also closes the store
            result.update({
                "rate_sent": sent, "rate_applied": probe.applied,
                "rate_send_events_per_s": round(sent / seconds),
                "lag_ms": {"p50": _pct(probe.lags, 0.5), "p99": _pct(probe.lags, 0.99),
                           "max": _pct(probe.lags, 1.0), "samples": len(probe.lags)},
            })
            lag = result["lag_ms"]
            print(f"at {rate:,} events/s for {seconds:g} s: sent {sent:,}, applied {probe.applied:,}; "
                  f"produce-to-engine lag p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms, "
                  f"max {lag['max']:.1f} ms; {result['rate_batches']} batches, {result['rate_commits']} commits, "
                  f"at most {result['rate_in_flight_peak']} batches in flight, "
                  f"{result['rate_storage_writes']} storage writes")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rate", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                   help="most batches delivered and not yet committed (default %(default)s; 1: no pipelining)")
    args = p.parse_args()
    if (not 0 < args.events <= 2_000_000 or not 0 < args.rate <= 200_000 or not 0 < args.seconds <= 120
            or not 0 < args.in_flight <= 1000):
        p.error("--events 1..2000000, --rate 1..200000, --seconds 0..120, --in-flight 1..1000")
    with kafka_broker() as broker:
        result = asyncio.run(run(broker.bootstrap, args.events, args.rate, args.seconds, args.in_flight))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
