/**
 * End to end, the page in a browser: `netrig up` captures curl in one network namespace
 * talking to nginx in another, and headless Chromium (Debian's, driven by playwright-core)
 * opens up's page with the endpoint reader's credentials. The page loads without console
 * errors; the map has a node for nginx and one for curl and the edge between them; the
 * numbers shown equal the reports' SQL run through up's endpoint over the same range and what
 * curl did; clicking the edge lists its exchanges with both ends' timings; a range picked to
 * hold only the first burst of requests shows that burst alone. A screenshot is kept:
 * $NETRIG_TEST_ARTIFACTS/page.png, else test-artifacts/page.png in the repository.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { chromium, type Browser, type Page } from 'playwright-core';
import { readEndpoint } from '../../cli/endpoint-file.js';
import { reportNamed, reportQuery, type TimeWindow } from '../../cli/report-query.js';
import { cleanupAll, pollUntil, sleep } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { runCli, type CliChild } from '../helpers/cli.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { startUp } from '../helpers/up-run.js';

/** The first burst: ids of one endpoint, then errors; the second: one file. */
const BURST_A = { ids: 6, notFound: 2, unavailable: 2 };
const BURST_A_TOTAL = BURST_A.ids + BURST_A.notFound + BURST_A.unavailable;
const BURST_B = 5;
const TOTAL = BURST_A_TOTAL + BURST_B;

const ARTIFACTS = process.env.NETRIG_TEST_ARTIFACTS ?? join(REPO_ROOT, 'test-artifacts');

let hosts: HostPair | undefined;
let nginx: NginxHandle | undefined;
let up: CliChild | undefined;
let browser: Browser | undefined;
let reader: ClickHouseClient | undefined;
const dir = mkdtempSync(join(tmpdir(), `netrig-page-e2e-${process.pid}-`));
const unregister = onExit(`page e2e ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
let pageUrl = '';
let dataDir = '';
let env: Record<string, string> = {};
let credentials = { username: '', password: '' };

before(async () => {
  hosts = await createHostPair();
  nginx = await startNginx(hosts.server);
  const started = await startUp(dir, hosts);
  ({ up, reader, dataDir, env } = started);
  pageUrl = String(started.running.page ?? '');
  assert.match(pageUrl, /^http:\/\/127\.0\.0\.1:\d+\/$/, `up logs its page's URL:\n${up.tail()}`);
  const ep = readEndpoint(dataDir);
  assert.ok(ep, "up's endpoint is advertised in its data dir");
  credentials = { username: ep.user, password: ep.password };
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], timeout: 60_000 });
});

after(() => cleanupAll(
  () => browser?.close(),
  () => reader?.close(),
  () => up?.stop('SIGINT', 60_000),
  () => up?.kill(),
  () => nginx?.stop(),
  () => hosts?.destroy(),
  () => {
    rmSync(dir, { recursive: true, force: true });
    unregister();
  },
));

/** curl in the client namespace, one connection per URL list; the statuses it got. */
async function curl(urls: string[]): Promise<number[]> {
  const r = await hosts!.client.exec('curl', ['-sS', '--max-time', '60', '-w', '%{http_code}\\n', ...urls.flatMap((u) => ['-o', '/dev/null', u])]);
  assert.equal(r.code, 0, `curl: ${r.stderr}`);
  return r.stdout.trim().split('\n').map(Number);
}

/** A report's rows over `window`, run through up's endpoint as its reader: what the page should show. */
async function report(name: string, window: TimeWindow): Promise<Record<string, string | number>[]> {
  const q = reportQuery(reportNamed(name), 'netrig', window);
  return (await reader!.query({ query: q.query, query_params: q.params, format: 'JSONEachRow' })).json();
}

/** The range the page shows ("<iso> – <iso>"). */
async function shownRange(page: Page): Promise<TimeWindow> {
  const [from, to] = (await page.getByTestId('range-shown').textContent() ?? '').split(' – ');
  return { fromMs: Date.parse(from), toMs: Date.parse(to) };
}

/** The text of every cell of a table, by column, row by row. */
async function tableRows(page: Page, id: string): Promise<Record<string, string>[]> {
  return page.getByTestId(id).locator('tbody tr').evaluateAll((trs) => trs.map((tr) =>
    Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.dataset.col!, td.textContent ?? '']))));
}

/** Poll the page until `check` holds (bounded), else fail with what it showed. */
async function untilShown(what: string, check: () => Promise<boolean>, shown: () => Promise<unknown>): Promise<void> {
  if (!(await pollUntil(async () => check().catch(() => false), 30_000, 200))) assert.fail(`${what}; the page shows ${JSON.stringify(await shown().catch((e) => String(e)))}`);
}

/** A datetime-local value (the context's zone is UTC) to the second. */
const utcLocal = (ms: number) => new Date(ms).toISOString().slice(0, 19);

test('the page over captured traffic: map, numbers as the SQL and as curl did, exchanges of an edge, the time range', async () => {
  const base = `http://${hosts!.server.addr}:${nginx!.port}`;
  const serverAddr = `::ffff:${hosts!.server.addr}`;
  const burstAStart = Date.now();
  assert.deepEqual(await curl([
    ...Array.from({ length: BURST_A.ids }, (_, i) => `${base}/t/order-${1000 + i}`),
    ...Array.from({ length: BURST_A.notFound }, () => `${base}/status/404`),
    ...Array.from({ length: BURST_A.unavailable }, () => `${base}/status/503`),
  ]), [...Array(BURST_A.ids).fill(200), ...Array(BURST_A.notFound).fill(404), ...Array(BURST_A.unavailable).fill(503)]);
  const burstAEnd = Date.now();
  // The second burst in a later second than the first ends in, so a range can hold the first alone.
  await sleep(2500);
  assert.deepEqual(await curl(Array.from({ length: BURST_B }, () => `${base}/small.txt`)), Array(BURST_B).fill(200));

  const perRole = async () => (await (await reader!.query({
    query: 'SELECT role, count() AS n FROM http_requests WHERE server_addr = {s:IPv6} AND server_port = {p:UInt16} GROUP BY role ORDER BY role',
    query_params: { s: serverAddr, p: nginx!.port }, format: 'JSONEachRow',
  })).json<{ role: string; n: string }>()).map((r) => `${r.role} ${r.n}`);
  let rows: string[] = [];
  assert.ok(await pollUntil(async () => (rows = await perRole()).join() === `client ${TOTAL},server ${TOTAL}`, 60_000, 500), `both ends' rows within 60 s: ${rows}\n${up!.tail(10)}`);

  const context = await browser!.newContext({ httpCredentials: credentials, timezoneId: 'UTC', viewport: { width: 1400, height: 1000 } });
  try {
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const res = await page.goto(pageUrl, { timeout: 30_000 });
    assert.equal(res?.status(), 200, 'the page, with the reader\'s credentials');

    // The map: nginx and curl as nodes, one edge between them.
    await page.locator('[data-node="nginx"]').waitFor({ timeout: 30_000 });
    await page.locator('[data-node="curl"]').waitFor({ timeout: 30_000 });
    const edge = page.locator(`[data-edge="::ffff:${hosts!.client.addr} ${serverAddr}:${nginx!.port}"]`);
    assert.equal(await edge.getAttribute('data-requests'), String(TOTAL), 'the edge counts every request curl made, once');

    // Its numbers and the endpoints' are the reports' over the range the page shows.
    const range = await shownRange(page);
    const sqlEdge = (await report('service-map', range)).find((r) => r.server === serverAddr && Number(r.port) === nginx!.port)!;
    const shownEdges = await tableRows(page, 'edges');
    assert.equal(shownEdges.length, 1, `one edge: ${JSON.stringify(shownEdges)}`);
    const e = shownEdges[0];
    assert.deepEqual(
      { requests: e.requests, perS: e.requests_per_s, failed: e.errors, rate: e.error_rate, p99: e.p99_ms, retransmits: e.retransmits, drops: e.drops, captured: e.captured },
      { requests: String(sqlEdge.requests), perS: String(sqlEdge.requests_per_s), failed: String(sqlEdge.errors), rate: `${(Number(sqlEdge.error_rate) * 100).toFixed(1)}%`, p99: String(sqlEdge.p99_ms), retransmits: String(sqlEdge.retransmits), drops: String(sqlEdge.drops), captured: 'both ends' },
      'the edge\'s row is the service-map report\'s');
    assert.deepEqual([e.requests, e.errors, e.client, e.server], [String(TOTAL), String(BURST_A.unavailable), `curl ${hosts!.client.addr}`, `nginx ${hosts!.server.addr}:${nginx!.port}`], 'and what curl did: every request, the 503s failed');
    const cli = await runCli(['report', 'service-map', '--data-dir', dataDir, '--format', 'json'], { env });
    assert.equal(cli.code, 0, cli.stderr);
    const printed = cli.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.server === serverAddr)!;
    assert.deepEqual([printed.requests, printed.errors, printed.p99_ms].map(String), [e.requests, e.errors, e.p99_ms], '`netrig report service-map` prints the same edge');

    const host = `${hosts!.server.addr}:${nginx!.port}`;
    const sqlEndpoints = (await report('endpoints', range)).filter((r) => r.host === host)
      .map((r) => [r.host, r.method, r.endpoint, r.role, String(r.requests), String(r.errors), String(r.p50_ms), String(r.p99_ms)].join(' '));
    const shownEndpoints = (await tableRows(page, 'endpoints-table')).map((r) => [r.host, r.method, r.endpoint, r.role, r.requests, r.errors, r.p50_ms, r.p99_ms].join(' '));
    assert.deepEqual(shownEndpoints, sqlEndpoints, 'the endpoints table is the endpoints report');
    const counts = (await tableRows(page, 'endpoints-table')).map((r) => `${r.role} ${r.endpoint} ${r.requests} ${r.errors}`).sort();
    assert.deepEqual(counts, [
      `client /small.txt ${BURST_B} 0`, `client /status/{id} ${BURST_A.notFound + BURST_A.unavailable} ${BURST_A.unavailable}`, `client /t/{id} ${BURST_A.ids} 0`,
      `server /small.txt ${BURST_B} 0`, `server /status/{id} ${BURST_A.notFound + BURST_A.unavailable} ${BURST_A.unavailable}`, `server /t/{id} ${BURST_A.ids} 0`,
    ], 'per role, as curl made them');

    // Clicking the edge lists its exchanges, each with the client's and the server's timing.
    await edge.locator('text').first().click();
    await untilShown(`the edge's ${TOTAL} exchanges`, async () => (await tableRows(page, 'exchanges-table')).length === TOTAL, () => tableRows(page, 'exchanges-table'));
    const exchanges = await tableRows(page, 'exchanges-table');
    assert.ok(exchanges.every((x) => /^\d+(\.\d+)? ms$/.test(x.client_ms) && /^\d+(\.\d+)? ms$/.test(x.server_ms)), `both timings on every exchange: ${JSON.stringify(exchanges)}`);
    assert.deepEqual(exchanges.map((x) => x.status).sort(), [...Array(BURST_A.ids + BURST_B).fill('200'), ...Array(BURST_A.notFound).fill('404'), ...Array(BURST_A.unavailable).fill('503')].sort());
    assert.deepEqual(exchanges.slice(0, BURST_B).map((x) => x.path), Array(BURST_B).fill('/small.txt'), 'newest first');

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'page.png'), fullPage: true });

    // A range that holds the first burst alone: its numbers, the SQL's over the same range.
    const first: TimeWindow = { fromMs: Math.floor(burstAStart / 1000) * 1000 - 60_000, toMs: Math.floor(burstAEnd / 1000) * 1000 + 1000 };
    for (const [name, ms] of [['from', first.fromMs], ['to', first.toMs]] as const) {
      await page.locator(`input[name="${name}"]`).evaluate((el, v) => {
        (el as HTMLInputElement).value = v;
        el.dispatchEvent(new Event('input', { bubbles: true }));
      }, utcLocal(ms));
    }
    await page.locator('button[name="apply"]').click();
    await untilShown('the range picked', async () => JSON.stringify(await shownRange(page)) === JSON.stringify(first), () => shownRange(page));
    await untilShown(`the first burst's ${BURST_A_TOTAL} requests on the edge`, async () => (await edge.getAttribute('data-requests')) === String(BURST_A_TOTAL), () => tableRows(page, 'edges'));
    const burstEdge = (await report('service-map', first)).find((r) => r.server === serverAddr)!;
    await untilShown('the edges table of the range', async () => (await tableRows(page, 'edges'))[0]?.requests === String(BURST_A_TOTAL), () => tableRows(page, 'edges'));
    assert.equal((await tableRows(page, 'edges'))[0].requests, String(burstEdge.requests), 'the SQL over the range agrees');
    await untilShown('the endpoints of the first burst', async () => !(await tableRows(page, 'endpoints-table')).some((r) => r.endpoint === '/small.txt'), () => tableRows(page, 'endpoints-table'));
    const burstEndpoints = (await report('endpoints', first)).filter((r) => r.host === host).map((r) => `${r.role} ${r.endpoint} ${r.requests} ${r.errors}`).sort();
    assert.deepEqual((await tableRows(page, 'endpoints-table')).map((r) => `${r.role} ${r.endpoint} ${r.requests} ${r.errors}`).sort(), burstEndpoints, 'the endpoints of the range are the SQL\'s');
    assert.equal(burstEndpoints.length, 4, 'two endpoints per role in the first burst');

    assert.deepEqual(problems, [], 'no console errors');
  } finally {
    await context.close();
  }
});
