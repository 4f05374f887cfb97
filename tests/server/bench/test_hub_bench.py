"""`mds bench hub` runs as a user runs it and prints every figure it promises; bad options are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from server.service import convert, wire

ROOT = Path(__file__).resolve().parents[3]
FIGURES = {"delta_wire_us", "delta_upb_us", "trade_wire_us", "trade_upb_us", "hub_wire_us_per_event",
           "hub_upb_us_per_event"}


def test_prints_its_figures_as_json() -> None:
    out = subprocess.run([sys.executable, "-m", "server.cli", "bench", "hub", "--json", "--events", "4000",
                          "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    figures = json.loads(out)
    assert figures["bench"] == "hub"
    assert figures["events"] >= 4000
    assert figures["wire_compiled"] == wire.COMPILED
    for key in FIGURES:
        assert figures[key] > 0, key


def test_refuses_bad_options() -> None:
    done = subprocess.run([sys.executable, "-m", "server.cli", "bench", "hub", "--events", "10"],
                          cwd=ROOT, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--events must be at least" in done.stderr


def test_the_peer_run_restores_the_wire_switch() -> None:
    from server.bench.hub_bench import engine_batches, hub_figures

    before = convert.USE_WIRE
    engine, batches, events = engine_batches(1000)
    hub_figures(engine, batches, events, 1)
    assert before == convert.USE_WIRE
