/**
 * Ready SQL reports (`netrig report NAME`). Each takes the database and a look-back window.
 */

export interface Report {
  description: string;
  sql: (db: string, since: string) => string;
}

export const REPORTS: Readonly<Record<string, Report>> = {
  'top-endpoints': {
    description: 'busiest HTTP endpoints (method and path template), each request counted once: from the server\'s rows where the server was captured, else the client\'s',
    // Both ends of one exchange are two rows; an endpoint with server rows is told from them alone.
    sql: (db, since) => `
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
        FROM ${db}.http_requests WHERE ts > now64(9) - INTERVAL ${since}
        GROUP BY host, method, endpoint)
      ORDER BY requests DESC, host, method, endpoint LIMIT 25`,
  },
  errors: {
    description: 'HTTP errors (status 4xx/5xx, gRPC errors) and timed-out requests by endpoint, per role (a timeout may be seen by one end only)',
    sql: (db, since) => `
      SELECT host, method, path_template AS endpoint, role, status, grpc_status, timed_out, count() AS requests, any(comm) AS example_process
      FROM ${db}.http_requests
      WHERE ts > now64(9) - INTERVAL ${since} AND (status >= 400 OR timed_out = 1 OR grpc_status > 0)
      GROUP BY host, method, endpoint, role, status, grpc_status, timed_out ORDER BY requests DESC, host, endpoint, role LIMIT 50`,
  },
  retransmits: {
    description: 'TCP retransmits by connection endpoints',
    sql: (db, since) => `
      SELECT node, saddr, daddr, dport, kind, count() AS retransmits, any(comm) AS process
      FROM ${db}.tcp_events WHERE ts > now64(9) - INTERVAL ${since} AND kind IN ('retransmit', 'synack_retransmit')
      GROUP BY node, saddr, daddr, dport, kind ORDER BY retransmits DESC LIMIT 50`,
  },
  drops: {
    description: 'packet drops by reason and the kernel location that dropped them',
    sql: (db, since) => `
      SELECT node, drop_reason, drop_location, protocol, count() AS drops, sum(pkt_len) AS bytes
      FROM ${db}.tcp_events WHERE ts > now64(9) - INTERVAL ${since} AND kind = 'drop'
      GROUP BY node, drop_reason, drop_location, protocol ORDER BY drops DESC LIMIT 50`,
  },
  'slow-dns': {
    description: 'DNS names by p99 latency, with timeouts and NXDOMAIN counts (client side)',
    sql: (db, since) => `
      SELECT qname, qtype, count() AS queries, countIf(timed_out = 1) AS timeouts, countIf(rcode = 3) AS nxdomain,
             round(quantile(0.5)(latency_ns) / 1e6, 3) AS p50_ms, round(quantile(0.99)(latency_ns) / 1e6, 3) AS p99_ms,
             groupUniqArray(3)(toString(server_addr)) AS servers
      FROM ${db}.dns_queries WHERE ts > now64(9) - INTERVAL ${since} AND role = 'client'
      GROUP BY qname, qtype ORDER BY timeouts DESC, p99_ms DESC LIMIT 25`,
  },
  tls: {
    description: 'TLS inventory: server names by protocol version, cipher and ALPN, with handshake times',
    sql: (db, since) => `
      SELECT sni, version, cipher, alpn, arrayStringConcat(any(alpn_offered), ',') AS offered, count() AS handshakes,
             countIf(completed = 0) AS incomplete, round(quantile(0.5)(handshake_ns) / 1e6, 3) AS p50_ms
      FROM ${db}.tls_handshakes WHERE ts > now64(9) - INTERVAL ${since}
      GROUP BY sni, version, cipher, alpn ORDER BY handshakes DESC LIMIT 50`,
  },
  losses: {
    description: 'records netrig lost (ring buffer full, NATS away) by node, kind and cause',
    sql: (db, since) => `
      SELECT node, kind, cause, sum(records) AS records, min(ts) AS first, max(ts) AS last
      FROM ${db}.capture_losses WHERE ts > now64(9) - INTERVAL ${since}
      GROUP BY node, kind, cause ORDER BY records DESC`,
  },
};
