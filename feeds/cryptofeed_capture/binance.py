"""Binance spot WebSocket (``depth``, ``bookTicker``, ``aggTrade``, ``trade``, ``kline``) and the REST
``/api/v3/depth`` snapshot, as captured by cryptofeed, to events.

Owns Binance's book sync mapping: the REST snapshot becomes ``BookSnapshot(seq=lastUpdateId)`` and each
``depthUpdate`` becomes ``BookDelta(first_seq=U, seq=u)``. The engine's rule (duplicate if
``u <= last``, apply if ``U <= last + 1 <= u``, gap if ``U > last + 1``) is exactly Binance's documented
procedure, so the parser does no buffering or dropping of its own.

Times: ``ts_recv`` is the capture epoch. ``ts_event`` is the event time ``E`` of a depth update and the
trade time ``T`` of a trade; the REST snapshot and spot ``bookTicker`` carry no venue time, so for them
``ts_event = ts_recv``.
``bookTicker`` is returned as ``VenueBbo`` cross-check material (``Frame.checks``), not as an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from feeds.cryptofeed_capture.common import (
    CaptureParser,
    FeedError,
    Frame,
    VenueBbo,
    field_of,
    levels,
    loads_exact,
    millis_to_ns,
    price_size,
)
from server.engine.events import BookDelta, BookSnapshot, Side, Trade

VENUE = "binance"


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.isdigit():
        raise FeedError(f"{what} is not an unsigned integer: {value!r}")
    return int(value)


class BinanceParser(CaptureParser):
    """Binance capture lines (WebSocket frames, combined or raw streams, and REST depth bodies)."""

    def __init__(self, symbols: Mapping[str, str] | None = None, venue: str = VENUE) -> None:
        super().__init__(venue, symbols)

    def _http(self, url: str, body: str, ts_recv: int, frame: Frame) -> None:
        parts = urlsplit(url)
        if not parts.path.endswith("/depth"):
            self.stats.skipped["http " + parts.path] += 1
            return
        query = parse_qs(parts.query)
        venue_symbol = query.get("symbol", [""])[0].upper()
        if not venue_symbol:
            raise FeedError("depth snapshot URL without symbol")
        msg = loads_exact(body)
        if isinstance(msg, dict) and "code" in msg:
            raise FeedError(f"REST error {msg.get('code')}: {msg.get('msg')!r}")
        seq = _uint(field_of(msg, "lastUpdateId"), "lastUpdateId")
        bids = levels(field_of(msg, "bids", list), "bids")
        asks = levels(field_of(msg, "asks", list), "asks")
        frame.events.append(BookSnapshot(self.venue, self.symbol(venue_symbol), seq, bids, asks,
                                         ts_recv, ts_recv))

    def _recv(self, msg: Any, ts_recv: int, frame: Frame) -> None:
        if not isinstance(msg, dict):
            raise FeedError("not a JSON object")
        data = msg["data"] if "stream" in msg and "data" in msg else msg
        if not isinstance(data, dict):
            raise FeedError("stream data is not an object")
        etype = data.get("e")
        if etype == "depthUpdate":
            self._depth(data, ts_recv, frame)
        elif etype == "aggTrade":
            self._trade(data, str(data.get("a")), ts_recv, frame)
        elif etype == "trade":
            self._trade(data, str(data.get("t")), ts_recv, frame)
        elif etype == "kline":
            self.stats.skipped["kline"] += 1
        elif etype is None and {"u", "s", "b", "B", "a", "A"} <= data.keys():
            self._book_ticker(data, ts_recv, frame)
        elif etype is None and "result" in data and "id" in data:
            self.stats.skipped["response"] += 1
        elif etype is None and "code" in data:
            raise FeedError(f"venue error {data.get('code')}: {data.get('msg')!r}")
        else:
            raise FeedError(f"unknown message type {etype!r}")

    def _depth(self, d: dict[str, Any], ts_recv: int, frame: Frame) -> None:
        first = _uint(d.get("U"), "U")
        last = _uint(d.get("u"), "u")
        if first > last:
            raise FeedError(f"U {first} > u {last}")
        symbol = self.symbol(field_of(d, "s"))
        bids = levels(field_of(d, "b", list), "b")
        asks = levels(field_of(d, "a", list), "a")
        frame.events.append(BookDelta(self.venue, symbol, first, last, bids, asks,
                                      millis_to_ns(field_of(d, "E")), ts_recv))

    def _trade(self, d: dict[str, Any], trade_id: str, ts_recv: int, frame: Frame) -> None:
        maker = d.get("m")
        if not isinstance(maker, bool):
            raise FeedError(f"trade 'm' is not a boolean: {maker!r}")
        if not trade_id.isdigit():
            raise FeedError(f"bad trade id {trade_id!r}")
        # m: the buyer is the maker, so the aggressor sold.
        frame.events.append(Trade(self.venue, self.symbol(field_of(d, "s")), trade_id,
                                  price_size(d.get("p"), "p"), price_size(d.get("q"), "q"),
                                  Side.SELL if maker else Side.BUY,
                                  millis_to_ns(field_of(d, "T")), ts_recv))

    def _book_ticker(self, d: dict[str, Any], ts_recv: int, frame: Frame) -> None:
        ts_event = millis_to_ns(d["E"]) if isinstance(d.get("E"), str) else ts_recv
        frame.checks.append(VenueBbo(self.venue, self.symbol(field_of(d, "s")),
                                     price_size(d["b"], "b"), price_size(d["B"], "B"),
                                     price_size(d["a"], "a"), price_size(d["A"], "A"),
                                     _uint(d["u"], "u"), ts_event, ts_recv))
