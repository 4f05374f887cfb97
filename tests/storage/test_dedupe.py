"""Writing records again never duplicates them; candle corrections replace the earlier version."""

from __future__ import annotations

from server.engine.candles import Interval
from server.storage import EmbeddedStore
from tests.storage.records import T0, candle, every_record, trade

MINUTE = 60_000_000_000


def test_duplicate_trades_appear_once(store: EmbeddedStore) -> None:
    trades = [trade(i) for i in range(100)]
    store.write_batch(trades)
    store.write_batch(trades[50:] + trades[:10])  # a replay overlapping the first write
    store.write_batch(trades[:1] + trades[:1])  # twice within one batch
    assert store.trades("BTCUSDT", T0, T0 + 10**9) == trades


def test_trades_without_ids_dedupe_on_content(store: EmbeddedStore) -> None:
    a = trade(1, trade_id="")
    b = a._replace(size=a.size + 1)  # another print at the same time: kept
    store.write_batch([a, b])
    store.write_batch([a, b._replace(ts_recv=b.ts_recv + 5)])  # re-received later: still the same prints
    got = store.trades("BTCUSDT", T0, T0 + 10**9)
    assert sorted(t.size for t in got) == [a.size, b.size]


def test_same_trade_id_on_other_venue_or_symbol_is_distinct(store: EmbeddedStore) -> None:
    t = trade(1)
    store.write_batch([t, t._replace(venue="kraken"), t._replace(symbol="ETHUSDT")])
    assert len(store.trades("BTCUSDT", T0, T0 + 10**9)) == 2
    assert len(store.trades("ETHUSDT", T0, T0 + 10**9)) == 1


def test_every_kind_written_twice_replays_once(store: EmbeddedStore) -> None:
    records = every_record()
    store.write_batch(records)
    store.write_batch(records)
    got = [r for chunk in store.replay(None, None, T0 - 10**12, T0 + 10**15) for r in chunk]
    assert len(got) == len(records)


def test_candle_correction_replaces(store: EmbeddedStore) -> None:
    first = candle(close=1, trade_count=3)
    fixed = candle(close=2, trade_count=4, correction=True)
    store.write_batch([first, candle(T0 + MINUTE)])
    store.write_batch([fixed])
    got = store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + 2 * MINUTE)
    assert got == [fixed, candle(T0 + MINUTE)]


def test_candle_versions_within_one_batch_last_wins(store: EmbeddedStore) -> None:
    versions = [candle(close=i, trade_count=i) for i in range(1, 6)]
    store.write_batch(versions)
    assert store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + MINUTE) == [versions[-1]]


def test_candle_correction_moving_event_time_replays_latest_only(store: EmbeddedStore) -> None:
    early = candle(ts_event=T0 + 1_000)
    late = candle(ts_event=T0 + 50_000_000_000, trade_count=9, correction=True)
    store.write_batch([early])
    store.write_batch([late])
    got = [r for chunk in store.replay(None, ["candles"], T0, T0 + 10_000) for r in chunk]
    assert got == []  # the stale version is not replayed even though its event time is in range
    got = [r for chunk in store.replay(None, ["candles"], T0, T0 + MINUTE) for r in chunk]
    assert got == [late]


def test_candle_version_survives_restart(store: EmbeddedStore) -> None:
    path = store.data_dir
    store.write_batch([candle(close=1)])
    store.close()
    with EmbeddedStore.open(path) as again:
        again.write_batch([candle(close=2, correction=True)])
        (got,) = again.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + MINUTE)
        assert got.close == 2
