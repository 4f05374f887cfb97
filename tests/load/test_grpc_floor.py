"""``load.grpc_floor``: the peer latency tool runs as a user runs it, with the loop-busy and CPU-load options,
prints its figures and leaves no process behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _children() -> set[str]:
    """Pids of running ``load.grpc_floor`` processes (from /proc: no procps needed)."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"load.grpc_floor" in cmdline.read_bytes():
                pids.add(cmdline.parent.name)
        except OSError:
            continue
    return pids


def test_floor_with_a_busy_loop_and_cpu_load_prints_figures_and_stops_its_processes() -> None:
    before = _children()
    done = subprocess.run(
        [sys.executable, "-m", "load.grpc_floor", "--rate", "200", "--seconds", "1", "--size", "500",
         "--busy-ms", "0.5", "--cpu-load", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "grpc_floor"
    assert result["busy_ms"] == 0.5 and result["cpu_load"] == 0.2
    assert result["samples"] > 100
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert _children() <= before


def test_a_busy_time_longer_than_the_send_interval_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "load.grpc_floor", "--rate", "1000", "--busy-ms", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "--busy-ms must be below the send interval" in done.stderr
