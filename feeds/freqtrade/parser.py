"""Pure parser of freqtrade trade dumps: JSON ``[[ts_ms, trade_id, order, side, price, amount, cost], ...]``.

Owns turning the text of one dump (the caller opens and un-gzips the file) into ``events.Trade``. Numbers
are read as text (``parse_float=str``) and converted with ``numbers.parse_fixed``: no binary float is
involved. ``cost`` is ignored (freqtrade computes it as a float product). The dump has no receive time,
so ``ts_recv = ts_event``. Rows that cannot be parsed go to the dead-letter sink with a reason
(``DeadLetter.ts_recv`` is 0: a file has no receive time).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Final

from feeds.cryptofeed_capture.common import INT64, FeedError, fixed
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import Side, Trade

SOURCE: Final = "freqtrade"
_SIDES: Final = {"buy": Side.BUY, "sell": Side.SELL, None: Side.UNSPECIFIED, "": Side.UNSPECIFIED}


class RowError(ValueError):
    """One dump row that is not a valid trade."""


def _text(value: object, field: str) -> str:
    if isinstance(value, str):
        return value
    raise RowError(f"{field} is not a number: {value!r}")


def parse_row(row: object, venue: str, symbol: str) -> Trade:
    """One ``[ts_ms, trade_id, order, side, price, amount, cost]`` row (numbers as text) to a Trade."""
    if not isinstance(row, list) or len(row) < 6:
        raise RowError("row is not a list of at least 6 fields")
    ts_ms, trade_id, _order, side_text, price_text, amount_text = row[:6]
    try:
        ts_scaled = fixed(_text(ts_ms, "timestamp"), "timestamp", INT64 * 1000)  # ms at 1e-9
        price = fixed(_text(price_text, "price"), "price")
        size = fixed(_text(amount_text, "amount"), "amount")
    except FeedError as exc:
        raise RowError(str(exc)) from exc
    if ts_scaled % 1000:
        raise RowError(f"timestamp below 1 ns: {ts_ms!r}")
    if not 0 <= ts_scaled // 1000 < INT64:
        raise RowError(f"timestamp out of range: {ts_ms!r}")
    if price <= 0:
        raise RowError(f"price must be > 0: {price_text!r}")
    if size <= 0:
        raise RowError(f"amount must be > 0: {amount_text!r}")
    if not isinstance(side_text, str | None) or side_text not in _SIDES:
        raise RowError(f"unknown side: {side_text!r}")
    if trade_id is None:
        trade_id = ""
    elif not isinstance(trade_id, str):
        raise RowError(f"trade id is not a string or number: {trade_id!r}")
    ts = ts_scaled // 1000
    return Trade(venue, symbol, trade_id, price, size, _SIDES[side_text], ts, ts)


def parse_dump(
    text: str, symbol: str, dead_letters: DeadLetterSink, venue: str = "binance"
) -> Iterator[Trade]:
    """Trades of one dump, in file order; bad rows (or a bad document) become dead letters."""
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)
    except (ValueError, RecursionError) as exc:
        dead_letters.append(DeadLetter(SOURCE, f"invalid JSON: {exc}", text[:1000], 0))
        return
    if not isinstance(doc, list):
        dead_letters.append(DeadLetter(SOURCE, "document is not a JSON array", text[:1000], 0))
        return
    for row in doc:
        try:
            yield parse_row(row, venue, symbol)
        except RowError as exc:
            dead_letters.append(DeadLetter(SOURCE, str(exc), json.dumps(row), 0))


class FreqtradeTradesParser:
    """``RecordParser``: each record is the text of one whole dump for ``symbol``."""

    def __init__(self, symbol: str, venue: str = "binance") -> None:
        self.symbol = symbol
        self.venue = venue

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Trade]:
        for text in records:
            yield from parse_dump(text, self.symbol, dead_letters, self.venue)
