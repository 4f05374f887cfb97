"""Nothing lost, nothing counted twice: ``mds serve`` fed by Kafka, SIGKILLed while the engine keeps producing.

``python -m load.kafka_sigkill [--rate 400] [--seconds 40] [--kills 2] [--symbols 4] [--speed 20]`` starts an
Apache Kafka broker (KRaft, one node, 127.0.0.1; ``tests/kafka_broker.py``), creates ``engine.event.v1``
with 4 partitions and runs ``mds serve --feed kafka:...`` as a subprocess on a data directory. A producer
plays the matching engine at ``--rate`` events/s (half trades, half book deltas over ``--symbols``
symbols, after one snapshot each) for ``--seconds``; event times run on a synthetic clock ``--speed`` times
faster than the wall clock, so a run makes many minutes of 1m candles. ``--kills`` times, evenly spread,
the service is SIGKILLed, left down ``--down`` seconds while the producer goes on, and started again on the
same data directory (its consumer group resumes from the last committed offsets).

At the end the producer stops, the service catches up, its served 1m candles and books are read over
gRPC, it is stopped (SIGTERM) and its storage opened here. Printed: trades and book deltas produced,
stored, lost and duplicated (by id / sequence); closed 1m candles stored and served whose OHLC, volume,
quote volume or trade count differ from the exact aggregate of the produced trades of their minute, and
minutes with trades that have no closed candle (every minute but each symbol's last, still open);
books served that differ from the producer's; and per restart: time down, restore time (the service's
log), time from the restart until it has applied everything produced before the restart, and until
it serves trades produced after it. The last line printed is one JSON object.

``run`` is also the end-to-end test's scenario (tests/e2e/test_kafka_crash.py). Everything it starts is
stopped at the end (the service and the broker also die with this process on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from feeds.kafka.parser import TOPIC_EVENTS
from feeds.kafka.producer import EngineEncoder, EngineProducer, Record
from server.engine.candles import MINUTE_NS, Interval
from server.engine.events import BookDelta, Side
from server.engine.numbers import div_round

S = 1_000_000_000
ROOT = Path(__file__).resolve().parents[1]
VENUE = "engine"
PARTITIONS = 4
BASE_NS = 1_709_251_200 * S
"""2024-03-01T00:00:00Z: where the synthetic event clock starts (a day start: the whole run is one day)."""
START_TIMEOUT_S = 60.0
CATCH_UP_TIMEOUT_S = 120.0


@dataclass
class Workload:
    """The matching engine's output: a snapshot per symbol, then alternately a trade and a book delta;
    remembers every trade and the book each symbol should have."""

    prefix: str
    symbols: tuple[str, ...]
    step_ns: int
    encoder: EngineEncoder = field(init=False)
    n: int = 0
    trades: dict[str, list[tuple[int, int, int, int, Side]]] = field(default_factory=lambda: defaultdict(list))
    """symbol -> (trade number, price, size, ts_event, side), in produce order."""
    deltas: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    """symbol -> the sequences of its deltas."""
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.encoder = EngineEncoder(VENUE, topic_prefix=self.prefix)

    def first(self) -> list[Record]:
        out = []
        for symbol in self.symbols:
            bids = {100 * S - k * S // 100: S for k in range(1, 11)}
            asks = {100 * S + k * S // 100: S for k in range(1, 11)}
            self.books[symbol] = (bids, asks)
            out.append(self.encoder.snapshot(symbol, sorted(bids.items(), reverse=True), sorted(asks.items()),
                                             BASE_NS))
        return out

    def next(self, count: int) -> list[Record]:
        return [self._one(trade=None) for _ in range(count)]

    def last_trades(self) -> list[Record]:
        """One trade per symbol: once it is applied, everything before it (same partition) is too."""
        return [self._one(trade=True, symbol=s) for s in self.symbols]

    def trade_count(self) -> int:
        return sum(len(t) for t in self.trades.values())

    def last_trade_number(self) -> dict[str, int]:
        return {s: t[-1][0] for s, t in self.trades.items() if t}

    def _one(self, trade: bool | None, symbol: str | None = None) -> Record:
        i = self.n
        self.n += 1
        sym = symbol or self.symbols[i % len(self.symbols)]
        j = i // len(self.symbols)  # the symbol's own count
        ts = BASE_NS + i * self.step_ns
        if trade or (trade is None and j % 2 == 0):
            price = 100 * S + (i * 7919 % 200 - 100) * S // 1000
            size = (1 + i % 9) * S // 100
            side = Side.BUY if i % 3 else Side.SELL
            self.trades[sym].append((i, price, size, ts, side))
            return self.encoder.trade(sym, str(i), price, size, side, ts)
        bids, asks = self.books[sym]
        level = (j // 4) % 10 + 1
        size = (j % 5) * S // 10  # 0 deletes the level
        if (j // 2) % 2:
            price, levels, change = 100 * S - level * S // 100, bids, "bids"
        else:
            price, levels, change = 100 * S + level * S // 100, asks, "asks"
        if size:
            levels[price] = size
        else:
            levels.pop(price, None)
        record = self.encoder.delta(sym, [(price, size)] if change == "bids" else [],
                                    [(price, size)] if change == "asks" else [], ts)
        self.deltas[sym].append(self.encoder.book_sequence[sym])
        return record


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``mds serve`` as a subprocess (own process group; its output in a log file)."""

    def __init__(self, data_dir: Path, feed: str, log_path: Path) -> None:
        self.port = _free_port()
        self.log_path = log_path
        args = [sys.executable, "-m", "server.cli", "serve", "--grpc-port", str(self.port), "--metrics-port", "-1",
                "--data-dir", str(data_dir), "--feed", feed]
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509  # no threads run the fork

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_started(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while "mds: gRPC on" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mds serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mds serve did not start within {timeout:.0f} s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    def restore_seconds(self) -> float | None:
        found = re.search(r"restored \d+ trades .*? in ([0-9.]+) s", self.log())
        return float(found.group(1)) if found else None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful: storage flushed), then SIGKILL if it takes longer than ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


class Reader:
    """The service's gRPC reads used here (blocking stubs; call through ``asyncio.to_thread``)."""

    def __init__(self, port: int) -> None:
        import grpc
        from marketdata.v1 import market_data_service_pb2, market_data_service_pb2_grpc

        self._pb = market_data_service_pb2
        self._grpc = grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = market_data_service_pb2_grpc.MarketDataServiceStub(self.channel)

    def newest_trades(self, symbols: tuple[str, ...]) -> dict[str, int]:
        """symbol -> number of the newest trade the engine applied (-1: none yet, or not serving)."""
        out = {}
        for symbol in symbols:
            try:
                got = self.stub.GetRecentTrades(self._pb.GetRecentTradesRequest(symbol=symbol, limit=1), timeout=2)
                out[symbol] = int(got.trades[0].trade_id) if got.trades else -1
            except self._grpc.RpcError:
                out[symbol] = -1
        return out

    def closed_minutes(self, symbol: str) -> list[Any]:
        from marketdata.v1 import candle_pb2

        request = self._pb.GetCandlesRequest(symbol=symbol, venue=VENUE, interval=candle_pb2.CANDLE_INTERVAL_M1,
                                             start_ns=BASE_NS, limit=10_000)
        got = self.stub.GetCandles(request, timeout=10)
        return [c for c in got.candles if c.closed]

    def book(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        got = self.stub.GetOrderBook(self._pb.GetOrderBookRequest(symbol=symbol, venue=VENUE, depth=100), timeout=5)
        book = got.venue_book
        return [(lv.price, lv.size) for lv in book.bids], [(lv.price, lv.size) for lv in book.asks]

    def close(self) -> None:
        self.channel.close()


async def _until_caught_up(reader: Reader, target: dict[str, int], timeout: float) -> float | None:
    """Seconds until every symbol's newest applied trade is at least ``target``'s (None: timed out)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        got = await asyncio.to_thread(reader.newest_trades, tuple(target))
        if all(got[s] >= n for s, n in target.items()):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


def _expected_minutes(trades: list[tuple[int, int, int, int, Side]]) -> dict[int, tuple[int, ...]]:
    """open time -> (open, high, low, close, volume, quote volume, trade count) of each minute's trades."""
    by_minute: dict[int, list[tuple[int, int, int, int, Side]]] = defaultdict(list)
    for t in trades:
        by_minute[t[3] - t[3] % MINUTE_NS].append(t)
    out: dict[int, tuple[int, ...]] = {}
    for minute, ts in by_minute.items():
        ts.sort(key=lambda t: t[3])  # stable: produce order within a nanosecond
        prices = [t[1] for t in ts]
        out[minute] = (prices[0], max(prices), min(prices), prices[-1], sum(t[2] for t in ts),
                       sum(t[1] * t[2] for t in ts), len(ts))
    return out


def _decimal(d: Any) -> int:
    return int(d.units) * S + int(d.nanos)


def _check_candles(expected: Mapping[int, tuple[int, ...]], got: Mapping[int, tuple[int, ...]], last_minute: int
                   ) -> tuple[int, int]:
    """(mismatched, missing): closed candles unlike their minute's trades; minutes but the last without one."""
    mismatched = sum(1 for minute, values in got.items() if expected.get(minute) != values)
    missing = sum(1 for minute in expected if minute != last_minute and minute not in got)
    return mismatched, missing


async def run(bootstrap: str, *, rate: int = 400, seconds: float = 40.0, kills: int = 2, symbols: int = 4,
              speed: float = 20.0, down_s: float = 1.0, workdir: Path | None = None,
              static: bool = False) -> dict[str, Any]:
    """The scenario of the module docstring; returns the figures (see ``main`` for the printout)."""
    run_id = f"sigkill{os.getpid()}x{time.monotonic_ns() % 10**9}"
    prefix = f"{run_id}."
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + TOPIC_EVENTS, PARTITIONS, 1)])
    finally:
        await admin.close()
    names = tuple(f"SYM{i}/USD" for i in range(symbols))
    work = Workload(prefix, names, max(1, int(speed * S / rate)))
    feed = (f"kafka:brokers={bootstrap},group={run_id},prefix={prefix},topics={TOPIC_EVENTS},session_ms=6000,"
            "poll_ms=50" + (",instance=mds-1" if static else ""))
    result: dict[str, Any] = {"bench": "kafka_sigkill", "rate": rate, "seconds": seconds, "kills": kills,
                              "static_membership": static,
                              "symbols": symbols, "speed": speed, "restarts": []}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mds-sigkill.")))
        data_dir = workdir / "data"
        services: list[Service] = []

        def start_service() -> Service:
            svc = Service(data_dir, feed, workdir / f"serve-{len(services)}.log")
            services.append(svc)
            return svc

        @stack.callback
        def _kill_all() -> None:
            for svc in services:
                if svc.proc.poll() is None:
                    svc.kill()

        async with EngineProducer(bootstrap) as producer:
            await producer.send(work.first())
            service = start_service()
            await service.wait_started()
            reader = Reader(service.port)
            stop = asyncio.Event()

            async def produce() -> None:
                started = time.monotonic()
                sent = 0
                while not stop.is_set():
                    due = int((time.monotonic() - started) * rate) - sent
                    if due > 0:
                        await producer.send(work.next(due))
                        sent += due
                    await asyncio.sleep(0.01)

            producing = asyncio.create_task(produce())
            began = time.monotonic()
            try:
                for k in range(kills):
                    await asyncio.sleep(max(0.0, began + seconds * (k + 1) / (kills + 1) - time.monotonic()))
                    killed_at = time.monotonic()
                    service.kill()
                    reader.close()
                    at_kill = work.trade_count()
                    await asyncio.sleep(down_s)
                    service = start_service()
                    restarted = time.monotonic()
                    at_restart = work.last_trade_number()
                    info: dict[str, Any] = {"down_s": round(restarted - killed_at, 2),
                                            "trades_produced_while_down": work.trade_count() - at_kill}
                    await service.wait_started()
                    info["started_s"] = round(time.monotonic() - restarted, 2)
                    info["restore_s"] = service.restore_seconds()
                    reader = Reader(service.port)
                    caught_up = await _until_caught_up(reader, at_restart, CATCH_UP_TIMEOUT_S)
                    info["backlog_s"] = None if caught_up is None else round(time.monotonic() - restarted, 2)
                    caught_up = await _until_caught_up(reader, work.last_trade_number(), CATCH_UP_TIMEOUT_S)
                    info["live_s"] = None if caught_up is None else round(time.monotonic() - restarted, 2)
                    result["restarts"].append(info)
                await asyncio.sleep(max(0.0, began + seconds - time.monotonic()))
            finally:
                stop.set()
                await producing
            await producer.send(work.last_trades())
            final = await _until_caught_up(reader, work.last_trade_number(), CATCH_UP_TIMEOUT_S)
            result["final_catch_up_s"] = None if final is None else round(final, 2)
            served = {s: await asyncio.to_thread(reader.closed_minutes, s) for s in names}
            books = {s: await asyncio.to_thread(reader.book, s) for s in names}
            reader.close()
        result["exit_code"] = service.stop()

        from server.storage import EmbeddedStore

        with EmbeddedStore.open(data_dir) as store:
            stored_trades = {s: store.trades(s, 0, 2**62, venue=VENUE) for s in names}
            stored_deltas: dict[str, list[int]] = defaultdict(list)
            for chunk in store.replay(names, ["book_deltas"], 0, 2**62):
                for rec in chunk:
                    if isinstance(rec, BookDelta):
                        stored_deltas[rec.symbol].append(rec.seq)
            stored_minutes = {s: store.candles(VENUE, s, Interval.M1, 0, 2**62) for s in names}

    produced = sum(len(t) for t in work.trades.values())
    lost = duplicated = deltas_lost = deltas_duplicated = 0
    mismatched = missing = served_mismatched = served_missing = books_wrong = 0
    for s in names:
        ids = [int(t.trade_id) for t in stored_trades[s]]
        want = {t[0] for t in work.trades[s]}
        lost += len(want - set(ids))
        duplicated += len(ids) - len(set(ids)) + len(set(ids) - want)
        seqs = stored_deltas[s]
        deltas_lost += len(set(work.deltas[s]) - set(seqs))
        deltas_duplicated += len(seqs) - len(set(seqs)) + len(set(seqs) - set(work.deltas[s]))
        expected = _expected_minutes(work.trades[s])
        last_minute = max(expected)
        got = {c.open_time: (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trade_count)
               for c in stored_minutes[s] if c.closed}
        a, b = _check_candles(expected, got, last_minute)
        mismatched += a
        missing += b
        got = {c.open_time_ns: (c.open, c.high, c.low, c.close, _decimal(c.volume), _decimal(c.quote_volume),
                                c.trade_count) for c in served[s]}
        # The served quote volume is rounded half-even to 1e-9.
        exp9 = {m: (*v[:5], div_round(v[5], S), v[6]) for m, v in expected.items()}
        a, b = _check_candles(exp9, got, last_minute)
        served_mismatched += a
        served_missing += b
        bids, asks = work.books[s]
        if books[s] != (sorted(bids.items(), reverse=True), sorted(asks.items())):
            books_wrong += 1
    result.update({
        "trades_produced": produced, "trades_stored": sum(len(t) for t in stored_trades.values()),
        "trades_lost": lost, "trades_duplicated": duplicated,
        "deltas_produced": sum(len(d) for d in work.deltas.values()),
        "deltas_stored": sum(len(d) for d in stored_deltas.values()),
        "deltas_lost": deltas_lost, "deltas_duplicated": deltas_duplicated,
        "minutes": sum(len(_expected_minutes(t)) for t in work.trades.values()),
        "candles_stored_closed": sum(sum(1 for c in m if c.closed) for m in stored_minutes.values()),
        "candle_mismatches_stored": mismatched, "candles_missing_stored": missing,
        "candle_mismatches_served": served_mismatched, "candles_missing_served": served_missing,
        "books_wrong": books_wrong,
    })
    return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"produced {r['trades_produced']:,} trades and {r['deltas_produced']:,} book deltas at {r['rate']:,} events/s "
        f"for {r['seconds']:g} s over {r['symbols']} symbols ({r['minutes']} symbol-minutes of 1m candles), "
        f"{len(r['restarts'])} SIGKILLs",
        f"trades: stored {r['trades_stored']:,}, lost {r['trades_lost']}, duplicated {r['trades_duplicated']}",
        f"book deltas: stored {r['deltas_stored']:,}, lost {r['deltas_lost']}, duplicated {r['deltas_duplicated']}",
        f"closed 1m candles stored {r['candles_stored_closed']}: {r['candle_mismatches_stored']} differ from their "
        f"trades, {r['candles_missing_stored']} missing; served: {r['candle_mismatches_served']} differ, "
        f"{r['candles_missing_served']} missing; books served wrong: {r['books_wrong']}",
    ]
    for i, x in enumerate(r["restarts"], start=1):
        lines.append(f"restart {i}: down {x['down_s']} s ({x['trades_produced_while_down']} trades produced "
                     "meanwhile); "
                     f"after the restart: serving gRPC {x['started_s']} s (restore {x['restore_s']} s), applied all "
                     f"produced before the restart {x['backlog_s']} s, caught up with the producer {x['live_s']} s")
    lines.append(f"final catch-up after the producer stopped: {r['final_catch_up_s']} s; service exit code "
                 f"{r['exit_code']}")
    return "\n".join(lines)


def main() -> int:
    from tests.kafka_broker import kafka_broker

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=400, help="events produced per second")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the producer runs")
    p.add_argument("--kills", type=int, default=2, help="SIGKILLs of the service, evenly spread")
    p.add_argument("--symbols", type=int, default=4)
    p.add_argument("--speed", type=float, default=20.0, help="event-time seconds per wall-clock second")
    p.add_argument("--down", type=float, default=1.0, help="seconds the service stays down after a kill")
    p.add_argument("--static", action="store_true",
                   help="static group membership (instance=mds-1): a restart rejoins without waiting for the session")
    args = p.parse_args()
    if not 0 < args.rate <= 20_000 or not 0 < args.seconds <= 600 or not 0 <= args.kills <= 20 \
            or not 0 < args.symbols <= 100 or not 0 < args.speed <= 1000 or not 0 <= args.down <= 60:
        p.error("--rate 1..20000, --seconds 0..600, --kills 0..20, --symbols 1..100, --speed 0..1000, --down 0..60")
    with kafka_broker() as broker:
        result = asyncio.run(run(broker.bootstrap, rate=args.rate, seconds=args.seconds, kills=args.kills,
                                 symbols=args.symbols, speed=args.speed, down_s=args.down, static=args.static))
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
