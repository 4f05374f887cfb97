"""Every stored record type comes back exactly as written (ints at 1e-9, quote volume at 1e-18)."""

from __future__ import annotations

import pytest

from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Quote, Trade
from server.storage import ALL_KINDS, EmbeddedStore, Kind, StorageError
from tests.storage.records import I128_MAX, T0, candle, every_record, trade


def _replayed(store: EmbeddedStore) -> list[object]:
    return [r for chunk in store.replay(None, None, T0 - 10**12, T0 + 10**15) for r in chunk]


def test_every_type_round_trips_exactly(store: EmbeddedStore) -> None:
    records = every_record()
    assert store.write_batch(records) == len(records)
    got = _replayed(store)
    assert sorted(map(repr, got)) == sorted(map(repr, records))
    assert set(map(type, got)) == set(map(type, records))
    # Same values *and* same types (IntEnum side / interval restored, tuples of tuples for levels).
    by_repr = {repr(r): r for r in got}
    for rec in records:
        back = by_repr[repr(rec)]
        assert back == rec
        assert type(back) is type(rec)
        if isinstance(rec, Trade) and isinstance(back, Trade):
            assert type(back.side) is type(rec.side)
        if isinstance(rec, (BookSnapshot, BookDelta)) and isinstance(back, (BookSnapshot, BookDelta)):
            assert isinstance(back.bids, tuple)
            assert all(isinstance(level, tuple) for level in back.bids + back.asks)


def test_candle_int128_columns_are_exact(store: EmbeddedStore) -> None:
    c = candle()
    store.write_batch([c])
    (back,) = store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + 1)
    assert back == c
    assert back.quote_volume == I128_MAX - 5
    assert back.volume == (1 << 100) + 3
    assert back.interval is Interval.M1


def test_trades_query(store: EmbeddedStore) -> None:
    trades = [trade(i) for i in range(10)] + [trade(i, venue="kraken") for i in range(5)]
    store.write_batch(trades)
    assert store.trades("BTCUSDT", T0, T0 + 10**9) == sorted(trades, key=lambda t: (t.ts_event, t.venue))
    assert store.trades("BTCUSDT", T0, T0 + 10**9, venue="kraken") == trades[10:]
    assert store.trades("BTCUSDT", T0 + 2_000, T0 + 4_000, venue="binance") == trades[2:4]
    assert store.trades("BTCUSDT", T0, T0 + 10**9, venue="binance", limit=3) == trades[:3]
    assert store.trades("BTCUSDT", T0, T0 + 10**9, venue="binance", limit=3, latest=True) == trades[7:10]
    assert store.trades("ETHUSDT", T0, T0 + 10**9) == []


def test_candles_query_range_and_limit(store: EmbeddedStore) -> None:
    minute = 60_000_000_000
    cs = [candle(T0 + i * minute, close=i + 1) for i in range(5)]
    store.write_batch([*cs, candle(T0, interval=Interval.M5)])
    assert store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + 5 * minute) == cs
    assert store.candles("binance", "BTCUSDT", Interval.M1, T0 + minute, T0 + 3 * minute) == cs[1:3]
    assert store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + 5 * minute, 2) == cs[:2]
    assert store.candles("binance", "BTCUSDT", Interval.M1, T0, T0 + 5 * minute, 2, latest=True) == cs[3:]
    assert len(store.candles("binance", "BTCUSDT", Interval.M5, T0, T0 + 5 * minute)) == 1
    assert store.candles("kraken", "BTCUSDT", Interval.M1, T0, T0 + 5 * minute) == []


def test_values_out_of_range_are_refused_not_wrapped(store: EmbeddedStore) -> None:
    with pytest.raises(StorageError):
        store.write_batch([trade(1)._replace(price=1 << 63)])
    with pytest.raises(StorageError):
        store.write_batch([candle()._replace(quote_volume=1 << 127)])
    assert _replayed(store) == []


def test_unknown_records_are_skipped(store: EmbeddedStore) -> None:
    assert store.write_batch([object(), "x", 3]) == 0
    assert store.write_batch([]) == 0
    assert store.write_batch([object(), trade(1)]) == 1


def test_kinds_cover_every_table(store: EmbeddedStore) -> None:
    types = {type(r) for chunk in store.replay(None, ALL_KINDS, 0, 1) for r in chunk}
    assert types == set()
    records = every_record()
    store.write_batch(records)
    by_kind = {
        k: {type(r) for chunk in store.replay(None, [k], T0, T0 + 10**15) for r in chunk} for k in ALL_KINDS
    }
    assert by_kind[Kind.TRADES] == {Trade}
    assert by_kind[Kind.QUOTES] == {Quote}
    assert by_kind[Kind.BOOK_SNAPSHOTS] == {BookSnapshot}
    assert by_kind[Kind.BOOK_DELTAS] == {BookDelta}
    assert by_kind[Kind.CANDLES] == {Candle}
    assert len(by_kind[Kind.PRICING]) == 3


def test_closed_store_raises(store: EmbeddedStore) -> None:
    store.close()
    store.close()  # idempotent
    assert store.closed
    with pytest.raises(StorageError):
        store.write_batch([trade(1)])
    with pytest.raises(StorageError):
        store.trades("BTCUSDT", 0, 1)


def test_prepared_rounds_written_together_round_trip_in_chunks(store: EmbeddedStore) -> None:
    """``prepare`` encodes each round as record batches of at most ENCODE_CHUNK_ROWS rows; one
    ``write_prepared`` inserts all rounds with one stream per table, every row intact."""
    import pyarrow as pa  # type: ignore[import-untyped]

    from server.storage import rowbinary
    from server.storage.codec import ENCODE_CHUNK_ROWS, SPECS, record_messages

    n = 2 * ENCODE_CHUNK_ROWS + 7
    rounds: list[list[object]] = [[trade(i, symbol="CHUNKED") for i in range(k, min(k + 400, n))]
                                  for k in range(0, n, 400)]
    rounds.append(every_record())
    prepared = [store.prepare(r) for r in rounds]
    assert sum(p.rows for p in prepared) == n + len(every_record())
    assert store.write_prepared(prepared) == n + len(every_record())
    big = store.prepare([trade(i) for i in range(n)])
    if rowbinary.COMPILED:  # trades go as RowBinary rows, in the same chunks; the Arrow path still cuts them
        assert Kind.TRADES not in big.batches
        assert len(big.row_binary[Kind.TRADES]) == 3
        messages = record_messages(SPECS[Kind.TRADES], [trade(i) for i in range(n)])
    else:
        messages = big.batches[Kind.TRADES]
    rows = [pa.ipc.read_record_batch(m, SPECS[Kind.TRADES].schema).num_rows for m in messages]
    assert rows == [ENCODE_CHUNK_ROWS, ENCODE_CHUNK_ROWS, 7]
    got = _replayed(store)
    assert sorted(map(repr, got)) == sorted(map(repr, [r for rd in rounds for r in rd]))
