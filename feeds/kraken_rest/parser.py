"""Pure parser of Kraken spot REST ``GET /0/public/Trades`` responses.

Owns turning the response text into ``events.Trade`` and the ``last`` pagination cursor. Row format:
``[price str, volume str, time (float seconds), side "b"/"s", ordertype, misc, trade_id]``. The time is
read as text from the JSON (``parse_float=str``) and converted exactly to ns (Kraken sends at most 9
decimals; more becomes a dead letter). A response has no per-trade receive time: ``ts_recv`` is the
caller's (the response's) receive time if given, else ``ts_event``. The symbol is the pair key unless
the caller maps it (``symbols``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, NamedTuple

from feeds.cryptofeed_capture.common import FeedError, check_ns, fixed
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import Side, Trade

SOURCE: Final = "kraken_rest"
VENUE: Final = "kraken"
_SIDES: Final = {"b": Side.BUY, "s": Side.SELL}


class RowError(ValueError):
    """One trade row that is not valid."""


class TradesPage(NamedTuple):
    """Parsed response: the trades (time order as sent) and the ``last`` cursor ('' if absent)."""

    trades: list[Trade]
    last: str


def parse_row(row: object, venue: str, symbol: str, ts_recv: int | None = None) -> Trade:
    """One row (numbers as text, as from ``json.loads(..., parse_float=str, parse_int=str)``) to a Trade."""
    if not isinstance(row, list) or len(row) < 4:
        raise RowError("row is not a list of at least 4 fields")
    if not symbol:
        raise RowError("empty pair name")
    price_text, volume_text, time_text, side_text = row[:4]
    trade_id = row[6] if len(row) > 6 else ""
    if not all(isinstance(v, str) for v in (price_text, volume_text, time_text)):
        raise RowError("price, volume and time must be numbers or numeric strings")
    try:
        price = fixed(price_text, "price")
        size = fixed(volume_text, "volume")
        ts = check_ns(fixed(time_text, "time"), time_text)  # seconds at 1e-9 == ns
    except FeedError as exc:
        raise RowError(str(exc)) from exc
    if price <= 0:
        raise RowError(f"price must be > 0: {price_text!r}")
    if size <= 0:
        raise RowError(f"volume must be > 0: {volume_text!r}")
    if ts < 0:
        raise RowError(f"negative time: {time_text!r}")
    side = _SIDES.get(side_text) if isinstance(side_text, str) else None
    if side is None:
        raise RowError(f"unknown side: {side_text!r}")
    if not isinstance(trade_id, str):
        raise RowError(f"trade id is not a number or string: {trade_id!r}")
    return Trade(venue, symbol, trade_id, price, size, side, ts, ts if ts_recv is None else ts_recv)


def parse_page(
    text: str,
    dead_letters: DeadLetterSink,
    *,
    symbols: Mapping[str, str] | None = None,
    venue: str = VENUE,
    ts_recv: int | None = None,
) -> TradesPage:
    """Parse one response. An error response or a bad document becomes one dead letter (no trades)."""
    recv = 0 if ts_recv is None else ts_recv
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)
    except (ValueError, RecursionError) as exc:
        dead_letters.append(DeadLetter(SOURCE, f"invalid JSON: {exc}", text[:1000], recv))
        return TradesPage([], "")
    if not isinstance(doc, dict):
        dead_letters.append(DeadLetter(SOURCE, "document is not a JSON object", text[:1000], recv))
        return TradesPage([], "")
    errors = doc.get("error")
    if errors:
        dead_letters.append(DeadLetter(SOURCE, f"error response: {errors!r}", text[:1000], recv))
        return TradesPage([], "")
    result = doc.get("result")
    if not isinstance(result, dict):
        dead_letters.append(DeadLetter(SOURCE, "missing result object", text[:1000], recv))
        return TradesPage([], "")
    last = result.get("last", "")
    trades: list[Trade] = []
    for pair, rows in result.items():
        if pair == "last":
            continue
        if not isinstance(rows, list):
            dead_letters.append(DeadLetter(SOURCE, f"result.{pair} is not a list", json.dumps(rows), recv))
            continue
        symbol = symbols.get(pair, pair) if symbols is not None else pair
        for row in rows:
            try:
                trades.append(parse_row(row, venue, symbol, ts_recv))
            except RowError as exc:
                dead_letters.append(DeadLetter(SOURCE, f"{pair}: {exc}", json.dumps(row), recv))
    return TradesPage(trades, last if isinstance(last, str) else str(last))


class KrakenTradesParser:
    """``RecordParser``: each record is the text of one ``/0/public/Trades`` response."""

    def __init__(self, symbols: Mapping[str, str] | None = None, venue: str = VENUE) -> None:
        self.symbols = symbols
        self.venue = venue
        self.last = ""
        """Cursor of the last page parsed (pass as ``since`` for the next request)."""

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Trade]:
        for text in records:
            page = parse_page(text, dead_letters, symbols=self.symbols, venue=self.venue)
            if page.last:
                self.last = page.last
            yield from page.trades
