"""Pure parser of HistData.com tick files (ASCII "T" format) to ``events.Quote``.

Row format, no header: ``YYYYMMDD HHMMSSmmm,bid,ask,volume``
(e.g. ``20200101 170000065,1.121200,1.121720,0``).

Times: HistData stamps its ASCII files in **EST without daylight saving** (a fixed UTC-5 offset, all
year), so ``ts_event`` = the wall time + 5 h, as exact integer ns since the epoch (UTC). A file has no
receive time: ``ts_recv = ts_event``.

Prices: the bid and ask text is converted with ``numbers.parse_fixed`` (exact, never a float).

Sizes: HistData ticks are indicative quotes without sizes (the volume column is always 0 in FX). The
engine reads a ``Quote`` side of size 0 as an *empty* side, so every quote carries a nominal size
(``NOMINAL_SIZE`` = 1 unit, i.e. ``numbers.SCALE``) on both sides: present, size unknown. The volume
column must be a number (else the row is a dead letter) and is otherwise ignored.

Malformed rows (wrong cell count, bad time, non-positive price) become ``DeadLetter``s with the reason;
the parser never raises. A crossed tick (bid > ask) is kept: the engine flags crossed books itself.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from typing import Final

from feeds.cryptofeed_capture.common import FeedError, ParserStats, check_ns, fixed
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import Quote
from server.engine.numbers import SCALE

SOURCE: Final = "histdata"
VENUE: Final = "histdata"
NOMINAL_SIZE: Final = SCALE
"""Size put on both sides of every quote: 1 unit (the files carry no sizes; 0 would mean 'empty')."""
EST_OFFSET_NS: Final = 5 * 3600 * 1_000_000_000
"""HistData's EST is UTC-5 all year (no DST): UTC = EST + 5 h."""


def est_to_ns(text: str) -> int:
    """``YYYYMMDD HHMMSSmmm`` (EST, UTC-5 fixed) to exact ns since the epoch, UTC."""
    s = text.strip()
    if len(s) != 18 or s[8] != " " or not (s.isascii() and s[:8].isdigit() and s[9:].isdigit()):
        raise FeedError(f"bad time {text!r} (want 'YYYYMMDD HHMMSSmmm')")
    year, month, day = int(s[0:4]), int(s[4:6]), int(s[6:8])
    hour, minute, second, milli = int(s[9:11]), int(s[11:13]), int(s[13:15]), int(s[15:18])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour < 24 and minute < 60 and second < 60):
        raise FeedError(f"bad time {text!r} (out of range)")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return check_ns(seconds * 1_000_000_000 + milli * 1_000_000 + EST_OFFSET_NS, text)


def _price(text: str, what: str) -> int:
    value = fixed(text, what)
    if value <= 0:
        raise FeedError(f"{what} must be > 0: {text!r}")
    return value


def parse_row(line: str, symbol: str, venue: str = VENUE, nominal_size: int = NOMINAL_SIZE) -> Quote:
    """One tick row to a ``Quote``; ``FeedError`` when it is malformed."""
    cells = line.strip().split(",")
    if len(cells) != 4:
        raise FeedError(f"{len(cells)} cells, expected 4 (time,bid,ask,volume)")
    ts = est_to_ns(cells[0])
    bid = _price(cells[1], "bid")
    ask = _price(cells[2], "ask")
    if fixed(cells[3], "volume") < 0:
        raise FeedError(f"negative volume {cells[3]!r}")
    return Quote(venue, symbol, bid, nominal_size, ask, nominal_size, ts, ts)


class HistDataParser:
    """``RecordParser``: lines of one HistData tick file of ``symbol`` (canonical, e.g. 'EUR/USD')."""

    source = SOURCE

    def __init__(self, symbol: str, venue: str = VENUE, nominal_size: int = NOMINAL_SIZE) -> None:
        self.symbol = symbol
        self.venue = venue
        self.nominal_size = nominal_size
        self.stats = ParserStats()

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Quote]:
        for line in records:
            if not line.strip():
                self.stats.skipped["blank line"] += 1
                continue
            self.stats.lines += 1
            try:
                quote = parse_row(line, self.symbol, self.venue, self.nominal_size)
            except FeedError as exc:
                self.stats.dead_letters += 1
                dead_letters.append(DeadLetter(SOURCE, str(exc), line.rstrip("\r\n"), 0))
                continue
            self.stats.events += 1
            yield quote
