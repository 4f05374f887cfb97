"""Tests of server.engine.alerts: AlertBook vs. a brute-force scan of every alert on every update."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.alerts import Alert, AlertBook, AlertCondition, AlertSource, AlertTrigger
from server.engine.numbers import parse_fixed

SYMBOLS = ("BTC-USD", "ETH-USD")
VENUES = ("", "binance", "kraken")


class BruteForce:
    """The specification: scan every live alert on every update."""

    def __init__(self) -> None:
        self.alerts: dict[str, Alert] = {}

    def add(self, alert: Alert) -> None:
        if alert.alert_id in self.alerts:
            raise ValueError("dup")
        self.alerts[alert.alert_id] = alert

    def remove(self, alert_id: str) -> bool:
        return self.alerts.pop(alert_id, None) is not None

    def evaluate(
        self, symbol: str, source: AlertSource, price: int, change: int | None, venue: str
    ) -> set[str]:
        fired = set()
        for a in self.alerts.values():
            if a.symbol != symbol or a.source != source or a.venue not in ("", venue):
                continue
            c = a.condition
            hit = (
                (c == AlertCondition.PRICE_ABOVE and price >= a.threshold)
                or (c == AlertCondition.PRICE_BELOW and price <= a.threshold)
                or (c == AlertCondition.CHANGE_PCT_ABOVE and change is not None and change >= a.threshold)
                or (c == AlertCondition.CHANGE_PCT_BELOW and change is not None and change <= a.threshold)
            )
            if hit:
                fired.add(a.alert_id)
        for i in fired:
            del self.alerts[i]
        return fired


alert_st = st.builds(
    lambda i, sym, cond, thr, src, venue: Alert(
        f"a{i}", sym, cond, thr if cond <= AlertCondition.PRICE_BELOW else thr - 10, src, venue, 0
    ),
    st.integers(0, 60),
    st.sampled_from(SYMBOLS),
    st.sampled_from(list(AlertCondition)),
    st.integers(1, 20),
    st.sampled_from(list(AlertSource)),
    st.sampled_from(VENUES),
)

op_st = st.one_of(
    st.tuples(st.just("add"), alert_st),
    st.tuples(st.just("remove"), st.integers(0, 60)),
    st.tuples(
        st.just("eval"),
        st.tuples(
            st.sampled_from(SYMBOLS),
            st.sampled_from(list(AlertSource)),
            st.integers(1, 20),
            st.one_of(st.none(), st.integers(-12, 12)),
            st.sampled_from(VENUES),
        ),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(op_st, max_size=120))
def test_alert_book_matches_brute_force(ops: list[tuple[str, object]]) -> None:
    book = AlertBook()
    ref = BruteForce()
    fired_ever: set[str] = set()
    ts = 0
    for kind, arg in ops:
        if kind == "add":
            assert isinstance(arg, Alert)
            dup = arg.alert_id in ref.alerts
            if dup:
                with pytest.raises(ValueError, match="duplicate"):
                    book.add(arg)
                continue
            ref.add(arg)
            book.add(arg)
            fired_ever.discard(arg.alert_id)  # an id may be reused once its alert fired
        elif kind == "remove":
            assert isinstance(arg, int)
            assert book.remove(f"a{arg}") == ref.remove(f"a{arg}")
        else:
            assert isinstance(arg, tuple)
            symbol, source, price, change, venue = arg
            ts += 1
            out: list[AlertTrigger] = []
            book.evaluate(symbol, source, price, change, ts, out, venue=venue)
            want = ref.evaluate(symbol, source, price, change, venue)
            got = [t.alert.alert_id for t in out]
            assert len(got) == len(set(got))  # each once
            assert set(got) == want
            assert not set(got) & fired_ever
            fired_ever |= set(got)
            for t in out:
                assert (t.price, t.change_pct, t.ts) == (price, change, ts)
        assert {a.alert_id for a in book.list()} == set(ref.alerts)
        assert len(book) == len(ref.alerts)
        for s in SYMBOLS:
            assert {a.alert_id for a in book.list(s)} == {
                a.alert_id for a in ref.alerts.values() if a.symbol == s
            }


def _a(alert_id: str, cond: AlertCondition, thr: str, src: AlertSource = AlertSource.LAST_TRADE) -> Alert:
    return Alert(alert_id, "BTC-USD", cond, parse_fixed(thr), src, "", 1)


def test_trigger_order_and_once() -> None:
    book = AlertBook()
    book.add(_a("up2", AlertCondition.PRICE_ABOVE, "102"))
    book.add(_a("up1", AlertCondition.PRICE_ABOVE, "101"))
    book.add(_a("up1b", AlertCondition.PRICE_ABOVE, "101"))
    book.add(_a("up9", AlertCondition.PRICE_ABOVE, "109"))
    book.add(_a("dn", AlertCondition.PRICE_BELOW, "95"))
    book.add(_a("mark", AlertCondition.PRICE_ABOVE, "90", AlertSource.MARK))
    out: list[AlertTrigger] = []
    book.evaluate("BTC-USD", AlertSource.LAST_TRADE, parse_fixed("100"), None, 1, out)
    assert out == []
    book.evaluate("BTC-USD", AlertSource.LAST_TRADE, parse_fixed("102"), None, 2, out)
    assert [t.alert.alert_id for t in out] == ["up1", "up1b", "up2"]  # nearest first, ties by age
    out.clear()
    book.evaluate("BTC-USD", AlertSource.LAST_TRADE, parse_fixed("103"), None, 3, out)
    assert out == []
    assert [a.alert_id for a in book.list()] == ["up9", "dn", "mark"]
    book.evaluate("BTC-USD", AlertSource.LAST_TRADE, parse_fixed("95"), None, 4, out)
    assert [t.alert.alert_id for t in out] == ["dn"]
    assert book.get("dn") is None
    assert not book.remove("dn")
    assert book.get("up9") == _a("up9", AlertCondition.PRICE_ABOVE, "109")
    assert "up9" in book


def test_change_pct_and_venue_filter() -> None:
    book = AlertBook()
    book.add(
        Alert("c", "ETH-USD", AlertCondition.CHANGE_PCT_BELOW, -5 * 10**9, AlertSource.NBBO_MID, "kraken")
    )
    book.add(Alert("d", "ETH-USD", AlertCondition.CHANGE_PCT_ABOVE, 5 * 10**9, AlertSource.NBBO_MID))
    out: list[AlertTrigger] = []
    book.evaluate("ETH-USD", AlertSource.NBBO_MID, 1, None, 1, out, venue="kraken")
    book.evaluate("ETH-USD", AlertSource.NBBO_MID, 1, -6 * 10**9, 2, out, venue="binance")
    book.evaluate("ETH-USD", AlertSource.NBBO_MID, 1, -6 * 10**9, 2, out)
    assert out == []
    book.evaluate("ETH-USD", AlertSource.NBBO_MID, 1, -5 * 10**9, 3, out, venue="kraken")
    assert [t.alert.alert_id for t in out] == ["c"]
    book.evaluate("ETH-USD", AlertSource.NBBO_MID, 1, 5 * 10**9, 4, out, venue="kraken")
    assert [t.alert.alert_id for t in out] == ["c", "d"]
    assert len(book) == 0


def test_add_validation() -> None:
    book = AlertBook()
    book.add(_a("x", AlertCondition.PRICE_ABOVE, "1"))
    with pytest.raises(ValueError, match="duplicate"):
        book.add(_a("x", AlertCondition.PRICE_BELOW, "1"))
    with pytest.raises(ValueError, match="non-empty"):
        book.add(_a("", AlertCondition.PRICE_BELOW, "1"))
    with pytest.raises(ValueError, match="> 0"):
        book.add(_a("y", AlertCondition.PRICE_BELOW, "0"))
    # A condition that is not an AlertCondition: ValueError interpreted, TypeError when compiled (mypyc
    # checks the annotated type on access). Callers convert wire ints with AlertCondition(x) first.
    with pytest.raises((ValueError, TypeError), match="AlertCondition"):
        book.add(Alert("z", "S", 9, 1, AlertSource.MARK))  # type: ignore[arg-type]
    assert not book.remove("z")
