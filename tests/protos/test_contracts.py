"""Contract tests of the generated marketdata.v1 Python package (protos/marketdata/v1/*.proto).

They check the conventions the API promises in common.proto, on the compiled descriptors:
integer fixed-point prices and sizes (never float/double), Decimal volumes, *_UNSPECIFIED enum zero
values, paired int64 event/receive timestamps, buf-style RPC message names and batched streams.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos" / "marketdata" / "v1"

try:
    import marketdata.v1
except ImportError:  # not installed (pip install -e clients/python): use the committed tree
    sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
    import marketdata.v1

from marketdata.v1 import (  # noqa: E402
    alert_service_pb2_grpc,
    book_pb2,
    candle_pb2,
    common_pb2,
    market_data_service_pb2,
    market_data_service_pb2_grpc,
    trade_pb2,
)

PACKAGE = "marketdata.v1"
SCALE = 10**9
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# The only floating-point field of the API: a playback speed multiplier, not market data.
ALLOWED_FLOATS = {"marketdata.v1.ReplayStreamRequest.speed"}
FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
NUMBER_WORDS = ("price", "size", "volume")
# Other fixed-point fields (prices, price changes, percents, rates, weights): sint64 at 1e-9.
FIXED_POINT_NAMES = {
    "open", "high", "low", "close", "last", "change", "change_pct", "vwap", "best_bid", "best_ask",
    "threshold", "weight", "rate", "premium_rate", "interest_rate", "premium_ema", "value", "reference",
}  # fmt: skip

M = TypeVar("M", bound=Message)


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(marketdata.v1.__path__))


def _modules() -> list[ModuleType]:
    return [importlib.import_module(f"marketdata.v1.{name}") for name in _module_names()]


def _files() -> list[FileDescriptor]:
    return [m.DESCRIPTOR for m in _modules() if m.__name__.endswith("_pb2")]


def _messages() -> Iterator[Descriptor]:
    def walk(desc: Descriptor) -> Iterator[Descriptor]:
        yield desc
        for nested in desc.nested_types:
            yield from walk(nested)

    for file in _files():
        for desc in file.message_types_by_name.values():
            yield from walk(desc)


def _enums() -> Iterator[EnumDescriptor]:
    for file in _files():
        yield from file.enum_types_by_name.values()
    for desc in _messages():
        yield from desc.enum_types


def _fields() -> Iterator[FieldDescriptor]:
    for desc in _messages():
        yield from desc.fields


def test_every_proto_has_generated_modules() -> None:
    protos = sorted(p.stem for p in PROTO_DIR.glob("*.proto"))
    assert protos, f"no .proto files in {PROTO_DIR}"
    expected = sorted([f"{stem}_pb2" for stem in protos] + [f"{stem}_pb2_grpc" for stem in protos])
    assert _module_names() == expected


def test_every_generated_module_imports() -> None:
    modules = _modules()
    assert len(modules) >= 22
    for module in modules:
        if module.__name__.endswith("_pb2"):
            assert module.DESCRIPTOR.package == PACKAGE
            assert module.DESCRIPTOR.name == f"marketdata/v1/{module.__name__.rsplit('.', 1)[1][:-4]}.proto"


def test_package_is_typed() -> None:
    package_dir = Path(marketdata.v1.__file__).parent
    assert (package_dir.parent / "py.typed").is_file()
    for name in _module_names():
        assert (package_dir / f"{name}.pyi").is_file(), f"{name}.pyi missing"


def test_services_and_stubs() -> None:
    services = {s.full_name: s for f in _files() for s in f.services_by_name.values()}
    assert set(services) == {"marketdata.v1.MarketDataService", "marketdata.v1.AlertService"}
    md = services["marketdata.v1.MarketDataService"]
    subscribe = md.methods_by_name["Subscribe"]
    assert subscribe.client_streaming and subscribe.server_streaming
    assert md.methods_by_name["ReplayStream"].server_streaming
    with grpc.insecure_channel("localhost:1") as channel:  # lazy: never connects
        for service, stub_class in (
            (md, market_data_service_pb2_grpc.MarketDataServiceStub),
            (services["marketdata.v1.AlertService"], alert_service_pb2_grpc.AlertServiceStub),
        ):
            stub = stub_class(channel)
            assert service.methods, service.full_name
            for method in service.methods:
                assert callable(getattr(stub, method.name)), f"{service.name}.{method.name}"


def test_rpc_messages_follow_buf_standard_names_and_are_unique() -> None:
    seen: set[str] = set()
    for file in _files():
        for service in file.services_by_name.values():
            for method in service.methods:
                for desc, suffix in ((method.input_type, "Request"), (method.output_type, "Response")):
                    allowed = {f"{method.name}{suffix}", f"{service.name}{method.name}{suffix}"}
                    assert desc.name in allowed, f"{service.name}.{method.name}: {desc.name}"
                    assert desc.full_name not in seen, f"{desc.full_name} used by two RPCs"
                    seen.add(desc.full_name)


def test_streaming_responses_are_sequenced_batches() -> None:
    for file in _files():
        for service in file.services_by_name.values():
            for method in service.methods:
                if not method.server_streaming or method.name == "Subscribe":
                    continue
                out = method.output_type
                seq = out.fields_by_name.get("sequence")
                assert seq is not None and seq.type == FieldDescriptor.TYPE_UINT64, out.full_name
                repeated = [f for f in out.fields if f.is_repeated and f.message_type is not None]
                assert len(repeated) == 1, f"{out.full_name} must carry one repeated update field"
    batch = market_data_service_pb2.MarketDataBatch.DESCRIPTOR
    assert batch.fields_by_name["sequence"].type == FieldDescriptor.TYPE_UINT64
    assert batch.fields_by_name["updates"].is_repeated


def test_no_float_or_double_outside_the_replay_speed() -> None:
    floats = {f.full_name for f in _fields() if f.type in FLOAT_TYPES}
    assert floats == ALLOWED_FLOATS


def test_price_size_volume_fields_are_fixed_point() -> None:
    checked = 0
    for field in _fields():
        name = field.name
        if name in FIXED_POINT_NAMES:
            assert field.type == FieldDescriptor.TYPE_SINT64, f"{field.full_name} must be sint64 at 1e-9"
            checked += 1
            continue
        if not any(word in name for word in NUMBER_WORDS):
            continue
        checked += 1
        assert field.type not in FLOAT_TYPES, f"{field.full_name} is floating point"
        if name.endswith("_decimals") or field.type == FieldDescriptor.TYPE_ENUM:
            continue  # display precision (uint32) / a choice of price, not a number
        if field.message_type is not None:
            if "volume" in name:
                assert field.message_type.full_name == "marketdata.v1.Decimal", field.full_name
            continue  # a message named after a price (e.g. MarkPrice mark_price) is not a number
        assert field.type == FieldDescriptor.TYPE_SINT64, f"{field.full_name} must be sint64 at 1e-9"
    assert checked > 60


def test_enum_zero_values_are_unspecified() -> None:
    enums = list(_enums())
    assert len(enums) >= 10
    for enum in enums:
        zero = enum.values_by_number[0].name
        assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: {zero}"
        assert enum.values[0].number == 0


def test_events_carry_both_int64_timestamps() -> None:
    events = [d for d in _messages() if "ts_event_ns" in d.fields_by_name]
    names = {d.name for d in events}
    assert {"Trade", "BookSnapshot", "BookDelta", "BookGap", "Candle", "Ticker", "Nbbo"} <= names
    for desc in events:
        for ts in ("ts_event_ns", "ts_recv_ns"):
            field = desc.fields_by_name.get(ts)
            assert field is not None, f"{desc.full_name} lacks {ts}"
            assert field.type == FieldDescriptor.TYPE_INT64, f"{desc.full_name}.{ts} must be int64"
    for desc in _messages():
        assert "ts_recv_ns" not in desc.fields_by_name or "ts_event_ns" in desc.fields_by_name


def _decimal(value: int) -> common_pb2.Decimal:
    """A 1e-9 fixed-point int as Decimal (same-sign units and nanos)."""
    units, nanos = divmod(abs(value), SCALE)
    if value < 0:
        units, nanos = -units, -nanos
    return common_pb2.Decimal(units=units, nanos=nanos)


def _roundtrip(msg: M) -> M:
    """Binary and JSON round trips give back an equal message (and the same bytes)."""
    data = msg.SerializeToString(deterministic=True)
    back = type(msg)()
    back.ParseFromString(data)
    assert back == msg
    assert back.SerializeToString(deterministic=True) == data
    assert json_format.Parse(json_format.MessageToJson(msg), type(msg)()) == msg
    return back


def test_book_update_delta_roundtrip() -> None:
    delta = book_pb2.BookDelta(
        venue="coinbase",
        symbol="BTC/USD",
        sequence=42,
        venue_sequence=9_876_543_210,
        bids=[book_pb2.PriceLevel(price=64_250_120_000_000, size=1_500_000_000)],
        asks=[
            book_pb2.PriceLevel(price=64_250_130_000_000, size=0),  # delete
            book_pb2.PriceLevel(price=INT64_MAX, size=1),
        ],
        ts_event_ns=1_700_000_000_123_456_789,
        ts_recv_ns=1_700_000_000_124_000_000,
    )
    update = book_pb2.BookUpdate(delta=delta)
    back = _roundtrip(update)
    assert back.WhichOneof("update") == "delta"
    assert back.delta.asks[0].size == 0
    assert back.delta.asks[1].price == INT64_MAX
    assert back.delta.bids[0].price == 64_250_120_000_000

    gap = _roundtrip(book_pb2.BookUpdate(gap=book_pb2.BookGap(venue="kraken", symbol="BTC/USD", sequence=43)))
    assert gap.WhichOneof("update") == "gap"


def test_sint64_keeps_negative_values_small() -> None:
    neg = book_pb2.PriceLevel(price=-1, size=INT64_MIN).SerializeToString()
    pos = book_pb2.PriceLevel(price=1, size=INT64_MAX).SerializeToString()
    assert len(neg) == len(pos)  # zigzag: -1 costs what +1 costs


def test_candle_with_decimal_volume_roundtrip() -> None:
    # 20 billion units: beyond int64 at scale 1e-9, hence Decimal.
    volume = 20_000_000_000 * SCALE + 123_456_789
    assert volume > INT64_MAX
    candle = candle_pb2.Candle(
        venue="binance",
        symbol="1000PEPE/USDT",
        interval=candle_pb2.CANDLE_INTERVAL_M1,
        open_time_ns=1_700_000_040_000_000_000,
        close_time_ns=1_700_000_100_000_000_000,
        open=12_345,
        high=12_400,
        low=12_300,
        close=12_350,
        volume=_decimal(volume),
        quote_volume=_decimal(246_913_578_000_000_000),
        buy_volume=_decimal(volume - 5 * SCALE),
        sell_volume=_decimal(5 * SCALE),
        trade_count=1_234,
        vwap=12_345,
        closed=True,
        correction=False,
        ts_event_ns=1_700_000_099_999_000_000,
        ts_recv_ns=1_700_000_100_000_500_000,
    )
    back = _roundtrip(candle)
    assert back.volume.units * SCALE + back.volume.nanos == volume
    assert back.interval == candle_pb2.CANDLE_INTERVAL_M1
    neg = _decimal(-2_750_000_000)
    assert (neg.units, neg.nanos) == (-2, -750_000_000)


def test_trade_roundtrip() -> None:
    trade = trade_pb2.Trade(
        venue="kraken",
        symbol="ETH/USD",
        trade_id="123456789",
        price=3_210_550_000_000,
        size=250_000_000,
        side=common_pb2.SIDE_SELL,
        ts_event_ns=1_700_000_000_000_000_001,
        ts_recv_ns=1_700_000_000_000_900_000,
    )
    back = _roundtrip(trade)
    assert back.side == common_pb2.SIDE_SELL
    assert back.price == 3_210_550_000_000


def test_subscribe_messages_roundtrip() -> None:
    md = market_data_service_pb2
    req = md.SubscribeRequest(
        subscribe=md.SubscriptionItems(
            items=[
                md.SubscriptionItem(
                    channel=md.CHANNEL_CANDLES, symbol="BTC/USD", interval=candle_pb2.CANDLE_INTERVAL_M1
                )
            ]
        )
    )
    assert _roundtrip(req).WhichOneof("action") == "subscribe"
    trade = trade_pb2.Trade(venue="coinbase", symbol="BTC/USD", price=1, size=1)
    resp = md.SubscribeResponse(
        batch=md.MarketDataBatch(sequence=7, updates=[md.MarketDataUpdate(trade=trade)] * 3)
    )
    back = _roundtrip(resp)
    assert back.WhichOneof("payload") == "batch"
    assert [u.WhichOneof("update") for u in back.batch.updates] == ["trade"] * 3


@pytest.mark.parametrize("name", ["SIDE_BUY", "SIDE_SELL"])
def test_side_values(name: str) -> None:
    assert common_pb2.Side.Value(name) in (1, 2)


def test_halt_and_book_hash_values() -> None:
    """Trading halts and book hash checks (added values; the numbers are part of the contract)."""
    from marketdata.v1 import quality_pb2, ticker_pb2

    assert book_pb2.BookStatus.Value("BOOK_STATUS_HALTED") == 4
    assert common_pb2.ExclusionReason.Value("EXCLUSION_REASON_HALTED") == 7
    assert [quality_pb2.QualityFlagKind.Value(n) for n in (
        "QUALITY_FLAG_KIND_TRADE_WHILE_HALTED", "QUALITY_FLAG_KIND_BOOK_CHANGE_WHILE_HALTED",
        "QUALITY_FLAG_KIND_BOOK_HASH_MISMATCH")] == [8, 9, 10]
    field = ticker_pb2.Ticker.DESCRIPTOR.fields_by_name["halted"]
    assert (field.number, field.type) == (18, FieldDescriptor.TYPE_BOOL)
    back = _roundtrip(ticker_pb2.Ticker(symbol="BTC/USD", venue="mx", halted=True))
    assert back.halted
