"""Pure parser of TrueFX tick files to ``events.Quote``.

Two layouts are recognised from the first line:

- with a header ``timestamp,bid,ask`` (as exported by pandas, e.g. nautilus' sample): rows
  ``2013-01-01 22:00:00.295000+00:00,86.655,86.728``; the time is ISO-8601 in UTC (``Z``, ``+00:00`` or
  no offset; any other offset is a dead letter). The symbol is the caller's.
- TrueFX's own monthly files, no header: ``USD/JPY,20130101 22:00:00.295,86.655,86.728`` (UTC, ms).
  The pair cell is the symbol (already canonical, ``BASE/QUOTE``).

``ts_event`` is the tick time as exact integer ns since the epoch; a file has no receive time, so
``ts_recv = ts_event``. Prices go through ``numbers.parse_fixed`` (exact).

Sizes: TrueFX ticks carry no sizes. The engine reads a ``Quote`` side of size 0 as empty, so both sides
carry a nominal 1 unit (``NOMINAL_SIZE`` = ``numbers.SCALE``), as for HistData.

Malformed rows become ``DeadLetter``s with a reason; the parser never raises.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from typing import Final

from feeds.cryptofeed_capture.common import FeedError, ParserStats, check_ns, fixed, iso_to_ns
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import Quote
from server.engine.numbers import SCALE

SOURCE: Final = "truefx"
VENUE: Final = "truefx"
NOMINAL_SIZE: Final = SCALE
"""Size put on both sides of every quote: 1 unit (the files carry no sizes; 0 would mean 'empty')."""
HEADER: Final = ("timestamp", "bid", "ask")


def compact_to_ns(text: str) -> int:
    """TrueFX's ``YYYYMMDD HH:MM:SS.mmm`` (UTC) to exact ns since the epoch."""
    s = text.strip()
    head, _, frac = s.partition(".")
    if (len(head) != 17 or not s.isascii() or head[8] != " " or head[11] != ":" or head[14] != ":"
            or not head[:8].isdigit()
            or not (head[9:11] + head[12:14] + head[15:17]).isdigit() or len(frac) > 9
            or (frac and not frac.isdigit())):
        raise FeedError(f"bad time {text!r} (want 'YYYYMMDD HH:MM:SS.mmm')")
    year, month, day = int(head[0:4]), int(head[4:6]), int(head[6:8])
    hour, minute, second = int(head[9:11]), int(head[12:14]), int(head[15:17])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour < 24 and minute < 60 and second < 60):
        raise FeedError(f"bad time {text!r} (out of range)")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return check_ns(seconds * 1_000_000_000 + int((frac + "000000000")[:9]), text)


def utc_iso_to_ns(text: str) -> int:
    """ISO-8601 UTC time (``Z``, ``+00:00`` or no offset; space or ``T``) to exact ns."""
    s = text.strip()
    tail = s[19:]
    if "+" in tail or "-" in tail:
        if not s.endswith("+00:00"):
            raise FeedError(f"time {text!r} is not UTC")
    elif not s.endswith("Z"):
        s += "Z"
    return iso_to_ns(s)


def _price(text: str, what: str) -> int:
    value = fixed(text, what)
    if value <= 0:
        raise FeedError(f"{what} must be > 0: {text!r}")
    return value


class TrueFxParser:
    """``RecordParser``: lines of one TrueFX file; ``symbol`` is used when the rows do not name the pair."""

    source = SOURCE

    def __init__(self, symbol: str = "", venue: str = VENUE, nominal_size: int = NOMINAL_SIZE) -> None:
        self.symbol = symbol
        self.venue = venue
        self.nominal_size = nominal_size
        self.stats = ParserStats()
        self.layout = ""
        """'header' or 'raw' once the first line was seen."""

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Quote]:
        for line in records:
            if not line.strip():
                self.stats.skipped["blank line"] += 1
                continue
            self.stats.lines += 1
            cells = [c.strip() for c in line.strip().split(",")]
            if not self.layout:
                if tuple(c.lower() for c in cells) == HEADER:
                    self.layout = "header"
                    continue
                self.layout = "raw"
            try:
                quote = self.parse_cells(cells)
            except FeedError as exc:
                self.stats.dead_letters += 1
                dead_letters.append(DeadLetter(SOURCE, str(exc), line.rstrip("\r\n"), 0))
                continue
            self.stats.events += 1
            yield quote

    def parse_cells(self, cells: list[str]) -> Quote:
        """One row's cells to a ``Quote`` (``FeedError`` when malformed)."""
        if self.layout == "header":
            if len(cells) != 3:
                raise FeedError(f"{len(cells)} cells, expected 3 (timestamp,bid,ask)")
            symbol = self.symbol
            ts = utc_iso_to_ns(cells[0])
            bid_text, ask_text = cells[1], cells[2]
        else:
            if len(cells) != 4:
                raise FeedError(f"{len(cells)} cells, expected 4 (pair,time,bid,ask)")
            symbol = cells[0]
            if not symbol:
                raise FeedError("empty pair")
            ts = compact_to_ns(cells[1])
            bid_text, ask_text = cells[2], cells[3]
        if not symbol:
            raise FeedError("no symbol: the file does not name its pair and none was given")
        bid = _price(bid_text, "bid")
        ask = _price(ask_text, "ask")
        return Quote(self.venue, symbol, bid, self.nominal_size, ask, self.nominal_size, ts, ts)
