"""mds_client: exact number conversions, string enums, error mapping, and every facade method
against a real ``mds serve`` subprocess (started like tests/e2e/test_serve.py does)."""

from __future__ import annotations

import asyncio
import decimal
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import grpc.aio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from marketdata.v1 import (
    alert_pb2,
    alert_service_pb2,
    book_pb2,
    candle_pb2,
    common_pb2,
    instrument_pb2,
    market_data_service_pb2,
    ticker_pb2,
    trade_pb2,
)
from mds_client import (
    ALERT_CONDITIONS,
    ALERT_SOURCES,
    INTERVALS,
    Candle,
    ConsolidatedBook,
    MarketDataClient,
    MdsError,
    OrderBook,
    Ticker,
    Trade,
    from_decimal_pb,
    from_fixed,
    from_rpc_error,
    interval_from_pb,
    interval_to_pb,
    to_decimal_pb,
    to_fixed,
)
from mds_client.enums import condition_from_pb, condition_to_pb, enum_name, source_from_pb, source_to_pb

from tests.e2e.test_serve import Service, start_service

ROOT = Path(__file__).resolve().parents[2]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NANOS_MAX = 999_999_999
# A context wide enough that the reference arithmetic below is exact for every tested value.
EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.Rounded])


def reference(units_times_1e9: int) -> Decimal:
    """The exact value of a 1e-9 fixed-point integer, computed by plain (trapped-exact) division."""
    return EXACT.divide(Decimal(units_times_1e9), Decimal(10**9))


# -- numbers ------------------------------------------------------------------------------------


@given(st.integers(INT64_MIN, INT64_MAX))
def test_fixed_round_trip_over_int64(x: int) -> None:
    value = from_fixed(x)
    assert value == reference(x)
    assert to_fixed(value) == x
    assert to_fixed(str(value)) == x


@given(st.decimals(min_value=Decimal(INT64_MIN).scaleb(-9), max_value=Decimal(INT64_MAX).scaleb(-9), places=9,
                   allow_nan=False, allow_infinity=False))
def test_decimals_with_nine_places_round_trip(value: Decimal) -> None:
    assert from_fixed(to_fixed(value)) == value


def test_fixed_examples() -> None:
    assert from_fixed(1_500_000_000) == Decimal("1.5")
    assert str(from_fixed(1_500_000_000)) == "1.500000000"
    assert from_fixed(-1) == Decimal("-0.000000001")
    assert from_fixed(INT64_MAX) == Decimal("9223372036.854775807")
    assert from_fixed(INT64_MIN) == Decimal("-9223372036.854775808")
    assert to_fixed("0.01") == 10_000_000
    assert to_fixed(Decimal("-0.000000001")) == -1
    assert to_fixed(7) == 7_000_000_000
    assert to_fixed("1e3") == 10**12
    assert to_fixed("1.5000000000000") == 1_500_000_000  # trailing zeros past 1e-9 are exact
    assert to_fixed("-0") == 0
    assert to_fixed(" 2.5 ") == 2_500_000_000
    assert to_fixed("9223372036.854775807") == INT64_MAX
    assert to_fixed("-9223372036.854775808") == INT64_MIN


@pytest.mark.parametrize("bad", ["0.0000000001", "1.0000000001", "1e-10", "9223372036.854775808",
                                 "-9223372036.854775809", "1e400", "nan", "-inf", "sNaN", "abc", ""])
def test_to_fixed_refuses_rather_than_rounds(bad: str) -> None:
    with pytest.raises(ValueError):
        to_fixed(bad)


@pytest.mark.parametrize("bad", [0.5, True, None, b"1"])
def test_to_fixed_refuses_floats_and_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError):
        to_fixed(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_fixed(bad)  # type: ignore[arg-type]


def test_conversions_ignore_the_decimal_context() -> None:
    with decimal.localcontext(decimal.Context(prec=3, rounding=decimal.ROUND_FLOOR,
                                              traps=[decimal.Inexact, decimal.Rounded])):
        assert from_fixed(INT64_MAX) == Decimal("9223372036.854775807")
        assert to_fixed("9223372036.854775807") == INT64_MAX
        msg = common_pb2.Decimal(units=INT64_MIN, nanos=-NANOS_MAX)
        assert from_decimal_pb(msg) == Decimal("-9223372036854775808.999999999")


decimal_messages = st.one_of(
    st.builds(lambda u, n: common_pb2.Decimal(units=u, nanos=n), st.integers(0, INT64_MAX), st.integers(0, NANOS_MAX)),
    st.builds(lambda u, n: common_pb2.Decimal(units=u, nanos=n), st.integers(INT64_MIN, 0),
              st.integers(-NANOS_MAX, 0)),
)


@given(decimal_messages)
def test_decimal_messages_exact_and_round_trip(msg: common_pb2.Decimal) -> None:
    value = from_decimal_pb(msg)
    assert value == EXACT.add(Decimal(msg.units), reference(msg.nanos))
    back = to_decimal_pb(value)
    assert (back.units, back.nanos) == (msg.units, msg.nanos)


@pytest.mark.parametrize(("units", "nanos", "expected"), [
    (1, 500_000_000, "1.5"),
    (0, -250_000_000, "-0.25"),  # the examples of common.proto
    (-2, -750_000_000, "-2.75"),
    (-7, 0, "-7"),
    (0, -1, "-0.000000001"),
    (INT64_MIN, -NANOS_MAX, "-9223372036854775808.999999999"),
    (INT64_MAX, NANOS_MAX, "9223372036854775807.999999999"),
])
def test_decimal_messages_with_negative_values(units: int, nanos: int, expected: str) -> None:
    msg = common_pb2.Decimal(units=units, nanos=nanos)
    assert from_decimal_pb(msg) == Decimal(expected)
    assert to_decimal_pb(Decimal(expected)) == msg
    assert to_decimal_pb(expected) == msg


@pytest.mark.parametrize(("units", "nanos"), [(1, -1), (-1, 1), (0, 1_000_000_000), (0, -1_000_000_000)])
def test_malformed_decimal_messages_are_refused(units: int, nanos: int) -> None:
    with pytest.raises(ValueError):
        from_decimal_pb(common_pb2.Decimal(units=units, nanos=nanos))


def test_to_decimal_pb_range() -> None:
    with pytest.raises(ValueError, match="decimal places"):
        to_decimal_pb("0.0000000001")
    with pytest.raises(ValueError, match="range"):
        to_decimal_pb(Decimal(INT64_MAX) + 1)


# -- enums --------------------------------------------------------------------------------------


def test_interval_mapping_covers_the_enum() -> None:
    assert list(INTERVALS) == ["1s", "1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w", "1M"]
    assert sorted(INTERVALS.values()) == [v for k, v in candle_pb2.CandleInterval.items()
                                          if k != "CANDLE_INTERVAL_UNSPECIFIED"]
    for name, number in INTERVALS.items():
        assert interval_to_pb(name) == number
        assert interval_from_pb(number) == name
    assert interval_to_pb("1m") == candle_pb2.CANDLE_INTERVAL_M1
    assert interval_to_pb("1M") == candle_pb2.CANDLE_INTERVAL_MN1
    assert interval_to_pb("1w") == candle_pb2.CANDLE_INTERVAL_W1


@pytest.mark.parametrize("bad", ["2m", "1H", "60s", "", "m1", "CANDLE_INTERVAL_M1"])
def test_unknown_interval_lists_the_valid_ones(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown candle interval") as err:
        interval_to_pb(bad)
    for name in INTERVALS:
        assert repr(name) in str(err.value)


def test_interval_from_pb_rejects_unspecified() -> None:
    with pytest.raises(ValueError, match="valid"):
        interval_from_pb(candle_pb2.CANDLE_INTERVAL_UNSPECIFIED)


def test_alert_names() -> None:
    assert set(ALERT_CONDITIONS) == {"price_above", "price_below", "change_pct_above", "change_pct_below"}
    assert set(ALERT_SOURCES) == {"last_trade", "nbbo_mid", "mark"}
    for name, number in ALERT_CONDITIONS.items():
        assert condition_to_pb(name) == number and condition_from_pb(number) == name
    for name, source in ALERT_SOURCES.items():
        assert source_to_pb(name) == source and source_from_pb(source) == name
    with pytest.raises(ValueError, match="'price_above'"):
        condition_to_pb("above")
    with pytest.raises(ValueError, match="'nbbo_mid'"):
        source_to_pb("mid")


def test_enum_names() -> None:
    assert enum_name(common_pb2.Side, common_pb2.SIDE_SELL) == "sell"
    assert enum_name(instrument_pb2.AssetClass, instrument_pb2.ASSET_CLASS_PERPETUAL) == "perpetual"
    assert enum_name(book_pb2.BookStatus, book_pb2.BOOK_STATUS_AWAITING_RESYNC) == "awaiting_resync"
    assert enum_name(common_pb2.ExclusionReason, common_pb2.EXCLUSION_REASON_STALE) == "stale"
    assert enum_name(alert_pb2.AlertPriceSource, 0) == "unspecified"
    assert enum_name(common_pb2.Side, 42) == "unknown(42)"


# -- models -------------------------------------------------------------------------------------


def test_models_convert_negative_and_decimal_fields() -> None:
    ticker = Ticker.from_pb(ticker_pb2.Ticker(
        symbol="BTC/USD", venue="kraken", open=2_000_000_000, last=1_500_000_000, change=-500_000_000,
        change_pct=-25_000_000_000, volume=common_pb2.Decimal(units=12_345_678_901_234, nanos=5),
        quote_volume=common_pb2.Decimal(units=0, nanos=-1), trade_count=3))
    assert ticker.change == Decimal("-0.5") and ticker.change_pct == Decimal("-25")
    assert ticker.volume == Decimal("12345678901234.000000005")
    assert ticker.quote_volume == Decimal("-1e-9")
    assert ticker.trade_count == 3
    trade = Trade.from_pb(trade_pb2.Trade(price=123_456_789_012, size=1, side=common_pb2.SIDE_BUY))
    assert (trade.price, trade.size, trade.side) == (Decimal("123.456789012"), Decimal("1e-9"), "buy")
    candle = Candle.from_pb(candle_pb2.Candle(interval=candle_pb2.CANDLE_INTERVAL_H4, open=-1))
    assert candle.interval == "4h" and candle.open == Decimal("-0.000000001")
    assert Candle.from_pb(candle_pb2.Candle(interval=candle_pb2.CandleInterval.ValueType(99))).interval == "unknown(99)"
    with pytest.raises(AttributeError):
        trade.price = Decimal(1)  # type: ignore[misc]  # frozen


# -- errors -------------------------------------------------------------------------------------


def _rpc_error(code: grpc.StatusCode, details: str | None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details,
                                 debug_error_string=None)


@pytest.mark.parametrize(("code", "details"), [
    (grpc.StatusCode.NOT_FOUND, "unknown symbol 'NOPE/USD'"),
    (grpc.StatusCode.INVALID_ARGUMENT, "depth 100000 out of range"),
    (grpc.StatusCode.UNAVAILABLE, None),
])
def test_error_mapping(code: grpc.StatusCode, details: str | None) -> None:
    err = from_rpc_error(_rpc_error(code, details))
    assert isinstance(err, MdsError)
    assert err.code == code.name
    assert err.message == (details or "")
    assert err.status is code
    assert str(err) == (f"{code.name}: {details}" if details else code.name)
    assert repr(err) == f"MdsError(code={code.name!r}, message={details or ''!r})"


def test_error_mapping_of_a_bare_rpc_error() -> None:
    err = from_rpc_error(grpc.RpcError("no call attached"))
    assert (err.code, err.message, err.status) == ("UNKNOWN", "", grpc.StatusCode.UNKNOWN)
    assert MdsError("SOMETHING_NEW", "x").status is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_transport_errors_become_mds_error() -> None:
    async def scenario() -> MdsError:
        async with MarketDataClient(f"127.0.0.1:{_free_port()}", timeout=2) as client:
            with pytest.raises(MdsError) as err:
                await client.nbbo("BTC/USD")
            return err.value

    err = asyncio.run(scenario())
    assert err.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert isinstance(err.__cause__, grpc.aio.AioRpcError)


def test_unconnected_client_says_so() -> None:
    client = MarketDataClient()
    for attribute in ("stub", "alerts_stub", "channel"):
        with pytest.raises(RuntimeError, match="not connected"):
            getattr(client, attribute)
    with pytest.raises(RuntimeError, match="not connected"):
        asyncio.run(client.health())


def test_bad_arguments_fail_before_any_call() -> None:
    async def scenario() -> None:
        async with MarketDataClient(f"127.0.0.1:{_free_port()}") as client:
            with pytest.raises(ValueError, match="'1m'"):
                await client.candles("BTC/USD", "kraken", "1min")
            with pytest.raises(ValueError, match="'price_below'"):
                await client.create_alert("BTC/USD", "below", Decimal(1))
            with pytest.raises(ValueError, match="decimal places"):
                await client.create_alert("BTC/USD", "price_below", Decimal("0.0000000001"))
            with pytest.raises(TypeError):
                await client.create_alert("BTC/USD", "price_below", 1.5)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="'crypto'"):
                await client.list_instruments(asset_class="crypto-ish")

    asyncio.run(scenario())


# -- against a running service ------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(tmp_path_factory.mktemp("data"))
    time.sleep(2.2)  # let the simulator trade, and pricing (published once a second) run
    yield svc
    assert svc.stop() == 0


def test_snapshots_through_the_facade(service: Service) -> None:
    async def scenario() -> None:
        async with MarketDataClient(service.target, timeout=10,
                                    channel_options=[("grpc.max_receive_message_length", 16 << 20)]) as client:
            await client.wait_ready(10)
            assert await client.health() == "SERVING"
            assert await client.health("marketdata.v1.MarketDataService") == "SERVING"

            instruments = await client.list_instruments()
            by_symbol = {i.symbol: i for i in instruments}
            assert {"BTC/USD", "BTC-PERP", "AAPL", "EUR/USD"} <= set(by_symbol)
            raw = (await client.stub.ListInstruments(market_data_service_pb2.ListInstrumentsRequest())).instruments
            for msg in raw:  # exact both ways against the wire integers
                inst = by_symbol[msg.symbol]
                assert to_fixed(inst.tick_size) == msg.tick_size and to_fixed(inst.lot_size) == msg.lot_size
            btc = by_symbol["BTC/USD"]
            assert btc.asset_class == "crypto" and btc.tick_size > 0 and "kraken" in btc.venues
            assert by_symbol["BTC-PERP"].asset_class == "perpetual" and by_symbol["BTC-PERP"].underlying
            perps = await client.list_instruments(asset_class="perpetual")
            assert perps and all(i.asset_class == "perpetual" for i in perps)

            book = await client.order_book("BTC/USD", "kraken", depth=5)
            assert isinstance(book, OrderBook) and book.venue == "kraken" and book.status == "consistent"
            assert len(book.bids) == 5 and len(book.asks) == 5
            assert book.bids[0].price > book.bids[1].price and book.asks[0].price < book.asks[1].price
            for level in (*book.bids, *book.asks):
                assert level.price % btc.tick_size == 0 and level.size > 0
            cons = await client.order_book("BTC/USD", depth=10)
            assert isinstance(cons, ConsolidatedBook) and len(cons.bids) == 10
            for clevel in (*cons.bids, *cons.asks):
                assert clevel.size == sum((vs.size for vs in clevel.venue_sizes), Decimal(0))

            nbbo = await client.nbbo("BTC/USD")
            assert nbbo.symbol == "BTC/USD" and nbbo.bid_price > 0 and nbbo.ask_price > 0
            assert nbbo.bid_venue and nbbo.ask_venue and nbbo.spread == nbbo.ask_price - nbbo.bid_price
            assert nbbo.ts_recv_ns >= nbbo.ts_event_ns > 0

            trades = await client.recent_trades("BTC/USD", limit=5)
            assert 0 < len(trades) <= 5
            assert all(t.side in {"buy", "sell", "unspecified"} and t.price % btc.tick_size == 0 for t in trades)
            kraken_trades = await client.recent_trades("BTC/USD", "kraken", limit=3)
            assert kraken_trades and all(t.venue == "kraken" for t in kraken_trades)

            ticker = await client.ticker("BTC/USD", "kraken")
            assert ticker.last > 0 and ticker.high >= ticker.low > 0 and ticker.trade_count > 0
            assert ticker.change == ticker.last - ticker.open
            assert isinstance(ticker.volume, Decimal) and ticker.volume > 0

            candles = await client.candles("BTC/USD", "kraken", "1s", limit=3)
            assert 0 < len(candles) <= 3
            assert all(c.interval == "1s" and c.high >= c.low and c.close_time_ns - c.open_time_ns == 10**9
                       for c in candles)
            assert all(c.buy_volume + c.sell_volume <= c.volume for c in candles)
            ranged = await client.candles("BTC/USD", "kraken", "1m", start_ns=candles[0].open_time_ns - 60 * 10**9)
            assert ranged and all(c.interval == "1m" for c in ranged)

            index = await client.index_price("BTC/USD.INDEX")
            assert index.price > 0 and index.components
            assert sum((c.weight for c in index.components if c.included), Decimal(0)) == pytest.approx(Decimal(1))
            mark = await client.mark_price("BTC-PERP")
            assert mark.mark_price > 0 and mark.mark_price == mark.index_price + mark.premium_ema
            funding = await client.funding_rate("BTC-PERP")
            assert funding.next_funding_time_ns > 0 and funding.interval_ns > 0
            assert isinstance(funding.rate, Decimal)
            (feed,) = await client.feed_status()
            assert feed.kind == "sim" and feed.state == "live" and feed.events > 0
            assert feed.last_event_age_ms is not None and feed.dead_letters == 0

            # The raw stubs stay available (e.g. for streams) and agree with the facade.
            raw_nbbo = (await client.stub.GetNbbo(market_data_service_pb2.GetNbboRequest(symbol="EUR/USD"))).nbbo
            assert raw_nbbo.bid_price > 0

    asyncio.run(scenario())


def test_alert_crud_through_the_facade(service: Service) -> None:
    async def scenario() -> None:
        async with MarketDataClient(service.target, timeout=10) as client:
            threshold = Decimal("1234567.891234567")
            created = await client.create_alert("BTC/USD", "price_above", threshold)
            assert created.alert_id and created.created_ns > 0 and not created.triggered
            assert (created.symbol, created.condition, created.source) == ("BTC/USD", "price_above", "last_trade")
            assert created.threshold == threshold
            raw = await client.alerts_stub.GetAlert(alert_service_pb2.GetAlertRequest(alert_id=created.alert_id))
            assert raw.alert.threshold == 1_234_567_891_234_567  # exactly threshold * 10**9 on the wire
            assert await client.get_alert(created.alert_id) == created

            pct = await client.create_alert("BTC/USD", "change_pct_below", "-2.5", "nbbo_mid", venue="kraken")
            assert (pct.condition, pct.source, pct.venue, pct.threshold) == (
                "change_pct_below", "nbbo_mid", "kraken", Decimal("-2.5"))
            mark = await client.create_alert("BTC-PERP", "price_below", 1, source="mark")
            assert mark.source == "mark" and mark.threshold == 1

            listed = await client.list_alerts("BTC/USD")
            assert {created.alert_id, pct.alert_id} <= {a.alert_id for a in listed}
            assert all(a.symbol == "BTC/USD" for a in listed)
            everything = await client.list_alerts(include_triggered=True)
            assert {created.alert_id, pct.alert_id, mark.alert_id} <= {a.alert_id for a in everything}

            for alert in (created, pct, mark):
                deleted = await client.delete_alert(alert.alert_id)
                assert deleted is None or deleted.alert_id == alert.alert_id
            with pytest.raises(MdsError) as err:
                await client.get_alert(created.alert_id)
            assert err.value.code == "NOT_FOUND"
            with pytest.raises(MdsError) as err:
                await client.delete_alert(created.alert_id)
            assert err.value.code == "NOT_FOUND"
            assert created.alert_id not in {a.alert_id for a in await client.list_alerts(include_triggered=True)}
            with pytest.raises(MdsError) as err:
                await client.create_alert("", "price_above", 1)
            assert (err.value.code, err.value.message) == ("INVALID_ARGUMENT", "symbol is required")

    asyncio.run(scenario())


def test_service_errors_become_mds_error(service: Service) -> None:
    async def scenario() -> list[MdsError]:
        errors: list[MdsError] = []
        async with MarketDataClient(service.target, timeout=10) as client:
            for call in (
                client.nbbo("NOPE/USD"),
                client.order_book(""),
                client.order_book("BTC/USD", depth=100_000),
                client.order_book("BTC/USD", "nowhere"),
                client.candles("BTC/USD", "kraken", "1m", start_ns=10, end_ns=5),
                client.ticker("BTC/USD", ""),
                client.mark_price("BTC/USD"),
            ):
                with pytest.raises(MdsError) as err:
                    await call
                assert isinstance(err.value.__cause__, grpc.RpcError)
                errors.append(err.value)
            with pytest.raises(MdsError) as err:
                await client.health("no.such.Service")
            errors.append(err.value)
        return errors

    errors = asyncio.run(scenario())
    expected = [
        ("NOT_FOUND", "unknown symbol"),
        ("INVALID_ARGUMENT", "symbol is required"),
        ("INVALID_ARGUMENT", "out of range"),
        ("NOT_FOUND", "venue"),
        ("INVALID_ARGUMENT", "after"),
        ("INVALID_ARGUMENT", "venue is required"),
        (None, ""),
        ("NOT_FOUND", ""),
    ]
    for err, (code, words) in zip(errors, expected, strict=True):
        if code is not None:
            assert err.code == code, err
        else:
            assert err.code in {"NOT_FOUND", "INVALID_ARGUMENT"}, err
        assert words in err.message
