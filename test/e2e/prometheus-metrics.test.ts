/**
 * End to end: the traffic metrics on the processor's /metrics port, scraped by a real
 * Prometheus (Debian's) with the password `netrig up` generated, while curl in one network
 * namespace talks to nginx in another. PromQL returns the requests per endpoint, role and
 * status that curl made and nginx logged — counted by path template (20 distinct paths are
 * one endpoint), never by raw path — and the durations of the same requests.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { spawnCli, type CliChild } from '../helpers/cli.js';
import { freePort } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { startPrometheus, type PrometheusHandle, type PromSample } from '../helpers/prometheus.js';

/** Distinct paths of one endpoint (`/t/{id}`), then the error statuses. */
const ID_PATHS = 20;
const NOT_FOUND = 5;
const UNAVAILABLE = 3;

let hosts: HostPair | undefined;
let nginx: NginxHandle | undefined;
let up: CliChild | undefined;
let prometheus: PrometheusHandle | undefined;
const dir = mkdtempSync(join(tmpdir(), `netrig-prometheus-e2e-${process.pid}-`));
const unregister = onExit(`prometheus e2e ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
let host = '';

before(async () => {
  hosts = await createHostPair();
  nginx = await startNginx(hosts.server);
  host = `${hosts.server.addr}:${nginx.port}`;
  const dataDir = join(dir, 'data');
  up = spawnCli([
    'up', '--data-dir', dataDir, '--nats-port', String(await freePort()), '--http-port', String(await freePort()),
    '--metrics-port', '0', '--processor-metrics-port', '0',
    '--include-netns', `${hosts.client.netnsIno()},${hosts.server.netnsIno()}`,
  ], { env: { NETRIG_RUN_DIR: join(dir, 'run') } });
  await up.waitLog("'netrig up: running'", (l) => /^netrig up: running/.test(l.msg ?? ''));
  const port = Number(up.logs.find((l) => l.msg === 'processor metrics served')?.metricsPort);
  assert.ok(port > 0, `the processor's metrics port was logged:\n${up.tail()}`);
  prometheus = await startPrometheus({ address: `127.0.0.1:${port}`, user: 'netrig', passwordFile: join(dataDir, 'metrics', 'metrics.password') });
});

after(() => cleanupAll(
  () => prometheus?.stop(),
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
