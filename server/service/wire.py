"""Protobuf wire encoding of the stream hub's most frequent items: venue book deltas and trades.

These two are nearly every update at high event rates, and building a upb message only to serialize it
was about a fifth of the service's time per event. The functions here write the same bytes as
``convert.book_delta_pb(...).SerializeToString()`` and ``convert.trade_pb(t).SerializeToString()``
directly; ``tests/service/test_wire.py`` checks that byte for byte against protobuf, for any input.

mypyc compiles this module with the engine (``scripts/build_native.py``): native 64-bit integers and
librt's ``BytesWriter`` make a delta about 0.33 us against 2.35 us through upb (``mds bench hub``).
Interpreted it is slower than upb, so ``convert`` uses it only when it is compiled (``COMPILED``).
Levels are tuples, as ``events.BookDelta`` declares them: compiled, a list is a TypeError.

The layout follows protos/marketdata/v1/book.proto and trade.proto: fields in field-number order, proto3
defaults (0, "", false) left out, ``sint64`` zigzag-encoded, a negative ``int64`` or enum as ten bytes.
A number outside its wire type's range raises ValueError naming the field, as protobuf raises ValueError.
"""

from __future__ import annotations

from typing import Final

from librt.strings import BytesWriter
from mypy_extensions import i64, u8

from server.engine.events import BookDelta

COMPILED: Final = not __file__.endswith(".py")
"""True when this module runs as mypyc's extension (then faster than upb), False when interpreted."""

_U64_MAX: Final = (1 << 64) - 1
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1
_SHORT_MAX: Final = (1 << 62) - 1
"""Compiled, an int within +-_SHORT_MAX is held as a tagged machine word, and comparing it with a constant
that also fits one is a plain machine comparison; a bound beyond it (like _I64_MIN) takes the slow
big-integer path. Numbers within it skip the full range checks."""


def uvarint(out: BytesWriter, n: i64) -> None:
    """``n`` as an unsigned 64-bit varint; a negative ``n`` stands for its two's complement (ten bytes)."""
    if n < 0:
        for _ in range(9):
            out.append(u8((n & 0x7F) | 0x80))
            n = (n >> 7) & 0x01FFFFFFFFFFFFFF
        out.append(u8(n))
        return
    while n > 0x7F:
        out.append(u8((n & 0x7F) | 0x80))
        n >>= 7
    out.append(u8(n))


def _int64_value(n: int, name: str) -> i64:
    if -_SHORT_MAX <= n <= _SHORT_MAX:
        return i64(n)
    if n < _I64_MIN or n > _I64_MAX:
        raise ValueError(f"{name} out of range for a 64-bit signed field: {n}")
    return i64(n)


def _uint64(out: BytesWriter, tag: u8, n: int, name: str) -> None:
    if 0 < n <= _SHORT_MAX:
        out.append(tag)
        uvarint(out, i64(n))
    elif n:
        if n < 0 or n > _U64_MAX:
            raise ValueError(f"{name} out of range for uint64: {n}")
        out.append(tag)
        uvarint(out, i64(n - (1 << 64)) if n > _I64_MAX else i64(n))


def _int64(out: BytesWriter, tag: u8, n: int, name: str) -> None:
    if n:
        v = _int64_value(n, name)
        out.append(tag)
        uvarint(out, v)


def zigzag(v: i64) -> i64:
    """``sint64`` encoding: wraps in 64 bits compiled (then negative past 2**63: ten bytes), exact
    interpreted. Zero stays zero."""
    return (v << 1) ^ (v >> 63)


def _zigzag(n: int, name: str) -> i64:
    return zigzag(_int64_value(n, name))


def uvarint_len(n: i64) -> i64:
    """Bytes of ``uvarint(n)``."""
    if n < 0:
        return 10
    k: i64 = 1
    while n > 0x7F:
        n >>= 7
        k += 1
    return k


def field_len(value: i64) -> i64:
    """Bytes of a varint field holding ``value`` (0 when it is the default 0, which is not written)."""
    if value:
        return 1 + uvarint_len(value)
    return 0


def write_field(out: BytesWriter, tag: u8, value: i64) -> None:
    """A varint field, left out when ``value`` is 0."""
    if value:
        out.append(tag)
        uvarint(out, value)


def level_len(zp: i64, zs: i64) -> i64:
    """Bytes of one PriceLevel item (tag and length included) of zigzagged price ``zp`` and size ``zs``."""
    return 2 + field_len(zp) + field_len(zs)


def write_level(out: BytesWriter, tag: u8, zp: i64, zs: i64) -> None:
    """One PriceLevel item of zigzagged price ``zp`` and size ``zs`` (zeros left out)."""
    out.append(tag)
    out.append(u8(field_len(zp) + field_len(zs)))  # at most 22 bytes: one length byte
    write_field(out, 0x08, zp)
    write_field(out, 0x10, zs)


def _sint64(out: BytesWriter, tag: u8, n: int, name: str) -> None:
    if n:
        out.append(tag)
        uvarint(out, _zigzag(n, name))


def _enum(out: BytesWriter, tag: u8, n: int) -> None:
    if n:
        out.append(tag)
        uvarint(out, i64(n))


def _string(out: BytesWriter, tag: u8, s: str) -> None:
    if s:
        b = s.encode()
        out.append(tag)
        uvarint(out, len(b))
        out.write(b)


def _levels(out: BytesWriter, tag: u8, levels: tuple[tuple[int, int], ...]) -> None:
    for price, size in levels:
        write_level(out, tag, _zigzag(price, "price"), _zigzag(size, "size"))


def book_delta(
    venue: str,
    symbol: str,
    sequence: int,
    venue_sequence: int,
    bids: tuple[tuple[int, int], ...],
    asks: tuple[tuple[int, int], ...],
    status: int,
    ts_event_ns: int,
    ts_recv_ns: int,
) -> bytes:
    """A serialized ``BookUpdate{delta: BookDelta{...}}`` (``is_snapshot`` false); ``status`` is the
    wire enum number (``book_pb2.BookStatus``). The delta is a oneof member: present even when empty."""
    body = BytesWriter()
    _string(body, 0x0A, venue)
    _string(body, 0x12, symbol)
    _uint64(body, 0x18, sequence, "sequence")
    _uint64(body, 0x20, venue_sequence, "venue_sequence")
    _levels(body, 0x32, bids)
    _levels(body, 0x3A, asks)
    _enum(body, 0x40, status)
    _int64(body, 0x48, ts_event_ns, "ts_event_ns")
    _int64(body, 0x50, ts_recv_ns, "ts_recv_ns")
    out = BytesWriter()
    out.append(0x12)
    uvarint(out, len(body))
    out.write(body.getvalue())
    return out.getvalue()


def book_delta_event(ev: BookDelta, sequence: int, status: int) -> bytes:
    """``book_delta`` of an engine ``BookDelta`` (``first_seq`` has no wire field); ``status`` is the
    engine's ``BookStatus``, whose numbers are the wire's. The stream hub calls this directly."""
    venue, symbol, _first_seq, seq, bids, asks, ts_event, ts_recv = ev
    return book_delta(venue, symbol, sequence, seq, bids, asks, status, ts_event, ts_recv)


def trade(
    venue: str,
    symbol: str,
    trade_id: str,
    price: int,
    size: int,
    side: int,
    ts_event_ns: int,
    ts_recv_ns: int,
) -> bytes:
    """A serialized ``Trade``; ``side`` is the wire enum number (``common_pb2.Side``)."""
    out = BytesWriter()
    _string(out, 0x0A, venue)
    _string(out, 0x12, symbol)
    _string(out, 0x1A, trade_id)
    _sint64(out, 0x20, price, "price")
    _sint64(out, 0x28, size, "size")
    _enum(out, 0x30, side)
    _int64(out, 0x38, ts_event_ns, "ts_event_ns")
    _int64(out, 0x40, ts_recv_ns, "ts_recv_ns")
    return out.getvalue()


def frame_parts(payloads: list[bytes], field: int, part_items: int,
                key: tuple[str, str] | None) -> list[tuple[bytes, int, tuple[str, str] | None]]:
    """Serialized updates framed as items of a batch message (field 2 of every stream response), joined
    in parts of at most ``part_items`` items: ``(joined frames, item count, key)`` per part.

    With ``field`` 0 an item is the payload itself (a per-channel stream's ``repeated <item> = 2``); with
    ``field`` 1..15 it is a MarketDataUpdate holding the payload as that field (the multiplexed stream).
    The same bytes as joining ``convert.batch_item`` or ``convert.update_item`` of each payload, written
    once into each part instead of one bytes object per item.
    """
    if not 0 <= field < 16:
        raise ValueError(f"field number {field} is not within 0..15")
    if part_items < 1:
        raise ValueError("part_items must be >= 1")
    tag = u8(field << 3 | 2)
    parts: list[tuple[bytes, int, tuple[str, str] | None]] = []
    n = len(payloads)
    start = 0
    while start < n:
        end = min(start + part_items, n)
        out = BytesWriter()
        for i in range(start, end):
            payload = payloads[i]
            size: i64 = len(payload)
            out.append(0x12)
            if field:
                uvarint(out, 1 + uvarint_len(size) + size)
                out.append(tag)
            uvarint(out, size)
            out.write(payload)
        parts.append((out.getvalue(), end - start, key))
        start = end
    return parts
