"""End to end: start `mds serve` as a user would (a subprocess on loopback) and use the typed stubs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketdata.v1 import (
    alert_pb2,
    alert_service_pb2,
    alert_service_pb2_grpc,
    candle_pb2,
    feed_pb2,
    market_data_service_pb2,
    market_data_service_pb2_grpc,
)

pb = market_data_service_pb2
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.target)
        self.md = market_data_service_pb2_grpc.MarketDataServiceStub(self.channel)
        self.alerts = alert_service_pb2_grpc.AlertServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def wait_serving(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mds serve exited early: {self.proc.returncode}")
            try:
                status = self.health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError("mds serve did not become SERVING")

    def stop(self) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


MODES = ["direct", "front"]
"""How the service is started in the parametrized tests: gRPC in the service process, or ``--grpc-front``."""


def start_service(data_dir: Path, *feeds: str, front: bool = False) -> Service:
    port = _free_port()
    args = [sys.executable, "-m", "server.cli", "serve", "--grpc-port", str(port), "--metrics-port", "0",
            "--data-dir", str(data_dir), *(["--grpc-front"] if front else [])]
    for feed in feeds or ("sim:seed=7,rate=3000",):
        args += ["--feed", feed]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    service = Service(proc, port)
    try:
        service.wait_serving()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return service


@pytest.fixture(scope="module", params=MODES)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(tmp_path_factory.mktemp("data"), front=request.param == "front")
    time.sleep(1.5)  # let the simulator trade for a moment
    yield svc
    svc.stop()


def test_snapshots(service: Service) -> None:
    instruments = service.md.ListInstruments(pb.ListInstrumentsRequest()).instruments
    symbols = {i.symbol for i in instruments}
    assert {"BTC/USD", "BTC-PERP", "AAPL", "EUR/USD"} <= symbols
    nbbo = service.md.GetNbbo(pb.GetNbboRequest(symbol="BTC/USD")).nbbo
    assert nbbo.bid_price > 0 and nbbo.ask_price > 0 and nbbo.bid_venue and nbbo.ask_venue
    assert nbbo.ts_recv_ns >= nbbo.ts_event_ns > 0
    book = service.md.GetOrderBook(pb.GetOrderBookRequest(symbol="BTC/USD", venue="kraken", depth=5)).venue_book
    assert len(book.bids) == 5 and len(book.asks) == 5
    assert book.bids[0].price > book.bids[1].price and book.asks[0].price < book.asks[1].price
    cons = service.md.GetOrderBook(pb.GetOrderBookRequest(symbol="BTC/USD", depth=10)).consolidated_book
    assert len(cons.bids) == 10
    trades = service.md.GetRecentTrades(pb.GetRecentTradesRequest(symbol="BTC/USD", limit=5)).trades
    assert 0 < len(trades) <= 5
    assert [t.ts_recv_ns for t in trades] == sorted((t.ts_recv_ns for t in trades), reverse=True)  # newest first
    ticker = service.md.GetTicker(pb.GetTickerRequest(symbol="BTC/USD", venue="kraken")).ticker
    assert ticker.last > 0 and ticker.high >= ticker.low > 0
    candles = service.md.GetCandles(pb.GetCandlesRequest(
        symbol="BTC/USD", venue="kraken", interval=candle_pb2.CANDLE_INTERVAL_S1, limit=3)).candles
    assert candles and all(c.high >= c.low for c in candles)
    time.sleep(1.2)  # pricing is published once a second
    mark = service.md.GetMarkPrice(pb.GetMarkPriceRequest(symbol="BTC-PERP")).mark_price
    index = service.md.GetIndexPrice(pb.GetIndexPriceRequest(symbol="BTC/USD.INDEX")).index_price
    funding = service.md.GetFundingRate(pb.GetFundingRateRequest(symbol="BTC-PERP")).funding_rate
    assert mark.mark_price > 0 and index.price > 0 and funding.next_funding_time_ns > 0


@pytest.mark.parametrize(("request_", "code", "words"), [
    (pb.GetOrderBookRequest(symbol=""), grpc.StatusCode.INVALID_ARGUMENT, "symbol is required"),
    (pb.GetOrderBookRequest(symbol="NOPE/USD"), grpc.StatusCode.NOT_FOUND, "unknown symbol"),
    (pb.GetOrderBookRequest(symbol="BTC/USD", depth=100_000), grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
    (pb.GetOrderBookRequest(symbol="BTC/USD", venue="nowhere"), grpc.StatusCode.NOT_FOUND, "venue"),
    (pb.GetCandlesRequest(symbol="BTC/USD", venue="kraken"), grpc.StatusCode.INVALID_ARGUMENT, "interval"),
    (pb.GetCandlesRequest(symbol="BTC/USD", venue="kraken", interval=candle_pb2.CANDLE_INTERVAL_M1,
                          start_ns=10, end_ns=5), grpc.StatusCode.INVALID_ARGUMENT, "after"),
    (pb.GetTickerRequest(symbol="BTC/USD"), grpc.StatusCode.INVALID_ARGUMENT, "venue is required"),
])
def test_bad_requests_say_what_was_wrong(service: Service, request_: object, code: grpc.StatusCode,
                                         words: str) -> None:
    methods: dict[type, Any] = {
        pb.GetOrderBookRequest: service.md.GetOrderBook,
        pb.GetCandlesRequest: service.md.GetCandles,
        pb.GetTickerRequest: service.md.GetTicker,
    }
    method = methods[type(request_)]
    with pytest.raises(grpc.RpcError) as err:
        method(request_)
    assert err.value.code() == code
    assert words in (err.value.details() or "")


def test_prometheus_metrics(service: Service) -> None:
    assert service.proc.stdout is not None
    banner = service.proc.stdout.readline()
    port = int(banner.split("metrics on ")[1].split(",")[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    service.md.GetNbbo(pb.GetNbboRequest(symbol="BTC/USD"))
    time.sleep(1.1)  # gauges are refreshed once a second
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line.startswith("md_") and " " in line}
    assert samples["md_snapshot_latency_ms"] > 0
    assert samples["md_events_applied_total"] > 0
    for name in ("md_ingest_lag_ms", "md_seq_gap_total", "md_ws_clients", "md_snapshot_latency_ms",
                 "md_ohlcv_candles_closed_total", "md_index_price_source_staleness_ms", "md_stream_subscribers",
                 "md_stream_queued_updates", "md_rpc_total", "md_events_applied_total", "md_feed_up",
                 "md_storage_unencoded_records",
                 "md_feed_last_event_age_ms", "md_feed_events_total", "md_feed_dead_letters_total"):
        assert name in text, name
    assert samples['md_feed_up{feed="simulator"}'] == 1
    assert samples['md_feed_events_total{feed="simulator"}'] > 0


def test_feed_status(service: Service) -> None:
    (feed,) = service.md.GetFeedStatus(pb.GetFeedStatusRequest()).feeds
    assert feed.name == "simulator" and feed.kind == "sim"
    assert feed.state == feed_pb2.FEED_STATE_LIVE
    assert feed.events > 0 and 0 <= feed.last_event_age_ms < 5_000
    assert feed.dead_letters == 0 and "events/s" in feed.detail


def test_alert_crud(service: Service) -> None:
    created = service.alerts.CreateAlert(alert_service_pb2.CreateAlertRequest(
        symbol="BTC/USD", condition=alert_pb2.ALERT_CONDITION_PRICE_ABOVE, threshold=10**18)).alert
    assert created.alert_id
    got = service.alerts.GetAlert(alert_service_pb2.GetAlertRequest(alert_id=created.alert_id)).alert
    assert got.threshold == 10**18
    listed = service.alerts.ListAlerts(alert_service_pb2.ListAlertsRequest(symbol="BTC/USD")).alerts
    assert created.alert_id in {a.alert_id for a in listed}
    deleted = service.alerts.DeleteAlert(alert_service_pb2.DeleteAlertRequest(alert_id=created.alert_id)).alert
    assert deleted.alert_id == created.alert_id
    with pytest.raises(grpc.RpcError) as err:
        service.alerts.GetAlert(alert_service_pb2.GetAlertRequest(alert_id=created.alert_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        service.alerts.CreateAlert(alert_service_pb2.CreateAlertRequest(symbol="BTC/USD", threshold=1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:  # a mark price exists for perpetuals only
        service.alerts.CreateAlert(alert_service_pb2.CreateAlertRequest(
            symbol="BTC/USD", condition=alert_pb2.ALERT_CONDITION_PRICE_ABOVE, threshold=10**18,
            source=alert_pb2.ALERT_PRICE_SOURCE_MARK))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "perpetual" in (err.value.details() or "")


@pytest.mark.parametrize("mode", MODES)
def test_graceful_stop_and_restart(tmp_path: Path, mode: str) -> None:
    """Stop with SIGTERM (exit 0 within the grace), start again on the same data: what was stored is there."""
    svc = start_service(tmp_path, front=mode == "front")
    try:
        time.sleep(3.0)
        request = pb.GetCandlesRequest(symbol="BTC/USD", venue="kraken", interval=candle_pb2.CANDLE_INTERVAL_S1,
                                       limit=100)
        before = [c for c in svc.md.GetCandles(request).candles if c.closed]
        assert len(before) >= 2
    finally:
        started = time.monotonic()
        assert svc.stop() == 0
    assert time.monotonic() - started < 15
    again = start_service(tmp_path, front=mode == "front")  # the same data directory opens again
    try:
        window = pb.GetCandlesRequest(symbol="BTC/USD", venue="kraken", interval=candle_pb2.CANDLE_INTERVAL_S1,
                                      start_ns=before[0].open_time_ns, end_ns=before[-1].close_time_ns, limit=1000)
        after = again.md.GetCandles(window).candles
        assert [(c.open_time_ns, c.open, c.high, c.low, c.close, c.trade_count) for c in after] == [
            (c.open_time_ns, c.open, c.high, c.low, c.close, c.trade_count) for c in before]
        assert again.md.GetNbbo(pb.GetNbboRequest(symbol="ETH/USD")).nbbo.bid_price > 0
    finally:
        assert again.stop() == 0


def _grpcurl() -> str | None:
    found = shutil.which("grpcurl")
    if found:
        return found
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=False).stdout.strip()
    candidate = Path(gopath) / "bin" / "grpcurl"
    return str(candidate) if candidate.exists() else None


def test_grpcurl_through_reflection(service: Service) -> None:
    """What the README shows: grpcurl finds the services by reflection and calls them with JSON."""
    grpcurl = _grpcurl()
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (scripts/tools.sh installs it)")
    target = f"127.0.0.1:{service.port}"
    listed = subprocess.run([grpcurl, "-plaintext", target, "list"], capture_output=True, text=True, check=True)
    assert "marketdata.v1.MarketDataService" in listed.stdout and "grpc.health.v1.Health" in listed.stdout
    got = subprocess.run([grpcurl, "-plaintext", "-d", '{"symbol": "BTC/USD"}', target,
                          "marketdata.v1.MarketDataService/GetNbbo"], capture_output=True, text=True, check=True)
    nbbo = json.loads(got.stdout)["nbbo"]
    assert nbbo["symbol"] == "BTC/USD" and int(nbbo["bid_price"]) > 0  # int64 as a JSON string, exact
    bad = subprocess.run([grpcurl, "-plaintext", "-d", '{"symbol": "BTC/USD", "depth": 100000}', target,
                          "marketdata.v1.MarketDataService/GetOrderBook"], check=False, capture_output=True, text=True)
    assert bad.returncode != 0 and "InvalidArgument" in bad.stderr and "out of range" in bad.stderr
