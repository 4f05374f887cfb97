"""A deterministic multi-venue market simulator: the default feed of ``mds serve``.

``config`` holds the settings and the ``sim:...`` spec parser, ``model`` the pure market model
(``MarketSimulator.step``), ``feed`` the asyncio ``SimulatorFeed`` that paces the model in real time.
"""

from feeds.simulator.config import (
    DEFAULT_SYMBOLS,
    DEFAULT_VENUES,
    SimulatorConfig,
    StaleVenue,
    SymbolSpec,
    VenueSpec,
    from_spec,
)
from feeds.simulator.feed import SimulatorFeed
from feeds.simulator.model import MarketSimulator, SimulatorStats

__all__ = [
    "DEFAULT_SYMBOLS",
    "DEFAULT_VENUES",
    "MarketSimulator",
    "SimulatorConfig",
    "SimulatorFeed",
    "SimulatorStats",
    "StaleVenue",
    "SymbolSpec",
    "VenueSpec",
    "from_spec",
]
