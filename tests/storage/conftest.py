"""Fixtures of the storage tests: a fresh embedded store per test (chdb: one open data dir at a time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.storage import EmbeddedStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    st = EmbeddedStore.open(tmp_path / "db")
    try:
        yield st
    finally:
        st.close()
