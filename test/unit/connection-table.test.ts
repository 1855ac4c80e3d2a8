/**
 * A shard's lane with every function: each envelope decoded once, one connection table for
 * the L7 protocols (each connection handed to the protocols its owner and first bytes
 * allow, rows under each protocol's own `_fn`), idle keep-alive connections parked between
 * exchanges and resumed where they stood, and a table bounded by the processor's budget:
 * the least recently used connection forgotten and counted in capture_losses; an exchange's
 * row carries the retransmits and drops of its connection while it was in flight.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logger } from '../../lib/logger.js';
import { FUNCTIONS } from '../../processors/index.js';
import { ConnectionBudget, CONN_TABLE_FULL, MAX_UNPARKED } from '../../processors/l7/connection-table.js';
import type { DeadLetters } from '../../processors/runtime/dlq.js';
import type { ProcessingFunction, Row } from '../../processors/runtime/function.js';
import { CONNECTION_TABLE_FN, Lane } from '../../processors/runtime/lane.js';
import { ProcessorMetrics } from '../../processors/runtime/metrics.js';
import { encodeEnvelope } from '../../schemas/envelope.js';
import { DataFlags, RecordKind, Role } from '../../schemas/records.js';
import { encodeMsg } from '../fixtures/dns/fixture.js';
import { appData, ccs, CH13, SH13 } from '../fixtures/tls/build.js';
import { connClose, connInfo, envelope, skbDrop, sockData, tcpEvent, type TupleSpec } from '../helpers/records.js';

const T0 = 5e9;

/** A lane over `functions` fed envelopes by hand; rows collected per table. */
async function harness(functions: ProcessingFunction[], budget = new ConnectionBudget(1_000_000)) {
  const metrics = new ProcessorMetrics();
  const lane = await Lane.create({
    functions, shard: 0, query: async () => [], streamId: 's@1', resumeFrom: 1, committed: new Map(), budget, metrics,
    dlq: { send() {} } as unknown as DeadLetters, log: logger('test'),
  });
  const rows = new Map<string, Row[]>();
  let seq = 0;
  return {
    lane, metrics, rows,
    /** One envelope holding `records`, at node time `mono`. */
    feed(records: Buffer[], mono: number) {
      seq++;
      lane.handle({ seq, subject: 'netrig.raw.test.node1.0', data: encodeEnvelope(envelope({ records, seq, mono })), reply: `ack.${seq}` });
      for (const [table, rs] of lane.takeRows()) rows.set(table, [...(rows.get(table) ?? []), ...rs]);
    },
    table(name: string): Row[] {
      return rows.get(name) ?? [];
    },
  };
}

/** One socket's records: its owner, then data syscalls at consecutive positions per direction. */
class Socket {
  private readonly pos = [0, 0];
  constructor(readonly cookie: number, readonly tuple: TupleSpec, readonly role: number) {}
  info(ts: number): Buffer {
    return connInfo({ tsNs: ts, connId: this.cookie, tgid: 42 }, this.tuple, this.role, 'app');
  }
  send(dir: 0 | 1, bytes: Buffer, ts: number): Buffer {
    const r = sockData({ tsNs: ts, connId: this.cookie, tgid: 42 }, { direction: dir, posBytes: this.pos[dir], payload: bytes, dataFlags: DataFlags.Last });
    this.pos[dir] += bytes.length;
    return r;
  }
  close(ts: number): Buffer {
    return connClose({ tsNs: ts, connId: this.cookie, tgid: 42 }, this.tuple, { role: this.role, comm: 'app', openTsNs: T0, txBytes: this.pos[0], rxBytes: this.pos[1] });
  }
}

const request = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nHost: shop\r\n\r\n`, 'latin1');
const response = (body: string) => Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 'latin1');

test('one pass over each envelope: every protocol gets the connections it may speak on, rows under its own function', async () => {
  const h = await harness(Object.values(FUNCTIONS));
  const web = new Socket(1, { saddr: '10.0.0.1', sport: 40000, daddr: '10.0.0.2', dport: 8080 }, Role.Client);
  const tls = new Socket(2, { saddr: '10.0.0.1', sport: 40001, daddr: '10.0.0.2', dport: 443 }, Role.Client);
  const dns = new Socket(3, { saddr: '10.0.0.1', sport: 40002, daddr: '10.0.0.53', dport: 53, protocol: 17 }, Role.Client);
  const query = encodeMsg({ type: 'query', id: 7, flags: ['rd'], questions: [{ type: 'A', name: 'shop.example' }] });
  const answer = encodeMsg({ type: 'response', id: 7, flags: ['rd', 'ra'], questions: [{ type: 'A', name: 'shop.example' }], answers: [{ type: 'A', name: 'shop.example', data: '192.0.2.1' }] });
  h.feed([
    web.info(T0), tls.info(T0), dns.info(T0),
    web.send(0, request('/cart'), T0 + 1e3), tls.send(0, CH13('shop.example'), T0 + 2e3), dns.send(0, query, T0 + 3e3),
    web.send(1, response('ok'), T0 + 4e3), tls.send(1, Buffer.concat([SH13(), ccs(), appData(100)]), T0 + 5e3), dns.send(1, answer, T0 + 6e3),
    tls.send(0, ccs(), T0 + 7e3), tls.send(0, appData(53), T0 + 8e3),
  ], T0 + 1e4);
  h.feed([web.close(T0 + 2e4), tls.close(T0 + 2e4), dns.close(T0 + 2e4)], T0 + 3e4);

  const pick = (table: string, ...cols: string[]) => h.table(table).map((r) => Object.fromEntries(cols.map((c) => [c, r[c]])));
  assert.deepEqual(pick('http_requests', '_fn', 'method', 'path', 'status', 'req_pos', 'server_port'), [
    { _fn: 'http1', method: 'GET', path: '/cart', status: 200, req_pos: 0, server_port: 8080 },
  ]);
  assert.deepEqual(pick('tls_handshakes', '_fn', 'sni', 'version', 'completed'), [{ _fn: 'tls', sni: 'shop.example', version: 'TLS 1.3', completed: 1 }]);
  assert.deepEqual(pick('dns_queries', '_fn', 'qname', 'rcode', 'answers', 'server_port'), [
    { _fn: 'dns', qname: 'shop.example', rcode: 0, answers: ['192.0.2.1'], server_port: 53 },
  ]);
  assert.deepEqual(pick('connections', '_fn', 'dport').map((r) => r.dport).sort(), [443, 53, 8080]);
  assert.ok(h.table('connections').every((r) => r._fn === 'tcp'));
  // Each message was decoded and walked once, not once per function.
  const messages = (await h.metrics.messages.get()).values;
  assert.deepEqual(messages.map((v) => [v.labels.fn, v.value]), [['dns-http1-http2-losses-tcp-tls', 2]]);
  // The TLS bytes were ruled out for HTTP/1 and HTTP/2 at their first byte, the HTTP/1 bytes for TLS and HTTP/2.
  const events = (await h.metrics.events.get()).values.filter((v) => v.labels.event === 'abandoned_unrecognised');
  assert.deepEqual(Object.fromEntries(events.map((v) => [v.labels.fn, v.value])), { http1: 1, http2: 2, tls: 1 });
});

test('a keep-alive connection idle for a while is parked between exchanges and resumes where it stood, in either role', async () => {
  for (const role of [Role.Client, Role.Server]) {
    const h = await harness([FUNCTIONS.http1, FUNCTIONS.http2, FUNCTIONS.tls]);
    const s = new Socket(9, role === Role.Client
      ? { saddr: '10.0.0.1', sport: 40000, daddr: '10.0.0.2', dport: 80 }
      : { saddr: '10.0.0.2', sport: 80, daddr: '10.0.0.1', dport: 40000 }, role);
    const [reqDir, respDir] = role === Role.Client ? [0, 1] as const : [1, 0] as const;
    h.feed([s.info(T0)], T0);
    const positions: number[] = [];
    let reqPos = 0;
    for (let i = 0; i < 5; i++) {
      // Exchanges 3 s apart: in use right after each one, idle long enough to park before the next.
      const t = T0 + (i + 1) * 3e9;
      const req = request(`/item/${i}`);
      positions.push(reqPos);
      reqPos += req.length;
      // A request and its response in separate envelopes: busy in between, idle after.
      h.feed([s.send(reqDir, req, t)], t + 1e6);
      assert.deepEqual(h.lane.connections(), { tracked: 1, parked: 0 }, `busy with request ${i}`);
      h.feed([s.send(respDir, response(`body-${i}`), t + 2e6)], t + 3e6);
      assert.deepEqual(h.lane.connections(), { tracked: 1, parked: 0 }, `in use after exchange ${i}`);
      h.feed([], t + 1.5e9);
      assert.deepEqual(h.lane.connections(), { tracked: 1, parked: 0 }, `idle 1.5 s after exchange ${i}`);
      h.feed([], t + 2.5e9);
      assert.deepEqual(h.lane.connections(), { tracked: 1, parked: 1 }, `parked 2.5 s after exchange ${i}`);
    }
    // Much later, a request whose first syscall holds one byte: the rebuilt tracker gets its
    // own time to recognise HTTP/1, not what is left of the connection's.
    const late = T0 + 60e9;
    const req = request('/item/5');
    positions.push(reqPos);
    h.feed([s.send(reqDir, req.subarray(0, 1), late)], late + 1e6);
    h.feed([s.send(reqDir, req.subarray(1), late + 2e6)], late + 3e6);
    h.feed([s.send(respDir, response('body-5'), late + 4e6)], late + 5e6);
    const rows = h.table('http_requests');
    assert.deepEqual(rows.map((r) => [r.path, r.status, r.req_pos, r.timed_out, r.partial, r.role, r.resp_bytes]),
      positions.map((p, i) => [`/item/${i}`, 200, p, 0, 0, role === Role.Client ? 'client' : 'server', response(`body-${i}`).length]));
    // The connection's pins went with its exchanges; the message naming its owner is kept
    // until the kernel would repeat it: then nothing holds the acknowledgements back.
    h.feed([], late + 12e9);
    assert.equal(h.lane.lowWaterLag(), 0);
  }
});

test('past MAX_UNPARKED connections not parked, an idle one is parked right after its exchange', async () => {
  const h = await harness([FUNCTIONS.http1]);
  const n = MAX_UNPARKED + 100;
  const sockets = Array.from({ length: n }, (_, i) => new Socket(1000 + i, { saddr: '10.0.0.1', sport: 20000 + i, daddr: '10.0.0.2', dport: 80 }, Role.Client));
  const t = T0 + 1e9;
  h.feed(sockets.map((s) => s.info(T0)), T0);
  // Every connection's request, then every response: each idle between exchanges after it.
  h.feed(sockets.map((s, i) => s.send(0, request(`/n/${i}`), t + i)), t + n);
  h.feed(sockets.map((s, i) => s.send(1, response('ok'), t + n + i)), t + 2 * n);
  const { tracked, parked } = h.lane.connections();
  assert.equal(tracked, n);
  assert.ok(tracked - parked <= MAX_UNPARKED, `${tracked - parked} connections not parked, at most ${MAX_UNPARKED}`);
  assert.equal(h.table('http_requests').length, n);
  // A parked connection's next exchange pairs from where it stood.
  h.feed([sockets[0].send(0, request('/again'), t + 3 * n)], t + 3 * n + 1);
  h.feed([sockets[0].send(1, response('ok'), t + 3 * n + 2)], t + 3 * n + 3);
  assert.deepEqual(h.table('http_requests').slice(-1).map((r) => [r.path, r.status, r.req_pos]), [['/again', 200, request('/n/0').length]]);
});

test('past the budget the least recently used connection is forgotten, counted in capture_losses', async () => {
  const budget = new ConnectionBudget(3);
  const h = await harness([FUNCTIONS.http1], budget);
  const sockets = [1, 2, 3, 4].map((i) => new Socket(i, { saddr: '10.0.0.1', sport: 40000 + i, daddr: '10.0.0.2', dport: 80 }, Role.Client));
  const [a, b, c, d] = sockets;
  h.feed([a.info(T0), b.info(T0), c.info(T0)], T0);
  h.feed([a.send(0, request('/a'), T0 + 1e6), b.send(0, request('/b'), T0 + 2e6), c.send(0, request('/c'), T0 + 3e6)], T0 + 4e6);
  // A is used again; B has waited longest for its response when D arrives.
  h.feed([a.send(1, response('a'), T0 + 5e6)], T0 + 6e6);
  assert.equal(budget.used, 3);
  h.feed([d.info(T0 + 7e6), d.send(0, request('/d'), T0 + 7e6)], T0 + 8e6);
  assert.equal(budget.used, 3);
  h.feed([c.send(1, response('c'), T0 + 9e6), d.send(1, response('d'), T0 + 9e6)], T0 + 1e7);
  assert.deepEqual(h.table('http_requests').map((r) => [r.path, r.status]), [['/a', 200], ['/c', 200], ['/d', 200]]);
  // B was forgotten with its request: its response, when it comes, pairs with nothing.
  h.feed([b.send(1, response('b'), T0 + 11e6)], T0 + 12e6);
  assert.equal(h.table('http_requests').length, 3);
  const losses = h.table('capture_losses');
  assert.equal(losses.length, 2, 'D and the return of B each forgot one');
  assert.deepEqual(
    { fn: losses[0]._fn, kind: losses[0].kind, cause: losses[0].cause, connections: losses[0].connections, node: losses[0].node },
    { fn: CONNECTION_TABLE_FN, kind: 'connection', cause: CONN_TABLE_FULL, connections: 1, node: 'node1' },
  );
  // A lane that closes gives its connections back to the processor's budget.
  h.lane.close();
  assert.equal(budget.used, 0);
});

test('an exchange carries the retransmits and drops of its connection while it was in flight, and only those', async () => {
  const h = await harness([FUNCTIONS.http1, FUNCTIONS.tcp]);
  const tuple = { saddr: '10.0.0.1', sport: 40100, daddr: '10.0.0.2', dport: 8080 };
  const web = new Socket(11, tuple, Role.Client);
  const ev = (ts: number) => ({ tsNs: ts, connId: 11, tgid: 42 });
  h.feed([
    web.info(T0),
    tcpEvent(RecordKind.TcpRetransmit, ev(T0 + 500), tuple), // before the exchange: not its trouble
    web.send(0, request('/slow'), T0 + 1e3),
    tcpEvent(RecordKind.TcpRetransmit, ev(T0 + 2e3), tuple),
    skbDrop(ev(T0 + 2500), { ...tuple, protocol: 6 }, { location: 0xffffffff81000000n, reason: 2 }),
    tcpEvent(RecordKind.TcpRetransmit, ev(T0 + 3e3), tuple),
    web.send(1, response('late'), T0 + 5e3),
    web.send(0, request('/fast'), T0 + 6e3),
    web.send(1, response('ok'), T0 + 7e3),
    // Another socket's trouble, and one the table does not track.
    tcpEvent(RecordKind.TcpRetransmit, { ...ev(T0 + 6500), connId: 99 }, tuple),
    web.send(0, request('/lost'), T0 + 8e3),
    tcpEvent(RecordKind.TcpRetransmit, ev(T0 + 9e3), tuple),
    web.close(T0 + 10e3),
  ], T0 + 11e3);
  const rows = h.table('http_requests').map((r) => [r.path, r.status, r.retransmits, r.drops, r.harm_ns]);
  assert.deepEqual(rows, [
    ['/slow', 200, 2, 1, 3000],
    ['/fast', 200, 0, 0, 0],
    // No response: its trouble is counted, with no end to measure from.
    ['/lost', 0, 1, 0, 0],
  ]);
  assert.equal(h.table('tcp_events').length, 6, 'the tcp function still writes every event');
});
