"""Stream fan-out: every engine update is encoded once and the same bytes go to every subscriber.

The hub listens to the runtime (on the event loop). For each update it finds the topics it belongs to; an
update nobody subscribed to is never encoded. Encoded items are framed once as field 2 of a batch
message (every stream response is ``{uint64 sequence = 1; repeated <item> = 2}``), so a response is a
join of shared byte strings behind the subscriber's own sequence number.

Subscribers with the same topics and framing form a group. Per engine batch a group appends ONE entry to
its append-only log (the joined frames of its topics), and each member reads the log from its own cursor:
the cost of an update is per group, not per subscriber, and a response is one join of shared entries.
Entries every member has read are trimmed. Conflating topics (NBBO, tickers, index/mark/funding,
in-progress candles) keep only the latest item per key in the group, stamped with a version; a member
takes the keys that changed since it last read, so a slow reader gets fewer, newer updates.

A book's halt or resume changes none of its levels: each reader of that book gets a fresh snapshot (it
carries the status) in its next message, built from the live book like a resync's.

Every subscriber is bounded (``max_pending`` items behind its group's head):
- order books: a subscriber that falls behind drops its queued book items and gets a fresh snapshot of
  each book (with the book's sequence) instead, so it never sees a gap it cannot repair; the items it
  cannot lose (trades, alerts, quality flags) move to its own bounded ``carry`` list;
- when those items alone exceed the bound, the subscriber is ended with RESOURCE_EXHAUSTED and a message
  saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from marketdata.v1 import book_pb2

from server.engine.alerts import AlertTrigger
from server.engine.book import BookStatus
from server.engine.candles import Candle, Interval
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Quote, Trade
from server.engine.pricing import FundingRate, IndexPrice, MarkPrice
from server.engine.quality import QualityFlag
from server.engine.updates import BookStatusChange, Nbbo
from server.service import convert, wire

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
            self._update = convert.update_item(self.field, self.inner)
        return self._update


BOOK, CONSOLIDATED, NBBO, TRADE, CANDLE, TICKER, INDEX, MARK, FUNDING, ALERT, QUALITY = range(1, 12)
"""MarketDataUpdate field numbers."""


_AFTER_DELTA: Final = frozenset({BookStatusChange, QualityFlag})
"""What the engine may append right after a delta before its status change (``Hub._status_after``)."""


class SubscriberOverflowError(Exception):
    """A subscriber's queue filled with updates that cannot be conflated."""


class HubClosedError(Exception):
    """The server is stopping: the subscriber got everything queued and its stream should end."""


Part = tuple[bytes, int, "tuple[str, str] | None"]
"""Framed items of one topic from one engine batch: (joined frames, item count, book key or None)."""
PART_ITEMS: Final = 500
"""At most this many items in one part (``wire.frame_parts``); a topic's share of a large batch is cut
into several."""


ENTRY_ITEMS: Final = 1000
"""At most this many items in one log entry (a single part may be larger only if PART_ITEMS is)."""


class _Entry:
    """One engine batch as one group sees it: the joined frames of all its topics, shared by every member."""

    __slots__ = ("blob", "count", "nonbook", "parts", "start", "start_nonbook")

    def __init__(self, parts: list[Part], start: int, start_nonbook: int) -> None:
        self.parts = parts
        self.blob = b"".join(p[0] for p in parts) if len(parts) > 1 else parts[0][0]
        self.count = sum(p[1] for p in parts)
        self.nonbook = sum(p[1] for p in parts if p[2] is None)
        self.start = start  # items in the group's log before this entry
        self.start_nonbook = start_nonbook


class _Group:
    """Subscribers with the same topics and framing share one append-only log and one latest-value map.

    Each member reads the log from its own cursor, so an update costs one append per group, not one per
    subscriber. Conflating topics keep the latest value per key, stamped with a version; a member takes
    the keys changed since the version it last read.
    """

    def __init__(self, topics: frozenset[Topic], multiplexed: bool) -> None:
        self.topics = topics
        self.multiplexed = multiplexed
        self.members: set[Subscriber] = set()
        self.log: list[_Entry] = []
        self.base = 0  # absolute index of log[0]
        self.total = 0  # items ever appended
        self.total_nonbook = 0
        self.latest: dict[Hashable, tuple[int, bytes]] = {}
        self.version = 0
        self.conflations = 0

    @property
    def head(self) -> int:
        return self.base + len(self.log)

    def position(self, cursor: int) -> tuple[int, int]:
        """(items, non-book items) appended before absolute entry ``cursor``."""
        i = cursor - self.base
        if i < len(self.log):
            e = self.log[i]
            return e.start, e.start_nonbook
        return self.total, self.total_nonbook

    def append(self, parts: list[Part]) -> None:
        """One engine batch: entries of at most ``ENTRY_ITEMS`` items (whole parts), so a message, which
        takes entries until it holds ``max_items_per_message``, stays bounded however large the batch."""
        start = 0
        while start < len(parts):
            end, count = start, 0
            while end < len(parts) and (end == start or count + parts[end][1] <= ENTRY_ITEMS):
                count += parts[end][1]
                end += 1
            entry = _Entry(parts[start:end], self.total, self.total_nonbook)
            self.log.append(entry)
            self.total += entry.count
            self.total_nonbook += entry.nonbook
            start = end

    def push_latest(self, key: Hashable, enc: Encoded, wake: bool = True) -> None:
        """Replace the latest value of ``key``; ``wake=False`` leaves waking the members to the caller."""
        if key in self.latest:
            self.conflations += len(self.members)
            del self.latest[key]  # re-insert: the dict stays in version order
        self.version += 1
        self.latest[key] = (self.version, enc.update() if self.multiplexed else enc.stream())
        if wake:
            for sub in self.members:
                sub.wake.set()

    def trim(self) -> None:
        """Forget log entries every member has read, and latest values every member has taken."""
        if not self.members:
            self.log.clear()
            self.base = self.head
            self.latest.clear()
            return
        low = min(s.cursor for s in self.members)
        if low > self.base:
            del self.log[:low - self.base]
            self.base = low
        if self.latest:
            seen = min(s.seen for s in self.members)
            while self.latest:
                key = next(iter(self.latest))
                if self.latest[key][0] > seen:
                    break
                del self.latest[key]


@dataclass(eq=False)
class Subscriber:
    """One stream's reader. ``book_resync`` is called to build a fresh snapshot item for a book key.

    What it has not read yet is its ``carry`` (items it took over when it changed topics or fell behind)
    followed by its group's log from ``cursor``, plus the group's latest values newer than ``seen``.
    """

    max_pending: int = 10_000
    max_items_per_message: int = 1_000
    book_resync: Callable[[Hashable], Encoded | None] | None = None
    multiplexed: bool = False
    """True for the Subscribe stream: items are framed as MarketDataUpdates, batches as SubscribeResponses."""
    control: list[bytes] = field(default_factory=list)
    """Whole SubscribeResponses (statuses, pongs) sent before the next batch."""
    topics: set[Topic] = field(default_factory=set)
    group: _Group | None = None
    cursor: int = 0
    seen: int = 0
    carry: list[Part] = field(default_factory=list)
    carry_count: int = 0
    resync: dict[Hashable, None] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: str = ""
    closed: bool = False
    sequence: int = 0
    dropped: int = 0

    def frame(self, enc: Encoded) -> bytes:
        return enc.update() if self.multiplexed else enc.stream()

    @property
    def queued(self) -> int:
        """Items waiting for this reader (not counting latest values)."""
        group = self.group
        if group is None:
            return self.carry_count
        return self.carry_count + group.total - group.position(self.cursor)[0]

    def _take_unread(self) -> None:
        """Move the group's entries it has not read into ``carry``; the cursor goes to the head."""
        group = self.group
        if group is None:
            return
        for entry in group.log[self.cursor - group.base:]:
            self.carry.extend(entry.parts)
            self.carry_count += entry.count
        self.cursor = group.head

    def _drop_books(self, keys: Container[Hashable] | None) -> None:
        """Drop queued book items (of ``keys``, or all): snapshots will replace them."""
        keep: list[Part] = []
        for part in self.carry:
            if part[2] is not None and (keys is None or part[2] in keys):
                self.dropped += part[1]
                self.carry_count -= part[1]
            else:
                keep.append(part)
        self.carry = keep

    def check_lag(self) -> bool:
        """Called after its group grew: resync books or overflow when it is too far behind. False = left."""
        group = self.group
        assert group is not None
        items, nonbook = group.position(self.cursor)
        lag = self.carry_count + group.total - items
        if lag <= self.max_pending:
            return True
        carried_nonbook = sum(p[1] for p in self.carry if p[2] is None)
        if self.book_resync is None or carried_nonbook + group.total_nonbook - nonbook > self.max_pending:
            self.overflowed = (f"subscriber fell {lag} updates behind and these updates cannot be "
                               "conflated; reconnect and read faster, or subscribe to fewer symbols")
            self.wake.set()
            return False
        # Keep what cannot be conflated; each book it holds resyncs from a fresh snapshot.
        self._take_unread()
        self._drop_books(None)
        for topic in self.topics:
            if topic[0] == "book":
                self.resync[(topic[1], topic[2])] = None
        self.wake.set()
        return True

    def _resync_items(self) -> list[bytes]:
        """Snapshots for the books that need one; queued items of those books are dropped (the snapshot
        is built now, so it already holds them)."""
        assert self.book_resync is not None
        self._take_unread()
        self._drop_books(self.resync)
        items = []
        for key in self.resync:
            snap = self.book_resync(key)
            if snap is not None:
                items.append(self.frame(snap))
        self.resync.clear()
        return items

    async def next_message(self) -> bytes:
        """The next response (sequence + framed items); waits for updates. Raises on overflow."""
        while True:
            if self.overflowed:
                raise SubscriberOverflowError(self.overflowed)
            if self.control:
                return self.control.pop(0)
            items: list[bytes] = []
            count = 0
            if self.resync and self.book_resync is not None:
                items = self._resync_items()
                count = len(items)
            limit = self.max_items_per_message
            if self.carry:
                taken = 0
                for part in self.carry:
                    if count >= limit:
                        break
                    items.append(part[0])
                    count += part[1]
                    self.carry_count -= part[1]
                    taken += 1
                del self.carry[:taken]
            group = self.group
            if group is not None:
                if not self.carry:
                    log = group.log
                    i = self.cursor - group.base
                    n = len(log)
                    while i < n and count < limit:
                        entry = log[i]
                        items.append(entry.blob)
                        count += entry.count
                        i += 1
                    self.cursor = group.base + i
                if group.version > self.seen and count < limit:
                    fresh: list[bytes] = []
                    seen = self.seen
                    for version, data in reversed(group.latest.values()):
                        if version <= seen:
                            break
                        fresh.append(data)
                    fresh.reverse()
                    items.extend(fresh)
                    self.seen = group.version
            if items:
                self.sequence += 1
                if self.multiplexed:
                    return convert.subscribe_batch(self.sequence, items)
                return convert.batch_from_items(self.sequence, items)
            if self.closed:
                raise HubClosedError("the server is shutting down; reconnect to another instance or retry")
            self.wake.clear()
            await self.wake.wait()


def _encode_latest(u: object) -> Encoded:
    """A conflating update (NBBO, candle, index, mark, funding), serialized once."""
    kind = type(u)
    if kind is Nbbo:
        return Encoded(convert.nbbo_pb(u).SerializeToString(), NBBO)  # type: ignore[arg-type]
    if kind is Candle:
        return Encoded(convert.candle_pb(u).SerializeToString(), CANDLE)  # type: ignore[arg-type]
    if kind is IndexPrice:
        return Encoded(convert.index_price_pb(u).SerializeToString(), INDEX)  # type: ignore[arg-type]
    if kind is MarkPrice:
        return Encoded(convert.mark_price_pb(u).SerializeToString(), MARK)  # type: ignore[arg-type]
    return Encoded(convert.funding_rate_pb(u).SerializeToString(), FUNDING)  # type: ignore[arg-type]


class Hub:
    """Topic -> groups of subscribers; an update is encoded once, when at least one subscriber wants it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.subscribers: dict[Topic, set[_Group]] = {}
        """Per topic, the groups that subscribe to it."""
        self.groups: dict[tuple[frozenset[Topic], bool], _Group] = {}
        self.conflated_total = 0
        self.dropped_total = 0
        """Counts of subscribers and groups that have ended (live ones keep their own)."""
        self.book_status: dict[tuple[str, str], BookStatus] = {}
        """Per (venue, symbol): the status of the engine's last ``BookStatusChange`` (it emits one on every
        transition), which each streamed delta carries."""
        self.book_sequence: dict[tuple[str, str], int] = {}
        """Per (venue, symbol): the engine book version of the last book update seen (snapshot + deltas)."""

    # -- subscriptions --------------------------------------------------------------------------

    def _regroup(self, sub: Subscriber, topics: set[Topic]) -> None:
        old = sub.group
        if old is not None:
            sub._take_unread()
            old.members.discard(sub)
            if not old.members:
                self._drop_group(old)
            else:
                old.trim()
            sub.group = None
        sub.topics = topics
        if not topics:
            return
        key = (frozenset(topics), sub.multiplexed)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(key[0], sub.multiplexed)
            for topic in key[0]:
                self.subscribers.setdefault(topic, set()).add(group)
        group.members.add(sub)
        sub.group = group
        sub.cursor = group.head
        sub.seen = group.version

    def _drop_group(self, group: _Group) -> None:
        self.conflated_total += group.conflations
        del self.groups[(group.topics, group.multiplexed)]
        for topic in group.topics:
            groups = self.subscribers.get(topic)
            if groups is not None:
                groups.discard(group)
                if not groups:
                    del self.subscribers[topic]

    def subscribe(self, sub: Subscriber, topics: Iterable[Topic]) -> None:
        self._regroup(sub, sub.topics | set(topics))

    def unsubscribe_topics(self, sub: Subscriber, topics: Iterable[Topic]) -> None:
        self._regroup(sub, sub.topics - set(topics))

    def unsubscribe(self, sub: Subscriber) -> None:
        self.dropped_total += sub.dropped
        self._regroup(sub, set())
        sub.carry.clear()
        sub.carry_count = 0

    def close(self) -> None:
        """Graceful stop: every subscriber drains what is queued, then its stream ends (UNAVAILABLE)."""
        for group in self.groups.values():
            for sub in group.members:
                sub.closed = True
                sub.wake.set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(g.members) for g in self.groups.values())

    def stats(self) -> tuple[int, int, int, int]:
        """(subscribers, queued items, conflated updates, dropped book updates), for metrics."""
        subs = [s for g in self.groups.values() for s in g.members]
        queued = sum(s.queued for s in subs) + sum(len(g.latest) for g in self.groups.values())
        conflated = self.conflated_total + sum(g.conflations for g in self.groups.values())
        dropped = self.dropped_total + sum(s.dropped for s in subs)
        return len(subs), queued, conflated, dropped

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
        statuses = self.book_status
        last = len(updates) - 1
        delta_bytes = wire.book_delta_event if convert.USE_WIRE else convert.book_delta_bytes
        batched: dict[Topic, list[Encoded]] = {}
        books: dict[Topic, list[bytes]] = {}
        """Book topics' items: the BookUpdate bytes themselves (one topic each, framed per topic below)."""
        latest: dict[Hashable, tuple[object, set[_Group]]] = {}
        """Conflating updates by key: only the last one of the batch is encoded (no reader can see the
        others, as none reads during the batch)."""
        for i, u in enumerate(updates):
            kind = type(u)
            if kind is BookDelta or kind is BookSnapshot or kind is Quote:
                ev: BookDelta | BookSnapshot | Quote = u  # type: ignore[assignment]
                key = (ev.venue, ev.symbol)
                seq = seqs.get(key, 0) + 1
                seqs[key] = seq
                topic: Topic = ("book", ev.venue, ev.symbol)
                if topic in subs:
                    if kind is BookDelta:
                        # Most deltas change no status: no change follows them and the status is known.
                        status = statuses.get(key)
                        if status is None or (i < last and type(updates[i + 1]) in _AFTER_DELTA):
                            status = self._status_after(updates, i, key)
                        data = delta_bytes(ev, seq, status)  # type: ignore[arg-type]
                    elif kind is BookSnapshot:
                        data = convert.book_snapshot_pb(ev, seq).SerializeToString()  # type: ignore[arg-type]
                    else:
                        data = convert.quote_book_pb(ev, seq).SerializeToString()  # type: ignore[arg-type]
                    book_items = books.get(topic)
                    if book_items is None:
                        books[topic] = [data]
                    else:
                        book_items.append(data)
            elif kind is Trade:
                t: Trade = u  # type: ignore[assignment]
                one: Topic = ("trades", t.symbol, t.venue)
                anyv: Topic = ("trades", t.symbol, "")
                if one in subs or anyv in subs:
                    enc = Encoded(convert.trade_bytes(t), TRADE)
                    for topic in (one, anyv):
                        if topic in subs:
                            batched.setdefault(topic, []).append(enc)
            elif kind is Nbbo:
                n: Nbbo = u  # type: ignore[assignment]
                targets = subs.get(("nbbo", n.symbol))
                if targets:
                    latest_key: Hashable = ("nbbo", n.symbol)
                    latest.pop(latest_key, None)  # re-insert: keep the order of the last values
                    latest[latest_key] = (u, targets)
            elif kind is Candle:
                c: Candle = u  # type: ignore[assignment]
                targets = subs.get(("candles", c.venue, c.symbol, str(int(c.interval))))
                if targets:
                    latest_key = ("candle", c.venue, c.symbol, int(c.interval), c.open_time)
                    latest.pop(latest_key, None)
                    latest[latest_key] = (u, targets)
            elif kind is BookStatusChange:
                change: BookStatusChange = u  # type: ignore[assignment]
                self.book_status[(change.venue, change.symbol)] = change.status
                targets = subs.get(("book", change.venue, change.symbol))
                if change.status == BookStatus.AWAITING_RESYNC and convert.is_book_gap(change):
                    gap_key = (change.venue, change.symbol)
                    gap_seq = seqs.get(gap_key, 0) + 1  # a gap marker takes a sequence number of its own
                    seqs[gap_key] = gap_seq
                if targets and change.status == BookStatus.AWAITING_RESYNC:
                    gap = convert.book_gap_pb(change, seqs.get((change.venue, change.symbol), 0))
                    if gap is not None:
                        books.setdefault(("book", change.venue, change.symbol), []).append(gap.SerializeToString())
                elif targets and (change.status == BookStatus.HALTED or change.reason == "resumed"):
                    # A halt or resume changes no level: each reader gets a fresh snapshot of the book now,
                    # which carries the new status, instead of learning it at the next periodic one.
                    halted_key = (change.venue, change.symbol)
                    for g in targets:
                        for member in g.members:
                            if member.book_resync is not None:
                                member.resync[halted_key] = None
                                member.wake.set()
            elif kind is IndexPrice or kind is MarkPrice or kind is FundingRate:
                ptopic: Topic = ("index" if kind is IndexPrice else "mark" if kind is MarkPrice else "funding",
                                 u.symbol)  # type: ignore[attr-defined]
                targets = subs.get(ptopic)
                if targets:
                    latest.pop(ptopic, None)
                    latest[ptopic] = (u, targets)
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
        touched: set[_Group] = set()
        for conflation_key, (u, targets) in latest.items():
            enc = _encode_latest(u)
            for g in targets:
                g.push_latest(conflation_key, enc, wake=False)
            touched.update(targets)
        # One part per (topic, framing), one log entry per group: the cost is per group, not per subscriber.
        per_group: dict[_Group, list[Part]] = {}
        stream_parts: dict[Topic, list[Part]] = {}
        update_parts: dict[Topic, list[Part]] = {}
        frame_parts = wire.frame_parts
        for topic, payloads in books.items():
            groups = subs.get(topic)
            if not groups:
                continue
            book_key = (topic[1], topic[2])
            for group in groups:
                cache = update_parts if group.multiplexed else stream_parts
                parts = cache.get(topic)
                if parts is None:
                    parts = cache[topic] = frame_parts(payloads, BOOK if group.multiplexed else 0, PART_ITEMS,
                                                       book_key)
                per_group.setdefault(group, []).extend(parts)
        for topic, encs in batched.items():
            groups = subs.get(topic)
            if not groups:
                continue
            for group in groups:
                cache = update_parts if group.multiplexed else stream_parts
                parts = cache.get(topic)
                if parts is None:
                    # One channel per topic: its items share one MarketDataUpdate field.
                    parts = cache[topic] = frame_parts([e.inner for e in encs],
                                                       encs[0].field if group.multiplexed else 0, PART_ITEMS, None)
                per_group.setdefault(group, []).extend(parts)
        for group, parts in per_group.items():
            group.append(parts)
            left = [sub for sub in group.members if not sub.check_lag()]
            for sub in group.members:
                sub.wake.set()
            for sub in left:
                group.members.discard(sub)  # overflowed: its stream ends, it reads no more
            if len(group.log) >= 32 or left:
                group.trim()
        for group in touched:  # latest values changed: wake each member once per batch
            if group not in per_group:
                for sub in group.members:
                    sub.wake.set()

    def _status_after(self, updates: list[object], i: int, key: tuple[str, str]) -> BookStatus:
        """The book's status after the delta ``updates[i]``: the change the engine appended right after it
        (behind any quality flags), else the last one seen, else the live book's."""
        for j in range(i + 1, min(i + 4, len(updates))):
            nxt = updates[j]
            kind = type(nxt)
            if kind is BookStatusChange:
                change: BookStatusChange = nxt  # type: ignore[assignment]
                if (change.venue, change.symbol) == key:
                    return change.status
                break
            if kind is not QualityFlag:
                break
        status = self.book_status.get(key)
        if status is None:
            book = self.engine.book(*key)
            status = self.book_status[key] = book.status if book is not None else BookStatus.CONSISTENT
        return status

    # -- polled channels (in-progress candles, tickers) -----------------------------------------

    def publish_polled(self) -> None:
        """Tickers, consolidated books and in-progress candles, for topics with subscribers, all at once."""
        for _ in self.publish_polled_steps():
            pass

    def publish_polled_steps(self, topics_per_step: int = 4) -> Iterator[None]:
        """``publish_polled`` in steps: it yields after every ``topics_per_step`` polled topics, so a caller
        on the event loop can let other work run between them (a whole round takes milliseconds)."""
        engine = self.engine
        done = 0
        for topic, targets in list(self.subscribers.items()):
            if not targets or topic[0] not in _POLLED:
                continue
            if topic[0] == "ticker":
                ticker = engine.ticker(topic[1], topic[2])
                if ticker is not None:
                    enc = Encoded(convert.ticker_pb(ticker).SerializeToString(), TICKER)
                    for g in targets:
                        g.push_latest(topic, enc)
            elif topic[0] == "consolidated":
                book = engine.consolidated_book(topic[1], int(topic[2]))
                enc = Encoded(convert.consolidated_book_pb(book).SerializeToString(), CONSOLIDATED)
                for g in targets:
                    g.push_latest(topic, enc)
            else:
                venue, symbol, interval = topic[1], topic[2], int(topic[3])
                current = engine.candles(venue, symbol, Interval(interval), limit=1)
                if current and not current[-1].closed:
                    c = current[-1]
                    enc = Encoded(convert.candle_pb(c).SerializeToString(), CANDLE)
                    for g in targets:
                        g.push_latest(("candle", venue, symbol, interval, c.open_time), enc)
            done += 1
            if done % topics_per_step == 0:
                yield


_POLLED: Final = frozenset({"ticker", "consolidated", "candles"})
"""Topic kinds ``publish_polled`` publishes."""
