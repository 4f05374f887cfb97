"""Settings of the market simulator: the instrument universe, the venues, the rate and fault injection.

``SimulatorConfig`` is a frozen, keyword-only dataclass (an unknown key is a ``TypeError``; a bad value a
``ValueError`` from ``__post_init__``). ``from_spec`` builds one from the short text form used on the
command line (``mds serve --feed sim:seed=7,rate=5000``).

Spec grammar::

    spec     := "sim" [ ":" option { "," option } ]
    option   := key "=" value
    seed     := INT                          random seed (default 0)
    rate     := INT                          events per second (default 2000)
    depth    := INT                          book levels per side (default 20)
    symbols  := SYMBOL { ";" SYMBOL }        a subset of the default universe, e.g. BTC/USD;ETH-PERP
    venues   := VENUE { ";" VENUE }          a subset of the default venues, e.g. coinbase;kraken
    gaps     := PROB                         probability that a book delta skips sequence numbers
    spikes   := PROB                         probability that a trade is accompanied by a 10x bad print
    dups     := PROB                         probability that a trade is delivered twice
    stale    := VENUE ":" DURATION [ "@" DURATION ]   venue silent for DURATION, from START (default 5s)
    tick     := DURATION                     how often the feed delivers a batch in real time (default 2ms)
    DURATION := INT [ "ns" | "us" | "ms" | "s" | "m" ]   (no unit: nanoseconds)
    PROB     := a decimal number in [0, 1]

Keys may appear once each, in any order. With ``venues`` but no ``symbols``, the symbols are the default
ones listed on at least one of the chosen venues. Prices, tick and lot sizes are ints at 1e-9 (see
``server.engine.numbers``); probabilities and volatilities are plain floats (they are knobs, not prices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from server.engine.events import AssetClass
from server.engine.numbers import SCALE, SCALE_DIGITS, parse_fixed

SECOND_NS: Final = 1_000_000_000
MAX_EVENTS_PER_SECOND: Final = 10_000_000
MAX_BOOK_DEPTH: Final = 500
DEFAULT_TICK_NS: Final = 2_000_000
MIN_TICK_NS: Final = 100_000
SYMBOL_STYLES: Final = ("canonical", "dash", "concat")
"""How a venue writes a symbol: ``BTC/USD`` as is, as ``BTC-USD`` or as ``BTCUSD``."""


def _fixed(text: str) -> int:
    return parse_fixed(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolSpec:
    """One simulated instrument.

    ``price``, ``tick_size`` and ``lot_size`` are ints at 1e-9. ``volatility`` is annualized (calendar
    year, 24/7) and sets the long-run variance of the fair value's random walk. ``spread_ticks``: the
    tightest spread a venue quotes. ``level_gap``: book levels are 1..level_gap ticks apart. ``max_lots``:
    the largest resting size per level, in lots. ``weight``: relative share of events (activity).
    ``underlying``: for a perpetual, the spot symbol whose fair value it follows (plus a small premium).
    """

    symbol: str
    asset_class: AssetClass
    base: str
    quote: str
    price: int
    tick_size: int
    lot_size: int
    price_decimals: int
    size_decimals: int
    volatility: float
    spread_ticks: int = 1
    level_gap: int = 1
    max_lots: int = 1000
    weight: int = 1
    underlying: str = ""

    def __post_init__(self) -> None:
        s = self.symbol
        if not s or any(c in s for c in ",;:=@ "):
            raise ValueError(f"symbol {s!r} must be non-empty without ',', ';', ':', '=', '@' or spaces")
        if self.price <= 0 or self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{s}: price, tick_size and lot_size must be > 0")
        for name in ("price_decimals", "size_decimals"):
            if not 0 <= getattr(self, name) <= SCALE_DIGITS:
                raise ValueError(f"{s}: {name} must be within 0..{SCALE_DIGITS}")
        if self.tick_size % 10 ** (SCALE_DIGITS - self.price_decimals):
            raise ValueError(f"{s}: tick_size needs more than price_decimals={self.price_decimals} decimals")
        if self.lot_size % 10 ** (SCALE_DIGITS - self.size_decimals):
            raise ValueError(f"{s}: lot_size needs more than size_decimals={self.size_decimals} decimals")
        if not 0.0 <= self.volatility <= 5.0:
            raise ValueError(f"{s}: volatility must be within 0..5 (annualized)")
        if self.price < 50 * self.tick_size:
            raise ValueError(f"{s}: price must be at least 50 ticks")
        if self.spread_ticks < 1 or self.level_gap < 1 or self.max_lots < 1 or self.weight < 1:
            raise ValueError(f"{s}: spread_ticks, level_gap, max_lots and weight must be >= 1")
        if self.underlying == s:
            raise ValueError(f"{s}: a symbol cannot be its own underlying")


@dataclass(frozen=True, slots=True, kw_only=True)
class VenueSpec:
    """One simulated venue: which asset classes it lists, its latency and how it writes symbols.

    ``latency_ns``: venue time to our receive time (``ts_event = ts_recv - latency_ns``).
    ``extra_spread_ticks``: added to each symbol's ``spread_ticks`` on this venue.
    """

    name: str
    asset_classes: frozenset[AssetClass]
    latency_ns: int = 1_000_000
    extra_spread_ticks: int = 0
    symbol_style: str = "canonical"

    def __post_init__(self) -> None:
        n = self.name
        if not n or any(c in n for c in ",;:=@ "):
            raise ValueError(f"venue name {n!r} must be non-empty without ',', ';', ':', '=', '@' or spaces")
        if not self.asset_classes:
            raise ValueError(f"venue {n}: asset_classes must not be empty")
        if not 0 <= self.latency_ns < SECOND_NS:
            raise ValueError(f"venue {n}: latency_ns must be within [0, 1s)")
        if self.extra_spread_ticks < 0:
            raise ValueError(f"venue {n}: extra_spread_ticks must be >= 0")
        if self.symbol_style not in SYMBOL_STYLES:
            raise ValueError(f"venue {n}: symbol_style must be one of {SYMBOL_STYLES}")

    def lists(self, spec: SymbolSpec) -> bool:
        """Whether this venue trades ``spec``."""
        return spec.asset_class in self.asset_classes

    def venue_symbol(self, symbol: str) -> str:
        """The venue's own spelling of a canonical symbol."""
        if self.symbol_style == "dash":
            return symbol.replace("/", "-")
        if self.symbol_style == "concat":
            return symbol.replace("/", "").replace("-", "")
        return symbol


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleVenue:
    """Fault injection: ``venue`` sends nothing from ``start_ns`` after the first step for ``duration_ns``.

    When it comes back it re-sends a snapshot of each of its books (as after a reconnect).
    """

    venue: str
    duration_ns: int
    start_ns: int = 5 * SECOND_NS

    def __post_init__(self) -> None:
        if self.duration_ns <= 0:
            raise ValueError("stale venue duration must be > 0")
        if self.start_ns < 0:
            raise ValueError("stale venue start must be >= 0")


_CRYPTO = AssetClass.CRYPTO
_PERP = AssetClass.PERPETUAL

DEFAULT_SYMBOLS: Final[tuple[SymbolSpec, ...]] = (
    SymbolSpec(symbol="BTC/USD", asset_class=_CRYPTO, base="BTC", quote="USD", price=_fixed("65000"),
               tick_size=_fixed("0.1"), lot_size=_fixed("0.00001"), price_decimals=1, size_decimals=5,
               volatility=0.55, level_gap=8, max_lots=50_000, weight=4),
    SymbolSpec(symbol="ETH/USD", asset_class=_CRYPTO, base="ETH", quote="USD", price=_fixed("3200"),
               tick_size=_fixed("0.01"), lot_size=_fixed("0.0001"), price_decimals=2, size_decimals=4,
               volatility=0.7, level_gap=4, max_lots=20_000, weight=3),
    SymbolSpec(symbol="SOL/USD", asset_class=_CRYPTO, base="SOL", quote="USD", price=_fixed("150"),
               tick_size=_fixed("0.01"), lot_size=_fixed("0.001"), price_decimals=2, size_decimals=3,
               volatility=0.9, level_gap=1, max_lots=50_000, weight=2),
    SymbolSpec(symbol="BTC-PERP", asset_class=_PERP, base="BTC", quote="USD", price=_fixed("65010"),
               tick_size=_fixed("0.5"), lot_size=_fixed("0.001"), price_decimals=1, size_decimals=3,
               volatility=0.55, level_gap=2, max_lots=2_000, weight=4, underlying="BTC/USD"),
    SymbolSpec(symbol="ETH-PERP", asset_class=_PERP, base="ETH", quote="USD", price=_fixed("3200.5"),
               tick_size=_fixed("0.05"), lot_size=_fixed("0.01"), price_decimals=2, size_decimals=2,
               volatility=0.7, level_gap=2, max_lots=2_000, weight=3, underlying="ETH/USD"),
    SymbolSpec(symbol="SOL-PERP", asset_class=_PERP, base="SOL", quote="USD", price=_fixed("150.02"),
               tick_size=_fixed("0.001"), lot_size=_fixed("0.1"), price_decimals=3, size_decimals=1,
               volatility=0.9, spread_ticks=2, level_gap=4, max_lots=5_000, weight=2, underlying="SOL/USD"),
    SymbolSpec(symbol="AAPL", asset_class=AssetClass.EQUITY, base="AAPL", quote="USD", price=_fixed("190"),
               tick_size=_fixed("0.01"), lot_size=_fixed("1"), price_decimals=2, size_decimals=0,
               volatility=0.25, max_lots=800, weight=2),
    SymbolSpec(symbol="MSFT", asset_class=AssetClass.EQUITY, base="MSFT", quote="USD", price=_fixed("420"),
               tick_size=_fixed("0.01"), lot_size=_fixed("1"), price_decimals=2, size_decimals=0,
               volatility=0.25, max_lots=500, weight=2),
    SymbolSpec(symbol="EUR/USD", asset_class=AssetClass.FOREX, base="EUR", quote="USD", price=_fixed("1.085"),
               tick_size=_fixed("0.00001"), lot_size=_fixed("1000"), price_decimals=5, size_decimals=0,
               volatility=0.07, spread_ticks=2, max_lots=5_000, weight=2),
    SymbolSpec(symbol="USD/JPY", asset_class=AssetClass.FOREX, base="USD", quote="JPY", price=_fixed("151.5"),
               tick_size=_fixed("0.001"), lot_size=_fixed("1000"), price_decimals=3, size_decimals=0,
               volatility=0.09, spread_ticks=2, max_lots=5_000, weight=2),
    SymbolSpec(symbol="XAU/USD", asset_class=AssetClass.COMMODITY, base="XAU", quote="USD",
               price=_fixed("2350"), tick_size=_fixed("0.01"), lot_size=_fixed("0.01"), price_decimals=2,
               size_decimals=2, volatility=0.15, spread_ticks=3, level_gap=2, max_lots=10_000, weight=1),
)
"""Crypto spot and perpetuals, two US equities, two FX pairs and gold (prices of spring 2024)."""

_CRYPTO_VENUE = frozenset({_CRYPTO, _PERP})
_FX_VENUE = frozenset({AssetClass.FOREX, AssetClass.COMMODITY})

DEFAULT_VENUES: Final[tuple[VenueSpec, ...]] = (
    VenueSpec(name="coinbase", asset_classes=_CRYPTO_VENUE, latency_ns=2_000_000, symbol_style="dash"),
    VenueSpec(name="kraken", asset_classes=_CRYPTO_VENUE, latency_ns=5_000_000, extra_spread_ticks=1),
    VenueSpec(name="binance", asset_classes=_CRYPTO_VENUE, latency_ns=3_000_000, symbol_style="concat"),
    VenueSpec(name="nasdaq", asset_classes=frozenset({AssetClass.EQUITY}), latency_ns=300_000),
    VenueSpec(name="arca", asset_classes=frozenset({AssetClass.EQUITY}), latency_ns=450_000,
              extra_spread_ticks=1),
    VenueSpec(name="lmax", asset_classes=_FX_VENUE, latency_ns=1_000_000, symbol_style="concat"),
    VenueSpec(name="ebs", asset_classes=_FX_VENUE, latency_ns=1_500_000, extra_spread_ticks=1),
)
"""Three crypto venues (spot and perpetuals), two equity venues, two FX / metals venues."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """Everything the simulator needs; see the module docstring for the text form.

    Fault injection (all off by default): ``gap_probability`` per book delta (the delta skips 1..3
    sequence numbers; the venue re-sends a snapshot of that book later), ``spike_probability`` per trade
    (an extra 10x print, once the book has had ``spike_warmup_trades`` trades), ``duplicate_probability``
    per trade (the same trade, same id, delivered twice), ``stale_venue`` (one venue goes silent).
    """

    seed: int = 0
    symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS
    venues: tuple[VenueSpec, ...] = DEFAULT_VENUES
    events_per_second: int = 2_000
    book_depth: int = 20
    trade_probability: float = 0.12
    """Share of event slots that are trades (each trade also moves the book with a delta)."""
    gap_probability: float = 0.0
    spike_probability: float = 0.0
    duplicate_probability: float = 0.0
    stale_venue: StaleVenue | None = None
    spike_warmup_trades: int = 32
    """Trades a (venue, symbol) must have printed before a spike is injected (consumers need a reference)."""
    tick_ns: int = DEFAULT_TICK_NS
    """Real-time pacing (``SimulatorFeed``): one batch of the events due every ``tick_ns``. Every event of a
    batch waits for the batch to be applied, so a shorter tick lowers latency and costs more per event."""
    _listings: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), init=False, repr=False,
                                                              compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, not {type(self.seed).__name__}")
        rate = self.events_per_second
        if not isinstance(rate, int) or isinstance(rate, bool) or not 0 < rate <= MAX_EVENTS_PER_SECOND:
            raise ValueError(f"events_per_second must be an int within 1..{MAX_EVENTS_PER_SECOND}")
        if not isinstance(self.book_depth, int) or not 1 <= self.book_depth <= MAX_BOOK_DEPTH:
            raise ValueError(f"book_depth must be an int within 1..{MAX_BOOK_DEPTH}")
        for name in ("trade_probability", "gap_probability", "spike_probability", "duplicate_probability"):
            p = getattr(self, name)
            if not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a number within [0, 1], not {p!r}")
        if self.trade_probability >= 1.0:
            raise ValueError("trade_probability must be < 1 (books need deltas)")
        if not isinstance(self.tick_ns, int) or not MIN_TICK_NS <= self.tick_ns <= SECOND_NS:
            raise ValueError(f"tick_ns must be an int within {MIN_TICK_NS}..{SECOND_NS} (100us..1s)")
        if self.spike_warmup_trades < 0:
            raise ValueError("spike_warmup_trades must be >= 0")
        if not self.symbols:
            raise ValueError("symbols must not be empty")
        if not self.venues:
            raise ValueError("venues must not be empty")
        names = [s.symbol for s in self.symbols]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate symbols: {', '.join(dupes)}")
        venue_names = [v.name for v in self.venues]
        dupes = sorted({n for n in venue_names if venue_names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate venues: {', '.join(dupes)}")
        listings: list[tuple[str, tuple[str, ...]]] = []
        for spec in self.symbols:
            on = tuple(v.name for v in self.venues if v.lists(spec))
            if not on:
                raise ValueError(f"symbol {spec.symbol} ({spec.asset_class.name}) is listed on no venue")
            listings.append((spec.symbol, on))
        stale = self.stale_venue
        if stale is not None and stale.venue not in venue_names:
            raise ValueError(f"stale venue {stale.venue!r} is not a venue: {', '.join(venue_names)}")
        object.__setattr__(self, "_listings", tuple(listings))

    @staticmethod
    def from_spec(text: str) -> SimulatorConfig:
        """The module-level ``from_spec``: ``sim`` or ``sim:key=value,...`` to a config."""
        return from_spec(text)

    def listings(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(symbol, venues listing it) for each symbol, in config order."""
        return self._listings


_UNITS: Final = (("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", SECOND_NS), ("m", 60 * SECOND_NS))
"""Duration units, longest suffix first among those sharing a last letter ('ms' before 's')."""


def parse_duration(text: str) -> int:
    """'30s', '500ms', '250us', '2m', '1000ns' or a bare int (ns) to int nanoseconds."""
    t = text.strip()
    number, factor = t, 1
    for unit, unit_ns in _UNITS:
        if t.endswith(unit):
            number, factor = t[: -len(unit)], unit_ns
            break
    try:
        value = parse_fixed(number)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 500ms, 250us)") from None
    ns, rest = divmod(value * factor, SCALE)
    if rest or ns < 0:
        raise ValueError(f"not a whole non-negative number of nanoseconds: {text!r}")
    return ns


def _parse_int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"sim spec: {key} must be an integer, not {text!r}") from None


def _parse_prob(key: str, text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise ValueError(f"sim spec: {key} must be a number in [0, 1], not {text!r}") from None
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ValueError(f"sim spec: {key} must be within [0, 1], not {text!r}")
    return p


def _parse_stale(text: str) -> StaleVenue:
    venue, sep, rest = text.partition(":")
    if not sep or not venue or not rest:
        raise ValueError(f"sim spec: stale must be VENUE:DURATION[@START], not {text!r}")
    duration, at, start = rest.partition("@")
    if at:
        return StaleVenue(venue=venue, duration_ns=parse_duration(duration), start_ns=parse_duration(start))
    return StaleVenue(venue=venue, duration_ns=parse_duration(duration))


_KEYS: Final = ("seed", "rate", "depth", "symbols", "venues", "gaps", "spikes", "dups", "stale", "tick")


def from_spec(text: str) -> SimulatorConfig:
    """Parse ``sim`` or ``sim:key=value,...`` (grammar in the module docstring); ValueError when bad."""
    head, sep, body = text.strip().partition(":")
    if head.strip() != "sim":
        raise ValueError(f"sim spec must start with 'sim', got {text!r}")
    options: dict[str, str] = {}
    if sep:
        if not body.strip():
            raise ValueError("sim spec: nothing after 'sim:'")
        for part in body.split(","):
            key, eq, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise ValueError(f"sim spec: expected key=value, got {part!r}")
            if key not in _KEYS:
                raise ValueError(f"sim spec: unknown key {key!r} (known: {', '.join(_KEYS)})")
            if key in options:
                raise ValueError(f"sim spec: key {key!r} given twice")
            options[key] = value
    base = SimulatorConfig()
    seed = _parse_int("seed", options["seed"]) if "seed" in options else base.seed
    rate = _parse_int("rate", options["rate"]) if "rate" in options else base.events_per_second
    depth = _parse_int("depth", options["depth"]) if "depth" in options else base.book_depth
    gaps = _parse_prob("gaps", options["gaps"]) if "gaps" in options else base.gap_probability
    spikes = _parse_prob("spikes", options["spikes"]) if "spikes" in options else base.spike_probability
    dups = _parse_prob("dups", options["dups"]) if "dups" in options else base.duplicate_probability
    stale = _parse_stale(options["stale"]) if "stale" in options else None
    tick = parse_duration(options["tick"]) if "tick" in options else base.tick_ns
    venues = DEFAULT_VENUES
    if "venues" in options:
        by_name = {v.name: v for v in DEFAULT_VENUES}
        picked = [n.strip() for n in options["venues"].split(";")]
        unknown = [n for n in picked if n not in by_name]
        if unknown:
            raise ValueError(f"sim spec: unknown venues {unknown} (known: {', '.join(by_name)})")
        venues = tuple(by_name[n] for n in dict.fromkeys(picked))
    symbols = DEFAULT_SYMBOLS
    if "symbols" in options:
        by_symbol = {s.symbol: s for s in DEFAULT_SYMBOLS}
        picked = [n.strip() for n in options["symbols"].split(";")]
        unknown = [n for n in picked if n not in by_symbol]
        if unknown:
            raise ValueError(f"sim spec: unknown symbols {unknown} (known: {', '.join(by_symbol)})")
        symbols = tuple(by_symbol[n] for n in dict.fromkeys(picked))
    elif "venues" in options:
        symbols = tuple(s for s in DEFAULT_SYMBOLS if any(v.lists(s) for v in venues))
        if not symbols:
            raise ValueError("sim spec: the chosen venues list none of the default symbols")
    return SimulatorConfig(seed=seed, symbols=symbols, venues=venues, events_per_second=rate,
                           book_depth=depth, gap_probability=gaps, spike_probability=spikes,
                           duplicate_probability=dups, stale_venue=stale, tick_ns=tick)
