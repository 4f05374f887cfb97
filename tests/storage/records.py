"""Sample engine records for the storage tests, one or more of every stored type."""

from __future__ import annotations

from server.engine.candles import Candle, Interval
from server.engine.events import BookDelta, BookSnapshot, Quote, Side, Trade
from server.engine.pricing import FundingRate, IndexPrice, IndexSource, MarkPrice

T0 = 1_700_000_000_000_000_000
"""2023-11-14T22:13:20Z in ns."""
I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)
I128_MAX = (1 << 127) - 1


def trade(i: int, *, symbol: str = "BTCUSDT", venue: str = "binance", trade_id: str | None = None) -> Trade:
    return Trade(
        venue,
        symbol,
        str(i) if trade_id is None else trade_id,
        60_000_123_456_789 + i,
        1_000_000_001 + i,
        Side.BUY if i % 2 else Side.SELL,
        T0 + i * 1_000,
        T0 + i * 1_000 + 7,
    )


def candle(
    open_time: int = T0,
    *,
    close: int = 60_000_000_000_000,
    trade_count: int = 3,
    correction: bool = False,
    ts_event: int | None = None,
    interval: Interval = Interval.M1,
) -> Candle:
    return Candle(
        "binance",
        "BTCUSDT",
        interval,
        open_time,
        open_time + 60_000_000_000,
        59_999_000_000_000,
        I64_MAX,
        1,
        close,
        (1 << 100) + 3,
        I128_MAX - 5,  # quote volume at 1e-18: beyond 2**126, exact
        (1 << 99) + 1,
        (1 << 99) + 2,
        trade_count,
        True,
        correction,
        open_time + 59_000_000_000 if ts_event is None else ts_event,
        open_time + 59_500_000_000,
    )


def every_record() -> list[object]:
    """One record of each stored type with extreme but valid values."""
    return [
        trade(1),
        Trade("kraken", "BTC/USD", "", I64_MAX, I64_MAX, Side.UNSPECIFIED, T0 + 1, T0 + 2),
        Trade("odd\tvenue", "x'y\\z\n", "id with 'quotes'", I64_MIN, 1, Side.BUY, T0 + 3, T0 + 4),
        Quote("oanda", "EUR/USD", 1_085_430_000, 5_000_000_000_000, 1_085_440_000, 0, T0 + 5, T0 + 6),
        BookSnapshot(
            "binance",
            "ETHUSDT",
            123456789012,
            ((3_000_000_000_000, 1_500_000_000), (2_999_990_000_000, I64_MAX)),
            ((3_000_010_000_000, 250_000_000),),
            T0 + 7,
            T0 + 8,
        ),
        BookSnapshot("kraken", "ETH/USD", 0, (), (), T0 + 9, T0 + 10),
        BookDelta(
            "binance",
            "ETHUSDT",
            123456789013,
            123456789015,
            ((3_000_000_000_000, 0),),
            ((3_000_020_000_000, 7), (3_000_030_000_000, 8)),
            T0 + 11,
            T0 + 12,
        ),
        candle(),
        IndexPrice(
            "BTC-INDEX",
            60_001_000_000_000,
            (
                IndexSource("binance", "BTCUSDT", 60_000_000_000_000, 2, True, ""),
                IndexSource("kraken", "BTC/USD", 0, 1, False, "missing"),
                IndexSource("okx", "BTC-USDT", 70_000_000_000_000, 1, False, "outlier"),
            ),
            T0 + 13,
        ),
        MarkPrice("BTCUSDT-PERP", 60_002_000_000_000, 60_001_000_000_000, -123_456, T0 + 14),
        FundingRate(
            "BTCUSDT-PERP",
            -7_500_000,
            -7_600_000,
            100_000,
            T0 + 28_800_000_000_000,
            17,
            28_800_000_000_000,
            T0 + 15,
        ),
    ]
