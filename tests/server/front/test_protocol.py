"""The front's frames: any chunking of a byte stream gives the frames back; corrupt headers are refused."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.front.protocol import (
    WINDOW,
    CreditWindow,
    Frame,
    FrameReader,
    ProtocolError,
    control,
    credit,
    decode_metadata,
    encode_metadata,
    frame,
    read_credit,
    read_json,
)

frames = st.lists(st.tuples(st.sampled_from(list(Frame)), st.integers(0, 2**32 - 1), st.binary(max_size=300)),
                  max_size=20)


@given(frames, st.lists(st.integers(1, 64), min_size=1, max_size=10))
def test_any_chunking_gives_the_frames_back(items: list[tuple[Frame, int, bytes]], cuts: list[int]) -> None:
    data = b"".join(frame(kind, call, body) for kind, call, body in items)
    reader = FrameReader()
    got: list[tuple[int, int, bytes]] = []
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        got += reader.feed(data[pos:pos + step])
        pos += step
        i += 1
    assert got == [(int(k), c, b) for k, c, b in items]


def test_control_credit_and_metadata_round_trip() -> None:
    [(kind, call, body)] = FrameReader().feed(control(Frame.OPEN, 7, {"method": "/a.B/C", "timeout": None}))
    assert (kind, call, read_json(body)) == (Frame.OPEN, 7, {"method": "/a.B/C", "timeout": None})
    [(kind, call, body)] = FrameReader().feed(credit(3, 5))
    assert (kind, call, read_credit(body)) == (Frame.CREDIT, 3, 5)
    metadata = (("x-request-id", "abc"), ("trace-bin", b"\x00\xff"))
    assert decode_metadata(encode_metadata(metadata)) == metadata


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x00\x63\x00\x00\x00\x00",  # unknown frame type 99
    b"\xff\xff\xff\x7f\x04\x00\x00\x00\x00",  # a body of 2 GiB
])
def test_a_corrupt_header_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameReader().feed(data)


def test_a_bad_control_body_is_refused() -> None:
    with pytest.raises(ProtocolError, match="bad control frame"):
        read_json(b"{not json")


def test_the_credit_window_holds_back_after_its_size_and_wakes_on_credit_or_close() -> None:
    async def main() -> None:
        window = CreditWindow()
        for _ in range(WINDOW):
            assert await window.wait()
            window.take()
        waiter = asyncio.ensure_future(window.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        window.grant(1)
        assert await waiter is True
        window.take()
        waiter = asyncio.ensure_future(window.wait())
        await asyncio.sleep(0.01)
        window.close()
        assert await waiter is False

    asyncio.run(main())
