"""The Kafka feed's duplicate filter against a set-based model, under Kafka-like redelivery.

A "log" per partition is produced in order (one symbol's book events with growing sequences, trades
with unique ids); delivery replays arbitrary earlier suffixes of partitions (a crash or rebalance
rewinds to the last committed offset), interleaving partitions. The deduper must pass exactly the
first delivery of every record, in log order, like a model that remembers everything in a set.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.kafka.dedupe import Deduper
from feeds.kafka.parser import BookHash, InstrumentStatus
from server.engine.events import AssetClass, BookDelta, BookSnapshot, Side, Trade

Item = Trade | BookDelta | BookSnapshot | BookHash


def _log(venue: str, symbol: str, kinds: list[str]) -> list[Item]:
    """One symbol's engine stream: sequence +1 per event; trades get unique ids."""
    out: list[Item] = []
    last_book = 0
    for seq, kind in enumerate(kinds, start=1):
        if kind == "trade":
            out.append(Trade(venue, symbol, f"t{seq}", 1, 1, Side.BUY, seq, seq))
        elif kind == "delta":
            out.append(BookDelta(venue, symbol, last_book + 1, seq, ((1, 1),), (), seq, seq))
            last_book = seq
        elif kind == "snapshot":
            out.append(BookSnapshot(venue, symbol, seq, ((1, 1),), (), seq, seq))
            last_book = seq
        else:
            out.append(BookHash(venue, symbol, seq, last_book, 10, 0, seq, seq))
    return out


def _key(item: Item) -> tuple[object, ...]:
    if isinstance(item, Trade):
        return ("trade", item.venue, item.symbol, item.trade_id)
    return ("book", item.venue, item.symbol, item.seq)


_kinds = st.lists(st.sampled_from(["trade", "delta", "snapshot", "hash"]), min_size=1, max_size=30)


@st.composite
def _deliveries(draw: st.DrawFn) -> tuple[list[list[Item]], list[Item]]:
    """Partition logs (one symbol each), and a delivery order with rewinds (each partition in order)."""
    logs = [_log(draw(st.sampled_from(["mx", "ny"])), f"S{i}", draw(_kinds)) for i in range(draw(st.integers(1, 4)))]
    positions = [0] * len(logs)
    delivered: list[Item] = []
    for _ in range(draw(st.integers(0, 200))):
        p = draw(st.integers(0, len(logs) - 1))
        if positions[p] > 0 and draw(st.integers(0, 9)) == 0:
            positions[p] = draw(st.integers(0, positions[p] - 1))  # rewind to an earlier committed offset
            continue
        if positions[p] < len(logs[p]):
            delivered.append(logs[p][positions[p]])
            positions[p] += 1
    for p, log in enumerate(logs):  # finally everything is read
        delivered.extend(log[positions[p]:])
    return logs, delivered


@given(_deliveries())
@settings(max_examples=400, deadline=None)
def test_matches_a_set_model_under_redelivery(case: tuple[list[list[Item]], list[Item]]) -> None:
    logs, delivered = case
    deduper = Deduper()
    seen: set[tuple[object, ...]] = set()
    passed: list[Item] = []
    expected: list[Item] = []
    for item in delivered:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            expected.append(item)
        if deduper.admit(item):
            passed.append(item)
    assert passed == expected
    assert deduper.duplicates == len(delivered) - len(expected)
    for log in logs:  # each stream arrives whole and in order
        stream = [i for i in passed if (i.venue, i.symbol) == (log[0].venue, log[0].symbol)]
        assert [_key(i) for i in stream] == [_key(i) for i in log]


def test_a_stale_snapshot_does_not_roll_the_book_back_but_trades_still_count() -> None:
    d = Deduper()
    assert d.admit(BookSnapshot("mx", "A", 100, (), (), 0, 0))
    assert not d.admit(BookDelta("mx", "A", 90, 95, (), (), 0, 0))  # in the snapshot already
    assert not d.admit(BookSnapshot("mx", "A", 100, (), (), 0, 0))
    assert d.admit(Trade("mx", "A", "t96", 1, 1, Side.BUY, 0, 0))  # trades are not in a snapshot
    assert d.admit(BookDelta("mx", "A", 101, 101, (), (), 0, 0))
    assert d.book_mark("mx", "A") == 101
    assert d.book_mark("mx", "B") == 0
    assert d.admit(BookDelta("ny", "A", 1, 1, (), (), 0, 0))  # another venue, another stream
    assert d.duplicates == 2


def test_seed_from_storage_counts_nothing() -> None:
    stored: list[Item] = [BookSnapshot("mx", "A", 3, (), (), 0, 0), Trade("mx", "A", "t1", 1, 1, Side.SELL, 0, 0)]
    d = Deduper()
    d.seed(stored)
    d.seed(stored)
    assert d.duplicates == 0
    assert not d.admit(Trade("mx", "A", "t1", 1, 1, Side.SELL, 0, 0))
    assert not d.admit(BookDelta("mx", "A", 2, 2, (), (), 0, 0))
    assert d.duplicates == 2


def test_instrument_events_apply_only_when_newer() -> None:
    def status(seq: int, halted: bool) -> InstrumentStatus:
        return InstrumentStatus("mx", "A", "halted" if halted else "resumed", halted, seq, AssetClass.CRYPTO, "", "",
                                0, 0, "", 0, 0)

    d = Deduper()
    assert d.admit(status(3, False))
    assert not d.admit(status(2, True))  # an older halt read after the resume (another topic)
    assert d.admit(status(4, True))
    # Instrument and book sequences are separate counters.
    assert d.admit(BookSnapshot("mx", "A", 1, (), (), 0, 0))


def test_memory_is_bounded() -> None:
    d = Deduper(trade_window=10, max_streams=3)
    for i in range(1000):
        assert d.admit(Trade("mx", "A", str(i), 1, 1, Side.BUY, 0, 0))
    assert len(d._trades["mx", "A"]) <= 20
    assert not d.admit(Trade("mx", "A", "999", 1, 1, Side.BUY, 0, 0))  # recent ids are kept
    for s in range(10):
        assert d.admit(BookSnapshot("mx", f"S{s}", 5, (), (), 0, 0))
        assert d.admit(Trade("mx", f"S{s}", "1", 1, 1, Side.BUY, 0, 0))
    assert len(d._book) == 3
    assert len(d._trades) == 3
    assert d.book_mark("mx", "S9") == 5
    assert d.book_mark("mx", "S0") == 0  # forgotten: the oldest stream goes first


def test_rollback_forgets_a_batch_that_never_reached_the_sink() -> None:
    d = Deduper(trade_window=2)
    d.admit(BookSnapshot("mx", "A", 1, (), (), 0, 0))
    d.admit(Trade("mx", "A", "t0", 1, 1, Side.BUY, 0, 0))
    d.begin()
    batch: list[Item] = [BookDelta("mx", "A", 2, 2, (), (), 0, 0), BookSnapshot("mx", "B", 7, (), (), 0, 0),
                         Trade("mx", "A", "t1", 1, 1, Side.BUY, 0, 0), Trade("mx", "A", "t0", 1, 1, Side.BUY, 0, 0),
                         BookDelta("mx", "A", 3, 3, (), (), 0, 0)]
    assert [d.admit(i) for i in batch] == [True, True, True, False, True]
    d.rollback()
    assert d.duplicates == 0
    assert (d.book_mark("mx", "A"), d.book_mark("mx", "B")) == (1, 0)
    assert [d.admit(i) for i in batch] == [True, True, True, False, True]  # the redelivery is new again
    d.begin()
    d.admit(BookDelta("mx", "A", 4, 4, (), (), 0, 0))
    d.end()
    d.rollback()  # nothing to undo after end
    assert d.book_mark("mx", "A") == 4
