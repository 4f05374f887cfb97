"""Canonical symbols of ccxt markets, consistent with feeds.registry.canonical_symbol."""

from __future__ import annotations

import pytest

from feeds.ccxt.symbols import SymbolMap, canonical
from feeds.registry import canonical_symbol


@pytest.mark.parametrize(("unified", "expected"), [
    ("BTC/USDT", "BTC/USDT"),
    ("XBT/USD", "BTC/USD"),
    ("BTC/USDT:USDT", "BTC/USDT-PERP"),
    ("BTC/USD:BTC", "BTC/USD-PERP"),
    ("BTC/USDT:USDT-250328", "BTC/USDT:USDT-250328"),
    ("BTC/USD:BTC-250328-60000-C", "BTC/USD:BTC-250328-60000-C"),
    ("weird", "weird"),
])
def test_canonical(unified: str, expected: str) -> None:
    assert canonical(unified) == expected


def test_matches_the_registry() -> None:
    assert canonical("BTC/USDT") == canonical_symbol("binance", "BTCUSDT") == canonical_symbol("okex", "BTC-USDT")
    assert canonical("BTC/USDT:USDT") == canonical_symbol("bybit", "BTCUSDT")
    assert canonical("BTC/USD:BTC") == canonical_symbol("bitmex", "XBTUSD") == canonical_symbol("deribit",
                                                                                                "BTC-PERPETUAL")


MARKETS = {
    "BTC/USDT": {"id": "BTCUSDT", "spot": True, "swap": False},
    "BTC/USDT:USDT": {"id": "BTCUSDT", "spot": False, "swap": True},
    "ETH/USDT": {"id": "ETHUSDT", "spot": True, "swap": False},
    "ETH/USDT:USDT-250328": {"id": "ETHUSDT_250328", "spot": False, "swap": False, "future": True},
}


def test_symbol_map_resolves_unified_canonical_and_ids() -> None:
    symbols = SymbolMap("binance", MARKETS)
    assert symbols.resolve("BTC/USDT") == "BTC/USDT"
    assert symbols.resolve("BTC/USDT-PERP") == "BTC/USDT:USDT"
    assert symbols.resolve("ETHUSDT") == "ETH/USDT"
    assert symbols.canonical("ETH/USDT:USDT-250328") == "ETH/USDT:USDT-250328"
    assert symbols.canonical("BTC/USDT:USDT") == "BTC/USDT-PERP"
    with pytest.raises(ValueError, match="ambiguous"):
        symbols.resolve("BTCUSDT")  # spot and swap share the id
    with pytest.raises(ValueError, match="no market"):
        symbols.resolve("DOGE/USDT")


def test_one_instrument_across_venues() -> None:
    okx = SymbolMap("okx", {"BTC/USDT": {"id": "BTC-USDT", "spot": True}})
    binance = SymbolMap("binance", {"BTC/USDT": {"id": "BTCUSDT", "spot": True}})
    assert okx.canonical(okx.resolve("BTC-USDT")) == binance.canonical(binance.resolve("BTCUSDT")) == "BTC/USDT"
