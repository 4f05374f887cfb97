"""A tiny migration runner for the ClickHouse schema (``migrations/clickhouse/NNNN_name.sql``).

Each file is applied once, in version order; applied versions are recorded in ``schema_migrations``
(version, name, sha256 of the file, time). A recorded file whose content changed since it was applied is
an error: ship a new numbered file instead. Statements in a file end with ``;`` at the end of a line;
lines starting with ``--`` are comments. Statements should be idempotent (``IF NOT EXISTS``), so a run
interrupted half way can simply be run again.

The runner talks to any ``SqlTarget`` (the embedded chdb connection, or a clickhouse-connect client
behind a two-method adapter), so the same files serve both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.storage._chdb import StorageError, param_str

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "clickhouse"
"""The repository's ``migrations/clickhouse`` folder."""

_FILE_RE = re.compile(r"^(\d{4,})_([A-Za-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


class SqlTarget(Protocol):
    """What the runner needs from a connection."""

    def execute(self, sql: str, params: dict[str, str | int] | None = None) -> None: ...

    def fetch_column(self, sql: str, params: dict[str, str | int] | None = None) -> list[object]: ...


class MigrationError(StorageError):
    """A bad migration file, or an applied one that was changed afterwards."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The statements of the file, comments removed."""
        out: list[str] = []
        current: list[str] = []
        for line in self.sql.splitlines():
            if line.strip().startswith("--"):
                continue
            current.append(line)
            if line.rstrip().endswith(";"):
                stmt = "\n".join(current).strip().removesuffix(";").strip()
                if stmt:
                    out.append(stmt)
                current = []
        rest = "\n".join(current).strip()
        if rest:
            out.append(rest)
        return out


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_name.sql`` of ``directory``, by version; raises on duplicate versions."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"duplicate migration version {version}: {path.name}")
        found[version] = Migration(version, m.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied_versions(target: SqlTarget) -> dict[int, str]:
    """Applied version -> checksum, from ``schema_migrations`` (created when missing)."""
    target.execute(_CREATE_TABLE)
    versions = target.fetch_column("SELECT version FROM schema_migrations FINAL ORDER BY version")
    checksums = target.fetch_column("SELECT checksum FROM schema_migrations FINAL ORDER BY version")
    return {int(str(v)): str(c) for v, c in zip(versions, checksums, strict=True)}


def apply_migrations(target: SqlTarget, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations not applied yet, in order; returns the versions applied by this call."""
    done = applied_versions(target)
    applied: list[int] = []
    for mig in load_migrations(directory):
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.version:04d}_{mig.name} changed after it was applied; "
                    "add a new numbered file instead"
                )
            continue
        for stmt in mig.statements():
            target.execute(stmt)
        target.execute(
            "INSERT INTO schema_migrations (version, name, checksum) "
            "VALUES ({version:UInt32}, {name:String}, {checksum:String})",
            {"version": mig.version, "name": param_str(mig.name), "checksum": mig.checksum},
        )
        applied.append(mig.version)
    return applied
