"""String names for the API's enums: candle intervals, alert conditions and sources, and the rest.

The facade speaks short strings instead of protobuf enum numbers: candle intervals as ``"1s"``,
``"1m"`` ... ``"1M"``; alert conditions and price sources as lower-case names without the enum
prefix (``"price_above"``, ``"last_trade"``). Every other enum (sides, asset classes, book status,
exclusion reasons) is reported the same way, e.g. ``Side.SIDE_BUY`` -> ``"buy"``. A number the
generated code does not know (an enum value added by a newer service) becomes ``"unknown(N)"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from marketdata.v1 import alert_pb2, candle_pb2

__all__ = [
    "ALERT_CONDITIONS",
    "ALERT_SOURCES",
    "INTERVALS",
    "ProtoEnum",
    "condition_from_pb",
    "condition_to_pb",
    "enum_name",
    "interval_from_pb",
    "interval_to_pb",
    "source_from_pb",
    "source_to_pb",
]

INTERVALS: Mapping[str, candle_pb2.CandleInterval.ValueType] = MappingProxyType({
    "1s": candle_pb2.CANDLE_INTERVAL_S1,
    "1m": candle_pb2.CANDLE_INTERVAL_M1,
    "5m": candle_pb2.CANDLE_INTERVAL_M5,
    "15m": candle_pb2.CANDLE_INTERVAL_M15,
    "30m": candle_pb2.CANDLE_INTERVAL_M30,
    "1h": candle_pb2.CANDLE_INTERVAL_H1,
    "4h": candle_pb2.CANDLE_INTERVAL_H4,
    "1d": candle_pb2.CANDLE_INTERVAL_D1,
    "1w": candle_pb2.CANDLE_INTERVAL_W1,
    "1M": candle_pb2.CANDLE_INTERVAL_MN1,
})
"""Interval strings (case-sensitive: ``"1m"`` is a minute, ``"1M"`` a month) -> CandleInterval."""

ALERT_CONDITIONS: Mapping[str, alert_pb2.AlertCondition.ValueType] = MappingProxyType({
    "price_above": alert_pb2.ALERT_CONDITION_PRICE_ABOVE,
    "price_below": alert_pb2.ALERT_CONDITION_PRICE_BELOW,
    "change_pct_above": alert_pb2.ALERT_CONDITION_CHANGE_PCT_ABOVE,
    "change_pct_below": alert_pb2.ALERT_CONDITION_CHANGE_PCT_BELOW,
})
"""Alert condition names -> AlertCondition."""

ALERT_SOURCES: Mapping[str, alert_pb2.AlertPriceSource.ValueType] = MappingProxyType({
    "last_trade": alert_pb2.ALERT_PRICE_SOURCE_LAST_TRADE,
    "nbbo_mid": alert_pb2.ALERT_PRICE_SOURCE_NBBO_MID,
    "mark": alert_pb2.ALERT_PRICE_SOURCE_MARK,
})
"""Alert price source names -> AlertPriceSource."""

_T = TypeVar("_T")


class ProtoEnum(Protocol):
    """A generated protobuf enum class (e.g. ``common_pb2.Side``): anything with an EnumDescriptor."""

    @property
    def DESCRIPTOR(self) -> EnumDescriptor: ...  # noqa: N802 - the protobuf attribute name

_INTERVAL_NAMES = {number: name for name, number in INTERVALS.items()}


def _lookup(kind: str, table: Mapping[str, _T], name: str) -> _T:
    try:
        return table[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(key) for key in table)
        raise ValueError(f"unknown {kind} {name!r}; valid: {valid}") from None


def interval_to_pb(interval: str) -> candle_pb2.CandleInterval.ValueType:
    """``"1m"`` -> ``CANDLE_INTERVAL_M1``; ValueError listing the valid strings for anything else."""
    return _lookup("candle interval", INTERVALS, interval)


def interval_from_pb(value: int) -> str:
    """``CANDLE_INTERVAL_M1`` -> ``"1m"``; ValueError for UNSPECIFIED or an unknown number."""
    try:
        return _INTERVAL_NAMES[candle_pb2.CandleInterval.ValueType(value)]
    except KeyError:
        raise ValueError(f"no interval string for CandleInterval {value}; valid: {', '.join(INTERVALS)}") from None


def condition_to_pb(condition: str) -> alert_pb2.AlertCondition.ValueType:
    """``"price_above"`` -> ``ALERT_CONDITION_PRICE_ABOVE``; ValueError listing the valid names otherwise."""
    return _lookup("alert condition", ALERT_CONDITIONS, condition)


def condition_from_pb(value: int) -> str:
    """``ALERT_CONDITION_PRICE_ABOVE`` -> ``"price_above"`` (see :func:`enum_name`)."""
    return enum_name(alert_pb2.AlertCondition, value)


def source_to_pb(source: str) -> alert_pb2.AlertPriceSource.ValueType:
    """``"last_trade"`` -> ``ALERT_PRICE_SOURCE_LAST_TRADE``; ValueError listing the valid names otherwise."""
    return _lookup("alert price source", ALERT_SOURCES, source)


def source_from_pb(value: int) -> str:
    """``ALERT_PRICE_SOURCE_NBBO_MID`` -> ``"nbbo_mid"`` (see :func:`enum_name`)."""
    return enum_name(alert_pb2.AlertPriceSource, value)


def enum_name(enum: ProtoEnum, value: int) -> str:
    """Lower-case name of an enum value without the enum's prefix.

    ``enum_name(common_pb2.Side, common_pb2.SIDE_BUY) == "buy"``; an unknown number gives
    ``"unknown(N)"`` (proto3 enums are open: a newer service may send values this client lacks).
    """
    values = enum.DESCRIPTOR.values_by_number
    if value not in values:
        return f"unknown({value})"
    name: str = values[value].name
    prefix = _prefix(enum)
    return (name.removeprefix(prefix) if name.startswith(prefix) else name).lower()


def _prefix(enum: ProtoEnum) -> str:
    """``AlertPriceSource`` -> ``"ALERT_PRICE_SOURCE_"``: the buf-style UPPER_SNAKE prefix of its values."""
    camel = enum.DESCRIPTOR.name
    snake = "".join(f"_{char}" if char.isupper() and index else char for index, char in enumerate(camel))
    return f"{snake.upper()}_"
