"""Write throughput of the embedded store: ``bench_writes(n)`` -> trade rows per second; book deltas too.

Measures what the service pays per batch: encoding the ``Trade`` tuples plus the chdb insert (not
generating the trades). Not a timed test; run ``python -m server.storage.bench [n] [batch]``. chdb allows
one open data directory per process, so call it when no other store is open (or pass one).

``python -m server.storage.bench --encode`` times the encoding alone, per step of the sizes the service
encodes on its event loop (``server.runtime.PREPARE_RECORDS``) and per large batch: RowBinary
(``rowbinary``, what the store uses when it is compiled) against Arrow (``codec.record_messages``, the peer).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server.engine.events import BookDelta, Side, Trade
from server.storage import rowbinary
from server.storage.codec import SPECS, Kind, record_messages
from server.storage.store import EmbeddedStore

_T0 = 1_700_000_000_000_000_000


def make_trades(n: int, *, symbols: int = 10, venues: int = 3, start: int = 0) -> list[Trade]:
    """``n`` synthetic trades, 1 us apart, spread over ``symbols`` x ``venues``."""
    return [
        Trade(
            f"venue{i % venues}",
            f"SYM{i % symbols}USDT",
            str(start + i),
            60_000_000_000_000 + (i % 1000) * 1_000_000,
            1_000_000 + i % 777,
            Side.BUY if i & 1 else Side.SELL,
            _T0 + (start + i) * 1_000,
            _T0 + (start + i) * 1_000 + 250_000,
        )
        for i in range(n)
    ]


def make_deltas(n: int, *, symbols: int = 10, venues: int = 3) -> list[BookDelta]:
    """``n`` synthetic one-level-per-side book deltas (the book tables are encoded column by column)."""
    return [
        BookDelta(f"venue{i % venues}", f"SYM{i % symbols}USDT", i, i, ((60_000_000_000_000 - i % 500, 1_000 + i),),
                  ((60_001_000_000_000 + i % 500, 2_000),), _T0 + i * 1_000, _T0 + i * 1_000 + 250_000)
        for i in range(n)
    ]


def bench_writes(n: int, batch: int = 50_000, store: EmbeddedStore | None = None) -> float:
    """Write ``n`` trades in batches of ``batch``; returns rows per second (encode + insert).

    Uses ``store`` when given, else a fresh store in a temporary directory (removed afterwards).
    """
    if n < 1 or batch < 1:
        raise ValueError("n and batch must be >= 1")
    trades = make_trades(n)
    if store is not None:
        return _timed(store, trades, batch)
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp, EmbeddedStore.open(Path(tmp)) as st:
        return _timed(st, trades, batch)


def _timed(store: EmbeddedStore, trades: list[Trade] | list[BookDelta], batch: int) -> float:
    written = 0
    t = time.perf_counter()
    for i in range(0, len(trades), batch):
        written += store.write_batch(trades[i : i + batch])
    elapsed = time.perf_counter() - t
    return written / elapsed if elapsed > 0 else float("inf")


def bench_encoding(rows: int, rounds: int = 2000) -> dict[str, float]:
    """Microseconds to encode ``rows`` trades and ``rows`` book deltas, best of three runs of ``rounds``
    calls each: RowBinary against Arrow."""
    trades, deltas = make_trades(rows), make_deltas(rows)
    cases: dict[str, Callable[[], object]] = {
        "trades_rowbinary_us": lambda: rowbinary.trades(trades),  # type: ignore[arg-type]
        "trades_arrow_us": lambda: record_messages(SPECS[Kind.TRADES], trades),
        "deltas_rowbinary_us": lambda: rowbinary.book_deltas(deltas),  # type: ignore[arg-type]
        "deltas_arrow_us": lambda: record_messages(SPECS[Kind.BOOK_DELTAS], deltas),
    }
    figures: dict[str, float] = {}
    for name, fn in cases.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(rounds):
                fn()
            best = min(best, time.perf_counter() - t)
        figures[name] = round(best / rounds * 1e6, 1)
    return figures


def main(argv: list[str]) -> None:
    if argv[:1] == ["--encode"]:
        print(f"rowbinary compiled: {rowbinary.COMPILED}")
        for rows, rounds in ((100, 2000), (50_000, 4)):
            print(f"{rows:,} rows:", ", ".join(f"{k} {v}" for k, v in bench_encoding(rows, rounds).items()))
        return
    n = int(argv[0]) if argv else 1_000_000
    batches = [int(argv[1])] if len(argv) > 1 else [10_000, 50_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp, EmbeddedStore.open(Path(tmp)) as st:
        bench_writes(min(n, 100_000), 50_000, st)  # warm-up (pyarrow / engine initialization)
        for b in batches:
            print(f"trades n={n:,} batch={b:,}: {bench_writes(n, b, st):,.0f} rows/s")
        deltas = make_deltas(min(n, 500_000))
        print(f"book deltas n={len(deltas):,} batch=50,000: {_timed(st, deltas, 50_000):,.0f} rows/s")


if __name__ == "__main__":
    main(sys.argv[1:])
