/**
 * DNS conversations from test/fixtures/dns/*.json through (for TCP) reassembly and framing
 * into a DnsMatcher: each gives its expected exchanges and counters, and TCP conversations
 * give exactly the same whether their records arrive whole, byte by byte, or split at any byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { byteByByte, splitAt } from '../helpers/splits.js';
import {
  formatExchange, loadFixtures, lookup, mapRecords, run, summary, toSteps, type Fixture, type RunResult,
} from '../fixtures/dns/fixture.js';

const fixtures = loadFixtures();
/** Two frames of 64 KiB: the most a matcher may hold for partial TCP messages. */
const MAX_BUFFERED = 2 * (2 + 65535);

function outcome(r: RunResult): string {
  return JSON.stringify({ exchanges: r.exchanges, stats: r.matcher.stats });
}

function checkBounds(fx: Fixture, r: RunResult): void {
  assert.ok(r.maxBuffered <= MAX_BUFFERED, `${fx.name}: ${r.maxBuffered} bytes buffered`);
  assert.equal(r.matcher.stats.internalErrors, 0, `${fx.name}: ${String(r.matcher.lastInternalError)}`);
  assert.equal(r.matcher.pendingCount, 0, `${fx.name}: close leaves nothing waiting`);
}

test('the fixture set covers the required conversations', () => {
  const names = new Set(fixtures.map((f) => f.name));
  for (const n of [
    'udp-a.json', 'udp-aaaa.json', 'udp-nxdomain.json', 'udp-cname-chain.json', 'udp-many-answers.json',
    'udp-server-two-clients.json', 'udp-timeout.json', 'udp-retransmit.json', 'udp-response-without-query.json',
    'udp-compression.json', 'udp-compression-loop.json', 'udp-garbage.json', 'udp-truncated-tc.json',
    'udp-no-question.json', 'tcp-single.json', 'tcp-pipelined.json', 'tcp-server.json', 'tcp-gap-resync.json',
    'tcp-midlife.json', 'tcp-large-response.json',
  ]) assert.ok(names.has(n), `missing fixture ${n}`);
});

for (const fx of fixtures) {
  const steps = toSteps(fx);

  test(`${fx.name}: expected exchanges`, () => {
    const r = run(fx, steps);
    assert.deepEqual(r.exchanges.map(formatExchange), fx.expected);
    for (const [path, value] of Object.entries(fx.checks ?? {})) {
      assert.equal(lookup(summary(r), path), String(value), `${fx.name}: ${path}`);
    }
    checkBounds(fx, r);
  });

  if (fx.transport !== 'tcp') continue;

  test(`${fx.name}: byte by byte gives the same result`, () => {
    const whole = outcome(run(fx, steps));
    const r = run(fx, mapRecords(steps, byteByByte));
    assert.equal(outcome(r), whole);
    checkBounds(fx, r);
  });

  test(`${fx.name}: split at every byte gives the same result`, () => {
    const whole = outcome(run(fx, steps));
    const total = steps.reduce((n, s) => n + (s.kind === 'record' ? s.rec.payload.length : 0), 0);
    for (let i = 1; i < total; i++) {
      const r = run(fx, mapRecords(steps, (recs) => splitAt(recs, i)));
      assert.equal(outcome(r), whole, `${fx.name}: split at ${i}`);
    }
  });
}
