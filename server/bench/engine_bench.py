"""`mds bench engine`: throughput, per-event cost and memory of the pure engine, with a peer in the same run.

Every workload is generated up front from a fixed seed, then timed through ``Engine.apply_batch`` on one
core (this process). The peers get the very same level updates: cryptofeed's C order book (package
``order-book``) and nautilus_trader's ``OrderBook`` when the ``bench`` extra is installed.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from server.engine.alerts import Alert, AlertCondition, AlertSource
from server.engine.engine import Engine, EngineConfig
from server.engine.events import BookDelta, BookSnapshot, ClockTick, Event, Level, Side, Trade
from server.engine.pricing import FundingConfig, IndexComponent, IndexConfig, MarkConfig

TICK = 10_000_000  # 0.01 at scale 1e-9
START_NS = 1_700_000_000 * 1_000_000_000


def _snapshot_levels(mid: int, levels: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    bids = tuple((mid - (i + 1) * TICK, (i % 7 + 1) * 100_000_000) for i in range(levels))
    asks = tuple((mid + (i + 1) * TICK, (i % 5 + 1) * 100_000_000) for i in range(levels))
    return bids, asks


class Workload:
    """Snapshots that set every book up, then a stream of events over the same books."""

    def __init__(self, symbols: int, venues: int, levels: int, events: int, trade_share: float,
                 seed: int = 7, levels_per_delta: int = 1) -> None:
        rng = random.Random(seed)
        self.symbols = [f"S{i:04d}/USD" for i in range(symbols)]
        self.venues = [f"venue{j}" for j in range(venues)]
        self.mids = {s: 100_000_000_000 + rng.randrange(0, 1000) * TICK for s in self.symbols}
        self.setup: list[Event] = []
        for s in self.symbols:
            bids, asks = _snapshot_levels(self.mids[s], levels)
            self.setup.extend(BookSnapshot(v, s, 1, bids, asks, START_NS, START_NS) for v in self.venues)
            if trade_share > 0:  # create every trade series (candles, ticker) before timing starts
                self.setup.extend(Trade(v, s, f"setup-{v}", self.mids[s], 1_000_000, Side.BUY,
                                        START_NS, START_NS) for v in self.venues)
        self.events: list[Event] = []
        seqs = dict.fromkeys(((v, s) for v in self.venues for s in self.symbols), 1)
        trade_ids = 0
        t = START_NS
        for _ in range(events):
            t += 10_000  # 10 us apart: 100k events/s of event time
            s = self.symbols[rng.randrange(symbols)]
            v = self.venues[rng.randrange(venues)]
            mid = self.mids[s]
            if rng.random() < trade_share:
                trade_ids += 1
                off = rng.randrange(-3, 4) * TICK
                side = Side.BUY if off >= 0 else Side.SELL
                self.events.append(Trade(v, s, str(trade_ids), mid + off, rng.randrange(1, 50) * 1_000_000,
                                         side, t, t + 1_000_000))
                continue
            changes_b: list[Level] = []
            changes_a: list[Level] = []
            for _k in range(levels_per_delta):
                depth = min(int(rng.expovariate(0.15)), levels - 1)
                size = 0 if rng.random() < 0.2 else rng.randrange(1, 100) * 10_000_000
                if rng.random() < 0.5:
                    changes_b.append((mid - (depth + 1) * TICK, size))
                else:
                    changes_a.append((mid + (depth + 1) * TICK, size))
            seq = seqs[v, s] + 1
            seqs[v, s] = seq
            self.events.append(BookDelta(v, s, seq, seq, tuple(changes_b), tuple(changes_a),
                                         t, t + 1_000_000))
        self.end_ns = t


def full_config(work: Workload) -> EngineConfig:
    """Every derived channel on: an index per symbol over its venues, and mark price and funding
    for every tenth symbol (treated as a perpetual)."""
    indices = tuple(IndexConfig(f"{s}.IDX", tuple(IndexComponent(v, s, 1) for v in work.venues))
                    for s in work.symbols)
    perps = work.symbols[::10]
    marks = tuple(MarkConfig(s, f"{s}.IDX") for s in perps)
    funding = tuple(FundingConfig(s) for s in perps)
    return EngineConfig(indices=indices, marks=marks, funding=funding)


def _add_alerts(engine: Engine, work: Workload) -> None:
    """Four alerts per symbol, far from the market: every trade and NBBO runs the alert check."""
    for s in work.symbols:
        mid = work.mids[s]
        for i, (cond, thr) in enumerate(((AlertCondition.PRICE_ABOVE, 2 * mid),
                                         (AlertCondition.PRICE_BELOW, mid // 2),
                                         (AlertCondition.CHANGE_PCT_ABOVE, 50 * 10**9),
                                         (AlertCondition.CHANGE_PCT_BELOW, -50 * 10**9))):
            source = AlertSource.NBBO_MID if i == 1 else AlertSource.LAST_TRADE
            engine.add_alert(Alert(f"{s}-{i}", s, cond, thr, source))


def _run_engine(work: Workload, config: EngineConfig | None = None,
                alerts: bool = False) -> tuple[Engine, float, int]:
    engine = Engine(config)
    if alerts:
        _add_alerts(engine, work)
    out: list[object] = []
    engine.apply_batch(work.setup, out)
    out.clear()
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        batch = 4096
        events = work.events
        for i in range(0, len(events), batch):
            engine.apply_batch(events[i:i + batch], out)
            out.clear()
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    return engine, elapsed, len(events)


def _median_rate(work: Workload, repeats: int, full: bool = False) -> int:
    """Events/s through a fresh engine, the median of ``repeats`` runs (this machine is noisy).

    ``full``: every derived channel configured (``full_config``) and alerts registered.
    """
    config = full_config(work) if full else None
    rates = sorted(n / el for _, el, n in (_run_engine(work, config, full) for _ in range(repeats)))
    return round(rates[len(rates) // 2])


def _per_event_costs(work: Workload) -> dict[str, float]:
    """Per-event cost, each event timed alone (timer overhead measured and subtracted)."""
    engine = Engine(full_config(work))
    _add_alerts(engine, work)
    out: list[object] = []
    engine.apply_batch(work.setup, out)
    clock = time.perf_counter_ns
    overhead = min(-(clock() - clock()) for _ in range(10_000))
    costs: list[int] = []
    apply = engine.apply
    gc.collect()
    gc.disable()
    try:
        for ev in work.events:
            t0 = clock()
            apply(ev, out)
            costs.append(clock() - t0 - overhead)
            out.clear()
    finally:
        gc.enable()
    costs.sort()
    n = len(costs)
    return {
        "p50_ns": float(costs[n // 2]),
        "p99_ns": float(costs[min(n - 1, n * 99 // 100)]),
        "p999_ns": float(costs[min(n - 1, n * 999 // 1000)]),
    }


def _peer_order_book(work: Workload, read_top: bool = True) -> float | None:
    """cryptofeed's order book (C extension ``order_book``): same level updates, and (``read_top``) the
    best bid/ask read per message as cryptofeed does (``bids.index(0)``)."""
    try:
        from order_book import OrderBook
    except ImportError:
        return None
    books: dict[tuple[str, str], Any] = {}
    for snap in work.setup:
        assert isinstance(snap, BookSnapshot)
        ob = OrderBook()
        for p, s in snap.bids:
            ob.bids[p] = s
        for p, s in snap.asks:
            ob.asks[p] = s
        books[snap.venue, snap.symbol] = ob
    deltas = [e for e in work.events if isinstance(e, BookDelta)]
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for d in deltas:
            ob = books[d.venue, d.symbol]
            bids = ob.bids
            for p, s in d.bids:
                if s:
                    bids[p] = s
                elif p in bids:
                    del bids[p]
            asks = ob.asks
            for p, s in d.asks:
                if s:
                    asks[p] = s
                elif p in asks:
                    del asks[p]
            if read_top:
                bids.index(0)
                asks.index(0)
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    return len(deltas) / elapsed


def _peer_nautilus(work: Workload, limit: int = 200_000) -> float | None:
    """nautilus_trader's L2 ``OrderBook.apply_delta`` on the same updates (deltas built before timing)."""
    try:
        from nautilus_trader.model.book import OrderBook
        from nautilus_trader.model.data import BookOrder, OrderBookDelta
        from nautilus_trader.model.enums import BookAction, BookType, OrderSide
        from nautilus_trader.model.identifiers import InstrumentId
        from nautilus_trader.model.objects import Price, Quantity
    except ImportError:
        return None

    def price(v: int) -> Any:
        return Price.from_raw(v, 9) if hasattr(Price, "from_raw") else Price(v / 1e9, 9)

    ids: dict[tuple[str, str], Any] = {}
    books: dict[tuple[str, str], Any] = {}

    def book_for(venue: str, symbol: str) -> tuple[Any, Any]:
        key = (venue, symbol)
        if key not in books:
            iid = InstrumentId.from_str(f"{symbol.replace('/', '')}.{venue.upper()}")
            ids[key] = iid
            books[key] = OrderBook(iid, BookType.L2_MBP)
        return books[key], ids[key]

    def delta(iid: Any, side: Any, p: int, s: int, seq: int) -> Any:
        action = BookAction.UPDATE if s else BookAction.DELETE
        order = BookOrder(side, Price(p / 1e9, 2), Quantity(s / 1e9, 2), 0)
        return OrderBookDelta(iid, action, order, 0, seq, 0, 0)

    for snap in work.setup:
        assert isinstance(snap, BookSnapshot)
        ob, iid = book_for(snap.venue, snap.symbol)
        for p, s in snap.bids:
            ob.apply_delta(delta(iid, OrderSide.BUY, p, s, 1))
        for p, s in snap.asks:
            ob.apply_delta(delta(iid, OrderSide.SELL, p, s, 1))
    prepared: list[tuple[Any, list[Any]]] = []
    for e in work.events:
        if not isinstance(e, BookDelta):
            continue
        ob, iid = book_for(e.venue, e.symbol)
        ds = [delta(iid, OrderSide.BUY, p, s, e.seq) for p, s in e.bids]
        ds += [delta(iid, OrderSide.SELL, p, s, e.seq) for p, s in e.asks]
        prepared.append((ob, ds))
        if len(prepared) >= limit:
            break
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for ob, ds in prepared:
            for d in ds:
                ob.apply_delta(d)
            ob.best_bid_price()
            ob.best_ask_price()
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    return len(prepared) / elapsed


def _memory_child(symbols: int, venues: int, levels: int) -> None:
    """Runs in a fresh process: build the books and print peak RSS (VmHWM) and its growth, in bytes."""
    base = _vm_hwm()
    engine = Engine()
    out: list[object] = []
    for i in range(symbols):
        s = f"S{i:04d}/USD"
        bids, asks = _snapshot_levels(100_000_000_000 + i * TICK, levels)
        for j in range(venues):
            engine.apply(BookSnapshot(f"venue{j}", s, 1, bids, asks, START_NS, START_NS), out)
        out.clear()
    del bids, asks
    gc.collect()
    peak = _vm_hwm()
    print(json.dumps({"peak_rss_bytes": peak, "growth_bytes": peak - base}))


def _vm_hwm() -> int:
    """This process's peak RSS in bytes (ru_maxrss would carry the parent's peak across fork+exec)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory(symbols: int, venues: int, levels: int) -> dict[str, int]:
    code = ("from server.bench.engine_bench import _memory_child; "
            f"_memory_child({symbols}, {venues}, {levels})")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    result: dict[str, int] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False, peers: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All engine figures as one flat dict (names carry their units)."""
    say = log or (lambda _m: None)
    n = 200_000 if quick else 1_000_000
    repeats = 1 if quick else 3
    from server.engine import engine as engine_module

    figures: dict[str, Any] = {
        "python": sys.version.split()[0],
        "throughput_is_median_of_runs": repeats,
        "engine_compiled_with_mypyc": not engine_module.__file__.endswith(".py"),
        "events_per_workload": n,
    }

    say("book deltas: 100 symbols x 3 venues, 1000 levels/side, 1 level per delta")
    books = Workload(100, 3, 1000, n, trade_share=0.0)
    figures["book_deltas_per_s"] = _median_rate(books, repeats)
    books5 = Workload(100, 3, 1000, n // 5, trade_share=0.0, seed=8, levels_per_delta=5)
    rate5 = _median_rate(books5, repeats)
    figures["book_deltas_5_levels_per_s"] = rate5
    figures["book_level_updates_per_s_at_5_levels_per_delta"] = 5 * rate5
    if peers:
        say("peers: cryptofeed order_book, nautilus_trader OrderBook")
        ob = _peer_order_book(books)
        figures["peer_cryptofeed_order_book_deltas_per_s"] = round(ob) if ob else None
        raw = _peer_order_book(books, read_top=False)
        figures["peer_cryptofeed_order_book_deltas_without_top_read_per_s"] = round(raw) if raw else None
        figures["ratio_engine_vs_cryptofeed_order_book"] = (
            round(figures["book_deltas_per_s"] / ob, 3) if ob else None)
        nt = _peer_nautilus(books)
        figures["peer_nautilus_orderbook_deltas_per_s"] = round(nt) if nt else None
        figures["ratio_engine_vs_nautilus_orderbook"] = (
            round(figures["book_deltas_per_s"] / nt, 3) if nt else None)

    say("trades through all candle intervals and the ticker: 100 symbols x 3 venues")
    trades = Workload(100, 3, 10, n, trade_share=1.0)
    figures["trades_per_s"] = _median_rate(trades, repeats)

    say("mixed: 1000 symbols x 3 venues, 80% deltas / 20% trades, every derived channel updated")
    mixed = Workload(1000, 3, 100, n, trade_share=0.2)
    figures["mixed_events_per_s"] = _median_rate(mixed, repeats, full=True)
    costs = _per_event_costs(Workload(1000, 3, 100, n // 4, trade_share=0.2, seed=9))
    figures["mixed_event_cost_p50_ns"] = costs["p50_ns"]
    figures["mixed_event_cost_p99_ns"] = costs["p99_ns"]
    figures["mixed_event_cost_p999_ns"] = costs["p999_ns"]

    say("clock tick over 1000 symbols x 3 venues (NBBO staleness, candles, 1000 indices, 100 marks/funding)")
    out: list[object] = []
    engine_m = Engine(full_config(mixed))
    engine_m.apply_batch(mixed.setup, out)
    engine_m.apply_batch(mixed.events[: n // 10], out)
    out.clear()
    t0 = time.perf_counter()
    engine_m.apply(ClockTick(mixed.end_ns + 1_000_000_000), out)
    figures["clock_tick_1000_symbols_ms"] = round((time.perf_counter() - t0) * 1000, 3)

    say("memory: 1000 symbols x 3 venues x 1000 levels per side (fresh process)")
    mem = _memory(100 if quick else 1000, 3, 1000)
    figures["memory_books"] = "100x3x1000x2 levels" if quick else "1000x3x1000x2 levels"
    figures["memory_peak_rss_mib"] = round(mem["peak_rss_bytes"] / 2**20, 1)
    figures["memory_books_growth_mib"] = round(mem["growth_bytes"] / 2**20, 1)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="mds bench engine", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run, not figures)")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer order books")
    args = parser.parse_args(argv)
    log = None if args.json else (lambda m: print(f"# {m}", file=sys.stderr))
    figures = run(quick=args.quick, peers=not args.no_peers, log=log)
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:55s} {v}")
    return 0
