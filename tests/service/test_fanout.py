"""The fan-out hub: encode once, bounded queues, conflation, book resync, overflow and close."""

from __future__ import annotations

import asyncio

import pytest
from marketdata.v1 import book_pb2
from marketdata.v1 import market_data_service_pb2 as pb

from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Side, Trade, TradingStatusChange
from server.engine.updates import Nbbo
from server.service import convert
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


def test_trades_are_encoded_once_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    engine, hub, _ = _engine_with_book()
    a, b, c = Subscriber(), Subscriber(), Subscriber()
    hub.subscribe(a, [("trades", "S", "")])
    hub.subscribe(b, [("trades", "S", "v")])
    hub.subscribe(c, [("trades", "S", "")])
    encoded: list[Trade] = []
    trade_bytes = convert.trade_bytes

    def counting(t: Trade) -> bytes:
        encoded.append(t)
        return trade_bytes(t)

    monkeypatch.setattr(convert, "trade_bytes", counting)
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    assert len(encoded) == 1  # one serialization for both topics
    assert a.group is not None and b.group is not None and a.group is not b.group and c.group is a.group
    assert a.group.log[-1].parts[0][0] == b.group.log[-1].parts[0][0]  # each topic frames the same bytes
    message = pb.StreamTradesResponse.FromString(asyncio.run(a.next_message()))
    assert message.sequence == 1 and message.trades[0].trade_id == "1"


def test_nobody_subscribed_means_nothing_encoded() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("trades", "OTHER", "")])
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    assert sub.queued == 0


def test_trades_overflow_ends_the_stream() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(max_pending=3)
    hub.subscribe(sub, [("trades", "S", "")])
    for i in range(5):
        _apply(engine, hub, Trade("v", "S", str(i), 100, 1, Side.BUY, 2, 2))
    assert sub.overflowed
    assert sub.group is not None and sub not in sub.group.members  # it left: nothing is kept for it
    with pytest.raises(SubscriberOverflowError, match="behind"):
        asyncio.run(sub.next_message())


def test_nbbo_conflates_to_the_latest() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("nbbo", "S")])
    for i in range(2, 12):
        _apply(engine, hub, BookDelta("v", "S", i, i, ((100, i),), (), i, i))
    assert sub.group is not None and len(sub.group.latest) == 1 and sub.group.conflations == 9
    message = pb.StreamNbboResponse.FromString(asyncio.run(sub.next_message()))
    assert [n.bid_size for n in message.nbbos] == [11]


def test_within_one_batch_only_the_last_nbbo_per_symbol_is_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No reader can see a conflating value that the same engine batch replaces, so it is not encoded."""
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(multiplexed=True)
    hub.subscribe(sub, [("nbbo", "S"), ("book", "v", "S")])
    encoded: list[int] = []
    real = convert.nbbo_pb

    def counting(n: Nbbo) -> object:
        encoded.append(n.bid_size)
        return real(n)

    monkeypatch.setattr(convert, "nbbo_pb", counting)
    _apply(engine, hub, *(BookDelta("v", "S", i, i, ((100, i),), (), i, i) for i in range(2, 12)))
    assert encoded == [11]
    message = pb.SubscribeResponse.FromString(asyncio.run(sub.next_message()))
    kinds = [u.WhichOneof("update") for u in message.batch.updates]
    assert kinds == ["book"] * 10 + ["nbbo"]  # every delta; the NBBO once, after them
    assert message.batch.updates[-1].nbbo.bid_size == 11


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


def test_a_halt_and_a_resume_reach_book_readers_at_once_as_snapshots() -> None:
    """A halt changes no level: without a snapshot a book stream would show it only at the next periodic
    one (30 s). Each reader gets a fresh snapshot carrying the status, in sequence."""
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(book_resync=lambda key: hub.book_snapshot_item("v", "S", 10))
    hub.subscribe(sub, [("book", "v", "S")])
    _apply(engine, hub, BookDelta("v", "S", 2, 2, ((98, 1),), (), 2, 2))
    _apply(engine, hub, TradingStatusChange("v", "S", True, "news pending", 3, 3))
    message = pb.StreamOrderBookResponse.FromString(asyncio.run(sub.next_message()))
    kinds = [u.WhichOneof("update") for u in message.updates]
    assert kinds == ["snapshot"]  # the queued delta is in it
    snap = message.updates[0].snapshot
    assert snap.status == book_pb2.BOOK_STATUS_HALTED and (98 * 1) in [lv.price for lv in snap.bids]
    _apply(engine, hub, TradingStatusChange("v", "S", False, "", 4, 4))
    _apply(engine, hub, BookDelta("v", "S", 3, 3, ((97, 1),), (), 5, 5))
    message = pb.StreamOrderBookResponse.FromString(asyncio.run(sub.next_message()))
    assert [u.WhichOneof("update") for u in message.updates] == ["snapshot"]
    resumed = message.updates[0].snapshot
    assert resumed.status == book_pb2.BOOK_STATUS_CONSISTENT and resumed.sequence > snap.sequence
    assert 97 in [lv.price for lv in resumed.bids]


def test_deltas_carry_the_books_status_crossed_until_it_uncrosses() -> None:
    """A delta's status is the book's after it: the engine reports crossing and uncrossing once, as a
    BookStatusChange right after the delta, and the deltas in between are still crossed."""
    engine, hub, _ = _engine_with_book()  # bids 100, 99; asks 101, 102
    sub = Subscriber(book_resync=lambda key: hub.book_snapshot_item("v", "S", 10))
    hub.subscribe(sub, [("book", "v", "S")])
    _apply(engine, hub, BookDelta("v", "S", 2, 2, ((101, 1),), (), 2, 2))  # bid 101 = ask: crossed
    _apply(engine, hub, BookDelta("v", "S", 3, 3, ((98, 1),), (), 3, 3))  # still crossed
    _apply(engine, hub, BookDelta("v", "S", 4, 4, (), ((101, 0),), 4, 4))  # ask 101 gone: uncrossed
    _apply(engine, hub, BookDelta("v", "S", 5, 5, ((97, 1),), (), 5, 5))
    message = pb.StreamOrderBookResponse.FromString(asyncio.run(sub.next_message()))
    statuses = [u.delta.status for u in message.updates]
    crossed, consistent = book_pb2.BOOK_STATUS_CROSSED, book_pb2.BOOK_STATUS_CONSISTENT
    assert statuses == [crossed, crossed, consistent, consistent]


def test_polled_topics_are_published_in_steps() -> None:
    """The timer's round yields between steps, so the event loop is never held for the whole round."""
    engine, hub, _ = _engine_with_book()
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    sub = Subscriber()
    hub.subscribe(sub, [("ticker", "v", "S"), ("consolidated", "S", "10"), ("trades", "S", "")])
    steps = hub.publish_polled_steps(topics_per_step=1)
    assert sub.group is not None and not sub.group.latest
    next(steps)
    assert len(sub.group.latest) == 1  # one polled topic published, the other not yet
    assert sum(1 for _ in steps) == 1
    assert len(sub.group.latest) == 2


def _trade_ids(data: bytes) -> list[str]:
    return [t.trade_id for t in pb.StreamTradesResponse.FromString(data).trades]


def test_a_group_shares_one_log_entry_per_batch_and_trims_what_all_read() -> None:
    engine, hub, _ = _engine_with_book()
    subs = [Subscriber() for _ in range(50)]
    for sub in subs:
        hub.subscribe(sub, [("trades", "S", "")])
    assert len(hub.groups) == 1
    (group,) = hub.groups.values()
    for i in range(40):
        _apply(engine, hub, Trade("v", "S", str(i), 100, 1, Side.BUY, 2, 2))
    assert group.total == 40 and len(group.log) <= 40
    for sub in subs:
        assert _trade_ids(asyncio.run(sub.next_message())) == [str(i) for i in range(40)]
    _apply(engine, hub, Trade("v", "S", "last", 100, 1, Side.BUY, 2, 2))
    group.trim()
    assert len(group.log) == 1 and all(sub.queued == 1 for sub in subs)


def test_a_slow_member_does_not_hold_the_group_or_lose_trades() -> None:
    engine, hub, _ = _engine_with_book()

    def member() -> Subscriber:
        return Subscriber(max_pending=50, multiplexed=True,
                          book_resync=lambda key: hub.book_snapshot_item("v", "S", 10))

    fast, slow = member(), member()
    topics = [("book", "v", "S"), ("trades", "S", "")]
    hub.subscribe(fast, topics)
    hub.subscribe(slow, topics)
    group = fast.group
    assert group is not None and group is slow.group
    for i in range(2, 202):
        events: list[object] = [BookDelta("v", "S", i, i, ((98, i),), (), i, i)]
        if i % 20 == 0:
            events.append(Trade("v", "S", f"t{i}", 100, 1, Side.BUY, i, i))
        _apply(engine, hub, *events)
        asyncio.run(fast.next_message())
        assert len(group.log) <= 50 + 32, "bounded: the slow reader is moved out of the log when it lags"
    # The slow reader fell behind: its book deltas gave way to a snapshot, its trades were kept.
    assert slow.dropped > 0 and not slow.overflowed
    first = pb.SubscribeResponse.FromString(asyncio.run(slow.next_message())).batch.updates
    assert first[0].WhichOneof("update") == "book" and first[0].book.WhichOneof("update") == "snapshot"
    trades = [u.trade.trade_id for u in first if u.WhichOneof("update") == "trade"]
    while slow.queued:
        updates = pb.SubscribeResponse.FromString(asyncio.run(slow.next_message())).batch.updates
        trades += [u.trade.trade_id for u in updates if u.WhichOneof("update") == "trade"]
    assert trades == [f"t{i}" for i in range(20, 202, 20)]


def test_changing_topics_keeps_what_was_queued() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("trades", "S", "")])
    _apply(engine, hub, Trade("v", "S", "1", 100, 1, Side.BUY, 2, 2))
    hub.subscribe(sub, [("nbbo", "S")])  # a new group; the queued trade comes along
    _apply(engine, hub, Trade("v", "S", "2", 100, 1, Side.BUY, 3, 3))
    assert _trade_ids(asyncio.run(sub.next_message())) == ["1", "2"]
    hub.unsubscribe(sub)
    assert hub.groups == {} and hub.subscribers == {}


def test_a_large_batch_is_cut_so_messages_stay_bounded() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber(max_pending=100_000, max_items_per_message=1000)
    hub.subscribe(sub, [("trades", "S", "")])
    _apply(engine, hub, *(Trade("v", "S", str(i), 100, 1, Side.BUY, 2 + i, 2 + i) for i in range(5000)))
    sizes = []
    ids: list[str] = []
    while sub.queued:
        got = _trade_ids(asyncio.run(sub.next_message()))
        sizes.append(len(got))
        ids += got
    assert ids == [str(i) for i in range(5000)]
    assert max(sizes) <= 2000, "a message takes whole entries of at most 1000 items until it holds 1000"


def test_a_waiting_reader_is_woken_by_a_conflated_update() -> None:
    engine, hub, _ = _engine_with_book()
    sub = Subscriber()
    hub.subscribe(sub, [("nbbo", "S")])

    async def run() -> bytes:
        reader = asyncio.create_task(sub.next_message())
        await asyncio.sleep(0.01)
        assert not reader.done()
        _apply(engine, hub, BookDelta("v", "S", 2, 2, ((100, 7),), (), 2, 2))  # only the NBBO changes
        return await asyncio.wait_for(reader, 1.0)

    message = pb.StreamNbboResponse.FromString(asyncio.run(run()))
    assert [n.bid_size for n in message.nbbos] == [7]
