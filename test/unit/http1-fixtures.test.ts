/**
 * HTTP/1 conversations from test/fixtures/http1/*.http through reassembly, parsing and
 * pairing: each gives its expected trace, and gives exactly the same exchanges and
 * counters whether its records arrive whole, byte by byte, or split at any byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LINE_BUFFER_BYTES } from '../../processors/http1/parser.js';
import {
  byteByByte, formatExchange, loadFixtures, lookup, run, splitAt, summary, toRecords,
  type Fixture, type Rec, type RunResult,
} from '../fixtures/http1/fixture.js';

const fixtures = loadFixtures();

/** Everything a run produced that must not depend on how records were split. */
function outcome(r: RunResult): string {
  return JSON.stringify({ exchanges: r.exchanges, stats: r.conn.stats, role: r.conn.role, stop: r.conn.stopReason });
}

function checkBounds(fx: Fixture, r: RunResult): void {
  assert.ok(r.maxBuffered <= 2 * LINE_BUFFER_BYTES, `${fx.name}: ${r.maxBuffered} bytes buffered`);
  assert.equal(r.conn.stats.internalErrors, 0, `${fx.name}: ${String(r.conn.lastInternalError)}`);
}

test('the fixture set covers the required conversations', () => {
  const names = new Set(fixtures.map((f) => f.name));
  for (const n of [
    'get-simple.http', 'keepalive.http', 'pipelined.http', 'post-content-length.http', 'chunked.http', 'head.http',
    'status-204.http', 'status-304.http', 'expect-continue.http', 'http10-close.http', 'truncated-capture.http',
    'sendfile.http', 'midstream-body.http', 'midstream-headers.http', 'midstream-pipelined.http', 'lost-headers.http',
    'lost-response.http', 'garbage.http', 'upgrade-websocket.http', 'h2-preface.http', 'secrets.http',
  ]) assert.ok(names.has(n), `missing fixture ${n}`);
});

for (const fx of fixtures) {
  const recs = toRecords(fx);

  test(`${fx.name}: expected trace`, () => {
    const r = run(fx, recs);
    assert.deepEqual(r.exchanges.map(formatExchange), fx.expected);
    for (const [path, value] of fx.checks) assert.equal(lookup(summary(r), path), value, `${fx.name}: ${path}`);
    checkBounds(fx, r);
    // Credentials in the fixtures all contain SECRET; they must never be decoded.
    assert.doesNotMatch(outcome(r), /SECRET/);
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
    for (let i = 1; i < total; i++) {
      const r = run(fx, splitAt(recs, i));
      assert.equal(outcome(r), whole, `${fx.name}: split at ${i}`);
    }
  });
}
