"""A small typed wrapper around chdb's ``Session`` (ClickHouse's engine in-process).

chdb ships no precise type hints for its query API and pyarrow none at all, so everything untyped is kept
here and in ``codec``. Limitation of chdb: one process can have ONE data path open at a time (the embedded
server is a process-wide singleton); a second path raises until the first session is closed.

Query parameters use ClickHouse's server-side binding (``{name:Type}`` placeholders), whose values are
text in ClickHouse's *escaped* format; ``param_str`` and ``param_str_array`` render them.
"""

from __future__ import annotations

import os
from typing import Any, cast

from chdb import session as _session

INSERT_SETTINGS = "max_threads = 1, max_insert_threads = 1, os_thread_priority = 19"
"""Bulk inserts are background work: on one thread, niced (the query's threads, the caller's included while
it runs), so that they take CPU the event loop does not need instead of competing with it for a core."""

ParamValue = str | int
Params = dict[str, ParamValue]


class StorageError(RuntimeError):
    """A storage operation failed (SQL error, engine unavailable, bad record)."""


def param_str(value: str) -> str:
    """A ``{x:String}`` parameter value: backslash, tab and newline escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def param_str_array(values: list[str]) -> str:
    """A ``{x:Array(String)}`` parameter value: a ClickHouse array literal of quoted strings."""
    quoted = ("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return "[" + ",".join(quoted) + "]"


class ChdbConnection:
    """One chdb session on a data directory; safe to share between threads (chdb locks internally)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._session: Any = _session.Session(os.fspath(path))  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise StorageError(f"cannot open chdb at {os.fspath(path)!r}: {exc}") from exc
        self._closed = False

    def execute(self, sql: str, params: Params | None = None) -> None:
        """Run a statement, discarding any result."""
        self._run(sql, "TabSeparated", params)

    def query_arrow(self, sql: str, params: Params | None = None) -> Any:
        """Run a query; the result as a ``pyarrow.Table``."""
        return self._run(sql, "ArrowTable", params)

    def query_row_binary(self, sql: str, params: Params | None = None) -> bytes:
        """Run a query; the result in ClickHouse's RowBinary format."""
        return cast("bytes", self._run(sql, "RowBinary", params).bytes())

    def fetch_column(self, sql: str, params: Params | None = None) -> list[object]:
        """The first column of a query's result, as Python values."""
        table = self.query_arrow(sql, params)
        if table.num_columns == 0:
            return []
        return cast("list[object]", table.column(0).to_pylist())

    def insert_arrow_stream(self, table: str, columns: tuple[str, ...], payload: bytes) -> int:
        """``INSERT INTO table (columns)`` from one Arrow IPC stream; returns the rows written.

        Inserts run with ``INSERT_SETTINGS``: one thread, at a low OS priority."""
        return self._insert(table, columns, "ArrowStream", [payload])

    def insert_row_binary(self, table: str, columns: tuple[str, ...], pieces: list[bytes]) -> int:
        """``INSERT INTO table (columns)`` from RowBinary rows, sent piece by piece (each piece whole rows);
        returns the rows written. Same settings as ``insert_arrow_stream``."""
        return self._insert(table, columns, "RowBinary", pieces)

    def _insert(self, table: str, columns: tuple[str, ...], fmt: str, pieces: list[bytes]) -> int:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) SETTINGS {INSERT_SETTINGS}"
        self._check_open()
        try:
            with self._session.send_insert(sql, fmt) as ins:
                for piece in pieces:
                    ins.append(piece)
                result = ins.finish()
        except Exception as exc:
            raise StorageError(f"insert into {table} failed: {exc}") from exc
        return int(result.rows_written)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._session.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the store is closed")

    def _run(self, sql: str, fmt: str, params: Params | None) -> Any:
        self._check_open()
        try:
            if params:
                return self._session.query(sql, fmt, params=params)
            return self._session.query(sql, fmt)
        except Exception as exc:
            raise StorageError(f"{exc}\n  in: {sql.strip()[:500]}") from exc
