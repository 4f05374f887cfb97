"""The matching engine's events over Kafka (protos/marketdata/v1/engine_event.proto).

``parser`` (pure) turns records into engine events, ``dedupe`` (pure) drops redeliveries, ``consumer``
is the I/O (``KafkaFeed``, an aiokafka consumer group, at least once) and ``producer`` plays the
engine's publisher for tests and tools.
"""
