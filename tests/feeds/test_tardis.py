"""Tardis normalized replay (BitMEX + Deribit perpetuals, one minute) and Tardis CSV samples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from feeds.protocols import DeadLetter
from feeds.tardis.csv_formats import TardisCsvParser
from feeds.tardis.normalized import TardisNormalizedParser
from feeds.tardis.reader import read_lines
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookSnapshot, Event, Quote, Side, Trade
from server.engine.numbers import parse_fixed

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
WINDOW = DATA / "tardis_bitmex_deribit_2019-04-01"
REPLAY = WINDOW / "bitmex_XBTUSD+deribit_BTC-PERPETUAL_2019-04-01T0000-0001.normalized.jsonl"
MULTI = WINDOW / "multi_venue_first10msgs_2019-04-01T0000.normalized.jsonl"
CSV = DATA / "tardis_csv_format_samples"
needs_window = pytest.mark.skipif(not REPLAY.exists(), reason=f"shared real data missing: {WINDOW}")
needs_csv = pytest.mark.skipif(not CSV.exists(), reason=f"shared real data missing: {CSV}")
PERP = "BTC/USD-PERP"
MAPPING = {("bitmex", "XBTUSD"): PERP, ("deribit", "BTC-PERPETUAL"): PERP}


def _events(path: Path, dead: list[DeadLetter]) -> list[Event]:
    return list(TardisNormalizedParser(MAPPING).parse(read_lines(path), dead))


@needs_window
def test_replay_counts_books_nbbo_and_times() -> None:
    dead: list[DeadLetter] = []
    events = _events(REPLAY, dead)
    assert dead == []
    kinds = Counter((type(e).__name__, getattr(e, "venue", "")) for e in events)
    assert kinds == {("BookSnapshot", "bitmex"): 1, ("BookDelta", "bitmex"): 3718,
                     ("Trade", "bitmex"): 757, ("BookSnapshot", "deribit"): 1,
                     # SOURCES.md says 3,768; the file holds 3,769 Deribit deltas (8,254 lines in all).
                     ("BookDelta", "deribit"): 3769, ("Trade", "deribit"): 8}
    snap = next(e for e in events if isinstance(e, BookSnapshot) and e.venue == "bitmex")
    assert (len(snap.bids), len(snap.asks)) == (3218, 2984)

    engine = Engine()
    out: list[object] = []
    model: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    locked = crossed = checked = 0
    lags: list[int] = []
    book_lags: set[int] = set()
    for ev in events:
        engine.apply(ev, out)
        if isinstance(ev, BookSnapshot):
            model[ev.venue] = (dict(ev.bids), dict(ev.asks))
        elif isinstance(ev, BookDelta):
            for side, levels in zip(model[ev.venue], (ev.bids, ev.asks), strict=True):
                for price, size in levels:
                    if size:
                        side[price] = size
                    else:
                        side.pop(price, None)
        if isinstance(ev, BookSnapshot | BookDelta) and ev.venue == "bitmex":
            book_lags.add(ev.ts_recv - ev.ts_event)
        if isinstance(ev, Trade) and ev.venue == "bitmex":
            lags.append(ev.ts_recv - ev.ts_event)
        if len(model) < 2 or isinstance(ev, Trade):
            continue
        best_bid = max((max(b), v) for v, (b, _) in model.items())[0]
        best_ask = min((min(a), v) for v, (_, a) in model.items())[0]
        bid_size = sum(b.get(best_bid, 0) for b, _ in model.values())
        ask_size = sum(a.get(best_ask, 0) for _, a in model.values())
        nbbo = engine.nbbo(PERP)
        assert nbbo is not None
        assert (nbbo.bid_price, nbbo.bid_size, nbbo.ask_price, nbbo.ask_size) == (
            best_bid, bid_size, best_ask, ask_size)
        checked += 1
        locked += nbbo.locked
        crossed += nbbo.crossed
    for venue, (bids, asks) in model.items():
        book = engine.book(venue, PERP)
        assert book is not None and book.synced
        assert book.bid_levels() == sorted(bids.items(), reverse=True)
        assert book.ask_levels() == sorted(asks.items())
    assert checked == 7423  # every book event once both venues had a snapshot
    # Measured: Deribit's perpetual traded about 3 USD above BitMEX's all minute, so the cross-venue
    # NBBO is crossed after every one of the 7,423 book events and never merely locked.
    assert (locked, crossed) == (0, 7423)
    assert set(engine.venues(PERP)) == {"bitmex", "deribit"}
    # BitMEX trade times trail the receive time by about 4 s (median; 0 .. 6 s); BitMEX book changes
    # carry no exchange time, so tardis-node stamps them with the receive time (lag exactly 0).
    lags.sort()
    assert 3_000_000_000 < lags[len(lags) // 2] < 5_000_000_000
    assert lags[0] >= 0
    assert book_lags == {0}
    first_trade = next(e for e in events if isinstance(e, Trade))
    assert first_trade.venue == "bitmex" and first_trade.symbol == PERP


@needs_window
def test_multi_venue_first_messages_exact() -> None:
    parser = TardisNormalizedParser()
    dead: list[DeadLetter] = []
    events = list(parser.parse(read_lines(MULTI), dead))
    assert dead == []
    assert parser.stats.skipped == {"derivative_ticker": 13}
    assert len(events) == 80 - 13
    first = events[0]
    assert first == BookDelta(
        "binance", "BTCUSDT", 0, 0,
        ((parse_fixed("4102.36"), parse_fixed("0.461763")), (parse_fixed("4102.34"), 0),
         (parse_fixed("4101.59"), parse_fixed("0.5"))),
        ((parse_fixed("4103.93"), parse_fixed("4.367317")), (parse_fixed("4103.95"), 0)),
        1554076801697000000, 1554076801816921000)
    trade = events[1]
    assert trade == Trade("binance", "BTCUSDT", "109344068", parse_fixed("4102.44"),
                          parse_fixed("0.022208"), Side.SELL, 1554076801991000000, 1554076802112665000)
    # Deltas without a snapshot are refused by the engine (no book is invented).
    engine = Engine()
    engine.apply_batch(events, [])
    assert engine.counters.unsynced_deltas == sum(isinstance(e, BookDelta) for e in events)


def _csv(name: str) -> tuple[list[Event], list[DeadLetter], TardisCsvParser]:
    parser = TardisCsvParser()
    dead: list[DeadLetter] = []
    return list(parser.parse(read_lines(CSV / name), dead)), dead, parser


@needs_csv
def test_csv_incremental_book_l2() -> None:
    events, dead, parser = _csv("deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    assert dead == [] and parser.kind == "incremental_book_L2"
    snap = events[0]
    assert isinstance(snap, BookSnapshot)
    assert snap.asks[:2] == ((parse_fixed("6421.5"), parse_fixed("18640")),
                             (parse_fixed("6422"), parse_fixed("1190")))
    assert (snap.ts_event, snap.ts_recv) == (1585699200245000000, 1585699200355684000)
    engine = Engine()
    engine.apply_batch(events, [])
    assert engine.book("deribit", "BTC-PERPETUAL") is not None


@needs_csv
def test_csv_trades_snapshots_quotes() -> None:
    trades, dead, _ = _csv("bitmex_trades_XBTUSD.csv")
    assert dead == [] and len(trades) >= 10
    assert trades[0] == Trade("bitmex", "XBTUSD", "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf",
                              parse_fixed("8531.5"), parse_fixed("2152"), Side.SELL,
                              1583020803145000000, 1583020803307160000)
    for name, depth in (("binance-futures_book_snapshot_5_BTCUSDT.csv", 5),
                        ("binance-futures_book_snapshot_25_BTCUSDT.csv", 25)):
        snaps, dead, parser = _csv(name)
        assert dead == [] and parser.kind == f"book_snapshot_{depth}"
        s = snaps[0]
        assert isinstance(s, BookSnapshot)
        assert len(s.bids) == len(s.asks) == depth
        assert s.asks[0] == (parse_fixed("11657.08"), parse_fixed("1.714"))
        assert s.bids[1] == (parse_fixed("11656.97"), parse_fixed("0.2"))
        assert (s.ts_event, s.ts_recv) == (1598918403696000000, 1598918403810979000)
    quotes, dead, parser = _csv("huobi-dm-swap_quotes_BTC-USD.csv")
    assert dead == [] and parser.kind == "quotes"
    assert quotes[0] == Quote("huobi-dm-swap", "BTC-USD", parse_fixed("8629.2"), parse_fixed("806"),
                              parse_fixed("8629.3"), parse_fixed("5494"),
                              1588291201099000000, 1588291201234268000)


def test_malformed_tardis_input_goes_to_dead_letters() -> None:
    parser = TardisNormalizedParser()
    dead: list[DeadLetter] = []
    bad = [
        '{"type":"trade","exchange":"x","symbol":"y","price":1',  # truncated
        '{"type":"trade","exchange":"x","symbol":"y","id":"1","price":null,"amount":1,"side":"buy",'
        '"timestamp":"2019-04-01T00:00:00.000Z","localTimestamp":"2019-04-01T00:00:00.000Z"}',
        '{"type":"book_change","exchange":"x","symbol":"y","isSnapshot":"no","bids":[],"asks":[],'
        '"timestamp":"2019-04-01T00:00:00.000Z","localTimestamp":"2019-04-01T00:00:00.000Z"}',
        '{"type":"mystery","exchange":"x","symbol":"y"}',
        "[]",
    ]
    assert list(parser.parse(bad, dead)) == []
    assert len(dead) == len(bad) and all(d.reason for d in dead)
    assert "unknown message type" in dead[3].reason
    csv_parser = TardisCsvParser()
    csv_dead: list[DeadLetter] = []
    rows = ["exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
            "bitmex,XBTUSD,1,2,a,sell,8531.5",  # truncated row
            "bitmex,XBTUSD,1,2,a,sideways,8531.5,1",  # bad side
            "bitmex,XBTUSD,x,2,a,sell,8531.5,1"]  # bad time
    assert list(csv_parser.parse(rows, csv_dead)) == []
    assert len(csv_dead) == 3 and all(d.reason for d in csv_dead)
    unknown: list[DeadLetter] = []
    assert list(TardisCsvParser().parse(["a,b,c", "1,2,3"], unknown)) == []
    assert len(unknown) == 1 and "unknown Tardis CSV header" in unknown[0].reason
