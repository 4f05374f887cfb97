"""Runtime -> storage for dead letters: a real file feed over a file with malformed lines; every bad line
is counted by the feed, kept by the runtime's recorder and written to storage by the storage thread,
and is still there after a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from feeds.file_feed import FileFeed
from feeds.protocols import DeadLetter
from feeds.registry import build_feed
from server.engine.engine import Engine
from server.runtime import Runtime
from server.storage import EmbeddedStore
from server.storage.dead_letters import MAX_RAW_BYTES, DeadLetterRecord


def _trade(i: int) -> str:
    return json.dumps({"type": "trade", "exchange": "bitmex", "symbol": "XBTUSD", "id": f"t{i}",
                       "price": 4091 + i, "amount": 10, "side": "buy",
                       "timestamp": f"2019-04-01T00:00:0{i}.000Z", "localTimestamp": f"2019-04-01T00:00:0{i}.100Z"})


BAD = [
    "this is not json",
    json.dumps({"type": "trade", "exchange": "bitmex", "symbol": "XBTUSD", "id": "x", "price": "abc",
                "amount": 1, "side": "buy", "timestamp": "2019-04-01T00:00:01.000Z",
                "localTimestamp": "2019-04-01T00:00:01.100Z"}),
    json.dumps({"type": "trade", "exchange": "bitmex"}),
    '{"type": "trade", "pad": "' + "x" * (MAX_RAW_BYTES + 100) + '"}',
]


def _write(path: Path) -> Path:
    lines = [_trade(0), BAD[0], _trade(1), BAD[1], BAD[2], _trade(2), BAD[3], _trade(3)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _replay(feed: FileFeed, runtime: Runtime) -> None:
    await runtime.start()
    try:
        async with asyncio.timeout(30):
            while not feed.done:
                await asyncio.sleep(0.02)
            await runtime.barrier()
    finally:
        await runtime.stop(2.0)


def test_bad_lines_of_a_file_feed_are_stored_and_survive_a_restart(tmp_path: Path) -> None:
    source = _write(tmp_path / "mixed.jsonl")
    feed = build_feed(f"file:tardis-jsonl:{source}?speed=max")
    assert isinstance(feed, FileFeed)
    engine = Engine()
    runtime = Runtime(engine, [feed], storage=EmbeddedStore.open(tmp_path / "db"), tick_interval_s=60.0)
    asyncio.run(_replay(feed, runtime))

    assert feed.status().dead_letters == len(BAD) == feed.dead_letters.total  # the feed's own count stays
    assert len(engine.recent_trades("BTC/USD-PERP", 100)) == 4
    kept = runtime.dead_letters.recent(limit=100)
    with EmbeddedStore.open(tmp_path / "db") as store:  # after the runtime stopped: a restart
        stored = store.dead_letters(limit=100)
        assert stored == kept  # newest first, same records
        assert store.dead_letters(feed.name, limit=100) == stored
    assert len(stored) == len(BAD)
    oldest_first: list[DeadLetterRecord] = stored[::-1]
    assert {r.feed for r in stored} == {feed.name} and {r.source for r in stored} == {"tardis-normalized"}
    assert [r.raw for r in oldest_first[:3]] == BAD[:3]
    assert all(r.reason and r.reason_code for r in stored)
    assert [r.seq for r in oldest_first] == sorted(r.seq for r in stored)
    big = oldest_first[3]
    assert big.raw_length == len(BAD[3]) and big.raw == BAD[3][:MAX_RAW_BYTES]


def test_without_storage_the_letters_stay_in_memory(tmp_path: Path) -> None:
    source = _write(tmp_path / "mixed.jsonl")
    feed = build_feed(f"file:tardis-jsonl:{source}?speed=max")
    assert isinstance(feed, FileFeed)
    runtime = Runtime(Engine(), [feed], tick_interval_s=60.0)
    asyncio.run(_replay(feed, runtime))
    kept = runtime.dead_letters.recent(limit=100)
    assert [r.raw for r in kept[::-1]][:3] == BAD[:3] and len(kept) == len(BAD)
    assert runtime.dead_letters.drain() == []  # nothing queued: there is no storage


def test_a_barrier_covers_the_letters_recorded_before_it(tmp_path: Path) -> None:
    """An at-least-once feed commits after ``barrier()``: its dead letters are stored by then."""
    store = EmbeddedStore.open(tmp_path / "db")

    async def go() -> int:
        runtime = Runtime(Engine(), [], storage=store, tick_interval_s=60.0)
        await runtime.start()
        try:
            sink = runtime.dead_letters.sink("kafka")

            def letters() -> None:  # from another thread, as a consumer thread would
                for i in range(25):
                    sink.append(DeadLetter("kafka", "empty: no value", f"engine.event.v1[0]@{i} key=None value=None",
                                           i + 1))

            await asyncio.to_thread(letters)
            await runtime.barrier()
            return len(store.dead_letters("kafka", limit=100))  # the storage thread batches 250 ms otherwise
        finally:
            await runtime.stop(1.0)

    assert asyncio.run(go()) == 25
