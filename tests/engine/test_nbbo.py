"""Property tests: NBBO, consolidated book and depth heatmap against brute force over the venue books."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.engine import Engine, EngineConfig
from server.engine.events import NO_SEQUENCE, BookDelta, BookReset, BookSnapshot, ClockTick, Level, Quote
from server.engine.updates import Nbbo

VENUES = ("v1", "v2", "v3")
STALE = 100
prices = st.integers(min_value=90, max_value=110)
sizes = st.integers(min_value=0, max_value=3)
levels = st.lists(st.tuples(prices, sizes), max_size=5).map(tuple)

event = st.one_of(
    st.tuples(st.just("snap"), st.sampled_from(VENUES), levels, levels, st.integers(0, 60)),
    st.tuples(st.just("delta"), st.sampled_from(VENUES), levels, levels, st.integers(0, 60)),
    st.tuples(st.just("quote"), st.sampled_from(VENUES), prices, sizes, prices, sizes, st.integers(0, 60)),
    st.tuples(st.just("reset"), st.sampled_from(VENUES), st.integers(0, 60)),
    st.tuples(st.just("tick"), st.integers(0, 60)),
)


def _brute(engine: Engine, now: int, stale: int) -> tuple[int, int, int, int, set[str]]:
    best_bid = best_ask = 0
    excluded: set[str] = set()
    fresh = []
    for v in engine.venues("S"):
        b = engine.book(v, "S")
        assert b is not None
        if not b.synced or now - b.last_ts_recv > stale:
            excluded.add(v)
            continue
        fresh.append(b)
    bids = [max(b.bids) for b in fresh if b.bids]
    asks = [min(b.asks) for b in fresh if b.asks]
    best_bid = max(bids, default=0)
    best_ask = min(asks, default=0)
    bid_size = sum(b.bids.get(best_bid, 0) for b in fresh)
    ask_size = sum(b.asks.get(best_ask, 0) for b in fresh)
    return best_bid, bid_size, best_ask, ask_size, excluded


def _apply(engine: Engine, e: tuple[object, ...], now: int, out: list[object]) -> None:
    kind, venue = e[0], str(e[1])
    if kind == "snap":
        engine.apply(BookSnapshot(venue, "S", NO_SEQUENCE, e[2], e[3], now, now), out)  # type: ignore[arg-type]
    elif kind == "delta":
        engine.apply(BookDelta(venue, "S", NO_SEQUENCE, NO_SEQUENCE, e[2], e[3], now, now),  # type: ignore[arg-type]
                     out)
    elif kind == "quote":
        engine.apply(Quote(venue, "S", e[2], e[3], e[4], e[5], now, now), out)  # type: ignore[arg-type]
    elif kind == "reset":
        engine.apply(BookReset(venue, "S", "test", now, now), out)
    else:
        engine.apply(ClockTick(now), out)


def _check(engine: Engine, now: int) -> None:
    nbbo = engine.nbbo("S")
    assert nbbo is not None
    bb, bs, ba, as_, excluded = _brute(engine, now, engine.config.stale_after_ns)
    assert (nbbo.bid_price, nbbo.bid_size, nbbo.ask_price, nbbo.ask_size) == (bb, bs, ba, as_)
    assert {x.venue for x in nbbo.excluded} == excluded
    assert nbbo.locked == bool(bb and ba and bb == ba)
    assert nbbo.crossed == bool(bb and ba and bb > ba)
    if bb:
        venue_book = engine.book(nbbo.bid_venue, "S")
        assert venue_book is not None and venue_book.bids.get(bb)
    if ba:
        venue_book = engine.book(nbbo.ask_venue, "S")
        assert venue_book is not None and venue_book.asks.get(ba)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, min_size=1, max_size=60))
def test_nbbo_matches_brute_force_after_every_event(events: list[tuple[object, ...]]) -> None:
    """Without staleness, the NBBO equals brute force after every event, and is emitted only on change."""
    engine = Engine(EngineConfig(stale_after_ns=10**18))
    now = 0
    previous: Nbbo | None = None
    for e in events:
        now += int(e[-1])  # type: ignore[call-overload]
        out: list[object] = []
        _apply(engine, e, now, out)
        emitted = [u for u in out if isinstance(u, Nbbo)]
        assert len(emitted) <= 1
        if engine.nbbo("S") is None:
            assert not emitted
            continue
        _check(engine, now)
        if emitted:
            assert emitted[0] == engine.nbbo("S")
            if previous is not None:
                assert emitted[0][:10] != previous[:10], "an NBBO update is emitted only on change"
            previous = emitted[0]
        else:
            assert engine.nbbo("S") == previous


@settings(max_examples=300, deadline=None)
@given(st.lists(event, min_size=1, max_size=60))
def test_nbbo_excludes_stale_venues_on_every_tick(events: list[tuple[object, ...]]) -> None:
    """With staleness, every clock tick re-evaluates the venues and the NBBO equals brute force."""
    engine = Engine(EngineConfig(stale_after_ns=STALE))
    now = 0
    for e in events:
        now += int(e[-1])  # type: ignore[call-overload]
        out: list[object] = []
        _apply(engine, e, now, out)
        if e[0] == "tick" and engine.nbbo("S") is not None:
            _check(engine, now)


def _levels(n: int, start: int, step: int) -> tuple[Level, ...]:
    return tuple((start + i * step, 1 + i) for i in range(n))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(levels, levels), min_size=1, max_size=3), st.integers(1, 8), st.integers(1, 7))
def test_consolidated_and_heatmap_match_brute_force(
    books: list[tuple[tuple[Level, ...], tuple[Level, ...]]], depth: int, bucket: int
) -> None:
    engine = Engine()
    out: list[object] = []
    for i, (bids, asks) in enumerate(books):
        engine.apply(BookSnapshot(f"v{i}", "S", 1, bids, asks, 1, 1), out)
    merged_bids: dict[int, dict[str, int]] = {}
    merged_asks: dict[int, dict[str, int]] = {}
    for i, (bids, asks) in enumerate(books):
        for p, s in dict(bids).items():
            if s:
                merged_bids.setdefault(p, {})[f"v{i}"] = s
        for p, s in dict(asks).items():
            if s:
                merged_asks.setdefault(p, {})[f"v{i}"] = s
    cons = engine.consolidated_book("S", depth)
    want_bids = sorted(merged_bids.items(), reverse=True)[:depth]
    want_asks = sorted(merged_asks.items())[:depth]
    assert [(lv.price, lv.size, dict(lv.venues)) for lv in cons.bids] == [
        (p, sum(v.values()), v) for p, v in want_bids]
    assert [(lv.price, lv.size, dict(lv.venues)) for lv in cons.asks] == [
        (p, sum(v.values()), v) for p, v in want_asks]

    heat = engine.depth_heatmap("S", bucket, depth)
    bid_buckets: dict[int, int] = {}
    for p, v in merged_bids.items():
        bid_buckets[p // bucket * bucket] = bid_buckets.get(p // bucket * bucket, 0) + sum(v.values())
    ask_buckets: dict[int, int] = {}
    for p, v in merged_asks.items():
        ask_buckets[p // bucket * bucket] = ask_buckets.get(p // bucket * bucket, 0) + sum(v.values())
    assert [(b.price_start, b.size) for b in heat.bids] == sorted(bid_buckets.items(), reverse=True)[:depth]
    assert [(b.price_start, b.size) for b in heat.asks] == sorted(ask_buckets.items())[:depth]


def test_stale_venue_excluded_on_tick() -> None:
    engine = Engine(EngineConfig(stale_after_ns=10))
    out: list[object] = []
    engine.apply(BookSnapshot("v1", "S", 1, _levels(2, 100, -1), _levels(2, 105, 1), 0, 0), out)
    engine.apply(BookSnapshot("v2", "S", 1, _levels(2, 101, -1), _levels(2, 106, 1), 5, 5), out)
    nbbo = engine.nbbo("S")
    assert nbbo is not None and nbbo.bid_venue == "v2" and nbbo.ask_venue == "v1"
    out.clear()
    engine.apply(ClockTick(12), out)  # v1 is 12 old (> 10), v2 is 7 old
    nbbo = engine.nbbo("S")
    assert nbbo is not None and nbbo.ask_venue == "v2" and nbbo.ask_price == 106
    assert [x.venue for x in nbbo.excluded] == ["v1"] and out == [nbbo]


def test_derived_venues_stay_out_of_nbbo_consolidation_and_recent_trades() -> None:
    """A composite venue (source failover) repeats its source's data: it is kept, but never counted twice."""
    from server.engine.events import Side, Trade

    engine = Engine(EngineConfig(stale_after_ns=10**12, derived_venues=frozenset({"primary"})))
    out: list[object] = []
    for venue in ("v1", "primary"):
        engine.apply(BookSnapshot(venue, "S", 1, ((100, 4),), ((101, 2),), 1, 1), out)
        engine.apply(Trade(venue, "S", "t1", 100, 1, Side.BUY, 2, 2), out)
    nbbo = engine.nbbo("S")
    assert nbbo is not None and (nbbo.bid_size, nbbo.ask_size) == (4, 2)
    consolidated = engine.consolidated_book("S", 5)
    assert [lv.size for lv in consolidated.bids] == [4]
    assert engine.venues("S") == ["primary", "v1"]
    assert engine.book("primary", "S") is not None
    assert [t.venue for t in engine.recent_trades("S")] == ["v1"]
    assert [t.venue for t in engine.recent_trades("S", venue="primary")] == ["primary"]
    assert engine.depth_heatmap("S", 1, 1).bids[0].size == 4
