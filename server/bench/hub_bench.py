"""`mds bench hub`: what the stream hub costs per engine event, with the upb encoding as the peer.

The simulator's five symbols of the stream load (``feeds.simulator.bench``) run through the engine up
front, in batches of 200 events (2 ms at 100k events/s). Timed, on one core, in this process:

- the encoding of every book delta and trade of that stream, through the hub's wire encoder
  (``convert.book_delta_bytes`` / ``trade_bytes``) and through upb (``book_delta_pb(...)`` /
  ``trade_pb(...)`` then ``SerializeToString``);
- ``Hub.on_updates`` over the same batches with one multiplexed subscriber on every book, trade and NBBO
  topic of those symbols (its log drained after each batch, as a reader that keeps up), once with each
  encoding, alternated over ``--rounds``; the figure is the best round.

Prints one line per figure, or one JSON object with ``--json``. The wire encoder is the faster path only
when mypyc compiled it (``python scripts/build_native.py``); the output says whether it is.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from typing import Any

from feeds.simulator.config import SimulatorConfig
from feeds.simulator.model import MarketSimulator
from server.engine.book import BookStatus
from server.engine.engine import Engine
from server.engine.events import BookDelta, Trade
from server.service import convert, wire
from server.service.fanout import Hub, Subscriber, Topic

SPEC = "sim:seed=1,rate=100000,symbols=BTC/USD;ETH/USD;SOL/USD;BTC-PERP;ETH-PERP"
BATCH_EVENTS = 200


def engine_batches(events: int) -> tuple[Engine, list[list[object]], int]:
    """The engine after the simulator's stream, the engine's update lists (one per batch of about
    ``BATCH_EVENTS`` events) and the number of events."""
    sim = MarketSimulator(SimulatorConfig.from_spec(SPEC))
    engine = Engine()
    now = time.time_ns()
    engine.apply_batch(sim.step(now, sim.pending_snapshots), [])
    batches: list[list[object]] = []
    made = 0
    while made < events:
        now += 2_000_000
        step = sim.step(now, BATCH_EVENTS)
        made += len(step)
        out: list[object] = []
        engine.apply_batch(step, out)
        batches.append(out)
    return engine, batches, made


def _best_us_per_item(fn: Callable[[], object], items: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / items * 1e6


def encoding_figures(batches: list[list[object]], rounds: int) -> dict[str, float]:
    deltas = [u for b in batches for u in b if type(u) is BookDelta]
    trades = [u for b in batches for u in b if type(u) is Trade]
    ok = BookStatus.CONSISTENT

    def wire_deltas() -> None:
        for i, d in enumerate(deltas):
            convert.book_delta_bytes(d, i, ok)

    def upb_deltas() -> None:
        for i, d in enumerate(deltas):
            convert.book_delta_pb(d, i, ok).SerializeToString()

    def wire_trades() -> None:
        for t in trades:
            convert.trade_bytes(t)

    def upb_trades() -> None:
        for t in trades:
            convert.trade_pb(t).SerializeToString()

    return {
        "delta_wire_us": _best_us_per_item(wire_deltas, len(deltas), rounds),
        "delta_upb_us": _best_us_per_item(upb_deltas, len(deltas), rounds),
        "trade_wire_us": _best_us_per_item(wire_trades, len(trades), rounds),
        "trade_upb_us": _best_us_per_item(upb_trades, len(trades), rounds),
    }


def _hub_us_per_event(engine: Engine, batches: list[list[object]], events: int) -> float:
    hub = Hub(engine)
    sub = Subscriber(multiplexed=True, max_pending=10**9)
    symbols = {u.symbol for b in batches for u in b if isinstance(u, (BookDelta, Trade))}
    topics: list[Topic] = []
    for symbol in sorted(symbols):
        topics += [("book", v, symbol) for v in engine.venues(symbol)]
        topics += [("trades", symbol, ""), ("nbbo", symbol)]
    hub.subscribe(sub, topics)
    group = sub.group
    assert group is not None
    started = time.perf_counter()
    for updates in batches:
        hub.on_updates(updates)
        sub.cursor = group.head  # a reader that keeps up: the log is read and trimmed each batch
        group.trim()
    elapsed = time.perf_counter() - started
    return elapsed / events * 1e6


def hub_figures(engine: Engine, batches: list[list[object]], events: int, rounds: int) -> dict[str, float]:
    best = {"hub_wire_us_per_event": float("inf"), "hub_upb_us_per_event": float("inf")}
    saved = convert.USE_WIRE
    try:
        for _ in range(rounds):
            for use_wire, key in ((True, "hub_wire_us_per_event"), (False, "hub_upb_us_per_event")):
                convert.USE_WIRE = use_wire and wire.COMPILED
                best[key] = min(best[key], _hub_us_per_event(engine, batches, events))
    finally:
        convert.USE_WIRE = saved
    return best


def run(events: int, rounds: int) -> dict[str, Any]:
    engine, batches, made = engine_batches(events)
    gc.collect()
    gc.disable()
    try:
        figures: dict[str, Any] = {"bench": "hub", "events": made, "wire_compiled": wire.COMPILED}
        figures.update({k: round(v, 3) for k, v in encoding_figures(batches, rounds).items()})
        figures.update({k: round(v, 3) for k, v in hub_figures(engine, batches, made, rounds).items()})
    finally:
        gc.enable()
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mds bench hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="simulator events (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per figure; the best counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.events < BATCH_EVENTS or args.rounds < 1:
        parser.error(f"--events must be at least {BATCH_EVENTS} and --rounds at least 1")
    figures = run(args.events, args.rounds)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0
