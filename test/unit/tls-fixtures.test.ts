/**
 * TLS conversations from test/fixtures/tls/*.tls through reassembly, the record layer and
 * the handshake tracker: each gives its expected trace, from either end of the connection,
 * and exactly the same result whether its records arrive whole, byte by byte, or split at
 * any byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { byteByByte, splitAt } from '../helpers/splits.js';
import {
  formatHandshake, loadFixtures, lookup, mirrored, run, summary, toRecords, type Fixture, type Rec, type RunResult,
} from '../fixtures/tls/fixture.js';
import { MAX_HANDSHAKE_MESSAGE_BYTES } from '../../processors/tls/records.js';

const fixtures = loadFixtures();

function outcome(r: RunResult): string {
  return JSON.stringify({ handshakes: r.handshakes, stats: r.tracker.stats, role: r.tracker.role, no: r.tracker.noHandshakeReason });
}

function checkBounds(fx: Fixture, r: RunResult): void {
  assert.ok(r.maxBuffered <= 2 * MAX_HANDSHAKE_MESSAGE_BYTES + 18, `${fx.name}: ${r.maxBuffered} bytes buffered`);
  assert.equal(r.tracker.stats.internalErrors, 0, `${fx.name}: ${String(r.tracker.lastInternalError)}`);
  assert.equal(r.tracker.isIdle(), true, `${fx.name}: idle after close`);
}

test('the fixture set covers the required conversations', () => {
  const names = new Set(fixtures.map((f) => f.name));
  for (const n of [
    'tls12-ecdhe-rsa.tls', 'tls13-aes256.tls', 'tls13-no-sni.tls', 'tls13-hrr.tls', 'clienthello-split.tls',
    'tls12-alert.tls', 'timing.tls', 'not-tls-http.tls', 'not-tls-ssh.tls', 'not-tls-garbage.tls',
    'hostile-record-length.tls', 'hostile-hello-length.tls', 'hostile-vectors.tls', 'hostile-sni.tls',
    'midstream.tls', 'gap-after-hello.tls', 'never-completes.tls', 'server-not-tls.tls', 'bad-record-after-hello.tls',
    'tls13-encrypted-alert.tls',
  ]) assert.ok(names.has(n), `missing fixture ${n}`);
});

for (const fx of fixtures) {
  const recs = toRecords(fx);

  test(`${fx.name}: expected trace`, () => {
    const r = run(fx, recs);
    assert.deepEqual(r.handshakes.map(formatHandshake), fx.expected);
    for (const [path, value] of fx.checks) assert.equal(lookup(summary(r), path), value, `${fx.name}: ${path}`);
    checkBounds(fx, r);
  });

  test(`${fx.name}: the same from the other end of the connection`, () => {
    const other = mirrored(fx);
    const r = run(other, toRecords(other));
    const swap = (line: string): string => line.replace(/^(client|server) /, (_, role: string) => (role === 'client' ? 'server ' : 'client '));
    assert.deepEqual(r.handshakes.map(formatHandshake), fx.expected.map(swap));
    assert.equal(r.tracker.stats.roleMismatches, 0);
  });

  test(`${fx.name}: byte by byte gives the same result`, () => {
    const whole = outcome(run(fx, recs));
    const r = run(fx, byteByByte(recs));
    assert.equal(outcome(r), whole);
    checkBounds(fx, r);
  });

  test(`${fx.name}: split at every byte gives the same result`, () => {
    const whole = outcome(run(fx, recs));
    const total = recs.reduce((n, r: Rec) => n + r.payload.length, 0);
    for (let i = 1; i < total; i++) assert.equal(outcome(run(fx, splitAt(recs, i))), whole, `${fx.name}: split at ${i}`);
  });
}

test('a role hint the bytes contradict is counted; the bytes win', () => {
  const fx = fixtures.find((f) => f.name === 'tls13-aes256.tls')!;
  const r = run({ ...fx, hint: 'server' }, toRecords(fx));
  assert.equal(r.handshakes[0].role, 'client');
  assert.equal(r.tracker.stats.roleMismatches, 1);
});

test('non-TLS streams are given up at their first byte, TLS-looking garbage by the sixth', () => {
  for (const [name, maxBytes] of [['not-tls-http.tls', 1], ['not-tls-ssh.tls', 1], ['hostile-record-length.tls', 5], ['not-tls-garbage.tls', 6]] as const) {
    const fx = fixtures.find((f) => f.name === name)!;
    const recs = byteByByte(toRecords(fx));
    const r = run(fx, recs);
    assert.ok(r.idleAfter >= 0 && r.idleAfter < maxBytes, `${name}: idle after ${r.idleAfter + 1} bytes`);
  }
});
