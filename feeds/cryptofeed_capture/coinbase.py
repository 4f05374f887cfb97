"""Coinbase Pro (2021 ``ws-feed``) ``level2``, ``ticker`` and ``matches`` frames to events.

Owns: ``snapshot`` -> ``BookSnapshot``; ``l2update`` (``changes: [[side, price, size], ...]``, size 0
deletes) -> ``BookDelta``; ``match`` / ``last_match`` -> ``Trade`` (Coinbase's ``side`` is the maker's,
so the aggressor is the other side); ``ticker`` -> ``VenueBbo`` cross-check material.
Level2 carries no sequence numbers, so book events use ``NO_SEQUENCE``.

Times: ``ts_recv`` is the capture epoch; ``ts_event`` is the message ``time`` (ISO, microseconds); the
level2 ``snapshot`` has no time, so for it ``ts_event = ts_recv``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feeds.cryptofeed_capture.common import (
    CaptureParser,
    FeedError,
    Frame,
    VenueBbo,
    field_of,
    iso_to_ns,
    levels,
    price_size,
)
from server.engine.events import NO_SEQUENCE, BookDelta, BookSnapshot, Level, Side, Trade

VENUE = "coinbase"
_SKIP = frozenset({"subscriptions", "heartbeat", "status", "received", "open", "done", "change",
                   "activate"})


class CoinbaseParser(CaptureParser):
    """Coinbase Pro WebSocket frames (level2, ticker, matches) to events and ``VenueBbo`` checks."""

    def __init__(self, symbols: Mapping[str, str] | None = None, venue: str = VENUE) -> None:
        super().__init__(venue, symbols)

    def _recv(self, msg: Any, ts_recv: int, frame: Frame) -> None:
        mtype = field_of(msg, "type")
        if mtype == "l2update":
            self._update(msg, ts_recv, frame)
        elif mtype == "snapshot":
            frame.events.append(BookSnapshot(
                self.venue, self.symbol(field_of(msg, "product_id")), NO_SEQUENCE,
                levels(field_of(msg, "bids", list), "bids"), levels(field_of(msg, "asks", list), "asks"),
                ts_recv, ts_recv))
        elif mtype in ("match", "last_match"):
            side = {"buy": Side.SELL, "sell": Side.BUY}.get(msg.get("side"))
            if side is None:
                raise FeedError(f"bad match side {msg.get('side')!r}")
            trade_id = field_of(msg, "trade_id")
            if not trade_id.isdigit():
                raise FeedError(f"bad trade_id {trade_id!r}")
            frame.events.append(Trade(self.venue, self.symbol(field_of(msg, "product_id")), trade_id,
                                      price_size(msg.get("price"), "price"),
                                      price_size(msg.get("size"), "size"), side,
                                      iso_to_ns(field_of(msg, "time")), ts_recv))
        elif mtype == "ticker":
            self._ticker(msg, ts_recv, frame)
        elif mtype == "error":
            raise FeedError(f"venue error: {msg.get('message')!r} {msg.get('reason')!r}")
        elif mtype in _SKIP:
            self.stats.skipped[mtype] += 1
        else:
            raise FeedError(f"unknown message type {mtype!r}")

    def _update(self, msg: dict[str, Any], ts_recv: int, frame: Frame) -> None:
        bids: list[Level] = []
        asks: list[Level] = []
        for change in field_of(msg, "changes", list):
            if not isinstance(change, list) or len(change) != 3:
                raise FeedError(f"bad change {change!r}")
            side, price_text, size_text = change
            level = (price_size(price_text, "price"), price_size(size_text, "size"))
            if level[0] < 0 or level[1] < 0:
                raise FeedError(f"negative level {change!r}")
            if side == "buy":
                bids.append(level)
            elif side == "sell":
                asks.append(level)
            else:
                raise FeedError(f"bad change side {side!r}")
        ts_event = iso_to_ns(msg["time"]) if "time" in msg else ts_recv
        frame.events.append(BookDelta(self.venue, self.symbol(field_of(msg, "product_id")),
                                      NO_SEQUENCE, NO_SEQUENCE, tuple(bids), tuple(asks),
                                      ts_event, ts_recv))

    def _ticker(self, msg: dict[str, Any], ts_recv: int, frame: Frame) -> None:
        if "best_bid" not in msg or "best_ask" not in msg:
            self.stats.skipped["ticker without BBO"] += 1
            return
        bid_size = price_size(msg["best_bid_size"], "best_bid_size") if "best_bid_size" in msg else None
        ask_size = price_size(msg["best_ask_size"], "best_ask_size") if "best_ask_size" in msg else None
        seq = msg.get("sequence", "0")
        frame.checks.append(VenueBbo(
            self.venue, self.symbol(field_of(msg, "product_id")),
            price_size(msg["best_bid"], "best_bid"), bid_size,
            price_size(msg["best_ask"], "best_ask"), ask_size,
            int(seq) if isinstance(seq, str) and seq.isdigit() else 0,
            iso_to_ns(msg["time"]) if "time" in msg else ts_recv, ts_recv))
