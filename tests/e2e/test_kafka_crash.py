"""End to end: `mds serve --feed kafka:...` SIGKILLed twice while the matching engine keeps producing loses
nothing and counts nothing twice (storage, served candles, books).

A real Kafka broker (tests/kafka_broker.py) and the service as a subprocess on a data directory; the
scenario is ``load.kafka_sigkill.run`` (the figure tool's), here with modest settings: every produced
trade must be stored exactly once, every book delta too, every closed 1m candle (stored and served) must
equal the exact aggregate of its minute's produced trades, and every book must end as the producer's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from load.kafka_sigkill import report, run
from tests.kafka_broker import KafkaBroker, kafka_broker_fixture

kafka_broker = kafka_broker_fixture(scope="module")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("static", [False, True], ids=["dynamic-membership", "static-membership"])
def test_sigkills_lose_nothing_and_count_nothing_twice(kafka_broker: KafkaBroker, tmp_path: Path, static: bool) -> None:
    result = asyncio.run(run(kafka_broker.bootstrap, rate=200, seconds=24.0, kills=2, symbols=3, speed=20.0,
                             down_s=1.0, workdir=tmp_path, static=static))
    print(report(result))
    assert len(result["restarts"]) == 2
    assert all(r["restore_s"] is not None and r["live_s"] is not None for r in result["restarts"]), result
    assert all(r["trades_produced_while_down"] > 0 for r in result["restarts"]), result
    assert result["exit_code"] == 0 and result["final_catch_up_s"] is not None
    assert result["trades_produced"] > 1500 and result["trades_stored"] == result["trades_produced"]
    assert (result["trades_lost"], result["trades_duplicated"]) == (0, 0)
    assert result["deltas_stored"] == result["deltas_produced"]
    assert (result["deltas_lost"], result["deltas_duplicated"]) == (0, 0)
    assert result["minutes"] >= 3 * 6  # several minutes of 1m candles per symbol
    assert result["candles_stored_closed"] == result["minutes"] - 3  # all but each symbol's last, still open
    assert (result["candle_mismatches_stored"], result["candles_missing_stored"]) == (0, 0)
    assert (result["candle_mismatches_served"], result["candles_missing_served"]) == (0, 0)
    assert result["books_wrong"] == 0
    if static:  # the restarted instance gets its partitions back without waiting for its session to expire
        assert all(r["live_s"] < 4.5 for r in result["restarts"]), result
