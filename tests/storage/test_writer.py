"""StorageWriter batches by count and by (caller-provided) time, and keeps records on failure."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from server.storage import EmbeddedStore, StorageWriter
from tests.storage.records import T0, trade


class FakeStore:
    """Records the batches it receives; can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.fail = False
        self.flushes = 0

    def write_batch(self, records: Sequence[object]) -> int:
        if self.fail:
            raise RuntimeError("down")
        self.batches.append(list(records))
        return len(records)

    def flush(self) -> None:
        self.flushes += 1


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_flushes_by_count() -> None:
    fake, clock = FakeStore(), Clock()
    w = StorageWriter(fake, clock, max_records=3, flush_interval_ns=10**12)  # type: ignore[arg-type]
    assert w.add(1) == 0
    assert w.add(2) == 0
    assert w.add(3) == 3
    assert fake.batches == [[1, 2, 3]]
    assert w.extend(range(7)) == 6
    assert w.pending == 1
    assert [len(b) for b in fake.batches] == [3, 3, 3]


def test_flushes_by_time() -> None:
    fake, clock = FakeStore(), Clock()
    w = StorageWriter(fake, clock, max_records=100, flush_interval_ns=1_000)  # type: ignore[arg-type]
    w.add("a")
    clock.now = 999
    assert w.poll() == 0
    w.add("b")
    clock.now = 1_000  # the oldest record has waited the interval
    assert w.poll() == 2
    assert w.poll() == 0  # nothing pending
    clock.now = 5_000
    w.add("c")  # the timer starts at the first pending record, not at the last flush
    assert w.pending == 1
    clock.now = 6_000
    assert w.add("d") == 2
    assert w.rows_written == 4
    assert w.batches_written == 2


def test_failed_write_keeps_records() -> None:
    fake, clock = FakeStore(), Clock()
    w = StorageWriter(fake, clock, max_records=2)  # type: ignore[arg-type]
    fake.fail = True
    w.add(1)
    with pytest.raises(RuntimeError):
        w.add(2)
    assert w.pending == 2
    fake.fail = False
    assert w.close() == 2
    assert fake.batches == [[1, 2]]
    assert fake.flushes == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        StorageWriter(FakeStore(), Clock(), max_records=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StorageWriter(FakeStore(), Clock(), flush_interval_ns=-1)  # type: ignore[arg-type]


def test_writer_with_embedded_store(store: EmbeddedStore) -> None:
    clock = Clock()
    w = StorageWriter(store, clock, max_records=1000, flush_interval_ns=100)
    trades = [trade(i) for i in range(2500)]
    assert w.extend(trades) == 2000
    assert w.pending == 500
    clock.now = 100
    assert w.poll() == 500
    assert store.trades("BTCUSDT", T0, T0 + 10**10) == trades
