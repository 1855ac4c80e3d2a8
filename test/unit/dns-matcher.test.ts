/**
 * DnsMatcher beyond the fixtures: roles read from the bytes, peers and directions that must
 * not pair, the pending bound, idleness, shared counters, and callbacks that throw.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DnsMatcher, newDnsStats, type Datagram, type DnsExchange, type DnsMatcherOptions, type DnsPeer,
} from '../../processors/dns/matcher.js';
import { encodeMsg } from '../fixtures/dns/fixture.js';

const query = (id: number, name = 'a.example', type: 'A' | 'AAAA' = 'A'): Buffer =>
  encodeMsg({ type: 'query', id, flags: ['rd'], questions: [{ type, name }] });
const answer = (id: number, name = 'a.example', ip = '192.0.2.1'): Buffer =>
  encodeMsg({ type: 'response', id, flags: ['rd', 'ra'], questions: [{ type: 'A', name }], answers: [{ type: 'A', name, data: ip }] });

/** A datagram at record time `tsNs`, from `peer` (null: the connected peer), position unknown. */
const dg = (payload: Buffer, tsNs: number, peer: DnsPeer | null = null): Datagram => ({ payload, tsNs, peer, posBytes: -1 });

function matcher(opts: DnsMatcherOptions = {}): { m: DnsMatcher; out: DnsExchange[] } {
  const out: DnsExchange[] = [];
  return { m: new DnsMatcher((x) => out.push(x), opts), out };
}

const P1: DnsPeer = { addr: '::ffff:192.0.2.53', port: 53 };
const P2: DnsPeer = { addr: '::ffff:198.51.100.53', port: 53 };

test('an unconnected client socket: the answer must come from the peer asked', () => {
  const { m, out } = matcher();
  m.datagram(0, dg(query(1), 100, P1));
  m.datagram(1, dg(answer(1), 150, P2)); // spoofed or misrouted: another server
  assert.equal(out.length, 0);
  m.datagram(1, dg(answer(1), 200, { ...P1, port: 5353 })); // right address, wrong port
  assert.equal(out.length, 0);
  m.datagram(1, dg(answer(1), 300, P1));
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].peer, P1);
  assert.equal(out[0].role, 'client');
  assert.equal(out[0].latencyNs, 200);
  assert.equal(m.stats.unmatchedResponses, 2);
});

test('roles come from the QR bit and direction: one socket both asks and answers', () => {
  const { m, out } = matcher();
  m.datagram(1, dg(query(7, 'in.example'), 100, P1)); // a forwarder receives a query...
  m.datagram(0, dg(query(7, 'in.example'), 110, P2)); // ...and asks upstream with the same id
  m.datagram(1, dg(answer(7, 'in.example', '10.0.0.1'), 150, P2));
  m.datagram(0, dg(answer(7, 'in.example', '10.0.0.1'), 160, P1));
  assert.deepEqual(out.map((x) => [x.role, x.peer?.addr, x.latencyNs]), [['client', P2.addr, 40], ['server', P1.addr, 60]]);
});

test('a response travelling the same way as its query does not pair', () => {
  const { m, out } = matcher();
  m.datagram(0, dg(query(3), 100));
  m.datagram(0, dg(answer(3), 120));
  assert.equal(out.length, 0);
  assert.equal(m.stats.unmatchedResponses, 1);
  assert.equal(m.isIdle(), false);
});

test('question names match without regard to case (DNS 0x20) and are reported lowercased', () => {
  const { m, out } = matcher();
  m.datagram(0, dg(query(9, 'WwW.ExAmPlE.cOm'), 100));
  m.datagram(1, dg(answer(9, 'WWW.EXAMPLE.COM'), 140));
  assert.equal(out.length, 1);
  assert.equal(out[0].qname, 'www.example.com');
});

test('at most maxPending queries wait; the oldest is dropped without a row', () => {
  const { m, out } = matcher({ maxPending: 3 });
  for (let id = 1; id <= 5; id++) m.datagram(0, dg(query(id), id * 10));
  assert.equal(m.pendingCount, 3);
  assert.equal(m.stats.droppedQueries, 2);
  m.datagram(1, dg(answer(1), 100));
  m.datagram(1, dg(answer(5), 110));
  assert.deepEqual(out.map((x) => x.id), [5]);
  assert.equal(m.stats.unmatchedResponses, 1);
  m.close();
  assert.deepEqual(out.map((x) => `${x.id}${x.timedOut ? 't' : ''}`), ['5', '3t', '4t']);
});

test('expire uses record time and only what has waited long enough', () => {
  const { m, out } = matcher({ queryTimeoutNs: 3000 });
  m.datagram(0, dg(query(1), 1000));
  m.datagram(0, dg(query(2), 3000));
  m.expire(3999);
  assert.equal(out.length, 0);
  m.expire(4000);
  assert.deepEqual(out.map((x) => [x.id, x.timedOut, x.rcode]), [[1, true, -1]]);
  assert.equal(m.isIdle(), false);
  m.expire(1e15);
  assert.equal(m.isIdle(), true);
});

test('isIdle: false while a TCP message is partial', () => {
  const { m } = matcher();
  const q = query(1);
  const f = Buffer.concat([Buffer.from([0, q.length]), q]);
  m.data(0, { type: 'data', pos: 0, data: f.subarray(0, 5), tsNs: 1, syscallStart: true });
  assert.equal(m.isIdle(), false);
  m.data(0, { type: 'data', pos: 5, data: f.subarray(5), tsNs: 2, syscallStart: false });
  assert.equal(m.pendingCount, 1);
  m.data(1, { type: 'data', pos: 0, data: Buffer.concat([Buffer.from([0, answer(1).length]), answer(1)]), tsNs: 9, syscallStart: true });
  assert.equal(m.isIdle(), true);
});

test('counters shared across matchers add up', () => {
  const stats = newDnsStats();
  const a = new DnsMatcher(() => {}, { stats });
  const b = new DnsMatcher(() => {}, { stats });
  a.datagram(0, dg(query(1), 1));
  b.datagram(0, dg(query(1), 1));
  a.datagram(1, dg(answer(1), 2));
  b.datagram(1, dg(Buffer.from('junk'), 2));
  assert.deepEqual([stats.queries, stats.responses, stats.exchanges, stats.decodeFailures.short_header], [2, 1, 1, 1]);
});

test('an exception from the callback is the caller\'s, and the matcher carries on', () => {
  let calls = 0;
  const m = new DnsMatcher(() => {
    calls++;
    throw new Error('sink failed');
  });
  m.datagram(0, dg(query(1), 1));
  assert.throws(() => m.datagram(1, dg(answer(1), 2)), /sink failed/);
  assert.equal(m.stats.internalErrors, 0);
  assert.equal(m.pendingCount, 0);
  m.datagram(0, dg(query(2), 3));
  assert.throws(() => m.datagram(1, dg(answer(2), 4)), /sink failed/);
  assert.equal(calls, 2);
});
