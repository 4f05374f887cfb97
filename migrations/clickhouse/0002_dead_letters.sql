-- mds storage schema, version 2: the service's own records -- dead letters and instrument trading status.
--
-- Same conventions as 0001_init.sql (times in Int64 ns since the epoch, UTC; ReplacingMergeTree keyed on
-- the identity of a record and read with FINAL, so a retried or repeated write never shows twice;
-- statements end with ';' at the end of a line).
--
-- Retention: nothing expires by default (a dead letter is evidence; the table is small next to the
-- market data). To expire old letters on a deployment, add a TTL, e.g.
--   ALTER TABLE dead_letters MODIFY TTL toDateTime(intDiv(ts_recv, 1000000000)) + INTERVAL 90 DAY;
-- (a deployment's own statement: a migration file never changes once applied).

CREATE TABLE IF NOT EXISTS dead_letters
(
    feed LowCardinality(String) COMMENT 'the feed that received the input (its GetFeedStatus name)',
    source LowCardinality(String) COMMENT 'the parser that refused it: kafka, ccxt:binance, tardis, fix, ...',
    location String COMMENT 'where in the source, when known (Kafka: topic[partition]@offset); else empty',
    reason_code LowCardinality(String) COMMENT 'the reason up to its first colon (Kafka: one of its codes)',
    reason String COMMENT 'why it could not be parsed (at most 4096 characters)',
    raw String COMMENT 'the input as the parser kept it, cut to its first 64 KiB of UTF-8',
    raw_length UInt64 COMMENT 'length in bytes (UTF-8) of the whole raw input before the cut',
    ts_recv Int64 COMMENT 'ns since epoch: when mds recorded it (wall clock)',
    ts_source Int64 COMMENT 'ns: the receive time the parser gave (0 if none; a recording: its capture time)',
    seq UInt64 COMMENT 'order of recording within one run of the service'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts_recv))
ORDER BY (feed, ts_recv, seq);

CREATE TABLE IF NOT EXISTS trading_status
(
    venue LowCardinality(String),
    symbol LowCardinality(String),
    halted Bool COMMENT 'true: trading halted; false: resumed',
    reason String COMMENT 'why trading halted; empty if none given',
    ts_event Int64 COMMENT 'ns since epoch, venue (engine) time of the change',
    ts_recv Int64 COMMENT 'ns since epoch, receive time',
    version UInt64 COMMENT 'write stamp assigned by the store, in the order the engine applied the changes'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts_event))
ORDER BY (venue, symbol, ts_event, halted, reason);
