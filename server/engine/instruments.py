"""Instrument reference data: canonical ids, per-venue symbol mapping, tick and lot sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.engine.events import AssetClass


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    """One tradable instrument under its canonical id (e.g. ``BTC/USD``, ``BTC-PERP``, ``AAPL``).

    ``venue_symbols`` maps a venue name to that venue's own symbol (``kraken`` -> ``XBT/USD``).
    Tick and lot sizes are at scale 1e-9; 0 means unknown.
    """

    symbol: str
    asset_class: AssetClass
    base: str = ""
    quote: str = ""
    tick_size: int = 0
    lot_size: int = 0
    price_decimals: int = 9
    size_decimals: int = 9
    underlying: str = ""
    venue_symbols: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("instrument symbol must not be empty")
        if self.tick_size < 0 or self.lot_size < 0:
            raise ValueError(f"{self.symbol}: tick_size and lot_size must be >= 0")
        for name in ("price_decimals", "size_decimals"):
            if not 0 <= getattr(self, name) <= 9:
                raise ValueError(f"{self.symbol}: {name} must be within 0..9")


class InstrumentRegistry:
    """Canonical instruments and the reverse map from (venue, venue symbol) to the canonical id."""

    __slots__ = ("_by_symbol", "_by_venue_symbol")

    def __init__(self, instruments: tuple[Instrument, ...] = ()) -> None:
        self._by_symbol: dict[str, Instrument] = {}
        self._by_venue_symbol: dict[tuple[str, str], str] = {}
        for inst in instruments:
            self.add(inst)

    def add(self, instrument: Instrument) -> None:
        """Add or replace an instrument; a venue symbol may map to one canonical id only."""
        for venue, venue_symbol in instrument.venue_symbols:
            owner = self._by_venue_symbol.get((venue, venue_symbol))
            if owner is not None and owner != instrument.symbol:
                raise ValueError(f"{venue}:{venue_symbol} already maps to {owner}")
        old = self._by_symbol.get(instrument.symbol)
        if old is not None:
            for pair in old.venue_symbols:
                self._by_venue_symbol.pop(pair, None)
        self._by_symbol[instrument.symbol] = instrument
        for pair in instrument.venue_symbols:
            self._by_venue_symbol[pair] = instrument.symbol

    def get(self, symbol: str) -> Instrument | None:
        return self._by_symbol.get(symbol)

    def canonical(self, venue: str, venue_symbol: str) -> str | None:
        return self._by_venue_symbol.get((venue, venue_symbol))

    def all(self) -> list[Instrument]:
        return sorted(self._by_symbol.values(), key=lambda i: i.symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol

    def __len__(self) -> int:
        return len(self._by_symbol)
