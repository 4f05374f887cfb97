"""Pure FIX 4.4 market data parser: W/X/Y to events, sequencing, RptSeq gaps, times, malformed input."""

from __future__ import annotations

from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.fix.parser import (
    FixError,
    FixMdParser,
    MdRequestReject,
    date_to_ns,
    split_message,
    time_to_ns,
    timestamp_to_ns,
)
from feeds.protocols import DeadLetter
from server.engine.book import L2Book
from server.engine.engine import Engine
from server.engine.events import BookDelta, BookReset, BookSnapshot, Event, Side, Trade
from server.engine.numbers import SCALE, format_fixed
from tests.feeds.fix.fixmsg import SENDING_NS, SOH, fix_text, incremental, level, snapshot

RECV = SENDING_NS + 5_000_000
E = SCALE // 100_000  # 0.00001


def _parser() -> FixMdParser:
    p = FixMdParser("lp1", {"EUR/USD": "EUR/USD", "USDJPY": "USD/JPY"})
    p.on_request("r1", "EUR/USD")
    return p


def _apply(book: L2Book, events: list[Event]) -> None:
    for ev in events:
        if isinstance(ev, BookSnapshot):
            book.replace(ev.bids, ev.asks)
        elif isinstance(ev, BookDelta):
            book.apply(ev.bids, ev.asks)


def test_snapshot_exact() -> None:
    p, dead = _parser(), list[DeadLetter]()
    out = p.parse(snapshot("EUR/USD", [("1.10001", "1000000"), ("1.1", "2000000.5")], [("1.10003", "500000")]),
                  RECV, dead)
    assert dead == []
    assert out == [BookSnapshot("lp1", "EUR/USD", 1, ((110_001 * E, 1_000_000 * SCALE),
                                                      (110_000 * E, 2_000_000 * SCALE + SCALE // 2)),
                                ((110_003 * E, 500_000 * SCALE),), SENDING_NS, RECV)]


def test_incremental_new_change_delete_and_trade() -> None:
    p, dead = _parser(), list[DeadLetter]()
    out = p.parse(snapshot("EUR/USD", [("1.1", "1")], [("1.2", "1")]), RECV, dead)
    msg = incremental(level("0", "0", "EUR/USD", "1.15", "3", time="10:00:00.1"),
                      level("1", "1", "EUR/USD", "1.2", "7"),
                      level("2", "0", "EUR/USD", "1.1"),
                      level("0", "2", "EUR/USD", "1.17", "2", entry_id="T42"))
    out += p.parse(msg, RECV, dead)
    assert dead == []
    delta, trade = out[1], out[2]
    assert delta == BookDelta("lp1", "EUR/USD", 2, 2, ((115 * SCALE // 100, 3 * SCALE), (11 * SCALE // 10, 0)),
                              ((12 * SCALE // 10, 7 * SCALE),), SENDING_NS, RECV)
    assert trade == Trade("lp1", "EUR/USD", "T42", 117 * SCALE // 100, 2 * SCALE, Side.UNSPECIFIED,
                          SENDING_NS, RECV)
    book = L2Book("lp1", "EUR/USD")
    _apply(book, out)
    assert book.bid_levels() == [(115 * SCALE // 100, 3 * SCALE)]
    assert book.ask_levels() == [(12 * SCALE // 10, 7 * SCALE)]
    # the engine accepts the synthesized sequence: snapshot seq 1, delta 2, next delta 3
    engine, sink = Engine(), list[object]()
    engine.apply_batch(out, sink)
    more = p.parse(incremental(level("0", "1", "EUR/USD", "1.25", "1")), RECV, dead)
    assert isinstance(more[0], BookDelta) and (more[0].first_seq, more[0].seq) == (3, 3)
    engine.apply_batch(more, sink)
    eb = engine.book("lp1", "EUR/USD")
    assert eb is not None and eb.synced and eb.ask_levels() == [(12 * SCALE // 10, 7 * SCALE),
                                                                 (125 * SCALE // 100, SCALE)]


def test_entries_by_id_and_symbol_inherited_from_request() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.parse(snapshot("EUR/USD", [], []), RECV, dead)
    out = p.parse(fix_text("X", [(262, "r1")], [[(279, "0"), (269, "0"), (278, "b1"), (270, "1.1"), (271, "5")]]),
                  RECV, dead)
    # change by id to a new price: the old level goes; delete by id alone
    out += p.parse(fix_text("X", [(262, "r1")], [[(279, "1"), (278, "b1"), (270, "1.11"), (271, "6")]]),
                   RECV, dead)
    assert out[-1].bids == ((11 * SCALE // 10, 0), (111 * SCALE // 100, 6 * SCALE))  # type: ignore[union-attr]
    out += p.parse(fix_text("X", [(262, "r1")], [[(279, "2"), (278, "b1")]]), RECV, dead)
    assert dead == []
    assert out[-1].bids == ((111 * SCALE // 100, 0),)  # type: ignore[union-attr]


def test_trade_aggressor_and_multi_symbol_message() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.parse(snapshot("EUR/USD", [("1.1", "1")], []), RECV, dead)
    p.parse(snapshot("USDJPY", [("150", "1")], []), RECV, dead)
    trade = [*level("0", "2", "USDJPY", "150.5", "2", entry_id="t1"), (2446, "2")]
    out = p.parse(incremental(level("0", "0", "EUR/USD", "1.2", "1"), trade,
                              level("0", "1", "USDJPY", "151", "4")), RECV, dead)
    assert dead == []
    assert [type(e).__name__ for e in out] == ["BookDelta", "BookDelta", "Trade"]
    assert out[1].symbol == "USD/JPY" and out[1].seq == 2  # type: ignore[union-attr]
    assert out[2] == Trade("lp1", "USD/JPY", "t1", 1505 * SCALE // 10, 2 * SCALE, Side.SELL, SENDING_NS, RECV)


def test_deltas_before_snapshot_are_dropped_trades_kept() -> None:
    p, dead = _parser(), list[DeadLetter]()
    out = p.parse(incremental(level("0", "0", "EUR/USD", "1.1", "1"), level("0", "2", "EUR/USD", "1.1", "1")),
                  RECV, dead)
    assert dead == [] and [type(e) for e in out] == [Trade]
    assert p.stats.skipped["awaiting snapshot"] == 1


def test_rpt_seq_gap_resets_and_requests_snapshot() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.parse(snapshot("EUR/USD", [("1.1", "1")], [("1.2", "1")], rpt_seq=10), RECV, dead)
    ok = p.parse(incremental(level("1", "0", "EUR/USD", "1.1", "2", rpt_seq=11)), RECV, dead)
    assert isinstance(ok[0], BookDelta)
    dup = p.parse(incremental(level("1", "0", "EUR/USD", "1.1", "9", rpt_seq=11)), RECV, dead)
    assert dup == [] and p.stats.duplicates == 1
    gap = p.parse(incremental(level("1", "0", "EUR/USD", "1.1", "3", rpt_seq=13)), RECV, dead)
    assert [type(e) for e in gap] == [BookReset]
    assert "expected 12, got 13" in gap[0].reason  # type: ignore[union-attr]
    assert p.take_resync() == ["EUR/USD"] and p.take_resync() == []
    assert p.stats.gaps == 1
    assert p.parse(incremental(level("1", "0", "EUR/USD", "1.1", "4", rpt_seq=14)), RECV, dead) == []
    snap = p.parse(snapshot("EUR/USD", [("1.1", "4")], [], rpt_seq=14), RECV, dead)
    assert isinstance(snap[0], BookSnapshot) and snap[0].seq == 3
    after = p.parse(incremental(level("1", "0", "EUR/USD", "1.1", "5", rpt_seq=15)), RECV, dead)
    assert isinstance(after[0], BookDelta) and after[0].seq == 4
    assert dead == []


def test_reject_maps_request_to_symbol() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.on_request("lp1-7", "USDJPY")
    assert p.parse(fix_text("Y", [(262, "lp1-7"), (281, "0"), (58, "no such pair")]), RECV, dead) == []
    assert dead == []
    assert p.take_rejects() == [MdRequestReject("lp1", "lp1-7", "USD/JPY", "0", "unknown symbol", "no such pair",
                                                SENDING_NS, RECV)]
    assert p.take_rejects() == []


def test_malformed_incremental_is_a_dead_letter_and_resets_the_book() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.parse(snapshot("EUR/USD", [("1.1", "1")], []), RECV, dead)
    out = p.parse(incremental(level("0", "0", "EUR/USD", "1.1.1", "1")), RECV, dead)
    assert [type(e) for e in out] == [BookReset]
    assert len(dead) == 1 and dead[0].reason.startswith("bad number: entry 1 MDEntryPx")
    assert dead[0].source == "fix" and dead[0].ts_recv == RECV and "|35=X|" in dead[0].raw
    assert p.take_resync() == ["EUR/USD"]
    assert p.stats.dead_letters["bad number"] == 1


def test_numbers_are_plain_decimals() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.parse(snapshot("EUR/USD", [("1.1", "1")], []), RECV, dead)
    for price, size, kind in (("1e999999999", "1", "2"), ("1.1", "1E3", "0"), ("0x10", "1", "1"),
                              ("1.1", "-1", "0"), ("1.1", "0", "2"), ("1.0000000001", "1", "0")):
        before = len(dead)
        p.parse(incremental(level("0", kind, "EUR/USD", price, size)), RECV, dead)
        assert len(dead) == before + 1 and dead[-1].reason.startswith("bad number"), (price, size)


def test_unknown_symbol_and_other_message_types() -> None:
    p, dead = _parser(), list[DeadLetter]()
    assert p.parse(snapshot("GBP/USD", [("1.3", "1")], []), RECV, dead) == []
    assert dead[0].reason == "unsubscribed symbol: 'GBP/USD'"
    assert p.parse(fix_text("B", [(148, "news")]), RECV, dead) == []
    assert p.stats.skipped["MsgType B"] == 1 and len(dead) == 1


def test_reset_all_only_resets_synced_books() -> None:
    p, dead = _parser(), list[DeadLetter]()
    p.parse(snapshot("EUR/USD", [("1.1", "1")], []), RECV, dead)
    out = p.reset_all("fix session down", 0, RECV)
    assert out == [BookReset("lp1", "EUR/USD", "fix session down", RECV, RECV)]
    assert p.reset_all("again", 0, RECV) == []


def test_split_message_structure() -> None:
    msg = split_message(snapshot("EUR/USD", [("1", "2")], [("3", "4")]) )
    assert msg.msg_type == "W" and msg.fields[55] == "EUR/USD" and msg.fields[10] == "000"
    assert msg.entries == ({269: "0", 270: "1", 271: "2"}, {269: "1", 270: "3", 271: "4"})
    # a body tag quickfix sorts after the group (W's NetChgPrevDay 451 is also an entry tag)
    text = fix_text("W", [(55, "X")], [[(269, "0"), (451, "1")]]).replace(SOH + "10=", SOH + "451=2" + SOH + "10=")
    after = split_message(text)
    assert after.entries == ({269: "0", 451: "1"},) and after.fields[451] == "2"
    bad = [
        (fix_text("W", [(55, "X")], [[(269, "0")]]).replace("268=1", "268=2"), "group count"),
        (fix_text("W", [(55, "X")], [[(270, "1"), (269, "0")]]), "group structure"),
        (fix_text("W", [(55, "X")], [[(269, "0"), (270, "1"), (270, "2")], [(269, "1")]]), "group structure"),
        (fix_text("W", [(55, "X"), (55, "Y")]), "repeated tag"),
        ("8=FIX.4.4" + SOH + "garbage" + SOH, "bad field"),
        ("", "empty message"),
        ("8=FIX.4.4" + SOH, "missing tag"),
        (fix_text("W", [(55, "X")], []).replace("268=0", "268=-1"), "bad NoMDEntries"),
    ]
    for text, kind in bad:
        try:
            split_message(text)
        except FixError as exc:
            assert exc.kind == kind, (text, exc)
        else:
            raise AssertionError(f"accepted {text!r}")


def test_times() -> None:
    assert timestamp_to_ns("20240102-10:00:00.250") == SENDING_NS
    assert timestamp_to_ns("20240102-10:00:00") == SENDING_NS - 250_000_000
    assert timestamp_to_ns("20240102-10:00:00.123456789") == SENDING_NS - 250_000_000 + 123_456_789
    assert date_to_ns("19700101") == 0 and time_to_ns("00:00:01.5") == 1_500_000_000
    for bad in ("2024010-10:00:00", "20241302-10:00:00", "20240102-25:00:00", "20240102-10:00:00.",
                "20240102-10:00:00.1234567890", "20240230-10:00:00", "２０２４0102-10:00:00"):
        try:
            timestamp_to_ns(bad)
        except FixError as exc:
            assert exc.kind == "bad time"
        else:
            raise AssertionError(bad)
    # an entry time just before midnight in a message sent just after it belongs to the previous day
    p, dead = _parser(), list[DeadLetter]()
    out = p.parse(snapshot("EUR/USD", [], [], sending="20240103-00:00:00.100"), RECV, dead)
    p.parse(fix_text("X", [(262, "r1")], [level("0", "2", "EUR/USD", "1", "1", time="23:59:59.900")],
                     sending="20240103-00:00:00.100"), RECV, dead)
    trade = p.parse(fix_text("X", [(262, "r1")], [level("0", "2", "EUR/USD", "1", "1", time="23:59:59.900")],
                             sending="20240103-00:00:00.100"), RECV, dead)[0]
    assert dead == [] and out
    assert trade.ts_event == timestamp_to_ns("20240102-23:59:59.900")  # type: ignore[union-attr]
    entry = [*level("0", "2", "EUR/USD", "1", "1", time="12:00:00"), (272, "20231231")]
    dated = p.parse(fix_text("X", [(262, "r1")], [entry]), RECV, dead)[0]
    assert dated.ts_event == timestamp_to_ns("20231231-12:00:00")  # type: ignore[union-attr]


# -- fuzzing ------------------------------------------------------------------------------------

FUZZ: Final[dict[str, Any]] = {"deadline": None,
                               "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
"""The machine is shared: generation speed is not what these tests check."""

_TAGS = st.sampled_from([8, 9, 10, 35, 52, 55, 83, 262, 268, 269, 270, 271, 272, 273, 278, 279, 281, 58, 2446,
                         0, 7, 99999])
_VALUES = st.one_of(st.sampled_from(["0", "1", "2", "W", "X", "Y", "EUR/USD", "USDJPY", "1.1", "-3", "1e400",
                                     "NaN", "", "20240102-10:00:00", "10:00:00.5", "r1", "99999999999999999999"]),
                    st.text(max_size=12))


def _check(p: FixMdParser, texts: list[str]) -> None:
    for text in texts:
        dead: list[DeadLetter] = []
        before = p.stats.dead_letters.total()
        out = p.parse(text, RECV, dead)
        assert len(dead) == p.stats.dead_letters.total() - before
        for d in dead:
            assert d.reason and d.source == "fix" and d.ts_recv == RECV
        for ev in out:
            if isinstance(ev, BookSnapshot | BookDelta):
                assert all(isinstance(x, int) for lv in ev.bids + ev.asks for x in lv)
            if isinstance(ev, Trade):
                assert isinstance(ev.price, int) and isinstance(ev.size, int)


@settings(max_examples=300, **FUZZ)
@given(st.lists(st.text(max_size=200), max_size=5))
def test_fuzz_random_text_never_raises(texts: list[str]) -> None:
    _check(_parser(), texts)


@settings(max_examples=400, **FUZZ)
@given(st.lists(st.tuples(_TAGS, _VALUES), max_size=30), st.sampled_from(["W", "X", "Y"]))
def test_fuzz_random_fields_never_raise(fields: list[tuple[int, str]], msg_type: str) -> None:
    text = SOH.join(f"{t}={v}" for t, v in [(8, "FIX.4.4"), (35, msg_type), (52, "20240102-10:00:00"), *fields])
    p = _parser()
    p.parse(snapshot("EUR/USD", [("1.1", "1")], []), RECV, [])
    _check(p, [text])


_VALID = [
    snapshot("EUR/USD", [("1.1", "1"), ("1.09", "2")], [("1.2", "3")], rpt_seq=1),
    incremental(level("0", "0", "EUR/USD", "1.15", "3", rpt_seq=2), level("2", "1", "EUR/USD", "1.2", rpt_seq=3),
                level("0", "2", "EUR/USD", "1.17", "2", entry_id="T1", time="10:00:00.1", rpt_seq=4)),
    fix_text("Y", [(262, "r1"), (281, "0"), (58, "nope")]),
]


@settings(max_examples=400, **FUZZ)
@given(st.integers(0, len(_VALID) - 1), st.data())
def test_fuzz_garbled_valid_messages(which: int, data: st.DataObject) -> None:
    """Drop, duplicate or garble fields of a valid message: events or a dead letter, never an exception."""
    parts = _VALID[which].rstrip(SOH).split(SOH)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(parts) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "value", "tag", "swap"]))
        if op == "drop" and len(parts) > 1:
            parts.pop(i)
        elif op == "dup":
            parts.insert(i, parts[i])
        elif op == "value":
            parts[i] = parts[i].partition("=")[0] + "=" + data.draw(_VALUES)
        elif op == "tag":
            parts[i] = data.draw(st.text(max_size=4)) + "=" + parts[i].partition("=")[2]
        elif op == "swap":
            j = data.draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
    p = _parser()
    p.parse(_VALID[0], RECV, [])
    _check(p, [SOH.join(parts) + SOH])


def text(k: int) -> str:
    return format_fixed(k * E, 5)


_PRICES = st.integers(1, 40).map(lambda k: 100_000 + k)  # in 1e-5 units


@settings(max_examples=150, **FUZZ)
@given(st.lists(st.tuples(st.booleans(), _PRICES, st.integers(0, 5)), max_size=60),
       st.integers(1, 6))
def test_random_updates_rebuild_the_lp_book(ops: list[tuple[bool, int, int]], per_msg: int) -> None:
    """An LP's model book sent as W then X messages (new/change/delete) equals the book rebuilt."""
    model: dict[bool, dict[int, int]] = {True: {100_010: 5}, False: {100_030: 5}}
    p, dead = _parser(), list[DeadLetter]()
    events = p.parse(snapshot("EUR/USD", [(text(100_010), "5")], [(text(100_030), "5")]), RECV, dead)
    for start in range(0, len(ops), per_msg):
        entries = []
        for is_bid, price, size in ops[start:start + per_msg]:
            side = model[is_bid]
            kind = "0" if is_bid else "1"
            if size == 0:
                if price not in side:
                    continue
                del side[price]
                entries.append(level("2", kind, "EUR/USD", text(price)))
            else:
                entries.append(level("1" if price in side else "0", kind, "EUR/USD", text(price), str(size)))
                side[price] = size
        if entries:
            events += p.parse(incremental(*entries), RECV, dead)
    assert dead == []
    engine, out = Engine(), list[object]()
    engine.apply_batch(events, out)
    book = engine.book("lp1", "EUR/USD")
    assert book is not None and book.synced
    assert dict(book.bids) == {k * E: s * SCALE for k, s in model[True].items()}
    assert dict(book.asks) == {k * E: s * SCALE for k, s in model[False].items()}
