"""Kraken spot WebSocket v1 (``book``, ``trade``) frames to events, and Kraken's book checksum.

Owns: the v1 message variants (snapshot ``as``/``bs``; updates ``a`` and/or ``b``, both sides possibly
in one frame as two objects; republish levels flagged ``"r"``; checksum ``c`` in the last object), the
truncation of each side to the subscribed depth (``book-N``) that Kraken's docs require after every
update, and the CRC32 checksum over the top 10 levels.

Kraken sends fixed-decimal strings per pair; the parser learns each pair's price and volume decimals
from those strings (the largest count seen), so the checksum can render the engine's ints back exactly.

Times: ``ts_recv`` is the capture epoch; ``ts_event`` is the latest level timestamp in the frame
(Kraken stamps every level, in seconds with microseconds).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ccxt  # type: ignore[import-untyped]

from feeds.cryptofeed_capture.common import (
    CaptureParser,
    FeedError,
    Frame,
    OutOfRangeError,
    field_of,
    price_size,
    seconds_to_ns,
)
from server.engine.book import L2Book
from server.engine.events import NO_SEQUENCE, BookDelta, BookReset, BookSnapshot, Level, Side, Trade
from server.engine.numbers import DecimalFormatError, decimals_of, format_fixed

CHECKSUM_DEPTH = 10
VENUE = "kraken"


class KrakenChecksum(NamedTuple):
    """A checksum Kraken sent with an update; verify it after the frame's events were applied."""

    venue: str
    symbol: str
    expected: int
    price_decimals: int
    size_decimals: int
    ts_event: int
    ts_recv: int


def _checksum_part(value: int, decimals: int) -> str:
    return format_fixed(value, decimals).replace(".", "").lstrip("0")


def kraken_checksum(asks: Sequence[Level], bids: Sequence[Level], price_decimals: int,
                    size_decimals: int) -> int:
    """Kraken's CRC32 over asks (best first) then bids (best first), top 10 each.

    Each level contributes price then volume, rendered with the pair's decimals, '.' removed and
    leading zeros stripped (as ccxt's ``kraken.format_number``); CRC32 is ccxt's ``Exchange.crc32``.
    """
    parts = [_checksum_part(p, price_decimals) + _checksum_part(s, size_decimals)
             for p, s in asks[:CHECKSUM_DEPTH]]
    parts += [_checksum_part(p, price_decimals) + _checksum_part(s, size_decimals)
              for p, s in bids[:CHECKSUM_DEPTH]]
    crc: int = ccxt.Exchange.crc32("".join(parts), False)
    return crc


class KrakenBookChecker:
    """Verifies Kraken checksums against the engine's book; counts and returns a reset on mismatch."""

    def __init__(self) -> None:
        self.matched = 0
        self.mismatched = 0

    def verify(self, book: L2Book | None, check: KrakenChecksum) -> BookReset | None:
        """None when the book's top 10 gives ``check.expected``; else a ``BookReset`` to apply."""
        if book is not None and book.synced:
            try:
                got = kraken_checksum(book.ask_levels(CHECKSUM_DEPTH), book.bid_levels(CHECKSUM_DEPTH),
                                      check.price_decimals, check.size_decimals)
            except DecimalFormatError:
                got = -1
            if got == check.expected:
                self.matched += 1
                return None
            reason = f"checksum mismatch: expected {check.expected}, computed {got}"
        else:
            reason = "checksum for a book that is not synced"
        self.mismatched += 1
        return BookReset(check.venue, check.symbol, reason, check.ts_event, check.ts_recv)


class _DepthMirror:
    """The price keys of one pair's book, to drop levels beyond the subscribed depth."""

    __slots__ = ("ask_keys", "bid_keys", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bid_keys: list[int] = []  # -price ascending
        self.ask_keys: list[int] = []

    def apply(self, keys: list[int], key: int, size: int) -> None:
        i = bisect_left(keys, key)
        present = i < len(keys) and keys[i] == key
        if size and not present:
            keys.insert(i, key)
        elif not size and present:
            del keys[i]

    def truncate(self, keys: list[int], sign: int) -> list[Level]:
        dropped: list[Level] = []
        while len(keys) > self.depth:
            dropped.append((sign * keys.pop(), 0))
        return dropped


class KrakenParser(CaptureParser):
    """Kraken v1 public WebSocket frames (book, trade) to events and ``KrakenChecksum`` checks."""

    def __init__(self, symbols: Mapping[str, str] | None = None, venue: str = VENUE) -> None:
        super().__init__(venue, symbols)
        self._mirrors: dict[str, _DepthMirror] = {}
        self.decimals: dict[str, tuple[int, int]] = {}
        """Per venue pair: (price decimals, volume decimals) learned from Kraken's strings."""

    def _learn(self, pair: str, rows: list[Any]) -> None:
        pd, sd = self.decimals.get(pair, (0, 0))
        for row in rows:
            pd = max(pd, decimals_of(row[0]))
            sd = max(sd, decimals_of(row[1]))
        self.decimals[pair] = (pd, sd)

    def _recv(self, msg: Any, ts_recv: int, frame: Frame) -> None:
        if isinstance(msg, dict):
            event = msg.get("event")
            if event in ("heartbeat", "systemStatus", "subscriptionStatus", "pong"):
                if event == "subscriptionStatus" and msg.get("status") == "error":
                    raise FeedError(f"subscription error: {msg.get('errorMessage')!r}")
                self.stats.skipped[str(event)] += 1
                return
            raise FeedError(f"unknown event message {event!r}")
        if not isinstance(msg, list) or len(msg) < 4:
            raise FeedError("not a Kraken channel message")
        channel = msg[-2]
        pair = msg[-1]
        if not isinstance(channel, str) or not isinstance(pair, str):
            raise FeedError("channel name or pair is not a string")
        if channel.startswith("book"):
            self._book(msg[1:-2], channel, pair, ts_recv, frame)
        elif channel == "trade":
            self._trades(msg[1], pair, ts_recv, frame)
        elif channel in ("ticker", "spread", "ohlc") or channel.startswith("ohlc-"):
            self.stats.skipped[channel.split("-")[0]] += 1
        else:
            raise FeedError(f"unknown channel {channel!r}")

    def _book(self, parts: list[Any], channel: str, pair: str, ts_recv: int, frame: Frame) -> None:
        _, _, depth_text = channel.partition("-")
        depth = int(depth_text) if depth_text.isdigit() else 10
        if not parts or not all(isinstance(p, dict) for p in parts):
            raise FeedError("book message without level objects")
        symbol = self.symbol(pair)
        if "as" in parts[0] or "bs" in parts[0]:
            snap = parts[0]
            asks_raw = snap.get("as", [])
            bids_raw = snap.get("bs", [])
            asks, a_ts = self._levels(asks_raw, "as")
            bids, b_ts = self._levels(bids_raw, "bs")
            self._learn(pair, asks_raw + bids_raw)
            mirror = _DepthMirror(depth)
            mirror.ask_keys = sorted({p for p, s in asks if s})
            mirror.bid_keys = sorted({-p for p, s in bids if s})
            asks = asks + tuple(mirror.truncate(mirror.ask_keys, 1))
            bids = bids + tuple(mirror.truncate(mirror.bid_keys, -1))
            self._mirrors[pair] = mirror
            ts_event = max(a_ts, b_ts) or ts_recv
            frame.events.append(BookSnapshot(self.venue, symbol, NO_SEQUENCE,
                                             _net(bids), _net(asks), ts_event, ts_recv))
            return
        mirror_or_none = self._mirrors.get(pair)
        if mirror_or_none is None:
            raise FeedError(f"book update for {pair!r} before its snapshot")
        mirror = mirror_or_none
        ask_list: list[Level] = []
        bid_list: list[Level] = []
        ts_event = 0
        checksum: str | None = None
        for part in parts:
            for key in part:
                if key not in ("a", "b", "c"):
                    raise FeedError(f"unknown book update key {key!r}")
            if "a" in part:
                lv, t = self._levels(part["a"], "a")
                self._learn(pair, part["a"])
                ask_list.extend(lv)
                ts_event = max(ts_event, t)
                for p, s in lv:
                    mirror.apply(mirror.ask_keys, p, s)
            if "b" in part:
                lv, t = self._levels(part["b"], "b")
                self._learn(pair, part["b"])
                bid_list.extend(lv)
                ts_event = max(ts_event, t)
                for p, s in lv:
                    mirror.apply(mirror.bid_keys, -p, s)
            if "c" in part:
                checksum = field_of(part, "c")
        if not ask_list and not bid_list:
            raise FeedError("book update without levels")
        ask_list.extend(mirror.truncate(mirror.ask_keys, 1))
        bid_list.extend(mirror.truncate(mirror.bid_keys, -1))
        ts_event = ts_event or ts_recv
        frame.events.append(BookDelta(self.venue, symbol, NO_SEQUENCE, NO_SEQUENCE,
                                      tuple(bid_list), tuple(ask_list), ts_event, ts_recv))
        if checksum is not None:
            if not checksum.isdigit():
                raise FeedError(f"bad checksum {checksum!r}")
            pd, sd = self.decimals[pair]
            frame.checks.append(KrakenChecksum(self.venue, symbol, int(checksum), pd, sd,
                                               ts_event, ts_recv))

    def _levels(self, rows: Any, what: str) -> tuple[tuple[Level, ...], int]:
        """Kraken levels ``[price, volume, timestamp(, "r")]`` and the latest timestamp among them.

        A level priced beyond the contract's range (Kraken's XBT/CHF book holds asks at 9,999,999,997
        CHF) is left out and counted (``stats.skipped``): it can be neither served nor stored, and the
        rest of its message is good. Any other bad level refuses the message."""
        if not isinstance(rows, list):
            raise FeedError(f"{what} is not a list")
        out: list[Level] = []
        latest = 0
        for row in rows:
            if not isinstance(row, list) or not 3 <= len(row) <= 4:
                raise FeedError(f"{what}: bad level {row!r}")
            if len(row) == 4 and row[3] != "r":
                raise FeedError(f"{what}: unknown level flag {row[3]!r}")
            try:
                price = price_size(row[0], f"{what} price")
                size = price_size(row[1], f"{what} volume")
            except OutOfRangeError:
                self.stats.skipped["level beyond the sint64 range"] += 1
                continue
            if price < 0 or size < 0:
                raise FeedError(f"{what}: negative level {row!r}")
            if not isinstance(row[2], str):
                raise FeedError(f"{what}: bad level timestamp {row[2]!r}")
            latest = max(latest, seconds_to_ns(row[2]))
            out.append((price, size))
        return tuple(out), latest

    def _trades(self, rows: Any, pair: str, ts_recv: int, frame: Frame) -> None:
        """``[[price, volume, time, side b/s, ordertype, misc], ...]``; Kraken v1 trades carry no id."""
        if not isinstance(rows, list):
            raise FeedError("trade payload is not a list")
        symbol = self.symbol(pair)
        for row in rows:
            if not isinstance(row, list) or len(row) < 4:
                raise FeedError(f"bad trade {row!r}")
            side = {"b": Side.BUY, "s": Side.SELL}.get(row[3])
            if side is None:
                raise FeedError(f"bad trade side {row[3]!r}")
            frame.events.append(Trade(self.venue, symbol, "", price_size(row[0], "trade price"),
                                      price_size(row[1], "trade volume"), side,
                                      seconds_to_ns(row[2]), ts_recv))


def _net(levels_: tuple[Level, ...]) -> tuple[Level, ...]:
    """A snapshot's levels with the truncated (size 0) ones removed."""
    dropped = {p for p, s in levels_ if not s}
    return tuple((p, s) for p, s in levels_ if s and p not in dropped)
