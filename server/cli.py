"""The `mds` command line: `serve` (the service), `bench engine` and `bench hub` (figures)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from server.config import ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    from server.logs import setup_logging
    from server.serve import ServiceFailedError, serve

    try:
        config = load_config(args.config, overrides={
            "feeds": tuple(args.feed) if args.feed else None,
            "sources": tuple(args.source) if args.source else None,
            "grpc_host": args.host,
            "grpc_port": args.grpc_port,
            "grpc_front": True if args.grpc_front else None,
            "metrics_port": args.metrics_port,
            "data_dir": args.data_dir,
            "log_level": args.log_level,
        })
    except (ConfigError, OSError) as exc:
        print(f"mds serve: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    try:
        run = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the faster event loop when installed (a dependency of mds)

            run = uvloop.run
        run(serve(config))
    except ValueError as exc:  # a bad feed spec or feed file
        print(f"mds serve: {exc}", file=sys.stderr)
        return 2
    except ServiceFailedError as exc:
        print(f"mds serve: stopped: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the gRPC port is taken
        print(f"mds serve: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "bench" and args[1] == "engine":
        from server.bench.engine_bench import main as bench_engine

        return bench_engine(args[2:])
    if len(args) >= 2 and args[0] == "bench" and args[1] == "hub":
        from server.bench.hub_bench import main as bench_hub

        return bench_hub(args[2:])
    parser = argparse.ArgumentParser(prog="mds", description="mds market data service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gRPC API (default: the simulator, embedded storage)")
    serve.add_argument("--config", help="TOML file with ServiceConfig keys")
    serve.add_argument("--feed", action="append",
                       help="feed spec, repeatable: sim[:k=v,...] or file:<format>:<path>[?speed=max|<N>x]")
    serve.add_argument("--source", action="append",
                       help="source priority of an instrument, repeatable: SYMBOL=VENUE[:SILENCE],...[@COMPOSITE]")
    serve.add_argument("--host", help="bind address (GRPC_HOST; default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (GRPC_PORT; default 50051)")
    serve.add_argument("--grpc-front", action="store_true",
                       help="serve gRPC from a front process whose loop does nothing else (MDS_GRPC_FRONT=1)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (METRICS_PORT; default 9100; -1 off)")
    serve.add_argument("--data-dir", help="embedded storage directory (MDS_DATA_DIR; default ./data)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    sub.add_parser("bench", help="benchmarks: `mds bench engine [--json] [--quick] [--no-peers]`, "
                   "`mds bench hub [--json] [--events N] [--rounds N]`")
    parsed = parser.parse_args(args)
    if parsed.command == "serve":
        return _serve(parsed)
    parser.error("usage: mds bench engine [--json] [--quick] [--no-peers] | mds bench hub [--json]")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
