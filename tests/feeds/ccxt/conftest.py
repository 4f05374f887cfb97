"""Fixtures of the ccxt feed tests: skip when the shared recorded captures are missing."""

from __future__ import annotations

import pytest

from tests.feeds.ccxt.venues import CAPTURES


@pytest.fixture
def captures() -> None:
    if not (CAPTURES / "BINANCE.ws.1.0").is_file() or not (CAPTURES / "KRAKEN.ws.50.0").is_file():
        pytest.skip(f"shared real data missing: {CAPTURES}")
