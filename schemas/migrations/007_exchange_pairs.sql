-- Both ends of one exchange side by side: where the client's row and the server's row of one
-- request were captured (one node, or two nodes whose streams meet in one fan-in), paired by
-- the 4-tuple and the request's byte position in the client-to-server stream (the same at
-- both ends). client_latency_ns − server_latency_ns is the time the exchange spent outside
-- the server: the network both ways and the kernels' queues (network_ns). Exchanges whose key
-- occurs more than once per role in the window (a 4-tuple reused, or a timeout) are left
-- out, never paired wrongly. Each end's retransmits while the exchange was in flight beside
-- (006). A view over a window of epoch milliseconds:
--   SELECT * FROM netrig.exchange_pairs(from_ms = 1765000000000, to_ms = 1765003600000)
CREATE VIEW IF NOT EXISTS {db}.exchange_pairs AS
SELECT min(r.ts) AS ts,
       any(r.host) AS host, any(r.method) AS method, any(r.path_template) AS path_template, any(r.path) AS path,
       r.client_addr AS client_addr, r.client_port AS client_port, r.server_addr AS server_addr, r.server_port AS server_port, r.req_pos AS req_pos,
       anyIf(r.node, r.role = 'client') AS client_node, anyIf(r.node, r.role = 'server') AS server_node,
       anyIf(r.comm, r.role = 'client') AS client_process, anyIf(r.comm, r.role = 'server') AS server_process,
       anyIf(r.status, r.role = 'server') AS status,
       anyIf(r.latency_ns, r.role = 'client') AS client_latency_ns, anyIf(r.latency_ns, r.role = 'server') AS server_latency_ns,
       toUInt64(greatest(toInt64(client_latency_ns) - toInt64(server_latency_ns), 0)) AS network_ns,
       anyIf(r.retransmits, r.role = 'client') AS client_retransmits, anyIf(r.retransmits, r.role = 'server') AS server_retransmits
FROM {db}.http_requests AS r
WHERE r.ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') AND r.ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND r.timed_out = 0 AND r.latency_ns > 0
GROUP BY r.client_addr, r.client_port, r.server_addr, r.server_port, r.req_pos
HAVING countIf(r.role = 'client') = 1 AND countIf(r.role = 'server') = 1;
