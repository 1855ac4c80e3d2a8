/**
 * End to end, fault campaign: the real pipeline — `netrig edge` (real eBPF) and `netrig
 * process` as children, a real nats-server, the embedded ClickHouse engine served by this
 * test's process behind a TCP proxy — while curl in one network namespace talks to nginx in
 * another without pause: short keep-alive sessions (1–4 requests, a new connection each) and
 * long ones (50 requests at 5/s over one connection, so connections outlive faults), every
 * request with a path token of its own so rows map to access-log lines. Then, one after the
 * other, with traffic running:
 *
 *  1. ClickHouse unreachable for 60 s (the proxy black-holes), then back;
 *  2. nats-server killed and restarted on the same port and store;
 *  3. the processor SIGKILLed while an insert is in flight (the proxy lets the INSERT reach
 *     the engine and holds its answer), restarted;
 *  4. the edge SIGKILLed, restarted 2 s later (a new run id).
 *
 * Afterwards, the processor drained (consumer pending 0):
 *
 * - every row exactly once: no two http_requests rows by (node, conn_id, role, req_pos), no
 *   two server rows for one request token, no two connections rows by conn_id;
 * - what is expected of each request nginx logged, by the time it logged it ($msec) against
 *   the edges' run windows (from 'edge started', logged once every program is attached, to
 *   SIGINT or SIGKILL): inside a window by more than MARGIN_MS, exactly one server-role row
 *   with its path and status — connections open before the new edge included, seen mid-life
 *   from their next request on; outside every window by more than MARGIN_MS, no row (no edge
 *   ran); within MARGIN_MS of a window's edge, at most one (its bytes may straddle the
 *   attach, or sit in the killed edge's unpublished batch). The same rule, by the time of its
 *   last request (curl closes at once after it), for each nginx connection's server-role
 *   connections row;
 * - every loss counted: whatever is expected and missing must be accounted for by
 *   capture_losses (there must be none: nothing was lost), and nothing is dead-lettered.
 *
 * MARGIN_MS: nginx's $msec is its cached time of the event-loop iteration that logged the
 * request (millisecond resolution), a request's syscalls lie within that iteration or
 * request_time before it; a killed edge loses what it drained and had not yet published —
 * at most one batch interval (100 ms) plus a publish in flight. 1 s covers both with room
 * for a loaded 2-core machine.
 *
 * It prints the figures the README quotes (requests, rows, losses per phase, time to catch
 * up after each fault).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { jetstreamManager, JetStreamApiCodes } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { isJsApiError } from '../../lib/nats.js';
import { DLQ_STREAM } from '../../processors/runtime/dlq.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { ClickHouseProxy } from '../helpers/clickhouse-proxy.js';
import { cleanupAll, sleep } from '../helpers/cleanup-all.js';
import { uniqueToken } from '../helpers/cleanup.js';
import { spawnCli, type CliChild } from '../helpers/cli.js';
import { pendingMessages } from '../helpers/http1-stream.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type Host, type HostPair } from '../helpers/netns.js';
import { startNginx, type AccessLogEntry, type NginxHandle } from '../helpers/nginx.js';
import { ProcessorChild } from '../helpers/processor-child.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const FUNCTIONS = ['http1', 'tcp', 'losses'];
const PASSWORD = randomBytes(12).toString('hex');
const MARGIN_MS = 1000;
const CLICKHOUSE_OUTAGE_MS = 60_000;
const NATS_OUTAGE_MS = 5000;
const EDGE_GAP_MS = 2000;
/** Traffic before the first fault and between faults once caught up. */
const SETTLE_MS = 5000;
const CATCH_UP_TIMEOUT_MS = 180_000;

/** One `netrig edge` child and its run window. */
interface EdgeLife {
  cli: CliChild;
  run: string;
  /** When it logged 'edge started': every program attached. */
  fromMs: number;
  /** When it was sent SIGINT or SIGKILL. */
  toMs: number;
  killed: boolean;
}

/**
 * Steady, bounded client load in the client namespace: `shortLoops` loops of curl sessions
 * of 1–4 requests (one connection each), and `longLoops` loops of 50 requests at 5/s over one
 * connection. Each request's path is /t/<token>/<n>.
 */
class Load {
  private n = 0;
  private stopped = false;
  sessions = 0;
  failures: string[] = [];
  readonly done: Promise<void[]>;

  constructor(private readonly client: Host, private readonly base: string, readonly token: string, deadlineMs: number) {
    const loops: Promise<void>[] = [];
    for (let i = 0; i < 2; i++) loops.push(this.loop(deadlineMs, (s) => 1 + (s % 4), [], 40));
    for (let i = 0; i < 2; i++) loops.push(this.loop(deadlineMs, () => 50, ['--rate', '5/s'], 0));
    this.done = Promise.all(loops);
  }

  private async loop(deadlineMs: number, count: (session: number) => number, extra: string[], pauseMs: number): Promise<void> {
    let s = 0;
    while (!this.stopped && Date.now() < deadlineMs) {
      const urls = Array.from({ length: count(s++) }, () => `${this.base}/t/${this.token}/${++this.n}`);
      const r = await this.client.exec('curl', ['-sS', '--max-time', '30', ...extra, ...urls.flatMap((u) => ['-o', '/dev/null', u])], { timeoutMs: 40_000 });
      this.sessions++;
      if (r.code !== 0) this.failures.push(`curl exit ${r.code}: ${r.stderr.trim()}`);
      if (pauseMs) await sleep(pauseMs);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

/** Where a time lies against the edges' windows. */
type Coverage = 'inside' | 'boundary' | 'outside';

function coverage(edges: EdgeLife[], tMs: number): Coverage {
  let c: Coverage = 'outside';
  for (const e of edges) {
    if (tMs > e.fromMs + MARGIN_MS && tMs < e.toMs - MARGIN_MS) return 'inside';
    if (tMs > e.fromMs - MARGIN_MS && tMs < e.toMs + MARGIN_MS) c = 'boundary';
  }
  return c;
}

interface Phase {
  name: string;
  fromMs: number;
  toMs: number;
  /** ms from the fault's end until every expected row of what came before was committed. */
  catchUpMs?: number;
}

test('fault campaign: ClickHouse away 60 s, NATS restarted, processor and edge SIGKILLed — every row once, every loss counted', { timeout: 600_000 }, async (t) => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let ch: ClickHouse | undefined;
  let endpoint: ClickHouseEndpoint | undefined;
  let proxy: ClickHouseProxy | undefined;
  let nc: NatsConnection | undefined;
  let load: Load | undefined;
  const edges: EdgeLife[] = [];
  const processors: ProcessorChild[] = [];
  t.after(() => cleanupAll(
    () => load?.stop(),
    ...edges.map((e) => () => e.cli.kill()),
    ...processors.map((p) => () => p.signal('SIGKILL')),
    () => proxy?.stop(),
    () => endpoint?.stop(),
    () => ch?.close(),
    () => removeClickHouseData(),
    () => nc?.close(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
  ));

  nats = await startNatsServer();
  nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  hosts = await createHostPair();
  const { client, server } = hosts;
  nginx = await startNginx(server);
  ch = await freshClickHouse('faults');
  endpoint = await startTestEndpoint(ch, PASSWORD);
  proxy = new ClickHouseProxy(endpoint.port);
  await proxy.start();
  const database = `faults_${process.pid}`;
  const node = uniqueToken('faults');
  const query = <T>(sql: string) => rows<T>(ch!, sql);

  const startEdge = async (): Promise<EdgeLife> => {
    const cli = spawnCli(['edge', '--nats', nats!.url, '--region', 'faults', '--node', node, '--metrics-port', '0', '--run-as', 'root',
      '--include-netns', `${client.netnsIno()},${server.netnsIno()}`], { logLevel: 'info' });
    const life: EdgeLife = { cli, run: '', fromMs: Infinity, toMs: Infinity, killed: false };
    edges.push(life);
    const started = await cli.waitLog('edge started', (l) => l.msg === 'edge started', 60_000);
    life.run = String(started.run);
    life.fromMs = Date.parse(String(started.time));
    return life;
  };
  const startProcessor = async (): Promise<ProcessorChild> => {
    const p = new ProcessorChild({ natsUrl: nats!.url, clickhouseUrl: `http://127.0.0.1:${proxy!.port}`, clickhouseUser: WRITER_USER, clickhousePassword: PASSWORD, database, functions: FUNCTIONS });
    processors.push(p);
    await p.port;
    return p;
  };
  const logs = () => [...processors.map((p, i) => `--- processor ${i + 1}\n${p.log()}`), ...edges.map((e, i) => `--- edge ${i + 1}\n${e.cli.tail(40)}`)].join('\n');

  const tokenPrefix = () => `/t/${load!.token}/`;
  const requests = (): AccessLogEntry[] => nginx!.accessLog().filter((e) => e.uri.startsWith(tokenPrefix()));
  /** Server-role rows per request path. */
  const serverRows = async (): Promise<Map<string, { n: number; status: number }>> => {
    const r = await query<{ path: string; n: string; status: number }>(`SELECT path, count() AS n, any(status) AS status FROM ${database}.http_requests
      WHERE role = 'server' AND startsWith(path, '${tokenPrefix()}') GROUP BY path`);
    return new Map(r.map((x) => [x.path, { n: Number(x.n), status: x.status }]));
  };
  /** Wait until every request logged by `untilMs` that is inside an edge window has its server row; returns how long it took. */
  const catchUp = async (what: string, untilMs: number): Promise<number> => {
    const t0 = Date.now();
    let missing: string[] = [];
    await waitFor(`${what}: rows of every request logged inside an edge window before it`, async () => {
      const got = await serverRows();
      missing = requests().filter((e) => e.loggedAtMs <= untilMs && coverage(edges, e.loggedAtMs) === 'inside' && !got.has(e.uri)).map((e) => e.uri);
      return missing.length === 0;
    }, CATCH_UP_TIMEOUT_MS, () => `${missing.length} missing, e.g. ${missing.slice(0, 5).join(' ')}\n${logs()}`);
    return Date.now() - t0;
  };

  let edge = await startEdge();
  let processor = await startProcessor();
  load = new Load(client, `http://${server.addr}:${nginx.port}`, uniqueToken('r'), Date.now() + 400_000);
  const phases: Phase[] = [];
  const phase = (name: string) => {
    const now = Date.now();
    const last = phases[phases.length - 1];
    if (last) last.toMs = now;
    const p: Phase = { name, fromMs: now, toMs: Infinity };
    phases.push(p);
    return p;
  };

  phase('steady');
  await sleep(SETTLE_MS);
  await catchUp('steady traffic', Date.now());

  // 1. ClickHouse unreachable for 60 s.
  const p1 = phase('ClickHouse unreachable 60 s');
  proxy.hang();
  await sleep(CLICKHOUSE_OUTAGE_MS);
  assert.ok(proxy.heldInserts > 0, 'the processor tried to insert while ClickHouse was away');
  proxy.resume();
  p1.catchUpMs = await catchUp('after ClickHouse came back', Date.now());
  await sleep(SETTLE_MS);

  // 2. nats-server killed and restarted on the same port and store.
  const p2 = phase('nats-server killed, restarted');
  await nats.kill();
  await sleep(NATS_OUTAGE_MS);
  await nats.restart();
  p2.catchUpMs = await catchUp('after NATS came back', Date.now());
  await sleep(SETTLE_MS);

  // 3. The processor SIGKILLed while an insert is in flight, restarted.
  const p3 = phase('processor SIGKILLed mid-insert');
  await proxy.nextInsert(60_000);
  await processor.signal('SIGKILL');
  assert.equal(processor.child.signalCode, 'SIGKILL', 'the processor was killed, not stopped');
  processor = await startProcessor();
  p3.catchUpMs = await catchUp('after the processor restarted', Date.now());
  await sleep(SETTLE_MS);

  // 4. The edge SIGKILLed, restarted: a new run.
  const p4 = phase('edge SIGKILLed, restarted');
  edge.toMs = Date.now();
  edge.killed = true;
  await edge.cli.kill();
  assert.equal(edge.cli.child.signalCode, 'SIGKILL', 'the edge was killed');
  await sleep(EDGE_GAP_MS);
  const killedRun = edge.run;
  edge = await startEdge();
  assert.notEqual(edge.run, killedRun, 'the new edge has a new run id');
  // Caught up: the rows of the new run's first seconds are in, counted from its start.
  await sleep(EDGE_GAP_MS);
  await catchUp('after the edge restarted', Date.now());
  p4.catchUpMs = Date.now() - edge.fromMs;
  await sleep(SETTLE_MS);

  // The end: traffic stops, the edge stops cleanly (it publishes what it holds), the processor drains.
  phase('end');
  await load.stop();
  await sleep(2000);
  edge.toMs = Date.now();
  assert.deepEqual(await edge.cli.stop('SIGINT'), { code: 0, signal: null }, `the last edge stopped cleanly:\n${edge.cli.tail()}`);
  phases[phases.length - 1].toMs = Date.now();
  await catchUp('the end', Date.now());
  let stable = 0;
  let last = -1;
  await waitFor('the processor drained (pending 0, no new row for 2 s)', async () => {
    const [r] = await query<{ n: string }>(`SELECT (SELECT count() FROM ${database}.http_requests) + (SELECT count() FROM ${database}.connections) + (SELECT count() FROM ${database}.capture_losses) AS n`);
    const n = Number(r.n);
    stable = n === last && (await pendingMessages(nc!, database, FUNCTIONS)) === 0 ? stable + 1 : 0;
    last = n;
    return stable >= 20;
  }, 120_000, logs);
  assert.equal(await processor.signal('SIGTERM'), 0, `the last processor stopped cleanly:\n${processor.log()}`);

  assert.deepEqual(load.failures.slice(0, 5), [], 'every curl session succeeded');

  // Every row exactly once.
  const dupHttp = await query<{ k: string; n: string }>(`SELECT concat(node, '|', toString(conn_id), '|', role, '|', toString(req_pos)) AS k, count() AS n
    FROM ${database}.http_requests GROUP BY k HAVING n > 1 LIMIT 10`);
  assert.deepEqual(dupHttp, [], 'no http_requests row twice by (node, conn_id, role, req_pos)');
  const dupConn = await query<{ k: string; n: string }>(`SELECT toString(conn_id) AS k, count() AS n FROM ${database}.connections GROUP BY k HAVING n > 1 LIMIT 10`);
  assert.deepEqual(dupConn, [], 'no connections row twice by conn_id');

  // Every request against the edges' windows.
  const got = await serverRows();
  const log = requests();
  assert.equal(new Set(log.map((e) => e.uri)).size, log.length, 'one access-log line per request token');
  const byUri = new Map(log.map((e) => [e.uri, e]));
  const extra = [...got.keys()].filter((u) => !byUri.has(u));
  assert.deepEqual(extra, [], 'every server row is a request nginx logged');
  const doubled = [...got].filter(([, v]) => v.n > 1).map(([u]) => u);
  assert.deepEqual(doubled, [], 'no request has two server rows');
  const wrongStatus = [...got].filter(([u, v]) => v.status !== byUri.get(u)!.status).map(([u]) => u);
  assert.deepEqual(wrongStatus, [], 'every server row has the status nginx logged');

  const losses = await query<{ run_id: string; kind: string; cause: string; records: string; ts: string }>(
    `SELECT run_id, kind, cause, toString(sum(records)) AS records, toString(min(ts)) AS ts FROM ${database}.capture_losses GROUP BY run_id, kind, cause`);
  const dlq = await deadLetters(nc);

  const figures: string[] = [];
  const missingAll: string[] = [];
  const capturedOutside: string[] = [];
  for (const p of phases) {
    const inPhase = log.filter((e) => e.loggedAtMs >= p.fromMs && e.loggedAtMs < p.toMs);
    const by = (c: Coverage) => inPhase.filter((e) => coverage(edges, e.loggedAtMs) === c);
    const inside = by('inside');
    const boundary = by('boundary');
    const outside = by('outside');
    const missing = inside.filter((e) => !got.has(e.uri));
    missingAll.push(...missing.map((e) => `${p.name}: ${e.uri} at ${new Date(e.loggedAtMs).toISOString()}`));
    capturedOutside.push(...outside.filter((e) => got.has(e.uri)).map((e) => `${p.name}: ${e.uri}`));
    figures.push(`${p.name}: requests ${inPhase.length} (inside ${inside.length}, boundary ${boundary.length}, no edge ${outside.length}); `
      + `server rows ${inPhase.filter((e) => got.has(e.uri)).length} (boundary ${boundary.filter((e) => got.has(e.uri)).length}); `
      + `missing ${missing.length}${p.catchUpMs !== undefined ? `; caught up ${(p.catchUpMs / 1000).toFixed(1)} s after` : ''}`);
  }
  // What the killed edge drained and had not published when SIGKILL came: no process is left
  // to count it, so it shows only here, as requests of its last moments without rows.
  const killed = edges.find((e) => e.killed)!;
  const lastRows = log.filter((e) => e.loggedAtMs <= killed.toMs && got.has(e.uri)).map((e) => e.loggedAtMs);
  const lostWithKill = log.filter((e) => e.loggedAtMs > killed.toMs - MARGIN_MS && e.loggedAtMs <= killed.toMs && !got.has(e.uri)).length;
  figures.push(`edge SIGKILL: ${lostWithKill} requests of its last ${MARGIN_MS} ms without rows; its last request with a row was logged ${killed.toMs - Math.max(...lastRows)} ms before the kill`);
  const lossRecords = losses.reduce((a, l) => a + Number(l.records), 0);
  figures.push(`capture_losses: ${losses.length ? losses.map((l) => `${l.kind}/${l.cause}=${l.records}`).join(' ') : 'none'}; dead letters: ${dlq}`);

  // Connections: a server-role row per nginx connection whose last request lies inside a window.
  const conns = new Map<number, AccessLogEntry[]>();
  for (const e of log) {
    let list = conns.get(e.connection);
    if (!list) conns.set(e.connection, (list = []));
    list.push(e);
  }
  const connRows = await query<{ port: number; n: string }>(`SELECT dport AS port, count() AS n FROM ${database}.connections
    WHERE role = 'server' AND sport = ${nginx.port} AND saddr = toIPv6('::ffff:${server.addr}') GROUP BY port`);
  const rowsByPort = new Map(connRows.map((r) => [r.port, Number(r.n)]));
  const wantByPort = new Map<number, { min: number; max: number }>();
  let midlife = 0;
  for (const list of conns.values()) {
    const lastAt = Math.max(...list.map((e) => e.loggedAtMs));
    const firstAt = Math.min(...list.map((e) => e.loggedAtMs));
    const c = coverage(edges, lastAt);
    if (edges.slice(1).some((e) => firstAt < e.fromMs && lastAt > e.fromMs)) midlife++;
    const w = wantByPort.get(list[0].remotePort) ?? { min: 0, max: 0 };
    if (c === 'inside') w.min++;
    if (c !== 'outside') w.max++;
    wantByPort.set(list[0].remotePort, w);
  }
  const connWrong: string[] = [];
  for (const [port, w] of wantByPort) {
    const n = rowsByPort.get(port) ?? 0;
    if (n < w.min || n > w.max) connWrong.push(`port ${port}: ${n} rows, want ${w.min}..${w.max}`);
  }
  for (const [port, n] of rowsByPort) if (!wantByPort.has(port)) connWrong.push(`port ${port}: ${n} rows, no nginx connection`);
  figures.push(`connections: ${conns.size} nginx connections, ${midlife} open across the new edge's start (seen mid-life), ${connRows.reduce((a, r) => a + Number(r.n), 0)} server rows`);
  process.stdout.write(`fault campaign figures:\n  ${figures.join('\n  ')}\n`);

  assert.deepEqual(capturedOutside, [], 'no row for a request made while no edge ran');
  assert.ok(missingAll.length <= lossRecords, `every missing row accounted for by counted losses (${lossRecords} records lost): ${missingAll.length} missing, e.g.\n${missingAll.slice(0, 10).join('\n')}\n${figures.join('\n')}`);
  assert.deepEqual(missingAll, [], `no request inside an edge window without its row:\n${figures.join('\n')}`);
  assert.deepEqual(connWrong.slice(0, 10), [], 'a server-role connections row for every nginx connection closed while an edge ran');
  assert.equal(lossRecords, 0, 'no loss in any phase');
  assert.equal(dlq, 0, 'nothing dead-lettered');
  assert.ok(midlife > 0, 'some connections were open across the new edge\'s start');
});

/** Messages in the dead-letter stream (0 when it was never created). */
async function deadLetters(nc: NatsConnection): Promise<number> {
  const jsm = await jetstreamManager(nc);
  try {
    return (await jsm.streams.info(DLQ_STREAM)).state.messages;
  } catch (err) {
    if (isJsApiError(err, JetStreamApiCodes.StreamNotFound)) return 0;
    throw err;
  }
}
