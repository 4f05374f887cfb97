"""The feed registry: spec parsing and errors, symbol mapping, and every file format's real sample
replayed through ``build_feed(...)`` at ``speed=max`` into a list sink, then applied to an Engine."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import pytest

from feeds.file_feed import MAX_SPEED, REALTIME, FileFeed, Speed
from feeds.protocols import DeadLetter
from feeds.registry import FILE_FORMATS, build_feed, canonical_symbol, fx_symbol, parse_feed_spec
from server.engine.engine import Engine
from server.engine.events import ClockTick, Event

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared real data missing: {DATA}")


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches = 0

    async def put(self, batch: list[Event]) -> None:
        self.events.extend(batch)
        self.batches += 1


# -- specs --------------------------------------------------------------------------------------


def test_parse_specs() -> None:
    spec = parse_feed_spec("file:histdata:/data/fx/x_EURUSD.csv?speed=10x")
    assert (spec.kind, spec.format, spec.path, spec.speed) == ("file", "histdata", Path("/data/fx/x_EURUSD.csv"),
                                                               Speed.parse("10x"))
    assert parse_feed_spec("file:dbn:a.dbn.zst").speed == REALTIME  # default: the original pace
    assert parse_feed_spec("file:dbn:a.dbn.zst?speed=max").speed == MAX_SPEED
    assert parse_feed_spec(" file:lobster:dir/with:colon.csv?speed=0.5x ").path == Path("dir/with:colon.csv")
    assert parse_feed_spec("sim") == parse_feed_spec("sim")
    sim = parse_feed_spec("sim:seed=7,rate=5000")
    assert sim.kind == "sim" and sim.options == (("seed", "7"), ("rate", "5000"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.format = "dbn"  # type: ignore[misc]
    assert set(FILE_FORMATS) == {"tardis-jsonl", "tardis-csv", "kraken-rest-trades", "freqtrade-trades",
                                 "cryptofeed-capture", "lobster", "dbn", "histdata", "truefx"}


@pytest.mark.parametrize(("text", "message"), [
    ("", "unknown feed kind"),
    ("kafka:topic", "kafka"),
    ("bogus:x", "unknown feed kind 'bogus'"),
    ("file", "missing file format"),
    ("file:", "missing file format"),
    ("file:parquet:/x.parquet", "unknown file format 'parquet'"),
    ("file:histdata", "missing path"),
    ("file:histdata:", "missing path"),
    ("file:histdata:?speed=max", "missing path"),
    ("file:histdata:/x.csv?speed=fast", "bad speed 'fast'"),
    ("file:histdata:/x.csv?speed=0x", "must be positive"),
    ("file:histdata:/x.csv?speed=", "bad speed"),
    ("file:histdata:/x.csv?loop=1", "unknown file feed option 'loop=1'"),
    ("sim:", "nothing after 'sim:'"),
    ("sim:seed", "bad simulator option 'seed'"),
    ("sim:seed=1,seed=2", "given twice"),
])
def test_spec_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_feed_spec(text)


def test_build_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        build_feed(f"file:histdata:{tmp_path / 'missing_EURUSD.csv'}")
    nameless = tmp_path / "ticks.csv"
    nameless.write_text("")
    with pytest.raises(ValueError, match="currency pair"):
        build_feed(f"file:histdata:{nameless}")
    with pytest.raises(ValueError, match="LOBSTER message file"):
        build_feed(f"file:lobster:{nameless}")
    with pytest.raises(ValueError, match="freqtrade-trades"):
        build_feed(f"file:freqtrade-trades:{nameless}")
    with pytest.raises(ValueError, match="unknown venue 'ticks'"):
        build_feed(f"file:cryptofeed-capture:{nameless}")
    lonely = tmp_path / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
    lonely.write_text("")
    with pytest.raises(FileNotFoundError, match="orderbook"):
        build_feed(f"file:lobster:{lonely}")


def test_sim_spec_builds_the_simulator_or_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "feeds.simulator.feed", None)  # as if the package were missing
    with pytest.raises(RuntimeError, match=r"simulator .* not available"):
        build_feed("sim:seed=1")
    monkeypatch.undo()
    pytest.importorskip("feeds.simulator.feed")
    feed = build_feed("sim:seed=3", name="sim-a")
    assert feed.name == "sim-a" and not feed.warm


def test_canonical_symbols() -> None:
    cases = {
        ("binance", "BTCUSDT"): "BTC/USDT", ("binance", "RUNEEUR"): "RUNE/EUR", ("binance", "LRCBTC"): "LRC/BTC",
        ("kraken", "XBTUSDT"): "BTC/USDT", ("kraken", "XBT/CHF"): "BTC/CHF", ("kraken", "XXBTZUSD"): "BTC/USD",
        ("kraken", "XDG/USD"): "DOGE/USD", ("coinbase", "BTC-USD"): "BTC/USD", ("bitstamp", "BTCEUR"): "BTC/EUR",
        ("okex", "BTC-USDT"): "BTC/USDT",
        ("bitmex", "XBTUSD"): "BTC/USD-PERP", ("bitmex", "SOLUSDT"): "SOL/USDT-PERP",
        ("bitmex", "XBTU21"): "XBTU21", ("deribit", "BTC-PERPETUAL"): "BTC/USD-PERP",
        ("deribit", "BTC-27SEP19"): "BTC-27SEP19", ("binance-futures", "BTCUSDT"): "BTC/USDT-PERP",
        ("okex-swap", "BTC-USD-SWAP"): "BTC/USD-PERP", ("okex-futures", "BTC-USD-190405"): "BTC-USD-190405",
        ("huobi-dm-swap", "BTC-USD"): "BTC/USD-PERP", ("cryptofacilities", "PI_XBTUSD"): "PI_XBTUSD",
        ("cme", "ESH4"): "ESH4", ("nasdaq", "AAPL"): "AAPL",
    }
    assert {k: canonical_symbol(*k) for k in cases} == cases
    assert fx_symbol(Path("DAT_ASCII_EURUSD_T_202001.csv")) == "EUR/USD"
    assert fx_symbol(Path("truefx_USDJPY_ticks_2013-01-01.csv")) == "USD/JPY"


# -- every format's real sample through build_feed ----------------------------------------------

SAMPLES = [
    # format, path under DATA, events, dead letters, event kinds, (venue, symbol) pairs seen
    ("tardis-jsonl", "tardis_bitmex_deribit_2019-04-01/"
     "bitmex_XBTUSD+deribit_BTC-PERPETUAL_2019-04-01T0000-0001.normalized.jsonl",
     8254, 0, {"BookSnapshot": 2, "BookDelta": 7487, "Trade": 765},
     {("bitmex", "BTC/USD-PERP"), ("deribit", "BTC/USD-PERP")}),
    ("tardis-jsonl", "tardis_bitmex_deribit_2019-04-01/multi_venue_first10msgs_2019-04-01T0000.normalized.jsonl",
     67, 0, {"BookDelta": 43, "Trade": 24}, None),
    ("tardis-csv", "tardis_csv_format_samples/deribit_incremental_book_L2_BTC-PERPETUAL.csv", 1, 0,
     {"BookSnapshot": 1}, {("deribit", "BTC/USD-PERP")}),
    ("tardis-csv", "tardis_csv_format_samples/bitmex_trades_XBTUSD.csv", 10, 0, {"Trade": 10},
     {("bitmex", "BTC/USD-PERP")}),
    ("tardis-csv", "tardis_csv_format_samples/binance-futures_book_snapshot_25_BTCUSDT.csv", 10, 0,
     {"BookSnapshot": 10}, {("binance-futures", "BTC/USDT-PERP")}),
    ("tardis-csv", "tardis_csv_format_samples/binance-futures_book_snapshot_5_BTCUSDT.csv", 10, 0,
     {"BookSnapshot": 10}, None),
    ("tardis-csv", "tardis_csv_format_samples/huobi-dm-swap_quotes_BTC-USD.csv", 10, 0, {"Quote": 10},
     {("huobi-dm-swap", "BTC/USD-PERP")}),
    ("kraken-rest-trades", "kraken_xbtusdt_rest_2025-11-10/http_trades.json", 1000, 0, {"Trade": 1000},
     {("kraken", "BTC/USDT")}),
    ("freqtrade-trades", "binance_xrpeth_2019-10-11/XRP_ETH-trades.json.gz", 12477, 0, {"Trade": 12477},
     {("binance", "XRP/ETH")}),
    ("cryptofeed-capture", "cryptofeed_ws_captures/BINANCE.ws.1.0", 183, 0,
     {"BookSnapshot": 4, "BookDelta": 177, "Trade": 2},
     {("binance", s) for s in ("NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR")}),
    ("cryptofeed-capture", "cryptofeed_ws_captures/KRAKEN.ws.50.0", 4279, 0,
     {"BookSnapshot": 10, "BookDelta": 4269}, None),
    ("cryptofeed-capture", "cryptofeed_ws_captures/COINBASE.ws.28.0", 9836, 0,
     {"BookSnapshot": 10, "BookDelta": 9719, "Trade": 107}, None),
    # BitMEX TRXU21 prices have 10 decimals: beyond the engine's 1e-9, so 3 dead letters.
    ("cryptofeed-capture", "cryptofeed_ws_captures/BITMEX.ws.1.0", 2004, 3,
     {"Trade": 26, "BookSnapshot": 9, "BookDelta": 1967, "BookReset": 2}, None),
    ("lobster", "lobster_aapl_2012-06-21/AAPL_2012-06-21_34200000_57600000_message_10.csv", 1415, 0,
     {"BookSnapshot": 1, "BookDelta": 1255, "Trade": 159}, {("nasdaq", "AAPL")}),
    ("dbn", "databento_glbx_mdp3/esh4-glbx-mdp3-20231225.mbo.dbn.zst", 49996, 0,
     {"BookSnapshot": 1, "BookDelta": 47022, "Trade": 2973}, {("cme", "ESH4")}),
    ("dbn", "databento_glbx_mdp3/esm4_orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst", 190, 0,
     {"BookSnapshot": 1, "BookDelta": 184, "Trade": 5}, {("cme", "ESM4")}),
    ("dbn", "databento_glbx_mdp3/esu4_nqu4_futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst", 2168, 0,
     {"Quote": 2168}, {("cme", "ESU4")}),
    ("dbn", "databento_glbx_mdp3/esu4_nqu4_futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst", 120, 0,
     {"Trade": 120}, {("cme", "ESU4")}),
    ("dbn", "databento_glbx_mdp3/esu4_nqu4_futures_definition.dbn.zst", 0, 0, {}, None),
    ("histdata", "fx/histdata_EURUSD_ticks_2020-01-01.csv", 9500, 0, {"Quote": 9500}, {("histdata", "EUR/USD")}),
    ("truefx", "fx/truefx_USDJPY_ticks_2013-01-01.csv", 1000, 0, {"Quote": 1000}, {("truefx", "USD/JPY")}),
]


@needs_data
@pytest.mark.parametrize(("fmt", "rel", "count", "dead", "kinds", "keys"), SAMPLES,
                         ids=[f"{s[0]}:{Path(s[1]).name[:32]}" for s in SAMPLES])
def test_every_format_replays_its_sample_into_an_engine(fmt: str, rel: str, count: int, dead: int,
                                                        kinds: dict[str, int],
                                                        keys: set[tuple[str, str]] | None) -> None:
    path = DATA / rel
    letters: list[DeadLetter] = []
    feed = build_feed(f"file:{fmt}:{path}?speed=max", dead_letters=letters)
    assert isinstance(feed, FileFeed) and feed.name == f"file:{fmt}:{path.name}"
    sink = ListSink()
    asyncio.run(feed.run(sink))
    assert len(sink.events) == count == feed.events_delivered
    assert Counter(type(e).__name__ for e in sink.events) == kinds
    assert len(letters) == dead == feed.dead_letters.total
    assert feed.warm == (count > 0)
    if keys is not None:
        assert {(e.venue, e.symbol) for e in sink.events if not isinstance(e, ClockTick)} == keys
    engine = Engine()
    out: list[object] = []
    engine.apply_batch(sink.events, out)  # no exception
    assert engine.counters.duplicate_trades == 0


@needs_data
def test_replay_is_repeatable_and_malformed_lines_become_dead_letters(tmp_path: Path) -> None:
    src = (DATA / "fx" / "histdata_EURUSD_ticks_2020-01-01.csv").read_text().splitlines(keepends=True)
    bad = tmp_path / "bad_EURUSD.csv"
    bad.write_text("".join([*src[:3], "garbage\n", "20200101 170000065,1.1,oops,0\n", *src[3:5]]))
    feed = build_feed(f"file:histdata:{bad}?speed=max")
    assert isinstance(feed, FileFeed)
    first, second = ListSink(), ListSink()
    asyncio.run(feed.run(first))
    asyncio.run(feed.run(second))  # the factory reopens the file
    assert len(first.events) == len(second.events) == 5
    # The same events; only the receive time differs (a replay is stamped when this service receives it).
    assert [e[:-1] for e in first.events] == [e[:-1] for e in second.events]  # ts_recv is the last field
    assert feed.dead_letters.total == 4
    assert [d.reason for d in list(feed.dead_letters.recent)[:2]] == [
        "1 cells, expected 4 (time,bid,ask,volume)", "ask: not a decimal number: 'oops'"]


@pytest.mark.parametrize(("text", "kind", "feed_class"), [
    ("kafka:brokers=127.0.0.1:9092,group=mds", "kafka", "KafkaFeed"),
    ("ccxt:exchange=binance,symbols=BTC/USDT+ETH/USDT", "ccxt", "CcxtFeed"),
    ("fix:host=127.0.0.1,port=9876,sender=MDS,target=LP,symbols=EUR/USD", "fix", "FixFeed"),
])
def test_live_feed_specs_build_their_feeds(text: str, kind: str, feed_class: str) -> None:
    spec = parse_feed_spec(text)
    assert spec.kind == kind
    feed = build_feed(spec)
    assert type(feed).__name__ == feed_class  # built, not started: no connection is made
    status = feed.status()  # type: ignore[attr-defined]  # every feed here reports one (ReportsStatus)
    assert status.kind == kind and status.state == "stopped" and status.last_event_age_ns is None


@pytest.mark.parametrize("text", ["kafka:bogus=1", "ccxt:symbols=BTC/USDT", "fix:host=127.0.0.1"])
def test_live_feed_specs_are_checked_when_parsed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_feed_spec(text)
