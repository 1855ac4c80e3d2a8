/**
 * The OTLP exporter through a real nats-server, beside a processor writing the embedded
 * ClickHouse engine, to an OTLP/HTTP receiver that decodes with the OpenTelemetry project's
 * own protobuf definitions (helpers/otlp-receiver.ts):
 * - a generated HTTP/1 stream (thousands of exchanges, both roles): while the collector
 *   answers 503, every row reaches ClickHouse and no span is taken; once it answers, every
 *   row is one span (same connection, role, start, method, status), none twice, and the
 *   OTLP metrics count the rows per role;
 * - both ends of one exchange: a client span and a server span in one trace, the server's
 *   retransmit during the exchange an event of the server span only;
 * - a collector that refuses (400): the spans are counted as rejected, not retried, and the
 *   exporter's lanes acknowledge and go on.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { logger } from '../../lib/logger.js';
import { http1Function } from '../../processors/http1/index.js';
import { OTLP_EXPORTER, startOtlpExporter } from '../../processors/otlp/index.js';
import { Processor } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { RecordKind, Role } from '../../schemas/records.js';
import { generate, publish, SHARDS } from '../helpers/http1-stream.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { freshClickHouse, publishEnvelopes, removeClickHouseData, rows, STREAM, waitFor } from '../helpers/processor-run.js';
import { connInfo, envelope, sockData, tcpEvent, type TupleSpec } from '../helpers/records.js';

let nc: NatsConnection;
let receiver: OtlpReceiver;

natsServerForFile((_server, conn) => {
  nc = conn;
});
before(async () => {
  receiver = await startOtlpReceiver();
});
after(async () => {
  await receiver?.close();
  removeClickHouseData();
});

const ALL_SHARDS = Array.from({ length: SHARDS }, (_, i) => i);
const log = logger('test');

async function exporter(ch: Awaited<ReturnType<typeof freshClickHouse>>, registry: Registry, stream = STREAM): Promise<Processor> {
  return startOtlpExporter({
    input: { otlpEndpoint: receiver.url, otlpHeader: ['authorization=Bearer test-token'], otlpMetricsInterval: 1 },
    nc, ch, log, registry, maxSeries: 5000,
    stream: stream.name, subjectPrefix: stream.subjectPrefix, flushIntervalMs: 100, ttlDays: 3650,
    leases: { ttlMs: 10_000, shardCount: SHARDS, member: { id: `otlp-test-${process.pid}-${ch.database}`, host: 'test', pid: process.pid, functions: [] } },
  });
}

async function counter(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const v = (await m.get()).values.find((x) => Object.entries(labels).every(([k, want]) => String(x.labels[k]) === want));
  return v?.value ?? 0;
}

test('every row is one span once the collector answers, and the collector being down delays only the export', async () => {
  const ch = await freshClickHouse('otlp');
  const registry = new Registry();
  receiver.spans.length = 0;
  receiver.setMode('unavailable');
  const { envelopes, expected } = generate(11);
  await publish(nc, envelopes);
  const writer = await Processor.start({
    nc, ch, functions: [http1Function, tcpFunction], shards: ALL_SHARDS, stream: STREAM.name, subjectPrefix: STREAM.subjectPrefix,
    flushIntervalMs: 100, ttlDays: 3650, maxPendingRows: 100_000, log,
  });
  const otlp = await exporter(ch, registry);
  try {
    const committed = async () => Number((await rows<{ n: string }>(ch, `SELECT count() AS n FROM ${ch.database}.http_requests`))[0].n);
    await waitFor('every exchange in ClickHouse while the collector is down', async () => (await committed()) === expected.http.size, 60_000);
    assert.equal(receiver.spans.length, 0, 'no span is taken while the collector answers 503');
    assert.ok((await counter(registry, 'netrig_otlp_exports_total', { signal: 'traces', outcome: 'retried' })) > 0, 'exports were retried');
    assert.ok((await counter(registry, 'netrig_otlp_consumer_lag_messages', {})) >= 0);

    receiver.setMode('ok');
    await waitFor('a span per exchange', () => receiver.spans.length >= expected.http.size, 60_000, () => `${receiver.spans.length} of ${expected.http.size}`);
    await waitFor('the exporter to acknowledge everything', async () => (await otlp.lag()) === 0 && otlp.lanes.every((l) => l.pendingRows === 0), 30_000);
    await otlp.flush();
    assert.equal(receiver.spans.length, expected.http.size, 'no span twice');
    assert.equal(receiver.lastHeaders.authorization, 'Bearer test-token', 'the configured header goes with every export');

    const key = (conn: unknown, role: unknown, start: unknown, method: unknown, status: unknown) => `${conn}|${role}|${start}|${method}|${status}`;
    const fromRows = (await rows<Record<string, string>>(ch, `SELECT toString(conn_id) AS c, toString(role) AS r, toString(toUnixTimestamp64Nano(ts)) AS t, method, status, toString(latency_ns) AS l FROM ${ch.database}.http_requests`))
      .map((r) => key(r.c, r.r, r.t, r.method, Number(r.status) || '')).sort();
    const fromSpans = receiver.spans.map((s) => key(s.attributes['netrig.conn_id'], s.kind === 'SPAN_KIND_SERVER' ? 'server' : 'client', s.startTimeUnixNano,
      s.attributes['http.request.method'], s.attributes['http.response.status_code'] ?? '')).sort();
    assert.deepEqual(fromSpans, fromRows, 'the spans are the rows');
    const span = receiver.spans.find((s) => s.kind === 'SPAN_KIND_SERVER')!;
    assert.equal(span.resource['service.name'], 'nginx');
    assert.equal(span.attributes['network.protocol.name'], 'http');
    assert.match(span.name, /^(GET|POST|HEAD) \//);
    assert.ok(!String(span.attributes['url.query'] ?? '').match(/q=\d/), 'query values stay masked in spans');

    const perRole = await rows<{ role: string; n: string }>(ch, `SELECT toString(role) AS role, count() AS n FROM ${ch.database}.http_requests GROUP BY role`);
    await waitFor('the metrics to count every row', () => {
      const sum = (role: string) => receiver.lastMetrics().filter((p) => p.metric === 'netrig.http.requests' && p.attributes['netrig.role'] === role).reduce((n, p) => n + p.value, 0);
      return perRole.every((r) => sum(r.role) === Number(r.n));
    }, 15_000, () => JSON.stringify(receiver.lastMetrics().slice(0, 5)));
    const answered = receiver.lastMetrics().filter((p) => p.metric === 'http.server.request.duration').reduce((n, p) => n + p.value, 0);
    const answeredRows = (await rows<{ n: string }>(ch, `SELECT count() AS n FROM ${ch.database}.http_requests WHERE role = 'server' AND latency_ns > 0`))[0].n;
    assert.equal(answered, Number(answeredRows), 'the server duration histogram holds every answered server exchange');
  } finally {
    await otlp.stop();
    await writer.stop();
    await ch.close();
  }
});

/** One GET with both ends captured on one node; the server retransmits during it. Envelope seqs are the node's, across shards. */
function bothEnds(): ReturnType<typeof envelope>[] {
  const client: TupleSpec = { saddr: '10.1.0.2', sport: 43000, daddr: '10.1.0.1', dport: 80 };
  const server: TupleSpec = { saddr: '10.1.0.1', sport: 80, daddr: '10.1.0.2', dport: 43000 };
  const req = Buffer.from('GET /users/12345 HTTP/1.1\r\nHost: shop\r\nUser-Agent: curl/8\r\n\r\n', 'latin1');
  const resp = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', 'latin1');
  const t0 = 5_000_000_000;
  const c = (ts: number) => ({ tsNs: ts, connId: 0x101, tgid: 300 });
  const s = (ts: number) => ({ tsNs: ts, connId: 0x202, tgid: 400 });
  return [
    envelope({
      seq: 1, shard: 0, mono: t0 + 5_000_000, records: [
        connInfo(c(t0), client, Role.Client, 'curl'),
        sockData(c(t0), { direction: 0, posBytes: 0, payload: req }),
        sockData(c(t0 + 3_000_000), { direction: 1, posBytes: 0, payload: resp }),
      ],
    }),
    envelope({
      seq: 2, shard: 1, mono: t0 + 5_000_000, records: [
        connInfo(s(t0 + 100_000), server, Role.Server, 'nginx'),
        sockData(s(t0 + 100_000), { direction: 1, posBytes: 0, payload: req }),
        tcpEvent(RecordKind.TcpRetransmit, s(t0 + 1_000_000), server, { comm: 'nginx' }),
        sockData(s(t0 + 2_000_000), { direction: 0, posBytes: 0, payload: resp }),
      ],
    }),
    // Node time moves on past the request timeout: nothing is left open.
    envelope({ seq: 3, shard: 0, mono: t0 + 60_000_000_000, records: [] }),
    envelope({ seq: 4, shard: 1, mono: t0 + 60_000_000_000, records: [] }),
  ];
}

test('both ends of an exchange are one trace, and a retransmit during it is an event of its span', async () => {
  const stream = { ...STREAM, name: 'OTLP_BOTH', subjectPrefix: 'otlp.both' };
  const ch = await freshClickHouse('otlp');
  const registry = new Registry();
  receiver.spans.length = 0;
  receiver.setMode('ok');
  await publishEnvelopes(nc, bothEnds(), stream);
  const otlp = await exporter(ch, registry, stream);
  try {
    await waitFor('two spans', () => receiver.spans.length >= 2, 30_000, () => JSON.stringify(receiver.spans.map((s) => [s.name, s.kind, s.attributes['url.path']])));
    const client = receiver.spans.find((s) => s.kind === 'SPAN_KIND_CLIENT')!;
    const server = receiver.spans.find((s) => s.kind === 'SPAN_KIND_SERVER')!;
    assert.ok(client && server, JSON.stringify(receiver.spans));
    assert.equal(client.traceId, server.traceId, 'one trace');
    assert.notEqual(client.spanId, server.spanId);
    assert.equal(server.name, 'GET /users/{id}');
    assert.equal(server.attributes['http.route'], '/users/{id}');
    assert.equal(client.attributes['url.template'], '/users/{id}');
    assert.equal(server.attributes['url.path'], '/users/12345');
    assert.equal(server.attributes['http.response.status_code'], 200);
    assert.equal(server.attributes['client.address'], '10.1.0.2');
    assert.equal(client.attributes['network.peer.address'], '10.1.0.1');
    assert.equal(client.attributes['user_agent.original'], 'curl/8');
    assert.equal(client.resource['service.name'], 'curl');
    assert.equal(client.resource['process.pid'], 300);
    assert.deepEqual(server.events.map((e) => e.name), ['tcp.retransmit']);
    assert.equal(server.events[0].timeUnixNano, String(BigInt(1_700_000_000) * 1_000_000_000n + 5_001_000_000n));
    assert.deepEqual(client.events, []);
    assert.equal(BigInt(client.endTimeUnixNano) - BigInt(client.startTimeUnixNano), 3_000_000n);
    await waitFor('the tcp counter', () => receiver.lastMetrics().some((p) => p.metric === 'netrig.tcp.events' && p.attributes['netrig.tcp.event'] === 'retransmit' && p.value === 1), 15_000);
    assert.equal(await counter(registry, 'netrig_otlp_spans_total', { outcome: 'exported' }), 2);
  } finally {
    await otlp.stop();
    await ch.close();
  }
});

test('a collector that refuses is counted, not retried, and the exporter goes on', async () => {
  const stream = { ...STREAM, name: 'OTLP_REFUSED', subjectPrefix: 'otlp.refused' };
  const ch = await freshClickHouse('otlp');
  const registry = new Registry();
  receiver.spans.length = 0;
  receiver.setMode('reject');
  await publishEnvelopes(nc, bothEnds(), stream);
  const otlp = await exporter(ch, registry, stream);
  try {
    await waitFor('the spans counted as rejected', async () => (await counter(registry, 'netrig_otlp_spans_total', { outcome: 'rejected' })) === 2, 30_000);
    await waitFor('the exporter to acknowledge', async () => (await otlp.lag()) === 0, 30_000);
    assert.equal(await counter(registry, 'netrig_otlp_exports_total', { signal: 'traces', outcome: 'retried' }), 0);
    assert.equal(receiver.spans.length, 0);
    assert.deepEqual(otlp.lanes.map((l) => l.name), otlp.lanes.map(() => OTLP_EXPORTER));
  } finally {
    receiver.setMode('ok');
    await otlp.stop();
    await ch.close();
  }
});
