"""Tardis.dev downloadable CSV datasets to events; the dataset is recognised from the header line.

Owns:
- ``incremental_book_L2`` (``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``):
  consecutive rows with the same (symbol, timestamp, local_timestamp, is_snapshot) form one
  ``BookSnapshot`` or ``BookDelta`` (amount 0 deletes);
- ``trades`` (``...,id,side,price,amount``) -> ``Trade``;
- ``book_snapshot_N`` (``asks[i].price,asks[i].amount,bids[i].price,bids[i].amount``...) -> one
  ``BookSnapshot`` a row (empty cells = no level);
- ``quotes`` (``...,ask_amount,ask_price,bid_price,bid_amount``) -> ``Quote``.

Times: ``timestamp`` (exchange time) and ``local_timestamp`` (Tardis receive time) are integer
microseconds since the epoch -> ``ts_event`` / ``ts_recv`` in ns. CSV cells are decimal text, parsed
with ``numbers.parse_fixed``. Venue symbols map to canonical ones via ``symbols[(exchange, symbol)]``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping

from feeds.cryptofeed_capture.common import FeedError, ParserStats, check_ns, price_size, well_formed
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import NO_SEQUENCE, BookDelta, BookSnapshot, Event, Level, Quote, Side, Trade

_BASE = ["exchange", "symbol", "timestamp", "local_timestamp"]
_L2 = [*_BASE, "is_snapshot", "side", "price", "amount"]
_TRADES = [*_BASE, "id", "side", "price", "amount"]
_QUOTES = [*_BASE, "ask_amount", "ask_price", "bid_price", "bid_amount"]
_SNAP_COL = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")
_SIDES = {"buy": Side.BUY, "sell": Side.SELL, "unknown": Side.UNSPECIFIED}


def _micros(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise FeedError(f"bad microsecond time {text!r}")
    return check_ns(int(text) * 1000, text)


class TardisCsvParser:
    """Lines of one Tardis CSV file (header first) to events; see the module docstring."""

    source = "tardis-csv"

    def __init__(self, symbols: Mapping[tuple[str, str], str] | None = None) -> None:
        self.symbols: Mapping[tuple[str, str], str] = symbols or {}
        self.stats = ParserStats()
        self.kind = ""
        """'incremental_book_L2', 'trades', 'book_snapshot_N' or 'quotes' once the header is read."""

    def _symbol(self, exchange: str, symbol: str) -> str:
        return self.symbols.get((exchange, symbol), symbol)

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Event]:
        header: list[str] | None = None
        pending: list[tuple[list[str], bool, Level]] = []  # incremental_book_L2 rows of one group
        for line in records:
            if not line.strip():
                self.stats.skipped["blank line"] += 1
                continue
            self.stats.lines += 1
            try:
                row = next(csv.reader([line]))
                if header is None:
                    header = row
                    self.kind = self._kind(row)
                    continue
                if len(row) != len(header):
                    raise FeedError(f"{len(row)} cells, header has {len(header)}")
                if self.kind == "incremental_book_L2":
                    parsed = (row, _l2_side(row[5]),
                              (price_size(row[6], "price"), price_size(row[7], "amount")))
                    if parsed[2][0] <= 0 or parsed[2][1] < 0 or not row[1]:
                        raise FeedError(f"bad level: price must be > 0, amount >= 0, symbol set: {row[1:2] + row[6:8]}")
                    _micros(row[2])
                    if row[4] not in ("true", "false"):
                        raise FeedError(f"bad is_snapshot {row[4]!r}")
                    _micros(row[3])
                    if pending and row[:5] != pending[0][0][:5]:
                        yield self._flush(pending)
                    pending.append(parsed)
                    continue
                event = well_formed(self._row(header, row))
            except (FeedError, csv.Error) as exc:
                self._dead(dead_letters, str(exc), line)
                if header is not None and not self.kind:
                    return
                continue
            self.stats.events += 1
            yield event
        if pending:
            yield self._flush(pending)

    def _dead(self, sink: DeadLetterSink, reason: str, raw: str) -> None:
        self.stats.dead_letters += 1
        sink.append(DeadLetter(self.source, reason, raw.rstrip("\r\n"), 0))

    @staticmethod
    def _kind(header: list[str]) -> str:
        if header == _L2:
            return "incremental_book_L2"
        if header == _TRADES:
            return "trades"
        if header == _QUOTES:
            return "quotes"
        if header[:4] == _BASE and len(header) > 4 and all(_SNAP_COL.match(c) for c in header[4:]):
            return f"book_snapshot_{(len(header) - 4) // 4}"
        raise FeedError(f"unknown Tardis CSV header {','.join(header)[:120]!r}")

    def _flush(self, rows: list[tuple[list[str], bool, Level]]) -> Event:
        """One group of incremental_book_L2 rows to one snapshot or delta (rows already checked)."""
        exchange, symbol, ts, local_ts, is_snap = rows[0][0][:5]
        bids = [level for _, is_bid, level in rows if is_bid]
        asks = [level for _, is_bid, level in rows if not is_bid]
        rows.clear()
        self.stats.events += 1
        sym = self._symbol(exchange, symbol)
        if is_snap == "true":
            return BookSnapshot(exchange, sym, NO_SEQUENCE, tuple(bids), tuple(asks),
                                _micros(ts), _micros(local_ts))
        return BookDelta(exchange, sym, NO_SEQUENCE, NO_SEQUENCE, tuple(bids), tuple(asks),
                         _micros(ts), _micros(local_ts))

    def _row(self, header: list[str], row: list[str]) -> Event:
        exchange, symbol, ts, local_ts = row[:4]
        sym = self._symbol(exchange, symbol)
        if self.kind == "trades":
            side = _SIDES.get(row[5])
            if side is None:
                raise FeedError(f"bad side {row[5]!r}")
            return Trade(exchange, sym, row[4], price_size(row[6], "price"), price_size(row[7], "amount"),
                         side, _micros(ts), _micros(local_ts))
        if self.kind == "quotes":
            return Quote(exchange, sym, _cell(row[6]), _cell(row[7]), _cell(row[5]), _cell(row[4]),
                         _micros(ts), _micros(local_ts))
        levels: dict[str, dict[int, list[int]]] = {"asks": {}, "bids": {}}
        for col, cell in zip(header[4:], row[4:], strict=True):
            m = _SNAP_COL.match(col)
            assert m is not None  # the header was checked
            pair = levels[m[1]].setdefault(int(m[2]), [0, 0])
            pair[0 if m[3] == "price" else 1] = _cell(cell)
        bids = tuple((p, s) for _, (p, s) in sorted(levels["bids"].items()) if s)
        asks = tuple((p, s) for _, (p, s) in sorted(levels["asks"].items()) if s)
        return BookSnapshot(exchange, sym, NO_SEQUENCE, bids, asks, _micros(ts), _micros(local_ts))


def _cell(text: str) -> int:
    """A numeric cell; empty means absent (0)."""
    return price_size(text, "cell") if text else 0


def _l2_side(text: str) -> bool:
    """True for bid, False for ask."""
    if text == "bid":
        return True
    if text == "ask":
        return False
    raise FeedError(f"bad side {text!r}")
