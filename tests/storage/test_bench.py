"""``python -m server.storage.bench --encode`` prints RowBinary against Arrow for both record kinds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server.storage.bench import bench_encoding

ROOT = Path(__file__).resolve().parents[2]


def test_bench_encoding_times_both_encoders_for_trades_and_deltas() -> None:
    figures = bench_encoding(20, rounds=3)
    assert set(figures) == {"trades_rowbinary_us", "trades_arrow_us", "deltas_rowbinary_us", "deltas_arrow_us"}
    assert all(v > 0 for v in figures.values())


def test_encode_option_prints_its_figures() -> None:
    out = subprocess.run([sys.executable, "-m", "server.storage.bench", "--encode"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("rowbinary compiled: ")
    assert lines[1].startswith("100 rows: trades_rowbinary_us") and lines[2].startswith("50,000 rows:")
