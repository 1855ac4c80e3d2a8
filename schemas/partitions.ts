/**
 * The column each table is partitioned by day on (`PARTITION BY toDate(<column>)` in
 * schemas/migrations/): inserts are atomic per partition, so the processors commit per day
 * partition. Checked against the tables' DDL in a test.
 */
export const PARTITION_COLUMN: Readonly<Record<string, string>> = {
  http_requests: 'ts',
  connections: 'ts_close',
  tcp_events: 'ts',
  capture_losses: 'ts',
  dns_queries: 'ts',
  tls_handshakes: 'ts',
};
