"""Settings of a FIX 4.4 market data session: the ``fix:...`` spec, quickfix's settings text, the dictionary.

Spec grammar (``FixFeedConfig.from_spec``), keys in any order, unknown keys are a ``ValueError``::

    fix:host=127.0.0.1,port=9876,sender=MDS,target=LP,symbols=EUR/USD+USD/JPY,venue=lp1,depth=10

=============  ====================================================================  =============
key            meaning                                                               default
=============  ====================================================================  =============
host, port     the liquidity provider's acceptor                                     required
sender/target  SenderCompID / TargetCompID                                           required
symbols        venue symbols to subscribe, ``+``-separated                            required
venue          venue name of the events (lowercase)                                  the target
depth          MarketDepth (0 = full book, 1 = top of book)                          0
trades         also subscribe to trades (``1``/``0``)                                 1
heartbeat      HeartBtInt, seconds                                                   30
reconnect      ReconnectInterval, seconds                                            5
dictionary     the LP's FIX44 data dictionary (default: quickfix's, see below)       installed
data_dir       where quickfix keeps its store and logs (default: a temp dir)         temp
log            quickfix's file log of every message and event (``1``/``0``)           0
username       Logon Username (553); ``password`` likewise (554)                     none
=============  ====================================================================  =============

Venue symbols become canonical through ``feeds.registry.canonical_symbol``; a six-letter FX pair the
registry keeps as is (``EURUSD``) is written ``EUR/USD``.

The data dictionary: the quickfix wheel installs FIX 4.4's (``FIX44.xml``) under
``<prefix>/share/quickfix``. Stock FIX 4.4 has no RptSeq (83) or AggressorSide (2446) in the market
data entries, which many LPs send; quickfix would end the group at such a tag. ``patch_dictionary``
adds both (and RptSeq to W's body), and the session uses that patched copy unless ``dictionary`` names
the LP's own.
"""

from __future__ import annotations

import sys
import sysconfig
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SPEC_HELP: Final = ("expected 'fix:host=H,port=P,sender=S,target=T,symbols=A+B[,venue=V,depth=N,trades=0|1,"
                    "heartbeat=S,reconnect=S,dictionary=PATH,data_dir=PATH,log=0|1,username=U,password=P]'")
_KEYS: Final = frozenset({"host", "port", "sender", "target", "symbols", "venue", "depth", "trades",
                          "heartbeat", "reconnect", "dictionary", "data_dir", "log", "username", "password"})


def canonical_fx(venue: str, venue_symbol: str) -> str:
    """The canonical symbol of a venue symbol (registry rules; ``EURUSD`` -> ``EUR/USD``)."""
    from feeds.registry import canonical_symbol  # lazy: the registry may import this module

    canonical = canonical_symbol(venue, venue_symbol)
    if canonical == venue_symbol and len(canonical) == 6 and canonical.isalpha() and canonical.isupper():
        return f"{canonical[:3]}/{canonical[3:]}"
    return canonical


def _int(key: str, text: str, low: int, high: int) -> int:
    if not text.isdigit():
        raise ValueError(f"fix spec: {key} must be an integer, not {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"fix spec: {key} must be within {low}..{high}, not {value}")
    return value


def _comp_id(key: str, text: str) -> str:
    if not text or any(c in text for c in "\x01=[]\n\r") or not text.isprintable():
        raise ValueError(f"fix spec: bad {key} {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class FixFeedConfig:
    """One initiator session to one liquidity provider (see the module docstring)."""

    host: str
    port: int
    sender: str
    target: str
    symbols: tuple[str, ...]
    venue: str = ""
    depth: int = 0
    trades: bool = True
    heartbeat: int = 30
    reconnect: int = 5
    dictionary: str = ""
    data_dir: str = ""
    log: bool = False
    username: str = ""
    password: str = ""

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"fix spec: bad host {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"fix spec: port must be within 1..65535, not {self.port}")
        _comp_id("sender", self.sender)
        _comp_id("target", self.target)
        if not self.symbols:
            raise ValueError("fix spec: symbols must name at least one symbol")
        for s in self.symbols:
            if not s or any(c in s for c in "\x01=,+") or not s.isprintable():
                raise ValueError(f"fix spec: bad symbol {s!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("fix spec: a symbol is listed twice")
        if not self.venue:
            object.__setattr__(self, "venue", self.target.lower())
        if self.venue != self.venue.lower() or not self.venue.isprintable():
            raise ValueError(f"fix spec: venue must be lowercase, not {self.venue!r}")
        if self.depth < 0 or self.heartbeat <= 0 or self.reconnect <= 0:
            raise ValueError("fix spec: depth must be >= 0, heartbeat and reconnect > 0")

    @classmethod
    def from_spec(cls, text: str) -> FixFeedConfig:
        """Parse ``fix:k=v,...`` (the ``fix:`` prefix is optional); ``ValueError`` with the reason."""
        body = text.strip()
        if body.startswith("fix:"):
            body = body[4:]
        elif body == "fix":
            body = ""
        options: dict[str, str] = {}
        for item in body.split(","):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq:
                raise ValueError(f"fix spec: {item!r} is not key=value; {SPEC_HELP}")
            if key not in _KEYS:
                raise ValueError(f"fix spec: unknown key {key!r}; known: {', '.join(sorted(_KEYS))}")
            if key in options:
                raise ValueError(f"fix spec: {key} given twice")
            options[key] = value.strip()
        missing = [k for k in ("host", "port", "sender", "target", "symbols") if k not in options]
        if missing:
            raise ValueError(f"fix spec: missing {', '.join(missing)}; {SPEC_HELP}")
        flags = {k: options.get(k, default) for k, default in (("trades", "1"), ("log", "0"))}
        for key, value in flags.items():
            if value not in ("0", "1"):
                raise ValueError(f"fix spec: {key} must be 0 or 1, not {value!r}")
        trades = flags["trades"]
        return cls(
            host=options["host"], port=_int("port", options["port"], 1, 65535),
            sender=options["sender"], target=options["target"],
            symbols=tuple(s.strip() for s in options["symbols"].split("+")),
            venue=options.get("venue", ""), depth=_int("depth", options.get("depth", "0"), 0, 10_000),
            trades=trades == "1", heartbeat=_int("heartbeat", options.get("heartbeat", "30"), 1, 3600),
            reconnect=_int("reconnect", options.get("reconnect", "5"), 1, 3600),
            dictionary=options.get("dictionary", ""), data_dir=options.get("data_dir", ""), log=flags["log"] == "1",
            username=options.get("username", ""), password=options.get("password", ""),
        )

    def canonical_symbols(self) -> dict[str, str]:
        """Venue symbol -> canonical symbol, in subscription order."""
        return {s: canonical_fx(self.venue, s) for s in self.symbols}

    def settings_text(self, data_dir: Path, dictionary: Path) -> str:
        """quickfix SessionSettings for this initiator (store and logs under ``data_dir``)."""
        lines = [
            "[DEFAULT]",
            "ConnectionType=initiator",
            f"ReconnectInterval={self.reconnect}",
            f"FileStorePath={data_dir / 'store'}",
            f"FileLogPath={data_dir / 'log'}",
            "StartTime=00:00:00",
            "EndTime=00:00:00",
            "NonStopSession=Y",
            "UseDataDictionary=Y",
            f"DataDictionary={dictionary}",
            # Validation beyond structure is the parser's job: what it refuses becomes a dead letter.
            "ValidateUserDefinedFields=N",
            "AllowUnknownMsgFields=Y",
            "ValidateFieldsOutOfOrder=N",
            "ValidateFieldsHaveValues=N",
            "ResetOnLogon=Y",
            "ResetOnLogout=Y",
            "ResetOnDisconnect=Y",
            "SocketNodelay=Y",
            "LogonTimeout=10",
            "LogoutTimeout=2",
            "",
            "[SESSION]",
            "BeginString=FIX.4.4",
            f"SenderCompID={self.sender}",
            f"TargetCompID={self.target}",
            f"HeartBtInt={self.heartbeat}",
            f"SocketConnectHost={self.host}",
            f"SocketConnectPort={self.port}",
            "",
        ]
        return "\n".join(lines)


def installed_dictionary(name: str = "FIX44.xml") -> Path | None:
    """The data dictionary the quickfix wheel installs (``<prefix>/share/quickfix``), if present."""
    for root in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        path = Path(root) / "share" / "quickfix" / name
        if path.is_file():
            return path
    return None


def patch_dictionary(xml_text: str) -> str:
    """FIX 4.4's dictionary with RptSeq (83) and AggressorSide (2446) allowed in market data entries."""
    root = ET.fromstring(xml_text)
    fields = root.find("fields")
    components = root.find("components")
    messages = root.find("messages")
    if fields is None or components is None or messages is None:
        raise ValueError("not a quickfix data dictionary (no fields/components/messages)")
    if not any(f.get("number") == "2446" for f in fields):
        ET.SubElement(fields, "field", {"number": "2446", "name": "AggressorSide", "type": "CHAR"})
    for comp in components:
        if comp.get("name") in ("MDFullGrp", "MDIncGrp"):
            group = comp.find("group")
            if group is None:
                continue
            names = {c.get("name") for c in group}
            for name in ("RptSeq", "AggressorSide"):
                if name not in names:
                    ET.SubElement(group, "field", {"name": name, "required": "N"})
    for msg in messages:
        if msg.get("msgtype") == "W" and not any(c.get("name") == "RptSeq" for c in msg):
            ET.SubElement(msg, "field", {"name": "RptSeq", "required": "N"})
    return ET.tostring(root, encoding="unicode")
