/**
 * A generated raw stream of HTTP/1 traffic and the rows it must produce, for tests that
 * run processors over it while killing, adding or stopping them.
 *
 * The stream comes from a seed: a few hundred keep-alive connections over 16 shards,
 * client and server sockets, some pipelining, POST bodies, HEAD, chunked and split
 * responses, truncated and sendfile captures, requests and their responses in different
 * envelopes, connections idle for longer than the request timeout and than the idle
 * eviction before their next exchange, a few last requests that are never answered (rows
 * that time out), CONN_INFO repeated as the kernel does (with the next data after 10 s),
 * CONN_CLOSE for most connections, loss counts on some envelopes, and heartbeats moving node
 * time on.
 */
import assert from 'node:assert/strict';
import { jetstream, jetstreamManager, JetStreamApiCodes } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { logger } from '../../lib/logger.js';
import { ensureStream } from '../../lib/raw-stream.js';
import { wallNs } from '../../processors/runtime/rows.js';
import { consumerName } from '../../processors/runtime/processor.js';
import { functionGroup } from '../../processors/runtime/lane.js';
import { isJsApiError } from '../../lib/nats.js';
import { encodeEnvelope, envelopeSubject, messageId, type Envelope, type LossCount } from '../../schemas/envelope.js';
import { CONN_INFO_REFRESH_NS, RecordKind, Role } from '../../schemas/records.js';
import { STREAM } from './processor-run.js';
import { captured, connClose, connInfo, connOpen, envelope, sockData, type TupleSpec } from './records.js';
import { prng } from './prng.js';

export const SHARDS = 16;
const CONNS = 320;
/** Where a generated stream comes from: its edge's region, node, run and boot. */
export interface Origin {
  region: string;
  node: string;
  run: string;
  boot: string;
}

const DEFAULT_ORIGIN: Origin = { region: 'test', node: 'node-k1', run: 'run-k1', boot: '6f1c2b9a-0d4e-4c11-9a57-3b8e2f7d1c05' };
/** The edge seals each shard's batch this often (node time). */
const WINDOW_NS = 200e6;
/** A shard quiet for this long gets a heartbeat envelope. */
const HEARTBEAT_NS = 10e9;
const EGRESS = 0;
const INGRESS = 1;

/** The connection id a processor gives a socket cookie of a node booted as `boot`. */
function connUuid(boot: string, cookie: number): string {
  const b = boot.replaceAll('-', '');
  const c = cookie.toString(16).padStart(16, '0');
  return `${b.slice(0, 8)}-${b.slice(8, 12)}-${b.slice(12, 16)}-${c.slice(0, 4)}-${c.slice(4)}`;
}

interface TimedRecord {
  shard: number;
  tsNs: number;
  /** Order of creation: records of one connection keep it when their times tie. */
  n: number;
  buf: Buffer;
}

/** What the stream must produce. */
export interface Expected {
  /** `node|conn_id|role|req_pos` → what the exchange was (for failure messages). */
  http: Map<string, string>;
  connections: string[];
  /** `run_id|kind|cause|records|ts_ns` */
  losses: string[];
}

export interface Generated {
  envelopes: Envelope[];
  expected: Expected;
}

/** The deterministic stream: records of every connection, sealed into envelopes. */
export function generate(seed: number, origin: Origin = DEFAULT_ORIGIN): Generated {
  const { node, run, boot } = origin;
  const connId = (cookie: number) => connUuid(boot, cookie);
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
      const { payload, dataFlags } = captured(bytes, o);
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
        expected.http.set(`${node}|${connId(cookie)}|${roleName}|${pos[reqDir] + batch.length}`, `shard ${shard} ${roleName}${pipelining ? ' pipelining' : ''} ${method} ${path}`);
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
      expected.http.set(`${node}|${connId(cookie)}|${roleName}|${pos[reqDir]}`, `shard ${shard} ${roleName} GET ${path} (times out)`);
      send(reqDir, t, `GET ${path} HTTP/1.1\r\nHost: svc${i % 7}.test\r\n\r\n`);
      t += 40e9 + rng() * 20e9;
    }
    if (chance(0.8)) {
      t += 1e6 + rng() * 50e6;
      push(t, connClose(h(t), tuple, { role, comm, openTsNs: Math.round(openTs), txBytes: pos[0], rxBytes: pos[1], oldState: 1 }));
      expected.connections.push(connId(cookie));
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
      const e = envelope({ seq: ++seq, shard: s, region: origin.region, node, run, boot, mono, records: records.map((r) => r.buf), lost });
      envelopes.push(e);
      for (const l of lost) expected.losses.push(`${run}|sock_data|${l.cause}|${l.records}|${wallNs(mono, e.clock)}`);
    }
  }
  return { envelopes, expected };
}

/** Publish envelopes as an edge would (the stream created first, kept without age limit). */
export async function publish(nc: NatsConnection, envelopes: Envelope[]): Promise<void> {
  await ensureStream(nc, { ...STREAM, maxAgeSeconds: 0 }, logger('test'));
  const js = jetstream(nc);
  // Pipelined publishes, acknowledged in bounded groups.
  for (let i = 0; i < envelopes.length; i += 256) {
    await Promise.all(envelopes.slice(i, i + 256).map((e) => js.publish(envelopeSubject(STREAM.subjectPrefix, e), encodeEnvelope(e), { msgID: messageId(e) })));
  }
}

/**
 * Messages the lanes of `functions` in `database` have yet to be delivered, over every
 * shard; a lane whose consumer is missing (its shard's new owner is recreating it) counts one.
 */
export async function pendingMessages(nc: NatsConnection, database: string, functions: string[]): Promise<number> {
  const jsm = await jetstreamManager(nc);
  let n = 0;
  for (let s = 0; s < SHARDS; s++) {
    try {
      n += (await jsm.consumers.info(STREAM.name, consumerName(database, functionGroup(functions), s))).num_pending;
    } catch (err) {
      if (!isJsApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
      n++;
    }
  }
  return n;
}

/** Rows a query returns. */
export type Query = <T>(sql: string) => Promise<T[]>;

/** Rows the stream's tables hold in `database`: http_requests, connections and capture_losses together. */
export async function committedRows(query: Query, database: string): Promise<number> {
  const [r] = await query<{ n: string }>(
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

/**
 * Assert that `database` holds every row the stream implies exactly once: http_requests by
 * (node, conn_id, role, req_pos), connections by conn_id, capture_losses by (run_id, kind,
 * cause, records, ts). `what` names the run in the failure message.
 */
export async function assertExactlyOnce(query: Query, database: string, expected: Expected, what: string): Promise<void> {
  const total = expected.http.size + expected.connections.length + expected.losses.length;
    const http = await query<{ k: string }>(
      `SELECT concat(node, '|', toString(conn_id), '|', toString(role), '|', toString(req_pos)) AS k FROM ${database}.http_requests`);
    const conns = await query<{ k: string }>(`SELECT toString(conn_id) AS k FROM ${database}.connections`);
    const losses = await query<{ k: string }>(
      `SELECT concat(run_id, '|', kind, '|', cause, '|', toString(records), '|', toString(toUnixTimestamp64Nano(ts))) AS k FROM ${database}.capture_losses`);
    const d = {
      http: diff(expected.http.keys(), http.map((r) => r.k)),
      connections: diff(expected.connections, conns.map((r) => r.k)),
      losses: diff(expected.losses, losses.map((r) => r.k)),
    };
    const seqs = d.http.doubled.length
      ? new Map((await query<{ k: string; seqs: string[] }>(
        `SELECT concat(node, '|', toString(conn_id), '|', toString(role), '|', toString(req_pos)) AS k, groupArray(toString(_seq)) AS seqs
         FROM ${database}.http_requests GROUP BY k HAVING count() > 1`)).map((r) => [r.k, r.seqs.join(',')]))
      : new Map<string, string>();
    const describe = (keys: string[]) => keys.slice(0, 20).map((k) => `${k} (${expected.http.get(k) ?? '?'}${seqs.has(k) ? `; _seq ${seqs.get(k)}` : ''})`);
    assert.deepEqual(
      { http: { missing: describe(d.http.missing), extra: d.http.extra.slice(0, 20), doubled: describe(d.http.doubled) }, connections: d.connections, losses: d.losses },
      { http: { missing: [], extra: [], doubled: [] }, connections: { missing: [], extra: [], doubled: [] }, losses: { missing: [], extra: [], doubled: [] } },
      `rows ${what}: ${d.http.missing.length} exchanges missing, ${d.http.doubled.length} doubled, ${d.http.extra.length} unexpected`,
    );
    assert.equal(http.length + conns.length + losses.length, total);
}
