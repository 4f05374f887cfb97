-- mds storage schema, version 1.
--
-- Standard ClickHouse DDL: the same file is applied by the embedded engine (chdb) and by a ClickHouse
-- server (clickhouse-connect). See server/storage/migrations.py for how files are applied.
--
-- Conventions (match server/engine/numbers.py and events.py):
--   * Prices and sizes are exact fixed-point integers: Int64 in units of 1e-9 (value 1.0 = 1000000000).
--     Never Float64.
--   * Aggregates that may exceed Int64 at 1e-9 (candle volumes) are Int128 at 1e-9; quote volume
--     (sum of price * size) is Int128 at 1e-18.
--   * Times are Int64 nanoseconds since the Unix epoch, UTC: ts_event = venue time, ts_recv = our receive
--     time. Partitions are by month of event time.
--   * Tables are ReplacingMergeTree: a row whose sorting key repeats an existing one replaces it at merge
--     time, and readers use FINAL, so a replay or a restart that writes the same records again never
--     duplicates them. The sorting key is the identity of a record.
--   * Statements end with ';' at the end of a line (the migration runner splits on that).

CREATE TABLE IF NOT EXISTS trades
(
    venue LowCardinality(String),
    symbol LowCardinality(String),
    trade_id String COMMENT 'venue trade id, unique per (venue, symbol); empty when the venue has none',
    price Int64 COMMENT 'fixed point, 1e-9',
    size Int64 COMMENT 'fixed point, 1e-9',
    side Int8 COMMENT 'aggressor: 0 unspecified, 1 buy, 2 sell (marketdata.v1.Side)',
    ts_event Int64 COMMENT 'ns since epoch, venue time',
    ts_recv Int64 COMMENT 'ns since epoch, receive time',
    dedup_key UInt64 MATERIALIZED if(trade_id = '', cityHash64(price, size, side), 0)
        COMMENT 'identity of a trade without an id: its price, size and side at its event time'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts_event))
ORDER BY (symbol, venue, ts_event, trade_id, dedup_key);

CREATE TABLE IF NOT EXISTS quotes
(
    venue LowCardinality(String),
    symbol LowCardinality(String),
    bid_price Int64 COMMENT 'fixed point, 1e-9; 0 size = empty side',
    bid_size Int64,
    ask_price Int64,
    ask_size Int64,
    ts_event Int64,
    ts_recv Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts_event))
ORDER BY (symbol, venue, ts_event, bid_price, bid_size, ask_price, ask_size);

CREATE TABLE IF NOT EXISTS book_snapshots
(
    venue LowCardinality(String),
    symbol LowCardinality(String),
    seq Int64 COMMENT 'venue sequence number; 0 when the venue has none',
    bids Array(Tuple(price Int64, size Int64)) COMMENT 'best first, fixed point 1e-9',
    asks Array(Tuple(price Int64, size Int64)),
    ts_event Int64,
    ts_recv Int64,
    content_hash UInt64 MATERIALIZED cityHash64(bids, asks)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts_event))
ORDER BY (symbol, venue, ts_event, seq, content_hash);

CREATE TABLE IF NOT EXISTS book_deltas
(
    venue LowCardinality(String),
    symbol LowCardinality(String),
    first_seq Int64,
    seq Int64,
    bids Array(Tuple(price Int64, size Int64)) COMMENT 'changed levels; size 0 deletes',
    asks Array(Tuple(price Int64, size Int64)),
    ts_event Int64,
    ts_recv Int64,
    content_hash UInt64 MATERIALIZED cityHash64(bids, asks)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts_event))
ORDER BY (symbol, venue, ts_event, first_seq, seq, content_hash);

CREATE TABLE IF NOT EXISTS candles
(
    venue LowCardinality(String),
    symbol LowCardinality(String),
    interval UInt8 COMMENT 'marketdata.v1.Interval: 1 = 1s ... 10 = 1M',
    open_time Int64 COMMENT 'ns, inclusive',
    close_time Int64 COMMENT 'ns, exclusive',
    open Int64 COMMENT 'fixed point, 1e-9',
    high Int64,
    low Int64,
    close Int64,
    volume Int128 COMMENT 'fixed point, 1e-9',
    quote_volume Int128 COMMENT 'exact sum of price * size, fixed point 1e-18',
    buy_volume Int128 COMMENT 'fixed point, 1e-9',
    sell_volume Int128 COMMENT 'fixed point, 1e-9',
    trade_count UInt64,
    closed Bool,
    correction Bool,
    ts_event Int64 COMMENT 'event time of the last trade included',
    ts_recv Int64,
    version UInt64 COMMENT 'write stamp assigned by the store; the highest version of a candle wins'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(fromUnixTimestamp64Nano(open_time))
ORDER BY (venue, symbol, interval, open_time);

CREATE TABLE IF NOT EXISTS pricing
(
    kind Enum8('index' = 1, 'mark' = 2, 'funding' = 3),
    symbol LowCardinality(String),
    ts Int64 COMMENT 'ns; computation time (settled funding: the funding time)',
    value Int64 COMMENT 'index: price; mark: mark_price; funding: rate. Fixed point 1e-9',
    index_price Int64 COMMENT 'mark only',
    premium Int64 COMMENT 'mark: premium_ema; funding: premium_rate',
    interest_rate Int64 COMMENT 'funding only',
    next_funding_time Int64 COMMENT 'funding only, ns',
    countdown_ns Int64 COMMENT 'funding only',
    interval_ns Int64 COMMENT 'funding only',
    components Array(Tuple(
        venue String,
        symbol String,
        price Int64,
        weight Int64,
        included Bool,
        exclusion_reason String)) COMMENT 'index only: fate of every constituent'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Nano(ts))
ORDER BY (symbol, kind, ts, next_funding_time);
