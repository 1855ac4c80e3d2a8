/**
 * HTTP/2 conversations from test/fixtures/http2/*.h2 through reassembly, framing, HPACK
 * and stream matching: each gives its expected trace, and gives exactly the same
 * exchanges and counters whether its records arrive whole, byte by byte, or split at any
 * byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONTROL_PAYLOAD_BYTES } from '../../processors/http2/frames.js';
import { DEFAULT_MAX_HEADER_BLOCK_BYTES } from '../../processors/http2/connection.js';
import { MAX_TABLE_STORED_BYTES } from '../../processors/http2/hpack.js';
import {
  byteByByte, formatExchange, loadFixtures, lookup, run, splitAt, summary, toRecords,
  type Fixture, type Rec, type RunResult,
} from '../fixtures/http2/fixture.js';

const fixtures = loadFixtures();

/** Everything a run produced that must not depend on how records were split. */
function outcome(r: RunResult): string {
  return JSON.stringify({ exchanges: r.exchanges, stats: r.conn.stats, role: r.conn.role, recognized: r.conn.recognized });
}

function checkBounds(fx: Fixture, r: RunResult): void {
  assert.ok(r.maxBuffered <= 2 * (DEFAULT_MAX_HEADER_BLOCK_BYTES + CONTROL_PAYLOAD_BYTES + 24), `${fx.name}: ${r.maxBuffered} bytes buffered`);
  assert.ok(r.maxHpack <= 2 * MAX_TABLE_STORED_BYTES, `${fx.name}: ${r.maxHpack} HPACK bytes`);
  assert.equal(r.conn.stats.internalErrors, 0, `${fx.name}: ${String((r.conn.lastInternalError as Error | null)?.stack)}`);
  assert.equal(r.conn.openStreams, 0, `${fx.name}: streams left open after close`);
}

test('the fixture set covers the required conversations', () => {
  const names = new Set(fixtures.map((f) => f.name));
  for (const n of [
    'get-simple.h2', 'multiplexed.h2', 'post-data.h2', 'grpc-unary.h2', 'grpc-server-streaming.h2',
    'grpc-client-streaming.h2', 'grpc-bidi.h2', 'grpc-error.h2', 'grpc-gap.h2', 'rst-stream.h2', 'midstream.h2',
    'gap-data.h2', 'gap-headers.h2', 'continuation.h2', 'padding.h2', 'settings-table-size.h2', 'goaway.h2',
    'push-promise.h2', 'secrets.h2', 'timeout.h2', 'interim.h2', 'role-server.h2', 'role-contradicted.h2', 'late-request.h2',
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
