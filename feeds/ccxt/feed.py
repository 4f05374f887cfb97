"""``CcxtFeed``: any ccxt (pro) exchange as a ``feeds.protocols.Feed``, configured by a spec string.

Spec (``CcxtFeedConfig.from_spec``)::

    ccxt:exchange=binance,symbols=BTC/USDT+ETH/USDT,channels=book+trades+ticker,depth=20

=================  ===========================================================================
key                meaning (default)
=================  ===========================================================================
``exchange``       a ccxt.pro exchange id: binance, coinbase, kraken, bybit, okx, htx, kucoin,
                   gate, bitfinex, mexc, ... (required)
``symbols``        ``+``-separated markets: ccxt unified (``BTC/USDT``, ``BTC/USDT:USDT``),
                   canonical (``BTC/USDT-PERP``) or venue ids (``BTCUSDT``); see ``symbols.py``
``channels``       ``+``-separated of ``book``, ``trades``, ``ticker`` (``book+trades``)
``depth``          levels per side emitted to the engine (20)
``limit``          depth asked of the venue by ``watch_order_book`` (ccxt's default)
``url_base``       e.g. ``http://127.0.0.1:8123``: every REST / WebSocket URL of the exchange becomes
                   ``<base>/<original host><original path>`` (loopback test servers, relays)
``backoff``        first reconnect delay in seconds (0.5); doubles per failure up to ``backoff_max`` (30)
``breaker``        consecutive failed sessions that open the circuit breaker (5)
``cooldown``       seconds the breaker stays open before one half-open attempt (30)
``idle``           seconds without any event after which the session is treated as dead (60)
``opt.<a.b>``      a ccxt option, e.g. ``opt.watchTrades.name=aggTrade``,
                   ``opt.fetchMarkets.types=[spot|linear]`` (a list; true/false and ints are typed)
=================  ===========================================================================

An unknown key, exchange or channel is a ``ValueError``. API keys are never in the spec: if the
environment has ``MDS_CCXT_<EXCHANGE>_API_KEY`` / ``_SECRET`` / ``_PASSWORD`` they are given to ccxt.

Running: one **session** = one ccxt.pro exchange instance: ``load_markets``, then one task per
(symbol, channel) stream (``watch_order_book`` / ``watch_trades`` / ``watch_ticker``; never a task per
event) plus an idle watchdog. Each resolved watch becomes one batch for the sink. Tickers are only
watched for symbols whose book is not (a ``Quote`` replaces the engine's whole venue book).

Failures, from the smallest scope up:

- **per symbol**: ccxt's ``ChecksumError`` (a checksum mismatch; ccxt also reports a Binance U/u
  sequence break this way) or ``InvalidNonce`` (a gap) on one book: a ``BookReset`` for that symbol, then
  ``watch_order_book`` again, which re-subscribes that symbol only (new venue snapshot); the connection
  and the other symbols are untouched. Repeated resyncs of one symbol back off exponentially;
- **per session**: any other error (connection dropped, REST failure, idle watchdog) ends the session:
  every book the session had emitted gets a ``BookReset``, the exchange is closed, and a new session
  starts after an exponential backoff with jitter (delay ``backoff * 2**n`` capped at ``backoff_max``,
  times a random factor in [0.5, 1]); ``n`` counts failed sessions since one last delivered an event;
- **per venue**: a ``CircuitBreaker`` opens after ``breaker`` consecutive sessions that failed without
  delivering any event; while open no connection is attempted; after ``cooldown`` one half-open
  attempt is made: an event closes the breaker, a failure opens it again.

A configuration error found at startup (a symbol the venue does not list) is raised from ``run``.
``health()`` reports the state, the age of the last event, reconnects, gaps, checksum failures and
dead letters. Events carry the venue's time (``ts_event``) and the receive time (``ts_recv``, wall
clock ns when ccxt handed the update over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import ccxt  # type: ignore[import-untyped]
import ccxt.pro  # type: ignore[import-untyped]

from feeds.ccxt.parser import CcxtParser
from feeds.ccxt.symbols import SymbolMap
from feeds.file_feed import DeadLetterLog
from feeds.protocols import DeadLetterSink, EventSink, FeedStatus
from server.engine.events import Event

log = logging.getLogger(__name__)

CHANNELS: Final = ("book", "trades", "ticker")
CONFIGURED_EXCHANGES: Final = ("binance", "coinbase", "kraken", "bybit", "okx", "htx", "kucoin", "gate",
                               "bitfinex", "mexc")
"""Exchanges the tests construct by configuration; any ccxt.pro exchange id is accepted."""
_KEYS: Final = ("exchange", "symbols", "channels", "depth", "limit", "url_base", "backoff", "backoff_max",
                "breaker", "cooldown", "idle")
_NS_PER_S: Final = 1_000_000_000


class CcxtConfigError(ValueError):
    """The configuration cannot work with this venue (e.g. a symbol it does not list): not retried."""


class FeedStalledError(ConnectionError):
    """No event for longer than the idle timeout."""


def _typed(text: str) -> Any:
    if text.startswith("[") and text.endswith("]"):
        return [_typed(part) for part in text[1:-1].split("|") if part]
    if text in ("true", "false"):
        return text == "true"
    if text.lstrip("-").isdigit():
        return int(text)
    return text


@dataclass(frozen=True, slots=True)
class CcxtFeedConfig:
    """What one ccxt feed connects to and how it recovers; see the module docstring."""

    exchange: str
    symbols: tuple[str, ...]
    channels: tuple[str, ...] = ("book", "trades")
    depth: int = 20
    limit: int | None = None
    url_base: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    """ccxt options as (dotted path, value) pairs, applied in order."""
    backoff: float = 0.5
    backoff_max: float = 30.0
    breaker: int = 5
    cooldown: float = 30.0
    idle: float = 60.0

    def __post_init__(self) -> None:
        if self.exchange not in ccxt.pro.exchanges:
            raise ValueError(f"ccxt: unknown exchange {self.exchange!r} (not a ccxt.pro exchange)")
        if not self.symbols or any(not s.strip() for s in self.symbols):
            raise ValueError("ccxt: at least one symbol is required (symbols=A/B+C/D)")
        if not self.channels or any(c not in CHANNELS for c in self.channels):
            raise ValueError(f"ccxt: channels must be among {', '.join(CHANNELS)}, not {self.channels!r}")
        if self.depth < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError("ccxt: depth and limit must be >= 1")
        if self.backoff <= 0 or self.backoff_max < self.backoff or self.cooldown < 0 or self.idle <= 0:
            raise ValueError("ccxt: backoff > 0, backoff_max >= backoff, cooldown >= 0 and idle > 0 are required")
        if self.breaker < 1:
            raise ValueError("ccxt: breaker must be >= 1")
        if self.url_base is not None:
            parts = urlsplit(self.url_base)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"ccxt: url_base must be http(s)://host:port, not {self.url_base!r}")

    @classmethod
    def from_spec(cls, text: str) -> CcxtFeedConfig:
        """Parse ``ccxt:k=v,...`` (see the module docstring); ValueError with the reason when bad."""
        kind, sep, rest = text.strip().partition(":")
        if kind != "ccxt" or not sep or not rest.strip():
            raise ValueError(f"not a ccxt feed spec: {text!r} (expected 'ccxt:exchange=<id>,symbols=A/B+...')")
        values: dict[str, str] = {}
        options: list[tuple[str, Any]] = []
        for item in rest.split(","):
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not key or not value:
                raise ValueError(f"bad ccxt option {item!r} in {text!r}: expected k=v")
            if key.startswith("opt.") and len(key) > 4:
                options.append((key[4:], _typed(value)))
                continue
            if key not in _KEYS:
                raise ValueError(f"unknown ccxt feed key {key!r} in {text!r}; keys: {', '.join(_KEYS)}, opt.<name>")
            if key in values:
                raise ValueError(f"ccxt feed key {key!r} given twice in {text!r}")
            values[key] = value
        if "exchange" not in values or "symbols" not in values:
            raise ValueError(f"ccxt feed spec {text!r} needs exchange= and symbols=")

        def number(key: str, kind: Callable[[str], Any]) -> Any:
            try:
                return kind(values[key])
            except ValueError as exc:
                raise ValueError(f"ccxt feed key {key}={values[key]!r} is not a number") from exc

        kwargs: dict[str, Any] = {
            "exchange": values["exchange"].lower(),
            "symbols": tuple(s.strip() for s in values["symbols"].split("+")),
            "options": tuple(options),
        }
        if "channels" in values:
            kwargs["channels"] = tuple(c.strip() for c in values["channels"].split("+"))
        for key in ("depth", "limit", "breaker"):
            if key in values:
                kwargs[key] = number(key, int)
        for key in ("backoff", "backoff_max", "cooldown", "idle"):
            if key in values:
                kwargs[key] = number(key, float)
        if "url_base" in values:
            kwargs["url_base"] = values["url_base"]
        return cls(**kwargs)


def rewrite_urls(urls: Any, base: str) -> Any:
    """Every http(s)/ws(s) URL in ``urls`` to ``<base>/<host><path>`` (ws scheme kept for WebSockets)."""
    if isinstance(urls, dict):
        return {k: rewrite_urls(v, base) for k, v in urls.items()}
    if isinstance(urls, list):
        return [rewrite_urls(v, base) for v in urls]
    if not isinstance(urls, str):
        return urls
    parts = urlsplit(urls)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        return urls
    target = urlsplit(base)
    scheme = ("ws" if target.scheme == "http" else "wss") if parts.scheme.startswith("ws") else target.scheme
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{target.netloc}/{parts.netloc}{parts.path}{query}"


def _set_option(options: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = options
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


class CircuitBreaker:
    """Per-venue breaker: closed -> open after ``threshold`` consecutive failures -> half-open after
    ``cooldown`` seconds -> closed on a success, open again on a failure."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.opened = 0
        """How many times the breaker opened."""
        self._opened_at = 0.0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            if self.state != "open":
                self.opened += 1
            self.state = "open"
            self._opened_at = self.clock()

    def record_success(self) -> None:
        self.failures = 0
        self.state = "closed"

    def wait_seconds(self) -> float:
        """0 when an attempt may be made now (turning an expired open breaker half-open)."""
        if self.state != "open":
            return 0.0
        left = self._opened_at + self.cooldown - self.clock()
        if left <= 0:
            self.state = "half-open"
            return 0.0
        return left


@dataclass(frozen=True, slots=True)
class CcxtFeedHealth:
    """One reading of a feed's health."""

    state: str
    """connecting | live | backoff | circuit-open | stopped"""
    last_event_age_ns: int | None
    reconnects: int
    gaps: int
    checksum_failures: int
    dead_letters: int
    breaker: str
    consecutive_failures: int
    sessions: int
    last_error: str


@dataclass(slots=True)
class _Counters:
    reconnects: int = 0
    gaps: int = 0
    checksum_failures: int = 0
    sessions: int = 0
    events: int = 0
    resyncs_by_symbol: dict[str, int] = field(default_factory=dict)


class CcxtFeed:
    """A ccxt.pro exchange as a ``Feed``; see the module docstring."""

    def __init__(self, config: CcxtFeedConfig, *, name: str | None = None,
                 dead_letters: DeadLetterSink | None = None, rng: random.Random | None = None) -> None:
        self.config = config
        self.name = name or f"ccxt:{config.exchange}"
        self.venue = config.exchange
        self.parser = CcxtParser(config.exchange, config.depth)
        self.dead_letters = DeadLetterLog(forward=dead_letters)
        self.breaker = CircuitBreaker(config.breaker, config.cooldown)
        self.counters = _Counters()
        self.state = "stopped"
        self.last_error = ""
        self.exchange: Any = None
        """The current session's ccxt exchange (None between sessions)."""
        self._rng = rng or random.Random()
        self._warm = False
        self._last_event_ns: int | None = None
        self._last_event_mono = 0.0
        self._pending: set[tuple[str, str]] = set()
        self._session_events = 0

    # -- public ----------------------------------------------------------------------------------

    @property
    def warm(self) -> bool:
        return self._warm

    def health(self, now_ns: int | None = None) -> CcxtFeedHealth:
        now = time.time_ns() if now_ns is None else now_ns
        age = None if self._last_event_ns is None else max(0, now - self._last_event_ns)
        c = self.counters
        return CcxtFeedHealth(self.state, age, c.reconnects, c.gaps, c.checksum_failures,
                              self.dead_letters.total, self.breaker.state, self.breaker.failures,
                              c.sessions, self.last_error)

    def status(self) -> FeedStatus:
        """ReportsStatus, from ``health``: backoff counts as stale, an open breaker as circuit_open."""
        h = self.health()
        state = {"live": "live", "connecting": "connecting", "backoff": "stale", "circuit-open": "circuit_open",
                 "stopped": "stopped"}.get(h.state, "stale")
        return FeedStatus(self.name, "ccxt", state, h.last_event_age_ns, self.counters.events,
                          reconnects=h.reconnects, gaps=h.gaps, checksum_failures=h.checksum_failures,
                          dead_letters=h.dead_letters, detail=h.last_error)

    def make_exchange(self) -> Any:
        """A new ccxt.pro exchange instance for this configuration (no I/O)."""
        cfg = self.config
        params: dict[str, Any] = {"enableRateLimit": True, "newUpdates": True}
        prefix = f"MDS_CCXT_{cfg.exchange.upper()}_"
        for env, key in (("API_KEY", "apiKey"), ("SECRET", "secret"), ("PASSWORD", "password")):
            value = os.environ.get(prefix + env)
            if value:
                params[key] = value
        exchange = getattr(ccxt.pro, cfg.exchange)(params)
        for path, value in cfg.options:
            _set_option(exchange.options, path, value)
        if cfg.url_base is not None:
            exchange.urls = dict(exchange.urls)
            exchange.urls["api"] = rewrite_urls(exchange.urls["api"], cfg.url_base)
        return exchange

    async def run(self, sink: EventSink) -> None:
        """Sessions until cancelled; see the module docstring for recovery."""
        attempt = 0
        try:
            while True:
                wait = self.breaker.wait_seconds()
                if wait > 0:
                    self.state = "circuit-open"
                    await asyncio.sleep(wait)
                    continue
                self.state = "connecting"
                self.counters.sessions += 1
                self._session_events = 0
                try:
                    await self._session(sink)
                    error: BaseException = ConnectionError("session ended")
                except CcxtConfigError:
                    raise
                except Exception as exc:  # any venue failure ends the session
                    error = exc
                self.last_error = _describe(error)
                if self._session_events:
                    self.counters.reconnects += 1
                    attempt = 0
                else:
                    self.breaker.record_failure()
                    attempt += 1
                log.warning("%s: session ended (%s); breaker %s", self.name, self.last_error, self.breaker.state)
                if self.breaker.state != "open":
                    self.state = "backoff"
                    await asyncio.sleep(self._backoff(attempt))
        finally:
            self.state = "stopped"

    # -- internals -------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cfg = self.config
        delay: float = min(cfg.backoff_max, cfg.backoff * 2 ** max(0, attempt - 1))
        return delay * self._rng.uniform(0.5, 1.0)

    async def _session(self, sink: EventSink) -> None:
        exchange = self.exchange = self.make_exchange()
        emitted: set[str] = set()
        try:
            await asyncio.wait_for(exchange.load_markets(), timeout=self.config.idle)
            symbols = SymbolMap(self.venue, exchange.markets)
            try:
                markets = [symbols.resolve(s) for s in self.config.symbols]
            except ValueError as exc:
                raise CcxtConfigError(str(exc)) from exc
            streams = [(unified, symbols.canonical(unified), ch) for unified in markets
                       for ch in self.config.channels
                       if not (ch == "ticker" and "book" in self.config.channels)]
            self._pending = {(canon, ch) for _, canon, ch in streams if ch == "book"}
            self._last_event_mono = time.monotonic()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watchdog())
                for unified, canon, ch in streams:
                    if ch == "book":
                        group.create_task(self._book_stream(exchange, unified, canon, sink, emitted))
                    elif ch == "trades":
                        group.create_task(self._trade_stream(exchange, unified, canon, sink))
                    else:
                        group.create_task(self._ticker_stream(exchange, unified, canon, sink))
        finally:
            self.exchange = None
            with contextlib.suppress(Exception):
                await asyncio.shield(exchange.close())
            if emitted:
                now = time.time_ns()
                resets: list[Event] = [self.parser.reset(s, "ccxt session ended", now) for s in sorted(emitted)]
                with contextlib.suppress(Exception):
                    await asyncio.shield(sink.put(resets))

    async def _deliver(self, sink: EventSink, events: list[Event], now: int) -> None:
        self._last_event_ns = now
        self._last_event_mono = time.monotonic()
        if self._session_events == 0:
            self.breaker.record_success()
            self.state = "live"
        self._session_events += 1
        if events:
            self.counters.events += len(events)
            await sink.put(events)

    def _stream_ready(self, canon: str, channel: str) -> None:
        if not self._warm:
            self._pending.discard((canon, channel))
            if not self._pending:
                self._warm = True

    async def _watchdog(self) -> None:
        idle = self.config.idle
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            if time.monotonic() - self._last_event_mono > idle:
                raise FeedStalledError(f"no event for {idle:g} s")

    async def _book_stream(self, exchange: Any, unified: str, canon: str, sink: EventSink,
                           emitted: set[str]) -> None:
        resyncs = 0
        while True:
            try:
                book = await exchange.watch_order_book(unified, self.config.limit)
            except ccxt.InvalidNonce as exc:  # ChecksumError is an InvalidNonce too
                now = time.time_ns()
                if isinstance(exc, ccxt.ChecksumError):
                    self.counters.checksum_failures += 1
                else:
                    self.counters.gaps += 1
                self.counters.resyncs_by_symbol[canon] = self.counters.resyncs_by_symbol.get(canon, 0) + 1
                reason = f"{type(exc).__name__}: resync {unified}"
                log.info("%s: %s (%s)", self.name, reason, exc)
                await self._deliver(sink, [self.parser.reset(canon, reason, now)], now)
                emitted.discard(canon)
                if resyncs:
                    await asyncio.sleep(min(self.config.backoff_max, self.config.backoff * 2 ** (resyncs - 1)))
                resyncs += 1
                continue
            now = time.time_ns()
            event = self.parser.book(canon, book, now, self.dead_letters)
            if event is not None:
                emitted.add(canon)
                resyncs = 0
                self._stream_ready(canon, "book")
            await self._deliver(sink, [event] if event is not None else [], now)

    async def _trade_stream(self, exchange: Any, unified: str, canon: str, sink: EventSink) -> None:
        while True:
            trades = await exchange.watch_trades(unified)
            now = time.time_ns()
            await self._deliver(sink, list(self.parser.trades(canon, trades, now, self.dead_letters)), now)
            self._stream_ready(canon, "trades")

    async def _ticker_stream(self, exchange: Any, unified: str, canon: str, sink: EventSink) -> None:
        while True:
            ticker = await exchange.watch_ticker(unified)
            now = time.time_ns()
            quote = self.parser.ticker(canon, ticker, now, self.dead_letters)
            await self._deliver(sink, [quote] if quote is not None else [], now)
            self._stream_ready(canon, "ticker")


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        inner = [e for e in error.exceptions if not isinstance(e, asyncio.CancelledError)]
        if inner:
            return _describe(inner[0])
    return f"{type(error).__name__}: {error}"[:300]


def exchange_has(exchange: Any, feature: str) -> bool:
    """Whether a ccxt exchange instance declares ``feature`` (e.g. ``watchOrderBook``)."""
    has: Mapping[str, Any] = exchange.has
    return bool(has.get(feature))
