"""Hypothesis fuzzing of every recorded-file format the registry knows (``feeds.registry.FILE_FORMATS``).

Each input is a small file (or file pair) built from a few real records of ../shared/data/real, mutated:
truncation, byte flips and bad UTF-8, garbage and blank lines, field deletion / duplication / renaming,
wrong types, huge / negative / NaN / inf numbers, too many decimals, empty fields, wrong column counts,
bad JSON (deep nesting included), extreme timestamps; DBN files are mutated byte by byte. The file is
read by the format's own reader and parser, driven as the registry drives it, and then checked:

- nothing raises (a file that cannot be read at all is one dead letter, never an exception);
- every dead letter has a source and a non-empty reason;
- nothing silently vanishes: each input record (line; row of a JSON dump; DBN record) yields events,
  cross-check material, dead letters, or a count in the parser's ``stats.skipped`` (valid records that
  carry nothing for the engine: headers, heartbeats, halts, blank lines); the exceptions each format's
  contract documents are named in its harness (grouped Tardis L2 rows are counted by levels, MBO
  records build the book until their event's last record);
- every event is well formed: int prices, sizes and times, times in [0, 2**63), prices and sizes within
  +-10**36 (bounded ints), trade prices and sizes > 0, book levels priced > 0 with sizes >= 0, quote
  sides with a size priced > 0, non-empty venue and symbol. DBN prices may be negative (CME spreads).

The same file also goes through the registry's opener (``FILE_FORMATS[fmt].prepare(path)``), which
must not raise either. Bounded: ``MAX_EXAMPLES`` per format, no deadline.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import pytest
import zstandard
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from feeds.cryptofeed_capture.common import CaptureParser, ParserStats
from feeds.cryptofeed_capture.reader import merged_lines
from feeds.dbn.parser import DbnParser
from feeds.dbn.reader import read_records
from feeds.freqtrade.parser import FreqtradeTradesParser
from feeds.histdata.parser import HistDataParser
from feeds.kraken_rest.parser import KrakenTradesParser
from feeds.lobster import reader as lobster_reader
from feeds.lobster.parser import LobsterParser
from feeds.protocols import DeadLetter
from feeds.registry import _CAPTURE_PARSERS, FILE_FORMATS, ExchangeSymbols, VenueSymbols
from feeds.tardis.csv_formats import TardisCsvParser
from feeds.tardis.normalized import TardisNormalizedParser
from feeds.tardis.reader import read_lines
from feeds.truefx.parser import TrueFxParser
from server.engine.events import BookDelta, BookReset, BookSnapshot, Event, Quote, Side, Trade

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
MAX_EXAMPLES = 150
INT64 = 2**63
"""Times are int64 ns on the wire."""
MAX_VALUE = 10**36
"""Prices and sizes (at 1e-9) stay within this: bounded ints (real Kraken asks at 9,999,999,997 CHF exceed
sint64 at 1e-9, so the bound is not sint64)."""
MAX_LINE = 100_000
"""Real lines longer than this (a few huge snapshots) are left out of the samples."""

Files = dict[str, bytes]
"""One fuzz input: file name -> content, written to a fresh directory."""

# -- nasty values -------------------------------------------------------------------------------

_NUMBERS = ("0", "-0", "-1", "-0.5", "1e999999", "1e-999999", "1E+400", "9" * 40, "0.0000000001",
            "1.1234567891", "123456789012345678901.5", "-9223372036854775809", "18446744073709551616",
            "9223372036854775807", "1e9", "1e30")
_TEXTS = ("", " ", "abc", "NaN", "nan", "inf", "-Infinity", "²", "١٢٣", " 7 ", "0x1f", "1_000", "-", ".",
          "+", "1e", "1.2.3", '"', "\x00", "\ufffd", "true", "null", "bid", "ask", "buy", "sell", "b", "s",
          "Buy", "A", "B", "1", "-1", "7")
_TIMES = ("0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999999999Z", "2019-02-30T00:00:00Z",
          "2019-04-01T00:00:00.1234567890Z", "2019-04-01T00:00:00+05:00", "2019-04-01T00:00:00.²Z",
          "19700101 000000000", "99991231 235959999", "00010101 000000000", "20200230 120000000",
          "20200101 246099999", "2013-01-01 22:00:00.295+05:00", "20130101 22:00:00.2950000001",
          "99999999999999999999", "1618678133.3659130001", "-1618678133", "1e12", "34200.0000000001",
          "999999999999.999999999")
NASTY_CELLS = _NUMBERS + _TEXTS + _TIMES


class Num(str):
    """A JSON number kept as its source text (written back unquoted)."""


class Obj(list[list[Any]]):
    """A JSON object as ``[key, value]`` pairs, so keys can be duplicated."""


def load_json(text: str) -> Any:
    return json.loads(text, parse_float=Num, parse_int=Num, parse_constant=Num,
                      object_pairs_hook=lambda pairs: Obj([list(p) for p in pairs]))


def dump_json(value: Any) -> str:
    if isinstance(value, Num):
        return str(value)
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dump_json(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    return json.dumps(value)


_JSON_VALUES: tuple[Any, ...] = (
    *(Num(n) for n in _NUMBERS), *_NUMBERS, *_TEXTS, *_TIMES, None, True, False, [], Obj(), [[]],
    Num("NaN"), Num("Infinity"), Num("-Infinity"), Num("[" * 3000 + "]" * 3000), Num("[" * 200_000),
)


def _nodes(value: Any, out: list[tuple[list[Any], int]]) -> None:
    """Every (container, index) below ``value``: a list element, or an object's pair."""
    if isinstance(value, Obj):
        for i, pair in enumerate(value):
            out.append((value, i))
            _nodes(pair[1], out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.append((value, i))
            _nodes(item, out)


@st.composite
def json_edits(draw: st.DrawFn, doc: Any) -> Any:
    """1-3 structural edits of a decoded document (edited in place and returned)."""
    for _ in range(draw(st.integers(1, 3))):
        nodes: list[tuple[list[Any], int]] = []
        _nodes(doc, nodes)
        if not nodes:
            return draw(st.sampled_from(_JSON_VALUES))
        container, i = nodes[draw(st.integers(0, len(nodes) - 1))]
        op = draw(st.sampled_from(("delete", "duplicate", "replace", "replace", "rename", "wrap")))
        is_pair = isinstance(container, Obj)
        if op == "delete":
            del container[i]
        elif op == "duplicate":
            item = container[i]
            container.insert(i, list(item) if is_pair else item)
        elif op == "rename" and is_pair:
            container[i] = [draw(st.sampled_from(("", "x", "type", "price", *_TEXTS[:4]))), container[i][1]]
        elif op == "wrap":
            if is_pair:
                container[i] = [container[i][0], [container[i][1]]]
            else:
                container[i] = [container[i]]
        else:
            value = draw(st.sampled_from(_JSON_VALUES))
            if is_pair:
                container[i] = [container[i][0], value]
            else:
                container[i] = value
    return doc


@st.composite
def byte_edits(draw: st.DrawFn, data: bytes, newlines: bool = True) -> bytes:
    """Text-level damage: truncation, a flipped byte, inserted bad UTF-8 or control bytes."""
    op = draw(st.sampled_from(("truncate", "flip", "insert", "random")))
    if op == "random" or not data:
        return draw(st.binary(max_size=200))
    pos = draw(st.integers(0, len(data) - 1))
    if op == "truncate":
        return data[:pos]
    if op == "flip":
        return data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]
    junk = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\xef\xbb\xbf", b",", b'"', b":", b" ")
    extra = draw(st.sampled_from(junk + ((b"\n",) if newlines else ())))
    return data[:pos] + extra + data[pos:]


@st.composite
def csv_edits(draw: st.DrawFn, line: str) -> str:
    """1-3 cell edits: delete, duplicate, swap, append or replace a cell with a nasty value."""
    cells = line.split(",")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(len(cells) - 1, 0)))
        op = draw(st.sampled_from(("delete", "duplicate", "swap", "append", "replace", "replace", "replace")))
        if op == "delete" and cells:
            del cells[i]
        elif op == "duplicate" and cells:
            cells.insert(i, cells[i])
        elif op == "swap" and len(cells) > 1:
            j = draw(st.integers(0, len(cells) - 1))
            cells[i], cells[j] = cells[j], cells[i]
        elif op == "append":
            cells.append(draw(st.sampled_from(NASTY_CELLS)))
        elif cells:
            cells[i] = draw(st.sampled_from(NASTY_CELLS))
    return ",".join(cells)


def _json_line(draw: st.DrawFn, line: str) -> str:
    prefix, body = "", line
    head, sep, rest = line.partition(": ")
    if sep and not head.startswith("{") and not head.startswith("["):  # a capture line '<epoch>: <json>'
        prefix, body = head + sep, rest
        if draw(st.integers(0, 5)) == 0:
            prefix = draw(st.sampled_from(_TIMES + _NUMBERS + ("", "x", "u <- 1"))) + ": "
    try:
        doc = load_json(body)
    except ValueError:
        return prefix + body
    return prefix + dump_json(draw(json_edits(doc)))


@st.composite
def mutated_line(draw: st.DrawFn, line: str, kind: str) -> bytes:
    """A real line, maybe damaged (``kind``: 'json' or 'csv' adds structural edits)."""
    op = draw(st.sampled_from(("keep", "keep", "struct", "struct", "struct", "bytes", "blank")))
    if op == "keep":
        return line.encode()
    if op == "blank":
        return draw(st.sampled_from((b"", b" ", b"\r", b"\t")))
    if op == "bytes":
        return draw(byte_edits(line.encode()))
    text = _json_line(draw, line) if kind == "json" else draw(csv_edits(line))
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def line_file(draw: st.DrawFn, lines: Sequence[str], kind: str, max_lines: int = 8,
              header: str | None = None) -> bytes:
    """A window of real lines, each maybe mutated, sometimes extra garbage lines; ``header`` first."""
    start = draw(st.integers(0, len(lines) - 1))
    window = lines[start:start + draw(st.integers(1, max_lines))]
    out = [draw(mutated_line(line, kind)) for line in window]
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), draw(st.binary(max_size=80)))
    if header is not None:
        out.insert(0, draw(mutated_line(header, kind)) if draw(st.integers(0, 4)) == 0 else header.encode())
    ending = draw(st.sampled_from((b"\n", b"\r\n")))
    return ending.join(out) + (ending if draw(st.booleans()) else b"")


# -- running and checking -----------------------------------------------------------------------


@dataclass(slots=True)
class Unit:
    """What one input record produced."""

    record: Any
    events: int = 0
    checks: int = 0
    dead: int = 0
    skipped: int = 0

    @property
    def accounted(self) -> bool:
        return bool(self.events or self.checks or self.dead or self.skipped)


@dataclass(slots=True)
class Run:
    """A parser run: events, dead letters, and per-record units (when the format has records)."""

    events: list[Event] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    stats: ParserStats | None = None

    _mark: tuple[int, int, int, int] | None = None

    def feed(self, records: Iterable[Any]) -> Iterator[Any]:
        """Pass records through, attributing to each what was produced before the next was pulled."""
        for record in records:
            self.close()
            self.units.append(Unit(record))
            self._mark = (len(self.events), len(self.checks), len(self.dead), self._skipped())
            yield record
        self.close()

    def _skipped(self) -> int:
        return sum(self.stats.skipped.values()) if self.stats is not None else 0

    def close(self) -> None:
        """End the current record's attribution (the parser pulled the next one, or stopped)."""
        if self._mark is not None:
            unit = self.units[-1]
            e, c, d, s = self._mark
            unit.events, unit.checks = len(self.events) - e, len(self.checks) - c
            unit.dead, unit.skipped = len(self.dead) - d, self._skipped() - s
            self._mark = None

    def unaccounted(self, allowed: Callable[[int, Unit], bool] = lambda i, u: False) -> list[Unit]:
        return [u for i, u in enumerate(self.units) if not u.accounted and not allowed(i, u)]


def _well_formed(event: Event, fmt: str) -> None:
    signed = fmt == "dbn"  # CME prices may be negative (calendar spreads)
    assert isinstance(event, BookSnapshot | BookDelta | BookReset | Quote | Trade), event
    for ts in (event.ts_event, event.ts_recv):
        assert type(ts) is int and 0 <= ts < INT64, event
    assert isinstance(event.venue, str) and event.venue, event
    assert isinstance(event.symbol, str) and event.symbol, event

    def price_ok(price: int) -> bool:
        return type(price) is int and -MAX_VALUE <= price < MAX_VALUE and (signed or price > 0)

    def size_ok(size: int, positive: bool) -> bool:
        return type(size) is int and 0 <= size < MAX_VALUE and (size > 0 or not positive)

    if isinstance(event, Trade):
        assert price_ok(event.price) and size_ok(event.size, True), event
        assert isinstance(event.side, Side) and isinstance(event.trade_id, str), event
    elif isinstance(event, Quote):
        for price, size in ((event.bid_price, event.bid_size), (event.ask_price, event.ask_size)):
            assert size_ok(size, False), event
            assert price_ok(price) if size else type(price) is int and -MAX_VALUE <= price < MAX_VALUE, event
    elif isinstance(event, BookSnapshot | BookDelta):
        assert all(price_ok(p) and size_ok(s, False) for p, s in (*event.bids, *event.asks)), event
        seqs = (event.seq,) if isinstance(event, BookSnapshot) else (event.first_seq, event.seq)
        assert all(type(s) is int and 0 <= s < INT64 for s in seqs), event
        assert not isinstance(event, BookDelta) or event.first_seq <= event.seq, event
    else:
        assert isinstance(event.reason, str) and event.reason, event


def _check(fmt: str, run: Run) -> None:
    for letter in run.dead:
        assert isinstance(letter, DeadLetter), letter
        assert letter.source and isinstance(letter.reason, str) and letter.reason.strip(), letter
        assert isinstance(letter.raw, str) and type(letter.ts_recv) is int, letter
    for event in run.events:
        _well_formed(event, fmt)


@dataclass(frozen=True, slots=True)
class Harness:
    """How to fuzz one file format: its real sample, an input strategy, and a checked run."""

    load: Callable[[], Any]
    """The real sample, or a str: why it is missing."""
    strategy: Callable[[Any], st.SearchStrategy[Files]]
    run: Callable[[Path], Run]
    """Reads the written files as the registry does, checks accounting, returns the run."""
    path: str
    """The file handed to the registry's opener."""


def _missing(*parts: str) -> str | None:
    for part in parts:
        if not (REAL / part).exists():
            return f"real sample {part} missing under ../shared/data/real (see SOURCES.md)"
    return None


def _lines(path: Path, limit: int) -> list[str]:
    out: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if len(out) >= limit:
                break
            if len(line) <= MAX_LINE:
                out.append(line.rstrip("\r\n"))
    return out


# -- tardis -------------------------------------------------------------------------------------

_TARDIS = "tardis_bitmex_deribit_2019-04-01"
_TARDIS_CSV = "tardis_csv_format_samples"


@cache
def _tardis_jsonl_sample() -> list[str] | str:
    if why := _missing(_TARDIS):
        return why
    folder = REAL / _TARDIS
    return (_lines(folder / "multi_venue_first10msgs_2019-04-01T0000.normalized.jsonl", 80)
            + _lines(folder / "bitmex_XBTUSD+deribit_BTC-PERPETUAL_2019-04-01T0000-0001.normalized.jsonl", 60))


def _tardis_jsonl_run(folder: Path) -> Run:
    parser = TardisNormalizedParser(ExchangeSymbols())
    run = Run(stats=parser.stats)
    run.events.extend(parser.parse(run.feed(read_lines(folder / "data.jsonl")), run.dead))
    run.close()
    assert not run.unaccounted(), run.unaccounted()
    return run


@cache
def _tardis_csv_sample() -> list[list[str]] | str:
    if why := _missing(_TARDIS_CSV):
        return why
    return [_lines(p, 40) for p in sorted((REAL / _TARDIS_CSV).glob("*.csv"))]


def _tardis_csv_strategy(sample: list[list[str]]) -> st.SearchStrategy[Files]:
    return st.sampled_from(sample).flatmap(
        lambda lines: line_file(lines[1:], "csv", header=lines[0]).map(lambda b: {"data.csv": b}))


def _tardis_csv_run(folder: Path) -> Run:
    parser = TardisCsvParser(ExchangeSymbols())
    run = Run(stats=parser.stats)
    run.events.extend(parser.parse(run.feed(read_lines(folder / "data.csv")), run.dead))
    run.close()
    rows = [u for u in run.units if u.record.strip()]
    if not rows:
        return run
    if not parser.kind:  # an unknown header rejects the file: one dead letter, the rest unread
        assert len(run.dead) == 1 and "header" in run.dead[0].reason and not run.events, run.dead
        return run
    body = rows[1:]
    if parser.kind == "incremental_book_L2":  # rows are grouped: count levels, not events
        levels = sum(len(e.bids) + len(e.asks) for e in run.events if isinstance(e, BookSnapshot | BookDelta))
        assert levels + len(run.dead) == len(body), (levels, run.dead, body)
    else:
        assert len(run.events) + len(run.dead) == len(body), (run.events, run.dead, body)
        assert all(u.accounted for u in body), body
    return run


# -- JSON dumps: kraken REST, freqtrade ---------------------------------------------------------

_KRAKEN = "kraken_xbtusdt_rest_2025-11-10/http_trades.json"
_FREQTRADE = "binance_xrpeth_2019-10-11/XRP_ETH-trades.json.gz"


@cache
def _kraken_sample() -> list[Any] | str:
    if why := _missing(_KRAKEN):
        return why
    doc = load_json((REAL / _KRAKEN).read_text())
    result = dict(dict(doc)["result"])
    rows: list[Any] = result["XBTUSDT"][:200]
    return rows


@cache
def _freqtrade_sample() -> list[Any] | str:
    if why := _missing(_FREQTRADE):
        return why
    rows: list[Any] = load_json(gzip.decompress((REAL / _FREQTRADE).read_bytes()).decode())[:200]
    return rows


@st.composite
def _dump_file(draw: st.DrawFn, rows: list[Any], wrap: Callable[[list[Any]], Any], name: str) -> Files:
    start = draw(st.integers(0, len(rows) - 1))
    window = load_json(dump_json(rows[start:start + draw(st.integers(1, 8))]))  # a fresh copy
    doc = wrap(window)
    if draw(st.booleans()):
        doc = draw(json_edits(doc))
    data = dump_json(doc).encode("utf-8", errors="surrogatepass")
    if draw(st.integers(0, 3)) == 0:
        data = draw(byte_edits(data))
    return {name: data}


def _kraken_doc(rows: list[Any]) -> Any:
    return Obj([["error", []], ["result", Obj([["XBTUSDT", rows], ["last", "1762820035981023752"]])]])


def _dump_units(text: str, rows_of: Callable[[Any], list[Any] | None]) -> int | None:
    """Independent count of the rows a dump holds; None when it is not a readable document."""
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)
    except (ValueError, RecursionError):
        return None
    rows = rows_of(doc)
    return None if rows is None else len(rows)


def _kraken_rows(doc: Any) -> list[Any] | None:
    if not isinstance(doc, dict) or doc.get("error") or not isinstance(doc.get("result"), dict):
        return None
    units: list[Any] = []
    for pair, rows in doc["result"].items():
        if pair != "last":
            units.extend(rows if isinstance(rows, list) else [rows])  # a non-list is one dead letter
    return units


def _dump_run(folder: Path, name: str, parse: Callable[[str, list[DeadLetter]], Iterator[Event]],
              rows_of: Callable[[Any], list[Any] | None]) -> Run:
    path = folder / name
    text = (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()).decode(
        "utf-8", errors="replace")  # as registry._read_text
    run = Run()
    run.events.extend(parse(text, run.dead))
    units = _dump_units(text, rows_of)
    if units is None:  # the document itself is bad: one dead letter, no trades
        assert not run.events and len(run.dead) == 1, run.dead
    else:  # every row is a trade or a dead letter
        assert len(run.events) + len(run.dead) == units, (len(run.events), run.dead, units)
    return run


def _kraken_run(folder: Path) -> Run:
    return _dump_run(folder, "http_trades.json",
                     lambda text, dead: KrakenTradesParser(VenueSymbols("kraken")).parse([text], dead),
                     _kraken_rows)


def _freqtrade_run(folder: Path) -> Run:
    return _dump_run(folder, "XRP_ETH-trades.json",
                     lambda text, dead: FreqtradeTradesParser("XRP/ETH").parse([text], dead),
                     lambda doc: doc if isinstance(doc, list) else None)


# -- cryptofeed captures ------------------------------------------------------------------------

_CAPTURES = "cryptofeed_ws_captures"
_CAPTURE_FILES = {"binance": "BINANCE.ws.1.0", "kraken": "KRAKEN.ws.50.0", "coinbase": "COINBASE.ws.28.0",
                  "bitmex": "BITMEX.ws.1.0"}


@cache
def _capture_sample() -> dict[str, tuple[list[str], list[str]]] | str:
    if why := _missing(*(f"{_CAPTURES}/{f}" for f in _CAPTURE_FILES.values())):
        return why
    assert set(_CAPTURE_FILES) == set(_CAPTURE_PARSERS), "a capture venue without a fuzz sample"
    folder = REAL / _CAPTURES
    http = folder / "BINANCE.http.0.0"
    return {venue: (_lines(folder / name, 150), _lines(http, 3) if venue == "binance" and http.exists() else [])
            for venue, name in _CAPTURE_FILES.items()}


@st.composite
def _capture_files(draw: st.DrawFn, sample: dict[str, tuple[list[str], list[str]]]) -> Files:
    venue = draw(st.sampled_from(sorted(sample)))
    ws, http = sample[venue]
    files = {_CAPTURE_FILES[venue]: draw(line_file(ws, "json", max_lines=10))}
    with_http = draw(st.booleans())
    if http and with_http:
        files["BINANCE.http.0.0"] = draw(line_file(http, "json", max_lines=2))
    return files


def _capture_run(folder: Path) -> Run:
    (path,) = folder.glob("*.ws.*")
    venue = path.name.split(".", 1)[0].lower()
    parser: CaptureParser = _CAPTURE_PARSERS[venue](VenueSymbols(venue))
    run = Run(stats=parser.stats)
    paths = [path, *sorted(folder.glob(f"{path.name.split('.', 1)[0]}.http.*"))]
    for frame in parser.parse_frames(run.feed(merged_lines(*paths)), run.dead):
        run.events.extend(frame.events)
        run.checks.extend(frame.checks)
    assert not run.unaccounted(), run.unaccounted()
    return run


# -- LOBSTER ------------------------------------------------------------------------------------

_LOBSTER = "lobster_aapl_2012-06-21"
_LOBSTER_MSG = "AAPL_2012-06-21_34200000_57600000_message_10.csv"
_LOBSTER_BOOK = "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"


@cache
def _lobster_sample() -> tuple[list[str], list[str]] | str:
    if why := _missing(f"{_LOBSTER}/{_LOBSTER_MSG}", f"{_LOBSTER}/{_LOBSTER_BOOK}"):
        return why
    return _lines(REAL / _LOBSTER / _LOBSTER_MSG, 2000), _lines(REAL / _LOBSTER / _LOBSTER_BOOK, 2000)


@st.composite
def _lobster_files(draw: st.DrawFn, sample: tuple[list[str], list[str]]) -> Files:
    messages, rows = sample
    start = draw(st.integers(0, len(messages) - 2))
    n = draw(st.integers(1, 10))
    msg = [draw(mutated_line(line, "csv")) for line in messages[start:start + n]]
    book = [draw(mutated_line(line, "csv")) if draw(st.integers(0, 4)) == 0 else line.encode()
            for line in rows[start:start + n]]
    if draw(st.integers(0, 4)) == 0:  # the two files disagree on their length
        shorter: list[bytes] = msg if draw(st.booleans()) else book
        del shorter[draw(st.integers(0, n - 1)):]
    return {_LOBSTER_MSG: b"\n".join(msg) + b"\n", _LOBSTER_BOOK: b"\n".join(book) + b"\n"}


def _lobster_run(folder: Path) -> Run:
    parser = LobsterParser("AAPL", date(2012, 6, 21), venue="nasdaq")
    run = Run(stats=parser.stats)
    messages = lobster_reader.read_lines(folder / _LOBSTER_MSG)
    run.events.extend(parser.replay(run.feed(messages), lobster_reader.read_lines(folder / _LOBSTER_BOOK),
                                    run.dead))
    run.close()
    if not parser.seeded:  # no seed: the file is rejected with one dead letter
        assert not run.events and len(run.dead) == 1, run.dead
        return run
    # The first message is the seed's (its effect is in row 0): the snapshot accounts for it.
    assert not run.unaccounted(lambda i, u: i == 0), run.unaccounted(lambda i, u: i == 0)
    return run


# -- DBN ----------------------------------------------------------------------------------------

_DBN = "databento_glbx_mdp3"
_DBN_FILES = ("esu4_nqu4_futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
              "esu4_nqu4_futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
              "esm4_orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst")


@cache
def _dbn_sample() -> list[tuple[bytes, list[bytes]]] | str:
    """Per file: the header (with metadata) and the first records, split by their length byte."""
    if why := _missing(*(f"{_DBN}/{f}" for f in _DBN_FILES)):
        return why
    out = []
    for name in _DBN_FILES:
        raw = zstandard.ZstdDecompressor().stream_reader((REAL / _DBN / name).read_bytes()).read()
        pos = 8 + int.from_bytes(raw[4:8], "little")
        head, records = raw[:pos], list[bytes]()
        while pos < len(raw) and len(records) < 300:
            size = raw[pos] * 4
            records.append(raw[pos:pos + size])
            pos += size
        out.append((head, records))
    return out


@st.composite
def _dbn_files(draw: st.DrawFn, sample: list[tuple[bytes, list[bytes]]]) -> Files:
    head, records = draw(st.sampled_from(sample))
    start = draw(st.integers(0, len(records) - 1))
    recs = list(records[start:start + draw(st.integers(1, 40))])
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(recs) - 1)) if recs else 0
        op = draw(st.sampled_from(("flip", "flip", "flip", "delete", "duplicate", "length", "junk")))
        if not recs or op == "junk":
            recs.insert(i, draw(st.binary(max_size=90)))
        elif op == "flip" and recs[i]:
            rec = recs[i]
            pos = draw(st.integers(0, len(rec) - 1))
            recs[i] = rec[:pos] + bytes([rec[pos] ^ draw(st.integers(1, 255))]) + rec[pos + 1:]
        elif op == "delete":
            del recs[i]
        elif op == "duplicate":
            recs.insert(i, recs[i])
        elif op == "length":
            recs[i] = bytes([draw(st.integers(0, 255))]) + recs[i][1:]
    data = head + b"".join(recs)
    if draw(st.integers(0, 5)) == 0:
        data = draw(byte_edits(data, newlines=False))
    return {"fuzz.dbn": data}


def _dbn_run(folder: Path) -> Run:
    parser = DbnParser()
    run = Run(stats=parser.stats)
    run.events.extend(parser.parse(run.feed(read_records(folder / "fuzz.dbn", run.dead)), run.dead))
    run.close()

    def absorbed(i: int, unit: Unit) -> bool:
        # Metadata teaches venue and symbols; MBO records build the book (their delta is emitted at
        # the record flagged LAST of the venue event, or at the end of the input).
        return isinstance(unit.record, dbn.Metadata | dbn.MBOMsg)

    units = [u for u in run.units if u.record is not None]
    assert not run.unaccounted(absorbed), run.unaccounted(absorbed)
    assert parser.stats.lines == len(units)
    return run


# -- FX -----------------------------------------------------------------------------------------

_HISTDATA = "fx/histdata_EURUSD_ticks_2020-01-01.csv"
_TRUEFX = "fx/truefx_USDJPY_ticks_2013-01-01.csv"


@cache
def _histdata_sample() -> list[str] | str:
    return _missing(_HISTDATA) or _lines(REAL / _HISTDATA, 300)


@cache
def _truefx_sample() -> list[str] | str:
    return _missing(_TRUEFX) or _lines(REAL / _TRUEFX, 300)


def _histdata_run(folder: Path) -> Run:
    parser = HistDataParser("EUR/USD")
    run = Run(stats=parser.stats)
    run.events.extend(parser.parse(run.feed(read_lines(folder / "histdata_EURUSD_ticks.csv")), run.dead))
    run.close()
    assert not run.unaccounted(), run.unaccounted()
    return run


def _truefx_run(folder: Path) -> Run:
    parser = TrueFxParser("USD/JPY")
    run = Run(stats=parser.stats)
    run.events.extend(parser.parse(run.feed(read_lines(folder / "truefx_USDJPY_ticks.csv")), run.dead))
    run.close()
    first = next((i for i, u in enumerate(run.units) if u.record.strip()), -1)

    def header(i: int, unit: Unit) -> bool:  # the first line names the columns
        return i == first and parser.layout == "header"

    assert not run.unaccounted(header), run.unaccounted(header)
    return run


# -- the harnesses ------------------------------------------------------------------------------


def _one(name: str) -> Callable[[bytes], Files]:
    return lambda data: {name: data}


HARNESSES: dict[str, Harness] = {
    "tardis-jsonl": Harness(_tardis_jsonl_sample, lambda s: line_file(s, "json").map(_one("data.jsonl")),
                            _tardis_jsonl_run, "data.jsonl"),
    "tardis-csv": Harness(_tardis_csv_sample, _tardis_csv_strategy, _tardis_csv_run, "data.csv"),
    "kraken-rest-trades": Harness(_kraken_sample, lambda s: _dump_file(s, _kraken_doc, "http_trades.json"),
                                  _kraken_run, "http_trades.json"),
    "freqtrade-trades": Harness(_freqtrade_sample, lambda s: _dump_file(s, lambda r: r, "XRP_ETH-trades.json"),
                                _freqtrade_run, "XRP_ETH-trades.json"),
    "cryptofeed-capture": Harness(_capture_sample, _capture_files, _capture_run, "*.ws.*"),
    "lobster": Harness(_lobster_sample, _lobster_files, _lobster_run, _LOBSTER_MSG),
    "dbn": Harness(_dbn_sample, _dbn_files, _dbn_run, "fuzz.dbn"),
    "histdata": Harness(_histdata_sample, lambda s: line_file(s, "csv").map(_one("histdata_EURUSD_ticks.csv")),
                        _histdata_run, "histdata_EURUSD_ticks.csv"),
    "truefx": Harness(_truefx_sample,
                      lambda s: line_file(s[1:], "csv", header=s[0]).map(_one("truefx_USDJPY_ticks.csv")),
                      _truefx_run, "truefx_USDJPY_ticks.csv"),
}


def check_files(fmt: str, files: Files) -> Run:
    """Write ``files``, run the format's harness and the registry's opener on them; check both."""
    harness = HARNESSES[fmt]
    with tempfile.TemporaryDirectory(prefix="mds-fuzz-") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        run = harness.run(folder)
        _check(fmt, run)
        (path,) = folder.glob(harness.path)
        registry_dead: list[DeadLetter] = []
        registry_events = list(FILE_FORMATS[fmt].prepare(path)(registry_dead))
        _check(fmt, Run(events=registry_events, dead=registry_dead))
    return run


def test_every_format_has_a_harness() -> None:
    assert set(HARNESSES) == set(FILE_FORMATS)


@pytest.mark.parametrize("fmt", sorted(FILE_FORMATS))
def test_fuzz_format(fmt: str) -> None:
    harness = HARNESSES[fmt]
    sample = harness.load()
    if isinstance(sample, str):
        pytest.skip(sample)

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(files=harness.strategy(sample))
    def fuzz(files: Files) -> None:
        check_files(fmt, files)

    fuzz()


# -- regressions: inputs that crashed a parser or vanished silently before its fix ---------------

_DBN_API: Any = dbn  # the stubs type the enum members as str
_DBN_HEAD = bytes(_DBN_API.Metadata(dataset="GLBX.MDP3", schema=_DBN_API.Schema.TRADES, start=0,
                                stype_in=_DBN_API.SType.RAW_SYMBOL, stype_out=_DBN_API.SType.INSTRUMENT_ID, end=None,
                                symbols=[], partial=[], not_found=[], mappings=[]).encode())
_DBN_TRADE = bytes(_DBN_API.TradeMsg(publisher_id=1, instrument_id=118, ts_event=1, price=5 * 10**12, size=1,
                                     action=_DBN_API.Action.TRADE, side=_DBN_API.Side.BID, depth=0, ts_recv=2,
                                     ts_in_delta=0, sequence=1, flags=0))
_L2 = b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
_TRADES = b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
_QUOTES = b"exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
_TARDIS_TRADE = ('{"type":"trade","exchange":"binance","symbol":"BTCUSDT","id":"1","price":4102.44,"amount":%s,'
                 '"side":%s,"timestamp":"2019-04-01T00:00:01.991Z","localTimestamp":"2019-04-01T00:00:02.112665Z"}')
_LOBSTER_ROW = b"5859400,200,5853300,18" + b",9999999999,0,-9999999999,0" * 9


def _kraken(rows: str, pair: str = "XBTUSDT") -> Files:
    return {"http_trades.json": f'{{"error":[],"result":{{"{pair}":[{rows}],"last":"1"}}}}'.encode()}


@settings(phases=[Phase.explicit], deadline=None, database=None)
# decimal.Overflow from the capture epoch, in the reader's merge key and in seconds_to_ns: a crash
@example(case=("cryptofeed-capture", {"BITMEX.ws.1.0": b'1e999999: {"table":"trade","action":"insert","data":[]}'}))
# an orderBookL2 message without rows produced nothing and was not counted: vanished
@example(case=("cryptofeed-capture",
               {"BITMEX.ws.1.0": b'1626993370.431699: {"table":"orderBookL2","action":"insert","data":[]}'}))
# a trade priced 0 (and a level priced 0) were emitted as events
@example(case=("cryptofeed-capture", {"BINANCE.ws.1.0": b'1634000000.1: {"e":"trade","E":1,"s":"NKNUSDT","t":5,'
                                                       b'"p":"0","q":"1","T":1,"m":true}'}))
# a record shorter than its type's layout: pyo3 PanicException (a BaseException) out of the decoder
@example(case=("dbn", {"fuzz.dbn": _DBN_HEAD + bytes([10]) + _DBN_TRADE[1:40]}))
# a price of 10**40 (any size of int was emitted: '1e999990' took 25 s to expand)
@example(case=("freqtrade-trades", {"XRP_ETH-trades.json": b'[[1570752011620,"1",null,"sell",1e40,23.0,0.03]]'}))
# deep nesting: RecursionError out of json.loads
@example(case=("freqtrade-trades", {"XRP_ETH-trades.json": b"[" * 100_000}))
# '2' superscript passes str.isdigit, then int() raises ValueError: a crash
@example(case=("histdata", {"histdata_EURUSD_ticks.csv": "20200101 170000065,1.\u00b2,1.2,0\n".encode()}))
# a time after 2262 overflows int64 ns
@example(case=("histdata", {"histdata_EURUSD_ticks.csv": b"99991231 235959999,1.1,1.2,0\n"}))
# an empty pair name became an empty symbol; a time beyond int64; deep nesting
@example(case=("kraken-rest-trades", _kraken('["1.5","0.1",1762795433.97,"b","l","",1]', pair="")))
@example(case=("kraken-rest-trades", _kraken('["1.5","0.1",1e15,"b","l","",1]')))
@example(case=("kraken-rest-trades", {"http_trades.json": b"[" * 100_000}))
# a quote side with a size and no price; a trade priced 0; an L2 level with a negative amount
@example(case=("tardis-csv", {"data.csv": _QUOTES + b"huobi-dm-swap,BTC-USD,1588291201099000,1588291201234268,"
                                                    b"5494,,8629.2,806\n"}))
@example(case=("tardis-csv", {"data.csv": _TRADES + b"bitmex,XBTUSD,1583020803145000,1583020803307160,x,sell,0,1\n"}))
@example(case=("tardis-csv", {"data.csv": _L2 + b"deribit,BTC-PERPETUAL,1,1,true,ask,6421.5,-5\n"}))
# an unhashable side: TypeError out of the parser; a trade of size 0 was emitted
@example(case=("tardis-jsonl", {"data.jsonl": (_TARDIS_TRADE % ("0.5", '["sell"]')).encode()}))
@example(case=("tardis-jsonl", {"data.jsonl": (_TARDIS_TRADE % ("0", '"sell"')).encode()}))
# non-ASCII digits in the time: ValueError out of int()
@example(case=("truefx", {"truefx_USDJPY_ticks.csv": "timestamp,bid,ask\n2013-01-01 22:00:00.\u00b2+00:00,1,2\n"
                          .encode()}))
# LOBSTER: decimal.Overflow from the time (a crash in the registry's opener too); an execution of size 0
# was a Trade of size 0; messages beyond the orderbook file (the registry's zip drops them silently)
@example(case=("lobster", {_LOBSTER_MSG: b"34200.1,1,1,18,5853300,1\n1e999999,1,2,5,5853300,1\n",
                           _LOBSTER_BOOK: _LOBSTER_ROW + b"\n" + _LOBSTER_ROW + b"\n"}))
@example(case=("lobster", {_LOBSTER_MSG: b"34200.1,1,1,18,5853300,1\n34200.2,4,2,0,5853300,1\n",
                           _LOBSTER_BOOK: _LOBSTER_ROW + b"\n" + _LOBSTER_ROW + b"\n"}))
@example(case=("lobster", {_LOBSTER_MSG: b"34200.1,1,1,18,5853300,1\n34200.2,1,2,5,5853300,1\n",
                           _LOBSTER_BOOK: _LOBSTER_ROW + b"\n"}))
@given(case=st.just(("histdata", {"histdata_EURUSD_ticks.csv": b"20200101 170000065,1.1,1.2,0\n"})))
def test_fuzz_regressions(case: tuple[str, Files]) -> None:
    fmt, files = case
    check_files(fmt, files)
