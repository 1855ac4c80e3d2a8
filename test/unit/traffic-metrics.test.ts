/**
 * Traffic metrics (processors/runtime/traffic-metrics.ts): committed rows counted per
 * endpoint and role with their durations and TCP events, in Prometheus' text format; series
 * capped, what passes the cap counted under _overflow_ so the sums stay right.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { OVERFLOW, TrafficMetrics } from '../../processors/runtime/traffic-metrics.js';

const request = (endpoint: string, status: number, latencyMs: number, role = 'server') => ({
  role, host: 'shop.example', method: 'GET', path: `${endpoint.replace('{id}', '42')}?q=***`, path_template: endpoint, status, grpc_status: -1, latency_ns: latencyMs * 1e6,
});

/** The value of the sample `name{labels}` in the exposition text (labels in any order). */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.keys(labels).length === Object.keys(got).length && Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

test('requests by endpoint, role and status; durations of the answered; TCP events by kind and reason', async () => {
  const registry = new Registry();
  const t = new TrafficMetrics(registry);
  t.observe('http_requests', [request('/users/{id}', 200, 3), request('/users/{id}', 200, 30), request('/users/{id}', 503, 1), request('/users/{id}', 0, 0), request('/users/{id}', 200, 4, 'client')]);
  t.observe('tcp_events', [
    { kind: 'retransmit', drop_reason: '', reset_reason: '' },
    { kind: 'drop', drop_reason: 'NETFILTER_DROP', reset_reason: '' },
    { kind: 'drop', drop_reason: 'NETFILTER_DROP', reset_reason: '' },
  ]);
  t.observe('dns_queries', [{ role: 'client', qname: 'x' }]);
  const text = await registry.metrics();
  const base = { role: 'server', host: 'shop.example', method: 'GET', endpoint: '/users/{id}', grpc_status: '-1' };
  assert.equal(sample(text, 'netrig_http_requests_total', { ...base, status: '200' }), 2);
  assert.equal(sample(text, 'netrig_http_requests_total', { ...base, status: '503' }), 1);
  assert.equal(sample(text, 'netrig_http_requests_total', { ...base, status: '0' }), 1, 'no response: status 0');
  assert.equal(sample(text, 'netrig_http_requests_total', { ...base, role: 'client', status: '200' }), 1);
  const d = { role: 'server', host: 'shop.example', method: 'GET', endpoint: '/users/{id}' };
  assert.equal(sample(text, 'netrig_http_request_duration_seconds_count', d), 3, 'the unanswered request has no duration');
  assert.equal(sample(text, 'netrig_http_request_duration_seconds_bucket', { ...d, le: '0.005' }), 2);
  assert.equal(sample(text, 'netrig_http_request_duration_seconds_bucket', { ...d, le: '0.025' }), 2);
  assert.equal(sample(text, 'netrig_http_request_duration_seconds_bucket', { ...d, le: '0.05' }), 3);
  assert.equal(sample(text, 'netrig_tcp_events_total', { kind: 'retransmit', reason: '' }), 1);
  assert.equal(sample(text, 'netrig_tcp_events_total', { kind: 'drop', reason: 'NETFILTER_DROP' }), 2);
  assert.ok(!text.includes('?q='), 'no raw path in any label');
});

test('past the cap: new label sets count under _overflow_, the overflow is counted, the sums stay right', async () => {
  const registry = new Registry();
  const t = new TrafficMetrics(registry, 2);
  const rows = Array.from({ length: 10 }, (_, i) => request(`/e${i}`, 200, 1));
  t.observe('http_requests', rows);
  t.observe('http_requests', [request('/e0', 200, 1)]);
  const text = await registry.metrics();
  const series = text.split('\n').filter((l) => l.startsWith('netrig_http_requests_total{'));
  assert.equal(series.length, 3, `two label sets and the overflow set: ${series.join('\n')}`);
  const all = Object.fromEntries(['role', 'host', 'method', 'endpoint', 'status', 'grpc_status'].map((k) => [k, OVERFLOW]));
  assert.equal(sample(text, 'netrig_http_requests_total', all), 8);
  assert.equal(sample(text, 'netrig_http_requests_total', { role: 'server', host: 'shop.example', method: 'GET', endpoint: '/e0', status: '200', grpc_status: '-1' }), 2, 'a known set keeps counting');
  assert.equal(series.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0), 11, 'every request counted once');
  assert.equal(sample(text, 'netrig_traffic_series_overflow_total', { metric: 'netrig_http_requests_total' }), 8);
  assert.equal(sample(text, 'netrig_traffic_series_overflow_total', { metric: 'netrig_http_request_duration_seconds' }), 8);
});

test('long label values are cut', async () => {
  const registry = new Registry();
  new TrafficMetrics(registry).observe('http_requests', [{ ...request('/x', 200, 1), host: 'h'.repeat(1000) }]);
  assert.match(await registry.metrics(), new RegExp(`host="${'h'.repeat(128)}"`));
});
