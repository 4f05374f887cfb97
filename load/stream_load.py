"""Server-stream fan-out load: N subscribers (in other processes) on every channel of M symbols.

``python -m load.stream_load`` starts ``mds serve`` on loopback (free ports, a temporary data directory) with
the simulator at ``--rate`` events/s over the ``--symbols`` chosen (by default the simulator is limited to
them, so every event is one a subscriber asked for), unless ``--target`` names a running service. It then
spawns ``--procs`` worker processes holding ``--subscribers`` multiplexed ``Subscribe`` streams between them
(one connection each), every stream subscribed to all channels of the symbols: venue books (depth 20),
consolidated book, NBBO, trades, 1s candles and tickers per venue, quality flags, alerts, and index, mark and
funding where they exist. After a warm-up, it measures for ``--seconds`` and prints:

- delivered updates/s, summed over subscribers, and updates per gRPC message;
- event-to-client latency p50/p99/p99.9: the client's ``time.time_ns()`` at receipt minus the update's
  ``ts_recv_ns`` (the server's receive time), over book deltas and trades (NBBO separately);
- streams ended with RESOURCE_EXHAUSTED (or any other status), book sequence gaps seen (a delta whose
  sequence is not the previous one + 1 without a snapshot in between), resync snapshots;
- the server's RSS at the start and end of the window (``/proc/<pid>/status`` VmRSS) and its CPU use (with
  ``--grpc-front``, the front process's CPU too), the workers' CPU use;
- whether the server kept up: ``md_events_applied_total`` (metrics endpoint, polled every 0.25 s) over the
  window against the simulator's configured rate.

``--slow`` adds one subscriber that reads 1 message/s for ``--slow-seconds`` (others read normally), then
reads as fast as it can for ``--drain-seconds``; it reports the server RSS every second and how that slow
stream ended (RESOURCE_EXHAUSTED, or still open, with the resync snapshots it got).

``--check-every N`` checks every update (book sequences, kinds, the latency of each) on one subscriber in N
per worker; the others parse each message, count its updates and sample the latency of its oldest update.
Parsing and counting are C work; reading every update in Python costs the client ~2 us per update, which
at 1M updates/s would need more cores than the box has.

The last line printed is one JSON object with every figure. Everything runs on 127.0.0.1, is bounded in
time, and stops by itself: workers and the server are stopped at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketdata.v1 import candle_pb2, instrument_pb2, market_data_service_pb2, market_data_service_pb2_grpc

pb = market_data_service_pb2
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD", "BTC-PERP", "ETH-PERP")
BUCKET_NS = 10_000
"""Latency histogram resolution: 10 us."""
BUCKETS = 500_000
"""Histogram range: 0 .. 5 s (later arrivals land in the last bucket)."""
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per subscriber, as separate clients have
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


# -- the service under test ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A started ``mds serve`` (``proc`` is None for an external ``--target``)."""

    target: str
    proc: subprocess.Popen[bytes] | None = None
    metrics_url: str = ""
    data_dir: str = ""
    log_path: str = ""

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid) if self.proc is not None else 0

    def cpu_s(self) -> float:
        """CPU seconds of the service, its gRPC front process included (``--grpc-front``)."""
        if self.proc is None:
            return 0.0
        return cpu_seconds(self.proc.pid) + sum(cpu_seconds(c) for c in children(self.proc.pid))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return code


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def start_server(feed: str, log_level: str, grpc_front: bool = False) -> Server:
    port, mport = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="mds-stream-load.")
    log_path = os.path.join(data_dir, "server.log")
    args = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--grpc-port", str(port),
            "--metrics-port", str(mport), "--data-dir", os.path.join(data_dir, "data"), "--feed", feed,
            "--log-level", log_level, *(["--grpc-front"] if grpc_front else [])]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Server(f"127.0.0.1:{port}", proc, f"http://127.0.0.1:{mport}/metrics", data_dir, log_path)


def wait_serving(server: Server, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.proc is not None and server.proc.poll() is not None:
                raise RuntimeError(f"mds serve exited early ({server.proc.returncode}); see {server.log_path}")
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{server.target} did not become SERVING within {timeout_s:.0f} s")


def subscribe_request(target: str, symbols: Sequence[str]) -> pb.SubscribeRequest:
    """Every channel of ``symbols`` that exists, as one subscribe action (from ListInstruments)."""
    with grpc.insecure_channel(target) as channel:
        md = market_data_service_pb2_grpc.MarketDataServiceStub(channel)
        instruments = {i.symbol: i for i in md.ListInstruments(pb.ListInstrumentsRequest(), timeout=10).instruments}
    unknown = [s for s in symbols if s not in instruments]
    if unknown:
        raise SystemExit(f"unknown symbol(s) at {target}: {', '.join(unknown)}")
    items: list[pb.SubscriptionItem] = []

    def add(channel: int, symbol: str, venue: str = "", depth: int = 0, interval: int = 0) -> None:
        items.append(pb.SubscriptionItem(channel=channel, symbol=symbol, venue=venue, depth=depth,  # type: ignore[arg-type]
                                         interval=interval))  # type: ignore[arg-type]

    for s in symbols:
        inst = instruments[s]
        venues = [v.venue for v in inst.venue_symbols]
        add(pb.CHANNEL_BOOK, s, depth=20)
        add(pb.CHANNEL_CONSOLIDATED_BOOK, s, depth=20)
        add(pb.CHANNEL_NBBO, s)
        add(pb.CHANNEL_TRADES, s)
        add(pb.CHANNEL_QUALITY, s)
        add(pb.CHANNEL_ALERTS, s)
        for v in venues:
            add(pb.CHANNEL_CANDLES, s, venue=v, interval=candle_pb2.CANDLE_INTERVAL_S1)
            add(pb.CHANNEL_TICKER, s, venue=v)
        if inst.asset_class == instrument_pb2.ASSET_CLASS_PERPETUAL:
            add(pb.CHANNEL_MARK_PRICE, s)
            add(pb.CHANNEL_FUNDING_RATE, s)
            if inst.underlying:
                add(pb.CHANNEL_INDEX_PRICE, f"{inst.underlying}.INDEX")
    return pb.SubscribeRequest(subscribe=pb.SubscriptionItems(items=items))


class Sampler(threading.Thread):
    """Polls the metrics endpoint (every 0.25 s) and the server's RSS and CPU; keeps a timeline.

    A scrape costs the server a few milliseconds of GIL time on its HTTP thread, which its event loop
    would wait for: inside ``quiet`` (wall-clock seconds, the middle of the window) only RSS and CPU are
    read, from /proc. The applied rate comes from the counter's changes near the window's edges."""

    METRIC = re.compile(r"^(md_events_applied_total|md_ingest_queue_batches|md_ingest_lag_ms)(?:\{[^}]*\})? (\S+)$",
                        re.MULTILINE)

    def __init__(self, server: Server, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True, name="stream-load-sampler")
        self.server = server
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self.quiet = (0.0, 0.0)
        self._halt = threading.Event()

    def metrics(self) -> dict[str, float]:
        if not self.server.metrics_url:
            return {}
        try:
            with urllib.request.urlopen(self.server.metrics_url, timeout=2) as r:  # loopback only
                text = r.read().decode()
        except OSError:
            return {}
        return {m.group(1): float(m.group(2)) for m in self.METRIC.finditer(text)}

    def sample(self) -> dict[str, float]:
        now = time.time()
        s = {"t": now, "rss_kib": float(self.server.rss_kib()), "cpu_s": self.server.cpu_s()}
        if not self.quiet[0] <= now < self.quiet[1]:
            s.update(self.metrics())
        return s

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(self.sample())
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)

    def applied_rate(self, t0: float, t1: float) -> tuple[float, float]:
        """Events applied per second within [t0, t1], from the first and last change of the counter seen
        there (the exporter refreshes once a second); and the window that was covered, in seconds."""
        changes: list[tuple[float, float]] = []
        last = None
        for s in self.samples:
            v = s.get("md_events_applied_total")
            if v is None:
                continue
            if last is not None and v != last and t0 <= s["t"] <= t1:
                changes.append((s["t"], v))
            last = v
        if len(changes) < 2:
            return 0.0, 0.0
        (ta, va), (tb, vb) = changes[0], changes[-1]
        return (vb - va) / (tb - ta), tb - ta

    def at(self, t: float) -> dict[str, float]:
        """The first sample at or after ``t`` (or the last one)."""
        for s in self.samples:
            if s["t"] >= t:
                return s
        return self.samples[-1] if self.samples else {}


# -- the subscribers (worker processes) ---------------------------------------------------------------


@dataclass
class WorkerSpec:
    index: int
    target: str
    subscribers: int
    request: bytes
    """A serialized SubscribeRequest."""
    slow: bool = False
    """Subscriber 0 of this worker reads 1 message/s for slow_seconds, then drains for drain_seconds."""
    slow_seconds: float = 20.0
    drain_seconds: float = 10.0
    connect_timeout_s: float = 60.0
    check_every: int = 1
    """Subscriber i checks every update when i % check_every == 0; the others count and sample latency."""


@dataclass
class Stats:
    """What one worker process saw, over all of its subscribers."""

    updates: int = 0
    messages: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    hist_nbbo: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    max_latency_ns: int = 0
    seq_gaps: int = 0
    gap_markers: int = 0
    snapshots: int = 0
    resync_snapshots: int = 0
    bad_statuses: int = 0
    ends: dict[str, int] = field(default_factory=dict)
    status_details: list[str] = field(default_factory=list)


class Subscription:
    """One Subscribe stream: reads, checks book sequences, measures latency into the worker's Stats."""

    def __init__(self, stub: market_data_service_pb2_grpc.MarketDataServiceStub, request: pb.SubscribeRequest,
                 stats: Stats, window: list[int], full: bool = True) -> None:
        self.stub = stub
        self.full = full
        """Check every update; else count them and sample the latency of each message's first (oldest) one."""
        self.request = request
        self.stats = stats
        self.window = window  # [start_ns, end_ns]; shared by the worker's subscriptions
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.seqs: dict[tuple[str, str], int] = {}
        self.awaiting: set[tuple[str, str]] = set()
        self.ended = ""
        self.detail = ""
        self.messages_read = 0
        self.resyncs = 0

    async def _requests(self) -> AsyncIterator[pb.SubscribeRequest]:
        yield self.request
        await self.done.wait()  # keep the request side open until the end

    def process(self, resp: pb.SubscribeResponse, now: int) -> None:
        """Count and check one response; latency is recorded only inside the window."""
        payload = resp.WhichOneof("payload")
        if payload != "batch":
            if payload == "status" and resp.status.status != pb.SUBSCRIPTION_STATUS_OK:
                self.stats.bad_statuses += 1
                if len(self.stats.status_details) < 5:
                    self.stats.status_details.append(f"{resp.status.item.symbol}: {resp.status.message}")
            return
        st = self.stats
        start, end = self.window
        counting = start <= now < end
        updates = resp.batch.updates
        hist = st.hist
        if not self.full:
            if counting and updates:
                first = updates[0]
                first_kind = first.WhichOneof("update")
                ts = (first.trade.ts_recv_ns if first_kind == "trade" else first.book.delta.ts_recv_ns
                      if first_kind == "book" and first.book.WhichOneof("update") == "delta" else 0)
                if ts:
                    lat = max(now - ts, 0)
                    hist[min(lat // BUCKET_NS, BUCKETS - 1)] += 1
                    st.max_latency_ns = max(st.max_latency_ns, lat)
                st.updates += len(updates)
                st.messages += 1
            return
        kinds = st.kinds
        seqs = self.seqs
        top = BUCKETS - 1
        for u in updates:
            kind: str = u.WhichOneof("update") or ""
            lat = -1
            if kind == "book":
                b = u.book
                bk = b.WhichOneof("update")
                if bk == "delta":
                    d = b.delta
                    key = (d.venue, d.symbol)
                    seq = d.sequence
                    last = seqs.get(key)
                    if last is not None and seq != last + 1 and key not in self.awaiting:
                        st.seq_gaps += 1
                    seqs[key] = seq
                    lat = now - d.ts_recv_ns
                elif bk == "snapshot":
                    s = b.snapshot
                    key = (s.venue, s.symbol)
                    st.snapshots += 1
                    if key in seqs:
                        st.resync_snapshots += 1
                        self.resyncs += 1
                    seqs[key] = s.sequence
                    self.awaiting.discard(key)
                    kind = "book_snapshot"
                else:  # a gap marker: the book is void until the next snapshot
                    g = b.gap
                    key = (g.venue, g.symbol)
                    st.gap_markers += 1
                    self.awaiting.add(key)
                    kind = "book_gap"
            elif kind == "trade":
                lat = now - u.trade.ts_recv_ns
            elif kind == "nbbo" and counting:
                n = now - u.nbbo.ts_recv_ns
                st.hist_nbbo[min(max(n // BUCKET_NS, 0), top)] += 1
            if counting:
                kinds[kind] = kinds.get(kind, 0) + 1
                if lat >= 0:
                    hist[min(lat // BUCKET_NS, top)] += 1
                    st.max_latency_ns = max(st.max_latency_ns, lat)
                elif lat != -1:  # a clock step backwards: count it as 0
                    hist[0] += 1
        if counting:
            st.updates += len(updates)
            st.messages += 1

    async def run(self, slow_seconds: float = 0.0, drain_seconds: float = 0.0) -> None:
        call: Any = self.stub.Subscribe(self._requests())  # type: ignore[arg-type]  # the stubs are typed sync
        try:
            if slow_seconds > 0:
                await self._run_slow(call, slow_seconds, drain_seconds)
                return
            async for resp in call:
                now = time.time_ns()
                self.messages_read += 1
                self.ready.set()
                self.process(resp, now)
                end = self.window[1]
                if end and now >= end:
                    break  # still open: counted as open at the end
            else:
                self.ended = "OK"
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code().name
            if len(self.stats.status_details) < 5:
                self.stats.status_details.append(f"{exc.code().name}: {exc.details()}")
        finally:
            self.ready.set()
            self.done.set()
            call.cancel()
        if self.ended:
            self.stats.ends[self.ended] = self.stats.ends.get(self.ended, 0) + 1

    async def _run_slow(self, call: Any, slow_seconds: float, drain_seconds: float) -> None:
        """1 message/s until slow_seconds after the window opens, then as fast as possible for drain_seconds."""
        resp = await call.read()
        self.ready.set()
        while self.window[0] == 0:
            await asyncio.sleep(0.05)
        slow_until = self.window[0] + int(slow_seconds * 1e9)
        drain_until = slow_until + int(drain_seconds * 1e9)
        try:
            while resp is not EOF:
                now = time.time_ns()
                self.messages_read += 1
                self.process(resp, now)
                if now < slow_until:
                    await asyncio.sleep(1.0)
                elif now >= drain_until:
                    return  # still open
                resp = await call.read()
            self.ended = "OK"
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code().name
            self.detail = exc.details() or ""


async def worker_main(spec: WorkerSpec, control: Any, results: Any) -> None:
    stats = Stats()
    window = [0, 0]
    request = pb.SubscribeRequest.FromString(spec.request)
    channels = [grpc.aio.insecure_channel(spec.target, options=CHANNEL_OPTIONS) for _ in range(spec.subscribers)]
    subs = [Subscription(market_data_service_pb2_grpc.MarketDataServiceStub(ch), request,
                         Stats() if spec.slow and i == 0 else stats, window,  # the slow one's figures apart
                         full=i % spec.check_every == 0)
            for i, ch in enumerate(channels)]
    slow = subs[0] if spec.slow else None
    tasks = [asyncio.create_task(s.run(spec.slow_seconds if s is slow else 0.0, spec.drain_seconds))
             for s in subs]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), spec.connect_timeout_s)
    results.put(("ready", spec.index, sum(s.ready.is_set() and not s.ended for s in subs)))
    # The client's own collector pauses are not the server's latency: the histograms and connections leave
    # its view, and young collections run less often (as in ``mds serve``).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    loop = asyncio.get_running_loop()
    try:
        start_ns, end_ns = await loop.run_in_executor(None, control.get, True, spec.connect_timeout_s + 60)
    except queue.Empty:
        start_ns, end_ns = time.time_ns(), time.time_ns()
    window[0], window[1] = start_ns, end_ns
    cpu0 = wall0 = 0.0
    while time.time_ns() < start_ns:
        await asyncio.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.time()
    limit = max(0.0, (end_ns - time.time_ns()) / 1e9) + 10.0  # quiet streams notice the end on the next message
    await asyncio.wait([t for t in tasks if slow is None or t is not tasks[0]], timeout=limit)
    cpu1, wall1 = time.process_time(), time.time()
    for s in subs:
        if s is not slow:
            s.done.set()
    if slow is not None:
        await asyncio.wait([tasks[0]], timeout=max(0.0, (end_ns - time.time_ns()) / 1e9) + 15.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close(grace=None)
    open_at_end = sum(1 for s in subs if s is not slow and not s.ended)
    slow_report: dict[str, Any] | None = None
    if slow is not None:
        ss = slow.stats
        slow_report = {"ended": slow.ended or "still open", "detail": slow.detail,
                       "messages_read": slow.messages_read, "updates_read": ss.updates,
                       "book_snapshots": ss.snapshots, "resync_snapshots": ss.resync_snapshots,
                       "seq_gaps": ss.seq_gaps}
    hist = {i: c for i, c in enumerate(stats.hist) if c}
    hist_nbbo = {i: c for i, c in enumerate(stats.hist_nbbo) if c}
    results.put(("result", spec.index, {
        "pid": os.getpid(), "subscribers": spec.subscribers, "updates": stats.updates, "messages": stats.messages,
        "kinds": stats.kinds, "hist": hist, "hist_nbbo": hist_nbbo, "max_latency_ns": stats.max_latency_ns,
        "seq_gaps": stats.seq_gaps, "gap_markers": stats.gap_markers, "snapshots": stats.snapshots,
        "resync_snapshots": stats.resync_snapshots, "bad_statuses": stats.bad_statuses, "ends": stats.ends,
        "open_at_end": open_at_end, "details": stats.status_details, "cpu_s": cpu1 - cpu0,
        "wall_s": wall1 - wall0, "slow": slow_report}))


def worker_entry(spec: WorkerSpec, control: Any, results: Any) -> None:
    """A worker process: its own event loop (uvloop when installed) and channels."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops the workers
    try:
        import uvloop

        uvloop.run(worker_main(spec, control, results))
    except ImportError:
        asyncio.run(worker_main(spec, control, results))


# -- the run -------------------------------------------------------------------------------------------


def percentile(hist: dict[int, int], q: float) -> float:
    """The q-quantile (0..1) of a bucketed histogram, in ms (bucket upper bound)."""
    total = sum(hist.values())
    if total == 0:
        return float("nan")
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 1) * BUCKET_NS / 1e6
    return (max(hist) + 1) * BUCKET_NS / 1e6


def merge(hists: Sequence[dict[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            out[int(k)] = out.get(int(k), 0) + v
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load.stream_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=10_000, help="simulator events/s (the issue's points: 10000, 100000)")
    p.add_argument("--subscribers", "-n", type=int, default=10, help="subscriber streams, in total (default 10)")
    p.add_argument("--procs", type=int, default=2, help="worker processes holding them (default 2)")
    p.add_argument("--symbols", default=";".join(DEFAULT_SYMBOLS),
                   help="';'-separated symbols every subscriber takes all channels of (default: 5 crypto symbols)")
    p.add_argument("--seconds", "-t", type=float, default=15.0, help="measured window (default 15, at most 300)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between all subscribed and the window")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--feed", default="", help="the server's feed spec instead of sim:seed=..,rate=..,symbols=..")
    p.add_argument("--all-sim-symbols", action="store_true",
                   help="run the simulator over its whole universe (subscribers still take --symbols only)")
    p.add_argument("--target", default="", help="host:port of a running service (loopback); no server is started")
    p.add_argument("--grpc-front", action="store_true",
                   help="start the server with --grpc-front (gRPC served by a front process; its CPU is counted)")
    p.add_argument("--slow", action="store_true", help="add one subscriber reading 1 message/s (see above)")
    p.add_argument("--slow-seconds", type=float, default=20.0)
    p.add_argument("--drain-seconds", type=float, default=10.0)
    p.add_argument("--log-level", default="WARNING", help="of the started server")
    p.add_argument("--check-every", type=int, default=1,
                   help="check every update (sequences, kinds, latency of each) on 1 subscriber in N of each worker; "
                        "the others count updates and sample the latency of each message's oldest update (default 1)")
    args = p.parse_args(argv)
    if not 0 < args.seconds <= 300 or args.subscribers < 1 or args.procs < 1 or args.subscribers > 2000:
        p.error("need 0 < --seconds <= 300, 1 <= --subscribers <= 2000, --procs >= 1")
    if args.target and not args.target.startswith(("127.0.0.1:", "localhost:", "[::1]:")):
        p.error("--target must be on loopback")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    symbols = [s for s in args.symbols.split(";") if s]
    feed = args.feed or (f"sim:seed={args.seed},rate={args.rate}"
                         + ("" if args.all_sim_symbols else f",symbols={';'.join(symbols)}"))
    server = Server(args.target) if args.target else start_server(feed, args.log_level, args.grpc_front)
    sampler = Sampler(server)
    ctx = mp.get_context("spawn")
    workers: list[Any] = []
    try:
        wait_serving(server)
        request = subscribe_request(server.target, symbols).SerializeToString()
        sampler.start()
        n_procs = min(args.procs, args.subscribers)
        counts = [args.subscribers // n_procs + (1 if i < args.subscribers % n_procs else 0) for i in range(n_procs)]
        if args.slow:
            counts[0] += 1  # the slow one comes on top of the normal readers
        results: Any = ctx.Queue()
        controls = [ctx.Queue() for _ in range(n_procs)]
        for i, n in enumerate(counts):
            spec = WorkerSpec(i, server.target, n, request, slow=args.slow and i == 0,
                              slow_seconds=args.slow_seconds, drain_seconds=args.drain_seconds,
                              check_every=max(1, args.check_every))
            proc = ctx.Process(target=worker_entry, args=(spec, controls[i], results), name=f"stream-load-{i}")
            proc.start()
            workers.append(proc)
        ready = 0
        deadline = time.monotonic() + 90
        got_ready = 0
        while got_ready < n_procs and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                kind, _, n = results.get(timeout=1)
                if kind == "ready":
                    ready += n
                    got_ready += 1
        seconds = args.slow_seconds + args.drain_seconds if args.slow else args.seconds
        start_ns = time.time_ns() + int(args.warmup * 1e9)
        end_ns = start_ns + int(seconds * 1e9)
        for c in controls:
            c.put((start_ns, end_ns))
        sampler.quiet = (start_ns / 1e9 + 1.5, end_ns / 1e9 - 1.5)
        time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        t0 = time.time()
        rss_start, cpu_start = server.rss_kib(), server.cpu_s()
        worker_cpu0 = {p.pid: cpu_seconds(p.pid) for p in workers}
        time.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9))
        t1 = time.time()
        rss_end, cpu_end = server.rss_kib(), server.cpu_s()
        worker_cpu = sum(cpu_seconds(p.pid) - worker_cpu0[p.pid] for p in workers if p.pid is not None)
        reports: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while len(reports) < n_procs and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                kind, _, data = results.get(timeout=1)
                if kind == "result":
                    reports.append(data)
        time.sleep(0.6)
        sampler.stop()
    finally:
        for proc in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        with contextlib.suppress(Exception):
            sampler.stop()
        server_exit = server.stop()

    window = t1 - t0
    hist = merge([r["hist"] for r in reports])
    hist_nbbo = merge([r["hist_nbbo"] for r in reports])
    updates = sum(r["updates"] for r in reports)
    messages = sum(r["messages"] for r in reports)
    kinds: dict[str, int] = {}
    ends: dict[str, int] = {}
    for r in reports:
        for k, v in r["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
        for k, v in r["ends"].items():
            ends[k] = ends.get(k, 0) + v
    applied_rate, covered = sampler.applied_rate(t0, t1 + 1.0)
    end_sample = sampler.at(t1)
    configured = 0 if args.feed or args.target else args.rate
    out: dict[str, Any] = {
        "bench": "stream_load", "feed": "external" if args.target else feed, "rate": configured,
        "grpc_front": bool(args.grpc_front),
        "subscribers": args.subscribers, "procs": len(workers), "check_every": args.check_every, "symbols": symbols,
        "items_per_subscriber": len(pb.SubscribeRequest.FromString(request).subscribe.items),
        "subscribed": ready - (1 if args.slow else 0), "window_s": round(window, 2),
        "delivered_updates_per_s": round(updates / window) if window else 0,
        "delivered_per_subscriber_per_s": round(updates / window / args.subscribers) if window else 0,
        "messages_per_s": round(messages / window) if window else 0,
        "updates_per_message": round(updates / messages, 1) if messages else 0,
        "updates_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "latency_ms": {"p50": percentile(hist, 0.5), "p99": percentile(hist, 0.99),
                       "p999": percentile(hist, 0.999),
                       "max": round(max((r["max_latency_ns"] for r in reports), default=0) / 1e6, 3),
                       "samples": sum(hist.values()), "over": "book deltas and trades"},
        "nbbo_latency_ms": {"p50": percentile(hist_nbbo, 0.5), "p99": percentile(hist_nbbo, 0.99),
                            "p999": percentile(hist_nbbo, 0.999), "samples": sum(hist_nbbo.values())},
        "resource_exhausted_ends": ends.get("RESOURCE_EXHAUSTED", 0), "stream_ends": ends,
        "open_at_end": sum(r["open_at_end"] for r in reports),
        "book_seq_gaps": sum(r["seq_gaps"] for r in reports),
        "book_gap_markers": sum(r["gap_markers"] for r in reports),
        "book_resync_snapshots": sum(r["resync_snapshots"] for r in reports),
        "bad_item_statuses": sum(r["bad_statuses"] for r in reports),
        "server_rss_mib": {"start": round(rss_start / 1024, 1), "end": round(rss_end / 1024, 1)},
        "server_cpu_cores": round((cpu_end - cpu_start) / window, 2) if window else 0,
        "client_cpu_cores": round(worker_cpu / window, 2) if window else 0,
        "events_applied_per_s": round(applied_rate), "applied_measured_over_s": round(covered, 2),
        "kept_up": bool(configured) and applied_rate >= 0.95 * configured,
        "ingest_queue_batches_end": end_sample.get("md_ingest_queue_batches"),
        "ingest_lag_ms_end": end_sample.get("md_ingest_lag_ms"),
        "server_exit": server_exit,
        "details": [d for r in reports for d in r["details"]][:5],
    }
    if args.slow:
        out["slow"] = next((r["slow"] for r in reports if r["slow"] is not None), None)
        out["server_rss_mib_per_s"] = [round(s["rss_kib"] / 1024, 1) for s in sampler.samples
                                       if t0 - 0.01 <= s["t"] <= t1][::4]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    lat = result["latency_ms"]
    print(f"{result['subscribers']} subscribers x {len(result['symbols'])} symbols "
          f"({result['items_per_subscriber']} items each), feed {result['feed']}, {result['window_s']} s window")
    print(f"delivered {result['delivered_updates_per_s']:,} updates/s ({result['messages_per_s']:,} msgs/s, "
          f"{result['updates_per_message']} updates/msg); latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
          f"p99.9 {lat['p999']} ms, max {lat['max']} ms")
    print(f"server: applied {result['events_applied_per_s']:,} events/s (configured {result['rate']:,}; "
          f"kept up: {result['kept_up']}), CPU {result['server_cpu_cores']} cores, RSS "
          f"{result['server_rss_mib']['start']} -> {result['server_rss_mib']['end']} MiB; clients CPU "
          f"{result['client_cpu_cores']} cores")
    print(f"RESOURCE_EXHAUSTED {result['resource_exhausted_ends']}, ends {result['stream_ends']}, "
          f"book seq gaps {result['book_seq_gaps']}, resync snapshots {result['book_resync_snapshots']}")
    if "slow" in result:
        print(f"slow subscriber: {result['slow']}; server RSS per s (MiB): {result['server_rss_mib_per_s']}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
