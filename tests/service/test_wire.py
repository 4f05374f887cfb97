"""server.service.wire writes, byte for byte, what protobuf serializes for the same book delta or trade."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marketdata.v1 import book_pb2, common_pb2, trade_pb2

from server.engine.book import BookStatus
from server.engine.events import BookDelta, Side, Trade
from server.service import convert, wire

I64 = st.integers(-(1 << 63), (1 << 63) - 1)
U64 = st.integers(0, (1 << 64) - 1)
SMALL = st.integers(-10**12, 10**12)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
LEVELS = st.lists(st.tuples(st.one_of(SMALL, I64), st.one_of(SMALL, I64)), max_size=30).map(tuple)
STATUS = st.sampled_from(list(book_pb2.BookStatus.values()))


@given(TEXT, TEXT, U64, U64, LEVELS, LEVELS, STATUS, I64, I64)
def test_book_delta_matches_protobuf(venue: str, symbol: str, sequence: int, venue_sequence: int,
                                     bids: tuple[tuple[int, int], ...], asks: tuple[tuple[int, int], ...],
                                     status: int, ts_event: int, ts_recv: int) -> None:
    expected = book_pb2.BookUpdate(delta=book_pb2.BookDelta(
        venue=venue, symbol=symbol, sequence=sequence, venue_sequence=venue_sequence,
        bids=[book_pb2.PriceLevel(price=p, size=s) for p, s in bids],
        asks=[book_pb2.PriceLevel(price=p, size=s) for p, s in asks],
        status=book_pb2.BookStatus.ValueType(status), ts_event_ns=ts_event, ts_recv_ns=ts_recv)).SerializeToString()
    got = wire.book_delta(venue, symbol, sequence, venue_sequence, bids, asks, status, ts_event, ts_recv)
    assert got == expected


@given(TEXT, TEXT, TEXT, I64, I64, st.integers(0, 2), I64, I64)
def test_trade_matches_protobuf(venue: str, symbol: str, trade_id: str, price: int, size: int, side: int,
                                ts_event: int, ts_recv: int) -> None:
    expected = trade_pb2.Trade(venue=venue, symbol=symbol, trade_id=trade_id, price=price, size=size,
                               side=common_pb2.Side.ValueType(side), ts_event_ns=ts_event,
                               ts_recv_ns=ts_recv).SerializeToString()
    assert wire.trade(venue, symbol, trade_id, price, size, side, ts_event, ts_recv) == expected


@given(TEXT, TEXT, st.integers(0, 10**15), st.integers(0, 10**15), LEVELS, LEVELS,
       st.sampled_from(list(BookStatus)), I64, I64)
def test_hub_delta_path_matches_convert(venue: str, symbol: str, sequence: int, venue_sequence: int,
                                        bids: tuple[tuple[int, int], ...], asks: tuple[tuple[int, int], ...],
                                        status: BookStatus, ts_event: int, ts_recv: int) -> None:
    ev = BookDelta(venue, symbol, venue_sequence, venue_sequence, bids, asks, ts_event, ts_recv)
    expected = convert.book_delta_pb(ev, sequence, status).SerializeToString()
    assert convert.book_delta_bytes(ev, sequence, status) == expected
    assert wire.book_delta_event(ev, sequence, status) == expected  # what the hub calls


@given(TEXT, TEXT, TEXT, SMALL, SMALL, st.sampled_from(list(Side)), I64, I64)
def test_hub_trade_path_matches_convert(venue: str, symbol: str, trade_id: str, price: int, size: int,
                                        side: Side, ts_event: int, ts_recv: int) -> None:
    t = Trade(venue, symbol, trade_id, price, size, side, ts_event, ts_recv)
    assert convert.trade_bytes(t) == convert.trade_pb(t).SerializeToString()


@pytest.mark.parametrize("field", ["price", "size"])
@pytest.mark.parametrize("value", [1 << 63, -(1 << 63) - 1])
def test_out_of_range_numbers_raise_as_protobuf_does(field: str, value: int) -> None:
    level = (value, 1) if field == "price" else (1, value)
    with pytest.raises(ValueError):
        book_pb2.PriceLevel(**{field: value})
    with pytest.raises(ValueError, match=field):
        wire.book_delta("v", "s", 1, 1, (level,), (), 1, 0, 0)
    with pytest.raises(ValueError, match=field):
        wire.trade("v", "s", "t", *level, 1, 0, 0)


@pytest.mark.parametrize(("name", "value"), [("sequence", -1), ("sequence", 1 << 64),
                                             ("venue_sequence", -1), ("ts_event_ns", 1 << 63)])
def test_out_of_range_header_fields_raise(name: str, value: int) -> None:
    args = {"sequence": 1, "venue_sequence": 1, "ts_event_ns": 0}
    args[name] = value
    with pytest.raises(ValueError, match=name):
        wire.book_delta("v", "s", args["sequence"], args["venue_sequence"], (), (), 1, args["ts_event_ns"], 0)


EDGES = [0, 1, -1, (1 << 62) - 1, 1 << 62, -(1 << 62) + 1, -(1 << 62), -(1 << 62) - 1,
         (1 << 63) - 1, -(1 << 63)]
"""Around the compiled fast path's bound (a tagged machine word, |n| < 2**62) and the field's own."""


@pytest.mark.parametrize("value", EDGES)
def test_numbers_at_the_fast_path_bounds_match_protobuf(value: int) -> None:
    unsigned = abs(value)
    expected = book_pb2.BookUpdate(delta=book_pb2.BookDelta(
        venue="v", symbol="s", sequence=unsigned, venue_sequence=unsigned,
        bids=[book_pb2.PriceLevel(price=value, size=value)], ts_event_ns=value,
        ts_recv_ns=value)).SerializeToString()
    assert wire.book_delta("v", "s", unsigned, unsigned, ((value, value),), (), 0, value, value) == expected


PAYLOADS = st.lists(st.binary(max_size=300), max_size=40)


@given(PAYLOADS, st.sampled_from([1, 4, 11, 15]), st.integers(1, 50))
def test_frame_parts_joins_what_update_item_frames(payloads: list[bytes], field: int, part_items: int) -> None:
    parts = wire.frame_parts(payloads, field, part_items, ("v", "s"))
    assert b"".join(p[0] for p in parts) == b"".join(convert.update_item(field, p) for p in payloads)
    assert [p[1] for p in parts] == [min(part_items, len(payloads) - i) for i in range(0, len(payloads), part_items)]
    assert all(p[2] == ("v", "s") for p in parts)


@given(PAYLOADS, st.integers(1, 50))
def test_frame_parts_field_zero_joins_what_batch_item_frames(payloads: list[bytes], part_items: int) -> None:
    parts = wire.frame_parts(payloads, 0, part_items, None)
    assert b"".join(p[0] for p in parts) == b"".join(map(convert.batch_item, payloads))
    assert sum(p[1] for p in parts) == len(payloads) and all(p[2] is None for p in parts)


def test_frame_parts_refuses_what_it_cannot_frame() -> None:
    with pytest.raises(ValueError, match="field"):
        wire.frame_parts([b"x"], 16, 10, None)
    with pytest.raises(ValueError, match="part_items"):
        wire.frame_parts([b"x"], 1, 0, None)
