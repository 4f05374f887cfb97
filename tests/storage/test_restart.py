"""Data written before close is found after reopening the same directory."""

from __future__ import annotations

from pathlib import Path

from server.engine.candles import Interval
from server.storage import EmbeddedStore
from tests.storage.records import T0, candle, every_record, trade


def test_reopen_finds_data(tmp_path: Path) -> None:
    path = tmp_path / "db"
    records = every_record()
    with EmbeddedStore.open(path) as store:
        store.write_batch(records)
        store.flush()
    with EmbeddedStore.open(path) as store:
        got = [r for chunk in store.replay(None, None, T0 - 10**12, T0 + 10**15) for r in chunk]
        assert sorted(map(repr, got)) == sorted(map(repr, records))
        assert store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + 1) == [candle()]
        store.write_batch([trade(1000)])
    with EmbeddedStore.open(path) as store:
        assert trade(1000) in store.trades("BTCUSDT", T0, T0 + 10**9)


def test_open_creates_nested_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c"
    with EmbeddedStore.open(path) as store:
        assert store.data_dir == path.resolve()
    assert path.is_dir()
