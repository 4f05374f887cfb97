"""BitMEX realtime WebSocket ``orderBookL2``, ``quote`` and ``trade`` tables to events.

Owns the id-keyed L2 book mapping: ``orderBookL2`` rows are price levels keyed by ``id``; ``partial``
gives the full book, ``insert`` adds levels, ``update`` changes a size (by id only: the parser keeps
``id -> (side, price)`` per symbol), ``delete`` removes by id. One message may hold several symbols:
events are emitted per symbol in the message's order. An update or delete for an unknown id means the
book can no longer be trusted: the parser emits ``BookReset`` for that symbol.

BitMEX sends prices as JSON numbers; they are decoded as their source text (never a float).
Times: ``ts_recv`` is the capture epoch; trades and quotes carry ``timestamp`` (ms, ISO) -> ``ts_event``;
the 2021 ``orderBookL2`` rows carry no time, so book events use ``ts_event = ts_recv`` (a row
``timestamp``, sent by later API versions, is used when present).
``quote`` rows are returned as ``VenueBbo`` cross-check material, not events.
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
    price_size,
)
from server.engine.events import NO_SEQUENCE, BookDelta, BookReset, BookSnapshot, Level, Side, Trade

VENUE = "bitmex"
_SIDES = {"Buy": True, "Sell": False}


class BitmexParser(CaptureParser):
    """BitMEX realtime frames to events and ``VenueBbo`` checks; keeps each symbol's id -> level map."""

    def __init__(self, symbols: Mapping[str, str] | None = None, venue: str = VENUE) -> None:
        super().__init__(venue, symbols)
        self.ids: dict[str, dict[str, tuple[bool, int]]] = {}
        """Per venue symbol: level id -> (is_bid, price)."""

    def _recv(self, msg: Any, ts_recv: int, frame: Frame) -> None:
        if not isinstance(msg, dict):
            raise FeedError("not a JSON object")
        table = msg.get("table")
        if table is None:
            if "error" in msg:
                raise FeedError(f"venue error: {msg['error']!r}")
            if "info" in msg or "success" in msg or "subscribe" in msg:
                self.stats.skipped["control"] += 1
                return
            raise FeedError("message without table")
        action = field_of(msg, "action")
        rows = field_of(msg, "data", list)
        if not all(isinstance(r, dict) for r in rows):
            raise FeedError("data rows are not objects")
        produced = len(frame.events) + len(frame.checks)
        if table in ("orderBookL2", "orderBookL2_25"):
            self._book(msg, action, rows, ts_recv, frame)
        elif table == "trade":
            if action not in ("partial", "insert"):
                raise FeedError(f"unknown trade action {action!r}")
            for r in rows:
                side = {"Buy": Side.BUY, "Sell": Side.SELL}.get(r.get("side"))
                if side is None:
                    raise FeedError(f"bad trade side {r.get('side')!r}")
                frame.events.append(Trade(self.venue, self.symbol(field_of(r, "symbol")),
                                          field_of(r, "trdMatchID"), price_size(r.get("price"), "price"),
                                          price_size(r.get("size"), "size"), side,
                                          iso_to_ns(field_of(r, "timestamp")), ts_recv))
        elif table == "quote":
            if action not in ("partial", "insert"):
                raise FeedError(f"unknown quote action {action!r}")
            for r in rows:
                frame.checks.append(VenueBbo(
                    self.venue, self.symbol(field_of(r, "symbol")),
                    _opt(r.get("bidPrice"), "bidPrice") or 0, _opt(r.get("bidSize"), "bidSize"),
                    _opt(r.get("askPrice"), "askPrice") or 0, _opt(r.get("askSize"), "askSize"),
                    NO_SEQUENCE, iso_to_ns(field_of(r, "timestamp")), ts_recv))
        elif table in ("instrument", "funding", "liquidation", "settlement", "insurance"):
            self.stats.skipped[table] += 1
        else:
            raise FeedError(f"unknown table {table!r}")
        if len(frame.events) + len(frame.checks) == produced:  # a valid message without rows
            self.stats.skipped[f"{table} {action} without rows"] += 1

    def _book(self, msg: dict[str, Any], action: str, rows: list[dict[str, Any]], ts_recv: int,
              frame: Frame) -> None:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(field_of(r, "symbol"), []).append(r)
        if action == "partial":
            filt = msg.get("filter")
            if not groups and isinstance(filt, dict) and isinstance(filt.get("symbol"), str):
                groups[filt["symbol"]] = []
            for sym, group in groups.items():
                ids: dict[str, tuple[bool, int]] = {}
                bids: list[Level] = []
                asks: list[Level] = []
                for r in group:
                    is_bid, price, size = _row(r, need_price=True, need_size=True)
                    ids[field_of(r, "id")] = (is_bid, price)
                    (bids if is_bid else asks).append((price, size))
                self.ids[sym] = ids
                frame.events.append(BookSnapshot(self.venue, self.symbol(sym), NO_SEQUENCE,
                                                 tuple(bids), tuple(asks), _ts(group, ts_recv), ts_recv))
            return
        if action not in ("insert", "update", "delete"):
            raise FeedError(f"unknown orderBookL2 action {action!r}")
        for sym, group in groups.items():
            known = self.ids.get(sym)
            if known is None:
                frame.events.append(BookReset(self.venue, self.symbol(sym),
                                              f"orderBookL2 {action} before partial", ts_recv, ts_recv))
                self.stats.skipped[f"{action} before partial"] += 1
                continue
            bids = []
            asks = []
            reset = ""
            for r in group:
                level_id = field_of(r, "id")
                if action == "insert":
                    is_bid, price, size = _row(r, need_price=True, need_size=True)
                    known[level_id] = (is_bid, price)
                else:
                    entry = known.get(level_id)
                    if entry is None:
                        reset = f"orderBookL2 {action} for unknown id {level_id}"
                        break
                    is_bid, price = entry
                    if action == "update":
                        _, new_price, size = _row(r, need_price=False, need_size=True)
                        if new_price and new_price != price:
                            (bids if is_bid else asks).append((price, 0))
                            price = new_price
                            known[level_id] = (is_bid, price)
                    else:
                        size = 0
                        del known[level_id]
                (bids if is_bid else asks).append((price, size))
            if reset:
                del self.ids[sym]
                self.stats.skipped["unknown id -> reset"] += 1
                frame.events.append(BookReset(self.venue, self.symbol(sym), reset, ts_recv, ts_recv))
                continue
            frame.events.append(BookDelta(self.venue, self.symbol(sym), NO_SEQUENCE, NO_SEQUENCE,
                                          tuple(bids), tuple(asks), _ts(group, ts_recv), ts_recv))


def _row(r: dict[str, Any], *, need_price: bool, need_size: bool) -> tuple[bool, int, int]:
    is_bid = _SIDES.get(r.get("side", ""))
    if is_bid is None:
        raise FeedError(f"bad side {r.get('side')!r}")
    price = price_size(r["price"], "price") if need_price or "price" in r else 0
    size = price_size(r.get("size"), "size") if need_size else 0
    if price < 0 or size < 0:
        raise FeedError(f"negative level {r!r}")
    return is_bid, price, size


def _opt(value: Any, what: str) -> int | None:
    return None if value is None else price_size(value, what)


def _ts(rows: list[dict[str, Any]], ts_recv: int) -> int:
    stamps = [iso_to_ns(r["timestamp"]) for r in rows if isinstance(r.get("timestamp"), str)]
    return max(stamps) if stamps else ts_recv
