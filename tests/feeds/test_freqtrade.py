"""freqtrade trade-dump parser: exact numbers, dead letters for malformed rows."""

from __future__ import annotations

from feeds.freqtrade.parser import FreqtradeTradesParser, parse_dump
from feeds.protocols import DeadLetter
from server.engine.events import Side, Trade


def test_rows_parse_exactly() -> None:
    text = (
        '[[1570752011620,"13519807",null,"sell",0.00141342,23.0,0.03250866],'
        '[1570752033759,"13519812",null,"buy",1e-05,11.0,0.015571269999999998]]'
    )
    dead: list[DeadLetter] = []
    trades = list(parse_dump(text, "XRP/ETH", dead))
    assert dead == []
    assert trades == [
        Trade(
            "binance",
            "XRP/ETH",
            "13519807",
            1_413_420,
            23_000_000_000,
            Side.SELL,
            1570752011620_000_000,
            1570752011620_000_000,
        ),
        Trade(
            "binance",
            "XRP/ETH",
            "13519812",
            10_000,
            11_000_000_000,
            Side.BUY,
            1570752033759_000_000,
            1570752033759_000_000,
        ),
    ]


def test_malformed_rows_become_dead_letters() -> None:
    rows = [
        '[1,"a",null,"buy",1.5,2.0,3.0]',  # good
        '"not a row"',
        '[1,"b",null,"buy",1.5]',  # too short
        '[1,"c",null,"hold",1.5,2.0,3.0]',  # side
        '[1,"d",null,"buy","x",2.0,3.0]',  # price text
        '[1,"e",null,"buy",0.0000000001,2.0,3.0]',  # > 9 decimals
        '[1,"f",null,"buy",1.5,0,3.0]',  # zero amount
        '[1,"g",null,"buy",-1.5,2.0,3.0]',  # negative price
        '[1.0000001,"h",null,"buy",1.5,2.0,3.0]',  # below 1 ns
        '[null,"i",null,"buy",1.5,2.0,3.0]',  # no time
        '[1,{"x":1},null,"buy",1.5,2.0,3.0]',  # id
        "[2,13,null,null,1.5,2.0]",  # good: numeric id, no side, no cost
    ]
    dead: list[DeadLetter] = []
    trades = list(parse_dump("[" + ",".join(rows) + "]", "X/Y", dead, venue="v"))
    assert [t.trade_id for t in trades] == ["a", "13"]
    assert trades[1].side is Side.UNSPECIFIED and trades[1].ts_event == 2_000_000
    assert len(dead) == len(rows) - 2
    assert all(d.source == "freqtrade" and d.reason for d in dead)


def test_bad_documents() -> None:
    dead: list[DeadLetter] = []
    parser = FreqtradeTradesParser("X/Y")
    assert list(parser.parse(["{not json", '{"a": 1}', "[]"], dead)) == []
    assert [d.reason.split(":")[0] for d in dead] == ["invalid JSON", "document is not a JSON array"]
