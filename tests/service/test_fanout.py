"""The fan-out hub: encode once, bounded queues, conflation, book resync, overflow and close."""

from __future__ import annotations

import asyncio

import pytest
from marketdata.v1 import market_data_service_pb2 as pb

from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Side, Trade
from server.service.fanout import Hub, HubClosedError, Subscriber, SubscriberOverflowError


def _engine_with_book() -> tuple[Engine, Hub, list[object]]:
    engine = Engine()
    hub = Hub(engine)
    out: list[object] = []
    engine.apply(BookSnapshot("v", "S", 1, ((100, 5), (99, 5)), ((101, 5), (102, 5)), 1, 1), out)
    hub.on_updates(out)
    return engine, hub, out


def _apply(engine: Engine, hub: Hub, *events: object) -> None:
    out: list[object] = []
    engine.apply_batch(events, out)  # type: ignore[arg-type]
    hub.on_updates(out)


def test_trades_are_encoded_once_and_shared() -> None:
    engine, hub, _ = _engine_with_book()
    a, b = Subscriber(), Subscriber()
    hub.subscribe(a, [("trades", "S", "")])
    hub.subscribe(b, [("trades", "S", "v")])
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    assert a.pending == b.pending and a.pending[0] is b.pending[0]  # the same bytes object
    message = pb.StreamTradesResponse.FromString(asyncio.run(a.next_message()))
    assert message.sequence == 1 and message.trades[0].trade_id == "1"


def test_nobody_subscribed_means_nothing_encoded() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("trades", "OTHER", "")])
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    assert sub.pending == []


def test_trades_overflow_ends_the_stream() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(max_pending=3)
    hub.subscribe(sub, [("trades", "S", "")])
    for i in range(5):
        _apply(engine, hub, Trade("v", "S", str(i), 100, 1, Side.BUY, 2, 2))
    assert len(sub.pending) == 3 and sub.overflowed
    with pytest.raises(SubscriberOverflowError, match="behind"):
        asyncio.run(sub.next_message())


def test_nbbo_conflates_to_the_latest() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("nbbo", "S")])
    for i in range(2, 12):
        _apply(engine, hub, BookDelta("v", "S", i, i, ((100, i),), (), i, i))
    assert len(sub.conflated) == 1 and sub.conflations == 9
    message = pb.StreamNbboResponse.FromString(asyncio.run(sub.next_message()))
    assert [n.bid_size for n in message.nbbos] == [11]


def test_a_lagging_book_subscriber_is_resynced_by_a_snapshot() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(max_pending=4, book_resync=lambda key: hub.book_snapshot_item("v", "S", 10))
    assert sub.book_resync is not None
    hub.subscribe(sub, [("book", "v", "S")])
    for i in range(2, 12):
        _apply(engine, hub, BookDelta("v", "S", i, i, ((98, i),), (), i, i))
    message = pb.StreamOrderBookResponse.FromString(asyncio.run(sub.next_message()))
    kinds = [u.WhichOneof("update") for u in message.updates]
    assert kinds[0] == "snapshot"
    snapshot = message.updates[0].snapshot
    book = engine.book("v", "S")
    assert book is not None and snapshot.sequence == book.version == hub.book_sequence["v", "S"]
    # The deltas after the snapshot continue its sequence.
    seqs = [u.delta.sequence for u in message.updates[1:]]
    assert seqs == list(range(snapshot.sequence + 1, snapshot.sequence + 1 + len(seqs)))
    assert sub.dropped > 0 and not sub.overflowed


def test_close_drains_then_ends() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("trades", "S", "")])
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    hub.close()

    async def read_all() -> int:
        count = 0
        with pytest.raises(HubClosedError):
            while True:
                await sub.next_message()
                count += 1
        return count

    assert asyncio.run(read_all()) == 1


def test_a_lagging_mixed_subscriber_keeps_its_trades_and_resyncs_books() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(max_pending=4, multiplexed=True,
                     book_resync=lambda key: hub.book_snapshot_item("v", "S", 10))
    hub.subscribe(sub, [("book", "v", "S"), ("trades", "S", "")])
    _apply(engine, hub, Trade("v", "S", "t1", 100, 1, Side.BUY, 2, 2))
    for i in range(2, 8):
        _apply(engine, hub, BookDelta("v", "S", i, i, ((98, i),), (), i, i))
    response = pb.SubscribeResponse.FromString(asyncio.run(sub.next_message()))
    kinds = [u.WhichOneof("update") for u in response.batch.updates]
    assert kinds[0] == "book" and response.batch.updates[0].book.WhichOneof("update") == "snapshot"
    assert "trade" in kinds, "a book resync must not drop queued trades"
    assert not sub.overflowed


def test_a_gap_marker_takes_its_own_sequence_number() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(book_resync=lambda key: hub.book_snapshot_item("v", "S", 10))
    hub.subscribe(sub, [("book", "v", "S")])
    _apply(engine, hub, BookDelta("v", "S", 2, 2, ((98, 1),), (), 2, 2))
    _apply(engine, hub, BookDelta("v", "S", 9, 9, ((98, 2),), (), 3, 3))  # gap: 3..8 missing
    _apply(engine, hub, BookSnapshot("v", "S", 20, ((100, 1),), ((101, 1),), 4, 4))
    message = pb.StreamOrderBookResponse.FromString(asyncio.run(sub.next_message()))
    seqs = [getattr(u, u.WhichOneof("update") or "").sequence for u in message.updates]
    kinds = [u.WhichOneof("update") for u in message.updates]
    assert kinds == ["delta", "gap", "snapshot"]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
