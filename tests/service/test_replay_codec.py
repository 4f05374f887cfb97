"""replay_codec against the record path: for any stored trades, book snapshots, deltas and quotes (ties in
time across kinds, venues and symbols; full 64-bit values; repeated prices; empty and non-ASCII names), a
speed-0 replay written from stored rows gives exactly the record path's bytes, over windows of any size.

The records go through a real EmbeddedStore (chdb), so the RowBinary the codec parses is the engine's own.
``scripts/test.sh`` runs this file compiled and interpreted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marketdata.v1 import book_pb2, market_data_service_pb2

from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Quote, Side, Trade
from server.engine.pricing import MarkPrice
from server.service import replay_codec
from server.service.replay import replay_responses, validate_replay
from server.storage import EmbeddedStore, StoredRecord
from server.storage.store import ROW_KINDS, ROW_SELECT

pb = market_data_service_pb2
T0 = 1_700_000_000_000_000_000
I64 = st.integers(-(2**63), 2**63 - 1)
VALUE = st.one_of(st.just(0), st.integers(-3, 3), I64)
LEVEL = st.tuples(VALUE, VALUE)
SMALL_LEVELS = st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 2)), max_size=4)  # locked, crossed, repeated
LEVELS = st.one_of(SMALL_LEVELS, st.lists(LEVEL, max_size=4), st.lists(LEVEL, min_size=20, max_size=30))
BOOK_SIDE = st.one_of(st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 2)), min_size=1, max_size=4), LEVELS)
VENUE = st.sampled_from(["kraken", "binance", "", "bőrse"])
TS = st.integers(T0, T0 + 5)  # few distinct times: many ties
RECV = st.one_of(st.just(0), I64)

_examples = itertools.count()


def _records(symbol: str) -> st.SearchStrategy[StoredRecord]:
    seq = st.integers(0, 2**63 - 1)
    return st.one_of(
        st.builds(BookDelta, VENUE, st.just(symbol), seq, seq, st.lists(LEVEL, max_size=3).map(tuple),
                  LEVELS.map(tuple), TS, RECV),
        st.builds(BookSnapshot, VENUE, st.just(symbol), seq, BOOK_SIDE.map(tuple), BOOK_SIDE.map(tuple), TS, RECV),
        st.builds(Quote, VENUE, st.just(symbol), VALUE, VALUE, VALUE, VALUE, TS, RECV),
        st.builds(Trade, VENUE, st.just(symbol), st.one_of(st.text(max_size=3), st.text(min_size=130, max_size=140)),
                  VALUE, VALUE, st.sampled_from(list(Side)), TS, RECV),
        st.builds(MarkPrice, st.just(symbol), I64, I64, I64, TS),
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    st_ = EmbeddedStore.open(tmp_path_factory.mktemp("codec") / "db")
    try:
        yield st_
    finally:
        st_.close()


class _RecordsOnly:
    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def replay(self, *args: Any, **kwargs: Any) -> Iterator[list[StoredRecord]]:
        return self.store.replay(*args, **kwargs)


def _replay(source: Any, symbols: Collection[str], **options: Any) -> list[bytes]:
    request = pb.ReplayStreamRequest(symbols=list(symbols), start_ns=T0, end_ns=T0 + 10)
    plan = validate_replay(request, max_range_ns=10**12, known_symbols=None)

    async def run() -> list[bytes]:
        return [b async for b in replay_responses(source, plan, **options)]

    return asyncio.run(run())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), limit=st.integers(1, 7), row_chunk=st.integers(1, 50))
def test_rows_give_the_record_paths_bytes(store: EmbeddedStore, data: st.DataObject, limit: int,
                                          row_chunk: int) -> None:
    n = next(_examples)
    symbols = [f"S{n}/A", f"S{n}/Ä"]
    records = data.draw(st.lists(st.one_of(*(_records(s) for s in symbols)), min_size=1, max_size=40))
    store.write_batch(records)
    rows = _replay(store, symbols, max_updates_per_message=limit, row_chunk=row_chunk)
    expected = _replay(_RecordsOnly(store), symbols, max_updates_per_message=limit)
    assert rows == expected
    assert sum(len(pb.ReplayStreamResponse.FromString(m).updates) for m in rows) >= 1


@pytest.mark.parametrize(("bids", "asks"), [
    (((5, 1),), ((5, 1),)),  # locked: crossed
    (((5, 1),), ((6, 1),)),
    (((6, 1), (6, 0)), ((5, 1),)),  # a repeated price keeps its last size: no bid
    (((0, 1),), ((-1, 1),)),  # a zero best price does not count
    (((-2, 1),), ((-3, 1),)),
    ((), ((1, 1),)),
])
def test_snapshot_status(store: EmbeddedStore, bids: Any, asks: Any) -> None:
    symbol = f"STATUS/{next(_examples)}"
    store.write_batch([BookSnapshot("kraken", symbol, 1, bids, asks, T0, T0),
                       Quote("kraken", symbol, bids[0][0] if bids else 0, bids[0][1] if bids else 0,
                             asks[0][0], asks[0][1], T0 + 1, T0)])
    assert _replay(store, [symbol]) == _replay(_RecordsOnly(store), [symbol])


def test_candles_between_rows_keep_their_place(store: EmbeddedStore) -> None:
    """Items of other kinds go after every row at or before their time, in windows of one row."""
    venue, symbol = "kraken", "CANDLE/X"
    records: list[StoredRecord] = []
    for i in range(6):
        records.append(Trade(venue, symbol, f"t{i}", 100, 1, Side.BUY, T0 + i, T0 + i))
        records.append(Candle(venue, symbol, Interval.M1, T0, T0 + 60 * 10**9, 1, 2, 1, 2, 3, 4, 1, 2, i + 1,
                              False, False, T0 + i, T0 + i))
    store.write_batch(records)
    for chunk in (1, 2, 100):
        assert _replay(store, [symbol], max_updates_per_message=4, row_chunk=chunk) == \
            _replay(_RecordsOnly(store), [symbol], max_updates_per_message=4)


def test_contract_numbers() -> None:
    assert replay_codec.CONSISTENT == book_pb2.BOOK_STATUS_CONSISTENT
    assert replay_codec.CROSSED == book_pb2.BOOK_STATUS_CROSSED
    assert [k.value for k in ROW_KINDS] == ["book_snapshots", "book_deltas", "quotes", "trades"]
    assert len(ROW_KINDS) == replay_codec.ROW_KINDS  # the codec's buffers are the store's kinds, by rank
    assert (replay_codec.SNAPSHOT, replay_codec.DELTA, replay_codec.QUOTE, replay_codec.TRADE) == (0, 1, 2, 3)
    for kind in ROW_KINDS:
        assert ROW_SELECT[kind].startswith("ts_event, symbol, venue, ")
    assert [int(s) for s in Side] == [0, 1, 2]  # stored sides are the wire's


def test_corrupt_rows_are_refused() -> None:
    books = replay_codec.BookSequences()
    with pytest.raises(ValueError, match="4 row buffers"):
        replay_codec.PageEncoder(books, [b""], [])
    row = (T0).to_bytes(8, "little") + b"\x01A\x01B"  # a trade cut after its venue
    with pytest.raises(ValueError, match="past the end"):
        replay_codec.PageEncoder(books, [b"", b"", b"", row + b"\x00"], [])
    with pytest.raises((ValueError, IndexError)):
        replay_codec.PageEncoder(books, [b"", b"", b"", row], [])


def test_a_negative_venue_sequence_is_refused(store: EmbeddedStore) -> None:
    """The contract's venue_sequence is unsigned: as on the record path, the replay fails with ValueError."""
    store.write_batch([BookDelta("kraken", "NEG/SEQ", -5, -5, (), (), T0, T0)])
    with pytest.raises(ValueError, match="venue_sequence"):
        _replay(store, ["NEG/SEQ"])
    with pytest.raises(ValueError):
        _replay(_RecordsOnly(store), ["NEG/SEQ"])
