-- netrig tables. {db} is the database, {ttl_days} the retention in days; both are
-- substituted by processors/runtime/migrations.ts after validation.
-- Every table written by processing functions carries provenance columns:
--   _stream  the raw stream (name@created) the row was derived from
--   _fn      the function that wrote it, _shard the shard, _seq the stream sequence of the
--            message that completed the row.
-- A restarted processor resumes from max(_seq) per (_stream, _fn, _shard) and never writes
-- a row twice; inserts also carry deduplication tokens for retried inserts.

CREATE TABLE IF NOT EXISTS {db}.http_requests
(
    ts            DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    region        LowCardinality(String),
    node          LowCardinality(String),
    conn_id       UUID,
    pid           UInt32,
    comm          LowCardinality(String),
    role          Enum8('client' = 1, 'server' = 2),
    client_addr   IPv6,
    client_port   UInt16,
    server_addr   IPv6,
    server_port   UInt16,
    protocol      LowCardinality(String),
    method        LowCardinality(String),
    host          LowCardinality(String),
    path          String CODEC(ZSTD(3)),
    status        UInt16,
    grpc_service  LowCardinality(String),
    grpc_method   LowCardinality(String),
    grpc_status   Int16 DEFAULT -1,
    grpc_message  String CODEC(ZSTD(3)),
    req_messages  UInt32,
    resp_messages UInt32,
    req_bytes     UInt64,
    resp_bytes    UInt64,
    ttfb_ns       UInt64,
    latency_ns    UInt64,
    tls           UInt8,
    timed_out     UInt8,
    req_pos       UInt64 COMMENT 'byte position of the request in its direction: with node, conn_id and role the row key',
    content_type  LowCardinality(String),
    user_agent    LowCardinality(String),
    partial       UInt8 COMMENT '1 when bytes of the exchange were not captured (truncation, loss); sizes still come from framing',
    _stream       LowCardinality(String),
    _fn           LowCardinality(String),
    _shard        UInt16,
    _seq          UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (host, path, ts)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.connections
(
    ts_open        DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    ts_close       DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    region         LowCardinality(String),
    node           LowCardinality(String),
    conn_id        UUID,
    pid            UInt32,
    comm           LowCardinality(String),
    role           Enum8('unknown' = 0, 'client' = 1, 'server' = 2),
    saddr          IPv6,
    sport          UInt16,
    daddr          IPv6,
    dport          UInt16,
    bytes_sent     UInt64,
    bytes_received UInt64,
    retransmits    UInt32,
    duration_ns    UInt64,
    netns          UInt32,
    cgroup_id      UInt64,
    established    UInt8 COMMENT '0 when the handshake never completed (refused, timed out)',
    midlife        UInt8 COMMENT '1 when the connection was open before capture started: ts_open and bytes count from first sight',
    last_state     LowCardinality(String),
    _stream        LowCardinality(String),
    _fn            LowCardinality(String),
    _shard         UInt16,
    _seq           UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(ts_close)
ORDER BY (node, ts_close)
TTL toDateTime(ts_close) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.tcp_events
(
    ts            DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    region        LowCardinality(String),
    node          LowCardinality(String),
    conn_id       UUID,
    pid           UInt32,
    comm          LowCardinality(String),
    kind          Enum8('retransmit' = 1, 'synack_retransmit' = 2, 'reset_sent' = 3, 'reset_received' = 4, 'drop' = 5),
    saddr         IPv6,
    sport         UInt16,
    daddr         IPv6,
    dport         UInt16,
    protocol      LowCardinality(String),
    state         LowCardinality(String),
    drop_reason   LowCardinality(String),
    drop_location LowCardinality(String),
    reset_reason  LowCardinality(String),
    ifindex       UInt32,
    pkt_len       UInt32,
    netns         UInt32,
    _stream       LowCardinality(String),
    _fn           LowCardinality(String),
    _shard        UInt16,
    _seq          UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (kind, node, ts)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.capture_losses
(
    ts       DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    region   LowCardinality(String),
    node     LowCardinality(String),
    run_id   String,
    kind     LowCardinality(String),
    cause    LowCardinality(String),
    records  UInt64,
    _stream  LowCardinality(String),
    _fn      LowCardinality(String),
    _shard   UInt16,
    _seq     UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (node, ts)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
