"""Compile the engine (server/engine/*.py) and the simulator's model with mypyc, in place, for about twice the speed.

The source stays plain, type-checked Python and is the only thing committed; the compiled extension
modules (``*.so``) are build products beside it, git-ignored. Without them the engine runs interpreted,
with the same behaviour. ``server/__init__.py`` refuses to import a compiled module older than its source.

    python scripts/build_native.py          # build (incremental)
    python scripts/build_native.py --clean  # remove the compiled modules: run interpreted
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "server" / "engine"
EXTRA = [ROOT / "feeds" / "simulator" / "model.py", ROOT / "server" / "service" / "wire.py",
         ROOT / "server" / "service" / "fanout.py", ROOT / "server" / "service" / "replay_codec.py",
         ROOT / "server" / "storage" / "rowbinary.py"]
"""Other hot modules compiled in the same group: the simulator generates 100k+ events/s; the stream hub
(fanout.py) dispatches every engine update and writes its book deltas and trades through wire.py, a
max-speed replay its items through replay_codec.py, and storage its hot tables through rowbinary.py."""
GROUP = "server.engine._native"
"""mypyc's shared runtime library becomes server/engine/_native__mypyc*.so (not a top-level module)."""


def engine_sources() -> list[Path]:
    return sorted(p for p in ENGINE.glob("*.py") if p.name != "__init__.py") + EXTRA


def compiled_modules() -> list[Path]:
    return sorted([*ENGINE.glob("*.so"), *(so for p in EXTRA for so in p.parent.glob(p.stem + ".*.so"))])


def clean() -> None:
    for so in compiled_modules():
        so.unlink()
    shutil.rmtree(ROOT / "build" / "native", ignore_errors=True)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    os.chdir(ROOT)
    sources = [str(p.relative_to(ROOT)) for p in engine_sources()]
    setup(
        name="mds-engine-native",
        ext_modules=mypycify(sources, opt_level="3", group_name=GROUP),
        script_args=["build_ext", "--inplace", "--build-temp", "build/native/temp",
                     "--build-lib", "build/native/lib", "--quiet"],
    )
    # A fresh build must be newer than every source, or server/__init__.py would call it stale.
    for so in compiled_modules():
        so.touch()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = parser.parse_args()
    if args.clean:
        clean()
        print("engine: compiled modules removed; it runs interpreted")
        return 0
    build()
    print(f"engine: {len(compiled_modules())} compiled modules (engine, simulator model, stream hub, wire, replay "
          "and RowBinary encoders)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
