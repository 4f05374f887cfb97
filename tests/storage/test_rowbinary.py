"""server.storage.rowbinary: ClickHouse reads its rows back as exactly the records they came from, for the
tables it writes; a number that does not fit its column is refused, naming the column."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.events import BookDelta, BookSnapshot, Quote, Side, Trade
from server.storage import EmbeddedStore, StorageError, rowbinary
from server.storage.codec import SPECS, Kind

I64 = st.integers(-(1 << 63), (1 << 63) - 1)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
LEVELS = st.lists(st.tuples(I64, I64), max_size=5).map(tuple)
TRADES = st.builds(Trade, TEXT, TEXT, TEXT, I64, I64, st.sampled_from(list(Side)), I64, I64)
DELTAS = st.builds(BookDelta, TEXT, TEXT, I64, I64, LEVELS, LEVELS, I64, I64)
SNAPSHOTS = st.builds(BookSnapshot, TEXT, TEXT, I64, LEVELS, LEVELS, I64, I64)
QUOTES = st.builds(Quote, TEXT, TEXT, I64, I64, I64, I64, I64, I64)
CASES: list[tuple[Kind, Callable[[list[Any]], bytes], st.SearchStrategy[Any]]] = [
    (Kind.TRADES, rowbinary.trades, TRADES),
    (Kind.BOOK_DELTAS, rowbinary.book_deltas, DELTAS),
    (Kind.BOOK_SNAPSHOTS, rowbinary.book_snapshots, SNAPSHOTS),
    (Kind.QUOTES, rowbinary.quotes, QUOTES),
]


def _read_back(store: EmbeddedStore, kind: Kind, payload: bytes) -> list[tuple[Any, ...]]:
    """Insert ``payload`` into a Memory copy of ``kind``'s table (insertion order kept) and read it back."""
    spec = SPECS[kind]
    conn = store._conn  # the store's own session: chdb opens one data path per process
    scratch = f"rb_{spec.table}"
    conn.execute(f"CREATE TABLE IF NOT EXISTS {scratch} AS {spec.table} ENGINE = Memory")
    conn.execute(f"TRUNCATE TABLE {scratch}")
    conn.insert_row_binary(scratch, spec.columns, [payload])
    table = conn.query_arrow(f"SELECT {', '.join(spec.columns)} FROM {scratch}")
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [tuple(tuple((lv["price"], lv["size"]) for lv in v) if isinstance(v, list) else v for v in values)
            for values in zip(*columns, strict=True)]


@pytest.mark.parametrize(("kind", "encode", "records"), CASES, ids=[c[0].value for c in CASES])
def test_clickhouse_reads_the_rows_back_as_the_records(
        store: EmbeddedStore, kind: Kind, encode: Callable[[list[Any]], bytes],
        records: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(records, max_size=8))
    def check(recs: list[Any]) -> None:
        got = _read_back(store, kind, encode(recs))
        assert got == [tuple(int(x) if isinstance(x, Side) else x for x in r) for r in recs]

    check()


@pytest.mark.parametrize(("column", "record"), [
    ("price", Trade("v", "s", "t", 1 << 63, 1, Side.BUY, 0, 0)),
    ("ts_recv", Trade("v", "s", "t", 1, 1, Side.BUY, 0, -(1 << 63) - 1)),
])
def test_a_number_beyond_int64_is_refused_naming_its_column(column: str, record: Trade) -> None:
    with pytest.raises(ValueError, match=column):
        rowbinary.trades([record])


@pytest.mark.parametrize("n", [0, 1, -1, (1 << 62) - 1, -(1 << 62) + 1, 1 << 62, -(1 << 62), (1 << 63) - 1,
                               -(1 << 63)])
def test_int64_columns_are_exact_on_both_sides_of_the_machine_word_fast_path(n: int) -> None:
    got = rowbinary.trades([Trade("", "", "", n, n, Side.BUY, n, n)])
    packed = struct.pack("<q", n)
    assert got == b"\x00\x00\x00" + packed * 2 + bytes([int(Side.BUY) & 0xFF]) + packed * 2


OBJECTS = st.lists(st.sampled_from([1, 2, "a", "b", 1.5, None, (), b"x"]), max_size=30)


@given(OBJECTS)
def test_of_types_and_group_by_type_match_a_simple_model(records: list[object]) -> None:
    types: dict[type, str] = {int: "int", str: "str", bytes: "str"}
    assert rowbinary.of_types(records, types) == [r for r in records if type(r) in types]
    model: dict[str, list[object]] = {}
    for r in records:
        if type(r) in types:
            model.setdefault(types[type(r)], []).append(r)
    assert rowbinary.group_by_type(records, types) == model


def test_the_store_keeps_only_what_it_stores(store: EmbeddedStore) -> None:
    trade = Trade("v", "s", "t", 1, 1, Side.BUY, 0, 0)
    delta = BookDelta("v", "s", 1, 1, (), (), 0, 0)
    records: list[object] = [trade, "not a record", delta, 7]
    kept = store.storable(records)
    assert kept == [trade, delta] and kept is not records


def test_levels_beyond_int64_are_refused() -> None:
    with pytest.raises(ValueError, match="bids"):
        rowbinary.book_deltas([BookDelta("v", "s", 1, 1, ((1, 1 << 64),), (), 0, 0)])


def test_the_store_refuses_a_record_it_cannot_encode(store: EmbeddedStore) -> None:
    with pytest.raises(StorageError, match="cannot encode trades rows"):
        store.prepare([Trade("v", "s", "t", 1 << 63, 1, Side.BUY, 0, 0)])
