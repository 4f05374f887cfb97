"""The engine stays pure: no asyncio, grpc, storage client, network, clock or float parsing of prices."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "server" / "engine"
FORBIDDEN_MODULES = {
    "asyncio", "grpc", "socket", "threading", "subprocess", "time", "random", "selectors",
    "aiokafka", "redis", "asyncpg", "clickhouse_connect", "chdb", "ccxt", "quickfix", "marketdata",
    "urllib", "http", "requests", "aiohttp", "os", "io", "pathlib", "shutil", "tempfile",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter", "open"}


def _modules() -> list[Path]:
    return sorted(p for p in ENGINE.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_engine_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path.name} must open with a docstring saying what it owns"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        if isinstance(node, ast.Call):
            func = node.func
            called = ""
            if isinstance(func, ast.Attribute):
                called = func.attr
            elif isinstance(func, ast.Name):
                called = func.id
            where = f"{path.name}:{node.lineno}"
            assert called not in FORBIDDEN_CALLS, f"{where} calls {called}() (a clock or I/O)"
            assert called != "float", f"{path.name}:{node.lineno} converts to float"
