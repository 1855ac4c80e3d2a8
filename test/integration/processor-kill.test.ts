/**
 * Exactly-once rows across crashes: a processor (the `netrig process` CLI, a child process)
 * is killed with SIGKILL three times in the middle of a stream, restarted on the same data
 * dir and database each time, and finally stopped once it has consumed everything. Every
 * row the stream implies must then be in ClickHouse exactly once: http_requests by (node,
 * conn_id, role, req_pos), connections by conn_id, capture_losses by (run_id, kind, cause,
 * records, ts).
 *
 * The stream is generated from a seed: a few hundred keep-alive connections over 16 shards,
 * client and server sockets, some pipelining, POST bodies, HEAD, chunked and split
 * responses, truncated and sendfile captures, requests and their responses in different
 * envelopes, connections idle for longer than the request timeout and than the idle
 * eviction before their next exchange, a few last requests that are never answered (rows
 * that time out), CONN_INFO repeated as the kernel does (with the next data after 10 s),
 * CONN_CLOSE for most connections, loss counts on some envelopes, and heartbeats moving node
 * time on. It is fed to the stream while the processor runs, as an edge would, and each run
 * is killed once a share of the rows is committed (asserted afterwards: some, not all).
 *
 * The embedded engine allows one process per data dir, so the test never opens it itself:
 * it reads rows through `netrig query` (another child) while no processor runs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { logger } from '../../lib/logger.js';
import { ensureStream } from '../../lib/raw-stream.js';
import { consumerName } from '../../processors/runtime/processor.js';
import { wallNs } from '../../processors/runtime/rows.js';
import { encodeEnvelope, envelopeSubject, messageId, type Envelope, type LossCount } from '../../schemas/envelope.js';
import { CONN_INFO_REFRESH_NS, DataFlags, RecordKind, Role } from '../../schemas/records.js';
import { onExit } from '../helpers/cleanup.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { ProcessorChild, queryStore as query } from '../helpers/processor-child.js';
import { STREAM } from '../helpers/processor-run.js';
import { connClose, connInfo, connOpen, envelope, sockData, type TupleSpec } from '../helpers/records.js';
import { prng } from '../helpers/prng.js';

let nats: NatsServerHandle;
let nc: NatsConnection;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

const SEED = 0x5eed_2024;
const SHARDS = 16;
const CONNS = 320;
const NODE = 'node-k1';
const RUN = 'run-k1';
const BOOT = '6f1c2b9a-0d4e-4c11-9a57-3b8e2f7d1c05';
const FUNCTIONS = ['http1', 'tcp', 'losses'];
/** The edge seals each shard's batch this often (node time). */
const WINDOW_NS = 200e6;
/** A shard quiet for this long gets a heartbeat envelope. */
const HEARTBEAT_NS = 10e9;
/** Envelopes published at a time while a processor runs, and the pause after each group. */
const FEED_BATCH = 32;
const FEED_PAUSE_MS = 10;
/** Each run is killed once this share of all rows is committed; the last run finishes. */
const KILL_AT = [0.2, 0.45, 0.7];
const EGRESS = 0;
const INGRESS = 1;

function connUuid(cookie: number): string {
  const c = cookie.toString(16).padStart(16, '0');
  return `6f1c2b9a-0d4e-4c11-${c.slice(0, 4)}-${c.slice(4)}`;
}

interface TimedRecord {
  shard: number;
  tsNs: number;
  /** Order of creation: records of one connection keep it when their times tie. */
  n: number;
  buf: Buffer;
}

/** What the stream must produce. */
interface Expected {
  /** `node|conn_id|role|req_pos` → what the exchange was (for failure messages). */
  http: Map<string, string>;
  connections: string[];
  /** `run_id|kind|cause|records|ts_ns` */
  losses: string[];
}

interface Generated {
  envelopes: Envelope[];
  expected: Expected;
}

/** The deterministic stream: records of every connection, sealed into envelopes. */
function generate(seed: number): Generated {
  const rng = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
  const chance = (p: number) => rng() < p;
  const recs: TimedRecord[] = [];
  let n = 0;
  const expected: Expected = { http: new Map(), connections: [], losses: [] };

  for (let i = 0; i < CONNS; i++) {
    const cookie = 0x4000_0000 + i * 7919;
    const shard = i % SHARDS;
    const server = chance(0.3);
    const role = server ? Role.Server : Role.Client;
    const roleName = server ? 'server' : 'client';
    const pipelining = !server && chance(0.2);
    // A few connections stay idle past the idle eviction (600 s of node time).
    const veryIdleAt = i % 40 === 7 ? int(2, 5) : -1;
    const client = { addr: `10.${20 + (i >> 8)}.${i & 0xff}.${1 + (i % 250)}`, port: 20000 + i };
    const srv = { addr: `10.9.0.${1 + (i % 5)}`, port: i % 3 ? 80 : 8080 };
    const tuple: TupleSpec = server
      ? { saddr: srv.addr, sport: srv.port, daddr: client.addr, dport: client.port }
      : { saddr: client.addr, sport: client.port, daddr: srv.addr, dport: srv.port };
    const pid = 1000 + (i % 37);
    const comm = server ? 'nginx' : ['curl', 'python3', 'wrk', 'java'][i % 4];
    const reqDir = server ? INGRESS : EGRESS;
    const respDir = 1 - reqDir;
    const pos: [number, number] = [0, 0];
    const push = (tsNs: number, buf: Buffer) => recs.push({ shard, tsNs: Math.round(tsNs), n: n++, buf });
    const h = (tsNs: number) => ({ tsNs: Math.round(tsNs), connId: cookie, tgid: pid });
    // The kernel announces a socket (CONN_INFO) with its first data, and again with its
    // next data once CONN_INFO_REFRESH_NS has passed.
    let infoTs = -Infinity;
    /** One syscall; `cap` bytes captured (Truncated) or none (`nobuf`, sendfile). */
    const send = (dir: number, tsNs: number, text: string, o: { cap?: number; nobuf?: boolean } = {}) => {
      if (tsNs - infoTs > CONN_INFO_REFRESH_NS) {
        infoTs = tsNs;
        push(tsNs, connInfo(h(tsNs), tuple, role, comm));
      }
      const bytes = Buffer.from(text, 'latin1');
      let payload = bytes;
      let dataFlags: number = DataFlags.Last;
      if (o.nobuf) {
        payload = Buffer.alloc(0);
        dataFlags |= DataFlags.NoBuffer | DataFlags.Truncated;
      } else if (o.cap !== undefined && o.cap < bytes.length) {
        payload = bytes.subarray(0, o.cap);
        dataFlags |= DataFlags.Truncated;
      }
      push(tsNs, sockData(h(tsNs), { direction: dir as 0 | 1, posBytes: pos[dir], payload, lenBytes: bytes.length, dataFlags }));
      pos[dir] += bytes.length;
    };

    let t = 1e9 + rng() * 40e9;
    const openTs = t;
    push(t, connOpen({ ...h(t), tgid: server ? 0 : pid }, tuple, role, server ? '' : comm));
    const exchanges = int(6, 16);
    for (let k = 0; k < exchanges; ) {
      // Think time; now and then a long idle (beyond the 30 s request timeout), once in a
      // while beyond the idle eviction.
      t += k === veryIdleAt ? 620e9 + rng() * 80e9 : chance(0.06) ? 35e9 + rng() * 55e9 : 1e6 + rng() * 400e6;
      const burst = pipelining && chance(0.5) ? Math.min(int(2, 3), exchanges - k) : 1;
      const methods: string[] = [];
      let oneSyscall = chance(0.5);
      let batch = '';
      for (let j = 0; j < burst; j++, k++) {
        const m = rng();
        const method = m < 0.7 ? 'GET' : m < 0.85 ? 'POST' : 'HEAD';
        methods.push(method);
        const path = `/c${i}/r${k}?q=${int(0, 99999)}`;
        expected.http.set(`${NODE}|${connUuid(cookie)}|${roleName}|${pos[reqDir] + batch.length}`, `shard ${shard} ${roleName}${pipelining ? ' pipelining' : ''} ${method} ${path}`);
        let req = `${method} ${path} HTTP/1.1\r\nHost: svc${i % 7}.test\r\nUser-Agent: gen/1.0\r\n`;
        if (method === 'POST') {
          const body = 'p'.repeat(int(10, 400));
          req += `Content-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n`;
          if (burst === 1 && chance(0.4)) {
            // Head and body in two syscalls.
            send(reqDir, t, req);
            t += 10_000 + rng() * 2e6;
            send(reqDir, t, body);
            oneSyscall = false;
            continue;
          }
          req += body;
        } else {
          req += '\r\n';
        }
        if (oneSyscall && burst > 1) {
          batch += req;
        } else {
          send(reqDir, t, req);
          t += 10_000 + rng() * 1e6;
        }
      }
      if (batch) {
        send(reqDir, t, batch);
        t += 10_000;
      }
      // Responses in order, the first after the server's think time.
      t += 1e6 + rng() * 400e6;
      for (const method of methods) {
        const status = method === 'POST' ? (chance(0.8) ? '201 Created' : '500 Internal Server Error') : chance(0.85) ? '200 OK' : '404 Not Found';
        if (method === 'HEAD') {
          send(respDir, t, `HTTP/1.1 ${status}\r\nContent-Length: ${int(1000, 5_000_000)}\r\n\r\n`);
        } else if (chance(0.15)) {
          const chunks = Array.from({ length: int(1, 3) }, () => 'k'.repeat(int(1, 300)));
          send(respDir, t, `HTTP/1.1 ${status}\r\nTransfer-Encoding: chunked\r\n\r\n`);
          for (const c of chunks) {
            t += 10_000 + rng() * 30e6;
            send(respDir, t, `${c.length.toString(16)}\r\n${c}\r\n`);
          }
          t += 10_000 + rng() * 30e6;
          send(respDir, t, '0\r\n\r\n');
        } else {
          const body = 'z'.repeat(int(0, 3000));
          const head = `HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n`;
          const split = body.length > 0 && chance(0.3);
          if (!split) {
            send(respDir, t, head + body, chance(0.05) ? { cap: head.length + 10 } : {});
          } else {
            send(respDir, t, head);
            t += 10_000 + rng() * 20e6;
            send(respDir, t, body, server && chance(0.3) ? { nobuf: true } : chance(0.1) ? { cap: 16 } : {});
          }
        }
        // Pipelined responses come apart, often in different envelopes.
        t += 10_000 + rng() * (methods.length > 1 ? 300e6 : 3e6);
      }
    }
    if (chance(0.06)) {
      // A last request that is never answered: it times out after 30 s of node time, before
      // the client gives up.
      t += 1e6 + rng() * 400e6;
      const path = `/c${i}/unanswered`;
      expected.http.set(`${NODE}|${connUuid(cookie)}|${roleName}|${pos[reqDir]}`, `shard ${shard} ${roleName} GET ${path} (times out)`);
      send(reqDir, t, `GET ${path} HTTP/1.1\r\nHost: svc${i % 7}.test\r\n\r\n`);
      t += 40e9 + rng() * 20e9;
    }
    if (chance(0.8)) {
      t += 1e6 + rng() * 50e6;
      push(t, connClose(h(t), tuple, { role, comm, openTsNs: Math.round(openTs), txBytes: pos[0], rxBytes: pos[1], oldState: 1 }));
      expected.connections.push(connUuid(cookie));
    }
  }

  // Seal: one envelope per shard per window with records, heartbeats for quiet shards, a
  // loss count on some.
  recs.sort((a, b) => a.tsNs - b.tsNs || a.n - b.n);
  const end = recs[recs.length - 1].tsNs + 4 * HEARTBEAT_NS;
  const byWindow = new Map<number, TimedRecord[][]>();
  for (const r of recs) {
    const w = Math.floor(r.tsNs / WINDOW_NS);
    let shards = byWindow.get(w);
    if (!shards) byWindow.set(w, (shards = Array.from({ length: SHARDS }, () => [])));
    shards[r.shard].push(r);
  }
  const envelopes: Envelope[] = [];
  const lastSent = new Array<number>(SHARDS).fill(0);
  let seq = 0;
  for (let w = 0; (w + 1) * WINDOW_NS <= end + WINDOW_NS; w++) {
    const mono = (w + 1) * WINDOW_NS;
    const shards = byWindow.get(w);
    for (let s = 0; s < SHARDS; s++) {
      const records = shards?.[s] ?? [];
      if (!records.length && mono - lastSent[s] < HEARTBEAT_NS) continue;
      lastSent[s] = mono;
      const lost: LossCount[] = chance(0.02) ? [{ kind: RecordKind.SockData, cause: chance(0.5) ? 'ringbuf_full' : 'buffer_full', records: int(1, 500) }] : [];
      const e = envelope({ seq: ++seq, shard: s, node: NODE, run: RUN, boot: BOOT, mono, records: records.map((r) => r.buf), lost });
      envelopes.push(e);
      for (const l of lost) expected.losses.push(`${RUN}|sock_data|${l.cause}|${l.records}|${wallNs(mono, e.clock)}`);
    }
  }
  return { envelopes, expected };
}

async function publish(envelopes: Envelope[]): Promise<void> {
  await ensureStream(nc, { ...STREAM, maxAgeSeconds: 0 }, logger('test'));
  const js = jetstream(nc);
  // Pipelined publishes, acknowledged in bounded groups.
  for (let i = 0; i < envelopes.length; i += 256) {
    await Promise.all(envelopes.slice(i, i + 256).map((e) => js.publish(envelopeSubject(STREAM.subjectPrefix, e), encodeEnvelope(e), { msgID: messageId(e) })));
  }
}

async function committedRows(dataDir: string, database: string): Promise<number> {
  const [r] = await query<{ n: string }>(dataDir, database,
    `SELECT (SELECT count() FROM ${database}.http_requests) + (SELECT count() FROM ${database}.connections) + (SELECT count() FROM ${database}.capture_losses) AS n`);
  return Number(r.n);
}

/** Multiset difference: keys of `want` missing from `got`, keys of `got` not in `want`, keys found more than once. */
function diff(want: Iterable<string>, got: string[]): { missing: string[]; extra: string[]; doubled: string[] } {
  const left = new Map<string, number>();
  for (const k of want) left.set(k, (left.get(k) ?? 0) + 1);
  const seen = new Map<string, number>();
  for (const k of got) seen.set(k, (seen.get(k) ?? 0) + 1);
  const missing: string[] = [];
  const extra: string[] = [];
  const doubled: string[] = [];
  for (const [k, c] of left) if ((seen.get(k) ?? 0) < c) missing.push(k);
  for (const [k, c] of seen) {
    const w = left.get(k) ?? 0;
    if (w === 0) extra.push(k);
    else if (c > w) doubled.push(k);
  }
  return { missing, extra, doubled };
}

test('SIGKILL three times mid-stream, restart, and every row is there exactly once', async () => {
  const { envelopes, expected } = generate(SEED);
  const total = expected.http.size + expected.connections.length + expected.losses.length;
  assert.ok(expected.http.size > 3000, `a large stream (${expected.http.size} exchanges, ${envelopes.length} envelopes)`);

  const dataDir = mkdtempSync(join(tmpdir(), `netrig-kill-${process.pid}-`));
  const unregister = onExit(`processor data ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
  const database = `kill_${process.pid}`;
  const children: ProcessorChild[] = [];
  const start = () => {
    const c = new ProcessorChild(nats.url, dataDir, database, FUNCTIONS);
    children.push(c);
    return c;
  };
  try {
    // The stream is fed as an edge would, a few envelopes at a time, while the processor
    // runs; each run is killed once the rows committed so far pass a share of the total,
    // a seeded few milliseconds later, with the feed going on.
    let next = 0;
    const feed = async () => {
      const batch = envelopes.slice(next, next + FEED_BATCH);
      next += batch.length;
      await publish(batch);
      await new Promise((r) => setTimeout(r, FEED_PAUSE_MS));
    };
    await feed();
    const rng = prng(SEED ^ 0x9e3779b9);
    let before = 0;
    for (const share of KILL_AT) {
      const c = start();
      await c.port;
      // At least one row of its own: a run before it may have overshot this share.
      const goal = Math.max(Math.floor(total * share) - before, 1);
      const deadline = Date.now() + 60_000;
      while ((await c.metric('netrig_processor_rows_total')) < goal) {
        assert.ok(Date.now() < deadline, `run ${children.length} did not commit ${goal} rows in time:\n${c.log()}`);
        if (next < envelopes.length) await feed();
        else await new Promise((r) => setTimeout(r, FEED_PAUSE_MS));
      }
      const killAt = Date.now() + Math.floor(rng() * 40);
      while (Date.now() < killAt && next < envelopes.length) await feed();
      await c.signal('SIGKILL');
      assert.equal(c.child.signalCode, 'SIGKILL', 'the processor was killed, not stopped');
      const committed = await committedRows(dataDir, database);
      assert.ok(committed > before && committed < total, `kill ${children.length} landed mid-stream: ${before} < ${committed} < ${total}`);
      before = committed;
    }

    // The last run consumes the rest of the stream, then stops cleanly.
    const c = start();
    await c.port;
    while (next < envelopes.length) await feed();
    const jsm = await jetstreamManager(nc);
    const deadline = Date.now() + 120_000;
    let stable = 0;
    let lastRows = -1;
    for (;;) {
      assert.ok(Date.now() < deadline, `the last run did not finish in time:\n${c.log()}`);
      await new Promise((r) => setTimeout(r, 250));
      const rowsNow = await c.metric('netrig_processor_rows_total');
      if (before + rowsNow === total) break;
      let pending = 0;
      for (const fn of FUNCTIONS) for (let s = 0; s < SHARDS; s++) pending += (await jsm.consumers.info(STREAM.name, consumerName(database, fn, s))).num_pending;
      // Short of the expected count: done once nothing is pending and no row came for 2 s.
      stable = pending === 0 && rowsNow === lastRows ? stable + 1 : 0;
      lastRows = rowsNow;
      if (stable >= 8) break;
    }
    assert.equal(await c.signal('SIGTERM'), 0, `the last run stopped cleanly:\n${c.log()}`);

    const http = await query<{ k: string }>(dataDir, database,
      `SELECT concat(node, '|', toString(conn_id), '|', toString(role), '|', toString(req_pos)) AS k FROM ${database}.http_requests`);
    const conns = await query<{ k: string }>(dataDir, database, `SELECT toString(conn_id) AS k FROM ${database}.connections`);
    const losses = await query<{ k: string }>(dataDir, database,
      `SELECT concat(run_id, '|', kind, '|', cause, '|', toString(records), '|', toString(toUnixTimestamp64Nano(ts))) AS k FROM ${database}.capture_losses`);
    const d = {
      http: diff(expected.http.keys(), http.map((r) => r.k)),
      connections: diff(expected.connections, conns.map((r) => r.k)),
      losses: diff(expected.losses, losses.map((r) => r.k)),
    };
    const seqs = d.http.doubled.length
      ? new Map((await query<{ k: string; seqs: string[] }>(dataDir, database,
        `SELECT concat(node, '|', toString(conn_id), '|', toString(role), '|', toString(req_pos)) AS k, groupArray(toString(_seq)) AS seqs
         FROM ${database}.http_requests GROUP BY k HAVING count() > 1`)).map((r) => [r.k, r.seqs.join(',')]))
      : new Map<string, string>();
    const describe = (keys: string[]) => keys.slice(0, 20).map((k) => `${k} (${expected.http.get(k) ?? '?'}${seqs.has(k) ? `; _seq ${seqs.get(k)}` : ''})`);
    assert.deepEqual(
      { http: { missing: describe(d.http.missing), extra: d.http.extra.slice(0, 20), doubled: describe(d.http.doubled) }, connections: d.connections, losses: d.losses },
      { http: { missing: [], extra: [], doubled: [] }, connections: { missing: [], extra: [], doubled: [] }, losses: { missing: [], extra: [], doubled: [] } },
      `rows after ${children.length - 1} kills: ${d.http.missing.length} exchanges missing, ${d.http.doubled.length} doubled, ${d.http.extra.length} unexpected`,
    );
    assert.equal(http.length + conns.length + losses.length, total);
  } finally {
    for (const c of children) await c.signal('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    unregister();
  }
});
