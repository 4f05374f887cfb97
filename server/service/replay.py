"""MarketDataService.ReplayStream: recorded market data of a time range, in event-time order, paced.

Two parts, so the RPC handler stays a few lines (see ``ReplayStream`` wiring in the module report):

* ``validate_replay(request, ...)`` checks a ``ReplayStreamRequest`` and returns a ``ReplayPlan``. It raises
  ``ValueError`` (-> INVALID_ARGUMENT) with a message that says what is wrong, and ``ReplayNotFoundError``
  (-> NOT_FOUND) for unknown symbols or venues.
* ``replay_responses(store, plan, ...)`` is an async generator of SERIALIZED ``ReplayStreamResponse``
  messages: register the method with an identity response serializer and the bytes go straight out.
  ``replay_messages`` yields the parsed messages instead (tests, tools).

Reading: ``store.replay`` (merged event-time order across tables) is pulled one chunk at a time with
``asyncio.to_thread(next, iterator)``, so the blocking engine query never runs on the event loop. With
``prefetch=True`` the next chunk is read while the current one is converted and sent (no measurable gain on
a 2-CPU host, where the read and the conversion compete for the GIL; off by default).

Encoding: each record is written once, in place, into the ``MarketDataUpdate`` it becomes inside the
response under construction (the fill functions of ``convert``), and the response is serialized once when
full. That is byte-for-byte what ``convert.batch_from_items`` over ``convert.update_pb`` items gives (a test
checks it) but measured ~1.6x faster: no per-update message, serialization and framing. Conversion runs on
the event loop one message at a time (about 0.6 ms for 500 trades), so other RPCs interleave.

Channels -> stored kinds: CHANNEL_TRADES -> trades; CHANNEL_BOOK -> book snapshots and deltas, plus quotes
(top of book) as one-level ``BookSnapshot`` updates, as the live book stream does; CHANNEL_CANDLES ->
candles of ``candle_interval`` only (UNSPECIFIED = one minute); CHANNEL_INDEX_PRICE / MARK_PRICE /
FUNDING_RATE -> the pricing table, filtered by type. No channel = all of these. Other channels (NBBO,
consolidated book, ticker, alerts, quality) are derived live and not recorded: INVALID_ARGUMENT. The venue
filter applies to records that have a venue; index / mark / funding are cross-venue and always pass it.
Book updates carry a per-(venue, symbol) ``sequence`` counted from 1 within the replay stream.

Pacing: speed 0 sends as fast as the client reads. Speed S > 0 maps event time to wall time from the first
replayed event: an event at ``ts`` is due ``(ts - ts_first) / S`` after the stream's first message. A
message gathers events due within ``pacing_window_s`` of its first event (and at most
``max_updates_per_message``), and is sent when its LAST event is due: never early, at most the window late.
The generator sleeps only between messages, never per event, and a slow client is not "caught up" by
skipping: it just receives messages without sleeps until it is back on schedule.

Memory: at most one chunk of records plus the message being built (with ``prefetch``, one more chunk being
read in the worker thread), whatever the length of the range.

Speed 0 with a store that has ``replay_rows`` (the embedded store): trades and book updates come from the
storage engine as RowBinary rows, each table in its sorting-key order (no sort), in windows of about
``row_chunk`` rows, the next window read in a worker thread while the current one is sent. The compiled
``replay_codec`` merges the rows into replay order with the window's candles and pricing (read as records)
and writes the items, one message at a time on the event loop. The same bytes as the record path, many
times faster.

Throughput of the record path is bounded by ``store.replay`` (chdb query + building engine records:
~200-300k records/s on a 2-CPU host); its conversion and serialization run at ~800k updates/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Container, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from marketdata.v1 import market_data_service_pb2

from server.engine.book import BookStatus
from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Quote, Trade
from server.engine.pricing import FundingRate, IndexPrice, MarkPrice
from server.service import convert, replay_codec
from server.service.convert import (
    _fill_candle,
    _fill_delta,
    _fill_funding,
    _fill_index,
    _fill_mark,
    _fill_quote,
    _fill_snapshot,
    _fill_trade,
)
from server.storage.codec import Kind, StoredRecord
from server.storage.store import ROW_KINDS, ExtraItems, RowPage

__all__ = [
    "DEFAULT_CANDLE_INTERVAL",
    "MIN_SPEED",
    "REPLAYABLE_CHANNELS",
    "ReplayNotFoundError",
    "ReplayPlan",
    "ReplaySource",
    "replay_messages",
    "replay_responses",
    "validate_replay",
]

pb = market_data_service_pb2
_Response = pb.ReplayStreamResponse

DEFAULT_CANDLE_INTERVAL: Final = Interval.M1
"""Candle width replayed when the request leaves ``candle_interval`` UNSPECIFIED."""

REPLAYABLE_CHANNELS: Final[dict[int, tuple[Kind, ...]]] = {
    pb.CHANNEL_BOOK: (Kind.BOOK_SNAPSHOTS, Kind.BOOK_DELTAS, Kind.QUOTES),
    pb.CHANNEL_TRADES: (Kind.TRADES,),
    pb.CHANNEL_CANDLES: (Kind.CANDLES,),
    pb.CHANNEL_INDEX_PRICE: (Kind.PRICING,),
    pb.CHANNEL_MARK_PRICE: (Kind.PRICING,),
    pb.CHANNEL_FUNDING_RATE: (Kind.PRICING,),
}
"""Channels the store records, with the stored kinds each is replayed from."""

_REPLAYABLE_TEXT: Final = (
    "CHANNEL_TRADES, CHANNEL_BOOK (book snapshots and deltas; quotes as book snapshots), "
    "CHANNEL_CANDLES (of candle_interval), CHANNEL_INDEX_PRICE, CHANNEL_MARK_PRICE, CHANNEL_FUNDING_RATE"
)
_PRICING_TYPES: Final[dict[int, type]] = {
    pb.CHANNEL_INDEX_PRICE: IndexPrice,
    pb.CHANNEL_MARK_PRICE: MarkPrice,
    pb.CHANNEL_FUNDING_RATE: FundingRate,
}
_NS_PER_S: Final = 1_000_000_000
MIN_SPEED: Final = 0.001
"""Slowest accepted non-zero speed (1000x slower than real time)."""


class ReplayNotFoundError(LookupError):
    """A requested symbol or venue is not known: the RPC ends with NOT_FOUND and this message."""


class ReplaySource(Protocol):
    """What replay needs from storage (``server.storage.Store.replay``; blocking, run off the loop)."""

    def replay(
        self,
        symbols: Collection[str] | None,
        kinds: Collection[str] | None,
        start_ns: int,
        end_ns: int,
        chunk: int = ...,
    ) -> Iterator[list[StoredRecord]]: ...


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """A validated replay request.

    ``symbols``: sorted, unique. ``channels``: the replayed channels (all replayable ones when the request
    named none). ``kinds``: the store kinds to read (``Kind`` values, in ``Kind`` order). ``venues``: empty
    for all venues. ``interval``: the candle width replayed. ``[start_ns, end_ns)`` by event time.
    ``speed``: 0 = as fast as possible, else the multiplier on event-time gaps.
    """

    symbols: tuple[str, ...]
    channels: frozenset[int]
    kinds: tuple[str, ...]
    venues: frozenset[str]
    interval: Interval
    start_ns: int
    end_ns: int
    speed: float

    @property
    def pricing_types(self) -> frozenset[type]:
        """Pricing record types (IndexPrice, MarkPrice, FundingRate) whose channel is replayed."""
        return frozenset(t for ch, t in _PRICING_TYPES.items() if ch in self.channels)


def _channel_name(value: int) -> str:
    return str(pb.Channel.Name(value))  # type: ignore[arg-type]


def _duration(ns: int) -> str:
    for unit, size in (("d", 86_400 * _NS_PER_S), ("h", 3_600 * _NS_PER_S), ("min", 60 * _NS_PER_S),
                       ("s", _NS_PER_S)):
        if ns >= size:
            return f"{ns / size:g} {unit}"
    return f"{ns} ns"


def validate_replay(
    request: market_data_service_pb2.ReplayStreamRequest,
    *,
    max_range_ns: int,
    known_symbols: Container[str] | None,
    known_venues: Container[str] | None = None,
) -> ReplayPlan:
    """Check a ``ReplayStreamRequest`` and return what to replay.

    Raises ValueError (INVALID_ARGUMENT) for: no symbols or an empty one; ``start_ns >= end_ns``; a range
    longer than ``max_range_ns``; a negative, NaN or infinite speed, or a non-zero one below ``MIN_SPEED``;
    an unknown or UNSPECIFIED channel value; a channel the store does not record (the message lists the
    replayable ones); an unknown ``candle_interval`` number. Raises ReplayNotFoundError (NOT_FOUND) for
    symbols not in ``known_symbols`` or venues not in ``known_venues`` (None skips that check). Invalid
    arguments are reported first.
    """
    if not request.symbols:
        raise ValueError("symbols: at least one symbol is required")
    for i, symbol in enumerate(request.symbols):
        if not symbol:
            raise ValueError(f"symbols[{i}] is empty")
    for i, venue in enumerate(request.venues):
        if not venue:
            raise ValueError(f"venues[{i}] is empty")
    start, end = request.start_ns, request.end_ns
    if end == 0:
        raise ValueError("end_ns is required (exclusive end of the range, ns since the Unix epoch)")
    if start == end:
        raise ValueError(f"empty time range: start_ns == end_ns == {start} (end_ns is exclusive; it must be "
                         "after start_ns)")
    if start > end:
        raise ValueError(f"start_ns {start} is after end_ns {end}")
    if end - start > max_range_ns:
        raise ValueError(f"time range of {_duration(end - start)} ({end - start} ns) is longer than the "
                         f"maximum of {_duration(max_range_ns)} ({max_range_ns} ns); replay it in parts")
    speed = request.speed
    if math.isnan(speed) or math.isinf(speed) or speed < 0:
        raise ValueError(f"speed must be a finite number >= 0 (0 = as fast as possible, 1 = real time), "
                         f"got {speed}")
    if 0 < speed < MIN_SPEED:
        raise ValueError(f"speed {speed} is too slow: 0 (as fast as possible) or at least {MIN_SPEED}")
    known_channels = set(pb.Channel.values())
    channels: set[int] = set()
    for value in request.channels:
        if value not in known_channels:
            raise ValueError(f"unknown channel value {value}")
        if value == pb.CHANNEL_UNSPECIFIED:
            raise ValueError("CHANNEL_UNSPECIFIED is not a channel; leave channels empty to replay all "
                             f"recorded channels: {_REPLAYABLE_TEXT}")
        if value not in REPLAYABLE_CHANNELS:
            raise ValueError(f"channel {_channel_name(value)} cannot be replayed (it is derived live, not "
                             f"recorded); replayable channels: {_REPLAYABLE_TEXT}")
        channels.add(value)
    if not channels:
        channels = set(REPLAYABLE_CHANNELS)
    if request.candle_interval == 0:
        interval = DEFAULT_CANDLE_INTERVAL
    else:
        interval = convert.interval_from_pb(request.candle_interval)  # ValueError names the bad number
    kinds = {k for ch in channels for k in REPLAYABLE_CHANNELS[ch]}
    symbols = tuple(sorted(set(request.symbols)))
    venues = frozenset(request.venues)
    if known_symbols is not None:
        unknown = [s for s in symbols if s not in known_symbols]
        if unknown:
            raise ReplayNotFoundError(f"unknown symbol{'s' if len(unknown) > 1 else ''} "
                                      f"{', '.join(map(repr, unknown))}; ListInstruments lists the symbols")
    if known_venues is not None:
        unknown = sorted(v for v in venues if v not in known_venues)
        if unknown:
            raise ReplayNotFoundError(f"unknown venue{'s' if len(unknown) > 1 else ''} "
                                      f"{', '.join(map(repr, unknown))}")
    return ReplayPlan(
        symbols=symbols,
        channels=frozenset(channels),
        kinds=tuple(k.value for k in Kind if k in kinds),
        venues=venues,
        interval=interval,
        start_ns=start,
        end_ns=end,
        speed=float(speed),
    )


def _record_filter(plan: ReplayPlan) -> Callable[[StoredRecord], bool] | None:
    """A predicate for the records the store returns that the plan still excludes, or None for none.

    The store filters by symbol, kind and time; venues, the candle interval and the pricing type (the
    three pricing channels share one table) are checked here.
    """
    venues = plan.venues
    interval = plan.interval
    candles = Kind.CANDLES.value in plan.kinds
    pricing = plan.pricing_types
    partial_pricing = Kind.PRICING.value in plan.kinds and len(pricing) < len(_PRICING_TYPES)
    if not venues and not candles and not partial_pricing:
        return None
    pricing_all = frozenset(_PRICING_TYPES.values())

    def keep(r: StoredRecord) -> bool:
        kind = type(r)
        if kind in pricing_all:
            return kind in pricing
        if venues and r.venue not in venues:  # type: ignore[union-attr]  # non-pricing records have a venue
            return False
        return kind is not Candle or r.interval == interval  # type: ignore[union-attr]

    return keep


Sleep = Callable[[float], Awaitable[Any]]


async def replay_responses(
    store: ReplaySource,
    plan: ReplayPlan,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    chunk: int = 20_000,
    max_updates_per_message: int = 500,
    pacing_window_s: float = 0.005,
    prefetch: bool = False,
    row_chunk: int = 100_000,
) -> AsyncGenerator[bytes, None]:
    """Serialized ``ReplayStreamResponse`` messages replaying ``plan`` from ``store`` (see the module doc).

    Responses carry ``sequence`` 1, 2, 3 ... and at most ``max_updates_per_message`` updates each, in the
    store's event-time order; nothing is sent for an empty range. ``chunk``: records read from the store at
    a time, in a worker thread (``store.replay`` itself is only called on the loop to create its iterator).
    ``pacing_window_s``: at speed > 0, the wall-time span of the events one message gathers. ``prefetch``:
    read the next chunk while sending the current one. ``row_chunk``: window size of the speed-0 path, where a
    store with ``replay_rows`` reads trades and book updates as rows. ``clock`` / ``sleep``: injectable for
    tests. Storage errors propagate (the caller maps them to a status); closing the generator early (client gone) waits
    for a read in progress and closes the store iterator.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if max_updates_per_message < 1:
        raise ValueError(f"max_updates_per_message must be >= 1, got {max_updates_per_message}")
    if plan.speed == 0 and isinstance(store, RowSource) and any(k in _ROW_KINDS for k in plan.kinds):
        async for data in _row_responses(store, plan, row_chunk, max_updates_per_message):
            yield data
        return
    speed = plan.speed
    paced = speed > 0
    window_ns = int(pacing_window_s * speed * _NS_PER_S) if paced else 0
    keep = _record_filter(plan)
    limit = max_updates_per_message
    book_seq: dict[tuple[str, str], int] = {}
    consistent = BookStatus.CONSISTENT

    records = store.replay(plan.symbols, plan.kinds, plan.start_ns, plan.end_ns, chunk)
    it = iter(records)
    pending: asyncio.Future[list[Any] | None] | None = None

    def fetch() -> asyncio.Future[list[Any] | None]:
        return asyncio.ensure_future(asyncio.to_thread(next, it, None))

    sequence = 0
    msg = _Response()
    add = msg.updates.add
    count = 0
    msg_first_ts = 0  # event time of the first / last update of the message being built (paced only)
    msg_last_ts = 0
    ts0 = 0  # event time of the first replayed update
    wall0 = 0.0  # clock() when the first message was ready

    def delay(last_ts: int) -> float:
        """Seconds to wait before sending a message whose last update has event time ``last_ts``."""
        return wall0 + (last_ts - ts0) / speed / _NS_PER_S - clock()

    try:
        pending = fetch()
        while pending is not None:
            # shield: a cancelled stream must not cancel the read (the thread would go on without us).
            batch = await asyncio.shield(pending)
            pending = None
            if batch is None:
                break
            if prefetch:
                pending = fetch()
            if keep is not None:
                batch = [r for r in batch if keep(r)]
            for r in batch:
                kind = type(r)
                if paced:
                    ts = r.ts if kind is IndexPrice or kind is MarkPrice or kind is FundingRate else r.ts_event
                    if count and (count >= limit or ts - msg_first_ts > window_ns):
                        sequence += 1
                        msg.sequence = sequence
                        data = msg.SerializeToString()
                        if sequence == 1:
                            wall0 = clock()
                        wait = delay(msg_last_ts)
                        if wait > 0:
                            await sleep(wait)
                        yield data
                        msg = _Response()
                        add = msg.updates.add
                        count = 0
                    if count == 0:
                        msg_first_ts = ts
                        if sequence == 0:
                            ts0 = ts
                    msg_last_ts = ts
                elif count >= limit:
                    sequence += 1
                    msg.sequence = sequence
                    yield msg.SerializeToString()
                    msg = _Response()
                    add = msg.updates.add
                    count = 0
                count += 1
                # Most frequent kinds first; the same fill functions (and book status) as convert.update_pb.
                if kind is Trade:
                    _fill_trade(add().trade, r)
                elif kind is BookDelta or kind is BookSnapshot or kind is Quote:
                    key = (r.venue, r.symbol)
                    seq = book_seq.get(key, 0) + 1
                    book_seq[key] = seq
                    if kind is BookDelta:
                        _fill_delta(add().book.delta, r, seq, consistent)
                    elif kind is BookSnapshot:
                        _fill_snapshot(add().book.snapshot, r, seq, None)
                    else:
                        _fill_quote(add().book.snapshot, r, seq)
                elif kind is Candle:
                    _fill_candle(add().candle, r)
                elif kind is IndexPrice:
                    _fill_index(add().index_price, r)
                elif kind is MarkPrice:
                    _fill_mark(add().mark_price, r)
                elif kind is FundingRate:
                    _fill_funding(add().funding_rate, r)
                else:  # the store returns only the types above
                    raise TypeError(f"cannot replay a {kind.__name__}")
            del batch
            if not prefetch:
                pending = fetch()
        if count:
            sequence += 1
            msg.sequence = sequence
            data = msg.SerializeToString()
            if paced:
                if sequence == 1:
                    wall0 = clock()
                wait = delay(msg_last_ts)
                if wait > 0:
                    await sleep(wait)
            yield data
    finally:
        await _settle(pending, it)


@runtime_checkable
class RowSource(ReplaySource, Protocol):
    """A store that can also read trades and book updates as rows (``EmbeddedStore.replay_rows``)."""

    def replay_rows(
        self,
        symbols: Collection[str],
        kinds: Collection[str],
        start_ns: int,
        end_ns: int,
        *,
        venues: Collection[str] = ...,
        chunk: int = ...,
        extra: ExtraItems | None = ...,
        extra_kinds: Collection[str] = ...,
    ) -> Iterator[RowPage]: ...


_ROW_KINDS: Final = frozenset(k.value for k in ROW_KINDS)


def _frame(record: object, sequence: int = 0) -> bytes:
    update = convert.update_pb(record, sequence)
    assert update is not None
    return convert.batch_item(update.SerializeToString())


def _event_ts(record: Any) -> int:
    """Event time of a candle or pricing record (pricing records call it ``ts``)."""
    return int(record.ts if isinstance(record, IndexPrice | MarkPrice | FundingRate) else record.ts_event)


async def _row_responses(store: RowSource, plan: ReplayPlan, chunk: int, limit: int) -> AsyncGenerator[bytes, None]:
    """Speed 0: trades and book updates come from the store as rows (``replay_rows``), window by window; the
    next window is read in a worker thread while this one is written and sent. ``replay_codec`` merges them
    with the window's candles and pricing (read as records) and writes the items, one message of at most
    ``limit`` at a time on the event loop. Book sequences count from 1 across windows, as the record path's
    do, and the messages are its bytes."""
    rows = [k for k in plan.kinds if k in _ROW_KINDS]
    other = [k for k in plan.kinds if k not in _ROW_KINDS]
    keep = _record_filter(plan)

    def extra(lo: int, hi: int) -> list[tuple[int, bytes]]:
        items: list[tuple[int, bytes]] = []
        for batch in store.replay(plan.symbols, other, lo, hi, chunk):
            items.extend((_event_ts(r), _frame(r)) for r in batch if keep is None or keep(r))
        return items

    pages = store.replay_rows(plan.symbols, rows, plan.start_ns, plan.end_ns, venues=plan.venues, chunk=chunk,
                              extra=extra if other else None, extra_kinds=other)
    it = iter(pages)
    pending: asyncio.Future[RowPage | None] | None = asyncio.ensure_future(asyncio.to_thread(next, it, None))
    books = replay_codec.BookSequences()
    sequence = 0
    parts: list[bytes] = []
    count = 0
    try:
        while pending is not None:
            page = await asyncio.shield(pending)
            pending = None
            if page is None:
                break
            pending = asyncio.ensure_future(asyncio.to_thread(next, it, None))
            encoder = replay_codec.PageEncoder(books, page.rows, page.extra)
            del page
            while True:
                n, data = encoder.take(limit - count)
                if not n:
                    break
                parts.append(data)
                count += n
                if count >= limit:
                    sequence += 1
                    yield convert.batch_from_items(sequence, parts)
                    parts = []
                    count = 0
        if parts:
            yield convert.batch_from_items(sequence + 1, parts)
    finally:
        await _settle(pending, it)


async def _settle(pending: asyncio.Future[Any] | None, it: Iterator[Any]) -> None:
    """End of a replay (done, failed or cancelled): wait for a read still running in the worker thread,
    then close the store iterator so it releases what it holds."""
    if pending is not None:
        try:
            await asyncio.shield(pending)
        except BaseException:  # its result or error no longer matters (cancellation goes on regardless)
            if not pending.done():
                return  # cancelled again while the read runs: the iterator is collected when it ends
    close = getattr(it, "close", None)
    if close is not None:
        # ValueError "generator already executing": the read was abandoned (the loop is shutting down)
        with contextlib.suppress(ValueError):
            close()


async def replay_messages(store: ReplaySource, plan: ReplayPlan, **options: Any) -> AsyncGenerator[
        market_data_service_pb2.ReplayStreamResponse, None]:
    """``replay_responses`` parsed back into ``ReplayStreamResponse`` messages (tests and tools)."""
    async for data in replay_responses(store, plan, **options):
        yield _Response.FromString(data)
