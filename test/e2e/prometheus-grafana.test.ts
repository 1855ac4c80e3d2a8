/**
 * End to end, where people look: `netrig up` captures curl in one network namespace talking
 * to nginx in another.
 * - The traffic metrics on the processor's /metrics port, scraped by a real Prometheus
 *   (Debian's) with the password `netrig up` generated: PromQL returns the requests per
 *   endpoint, role and status that curl made and nginx logged — counted by path template (20
 *   distinct paths are one endpoint), never by raw path — and the durations of the same
 *   requests.
 * - The Grafana dashboards of deploy/grafana/: every panel's SQL, with the data source's
 *   macros and the dashboard's variables expanded, run through up's endpoint as its reader
 *   over the rows it wrote; the HTTP panels' numbers are what curl did.
 * - OTLP (`--otlp-endpoint`, a token header from a file) to a receiver decoding with the
 *   OpenTelemetry project's protobuf definitions: a client span (curl) and a server span
 *   (nginx) per request, in one trace, by route and status as curl got them and nginx
 *   logged them; the OTLP metrics count the same requests.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import type { CliChild } from '../helpers/cli.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { startUp } from '../helpers/up-run.js';
import { startPrometheus, type PrometheusHandle, type PromSample } from '../helpers/prometheus.js';
import { CLICKHOUSE_PLUGIN, dashboards, expandPanelSql } from '../helpers/grafana.js';
import { distinctSpans, startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';

/** Distinct paths of one endpoint (`/t/{id}`), then the error statuses. */
const ID_PATHS = 20;
const NOT_FOUND = 5;
const UNAVAILABLE = 3;

let hosts: HostPair | undefined;
let nginx: NginxHandle | undefined;
let up: CliChild | undefined;
let prometheus: PrometheusHandle | undefined;
let otlp: OtlpReceiver | undefined;
let reader: ClickHouseClient | undefined;
const OTLP_TOKEN = `Bearer e2e-${process.pid}`;
const dir = mkdtempSync(join(tmpdir(), `netrig-prometheus-e2e-${process.pid}-`));
const unregister = onExit(`prometheus e2e ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
let host = '';
let dataDir = '';
/** When the traffic began (the dashboards' time range starts before it). */
const started = new Date(Date.now() - 60_000);

before(async () => {
  hosts = await createHostPair();
  nginx = await startNginx(hosts.server);
  host = `${hosts.server.addr}:${nginx.port}`;
  otlp = await startOtlpReceiver();
  const tokenFile = join(dir, 'otlp-token');
  writeFileSync(tokenFile, `${OTLP_TOKEN}\n`, { mode: 0o600 });
  const started = await startUp(dir, hosts, ['--otlp-endpoint', otlp.url, '--otlp-header-file', `authorization=${tokenFile}`, '--otlp-metrics-interval', '1']);
  ({ up, dataDir, reader } = started);
  const port = Number(started.up.logs.find((l) => l.msg === 'processor metrics served')?.metricsPort);
  assert.ok(port > 0, `the processor's metrics port was logged:\n${started.up.tail()}`);
  prometheus = await startPrometheus({ address: `127.0.0.1:${port}`, user: 'netrig', passwordFile: join(dataDir, 'metrics', 'metrics.password') });
});

after(() => cleanupAll(
  () => reader?.close(),
  () => prometheus?.stop(),
  () => otlp?.close(),
  () => up?.stop('SIGINT', 60_000),
  () => up?.kill(),
  () => nginx?.stop(),
  () => hosts?.destroy(),
  () => {
    rmSync(dir, { recursive: true, force: true });
    unregister();
  },
));

/** `sum by (labels)` of a PromQL expression, as label values joined by spaces → value. */
function byLabels(samples: PromSample[], labels: string[]): Record<string, number> {
  return Object.fromEntries(samples.map((s) => [labels.map((l) => s.metric[l]).join(' '), s.value]));
}

test('PromQL over the scraped metrics: the requests curl made and nginx logged, per endpoint template, role and status', async () => {
  const base = `http://${host}`;
  const urls = [
    ...Array.from({ length: ID_PATHS }, (_, i) => `${base}/t/order-${1000 + i}?token=secret${i}`),
    ...Array.from({ length: NOT_FOUND }, () => `${base}/status/404`),
    ...Array.from({ length: UNAVAILABLE }, () => `${base}/status/503`),
  ];
  const r = await hosts!.client.exec('curl', ['-sS', '--max-time', '60', '-w', '%{http_code}\\n', ...urls.flatMap((u) => ['-o', '/dev/null', u])]);
  assert.equal(r.code, 0, `curl: ${r.stderr}`);
  const codes = r.stdout.trim().split('\n').map(Number);
  assert.deepEqual(codes, [...Array(ID_PATHS).fill(200), ...Array(NOT_FOUND).fill(404), ...Array(UNAVAILABLE).fill(503)], 'curl got what nginx serves');

  const total = `sum(netrig_http_requests_total{host="${host}"})`;
  let got: PromSample[] = [];
  const scraped = await pollUntil(async () => (got = await prometheus!.query(total)).length === 1 && got[0].value >= 2 * urls.length, 60_000, 500);
  assert.ok(scraped, `Prometheus has both roles' requests within 60 s: ${JSON.stringify(got)}\n${up!.tail(10)}\n${prometheus!.log().slice(-1500)}`);
  assert.equal(got[0].value, 2 * urls.length, 'each request counted once per role');

  const requests = byLabels(await prometheus!.query(`sum by (role, endpoint, status) (netrig_http_requests_total{host="${host}"})`), ['role', 'endpoint', 'status']);
  const expected: Record<string, number> = {};
  for (const role of ['client', 'server']) {
    expected[`${role} /t/{id} 200`] = ID_PATHS;
    expected[`${role} /status/{id} 404`] = NOT_FOUND;
    expected[`${role} /status/{id} 503`] = UNAVAILABLE;
  }
  assert.deepEqual(requests, expected, 'one endpoint for the 20 distinct paths, statuses as curl got them');

  // nginx's own record: every request it logged, by status, is a server-side count.
  const logged: Record<string, number> = {};
  // (Its start-up probe is another path, made before the capture began.)
  for (const e of nginx!.accessLog().filter((x) => /^\/(t|status)\//.test(x.uri))) {
    const key = `server ${e.uri.startsWith('/t/') ? '/t/{id}' : '/status/{id}'} ${e.status}`;
    logged[key] = (logged[key] ?? 0) + 1;
  }
  assert.deepEqual(Object.fromEntries(Object.entries(requests).filter(([k]) => k.startsWith('server '))), logged, 'the server counts equal nginx\'s access log');

  const durations = byLabels(await prometheus!.query(`sum by (role, endpoint) (netrig_http_request_duration_seconds_count{host="${host}"})`), ['role', 'endpoint']);
  assert.deepEqual(durations, { 'client /t/{id}': ID_PATHS, 'client /status/{id}': NOT_FOUND + UNAVAILABLE, 'server /t/{id}': ID_PATHS, 'server /status/{id}': NOT_FOUND + UNAVAILABLE }, 'every answered request has a duration');
  const slow = await prometheus!.query(`sum(netrig_http_request_duration_seconds_bucket{host="${host}", le="+Inf"}) - sum(netrig_http_request_duration_seconds_bucket{host="${host}", le="10"})`);
  assert.deepEqual(slow.map((s) => s.value), [0], 'none over 10 s');

  assert.deepEqual(await prometheus!.query('count(netrig_http_requests_total{endpoint=~".*order.*|.*secret.*"})'), [], 'no raw path or query value in any label');
  assert.deepEqual(await prometheus!.query('sum(netrig_traffic_series_overflow_total)'), [], 'under the cap: nothing overflowed');
  assert.deepEqual((await prometheus!.query('up{job="netrig"}')).map((s) => s.value), [1], 'scraped with the password netrig up generated');
});

test('OTLP: a client and a server span per request in one trace, and metrics counting them', async () => {
  const urls = ID_PATHS + NOT_FOUND + UNAVAILABLE;
  const mine = () => distinctSpans(otlp!.spans).filter((s) => /^\/(t|status)\//.test(String(s.attributes['url.path'])) && String(s.attributes['server.address']) === hosts!.server.addr);
  const sent = await pollUntil(() => mine().length >= 2 * urls, 60_000, 250);
  assert.ok(sent, `a span per request and role within 60 s: ${mine().length} of ${2 * urls}\n${up!.tail(10)}`);
  const spans = mine();
  assert.equal(spans.length, 2 * urls, `a span per request and role, no more (answers ${JSON.stringify([...otlp!.answered])})\n${up!.tail(20)}`);
  assert.equal(otlp!.lastHeaders.authorization, OTLP_TOKEN, 'the header from --otlp-header-file');
  const byKey: Record<string, number> = {};
  for (const s of spans) {
    const role = s.kind === 'SPAN_KIND_SERVER' ? 'server' : 'client';
    const key = `${role} ${s.resource['service.name']} ${s.name} ${s.attributes['http.response.status_code']}`;
    byKey[key] = (byKey[key] ?? 0) + 1;
  }
  assert.deepEqual(byKey, {
    'client curl GET /t/{id} 200': ID_PATHS, 'client curl GET /status/{id} 404': NOT_FOUND, 'client curl GET /status/{id} 503': UNAVAILABLE,
    'server nginx GET /t/{id} 200': ID_PATHS, 'server nginx GET /status/{id} 404': NOT_FOUND, 'server nginx GET /status/{id} 503': UNAVAILABLE,
  }, 'routes, statuses and processes as curl and nginx saw them');
  const logged = nginx!.accessLog().filter((x) => /^\/(t|status)\//.test(x.uri)).length;
  assert.equal(spans.filter((s) => s.kind === 'SPAN_KIND_SERVER').length, logged, 'a server span per request in nginx\'s access log');
  const traces = new Map<string, string[]>();
  for (const s of spans) traces.set(s.traceId, [...(traces.get(s.traceId) ?? []), s.kind]);
  assert.equal(traces.size, urls, 'one trace per request');
  assert.ok([...traces.values()].every((k) => k.sort().join() === 'SPAN_KIND_CLIENT,SPAN_KIND_SERVER'), 'each trace: the client span and the server span');
  assert.ok(spans.every((s) => !String(s.attributes['url.query'] ?? '').includes('secret')), 'query values masked');
  const errors = spans.filter((s) => s.status.code === 'STATUS_CODE_ERROR').map((s) => `${s.kind} ${s.attributes['http.response.status_code']}`);
  const expectedErrors = [...Array(NOT_FOUND).fill('SPAN_KIND_CLIENT 404'), ...Array(UNAVAILABLE).fill('SPAN_KIND_CLIENT 503'), ...Array(UNAVAILABLE).fill('SPAN_KIND_SERVER 503')];
  assert.deepEqual(errors.sort(), expectedErrors.sort(), 'errors as the HTTP conventions have them: 4xx and 5xx for the client, 5xx for the server');

  const counted = () => {
    const sums: Record<string, number> = {};
    for (const p of otlp!.lastMetrics().filter((x) => x.metric === 'netrig.http.requests' && x.attributes['server.address'] === hosts!.server.addr)) {
      const k = `${p.attributes['netrig.role']} ${p.attributes['http.route']} ${p.attributes['http.response.status_code']}`;
      sums[k] = (sums[k] ?? 0) + p.value;
    }
    return sums;
  };
  const expected: Record<string, number> = {};
  for (const role of ['client', 'server']) Object.assign(expected, { [`${role} /t/{id} 200`]: ID_PATHS, [`${role} /status/{id} 404`]: NOT_FOUND, [`${role} /status/{id} 503`]: UNAVAILABLE });
  await pollUntil(() => isDeepStrictEqual(counted(), expected), 30_000, 250);
  assert.deepEqual(counted(), expected, 'the OTLP request counter per role, route and status');
});

/** A dashboard panel's rows, as JSON objects. */
type PanelRows = Record<string, string | number>[];

test('every Grafana panel\'s SQL, macros expanded, runs over the rows; the HTTP panels count what curl did', async () => {
  const client = reader!;
  {
    const boards = dashboards();
    assert.ok(boards.size >= 1, 'deploy/grafana/ has dashboards');
    const results = new Map<string, PanelRows>();
    for (const role of ['server', 'client']) {
      for (const [file, board] of boards) {
        const queried = board.panels.filter((p) => p.targets?.length);
        assert.ok(queried.length >= 10, `${file}: its panels query`);
        for (const panel of queried) {
          for (const t of panel.targets!) {
            assert.equal(t.datasource.type, CLICKHOUSE_PLUGIN, `${file} ${panel.title}: the ClickHouse data source`);
            assert.equal(t.editorType, 'sql');
            assert.equal(t.queryType, panel.type === 'timeseries' ? 'timeSeries' : 'table', `${file} ${panel.title}: query type matches the panel`);
            const sql = expandPanelSql(t.rawSql, { from: started, to: new Date(Date.now() + 60_000), intervalS: 1, vars: { database: 'netrig', role } });
            let rows: PanelRows;
            try {
              rows = await (await client.query({ query: sql, format: 'JSONEachRow' })).json<PanelRows[number]>();
            } catch (err) {
              assert.fail(`${file} panel "${panel.title}" (role ${role}): ${(err as Error).message}\n${sql}`);
            }
            if (panel.type === 'timeseries' && rows.length) assert.equal(Object.keys(rows[0])[0], 'time', `${panel.title}: the time column first`);
            results.set(`${role} ${panel.title}`, rows);
          }
        }
      }
    }
    const mine = (rows: PanelRows, key: string) => rows.filter((r) => String(r[key]).includes(host) || r[key] === host);
    for (const role of ['server', 'client']) {
      const endpoints = mine(results.get(`${role} Endpoints`)!, 'host').map((r) => ({ endpoint: r.endpoint, requests: Number(r.requests), errors: Number(r.errors) }));
      assert.deepEqual(endpoints.sort((a, b) => String(a.endpoint).localeCompare(String(b.endpoint))),
        [{ endpoint: '/status/{id}', requests: NOT_FOUND + UNAVAILABLE, errors: UNAVAILABLE }, { endpoint: '/t/{id}', requests: ID_PATHS, errors: 0 }], `${role}: the endpoints table`);
      const perSecond = mine(results.get(`${role} Requests per second by endpoint`)!, 'endpoint');
      assert.equal(perSecond.reduce((n, r) => n + Number(r.requests_per_s), 0), ID_PATHS + NOT_FOUND + UNAVAILABLE, `${role}: requests per second over 1 s intervals add up to the requests`);
      const edges = mine(results.get(`${role} Service map: who calls whom`)!, 'server');
      assert.deepEqual(edges.map((r) => ({ client: r.client, server: r.server, requests: Number(r.requests) })),
        [{ client: `::ffff:${hosts!.client.addr}`, server: `::ffff:${host}`, requests: ID_PATHS + NOT_FOUND + UNAVAILABLE }], `${role}: one edge, curl's address to nginx`);
      assert.ok(edges.every((r) => r[role === 'server' ? 'server_process' : 'client_process'] === (role === 'server' ? 'nginx' : 'curl')), `${role}: the captured end's process: ${JSON.stringify(edges)}`);
      assert.deepEqual(mine(results.get(`${role} Requests hurt by retransmits and drops`)!, 'host'), [], `${role}: no request hurt on a clean path`);
    }
    // Both ends of every request were captured: each is one pair.
    const pairs = mine(results.get('server Network vs server time by endpoint (both ends captured)')!, 'host').map((r) => ({ endpoint: r.endpoint, exchanges: Number(r.exchanges) }));
    assert.deepEqual(pairs.sort((a, b) => String(a.endpoint).localeCompare(String(b.endpoint))),
      [{ endpoint: '/status/{id}', exchanges: NOT_FOUND + UNAVAILABLE }, { endpoint: '/t/{id}', exchanges: ID_PATHS }], 'the network vs server panel pairs every request');
  }
});
