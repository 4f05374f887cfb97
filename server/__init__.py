"""mds server: the state engine, the gRPC service and the CLI.

On import, checks that no mypyc-compiled module (the engine, the simulator's model, the stream hub, the wire,
replay and RowBinary encoders; scripts/build_native.py) is older than its source: a stale build would
silently run old code.
"""

from __future__ import annotations

from pathlib import Path


def _check_native_build() -> None:
    root = Path(__file__).resolve().parent
    for so in [*root.glob("engine/*.so"), *root.glob("service/*.so"), *root.glob("storage/*.so"),
               *root.parent.glob("feeds/simulator/*.so")]:
        source = so.parent / (so.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > so.stat().st_mtime:
            raise ImportError(
                f"{so.name} is older than {source.name}: rebuild the engine with "
                "`python scripts/build_native.py`, or remove the build with `--clean` to run interpreted"
            )


_check_native_build()
