"""The ``fix:...`` spec, quickfix's settings text and the patched FIX 4.4 data dictionary."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from feeds.fix.config import FixFeedConfig, canonical_fx, installed_dictionary, patch_dictionary

SPEC = "fix:host=127.0.0.1,port=9876,sender=MDS,target=LP,symbols=EUR/USD+USD/JPY,venue=lp1,depth=10"


def test_from_spec() -> None:
    cfg = FixFeedConfig.from_spec(SPEC)
    assert cfg == FixFeedConfig(host="127.0.0.1", port=9876, sender="MDS", target="LP",
                                symbols=("EUR/USD", "USD/JPY"), venue="lp1", depth=10)
    assert cfg.trades and cfg.heartbeat == 30 and cfg.reconnect == 5
    assert cfg.canonical_symbols() == {"EUR/USD": "EUR/USD", "USD/JPY": "USD/JPY"}
    other = FixFeedConfig.from_spec("host=h,port=1,sender=A,target=LP2,symbols=EURUSD,trades=0,heartbeat=5")
    assert other.venue == "lp2" and not other.trades and other.heartbeat == 5 and not other.log
    assert FixFeedConfig.from_spec(SPEC + ",log=1").log
    assert other.canonical_symbols() == {"EURUSD": "EUR/USD"}
    assert canonical_fx("binance", "BTCUSDT") == "BTC/USDT" and canonical_fx("cme", "ESH4") == "ESH4"


@pytest.mark.parametrize(("spec", "message"), [
    (SPEC + ",colour=red", "unknown key 'colour'"),
    ("fix:host=h,port=1,sender=A,target=B", "missing symbols"),
    (SPEC.replace("port=9876", "port=x"), "port must be an integer"),
    (SPEC.replace("port=9876", "port=70000"), "port must be within"),
    (SPEC + ",depth=-1", "depth given twice"),
    (SPEC + ",trades=yes", "trades must be 0 or 1"),
    (SPEC + ",log=2", "log must be 0 or 1"),
    (SPEC.replace("venue=lp1", "venue=LP1"), "venue must be lowercase"),
    (SPEC.replace("EUR/USD+USD/JPY", "EUR/USD+EUR/USD"), "listed twice"),
    (SPEC.replace("EUR/USD+USD/JPY", "EUR/USD+"), "bad symbol"),
    (SPEC.replace("sender=MDS", "sender=M[S"), "bad sender"),
    (SPEC + ",junk", "is not key=value"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        FixFeedConfig.from_spec(spec)


def test_settings_text(tmp_path: Path) -> None:
    text = FixFeedConfig.from_spec(SPEC + ",reconnect=2").settings_text(tmp_path, tmp_path / "FIX44.xml")
    lines = set(text.splitlines())
    for expected in ("ConnectionType=initiator", "BeginString=FIX.4.4", "SenderCompID=MDS", "TargetCompID=LP",
                     "SocketConnectHost=127.0.0.1", "SocketConnectPort=9876", "ReconnectInterval=2",
                     "ResetOnLogon=Y", "UseDataDictionary=Y", f"DataDictionary={tmp_path / 'FIX44.xml'}",
                     f"FileStorePath={tmp_path / 'store'}", "HeartBtInt=30"):
        assert expected in lines


def test_patched_dictionary() -> None:
    source = installed_dictionary()
    if source is None:
        if os.environ.get("MDS_SKIP_FIX") == "1":
            pytest.skip("quickfix not installed and MDS_SKIP_FIX=1")
        pytest.fail("quickfix's FIX44.xml is not installed: pip install -e '.[fix]' or set MDS_SKIP_FIX=1",
                    pytrace=False)
    root = ET.fromstring(patch_dictionary(source.read_text(encoding="utf-8")))
    comps = {c.get("name"): c for c in root.iter("component") if c.find("group") is not None}
    for name in ("MDFullGrp", "MDIncGrp"):
        group = comps[name].find("group")
        assert group is not None
        assert {"RptSeq", "AggressorSide"} <= {f.get("name") for f in group}
    assert any(f.get("number") == "2446" for f in root.iter("field"))
    w = next(m for m in root.iter("message") if m.get("msgtype") == "W")
    assert any(f.get("name") == "RptSeq" for f in w)
    again = patch_dictionary(patch_dictionary(source.read_text(encoding="utf-8")))
    assert again.count('name="AggressorSide"') == 3  # definition + two groups: patching is idempotent
