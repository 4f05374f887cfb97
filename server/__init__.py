"""mds server: the state engine, the gRPC service and the CLI.

On import, checks that no mypyc-compiled engine module (scripts/build_native.py) is older than its
source: a stale build would silently run old code.
"""

from __future__ import annotations

from pathlib import Path


def _check_native_build() -> None:
    engine = Path(__file__).resolve().parent / "engine"
    for so in engine.glob("*.so"):
        source = engine / (so.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > so.stat().st_mtime:
            raise ImportError(
                f"{so.name} is older than {source.name}: rebuild the engine with "
                "`python scripts/build_native.py`, or remove the build with `--clean` to run interpreted"
            )


_check_native_build()
