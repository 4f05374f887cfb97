"""File I/O for DBN: stream the decoded records of a ``.dbn`` / ``.dbn.zst`` file, chunk by chunk.

Memory is bounded by the chunk size (plus the decoder's partial record), however large the file.
Older DBN versions are upgraded by the decoder to the current record layouts (v1 files decode to v3
objects; prices and times are unchanged). A corrupt or truncated file ends the stream with one
``DeadLetter`` instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import databento_dbn as dbn

from feeds.protocols import DeadLetter, DeadLetterSink

SOURCE: Final = "dbn"
CHUNK_SIZE: Final = 1 << 20

Item = dbn.DBNRecord | dbn.Metadata
"""What the decoder yields: the file's ``Metadata`` first, then its records."""


def read_records(path: Path, dead_letters: DeadLetterSink, chunk_size: int = CHUNK_SIZE) -> Iterator[Item]:
    """Metadata then records of one DBN file (zstd when the name ends in ``.zst``)."""
    compression = dbn.Compression.from_str("zstd" if path.name.endswith(".zst") else "none")
    decoder = dbn.DBNDecoder(compression=compression)
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield from decoder.write_and_decode(chunk)
            yield from decoder.decode()
            rest = decoder.buffer()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # DBNError, ValueError, zstd RuntimeError, and the
        # decoder's pyo3 PanicException (a BaseException) for a record shorter than its type's layout
        dead_letters.append(DeadLetter(SOURCE, f"{path.name}: undecodable DBN: {exc}", "", 0))
        return
    if rest:
        dead_letters.append(DeadLetter(SOURCE, f"{path.name}: {len(rest)} trailing bytes (truncated record)",
                                       rest[:64].hex(), 0))


def symbols_from_definitions(path: Path, dead_letters: DeadLetterSink) -> dict[int, str]:
    """``instrument_id -> raw_symbol`` from a DBN definition file (e.g. ``esu4_nqu4_futures_definition``)."""
    out: dict[int, str] = {}
    for item in read_records(path, dead_letters):
        if isinstance(item, dbn.InstrumentDefMsg | dbn.InstrumentDefMsgV1 | dbn.InstrumentDefMsgV2):
            out[item.instrument_id] = item.raw_symbol
    return out
