"""Fixtures of the Kafka feed tests: one real KRaft broker for the whole session (tests/kafka_broker.py)."""

from tests.kafka_broker import kafka_broker_fixture

kafka_broker = kafka_broker_fixture(scope="session")
