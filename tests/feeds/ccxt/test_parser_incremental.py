"""CcxtParser.book's incremental path against a plain reference (convert the whole top N, diff with the
previous full state) on random sequences of ccxt books (hypothesis), and its cost: only what changed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from ccxt.async_support.base.ws.order_book import OrderBook  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

import feeds.ccxt.parser as parser_module
from feeds.ccxt.parser import FIXED_CACHE_SIZE, CcxtParseError, CcxtParser, ms_to_ns, to_fixed
from feeds.protocols import DeadLetter
from server.engine.events import BookDelta, BookReset, BookSnapshot, Level
from tests.feeds.ccxt.helpers import Books

TS = 1_700_000_000_000_000_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")


class Reference:
    """The plain algorithm: every book's whole top N converted and checked, diffed with the last one emitted."""

    def __init__(self, venue: str, depth: int) -> None:
        self.venue, self.depth = venue, depth
        self.books: dict[str, tuple[int, dict[int, int], dict[int, int]]] = {}
        self.seq: dict[str, int] = {}

    def _side(self, rows: Any, what: str, descending: bool) -> dict[int, int]:
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
            raise CcxtParseError(f"{what} is not a list")
        out: dict[int, int] = {}
        last = 0
        for row in rows[:self.depth]:
            if not isinstance(row, Sequence) or isinstance(row, (str, bytes)) or len(row) < 2:
                raise CcxtParseError(f"{what}: bad level {row!r}"[:200])
            price, size = to_fixed(row[0], f"{what} price"), to_fixed(row[1], f"{what} size")
            if price <= 0 or size <= 0:
                raise CcxtParseError(f"{what}: level {row!r} is not positive"[:200])
            if out and (price >= last if descending else price <= last):
                raise CcxtParseError(f"{what} not sorted at {row!r}"[:200])
            out[price] = size
            last = price
        return out

    @staticmethod
    def _diff(old: dict[int, int], new: dict[int, int], descending: bool) -> tuple[Level, ...]:
        changes = [(p, s) for p, s in new.items() if old.get(p) != s] + [(p, 0) for p in old if p not in new]
        return tuple(sorted(changes, reverse=descending))

    def book(self, symbol: str, book: Any, ts_recv: int) -> BookSnapshot | BookDelta | str | None:
        """The event, None (unchanged), or the reason of the dead letter."""
        try:
            if not isinstance(book, Mapping):
                raise CcxtParseError("order book is not a mapping")
            bids = self._side(book.get("bids"), "bids", True)
            asks = self._side(book.get("asks"), "asks", False)
            ts_event = ms_to_ns(book.get("timestamp"), ts_recv)
        except CcxtParseError as exc:
            return str(exc)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            return f"malformed order book: {type(exc).__name__}: {exc}"
        seq = self.seq.get(symbol, 0) + 1
        last = self.books.get(symbol)
        if last is None:
            self.books[symbol], self.seq[symbol] = (seq, bids, asks), seq
            return BookSnapshot(self.venue, symbol, seq, tuple(bids.items()), tuple(asks.items()), ts_event, ts_recv)
        bid_changes, ask_changes = self._diff(last[1], bids, True), self._diff(last[2], asks, False)
        if not bid_changes and not ask_changes:
            return None
        self.books[symbol], self.seq[symbol] = (seq, bids, asks), seq
        return BookDelta(self.venue, symbol, seq, seq, bid_changes, ask_changes, ts_event, ts_recv)

    def reset(self, symbol: str) -> None:
        self.books.pop(symbol, None)


# -- random ccxt books -------------------------------------------------------------------------------

def _bid(k: int) -> float:
    return (1000 - k) / 4  # quarter steps: some prices are whole numbers


def _ask(k: int) -> float:
    return (1000 + k) / 4


SIZES = (0.1, 0.3513, 1.0, 2.0, 2.5, 1e-05, 0.000000001, 0.00123, 12345.678901234, 7.0, 1e16, 65013.1)

_size = st.one_of(st.sampled_from(SIZES), st.integers(1, 10**6).map(lambda n: n / 1000))
_set = st.tuples(st.just("set"), st.integers(0, 1), st.booleans(), st.integers(1, 12), _size)
_del = st.tuples(st.just("del"), st.integers(0, 1), st.booleans(), st.integers(1, 12))
_emit = st.tuples(st.just("emit"), st.integers(0, 1), st.sampled_from(("live", "lists", "tuples", "counted")))
_corrupt = st.tuples(st.just("corrupt"), st.integers(0, 1), st.sampled_from((
    "true", "int", "str", "decimal", "exact-decimal", "nan", "inf", "negative", "zero", "neg-zero", "off-grid",
    "swap", "duplicate", "short-row", "str-row", "dict-row", "tuple-side", "str-side", "none-side", "timestamp",
    "big-int")), st.booleans(), st.integers(0, 30), st.booleans())
_reset = st.tuples(st.just("reset"), st.integers(0, 1))
_ops = st.lists(st.one_of(_set, _set, _del, _emit, _emit, _corrupt, _corrupt, _reset), min_size=10, max_size=60)
_seed = st.lists(_set, min_size=4, max_size=24)
"""Levels set before the first book, so that most books start with a few levels a side."""


ROWS: dict[str, Callable[[list[Any]], Any]] = {"lists": list, "tuples": tuple, "counted": lambda r: [*r, 3]}
"""How a copied book's rows look: lists, tuples, or with an order count as a third value."""


def _copy(book: Any, rows: Callable[[list[Any]], Any]) -> dict[str, Any]:
    return {"bids": [rows(r) for r in book["bids"]], "asks": [rows(r) for r in book["asks"]],
            "timestamp": book["timestamp"], "nonce": book["nonce"]}


def _replace(value: Any, kind: str) -> Any:
    return {"true": True, "int": int(value) if value == int(value) else value, "str": repr(value),
            "decimal": Decimal(repr(value)), "exact-decimal": Decimal(value), "nan": float("nan"),
            "inf": float("inf"), "negative": -value, "zero": 0.0, "neg-zero": -0.0, "off-grid": value + 1e-12,
            "big-int": 2**60}[kind]


def _corrupted(book: Any, depth: int, kind: str, bids: bool, index: int, price: bool) -> Any:
    out = _copy(book, list)
    name = "bids" if bids else "asks"
    rows: list[Any] = out[name]
    i = index % min(len(rows), depth + 1) if rows else 0  # in the top N, or just below it
    if kind == "timestamp":
        out["timestamp"] = -5
    elif kind == "tuple-side":
        out[name] = tuple(rows)  # a valid side, not a list
    elif kind == "str-side":
        out[name] = "levels"
    elif kind == "none-side":
        out[name] = None
    elif not rows:
        out[name] = [[float("nan"), 1.0]]
    elif kind == "swap":
        j = (i + 1) % len(rows)
        rows[i], rows[j] = rows[j], rows[i]
    elif kind == "duplicate":
        rows.insert(i, list(rows[i]))
    elif kind == "short-row":
        rows[i] = rows[i][:1]
    elif kind == "str-row":
        rows[i] = "level"
    elif kind == "dict-row":
        rows[i] = {0: rows[i][0], 1: rows[i][1]}
    else:
        rows[i][0 if price else 1] = _replace(rows[i][0 if price else 1], kind)
    return out


def _top(book: Any, depth: int) -> tuple[list[Level], list[Level]]:
    return ([(to_fixed(p, ""), to_fixed(s, "")) for p, s in book["bids"][:depth]],
            [(to_fixed(p, ""), to_fixed(s, "")) for p, s in book["asks"][:depth]])


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 5), st.sampled_from((1, 3, FIXED_CACHE_SIZE)), _seed, _ops)
def test_incremental_matches_full_conversion(depth: int, cache_size: int, seed: list[tuple[Any, ...]],
                                             ops: list[tuple[Any, ...]]) -> None:
    parser = CcxtParser("binance", depth, cache_size=cache_size)
    reference = Reference("binance", depth)
    books = [OrderBook({"symbol": s, "timestamp": 1_700_000_000_000}) for s in SYMBOLS]
    dead: list[DeadLetter] = []
    emitted: dict[str, list[Any]] = {s: [] for s in SYMBOLS}
    first = [("emit", which, "live") for which in range(len(SYMBOLS))]
    for n, (op, which, *args) in enumerate(seed + first + ops):
        symbol, book = SYMBOLS[which], books[which]
        ts = TS + n
        if op == "set":
            bids, k, size = args
            book["bids" if bids else "asks"].storeArray([_bid(k) if bids else _ask(k), size])
            book["timestamp"] += 1
            continue
        if op == "del":
            bids, k = args
            book["bids" if bids else "asks"].storeArray([_bid(k) if bids else _ask(k), 0.0])
            continue
        if op == "reset":
            parser.reset(symbol, "test", ts)
            reference.reset(symbol)
            emitted[symbol].append(BookReset("binance", symbol, "test", ts, ts))
            continue
        if op == "emit":
            variant = args[0]
            shown = book if variant == "live" else _copy(book, ROWS[variant])
        else:
            shown = _corrupted(book, depth, *args)
        before = len(dead)
        event = parser.book(symbol, shown, ts, dead)
        expected = reference.book(symbol, shown, ts)
        if isinstance(expected, str):
            assert event is None and len(dead) == before + 1 and dead[-1].reason == expected
            continue
        assert len(dead) == before and event == expected
        if event is not None:
            emitted[symbol].append(event)
        if op == "emit":  # the engine's book is the venue's top N
            assert Books(strict=True).apply(emitted[symbol]).top(symbol, depth) == _top(book, depth)
    assert parser.stats.dead_letters == len(dead)


# -- the cases where equal is not the same ------------------------------------------------------------

@pytest.mark.parametrize(("first", "then"), [
    (1.0, True),  # True == 1.0, but a bool is not a number
    (float(2**60), 2**60),  # equal, yet repr(float) rounds to 16 digits: another 1e-9 int
    (0.5, Decimal(1 / 2)),  # equal, and the same 1e-9 int
    (0.1, Decimal(1 / 10)),  # equal (the double's exact value), yet 55 decimals: refused
    (1e16, 10**16),
])
def test_a_number_equal_to_the_last_float_is_converted_as_itself(first: Any, then: Any) -> None:
    parser, reference = CcxtParser("kraken", 3), Reference("kraken", 3)
    dead: list[DeadLetter] = []
    for size in (first, then, first):
        book = {"bids": [[3.0, 1.0], [2.0, size]], "asks": [[4.0, 1.0]], "timestamp": None}
        expected = reference.book("XMR/USD", book, TS)
        event = parser.book("XMR/USD", book, TS, dead)
        if isinstance(expected, str):
            assert event is None and dead[-1].reason == expected
        else:
            assert event == expected


def test_rows_mutated_in_place_by_ccxt_are_seen() -> None:
    book = OrderBook({"bids": [[100.5, 1.0], [100.4, 2.0]], "asks": [[100.6, 3.0]], "timestamp": 1})
    parser = CcxtParser("binance", 2)
    dead: list[DeadLetter] = []
    assert isinstance(parser.book("BTC/USDT", book, TS, dead), BookSnapshot)
    book["bids"].storeArray([100.4, 2.5])  # ccxt overwrites the size in the same row list
    assert parser.book("BTC/USDT", book, TS, dead) == BookDelta(
        "binance", "BTC/USDT", 2, 2, ((100_400_000_000, 2_500_000_000),), (), 1_000_000, TS)
    book["asks"].storeArray([100.55, 1.0])
    book["bids"].storeArray([100.5, 0.0])  # bid 100.3 is not there: the top 2 is one level now
    assert parser.book("BTC/USDT", book, TS, dead) == BookDelta(
        "binance", "BTC/USDT", 3, 3, ((100_500_000_000, 0),), ((100_550_000_000, 1_000_000_000),), 1_000_000, TS)
    assert parser.book("BTC/USDT", book, TS, dead) is None
    assert not dead


def test_only_what_changed_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def counting(value: Any, what: str) -> int:
        calls.append(value)
        return to_fixed(value, what)

    monkeypatch.setattr(parser_module, "to_fixed", counting)
    parser = CcxtParser("kraken", 20)
    dead: list[DeadLetter] = []
    bids = [[1000.0 - i, 1 + i / 8] for i in range(40)]
    asks = [[1001.0 + i, 100 + i / 8] for i in range(40)]
    parser.book("XMR/USD", {"bids": bids, "asks": asks}, TS, dead)
    assert len(calls) == 80  # the snapshot: 20 levels a side
    calls.clear()
    assert parser.book("XMR/USD", {"bids": bids, "asks": asks}, TS, dead) is None
    assert calls == []
    bids[3][1] = 7.25
    del asks[0]  # 1021.0 enters the top 20 (its size was never seen), 1001.0 leaves (price known)
    event = parser.book("XMR/USD", {"bids": bids, "asks": asks}, TS, dead)
    assert isinstance(event, BookDelta) and len(event.bids) == 1 and len(event.asks) == 2
    assert sorted(calls) == [7.25, 102.5, 1021.0]
    assert not dead


def test_cache_is_bounded() -> None:
    parser = CcxtParser("kraken", 5, cache_size=4)
    dead: list[DeadLetter] = []
    for i in range(50):
        parser.book("XMR/USD", {"bids": [[100.0 - j, 1.0 + i + j] for j in range(5)], "asks": []}, TS, dead)
        assert len(parser._cache) <= 4
    assert parser.stats.snapshots == 1 and parser.stats.deltas == 49 and not dead


def test_reference_dead_letters_match_the_parser_messages() -> None:
    # the reference above must keep the parser's wording for the comparison to mean anything
    parser, reference = CcxtParser("kraken", 3), Reference("kraken", 3)
    dead: list[DeadLetter] = []
    for bad in ({"bids": [[1.0, 1.0], [2.0, 1.0]], "asks": []}, {"bids": [[1.0]], "asks": []}, None,
                {"bids": [[1.0, -1.0]], "asks": []}, {"bids": [], "asks": [["x", 1.0]]}, {"bids": 5}):
        assert parser.book("XMR/USD", bad, TS, dead) is None
        assert dead[-1].reason == reference.book("XMR/USD", bad, TS), json.dumps(bad)
