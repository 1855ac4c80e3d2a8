/**
 * TlsHandshakeTracker beyond the fixtures: timing rules, out-of-order directions,
 * resumption, alerts, expiry by record time, protocol breaks, shared counters and callbacks
 * that throw.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  newTlsStats, TlsHandshakeTracker, type Dir, type RoleHint, type TlsHandshake, type TlsHandshakeTrackerOptions,
} from '../../processors/tls/handshake.js';
import {
  alert, appData, CH13, ccs, clientHello, extAlpn, extKeyShareSelected, extPsk, extSni, extVersionSelected, HRR_RANDOM,
  serverHello, SH13,
} from '../fixtures/tls/build.js';

/** A connection driven by hand: each `send` is one syscall at the given record time. */
class Conn {
  readonly out: TlsHandshake[] = [];
  readonly t: TlsHandshakeTracker;
  private readonly pos: [number, number] = [0, 0];
  /** Handshakes time out 1000 ns after their ClientHello unless `opts` says otherwise. */
  constructor(hint: RoleHint = 'client', opts: TlsHandshakeTrackerOptions = {}) {
    this.t = new TlsHandshakeTracker(hint, (h) => this.out.push(h), { handshakeTimeoutNs: 1000, ...opts });
  }
  send(dir: Dir, bytes: Buffer, tsNs: number): void {
    this.t.data(dir, { type: 'data', pos: this.pos[dir], data: bytes, tsNs, syscallStart: true });
    this.pos[dir] += bytes.length;
  }
}

test('TLS 1.3: ends at the client\'s first application_data record after the ServerHello', () => {
  const c = new Conn();
  c.send(0, CH13(), 100);
  c.send(1, Buffer.concat([SH13(), ccs(), appData(100)]), 250);
  assert.equal(c.out.length, 0);
  assert.equal(c.t.isIdle(), false);
  assert.equal(c.t.stopReason, null);
  c.send(0, ccs(), 300);
  c.send(0, appData(53), 320);
  assert.equal(c.out.length, 1);
  // The rest of the connection needs no reading.
  assert.equal(c.t.stopReason, 'handshake_done');
  const h = c.out[0];
  assert.deepEqual([h.clientHelloTsNs, h.serverHelloTsNs, h.handshakeEndTsNs, h.handshakeNs, h.complete], [100, 250, 320, 220, true]);
  assert.deepEqual([h.version, h.cipher, h.alpn, h.alpnVisible, h.sni], ['TLS 1.3', 'TLS_AES_256_GCM_SHA384', '', false, 'example.com']);
  assert.equal(c.t.isIdle(), true);
  // After the handshake nothing more is read.
  const before = JSON.stringify(c.t.stats);
  c.send(0, Buffer.from('garbage'), 400);
  assert.equal(JSON.stringify(c.t.stats), before);
});

test('TLS 1.2: ALPN chosen in the ServerHello; resumption by session id', () => {
  const sid = Buffer.alloc(32, 3);
  const c = new Conn();
  c.send(0, clientHello({ suites: [0xc02f], sessionId: sid, extensions: [extSni('r.example'), extAlpn('h2', 'http/1.1')] }), 10);
  c.send(1, Buffer.concat([serverHello({ suite: 0xc02f, sessionId: sid, extensions: [extAlpn('h2')] }), ccs()]), 20);
  c.send(0, ccs(), 30);
  c.send(0, appData(40), 40);
  assert.deepEqual([c.out[0].alpn, c.out[0].alpnVisible, c.out[0].resumed, c.out[0].version, c.out[0].handshakeNs], ['h2', true, true, 'TLS 1.2', 30]);
  const full = new Conn();
  full.send(0, clientHello({ suites: [0xc02f], sessionId: sid }), 10);
  full.send(1, serverHello({ suite: 0xc02f, sessionId: Buffer.alloc(32, 4) }), 20);
  full.send(0, appData(40), 40);
  assert.equal(full.out[0].resumed, false);
});

test('TLS 1.3 resumption: pre_shared_key accepted', () => {
  const c = new Conn();
  c.send(0, CH13('psk.example', [extPsk()]), 1);
  c.send(1, SH13([extPsk()]), 2);
  c.send(0, appData(60), 3);
  assert.equal(c.out[0].resumed, true);
});

test('early data before the ServerHello does not end the handshake, even delivered after it', () => {
  const c = new Conn('server');
  c.send(1, CH13(), 100);
  c.send(0, SH13(), 200);
  // 0-RTT sent at 150, delivered to the tracker after the ServerHello.
  c.send(1, appData(80), 150);
  assert.equal(c.out.length, 0);
  c.send(1, appData(60), 260);
  assert.deepEqual([c.out[0].role, c.out[0].handshakeEndTsNs], ['server', 260]);
});

test('a ServerHello delivered before its ClientHello is kept until the ClientHello comes', () => {
  const c = new Conn();
  c.send(1, SH13(), 200);
  c.send(0, CH13(), 100);
  c.send(0, appData(60), 300);
  assert.deepEqual([c.out[0].complete, c.out[0].serverHelloTsNs, c.out[0].handshakeNs], [true, 200, 200]);
});

test('alerts: fatal or close_notify end it, warnings do not', () => {
  const warn = new Conn();
  warn.send(0, CH13(), 1);
  warn.send(1, alert(1, 112), 2); // warning: unrecognized_name
  assert.equal(warn.out.length, 0);
  warn.send(1, SH13(), 3);
  warn.send(0, appData(60), 4);
  assert.equal(warn.out[0].complete, true);
  const fatal = new Conn();
  fatal.send(0, CH13(), 1);
  fatal.send(1, alert(2, 70), 2); // protocol_version
  assert.deepEqual([fatal.out[0].incomplete, fatal.out[0].alert, fatal.out[0].handshakeNs], ['alert', 70, 0]);
  const client = new Conn();
  client.send(0, clientHello({ suites: [0xc02f] }), 1);
  client.send(1, serverHello({ suite: 0xc02f }), 2);
  client.send(0, alert(2, 48), 3); // the client rejects the certificate: unknown_ca
  assert.deepEqual([client.out[0].incomplete, client.out[0].alert, client.out[0].version], ['alert', 48, 'TLS 1.2']);
});

test('expire by record time, close, and nothing twice', () => {
  const c = new Conn();
  c.send(0, CH13(), 1000);
  c.t.expire(1999);
  assert.equal(c.out.length, 0);
  c.t.expire(2000);
  assert.deepEqual([c.out.length, c.out[0].incomplete, c.out[0].serverHelloTsNs], [1, 'timeout', 0]);
  c.t.close();
  c.send(1, SH13(), 3000);
  assert.equal(c.out.length, 1);
  const idle = new Conn();
  idle.t.expire(1e12);
  idle.t.close();
  assert.equal(idle.out.length, 0);
  assert.equal(idle.t.isIdle(), true);
  assert.equal(idle.t.stopReason, null);
});

test('protocol breaks: a ServerHello from the client side, a second HelloRetryRequest, a stray ClientHello', () => {
  const hrr = (): Buffer => serverHello({ random: HRR_RANDOM, extensions: [extVersionSelected(0x0304), extKeyShareSelected(0x17, false)] });
  const cases: Array<[string, Array<[Dir, Buffer]>]> = [
    ['server hello from the client', [[0, CH13()], [0, SH13()]]],
    ['client hello from the server', [[0, CH13()], [1, CH13()]]],
    ['second hello retry', [[0, CH13()], [1, hrr()], [0, CH13()], [1, hrr()]]],
    ['server hello before the retried client hello', [[0, CH13()], [1, hrr()], [1, SH13()]]],
    ['client hello again without a retry', [[0, Buffer.concat([CH13(), CH13()])]]],
  ];
  for (const [what, steps] of cases) {
    const c = new Conn('unknown');
    steps.forEach(([dir, b], i) => c.send(dir, b, i + 1));
    assert.equal(c.out.length, 1, what);
    assert.equal(c.out[0].incomplete, 'protocol', what);
  }
  const ok = new Conn();
  ok.send(0, CH13(), 1);
  ok.send(1, hrr(), 2);
  ok.send(0, Buffer.concat([ccs(), CH13()]), 3);
  ok.send(1, SH13(), 4);
  ok.send(0, appData(60), 5);
  assert.deepEqual([ok.out[0].helloRetry, ok.out[0].complete, ok.out[0].clientHelloTsNs, ok.out[0].serverHelloTsNs], [true, true, 1, 4]);
});

test('counters shared across trackers add up', () => {
  const stats = newTlsStats();
  const a = new TlsHandshakeTracker('client', () => {}, { stats });
  const b = new TlsHandshakeTracker('client', () => {}, { stats });
  a.data(0, { type: 'data', pos: 0, data: Buffer.from('GET /'), tsNs: 1, syscallStart: true });
  b.data(0, { type: 'data', pos: 0, data: CH13(), tsNs: 1, syscallStart: true });
  b.close();
  assert.deepEqual([stats.noHandshake.not_tls, stats.handshakes, stats.incomplete.closed, stats.records.handshake], [1, 1, 1, 1]);
});

test('an exception from the callback is the caller\'s', () => {
  const t = new TlsHandshakeTracker('client', () => {
    throw new Error('sink failed');
  });
  t.data(0, { type: 'data', pos: 0, data: CH13(), tsNs: 1, syscallStart: true });
  assert.throws(() => t.close(), /sink failed/);
  assert.equal(t.stats.internalErrors, 0);
  assert.equal(t.isIdle(), true);
});
