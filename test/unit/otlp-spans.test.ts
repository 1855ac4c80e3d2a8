/**
 * Rows as OTLP spans (processors/otlp/spans.ts) and the exporter's flags: gRPC calls and
 * DNS queries by the semantic conventions, error status by role, trace ids shared by the two
 * ends and apart for a 4-tuple reused later; bad endpoints and headers refused in one line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { ConfigError } from '../../lib/errors.js';
import { otlpTarget } from '../../processors/otlp/client.js';
import { otlpHeaders } from '../../processors/otlp/index.js';
import { exchangeIds, exchangeSpan, querySpan, Resources } from '../../processors/otlp/spans.js';
import type { Row } from '../../processors/runtime/function.js';

const T0 = '1700000000123456789';

function exchange(o: Row = {}): Row {
  return {
    ts: T0, region: 'r1', node: 'n1', conn_id: '3e43dd63-6003-4ed5-0000-000000000101', pid: 7, comm: 'api', role: 'client',
    client_addr: '::ffff:10.0.0.2', client_port: 40000, server_addr: '::ffff:10.0.0.1', server_port: 50051, protocol: 'grpc',
    method: 'POST', host: 'echo:50051', path: '/echo.Echo/Say', path_template: '/echo.Echo/Say', status: 200,
    grpc_service: 'echo.Echo', grpc_method: 'Say', grpc_status: 0, ttfb_ns: 100, latency_ns: 2_000_000, tls: 0, timed_out: 0,
    req_pos: 0, user_agent: '', partial: 0, ...o,
  };
}

const resources = new Resources();

test('a gRPC call is an RPC span; its status decides the error by role', () => {
  const ok = exchangeSpan(exchange(), [], resources.of(exchange()));
  assert.equal(ok.name, 'echo.Echo/Say');
  assert.equal(ok.kind, SpanKind.CLIENT);
  assert.equal(ok.attributes['rpc.system.name'], 'grpc');
  assert.equal(ok.attributes['rpc.method'], 'echo.Echo/Say');
  assert.equal(ok.attributes['rpc.status_code'], 'OK');
  assert.equal(ok.attributes['network.protocol.version'], '2');
  assert.equal(ok.attributes['server.address'], 'echo');
  assert.equal(ok.attributes['network.peer.address'], '10.0.0.1');
  assert.equal(ok.status.code, SpanStatusCode.UNSET);
  assert.deepEqual(ok.startTime, [1_700_000_000, 123_456_789]);
  assert.deepEqual(ok.endTime, [1_700_000_000, 125_456_789]);
  assert.deepEqual(ok.duration, [0, 2_000_000]);
  // NOT_FOUND: the client's error, not the server's.
  const notFound = { grpc_status: 5 };
  assert.equal(exchangeSpan(exchange(notFound), [], resources.of(exchange())).status.code, SpanStatusCode.ERROR);
  assert.equal(exchangeSpan(exchange({ ...notFound, role: 'server' }), [], resources.of(exchange())).status.code, SpanStatusCode.UNSET);
  const unavailable = exchangeSpan(exchange({ grpc_status: 14, role: 'server' }), [], resources.of(exchange()));
  assert.deepEqual([unavailable.status.code, unavailable.attributes['error.type']], [SpanStatusCode.ERROR, 'UNAVAILABLE']);
});

test('an HTTP 404 is an error for the client only; a timeout for both', () => {
  const http = { protocol: '1.1', grpc_service: '', grpc_method: '', grpc_status: -1, path: '/a/1?x=***', path_template: '/a/{id}', status: 404, method: 'GET' };
  const client = exchangeSpan(exchange(http), [], resources.of(exchange()));
  const server = exchangeSpan(exchange({ ...http, role: 'server' }), [], resources.of(exchange()));
  assert.equal(client.name, 'GET /a/{id}');
  assert.equal(client.attributes['url.path'], '/a/1');
  assert.equal(client.attributes['url.query'], 'x=***');
  assert.deepEqual([client.status.code, client.attributes['error.type']], [SpanStatusCode.ERROR, '404']);
  assert.equal(server.status.code, SpanStatusCode.UNSET);
  assert.equal(server.attributes['client.address'], '10.0.0.2');
  const timedOut = exchangeSpan(exchange({ ...http, role: 'server', status: 0, timed_out: 1 }), [], resources.of(exchange()));
  assert.deepEqual([timedOut.status.code, timedOut.attributes['error.type']], [SpanStatusCode.ERROR, 'timeout']);
  assert.equal(timedOut.attributes['http.response.status_code'], undefined);
});

test('both ends share a trace id; the same 4-tuple and position later is another trace', () => {
  const c = exchangeIds(exchange());
  const s = exchangeIds(exchange({ role: 'server', ts: String(BigInt(T0) + 150_000n) }));
  assert.equal(c.traceId, s.traceId);
  assert.notEqual(c.spanId, s.spanId);
  assert.match(c.traceId, /^[0-9a-f]{32}$/);
  assert.match(c.spanId, /^[0-9a-f]{16}$/);
  assert.notEqual(exchangeIds(exchange({ ts: String(BigInt(T0) + 600_000_000_000n) })).traceId, c.traceId);
  assert.notEqual(exchangeIds(exchange({ req_pos: 120 })).traceId, c.traceId);
});

test('a DNS query is a span with the question, its answers and its rcode', () => {
  const q: Row = {
    ts: T0, region: 'r1', node: 'n1', conn_id: '3e43dd63-6003-4ed5-0000-000000000102', pid: 9, comm: 'dig', role: 'client',
    client_addr: '::ffff:10.0.0.2', client_port: 53000, server_addr: '::ffff:10.0.0.53', server_port: 53, transport: 'udp', query_id: 4242,
    qname: 'db.internal', qtype: 'A', rcode: 3, answers: [], answer_count: 0, latency_ns: 500_000, timed_out: 0, truncated: 0, retries: 1,
  };
  const nx = querySpan(q, resources.of(q));
  assert.equal(nx.name, 'DNS A');
  assert.equal(nx.attributes['dns.question.name'], 'db.internal');
  assert.equal(nx.attributes['netrig.dns.rcode'], 'NXDOMAIN');
  assert.equal(nx.attributes['network.transport'], 'udp');
  assert.equal(nx.attributes['netrig.dns.retries'], 1);
  assert.deepEqual([nx.status.code, nx.attributes['error.type']], [SpanStatusCode.ERROR, 'NXDOMAIN']);
  const ok = querySpan({ ...q, rcode: 0, answers: ['10.0.0.9'], answer_count: 1 }, resources.of(q));
  assert.deepEqual(ok.attributes['dns.answers'], ['10.0.0.9']);
  assert.equal(ok.status.code, SpanStatusCode.UNSET);
  assert.equal(querySpan({ ...q, rcode: -1, timed_out: 1 }, resources.of(q)).attributes['error.type'], 'timeout');
});

test('the endpoint and headers are checked', () => {
  assert.equal(otlpTarget('http://127.0.0.1:4318').endpoint.port, '4318');
  for (const bad of ['127.0.0.1:4318', 'grpc://c:4317', 'http://user:pw@c:4318', 'not a url']) {
    assert.throws(() => otlpTarget(bad), (e: Error) => e instanceof ConfigError && e.message.startsWith('otlp-endpoint:') && !e.message.includes('\n'), bad);
  }
  assert.throws(() => otlpTarget('http://c:4318', { 'bad name': 'x' }), ConfigError);
  assert.throws(() => otlpTarget('http://c:4318', { auth: 'a\r\nInjected: 1' }), ConfigError);
  assert.deepEqual(otlpHeaders({ otlpHeader: ['x-scope=a=b'] }), { 'x-scope': 'a=b' });
  assert.throws(() => otlpHeaders({ otlpHeader: ['novalue'] }), ConfigError);
  assert.throws(() => otlpHeaders({ otlpHeaderFile: ['authorization=/nonexistent/token'] }), (e: Error) => e instanceof ConfigError && e.message.startsWith('otlp-header-file:'));
});
