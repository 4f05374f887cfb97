"""End to end: `mds serve --feed file:...?speed=max` replays recorded data through the same path as live,
and what it serves matches what the engine tests established (Binance's own 1m klines, exactly)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from marketdata.v1 import candle_pb2, market_data_service_pb2

from tests.e2e.test_serve import ROOT, start_service

pb = market_data_service_pb2
DATA = ROOT.parent / "shared" / "data" / "real"
BINANCE = DATA / "binance_xrpeth_2019-10-11"
TOTAL_TRADES = 12_477


def _fixed(text: str) -> int:
    return int(Decimal(text) * 10**9)


@pytest.mark.skipif(not BINANCE.exists(), reason="../shared/data/real is not beside the checkout")
def test_replayed_trades_give_binance_klines(tmp_path: Path) -> None:
    feed = f"file:freqtrade-trades:{BINANCE / 'XRP_ETH-trades.json.gz'}?speed=max"
    svc = start_service(tmp_path, feed)
    try:
        # Wait until the whole file went through (the last trade id is 13532283).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            trades = svc.md.GetRecentTrades(pb.GetRecentTradesRequest(symbol="XRP/ETH", limit=1)).trades
            if trades and trades[0].trade_id == "13532283":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the replay did not finish")
        time.sleep(1.0)  # the feed's end forces a storage write: let it finish
        listed = svc.md.ListInstruments(pb.ListInstrumentsRequest()).instruments
        assert "XRP/ETH" in {i.symbol for i in listed}  # a replayed symbol is listed without reference data
        request = pb.GetCandlesRequest(symbol="XRP/ETH", venue="binance", interval=candle_pb2.CANDLE_INTERVAL_M1,
                                       start_ns=1, end_ns=2**62, limit=10_000)
        served = {c.open_time_ns: c for c in svc.md.GetCandles(request).candles}
        # ReplayStream gives the stored history back through the live message types, in event-time order.
        replayed = [u.trade for m in svc.md.ReplayStream(pb.ReplayStreamRequest(
            symbols=["XRP/ETH"], channels=[pb.CHANNEL_TRADES], start_ns=1_570_000_000 * 10**9,
            end_ns=1_571_000_000 * 10**9, speed=0)) for u in m.updates]
    finally:
        assert svc.stop() == 0

    # Binance's own klines, read as exact decimals from the text.
    raw = json.loads((BINANCE / "XRP_ETH-1m.json").read_text(), parse_float=str, parse_int=str)
    matched = empty = 0
    for open_ms, o, h, low, c, v in raw:
        key = int(open_ms) * 1_000_000
        if Decimal(v) == 0:
            empty += 1
            assert key not in served, "no candle for a minute without trades (EmptyPolicy.SKIP)"
            continue
        candle = served[key]
        assert (candle.open, candle.high, candle.low, candle.close) == (_fixed(o), _fixed(h), _fixed(low), _fixed(c))
        assert Decimal(candle.volume.units) + Decimal(candle.volume.nanos) / 10**9 == Decimal(v)
        matched += 1
    assert (matched, empty) == (2469, 1091)
    assert sum(c.trade_count for c in served.values()) == TOTAL_TRADES
    assert len(replayed) == TOTAL_TRADES
    assert [t.ts_event_ns for t in replayed] == sorted(t.ts_event_ns for t in replayed)
    assert len({t.trade_id for t in replayed}) == TOTAL_TRADES
