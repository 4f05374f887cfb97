"""ReplayStream's throughput at speed 0: the path the service uses against the record path.

``python -m load.replay_bench [--records 200000] [--trade-share 0.125]`` writes that many records (book
deltas of one level per side and trades, one symbol, two venues) into a temporary embedded store, then runs
``replay_responses`` over the whole range twice per path and prints updates/s for each: the path the service
uses (``rows``: trades and books read as RowBinary rows, ``EmbeddedStore.replay_rows``, and written by
``replay_codec``) and the record path (engine records converted in Python) as the peer. Both produce the
same bytes (checked). No gRPC: this is the server's side of a replay. ``--grpc`` adds the transport: a
grpc.aio server in this process serves ``ReplayStream`` with the service's path, and a client in another
process (its own GIL, as a user's) reads the whole range with the typed stub, parsing every message; it
prints updates/s as the client saw them. With ``--grpc`` it also runs the peer for that figure: the same
server and client, but the handler sends the replay's messages already built in memory, so it shows what
gRPC and a Python client can carry on this box when storage costs nothing (the ceiling a replay could
reach; it holds the whole replay in memory, about 83 MB per million records). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from marketdata.v1 import market_data_service_pb2

from server.engine.events import BookDelta, Side, Trade
from server.engine.pricing import MarkPrice
from server.service.replay import replay_responses, validate_replay
from server.storage import EmbeddedStore, StoredRecord

S = 1_000_000_000
T0 = 1_700_000_000_000_000_000


class RecordPath:
    """The store without ``replay_rows``, so replays take the record path."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def replay(self, *args: Any, **kwargs: Any) -> Iterator[list[StoredRecord]]:
        return self.store.replay(*args, **kwargs)


def records(n: int, trade_share: float) -> list[object]:
    every = max(1, round(1 / trade_share)) if trade_share > 0 else n + 1
    out: list[object] = []
    for i in range(n):
        venue = "binance" if i % 3 else "kraken"
        if i % every == 0:
            out.append(Trade(venue, "BTC/USD", str(i), 60_000 * S + i, S + i, Side.BUY, T0 + i * 1000,
                             T0 + i * 1000 + 7))
        else:
            out.append(BookDelta(venue, "BTC/USD", i, i, ((60_000 * S - i, S + i),), ((60_001 * S + i, 2 * S),),
                                 T0 + i * 1000, T0 + i * 1000 + 5))
    return out


async def _run(store: Any, request: market_data_service_pb2.ReplayStreamRequest) -> tuple[float, int, bytes]:
    plan = validate_replay(request, max_range_ns=10**15, known_symbols=None)
    started = time.perf_counter()
    size = 0
    last = b""
    async for data in replay_responses(store, plan):
        size += len(data)
        last = data
    return time.perf_counter() - started, size, last


def _client(port: int, end_ns: int, out: Any) -> None:
    """In a child process: replay everything with the typed stub; send (updates, messages, seconds)."""
    import grpc
    from marketdata.v1 import market_data_service_pb2_grpc

    async def run() -> tuple[int, int, float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = market_data_service_pb2_grpc.MarketDataServiceStub(channel)
            request = market_data_service_pb2.ReplayStreamRequest(symbols=["BTC/USD"], start_ns=T0, end_ns=end_ns)
            started = time.perf_counter()
            updates = messages = 0
            async for response in stub.ReplayStream(request):
                updates += len(response.updates)
                messages += 1
            return updates, messages, time.perf_counter() - started

    out.send(asyncio.run(run()))


async def _collect(store: Any, request: market_data_service_pb2.ReplayStreamRequest) -> list[bytes]:
    plan = validate_replay(request, max_range_ns=10**15, known_symbols=None)
    return [data async for data in replay_responses(store, plan, max_updates_per_message=1000)]


async def _grpc_run(store: Any, end_ns: int, prebuilt: list[bytes] | None = None) -> tuple[int, int, float]:
    """Serve ReplayStream from ``store`` on loopback (or, the peer, send ``prebuilt`` messages); one client
    process reads it all."""
    import multiprocessing as mp

    import grpc

    async def handler(request: market_data_service_pb2.ReplayStreamRequest, context: Any) -> Any:
        if prebuilt is not None:
            for data in prebuilt:
                yield data
            return
        plan = validate_replay(request, max_range_ns=10**15, known_symbols=None)
        async for data in replay_responses(store, plan, max_updates_per_message=1000):
            yield data

    server = grpc.aio.server()
    method = grpc.unary_stream_rpc_method_handler(
        handler, request_deserializer=market_data_service_pb2.ReplayStreamRequest.FromString,
        response_serializer=lambda b: b)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "marketdata.v1.MarketDataService", {"ReplayStream": method})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_client, args=(port, end_ns, send), daemon=True)
    child.start()
    try:
        loop = asyncio.get_running_loop()
        got: tuple[int, int, float] = await loop.run_in_executor(None, receive.recv)
        return got
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
        await server.stop(None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--trade-share", type=float, default=0.125, help="share of trades among the records")
    p.add_argument("--mark-every", type=int, default=0,
                   help="also store a mark price every N records (merged into the replay by event time)")
    p.add_argument("--grpc", action="store_true", help="also replay over gRPC to a client in another process")
    args = p.parse_args()
    if not 0 < args.records <= 5_000_000 or not 0 <= args.trade_share <= 1:
        p.error("--records 1..5000000, --trade-share 0..1")
    with tempfile.TemporaryDirectory(prefix="mds-replay-bench.") as tmp:
        store = EmbeddedStore.open(tmp)
        try:
            store.write_batch(records(args.records, args.trade_share))
            if args.mark_every:  # mark prices between the records: merged in from another table
                store.write_batch([MarkPrice("BTC/USD", 60_000 * S + i, 60_000 * S, 0, T0 + i * 1000 + 500)
                                   for i in range(0, args.records, args.mark_every)])
            request = market_data_service_pb2.ReplayStreamRequest(symbols=["BTC/USD"], start_ns=T0,
                                                                  end_ns=T0 + args.records * 1000 + 1)
            result: dict[str, Any] = {"bench": "replay", "records": args.records, "trade_share": args.trade_share}
            outputs: dict[str, tuple[int, bytes]] = {}
            for name, source in (("rows", store), ("records", RecordPath(store))):
                best = min(asyncio.run(_run(source, request)) for _ in range(2))
                result[f"{name}_updates_per_s"] = round(args.records / best[0])
                outputs[name] = best[1], best[2]
                print(f"{name}: {args.records / best[0]:,.0f} updates/s ({best[1]:,} bytes)")
            result["same_bytes"] = outputs["rows"] == outputs["records"]
            if args.grpc:
                updates, messages, seconds = asyncio.run(_grpc_run(store, T0 + args.records * 1000 + 1))
                result["grpc_client_updates_per_s"] = round(updates / seconds)
                result["grpc_messages"] = messages
                print(f"over gRPC to a client process: {updates / seconds:,.0f} updates/s ({updates:,} updates in "
                      f"{messages:,} messages, {seconds:.2f} s)")
                prebuilt = asyncio.run(_collect(store, request))
                updates, messages, seconds = asyncio.run(_grpc_run(store, T0 + args.records * 1000 + 1, prebuilt))
                result["grpc_prebuilt_updates_per_s"] = round(updates / seconds)
                print(f"peer, the same messages prebuilt in memory, over gRPC to a client process: "
                      f"{updates / seconds:,.0f} updates/s ({updates:,} updates in {seconds:.2f} s)")
            print(json.dumps(result))
            return 0 if result["same_bytes"] else 1
        finally:
            store.close()


if __name__ == "__main__":
    sys.exit(main())
