/**
 * The page's server (ui/server.ts) over the embedded engine served on a ClickHouse endpoint,
 * reading through it as its reader, as `netrig up` runs it: known rows inserted, each view's
 * numbers; the exchanges of an edge paired with both ends' timings; every bad parameter a 400
 * naming it; no or wrong credentials a 401 asking for Basic auth; no SQL taken from the client.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openClickHouse, type ClickHouse } from '../../lib/clickhouse.js';
import type { ClickHouseEndpoint } from '../../lib/clickhouse-endpoint.js';
import { logger } from '../../lib/logger.js';
import { migrate } from '../../schemas/migrate.js';
import { PageServer } from '../../ui/server.js';
import { reportNamed, reportQuery } from '../../cli/report-query.js';
import { spawnCli } from '../helpers/cli.js';
import { onExit } from '../helpers/cleanup.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { freshClickHouse, removeClickHouseData } from '../helpers/processor-run.js';

const READER = { user: 'default', password: randomBytes(12).toString('hex') };
const MIN = 60_000;
/** The window the tests ask for: 30 minutes that hold every row but one exchange two hours before. */
const TO = Math.floor(Date.now() / MIN) * MIN;
const FROM = TO - 30 * MIN;
/** 2026-12-07 14:00:00.123456789-like text of ms after FROM (the engine parses it as UTC). */
const at = (msAfterFrom: number) => `${new Date(FROM + msAfterFrom).toISOString().replace('T', ' ').replace('Z', '')}456789`;

let ch: ClickHouse;
let endpoint: ClickHouseEndpoint;
let reader: ClickHouse;
let page: PageServer;
let base = '';

interface HttpRow {
  ts: string; role: 'client' | 'server'; comm: string; client_addr: string; client_port: number; server_addr: string; server_port: number;
  method: string; host: string; path: string; path_template: string; status: number; latency_ns: number; tls: number; timed_out: number; req_pos: number;
}

/** Edge A: curl 10.0.0.1 → nginx 10.0.0.2:8080, both ends captured, 4 exchanges on one connection (and one two hours before the window). */
function edgeA(): HttpRow[] {
  const statuses = [200, 200, 503, 404];
  const rows: HttpRow[] = [];
  const one = (i: number, ts: (role: string) => string, status: number, serverNs: number) => {
    for (const role of ['client', 'server'] as const) {
      rows.push({
        ts: ts(role), role, comm: role === 'client' ? 'curl' : 'nginx', client_addr: '::ffff:10.0.0.1', client_port: 40000, server_addr: '::ffff:10.0.0.2', server_port: 8080,
        method: 'GET', host: 'api', path: `/users/${i + 1}`, path_template: '/users/{id}', status, latency_ns: role === 'server' ? serverNs : serverNs + 500_000, tls: 0, timed_out: 0, req_pos: i * 100,
      });
    }
  };
  statuses.forEach((s, i) => one(i, (role) => at(MIN + i * 1000 + (role === 'server' ? 1 : 0)), s, (i + 1) * 1_000_000));
  one(9, () => at(-2 * 60 * MIN), 200, 50_000_000);
  return rows;
}

/** Edge B: python 10.0.0.3 → 10.0.0.9:443, only the client captured (TLS plaintext): one answered, one timed out. */
function edgeB(): HttpRow[] {
  return [0, 1].map((i) => ({
    ts: at(2 * MIN + i * 1000), role: 'client' as const, comm: 'python3', client_addr: '::ffff:10.0.0.3', client_port: 50000 + i, server_addr: '::ffff:10.0.0.9', server_port: 443,
    method: 'GET', host: 'ext', path: '/health', path_template: '/health', status: i ? 0 : 200, latency_ns: i ? 30_000_000_000 : 7_000_000, tls: 1, timed_out: i, req_pos: 0,
  }));
}

function tcpEvent(kind: string, server: boolean, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const [s, sp, d, dp] = server ? ['::ffff:10.0.0.2', 8080, '::ffff:10.0.0.1', 40000] : ['::ffff:10.0.0.1', 40000, '::ffff:10.0.0.2', 8080];
  return { ts: at(3 * MIN), node: 'n1', comm: server ? 'nginx' : 'curl', kind, saddr: s, sport: sp, daddr: d, dport: dp, protocol: 'tcp', conn_id: '00000000-0000-0000-0000-000000000001', ...extra };
}

async function insert(table: string, values: Record<string, unknown>[]): Promise<void> {
  await ch.client.insert({ table: `${ch.database}.${table}`, values, format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: `${table}-${randomBytes(4).toString('hex')}` } });
}

before(async () => {
  ch = await freshClickHouse('page');
  await migrate(ch.client, { database: ch.database, ttlDays: 30 });
  await insert('http_requests', [...edgeA(), ...edgeB()] as unknown as Record<string, unknown>[]);
  await insert('tcp_events', [
    tcpEvent('retransmit', true), tcpEvent('retransmit', true), tcpEvent('retransmit', true),
    tcpEvent('drop', false, { drop_reason: 'TCP_INVALID_SEQUENCE', drop_location: 'tcp_validate_incoming+0x12' }),
    tcpEvent('reset_received', false),
  ]);
  await insert('dns_queries', [
    { ts: at(4 * MIN), role: 'client', comm: 'curl', qname: 'example.com', qtype: 'A', rcode: 0, latency_ns: 2_000_000, timed_out: 0 },
    { ts: at(4 * MIN), role: 'client', comm: 'curl', qname: 'nope.example', qtype: 'A', rcode: 3, latency_ns: 3_000_000, timed_out: 0 },
    { ts: at(4 * MIN), role: 'client', comm: 'curl', qname: 'slow.example', qtype: 'AAAA', rcode: -1, latency_ns: 5_000_000_000, timed_out: 1 },
  ]);
  await insert('tls_handshakes', [{ ts: at(5 * MIN), role: 'client', comm: 'python3', sni: 'ext.example', version: 'TLS 1.3', cipher: 'TLS_AES_256_GCM_SHA384', alpn_offered: ['h2', 'http/1.1'], handshake_ns: 4_000_000, completed: 1 }]);
  await insert('capture_losses', [{ ts: at(6 * MIN), node: 'n1', run_id: 'r', kind: 'sock_data', cause: 'ringbuf_full', records: 7 }]);
  endpoint = await startTestEndpoint(ch, randomBytes(12).toString('hex'), READER.password);
  reader = await openClickHouse({ url: `http://127.0.0.1:${endpoint.port}`, user: READER.user, password: READER.password, database: ch.database }, { create: false });
  page = new PageServer({ client: reader.client, database: ch.database, credentials: READER, host: '127.0.0.1', port: 0, log: logger('test') });
  await page.start();
  base = `http://127.0.0.1:${page.port}`;
});

after(async () => {
  await page?.stop();
  await reader?.close();
  await endpoint?.stop();
  await ch?.close();
  removeClickHouseData();
});

const basic = (user: string, password: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const AUTH = basic(READER.user, READER.password);
const window = `from=${new Date(FROM).toISOString()}&to=${new Date(TO).toISOString()}`;

type Rows = Record<string, unknown>[];

async function view(name: string, query = ''): Promise<Rows> {
  const res = await fetch(`${base}/api/${name}?${window}${query}`, { headers: AUTH });
  const body = await res.json() as { rows: Rows; error?: string };
  assert.equal(res.status, 200, `${name}: ${body.error}`);
  return body.rows;
}

async function refused(path: string, init: RequestInit = {}): Promise<{ status: number; error: string; headers: Headers }> {
  const res = await fetch(`${base}${path}`, { ...init, headers: { ...AUTH, ...(init.headers as Record<string, string> ?? {}) } });
  const body = await res.json() as { error: string };
  return { status: res.status, error: body.error, headers: res.headers };
}

describe('views: the numbers of the rows inserted', () => {
  test('service map: an edge per address pair, each exchange once, TCP events of the pair, capture path', async () => {
    const rows = await view('service-map');
    assert.deepEqual(rows.map((r) => ({ ...r, requests_per_s: Number(r.requests_per_s) })), [
      {
        client: '::ffff:10.0.0.1', client_process: 'curl', server: '::ffff:10.0.0.2', port: 8080, server_process: 'nginx',
        requests: '4', requests_per_s: 0.002, errors: '1', error_rate: 0.25, p99_ms: 3.97, retransmits: '3', resets: '1', drops: '1', captured: 'both', tls_plaintext: 0,
      },
      {
        client: '::ffff:10.0.0.3', client_process: 'python3', server: '::ffff:10.0.0.9', port: 443, server_process: '',
        requests: '2', requests_per_s: 0.001, errors: '1', error_rate: 0.5, p99_ms: 29700.07, retransmits: '0', resets: '0', drops: '0', captured: 'client', tls_plaintext: 1,
      },
    ]);
  });

  test('endpoints per role; exchanges of an edge with both ends\' timings, of an endpoint, of an edge seen by its client only', async () => {
    const endpoints = (await view('endpoints')).map((r) => `${r.host} ${r.method} ${r.endpoint} ${r.role} ${r.requests} ${r.errors} ${r.p50_ms} ${r.p99_ms}`);
    assert.deepEqual(endpoints, ['api GET /users/{id} client 4 1 3 4.47', 'api GET /users/{id} server 4 1 2.5 3.97', 'ext GET /health client 2 1 15003.5 29700.07']);

    const exchanges = await view('exchanges', '&client=10.0.0.1&server=10.0.0.2&port=8080');
    assert.deepEqual(exchanges.map((r) => [r.path, r.status, r.client_ms, r.server_ms, r.client_process, r.server_process]), [
      ['/users/4', 404, 4.5, 4, 'curl', 'nginx'], ['/users/3', 503, 3.5, 3, 'curl', 'nginx'], ['/users/2', 200, 2.5, 2, 'curl', 'nginx'], ['/users/1', 200, 1.5, 1, 'curl', 'nginx'],
    ], 'newest first, a client row and a server row paired per exchange');
    assert.equal((await view('exchanges', '&host=api&method=GET&endpoint=%2Fusers%2F%7Bid%7D')).length, 4, 'an endpoint\'s exchanges');
    const b = await view('exchanges', '&client=::ffff:10.0.0.3&server=10.0.0.9&port=443');
    assert.deepEqual(b.map((r) => [r.status, r.client_ms, r.server_ms, r.timed_out]), [[0, 30000, null, 1], [200, 7, null, 0]], 'no server timing where the server was not captured');
  });

  test('TCP health, DNS, TLS and capture losses', async () => {
    assert.deepEqual((await view('tcp-health')).map((r) => `${r.kind} ${r.reason} ${r.location} ${r.events}`),
      ['retransmit   3', 'reset_received   1', 'drop TCP_INVALID_SEQUENCE tcp_validate_incoming+0x12 1'], 'by events, then kind as the table orders it');
    assert.deepEqual((await view('slow-dns')).map((r) => `${r.qname} ${r.queries} ${r.nxdomain} ${r.timeouts}`), ['slow.example 1 0 1', 'nope.example 1 1 0', 'example.com 1 0 0']);
    assert.deepEqual((await view('tls')).map((r) => `${r.sni} ${r.version} ${r.offered} ${r.handshakes} ${r.p50_ms}`), ['ext.example TLS 1.3 h2,http/1.1 1 4']);
    assert.deepEqual((await view('losses')).map((r) => `${r.kind} ${r.cause} ${r.records}`), ['sock_data ringbuf_full 7']);
  });

  test('the window decides: a range holding only the exchange two hours before shows it alone', async () => {
    const res = await fetch(`${base}/api/service-map?from=${new Date(FROM - 3 * 60 * MIN).toISOString()}&to=${new Date(FROM - 60 * MIN).toISOString()}`, { headers: AUTH });
    const rows = (await res.json() as { rows: Rows }).rows;
    assert.deepEqual(rows.map((r) => `${r.client_process}->${r.server_process} ${r.requests} ${r.p99_ms}`), ['curl->nginx 1 50']);
  });

  test('the same SQL as `netrig report`: the view equals the report run on the engine', async () => {
    const q = reportQuery(reportNamed('service-map'), ch.database, { fromMs: FROM, toMs: TO });
    const direct = await (await ch.client.query({ query: q.query, query_params: q.params, format: 'JSONEachRow' })).json();
    assert.deepEqual(await view('service-map'), direct);
  });
});

describe('refusals', () => {
  test('no credentials, a wrong password or user: 401 asking for Basic auth, for the page and the API', async () => {
    for (const path of ['/', '/app.js', `/api/service-map?${window}`]) {
      const none = await fetch(`${base}${path}`);
      assert.equal(none.status, 401, path);
      assert.match(none.headers.get('www-authenticate') ?? '', /^Basic realm="netrig"/);
    }
    for (const [user, password] of [[READER.user, 'wrong'], ['other', READER.password], [READER.user, '']]) {
      const res = await fetch(`${base}/api/service-map?${window}`, { headers: { Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` } });
      assert.equal(res.status, 401, `${user}:${password}`);
    }
  });

  test('bad parameters: 400 naming the parameter', async () => {
    const cases: [string, RegExp][] = [
      [`/api/nope?${window}`, /^report: unknown report 'nope'/],
      ['/api/service-map', /^from: missing/],
      [`/api/service-map?from=yesterday&to=${new Date(TO).toISOString()}`, /^from: expected an ISO time/],
      [`/api/service-map?from=2026-12-07T10:00:00&to=${new Date(TO).toISOString()}`, /^from: expected an ISO time with a zone/],
      [`/api/service-map?from=${new Date(TO).toISOString()}&to=${new Date(FROM).toISOString()}`, /^to: expected the end of the range after its start/],
      [`/api/service-map?from=${new Date(TO - 40 * 86_400_000).toISOString()}&to=${new Date(TO).toISOString()}`, /^from: the range is at most 31 days/],
      [`/api/service-map?from=${new Date(FROM).toISOString()}&to=${new Date(Date.now() + 3 * 86_400_000).toISOString()}`, /^to: the range ends more than a day from now/],
      [`/api/exchanges?${window}&client=10.0.0.256`, /^client: expected an IPv4 or IPv6 address/],
      [`/api/exchanges?${window}&port=70000`, /^port: expected a port/],
      [`/api/exchanges?${window}&port=1&port=2`, /^port: given more than once/],
      [`/api/exchanges?${window}&endpoint=${'x'.repeat(600)}`, /^endpoint: expected 1 to 512 characters/],
      [`/api/tcp-health?${window}&client=10.0.0.1`, /^client: not a filter of this report \(it takes none\)/],
      [`/api/service-map?${window}&server=10.0.0.2`, /^server: not a filter of this report/],
    ];
    for (const [path, error] of cases) {
      const r = await refused(path);
      assert.equal(r.status, 400, `${path}: ${r.error}`);
      assert.match(r.error, error, path);
    }
  });

  test('no SQL from the client: a query, sql or settings parameter is refused, a value with SQL in it is only a value', async () => {
    for (const p of ['query=SELECT%201', 'sql=SELECT%201', 'readonly=0', 'max_result_rows=1']) {
      const r = await refused(`/api/service-map?${window}&${p}`);
      assert.equal(r.status, 400, p);
      assert.match(r.error, /not a filter of this report/, p);
    }
    assert.deepEqual(await view('exchanges', `&endpoint=${encodeURIComponent("/x' OR 1=1 --")}`), [], 'matched as a path template, nothing more');
    const dml = await refused(`/api/service-map?${window}`, { method: 'POST', body: 'DROP TABLE http_requests' });
    assert.equal(dml.status, 405);
    assert.equal(Number((await view('endpoints')).length), 3, 'the rows are all there');
  });

  test('the bundle only, and only from this host', async () => {
    const html = await fetch(`${base}/`, { headers: AUTH });
    assert.equal(html.status, 200);
    assert.match(await html.text(), /<script type="module" src="\/app.js">/);
    assert.match(html.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    assert.equal((await fetch(`${base}/app.js`, { headers: AUTH })).status, 200);
    const views = await (await fetch(`${base}/api/views`, { headers: AUTH })).json() as { views: { name: string; filters: string[] }[] };
    assert.deepEqual(views.views.find((v) => v.name === 'exchanges')?.filters, ['client', 'server', 'port', 'host', 'method', 'endpoint'], 'the views, with the filters each takes');
    for (const path of ['/server.js', '/api.js', '/../package.json', '/api']) assert.equal((await refused(path)).status, 404, path);
    // fetch() cannot set Host: a plain request, as a DNS name rebound to 127.0.0.1 would send it.
    const rebound = await new Promise<number>((resolve, reject) => {
      request(`${base}/api/service-map?${window}`, { headers: { ...AUTH, Host: 'evil.example' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject).end();
    });
    assert.equal(rebound, 403, 'another host name');
    assert.equal((await refused(`/api/service-map?${window}`, { headers: { Origin: 'http://evil.example' } })).status, 403, 'another site\'s page');
  });
});

test('`netrig ui` serves the page over a ClickHouse by URL, behind its own password file, and stops on SIGINT', async () => {
  const dir = mkdtempSync(join(tmpdir(), `netrig-ui-${process.pid}-`));
  const unregister = onExit(`ui test ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  const passwordFile = join(dir, 'page.password');
  writeFileSync(passwordFile, 'page-secret\n', { mode: 0o600 });
  const ui = spawnCli(['ui', '--clickhouse-url', `http://127.0.0.1:${endpoint.port}`, '--clickhouse-password', READER.password, '--database', ch.database,
    '--ui-port', '0', '--user', 'viewer', '--password-file', passwordFile]);
  try {
    const served = await ui.waitLog("'page served'", (l) => /^page served/.test(l.msg ?? ''));
    const url = String(served.url);
    const res = await fetch(`${url}api/service-map?${window}`, { headers: basic('viewer', 'page-secret') });
    assert.equal(res.status, 200);
    assert.deepEqual((await res.json() as { rows: Rows }).rows.map((r) => `${r.client_process}->${r.server_process} ${r.requests}`), ['curl->nginx 4', 'python3-> 2']);
    assert.equal((await fetch(`${url}api/service-map?${window}`, { headers: AUTH })).status, 401, 'the page\'s credential, not the ClickHouse one');
    assert.deepEqual(await ui.stop('SIGINT', 30_000), { code: 0, signal: null }, ui.tail());
  } finally {
    await ui.kill();
    rmSync(dir, { recursive: true, force: true });
    unregister();
  }
});
