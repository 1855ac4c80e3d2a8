/**
 * Ready SQL reports: `netrig report NAME`, and the views of the page (ui/), which runs the
 * same SQL. Each report is SQL over one time window and the typed filters it takes; the
 * window and the filter values reach ClickHouse as query parameters (cli/report-query.ts
 * builds `where`), never as SQL text.
 */

export interface Report {
  description: string;
  /** Filters this report takes (cli/report-query.ts FILTERS); none when absent. */
  filters?: readonly FilterName[];
  /**
   * The SQL: `where` is the condition on a row's `ts` and the filters, built by
   * reportQuery() from fixed fragments; `seconds` is the window's length as SQL.
   */
  sql: (db: string, where: string, seconds: string) => string;
}

/** Filters of the http_requests reports: an edge of the service map (client, server, port) or an endpoint (host, method, endpoint). */
export type FilterName = 'client' | 'server' | 'port' | 'host' | 'method' | 'endpoint';

const HTTP_FILTERS: readonly FilterName[] = ['client', 'server', 'port', 'host', 'method', 'endpoint'];

/** An exchange that failed: a 5xx, a gRPC error, or no response. */
const FAILED = '(status >= 500 OR grpc_status > 0 OR timed_out = 1)';

export const REPORTS: Readonly<Record<string, Report>> = {
  'top-endpoints': {
    description: 'busiest HTTP endpoints (method and path template), each request counted once: from the server\'s rows where the server was captured, else the client\'s',
    filters: HTTP_FILTERS,
    // Both ends of one exchange are two rows; an endpoint with server rows is told from them alone.
    sql: (db, where) => `
      SELECT host, method, endpoint, if(server_rows > 0, 'server', 'client') AS seen_by,
             if(server_rows > 0, server_rows, client_rows) AS requests,
             if(server_rows > 0, server_5xx, client_5xx) AS errors_5xx,
             if(server_rows > 0, server_timeouts, client_timeouts) AS timeouts,
             round(if(server_rows > 0, server_q[1], client_q[1]) / 1e6, 3) AS p50_ms,
             round(if(server_rows > 0, server_q[2], client_q[2]) / 1e6, 3) AS p99_ms
      FROM (
        SELECT host, method, path_template AS endpoint,
               countIf(role = 'server') AS server_rows, countIf(role = 'client') AS client_rows,
               countIf(status >= 500 AND role = 'server') AS server_5xx, countIf(status >= 500 AND role = 'client') AS client_5xx,
               countIf(timed_out = 1 AND role = 'server') AS server_timeouts, countIf(timed_out = 1 AND role = 'client') AS client_timeouts,
               quantilesIf(0.5, 0.99)(latency_ns, role = 'server') AS server_q, quantilesIf(0.5, 0.99)(latency_ns, role = 'client') AS client_q
        FROM ${db}.http_requests WHERE ${where}
        GROUP BY host, method, endpoint)
      ORDER BY requests DESC, host, method, endpoint LIMIT 25`,
  },
  endpoints: {
    description: 'HTTP endpoints (method and path template) per role: requests, failures (5xx, gRPC errors, timeouts), p50 and p99',
    filters: HTTP_FILTERS,
    sql: (db, where) => `
      SELECT host, method, path_template AS endpoint, role, count() AS requests, countIf(${FAILED}) AS errors,
             round(quantile(0.5)(latency_ns) / 1e6, 3) AS p50_ms, round(quantile(0.99)(latency_ns) / 1e6, 3) AS p99_ms
      FROM ${db}.http_requests WHERE ${where}
      GROUP BY host, method, endpoint, role ORDER BY requests DESC, host, method, endpoint, role LIMIT 100`,
  },
  'service-map': {
    description: 'who calls whom over HTTP: an edge per client address and server address and port, each exchange counted once (server rows where the server was captured, else client rows), with the processes seen at each end, requests/s, failure rate (5xx, gRPC errors, timeouts), p99, TCP retransmits, resets and drops on the same address pairs, and which ends were captured',
    sql: (db, where, seconds) => `
      WITH edges AS (
        SELECT client_addr, server_addr, server_port,
               countIf(role = 'server') AS server_rows, countIf(role = 'client') AS client_rows,
               countIf(role = 'server' AND ${FAILED}) AS server_failed, countIf(role = 'client' AND ${FAILED}) AS client_failed,
               quantileIf(0.99)(latency_ns, role = 'server') AS server_p99, quantileIf(0.99)(latency_ns, role = 'client') AS client_p99,
               arraySort(groupUniqArrayIf(toString(comm), role = 'client')) AS client_processes,
               arraySort(groupUniqArrayIf(toString(comm), role = 'server')) AS server_processes,
               max(tls) AS tls_plaintext
        FROM ${db}.http_requests WHERE ${where}
        GROUP BY client_addr, server_addr, server_port),
      tcp AS (
        -- An event of either end, as (client, server, server port): the sender's own tuple, or its peer's.
        SELECT c, s, p, countIf(kind IN ('retransmit', 'synack_retransmit')) AS retransmits,
               countIf(kind IN ('reset_sent', 'reset_received')) AS resets, countIf(kind = 'drop') AS drops
        FROM (SELECT saddr AS c, daddr AS s, dport AS p, kind FROM ${db}.tcp_events WHERE ${where}
              UNION ALL SELECT daddr AS c, saddr AS s, sport AS p, kind FROM ${db}.tcp_events WHERE ${where})
        GROUP BY c, s, p)
      SELECT toString(client_addr) AS client, arrayStringConcat(client_processes, ',') AS client_process,
             toString(server_addr) AS server, server_port AS port, arrayStringConcat(server_processes, ',') AS server_process,
             if(server_rows > 0, server_rows, client_rows) AS requests,
             round(requests / ${seconds}, 3) AS requests_per_s,
             if(server_rows > 0, server_failed, client_failed) AS errors,
             round(errors / requests, 4) AS error_rate,
             round(if(server_rows > 0, server_p99, client_p99) / 1e6, 3) AS p99_ms,
             retransmits, resets, drops,
             multiIf(server_rows > 0 AND client_rows > 0, 'both', server_rows > 0, 'server', 'client') AS captured,
             tls_plaintext
      FROM edges LEFT JOIN tcp ON edges.client_addr = tcp.c AND edges.server_addr = tcp.s AND edges.server_port = tcp.p
      ORDER BY requests DESC, client, server, port LIMIT 200`,
  },
  exchanges: {
    description: 'recent HTTP exchanges, newest first, each with both ends\' timings where both were captured (a client row and a server row paired by addresses, ports and the request\'s byte position)',
    filters: HTTP_FILTERS,
    sql: (db, where) => `
      SELECT toString(min(ts)) AS started, any(method) AS method, any(host) AS host, any(path) AS path,
             toString(client_addr) AS client, client_port, toString(server_addr) AS server, server_port AS port,
             anyIf(comm, role = 'client') AS client_process, anyIf(comm, role = 'server') AS server_process,
             if(countIf(role = 'server') > 0, anyIf(status, role = 'server'), anyIf(status, role = 'client')) AS status,
             if(countIf(role = 'client') > 0, round(anyIf(latency_ns, role = 'client') / 1e6, 3), NULL) AS client_ms,
             if(countIf(role = 'server') > 0, round(anyIf(latency_ns, role = 'server') / 1e6, 3), NULL) AS server_ms,
             max(timed_out) AS timed_out
      -- Filtered before grouping: the aggregates' names (method, host) are also columns the filters test.
      FROM (SELECT * FROM ${db}.http_requests WHERE ${where})
      GROUP BY client_addr, client_port, server_addr, server_port, req_pos
      ORDER BY min(ts) DESC, client_port, req_pos LIMIT 100`,
  },
  'network-vs-server': {
    description: 'per endpoint, the exchanges whose two ends were both captured (the exchange_pairs view): client and server latency, and the share of the client\'s time spent outside the server (the network both ways, the kernels\' queues)',
    filters: HTTP_FILTERS,
    // The view takes the window itself; `where` tests the pair's columns (and its start again).
    sql: (db, where) => `
      SELECT host, method, path_template AS endpoint, count() AS exchanges,
             round(quantile(0.5)(client_latency_ns) / 1e6, 3) AS client_p50_ms, round(quantile(0.99)(client_latency_ns) / 1e6, 3) AS client_p99_ms,
             round(quantile(0.5)(server_latency_ns) / 1e6, 3) AS server_p50_ms, round(quantile(0.99)(server_latency_ns) / 1e6, 3) AS server_p99_ms,
             round(quantile(0.99)(network_ns) / 1e6, 3) AS network_p99_ms,
             round(sum(network_ns) / sum(client_latency_ns), 4) AS network_share
      FROM ${db}.exchange_pairs(from_ms = {from_ms:Int64}, to_ms = {to_ms:Int64}) WHERE ${where}
      GROUP BY host, method, endpoint ORDER BY exchanges DESC, host, method, endpoint LIMIT 50`,
  },
  hurt: {
    description: 'HTTP requests slowed by TCP trouble on their own connection while in flight (retransmits, drops), worst first: how long before the exchange\'s end the first of it came',
    filters: HTTP_FILTERS,
    sql: (db, where) => `
      SELECT toString(ts) AS started, role, host, method, path, status, timed_out, round(latency_ns / 1e6, 3) AS latency_ms,
             retransmits, drops, round(harm_ns / 1e6, 3) AS harm_ms,
             toString(client_addr) AS client, client_port, toString(server_addr) AS server, server_port, comm AS process
      FROM ${db}.http_requests WHERE ${where} AND (retransmits > 0 OR drops > 0)
      ORDER BY harm_ns DESC, latency_ns DESC, ts LIMIT 50`,
  },
  errors: {
    description: 'HTTP errors (status 4xx/5xx, gRPC errors) and timed-out requests by endpoint, per role (a timeout may be seen by one end only)',
    filters: HTTP_FILTERS,
    sql: (db, where) => `
      SELECT host, method, path_template AS endpoint, role, status, grpc_status, timed_out, count() AS requests, any(comm) AS example_process
      FROM ${db}.http_requests
      WHERE ${where} AND (status >= 400 OR timed_out = 1 OR grpc_status > 0)
      GROUP BY host, method, endpoint, role, status, grpc_status, timed_out ORDER BY requests DESC, host, endpoint, role LIMIT 50`,
  },
  'tcp-health': {
    description: 'TCP retransmits, resets and drops by kind, reason (drop or reset reason) and the kernel location that dropped them',
    sql: (db, where) => `
      SELECT kind, if(kind = 'drop', drop_reason, reset_reason) AS reason, drop_location AS location, count() AS events,
             uniqExact(conn_id) AS connections, arrayStringConcat(arraySort(groupUniqArray(3)(toString(comm))), ',') AS processes
      FROM ${db}.tcp_events WHERE ${where}
      GROUP BY kind, reason, location ORDER BY events DESC, kind, reason, location LIMIT 50`,
  },
  retransmits: {
    description: 'TCP retransmits by connection endpoints',
    sql: (db, where) => `
      SELECT node, saddr, daddr, dport, kind, count() AS retransmits, any(comm) AS process
      FROM ${db}.tcp_events WHERE ${where} AND kind IN ('retransmit', 'synack_retransmit')
      GROUP BY node, saddr, daddr, dport, kind ORDER BY retransmits DESC LIMIT 50`,
  },
  drops: {
    description: 'packet drops by reason and the kernel location that dropped them',
    sql: (db, where) => `
      SELECT node, drop_reason, drop_location, protocol, count() AS drops, sum(pkt_len) AS bytes
      FROM ${db}.tcp_events WHERE ${where} AND kind = 'drop'
      GROUP BY node, drop_reason, drop_location, protocol ORDER BY drops DESC LIMIT 50`,
  },
  'slow-dns': {
    description: 'DNS names by p99 latency, with timeouts and NXDOMAIN counts (client side)',
    sql: (db, where) => `
      SELECT qname, qtype, count() AS queries, countIf(timed_out = 1) AS timeouts, countIf(rcode = 3) AS nxdomain,
             round(quantile(0.5)(latency_ns) / 1e6, 3) AS p50_ms, round(quantile(0.99)(latency_ns) / 1e6, 3) AS p99_ms,
             groupUniqArray(3)(toString(server_addr)) AS servers
      FROM ${db}.dns_queries WHERE ${where} AND role = 'client'
      GROUP BY qname, qtype ORDER BY timeouts DESC, p99_ms DESC LIMIT 25`,
  },
  tls: {
    description: 'TLS inventory: server names by protocol version, cipher and ALPN, with handshake times',
    sql: (db, where) => `
      SELECT sni, version, cipher, alpn, arrayStringConcat(any(alpn_offered), ',') AS offered, count() AS handshakes,
             countIf(completed = 0) AS incomplete, round(quantile(0.5)(handshake_ns) / 1e6, 3) AS p50_ms
      FROM ${db}.tls_handshakes WHERE ${where}
      GROUP BY sni, version, cipher, alpn ORDER BY handshakes DESC LIMIT 50`,
  },
  losses: {
    description: 'records netrig lost (ring buffer full, NATS away) by node, kind and cause',
    sql: (db, where) => `
      SELECT node, kind, cause, sum(records) AS records, min(ts) AS first, max(ts) AS last
      FROM ${db}.capture_losses WHERE ${where}
      GROUP BY node, kind, cause ORDER BY records DESC LIMIT 50`,
  },
};
