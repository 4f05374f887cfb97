"""Source priority and failover (``server.engine.sources``): specs, switches, and a property test of the
router against a simple reference model, run through a real ``Engine``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.book import BookStatus
from server.engine.candles import CandleConfig, Interval
from server.engine.engine import Engine, EngineConfig
from server.engine.events import BookDelta, BookSnapshot, ClockTick, Event, Level, Side, Trade
from server.engine.quality import QualityFlag, QualityKind
from server.engine.sources import SourcePolicy, SourceRouter, parse_duration, parse_source_spec
from server.runtime import engine_book_reader

SEC = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_040 * SEC
SYM = "BTC/USD"
COMP = "primary"


# -- specs ---------------------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("500ms") == 500 * MS
    assert parse_duration("2s") == 2 * SEC
    assert parse_duration("1m") == 60 * SEC
    assert parse_duration("250us") == 250_000
    assert parse_duration("10ns") == 10
    assert parse_duration("750") == 750 * MS
    for bad in ("", "ms", "1.5s", "-1s", "1h", "x"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_parse_source_spec() -> None:
    p = parse_source_spec("BTC/USD=mx:500ms,binance,kraken:2s@consolidated", default_silence_ns=SEC,
                          hold_ns=3 * SEC)
    assert p == SourcePolicy(symbol="BTC/USD", sources=("mx", "binance", "kraken"),
                             silence_ns=(500 * MS, SEC, 2 * SEC), composite="consolidated", hold_ns=3 * SEC)
    q = parse_source_spec(" ETH-PERP = a , b ")
    assert q.sources == ("a", "b") and q.composite == "primary" and q.silence_ns == (SEC, SEC)
    assert q.backfill_window_ns == 3 * SEC


@pytest.mark.parametrize("spec", [
    "", "BTC/USD", "BTC/USD=", "=a,b", "BTC/USD=a,a", "BTC/USD=a,b@a", "BTC/USD=a:0ms", "BTC/USD=a:1x",
    "BTC/USD=a,,b", "BTC/USD=a,b@", "BTC USD=a",
])
def test_bad_source_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_source_spec(spec)


def test_router_refuses_two_policies_for_one_symbol() -> None:
    with pytest.raises(ValueError, match="two source policies"):
        SourceRouter([parse_source_spec("S=a,b"), parse_source_spec("S=c,d")])


# -- a harness: engine + router, as the runtime wires them ----------------------------------------------


class Harness:
    def __init__(self, *policies: SourcePolicy) -> None:
        self.engine = Engine(EngineConfig(trade_spikes=None, quote_spikes=None,
                                          candles=CandleConfig(intervals=(Interval.S1, Interval.M1))))
        self.router = SourceRouter(policies, engine_book_reader(self.engine))
        self.down: set[str] = set()
        self.flags: list[QualityFlag] = []
        self.derived: list[Event] = []
        self.out: list[object] = []

    def apply(self, batch: list[Event]) -> list[object]:
        out: list[object] = []
        self.engine.apply_batch(batch, out)
        derived: list[Event] = []
        notes: list[QualityFlag] = []
        if len(batch) == 1 and type(batch[0]) is ClockTick:
            self.router.tick(batch[0].ts, self.down, derived, notes)
        else:
            self.router.route(out, 0, derived, notes)
        out.extend(notes)
        self.engine.apply_batch(derived, out)
        self.flags.extend(notes)
        self.derived.extend(derived)
        self.out.extend(out)
        return out

    def tick(self, ts: int) -> list[object]:
        return self.apply([ClockTick(ts)])

    def levels(self, venue: str) -> tuple[list[Level], list[Level]] | None:
        book = self.engine.book(venue, SYM)
        if book is None or not book.synced:
            return None
        return book.bid_levels(), book.ask_levels()


def snapshot(venue: str, seq: int, ts: int, mid: int = 100) -> BookSnapshot:
    return BookSnapshot(venue, SYM, seq, ((mid - 1, 5), (mid - 2, 7)), ((mid + 1, 4), (mid + 2, 6)), ts, ts)


def delta(venue: str, seq: int, ts: int, bid: Level) -> BookDelta:
    return BookDelta(venue, SYM, seq, seq, (bid,), (), ts, ts)


def trade(venue: str, tid: str, ts: int, price: int = 100) -> Trade:
    return Trade(venue, SYM, tid, price, 1, Side.BUY, ts, ts)


POLICY = SourcePolicy(symbol=SYM, sources=("a", "b"), silence_ns=(300 * MS, 300 * MS), hold_ns=SEC)


def test_failover_when_the_primary_goes_silent_and_restore_after_the_hold_down() -> None:
    h = Harness(POLICY)
    h.apply([snapshot("a", 1, T0, 100), snapshot("b", 1, T0, 200), trade("a", "1", T0), trade("b", "1", T0)])
    assert h.router.active(SYM) == ""  # nothing chosen before the first tick
    h.tick(T0 + 50 * MS)
    assert h.router.active(SYM) == "a"
    (start,) = h.flags
    assert start.kind is QualityKind.SOURCE_RESTORED and start.venue == COMP and start.value == 0
    assert start.detail.startswith("none -> a (start)")
    assert h.levels(COMP) == h.levels("a")
    # a speaks until +100 ms, b keeps going; a's silence is judged at ticks.
    h.apply([trade("a", "2", T0 + 100 * MS), delta("a", 2, T0 + 100 * MS, (99, 1))])
    h.apply([trade("b", "2", T0 + 150 * MS), delta("b", 2, T0 + 200 * MS, (199, 9))])
    h.tick(T0 + 390 * MS)
    assert h.router.active(SYM) == "a"  # 290 ms of silence: within the threshold
    h.apply([trade("b", "3", T0 + 395 * MS)])
    h.tick(T0 + 410 * MS)
    assert h.router.active(SYM) == "b"
    fail = h.flags[-1]
    assert fail.kind is QualityKind.SOURCE_FAILOVER and fail.symbol == SYM and fail.venue == COMP
    assert (fail.ts_event, fail.ts_recv, fail.value, fail.reference) == (
        T0 + 100 * MS, T0 + 410 * MS, 310 * MS, 300 * MS)
    assert fail.detail.startswith("a -> b (silent)") and "2 trades of the gap replayed" in fail.detail
    assert h.levels(COMP) == h.levels("b")
    composite_trades = [t.trade_id for t in h.engine.recent_trades(SYM, venue=COMP)]
    # a:1 came before the first choice; b's trades received in the gap are replayed
    assert composite_trades == ["a:2", "b:2", "b:3"]
    (candle,) = h.engine.candles(COMP, SYM, Interval.S1)  # one candle holds them all
    assert candle.trade_count == 3
    # a comes back (a reconnect: a new snapshot); it takes over only after a full hold-down
    h.apply([snapshot("a", 10, T0 + 500 * MS, 101)])
    h.tick(T0 + 600 * MS)
    h.apply([trade("a", "3", T0 + 700 * MS), trade("b", "4", T0 + 700 * MS), delta("a", 11, T0 + 900 * MS, (98, 2))])
    h.apply([trade("a", "4", T0 + 1100 * MS), trade("b", "5", T0 + 1100 * MS), trade("a", "5", T0 + 1400 * MS),
             trade("b", "6", T0 + 1400 * MS)])
    h.tick(T0 + 1450 * MS)
    assert h.router.active(SYM) == "b"  # a healthy for 950 ms < 1 s
    h.tick(T0 + 1500 * MS)
    assert h.router.active(SYM) == "a"
    back = h.flags[-1]
    assert back.kind is QualityKind.SOURCE_RESTORED and back.detail.startswith("b -> a (recovered)")
    assert back.reference == SEC
    assert h.levels(COMP) == h.levels("a")
    states = h.router.states()
    assert [(s.active, s.failovers, s.restores) for s in states] == [("a", 1, 1)]
    assert [(s.from_source, s.to_source, s.reason) for s in h.router.switches] == [
        ("", "a", "start"), ("a", "b", "silent"), ("b", "a", "recovered")]
    # the composite's book never saw a gap: its sequence is its own
    assert not h.engine.counters.sequence_gaps.get((COMP, SYM))


def test_a_resync_of_the_active_source_fails_over_at_the_end_of_the_batch() -> None:
    h = Harness(POLICY)
    h.apply([snapshot("a", 1, T0), snapshot("b", 1, T0, 200)])
    h.tick(T0 + 10 * MS)
    out = h.apply([delta("a", 5, T0 + 20 * MS, (99, 1)), delta("b", 2, T0 + 20 * MS, (198, 3))])
    assert h.router.active(SYM) == "b"
    assert h.flags[-1].detail.startswith("a -> b (resync)")
    assert h.levels(COMP) == h.levels("b")
    assert any(isinstance(u, BookSnapshot) and u.venue == COMP for u in out)


def test_a_feed_that_says_it_is_down_is_failed_over_at_the_next_tick() -> None:
    h = Harness(POLICY)
    h.apply([snapshot("a", 1, T0), snapshot("b", 1, T0, 200)])
    h.tick(T0 + 10 * MS)
    h.down = {"a"}
    h.apply([trade("a", "1", T0 + 15 * MS)])
    h.tick(T0 + 20 * MS)
    assert h.router.active(SYM) == "b" and h.flags[-1].detail.startswith("a -> b (down)")


def test_no_healthy_source_resets_the_composite_book_and_any_source_is_taken_back_at_once() -> None:
    h = Harness(POLICY)
    h.apply([snapshot("a", 1, T0), snapshot("b", 1, T0, 200)])
    h.tick(T0 + 10 * MS)
    h.tick(T0 + 400 * MS)
    assert h.router.active(SYM) == ""
    lost = h.flags[-1]
    assert lost.kind is QualityKind.SOURCE_FAILOVER and lost.detail.startswith("a -> none (silent)")
    book = h.engine.book(COMP, SYM)
    assert book is not None and book.status is BookStatus.AWAITING_RESYNC
    # b speaks again: taken at the end of that batch, without waiting for a tick or a hold-down
    h.apply([trade("b", "1", T0 + 500 * MS), delta("b", 2, T0 + 500 * MS, (198, 1))])
    assert h.router.active(SYM) == "b"
    assert h.flags[-1].kind is QualityKind.SOURCE_RESTORED
    assert h.levels(COMP) == h.levels("b")
    assert [t.trade_id for t in h.engine.recent_trades(SYM, venue=COMP)] == ["b:1"]


def test_a_source_without_a_book_leaves_the_composite_book_awaiting_a_snapshot() -> None:
    h = Harness(POLICY)
    h.apply([snapshot("a", 1, T0), trade("b", "1", T0)])
    h.tick(T0 + 10 * MS)
    h.apply([trade("b", "2", T0 + 300 * MS)])
    h.tick(T0 + 320 * MS)
    assert h.router.active(SYM) == "b" and "book reset: b has no consistent book" in h.flags[-1].detail
    book = h.engine.book(COMP, SYM)
    assert book is not None and not book.synced
    h.apply([snapshot("b", 7, T0 + 330 * MS, 300)])  # b's first snapshot goes through to the composite
    assert h.levels(COMP) == h.levels("b")


# -- property test against a reference model ----------------------------------------------------------

SOURCES = ("a", "b", "c")
SILENCE = (300 * MS, 500 * MS, 400 * MS)
HOLD = 250 * MS


@dataclass
class RefSource:
    """What the reference knows of a source: the history of its accepted events and health changes."""

    times: list[int] = field(default_factory=list)
    synced: bool = False
    resync: bool = False
    resync_cleared: int = 0
    down: bool = False
    down_cleared: int = 0

    def healthy(self, now: int, silence: int) -> bool:
        return bool(self.times) and now - self.times[-1] <= silence and not self.resync and not self.down

    def since(self, silence: int) -> int:
        start = self.times[0] if self.times else 0
        for prev, cur in zip(self.times, self.times[1:], strict=False):
            if cur - prev > silence:
                start = cur
        return max(start, self.resync_cleared, self.down_cleared)


def _name(i: int | None) -> str:
    return SOURCES[i] if i is not None else ""


@dataclass
class Reference:
    sources: list[RefSource] = field(default_factory=lambda: [RefSource() for _ in SOURCES])
    active: int | None = None
    ever: bool = False
    now: int = 0
    switches: list[tuple[str, str]] = field(default_factory=list)

    def evaluate(self) -> None:
        now = self.now
        healthy = [s.healthy(now, SILENCE[i]) for i, s in enumerate(self.sources)]
        new = self.active
        if self.active is not None and healthy[self.active]:
            for i in range(self.active):
                if healthy[i] and now - self.sources[i].since(SILENCE[i]) >= HOLD:
                    new = i
                    break
        else:
            new = next((i for i, ok in enumerate(healthy) if ok), None)
        if new != self.active:
            self.switches.append((_name(self.active), _name(new)))
            self.active = new
            self.ever = self.ever or new is not None


KINDS = st.sampled_from(["trade", "trade", "delta", "delta", "delta", "delta", "gap", "snap", "snap"])
rounds = st.tuples(
    st.integers(1, 120),  # ms from the previous round
    st.tuples(KINDS, KINDS, KINDS),  # what each source sends (unless muted)
    st.sampled_from([None, None, None, None, 0, 1, 2]),  # a source muted or unmuted
    st.sampled_from([None, None, None, None, None, None, 0, 1, 2]),  # a source's feed down or up
    st.booleans(),  # one batch for the round's events, or one batch each
    st.sampled_from([True, True, True, False]),  # a clock tick ends the round
)
"""A schedule is a list of rounds: every source that is not muted sends one event, then usually a tick."""


@settings(max_examples=250, deadline=None)
@given(st.lists(rounds, min_size=1, max_size=150), st.randoms(use_true_random=False))
def test_router_matches_the_reference_model(
        steps: list[tuple[int, tuple[str, str, str], int | None, int | None, bool, bool]], rnd: random.Random,
) -> None:
    policy = SourcePolicy(symbol=SYM, sources=SOURCES, silence_ns=SILENCE, hold_ns=HOLD)
    h = Harness(policy)
    ref = Reference()
    t = T0
    seqs = [0, 0, 0]
    tids = [0, 0, 0]
    synced = [False, False, False]
    source_trades: set[str] = set()
    forwarded: list[str] = []
    batch: list[Event] = []
    changes: list[tuple[int, str, int]] = []
    muted: set[int] = set()

    def check() -> None:
        assert h.router.active(SYM) == (SOURCES[ref.active] if ref.active is not None else "")
        if ref.active is not None and h.levels(SOURCES[ref.active]) is not None:
            assert h.levels(COMP) == h.levels(SOURCES[ref.active])

    def flush() -> None:
        if not batch:
            return
        active_before = ref.active
        out = h.apply(list(batch))
        had_event = active_resynced = False
        for i, what, ts in changes:
            s = ref.sources[i]
            if what == "event":
                s.times.append(ts)
                ref.now = max(ref.now, ts)
                had_event = True
            elif what == "resync":
                active_resynced = active_resynced or (not s.resync and i == ref.active)
                s.resync = True
            elif s.resync:  # "clear": a snapshot ended a resync
                s.resync = False
                s.resync_cleared = ts
        if active_resynced or (ref.active is None and ref.ever and had_event):
            ref.evaluate()
        if active_before is not None:  # the active source's accepted trades are forwarded
            forwarded.extend(f"{u.venue}:{u.trade_id}" for u in out
                             if type(u) is Trade and u.venue == SOURCES[active_before])
        batch.clear()
        changes.clear()
        check()

    for dt, kinds, mute, down, one_batch, ticks in steps:
        if mute is not None:
            muted.symmetric_difference_update({mute})
        if down is not None:
            h.down.symmetric_difference_update({SOURCES[down]})
        for i, kind in enumerate(kinds):
            t += dt * MS // 3
            if i in muted:
                continue
            if not one_batch:
                flush()
            venue = SOURCES[i]
            if kind == "trade":
                tids[i] += 1
                batch.append(trade(venue, str(tids[i]), t, 100 + rnd.randrange(5)))
                source_trades.add(f"{venue}:{tids[i]}")
                changes.append((i, "event", t))
            elif kind == "snap":
                seqs[i] += 1
                batch.append(snapshot(venue, seqs[i], t, 100 + 10 * i))
                changes.extend(((i, "event", t), (i, "clear", t)))
                synced[i] = True
            else:
                seqs[i] += 2 if kind == "gap" else 1
                level = (rnd.randrange(80, 100), rnd.randrange(0, 4))
                batch.append(BookDelta(venue, SYM, seqs[i], seqs[i], (level,), (), t, t))
                if synced[i]:  # else the engine refuses it (no snapshot since the last gap)
                    changes.append((i, "event" if kind == "delta" else "resync", t))
                    synced[i] = kind == "delta"
        flush()
        if ticks:
            t += MS
            ref.now = max(ref.now, t)
            for j, s in enumerate(ref.sources):
                d = SOURCES[j] in h.down
                if s.down and not d:
                    s.down_cleared = ref.now
                s.down = d
            h.tick(t)
            ref.evaluate()
            check()
    flush()
    check()
    # every switch is announced, in order, and only switches are
    assert [(s.from_source, s.to_source) for s in h.router.switches] == ref.switches
    assert [f.detail.split(" (")[0] for f in h.flags] == [f"{a or 'none'} -> {b or 'none'}" for a, b in ref.switches]
    assert all(f.kind in (QualityKind.SOURCE_FAILOVER, QualityKind.SOURCE_RESTORED) and f.venue == COMP
               for f in h.flags)
    # the composite's book sequence is its own and contiguous
    seq = 0
    for ev in h.derived:
        if isinstance(ev, BookSnapshot | BookDelta):
            first = ev.seq if isinstance(ev, BookSnapshot) else ev.first_seq
            assert first == ev.seq == seq + 1
            seq = ev.seq
    assert not h.engine.counters.sequence_gaps.get((COMP, SYM))
    # every trade of the active source is in the composite exactly once; the rest are gap replays
    composite = [u.trade_id for u in h.out if type(u) is Trade and u.venue == COMP]
    assert len(composite) == len(set(composite))
    assert set(forwarded) <= set(composite) <= source_trades
    assert h.engine.quality.get(QualityKind.DUPLICATE_TRADE, COMP, SYM) == 0


def test_a_halted_active_source_is_failed_over_and_its_book_is_not_copied() -> None:
    from server.engine.events import TradingStatusChange

    h = Harness(POLICY)
    h.apply([snapshot("a", 1, T0, 100), snapshot("b", 1, T0, 200)])
    h.tick(T0 + 50 * MS)
    assert h.router.active(SYM) == "a"
    h.apply([TradingStatusChange("a", SYM, True, "news pending", T0 + 60 * MS, T0 + 60 * MS),
             trade("b", "1", T0 + 70 * MS)])
    assert h.router.active(SYM) == "b"
    assert h.flags[-1].detail.startswith("a -> b (halted)")
    assert h.levels(COMP) == h.levels("b")


def test_a_composite_book_continues_the_sequence_the_engine_already_holds() -> None:
    """After a restart the composite book is restored from storage: its numbering must go on from there."""
    engine = Engine(EngineConfig(trade_spikes=None, quote_spikes=None))
    out: list[object] = []
    engine.apply(BookSnapshot(COMP, SYM, 41, ((99, 1),), ((101, 1),), T0, T0), out)
    router = SourceRouter([POLICY], engine_book_reader(engine),
                          sequence_of=lambda venue, symbol: engine.book(venue, symbol).seq)  # type: ignore[union-attr]
    out.clear()
    engine.apply_batch([snapshot("a", 1, T0 + MS), snapshot("b", 1, T0 + MS)], out)
    derived: list[Event] = []
    notes: list[QualityFlag] = []
    router.route(out, 0, derived, notes)
    router.tick(T0 + 50 * MS, set(), derived, notes)
    books = [e for e in derived if isinstance(e, BookSnapshot)]
    assert books and books[0].seq == 42
