"""End to end: the server streams of a running `mds serve`, read with the typed stubs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from marketdata.v1 import candle_pb2, market_data_service_pb2

from tests.e2e.test_serve import MODES, Service, start_service

pb = market_data_service_pb2


@pytest.fixture(scope="module", params=MODES)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(tmp_path_factory.mktemp("data"), "sim:seed=11,rate=4000", front=request.param == "front")
    time.sleep(1.0)
    yield svc
    svc.stop()


def _read(stream: Any, seconds: float) -> list[Any]:
    """Messages received within ``seconds``, then the stream is cancelled."""
    got: list[Any] = []
    deadline = time.monotonic() + seconds
    for message in stream:
        got.append(message)
        if time.monotonic() > deadline:
            break
    stream.cancel()
    return got


def test_order_book_snapshot_then_contiguous_deltas(service: Service) -> None:
    stream = service.md.StreamOrderBook(pb.StreamOrderBookRequest(symbol="BTC/USD", venue="kraken", depth=10))
    messages = _read(stream, 2.0)
    assert len(messages) > 3
    last_seq: int | None = None
    deltas = 0
    for i, m in enumerate(messages):
        assert isinstance(m, pb.StreamOrderBookResponse)
        assert m.sequence == i + 1  # the stream's own sequence is contiguous
        for u in m.updates:
            kind = u.WhichOneof("update")
            if kind == "snapshot":
                assert u.snapshot.venue == "kraken" and len(u.snapshot.bids) == 10
                last_seq = u.snapshot.sequence
            elif kind == "delta":
                assert last_seq is not None, "a delta before any snapshot"
                assert u.delta.sequence == last_seq + 1, "book sequence must be contiguous"
                last_seq = u.delta.sequence
                deltas += 1
    assert messages[0].updates[0].WhichOneof("update") == "snapshot"
    assert deltas > 10


def test_trades_nbbo_and_candles_stream(service: Service) -> None:
    trades = _read(service.md.StreamTrades(pb.StreamTradesRequest(symbols=["ETH/USD"])), 1.5)
    assert trades and all(t.symbol == "ETH/USD" for m in trades for t in m.trades)
    nbbo = _read(service.md.StreamNbbo(pb.StreamNbboRequest(symbols=["BTC/USD", "AAPL"])), 1.0)
    symbols = {n.symbol for m in nbbo for n in m.nbbos}
    assert symbols == {"BTC/USD", "AAPL"}
    candles = _read(service.md.StreamCandles(pb.StreamCandlesRequest(
        symbols=["BTC/USD"], venue="kraken", interval=candle_pb2.CANDLE_INTERVAL_S1)), 2.5)
    got = [c for m in candles for c in m.candles]
    assert got and all(c.high >= c.low for c in got)
    assert any(c.closed for c in got)


def test_ticker_and_pricing_stream(service: Service) -> None:
    tickers = _read(service.md.StreamTicker(pb.StreamTickerRequest(symbols=["BTC/USD"], venue="kraken")), 2.2)
    assert any(t.last > 0 for m in tickers for t in m.tickers)
    marks = _read(service.md.StreamMarkPrice(pb.StreamMarkPriceRequest(symbols=["BTC-PERP"])), 1.5)
    assert any(p.mark_price > 0 for m in marks for p in m.mark_prices)
    funding = _read(service.md.StreamFundingRate(pb.StreamFundingRateRequest(symbols=["ETH-PERP"])), 1.5)
    assert any(f.next_funding_time_ns > 0 for m in funding for f in m.funding_rates)


@pytest.mark.parametrize(("call", "code"), [
    (lambda md: md.StreamTrades(pb.StreamTradesRequest()), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda md: md.StreamTrades(pb.StreamTradesRequest(symbols=["NOPE"])), grpc.StatusCode.NOT_FOUND),
    (lambda md: md.StreamOrderBook(pb.StreamOrderBookRequest(symbol="BTC/USD", depth=10**6)),
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda md: md.StreamCandles(pb.StreamCandlesRequest(symbols=["BTC/USD"], venue="kraken")),
     grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_stream_requests(service: Service, call: object, code: grpc.StatusCode) -> None:
    stream = call(service.md)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stream))
    assert err.value.code() == code
    assert err.value.details()


@pytest.mark.parametrize("mode", MODES)
def test_graceful_stop_ends_open_streams_with_a_status(tmp_path: Path, mode: str) -> None:
    svc = start_service(tmp_path, "sim:seed=3,rate=2000", front=mode == "front")
    stream = svc.md.StreamTrades(pb.StreamTradesRequest(symbols=["BTC/USD"]))
    next(iter(stream))
    svc.proc.send_signal(__import__("signal").SIGTERM)
    with pytest.raises(grpc.RpcError) as err:
        for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert svc.proc.wait(timeout=30) == 0


def test_subscribe_multiplexed_with_statuses_and_pong(service: Service) -> None:
    def items(*specs: tuple[Any, str, str, int]) -> pb.SubscriptionItems:
        return pb.SubscriptionItems(items=[
            pb.SubscriptionItem(channel=c, symbol=s, venue=v, depth=d) for c, s, v, d in specs])

    def requests() -> Iterator[pb.SubscribeRequest]:
        yield pb.SubscribeRequest(subscribe=items(
            (pb.CHANNEL_TRADES, "BTC/USD", "", 0),
            (pb.CHANNEL_BOOK, "ETH/USD", "kraken", 5),
            (pb.CHANNEL_NBBO, "AAPL", "", 0),
            (pb.CHANNEL_TRADES, "NOPE", "", 0),
            (pb.CHANNEL_BOOK, "BTC/USD", "kraken", 10**6),
            (pb.CHANNEL_CANDLES, "BTC/USD", "kraken", 0),
        ))
        yield pb.SubscribeRequest(ping=pb.Ping(nonce=42, client_time_ns=1))
        time.sleep(1.5)
        yield pb.SubscribeRequest(unsubscribe=items((pb.CHANNEL_TRADES, "BTC/USD", "", 0)))
        time.sleep(5)

    stream: Any = service.md.Subscribe(requests())
    statuses: dict[tuple[int, str], int] = {}
    pongs: list[int] = []
    kinds: set[str | None] = set()
    deadline = time.monotonic() + 3.0
    for response in stream:
        payload = response.WhichOneof("payload")
        if payload == "status":
            statuses[response.status.item.channel, response.status.item.symbol] = response.status.status
            if response.status.status not in (pb.SUBSCRIPTION_STATUS_OK, pb.SUBSCRIPTION_STATUS_UNSUBSCRIBED):
                assert response.status.message
        elif payload == "pong":
            pongs.append(response.pong.nonce)
            assert response.pong.server_time_ns > 0
        else:
            kinds.update(u.WhichOneof("update") for u in response.batch.updates)
        if time.monotonic() > deadline:
            break
    stream.cancel()
    assert statuses[pb.CHANNEL_TRADES, "NOPE"] == pb.SUBSCRIPTION_STATUS_UNKNOWN_SYMBOL
    assert statuses[pb.CHANNEL_BOOK, "BTC/USD"] == pb.SUBSCRIPTION_STATUS_INVALID_DEPTH
    assert statuses[pb.CHANNEL_CANDLES, "BTC/USD"] == pb.SUBSCRIPTION_STATUS_INVALID_INTERVAL
    assert statuses[pb.CHANNEL_BOOK, "ETH/USD"] == pb.SUBSCRIPTION_STATUS_OK
    assert statuses[pb.CHANNEL_TRADES, "BTC/USD"] == pb.SUBSCRIPTION_STATUS_UNSUBSCRIBED
    assert pongs == [42]
    assert {"trade", "book", "nbbo"} <= kinds
