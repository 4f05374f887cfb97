"""``load.replay_bench`` as a user runs it: both encoding paths give the same bytes, and with ``--grpc`` the
figure over gRPC and its peer (the same messages prebuilt) are printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_replay_bench_prints_both_paths_and_the_grpc_peer() -> None:
    done = subprocess.run([sys.executable, "-m", "load.replay_bench", "--records", "5000", "--grpc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "replay" and result["records"] == 5000 and result["same_bytes"] is True
    for key in ("rows_updates_per_s", "records_updates_per_s", "grpc_client_updates_per_s",
                "grpc_prebuilt_updates_per_s"):
        assert result[key] > 0, key
    assert result["grpc_messages"] == 5


def test_replay_bench_refuses_a_bad_record_count() -> None:
    done = subprocess.run([sys.executable, "-m", "load.replay_bench", "--records", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--records" in done.stderr
