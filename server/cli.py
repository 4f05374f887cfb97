"""The `mds` command line: `mds bench engine` today; `serve` and the rest arrive with the service."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: mds bench engine [--json] [--quick] [--no-peers]"
    if len(args) >= 2 and args[0] == "bench" and args[1] == "engine":
        from server.bench.engine_bench import main as bench_engine

        return bench_engine(args[2:])
    if args and args[0] in ("-h", "--help"):
        print(usage)
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
