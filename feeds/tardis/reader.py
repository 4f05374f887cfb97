"""File I/O for Tardis files: lines of a JSONL or CSV file (plain or gzip), handed to a parser."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path


def read_lines(path: Path) -> Iterator[str]:
    """Text lines of ``path``; ``.gz`` files are decompressed on the fly."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as gz:
            yield from gz
        return
    with path.open(encoding="utf-8", errors="replace") as fh:
        yield from fh
