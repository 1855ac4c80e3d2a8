-- DNS queries with their responses, and TLS handshakes seen on the wire.

CREATE TABLE IF NOT EXISTS {db}.dns_queries
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
    transport     LowCardinality(String),
    query_id      UInt16,
    qname         String CODEC(ZSTD(3)),
    qtype         LowCardinality(String),
    rcode         Int16 COMMENT 'numeric DNS rcode; -1 when no response came (timed_out)',
    answers       Array(String) CODEC(ZSTD(3)),
    answer_count  UInt16,
    latency_ns    UInt64,
    timed_out     UInt8,
    truncated     UInt8,
    retries       UInt16 COMMENT 'the query was sent again this many times before the response',
    _stream       LowCardinality(String),
    _fn           LowCardinality(String),
    _shard        UInt16,
    _seq          UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (qname, ts)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.tls_handshakes
(
    ts            DateTime64(9, 'UTC') COMMENT 'the ClientHello' CODEC(Delta, ZSTD(1)),
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
    sni           LowCardinality(String),
    alpn_offered  Array(LowCardinality(String)),
    alpn          LowCardinality(String) COMMENT 'chosen ALPN when visible (TLS 1.2 ServerHello); TLS 1.3 hides it',
    version       LowCardinality(String),
    cipher        LowCardinality(String),
    handshake_ns  UInt64 COMMENT 'ClientHello to the client''s first encrypted record after the ServerHello; 0 if not completed',
    completed     UInt8,
    _stream       LowCardinality(String),
    _fn           LowCardinality(String),
    _shard        UInt16,
    _seq          UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (sni, ts)
TTL toDateTime(ts) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
