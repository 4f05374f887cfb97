"""Stream handlers driven in-process: the periodic full book snapshot of StreamOrderBook."""

from __future__ import annotations

import asyncio
from typing import Any

from marketdata.v1 import market_data_service_pb2 as pb

from server.engine.engine import Engine
from server.engine.events import BookSnapshot
from server.service.fanout import Hub
from server.service.streams import StreamLimits, Streams


class _Context:
    async def abort(self, code: Any, message: str) -> None:
        raise AssertionError(f"aborted: {code} {message}")


def test_order_book_stream_resends_a_full_snapshot_periodically() -> None:
    engine = Engine()
    hub = Hub(engine)
    out: list[object] = []
    engine.apply(BookSnapshot("v", "S", 1, ((100, 5),), ((101, 5),), 1, 1), out)
    hub.on_updates(out)
    streams = Streams(engine, hub, limits=StreamLimits(book_snapshot_every_s=0.2))

    async def read(n: int) -> list[pb.StreamOrderBookResponse]:
        stream: Any = streams.StreamOrderBook(pb.StreamOrderBookRequest(symbol="S", venue="v"), _Context())  # type: ignore[arg-type]
        got = [pb.StreamOrderBookResponse.FromString(await asyncio.wait_for(anext(stream), 2)) for _ in range(n)]
        await stream.aclose()
        return got

    first, second = asyncio.run(read(2))  # no book updates in between: the second is the periodic snapshot
    assert [u.WhichOneof("update") for u in first.updates] == ["snapshot"]
    assert [u.WhichOneof("update") for u in second.updates] == ["snapshot"]
    assert second.sequence == first.sequence + 1
    assert second.updates[0].snapshot.sequence == first.updates[0].snapshot.sequence == 1
