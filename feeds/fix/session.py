"""``FixFeed``: a quickfix FIX 4.4 initiator that subscribes to an LP's market data and feeds the engine.

quickfix owns the session: logon, heartbeats, sequence numbers, resend requests and sequence resets,
and reconnecting every ``ReconnectInterval`` after a drop. This module is the thin adapter around it:

- on logon, one MarketDataRequest (V) per configured symbol: SubscriptionRequestType=1 (snapshot +
  updates), MarketDepth, MDUpdateType=1 (incremental), AggregatedBook=Y, entry types bid, offer and
  (if configured) trade;
- every W / X / Y goes as text (``Message.toString()``, groups in order since the session parses with
  the data dictionary) with its receive time to the pure ``FixMdParser``; a symbol the parser queues for
  resync (a RptSeq gap, a lost update) gets a snapshot request (V, SubscriptionRequestType=0);
- a W or X that quickfix itself refuses (it answers with a session Reject) is seen in ``toAdmin``: a dead
  letter with quickfix's reason, and every book is reset and re-requested (an update was lost);
- logout or a dropped connection marks the feed ``stale`` and resets every book (``BookReset``) so the
  engine excludes the venue until the snapshots after the next logon.

quickfix calls back on its own thread. Events are handed to the asyncio loop in batches: the callback
appends to a bounded buffer and schedules one wake-up (``loop.call_soon_threadsafe``) per batch, never
a task per event; ``run`` swaps the buffer out and awaits ``sink.put``. A full buffer blocks the quickfix
thread (TCP backpressure to the LP); nothing is dropped.

``health`` (``FeedHealth``) reports state (connecting / connected / stale / stopped), the age of the
last market data message, logons, reconnects, gaps, rejects and dead letters by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

try:
    import quickfix as fix  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import quickfix44 as fix44  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("feeds.fix.session needs quickfix, the optional extra 'fix': pip install -e '.[fix]' "
                      "(compiles for several minutes; pip caches the wheel)") from exc

from feeds.file_feed import DeadLetterLog
from feeds.fix.config import FixFeedConfig, installed_dictionary, patch_dictionary
from feeds.fix.parser import SOURCE, FixMdParser, MdRequestReject
from feeds.protocols import DeadLetter, DeadLetterSink, EventSink, FeedStatus
from server.engine.events import BookSnapshot, Event

__all__ = ["FeedHealth", "FixFeed", "FixFeedConfig"]

log = logging.getLogger(__name__)

MAX_BUFFER: Final = 50_000
"""Events buffered between the quickfix thread and the loop before the quickfix thread waits."""
_MSG_TYPE: Final = 35
_TEXT: Final = 58
_REF_MSG_TYPE: Final = 372


@dataclass(slots=True)
class FeedHealth:
    """What a live feed reports about itself; updated from the quickfix thread, read anywhere."""

    state: str = "stopped"
    """'connecting' (started, not logged on yet), 'connected', 'stale' (logged out or dropped), 'stopped'."""
    last_event_ns: int = 0
    """``time.monotonic_ns()`` of the last market data message (0: none yet)."""
    logons: int = 0
    reconnects: int = 0
    """Logons after the first one."""
    disconnects: int = 0
    gaps: int = 0
    """RptSeq gaps and lost updates (each resets books and re-requests snapshots)."""
    rejects: int = 0
    """MarketDataRequestRejects received."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason kind (the text before the first ':')."""
    last_logout: str = ""
    """Why the session last went down: the LP's Logout text, 'logout' or 'disconnected'."""

    def last_event_age_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the last market data message; None before the first."""
        if not self.last_event_ns:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return (now - self.last_event_ns) / 1e9

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "last_event_age_s": self.last_event_age_s(), "logons": self.logons,
                "reconnects": self.reconnects, "disconnects": self.disconnects, "gaps": self.gaps,
                "rejects": self.rejects, "dead_letters": dict(self.dead_letters),
                "last_logout": self.last_logout}


class _CountingDeadLetters:
    """Forwards dead letters to the feed's log and counts them by reason kind in the health."""

    def __init__(self, log_: DeadLetterLog, health: FeedHealth) -> None:
        self.log = log_
        self.health = health

    def append(self, item: DeadLetter, /) -> None:
        self.health.dead_letters[item.reason.partition(":")[0]] += 1
        self.log.append(item)


def market_data_request(md_req_id: str, symbol: str, subscription: str, depth: int,
                        entry_types: str) -> Any:
    """A MarketDataRequest (V) for one symbol."""
    msg = fix44.MarketDataRequest()
    msg.setField(fix.MDReqID(md_req_id))
    msg.setField(fix.SubscriptionRequestType(subscription))
    msg.setField(fix.MarketDepth(depth))
    if subscription == "1":
        msg.setField(fix.MDUpdateType(1))
    msg.setField(fix.AggregatedBook(True))
    for entry_type in entry_types:
        group = fix44.MarketDataRequest.NoMDEntryTypes()
        group.setField(fix.MDEntryType(entry_type))
        msg.addGroup(group)
    sym = fix44.MarketDataRequest.NoRelatedSym()
    sym.setField(fix.Symbol(symbol))
    msg.addGroup(sym)
    return msg


class _Application(fix.Application):  # type: ignore[misc]
    """quickfix callbacks (on quickfix's thread); every one catches its own errors."""

    def __init__(self, feed: FixFeed) -> None:
        super().__init__()
        self.feed = feed

    def onCreate(self, session_id: Any) -> None:  # noqa: N802 (quickfix's names)
        self.feed._session_id = session_id

    def onLogon(self, session_id: Any) -> None:  # noqa: N802
        try:
            self.feed._on_logon(session_id)
        except Exception:
            log.exception("fix %s: onLogon failed", self.feed.name)

    def onLogout(self, session_id: Any) -> None:  # noqa: N802
        try:
            self.feed._on_logout()
        except Exception:
            log.exception("fix %s: onLogout failed", self.feed.name)

    def toAdmin(self, message: Any, session_id: Any) -> None:  # noqa: N802
        try:
            self.feed._to_admin(message)
        except Exception:
            log.exception("fix %s: toAdmin failed", self.feed.name)

    def fromAdmin(self, message: Any, session_id: Any) -> None:  # noqa: N802
        try:
            self.feed._from_admin(message)
        except Exception:
            log.exception("fix %s: fromAdmin failed", self.feed.name)

    def toApp(self, message: Any, session_id: Any) -> None:  # noqa: N802
        pass

    def fromApp(self, message: Any, session_id: Any) -> None:  # noqa: N802
        try:
            self.feed._from_app(message.toString(), time.time_ns())
        except Exception:
            log.exception("fix %s: fromApp failed", self.feed.name)


class FixFeed:
    """A FIX 4.4 market data initiator as a ``feeds.protocols.Feed`` (see the module docstring)."""

    def __init__(self, config: FixFeedConfig, *, name: str = "", dead_letters: DeadLetterSink | None = None,
                 max_buffer: int = MAX_BUFFER) -> None:
        self.config = config
        self.name = name or f"fix:{config.venue}"
        self.venue = config.venue
        self.symbols = config.canonical_symbols()
        self.health = FeedHealth()
        self.dead_letters = DeadLetterLog(forward=dead_letters)
        self._dead = _CountingDeadLetters(self.dead_letters, self.health)
        self.parser = FixMdParser(config.venue, self.symbols)
        self.rejects: deque[MdRequestReject] = deque(maxlen=1000)
        self.max_buffer = max_buffer
        self.requests_sent = 0
        self.events_delivered = 0
        self.batches_delivered = 0
        self._warm = False
        self._answered: set[str] = set()  # symbols with a snapshot or reject since the last logon
        self._session_id: Any = None
        self._req_counter = 0
        self._logout_text = ""
        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._wake_scheduled = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._initiator: Any = None
        self._keep: list[Any] = []  # quickfix objects that must outlive the initiator
        self.data_dir: Path | None = None
        """quickfix's store (and log) directory while running; a temp dir is removed on the way out."""

    @property
    def warm(self) -> bool:
        return self._warm

    def status(self) -> FeedStatus:
        """ReportsStatus, from ``health``: a logged-on session is live; logged out or dropped, stale."""
        h = self.health
        state = {"connected": "live", "connecting": "connecting", "stale": "stale"}.get(h.state, "stopped")
        age = time.monotonic_ns() - h.last_event_ns if h.last_event_ns else None
        return FeedStatus(self.name, "fix", state, age, self.events_delivered, reconnects=h.reconnects,
                          gaps=h.gaps, dead_letters=sum(h.dead_letters.values()),
                          detail=h.last_logout or f"{h.rejects} market data requests rejected")

    # -- asyncio side -------------------------------------------------------------------------------

    async def run(self, sink: EventSink) -> None:
        """Start the initiator and deliver its events until cancelled; stops quickfix on the way out."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._closing = False
        tmp = "" if self.config.data_dir else tempfile.mkdtemp(prefix="mds-fix-")
        self.data_dir = data_dir = Path(self.config.data_dir or tmp)
        try:
            self._start(data_dir)
            while True:
                await self._ready.wait()
                self._ready.clear()
                with self._cond:
                    batch, self._pending = self._pending, []
                    self._wake_scheduled = False
                    self._cond.notify_all()
                    done = len(self._answered) >= len(self.symbols)
                if batch:
                    await sink.put(batch)
                    self.batches_delivered += 1
                    self.events_delivered += len(batch)
                if done and not self._warm:
                    self._warm = True
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            stopping = self._loop.run_in_executor(None, self._stop)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(stopping)
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _start(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        dictionary = Path(self.config.dictionary) if self.config.dictionary else None
        if dictionary is None:
            source = installed_dictionary()
            if source is None:
                raise FileNotFoundError("quickfix's FIX44.xml is not installed (share/quickfix); "
                                        "pass dictionary=PATH")
            dictionary = data_dir / "FIX44-md.xml"
            dictionary.write_text(patch_dictionary(source.read_text(encoding="utf-8")), encoding="utf-8")
        cfg = data_dir / "initiator.cfg"
        cfg.write_text(self.config.settings_text(data_dir, dictionary), encoding="utf-8")
        settings = fix.SessionSettings(str(cfg))
        store = fix.FileStoreFactory(settings)
        app = _Application(self)
        self.health.state = "connecting"
        if self.config.log:  # every message to a file: for debugging, not for a busy feed
            logs = fix.FileLogFactory(settings)
            self._keep = [settings, store, logs, app]
            self._initiator = fix.SocketInitiator(app, store, settings, logs)
        else:
            self._keep = [settings, store, app]
            self._initiator = fix.SocketInitiator(app, store, settings)
        self._initiator.start()

    def _stop(self) -> None:
        """Log out and stop quickfix's thread (blocking; runs off the loop)."""
        initiator, self._initiator = self._initiator, None
        if initiator is not None:
            try:
                initiator.stop()
            except Exception:
                log.exception("fix %s: stopping quickfix failed", self.name)
        self.health.state = "stopped"

    def _emit(self, events: list[Event]) -> None:
        """Hand events to the loop (quickfix thread); waits while the buffer is full."""
        if not events:
            return
        loop, ready = self._loop, self._ready
        if loop is None or ready is None:
            return
        with self._cond:
            while len(self._pending) >= self.max_buffer and not self._closing:
                self._cond.wait(0.5)
            if self._closing:
                return
            self._pending.extend(events)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing to deliver to
            loop.call_soon_threadsafe(ready.set)

    def _wake(self) -> None:
        """Schedule a delivery round without events (warm may have changed)."""
        loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ready.set)

    # -- quickfix side ------------------------------------------------------------------------------

    def _send(self, message: Any) -> bool:
        session_id = self._session_id
        if session_id is None:
            return False
        try:
            return bool(fix.Session.sendToTarget(message, session_id))
        except fix.SessionNotFound:
            return False

    def _request(self, venue_symbol: str, subscription: str, defer: bool = False) -> None:
        """Send a V (quickfix thread). ``defer``: from inside quickfix's send (toAdmin), where a nested
        send would reuse the sequence number being sent; the loop sends it instead."""
        self._req_counter += 1
        req_id = f"{self.venue}-{self._req_counter}"
        self.parser.on_request(req_id, venue_symbol)
        entry_types = "012" if self.config.trades else "01"
        message = market_data_request(req_id, venue_symbol, subscription, self.config.depth, entry_types)
        if not defer:
            if self._send(message):
                self.requests_sent += 1
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._send_deferred, message)

    def _send_deferred(self, message: Any) -> None:
        if self._send(message):
            self.requests_sent += 1

    def _on_logon(self, session_id: Any) -> None:
        self._session_id = session_id
        self.health.logons += 1
        if self.health.logons > 1:
            self.health.reconnects += 1
        self.health.state = "connected"
        with self._cond:
            self._answered.clear()
        for symbol in self.config.symbols:
            self._request(symbol, "1")

    def _on_logout(self) -> None:
        if self.health.state != "connected":
            return  # quickfix also calls this after a failed logon attempt: one drop, one count
        self.health.disconnects += 1
        self.health.state = "stale"
        self.health.last_logout = self._logout_text or "disconnected"
        self._logout_text = ""
        self._emit(self.parser.reset_all("fix session down", 0, time.time_ns()))

    def _from_admin(self, message: Any) -> None:
        msg_type = message.getHeader().getField(_MSG_TYPE)
        if msg_type == fix.MsgType_Logout:
            text = message.getField(_TEXT) if message.isSetField(_TEXT) else ""
            self._logout_text = text or "logout"

    def _to_admin(self, message: Any) -> None:
        header = message.getHeader()
        msg_type = header.getField(_MSG_TYPE)
        if msg_type == fix.MsgType_Logon:
            if self.config.username:
                message.setField(fix.Username(self.config.username))
            if self.config.password:
                message.setField(fix.Password(self.config.password))
            return
        if msg_type != fix.MsgType_Reject or not message.isSetField(_REF_MSG_TYPE):
            return
        ref = message.getField(_REF_MSG_TYPE)
        if ref not in ("W", "X"):
            return
        text = message.getField(_TEXT) if message.isSetField(_TEXT) else ""
        ts = time.time_ns()
        self.parser.stats.dead_letters["refused by quickfix"] += 1
        self._dead.append(DeadLetter(SOURCE, f"refused by quickfix: {ref} {text}",
                                     message.toString().replace("\x01", "|"), ts))
        self.health.gaps += 1
        events = self.parser.lost_message(f"lost {ref} ({text})", ts)
        self._resync(defer=True)
        self._emit(events)

    def _from_app(self, raw: str, ts_recv: int) -> None:
        self.health.last_event_ns = time.monotonic_ns()
        parser = self.parser
        gaps = parser.stats.gaps
        events = parser.parse(raw, ts_recv, self._dead)
        self.health.gaps += parser.stats.gaps - gaps
        rejects = parser.take_rejects()
        if rejects:
            self.health.rejects += len(rejects)
            self.rejects.extend(rejects)
            for r in rejects:
                log.warning("fix %s: MarketDataRequest %s for %s rejected: %s %s", self.name, r.md_req_id,
                            r.symbol, r.reason, r.text)
        self._resync()
        answered = {e.symbol for e in events if isinstance(e, BookSnapshot)} | {r.symbol for r in rejects}
        if answered:
            with self._cond:
                self._answered |= answered & set(self.symbols.values())
        self._emit(events)
        if rejects and not events:
            self._wake()

    def _resync(self, defer: bool = False) -> None:
        for symbol in self.parser.take_resync():
            self._request(symbol, "0", defer)
