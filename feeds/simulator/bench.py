"""How fast the simulator's model generates events: ``python -m feeds.simulator.bench [events]``.

Times ``MarketSimulator.step`` alone (no sink, no engine) on the 5 symbols the stream load uses, in steps
of 1000 events, and prints events/s and whether the model is the mypyc-compiled build.
"""

from __future__ import annotations

import sys
import time

from feeds.simulator import model as model_module
from feeds.simulator.config import SimulatorConfig
from feeds.simulator.model import MarketSimulator

SPEC = "sim:seed=1,rate=100000,symbols=BTC/USD;ETH/USD;SOL/USD;BTC-PERP;ETH-PERP"


def bench(events: int = 1_000_000) -> float:
    """Events generated per second over ``events`` events (after the initial snapshots)."""
    sim = MarketSimulator(SimulatorConfig.from_spec(SPEC))
    now = time.time_ns()
    sim.step(now, sim.pending_snapshots)
    made = 0
    started = time.perf_counter()
    while made < events:
        now += 10_000_000
        made += len(sim.step(now, 1000))
    return made / (time.perf_counter() - started)


def main(argv: list[str]) -> None:
    events = int(argv[0]) if argv else 1_000_000
    compiled = model_module.__file__ is not None and model_module.__file__.endswith(".so")
    print(f"simulator: {bench(events):,.0f} events/s generated (compiled: {compiled})")


if __name__ == "__main__":
    main(sys.argv[1:])
