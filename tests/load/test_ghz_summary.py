"""load.ghz_summary: medians over rounds, the QPS ratio, and the server's CPU per call from the .cpu files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load import ghz_summary


def _report(path: Path, rps: float, ok: int, total_s: float, cpu: tuple[float, float] | None) -> None:
    path.write_text(json.dumps({
        "rps": rps, "total": total_s * 1e9, "average": 20e6, "count": ok + 1,
        "statusCodeDistribution": {"OK": ok, "Unavailable": 1},
        "latencyDistribution": [{"percentage": 50, "latency": 20e6}, {"percentage": 99, "latency": 40e6}]}))
    if cpu is not None:
        (path.parent / f"{path.name}.cpu").write_text(f"{cpu[0]} {cpu[1]}\n")


def test_summary_with_server_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, (h, b) in enumerate([(2000, 1800), (2200, 2000), (2100, 1700)], start=1):
        _report(tmp_path / f"health.{i}.json", h, h * 10, 10, (100.0 * i, 100.0 * i + h * 10 * 500e-6))
        _report(tmp_path / f"book.{i}.json", b, b * 10, 10, (200.0 * i, 200.0 * i + b * 10 * 550e-6))
    assert ghz_summary.main(["--dir", str(tmp_path), "--rounds", "3", "--concurrency", "50", "--duration", "10s",
                             "--target", "127.0.0.1:1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["health_check"]["qps"] == 2100 and out["get_order_book"]["qps"] == 1800
    assert out["qps_ratio_book_over_trivial"] == round(1800 / 2100, 3) and out["met"] is False
    assert out["health_check"]["server_cpu_us_per_call"] == pytest.approx(500, abs=0.1)
    assert out["get_order_book"]["server_cpu_us_per_call"] == pytest.approx(550, abs=0.1)
    assert out["server_cpu_ratio"] == round(500 / 550, 3)
    assert out["pinned"] is False


def test_summary_without_cpu_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _report(tmp_path / "health.1.json", 2000, 20000, 10, None)
    _report(tmp_path / "book.1.json", 1900, 19000, 10, None)
    ghz_summary.main(["--dir", str(tmp_path), "--concurrency", "50", "--duration", "10s", "--target", "x:1",
                      "--pinned", "1"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["server_cpu_ratio"] is None and out["met"] is True and out["pinned"] is True
    assert "server_cpu_us_per_call" not in out["get_order_book"]
