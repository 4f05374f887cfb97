"""Kraken REST /0/public/Trades parser: exact time from the JSON text, dead letters for bad input."""

from __future__ import annotations

import json

from feeds.kraken_rest.parser import KrakenTradesParser, parse_page
from feeds.protocols import DeadLetter
from server.engine.events import Side

GOOD = (
    '{"error":[],"result":{"XBTUSDT":['
    '["105433.60000","0.00027625",1762795433.9717445,"b","l","",10218208],'
    '["105410.10000","0.00005000",1762795457,"s","m","",10218209]'
    '],"last":"1762795457000000000"}}'
)


def test_parse_exact() -> None:
    dead: list[DeadLetter] = []
    page = parse_page(GOOD, dead, symbols={"XBTUSDT": "BTC/USDT"}, ts_recv=5)
    assert dead == [] and page.last == "1762795457000000000"
    a, b = page.trades
    assert (a.venue, a.symbol, a.trade_id, a.side) == ("kraken", "BTC/USDT", "10218208", Side.BUY)
    assert a.price == 105_433_600_000_000 and a.size == 276_250
    assert a.ts_event == 1_762_795_433_971_744_500 and a.ts_recv == 5
    assert b.ts_event == 1_762_795_457_000_000_000 and b.side is Side.SELL


def test_malformed_rows_and_documents() -> None:
    rows = [
        '["1.0","1.0",1.5,"b","l","",1]',  # good
        '["1.0","1.0",1.5,"x","l","",2]',  # side
        '["1.0","1.0",1.0000000001,"b","l","",3]',  # time below 1 ns
        '["abc","1.0",1.5,"b","l","",4]',  # price
        '["1.0","0",1.5,"b","l","",5]',  # zero volume
        "[1.0]",  # short
        '"row"',
        '["1.0","1.0",1.5,"s","l","",{"id":6}]',  # id
    ]
    text = '{"error":[],"result":{"P":[' + ",".join(rows) + '],"Q":{"x":1},"last":"9"}}'
    dead: list[DeadLetter] = []
    page = parse_page(text, dead)
    assert [t.trade_id for t in page.trades] == ["1"]
    assert len(dead) == len(rows) - 1 + 1  # + the non-list "Q"
    assert all(d.source == "kraken_rest" for d in dead)
    dead.clear()
    parser = KrakenTradesParser()
    docs = ["nope", "[]", '{"error":["EGeneral:Too many requests"]}', '{"error":[]}', GOOD]
    assert len(list(parser.parse(docs, dead))) == 2
    assert parser.last == "1762795457000000000"
    assert len(dead) == 4
    assert "Too many requests" in dead[2].reason
    json.loads(dead[2].raw)
