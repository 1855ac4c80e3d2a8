/**
 * The exchange_pairs view (schemas/migrations/007) and `netrig report network-vs-server` over
 * known rows in the embedded engine: a client row and a server row of one request are paired
 * by 4-tuple and request position, their latencies side by side and the network's share;
 * an exchange seen by one end only, a timed-out one, and a key that occurs twice per role in
 * the window (a reused 4-tuple) are left out, never paired wrongly; the window is the view's.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { reportNamed, reportQuery } from '../../cli/report-query.js';
import { migrate } from '../../schemas/migrate.js';
import { freshClickHouse, removeClickHouseData, rows } from '../helpers/processor-run.js';

after(() => removeClickHouseData());

const MIN = 60_000;
const TO = Math.floor(Date.now() / MIN) * MIN;
const FROM = TO - 30 * MIN;
const at = (ms: number) => `${new Date(FROM + ms).toISOString().replace('T', ' ').replace('Z', '')}000000`;

interface Exchange { port: number; pos: number; clientNs: number | null; serverNs: number | null; ms: number; timedOut?: number; path?: string; clientRetransmits?: number }

function rowsOf(e: Exchange): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const [role, ns] of [['client', e.clientNs], ['server', e.serverNs]] as const) {
    if (ns === null) continue;
    out.push({
      ts: at(e.ms + (role === 'server' ? 1 : 0)), region: 'r', node: role === 'client' ? 'n1' : 'n2', role, comm: role === 'client' ? 'curl' : 'nginx',
      client_addr: '::ffff:10.0.0.1', client_port: e.port, server_addr: '::ffff:10.0.0.2', server_port: 80, protocol: '1.1',
      method: 'GET', host: 'api', path: e.path ?? '/users/1', path_template: e.path === '/health' ? '/health' : '/users/{id}', status: 200,
      latency_ns: ns, timed_out: e.timedOut ?? 0, req_pos: e.pos, retransmits: role === 'client' ? e.clientRetransmits ?? 0 : 0,
    });
  }
  return out;
}

test('both ends of an exchange are one pair with the network\'s share; singles, timeouts and reused keys are left out', async () => {
  const ch = await freshClickHouse('pairs');
  try {
    await migrate(ch.client, { database: ch.database, ttlDays: 30 });
    const exchanges: Exchange[] = [
      { port: 40000, pos: 0, clientNs: 10_000_000, serverNs: 4_000_000, ms: MIN },
      { port: 40000, pos: 120, clientNs: 20_000_000, serverNs: 4_000_000, ms: MIN + 10, clientRetransmits: 1 },
      { port: 40001, pos: 0, clientNs: 5_000_000, serverNs: null, ms: MIN + 20 }, // the server was not captured
      { port: 40002, pos: 0, clientNs: 0, serverNs: 3_000_000, ms: MIN + 30, timedOut: 1 }, // the client gave up
      { port: 40003, pos: 0, clientNs: 7_000_000, serverNs: 1_000_000, ms: MIN + 40 }, // this 4-tuple is reused below:
      { port: 40003, pos: 0, clientNs: 9_000_000, serverNs: 2_000_000, ms: 20 * MIN }, // neither is paired with the other's end
      { port: 40004, pos: 0, clientNs: 3_000_000, serverNs: 1_000_000, ms: 2 * MIN, path: '/health' },
      { port: 40005, pos: 0, clientNs: 8_000_000, serverNs: 1_000_000, ms: -MIN }, // before the window
    ];
    await ch.client.insert({ table: `${ch.database}.http_requests`, values: exchanges.flatMap(rowsOf), format: 'JSONEachRow' });

    const pairs = await rows<Record<string, string | number>>(ch, `
      SELECT client_port, req_pos, client_node, server_node, client_process, server_process, client_latency_ns, server_latency_ns, network_ns, client_retransmits
      FROM ${ch.database}.exchange_pairs(from_ms = ${FROM}, to_ms = ${TO}) ORDER BY client_port, req_pos`);
    assert.deepEqual(pairs.map((p) => [p.client_port, p.req_pos, p.client_node, p.server_node, p.client_process, p.server_process, Number(p.client_latency_ns), Number(p.server_latency_ns), Number(p.network_ns), p.client_retransmits]), [
      [40000, '0', 'n1', 'n2', 'curl', 'nginx', 10_000_000, 4_000_000, 6_000_000, 0],
      [40000, '120', 'n1', 'n2', 'curl', 'nginx', 20_000_000, 4_000_000, 16_000_000, 1],
      [40004, '0', 'n1', 'n2', 'curl', 'nginx', 3_000_000, 1_000_000, 2_000_000, 0],
    ]);

    const q = reportQuery(reportNamed('network-vs-server'), ch.database, { fromMs: FROM, toMs: TO });
    const report = await (await ch.client.query({ query: q.query, query_params: q.params, format: 'JSONEachRow' })).json<Record<string, string | number>>();
    assert.deepEqual(report.map((r) => [r.endpoint, Number(r.exchanges), r.server_p50_ms, r.network_share]), [
      ['/users/{id}', 2, 4, 0.7333],
      ['/health', 1, 1, 0.6667],
    ]);
    const filtered = reportQuery(reportNamed('network-vs-server'), ch.database, { fromMs: FROM, toMs: TO }, { endpoint: '/health' });
    const one = await (await ch.client.query({ query: filtered.query, query_params: filtered.params, format: 'JSONEachRow' })).json<Record<string, string | number>>();
    assert.deepEqual(one.map((r) => r.endpoint), ['/health'], 'the filters test the pair\'s columns');
  } finally {
    await ch.close();
  }
});
