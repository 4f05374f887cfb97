"""Builders of FIX 4.4 market data message text for the pure parser tests (no quickfix needed)."""

from __future__ import annotations

from collections.abc import Sequence

SOH = "\x01"
SENDING = "20240102-10:00:00.250"
SENDING_NS = 1_704_189_600_250_000_000
"""2024-01-02T10:00:00.250Z in ns."""

Fields = Sequence[tuple[int, str]]


def fix_text(msg_type: str, body: Fields = (), entries: Sequence[Fields] | None = None,
             sending: str = SENDING) -> str:
    """``8=FIX.4.4|9=..|35=..|...|268=n|<entries>|10=000|`` with SOH separators."""
    parts: list[tuple[int, str]] = [(8, "FIX.4.4"), (9, "100"), (35, msg_type), (34, "2"), (49, "LP"),
                                    (52, sending), (56, "MDS")]
    parts.extend(body)
    if entries is not None:
        parts.append((268, str(len(entries))))
        for entry in entries:
            parts.extend(entry)
    parts.append((10, "000"))
    return SOH.join(f"{tag}={value}" for tag, value in parts) + SOH


def snapshot(symbol: str, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]],
             rpt_seq: int | None = None, sending: str = SENDING) -> str:
    body: list[tuple[int, str]] = [(55, symbol), (262, "r1")]
    if rpt_seq is not None:
        body.append((83, str(rpt_seq)))
    entries = [[(269, "0"), (270, p), (271, s)] for p, s in bids]
    entries += [[(269, "1"), (270, p), (271, s)] for p, s in asks]
    return fix_text("W", body, entries, sending)


def level(action: str, side: str, symbol: str, price: str | None, size: str | None = None,
          rpt_seq: int | None = None, entry_id: str = "", time: str = "") -> list[tuple[int, str]]:
    """One X entry (279 first). ``side`` is the MDEntryType: 0 bid, 1 offer, 2 trade."""
    entry: list[tuple[int, str]] = [(279, action), (269, side)]
    if entry_id:
        entry.append((278, entry_id))
    entry.append((55, symbol))
    if price is not None:
        entry.append((270, price))
    if size is not None:
        entry.append((271, size))
    if time:
        entry.append((273, time))
    if rpt_seq is not None:
        entry.append((83, str(rpt_seq)))
    return entry


def incremental(*entries: Fields, sending: str = SENDING) -> str:
    return fix_text("X", [(262, "r1")], list(entries), sending)
