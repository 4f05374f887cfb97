"""The migration runner applies each numbered file once and refuses edited history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.storage import EmbeddedStore, MigrationError, apply_migrations
from server.storage._chdb import ChdbConnection
from server.storage.migrations import MIGRATIONS_DIR, Migration, load_migrations


def _copy_migrations(dst: Path) -> Path:
    dst.mkdir()
    for f in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(f, dst / f.name)
    return dst


def test_migrations_apply_once(tmp_path: Path) -> None:
    conn = ChdbConnection(tmp_path / "db")
    try:
        versions = [m.version for m in load_migrations()]
        assert versions and versions[0] == 1
        assert apply_migrations(conn) == versions
        assert apply_migrations(conn) == []
        rows = conn.fetch_column("SELECT count() FROM schema_migrations")
        assert rows == [len(versions)]
        tables = set(map(str, conn.fetch_column("SHOW TABLES")))
        assert {"trades", "quotes", "book_snapshots", "book_deltas", "candles", "pricing", "dead_letters",
                "trading_status"} <= tables
    finally:
        conn.close()


def test_reopening_the_store_does_not_reapply(tmp_path: Path) -> None:
    path = tmp_path / "db"
    EmbeddedStore.open(path).close()
    EmbeddedStore.open(path).close()
    conn = ChdbConnection(path)
    try:
        assert conn.fetch_column("SELECT count() FROM schema_migrations") == [len(load_migrations())]
    finally:
        conn.close()


def test_new_file_applies_and_edited_file_is_refused(tmp_path: Path) -> None:
    mig = _copy_migrations(tmp_path / "mig")
    conn = ChdbConnection(tmp_path / "db")
    try:
        shipped = [m.version for m in load_migrations()]
        assert apply_migrations(conn, mig) == shipped
        (mig / "9999_extra.sql").write_text(
            "-- a later migration\n"
            "CREATE TABLE IF NOT EXISTS extra (a Int64)\n"
            "ENGINE = MergeTree ORDER BY a;\n"
        )
        assert apply_migrations(conn, mig) == [9999]
        assert "extra" in set(map(str, conn.fetch_column("SHOW TABLES")))
        init = mig / "0001_init.sql"
        init.write_text(init.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="changed"):
            apply_migrations(conn, mig)
    finally:
        conn.close()


def test_bad_file_names_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "init.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(d)


def test_statement_splitting() -> None:
    m = Migration(
        1, "x", "-- c; not a statement\nCREATE TABLE a (x Int8)\nENGINE = Memory;\n\nSELECT 1;\nSELECT 2"
    )
    assert m.statements() == ["CREATE TABLE a (x Int8)\nENGINE = Memory", "SELECT 1", "SELECT 2"]
