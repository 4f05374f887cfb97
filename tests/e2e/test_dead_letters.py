"""ListDeadLetters through a real `mds serve` (subprocess on loopback): a file feed with malformed lines,
the typed stubs and the mds_client facade, bad requests, and the letters still listed after a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from marketdata.v1 import market_data_service_pb2
from mds_client import DeadLetter, MarketDataClient, MdsError

from tests.e2e.test_serve import Service, start_service
from tests.server.test_runtime_dead_letters import BAD, _write

pb = market_data_service_pb2


def _wait_for_letters(service: Service, count: int, timeout_s: float = 20.0) -> pb.ListDeadLettersResponse:
    deadline = time.monotonic() + timeout_s
    while True:
        resp = service.md.ListDeadLetters(pb.ListDeadLettersRequest(limit=100), timeout=5)
        if len(resp.dead_letters) >= count or time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


def _facade(target: str) -> tuple[list[DeadLetter], list[DeadLetter], str]:
    async def scenario() -> tuple[list[DeadLetter], list[DeadLetter], str]:
        async with MarketDataClient(target, timeout=10) as client:
            every = await client.dead_letters()
            one = await client.dead_letters(limit=1, reason_code=every[-1].reason_code)
            try:
                await client.dead_letters(limit=1_000_000)
            except MdsError as exc:
                return every, one, str(exc)
            return every, one, ""

    return asyncio.run(scenario())


def test_dead_letters_are_listed_and_survive_a_restart(tmp_path: Path) -> None:
    source = _write(tmp_path / "mixed.jsonl")
    data = tmp_path / "data"
    feed_spec = f"file:tardis-jsonl:{source}?speed=max"
    service = start_service(data, feed_spec)
    try:
        resp = _wait_for_letters(service, len(BAD))
        letters = list(resp.dead_letters)
        assert len(letters) == len(BAD) and not resp.more
        assert [d.raw for d in letters[::-1][:3]] == BAD[:3]
        assert {d.feed for d in letters} == {f"file:tardis-jsonl:{source.name}"}
        assert [d.recorded_ns for d in letters] == sorted((d.recorded_ns for d in letters), reverse=True)
        assert letters[0].raw_length == len(BAD[3]) and len(letters[0].raw) < len(BAD[3])
        statuses = service.md.GetFeedStatus(pb.GetFeedStatusRequest(), timeout=5).feeds
        assert [s.dead_letters for s in statuses] == [len(BAD)]

        page = service.md.ListDeadLetters(pb.ListDeadLettersRequest(limit=2), timeout=5)
        assert list(page.dead_letters) == letters[:2] and page.more
        none = service.md.ListDeadLetters(pb.ListDeadLettersRequest(feed="kafka"), timeout=5)
        assert not none.dead_letters and not none.more
        oldest = letters[-1].recorded_ns
        first = service.md.ListDeadLetters(pb.ListDeadLettersRequest(start_ns=oldest, end_ns=oldest + 1), timeout=5)
        assert list(first.dead_letters) == [letters[-1]]

        for bad, words in [(pb.ListDeadLettersRequest(start_ns=10, end_ns=5), "after"),
                           (pb.ListDeadLettersRequest(start_ns=-1), ">= 0"),
                           (pb.ListDeadLettersRequest(limit=10_001), "out of range")]:
            with pytest.raises(grpc.RpcError) as err:
                service.md.ListDeadLetters(bad, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (err.value.details() or "")

        every, one, error = _facade(service.target)
        assert [d.raw for d in every] == [d.raw for d in letters] and every[0].sequence == letters[0].sequence
        assert len(one) == 1 and one[0].reason_code == every[-1].reason_code
        assert "limit" in error
    finally:
        assert service.stop() == 0

    # A restart without the bad feed: the letters come from storage.
    again = start_service(data, "sim:seed=7,rate=100")
    try:
        after = again.md.ListDeadLetters(pb.ListDeadLettersRequest(limit=100), timeout=5)
        assert list(after.dead_letters) == letters
    finally:
        assert again.stop() == 0
