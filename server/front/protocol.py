"""The frames between the gRPC front process and the service process, and the per-call credit window
(no I/O).

A frame is ``<u32 body length><u8 type><u32 call id><body>`` (little-endian). Control bodies (HELLO,
READY, OPEN, END, STOP) are JSON; MSG bodies are a serialized protobuf message as it is; CREDIT bodies are
a u32 count. Call id 0 is the connection itself.

Front -> service: READY (bound, or the reason it could not bind), OPEN (a new RPC: method, metadata,
peer, deadline), MSG (a request message), HALF_CLOSE (no more requests), CANCEL (the client went away),
CREDIT (the front handed that many response messages to grpc).

Service -> front: HELLO (the method table and the server options), MSG (a response message), END (the
RPC's status), CREDIT (the service consumed that many request messages), STOP (graceful stop, with its
grace).

Flow control: either side sends at most ``WINDOW`` MSG frames per call beyond what the other side has
acknowledged with CREDIT, so a slow client backs up into the service's own bounded queues (where books
conflate and a hopeless subscriber is ended) and never into the pipe.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Final

HEADER: Final = struct.Struct("<IBI")
COUNT: Final = struct.Struct("<I")
WINDOW: Final = 16
"""MSG frames a side may send on one call before the other side acknowledges them."""
MAX_BODY: Final = 1 << 30
"""A body longer than this is a corrupt stream, not a message (gRPC's own limit is far below it)."""


class Frame(enum.IntEnum):
    HELLO = 1
    READY = 2
    OPEN = 3
    MSG = 4
    HALF_CLOSE = 5
    CANCEL = 6
    CREDIT = 7
    END = 8
    STOP = 9


class Kind(enum.StrEnum):
    """A method's cardinality, as the front registers it."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"


class ProtocolError(ValueError):
    """The byte stream is not a sequence of frames (a bug or a foreign peer): the connection ends."""


def frame(kind: Frame, call: int, body: bytes = b"") -> bytes:
    return HEADER.pack(len(body), kind, call) + body


def control(kind: Frame, call: int, value: object) -> bytes:
    """A frame with a JSON body."""
    return frame(kind, call, json.dumps(value, separators=(",", ":")).encode())


def credit(call: int, count: int) -> bytes:
    return frame(Frame.CREDIT, call, COUNT.pack(count))


def read_credit(body: bytes) -> int:
    return int(COUNT.unpack(body)[0])


def read_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"bad control frame: {exc}") from None


def encode_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> list[list[str]]:
    """Invocation metadata as JSON: binary values (keys ending in ``-bin``) in base64."""
    out: list[list[str]] = []
    for key, value in metadata:
        if isinstance(value, bytes):
            out.append([key, base64.b64encode(value).decode(), "b"])
        else:
            out.append([key, value])
    return out


def decode_metadata(items: Sequence[Sequence[str]]) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((i[0], base64.b64decode(i[1]) if len(i) > 2 else i[1]) for i in items)


class FrameReader:
    """Splits received bytes into frames, whatever the chunking."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """The frames completed by ``data``: (type, call id, body). ProtocolError on a corrupt stream."""
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        size = len(buf)
        unpack = HEADER.unpack_from
        while size - pos >= 9:
            n, kind, call = unpack(buf, pos)
            if n > MAX_BODY or not Frame.HELLO <= kind <= Frame.STOP:
                raise ProtocolError(f"corrupt frame header (type {kind}, length {n})")
            end = pos + 9 + n
            if end > size:
                break
            with memoryview(buf) as view:  # one copy per body (a bytearray slice would be a second)
                out.append((kind, call, bytes(view[pos + 9:end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


class CreditWindow:
    """How many more MSG frames one side may send on a call: ``wait`` for room, ``take`` one per frame,
    ``grant`` on the peer's CREDIT, ``close`` when the call or the connection ends (waiters wake)."""

    __slots__ = ("_more", "closed", "room")

    def __init__(self, size: int = WINDOW) -> None:
        self.room = size
        self.closed = False
        self._more = asyncio.Event()

    async def wait(self) -> bool:
        """True once a frame may be sent; False if the window was closed."""
        while self.room <= 0 and not self.closed:
            self._more.clear()
            await self._more.wait()
        return not self.closed

    def take(self) -> None:
        self.room -= 1

    def grant(self, count: int) -> None:
        self.room += count
        self._more.set()

    def close(self) -> None:
        self.closed = True
        self._more.set()
