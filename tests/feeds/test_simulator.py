"""The market simulator: determinism, event invariants, engine consistency, fault injection, the feed.

Long runs are applied to a real ``server.engine.engine.Engine`` with ``ClockTick``s in between, as the
runtime does, so the checks are what a consumer of the service would see.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from feeds.simulator import (
    DEFAULT_SYMBOLS,
    MarketSimulator,
    SimulatorConfig,
    SimulatorFeed,
    StaleVenue,
    SymbolSpec,
    VenueSpec,
    from_spec,
)
from feeds.simulator.config import parse_duration
from server.engine.book import BookStatus
from server.engine.engine import Engine, EngineConfig
from server.engine.events import AssetClass, BookDelta, BookSnapshot, ClockTick, Event, Side, Trade
from server.engine.instruments import InstrumentRegistry
from server.engine.numbers import SCALE
from server.engine.quality import QualityFlag, QualityKind
from server.engine.updates import BookStatusChange, ExcludedVenue

T0 = 1_700_000_000_000_000_000
TICK_NS = 10_000_000


def _run(model: MarketSimulator, steps: int, per_step: int, start: int = T0) -> list[Event]:
    events: list[Event] = []
    now = start
    for _ in range(steps):
        now += TICK_NS
        events.extend(model.step(now, per_step))
    return events


def _strip_times(ev: Event) -> tuple[object, ...]:
    assert not isinstance(ev, ClockTick)
    return tuple(ev)[:-2]


class _Run:
    """A model driven into an engine with a ClockTick after each batch; updates are tallied."""

    def __init__(self, config: SimulatorConfig, engine_config: EngineConfig | None = None) -> None:
        self.model = MarketSimulator(config)
        self.engine = Engine(engine_config, InstrumentRegistry(tuple(self.model.instruments())))
        self.now = T0
        self.status: list[BookStatusChange] = []
        self.flags: list[QualityFlag] = []
        self.events: list[Event] = []

    def advance(self, steps: int, per_step: int, keep: bool = False) -> None:
        for _ in range(steps):
            self.now += TICK_NS
            batch = self.model.step(self.now, per_step)
            if keep:
                self.events.extend(batch)
            out: list[object] = []
            self.engine.apply_batch(batch, out)
            self.engine.apply(ClockTick(self.now), out)
            for u in out:
                if isinstance(u, BookStatusChange):
                    self.status.append(u)
                elif isinstance(u, QualityFlag):
                    self.flags.append(u)

    def assert_books_match(self) -> int:
        """Every synced engine book equals the model's; never crossed. Returns how many were compared."""
        compared = 0
        for venue, symbol in self.model.books():
            book = self.engine.book(venue, symbol)
            assert book is not None, (venue, symbol)
            assert not book.crossed, (venue, symbol)
            if book.synced:
                bids, asks = self.model.book_levels(venue, symbol)
                assert tuple(book.bid_levels()) == bids, (venue, symbol)
                assert tuple(book.ask_levels()) == asks, (venue, symbol)
                assert bids[0][0] < asks[0][0]
                compared += 1
        return compared


# -- determinism ---------------------------------------------------------------------------------------


def test_same_seed_same_events_and_different_seeds_differ() -> None:
    def config(seed: int) -> SimulatorConfig:
        return SimulatorConfig(seed=seed, gap_probability=0.01, spike_probability=0.01,
                               duplicate_probability=0.01)

    a = _run(MarketSimulator(config(7)), 50, 400)
    b = _run(MarketSimulator(config(7)), 50, 400)
    c = _run(MarketSimulator(config(8)), 50, 400)
    assert all(20_000 <= len(x) <= 20_010 for x in (a, b, c))  # a step never splits a move from its arbitrage
    assert a == b
    assert a != c


def test_chunking_changes_only_timestamps() -> None:
    """The market's path depends on the seed and the event count, not on how steps are sized."""
    one = MarketSimulator(SimulatorConfig(seed=3)).step(T0, 6000)
    model = MarketSimulator(SimulatorConfig(seed=3))
    chunks: list[Event] = []
    for i, n in enumerate([1, 7, 500, 13, 2000, 3479]):
        chunks.extend(model.step(T0 + i, n))
    n = min(len(one), len(chunks))
    assert 6000 <= n <= 6010
    assert [_strip_times(e) for e in one[:n]] == [_strip_times(e) for e in chunks[:n]]


# -- event invariants --------------------------------------------------------------------------------------


def test_every_event_is_stamped_on_tick_on_lot_and_in_sequence() -> None:
    model = MarketSimulator(SimulatorConfig(seed=11, duplicate_probability=0.01, spike_probability=0.01))
    specs = {s.symbol: s for s in model.config.symbols}
    last_seq: dict[tuple[str, str], int] = {}
    trade_ids: dict[str, set[str]] = {}
    kinds: Counter[str] = Counter()
    now = T0
    total = 0
    for i in range(100):
        now += TICK_NS
        batch = model.step(now, 500)
        total += len(batch)
        assert total - 500 * (i + 1) in range(0, 10)  # ahead by what a step does not split, never behind
        for ev in batch:
            assert isinstance(ev, BookSnapshot | BookDelta | Trade)
            kinds[type(ev).__name__] += 1
            assert type(ev.ts_event) is int and type(ev.ts_recv) is int
            assert ev.ts_recv == now
            assert now - 10_000_000 < ev.ts_event <= ev.ts_recv
            spec = specs[ev.symbol]
            key = (ev.venue, ev.symbol)
            if isinstance(ev, Trade):
                assert type(ev.price) is int and type(ev.size) is int
                assert ev.price > 0 and ev.price % spec.tick_size == 0
                assert ev.size > 0 and ev.size % spec.lot_size == 0
                assert ev.side in (Side.BUY, Side.SELL)
                seen = trade_ids.setdefault(ev.venue, set())
                if ev.trade_id in seen:  # only an injected duplicate repeats an id
                    kinds["repeated_id"] += 1
                seen.add(ev.trade_id)
                continue
            for price, size in ev.bids + ev.asks:
                assert type(price) is int and type(size) is int
                assert price > 0 and price % spec.tick_size == 0
                assert size >= 0 and size % spec.lot_size == 0
            if isinstance(ev, BookSnapshot):
                assert len(ev.bids) == len(ev.asks) == model.config.book_depth
                assert all(s > 0 for _, s in ev.bids + ev.asks)
                assert [p for p, _ in ev.bids] == sorted((p for p, _ in ev.bids), reverse=True)
                assert [p for p, _ in ev.asks] == sorted(p for p, _ in ev.asks)
                assert ev.bids[0][0] < ev.asks[0][0]
                last_seq[key] = ev.seq
            else:
                assert ev.first_seq == ev.seq == last_seq[key] + 1  # no gaps configured
                assert ev.bids or ev.asks
                last_seq[key] = ev.seq
    assert kinds["BookSnapshot"] == len(model.books())
    assert kinds["BookDelta"] > 10 * kinds["Trade"] / 2 > 0
    assert kinds["repeated_id"] == model.stats.duplicates > 0


@pytest.mark.parametrize("rate", [2_000, 10_000, 100_000])
def test_venues_never_cross_each_other_between_steps(rate: int) -> None:
    """Arbitrage: a move that leaves another venue's quote off the fair value re-quotes it in the same
    step, so between steps (what a consumer's NBBO shows) no venue's bid is above another's ask."""
    model = MarketSimulator(SimulatorConfig(seed=5, events_per_second=rate))
    now = T0
    crossed = 0
    for _ in range(400):
        now += TICK_NS
        model.step(now, max(rate // 500, 1))
        for symbol, venues in model.config.listings():
            tops = [(b, a) for b, a in (model.book_levels(v, symbol) for v in venues) if b and a]
            if not tops:
                continue  # before its first snapshot
            best_bid = max(bids[0][0] for bids, _ in tops)
            best_ask = min(asks[0][0] for _, asks in tops)
            crossed += best_bid > best_ask
    assert crossed == 0
    assert model.stats.arbitrage_moves > 0


def test_instruments_cover_every_listing() -> None:
    model = MarketSimulator()
    registry = InstrumentRegistry(tuple(model.instruments()))
    assert {i.symbol for i in registry.all()} == {s.symbol for s in DEFAULT_SYMBOLS}
    classes = {i.asset_class for i in registry.all()}
    assert classes == {AssetClass.CRYPTO, AssetClass.PERPETUAL, AssetClass.EQUITY, AssetClass.FOREX,
                       AssetClass.COMMODITY}
    assert registry.canonical("coinbase", "BTC-USD") == "BTC/USD"
    assert registry.canonical("binance", "BTCPERP") == "BTC-PERP"
    assert registry.canonical("lmax", "EURUSD") == "EUR/USD"
    perp = registry.get("ETH-PERP")
    assert perp is not None and perp.underlying == "ETH/USD"
    venues = {v for v, _ in model.books()}
    assert len(venues) == 7 and len(model.books()) == 28


# -- the engine's view ---------------------------------------------------------------------------------


def test_long_run_keeps_engine_books_consistent() -> None:
    run = _Run(SimulatorConfig(seed=5))
    run.advance(600, 250)  # 150k events
    assert 150_000 <= run.model.stats.events <= 150_010  # a step never splits a move from its arbitrage
    assert all(s.status == BookStatus.CONSISTENT and s.reason == "snapshot" for s in run.status)
    assert len(run.status) == len(run.model.books())  # one per initial snapshot, nothing else
    assert run.flags == []  # no natural spike, crossed book, late or duplicate trade
    counters = run.engine.counters
    assert counters.sequence_gaps == {} and counters.duplicate_deltas == 0 and counters.unsynced_deltas == 0
    assert run.assert_books_match() == len(run.model.books())
    for symbol, venues in run.model.config.listings():
        nbbo = run.engine.nbbo(symbol)
        assert nbbo is not None and nbbo.bid_price > 0 and nbbo.ask_price > 0, symbol
        assert nbbo.excluded == ()
        if len(venues) > 1:
            assert set(run.engine.venues(symbol)) == set(venues)
        fair = run.model.fair_price(symbol)
        mid = (nbbo.bid_price + nbbo.ask_price) // 2
        assert abs(mid - fair) * 1000 < fair, symbol  # within 0.1% of the fair value
    spot = run.model.fair_price("BTC/USD")
    perp = run.model.fair_price("BTC-PERP")
    assert abs(perp - spot) * 200 < spot  # the perpetual tracks its underlying


def test_injected_gaps_resync_exactly_and_recover_by_snapshot() -> None:
    run = _Run(SimulatorConfig(seed=9, gap_probability=0.002))
    run.advance(400, 250)
    gaps = run.model.stats.gaps
    assert gaps > 20
    resyncs = [s for s in run.status if s.status == BookStatus.AWAITING_RESYNC]
    assert len(resyncs) == gaps == sum(run.engine.counters.sequence_gaps.values())
    assert all(s.reason == "sequence gap" and s.received_seq > s.expected_seq for s in resyncs)
    # Each resync is followed, on the same book, by a snapshot that makes it consistent again.
    state: dict[tuple[str, str], BookStatus] = {}
    recovered = 0
    for s in run.status:
        key = (s.venue, s.symbol)
        if s.status == BookStatus.CONSISTENT:
            if state.get(key) == BookStatus.AWAITING_RESYNC:
                recovered += 1
            assert s.reason == "snapshot"
        else:
            assert s.status == BookStatus.AWAITING_RESYNC and state.get(key) == BookStatus.CONSISTENT
        state[key] = s.status
    waiting = sum(1 for st in state.values() if st == BookStatus.AWAITING_RESYNC)
    assert recovered + waiting == gaps
    assert waiting < 5
    assert run.engine.counters.unsynced_deltas == 0  # the venue sends no deltas before the snapshot
    run.assert_books_match()


def test_injected_duplicates_are_counted_by_the_engine() -> None:
    run = _Run(SimulatorConfig(seed=4, duplicate_probability=0.01))
    run.advance(200, 250)
    dups = run.model.stats.duplicates
    assert dups > 20
    assert run.engine.counters.duplicate_trades == dups
    assert [f.kind for f in run.flags] == [QualityKind.DUPLICATE_TRADE] * dups


def test_injected_spikes_are_flagged_by_the_engine() -> None:
    run = _Run(SimulatorConfig(seed=6, spike_probability=0.005), EngineConfig())
    run.advance(400, 250, keep=True)
    spikes = run.model.stats.spikes
    assert spikes > 20
    flagged = [f for f in run.flags if f.kind == QualityKind.PRICE_SPIKE]
    assert len(flagged) == len(run.flags) == spikes
    for f in flagged:  # a 10x print against the median of that venue's recent trades
        assert 9 * f.reference < f.value < 11 * f.reference
    run.assert_books_match()


def test_stale_venue_is_left_out_of_nbbo_and_comes_back() -> None:
    stale = StaleVenue(venue="kraken", duration_ns=3_000_000_000, start_ns=1_000_000_000)
    run = _Run(SimulatorConfig(seed=2, stale_venue=stale), EngineConfig(stale_after_ns=1_000_000_000))
    run.advance(100, 40, keep=True)  # 1 s: everyone talks
    assert run.model.silent_venue == ""
    nbbo = run.engine.nbbo("BTC/USD")
    assert nbbo is not None and nbbo.excluded == ()
    run.events.clear()
    run.advance(250, 40, keep=True)  # 1 s .. 3.5 s: kraken silent, stale after 2 s
    assert run.model.silent_venue == "kraken"
    assert not any(e.venue == "kraken" for e in run.events if not isinstance(e, ClockTick))
    for symbol in ("BTC/USD", "ETH-PERP", "SOL/USD"):
        nbbo = run.engine.nbbo(symbol)
        assert nbbo is not None
        assert ExcludedVenue("kraken", "stale") in nbbo.excluded
        assert "kraken" not in (nbbo.bid_venue, nbbo.ask_venue)
        assert nbbo.bid_price and nbbo.ask_price
    nbbo = run.engine.nbbo("AAPL")
    assert nbbo is not None and nbbo.excluded == ()
    run.events.clear()
    run.advance(100, 40, keep=True)  # back at 4 s: snapshots first, then business as usual
    assert run.model.silent_venue == ""
    kraken = [e for e in run.events if not isinstance(e, ClockTick) and e.venue == "kraken"]
    books = [b for b in run.model.books() if b[0] == "kraken"]
    # A follow-up delta held back when kraken went silent may come first; then one snapshot per book.
    snapped = {(e.venue, e.symbol) for e in kraken[: len(books) + 2] if isinstance(e, BookSnapshot)}
    assert snapped == set(books)
    assert any(isinstance(e, BookDelta) for e in kraken)
    nbbo = run.engine.nbbo("BTC/USD")
    assert nbbo is not None and nbbo.excluded == ()
    assert not [s for s in run.status if s.status != BookStatus.CONSISTENT]
    run.assert_books_match()


def test_generation_speed_sanity() -> None:
    """A loose floor (the report's figure is measured separately); catches accidental slowness."""
    model = MarketSimulator(SimulatorConfig(seed=1, events_per_second=100_000))
    model.step(T0, 1000)
    start = time.perf_counter()
    n = sum(len(model.step(T0 + i, 10_000)) for i in range(10))
    rate = n / (time.perf_counter() - start)
    assert rate > 30_000


# -- the asyncio feed ------------------------------------------------------------------------------------


class _ListSink:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []

    async def put(self, batch: list[Event], /) -> None:
        self.batches.append(batch)


def test_feed_delivers_batches_at_the_rate_and_stops_on_cancel() -> None:
    feed = SimulatorFeed(SimulatorConfig(seed=1, events_per_second=5_000))
    sink = _ListSink()
    books = len(feed.model.books())

    async def main() -> tuple[float, bool]:
        assert not feed.warm
        task = asyncio.create_task(feed.run(sink))
        start = time.monotonic()
        await asyncio.sleep(0.3)
        elapsed = time.monotonic() - start
        warm = feed.warm
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        return elapsed, warm

    wall_before = time.time_ns()
    elapsed, warm = asyncio.run(main())
    assert warm
    first = sink.batches[0]
    assert len(first) == books and all(isinstance(e, BookSnapshot) for e in first)
    paced = sum(len(b) for b in sink.batches[1:])
    expected = elapsed * 5_000
    assert 0.6 * expected <= paced <= 1.1 * expected + 60
    tick_s = feed.config.tick_ns / 1e9  # 2 ms by default
    assert 10 <= len(sink.batches) <= elapsed / tick_s + 3  # one batch per tick at most
    stamps = [e.ts_recv for b in sink.batches for e in b if not isinstance(e, ClockTick)]
    assert stamps == sorted(stamps)
    assert wall_before - 50_000_000 <= stamps[0] and stamps[-1] <= time.time_ns()
    delivered = len(sink.batches)
    asyncio.run(asyncio.sleep(0.03))
    assert len(sink.batches) == delivered  # nothing runs after the cancel


class _SlowSink(_ListSink):
    """Holds the feed back: the first paced batch is taken only after ``hold_s``."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s = hold_s

    async def put(self, batch: list[Event], /) -> None:
        if len(self.batches) == 1:
            await asyncio.sleep(self.hold_s)
        self.batches.append(batch)


def test_a_held_back_feed_catches_up_in_bounded_batches() -> None:
    """A backlog (here 0.2 s at 50,000 events/s, within max_lag_seconds) goes out in batches of at most
    max_batch_events, none of it skipped: one long step would hold the event loop for its whole length."""
    feed = SimulatorFeed(SimulatorConfig(seed=1, events_per_second=50_000), max_batch_events=300)
    sink = _SlowSink(hold_s=0.2)

    async def main() -> None:
        task = asyncio.create_task(feed.run(sink))
        await asyncio.sleep(0.4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    paced = sink.batches[1:]
    # The backlog was cut at the bound (a step may add the few events that belong with its last one).
    assert 300 <= max(len(b) for b in paced) <= 310
    assert sum(1 for b in paced if len(b) >= 300) >= 5
    assert feed.skipped == 0


def test_feed_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="tick_seconds"):
        SimulatorFeed(tick_seconds=0)
    with pytest.raises(ValueError, match="max_lag_seconds"):
        SimulatorFeed(tick_seconds=0.1, max_lag_seconds=0.01)
    with pytest.raises(ValueError, match="max_batch_events"):
        SimulatorFeed(max_batch_events=0)


# -- configuration ------------------------------------------------------------------------------------


def test_from_spec_parses() -> None:
    assert from_spec("sim") == SimulatorConfig()
    cfg = from_spec("sim:seed=7,rate=5000,symbols=BTC/USD;ETH/USD,gaps=0.001")
    assert cfg.seed == 7 and cfg.events_per_second == 5000 and cfg.gap_probability == 0.001
    assert [s.symbol for s in cfg.symbols] == ["BTC/USD", "ETH/USD"]
    cfg = from_spec(" sim: venues=nasdaq;lmax , depth=5, spikes=0.01, dups=0.02, stale=lmax:2s@500ms ")
    assert [v.name for v in cfg.venues] == ["nasdaq", "lmax"]
    assert [s.symbol for s in cfg.symbols] == ["AAPL", "MSFT", "EUR/USD", "USD/JPY", "XAU/USD"]
    assert cfg.book_depth == 5 and cfg.spike_probability == 0.01 and cfg.duplicate_probability == 0.02
    assert cfg.stale_venue == StaleVenue(venue="lmax", duration_ns=2_000_000_000, start_ns=500_000_000)
    assert from_spec("sim:stale=kraken:30s").stale_venue == StaleVenue(venue="kraken", duration_ns=30 * SCALE)
    assert parse_duration("1.5ms") == 1_500_000 and parse_duration("2m") == 120 * SCALE
    assert parse_duration("250us") == 250_000 and parse_duration("42") == 42
    assert from_spec("sim").tick_ns == 2_000_000
    assert from_spec("sim:tick=500us").tick_ns == 500_000
    assert SimulatorFeed(from_spec("sim:tick=20ms")).tick_seconds == 0.02


@pytest.mark.parametrize(("spec", "message"), [
    ("simulator", "start with 'sim'"),
    ("replay:x=1", "start with 'sim'"),
    ("sim:", "nothing after"),
    ("sim:seed", "key=value"),
    ("sim:seed=", "key=value"),
    ("sim:speed=3", "unknown key"),
    ("sim:seed=1,seed=2", "given twice"),
    ("sim:seed=x", "seed must be an integer"),
    ("sim:rate=0", "events_per_second"),
    ("sim:rate=-5", "events_per_second"),
    ("sim:depth=0", "book_depth"),
    ("sim:gaps=1.5", "gaps must be within"),
    ("sim:gaps=nan", "gaps must be within"),
    ("sim:dups=lots", "dups must be a number"),
    ("sim:symbols=BTC/USD;DOGE/USD", "unknown symbols"),
    ("sim:venues=nyse", "unknown venues"),
    ("sim:venues=nasdaq,symbols=BTC/USD", "listed on no venue"),
    ("sim:stale=kraken", "VENUE:DURATION"),
    ("sim:tick=50us", "tick_ns must be"),
    ("sim:tick=2s", "tick_ns must be"),
    ("sim:tick=soon", "not a duration"),
    ("sim:stale=kraken:soon", "not a duration"),
    ("sim:stale=kraken:0s", "duration must be > 0"),
    ("sim:stale=mtgox:5s", "not a venue"),
])
def test_from_spec_rejects(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_spec(spec)


def test_config_validation() -> None:
    with pytest.raises(TypeError):
        SimulatorConfig(sede=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        SimulatorConfig(1)  # type: ignore[call-arg]
    bad: list[dict[str, object]] = [
        {"seed": 1.5}, {"seed": True}, {"events_per_second": 0}, {"events_per_second": 10**9},
        {"book_depth": 0}, {"gap_probability": -0.1}, {"spike_probability": 2.0},
        {"trade_probability": 1.0}, {"symbols": ()}, {"venues": ()},
        {"symbols": (DEFAULT_SYMBOLS[0], DEFAULT_SYMBOLS[0])},
        {"stale_venue": StaleVenue(venue="nowhere", duration_ns=1)},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            SimulatorConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tick_size"):
        SymbolSpec(symbol="X", asset_class=AssetClass.EQUITY, base="X", quote="USD", price=100 * SCALE,
                   tick_size=SCALE // 1000, lot_size=SCALE, price_decimals=2, size_decimals=0, volatility=0.2)
    with pytest.raises(ValueError, match="symbol"):
        SymbolSpec(symbol="A,B", asset_class=AssetClass.EQUITY, base="X", quote="USD", price=100 * SCALE,
                   tick_size=SCALE // 100, lot_size=SCALE, price_decimals=2, size_decimals=0, volatility=0.2)
    with pytest.raises(ValueError, match="latency"):
        VenueSpec(name="v", asset_classes=frozenset({AssetClass.EQUITY}), latency_ns=-1)
    with pytest.raises(ValueError, match="symbol_style"):
        VenueSpec(name="v", asset_classes=frozenset({AssetClass.EQUITY}), symbol_style="weird")
