"""CcxtFeedConfig specs, URL rewriting, and that the ten required exchanges are built by configuration."""

from __future__ import annotations

import asyncio

import pytest

from feeds.ccxt.feed import CONFIGURED_EXCHANGES, CcxtFeed, CcxtFeedConfig, CircuitBreaker, rewrite_urls


def test_spec_round_trip() -> None:
    cfg = CcxtFeedConfig.from_spec("ccxt:exchange=binance,symbols=BTC/USDT+ETH/USDT,channels=book+trades+ticker,"
                                   "depth=20,limit=1000,breaker=4,cooldown=10,idle=30,backoff=0.25,"
                                   "opt.watchTrades.name=aggTrade,opt.fetchMarkets.types=[spot|linear],"
                                   "opt.watchOrderBook.checksum=true")
    assert cfg.exchange == "binance" and cfg.symbols == ("BTC/USDT", "ETH/USDT")
    assert cfg.channels == ("book", "trades", "ticker") and cfg.depth == 20 and cfg.limit == 1000
    assert (cfg.breaker, cfg.cooldown, cfg.idle, cfg.backoff) == (4, 10.0, 30.0, 0.25)
    assert cfg.options == (("watchTrades.name", "aggTrade"), ("fetchMarkets.types", ["spot", "linear"]),
                           ("watchOrderBook.checksum", True))


@pytest.mark.parametrize("spec", [
    "ccxt:exchange=binance",  # no symbols
    "ccxt:symbols=BTC/USDT",  # no exchange
    "ccxt:exchange=nosuchvenue,symbols=BTC/USDT",
    "ccxt:exchange=binance,symbols=BTC/USDT,colour=red",  # unknown key
    "ccxt:exchange=binance,symbols=BTC/USDT,channels=book+candles",
    "ccxt:exchange=binance,symbols=BTC/USDT,depth=0",
    "ccxt:exchange=binance,symbols=BTC/USDT,depth=ten",
    "ccxt:exchange=binance,symbols=BTC/USDT,depth=5,depth=6",
    "ccxt:exchange=binance,symbols=BTC/USDT,url_base=ftp://x",
    "ccxt:exchange=binance,symbols=BTC/USDT,breaker",
    "sim:exchange=binance,symbols=BTC/USDT",
])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        CcxtFeedConfig.from_spec(spec)


def test_rewrite_urls_keeps_host_in_path() -> None:
    urls = {"api": {"ws": {"spot": "wss://stream.binance.com:9443/ws"}, "public": "https://api.binance.com/api/v3",
                    "other": ["https://x.com/a?b=1", 5, "not a url"]}}
    out = rewrite_urls(urls, "http://127.0.0.1:8123")
    assert out == {"api": {"ws": {"spot": "ws://127.0.0.1:8123/stream.binance.com:9443/ws"},
                           "public": "http://127.0.0.1:8123/api.binance.com/api/v3",
                           "other": ["http://127.0.0.1:8123/x.com/a?b=1", 5, "not a url"]}}


@pytest.mark.parametrize("exchange", CONFIGURED_EXCHANGES)
def test_each_required_exchange_is_built_by_configuration(exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"MDS_CCXT_{exchange.upper()}_API_KEY", "key-from-env")
    cfg = CcxtFeedConfig.from_spec(f"ccxt:exchange={exchange},symbols=BTC/USDT,channels=book+trades+ticker,"
                                   "url_base=http://127.0.0.1:9,opt.mdsTest.flag=true")
    feed = CcxtFeed(cfg)

    async def build() -> None:
        ex = feed.make_exchange()
        try:
            assert ex.id == exchange
            assert ex.apiKey == "key-from-env"
            assert ex.options["mdsTest"] == {"flag": True}
            for feature in ("watchOrderBook", "watchTrades", "watchTicker"):
                assert ex.has.get(feature), (exchange, feature)
            urls = [u for u in _strings(ex.urls["api"]) if "://" in u]
            assert urls and all(u.startswith(("http://127.0.0.1:9/", "ws://127.0.0.1:9/")) for u in urls)
        finally:
            await ex.close()
    asyncio.run(build())
    assert feed.name == f"ccxt:{exchange}" and not feed.warm and feed.health().state == "stopped"


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 10.0, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.wait_seconds() == 0
    breaker.record_failure()
    assert breaker.state == "open" and breaker.wait_seconds() == 10.0
    now[0] = 10.0
    assert breaker.wait_seconds() == 0 and breaker.state == "half-open"
    breaker.record_failure()  # the half-open attempt failed
    assert breaker.state == "open" and breaker.opened == 2
    now[0] = 25.0
    assert breaker.wait_seconds() == 0
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0
