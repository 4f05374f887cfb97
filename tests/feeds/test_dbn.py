"""Databento DBN (CME Globex, DBN v1 zstd) through feeds.dbn: MBO L3 -> L2, trades -> candles, mbp-1.

Comparability: the MBO files (ESH4 2023-12-25, ESM4 2024-05-08) and the mbp-1 / trades files (ESU4
2024-07-01) are different instruments and days, so the MBO-derived book cannot be compared with mbp-1
directly. What is compared instead: the parser's L2 output with an independent order-by-order rebuild
in this test; mbp-1's top of book with the trades file (every trade prints at the touch of the quote
before it, on the side its aggressor flag says); mbp-1's own trade records with the trades file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import databento_dbn as dbn
import pytest

from feeds.dbn.parser import DbnParser, venue_of_dataset
from feeds.dbn.reader import read_records, symbols_from_definitions
from feeds.protocols import DeadLetter
from server.engine.candles import CandleConfig, CandleSeries, Interval
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Event, Quote, Side, Trade
from server.engine.numbers import SCALE

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "databento_glbx_mdp3"
ESH4 = DATA / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"
ESM4 = DATA / "esm4_orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"
ESM4_DEF = DATA / "esm4_orderbooks_definition.dbn.zst"
ESU4_TRADES = DATA / "esu4_nqu4_futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESU4_MBP1 = DATA / "esu4_nqu4_futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESU4_DEF = DATA / "esu4_nqu4_futures_definition.dbn.zst"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared real data missing: {DATA}")
HOUR_NS = 3600 * 1_000_000_000
MINUTE_NS = 60 * 1_000_000_000


def _parse(path: Path) -> tuple[list[Event], DbnParser, list[DeadLetter]]:
    dead: list[DeadLetter] = []
    parser = DbnParser()
    events = list(parser.parse(read_records(path, dead), dead))
    return events, parser, dead


def _records(path: Path) -> list[dbn.DBNRecord]:
    return [r for r in read_records(path, []) if not isinstance(r, dbn.Metadata)]


def _mbo(path: Path) -> list[dbn.MBOMsg]:
    return [r for r in read_records(path, []) if isinstance(r, dbn.MBOMsg)]


class _Reference:
    """An independent, naive L3 book (orders by id) for cross-checking the parser's L2 output."""

    def __init__(self) -> None:
        self.orders: dict[int, tuple[str, int, int]] = {}

    def apply(self, r: dbn.MBOMsg) -> None:
        action = str(r.action)
        if action == "R":
            self.orders.clear()
        elif action == "A":
            self.orders[r.order_id] = (str(r.side), r.price, r.size)
        elif action == "C":
            side, price, size = self.orders.pop(r.order_id)
            if size > r.size:
                self.orders[r.order_id] = (side, price, size - r.size)
        elif action == "M":
            self.orders[r.order_id] = (str(r.side), r.price, r.size)

    def levels(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        agg: dict[tuple[str, int], int] = Counter()
        for side, price, size in self.orders.values():
            agg[side, price] += size
        bids = sorted(((p, s * SCALE) for (side, p), s in agg.items() if side == "B"), reverse=True)
        asks = sorted((p, s * SCALE) for (side, p), s in agg.items() if side == "A")
        return bids, asks


@needs_data
def test_esh4_mbo_counts_snapshot_and_book_rebuild() -> None:
    records = _mbo(ESH4)
    assert len(records) == 68_792
    live = [r for r in records if not r.flags & dbn.F_SNAPSHOT]
    assert len(live) == 60_067
    hours = Counter((r.ts_recv // HOUR_NS) % 24 for r in live)
    assert hours == {22: 924, 23: 59_143}

    dead: list[DeadLetter] = []
    parser = DbnParser()
    engine = Engine()
    out: list[object] = []
    ref = _Reference()
    events: list[Event] = []
    first_trade_ts = 0
    crossed_before_open = crossed_after_open = compared = 0
    book_key = ("cme", "ESH4")
    for i, rec in enumerate(read_records(ESH4, dead)):
        produced = _one(parser, rec)  # raises on anything a dead letter would hide
        events += produced
        engine.apply_batch(produced, out)
        if isinstance(rec, dbn.MBOMsg):
            ref.apply(rec)
        for ev in produced:
            if isinstance(ev, Trade) and not first_trade_ts:
                first_trade_ts = ev.ts_event
            if isinstance(ev, BookDelta):
                book = engine.book(*book_key)
                assert book is not None
                if book.crossed:
                    if first_trade_ts:
                        crossed_after_open += 1
                    else:
                        crossed_before_open += 1
        if i % 2000 == 0 and isinstance(rec, dbn.MBOMsg) and rec.flags & dbn.F_LAST \
                and not rec.flags & dbn.F_SNAPSHOT:
            book = engine.book(*book_key)
            assert book is not None
            assert (book.bid_levels(), book.ask_levels()) == ref.levels(), f"book differs at record {i}"
            compared += 1
    events += parser.finish()
    assert dead == []
    assert parser.actions == {"A": 29_216, "C": 17_999, "M": 12_233, "T": 2_973, "F": 6_371}
    assert parser.snapshot_records == 8_725
    kinds = Counter(type(e).__name__ for e in events)
    assert kinds == {"BookSnapshot": 1, "BookDelta": 47_022, "Trade": 2_973}
    snap = events[0]
    assert isinstance(snap, BookSnapshot) and (snap.venue, snap.symbol) == book_key
    assert (len(snap.bids), len(snap.asks)) == (892, 559)
    assert snap.bids[0] == (4_799_000_000_000, 16 * SCALE) and snap.asks[0] == (4_799_500_000_000, 23 * SCALE)
    assert snap.ts_event == snap.ts_recv == 1_703_462_400_000_000_000  # 2023-12-25T00:00Z
    # The opening trade is at 23:00:00 UTC (18:00 ET). During the pre-open the CME book may cross (orders
    # wait for the opening auction): 891 crossed moments, all before the open; after it, none.
    assert first_trade_ts // MINUTE_NS * MINUTE_NS == 1_703_545_200_000_000_000
    assert (crossed_before_open, crossed_after_open) == (891, 0)
    assert engine.counters.unsynced_deltas == 0
    # Final book: engine == parser's own view == independent rebuild.
    book = engine.book(*book_key)
    assert book is not None and not book.crossed
    assert (book.bid_levels(), book.ask_levels()) == ref.levels() == parser.book_levels(17077)
    assert compared >= 20
    trades = [e for e in events if isinstance(e, Trade)]
    assert Counter(t.side for t in trades) == {Side.BUY: 1542, Side.SELL: 1430, Side.UNSPECIFIED: 1}


def _one(parser: DbnParser, rec: dbn.DBNRecord | dbn.Metadata) -> list[Event]:
    out: list[Event] = []
    parser.parse_record(rec, out)
    return out


@needs_data
def test_esm4_clear_then_snapshot_then_live() -> None:
    events, parser, dead = _parse(ESM4)
    assert dead == []
    assert parser.snapshot_records == 13_601  # the R and 13,600 adds
    assert parser.actions == {"R": 1, "A": 13_678, "C": 80, "M": 27, "T": 5, "F": 5}
    assert Counter(type(e).__name__ for e in events) == {"BookSnapshot": 1, "BookDelta": 184, "Trade": 5}
    assert isinstance(events[0], BookSnapshot) and events[0].symbol == "ESM4" and events[0].venue == "cme"
    engine = Engine()
    out: list[object] = []
    for ev in events:
        engine.apply(ev, out)
        book = engine.book("cme", "ESM4")
        assert book is not None and book.synced and not book.crossed
    # The definition file names the instrument too.
    assert symbols_from_definitions(ESM4_DEF, dead) == {5602: "ESM4"}
    assert symbols_from_definitions(ESU4_DEF, dead) == {118: "ESU4", 4358: "NQU4"}


@needs_data
def test_esu4_trades_to_one_minute_candles() -> None:
    raw = [r for r in _records(ESU4_TRADES) if isinstance(r, dbn.TradeMsg)]
    events, _, dead = _parse(ESU4_TRADES)
    assert dead == []
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) == len(raw) == 120
    assert trades[0] == Trade("cme", "ESU4", "", 5_528_750_000_000, 2 * SCALE, Side.BUY,
                              1_719_878_281_218_218_853, 1_719_878_281_218_485_389)
    assert Counter(t.side for t in trades) == {Side.BUY: 66, Side.SELL: 54}
    series = CandleSeries("cme", "ESU4", CandleConfig(intervals=(Interval.M1,)))
    out: list[object] = []
    for t in trades:
        assert series.add_trade(t.price, t.size, t.side, t.ts_event, t.ts_recv, out)
    series.advance(1_719_878_520_000_000_000, out)  # 00:02:00: closes 00:01
    candles = series.closed(Interval.M1)
    start = 1_719_878_280_000_000_000  # 2024-07-01T23:58Z
    assert [c.open_time for c in candles] == [start + i * MINUTE_NS for i in range(4)]
    assert [c.trade_count for c in candles] == [13, 15, 68, 24]
    for c in candles:
        mine = [r for r in raw if c.open_time <= r.ts_event < c.close_time]
        assert c.volume == sum(r.size for r in mine) * SCALE  # exact sum of sizes
        assert (c.open, c.close) == (mine[0].price, mine[-1].price)
        assert (c.high, c.low) == (max(r.price for r in mine), min(r.price for r in mine))
        assert c.quote_volume == sum(r.price * r.size * SCALE for r in mine)
        assert c.buy_volume == sum(r.size for r in mine if str(r.side) == "B") * SCALE
    assert sum(c.volume for c in candles) == 253 * SCALE


@needs_data
def test_esu4_mbp1_top_of_book_against_trades() -> None:
    quotes_ev, parser, dead = _parse(ESU4_MBP1)
    assert dead == []
    quotes = [q for q in quotes_ev if isinstance(q, Quote)]
    assert len(quotes) == 2_168  # one per record flagged LAST; the 120 trade records are not quotes
    assert parser.stats.skipped["mbp-1 record without LAST"] == 120
    assert all(q.bid_price < q.ask_price and q.bid_size and q.ask_size for q in quotes)
    # mbp-1's own trade records are exactly the trades file.
    mbp_trades = [r for r in _records(ESU4_MBP1) if isinstance(r, dbn.MBP1Msg) and str(r.action) == "T"]
    raw_trades = [r for r in _records(ESU4_TRADES) if isinstance(r, dbn.TradeMsg)]
    assert [(r.ts_event, r.ts_recv, r.price, r.size, str(r.side)) for r in mbp_trades] == \
        [(r.ts_event, r.ts_recv, r.price, r.size, str(r.side)) for r in raw_trades]
    # Every trade prints at the touch of the last quote before it in exchange time (buy at the ask, sell
    # at the bid; at equal times the trade comes first: mbp-1 shows the book after the trade).
    trades, _, _ = _parse(ESU4_TRADES)
    merged: list[Quote | Trade] = sorted([*quotes, *(t for t in trades if isinstance(t, Trade))],
                                         key=lambda e: (e.ts_event, isinstance(e, Quote)))
    engine = Engine()
    out: list[object] = []
    at_touch = comparable = 0
    for ev in merged:
        if isinstance(ev, Trade):
            book = engine.book("cme", "ESU4")
            if book is not None and book.synced:
                comparable += 1
                bid, _, ask, _ = book.top()
                at_touch += ev.price == (ask if ev.side is Side.BUY else bid)
        engine.apply(ev, out)
    assert (at_touch, comparable) == (119, 119)  # the first trade precedes the first quote


def test_synthetic_mbo_malformed_and_grouping() -> None:
    def mbo(action: str, side: str, order_id: int, price: int, size: int, flags: int = dbn.F_LAST,
            ts: int = 10) -> dbn.MBOMsg:
        return dbn.MBOMsg(1, 7, ts, order_id, price * SCALE, size, dbn.Action(action), dbn.Side(side), ts + 1,
                          flags=flags)

    parser = DbnParser(symbols={7: "TEST"}, venue="cme")
    dead: list[DeadLetter] = []
    recs = [
        mbo("R", "N", 0, 0, 0, flags=dbn.F_SNAPSHOT),
        mbo("A", "B", 1, 100, 5, flags=dbn.F_SNAPSHOT),
        mbo("A", "A", 2, 101, 3, flags=dbn.F_SNAPSHOT | dbn.F_LAST),  # ends the snapshot
        mbo("A", "B", 3, 100, 2, flags=0),  # grouped with the next record
        mbo("C", "B", 1, 100, 5, flags=dbn.F_LAST),  # -> one delta: bid 100 = 2
        mbo("C", "B", 99, 100, 1),  # unknown order: dead letter
        mbo("C", "B", 3, 100, 9),  # more than the order: dead letter
        mbo("A", "N", 4, 100, 1),  # side N: dead letter
        mbo("A", "B", 3, 100, 1),  # duplicate order id: dead letter
        mbo("M", "A", 5, 102, 4),  # unknown order modified: treated as an add
        mbo("M", "A", 2, 103, 1),  # move 101 -> 103
        mbo("T", "A", 0, 100, 1),  # sell aggressor
        mbo("F", "B", 3, 100, 1),  # no book change
    ]
    events = list(parser.parse(recs, dead))
    assert [d.reason for d in dead] == [
        "cancel of unknown order 99", "cancel of 9 from order 3 of size 2",
        "order side 'N' is neither B nor A", "add of order 3, which is already in the book"]
    assert all(d.source == "dbn" and d.ts_recv == 11 for d in dead)
    assert events[0] == BookSnapshot("cme", "TEST", 0, ((100 * SCALE, 5 * SCALE),), ((101 * SCALE, 3 * SCALE),),
                                     11, 11)
    assert events[1] == BookDelta("cme", "TEST", 0, 0, ((100 * SCALE, 2 * SCALE),), (), 10, 11)
    assert events[2].asks == ((102 * SCALE, 4 * SCALE),)  # type: ignore[union-attr]
    assert events[3].asks == ((101 * SCALE, 0), (103 * SCALE, SCALE))  # type: ignore[union-attr]
    assert events[4] == Trade("cme", "TEST", "", 100 * SCALE, SCALE, Side.SELL, 10, 11)
    assert len(events) == 5
    assert parser.stats.skipped["modify of unknown order -> add"] == 1
    assert parser.stats.skipped["mbo fill"] == 1
    assert parser.book_levels(7) == ([(100 * SCALE, 2 * SCALE)], [(102 * SCALE, 4 * SCALE), (103 * SCALE, SCALE)])
    # A group left open at the end of input is flushed.
    tail = list(DbnParser(symbols={7: "T"}).parse([mbo("R", "N", 0, 0, 0, flags=dbn.F_LAST),
                                                   mbo("A", "B", 1, 100, 1, flags=0)], []))
    assert [type(e).__name__ for e in tail] == ["BookSnapshot", "BookDelta"]
    assert isinstance(tail[0], BookSnapshot) and tail[0].venue == "databento"


@needs_data
def test_reader_streams_in_small_chunks_and_reports_corruption(tmp_path: Path) -> None:
    big = [r for r in read_records(ESU4_MBP1, [], chunk_size=1 << 20)]
    small = [r for r in read_records(ESU4_MBP1, [], chunk_size=777)]
    assert len(big) == len(small) == 2_289 and [bytes(r) for r in big[1:]] == [bytes(r) for r in small[1:]]
    bad = tmp_path / "bad.dbn.zst"
    bad.write_bytes(b"not a zstd stream at all")
    dead: list[DeadLetter] = []
    assert list(read_records(bad, dead)) == []
    assert len(dead) == 1 and "undecodable DBN" in dead[0].reason
    truncated = tmp_path / "cut.dbn"
    plain = b"".join(_plain_bytes(ESU4_TRADES))
    truncated.write_bytes(plain[:-10])
    dead = []
    items = list(read_records(truncated, dead))
    assert len(items) == 120  # metadata + 119 whole records
    assert len(dead) == 1 and "trailing bytes" in dead[0].reason


def _plain_bytes(path: Path) -> list[bytes]:
    import io

    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()),
                                                    read_across_frames=True) as reader:
        return [reader.read()]


def test_venue_of_dataset() -> None:
    assert venue_of_dataset("GLBX.MDP3") == "cme"
    assert venue_of_dataset("XNAS.ITCH") == "nasdaq"
    assert venue_of_dataset("DBEQ.BASIC") == "dbeq"
