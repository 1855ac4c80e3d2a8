/**
 * End to end, network time against server time: `netrig up` captures curl in one network
 * namespace fetching a small file from nginx in another over one keep-alive connection,
 * first on a clean path, then with 2% of the packets each way dropped by nftables in the
 * server's namespace (a random number per packet, counted by the rule). `netrig report
 * network-vs-server` and the exchange_pairs view pair each exchange's two ends: every
 * request is one pair in both phases; with the loss the network's share of the client's time
 * rises while nginx's own time stays what it was; the kernel's counters agree that packets
 * were dropped (the rule's counter) and retransmitted (tcp_events), and none on the clean path;
 * the requests the loss hurt carry their connection's retransmits and drops while in flight
 * (`netrig report hurt` lists them), no more than tcp_events and the rule's counter have,
 * none on the clean path.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { reportNamed, reportQuery, type TimeWindow } from '../../cli/report-query.js';
import { cleanupAll, pollUntil, sleep } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { runCli, type CliChild } from '../helpers/cli.js';
import { createHostPair, runOk, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { startUp } from '../helpers/up-run.js';

/**
 * Requests per phase, one keep-alive connection each: enough that at 2% a request packet
 * is dropped at all (none in 400: 0.98^400, about 3 in 10,000).
 */
const REQUESTS = 400;
const LOSS_PERCENT = 2;
const TABLE = `netrig_loss_${process.pid}`;

let hosts: HostPair | undefined;
let nginx: NginxHandle | undefined;
let up: CliChild | undefined;
let reader: ClickHouseClient | undefined;
let lossAdded = false;
const dir = mkdtempSync(join(tmpdir(), `netrig-netvsserver-e2e-${process.pid}-`));
const unregister = onExit(`network-vs-server e2e ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
let env: Record<string, string> = {};

before(async () => {
  hosts = await createHostPair();
  nginx = await startNginx(hosts.server);
  ({ up, reader, env } = await startUp(dir, hosts));
});

after(() => cleanupAll(
  () => reader?.close(),
  () => (lossAdded ? runOk('ip', ['netns', 'exec', hosts!.server.ns, 'nft', 'delete', 'table', 'inet', TABLE]) : undefined),
  () => up?.stop('SIGINT', 60_000),
  () => up?.kill(),
  () => nginx?.stop(),
  () => hosts?.destroy(),
  () => {
    rmSync(dir, { recursive: true, force: true });
    unregister();
  },
));

/** One curl, one connection, REQUESTS fetches of the small file. */
async function fetchAll(): Promise<void> {
  const url = `http://${hosts!.server.addr}:${nginx!.port}/small.txt`;
  const r = await hosts!.client.exec('curl', ['-sS', '--max-time', '120', '-w', '%{http_code}\\n', ...Array.from({ length: REQUESTS }, () => ['-o', '/dev/null', url]).flat()], { timeoutMs: 150_000 });
  assert.equal(r.code, 0, `curl: ${r.stderr}`);
  assert.deepEqual(r.stdout.trim().split('\n').map(Number), Array(REQUESTS).fill(200));
}

async function query<T>(sql: string, params: Record<string, unknown> = {}): Promise<T[]> {
  return (await reader!.query({ query: sql, query_params: params, format: 'JSONEachRow' })).json<T>();
}

interface Shares { exchanges: number; server_p50_ms: number; client_p99_ms: number; network_share: number }

/** The report's row for the small file over `window`, once every request of the window is paired. */
async function reportOf(window: TimeWindow): Promise<Shares> {
  const q = reportQuery(reportNamed('network-vs-server'), 'netrig', window, { endpoint: '/small.txt' });
  let got: Record<string, string | number>[] = [];
  const paired = await pollUntil(async () => (got = await query(q.query, q.params)).length === 1 && Number(got[0].exchanges) === REQUESTS, 60_000, 500);
  assert.ok(paired, `every request paired within 60 s: ${JSON.stringify(got)}\n${up!.tail(10)}`);
  const r = got[0];
  return { exchanges: Number(r.exchanges), server_p50_ms: Number(r.server_p50_ms), client_p99_ms: Number(r.client_p99_ms), network_share: Number(r.network_share) };
}

/** Retransmits netrig recorded on the path between the two namespaces in `window`. */
async function retransmits(window: TimeWindow): Promise<number> {
  const [r] = await query<{ n: string }>(`SELECT count() AS n FROM netrig.tcp_events
    WHERE ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
      AND kind = 'retransmit' AND (saddr = toIPv6({a:String}) OR daddr = toIPv6({a:String}))`, { from: window.fromMs, to: window.toMs, a: `::ffff:${hosts!.server.addr}` });
  return Number(r.n);
}

test('with 2% loss on the path the network\'s share of each exchange rises and the server\'s own time stays', async () => {
  const clean: TimeWindow = { fromMs: Date.now() - 1000, toMs: 0 };
  await fetchAll();
  clean.toMs = Date.now() + 1;
  await sleep(1100);

  // Dropped at random, each way, in the server's namespace; counted by the rule.
  await runOk('ip', ['netns', 'exec', hosts!.server.ns, 'nft', '-f', '-'], {
    input: `table inet ${TABLE} {
      counter dropped { }
      chain input {
        type filter hook input priority 0; policy accept;
        tcp dport ${nginx!.port} numgen random mod 100 < ${LOSS_PERCENT} counter name "dropped" drop
      }
      chain output {
        type filter hook output priority 0; policy accept;
        tcp sport ${nginx!.port} numgen random mod 100 < ${LOSS_PERCENT} counter name "dropped" drop
      }
    }\n`,
  });
  lossAdded = true;
  const lossy: TimeWindow = { fromMs: Date.now(), toMs: 0 };
  await fetchAll();
  lossy.toMs = Date.now() + 1;
  const counted = await runOk('ip', ['netns', 'exec', hosts!.server.ns, 'nft', '-j', 'list', 'counter', 'inet', TABLE, 'dropped']);
  const dropped = Number(JSON.parse(counted.stdout).nftables.find((o: { counter?: { packets: number } }) => o.counter)?.counter.packets);
  assert.ok(dropped > 0, `the rule dropped packets: ${counted.stdout}`);

  const before = await reportOf(clean);
  const during = await reportOf(lossy);
  assert.ok(during.network_share > before.network_share, `the network's share rises: ${JSON.stringify({ before, during })}`);
  // nginx's own time (first request byte in to last response byte out) does not see the loss.
  assert.ok(Math.abs(during.server_p50_ms - before.server_p50_ms) < 1, `the server's median stays: ${JSON.stringify({ before, during })}`);
  assert.ok(during.client_p99_ms > before.client_p99_ms, `the client's p99 rises: ${JSON.stringify({ before, during })}`);

  assert.equal(await retransmits(clean), 0, 'no retransmit on the clean path');
  const resent = await retransmits(lossy);
  assert.ok(resent > 0 && resent <= dropped, `retransmits recorded (${resent}), no more than the ${dropped} packets dropped`);

  const harmed = async (w: TimeWindow) => Object.fromEntries(Object.entries((await query<Record<string, string | number>>(`SELECT count() AS rows, sum(retransmits) AS retransmitted, sum(drops) AS dropped, countIf(harm_ns > 0) AS with_harm_ns
    FROM netrig.http_requests WHERE ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC') AND (retransmits > 0 OR drops > 0)`, { from: w.fromMs, to: w.toMs }))[0]).map(([k, v]) => [k, Number(v)]));
  assert.deepEqual(await harmed(clean), { rows: 0, retransmitted: 0, dropped: 0, with_harm_ns: 0 }, 'no request hurt on the clean path');
  const hurt = await harmed(lossy);
  assert.ok(hurt.retransmitted > 0, `requests hurt by retransmits: ${JSON.stringify(hurt)}`);
  assert.ok(hurt.retransmitted <= resent, `no more retransmits on requests (${hurt.retransmitted}) than tcp_events has (${resent})`);
  assert.ok(hurt.dropped <= dropped, `no more drops on requests (${hurt.dropped}) than the rule dropped (${dropped})`);
  const listed = await runCli(['report', 'hurt', '--format', 'json', '--since', '30 MINUTE', '--filter', 'endpoint=/small.txt'], { env, cwd: dir });
  assert.equal(listed.code, 0, listed.stderr);
  const worst = listed.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string | number>);
  assert.equal(worst.length, Math.min(50, hurt.rows), 'netrig report hurt lists them');
  assert.ok(worst.every((r) => Number(r.retransmits) + Number(r.drops) > 0));

  const cli = await runCli(['report', 'network-vs-server', '--format', 'json', '--since', '30 MINUTE', '--filter', 'endpoint=/small.txt'], { env, cwd: dir });
  assert.equal(cli.code, 0, cli.stderr);
  const printed = cli.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string | number>);
  assert.deepEqual(printed.map((r) => [r.endpoint, Number(r.exchanges)]), [['/small.txt', 2 * REQUESTS]], 'netrig report network-vs-server finds the running up and counts both phases');
});
