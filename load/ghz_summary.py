"""Summarise the ghz JSON reports written by ``load/ghz.sh`` into one JSON line.

``<dir>/health.<round>.json`` and ``<dir>/book.<round>.json`` (``ghz --format json``) are read; each call's
QPS and latency figures are the median over the rounds. QPS is ghz's (every call it made); ``ok_qps`` counts
OK calls only, because ghz ends a ``-z`` run by cancelling the calls in flight (they show as Unavailable or
Canceled). The ratio GetOrderBook / Health.Check QPS is compared with the issue's target, 0.9.

``<report>.cpu`` files (the started server's CPU seconds before and after each run) give the server's CPU per
OK call of each method, and ``server_cpu_ratio``: Health.Check's CPU per call over GetOrderBook's, the QPS
ratio the server alone would allow (ghz shares the cores and spends more decoding the book).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.9


def summary(path: Path) -> dict[str, Any]:
    """One ghz report -> QPS (all calls and OK calls only), latency percentiles in ms, status counts."""
    report: dict[str, Any] = json.loads(path.read_text())
    pct = {int(p["percentage"]): float(p["latency"]) / 1e6 for p in report.get("latencyDistribution") or []}
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    total_s = float(report["total"]) / 1e9
    return {"qps": round(float(report["rps"]), 1), "ok_qps": round(codes.get("OK", 0) / total_s, 1),
            "p50_ms": round(pct.get(50, float("nan")), 3), "p99_ms": round(pct.get(99, float("nan")), 3),
            "avg_ms": round(float(report["average"]) / 1e6, 3), "count": int(report["count"]), "status": codes}


def server_cpu_s(path: Path) -> float | None:
    """Server CPU seconds spent during one run (``<report>.cpu``: before and after), None if not measured."""
    try:
        before, after = (float(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return None
    return after - before if after > 0 else None


def combined(directory: Path, name: str, rounds: int) -> dict[str, Any]:
    """The per-key median over the rounds of one call (the middle round's counts and statuses), and the
    server's CPU per OK call over all rounds when it was measured."""
    runs = [summary(directory / f"{name}.{i}.json") for i in range(1, rounds + 1)]
    out = dict(runs[len(runs) // 2])
    for key in ("qps", "ok_qps", "p50_ms", "p99_ms", "avg_ms"):
        out[key] = round(statistics.median(float(r[key]) for r in runs), 3)
    if len(runs) > 1:
        out["rounds_qps"] = [r["qps"] for r in runs]
    cpu = [server_cpu_s(directory / f"{name}.{i}.json.cpu") for i in range(1, rounds + 1)]
    ok = sum(int(r["status"].get("OK", 0)) for r in runs)
    if ok and all(c is not None for c in cpu):
        out["server_cpu_us_per_call"] = round(sum(c for c in cpu if c is not None) / ok * 1e6, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.ghz_summary", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="folder with the ghz JSON reports")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--target", required=True)
    parser.add_argument("--pinned", type=int, choices=(0, 1), default=0,
                        help="1: the server ran on CPU 0 and ghz on CPU 1 (GHZ_PIN=1)")
    parser.add_argument("--server", default="", help="the feed of the started server, or 'external...'")
    args = parser.parse_args(argv)
    health = combined(args.dir, "health", args.rounds)
    book = combined(args.dir, "book", args.rounds)
    for label, s in (("Health/Check", health), ("GetOrderBook", book)):
        print(f"{label:14s} qps={s['qps']:>9} ok_qps={s['ok_qps']:>9} p50={s['p50_ms']} ms "
              f"p99={s['p99_ms']} ms n={s['count']} {s['status']}")
    ratio = float(book["qps"]) / float(health["qps"]) if health["qps"] else 0.0
    cpu_book, cpu_health = book.get("server_cpu_us_per_call"), health.get("server_cpu_us_per_call")
    cpu_ratio = round(cpu_health / cpu_book, 3) if cpu_book and cpu_health else None
    if cpu_ratio is not None:
        print(f"server CPU per call: Health/Check {cpu_health} us, GetOrderBook {cpu_book} us "
              f"(ratio {cpu_ratio})")
    print(json.dumps({"bench": "ghz_unary", "target": args.target, "server": args.server,
                      "concurrency": args.concurrency, "duration": args.duration,
                      "connections": args.connections, "rounds": args.rounds, "pinned": bool(args.pinned),
                      "get_order_book": book, "health_check": health,
                      "qps_ratio_book_over_trivial": round(ratio, 3), "server_cpu_ratio": cpu_ratio,
                      "target_ratio": TARGET_RATIO,
                      "met": ratio >= TARGET_RATIO}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
