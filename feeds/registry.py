"""The one registry of feeds: a spec string names a feed, ``build_feed`` makes the ``Feed``.

Spec grammar::

    sim[:k=v,...]                                  the market simulator (feeds/simulator)
    file:<format>:<path>[?speed=max|<N>x]          replay of a recorded file (feeds/file_feed.FileFeed)
    kafka[:k=v,...]                                the matching engine's Kafka topics (feeds/kafka)
    ccxt:exchange=<id>,symbols=A/B+C/D[,...]       any ccxt.pro exchange (feeds/ccxt)
    fix:host=H,port=P,sender=S,target=T,symbols=..  a FIX 4.4 liquidity provider (feeds/fix; extra 'fix')

``parse_feed_spec(text) -> FeedSpec`` only parses (no I/O) and raises ``ValueError`` with a clear
message for an unknown kind or format, a missing path, a bad speed or query. ``build_feed(spec)``
checks the file (``FileNotFoundError``), infers what the format needs from the file name (the symbol
of an FX or freqtrade file, the LOBSTER orderbook companion, ...) and returns the ``Feed``. The speed
of a file replay defaults to ``1x`` (the original pace); ``max`` replays as fast as the sink accepts.
The simulator is imported lazily (``SimulatorConfig.from_spec`` receives the whole spec text).

File formats (``FILE_FORMATS``), each a small adapter from a path to a stream of events built from
the existing readers and parsers:

=====================  ===============================================  ==============================
format                 file                                             venue / symbols
=====================  ===============================================  ==============================
``tardis-jsonl``       tardis-node normalized JSONL (``.gz`` ok)        the file's ``exchange``
``tardis-csv``         a Tardis CSV dataset (``.gz`` ok)                the file's ``exchange``
``kraken-rest-trades`` one ``GET /0/public/Trades`` response            ``kraken``
``freqtrade-trades``   ``<BASE>_<QUOTE>-trades.json[.gz]``              ``binance``, ``BASE/QUOTE``
``cryptofeed-capture`` ``<VENUE>.ws.*`` (+ sibling ``<VENUE>.http.*``)  binance/kraken/coinbase/bitmex
``lobster``            ``<SYM>_<date>_..._message_<N>.csv`` (+ book)    ``nasdaq``, ``<SYM>``
``dbn``                Databento ``.dbn`` / ``.dbn.zst``                 dataset (GLBX.MDP3 -> ``cme``),
                                                                        raw symbols (``ESH4``)
``histdata``           HistData tick CSV, pair in the name              ``histdata``, ``EUR/USD``
``truefx``             TrueFX tick CSV, pair in rows or in the name     ``truefx``, ``USD/JPY``
=====================  ===============================================  ==============================

Venue names are lowercase. Venue symbols become canonical symbols through ``canonical_symbol``:

- spot venues (binance, kraken, coinbase, bitstamp, okex, gemini, huobi): ``BASE/QUOTE``, split at
  ``-`` or ``/`` or before a known quote currency (``BTCUSDT`` -> ``BTC/USDT``, ``BTC-USD`` ->
  ``BTC/USD``); Kraken's ``XBT`` / ``XDG`` are ``BTC`` / ``DOGE`` (``XBTUSDT`` -> ``BTC/USDT``) and its
  legacy ``XXBTZUSD`` names are split as ``X XBT Z USD``;
- perpetual swaps: ``BASE/QUOTE-PERP`` -- BitMEX symbols without digits (``XBTUSD`` ->
  ``BTC/USD-PERP``), Deribit ``BTC-PERPETUAL`` -> ``BTC/USD-PERP``, binance-futures / bybit
  ``BTCUSDT`` -> ``BTC/USDT-PERP``, okex-swap ``BTC-USD-SWAP`` and huobi-dm-swap ``BTC-USD`` ->
  ``BTC/USD-PERP``; so two venues' inverse BTC perpetuals share one NBBO symbol;
- everything else (dated futures, options, CME and equity symbols) stays as the venue writes it.

The LOBSTER replay applies each message and then refills from the orderbook row (the exact 10-level
book; see feeds/lobster/parser.py). Kraken checksums and venue BBO messages found in captures are
cross-check material, not engine events, and are not replayed. Dead letters of a file feed go to its
``FileFeed.dead_letters`` (a bounded ``DeadLetterLog``), and to the sink passed to ``build_feed`` if any.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

from feeds.cryptofeed_capture.binance import BinanceParser
from feeds.cryptofeed_capture.bitmex import BitmexParser
from feeds.cryptofeed_capture.coinbase import CoinbaseParser
from feeds.cryptofeed_capture.common import CaptureParser
from feeds.cryptofeed_capture.kraken import KrakenParser
from feeds.cryptofeed_capture.reader import merged_lines
from feeds.dbn.parser import DbnParser
from feeds.dbn.reader import read_records
from feeds.file_feed import REALTIME, DeadLetterLog, FileFeed, Speed
from feeds.freqtrade.parser import FreqtradeTradesParser
from feeds.histdata.parser import HistDataParser
from feeds.kraken_rest.parser import KrakenTradesParser
from feeds.lobster import reader as lobster_reader
from feeds.lobster.parser import LobsterParser
from feeds.protocols import DeadLetterSink, Feed
from feeds.tardis.csv_formats import TardisCsvParser
from feeds.tardis.normalized import TardisNormalizedParser
from feeds.tardis.reader import read_lines
from feeds.truefx.parser import TrueFxParser
from server.engine.events import Event

SPEC_HELP: Final = ("expected 'sim[:k=v,...]', 'file:<format>:<path>[?speed=max|<N>x]', 'kafka[:k=v,...]', "
                    "'ccxt:exchange=<id>,symbols=...' or 'fix:host=...,port=...,sender=...,target=...,symbols=...'")

# -- symbols ------------------------------------------------------------------------------------

_QUOTES: Final = ("USDT", "USDC", "BUSD", "DAI", "USD", "EUR", "GBP", "JPY", "CHF", "CAD",
                  "AUD", "TRY", "BRL", "RUB", "KRW", "BTC", "XBT", "ETH", "BNB")
_ALIASES: Final = {"XBT": "BTC", "XDG": "DOGE"}
_SPOT: Final = frozenset({"binance", "binance-us", "kraken", "coinbase", "bitstamp", "okex", "gemini",
                          "huobi"})
_LINEAR_PERP: Final = frozenset({"binance-futures", "bybit"})


def _asset(code: str) -> str:
    return _ALIASES.get(code, code)


def _split_pair(text: str) -> tuple[str, str] | None:
    """``BTC-USD``, ``XBT/USD``, ``BTCUSDT`` to (base, quote); None when it is not a plain pair."""
    for sep in ("/", "-"):
        if sep in text:
            parts = text.split(sep)
            if len(parts) == 2 and all(p.isalnum() and p.isupper() for p in parts):
                return parts[0], parts[1]
            return None
    if not (text.isalpha() and text.isupper()):
        return None
    for quote in sorted(_QUOTES, key=len, reverse=True):
        if text.endswith(quote) and len(text) > len(quote) + 1:
            return text[: -len(quote)], quote
    return None


def canonical_symbol(venue: str, venue_symbol: str) -> str:
    """A venue's symbol to the canonical one (see the module docstring); unknown shapes are kept."""
    v = venue.lower()
    s = venue_symbol.upper()
    pair: tuple[str, str] | None = None
    perp = False
    if v == "kraken" and len(s) == 8 and s[0] in "XZ" and s[4] in "XZ" and s.isalpha():
        pair = (s[1:4], s[5:8])
    elif v in _SPOT:
        pair = _split_pair(s)
    elif v == "bitmex" and s.isalpha():
        pair, perp = _split_pair(s), True
    elif v == "deribit" and s.endswith("-PERPETUAL"):
        base, _, quote = s.removesuffix("-PERPETUAL").partition("_")
        pair, perp = ((base, quote or "USD") if base.isalpha() else None), True
    elif v in _LINEAR_PERP and s.isalpha():
        pair, perp = _split_pair(s), True
    elif v == "okex-swap" and s.endswith("-SWAP"):
        pair, perp = _split_pair(s.removesuffix("-SWAP")), True
    elif v == "huobi-dm-swap":
        pair, perp = _split_pair(s), True
    if pair is None:
        return venue_symbol
    text = f"{_asset(pair[0])}/{_asset(pair[1])}"
    return text + "-PERP" if perp else text


class VenueSymbols(Mapping[str, str]):
    """A mapping view ``venue symbol -> canonical`` for one venue (what the capture parsers take)."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self._cache: dict[str, str] = {}

    def __getitem__(self, key: str) -> str:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = canonical_symbol(self.venue, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def __bool__(self) -> bool:
        return True  # a view over every key: parsers' ``symbols or {}`` must keep it


class ExchangeSymbols(Mapping[tuple[str, str], str]):
    """A mapping view ``(exchange, venue symbol) -> canonical`` (what the Tardis parsers take)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], str] = {}

    def __getitem__(self, key: tuple[str, str]) -> str:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = canonical_symbol(*key)
        return value

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def __bool__(self) -> bool:
        return True  # a view over every key: parsers' ``symbols or {}`` must keep it


# -- file formats -------------------------------------------------------------------------------

Opener = Callable[[DeadLetterSink], Iterator[Event]]
"""Opens the file afresh and streams its events; bad input goes to the dead-letter sink."""


@dataclass(frozen=True, slots=True)
class FileFormat:
    """``prepare(path)`` checks the file and infers what it needs (ValueError), returning an opener."""

    name: str
    prepare: Callable[[Path], Opener]
    description: str


def _tardis_jsonl(path: Path) -> Opener:
    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        return TardisNormalizedParser(ExchangeSymbols()).parse(read_lines(path), dead)
    return open_


def _tardis_csv(path: Path) -> Opener:
    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        return TardisCsvParser(ExchangeSymbols()).parse(read_lines(path), dead)
    return open_


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    return path.read_text(encoding="utf-8", errors="replace")


def _kraken_rest(path: Path) -> Opener:
    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        yield from KrakenTradesParser(VenueSymbols("kraken")).parse([_read_text(path)], dead)
    return open_


_FREQTRADE_NAME: Final = re.compile(r"^(?P<pair>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+)-trades\.json(?:\.gz)?$")


def freqtrade_symbol(path: Path) -> str:
    """``XRP_ETH-trades.json.gz`` -> ``XRP/ETH`` (futures ``BTC_USDT_USDT`` -> ``BTC/USDT:USDT``)."""
    m = _FREQTRADE_NAME.match(path.name)
    if m is None:
        raise ValueError(f"freqtrade-trades: cannot read the pair from {path.name!r} "
                         "(expected '<BASE>_<QUOTE>-trades.json[.gz]')")
    parts = m["pair"].upper().split("_")
    symbol = f"{parts[0]}/{parts[1]}"
    return symbol if len(parts) == 2 else f"{symbol}:{'_'.join(parts[2:])}"


def _freqtrade(path: Path) -> Opener:
    symbol = freqtrade_symbol(path)

    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        # A dump is one JSON array: it is read whole (freqtrade writes it whole too).
        yield from FreqtradeTradesParser(symbol, venue="binance").parse([_read_text(path)], dead)
    return open_


_CAPTURE_PARSERS: Final[Mapping[str, Callable[[Mapping[str, str]], CaptureParser]]] = {
    "binance": BinanceParser,
    "kraken": KrakenParser,
    "coinbase": CoinbaseParser,
    "bitmex": BitmexParser,
}


def _cryptofeed(path: Path) -> Opener:
    prefix = path.name.split(".", 1)[0]
    venue = prefix.lower()
    make = _CAPTURE_PARSERS.get(venue)
    if make is None:
        raise ValueError(f"cryptofeed-capture: unknown venue {prefix!r} in {path.name!r} "
                         f"(known: {', '.join(sorted(_CAPTURE_PARSERS))})")
    paths = [path]
    if ".ws." in path.name:  # REST snapshots recorded beside the WebSocket capture
        paths += sorted(path.parent.glob(f"{prefix}.http.*"))

    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        return make(VenueSymbols(venue)).parse(merged_lines(*paths), dead)
    return open_


_LOBSTER_NAME: Final = re.compile(
    r"^(?P<symbol>[A-Za-z0-9.]+)_(?P<day>\d{4}-\d{2}-\d{2})_\d+_\d+_message_(?P<levels>\d+)\.csv$")


def _lobster(path: Path) -> Opener:
    m = _LOBSTER_NAME.match(path.name)
    if m is None:
        raise ValueError(f"lobster: {path.name!r} is not a LOBSTER message file "
                         "('<SYM>_<YYYY-MM-DD>_<start>_<end>_message_<N>.csv')")
    book_path = path.with_name(path.name.replace("_message_", "_orderbook_"))
    if not book_path.is_file():
        raise FileNotFoundError(f"lobster: orderbook file {book_path} (needed for the seed) not found")
    symbol, day = m["symbol"], date.fromisoformat(m["day"])

    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        parser = LobsterParser(symbol, day, venue="nasdaq")
        yield from parser.replay(lobster_reader.read_lines(path), lobster_reader.read_lines(book_path), dead)
    return open_


def _dbn(path: Path) -> Opener:
    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        return DbnParser().parse(read_records(path, dead), dead)
    return open_


_FX_PAIR: Final = re.compile(r"(?<![A-Za-z])([A-Z]{3})([A-Z]{3})(?![A-Za-z])")


def fx_symbol(path: Path) -> str:
    """The currency pair named in an FX file name: ``histdata_EURUSD_ticks.csv`` -> ``EUR/USD``."""
    m = _FX_PAIR.search(path.name)
    if m is None:
        raise ValueError(f"cannot read a currency pair (like EURUSD) from the file name {path.name!r}")
    return f"{m[1]}/{m[2]}"


def _histdata(path: Path) -> Opener:
    symbol = fx_symbol(path)

    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        return HistDataParser(symbol).parse(read_lines(path), dead)
    return open_


def _truefx(path: Path) -> Opener:
    try:
        symbol = fx_symbol(path)
    except ValueError:
        symbol = ""  # TrueFX's own files name the pair on every row

    def open_(dead: DeadLetterSink) -> Iterator[Event]:
        return TrueFxParser(symbol).parse(read_lines(path), dead)
    return open_


FILE_FORMATS: Final[Mapping[str, FileFormat]] = {f.name: f for f in (
    FileFormat("tardis-jsonl", _tardis_jsonl, "tardis-node normalized messages, one JSON a line"),
    FileFormat("tardis-csv", _tardis_csv, "Tardis.dev CSV dataset (L2, trades, snapshots, quotes)"),
    FileFormat("kraken-rest-trades", _kraken_rest, "Kraken REST /0/public/Trades response"),
    FileFormat("freqtrade-trades", _freqtrade, "freqtrade trade dump <PAIR>-trades.json[.gz]"),
    FileFormat("cryptofeed-capture", _cryptofeed, "cryptofeed v1 raw capture <VENUE>.ws.*"),
    FileFormat("lobster", _lobster, "LOBSTER message file (orderbook file beside it)"),
    FileFormat("dbn", _dbn, "Databento DBN (mbo, trades, mbp-1), plain or zstd"),
    FileFormat("histdata", _histdata, "HistData.com FX ticks (EST), pair in the file name"),
    FileFormat("truefx", _truefx, "TrueFX FX ticks (UTC)"),
)}


# -- specs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """A parsed feed spec. ``kind`` is a ``FEED_KINDS`` key; ``text`` is the spec as written."""

    text: str
    kind: str
    format: str = ""
    path: Path | None = None
    speed: Speed = REALTIME
    options: tuple[tuple[str, str], ...] = field(default=())
    """``sim`` options in order, as written (their meaning is the simulator's)."""


def parse_feed_spec(text: str) -> FeedSpec:
    """Parse a spec string (see the module docstring); ValueError with the reason when it is bad."""
    spec = text.strip()
    kind, _, rest = spec.partition(":")
    if kind == "sim":
        return FeedSpec(spec, "sim", options=_sim_options(spec, rest))
    if kind == "file":
        return _file_spec(spec, rest)
    # Live feeds: their configs parse (and validate) the whole spec; the I/O modules load at build time.
    if kind == "kafka":
        from feeds.kafka.consumer import KafkaFeedConfig

        KafkaFeedConfig.from_spec(spec)
        return FeedSpec(spec, "kafka")
    if kind == "ccxt":
        from feeds.ccxt.feed import CcxtFeedConfig

        CcxtFeedConfig.from_spec(spec)
        return FeedSpec(spec, "ccxt")
    if kind == "fix":
        from feeds.fix.config import FixFeedConfig

        FixFeedConfig.from_spec(spec)
        return FeedSpec(spec, "fix")
    raise ValueError(f"unknown feed kind {kind!r} in {text!r}: {SPEC_HELP}")


def _sim_options(spec: str, rest: str) -> tuple[tuple[str, str], ...]:
    """Syntax only (``k=v`` pairs, no key twice); the simulator checks keys and values."""
    if ":" not in spec:
        return ()
    if not rest.strip():
        raise ValueError(f"nothing after 'sim:' in {spec!r}: expected 'sim' or 'sim:k=v,...'")
    options: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key or not value:
            raise ValueError(f"bad simulator option {item!r} in {spec!r}: expected k=v")
        if key in options:
            raise ValueError(f"simulator option {key!r} given twice in {spec!r}")
        options[key] = value
    return tuple(options.items())


def _file_spec(spec: str, rest: str) -> FeedSpec:
    fmt, sep, location = rest.partition(":")
    if not fmt:
        raise ValueError(f"missing file format in {spec!r}: {SPEC_HELP}; "
                         f"formats: {', '.join(FILE_FORMATS)}")
    if fmt not in FILE_FORMATS:
        raise ValueError(f"unknown file format {fmt!r} in {spec!r}; formats: {', '.join(FILE_FORMATS)}")
    path_text, query = location, ""
    if "?" in location:
        path_text, _, query = location.rpartition("?")
    if not sep or not path_text.strip():
        raise ValueError(f"missing path in {spec!r}: expected 'file:{fmt}:<path>[?speed=max|<N>x]'")
    speed = REALTIME
    if query:
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            if key != "speed" or not eq:
                raise ValueError(f"unknown file feed option {item!r} in {spec!r}: only speed=max|<N>x")
            speed = Speed.parse(value)
    return FeedSpec(spec, "file", format=fmt, path=Path(path_text.strip()), speed=speed)


# -- building -----------------------------------------------------------------------------------


def _build_sim(spec: FeedSpec, dead_letters: DeadLetterSink | None, name: str | None) -> Feed:
    try:
        from feeds.simulator import config as sim_config  # type: ignore[import-not-found,unused-ignore]
        from feeds.simulator.config import SimulatorConfig  # type: ignore[import-not-found,unused-ignore]
        from feeds.simulator.feed import SimulatorFeed  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise RuntimeError(f"feed {spec.text!r}: the simulator (feeds.simulator) is not available: {exc}") \
            from exc
    # SimulatorConfig.from_spec(text) if the simulator has it, else its module-level from_spec(text).
    from_spec: Callable[[str], SimulatorConfig] = (getattr(SimulatorConfig, "from_spec", None)
                                                   or sim_config.from_spec)
    config = from_spec(spec.text)
    feed: Feed = SimulatorFeed(config, name=name) if name else SimulatorFeed(config)
    return feed


def _build_file(spec: FeedSpec, dead_letters: DeadLetterSink | None, name: str | None) -> Feed:
    assert spec.path is not None  # parse_feed_spec guarantees it
    if not spec.path.is_file():
        raise FileNotFoundError(f"feed {spec.text!r}: file {spec.path} not found")
    opener = FILE_FORMATS[spec.format].prepare(spec.path)
    log = DeadLetterLog(forward=dead_letters)
    return FileFeed(name or f"file:{spec.format}:{spec.path.name}", lambda: opener(log), spec.speed,
                    dead_letters=log)


def _build_kafka(spec: FeedSpec, dead_letters: DeadLetterSink | None, name: str | None) -> Feed:
    from feeds.kafka.consumer import KafkaFeed, KafkaFeedConfig

    return KafkaFeed(KafkaFeedConfig.from_spec(spec.text), name=name or "kafka", dead_letters=dead_letters)


def _build_ccxt(spec: FeedSpec, dead_letters: DeadLetterSink | None, name: str | None) -> Feed:
    from feeds.ccxt.feed import CcxtFeed, CcxtFeedConfig

    return CcxtFeed(CcxtFeedConfig.from_spec(spec.text), name=name, dead_letters=dead_letters)


def _build_fix(spec: FeedSpec, dead_letters: DeadLetterSink | None, name: str | None) -> Feed:
    from feeds.fix.config import FixFeedConfig

    config = FixFeedConfig.from_spec(spec.text)
    try:
        from feeds.fix.session import FixFeed
    except ImportError as exc:  # quickfix is the optional extra 'fix'
        raise ValueError(f"feed {spec.text!r} needs quickfix: pip install -e '.[fix]' ({exc})") from exc
    return FixFeed(config, name=name or "", dead_letters=dead_letters)


FEED_KINDS: Final[Mapping[str, Callable[[FeedSpec, DeadLetterSink | None, str | None], Feed]]] = {
    "sim": _build_sim,
    "file": _build_file,
    "kafka": _build_kafka,
    "ccxt": _build_ccxt,
    "fix": _build_fix,
}
"""The registry: feed kind -> factory of a ``Feed`` from its parsed spec."""


def build_feed(spec: FeedSpec | str, *, dead_letters: DeadLetterSink | None = None,
               name: str | None = None) -> Feed:
    """The ``Feed`` of a spec (string or parsed); ``dead_letters`` also receives a file feed's bad input."""
    parsed = parse_feed_spec(spec) if isinstance(spec, str) else spec
    return FEED_KINDS[parsed.kind](parsed, dead_letters, name)
