"""Instrument reference data: validation and the (venue, venue symbol) -> canonical id map."""

from __future__ import annotations

import pytest

from server.engine.events import AssetClass
from server.engine.instruments import Instrument, InstrumentRegistry
from server.engine.numbers import parse_fixed


def btc() -> Instrument:
    return Instrument(symbol="BTC/USD", asset_class=AssetClass.CRYPTO, base="BTC", quote="USD",
                      tick_size=parse_fixed("0.1"), lot_size=parse_fixed("0.00000001"),
                      venue_symbols=(("kraken", "XBT/USD"), ("coinbase", "BTC-USD")))


def test_registry_maps_venue_symbols() -> None:
    reg = InstrumentRegistry((btc(),))
    assert reg.canonical("kraken", "XBT/USD") == "BTC/USD"
    assert reg.canonical("coinbase", "BTC-USD") == "BTC/USD"
    assert reg.canonical("kraken", "ETH/USD") is None
    assert "BTC/USD" in reg and len(reg) == 1
    inst = reg.get("BTC/USD")
    assert inst is not None and inst.tick_size == 100_000_000


def test_replacing_an_instrument_drops_its_old_venue_symbols() -> None:
    reg = InstrumentRegistry((btc(),))
    reg.add(Instrument(symbol="BTC/USD", asset_class=AssetClass.CRYPTO,
                       venue_symbols=(("kraken", "XXBTZUSD"),)))
    assert reg.canonical("kraken", "XBT/USD") is None
    assert reg.canonical("kraken", "XXBTZUSD") == "BTC/USD"


def test_a_venue_symbol_maps_to_one_instrument() -> None:
    reg = InstrumentRegistry((btc(),))
    with pytest.raises(ValueError, match="already maps"):
        reg.add(Instrument(symbol="XBT/USD", asset_class=AssetClass.CRYPTO,
                           venue_symbols=(("kraken", "XBT/USD"),)))


@pytest.mark.parametrize("kwargs", [
    {"symbol": ""},
    {"tick_size": -1},
    {"price_decimals": 10},
])
def test_invalid_instruments_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"symbol": "X", "asset_class": AssetClass.EQUITY}
    with pytest.raises(ValueError):
        Instrument(**{**base, **kwargs})  # type: ignore[arg-type]


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(TypeError):
        Instrument(symbol="X", asset_class=AssetClass.EQUITY, colour="red")  # type: ignore[call-arg]
