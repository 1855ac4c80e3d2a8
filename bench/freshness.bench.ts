/**
 * Freshness: from a request on the wire to its row being queryable.
 *
 * `netrig up` (pinned to cpu 1) captures two network namespaces; a client process in one
 * (bench/fresh-client.ts, pinned to cpu 0 with nginx) sends GET /fresh/<run>/<i> to nginx
 * in the other at NETRIG_BENCH_FRESH_RATE (200) requests/s for NETRIG_BENCH_FRESH_SECONDS
 * (20) s over keep-alive connections, noting the wall-clock time just before each request
 * is written. This process polls the rows through up's ClickHouse HTTP endpoint every
 * POLL_MS and notes when each request's rows (the client's and nginx's) first appear.
 * Freshness = row visible - request sent, p50 and p99, per role and for both rows of a
 * request; a poll's interval bounds the error (rows are seen up to POLL_MS late).
 *
 * Runs: the defaults (edge linger 100 ms, processor flush every 500 ms), and for context the
 * same with the smallest batching delays (linger 5 ms, flush 50 ms, through bench/up-main.ts);
 * then per region of a fan-in deployment (two regions and a hub, bench/fanin-stack.ts), half
 * the rate to each region's nginx. With the defaults, also retransmits: the same traffic with
 * 2% of the packets each way dropped by nftables in nginx's namespace, and the delay from
 * each retransmit in the kernel (its row's ts, kernel time made wall-clock by the edge) to
 * its tcp_events row being queryable.
 * Target: p99 <= 1 s.
 */
import { fileURLToPath } from 'node:url';
import { createHostPair, runOk, type HostPair } from '../test/helpers/netns.js';
import { envNumber, onlineCpus, pinProcess, type BenchContext, type Benchmark } from './harness.js';
import { f, machineLoad, percentile, sleep, spawnChild } from './common.js';
import { startBenchNginx, startNetrigUp, type BenchNginx } from './workload.js';
import { startFaninStack } from './fanin-stack.js';

const LOAD_CPU = 0;
const NETRIG_CPU = 1;
const RATE = envNumber('NETRIG_BENCH_FRESH_RATE', 200);
const SECONDS = envNumber('NETRIG_BENCH_FRESH_SECONDS', 20);
const POLL_MS = 100;
/** Rows still missing this long after the last request are counted as never seen. */
const GIVE_UP_S = 30;
const TARGET_P99_S = 1;
const CLIENT = fileURLToPath(new URL('./fresh-client.js', import.meta.url));

interface Result {
  sent: number;
  /** Seconds from send to visible, per role. */
  client: number[];
  server: number[];
  both: number[];
  missing: number;
  polls: number;
  pollMs: number[];
}

let runs = 0;

/** The fresh client in the client namespace: `rate` requests/s to `url` for SECONDS, paths under /fresh/<run>/. */
function freshClient(pair: HostPair, url: string, rate: number, run: string): ReturnType<typeof spawnChild> {
  return spawnChild('ip', [
    'netns', 'exec', pair.client.ns, 'taskset', '-c', String(LOAD_CPU), process.execPath, CLIENT, url, String(rate), String(SECONDS), run,
  ]);
}

/** Freshness of requests to `url` at `rate` per second, rows read through `query`. */
async function measure(pair: HostPair, url: string, rate: number, query: (sql: string) => Promise<string>): Promise<Result> {
  const run = `r${process.pid}x${++runs}`;
  const client = freshClient(pair, url, rate, run);
  const seen = new Map<string, number>();
  const started = Date.now();
  let polls = 0;
  const pollMs: number[] = [];
  let clientDone = false;
  void client.done.then(() => (clientDone = true));
  let lastNew = Date.now();
  const expected = Math.round(rate * SECONDS) * 2;
  // Poll until every row is seen, the client is done and rows stop coming, or the bound.
  while (seen.size < expected) {
    const t = Date.now();
    // Only rows of requests sent in the last GIVE_UP_S s (ts is the request's first byte).
    const fromS = Math.max(started, t - GIVE_UP_S * 1000) / 1000 - 5;
    const text = await query(
      `SELECT path, toString(role) FROM http_requests WHERE ts >= toDateTime64(${fromS.toFixed(3)}, 3) AND startsWith(path, '/fresh/${run}/') FORMAT TSV`,
    );
    const at = Date.now();
    polls++;
    pollMs.push(at - t);
    for (const line of text.split('\n')) {
      if (!line) continue;
      if (!seen.has(line)) {
        seen.set(line, at);
        lastNew = at;
      }
    }
    if (clientDone && at - lastNew > GIVE_UP_S * 1000) break;
    if (at - started > (SECONDS + GIVE_UP_S + 30) * 1000) break;
    await sleep(Math.max(0, POLL_MS - (Date.now() - t)));
  }
  const code = await client.done;
  const out = client.stdout().trim().split('\n').pop() ?? '';
  if (code !== 0 || !out.startsWith('{')) throw new Error(`fresh client failed (${code}): ${client.stderr().slice(-1000)}`);
  const sent = (JSON.parse(out) as { sent: [number, number, number, number][] }).sent;
  const bad = sent.filter((s) => s[2] !== 200).length;
  if (bad) throw new Error(`${bad} of ${sent.length} requests did not get a 200`);
  const r: Result = { sent: sent.length, client: [], server: [], both: [], missing: 0, polls, pollMs };
  for (const [i, sentMs] of sent) {
    const path = `/fresh/${run}/${i}`;
    const c = seen.get(`${path}\tclient`);
    const s = seen.get(`${path}\tserver`);
    if (c !== undefined) r.client.push((c - sentMs) / 1000);
    if (s !== undefined) r.server.push((s - sentMs) / 1000);
    if (c !== undefined && s !== undefined) r.both.push((Math.max(c, s) - sentMs) / 1000);
    r.missing += (c === undefined ? 1 : 0) + (s === undefined ? 1 : 0);
  }
  return r;
}

const LOSS_TABLE = `netrig_bench_loss_${process.pid}`;

/**
 * Retransmits: the traffic of `measure` with 2% of nginx's packets each way dropped; each
 * retransmit's delay from the kernel (its row's ts) to its tcp_events row being seen, in s.
 */
async function retransmitFreshness(pair: HostPair, nginx: BenchNginx, query: (sql: string) => Promise<string>): Promise<number[]> {
  const nft = (args: string[], input?: string) => runOk('ip', ['netns', 'exec', pair.server.ns, 'nft', ...args], { input });
  const rule = `table inet ${LOSS_TABLE} {
    chain input {
      type filter hook input priority 0; policy accept;
      tcp dport ${nginx.port} numgen random mod 100 < 2 drop
    }
    chain output {
      type filter hook output priority 0; policy accept;
      tcp sport ${nginx.port} numgen random mod 100 < 2 drop
    }
  }\n`;
  await nft(['-f', '-'], rule);
  const seen = new Map<string, number>();
  try {
    const startedNs = BigInt(Date.now()) * 1_000_000n;
    const client = freshClient(pair, nginx.url, RATE, `x${process.pid}x${++runs}`);
    let clientDone = false;
    void client.done.then(() => (clientDone = true));
    let lastNew = Date.now();
    while (!clientDone || Date.now() - lastNew < 3000) {
      const t = Date.now();
      const text = await query(`SELECT toString(conn_id), toString(toUnixTimestamp64Nano(ts)) FROM tcp_events
        WHERE kind = 'retransmit' AND ts >= fromUnixTimestamp64Nano(${startedNs}) FORMAT TSV`);
      const at = Date.now();
      for (const line of text.split('\n')) {
        if (!line || seen.has(line)) continue;
        seen.set(line, (at - Number(BigInt(line.split('\t')[1]) / 1_000_000n)) / 1000);
        lastNew = at;
      }
      if (at - t > (SECONDS + GIVE_UP_S) * 1000) break;
      await sleep(Math.max(0, POLL_MS - (Date.now() - t)));
    }
    await client.done;
  } finally {
    await nft(['delete', 'table', 'inet', LOSS_TABLE]);
  }
  return [...seen.values()];
}

const q = (xs: number[]) => `p50 ${f(percentile(xs, 50) * 1000, 0)} ms, p99 ${f(percentile(xs, 99) * 1000, 0)} ms, max ${f(Math.max(...xs) * 1000, 0)} ms`;

/**
 * The same traffic split between two regions fanned into a hub (bench/fanin-stack.ts): a
 * request's rows cross its region's NATS, the leaf node and the hub's stream sourcing it.
 */
async function fanin(ctx: BenchContext, pair: HostPair, euNginx: BenchNginx): Promise<void> {
  const usNginx = await startBenchNginx(pair.server, [LOAD_CPU], euNginx.port + 1);
  try {
    const regions = [{ region: 'eu', port: euNginx.port, url: euNginx.url }, { region: 'us', port: usNginx.port, url: usNginx.url }];
    const stack = await startFaninStack([NETRIG_CPU], [pair.client.netnsIno(), pair.server.netnsIno()], regions);
    try {
      await sleep(1000);
      const results = await Promise.all(regions.map((r) => measure(pair, r.url, RATE / 2, (sql) => stack.query(sql))));
      for (const [i, r] of results.entries()) {
        ctx.line(`fan-in, region ${regions[i].region} (${RATE / 2} req/s, its NATS -> leaf node -> hub stream -> processor): ${r.sent} requests, `
          + `${r.sent * 2 - r.missing} of ${r.sent * 2} rows seen; both rows ${q(r.both)}`);
      }
    } finally {
      await stack.stop();
    }
  } finally {
    await usNginx.stop();
  }
}

async function run(ctx: BenchContext): Promise<void> {
  if (!onlineCpus().includes(LOAD_CPU) || !onlineCpus().includes(NETRIG_CPU)) throw new Error(`needs cpus ${LOAD_CPU} and ${NETRIG_CPU}`);
  ctx.line(`before: ${await machineLoad()}`);
  const unpin = pinProcess([NETRIG_CPU]);
  let pair: HostPair | null = null;
  let nginx: BenchNginx | null = null;
  try {
    pair = await createHostPair();
    nginx = await startBenchNginx(pair.server, [LOAD_CPU]);
    ctx.line(`${RATE} req/s for ${SECONDS} s from a node client in ${pair.client.ns} to nginx in ${pair.server.ns} (both on cpu ${LOAD_CPU}); netrig up on cpu ${NETRIG_CPU}; rows polled every ${POLL_MS} ms through its endpoint`);
    let p99 = NaN;
    for (const variant of ['default', 'tuned'] as const) {
      const up = await startNetrigUp([NETRIG_CPU], [pair.client.netnsIno(), pair.server.netnsIno()], variant === 'tuned' ? { tuned: { lingerMs: 5, flushIntervalMs: 50 } } : {});
      try {
        await sleep(1000);
        const r = await measure(pair, nginx.url, RATE, (sql) => up.query(sql));
        const label = variant === 'default' ? 'defaults (linger 100 ms, flush 500 ms)' : 'baseline: smallest delays (linger 5 ms, flush 50 ms)';
        ctx.line(
          `${label}: ${r.sent} requests, ${r.sent * 2 - r.missing} of ${r.sent * 2} rows seen; both rows ${q(r.both)}  |  nginx's row ${q(r.server)}  |  client's row ${q(r.client)}; ` +
          `${r.polls} polls, median poll ${f(percentile(r.pollMs, 50), 0)} ms`,
        );
        if (variant === 'default') {
          p99 = r.missing ? Infinity : percentile(r.both, 99);
          const rtx = await retransmitFreshness(pair, nginx, (sql) => up.query(sql));
          ctx.line(`retransmits, defaults, 2% of nginx's packets dropped each way: ${rtx.length} retransmits seen; kernel -> tcp_events row ${rtx.length ? q(rtx) : 'none'} (polls every ${POLL_MS} ms: up to that late)`);
        }
      } finally {
        await up.stop();
      }
    }
    await fanin(ctx, pair, nginx);
    ctx.line(`target p99 <= ${TARGET_P99_S} s (defaults, both rows of a request): ${p99 <= TARGET_P99_S ? 'met' : 'NOT met'} (${Number.isFinite(p99) ? `${f(p99 * 1000, 0)} ms` : 'rows missing'})`);
    ctx.line(`after: ${await machineLoad()}`);
  } finally {
    await nginx?.stop();
    await pair?.destroy();
    unpin();
  }
}

export const benchmark: Benchmark = {
  name: 'freshness',
  title: 'request on the wire -> its rows queryable (p50, p99) with netrig up, defaults vs the smallest batching delays',
  run,
};
