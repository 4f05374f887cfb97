"""``KafkaFeedConfig.from_spec``: the ``kafka:k=v,...`` grammar, the KAFKA_BROKERS fallback, refusals."""

from __future__ import annotations

import pytest

from feeds.kafka.consumer import KafkaFeedConfig
from feeds.kafka.parser import ALL_TOPICS


def test_full_spec() -> None:
    config = KafkaFeedConfig.from_spec(
        "kafka:brokers=127.0.0.1:9092+127.0.0.1:9093,group=mds,instance=host-a,topics=engine.event.v1+engine.snapshot.v1,"
        "prefix=staging.,client=mds-1,reset=latest,max_records=100,poll_ms=50,session_ms=6000,in_flight=4,"
        "in_flight_records=1000", env={})
    assert config == KafkaFeedConfig(
        bootstrap="127.0.0.1:9092,127.0.0.1:9093", group_id="mds", group_instance_id="host-a",
        topics=("engine.event.v1", "engine.snapshot.v1"),
        topic_prefix="staging.", client_id="mds-1", auto_offset_reset="latest", max_records=100, poll_timeout_ms=50,
        session_timeout_ms=6000, max_in_flight=4, max_in_flight_records=1000)


def test_brokers_from_the_environment_and_defaults() -> None:
    config = KafkaFeedConfig.from_spec("kafka", env={"KAFKA_BROKERS": "10.0.0.1:9092, 10.0.0.2:9092"})
    assert config.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert config.group_id == "mds"
    assert config.group_instance_id == ""  # dynamic membership unless an instance id is given
    assert config.topics == ALL_TOPICS
    assert config.auto_offset_reset == "earliest"
    spec = KafkaFeedConfig.from_spec("kafka:brokers=h:1", env={"KAFKA_BROKERS": "ignored:2"})
    assert spec.bootstrap == "h:1"


@pytest.mark.parametrize(("spec", "message"), [
    ("kafka:brokers=h:1,colour=red", "unknown kafka option 'colour'"),
    ("kafka", "no brokers"),
    ("kafka:", "nothing after"),
    ("kafka:brokers", "expected k=v"),
    ("kafka:brokers=h:1,group=a,group=b", "given twice"),
    ("kafka:brokers=h:1,reset=middle", "reset must be"),
    ("kafka:brokers=h:1,max_records=-5", "whole number"),
    ("kafka:brokers=h:1,max_records=0", "must be >= 1"),
    ("kafka:brokers=h:1,in_flight=0", "in_flight and in_flight_records must be >= 1"),
    ("kafka:brokers=h:1,in_flight_records=0", "in_flight and in_flight_records must be >= 1"),
    ("kafka:brokers=h:1,in_flight=x", "whole number"),
    ("kafka:brokers=h:1,topics=a++b", "none empty"),
    ("sim:seed=1", "not a kafka spec"),
])  # fmt: skip
def test_refusals(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaFeedConfig.from_spec(spec, env={})
