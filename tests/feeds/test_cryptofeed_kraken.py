"""Kraken v1 book replay from a real cryptofeed capture: every checksum Kraken sent must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from feeds.cryptofeed_capture.kraken import (
    KrakenBookChecker,
    KrakenChecksum,
    KrakenParser,
    kraken_checksum,
)
from feeds.cryptofeed_capture.reader import read_lines
from feeds.protocols import DeadLetter
from server.engine.book import BookStatus
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookReset, BookSnapshot
from server.engine.numbers import parse_fixed

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
CAPTURE = DATA / "cryptofeed_ws_captures" / "KRAKEN.ws.50.0"
needs_data = pytest.mark.skipif(not CAPTURE.exists(), reason=f"shared real data missing: {CAPTURE}")


Replayed = tuple[Engine, KrakenParser, KrakenBookChecker, list[DeadLetter], list[object]]


def _replay(lines: list[str]) -> Replayed:
    parser = KrakenParser()
    checker = KrakenBookChecker()
    engine = Engine()
    dead: list[DeadLetter] = []
    out: list[object] = []
    for line in lines:
        frame = parser.parse_line(line, dead)
        engine.apply_batch(frame.events, out)
        for check in frame.checks:
            reset = checker.verify(engine.book(check.venue, check.symbol), check)
            if reset is not None:
                out.append(reset)  # the engine reports a BookStatusChange, not the reset itself
                engine.apply(reset, out)
    return engine, parser, checker, dead, out


@needs_data
def test_every_kraken_checksum_matches() -> None:
    engine, parser, checker, dead, out = _replay(list(read_lines(CAPTURE)))
    assert dead == []
    assert checker.matched == 4269
    assert checker.mismatched == 0
    assert engine.counters.resets == 0
    pairs = {"WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT", "OMG/USD",
             "XBT/CHF", "ADA/XBT"}
    assert set(parser.decimals) == pairs
    for pair in pairs:
        book = engine.book("kraken", pair)
        assert book is not None and book.status is BookStatus.CONSISTENT
        assert len(book.bid_levels()) <= 1000 and len(book.ask_levels()) <= 1000
    # Decimals come from Kraken's strings: ADA/XBT prices have 9 places, XBT/CHF 5, volumes 8.
    assert parser.decimals["ADA/XBT"] == (9, 8)
    assert parser.decimals["XBT/CHF"] == (5, 8)
    snapshots = [e for e in out if isinstance(e, BookSnapshot)]
    assert len(snapshots) == 10
    # Times: receive time from the capture epoch, event time from Kraken's level stamps.
    first = next(e for e in out if isinstance(e, BookDelta))
    assert first.ts_recv == 1618678134213106000
    assert first.ts_event == 1618678133365913000
    assert first.bids == ((parse_fixed("354.15"), parse_fixed("5")),)


@needs_data
def test_corrupted_update_is_caught_and_resets_only_that_pair() -> None:
    lines = list(read_lines(CAPTURE))
    target = next(i for i, line in enumerate(lines) if '"b":[["354.15000000","5.00000000"' in line)
    lines[target] = lines[target].replace('"5.00000000"', '"5.00000001"')
    engine, _, checker, dead, out = _replay(lines)
    assert dead == []
    assert checker.mismatched >= 1
    resets = [e for e in out if isinstance(e, BookReset)]
    assert resets and {r.symbol for r in resets} == {"XMR/USD"}
    assert "checksum mismatch" in resets[0].reason
    xmr = engine.book("kraken", "XMR/USD")
    assert xmr is not None and xmr.status is BookStatus.AWAITING_RESYNC
    other = engine.book("kraken", "XBT/CHF")
    assert other is not None and other.status is BookStatus.CONSISTENT


def _frame(body: str, ts: str = "1700000000.5") -> str:
    return f"{ts}: {body}\n"


def test_truncation_republish_and_both_sides() -> None:
    """Depth 2 book: an insert pushes the worst level out; a republish 'r' brings a level back."""
    parser = KrakenParser()
    engine = Engine()
    dead: list[DeadLetter] = []
    out: list[object] = []
    lines = [
        _frame('[1,{"as":[["10.0","1.0","1.1"],["11.0","2.0","1.2"]],'
               '"bs":[["9.0","3.0","1.3"],["8.0","4.0","1.4"]]},"book-2","A/B"]'),
        # Both sides in one message: a new best ask (pushes 11.0 out) and a bid change.
        _frame('[1,{"a":[["9.5","1.0","2.0"]]},{"b":[["9.0","3.5","2.1"]],"c":"0"},"book-2","A/B"]'),
        # The best ask is deleted; Kraken republishes 11.0 with the 'r' flag.
        _frame('[1,{"a":[["9.5","0.0","3.0"],["11.0","2.0","3.1","r"]]},"book-2","A/B"]'),
    ]
    checks: list[KrakenChecksum] = []
    for line in lines:
        frame = parser.parse_line(line, dead)
        engine.apply_batch(frame.events, out)
        checks += frame.checks
        if len(checks) == 1 and frame.checks:
            book = engine.book("kraken", "A/B")
            assert book is not None
            assert book.ask_levels() == [(parse_fixed("9.5"), parse_fixed("1")),
                                         (parse_fixed("10"), parse_fixed("1"))]
            assert book.bid_levels()[0] == (parse_fixed("9"), parse_fixed("3.5"))
    assert dead == []
    book = engine.book("kraken", "A/B")
    assert book is not None
    assert book.ask_levels() == [(parse_fixed("10"), parse_fixed("1")), (parse_fixed("11"), parse_fixed("2"))]
    assert checks[0].ts_event == 2_100_000_000
    assert checks[0].expected == 0


def test_checksum_function_matches_kraken_docs_rendering() -> None:
    # '0.05005' with 5 decimals -> '5005'; '0.00000500' with 8 -> '500'; CRC32 of the concatenation.
    import zlib

    asks = [(parse_fixed("0.05005"), parse_fixed("0.00000500"))]
    bids = [(parse_fixed("0.05000"), parse_fixed("1.00000000"))]
    expected = zlib.crc32(b"5005500" + b"5000100000000")
    assert kraken_checksum(asks, bids, 5, 8) == expected


def test_malformed_kraken_lines_go_to_dead_letters() -> None:
    parser = KrakenParser()
    dead: list[DeadLetter] = []
    bad = [
        '1700000000.1: [1,{"as":[["1.0","2.0"',  # truncated JSON
        '1700000000.2: [1,{"as":[[null,"2.0","1.0"]],"bs":[]},"book-10","A/B"]',  # null price
        '1700000000.3: {"event":"somethingNew"}',  # unknown event
        '1700000000.4: [1,{"a":[["1.0","2.0","1.0"]],"c":"1"},"book-10","Z/Z"]',  # update before snapshot
        '1700000000.5: [1,{"x":[]},"unknownchannel","A/B"]',  # unknown channel
        "not a capture line",
        '1700000000.6: [1,{"as":[["1.0","-2.0","1.0"]],"bs":[]},"book-10","A/B"]',  # negative volume
    ]
    events = list(parser.parse(bad, dead))
    assert events == []
    assert len(dead) == len(bad)
    assert all(d.reason and d.source == "cryptofeed:kraken" for d in dead)
    assert "bad JSON" in dead[0].reason
    assert "before its snapshot" in dead[3].reason
    assert "unknown channel" in dead[4].reason
    assert dead[0].ts_recv == 1_700_000_000_100_000_000
