"""A quickfix FIX 4.4 acceptor playing a liquidity provider, for the end-to-end tests of ``FixFeed``.

It keeps a model L2 book per symbol (exact ints at 1e-9 as text with 5 decimals), answers a
MarketDataRequest (V) with a snapshot (W) carrying RptSeq, and a Y (unknown symbol) for a symbol it does
not quote. The test drives it: ``update`` sends an X of level changes (new / change / delete) and trades,
``lose_update`` changes the book without sending (an RptSeq gap), ``garbled`` sends an X with a bad
price. quickfix binds the acceptor port on all interfaces (it has no accept-host setting); the feed
connects over loopback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import quickfix as fix  # type: ignore[import-untyped, import-not-found, unused-ignore]
import quickfix44 as fix44  # type: ignore[import-untyped, import-not-found, unused-ignore]

from server.engine.numbers import SCALE, format_fixed


def px(value: int) -> str:
    return format_fixed(value, 5)


@dataclass
class ModelBook:
    """The LP's book of one symbol: price -> size (1e-9 ints), and its RptSeq."""

    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    rpt_seq: int = 0


@dataclass
class Subscription:
    md_req_id: str
    symbol: str
    kind: str  # SubscriptionRequestType
    raw: str


class LpApp(fix.Application):  # type: ignore[misc]
    def __init__(self, lp: LiquidityProvider) -> None:
        super().__init__()
        self.lp = lp

    def onCreate(self, session_id: Any) -> None:  # noqa: N802
        pass

    def onLogon(self, session_id: Any) -> None:  # noqa: N802
        self.lp.session_id = session_id
        self.lp.logons += 1
        self.lp.logged_on.set()

    def onLogout(self, session_id: Any) -> None:  # noqa: N802
        self.lp.logged_on.clear()

    def toAdmin(self, message: Any, session_id: Any) -> None:  # noqa: N802
        pass

    def fromAdmin(self, message: Any, session_id: Any) -> None:  # noqa: N802
        pass

    def toApp(self, message: Any, session_id: Any) -> None:  # noqa: N802
        pass

    def fromApp(self, message: Any, session_id: Any) -> None:  # noqa: N802
        if message.getHeader().getField(35) == "V":
            self.lp.on_request(message, session_id)


class LiquidityProvider:
    """The acceptor; ``start``/``stop`` are idempotent, and ``stop`` always runs in the tests' finally."""

    def __init__(self, port: int, data_dir: Path, books: dict[str, ModelBook], sender: str = "LP",
                 target: str = "MDS") -> None:
        self.port = port
        self.data_dir = data_dir
        self.books = books
        self.sender = sender
        self.target = target
        self.lock = threading.RLock()
        self.session_id: Any = None
        self.logons = 0
        self.logged_on = threading.Event()
        self.requests: list[Subscription] = []
        self.request_seen = threading.Condition()
        self.trade_ids = 0
        self._acceptor: Any = None
        self._keep: list[Any] = []

    def start(self) -> None:
        from feeds.fix.config import installed_dictionary

        dictionary = installed_dictionary()
        assert dictionary is not None, "quickfix's FIX44.xml is not installed"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "acceptor.cfg"
        cfg.write_text("\n".join([
            "[DEFAULT]", "ConnectionType=acceptor", f"SocketAcceptPort={self.port}", "SocketReuseAddress=Y",
            "StartTime=00:00:00", "EndTime=00:00:00", "NonStopSession=Y", "UseDataDictionary=Y",
            f"DataDictionary={dictionary}", f"FileLogPath={self.data_dir / 'log'}", "ResetOnLogon=Y",
            "ResetOnLogout=Y", "ResetOnDisconnect=Y", "",
            "[SESSION]", "BeginString=FIX.4.4", f"SenderCompID={self.sender}", f"TargetCompID={self.target}",
            "HeartBtInt=30", "",
        ]), encoding="utf-8")
        settings = fix.SessionSettings(str(cfg))
        store = fix.MemoryStoreFactory()
        logs = fix.FileLogFactory(settings)
        app = LpApp(self)
        self._keep = [settings, store, logs, app]
        # SocketAcceptor.stop closes the listening sockets while its own thread closes and deletes them
        # (a use after free: a segfault in about half the runs here); the threaded acceptor joins first.
        self._acceptor = fix.ThreadedSocketAcceptor(app, store, settings, logs)
        self._acceptor.start()

    def stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.stop()
        self.logged_on.clear()

    # -- requests -----------------------------------------------------------------------------------

    def on_request(self, message: Any, session_id: Any) -> None:
        raw = message.toString()
        req_id = message.getField(262)
        kind = message.getField(263)
        group = fix44.MarketDataRequest.NoRelatedSym()
        symbols = []
        for i in range(1, int(message.getField(146)) + 1):
            message.getGroup(i, group)
            symbols.append(group.getField(55))
        for symbol in symbols:
            with self.lock:
                if symbol not in self.books:
                    reject = fix44.MarketDataRequestReject()
                    reject.setField(fix.MDReqID(req_id))
                    reject.setField(fix.MDReqRejReason("0"))
                    reject.setField(fix.Text(f"unknown symbol {symbol}"))
                    fix.Session.sendToTarget(reject, session_id)
                else:
                    fix.Session.sendToTarget(self._snapshot(req_id, symbol), session_id)
            with self.request_seen:
                self.requests.append(Subscription(req_id, symbol, kind, raw))
                self.request_seen.notify_all()

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[Subscription]:
        with self.request_seen:
            assert self.request_seen.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"LP saw {len(self.requests)} MarketDataRequests, expected {count}")
            return list(self.requests)

    def _snapshot(self, req_id: str, symbol: str) -> Any:
        book = self.books[symbol]
        msg = fix44.MarketDataSnapshotFullRefresh()
        msg.setField(fix.MDReqID(req_id))
        msg.setField(fix.Symbol(symbol))
        msg.setField(83, str(book.rpt_seq))
        for entry_type, side in (("0", book.bids), ("1", book.asks)):
            for price, size in sorted(side.items()):
                entry = fix44.MarketDataSnapshotFullRefresh.NoMDEntries()
                entry.setField(fix.MDEntryType(entry_type))
                entry.setField(270, px(price))
                entry.setField(271, px(size))
                msg.addGroup(entry)
        return msg

    # -- the stream ---------------------------------------------------------------------------------

    def update(self, symbol: str, levels: Sequence[tuple[str, int, int]] = (),
               trades: Sequence[tuple[int, int, str]] = (), send: bool = True, entry_time: str = "") -> list[str]:
        """Apply (side '0'/'1', price, size; size 0 deletes) and trades (price, size, aggressor '1'/'2')
        to the model and send them as one X; returns the trade ids. ``entry_time`` is the trades'
        MDEntryTime (273)."""
        ids = []
        with self.lock:
            book = self.books[symbol]
            msg = fix44.MarketDataIncrementalRefresh()
            msg.setField(fix.MDReqID("stream"))
            for side_code, price, size in levels:
                side = book.bids if side_code == "0" else book.asks
                if size:
                    action = "1" if price in side else "0"
                    side[price] = size
                else:
                    action = "2"
                    del side[price]
                book.rpt_seq += 1
                entry = fix44.MarketDataIncrementalRefresh.NoMDEntries()
                entry.setField(fix.MDUpdateAction(action))
                entry.setField(fix.MDEntryType(side_code))
                entry.setField(fix.Symbol(symbol))
                entry.setField(270, px(price))
                if size:
                    entry.setField(271, px(size))
                entry.setField(83, str(book.rpt_seq))
                msg.addGroup(entry)
            for price, size, aggressor in trades:
                self.trade_ids += 1
                trade_id = f"T{self.trade_ids}"
                ids.append(trade_id)
                book.rpt_seq += 1
                entry = fix44.MarketDataIncrementalRefresh.NoMDEntries()
                entry.setField(fix.MDUpdateAction("0"))
                entry.setField(fix.MDEntryType("2"))
                entry.setField(fix.MDEntryID(trade_id))
                entry.setField(fix.Symbol(symbol))
                entry.setField(270, px(price))
                entry.setField(271, px(size))
                if entry_time:
                    entry.setField(273, entry_time)
                entry.setField(83, str(book.rpt_seq))
                entry.setField(2446, aggressor)
                msg.addGroup(entry)
            if send:
                assert fix.Session.sendToTarget(msg, self.session_id)
        return ids

    def garbled(self, symbol: str) -> None:
        """An X whose entry has no price: valid FIX structure, so quickfix passes it to the feed."""
        with self.lock:
            msg = fix44.MarketDataIncrementalRefresh()
            entry = fix44.MarketDataIncrementalRefresh.NoMDEntries()
            entry.setField(fix.MDUpdateAction("0"))
            entry.setField(fix.MDEntryType("0"))
            entry.setField(fix.Symbol(symbol))
            entry.setField(271, "1")
            msg.addGroup(entry)
            assert fix.Session.sendToTarget(msg, self.session_id)

    def refused(self) -> None:
        """A W with FinancialStatus (291) out of its enum: quickfix's own validation rejects it (35=3, 372=W)."""
        with self.lock:
            msg = fix44.MarketDataSnapshotFullRefresh()
            msg.setField(fix.MDReqID("stream"))
            msg.setField(fix.Symbol("EUR/USD"))
            msg.setField(291, "Z")
            entry = fix44.MarketDataSnapshotFullRefresh.NoMDEntries()
            entry.setField(fix.MDEntryType("0"))
            entry.setField(270, "1")
            entry.setField(271, "1")
            msg.addGroup(entry)
            assert fix.Session.sendToTarget(msg, self.session_id)

    def logout(self, text: str = "end of day") -> None:
        """Log the feed out, then accept logons again (quickfix disables a session it logs out)."""
        session = fix.Session.lookupSession(self.session_id)
        session.logout(text)
        deadline = time.monotonic() + 10
        while self.logged_on.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        session.logon()


def unit(value: int) -> int:
    return value * SCALE
