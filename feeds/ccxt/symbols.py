"""Venue symbols of a ccxt exchange <-> the service's canonical instruments.

ccxt already maps every venue's own market id to one **unified symbol** per instrument: Binance
``BTCUSDT``, OKX ``BTC-USDT``, Kraken ``XBTUSDT`` / ``XBT/USDT``, HTX ``btcusdt``, KuCoin ``BTC-USDT``,
Gate ``BTC_USDT``, Bitfinex ``tBTCUST`` are all ``BTC/USDT`` in ccxt. The canonical symbol is that
unified symbol, with the same rules as ``feeds.registry.canonical_symbol``:

- spot ``BASE/QUOTE`` stays as it is (``BTC/USDT``), so BTC/USDT on Binance and BTC-USDT on OKX are one
  instrument, and their books meet in one NBBO;
- a perpetual swap ``BASE/QUOTE:SETTLE`` becomes ``BASE/QUOTE-PERP``: linear ``BTC/USDT:USDT`` ->
  ``BTC/USDT-PERP`` (as registry's binance-futures / bybit ``BTCUSDT``), inverse ``BTC/USD:BTC`` ->
  ``BTC/USD-PERP`` (as BitMEX ``XBTUSD`` and Deribit ``BTC-PERPETUAL``);
- dated futures (``BTC/USDT:USDT-250328``) and options keep ccxt's unified symbol;
- the aliases ``XBT`` -> ``BTC`` and ``XDG`` -> ``DOGE`` apply (ccxt applies them already).

A feed's configuration may name a market by its unified symbol, its canonical symbol or the venue's
own id (``BTCUSDT``); ``SymbolMap.resolve`` finds the one market meant, and refuses an ambiguous name
(an id that is both a spot and a swap market, ``BTC/USD-PERP`` on a venue listing two such swaps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

_ALIASES: Final = {"XBT": "BTC", "XDG": "DOGE"}


def _asset(code: str) -> str:
    return _ALIASES.get(code, code)


def canonical(unified: str, market: Mapping[str, Any] | None = None) -> str:
    """The canonical symbol of a ccxt unified symbol (see the module docstring).

    ``market`` (ccxt's market structure) settles whether a ``:SETTLE`` symbol is a perpetual swap; without
    it a symbol ``BASE/QUOTE:SETTLE`` with no expiry suffix is taken as one.
    """
    pair, colon, settle = unified.partition(":")
    base, slash, quote = pair.partition("/")
    if not slash or not base or not quote:
        return unified
    spot = f"{_asset(base)}/{_asset(quote)}"
    if not colon:
        return spot
    is_swap = bool(market.get("swap")) if market is not None else ("-" not in settle and bool(settle))
    if is_swap:
        return spot + "-PERP"
    return f"{spot}:{settle}"


class SymbolMap:
    """The markets of one exchange: unified symbol, venue id and canonical symbol of each."""

    def __init__(self, venue: str, markets: Mapping[str, Mapping[str, Any]]) -> None:
        self.venue = venue
        self.markets = markets
        self._canonical: dict[str, str] = {}
        self._by_name: dict[str, set[str]] = {}
        for unified, market in markets.items():
            canon = canonical(unified, market)
            self._canonical[unified] = canon
            names = {unified, canon}
            market_id = market.get("id")
            if isinstance(market_id, str):
                names.add(market_id)
            for name in names:
                self._by_name.setdefault(name, set()).add(unified)

    def canonical(self, unified: str) -> str:
        """The canonical symbol of one of this exchange's unified symbols."""
        found = self._canonical.get(unified)
        return found if found is not None else canonical(unified)

    def resolve(self, name: str) -> str:
        """The unified symbol meant by ``name`` (unified, canonical or venue id); ValueError otherwise."""
        if name in self._canonical:
            return name  # a unified symbol is never ambiguous
        hits = self._by_name.get(name, set())
        if len(hits) == 1:
            return next(iter(hits))
        if not hits:
            raise ValueError(f"{self.venue}: no market {name!r}")
        raise ValueError(f"{self.venue}: {name!r} is ambiguous ({', '.join(sorted(hits))}); "
                         "name the market by its ccxt unified symbol")
