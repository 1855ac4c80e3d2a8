/**
 * Recorded HTTP/1.1 traffic for the transport and processor benchmarks: keep-alive
 * conversations (GET API calls with JSON answers, static assets, POSTs whose body is a
 * second write, 304s, 404s, a few chunked answers), seeded and deterministic. Each
 * connection is captured at one end — half at the client, half at the server — so every
 * exchange is parsed once by netrig and appears once on the wire for a packet dissector.
 *
 * From one generated set of conversations come, byte for byte the same exchanges:
 * - kernel records as the BPF programs write them (CONN_OPEN, CONN_INFO, SOCK_DATA per
 *   write syscall in 8 KiB chunks, CONN_CLOSE), in time order as one 8-byte aligned blob
 *   (what the ring buffer and FileSource hold);
 * - envelopes as the edge seals them (edge/batcher.ts: per shard, 2048 records, 256 KiB,
 *   100 ms linger in node time), msgpack-encoded with their subjects and message ids;
 * - the TCP/IP packets of the same connections (bench/pcap.ts).
 */
import { Batcher, type SealedBatch } from '../edge/batcher.js';
import { FileSource } from '../edge/file-source.js';
import { ENVELOPE_VERSION, encodeEnvelope, envelopeSubject, messageId, type Envelope } from '../schemas/envelope.js';
import { REC_HDR } from '../schemas/layouts.js';
import { ConnFlags, DataFlags, REC_KIND_MAX, Role } from '../schemas/records.js';
import { connClose, connInfo, connOpen, sockData, type TupleSpec } from '../test/helpers/records.js';
import { prng } from '../test/helpers/prng.js';

/** One write syscall of one side. */
export interface Write {
  tsNs: number;
  /** Sent by the client (request bytes) or by the server. */
  fromClient: boolean;
  bytes: Buffer;
}

export interface Conversation {
  /** Socket cookie of the captured end (the record's conn_id). */
  cookie: number;
  /** Which end the kernel records describe. */
  captured: 'client' | 'server';
  client: { addr: string; port: number };
  server: { addr: string; port: number };
  openNs: number;
  closeNs: number;
  writes: Write[];
  exchanges: number;
  pid: number;
  comm: string;
}

export interface TrafficOptions {
  exchanges: number;
  connections: number;
  /** Node time the traffic spans. */
  spanNs: number;
  /** CLOCK_MONOTONIC of the first connection. */
  startNs: number;
  seed: number;
}

export interface Traffic {
  conversations: Conversation[];
  exchanges: number;
  /** Request and response bytes on the wire. */
  wireBytes: number;
}

const AGENTS = ['Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0', 'python-requests/2.31.0', 'Go-http-client/1.1', 'curl/8.5.0', 'okhttp/4.12.0'];
const HOSTS = ['api.shop.internal', 'static.shop.internal', 'auth.shop.internal', 'search.shop.internal'];
const DATE = 'Date: Tue, 14 Jan 2025 10:21:07 GMT\r\n';

/** A JSON-looking body of exactly `n` bytes. */
function jsonBody(r: () => number, n: number): Buffer {
  const parts: string[] = ['{"items":['];
  let len = parts[0].length;
  for (let i = 0; len < n; i++) {
    const s = `${i ? ',' : ''}{"id":${Math.floor(r() * 1e6)},"name":"item-${i}","price":${(r() * 100).toFixed(2)}}`;
    parts.push(s);
    len += s.length;
  }
  return Buffer.from(parts.join('').slice(0, n), 'latin1');
}

/** A static-asset-looking body of `n` bytes (shared, read-only). */
const ASSET = Buffer.from('function a(b){return b.map(function(c){return c*2})}\n'.repeat(400), 'latin1');

function head(status: string, headers: string[]): string {
  return `HTTP/1.1 ${status}\r\nServer: nginx/1.22.1\r\n${DATE}${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
}

/** One exchange: the writes of the request and of the response, relative to `t`. */
function exchange(r: () => number, host: string, ua: string, t: number): { writes: Write[]; end: number } {
  const writes: Write[] = [];
  const latency = 150_000 + Math.floor(r() * 2_000_000);
  const x = r();
  const common = `Host: ${host}\r\nUser-Agent: ${ua}\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n`;
  if (x < 0.55) {
    // API read: GET with a query, JSON answer.
    const path = `/api/v1/items/${Math.floor(r() * 100000)}?page=${1 + Math.floor(r() * 20)}&sort=price`;
    writes.push({ tsNs: t, fromClient: true, bytes: Buffer.from(`GET ${path} HTTP/1.1\r\n${common}Accept: application/json\r\nCookie: session=${Math.floor(r() * 1e12).toString(36)}\r\n\r\n`, 'latin1') });
    const body = jsonBody(r, 120 + Math.floor(r() * 1400));
    const h = head('200 OK', ['Content-Type: application/json', `Content-Length: ${body.length}`, 'Connection: keep-alive', 'Cache-Control: no-store']);
    writes.push({ tsNs: t + latency, fromClient: false, bytes: Buffer.concat([Buffer.from(h, 'latin1'), body]) });
  } else if (x < 0.7) {
    // Static asset: header and body in one writev.
    const size = 600 + Math.floor(r() * 5000);
    const path = `/static/app.${Math.floor(r() * 0xffffff).toString(16)}.js`;
    writes.push({ tsNs: t, fromClient: true, bytes: Buffer.from(`GET ${path} HTTP/1.1\r\n${common}Accept: */*\r\nReferer: https://${host}/\r\n\r\n`, 'latin1') });
    const h = head('200 OK', ['Content-Type: application/javascript', `Content-Length: ${size}`, 'Last-Modified: Mon, 13 Jan 2025 08:00:00 GMT', 'Connection: keep-alive', 'ETag: "6784c8a0-1a2b"', 'Accept-Ranges: bytes']);
    writes.push({ tsNs: t + latency, fromClient: false, bytes: Buffer.concat([Buffer.from(h, 'latin1'), ASSET.subarray(0, size)]) });
  } else if (x < 0.85) {
    // API write: POST, body as a second write, 201 or 204.
    const body = jsonBody(r, 80 + Math.floor(r() * 700));
    writes.push({ tsNs: t, fromClient: true, bytes: Buffer.from(`POST /api/v1/events HTTP/1.1\r\n${common}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nAuthorization: Bearer ${Math.floor(r() * 1e15).toString(36)}\r\n\r\n`, 'latin1') });
    writes.push({ tsNs: t + 20_000, fromClient: true, bytes: body });
    const created = r() < 0.5;
    const rb = created ? Buffer.from(`{"id":${Math.floor(r() * 1e9)}}`, 'latin1') : Buffer.alloc(0);
    const h = created
      ? head('201 Created', ['Content-Type: application/json', `Content-Length: ${rb.length}`, 'Connection: keep-alive', `Location: /api/v1/events/${Math.floor(r() * 1e9)}`])
      : head('204 No Content', ['Connection: keep-alive']);
    writes.push({ tsNs: t + latency, fromClient: false, bytes: Buffer.concat([Buffer.from(h, 'latin1'), rb]) });
  } else if (x < 0.93) {
    // Conditional GET: 304.
    writes.push({ tsNs: t, fromClient: true, bytes: Buffer.from(`GET /static/logo.svg HTTP/1.1\r\n${common}Accept: image/*\r\nIf-None-Match: "6784c8a0-2f1"\r\nIf-Modified-Since: Mon, 13 Jan 2025 08:00:00 GMT\r\n\r\n`, 'latin1') });
    writes.push({ tsNs: t + latency, fromClient: false, bytes: Buffer.from(head('304 Not Modified', ['Last-Modified: Mon, 13 Jan 2025 08:00:00 GMT', 'Connection: keep-alive', 'ETag: "6784c8a0-2f1"']), 'latin1') });
  } else if (x < 0.97) {
    // Missing: 404 with nginx's page.
    const page = Buffer.from('<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n', 'latin1');
    writes.push({ tsNs: t, fromClient: true, bytes: Buffer.from(`GET /api/v2/unknown/${Math.floor(r() * 1000)} HTTP/1.1\r\n${common}Accept: */*\r\n\r\n`, 'latin1') });
    writes.push({ tsNs: t + latency, fromClient: false, bytes: Buffer.concat([Buffer.from(head('404 Not Found', ['Content-Type: text/html', `Content-Length: ${page.length}`, 'Connection: keep-alive']), 'latin1'), page]) });
  } else {
    // Streamed search results: chunked, three writes.
    writes.push({ tsNs: t, fromClient: true, bytes: Buffer.from(`GET /search?q=item+${Math.floor(r() * 1000)} HTTP/1.1\r\n${common}Accept: application/json\r\n\r\n`, 'latin1') });
    const c1 = jsonBody(r, 200 + Math.floor(r() * 400));
    const c2 = jsonBody(r, 200 + Math.floor(r() * 400));
    const chunk = (b: Buffer) => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`, 'latin1'), b, Buffer.from('\r\n', 'latin1')]);
    writes.push({ tsNs: t + latency, fromClient: false, bytes: Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: application/json', 'Transfer-Encoding: chunked', 'Connection: keep-alive']), 'latin1'), chunk(c1)]) });
    writes.push({ tsNs: t + latency + 300_000, fromClient: false, bytes: chunk(c2) });
    writes.push({ tsNs: t + latency + 400_000, fromClient: false, bytes: Buffer.from('0\r\n\r\n', 'latin1') });
  }
  return { writes, end: writes[writes.length - 1].tsNs };
}

/** Generate keep-alive conversations carrying `o.exchanges` exchanges over `o.connections` connections. */
export function generateTraffic(o: TrafficOptions): Traffic {
  const r = prng(o.seed);
  const conversations: Conversation[] = [];
  const perConn = Math.floor(o.exchanges / o.connections);
  let extra = o.exchanges - perConn * o.connections;
  let wireBytes = 0;
  for (let i = 0; i < o.connections; i++) {
    const n = perConn + (extra-- > 0 ? 1 : 0);
    const captured = i % 2 ? 'server' : 'client';
    const host = HOSTS[i % HOSTS.length];
    const ua = AGENTS[i % AGENTS.length];
    // Connections start over the first tenth of the span; exchanges spread over the rest.
    const openNs = o.startNs + Math.floor(r() * o.spanNs * 0.1);
    const gap = Math.max(1_000_000, Math.floor((o.spanNs * 0.9) / Math.max(1, n)));
    const writes: Write[] = [];
    let t = openNs + 200_000;
    for (let k = 0; k < n; k++) {
      const x = exchange(r, host, ua, t);
      for (const w of x.writes) {
        writes.push(w);
        wireBytes += w.bytes.length;
      }
      t = Math.max(x.end + 100_000, t + Math.floor(gap * (0.5 + r())));
    }
    conversations.push({
      cookie: 0x10000 + i * 7919,
      captured,
      client: { addr: `10.${10 + ((i >> 16) & 0xff)}.${(i >> 8) & 0xff}.${1 + (i & 0xff) % 250}`, port: 30000 + (i % 30000) },
      server: { addr: `10.200.0.${1 + (i % 8)}`, port: i % 3 ? 8080 : 80 },
      openNs,
      closeNs: t + 50_000,
      writes,
      exchanges: n,
      pid: captured === 'server' ? 777 : 4000 + (i % 50),
      comm: captured === 'server' ? 'nginx' : ['python3', 'curl', 'java', 'node'][i % 4],
    });
  }
  return { conversations, exchanges: o.exchanges, wireBytes };
}

const CHUNK = 8192;

interface TimedRecord {
  tsNs: number;
  /** Order among records of the same time. */
  n: number;
  buf: Buffer;
}

/** The kernel records of one conversation, as its captured end's socket produces them. */
function conversationRecords(c: Conversation, out: TimedRecord[], seq: { n: number }): void {
  const server = c.captured === 'server';
  const local = server ? c.server : c.client;
  const remote = server ? c.client : c.server;
  const tuple: TupleSpec = { saddr: local.addr, sport: local.port, daddr: remote.addr, dport: remote.port };
  const role = server ? Role.Server : Role.Client;
  const h = (tsNs: number) => ({ tsNs, connId: c.cookie, tgid: c.pid, pid: c.pid });
  const push = (tsNs: number, buf: Buffer) => out.push({ tsNs, n: seq.n++, buf });
  push(c.openNs, connOpen({ tsNs: c.openNs, connId: c.cookie, tgid: server ? 0 : c.pid }, tuple, role, server ? '' : c.comm));
  push(c.openNs + 1000, connInfo(h(c.openNs + 1000), tuple, role, c.comm, ConnFlags.Captured, c.openNs));
  const pos: [number, number] = [0, 0];
  for (const w of c.writes) {
    // Egress when the captured end wrote it.
    const dir: 0 | 1 = w.fromClient !== server ? 0 : 1;
    const len = w.bytes.length;
    for (let off = 0; off < len; off += CHUNK) {
      const end = Math.min(len, off + CHUNK);
      push(w.tsNs, sockData(h(w.tsNs), {
        direction: dir, posBytes: pos[dir] + off, payload: w.bytes.subarray(off, end), lenBytes: len, offsetBytes: off,
        dataFlags: end === len ? DataFlags.Last : 0, syscall: dir === 0 ? 4 : 1,
      }));
    }
    pos[dir] += len;
  }
  push(c.closeNs, connClose(h(c.closeNs), tuple, { role, comm: c.comm, openTsNs: c.openNs, txBytes: pos[0], rxBytes: pos[1] }));
}

/** Every record of the traffic in time order as one 8-byte aligned blob, and the record count. */
export function recordBlob(t: Traffic): { blob: Buffer; records: number } {
  const recs: TimedRecord[] = [];
  const seq = { n: 0 };
  for (const c of t.conversations) conversationRecords(c, recs, seq);
  recs.sort((a, b) => a.tsNs - b.tsNs || a.n - b.n);
  let size = 0;
  for (const r of recs) size += (r.buf.length + 7) & ~7;
  const blob = Buffer.alloc(size);
  let off = 0;
  for (const r of recs) {
    r.buf.copy(blob, off);
    off += (r.buf.length + 7) & ~7;
  }
  return { blob, records: recs.length };
}

/** A JetStream message as the edge publishes it. */
export interface EncodedEnvelope {
  subject: string;
  msgId: string;
  shard: number;
  data: Buffer;
  records: number;
}

export interface SealOptions {
  node: string;
  region: string;
  run: string;
  boot: string;
  subjectPrefix: string;
  shards: number;
  /** CLOCK_REALTIME − CLOCK_MONOTONIC the envelopes carry. */
  clock: [number, number];
}

/**
 * Seal a record blob into envelopes exactly as the edge does (its Batcher, its limits, a
 * 100 ms linger on node time), in the order the edge would publish them.
 */
export function sealEnvelopes(blob: Buffer, o: SealOptions): EncodedEnvelope[] {
  const out: EncodedEnvelope[] = [];
  let seq = 0;
  let nowNs = 0;
  const seal = (b: SealedBatch) => {
    const e: Envelope = {
      v: ENVELOPE_VERSION, region: o.region, node: o.node, run: o.run, seq: ++seq, shard: b.shard, boot: o.boot,
      clock: o.clock, mono: nowNs, count: b.count, records: b.records, lost: [],
    };
    out.push({ subject: envelopeSubject(o.subjectPrefix, e), msgId: messageId(e), shard: b.shard, data: encodeEnvelope(e), records: b.count });
  };
  const batcher = new Batcher({ shards: o.shards, maxBatchBytes: 256 * 1024, maxBatchRecords: 2048 }, seal);
  const src = new FileSource(blob);
  const LINGER_MS = 100;
  let lastFlushMs = 0;
  const visit = (data: Uint8Array, off: number, len: number) => {
    const ts = data[off + REC_HDR.fields.ts_ns] + data[off + 9] * 2 ** 8 + data[off + 10] * 2 ** 16 + data[off + 11] * 2 ** 24
      + (data[off + 12] + data[off + 13] * 2 ** 8 + data[off + 14] * 2 ** 16 + data[off + 15] * 2 ** 24) * 2 ** 32;
    nowNs = ts;
    const nowMs = ts / 1e6;
    if (nowMs - lastFlushMs >= 1) {
      batcher.flush(nowMs - LINGER_MS);
      lastFlushMs = nowMs;
    }
    batcher.add(data, off, len, nowMs);
  };
  while (!src.exhausted) src.poll(visit);
  batcher.flush();
  return out;
}

/** Records per kind in a blob (index = kind), to check what a pipeline delivered. */
export function kindsOf(blob: Buffer): Uint32Array {
  const kinds = new Uint32Array(REC_KIND_MAX);
  for (let off = 0; off + REC_HDR.size <= blob.length;) {
    const kind = blob.readUInt16LE(off);
    const size = blob.readUInt32LE(off + 4);
    if (kind < REC_KIND_MAX) kinds[kind]++;
    off += (size + 7) & ~7;
  }
  return kinds;
}
