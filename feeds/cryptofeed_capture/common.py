"""Shared pieces of the cryptofeed-capture parsers: the capture line format, exact JSON, times, stats.

A cryptofeed v1 raw capture (``raw_data_collection``) has one record a line:

- ``<url> <-> <epoch>``: a connection was opened;
- ``<url> <- <epoch>: <json>``: we sent a message (a subscription);
- ``<epoch>: <json>``: we received a WebSocket frame;
- ``<url> -> <epoch>: <body>``: an HTTP response (REST snapshots, symbol lists).

``<epoch>`` is the capture's receive time (``time.time()`` printed as text): it becomes ``ts_recv``,
converted to integer nanoseconds digit by digit. JSON is decoded with ``parse_float=str`` and
``parse_int=str`` so no price or size ever passes through a binary float; the parsers convert the
kept strings with ``numbers.parse_fixed``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import BookDelta, BookSnapshot, ClockTick, Event, Level, Quote, Trade
from server.engine.numbers import parse_fixed


class FeedError(ValueError):
    """A record that cannot be turned into events; the message becomes the dead letter's reason."""


class OutOfRangeError(FeedError):
    """A number beyond the contract's sint64 at 1e-9 (``MAX_VALUE``): it can be neither served nor stored."""


class CaptureLine(NamedTuple):
    """One split capture line. ``kind`` is 'recv', 'http', 'send' or 'connect'."""

    kind: str
    url: str
    ts_recv: int
    body: str


class VenueBbo(NamedTuple):
    """A venue's own best bid/offer message (Binance bookTicker, Coinbase ticker, BitMEX quote).

    Reference data to cross-check the reconstructed book, not book input: feeding it to the engine as
    a ``Quote`` would overwrite the venue's full book. A size is ``None`` when the venue omits it.
    """

    venue: str
    symbol: str
    bid_price: int
    bid_size: int | None
    ask_price: int
    ask_size: int | None
    seq: int
    ts_event: int
    ts_recv: int


@dataclass(slots=True)
class ParserStats:
    """What a parser did with its input, for metrics and tests: nothing is dropped without a count."""

    lines: int = 0
    events: int = 0
    dead_letters: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Valid records that carry nothing for the engine (control lines, heartbeats, klines), by kind."""


INT64: Final = 1 << 63
"""Event times are in [0, INT64): the wire's int64 ns."""
MAX_VALUE: Final = INT64
"""Prices and sizes (at 1e-9) are within +-MAX_VALUE: the contract's sint64. A venue's absurd level (Kraken
XBT/CHF asks at 9,999,999,997 CHF, 9.99e18 at 1e-9) can be neither served nor stored: it is dead-lettered."""
_MAX_NUMBER_TEXT: Final = 100
_MAX_EXPONENT: Final = 40


def fixed(text: str, what: str, limit: int = MAX_VALUE) -> int:
    """``numbers.parse_fixed`` for untrusted text: FeedError for anything but a plain decimal within
    ``limit`` at 1e-9. Non-ASCII digits ('²') and huge exponents ('1e999990', which would be expanded to a
    million digits) are refused before parsing."""
    _, e, exponent = text.strip().lower().partition("e")
    if (len(text) > _MAX_NUMBER_TEXT or not text.isascii()
            or (e and not (exponent.lstrip("+-").isdigit() and abs(int(exponent)) <= _MAX_EXPONENT))):
        raise FeedError(f"{what}: not a decimal number: {text[:_MAX_NUMBER_TEXT]!r}")
    try:
        value = parse_fixed(text)
    except (ValueError, ArithmeticError) as exc:  # DecimalFormatError, decimal.Overflow
        raise FeedError(f"{what}: {exc}") from exc
    if not -limit <= value < limit:
        raise OutOfRangeError(f"{what}: out of range: {text!r}")
    return value


def check_ns(ns: int, text: object) -> int:
    """A time in ns since the epoch, checked to be in [0, 2**63)."""
    if not 0 <= ns < INT64:
        raise FeedError(f"time out of range: {text!r}")
    return ns


def seconds_to_ns(text: str) -> int:
    """Exact '1618678133.365913' (seconds since the epoch, any decimals up to 9) to nanoseconds."""
    if not isinstance(text, str):
        raise FeedError(f"bad epoch time {text!r}")
    return check_ns(fixed(text, "epoch time"), text)


def millis_to_ns(value: str) -> int:
    """An integer count of milliseconds (Binance 'E', 'T') to nanoseconds."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise FeedError(f"bad millisecond time {value!r}")
    return check_ns(int(value) * 1_000_000, value)


def iso_to_ns(text: str) -> int:
    """Exact ISO-8601 UTC time ('2021-04-17T16:43:37.075687Z', any fraction up to 9 digits) to ns."""
    if not isinstance(text, str) or len(text) < 20:
        raise FeedError(f"bad ISO time {text!r}")
    s = text[:-1] if text.endswith("Z") else text.removesuffix("+00:00")
    head, _, frac = s.partition(".")
    if len(frac) > 9 or (frac and not (frac.isascii() and frac.isdigit())):
        raise FeedError(f"bad ISO time fraction {text!r}")
    try:
        dt = datetime.fromisoformat(head + "+00:00")
    except ValueError as exc:
        raise FeedError(f"bad ISO time {text!r}") from exc
    return check_ns(int(dt.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9]), text)


def loads_exact(text: str) -> Any:
    """JSON with every number kept as its source text (str): no binary float ever."""
    try:
        return json.loads(text, parse_float=str, parse_int=str)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FeedError(f"bad JSON: {exc}") from exc


def split_capture_line(line: str) -> CaptureLine:
    """Split one capture line into its kind, URL, receive time and body (see the module docstring)."""
    text = line.rstrip("\r\n")
    head, sep, body = text.partition(": ")
    if not sep:
        parts = text.split(" ")
        if len(parts) == 3 and parts[1] == "<->":
            return CaptureLine("connect", parts[0], seconds_to_ns(parts[2]), "")
        raise FeedError("not a capture line (no '<epoch>: ')")
    parts = head.split(" ")
    if len(parts) == 1:
        return CaptureLine("recv", "", seconds_to_ns(parts[0]), body)
    if len(parts) == 3 and parts[1] in ("->", "<-"):
        return CaptureLine("http" if parts[1] == "->" else "send", parts[0], seconds_to_ns(parts[2]), body)
    raise FeedError(f"unknown capture line prefix {head[:80]!r}")


def price_size(text: Any, what: str) -> int:
    """A venue string (kept from JSON) to a 1e-9 int; FeedError for anything else."""
    if not isinstance(text, str):
        raise FeedError(f"{what} is not a number: {text!r}")
    return fixed(text, what)


def levels(rows: Any, what: str) -> tuple[Level, ...]:
    """``[[price, size, ...], ...]`` to ``((price, size), ...)``; sizes must be >= 0."""
    if not isinstance(rows, list):
        raise FeedError(f"{what} is not a list")
    out: list[Level] = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 2:
            raise FeedError(f"{what}: bad level {row!r}")
        price = price_size(row[0], f"{what} price")
        size = price_size(row[1], f"{what} size")
        if size < 0 or price < 0:
            raise FeedError(f"{what}: negative level {row!r}")
        out.append((price, size))
    return tuple(out)


def field_of(obj: Any, key: str, kind: type = str) -> Any:
    """``obj[key]`` checked to be of ``kind``; FeedError when missing or of another type."""
    if not isinstance(obj, dict):
        raise FeedError(f"expected an object holding {key!r}")
    value = obj.get(key)
    if not isinstance(value, kind):
        raise FeedError(f"field {key!r} missing or not {kind.__name__}: {value!r}")
    return value


def _level_ok(level: Level, signed: bool) -> bool:
    price, size = level
    return (-MAX_VALUE <= price < MAX_VALUE if signed else 0 < price < MAX_VALUE) and 0 <= size < MAX_VALUE


def well_formed(event: Event, signed: bool = False) -> Event:
    """``event`` if the engine can take it, else FeedError: times in [0, 2**63); trade prices and sizes
    > 0; book levels priced > 0 with sizes >= 0; a quote side with a size priced > 0; a non-empty
    symbol; all within ``MAX_VALUE``. ``signed``: prices may be <= 0 (futures spreads)."""
    if isinstance(event, ClockTick):
        return event
    if not (0 <= event.ts_event < INT64 and 0 <= event.ts_recv < INT64):
        raise FeedError(f"time out of range: {event.ts_event}, {event.ts_recv}")
    if not event.symbol:
        raise FeedError("empty symbol")
    if isinstance(event, Trade):
        if not _level_ok((event.price, event.size), signed) or event.size <= 0:
            raise FeedError(f"trade price and size must be > 0: {event.price}e-9 x {event.size}e-9")
    elif isinstance(event, Quote):
        for price, size in ((event.bid_price, event.bid_size), (event.ask_price, event.ask_size)):
            if not (-MAX_VALUE <= price < MAX_VALUE and 0 <= size < MAX_VALUE
                    and (not size or _level_ok((price, size), signed))):
                raise FeedError(f"bad quote side {price}e-9 x {size}e-9")
    elif isinstance(event, BookSnapshot | BookDelta):
        for level in (*event.bids, *event.asks):
            if not _level_ok(level, signed):
                raise FeedError(f"bad book level {level[0]}e-9 x {level[1]}e-9")
    return event


class Frame(NamedTuple):
    """What one capture line produced: engine events plus cross-check material (never engine input)."""

    events: list[Event]
    checks: list[Any]


class CaptureParser:
    """Base of the cryptofeed-capture parsers: line splitting, control lines, dead letters, stats.

    Subclasses implement ``_recv`` (a received frame) and may override ``_http`` (an HTTP body).
    ``symbols`` maps a venue symbol to the caller's canonical symbol (identity when absent).
    """

    source = "cryptofeed"

    def __init__(self, venue: str, symbols: Mapping[str, str] | None = None) -> None:
        self.venue = venue
        self.symbols: Mapping[str, str] = symbols or {}
        self.stats = ParserStats()

    def symbol(self, venue_symbol: str) -> str:
        return self.symbols.get(venue_symbol, venue_symbol)

    def parse_line(self, line: str, dead_letters: DeadLetterSink) -> Frame:
        """One capture line to a ``Frame``; a bad line yields an empty frame and one dead letter."""
        frame = Frame([], [])
        if not line.strip():
            self.stats.skipped["blank line"] += 1
            return frame
        self.stats.lines += 1
        ts_recv = 0
        try:
            cap = split_capture_line(line)
            ts_recv = cap.ts_recv
            if cap.kind == "recv":
                self._recv(loads_exact(cap.body), cap.ts_recv, frame)
            elif cap.kind == "http":
                self._http(cap.url, cap.body, cap.ts_recv, frame)
            else:
                self.stats.skipped[cap.kind] += 1
            for event in frame.events:
                well_formed(event)
        except FeedError as exc:
            self._dead(dead_letters, str(exc), line, ts_recv)
            return Frame([], [])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            self._dead(dead_letters, f"malformed message: {type(exc).__name__}: {exc}", line, ts_recv)
            return Frame([], [])
        self.stats.events += len(frame.events)
        return frame

    def parse_frames(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Frame]:
        for line in records:
            yield self.parse_line(line, dead_letters)

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Event]:
        """``RecordParser``: events only (cross-check material is available from ``parse_frames``)."""
        for line in records:
            yield from self.parse_line(line, dead_letters).events

    def _dead(self, sink: DeadLetterSink, reason: str, raw: str, ts_recv: int) -> None:
        self.stats.dead_letters += 1
        sink.append(DeadLetter(f"{self.source}:{self.venue}", reason, raw.rstrip("\r\n"), ts_recv))

    def _recv(self, msg: Any, ts_recv: int, frame: Frame) -> None:
        raise NotImplementedError

    def _http(self, url: str, body: str, ts_recv: int, frame: Frame) -> None:
        self.stats.skipped["http"] += 1
