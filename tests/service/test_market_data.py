"""MarketData.GetOrderBook's encoded-once responses: equal to a fresh encoding, and never stale."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from marketdata.v1 import market_data_service_pb2 as pb

from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot
from server.service import convert
from server.service.fanout import Hub
from server.service.market_data import Alerts, MarketData
from server.service.streams import Streams, service_handlers


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, details: str) -> NoReturn:
        raise AssertionError(f"{code}: {details}")


def _get_order_book(md: MarketData, depth: int = 2) -> bytes:
    request = pb.GetOrderBookRequest(symbol="S", venue="v", depth=depth)
    result = asyncio.run(md.GetOrderBook(request, _Context()))  # type: ignore[arg-type]
    assert isinstance(result, bytes)
    return result


def test_a_book_is_encoded_once_per_state_and_depth() -> None:
    engine = Engine()
    out: list[object] = []
    engine.apply(BookSnapshot("v", "S", 1, ((100, 5), (99, 5)), ((101, 5), (102, 5)), 1, 1), out)
    md = MarketData(engine)
    first = _get_order_book(md)
    book = engine.book("v", "S")
    assert book is not None
    fresh = pb.GetOrderBookResponse(venue_book=convert.book_snapshot_from_book(book, 2, book.version))
    assert first == fresh.SerializeToString()
    assert _get_order_book(md) is first  # the same state: the same bytes object
    assert _get_order_book(md, depth=1) != first  # another depth: its own entry
    engine.apply(BookDelta("v", "S", 2, 2, ((100, 7),), (), 2, 2), out)
    changed = pb.GetOrderBookResponse.FromString(_get_order_book(md))
    assert changed.venue_book.bids[0].size == 7 and changed.venue_book.venue_sequence == 2


def test_the_unary_serializer_passes_encoded_responses_through() -> None:
    engine = Engine()
    generic = service_handlers(MarketData(engine), Alerts(engine), Streams(engine, Hub(engine), max_depth=10))
    handlers = {m: h for g in generic for m, h in g._method_handlers.items()}
    serialize = handlers["/marketdata.v1.MarketDataService/GetOrderBook"].response_serializer
    message = pb.GetOrderBookResponse()
    message.venue_book.symbol = "S"
    assert serialize(b"\x01\x02") == b"\x01\x02"
    assert serialize(message) == message.SerializeToString()
