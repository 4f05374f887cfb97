"""ReplayStream items written from stored rows: the speed-0 path for trades and book updates.

The embedded store reads a time window of each table as ClickHouse RowBinary in the table's sorting-key
order (``EmbeddedStore.replay_rows``): per (symbol, venue) a run of rows in event-time order, with no sort.
``PageEncoder`` splits each table's bytes into those runs, merges the runs by (event time, kind rank,
symbol, venue), which is ``EmbeddedStore.replay``'s order, together with items of other kinds already
framed (candles, pricing: after every row at or before their time), and writes each row as a framed
``ReplayStreamResponse.updates`` item. The bytes are exactly ``convert.batch_item`` of
``convert.update_pb(record, sequence)`` (``tests/service/test_replay_codec.py`` checks that for any input).
Book updates carry the replay's own sequence per (venue, symbol), counted from 1 across pages in a
``BookSequences``.

Row layouts, in ``ROW_KINDS`` order (the store's select lists, ``server.storage.store.ROW_SELECT``): every
row starts with ``ts_event Int64, symbol String, venue String``, then
  snapshots: ``seq Int64, bids Array(Tuple(Int64, Int64)), asks (same), ts_recv Int64``
  deltas:    the same as snapshots
  quotes:    ``bid_price, bid_size, ask_price, ask_size, ts_recv`` (Int64 each)
  trades:    ``trade_id String, price Int64, size Int64, side Int8, ts_recv Int64``
RowBinary writes Int64 as 8 little-endian bytes, a String or an Array as a LEB128 length and its content.

mypyc compiles this module with the engine (``scripts/build_native.py``); interpreted it gives the same
bytes, slower. A number the contract cannot carry (a negative venue sequence) raises ValueError naming the
field, as protobuf does on the record path.
"""

from __future__ import annotations

from typing import Final

from librt.strings import BytesWriter, read_i64_le
from mypy_extensions import i64, u8

from server.service.wire import field_len, level_len, uvarint, uvarint_len, write_field, write_level, zigzag

COMPILED: Final = not __file__.endswith(".py")
"""True when this module runs as mypyc's extension."""

SNAPSHOT: Final = 0
DELTA: Final = 1
QUOTE: Final = 2
TRADE: Final = 3
_EXTRA: Final = 4
ROW_KINDS: Final = 4
"""Stored kinds read as rows, by replay rank: snapshots, deltas, quotes, trades (``PageEncoder``'s ``rows``)."""

CONSISTENT: Final = 1
CROSSED: Final = 3
"""``BookStatus`` wire numbers (a test checks them against book_pb2)."""

_ITEM: Final = 0x12  # ReplayStreamResponse.updates
_BOOK: Final = 0x0A  # MarketDataUpdate.book
_TRADE: Final = 0x22  # MarketDataUpdate.trade
_SNAPSHOT: Final = 0x0A  # BookUpdate.snapshot
_DELTA: Final = 0x12  # BookUpdate.delta
_LAST: Final = (1 << 62) - 1  # order of the items of other kinds: after every row at the same time


def _byte(data: bytes, pos: i64) -> i64:
    return i64(data[pos])


def _length(data: bytes, pos: i64) -> tuple[i64, i64]:
    """A LEB128 length at ``pos``: (value, position after it)."""
    n: i64 = 0
    shift: i64 = 0
    while True:
        b = _byte(data, pos)
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7
        if shift > 56:
            raise ValueError(f"corrupt row data: a length prefix longer than 9 bytes at byte {pos}")


def _levels_len(data: bytes, at: i64, n: i64) -> i64:
    """Bytes of ``n`` (price, size) levels at ``at`` written as repeated PriceLevel (tag and length
    included)."""
    total: i64 = 0
    for i in range(n):
        p = read_i64_le(data, at + 16 * i)
        s = read_i64_le(data, at + 16 * i + 8)
        total += level_len(zigzag(p), zigzag(s))
    return total


def _write_levels(out: BytesWriter, tag: u8, data: bytes, at: i64, n: i64) -> None:
    for i in range(n):
        p = read_i64_le(data, at + 16 * i)
        s = read_i64_le(data, at + 16 * i + 8)
        write_level(out, tag, zigzag(p), zigzag(s))


def _levels_status(data: bytes, bids_at: i64, bids_n: i64, asks_at: i64, asks_n: i64) -> i64:
    """``convert._levels_status``: a repeated price keeps its last size, zero sizes are dropped, a zero
    best price does not count, and a locked book is crossed."""
    best_bid = _best(data, bids_at, bids_n, True)
    best_ask = _best(data, asks_at, asks_n, False)
    return CROSSED if best_bid != 0 and best_ask != 0 and best_bid >= best_ask else CONSISTENT


def _best(data: bytes, at: i64, n: i64, highest: bool) -> i64:
    last: dict[i64, i64] = {}
    for i in range(n):
        last[read_i64_le(data, at + 16 * i)] = read_i64_le(data, at + 16 * i + 8)
    best: i64 = 0
    found = False
    for price, size in last.items():
        if size and (not found or (price > best if highest else price < best)):
            best = price
            found = True
    return best


class BookSequence:
    """The last sequence a replay gave one (venue, symbol) book."""

    def __init__(self) -> None:
        self.value: i64 = 0


class BookSequences:
    """Book sequences of one replay, kept across its pages: per (venue, symbol), counted from 1."""

    def __init__(self) -> None:
        self.books: dict[bytes, BookSequence] = {}

    def of(self, key: bytes) -> BookSequence:
        seq = self.books.get(key)
        if seq is None:
            seq = BookSequence()
            self.books[key] = seq
        return seq


class _Run:
    """Rows of one (kind, symbol, venue) in event-time order, or the items of other kinds."""

    def __init__(self, kind: i64, data: bytes, start: i64, end: i64, head: i64, order: i64, prefix: bytes,
                 book: BookSequence | None, extra: list[tuple[int, bytes]]) -> None:
        self.kind = kind
        self.data = data
        self.pos = start  # the next row (extra: the next item's index)
        self.end = end
        self.head = head  # bytes of the symbol and venue, from byte 8 of each row
        self.order = order
        self.prefix = prefix  # venue and symbol written as protobuf fields 1 and 2
        self.book = book
        self.extra = extra
        self.ts: i64 = 0  # event time of the next row
        self.load()

    def load(self) -> bool:
        """Read the next row's event time; False when the run is done."""
        if self.pos >= self.end:
            return False
        if self.kind == _EXTRA:
            self.ts = i64(self.extra[self.pos][0])
        else:
            self.ts = read_i64_le(self.data, self.pos)
        return True


def _string_field(tag: u8, data: bytes, at: i64, n: i64) -> bytes:
    if n == 0:
        return b""
    out = BytesWriter()
    out.append(tag)
    uvarint(out, n)
    out.write(data[at:at + n])
    return out.getvalue()


def _split(data: bytes, kind: i64, runs: list[_Run], books: BookSequences) -> None:
    """Append the (symbol, venue) runs of one table's rows."""
    n: i64 = len(data)
    pos: i64 = 0
    start: i64 = 0
    head: i64 = -1
    index: i64 = 0
    while pos < n:
        row = pos
        sym_n, p = _length(data, pos + 8)
        sym_at = p
        venue_n, venue_at = _length(data, sym_at + sym_n)
        p = venue_at + venue_n
        if kind == TRADE:
            tid_n, p = _length(data, p)
            p += tid_n + 25
        elif kind == QUOTE:
            p += 40
        else:
            bids_n, p = _length(data, p + 8)
            asks_n, p = _length(data, p + 16 * bids_n)
            p += 16 * asks_n + 8
        if p > n:
            raise ValueError(f"corrupt row data: a row runs past the end ({p} > {n} bytes)")
        here = venue_at + venue_n - row - 8  # bytes of this row's symbol and venue
        if head < 0 or not _same(data, row + 8, start + 8, here, head):
            if head >= 0:
                runs.append(_run(kind, data, start, row, head, index, books))
                index += 1
            start = row
            head = here
        pos = p
    if head >= 0:
        runs.append(_run(kind, data, start, n, head, index, books))


def _same(data: bytes, a: i64, b: i64, a_len: i64, b_len: i64) -> bool:
    if a_len != b_len:
        return False
    for i in range(a_len):  # noqa: SIM110  (a loop of native byte reads; all() would box each)
        if data[a + i] != data[b + i]:
            return False
    return True


def _run(kind: i64, data: bytes, start: i64, end: i64, head: i64, index: i64, books: BookSequences) -> _Run:
    sym_n, sym_at = _length(data, start + 8)
    venue_n, venue_at = _length(data, sym_at + sym_n)
    prefix = _string_field(0x0A, data, venue_at, venue_n) + _string_field(0x12, data, sym_at, sym_n)
    book = None if kind == TRADE else books.of(prefix)
    return _Run(kind, data, start, end, head, kind << 40 | index, prefix, book, [])


def _less(a: _Run, b: _Run) -> bool:
    return a.ts < b.ts or (a.ts == b.ts and a.order < b.order)


class PageEncoder:
    """One page of a replay: ``rows`` (``ROW_KINDS`` RowBinary buffers, by rank; empty for a kind not
    replayed) and ``extra`` items ``(event time, framed item)`` in replay order, merged and written
    ``take`` items at a time."""

    def __init__(self, books: BookSequences, rows: list[bytes], extra: list[tuple[int, bytes]]) -> None:
        if len(rows) != ROW_KINDS:
            raise ValueError(f"expected {ROW_KINDS} row buffers, got {len(rows)}")
        runs: list[_Run] = []
        for kind in range(ROW_KINDS):
            if rows[kind]:
                _split(rows[kind], kind, runs, books)
        if extra:
            runs.append(_Run(_EXTRA, b"", 0, len(extra), 0, _LAST, b"", None, extra))
        self._heap: list[_Run] = []
        for run in runs:
            self._push(run)

    def _push(self, run: _Run) -> None:
        heap = self._heap
        heap.append(run)
        i: i64 = len(heap) - 1
        while i > 0:
            parent = (i - 1) >> 1
            if not _less(run, heap[parent]):
                break
            heap[i] = heap[parent]
            i = parent
        heap[i] = run

    def _sift_top(self) -> None:
        heap = self._heap
        n: i64 = len(heap)
        run = heap[0]
        i: i64 = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and _less(heap[child + 1], heap[child]):
                child += 1
            if not _less(heap[child], run):
                break
            heap[i] = heap[child]
            i = child
        heap[i] = run

    @property
    def done(self) -> bool:
        return not self._heap

    def take(self, limit: i64) -> tuple[int, bytes]:
        """The next at most ``limit`` items, joined: (count, bytes); (0, b"") when the page is done."""
        out = BytesWriter()
        count: i64 = 0
        heap = self._heap
        while count < limit and heap:
            run = heap[0]
            kind = run.kind
            if kind == _EXTRA:
                out.write(run.extra[run.pos][1])
                run.pos += 1
            elif kind == TRADE:
                run.pos = _trade(out, run)
            elif kind == QUOTE:
                run.pos = _quote(out, run)
            else:
                run.pos = _book(out, run)
            count += 1
            if run.load():
                self._sift_top()
            else:
                last = heap.pop()
                if heap:
                    heap[0] = last
                    self._sift_top()
        return int(count), out.getvalue()


def _next_sequence(run: _Run) -> i64:
    book = run.book
    assert book is not None
    book.value += 1
    return book.value


def _item_head(out: BytesWriter, outer: u8, inner: u8, body: i64) -> None:
    """Frame a book body: updates item { book { snapshot|delta { body } } }."""
    l2 = 1 + uvarint_len(body) + body
    out.append(_ITEM)
    uvarint(out, 1 + uvarint_len(l2) + l2)
    out.append(outer)
    uvarint(out, l2)
    out.append(inner)
    uvarint(out, body)


def _book(out: BytesWriter, run: _Run) -> i64:
    """A snapshot or delta row as a BookSnapshot / BookDelta item; the position after the row."""
    data = run.data
    ts = run.ts
    p = run.pos + 8 + run.head
    vseq = read_i64_le(data, p)
    if vseq < 0:
        raise ValueError(f"venue_sequence out of range for uint64: {vseq}")
    bids_n, bids_at = _length(data, p + 8)
    asks_n, asks_at = _length(data, bids_at + 16 * bids_n)
    p = asks_at + 16 * asks_n
    ts_recv = read_i64_le(data, p)
    seq = _next_sequence(run)
    delta = run.kind == DELTA
    status: i64 = CONSISTENT
    if not delta:
        status = _levels_status(data, bids_at, bids_n, asks_at, asks_n)
    prefix = run.prefix
    body = (i64(len(prefix)) + 1 + uvarint_len(seq) + field_len(vseq) + _levels_len(data, bids_at, bids_n)
            + _levels_len(data, asks_at, asks_n) + 2 + field_len(ts) + field_len(ts_recv))
    # Field tags: a delta's bids, asks, status and times are one field number later (is_snapshot is 5).
    shift: u8 = 8 if delta else 0
    _item_head(out, _BOOK, _DELTA if delta else _SNAPSHOT, body)
    out.write(prefix)
    out.append(0x18)
    uvarint(out, seq)
    write_field(out, 0x20, vseq)
    _write_levels(out, 0x2A + shift, data, bids_at, bids_n)
    _write_levels(out, 0x32 + shift, data, asks_at, asks_n)
    out.append(0x38 + shift)
    out.append(u8(status))
    write_field(out, 0x40 + shift, ts)
    write_field(out, 0x48 + shift, ts_recv)
    return p + 8


def _quote(out: BytesWriter, run: _Run) -> i64:
    """A quote row as a one-level-per-side BookSnapshot item (``convert.quote_book_pb``)."""
    data = run.data
    ts = run.ts
    p = run.pos + 8 + run.head
    bid_price = read_i64_le(data, p)
    bid_size = read_i64_le(data, p + 8)
    ask_price = read_i64_le(data, p + 16)
    ask_size = read_i64_le(data, p + 24)
    ts_recv = read_i64_le(data, p + 32)
    seq = _next_sequence(run)
    crossed = bid_size != 0 and ask_size != 0 and bid_price != 0 and ask_price != 0 and bid_price >= ask_price
    prefix = run.prefix
    bid_len: i64 = 0  # a side of size 0 is empty
    ask_len: i64 = 0
    if bid_size:
        bid_len = level_len(zigzag(bid_price), zigzag(bid_size))
    if ask_size:
        ask_len = level_len(zigzag(ask_price), zigzag(ask_size))
    body = (i64(len(prefix)) + 1 + uvarint_len(seq) + bid_len + ask_len + 2 + field_len(ts)
            + field_len(ts_recv))
    _item_head(out, _BOOK, _SNAPSHOT, body)
    out.write(prefix)
    out.append(0x18)
    uvarint(out, seq)
    if bid_size:
        write_level(out, 0x2A, zigzag(bid_price), zigzag(bid_size))
    if ask_size:
        write_level(out, 0x32, zigzag(ask_price), zigzag(ask_size))
    out.append(0x38)
    out.append(CROSSED if crossed else CONSISTENT)
    write_field(out, 0x40, ts)
    write_field(out, 0x48, ts_recv)
    return p + 40


def _trade(out: BytesWriter, run: _Run) -> i64:
    """A trade row as a Trade item (``convert.trade_pb``)."""
    data = run.data
    ts = run.ts
    tid_n, tid_at = _length(data, run.pos + 8 + run.head)
    p = tid_at + tid_n
    price = read_i64_le(data, p)
    size = read_i64_le(data, p + 8)
    side = _byte(data, p + 16)
    if side >= 0x80:  # Int8
        side -= 0x100
    ts_recv = read_i64_le(data, p + 17)
    zp = zigzag(price)
    zs = zigzag(size)
    prefix = run.prefix
    body = (i64(len(prefix)) + field_len(tid_n) + tid_n + field_len(zp) + field_len(zs) + field_len(side)
            + field_len(ts) + field_len(ts_recv))
    out.append(_ITEM)
    uvarint(out, 1 + uvarint_len(body) + body)
    out.append(_TRADE)
    uvarint(out, body)
    out.write(prefix)
    if tid_n:
        out.append(0x1A)
        uvarint(out, tid_n)
        out.write(data[tid_at:tid_at + tid_n])
    write_field(out, 0x20, zp)
    write_field(out, 0x28, zs)
    write_field(out, 0x30, side)
    write_field(out, 0x38, ts)
    write_field(out, 0x40, ts_recv)
    return p + 25
