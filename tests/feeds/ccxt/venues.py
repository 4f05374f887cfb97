"""Loopback venue servers that replay recorded cryptofeed captures over the venues' real protocols.

The ccxt feed is pointed at them with ``url_base``: every ccxt URL becomes
``http://127.0.0.1:<port>/<original host><original path>`` (``ws://`` for WebSockets), so the real ccxt
code dials loopback, makes its real startup REST calls and parses real recorded venue messages.

``BinanceVenue`` (``BINANCE.0`` + ``BINANCE.http.0.0`` + ``BINANCE.ws.1.0``):

- ``GET /api/v3/exchangeInfo``: the recorded response, byte for byte;
- ``GET /api/v3/depth``: the venue's current book: the recorded REST snapshot advanced by the recorded
  diffs the server has already streamed (``lastUpdateId`` = last streamed ``u``), as a live venue
  answers; before the replay starts that is exactly the recorded snapshot;
- WebSocket ``/ws/<n>`` (raw streams): ``SUBSCRIBE`` is acknowledged (``{"result":null,"id":n}``), then
  each recorded frame of a subscribed stream is sent as the raw-stream payload (the ``data`` of the
  recorded combined-stream frame), paced by the recorded receive times divided by ``speed``.

``KrakenVenue`` (``KRAKEN.0`` + ``KRAKEN.ws.50.0``): ccxt.pro speaks Kraken's WebSocket **v2**, the
capture is v1, so frames are translated, values untouched: a v1 snapshot (``as``/``bs``) becomes a v2
``{"channel":"book","type":"snapshot","data":[{"symbol","bids","asks","checksum"}]}``, a v1 update
(``a``/``b``/``c``, possibly split in two objects) one v2 ``update`` with the same levels, the recorded
checksum and the latest level time as ``timestamp``. Prices and quantities are JSON numbers written with
the venue's recorded digits. v1 pair names become v2 ones (``XBT`` -> ``BTC``).
``GET /0/public/AssetPairs`` is the recorded response; ``GET /0/public/Assets`` (ccxt's
``fetch_currencies``; not in the capture) is derived from it: each asset id of a pair with the altname
its ``wsname`` shows (``XXBT`` -> ``XBT``).

Replay: one timeline per server, started once every stream in ``start_when`` has a subscriber (or after
``start_timeout``), so that no recorded frame is sent before the client listens. Knobs for failure tests:
``corrupt`` (frame indices whose Binance ``U`` is bumped: a sequence break ccxt detects),
``drop_after`` (close every WebSocket once after that frame), ``refuse`` (answer 503 to everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from aiohttp import WSMsgType, web

from feeds.cryptofeed_capture.common import split_capture_line

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real"
CAPTURES = DATA / "cryptofeed_ws_captures"
_NS = 1_000_000_000


@dataclass(slots=True)
class Frame:
    """One recorded frame: the stream it belongs to, its capture time (ns) and what it carries."""

    stream: str
    ts: int
    payload: Any


@dataclass(slots=True)
class Connection:
    ws: web.WebSocketResponse
    streams: set[str] = field(default_factory=set)


class VenueServer:
    """The aiohttp server and replay timeline shared by the venues; subclasses speak the protocol."""

    def __init__(self, frames: list[Frame], *, speed: float = 20.0, start_when: Iterable[str] = (),
                 start_timeout: float = 5.0, corrupt: Iterable[int] = (), drop_after: int | None = None,
                 refuse: bool = False) -> None:
        self.frames = frames
        self.speed = speed
        self.start_when = set(start_when)
        self.start_timeout = start_timeout
        self.corrupt = set(corrupt)
        self.drop_after = drop_after
        self.refuse = refuse
        self.connections: list[Connection] = []
        self.ws_connects = 0
        self.requests = 0
        self.subscribes: list[str] = []
        self.sent = 0
        self.done = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._timeline: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        self._timeline = asyncio.create_task(self._run_timeline())
        return self

    async def stop(self) -> None:
        if self._timeline is not None:
            self._timeline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timeline
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.refuse:
            return web.Response(status=503, text="unavailable")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return self.rest(request)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.ws_connects += 1
        conn = Connection(ws)
        self.connections.append(conn)
        try:
            for greeting in self.on_connect(conn):
                await ws.send_str(greeting)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        decoded = json.loads(msg.data)
                    except ValueError:
                        replies = self.on_text(conn, msg.data)
                    else:
                        replies = self.on_message(conn, decoded)
                    for reply in replies:
                        await ws.send_str(reply)
                    if self.start_when <= set().union(*(c.streams for c in self.connections)):
                        self._subscribed.set()
        finally:
            self.connections.remove(conn)
        return ws

    async def _run_timeline(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self.start_timeout)
        loop = asyncio.get_running_loop()
        start = loop.time()
        t0 = self.frames[0].ts if self.frames else 0
        for i, frame in enumerate(self.frames):
            delay = start + (frame.ts - t0) / _NS / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text = self.advance(i, frame)
            for conn in list(self.connections):
                if frame.stream in conn.streams and text is not None and not conn.ws.closed:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await conn.ws.send_str(text)
            self.sent = i + 1
            if self.drop_after is not None and i == self.drop_after:
                for conn in list(self.connections):
                    await conn.ws.close()
        self.done.set()

    # -- protocol hooks ----------------------------------------------------------------------------

    def rest(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    def on_connect(self, conn: Connection) -> list[str]:
        """Frames sent as soon as a WebSocket opens (a venue's welcome message)."""
        return []

    def on_message(self, conn: Connection, msg: Any) -> list[str]:
        raise NotImplementedError

    def on_text(self, conn: Connection, text: str) -> list[str]:
        """A client frame that is not JSON (e.g. a plain ``ping``)."""
        return []

    def advance(self, index: int, frame: Frame) -> str | None:
        """Apply frame ``index`` to the venue state; the text to send (None: nothing)."""
        raise NotImplementedError


def _capture_lines(path: Path) -> Iterator[tuple[str, str, int, str]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and not line.startswith("configuration:"):
                cap = split_capture_line(line)
                yield cap.kind, cap.url, cap.ts_recv, cap.body


def _http_body(path: Path, url_part: str) -> str:
    for kind, url, _, body in _capture_lines(path):
        if kind == "http" and url_part in url:
            return body
    raise LookupError(f"no HTTP response for {url_part} in {path}")


class _Side:
    """One side of a venue book as the venue's strings, keyed by exact price."""

    def __init__(self, descending: bool) -> None:
        self.levels: dict[Decimal, tuple[str, str]] = {}
        self.descending = descending

    def set(self, price: str, size: str) -> None:
        key = Decimal(price)
        if Decimal(size) == 0:
            self.levels.pop(key, None)
        else:
            self.levels[key] = (price, size)

    def sorted(self, limit: int | None = None) -> list[tuple[str, str]]:
        keys = sorted(self.levels, reverse=self.descending)[:limit]
        return [self.levels[k] for k in keys]

    def truncate(self, depth: int) -> None:
        for key in sorted(self.levels, reverse=self.descending)[depth:]:
            del self.levels[key]


# -- Binance --------------------------------------------------------------------------------------


class BinanceVenue(VenueServer):
    """Binance spot REST + raw WebSocket streams from the BINANCE capture (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        frames: list[Frame] = []
        for kind, _, ts, body in _capture_lines(CAPTURES / "BINANCE.ws.1.0"):
            if kind == "recv":
                msg = json.loads(body)
                frames.append(Frame(msg["stream"], ts, msg["data"]))
        super().__init__(frames, **kwargs)
        self.exchange_info = _http_body(CAPTURES / "BINANCE.0", "/api/v3/exchangeInfo")
        self.books: dict[str, tuple[_Side, _Side]] = {}
        self.update_ids: dict[str, int] = {}
        for kind, url, _, body in _capture_lines(CAPTURES / "BINANCE.http.0.0"):
            if kind != "http":
                continue
            symbol = parse_qs(urlsplit(url).query)["symbol"][0]
            snap = json.loads(body)
            bids, asks = _Side(descending=True), _Side(descending=False)
            for p, q in snap["bids"]:
                bids.set(p, q)
            for p, q in snap["asks"]:
                asks.set(p, q)
            self.books[symbol] = (bids, asks)
            self.update_ids[symbol] = snap["lastUpdateId"]
        self.depth_requests: list[str] = []

    def rest(self, request: web.Request) -> web.Response:
        path = request.path
        if path.endswith("/api/v3/exchangeInfo"):
            return web.Response(text=self.exchange_info, content_type="application/json")
        if path.endswith("/api/v3/depth"):
            symbol = request.query.get("symbol", "")
            limit = int(request.query.get("limit", "100"))
            if symbol not in self.books:
                return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
            self.depth_requests.append(symbol)
            bids, asks = self.books[symbol]
            return web.json_response({"lastUpdateId": self.update_ids[symbol],
                                      "bids": [list(x) for x in bids.sorted(limit)],
                                      "asks": [list(x) for x in asks.sorted(limit)]})
        return web.json_response({"code": -1, "msg": f"not served here: {path}"}, status=404)

    def on_message(self, conn: Connection, msg: Any) -> list[str]:
        if msg.get("method") == "SUBSCRIBE":
            conn.streams.update(msg["params"])
            self.subscribes.extend(msg["params"])
        elif msg.get("method") == "UNSUBSCRIBE":
            conn.streams.difference_update(msg["params"])
        return [json.dumps({"result": None, "id": msg.get("id")})]

    def advance(self, index: int, frame: Frame) -> str | None:
        data = dict(frame.payload)
        if data.get("e") == "depthUpdate" and data["s"] in self.books:
            symbol = data["s"]
            if data["u"] > self.update_ids[symbol]:
                bids, asks = self.books[symbol]
                for p, q in data["b"]:
                    bids.set(p, q)
                for p, q in data["a"]:
                    asks.set(p, q)
                self.update_ids[symbol] = data["u"]
            if index in self.corrupt:
                data["U"] += 1
                data["u"] = max(data["u"], data["U"])
        return json.dumps(data)


# -- Kraken ---------------------------------------------------------------------------------------

_V2_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


def kraken_v2_symbol(wsname: str) -> str:
    """Kraken v1 ``wsname`` (``XBT/CHF``) to the v2 symbol (``BTC/CHF``)."""
    return "/".join(_V2_ALIASES.get(part, part) for part in wsname.split("/"))


def _levels_json(rows: list[tuple[str, str]]) -> str:
    return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in rows) + "]"


def _iso(seconds: str) -> str:
    from datetime import UTC, datetime
    whole, _, frac = seconds.partition(".")
    stamp = datetime.fromtimestamp(int(whole), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{(frac + '000000')[:6]}Z"


class KrakenVenue(VenueServer):
    """Kraken spot REST + WebSocket v2 book channel from the v1 KRAKEN capture (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        frames: list[Frame] = []
        for kind, _, ts, body in _capture_lines(CAPTURES / "KRAKEN.ws.50.0"):
            if kind != "recv":
                continue
            msg = json.loads(body)
            if isinstance(msg, list) and len(msg) >= 4 and str(msg[-2]).startswith("book"):
                frames.append(Frame(kraken_v2_symbol(msg[-1]), ts, msg[1:-2]))
        super().__init__(frames, **kwargs)
        self.asset_pairs = _http_body(CAPTURES / "KRAKEN.0", "/0/public/AssetPairs")
        self.books: dict[str, tuple[_Side, _Side]] = {}
        self.depth = 1000

    def assets(self) -> dict[str, Any]:
        """``/0/public/Assets`` derived from the recorded AssetPairs (see the module docstring)."""
        result: dict[str, Any] = {}
        for pair in json.loads(self.asset_pairs)["result"].values():
            wsname = pair.get("wsname")
            if not wsname:
                continue
            for asset_id, altname in zip((pair["base"], pair["quote"]), wsname.split("/"), strict=True):
                result.setdefault(asset_id, {"aclass": "currency", "altname": altname, "decimals": 10,
                                             "display_decimals": 5, "status": "enabled"})
        return {"error": [], "result": result}

    def rest(self, request: web.Request) -> web.Response:
        if request.path.endswith("/0/public/AssetPairs"):
            return web.Response(text=self.asset_pairs, content_type="application/json")
        if request.path.endswith("/0/public/Assets"):
            return web.json_response(self.assets())
        return web.json_response({"error": [f"EGeneral:Not served here: {request.path}"]}, status=404)

    def on_message(self, conn: Connection, msg: Any) -> list[str]:
        method = msg.get("method")
        if method == "ping":
            return [json.dumps({"method": "pong", "req_id": msg.get("req_id")})]
        if method != "subscribe":
            return []
        params = msg.get("params", {})
        replies = []
        for symbol in params.get("symbol", []):
            conn.streams.add(symbol)
            self.subscribes.append(symbol)
            replies.append(json.dumps({"method": "subscribe", "req_id": msg.get("req_id"), "success": True,
                                       "result": {"channel": params.get("channel"), "symbol": symbol,
                                                  "depth": params.get("depth", 10), "snapshot": True}}))
            if symbol in self.books:  # subscribed after the recorded snapshot: the current book
                bids, asks = self.books[symbol]
                replies.append(self._snapshot_text(symbol, bids, asks, None))
        return replies

    @staticmethod
    def _snapshot_text(symbol: str, bids: _Side, asks: _Side, checksum: int | None) -> str:
        check = f',"checksum":{checksum}' if checksum is not None else ""
        return (f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{symbol}",'
                f'"bids":{_levels_json(bids.sorted())},"asks":{_levels_json(asks.sorted())}{check}}}]}}')

    def advance(self, index: int, frame: Frame) -> str | None:
        parts: list[dict[str, Any]] = frame.payload
        symbol = frame.stream
        if "as" in parts[0] or "bs" in parts[0]:
            bids, asks = _Side(descending=True), _Side(descending=False)
            for p, q, *_ in parts[0].get("bs", []):
                bids.set(p, q)
            for p, q, *_ in parts[0].get("as", []):
                asks.set(p, q)
            self.books[symbol] = (bids, asks)
            return self._snapshot_text(symbol, bids, asks, None)
        if symbol not in self.books:
            return None
        bids, asks = self.books[symbol]
        up_bids: list[tuple[str, str]] = []
        up_asks: list[tuple[str, str]] = []
        checksum = 0
        latest = "0"
        for part in parts:
            for p, q, ts, *_ in part.get("b", []):
                up_bids.append((p, q))
                bids.set(p, q)
                latest = max(latest, ts, key=Decimal)
            for p, q, ts, *_ in part.get("a", []):
                up_asks.append((p, q))
                asks.set(p, q)
                latest = max(latest, ts, key=Decimal)
            if "c" in part:
                checksum = int(part["c"])
        bids.truncate(self.depth)
        asks.truncate(self.depth)
        return (f'{{"channel":"book","type":"update","data":[{{"symbol":"{symbol}",'
                f'"bids":{_levels_json(up_bids)},"asks":{_levels_json(up_asks)},'
                f'"checksum":{checksum},"timestamp":"{_iso(latest)}"}}]}}')


# -- Coinbase Advanced Trade (ccxt ``coinbase``) ----------------------------------------------------

V3_CAPTURES = CAPTURES / "v3_jsonl"
_CB_SIDES = {"bid": True, "offer": False}


def v3_records(path: Path) -> list[dict[str, Any]]:
    """The records of a cryptofeed v3 ``*.jsonl.zst`` capture (header, http, connect, send, recv)."""
    import zstandard

    with path.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class CoinbaseVenue(VenueServer):
    """Coinbase Advanced Trade REST + WebSocket (``level2`` / ``market_trades``) from ``v3_jsonl/COINBASE``.

    - ``GET /api/v3/brokerage/market/products``: the recorded response, byte for byte (with
      ``product_type=FUTURE``: no products, as for a spot-only account);
    - ``GET /v2/currencies``, ``/v2/currencies/crypto``, ``/v2/exchange-rates`` (ccxt's
      ``fetch_currencies``; not in the capture): derived from the recorded products;
    - WebSocket: ``{"type":"subscribe","product_ids":[...],"channel":"level2"|"market_trades"}`` is
      acknowledged with a ``subscriptions`` message; then every recorded ``l2_data`` / ``market_trades``
      frame of a subscribed product is sent as recorded (raw text). A ``level2`` subscription made after
      the recorded snapshot (a reconnect) gets the venue's current book as an ``l2_data`` snapshot.
    """

    def __init__(self, **kwargs: Any) -> None:
        frames: list[Frame] = []
        self.products = ""
        for rec in v3_records(V3_CAPTURES / "COINBASE.jsonl.zst"):
            if rec["t"] == "http" and rec["url"].endswith("/api/v3/brokerage/market/products"):
                self.products = rec["data"]
            if rec["t"] != "recv":
                continue
            msg = json.loads(rec["data"])
            channel = msg.get("channel")
            if channel not in ("l2_data", "market_trades"):
                continue
            event = msg["events"][0]
            product = event["product_id"] if channel == "l2_data" else event["trades"][0]["product_id"]
            name = "level2" if channel == "l2_data" else "market_trades"
            frames.append(Frame(f"{name}:{product}", int(rec["ts"] * _NS), rec["data"]))
        super().__init__(frames, **kwargs)
        self.books: dict[str, tuple[_Side, _Side]] = {}
        self.book_time: dict[str, str] = {}
        self._seq = 0

    def currencies(self, crypto: bool) -> dict[str, Any]:
        fiat = {"USD", "EUR", "GBP", "USDC"} if not crypto else set()
        seen: dict[str, str] = {}
        for product in json.loads(self.products)["products"]:
            for code, name in ((product["base_currency_id"], product["base_name"]),
                               (product["quote_currency_id"], product["quote_name"])):
                seen.setdefault(code, name or code)
        if crypto:
            return {"data": [{"asset_id": f"asset-{code}", "code": code, "name": name, "exponent": 8,
                              "type": "crypto"} for code, name in seen.items() if code not in {"USD", "EUR", "GBP"}]}
        return {"data": [{"id": code, "name": name, "min_size": "0.01"} for code, name in seen.items()
                         if code in fiat]}

    def rest(self, request: web.Request) -> web.Response:
        path = request.path
        if path.endswith("/api/v3/brokerage/market/products"):
            if request.query.get("product_type") == "FUTURE":
                return web.json_response({"products": [], "num_products": 0})
            return web.Response(text=self.products, content_type="application/json")
        if path.endswith("/v2/currencies"):
            return web.json_response(self.currencies(crypto=False))
        if path.endswith("/v2/currencies/crypto"):
            return web.json_response(self.currencies(crypto=True))
        if path.endswith("/v2/exchange-rates"):
            return web.json_response({"data": {"currency": "USD", "rates": {}}})
        return web.json_response({"error": "NOT_FOUND", "message": f"not served here: {path}"}, status=404)

    def _envelope(self, channel: str, events: list[dict[str, Any]]) -> str:
        self._seq += 1
        return json.dumps({"channel": channel, "client_id": "", "timestamp": "2026-08-09T21:05:48.000000000Z",
                           "sequence_num": self._seq, "events": events})

    def on_message(self, conn: Connection, msg: Any) -> list[str]:
        if msg.get("type") != "subscribe":
            return []
        channel = msg.get("channel", "")
        products = list(msg.get("product_ids", []))
        replies = []
        for product in products:
            conn.streams.add(f"{channel}:{product}")
            self.subscribes.append(f"{channel}:{product}")
            if channel == "level2" and product in self.books:  # subscribed after the recorded snapshot
                replies.append(self._snapshot_text(product))
        subs: dict[str, set[str]] = {}
        for stream in conn.streams:
            name, _, product = stream.partition(":")
            subs.setdefault(name, set()).add(product)
        replies.insert(0, self._envelope("subscriptions", [{"subscriptions": {
            k: sorted(v) for k, v in sorted(subs.items())}}]))
        return replies

    def _snapshot_text(self, product: str) -> str:
        bids, asks = self.books[product]
        stamp = self.book_time.get(product, "2026-08-09T21:05:48.000000Z")
        updates = [{"side": "bid", "event_time": stamp, "price_level": p, "new_quantity": q} for p, q in bids.sorted()]
        updates += [{"side": "offer", "event_time": stamp, "price_level": p, "new_quantity": q}
                    for p, q in asks.sorted()]
        return self._envelope("l2_data", [{"type": "snapshot", "product_id": product, "updates": updates}])

    def advance(self, index: int, frame: Frame) -> str | None:
        text: str = frame.payload
        if frame.stream.startswith("level2:"):
            msg = json.loads(text)
            event = msg["events"][0]
            product = event["product_id"]
            if event["type"] == "snapshot":
                self.books[product] = (_Side(descending=True), _Side(descending=False))
            if product in self.books:
                bids, asks = self.books[product]
                for row in event["updates"]:
                    (bids if _CB_SIDES[row["side"]] else asks).set(row["price_level"], row["new_quantity"])
                    self.book_time[product] = row["event_time"]
        return text


# -- BitMEX (ccxt ``bitmex``) ---------------------------------------------------------------------------

_BITMEX_WELCOME = ('{"info":"Welcome to the BitMEX Realtime API.","version":"2021-07-14T01:26:29.000Z",'
                   '"timestamp":"2021-07-22T22:36:07.865Z","docs":"https://www.bitmex.com/app/wsAPI",'
                   '"limit":{"remaining":39}}')


class BitmexVenue(VenueServer):
    """BitMEX REST + realtime WebSocket (``orderBookL2`` / ``trade``) from ``BITMEX.0`` + ``BITMEX.ws.1.0``.

    - ``GET /api/v1/instrument/active``: the recorded response, byte for byte;
      ``GET /api/v1/wallet/assets`` (ccxt's ``fetch_currencies``; not in the capture): ``[]``;
    - WebSocket: the recorded welcome on connect; ``{"op":"subscribe","args":["orderBookL2:XBTUSD",...]}``
      is acknowledged per topic as BitMEX does; then each recorded ``orderBookL2`` / ``trade`` frame of
      a subscribed topic is sent as recorded (raw text; a frame holding several symbols would be split
      per symbol). The venue keeps the id-keyed book; an ``orderBookL2`` subscription made after the
      recorded ``partial`` (a reconnect) gets the current book as a ``partial``, a ``trade`` one an
      empty ``partial``. A plain ``ping`` is answered ``pong``.
    """

    def __init__(self, **kwargs: Any) -> None:
        frames: list[Frame] = []
        for kind, _, ts, body in _capture_lines(CAPTURES / "BITMEX.ws.1.0"):
            if kind != "recv":
                continue
            msg = json.loads(body)
            table = msg.get("table")
            if table not in ("orderBookL2", "trade"):
                continue
            by_symbol: dict[str, list[Any]] = {}
            for row in msg["data"]:
                by_symbol.setdefault(row["symbol"], []).append(row)
            for symbol, rows in by_symbol.items():
                text = body if len(by_symbol) == 1 else json.dumps({**msg, "data": rows})
                frames.append(Frame(f"{table}:{symbol}", ts, text))
        super().__init__(frames, **kwargs)
        self.instruments = _http_body(CAPTURES / "BITMEX.0", "/api/v1/instrument/active")
        self.books: dict[str, dict[int, dict[str, Any]]] = {}
        self.partials: dict[str, dict[str, Any]] = {}
        self.trades_started: set[str] = set()

    def rest(self, request: web.Request) -> web.Response:
        if request.path.endswith("/api/v1/instrument/active"):
            return web.Response(text=self.instruments, content_type="application/json")
        if request.path.endswith("/api/v1/wallet/assets"):
            return web.json_response([])
        return web.json_response({"error": {"message": f"Not served here: {request.path}", "name": "HTTPError"}},
                                 status=404)

    def on_connect(self, conn: Connection) -> list[str]:
        return [_BITMEX_WELCOME]

    def on_text(self, conn: Connection, text: str) -> list[str]:
        return ["pong"] if text == "ping" else []

    def on_message(self, conn: Connection, msg: Any) -> list[str]:
        if msg.get("op") != "subscribe":
            return []
        replies = []
        for topic in msg.get("args", []):
            conn.streams.add(topic)
            self.subscribes.append(topic)
            replies.append(json.dumps({"success": True, "subscribe": topic, "request": msg}))
            table, _, symbol = topic.partition(":")
            if table == "orderBookL2" and symbol in self.books:  # subscribed after the recorded partial
                replies.append(json.dumps({**self.partials[symbol], "data": list(self.books[symbol].values())}))
            elif table == "trade" and symbol in self.trades_started:
                replies.append(json.dumps({"table": "trade", "action": "partial", "keys": [],
                                           "filter": {"symbol": symbol}, "data": []}))
        return replies

    def advance(self, index: int, frame: Frame) -> str | None:
        text: str = frame.payload
        table, _, symbol = frame.stream.partition(":")
        if table == "trade":
            self.trades_started.add(symbol)
            return text
        msg = json.loads(text)
        action = msg["action"]
        if action == "partial":
            self.partials[symbol] = {k: v for k, v in msg.items() if k != "data"}
            self.books[symbol] = {}
        book = self.books.get(symbol)
        if book is not None:
            for row in msg["data"]:
                if action == "delete":
                    book.pop(row["id"], None)
                elif action == "update":
                    if row["id"] in book:
                        book[row["id"]] = {**book[row["id"]], **row}
                else:
                    book[row["id"]] = row
        return text


# -- Coinbase Exchange, formerly Coinbase Pro (ccxt ``coinbaseexchange``) ----------------------------


class CoinbaseExchangeVenue(VenueServer):
    """Coinbase Exchange REST + ``ws-feed`` (``level2`` / ``matches``) from ``COINBASE.0`` + ``COINBASE.ws.28.0``.

    The 2021 capture is Coinbase Pro's ``ws-feed``, which ccxt calls ``coinbaseexchange`` (ccxt's
    ``coinbase`` is Advanced Trade: ``CoinbaseVenue``).

    - ``GET /products``: the recorded response, byte for byte; ``GET /currencies`` (not in the capture):
      derived from it (each base / quote currency, online);
    - WebSocket: ``{"type":"subscribe","product_ids":[...],"channels":["level2"|"matches"]}`` is
      acknowledged with a ``subscriptions`` message; then each recorded ``snapshot`` / ``l2update`` /
      ``match`` / ``last_match`` frame of a subscribed product is sent as recorded (raw text). A
      ``level2`` subscription made after the recorded snapshot (a reconnect) gets the current book as a
      ``snapshot``.
    """

    def __init__(self, **kwargs: Any) -> None:
        frames: list[Frame] = []
        for kind, _, ts, body in _capture_lines(CAPTURES / "COINBASE.ws.28.0"):
            if kind != "recv":
                continue
            msg = json.loads(body)
            channel = {"snapshot": "level2", "l2update": "level2", "match": "matches",
                       "last_match": "matches"}.get(msg.get("type", ""))
            if channel is not None:
                frames.append(Frame(f"{channel}:{msg['product_id']}", ts, body))
        super().__init__(frames, **kwargs)
        self.products = _http_body(CAPTURES / "COINBASE.0", "/products")
        self.books: dict[str, tuple[_Side, _Side]] = {}

    def currencies(self) -> list[dict[str, Any]]:
        codes: dict[str, None] = {}
        for product in json.loads(self.products):
            codes.setdefault(product["base_currency"])
            codes.setdefault(product["quote_currency"])
        return [{"id": code, "name": code, "min_size": "0.00000001", "status": "online", "max_precision": "0.00000001",
                 "details": {"type": "crypto"}} for code in codes]

    def rest(self, request: web.Request) -> web.Response:
        if request.path.endswith("/products"):
            return web.Response(text=self.products, content_type="application/json")
        if request.path.endswith("/currencies"):
            return web.json_response(self.currencies())
        return web.json_response({"message": f"not served here: {request.path}"}, status=404)

    def on_message(self, conn: Connection, msg: Any) -> list[str]:
        if msg.get("type") != "subscribe":
            return []
        replies = []
        for channel in msg.get("channels", []):
            name = channel if isinstance(channel, str) else channel.get("name", "")
            for product in msg.get("product_ids", []):
                conn.streams.add(f"{name}:{product}")
                self.subscribes.append(f"{name}:{product}")
                if name == "level2" and product in self.books:  # subscribed after the recorded snapshot
                    bids, asks = self.books[product]
                    replies.append(json.dumps({"type": "snapshot", "product_id": product,
                                               "bids": [list(x) for x in bids.sorted()],
                                               "asks": [list(x) for x in asks.sorted()]}))
        subs: dict[str, set[str]] = {}
        for stream in conn.streams:
            name, _, product = stream.partition(":")
            subs.setdefault(name, set()).add(product)
        replies.insert(0, json.dumps({"type": "subscriptions", "channels": [
            {"name": k, "product_ids": sorted(v)} for k, v in sorted(subs.items())]}))
        return replies

    def advance(self, index: int, frame: Frame) -> str | None:
        text: str = frame.payload
        if frame.stream.startswith("level2:"):
            msg = json.loads(text)
            product = msg["product_id"]
            if msg["type"] == "snapshot":
                bids, asks = self.books[product] = (_Side(descending=True), _Side(descending=False))
                for p, q in msg["bids"]:
                    bids.set(p, q)
                for p, q in msg["asks"]:
                    asks.set(p, q)
            elif product in self.books:
                bids, asks = self.books[product]
                for side, p, q in msg["changes"]:
                    (bids if side == "buy" else asks).set(p, q)
        return text
