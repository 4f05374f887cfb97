"""File I/O for cryptofeed captures: read lines, and merge several captures by receive time."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path

from feeds.cryptofeed_capture.common import FeedError, fixed


def read_lines(path: Path) -> Iterator[str]:
    """The lines of one capture file, as text (UTF-8, undecodable bytes replaced)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        yield from fh


def _recv_key(line: str) -> int:
    """The capture epoch of a line in ns (0 when it has none, so such lines keep their place)."""
    head = line.partition(": ")[0].split(" ")
    text = head[-1] if head else ""
    try:
        return fixed(text, "epoch")
    except FeedError:
        return 0


def merged_lines(*paths: Path) -> Iterator[str]:
    """Lines of several captures (e.g. a WebSocket file and its REST snapshot file) by receive time.

    Each file is already in receive order; a stable k-way merge keeps ties in argument order.
    """
    return heapq.merge(*(read_lines(p) for p in paths), key=_recv_key)
