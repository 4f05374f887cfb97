"""Tests of server.service.convert: engine records <-> marketdata.v1 messages.

Every converter's output survives SerializeToString / FromString unchanged and decodes back to the
record's values; Decimal conversion is exact over the whole int64 range of units; quote volumes round
half-to-even exactly like Python's decimal module; every engine enum member maps to the proto member of
the same name and back; no float is involved anywhere.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, TypeVar

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from marketdata.v1 import (
    alert_pb2,
    alert_service_pb2,
    book_pb2,
    candle_pb2,
    common_pb2,
    instrument_pb2,
    market_data_service_pb2,
    quality_pb2,
    trade_pb2,
)

from server.engine.alerts import Alert, AlertCondition, AlertSource, AlertTrigger
from server.engine.book import BookStatus, L2Book
from server.engine.candles import Candle, CandleConfig, Interval
from server.engine.engine import Engine, EngineConfig
from server.engine.events import (
    AssetClass,
    BookDelta,
    BookReset,
    BookSnapshot,
    ClockTick,
    Event,
    Level,
    Quote,
    Side,
    Trade,
)
from server.engine.instruments import Instrument
from server.engine.numbers import SCALE, div_round
from server.engine.pricing import (
    FundingConfig,
    FundingRate,
    IndexComponent,
    IndexConfig,
    IndexPrice,
    IndexSource,
    MarkConfig,
    MarkPrice,
)
from server.engine.quality import QualityFlag, QualityKind
from server.engine.ticker import Ticker
from server.engine.updates import (
    BookStatusChange,
    ConsolidatedBook,
    ConsolidatedLevel,
    DepthHeatmap,
    ExcludedVenue,
    HeatmapBucket,
    Nbbo,
    VenueSize,
)
from server.service import convert as cv

M = TypeVar("M", bound=Message)

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
i64 = st.integers(I64_MIN, I64_MAX)
u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
text = st.text(max_size=10)
names = st.text(min_size=1, max_size=10)
levels = st.lists(st.tuples(i64, i64), max_size=4).map(tuple)


def rt(msg: M) -> M:
    """Serialize, parse back, and check nothing changed (also the bytes, deterministically)."""
    data = msg.SerializeToString()
    back = type(msg).FromString(data)
    assert back == msg
    assert back.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)
    return back


def dec(msg: common_pb2.Decimal) -> int:
    return cv.decimal_from_pb(msg)


def pb_levels(side: Any) -> tuple[Level, ...]:
    return tuple((lv.price, lv.size) for lv in side)


# ------------------------------------------------------------------------------------------ Decimal


@given(st.integers(cv.DECIMAL_MIN, cv.DECIMAL_MAX))
def test_decimal_exact_over_int64_units(value: int) -> None:
    msg = rt(cv.decimal_pb(value))
    assert cv.decimal_from_pb(msg) == value
    assert -SCALE < msg.nanos < SCALE
    assert not (msg.units > 0 > msg.nanos or msg.units < 0 < msg.nanos)  # same sign
    assert msg.units == int(Decimal(value).scaleb(-9).to_integral_value(rounding="ROUND_DOWN"))


def test_decimal_examples_and_bounds() -> None:
    assert (cv.decimal_pb(1_500_000_000).units, cv.decimal_pb(1_500_000_000).nanos) == (1, 500_000_000)
    assert (cv.decimal_pb(-250_000_000).units, cv.decimal_pb(-250_000_000).nanos) == (0, -250_000_000)
    assert (cv.decimal_pb(-2_750_000_000).units, cv.decimal_pb(-2_750_000_000).nanos) == (-2, -750_000_000)
    assert cv.decimal_pb(0).SerializeToString() == b""
    for edge in (cv.DECIMAL_MIN, cv.DECIMAL_MAX):
        assert cv.decimal_from_pb(rt(cv.decimal_pb(edge))) == edge
    for outside in (cv.DECIMAL_MIN - 1, cv.DECIMAL_MAX + 1):
        with pytest.raises(ValueError):
            cv.decimal_pb(outside)


def test_decimal_from_pb_rejects_invalid() -> None:
    for units, nanos in ((1, -1), (-1, 1), (0, SCALE), (0, -SCALE)):
        with pytest.raises(ValueError, match="invalid Decimal"):
            cv.decimal_from_pb(common_pb2.Decimal(units=units, nanos=nanos))


@given(st.integers(cv.DECIMAL_MIN * SCALE, cv.DECIMAL_MAX * SCALE))
def test_quote_volume_rounds_half_even_like_decimal(value_1e18: int) -> None:
    with localcontext() as ctx:
        ctx.prec = 80
        expected = int(Decimal(value_1e18).scaleb(-9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert cv.decimal_from_pb(rt(cv.decimal_pb_from_quote(value_1e18))) == expected


@given(st.integers(-(10**20), 10**20), st.sampled_from([0, 1, 499_999_999, 500_000_000, 500_000_001]))
def test_quote_volume_ties(whole: int, frac: int) -> None:
    value = whole * SCALE + frac
    with localcontext() as ctx:
        ctx.prec = 80
        expected = int(Decimal(value).scaleb(-9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert cv.decimal_from_pb(cv.decimal_pb_from_quote(value)) == expected


# --------------------------------------------------------------------------------------------- enums

ENUMS: list[tuple[Any, Any, str, Callable[[Any], int], Callable[[int], Any]]] = [
    (Side, common_pb2.Side, "SIDE_", cv.side_pb, cv.side_from_pb),
    (AssetClass, instrument_pb2.AssetClass, "ASSET_CLASS_", cv.asset_class_pb, cv.asset_class_from_pb),
    (BookStatus, book_pb2.BookStatus, "BOOK_STATUS_", cv.book_status_pb, cv.book_status_from_pb),
    (Interval, candle_pb2.CandleInterval, "CANDLE_INTERVAL_", cv.interval_pb, cv.interval_from_pb),
    (AlertCondition, alert_pb2.AlertCondition, "ALERT_CONDITION_", cv.condition_pb, cv.condition_from_pb),
    (AlertSource, alert_pb2.AlertPriceSource, "ALERT_PRICE_SOURCE_", cv.source_pb, cv.source_from_pb),
    (QualityKind, quality_pb2.QualityFlagKind, "QUALITY_FLAG_KIND_", cv.quality_kind_pb,
     cv.quality_kind_from_pb),
]


@pytest.mark.parametrize(("engine", "proto", "prefix", "to_pb", "from_pb"), ENUMS,
                         ids=[e[0].__name__ for e in ENUMS])
def test_enum_maps_by_name_and_back(engine: Any, proto: Any, prefix: str, to_pb: Callable[[Any], int],
                                    from_pb: Callable[[int], Any]) -> None:
    proto_names = {name for name, _ in proto.items()}
    for member in engine:
        value = to_pb(member)
        assert proto.Name(value) == prefix + member.name
        assert value == int(member)  # the numbers agree too (the hot path relies on the tables only)
        assert from_pb(value) is member
    # Every proto value except UNSPECIFIED has an engine member (nothing on the wire is unmappable).
    engine_names = {prefix + m.name for m in engine} | {prefix + "UNSPECIFIED"}
    assert proto_names == engine_names
    with pytest.raises(ValueError):
        from_pb(12345)


def test_unspecified_from_pb() -> None:
    with pytest.raises(ValueError, match=r"CANDLE_INTERVAL_UNSPECIFIED \(0\)"):
        cv.interval_from_pb(candle_pb2.CANDLE_INTERVAL_UNSPECIFIED)
    with pytest.raises(ValueError, match="unknown value 99"):
        cv.interval_from_pb(99)
    with pytest.raises(ValueError, match="ALERT_CONDITION_UNSPECIFIED"):
        cv.condition_from_pb(0)
    with pytest.raises(ValueError, match="QUALITY_FLAG_KIND_UNSPECIFIED"):
        cv.quality_kind_from_pb(0)
    assert cv.source_from_pb(0) is AlertSource.LAST_TRADE
    assert cv.side_from_pb(0) is Side.UNSPECIFIED
    assert cv.asset_class_from_pb(0) is AssetClass.UNSPECIFIED


def test_exclusion_and_gap_reason_maps() -> None:
    assert cv.exclusion_reason_pb("stale") == common_pb2.EXCLUSION_REASON_STALE
    assert cv.exclusion_reason_pb("resync") == common_pb2.EXCLUSION_REASON_AWAITING_RESYNC
    assert cv.exclusion_reason_pb("empty") == common_pb2.EXCLUSION_REASON_EMPTY
    assert cv.exclusion_reason_pb("missing") == common_pb2.EXCLUSION_REASON_EMPTY
    assert cv.exclusion_reason_pb("outlier") == common_pb2.EXCLUSION_REASON_OUTLIER
    assert cv.exclusion_reason_pb("halted") == common_pb2.EXCLUSION_REASON_HALTED
    assert cv.exclusion_reason_pb("") == common_pb2.EXCLUSION_REASON_UNSPECIFIED
    assert cv.exclusion_reason_pb("???") == common_pb2.EXCLUSION_REASON_UNSPECIFIED
    gap = cv.book_gap_reason_pb
    assert gap("sequence gap") == book_pb2.BOOK_GAP_REASON_SEQUENCE_GAP
    assert gap("checksum mismatch: expected 1, computed 2") == book_pb2.BOOK_GAP_REASON_CHECKSUM_MISMATCH
    assert gap("checksum for a book that is not synced") == book_pb2.BOOK_GAP_REASON_CHECKSUM_MISMATCH
    assert gap("book hash mismatch at sequence 7 (depth 10): crc32 0x00000001, the venue's 0x00000002") == \
        book_pb2.BOOK_GAP_REASON_CHECKSUM_MISMATCH
    assert gap("Reconnect after timeout") == book_pb2.BOOK_GAP_REASON_RECONNECT
    assert gap("orderBookL2 update for unknown id 7") == book_pb2.BOOK_GAP_REASON_FEED_RESET
    assert gap("") == book_pb2.BOOK_GAP_REASON_FEED_RESET


def test_halt_and_hash_values_reach_the_client() -> None:
    """BOOK_STATUS_HALTED, EXCLUSION_REASON_HALTED, Ticker.halted and the new flag kinds round-trip from the
    engine through the wire to mds_client's models."""
    from mds_client import models

    book = L2Book("mx", "BTC/USD")
    book.replace(((100, 1),), ((102, 1),))
    book.synced = book.halted = True
    m = rt(cv.book_snapshot_from_book(book, None, 3))
    assert m.status == book_pb2.BOOK_STATUS_HALTED and cv.book_status_from_pb(m.status) is BookStatus.HALTED
    assert models.OrderBook.from_pb(m).status == "halted"
    book.synced = False  # a halted book that lost sequence says so first
    assert models.OrderBook.from_pb(rt(cv.book_snapshot_from_book(book, None, 4))).status == "awaiting_resync"
    n = rt(cv.nbbo_pb(Nbbo("BTC/USD", 99, 1, "b", 101, 1, "b", False, False, (ExcludedVenue("mx", "halted"),), 1, 2)))
    assert n.excluded_venues[0].reason == common_pb2.EXCLUSION_REASON_HALTED
    assert models.ExcludedVenue.from_pb(n.excluded_venues[0]) == models.ExcludedVenue("mx", "halted", "")
    ticker = Ticker("mx", "BTC/USD", 0, 60, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 5, halted=True)
    assert models.Ticker.from_pb(rt(cv.ticker_pb(ticker))).halted
    assert not models.Ticker.from_pb(rt(cv.ticker_pb(ticker._replace(halted=False)))).halted
    for kind in (QualityKind.TRADE_WHILE_HALTED, QualityKind.BOOK_CHANGE_WHILE_HALTED, QualityKind.BOOK_HASH_MISMATCH):
        f = rt(cv.quality_flag_pb(QualityFlag("mx", "BTC/USD", kind, 1, 2, "d", 3, 4)))
        assert quality_pb2.QualityFlagKind.Name(f.kind) == "QUALITY_FLAG_KIND_" + kind.name
        assert cv.quality_kind_from_pb(f.kind) is kind
    gap = cv.book_gap_pb(BookStatusChange("mx", "BTC/USD", BookStatus.AWAITING_RESYNC, 8, 0,
                                          "book hash mismatch at sequence 7 (depth 10): crc32 0x1, the venue's 0x2",
                                          1, 2), 9)
    assert gap is not None and gap.gap.reason == book_pb2.BOOK_GAP_REASON_CHECKSUM_MISMATCH
    halted = BookStatusChange("mx", "BTC/USD", BookStatus.HALTED, 7, 7, "halted: auction", 1, 2)
    assert cv.book_gap_pb(halted, 9) is None and cv.update_pb(halted, 9) is None  # the status rides on snapshots


# -------------------------------------------------------------------------------------- strategies

trades = st.builds(Trade, text, text, text, i64, i64, st.sampled_from(Side), i64, i64)
snapshots = st.builds(BookSnapshot, text, text, u64, levels, levels, i64, i64)
deltas = st.builds(BookDelta, text, text, u64, u64, levels, levels, i64, i64)
quotes = st.builds(Quote, text, text, i64, i64, i64, i64, i64, i64)
gap_reasons = st.sampled_from(["sequence gap", "checksum mismatch: x", "reconnect", "feed said so", "",
                              "book hash mismatch at sequence 3", "halted: circuit breaker", "resumed"])
status_changes = st.builds(BookStatusChange, text, text, st.sampled_from(BookStatus), u64, u64, gap_reasons,
                          i64, i64)
excluded = st.lists(
    st.builds(ExcludedVenue, text, st.sampled_from(["stale", "resync", "halted", "empty", "strange"])), max_size=3
).map(tuple)
nbbos = st.builds(Nbbo, text, i64, i64, text, i64, i64, text, st.booleans(), st.booleans(), excluded, i64,
                  i64)
c_levels = st.lists(
    st.builds(ConsolidatedLevel, i64, i64, st.lists(st.builds(VenueSize, text, i64), max_size=3).map(tuple)),
    max_size=3,
).map(tuple)
consolidated = st.builds(ConsolidatedBook, text, c_levels, c_levels, excluded, i64)
buckets = st.lists(st.builds(HeatmapBucket, i64, i64), max_size=4).map(tuple)
heatmaps = st.builds(DepthHeatmap, text, i64, buckets, buckets, i64)
vols = st.integers(0, 10**18)


@st.composite
def candles(draw: st.DrawFn) -> Candle:
    volume = draw(vols)
    price = draw(st.integers(-(1 << 62), 1 << 62))
    quote_volume = volume * price + (draw(st.integers(0, volume - 1)) if volume else 0)
    return Candle(draw(text), draw(text), draw(st.sampled_from(Interval)), draw(i64), draw(i64), draw(i64),
                  draw(i64), draw(i64), draw(st.integers(-(1 << 62), 1 << 62)), volume, quote_volume,
                  draw(vols), draw(vols), draw(u64), draw(st.booleans()), draw(st.booleans()), draw(i64),
                  draw(i64))


tickers = st.builds(Ticker, text, text, i64, i64, i64, i64, i64, i64, i64, i64, vols,
                    st.integers(-(10**36), 10**36), i64, u64, i64, i64, i64, st.booleans())


@st.composite
def index_prices(draw: st.DrawFn) -> IndexPrice:
    comps = []
    for _ in range(draw(st.integers(0, 4))):
        included = draw(st.booleans())
        reason = "" if included else draw(st.sampled_from(["missing", "stale", "outlier"]))
        comps.append(IndexSource(draw(text), draw(text), draw(i64), draw(st.integers(1, 10**6)), included,
                                 reason))
    return IndexPrice(draw(text), draw(i64), tuple(comps), draw(i64))


marks = st.builds(MarkPrice, text, i64, i64, i64, i64)
fundings = st.builds(FundingRate, text, i64, i64, i64, i64, i64, i64, i64)
alerts = st.builds(Alert, text, text, st.sampled_from(AlertCondition), i64, st.sampled_from(AlertSource),
                   text, i64)
triggers = st.builds(AlertTrigger, alerts, i64, st.none() | i64, i64)
flags = st.builds(QualityFlag, text, text, st.sampled_from(QualityKind), i64, i64, text, i64, i64)
instruments = st.builds(
    Instrument,
    symbol=names,
    asset_class=st.sampled_from(AssetClass),
    base=text,
    quote=text,
    tick_size=st.integers(0, I64_MAX),
    lot_size=st.integers(0, I64_MAX),
    price_decimals=st.integers(0, 9),
    size_decimals=st.integers(0, 9),
    underlying=text,
    venue_symbols=st.lists(st.tuples(text, text), max_size=3).map(tuple),
)


# ------------------------------------------------------------------------------- record converters


def check_trade(m: trade_pb2.Trade, t: Trade) -> None:
    assert (m.venue, m.symbol, m.trade_id, m.price, m.size, cv.side_from_pb(m.side), m.ts_event_ns,
            m.ts_recv_ns) == tuple(t)


@given(trades)
def test_trade(t: Trade) -> None:
    check_trade(rt(cv.trade_pb(t)), t)


def engine_status(bids: tuple[Level, ...], asks: tuple[Level, ...]) -> BookStatus:
    book = L2Book("v", "s")
    book.replace(bids, asks)
    book.synced = True
    book.crossed = book.is_crossed()
    return book.status


@given(snapshots, u64)
def test_book_snapshot(ev: BookSnapshot, sequence: int) -> None:
    u = rt(cv.book_snapshot_pb(ev, sequence))
    assert u.WhichOneof("update") == "snapshot"
    m = u.snapshot
    assert (m.venue, m.symbol, m.sequence, m.venue_sequence) == (ev.venue, ev.symbol, sequence, ev.seq)
    assert (pb_levels(m.bids), pb_levels(m.asks)) == (ev.bids, ev.asks)
    assert cv.book_status_from_pb(m.status) is engine_status(ev.bids, ev.asks)
    assert (m.ts_event_ns, m.ts_recv_ns) == (ev.ts_event, ev.ts_recv)
    given_status = rt(cv.book_snapshot_pb(ev, sequence, BookStatus.CROSSED))
    assert given_status.snapshot.status == book_pb2.BOOK_STATUS_CROSSED


@given(deltas, u64, st.sampled_from([BookStatus.CONSISTENT, BookStatus.CROSSED]))
def test_book_delta(ev: BookDelta, sequence: int, status: BookStatus) -> None:
    u = rt(cv.book_delta_pb(ev, sequence, status))
    assert u.WhichOneof("update") == "delta"
    m = u.delta
    assert (m.venue, m.symbol, m.sequence, m.venue_sequence, m.is_snapshot) == (
        ev.venue, ev.symbol, sequence, ev.seq, False)
    assert (pb_levels(m.bids), pb_levels(m.asks)) == (ev.bids, ev.asks)
    assert cv.book_status_from_pb(m.status) is status
    assert (m.ts_event_ns, m.ts_recv_ns) == (ev.ts_event, ev.ts_recv)


@given(quotes, u64)
def test_quote_as_snapshot(q: Quote, sequence: int) -> None:
    m = rt(cv.quote_book_pb(q, sequence)).snapshot
    assert (m.venue, m.symbol, m.sequence, m.venue_sequence) == (q.venue, q.symbol, sequence, 0)
    assert pb_levels(m.bids) == (((q.bid_price, q.bid_size),) if q.bid_size else ())
    assert pb_levels(m.asks) == (((q.ask_price, q.ask_size),) if q.ask_size else ())
    book = L2Book(q.venue, q.symbol)
    book.set_top(q.bid_price, q.bid_size, q.ask_price, q.ask_size)
    book.synced, book.crossed = True, book.is_crossed()
    assert cv.book_status_from_pb(m.status) is book.status
    assert (m.ts_event_ns, m.ts_recv_ns) == (q.ts_event, q.ts_recv)


@given(status_changes, u64)
def test_book_gap(c: BookStatusChange, sequence: int) -> None:
    u = cv.book_gap_pb(c, sequence)
    assert cv.is_book_gap(c) is (c.status is BookStatus.AWAITING_RESYNC)
    if not cv.is_book_gap(c):
        assert u is None
        assert cv.update_pb(c, sequence) is None
        return
    assert u is not None
    m = rt(u).gap
    assert (m.venue, m.symbol, m.sequence, m.expected_sequence, m.received_sequence, m.detail) == (
        c.venue, c.symbol, sequence, c.expected_seq, c.received_seq, c.reason)
    assert m.reason == cv.book_gap_reason_pb(c.reason) != book_pb2.BOOK_GAP_REASON_UNSPECIFIED
    assert (m.ts_event_ns, m.ts_recv_ns) == (c.ts_event, c.ts_recv)


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**3)), max_size=30),
       st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**3)), max_size=30),
       st.none() | st.integers(0, 40), u64)
def test_book_snapshot_from_book(bids: list[Level], asks: list[Level], depth: int | None, seq: int) -> None:
    book = L2Book("kraken", "BTC/USD")
    book.replace(tuple(bids), tuple(asks))
    book.seq, book.last_ts_event, book.last_ts_recv, book.synced = 42, 7, 9, True
    book.crossed = book.is_crossed()
    m = rt(cv.book_snapshot_from_book(book, depth, seq))
    n = depth or None
    assert pb_levels(m.bids) == tuple(book.bid_levels(n))
    assert pb_levels(m.asks) == tuple(book.ask_levels(n))
    assert (m.venue, m.symbol, m.sequence, m.venue_sequence, m.ts_event_ns, m.ts_recv_ns) == (
        "kraken", "BTC/USD", seq, 42, 7, 9)
    assert cv.book_status_from_pb(m.status) is book.status


def check_excluded(side: Any, ex: tuple[ExcludedVenue, ...]) -> None:
    assert len(side) == len(ex)
    for m, e in zip(side, ex, strict=True):
        assert m.venue == e.venue
        if e.reason in cv.EXCLUSION_REASONS:
            assert (m.reason, m.detail) == (cv.EXCLUSION_REASONS[e.reason], "")
        else:
            assert (m.reason, m.detail) == (common_pb2.EXCLUSION_REASON_UNSPECIFIED, e.reason)


@given(nbbos)
def test_nbbo(n: Nbbo) -> None:
    m = rt(cv.nbbo_pb(n))
    assert (m.symbol, m.bid_price, m.bid_size, m.bid_venue, m.ask_price, m.ask_size, m.ask_venue, m.locked,
            m.crossed, m.ts_event_ns, m.ts_recv_ns) == (*n[:9], n.ts_event, n.ts_recv)
    check_excluded(m.excluded_venues, n.excluded)


@given(consolidated)
def test_consolidated_book(b: ConsolidatedBook) -> None:
    m = rt(cv.consolidated_book_pb(b))
    assert m.symbol == b.symbol
    for side, lv in ((m.bids, b.bids), (m.asks, b.asks)):
        assert [(x.price, x.total_size, tuple((v.venue, v.size) for v in x.venue_sizes)) for x in side] == [
            (y.price, y.size, tuple(tuple(v) for v in y.venues)) for y in lv]
    check_excluded(m.excluded_venues, b.excluded)
    assert m.ts_event_ns == m.ts_recv_ns == b.ts_recv


@given(heatmaps, text)
def test_depth_heatmap(h: DepthHeatmap, venue: str) -> None:
    m = rt(cv.depth_heatmap_pb(h, venue))
    assert (m.symbol, m.venue, m.bucket_size) == (h.symbol, venue, h.bucket_size)
    assert [(b.price_start, b.size) for b in m.bid_buckets] == [tuple(b) for b in h.bids]
    assert [(b.price_start, b.size) for b in m.ask_buckets] == [tuple(b) for b in h.asks]
    assert m.ts_event_ns == m.ts_recv_ns == h.ts_recv
    assert rt(cv.depth_heatmap_pb(h)).venue == ""


@given(candles())
def test_candle(c: Candle) -> None:
    m = rt(cv.candle_pb(c))
    assert (m.venue, m.symbol, cv.interval_from_pb(m.interval), m.open_time_ns, m.close_time_ns, m.open,
            m.high, m.low, m.close) == c[:9]
    assert (dec(m.volume), dec(m.buy_volume), dec(m.sell_volume)) == (c.volume, c.buy_volume, c.sell_volume)
    assert dec(m.quote_volume) == div_round(c.quote_volume, SCALE)
    assert all(m.HasField(f) for f in ("volume", "quote_volume", "buy_volume", "sell_volume"))
    assert m.vwap == c.vwap
    assert (m.trade_count, m.closed, m.correction, m.ts_event_ns, m.ts_recv_ns) == c[13:]


@given(tickers, st.none() | i64)
def test_ticker(t: Ticker, ts_recv: int | None) -> None:
    m = rt(cv.ticker_pb(t, ts_recv))
    assert (m.venue, m.symbol, m.window_start_ns) == (t.venue, t.symbol, t.window_start)
    assert (m.open, m.high, m.low, m.last, m.change, m.change_pct) == t[4:10]
    assert (dec(m.volume), dec(m.quote_volume)) == (t.volume, div_round(t.quote_volume, SCALE))
    assert (m.vwap, m.trade_count, m.best_bid, m.best_ask) == (t.vwap, t.trade_count, t.best_bid, t.best_ask)
    assert (m.ts_event_ns, m.ts_recv_ns) == (t.ts_event, t.ts_event if ts_recv is None else ts_recv)
    assert m.halted is t.halted


@given(index_prices())
def test_index_price(p: IndexPrice) -> None:
    m = rt(cv.index_price_pb(p))
    assert (m.symbol, m.price, m.ts_event_ns, m.ts_recv_ns) == (p.symbol, p.price, p.ts, p.ts)
    total = sum(c.weight for c in p.components if c.included)
    for mc, c in zip(m.components, p.components, strict=True):
        assert (mc.venue, mc.symbol, mc.price, mc.included) == (c.venue, c.symbol, c.price, c.included)
        assert mc.weight == (div_round(c.weight * SCALE, total) if c.included else 0)
        assert mc.exclusion_reason == cv.EXCLUSION_REASONS[c.exclusion_reason]
    assert len(m.components) == len(p.components)
    if total:  # weights are fractions of the included total, up to one unit of rounding each
        assert abs(sum(c.weight for c in m.components) - SCALE) <= len(m.components)


@given(marks)
def test_mark_price(p: MarkPrice) -> None:
    m = rt(cv.mark_price_pb(p))
    assert (m.symbol, m.mark_price, m.index_price, m.premium_ema, m.ts_event_ns, m.ts_recv_ns) == (*p, p.ts)


@given(fundings)
def test_funding_rate(f: FundingRate) -> None:
    m = rt(cv.funding_rate_pb(f))
    assert (m.symbol, m.rate, m.premium_rate, m.interest_rate, m.next_funding_time_ns, m.countdown_ns,
            m.interval_ns, m.ts_event_ns, m.ts_recv_ns) == (*f, f.ts)


@given(alerts, st.booleans())
def test_alert_both_ways(a: Alert, triggered: bool) -> None:
    m = rt(cv.alert_pb(a, triggered))
    assert m.triggered is triggered
    assert cv.alert_from_pb(m) == a


def test_alert_from_pb_and_create_request() -> None:
    m = alert_pb2.Alert(alert_id="a1", symbol="BTC/USD", condition=alert_pb2.ALERT_CONDITION_PRICE_BELOW,
                        threshold=-5)
    assert cv.alert_from_pb(m) == Alert("a1", "BTC/USD", AlertCondition.PRICE_BELOW, -5,
                                        AlertSource.LAST_TRADE)
    with pytest.raises(ValueError, match="ALERT_CONDITION_UNSPECIFIED"):
        cv.alert_from_pb(alert_pb2.Alert(alert_id="a2"))
    req = alert_service_pb2.CreateAlertRequest(
        symbol="BTC-PERP", venue="", condition=alert_pb2.ALERT_CONDITION_CHANGE_PCT_ABOVE,
        source=alert_pb2.ALERT_PRICE_SOURCE_MARK, threshold=5 * SCALE)
    assert cv.alert_from_create_request(req, "id9", 123) == Alert(
        "id9", "BTC-PERP", AlertCondition.CHANGE_PCT_ABOVE, 5 * SCALE, AlertSource.MARK, "", 123)
    with pytest.raises(ValueError, match="unknown value 7"):
        cv.alert_from_create_request(
            alert_service_pb2.CreateAlertRequest(condition=1, source=7), "x", 0)  # type: ignore[arg-type]


@given(triggers, st.none() | text, st.none() | i64)
def test_alert_trigger(t: AlertTrigger, venue: str | None, ts_recv: int | None) -> None:
    m = rt(cv.alert_trigger_pb(t, venue, ts_recv))
    assert m.alert.triggered
    assert cv.alert_from_pb(m.alert) == t.alert
    assert m.venue == (t.alert.venue if venue is None else venue)
    assert (m.trigger_price, m.change_pct) == (t.price, t.change_pct or 0)
    assert (m.ts_event_ns, m.ts_recv_ns) == (t.ts, t.ts if ts_recv is None else ts_recv)


@given(flags)
def test_quality_flag(f: QualityFlag) -> None:
    m = rt(cv.quality_flag_pb(f))
    assert (m.venue, m.symbol, cv.quality_kind_from_pb(m.kind), m.value, m.reference, m.detail,
            m.ts_event_ns, m.ts_recv_ns) == tuple(f)


@given(instruments)
def test_instrument(i: Instrument) -> None:
    m = rt(cv.instrument_pb(i))
    back = Instrument(
        symbol=m.symbol, asset_class=cv.asset_class_from_pb(m.asset_class), base=m.base, quote=m.quote,
        tick_size=m.tick_size, lot_size=m.lot_size, price_decimals=m.price_decimals,
        size_decimals=m.size_decimals, underlying=m.underlying,
        venue_symbols=tuple((v.venue, v.venue_symbol) for v in m.venue_symbols))
    assert back == i


# -------------------------------------------------------------------------------- dispatch, batches

# record strategy, MarketDataUpdate oneof field (BookUpdate field for books), standalone converter
DISPATCH: list[tuple[st.SearchStrategy[Any], str, Callable[[Any, int], Message]]] = [
    (trades, "trade", lambda r, s: cv.trade_pb(r)),
    (deltas, "book", cv.book_delta_pb),
    (snapshots, "book", cv.book_snapshot_pb),
    (quotes, "book", cv.quote_book_pb),
    (nbbos, "nbbo", lambda r, s: cv.nbbo_pb(r)),
    (consolidated, "consolidated_book", lambda r, s: cv.consolidated_book_pb(r)),
    (candles(), "candle", lambda r, s: cv.candle_pb(r)),
    (tickers, "ticker", lambda r, s: cv.ticker_pb(r)),
    (index_prices(), "index_price", lambda r, s: cv.index_price_pb(r)),
    (marks, "mark_price", lambda r, s: cv.mark_price_pb(r)),
    (fundings, "funding_rate", lambda r, s: cv.funding_rate_pb(r)),
    (triggers, "alert_trigger", lambda r, s: cv.alert_trigger_pb(r)),
    (flags, "quality_flag", lambda r, s: cv.quality_flag_pb(r)),
]
UPDATE_FIELDS = market_data_service_pb2.MarketDataUpdate.DESCRIPTOR.fields_by_name


@pytest.mark.parametrize(("records", "field", "convert"), DISPATCH, ids=[d[1] + str(i) for i, d in
                                                                          enumerate(DISPATCH)])
@settings(max_examples=40)
@given(data=st.data(), sequence=u64)
def test_update_pb_dispatch(records: st.SearchStrategy[Any], field: str,
                            convert: Callable[[Any, int], Message], data: st.DataObject,
                            sequence: int) -> None:
    record = data.draw(records)
    u = cv.update_pb(record, sequence)
    assert u is not None
    u = rt(u)
    assert u.WhichOneof("update") == field
    inner = convert(record, sequence)
    assert getattr(u, field) == inner
    # The wrapper is exactly one embedded field: what field_bytes builds from the inner bytes.
    assert u.SerializeToString() == cv.field_bytes(UPDATE_FIELDS[field].number, inner.SerializeToString())


def test_update_pb_empty_records_still_set_the_oneof() -> None:
    empty_trade = Trade("", "", "", 0, 0, Side.UNSPECIFIED, 0, 0)
    u = cv.update_pb(empty_trade)
    assert u is not None and rt(u).WhichOneof("update") == "trade"
    u = cv.update_pb(BookDelta("", "", 0, 0, (), (), 0, 0))
    assert u is not None and u.WhichOneof("update") == "book" and u.book.WhichOneof("update") == "delta"
    u = cv.update_pb(Nbbo("", 0, 0, "", 0, 0, "", False, False, (), 0, 0))
    assert u is not None and u.WhichOneof("update") == "nbbo"


def test_update_pb_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="DepthHeatmap"):
        cv.update_pb(DepthHeatmap("S", 1, (), (), 0))
    with pytest.raises(TypeError, match="ClockTick"):
        cv.update_pb(ClockTick(1))


@given(st.lists(trades, max_size=5), u64)
def test_batch_bytes_equals_response_encoding(batch: list[Trade], sequence: int) -> None:
    parts = [cv.trade_pb(t) for t in batch]
    data = cv.batch_bytes(sequence, [p.SerializeToString() for p in parts])
    response = market_data_service_pb2.StreamTradesResponse(sequence=sequence, trades=parts)
    assert data == response.SerializeToString()
    framed = [cv.batch_item(p.SerializeToString()) for p in parts]
    assert cv.batch_from_items(sequence, framed) == data
    updates = [cv.update_pb(t) for t in batch]
    ups = [u for u in updates if u is not None]
    data = cv.batch_bytes(sequence, [u.SerializeToString() for u in ups])
    expected = market_data_service_pb2.MarketDataBatch(sequence=sequence, updates=ups)
    assert market_data_service_pb2.MarketDataBatch.FromString(data) == expected
    assert data == expected.SerializeToString()
    subscribe = market_data_service_pb2.SubscribeResponse.FromString(cv.field_bytes(3, data))
    assert subscribe.batch == expected


@given(st.integers(1, 15), st.binary(max_size=300) | st.integers(100, 20_000).map(lambda n: b"x" * n),
       st.lists(st.binary(max_size=200), max_size=4), st.integers(0, 2**64 - 1))
def test_fast_framing_equals_the_general_one(field: int, payload: bytes, more: list[bytes], sequence: int) -> None:
    """update_item and subscribe_batch (one join, table varints) frame exactly as field_bytes does."""
    assert cv.update_item(field, payload) == cv.batch_item(cv.field_bytes(field, payload))
    items = [cv.update_item(field, payload), *(cv.batch_item(m) for m in more)]
    assert cv.subscribe_batch(sequence, items) == cv.field_bytes(3, cv.batch_from_items(sequence, items))
    assert cv._varint(sequence) == cv._varint_slow(sequence)


def test_batch_messages_share_the_layout() -> None:
    """batch_bytes relies on every batch message having sequence = 1 and its updates as field 2."""
    batches = [d for d in market_data_service_pb2.DESCRIPTOR.message_types_by_name.values()
               if d.name.startswith(("Stream", "Replay")) and d.name.endswith("Response")]
    batches += [market_data_service_pb2.MarketDataBatch.DESCRIPTOR,
                alert_service_pb2.AlertServiceStreamAlertTriggersResponse.DESCRIPTOR]
    assert len(batches) >= 13
    for d in batches:
        assert [(f.number, f.type) for f in d.fields] == [
            (1, FieldDescriptor.TYPE_UINT64), (2, FieldDescriptor.TYPE_MESSAGE)], d.name


# ------------------------------------------------------------------------------------ engine output


def test_every_engine_output_converts() -> None:
    """Run a real Engine through books, gaps, resets, trades, candles, pricing, alerts and quality; every
    record it emits converts (or is a non-gap status change) and survives the wire."""
    sec = 1_000_000_000
    t0 = 1_700_000_040 * sec
    cfg = EngineConfig(
        candles=CandleConfig(intervals=(Interval.S1, Interval.M1)),
        indices=(IndexConfig("BTC-INDEX", (IndexComponent("a", "BTC/USD", 1),
                                           IndexComponent("b", "BTC/USD", 2),
                                           IndexComponent("c", "BTC/USD", 1))),),
        marks=(MarkConfig("BTC-PERP", "BTC-INDEX"),),
        funding=(FundingConfig("BTC-PERP"),),
    )
    engine = Engine(cfg)
    engine.add_alert(Alert("x1", "BTC/USD", AlertCondition.PRICE_ABOVE, 101 * SCALE, AlertSource.LAST_TRADE))
    p = 100 * SCALE
    out: list[object] = []
    events: list[Event] = [
        BookSnapshot("a", "BTC/USD", 1, ((p, SCALE),), ((p + SCALE, SCALE),), t0, t0),
        BookSnapshot("b", "BTC/USD", 5, ((p, 2 * SCALE),), ((p + SCALE, SCALE),), t0, t0),
        BookSnapshot("b", "BTC-PERP", 5, ((p, 2 * SCALE),), ((p + SCALE, SCALE),), t0, t0),
        BookDelta("a", "BTC/USD", 2, 2, ((p + 2 * SCALE, SCALE),), (), t0 + 1, t0 + 1),  # crosses
        BookDelta("a", "BTC/USD", 3, 3, ((p + 2 * SCALE, 0),), (), t0 + 2, t0 + 2),  # uncrosses
        BookDelta("b", "BTC/USD", 9, 9, (), ((p + SCALE, 0),), t0 + 3, t0 + 3),  # gap
        BookReset("a", "BTC/USD", "checksum mismatch: expected 1, computed 2", t0 + 4, t0 + 4),
        Quote("q", "BTC/USD", p, SCALE, p + SCALE, SCALE, t0 + 5, t0 + 5),
        Trade("a", "BTC/USD", "1", p, SCALE, Side.BUY, t0 + 6, t0 + 6),
        Trade("a", "BTC/USD", "1", p, SCALE, Side.BUY, t0 + 7, t0 + 7),  # duplicate -> quality flag
        Trade("a", "BTC/USD", "2", 102 * SCALE, SCALE, Side.SELL, t0 + 8, t0 + 8),  # fires the alert
        ClockTick(t0 + 3 * sec),
        ClockTick(t0 + 70 * sec),
    ]
    for ev in events:
        engine.apply(ev, out)
    seen: set[str] = set()
    seq = 0
    for record in out:
        seq += 1
        u = cv.update_pb(record, seq)
        if u is None:
            assert type(record) is BookStatusChange and not cv.is_book_gap(record)
            seen.add("status change")
            continue
        field = rt(u).WhichOneof("update")
        assert field is not None
        seen.add(field if field != "book" else "book." + str(u.book.WhichOneof("update")))
    assert {"book.snapshot", "book.delta", "book.gap", "nbbo", "trade", "candle", "index_price",
            "mark_price", "funding_rate", "alert_trigger", "quality_flag", "status change"} <= seen
    book = engine.book("a", "BTC/USD")
    assert book is not None
    assert rt(cv.book_snapshot_from_book(book, 10, seq)).status == book_pb2.BOOK_STATUS_AWAITING_RESYNC
    cb = rt(cv.consolidated_book_pb(engine.consolidated_book("BTC/USD", 5)))
    assert cb.excluded_venues
    assert rt(cv.depth_heatmap_pb(engine.depth_heatmap("BTC/USD", SCALE, 3))).bucket_size == SCALE
    ticker = engine.ticker("a", "BTC/USD")
    assert ticker is not None
    assert dec(rt(cv.ticker_pb(ticker)).volume) == ticker.volume


# ---------------------------------------------------------------------------------------- no floats


def _messages(d: Descriptor, seen: set[str]) -> None:
    if d.full_name in seen:
        return
    seen.add(d.full_name)
    for f in d.fields:
        if f.message_type is not None:
            _messages(f.message_type, seen)


def test_no_float_on_the_wire() -> None:
    seen: set[str] = set()
    _messages(market_data_service_pb2.MarketDataUpdate.DESCRIPTOR, seen)
    for d in (instrument_pb2.Instrument.DESCRIPTOR, alert_service_pb2.CreateAlertRequest.DESCRIPTOR):
        _messages(d, seen)
    pool = market_data_service_pb2.DESCRIPTOR.pool
    floats = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
    for name in seen:
        for f in pool.FindMessageTypeByName(name).fields:
            assert f.type not in floats, f.full_name
    assert isinstance(book_pb2.BookStatus.DESCRIPTOR, EnumDescriptor)


def test_no_float_in_the_converter() -> None:
    tree = ast.parse(inspect.getsource(cv))
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), ast.dump(node)
        assert not (isinstance(node, ast.Name) and node.id == "float"), node.lineno
        assert not isinstance(node, ast.Div), "true division (/) in the converter"
        assert not (isinstance(node, ast.Attribute) and node.attr in {"truediv", "__truediv__"})


@given(candles())
def test_converted_numbers_are_ints(c: Candle) -> None:
    m = rt(cv.candle_pb(c))
    for _, value in m.ListFields():
        assert not isinstance(value, float)
