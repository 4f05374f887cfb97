"""File I/O for LOBSTER: the message and orderbook files of one instrument-day, line by line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def read_lines(path: Path) -> Iterator[str]:
    """Text lines of a LOBSTER CSV file (no header)."""
    with path.open(encoding="ascii", errors="replace") as fh:
        yield from fh


def find_pair(folder: Path, symbol: str, levels: int = 10) -> tuple[Path, Path]:
    """The ``(message, orderbook)`` files of ``symbol`` at ``levels`` in ``folder``."""
    msg = sorted(folder.glob(f"{symbol}_*_message_{levels}.csv"))
    book = sorted(folder.glob(f"{symbol}_*_orderbook_{levels}.csv"))
    if len(msg) != 1 or len(book) != 1:
        raise FileNotFoundError(f"expected one message and one orderbook file for {symbol} in {folder}")
    return msg[0], book[0]
