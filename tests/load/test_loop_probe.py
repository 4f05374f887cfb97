"""``load.loop_probe`` serves like ``mds serve`` with its loop pieces timed, and writes their figures when it
stops gracefully."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from load.loop_probe import summary

ROOT = Path(__file__).resolve().parents[2]


def test_serves_then_writes_the_timings_of_each_piece_on_a_graceful_stop(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "load.loop_probe", "--out", str(out), "--", "--feed", "sim:seed=1,rate=2000",
         "--grpc-port", "0", "--metrics-port", "-1", "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("mds: gRPC on 127.0.0.1:"), ready
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    figures = json.loads(out.read_text())
    for piece in ("hub", "prepare", "loop_lag", "gc0"):
        assert figures[piece]["n"] > 0, piece
        assert 0 <= figures[piece]["p50"] <= figures[piece]["p99"] <= figures[piece]["max"], piece


def test_summary_counts_and_percentiles() -> None:
    figures = summary({"x": [0.0005] * 98 + [0.0015, 0.003], "empty": []})
    assert figures == {"x": {"n": 100, "p50": 0.5, "p99": 3.0, "p999": 3.0, "max": 3.0, "over_1ms": 2,
                             "over_2ms": 1, "total_ms": 53.5}}
