"""Tardis normalized JSONL (tardis-node ``normalizeTrades`` / ``normalizeBookChanges``) to events.

Owns: ``book_change`` -> ``BookSnapshot`` (``isSnapshot``) or ``BookDelta`` (amount 0 deletes);
``trade`` -> ``Trade`` (``side`` is the aggressor's; 'unknown' -> UNSPECIFIED). Other normalized types
(``derivative_ticker``, ``book_snapshot``, ``trade_bar``, ...) have no engine event yet and are counted
in ``stats.skipped``. Venue symbols are mapped to the caller's canonical symbols through ``symbols``
keyed by ``(exchange, symbol)`` (so two venues' perpetuals can share one NBBO symbol).

Times: ``ts_event`` is ``timestamp`` (the exchange's time) and ``ts_recv`` is ``localTimestamp``
(Tardis' receive time), both ISO-8601 converted to integer ns exactly. Numbers are decoded as their
JSON text, never as floats. tardis-node normalized book changes carry no sequence: ``NO_SEQUENCE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from feeds.cryptofeed_capture.common import (
    FeedError,
    ParserStats,
    field_of,
    iso_to_ns,
    loads_exact,
    price_size,
    well_formed,
)
from feeds.protocols import DeadLetter, DeadLetterSink
from server.engine.events import NO_SEQUENCE, BookDelta, BookSnapshot, Event, Level, Side, Trade

_SIDES = {"buy": Side.BUY, "sell": Side.SELL, "unknown": Side.UNSPECIFIED}
_KNOWN_SKIPPED = frozenset({"derivative_ticker", "book_snapshot", "trade_bar", "quote", "disconnect",
                            "book_ticker", "liquidation", "option_summary"})


def _levels(rows: Any, what: str) -> tuple[Level, ...]:
    if not isinstance(rows, list):
        raise FeedError(f"{what} is not a list")
    out: list[Level] = []
    for row in rows:
        price = price_size(field_of(row, "price"), f"{what} price")
        size = price_size(field_of(row, "amount"), f"{what} amount")
        if price < 0 or size < 0:
            raise FeedError(f"{what}: negative level {row!r}")
        out.append((price, size))
    return tuple(out)


class TardisNormalizedParser:
    """One JSON message a line (tardis-node normalized form) to events; see the module docstring."""

    source = "tardis-normalized"

    def __init__(self, symbols: Mapping[tuple[str, str], str] | None = None) -> None:
        self.symbols: Mapping[tuple[str, str], str] = symbols or {}
        self.stats = ParserStats()

    def parse(self, records: Iterable[str], dead_letters: DeadLetterSink) -> Iterator[Event]:
        for line in records:
            if not line.strip():
                self.stats.skipped["blank line"] += 1
                continue
            self.stats.lines += 1
            try:
                event = self.parse_message(loads_exact(line))
                if event is not None:
                    well_formed(event)
            except FeedError as exc:
                self._dead(dead_letters, str(exc), line)
                continue
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
                self._dead(dead_letters, f"malformed message: {type(exc).__name__}: {exc}", line)
                continue
            if event is not None:
                self.stats.events += 1
                yield event

    def _dead(self, sink: DeadLetterSink, reason: str, raw: str) -> None:
        self.stats.dead_letters += 1
        sink.append(DeadLetter(self.source, reason, raw.rstrip("\r\n"), 0))

    def parse_message(self, msg: Any) -> Event | None:
        """One decoded message to its event (None for a counted, engine-less type)."""
        mtype = field_of(msg, "type")
        exchange = field_of(msg, "exchange")
        venue_symbol = field_of(msg, "symbol")
        symbol = self.symbols.get((exchange, venue_symbol), venue_symbol)
        if mtype == "book_change":
            ts_event = iso_to_ns(field_of(msg, "timestamp"))
            ts_recv = iso_to_ns(field_of(msg, "localTimestamp"))
            bids = _levels(msg.get("bids"), "bids")
            asks = _levels(msg.get("asks"), "asks")
            snap = msg.get("isSnapshot")
            if not isinstance(snap, bool):
                raise FeedError(f"isSnapshot is not a boolean: {snap!r}")
            if snap:
                return BookSnapshot(exchange, symbol, NO_SEQUENCE, bids, asks, ts_event, ts_recv)
            return BookDelta(exchange, symbol, NO_SEQUENCE, NO_SEQUENCE, bids, asks, ts_event, ts_recv)
        if mtype == "trade":
            side_text = msg.get("side", "")
            side = _SIDES.get(side_text) if isinstance(side_text, str) else None
            if side is None:
                raise FeedError(f"bad trade side {msg.get('side')!r}")
            trade_id = msg.get("id") or ""
            if not isinstance(trade_id, str):
                raise FeedError(f"bad trade id {trade_id!r}")
            return Trade(exchange, symbol, trade_id, price_size(msg.get("price"), "price"),
                         price_size(msg.get("amount"), "amount"), side,
                         iso_to_ns(field_of(msg, "timestamp")), iso_to_ns(field_of(msg, "localTimestamp")))
        if mtype in _KNOWN_SKIPPED:
            self.stats.skipped[mtype] += 1
            return None
        raise FeedError(f"unknown message type {mtype!r}")
