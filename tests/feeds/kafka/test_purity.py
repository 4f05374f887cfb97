"""The Kafka feed's parser and deduper stay pure: no Kafka client, asyncio, clock, file or network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "feeds" / "kafka"
PURE = ("parser.py", "dedupe.py")
FORBIDDEN_MODULES = {"aiokafka", "asyncio", "socket", "threading", "subprocess", "time", "random", "os", "io",
                     "pathlib", "shutil", "tempfile", "datetime", "logging"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter", "open", "float"}


@pytest.mark.parametrize("name", PURE)
def test_module_is_pure(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{name} must open with a docstring saying what it owns"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        for module in modules:
            assert module.split(".")[0] not in FORBIDDEN_MODULES, f"{name} imports {module}"
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            assert called not in FORBIDDEN_CALLS, f"{name}:{node.lineno} calls {called}()"
