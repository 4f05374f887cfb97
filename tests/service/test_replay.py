"""ReplayStream building blocks: request validation, event-time order, exact values, message cap,
sequences, filters, pacing (injected clock, no real sleeping) and bounded reads, on a real EmbeddedStore."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from marketdata.v1 import candle_pb2, market_data_service_pb2

from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Quote, Side, Trade
from server.engine.pricing import FundingRate, IndexPrice, IndexSource, MarkPrice
from server.service import convert
from server.service.replay import (
    ReplayNotFoundError,
    ReplayPlan,
    ReplaySource,
    replay_messages,
    replay_responses,
    validate_replay,
)
from server.storage import EmbeddedStore, StoredRecord

pb = market_data_service_pb2
Req = pb.ReplayStreamRequest
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
S = 1_000_000_000
HOUR = 3600 * S
SYMBOLS = ("BTC/USD", "ETH/USD", "BTC/USD.INDEX", "BTC-PERP", "PACE", "BURST")


def _candle(venue: str, interval: Interval, open_time: int, ts_event: int, close: int) -> Candle:
    return Candle(venue, "BTC/USD", interval, open_time, open_time + 60 * S, 100, 110, 90, close, 5 * S,
                  500 * S * S, 3 * S, 2 * S, 4, True, False, ts_event, ts_event + 3)


def _dataset() -> list[StoredRecord]:
    """Every replayable kind, each record at its own event time (no ties), interleaved in time."""
    out: list[StoredRecord] = []
    for i in range(300):  # trades on two venues, 1 ms apart
        venue = "kraken" if i % 3 == 0 else "binance"
        out.append(Trade(venue, "BTC/USD", f"t{i}", 60_000 * S + i, S + i, Side.BUY if i % 2 else Side.SELL,
                         T0 + i * MS, T0 + i * MS + 7))
    out.append(BookSnapshot("kraken", "ETH/USD", 10, ((3000 * S, 2 * S), (2999 * S, S)), ((3001 * S, S),),
                            T0 + 5 * MS + 1, T0 + 5 * MS + 9))
    out.extend(BookDelta("kraken", "ETH/USD", 11 + j, 11 + j, ((3000 * S, j),), (), T0 + (10 + j) * MS + 1,
                         T0 + (10 + j) * MS + 5) for j in range(20))
    out.append(Quote("oanda", "ETH/USD", 2999 * S, S, 3001 * S, 0, T0 + 40 * MS + 1, T0 + 40 * MS + 2))
    out.append(_candle("kraken", Interval.M1, T0, T0 + 50 * MS + 1, 101))
    out.append(_candle("kraken", Interval.S1, T0, T0 + 51 * MS + 1, 102))
    out.append(IndexPrice("BTC/USD.INDEX", 60_000 * S, (IndexSource("kraken", "BTC/USD", 60_000 * S, 1, True, ""),
                                                       IndexSource("binance", "BTC/USD", 0, 1, False, "stale")),
                          T0 + 60 * MS + 1))
    out.append(MarkPrice("BTC-PERP", 60_010 * S, 60_000 * S, 10 * S, T0 + 61 * MS + 1))
    out.append(FundingRate("BTC-PERP", 100_000, 90_000, 10_000, T0 + 8 * HOUR, 8 * HOUR - 62 * MS, 8 * HOUR,
                           T0 + 62 * MS + 1))
    # 100 ms apart: for pacing
    out.extend(Trade("binance", "PACE", f"p{k}", 100 * S, S, Side.BUY, T0 + k * 100 * MS, T0 + k * 100 * MS)
               for k in range(20))
    # a burst within 1 ms, then one more a second later
    out.extend(Trade("binance", "BURST", f"b{k}", 100 * S, S, Side.BUY, T0 + k * 100_000, T0) for k in range(10))
    out.append(Trade("binance", "BURST", "late", 100 * S, S, Side.BUY, T0 + S, T0 + S))
    return out


def _event_time(r: Any) -> int:
    return int(r.ts if isinstance(r, (IndexPrice, MarkPrice, FundingRate)) else r.ts_event)


DATA = _dataset()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    """One store for the module (chdb: one open data directory per process), closed at its end."""
    st = EmbeddedStore.open(tmp_path_factory.mktemp("replay") / "db")
    try:
        st.write_batch(DATA)
        yield st
    finally:
        st.close()


def _plan(symbols: Collection[str] = ("BTC/USD", "ETH/USD", "BTC/USD.INDEX", "BTC-PERP"), *,
          channels: Collection[int] = (), venues: Collection[str] = (), speed: float = 0.0,
          interval: int = 0, start: int = T0, end: int = T0 + HOUR) -> ReplayPlan:
    request = Req(symbols=list(symbols), channels=list(channels), venues=list(venues),  # type: ignore[arg-type]
                  speed=speed, candle_interval=interval, start_ns=start, end_ns=end)  # type: ignore[arg-type]
    return validate_replay(request, max_range_ns=24 * HOUR, known_symbols=SYMBOLS)


def _collect(store: ReplaySource, plan: ReplayPlan, **options: Any) -> list[pb.ReplayStreamResponse]:
    async def run() -> list[pb.ReplayStreamResponse]:
        return [m async for m in replay_messages(store, plan, **options)]

    return asyncio.run(run())


def _collect_bytes(store: ReplaySource, plan: ReplayPlan, **options: Any) -> list[bytes]:
    async def run() -> list[bytes]:
        return [b async for b in replay_responses(store, plan, **options)]

    return asyncio.run(run())


def _expected(records: list[StoredRecord]) -> list[bytes]:
    """Each record as ``convert.update_pb`` encodes it (book updates numbered per (venue, symbol) from 1)."""
    seqs: dict[tuple[str, str], int] = {}
    out = []
    for r in records:
        seq = 0
        if isinstance(r, (BookSnapshot, BookDelta, Quote)):
            seq = seqs[(r.venue, r.symbol)] = seqs.get((r.venue, r.symbol), 0) + 1
        update = convert.update_pb(r, seq)
        assert update is not None
        out.append(update.SerializeToString())
    return out


MAIN = ("BTC/USD", "ETH/USD", "BTC/USD.INDEX", "BTC-PERP")
MAIN_RECORDS = sorted(
    (r for r in DATA if r.symbol in MAIN and not (isinstance(r, Candle) and r.interval != Interval.M1)),
    key=_event_time)


# ----------------------------------------------------------------------------------------- contents


def test_replays_every_channel_in_event_time_order_with_exact_values(store: EmbeddedStore) -> None:
    messages = _collect(store, _plan(MAIN), chunk=64, max_updates_per_message=50)
    updates = [u for m in messages for u in m.updates]
    assert [u.SerializeToString() for u in updates] == _expected(MAIN_RECORDS)
    kinds = {u.WhichOneof("update") for u in updates}
    assert kinds == {"trade", "book", "candle", "index_price", "mark_price", "funding_rate"}
    times = [getattr(u, str(u.WhichOneof("update"))).ts_event_ns if u.WhichOneof("update") != "book"
             else getattr(u.book, str(u.book.WhichOneof("update"))).ts_event_ns for u in updates]
    assert times == sorted(times)
    first = updates[0].trade
    assert (first.venue, first.symbol, first.trade_id, first.price, first.size, first.side, first.ts_event_ns,
            first.ts_recv_ns) == ("kraken", "BTC/USD", "t0", 60_000 * S, S, 2, T0, T0 + 7)
    books = [u.book for u in updates if u.HasField("book")]
    assert books[0].snapshot.sequence == 1 and books[0].snapshot.venue_sequence == 10
    assert [b.delta.sequence for b in books[1:21]] == list(range(2, 22))  # per (venue, symbol) from 1
    quote = books[-1].snapshot  # a quote is a one-level book snapshot; its own (venue, symbol)
    assert (quote.venue, quote.sequence, len(quote.bids), len(quote.asks)) == ("oanda", 1, 1, 0)


def test_response_bytes_equal_batches_of_update_pb_items(store: EmbeddedStore) -> None:
    data = _collect_bytes(store, _plan(MAIN), chunk=37, max_updates_per_message=25)
    items = [convert.batch_item(b) for b in _expected(MAIN_RECORDS)]
    assert data == [convert.batch_from_items(i + 1, items[k:k + 25]) for i, k in enumerate(range(0, len(items), 25))]


@pytest.mark.parametrize(("chunk", "cap"), [(10, 1), (7, 3), (64, 50), (1000, 500), (5, 500)])
def test_message_cap_and_contiguous_sequences(store: EmbeddedStore, chunk: int, cap: int) -> None:
    messages = _collect(store, _plan(MAIN), chunk=chunk, max_updates_per_message=cap)
    sizes = [len(m.updates) for m in messages]
    assert sum(sizes) == len(MAIN_RECORDS)
    assert all(1 <= n <= cap for n in sizes)
    assert all(n == cap for n in sizes[:-1])  # unpaced messages are full, whatever the chunk size
    assert [m.sequence for m in messages] == list(range(1, len(messages) + 1))


def test_empty_range_sends_nothing(store: EmbeddedStore) -> None:
    assert _collect(store, _plan(MAIN, start=T0 - HOUR, end=T0)) == []


def _oneofs(messages: list[pb.ReplayStreamResponse]) -> list[str]:
    return [str(u.WhichOneof("update")) for m in messages for u in m.updates]


def test_filters(store: EmbeddedStore) -> None:
    trades = _collect(store, _plan(MAIN, channels=[pb.CHANNEL_TRADES]))
    assert set(_oneofs(trades)) == {"trade"} and len(_oneofs(trades)) == 300

    kraken = [u for m in _collect(store, _plan(MAIN, venues=["kraken"])) for u in m.updates]
    venues = {getattr(u, str(u.WhichOneof("update"))).venue for u in kraken if not u.HasField("book")
              and u.WhichOneof("update") in ("trade", "candle")}
    assert venues == {"kraken"}
    assert sum(u.HasField("trade") for u in kraken) == 100
    assert not any(u.HasField("book") and u.book.snapshot.venue == "oanda" for u in kraken)
    # index / mark / funding are cross-venue: a venue filter does not drop them
    assert {"index_price", "mark_price", "funding_rate"} <= {str(u.WhichOneof("update")) for u in kraken}

    m1 = [u.candle for m in _collect(store, _plan(MAIN, channels=[pb.CHANNEL_CANDLES])) for u in m.updates]
    assert [(c.interval, c.close) for c in m1] == [(candle_pb2.CANDLE_INTERVAL_M1, 101)]  # UNSPECIFIED = 1 min
    s1 = [u.candle for m in _collect(store, _plan(MAIN, channels=[pb.CHANNEL_CANDLES],
                                                  interval=candle_pb2.CANDLE_INTERVAL_S1)) for u in m.updates]
    assert [(c.interval, c.close) for c in s1] == [(candle_pb2.CANDLE_INTERVAL_S1, 102)]

    marks = _collect(store, _plan(MAIN, channels=[pb.CHANNEL_MARK_PRICE]))
    assert _oneofs(marks) == ["mark_price"]
    pricing = _collect(store, _plan(MAIN, channels=[pb.CHANNEL_FUNDING_RATE, pb.CHANNEL_INDEX_PRICE]))
    assert _oneofs(pricing) == ["index_price", "funding_rate"]

    book = _collect(store, _plan(["ETH/USD"], channels=[pb.CHANNEL_BOOK]))
    assert _oneofs(book) == ["book"] * 22

    window = _collect(store, _plan(["BTC/USD"], channels=[pb.CHANNEL_TRADES], start=T0 + 10 * MS, end=T0 + 20 * MS))
    assert [u.trade.trade_id for m in window for u in m.updates] == [f"t{i}" for i in range(10, 20)]


# -------------------------------------------------------------------------------------------- pacing


class FakeTime:
    """A clock that only moves when the replay sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _paced(store: ReplaySource, plan: ReplayPlan, fake: FakeTime, *, consumer_delay: float = 0.0,
           **options: Any) -> list[tuple[float, pb.ReplayStreamResponse]]:
    """(fake time of arrival relative to the first message, message) of each message."""
    async def run() -> list[tuple[float, pb.ReplayStreamResponse]]:
        out = []
        async for m in replay_messages(store, plan, clock=fake.clock, sleep=fake.sleep, **options):
            out.append((fake.now, m))
            fake.now += consumer_delay
        return [(t - out[0][0], m) for t, m in out]

    return asyncio.run(run())


@pytest.mark.parametrize("speed", [1.0, 10.0, 0.5])
def test_pacing_follows_event_time_divided_by_speed(store: EmbeddedStore, speed: float) -> None:
    fake = FakeTime()
    got = _paced(store, _plan(["PACE"], speed=speed), fake, chunk=3)
    assert [len(m.updates) for _, m in got] == [1] * 20  # 100 ms apart: one message each
    assert [m.sequence for _, m in got] == list(range(1, 21))
    for k, (t, m) in enumerate(got):
        assert (m.updates[0].trade.ts_event_ns - T0) == k * 100 * MS
        assert math.isclose(t, k * 0.1 / speed, abs_tol=1e-9)
    assert len(fake.sleeps) == 19  # between messages only
    assert all(math.isclose(s, 0.1 / speed, abs_tol=1e-9) for s in fake.sleeps)


def test_speed_zero_never_sleeps(store: EmbeddedStore) -> None:
    fake = FakeTime()
    got = _paced(store, _plan(["PACE", "BURST"], speed=0), fake, max_updates_per_message=500)
    assert fake.sleeps == []
    assert [len(m.updates) for _, m in got] == [31]  # one full-speed message


def test_pacing_sleeps_per_message_not_per_event(store: EmbeddedStore) -> None:
    fake = FakeTime()
    got = _paced(store, _plan(["BURST"], speed=1.0), fake)
    # ten trades within 1 ms (inside the 5 ms pacing window) travel together; the last one a second later
    assert [len(m.updates) for _, m in got] == [10, 1]
    # each message goes when its LAST event is due: 0.9 ms after the first event, then 1 s after it
    assert fake.sleeps == pytest.approx([0.0009, 1.0 - 0.0009], abs=1e-9)
    assert got[1][0] == pytest.approx(1.0 - 0.0009, abs=1e-9)


def test_pacing_with_a_small_cap_splits_a_burst_without_sleeping(store: EmbeddedStore) -> None:
    fake = FakeTime()
    got = _paced(store, _plan(["BURST"], speed=1.0), fake, max_updates_per_message=3)
    assert [len(m.updates) for _, m in got] == [3, 3, 3, 1, 1]
    assert [m.sequence for _, m in got] == [1, 2, 3, 4, 5]
    assert len(fake.sleeps) <= len(got)  # at most one sleep per message, none per event
    assert sum(fake.sleeps) == pytest.approx(1.0, abs=1e-9)  # the last event is due 1 s after the first
    assert max(fake.sleeps) > 0.99 and all(s < 0.001 for s in sorted(fake.sleeps)[:-1])


def test_a_slow_client_is_not_slept_on(store: EmbeddedStore) -> None:
    fake = FakeTime()
    got = _paced(store, _plan(["PACE"], speed=1.0), fake, consumer_delay=0.5)  # 0.5 s per message > 0.1 s
    assert len(got) == 20
    assert fake.sleeps == []


# ------------------------------------------------------------------------------- reads: bounded, off-loop


class CountingStore:
    """Wraps a store: counts the records handed out, checks chunk sizes, notes threads and closing."""

    def __init__(self, inner: EmbeddedStore) -> None:
        self.inner = inner
        self.pulled = 0
        self.chunks: list[int] = []
        self.threads: set[int] = set()
        self.closed = False
        self.chunk_arg = 0

    def replay(self, symbols: Collection[str] | None, kinds: Collection[str] | None, start_ns: int, end_ns: int,
               chunk: int = 50_000) -> Iterator[list[StoredRecord]]:
        self.chunk_arg = chunk
        try:
            for batch in self.inner.replay(symbols, kinds, start_ns, end_ns, chunk):
                self.threads.add(threading.get_ident())
                self.pulled += len(batch)
                self.chunks.append(len(batch))
                yield batch
        finally:
            self.closed = True


@pytest.mark.parametrize(("prefetch", "chunks_in_memory"), [(False, 1), (True, 2)])
def test_reads_are_bounded_chunks_off_the_event_loop(store: EmbeddedStore, prefetch: bool,
                                                     chunks_in_memory: int) -> None:
    counting = CountingStore(store)
    chunk, cap = 16, 5
    ahead: list[int] = []

    async def run() -> int:
        delivered = 0
        loop_thread = threading.get_ident()
        async for m in replay_messages(counting, _plan(MAIN), chunk=chunk, max_updates_per_message=cap,
                                       prefetch=prefetch):
            delivered += len(m.updates)
            await asyncio.sleep(0)  # let a prefetch start
            ahead.append(counting.pulled - delivered)
        assert loop_thread not in counting.threads
        return delivered

    delivered = asyncio.run(run())
    assert delivered == len(MAIN_RECORDS)
    assert counting.pulled == delivered + 1  # the S1 candle is read and dropped (M1 replayed)
    assert counting.chunk_arg == chunk and all(n <= chunk for n in counting.chunks)
    # never more read ahead of the client than that (+1: the dropped S1 candle counts as read, not delivered)
    assert max(ahead) <= chunks_in_memory * chunk + 1
    assert counting.closed


def test_closing_the_stream_early_closes_the_store_iterator(store: EmbeddedStore) -> None:
    counting = CountingStore(store)

    async def run() -> None:
        gen = replay_responses(counting, _plan(MAIN), chunk=8, max_updates_per_message=4)
        await anext(gen)
        await gen.aclose()

    asyncio.run(run())
    assert counting.closed
    assert counting.pulled <= 16


def test_bad_options() -> None:
    class Nothing:
        def replay(self, symbols: Collection[str] | None, kinds: Collection[str] | None, start_ns: int,
                   end_ns: int, chunk: int = 1) -> Iterator[list[StoredRecord]]:
            return iter([])

    with pytest.raises(ValueError, match="chunk"):
        _collect(Nothing(), _plan(MAIN), chunk=0)
    with pytest.raises(ValueError, match="max_updates_per_message"):
        _collect(Nothing(), _plan(MAIN), max_updates_per_message=0)


# ---------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("request_", "words"), [
    (Req(start_ns=T0, end_ns=T0 + 1), "at least one symbol"),
    (Req(symbols=["BTC/USD", ""], start_ns=T0, end_ns=T0 + 1), "symbols[1] is empty"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0), "start_ns == end_ns"),
    (Req(symbols=["BTC/USD"], start_ns=T0 + 5, end_ns=T0), f"start_ns {T0 + 5} is after end_ns {T0}"),
    (Req(symbols=["BTC/USD"], start_ns=T0), "end_ns is required"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 25 * HOUR), "longer than the maximum of 1 d"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, speed=-1), "speed must be a finite number >= 0"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, speed=math.nan), "got nan"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, speed=math.inf), "got inf"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, speed=1e-9), "too slow"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, channels=[99]), "unknown channel value 99"),  # type: ignore[list-item]
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, channels=[0]), "CHANNEL_UNSPECIFIED"),  # type: ignore[list-item]
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, channels=[pb.CHANNEL_TRADES, pb.CHANNEL_NBBO]),
     "channel CHANNEL_NBBO cannot be replayed"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, channels=[pb.CHANNEL_TICKER]),
     "replayable channels: CHANNEL_TRADES, CHANNEL_BOOK"),
    (Req(symbols=["BTC/USD"], start_ns=T0, end_ns=T0 + 1, candle_interval=77), "candle interval"),  # type: ignore[arg-type]
    (Req(symbols=["BTC/USD"], venues=[""], start_ns=T0, end_ns=T0 + 1), "venues[0] is empty"),
])
def test_invalid_requests_say_what_is_wrong(request_: pb.ReplayStreamRequest, words: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_replay(request_, max_range_ns=24 * HOUR, known_symbols=SYMBOLS)
    assert words in str(err.value)


def test_unknown_symbols_and_venues_are_not_found() -> None:
    with pytest.raises(ReplayNotFoundError, match="unknown symbols 'NOPE', 'ZZZ'"):
        validate_replay(Req(symbols=["BTC/USD", "ZZZ", "NOPE"], start_ns=T0, end_ns=T0 + 1), max_range_ns=HOUR,
                        known_symbols=SYMBOLS)
    with pytest.raises(ReplayNotFoundError, match="unknown venue 'nowhere'"):
        validate_replay(Req(symbols=["BTC/USD"], venues=["kraken", "nowhere"], start_ns=T0, end_ns=T0 + 1),
                        max_range_ns=HOUR, known_symbols=SYMBOLS, known_venues={"kraken"})
    with pytest.raises(ValueError, match="start_ns"):  # invalid arguments are reported before unknown names
        validate_replay(Req(symbols=["ZZZ"], start_ns=T0, end_ns=T0), max_range_ns=HOUR, known_symbols=SYMBOLS)
    assert not issubclass(ReplayNotFoundError, ValueError)


def test_a_valid_request_becomes_a_plan() -> None:
    plan = validate_replay(Req(symbols=["ETH/USD", "BTC/USD", "ETH/USD"], venues=["kraken"],
                               channels=[pb.CHANNEL_BOOK, pb.CHANNEL_CANDLES, pb.CHANNEL_MARK_PRICE],
                               candle_interval=candle_pb2.CANDLE_INTERVAL_H1, start_ns=T0, end_ns=T0 + HOUR,
                               speed=2.5), max_range_ns=HOUR, known_symbols=None)
    assert plan.symbols == ("BTC/USD", "ETH/USD")
    assert plan.kinds == ("quotes", "book_snapshots", "book_deltas", "candles", "pricing")
    assert plan.venues == frozenset({"kraken"}) and plan.interval == Interval.H1 and plan.speed == 2.5
    assert plan.pricing_types == frozenset({MarkPrice})
    everything = validate_replay(Req(symbols=["X"], start_ns=T0, end_ns=T0 + 1), max_range_ns=HOUR, known_symbols=None)
    assert set(everything.kinds) == {"trades", "quotes", "book_snapshots", "book_deltas", "candles", "pricing"}
    assert everything.interval == Interval.M1 and everything.speed == 0.0



class _RecordsOnly:
    """The store without ``replay_rows``: replays go through engine records."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def replay(self, *args: Any, **kwargs: Any) -> Iterator[list[StoredRecord]]:
        return self.store.replay(*args, **kwargs)


@pytest.mark.parametrize(("channels", "row_chunk"), [
    ((), 7), ((), 100_000), ((pb.CHANNEL_BOOK,), 100_000), ((pb.CHANNEL_TRADES, pb.CHANNEL_FUNDING_RATE), 100_000)])
def test_replay_from_rows_equals_the_record_path(store: EmbeddedStore, row_chunk: int,
                                                        channels: tuple[int, ...]) -> None:
    """Speed 0 on the embedded store writes trades and books from stored rows, window by window: the same
    bytes as the record path, with book sequences continuing across windows and candles/pricing merged by
    event time."""
    plan = _plan(MAIN, channels=channels)
    rows = _collect_bytes(store, plan, max_updates_per_message=5, row_chunk=row_chunk)
    records = _collect_bytes(_RecordsOnly(store), plan, max_updates_per_message=5)
    assert rows == records and rows
