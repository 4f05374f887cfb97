"""load/ghz.sh as a user runs it: a real `mds serve`, real ghz, both calls, the JSON line, nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mds_serve_pids() -> set[str]:
    """Pids of running ``server.cli serve`` processes (from /proc: no procps needed)."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"server.cli\x00serve" in cmdline.read_bytes():
                pids.add(cmdline.parent.name)
        except OSError:
            continue
    return pids


def _have_ghz() -> bool:
    if shutil.which("ghz"):
        return True
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=False).stdout.strip() \
        if shutil.which("go") else ""
    return bool(gopath) and (Path(gopath) / "bin" / "ghz").exists()


@pytest.mark.parametrize("pin", ["1", "0"])
def test_ghz_script_runs_both_calls(pin: str) -> None:
    if not _have_ghz():
        pytest.skip("ghz is not installed (scripts/tools.sh installs it)")
    if pin == "1" and ((os.cpu_count() or 1) < 2 or shutil.which("taskset") is None):
        pytest.skip("GHZ_PIN=1 needs 2 CPUs and taskset")
    before = _mds_serve_pids()
    env = {**os.environ, "GHZ_PIN": pin, "GHZ_Z": "1s", "GHZ_WARMUP": "0", "GHZ_C": "8"}
    done = subprocess.run(["bash", str(ROOT / "load" / "ghz.sh")], capture_output=True, text=True, env=env,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["bench"] == "ghz_unary" and report["pinned"] is (pin == "1")
    for call in ("get_order_book", "health_check"):
        assert report[call]["status"].get("OK", 0) > 100, report[call]
        assert report[call]["server_cpu_us_per_call"] > 0
    assert report["qps_ratio_book_over_trivial"] > 0
    assert _mds_serve_pids() <= before, "ghz.sh left its server running"


def test_ghz_script_refuses_a_bad_pin() -> None:
    if not _have_ghz():
        pytest.skip("ghz is not installed (scripts/tools.sh installs it)")
    done = subprocess.run(["bash", str(ROOT / "load" / "ghz.sh")], capture_output=True, text=True,
                          env={**os.environ, "GHZ_PIN": "yes"}, timeout=60, check=False)
    assert done.returncode == 2 and "GHZ_PIN must be 0 or 1" in done.stderr
