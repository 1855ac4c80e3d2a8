/**
 * Recorded http1 traffic through a real nats-server into the embedded ClickHouse engine:
 * byte-exact kernel records (CONN_OPEN, CONN_INFO, SOCK_DATA both ways, CONN_CLOSE) spread
 * over shards and envelopes, heartbeats driving time. Every http_requests row is checked
 * column by column: one exchange seen from both ends (client and server rows), keep-alive,
 * pipelining, a chunked response, HEAD, a 404, a truncated capture and a sendfile body, a
 * request that times out only once envelope time passes 30 s, and a connection captured in
 * the middle of its life that must not pair a request with a response it did not cause.
 * Then fresh consumers read the whole stream again into the same database: no row is added.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { logger } from '../../lib/logger.js';
import { ensureStream } from '../../lib/raw-stream.js';
import { http1Function } from '../../processors/http1/index.js';
import { lossesFunction } from '../../processors/losses/index.js';
import { Processor, consumerName } from '../../processors/runtime/processor.js';
import { functionGroup } from '../../processors/runtime/lane.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { encodeEnvelope, envelopeSubject, messageId, type Envelope } from '../../schemas/envelope.js';
import { ConnFlags, RecordKind, Role } from '../../schemas/records.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { freshClickHouse, removeClickHouseData, rows, STREAM, waitFor } from '../helpers/processor-run.js';
import { captured, connClose, connInfo, connOpen, envelope, sockData, type TupleSpec } from '../helpers/records.js';

let nc: NatsConnection;

natsServerForFile((_server, conn) => {
  nc = conn;
});
after(() => removeClickHouseData());

const BOOT = '3e43dd63-6003-4ed5-8a7e-59214f932070';
const NODE = 'node1';
const SHARDS = [0, 1, 2, 3];
const FUNCTIONS = [http1Function, tcpFunction, lossesFunction];
/** The envelopes' CLOCK_REALTIME − CLOCK_MONOTONIC (records.ts `envelope`): 2023-11-14 22:13:20 UTC. */
const EPOCH_S = 1_700_000_000;

const ms = (t: number): number => Math.round(t * 1e6);

/** DateTime64(9) text of a monotonic timestamp under the fixture clock. */
function dt(monoNs: number): string {
  const s = EPOCH_S + Math.floor(monoNs / 1e9);
  const frac = String(monoNs % 1e9).padStart(9, '0');
  return `${new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ')}.${frac}`;
}

function connUuid(cookie: number): string {
  return `3e43dd63-6003-4ed5-${cookie.toString(16).padStart(16, '0').slice(0, 4)}-${cookie.toString(16).padStart(16, '0').slice(4)}`;
}

interface TimedRecord {
  shard: number;
  tsNs: number;
  buf: Buffer;
}

/** One socket as the kernel reports it: positions per direction, records in time order. */
class Sock {
  /** Next position per direction: 0 egress, 1 ingress. */
  readonly pos: [number, number] = [0, 0];

  constructor(
    private readonly out: TimedRecord[],
    readonly o: { cookie: number; shard: number; tuple: TupleSpec; role: number; pid: number; comm: string },
  ) {}

  private push(tsNs: number, buf: Buffer): void {
    this.out.push({ shard: this.o.shard, tsNs, buf });
  }

  /** CONN_OPEN: a server socket's names no owner (accept runs in softirq context). */
  open(tsNs: number): void {
    const server = this.o.role === Role.Server;
    this.push(tsNs, connOpen({ tsNs, connId: this.o.cookie, tgid: server ? 0 : this.o.pid }, this.o.tuple, this.o.role, server ? '' : this.o.comm));
  }

  info(tsNs: number, connFlags: number = ConnFlags.Captured): void {
    this.push(tsNs, connInfo({ tsNs, connId: this.o.cookie, tgid: this.o.pid }, this.o.tuple, this.o.role, this.o.comm, connFlags));
  }

  /**
   * One syscall moving `text` in direction `dir`: captured whole, or only its first `cap`
   * bytes (Truncated), or none of them (`nobuf`: sendfile, NoBuffer). Returns its position.
   */
  send(dir: 0 | 1, tsNs: number, text: string, o: { cap?: number; nobuf?: boolean } = {}): number {
    const bytes = Buffer.from(text, 'latin1');
    const at = this.pos[dir];
    const { payload, dataFlags } = captured(bytes, o);
    this.push(tsNs, sockData({ tsNs, connId: this.o.cookie, tgid: this.o.pid }, { direction: dir, posBytes: at, payload, lenBytes: bytes.length, dataFlags }));
    this.pos[dir] += bytes.length;
    return at;
  }

  close(tsNs: number, openTsNs: number): void {
    this.push(tsNs, connClose({ tsNs, connId: this.o.cookie, tgid: this.o.pid }, this.o.tuple, {
      role: this.o.role, comm: this.o.comm, openTsNs, txBytes: this.pos[0], rxBytes: this.pos[1],
    }));
  }
}

const EGRESS = 0;
const INGRESS = 1;

const get = (path: string, host: string, ua = 'curl/8.5.0'): string => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: ${ua}\r\nAccept: */*\r\n\r\n`;
const respHead = (status: string, headers: string[]): string => `HTTP/1.1 ${status}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;

const INDEX_BODY = 'x'.repeat(512);
const REQ_INDEX = get('/index.html', 'web.test');
const RESP_INDEX_HEAD = respHead('200 OK', ['Content-Type: text/html', `Content-Length: ${INDEX_BODY.length}`]);
const REQ_MISSING = get('/missing', 'web.test');
const RESP_MISSING = `${respHead('404 Not Found', ['Content-Type: text/plain', 'Content-Length: 9'])}not found`;

const REQ_ITEMS = get('/api/items?page=2', 'api.test', 'python-requests/2.31');
const ITEMS_BODY = '[{"id":1},{"id":2},{"id":3}]';
const RESP_ITEMS = `${respHead('200 OK', ['Content-Type: application/json', `Content-Length: ${ITEMS_BODY.length}`])}${ITEMS_BODY}`;
const REQ_HEAD = 'HEAD /download/big.iso HTTP/1.1\r\nHost: api.test\r\nUser-Agent: python-requests/2.31\r\n\r\n';
const RESP_HEAD = respHead('200 OK', ['Content-Type: application/octet-stream', 'Content-Length: 4700000000']);
const REQ_STREAM = get('/stream', 'api.test', 'python-requests/2.31');
const RESP_STREAM = [
  `${respHead('200 OK', ['Content-Type: text/plain', 'Transfer-Encoding: chunked'])}5\r\nhello\r\n`,
  '6\r\n world\r\n',
  '0\r\n\r\n',
];
const POST_BODY = '{"name":"new item"}';
const REQ_POST_HEAD = `POST /api/items HTTP/1.1\r\nHost: api.test\r\nUser-Agent: python-requests/2.31\r\nContent-Type: application/json\r\nContent-Length: ${POST_BODY.length}\r\n\r\n`;
const RESP_POST = respHead('201 Created', ['Location: /api/items/4', 'Content-Length: 0']);

const REQ_P = [1, 2, 3].map((i) => get(`/p/${i}`, 'bench.test', 'wrk/4.2'));
const RESP_P = ['one', 'two', 'three'].map((b) => `${respHead('200 OK', ['Content-Type: text/plain', `Content-Length: ${b.length}`])}${b}`);

const REQ_SLOW = get('/slow', 'slow.test');

/** Bytes in the middle of a request body that happen to read like a request. */
const MIDLIFE_BODY_TAIL = 'GET /not-a-request HTTP/1.1\r\nHost: fake.test\r\n\r\n';
const RESP_CREATED = respHead('201 Created', ['Content-Length: 0']);
const REQ_AFTER = get('/after', 'late.test', 'python-requests/2.31');
const RESP_AFTER = `${respHead('200 OK', ['Content-Type: text/plain', 'Content-Length: 2'])}ok`;

const CLIENT_A = { saddr: '10.1.0.1', sport: 40001, daddr: '10.1.0.2', dport: 80 };

interface Fixture {
  /** Envelopes up to envelope time 31.9 s, then the heartbeat that passes 30 s after /slow. */
  phases: [Envelope[], Envelope[]];
  /** Connections whose CONN_CLOSE was sent: conn_id → [role, bytes sent, bytes received]. */
  closed: Map<string, [string, number, number]>;
  lossRecords: number;
}

function fixture(): Fixture {
  const recs: TimedRecord[] = [];
  const closed = new Map<string, [string, number, number]>();
  const closeSock = (s: Sock, tsNs: number, openTsNs: number) => {
    s.close(tsNs, openTsNs);
    closed.set(connUuid(s.o.cookie), [s.o.role === Role.Server ? 'server' : 'client', s.pos[0], s.pos[1]]);
  };

  // A: curl's socket, two keep-alive exchanges; the first response is captured in part only.
  const a = new Sock(recs, { cookie: 0xa1, shard: 0, tuple: CLIENT_A, role: Role.Client, pid: 4242, comm: 'curl' });
  a.open(ms(1000));
  a.info(ms(1000.01));
  a.send(EGRESS, ms(1100), REQ_INDEX);
  a.send(INGRESS, ms(2050), RESP_INDEX_HEAD + INDEX_BODY, { cap: RESP_INDEX_HEAD.length + 40 });
  a.send(EGRESS, ms(2300), REQ_MISSING);
  a.send(INGRESS, ms(2310), RESP_MISSING);
  closeSock(a, ms(3000), ms(1000));

  // B: the same exchanges at nginx's end; the file goes by sendfile (no user buffer).
  const b = new Sock(recs, { cookie: 0xb1, shard: 1, tuple: { saddr: '10.1.0.2', sport: 80, daddr: '10.1.0.1', dport: 40001 }, role: Role.Server, pid: 777, comm: 'nginx' });
  b.open(ms(1000.02));
  b.info(ms(1000.03));
  b.send(INGRESS, ms(1100.05), REQ_INDEX);
  b.send(EGRESS, ms(2049.9), RESP_INDEX_HEAD);
  b.send(EGRESS, ms(2049.95), INDEX_BODY, { nobuf: true });
  b.send(INGRESS, ms(2300.05), REQ_MISSING);
  b.send(EGRESS, ms(2309.95), RESP_MISSING);
  closeSock(b, ms(3000.01), ms(1000.02));

  // C: keep-alive: JSON, HEAD (no body after a large Content-Length), a chunked response
  // spread over three envelopes, and a POST whose body is a second syscall.
  const c = new Sock(recs, { cookie: 0xc1, shard: 2, tuple: { saddr: '10.1.0.3', sport: 41000, daddr: '10.1.0.9', dport: 8080 }, role: Role.Client, pid: 5151, comm: 'python3' });
  c.open(ms(1200));
  c.info(ms(1200.01));
  c.send(EGRESS, ms(1250), REQ_ITEMS);
  c.send(INGRESS, ms(1400), RESP_ITEMS);
  c.send(EGRESS, ms(1500), REQ_HEAD);
  c.send(INGRESS, ms(1510), RESP_HEAD);
  c.send(EGRESS, ms(1600), REQ_STREAM);
  c.send(INGRESS, ms(1700), RESP_STREAM[0]);
  c.send(INGRESS, ms(2600), RESP_STREAM[1]);
  c.send(INGRESS, ms(3100), RESP_STREAM[2]);
  c.send(EGRESS, ms(3200), REQ_POST_HEAD);
  c.send(EGRESS, ms(3201), POST_BODY);
  c.send(INGRESS, ms(3300), RESP_POST);
  closeSock(c, ms(4000), ms(1200));

  // D: three pipelined requests in one syscall; responses in two envelopes.
  const d = new Sock(recs, { cookie: 0xd1, shard: 3, tuple: { saddr: '10.1.0.4', sport: 42000, daddr: '10.1.0.9', dport: 8080 }, role: Role.Client, pid: 6161, comm: 'wrk' });
  d.open(ms(1300));
  d.info(ms(1300.01));
  d.send(EGRESS, ms(1350), REQ_P.join(''));
  d.send(INGRESS, ms(1900), RESP_P[0] + RESP_P[1]);
  d.send(INGRESS, ms(2100), RESP_P[2]);
  closeSock(d, ms(2200), ms(1300));

  // E: a request that is never answered; the connection stays open.
  const e = new Sock(recs, { cookie: 0xe1, shard: 0, tuple: { saddr: '10.1.0.1', sport: 40002, daddr: '10.1.0.5', dport: 80 }, role: Role.Client, pid: 4243, comm: 'curl' });
  e.open(ms(1999.99));
  e.info(ms(1999.995));
  e.send(EGRESS, ms(2000), REQ_SLOW);

  // F: open before capture began: its positions start at the first byte seen, which is in
  // the middle of a request body that reads like a request; the response to that earlier
  // request follows. Only the exchange after it may pair.
  const f = new Sock(recs, { cookie: 0xf1, shard: 1, tuple: { saddr: '10.1.0.6', sport: 43000, daddr: '10.1.0.9', dport: 8080 }, role: Role.Client, pid: 8080, comm: 'python3' });
  f.info(ms(1400), ConnFlags.Midlife | ConnFlags.Captured);
  f.send(EGRESS, ms(1450), MIDLIFE_BODY_TAIL);
  f.send(INGRESS, ms(1460), RESP_CREATED);
  f.send(EGRESS, ms(2500), REQ_AFTER);
  f.send(INGRESS, ms(2600), RESP_AFTER);

  // Seal one envelope per shard per second of node time, as the edge would, plus
  // heartbeats (no records) that move node time on; one loss count rides on a heartbeat.
  const lossRecords = 17;
  const batches: { mono: number; shard: number; records: Buffer[]; lost?: Envelope['lost'] }[] = [];
  for (let w = 1; w <= 4; w++) {
    for (const shard of SHARDS) {
      const inWindow = recs.filter((r) => r.shard === shard && r.tsNs >= w * 1e9 && r.tsNs < (w + 1) * 1e9).sort((x, y) => x.tsNs - y.tsNs);
      if (inWindow.length) batches.push({ mono: (w + 1) * 1e9, shard, records: inWindow.map((r) => r.buf) });
    }
  }
  assert.equal(batches.reduce((n, bt) => n + bt.records.length, 0), recs.length, 'every record is in a window');
  for (const t of [10, 20, 30, 31.9]) {
    for (const shard of SHARDS) {
      batches.push({ mono: ms(t * 1000), shard, records: [], ...(t === 10 && shard === 2 ? { lost: [{ kind: RecordKind.SockData, cause: 'ringbuf_full', records: lossRecords }] } : {}) });
    }
  }
  let seq = 0;
  const seal = (bt: (typeof batches)[number]) => envelope({ seq: ++seq, shard: bt.shard, node: NODE, boot: BOOT, mono: bt.mono, records: bt.records, lost: bt.lost });
  const phase1 = batches.map(seal);
  // 33 s: 31 s after /slow was sent, and a second after the previous sweep of shard 0.
  const phase2 = [seal({ mono: ms(33_000), shard: 0, records: [] })];
  return { phases: [phase1, phase2], closed, lossRecords };
}

/** Publish as the edge does; returns the stream sequence of each shard's last envelope. */
async function publish(envelopes: Envelope[]): Promise<Map<number, number>> {
  await ensureStream(nc, STREAM, logger('test'));
  const js = jetstream(nc);
  const last = new Map<number, number>();
  for (const e of envelopes) {
    const ack = await js.publish(envelopeSubject(STREAM.subjectPrefix, e), encodeEnvelope(e), { msgID: messageId(e) });
    last.set(e.shard, ack.seq);
  }
  return last;
}

async function startProcessor(ch: ClickHouse): Promise<Processor> {
  return Processor.start({
    nc, ch, functions: FUNCTIONS, shards: SHARDS, stream: STREAM.name, subjectPrefix: STREAM.subjectPrefix,
    flushIntervalMs: 50, ttlDays: 3650, maxPendingRows: 10_000, log: logger('test'),
  });
}

/** Wait until every lane handled its shard's messages up to `last`, then commit. */
async function drain(p: Processor, last: Map<number, number>): Promise<void> {
  await waitFor('lanes to handle every message', async () => p.lanes.every((l) => l.processedSeq >= (last.get(l.shard) ?? 0)));
  await p.flush();
}

interface HttpRow {
  ts: string; conn_id: string; role: string; pid: number; comm: string;
  client_addr: string; client_port: number; server_addr: string; server_port: number;
  protocol: string; method: string; host: string; path: string; status: number;
  req_bytes: string; resp_bytes: string; ttfb_ns: string; latency_ns: string; req_pos: string;
  content_type: string; timed_out: number; partial: number;
}

async function httpRows(ch: ClickHouse): Promise<HttpRow[]> {
  return rows<HttpRow>(ch, `SELECT toString(ts) AS ts, toString(conn_id) AS conn_id, toString(role) AS role, pid, comm,
      client_addr, client_port, server_addr, server_port, protocol, method, host, path, status,
      req_bytes, resp_bytes, ttfb_ns, latency_ns, req_pos, content_type, timed_out, partial
    FROM ${ch.database}.http_requests ORDER BY conn_id, role, req_pos`);
}

function expectedRows(): HttpRow[] {
  const client = { client_addr: '::ffff:10.1.0.1', client_port: 40001, server_addr: '::ffff:10.1.0.2', server_port: 80 };
  const row = (o: Omit<HttpRow, 'ts' | 'protocol' | 'req_bytes' | 'resp_bytes' | 'ttfb_ns' | 'latency_ns' | 'req_pos'> & { reqTs: number; respFirst: number; respLast: number; req: number; resp: number; pos: number }): HttpRow => {
    const { reqTs, respFirst, respLast, req, resp, pos, ...rest } = o;
    return {
      ...rest, ts: dt(reqTs), protocol: 'http/1.1', req_bytes: String(req), resp_bytes: String(resp),
      ttfb_ns: String(respFirst ? respFirst - reqTs : 0), latency_ns: String(respLast ? respLast - reqTs : 0), req_pos: String(pos),
    };
  };
  const a = { conn_id: connUuid(0xa1), role: 'client', pid: 4242, comm: 'curl', ...client, timed_out: 0 };
  const b = { conn_id: connUuid(0xb1), role: 'server', pid: 777, comm: 'nginx', ...client, timed_out: 0 };
  const c = { conn_id: connUuid(0xc1), role: 'client', pid: 5151, comm: 'python3', client_addr: '::ffff:10.1.0.3', client_port: 41000, server_addr: '::ffff:10.1.0.9', server_port: 8080, host: 'api.test', timed_out: 0 };
  const d = { conn_id: connUuid(0xd1), role: 'client', pid: 6161, comm: 'wrk', client_addr: '::ffff:10.1.0.4', client_port: 42000, server_addr: '::ffff:10.1.0.9', server_port: 8080, host: 'bench.test', method: 'GET', status: 200, content_type: 'text/plain', timed_out: 0, partial: 0 };
  const indexResp = RESP_INDEX_HEAD.length + INDEX_BODY.length;
  const p1 = REQ_P[0].length;
  const p12 = p1 + REQ_P[1].length;
  return [
    // The truncated response: sizes from framing, partial because body bytes were not captured.
    row({ ...a, method: 'GET', host: 'web.test', path: '/index.html', status: 200, content_type: 'text/html', partial: 1, reqTs: ms(1100), respFirst: ms(2050), respLast: ms(2050), req: REQ_INDEX.length, resp: indexResp, pos: 0 }),
    row({ ...a, method: 'GET', host: 'web.test', path: '/missing', status: 404, content_type: 'text/plain', partial: 0, reqTs: ms(2300), respFirst: ms(2310), respLast: ms(2310), req: REQ_MISSING.length, resp: RESP_MISSING.length, pos: REQ_INDEX.length }),
    // The same exchanges at the server; the sendfile body is not captured either.
    row({ ...b, method: 'GET', host: 'web.test', path: '/index.html', status: 200, content_type: 'text/html', partial: 1, reqTs: ms(1100.05), respFirst: ms(2049.9), respLast: ms(2049.95), req: REQ_INDEX.length, resp: indexResp, pos: 0 }),
    row({ ...b, method: 'GET', host: 'web.test', path: '/missing', status: 404, content_type: 'text/plain', partial: 0, reqTs: ms(2300.05), respFirst: ms(2309.95), respLast: ms(2309.95), req: REQ_MISSING.length, resp: RESP_MISSING.length, pos: REQ_INDEX.length }),
    row({ ...c, method: 'GET', path: '/api/items?page=***', status: 200, content_type: 'application/json', partial: 0, reqTs: ms(1250), respFirst: ms(1400), respLast: ms(1400), req: REQ_ITEMS.length, resp: RESP_ITEMS.length, pos: 0 }),
    row({ ...c, method: 'HEAD', path: '/download/big.iso', status: 200, content_type: 'application/octet-stream', partial: 0, reqTs: ms(1500), respFirst: ms(1510), respLast: ms(1510), req: REQ_HEAD.length, resp: RESP_HEAD.length, pos: REQ_ITEMS.length }),
    row({ ...c, method: 'GET', path: '/stream', status: 200, content_type: 'text/plain', partial: 0, reqTs: ms(1600), respFirst: ms(1700), respLast: ms(3100), req: REQ_STREAM.length, resp: RESP_STREAM.join('').length, pos: REQ_ITEMS.length + REQ_HEAD.length }),
    row({ ...c, method: 'POST', path: '/api/items', status: 201, content_type: '', partial: 0, reqTs: ms(3200), respFirst: ms(3300), respLast: ms(3300), req: REQ_POST_HEAD.length + POST_BODY.length, resp: RESP_POST.length, pos: REQ_ITEMS.length + REQ_HEAD.length + REQ_STREAM.length }),
    row({ ...d, path: '/p/1', reqTs: ms(1350), respFirst: ms(1900), respLast: ms(1900), req: REQ_P[0].length, resp: RESP_P[0].length, pos: 0 }),
    row({ ...d, path: '/p/2', reqTs: ms(1350), respFirst: ms(1900), respLast: ms(1900), req: REQ_P[1].length, resp: RESP_P[1].length, pos: p1 }),
    row({ ...d, path: '/p/3', reqTs: ms(1350), respFirst: ms(2100), respLast: ms(2100), req: REQ_P[2].length, resp: RESP_P[2].length, pos: p12 }),
    row({ conn_id: connUuid(0xe1), role: 'client', pid: 4243, comm: 'curl', client_addr: '::ffff:10.1.0.1', client_port: 40002, server_addr: '::ffff:10.1.0.5', server_port: 80, method: 'GET', host: 'slow.test', path: '/slow', status: 0, content_type: '', timed_out: 1, partial: 0, reqTs: ms(2000), respFirst: 0, respLast: 0, req: REQ_SLOW.length, resp: 0, pos: 0 }),
    row({ conn_id: connUuid(0xf1), role: 'client', pid: 8080, comm: 'python3', client_addr: '::ffff:10.1.0.6', client_port: 43000, server_addr: '::ffff:10.1.0.9', server_port: 8080, method: 'GET', host: 'late.test', path: '/after', status: 200, content_type: 'text/plain', timed_out: 0, partial: 0, reqTs: ms(2500), respFirst: ms(2600), respLast: ms(2600), req: REQ_AFTER.length, resp: RESP_AFTER.length, pos: MIDLIFE_BODY_TAIL.length }),
  ].sort((x, y) => (x.conn_id < y.conn_id ? -1 : x.conn_id > y.conn_id ? 1 : x.role < y.role ? -1 : x.role > y.role ? 1 : Number(x.req_pos) - Number(y.req_pos)));
}

async function otherRows(ch: ClickHouse) {
  return {
    connections: await rows(ch, `SELECT toString(conn_id) AS conn_id, toString(role) AS role, bytes_sent, bytes_received FROM ${ch.database}.connections ORDER BY conn_id`),
    losses: await rows(ch, `SELECT toString(ts) AS ts, kind, cause, records FROM ${ch.database}.capture_losses`),
  };
}

test('http1 rows are exact, a timeout waits for envelope time, and fresh consumers add no row', async () => {
  const ch = await freshClickHouse('h1');
  const procs: Processor[] = [];
  try {
    const fx = fixture();
    const expected = expectedRows();
    const slow = expected.find((r) => r.path === '/slow')!;
    assert.ok(dt(ms(1100)) === '2023-11-14 22:13:21.100000000', 'the clock helper agrees with the fixture clock');

    // Phase 1: node time reaches 31.9 s, 29.9 s after /slow: it has not timed out yet.
    const last1 = await publish(fx.phases[0]);
    const p1 = await startProcessor(ch);
    procs.push(p1);
    await drain(p1, last1);
    assert.deepEqual(await httpRows(ch), expected.filter((r) => r !== slow));

    // Phase 2: one heartbeat of shard 0 at 33 s: 31 s after the request, it times out.
    const last2 = await publish(fx.phases[1]);
    await drain(p1, last2);
    assert.deepEqual(await httpRows(ch), expected);
    await p1.stop();

    const other = await otherRows(ch);
    assert.deepEqual(other.connections, [...fx.closed].sort(([x], [y]) => (x < y ? -1 : 1)).map(([conn_id, [role, sent, received]]) => ({ conn_id, role, bytes_sent: String(sent), bytes_received: String(received) })));
    assert.deepEqual(other.losses, [{ ts: dt(ms(10_000)), kind: 'sock_data', cause: 'ringbuf_full', records: String(fx.lossRecords) }]);
    const total = expected.length + other.connections.length + other.losses.length;

    // Fresh consumers from the start of the stream, same database: every row is seen again
    // and suppressed.
    const jsm = await jetstreamManager(nc);
    for (const s of SHARDS) await jsm.consumers.delete(STREAM.name, consumerName(ch.database, functionGroup(FUNCTIONS.map((f) => f.name)), s));
    const p2 = await startProcessor(ch);
    procs.push(p2);
    await drain(p2, new Map([...last1, ...last2]));
    const suppressed = (await p2.metrics.rowsSuppressed.get()).values.reduce((n, v) => n + v.value, 0);
    const written = (await p2.metrics.rows.get()).values.reduce((n, v) => n + v.value, 0);
    await p2.stop();
    assert.equal(written, 0, 'the second reading wrote no row');
    assert.equal(suppressed, total, `all ${total} rows were seen again and suppressed`);
    assert.deepEqual(await httpRows(ch), expected);
    assert.deepEqual(await otherRows(ch), other);
  } finally {
    for (const p of procs) await p.stop();
    await ch.close();
  }
});
