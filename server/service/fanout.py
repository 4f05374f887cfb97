"""Stream fan-out: every engine update is encoded once and the same bytes go to every subscriber.

The hub listens to the runtime (on the event loop). For each update it finds the topics it belongs to; an
update nobody subscribed to is never encoded. Encoded items are framed once as field 2 of a batch
message (every stream response is ``{uint64 sequence = 1; repeated <item> = 2}``), so a subscriber's
response is a join of shared byte strings behind its own sequence number.

Every subscriber has a bounded queue:
- conflating topics (NBBO, tickers, index/mark/funding, in-progress candles) keep only the latest item per
  key, so a slow reader gets fewer, newer updates and memory stays flat;
- order books: a subscriber that falls behind has its queued deltas dropped and gets a fresh snapshot
  (with the book's sequence) instead, so it never sees a gap it cannot repair;
- trades, alert triggers and quality flags cannot be conflated: a subscriber whose queue fills is ended
  with RESOURCE_EXHAUSTED and a message saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from marketdata.v1 import book_pb2

from server.engine.alerts import AlertTrigger
from server.engine.book import BookStatus
from server.engine.candles import Candle, Interval
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Quote, Trade
from server.engine.pricing import FundingRate, IndexPrice, MarkPrice
from server.engine.quality import QualityFlag
from server.engine.updates import BookStatusChange, Nbbo
from server.service import convert

Topic = tuple[str, ...]
"""("trades", symbol, venue-or-""), ("book", venue, symbol), ("nbbo", symbol), ("candles", venue, symbol,
interval), ("ticker", venue, symbol), ("index"|"mark"|"funding"|"alerts", symbol),
("quality", symbol, venue-or-"")."""


class Encoded:
    """One update serialized once; framed for a per-channel stream or, lazily, for the multiplexed one."""

    __slots__ = ("_stream", "_update", "field", "inner")

    def __init__(self, inner: bytes, field: int) -> None:
        self.inner = inner
        self.field = field  # its field number in MarketDataUpdate
        self._stream: bytes | None = None
        self._update: bytes | None = None

    def stream(self) -> bytes:
        """Field 2 of a per-channel response (``repeated <item> = 2``)."""
        if self._stream is None:
            self._stream = convert.batch_item(self.inner)
        return self._stream

    def update(self) -> bytes:
        """Field 2 of a MarketDataBatch: the item wrapped in a MarketDataUpdate."""
        if self._update is None:
            self._update = convert.batch_item(convert.field_bytes(self.field, self.inner))
        return self._update


BOOK, CONSOLIDATED, NBBO, TRADE, CANDLE, TICKER, INDEX, MARK, FUNDING, ALERT, QUALITY = range(1, 12)
"""MarketDataUpdate field numbers."""


class SubscriberOverflowError(Exception):
    """A subscriber's queue filled with updates that cannot be conflated."""


class HubClosedError(Exception):
    """The server is stopping: the subscriber got everything queued and its stream should end."""


@dataclass(eq=False)
class Subscriber:
    """One stream's queue. ``book_resync`` is called to build a fresh snapshot item for a book key."""

    max_pending: int = 10_000
    max_items_per_message: int = 1_000
    book_resync: Callable[[Hashable], Encoded | None] | None = None
    multiplexed: bool = False
    """True for the Subscribe stream: items are framed as MarketDataUpdates, batches as SubscribeResponses."""
    control: list[bytes] = field(default_factory=list)
    """Whole SubscribeResponses (statuses, pongs) sent before the next batch."""
    topics: set[Topic] = field(default_factory=set)
    pending: list[bytes] = field(default_factory=list)
    pending_kinds: list[bool] = field(default_factory=list)
    """Parallel to ``pending``: True for a book update."""
    pending_books: int = 0
    """How many of ``pending`` are book updates (a lagging reader loses those to a resync, nothing else)."""
    conflated: dict[Hashable, bytes] = field(default_factory=dict)
    resync: dict[Hashable, None] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: str = ""
    closed: bool = False
    sequence: int = 0
    dropped: int = 0
    conflations: int = 0

    def frame(self, enc: Encoded) -> bytes:
        return enc.update() if self.multiplexed else enc.stream()

    def push(self, enc: Encoded, book_key: Hashable | None = None) -> None:
        self.push_many([self.frame(enc)], book_key)

    def push_many(self, frames: list[bytes], book_key: Hashable | None = None) -> None:
        """Queue framed items of one topic (``book_key`` set for a book topic), in order."""
        if self.overflowed:
            return
        if book_key is not None and book_key in self.resync:
            self.dropped += len(frames)  # a snapshot replaces them
            return
        if len(self.pending) + len(frames) > self.max_pending:
            if self.book_resync is None or not (book_key is not None or self.pending_books):
                self.overflowed = (f"subscriber fell {len(self.pending)} updates behind and these updates cannot be "
                                   "conflated; reconnect and read faster, or subscribe to fewer symbols")
                self.wake.set()
                return
            # Drop the queued book updates only; each book it holds resyncs from a fresh snapshot.
            keep = [item for item, is_book in zip(self.pending, self.pending_kinds, strict=True) if not is_book]
            self.dropped += len(self.pending) - len(keep)
            self.pending[:] = keep
            self.pending_kinds[:] = [False] * len(keep)
            self.pending_books = 0
            for key in self.topics:
                if key[0] == "book":
                    self.resync[(key[1], key[2])] = None
            self.wake.set()
            if book_key is not None:
                self.dropped += len(frames)
                return
        self.pending.extend(frames)
        is_book = book_key is not None
        self.pending_kinds.extend([is_book] * len(frames))
        if is_book:
            self.pending_books += len(frames)
        self.wake.set()

    def push_latest(self, key: Hashable, enc: Encoded) -> None:
        if key in self.conflated:
            self.conflations += 1
            del self.conflated[key]  # re-insert: the dict stays in update order
        self.conflated[key] = enc.update() if self.multiplexed else enc.stream()
        self.wake.set()

    async def next_message(self) -> bytes:
        """The next response (sequence + framed items); waits for updates. Raises on overflow."""
        while True:
            if self.overflowed:
                raise SubscriberOverflowError(self.overflowed)
            if self.control:
                return self.control.pop(0)
            items: list[bytes] = []
            if self.resync and self.book_resync is not None:
                for key in list(self.resync):
                    snap = self.book_resync(key)
                    if snap is not None:
                        items.append(self.frame(snap))
                self.resync.clear()
            limit = self.max_items_per_message
            if self.pending:
                take = self.pending[:limit]
                self.pending_books -= sum(self.pending_kinds[:limit])
                del self.pending[:limit]
                del self.pending_kinds[:limit]
                items.extend(take)
            if self.conflated and len(items) < limit:
                while self.conflated and len(items) < limit:
                    key = next(iter(self.conflated))
                    items.append(self.conflated.pop(key))
            if items:
                self.sequence += 1
                batch = convert.batch_from_items(self.sequence, items)
                return convert.field_bytes(3, batch) if self.multiplexed else batch
            if self.closed:
                raise HubClosedError("the server is shutting down; reconnect to another instance or retry")
            self.wake.clear()
            await self.wake.wait()


class Hub:
    """Topic -> subscribers; an update is encoded once, when at least one subscriber wants it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.subscribers: dict[Topic, set[Subscriber]] = {}
        self.conflated_total = 0
        self.dropped_total = 0
        """Counts of subscribers that have ended (live ones keep their own)."""
        self.book_sequence: dict[tuple[str, str], int] = {}
        """Per (venue, symbol): the engine book version of the last book update seen (snapshot + deltas)."""

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, sub: Subscriber, topics: Iterable[Topic]) -> None:
        for topic in topics:
            sub.topics.add(topic)
            self.subscribers.setdefault(topic, set()).add(sub)

    def unsubscribe_topics(self, sub: Subscriber, topics: Iterable[Topic]) -> None:
        for topic in topics:
            sub.topics.discard(topic)
            subs = self.subscribers.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.subscribers[topic]

    def unsubscribe(self, sub: Subscriber) -> None:
        self.conflated_total += sub.conflations
        self.dropped_total += sub.dropped
        for topic in sub.topics:
            subs = self.subscribers.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.subscribers[topic]
        sub.topics.clear()

    def close(self) -> None:
        """Graceful stop: every subscriber drains what is queued, then its stream ends (UNAVAILABLE)."""
        for subs in self.subscribers.values():
            for sub in subs:
                sub.closed = True
                sub.wake.set()

    @property
    def subscriber_count(self) -> int:
        return len({s for subs in self.subscribers.values() for s in subs})

    def book_snapshot_item(self, venue: str, symbol: str, depth: int) -> Encoded | None:
        """A BookUpdate snapshot of the live book at its current sequence."""
        book = self.engine.book(venue, symbol)
        if book is None:
            return None
        snap = convert.book_snapshot_from_book(book, depth, self.book_sequence.get((venue, symbol), book.version))
        return Encoded(book_pb2.BookUpdate(snapshot=snap).SerializeToString(), BOOK)

    # -- the runtime listener -------------------------------------------------------------------

    def on_updates(self, updates: list[object]) -> None:
        """Encode each wanted update once, gather them per topic, then hand each subscriber whole lists
        (one call per topic and subscriber per batch, not one per update). Order is kept per topic."""
        subs = self.subscribers
        seqs = self.book_sequence
        batched: dict[Topic, list[Encoded]] = {}
        for u in updates:
            kind = type(u)
            if kind is BookDelta or kind is BookSnapshot or kind is Quote:
                ev: BookDelta | BookSnapshot | Quote = u  # type: ignore[assignment]
                key = (ev.venue, ev.symbol)
                seq = seqs.get(key, 0) + 1
                seqs[key] = seq
                topic: Topic = ("book", ev.venue, ev.symbol)
                if topic in subs:
                    if kind is BookDelta:
                        msg = convert.book_delta_pb(ev, seq)  # type: ignore[arg-type]
                    elif kind is BookSnapshot:
                        msg = convert.book_snapshot_pb(ev, seq)  # type: ignore[arg-type]
                    else:
                        msg = convert.quote_book_pb(ev, seq)  # type: ignore[arg-type]
                    batched.setdefault(topic, []).append(Encoded(msg.SerializeToString(), BOOK))
            elif kind is Trade:
                t: Trade = u  # type: ignore[assignment]
                one: Topic = ("trades", t.symbol, t.venue)
                anyv: Topic = ("trades", t.symbol, "")
                if one in subs or anyv in subs:
                    enc = Encoded(convert.trade_pb(t).SerializeToString(), TRADE)
                    for topic in (one, anyv):
                        if topic in subs:
                            batched.setdefault(topic, []).append(enc)
            elif kind is Nbbo:
                n: Nbbo = u  # type: ignore[assignment]
                targets = subs.get(("nbbo", n.symbol))
                if targets:
                    enc = Encoded(convert.nbbo_pb(n).SerializeToString(), NBBO)
                    for s in targets:
                        s.push_latest(("nbbo", n.symbol), enc)
            elif kind is Candle:
                c: Candle = u  # type: ignore[assignment]
                targets = subs.get(("candles", c.venue, c.symbol, str(int(c.interval))))
                if targets:
                    enc = Encoded(convert.candle_pb(c).SerializeToString(), CANDLE)
                    for s in targets:
                        s.push_latest(("candle", c.venue, c.symbol, int(c.interval), c.open_time), enc)
            elif kind is BookStatusChange:
                change: BookStatusChange = u  # type: ignore[assignment]
                targets = subs.get(("book", change.venue, change.symbol))
                if change.status == BookStatus.AWAITING_RESYNC and convert.is_book_gap(change):
                    gap_key = (change.venue, change.symbol)
                    gap_seq = seqs.get(gap_key, 0) + 1  # a gap marker takes a sequence number of its own
                    seqs[gap_key] = gap_seq
                if targets and change.status == BookStatus.AWAITING_RESYNC:
                    gap = convert.book_gap_pb(change, seqs.get((change.venue, change.symbol), 0))
                    if gap is not None:
                        batched.setdefault(("book", change.venue, change.symbol), []).append(
                            Encoded(gap.SerializeToString(), BOOK))
            elif kind is IndexPrice or kind is MarkPrice or kind is FundingRate:
                self._pricing(u, subs)
            elif kind is AlertTrigger:
                trig: AlertTrigger = u  # type: ignore[assignment]
                topic = ("alerts", trig.alert.symbol)
                if topic in subs:
                    batched.setdefault(topic, []).append(
                        Encoded(convert.alert_trigger_pb(trig).SerializeToString(), ALERT))
            elif kind is QualityFlag:
                f: QualityFlag = u  # type: ignore[assignment]
                one = ("quality", f.symbol, f.venue)
                anyv = ("quality", f.symbol, "")
                if one in subs or anyv in subs:
                    enc = Encoded(convert.quality_flag_pb(f).SerializeToString(), QUALITY)
                    for topic in (one, anyv):
                        if topic in subs:
                            batched.setdefault(topic, []).append(enc)
        for topic, encs in batched.items():
            targets = subs.get(topic)
            if not targets:
                continue
            book_key = (topic[1], topic[2]) if topic[0] == "book" else None
            stream_frames: list[bytes] | None = None
            update_frames: list[bytes] | None = None
            for sub in targets:
                if sub.multiplexed:
                    if update_frames is None:
                        update_frames = [e.update() for e in encs]
                    sub.push_many(update_frames, book_key)
                else:
                    if stream_frames is None:
                        stream_frames = [e.stream() for e in encs]
                    sub.push_many(stream_frames, book_key)

    def _pricing(self, u: object, subs: dict[Topic, set[Subscriber]]) -> None:
        if isinstance(u, IndexPrice):
            topic: Topic = ("index", u.symbol)
            targets = subs.get(topic)
            enc = Encoded(convert.index_price_pb(u).SerializeToString(), INDEX) if targets else None
        elif isinstance(u, MarkPrice):
            topic = ("mark", u.symbol)
            targets = subs.get(topic)
            enc = Encoded(convert.mark_price_pb(u).SerializeToString(), MARK) if targets else None
        elif isinstance(u, FundingRate):
            topic = ("funding", u.symbol)
            targets = subs.get(topic)
            enc = Encoded(convert.funding_rate_pb(u).SerializeToString(), FUNDING) if targets else None
        else:
            return
        if targets and enc is not None:
            for s in targets:
                s.push_latest(topic, enc)

    # -- polled channels (in-progress candles, tickers) -----------------------------------------

    def publish_polled(self) -> None:
        """Tickers and in-progress candles, for topics with subscribers (called on a timer)."""
        engine = self.engine
        for topic, targets in list(self.subscribers.items()):
            if not targets:
                continue
            if topic[0] == "ticker":
                ticker = engine.ticker(topic[1], topic[2])
                if ticker is not None:
                    enc = Encoded(convert.ticker_pb(ticker).SerializeToString(), TICKER)
                    for s in targets:
                        s.push_latest(topic, enc)
            elif topic[0] == "consolidated":
                book = engine.consolidated_book(topic[1], int(topic[2]))
                enc = Encoded(convert.consolidated_book_pb(book).SerializeToString(), CONSOLIDATED)
                for s in targets:
                    s.push_latest(topic, enc)
            elif topic[0] == "candles":
                venue, symbol, interval = topic[1], topic[2], int(topic[3])
                current = engine.candles(venue, symbol, Interval(interval), limit=1)
                if current and not current[-1].closed:
                    c = current[-1]
                    enc = Encoded(convert.candle_pb(c).SerializeToString(), CANDLE)
                    for s in targets:
                        s.push_latest(("candle", venue, symbol, interval, c.open_time), enc)
