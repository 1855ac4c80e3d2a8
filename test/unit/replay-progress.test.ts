/**
 * `netrig replay`'s progress output (cli/replay-progress.ts): redrawn in place on a terminal,
 * plain lines otherwise, and what a line says.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { progressLine, progressPrinter } from '../../cli/replay-progress.js';

function stream(isTTY: boolean): { out: NodeJS.WriteStream; written: string[] } {
  const written: string[] = [];
  return { out: { isTTY, write: (s: string) => written.push(s) > 0 } as unknown as NodeJS.WriteStream, written };
}

const half = { share: 0.5, messages: 12_345, records: 67_890, rows: 2_000, elapsedMs: 10_000, etaMs: 10_000 };

test('a line: share, counts, rate, time so far and left', () => {
  assert.equal(progressLine(half), 'replay: 50.0% of the window, 12,345 messages, 67,890 records, 2,000 rows, 1,235 messages/s, 10 s so far, about 10 s left');
  assert.equal(progressLine({ ...half, share: 0, messages: 0, records: 0, rows: 0, elapsedMs: 0, etaMs: null }),
    'replay: 0.0% of the window, 0 messages, 0 records, 0 rows, 0 messages/s, 0 s so far, time left unknown yet');
  assert.match(progressLine({ ...half, elapsedMs: 3_725_000, etaMs: 125_000 }), /1 h 2 min so far, about 2 min 5 s left$/);
  assert.match(progressLine({ ...half, share: 1, etaMs: 0 }), /^replay: 100\.0% .* done$/);
});

test('on a terminal: one line redrawn every second, ended with a newline', () => {
  const { out, written } = stream(true);
  const p = progressPrinter(out);
  assert.equal(p.intervalMs, 1000);
  p.report(half);
  p.report({ ...half, share: 1, etaMs: 0 });
  p.end();
  assert.deepEqual(written.map((w) => w.slice(0, 4)), ['\r\x1b[K', '\r\x1b[K', '\n']);
});

test('not on a terminal: a plain line every 10 s, or as asked', () => {
  const { out, written } = stream(false);
  const p = progressPrinter(out);
  assert.equal(p.intervalMs, 10_000);
  p.report(half);
  p.end();
  assert.deepEqual(written, [`${progressLine(half)}\n`]);
  assert.equal(progressPrinter(out, 3).intervalMs, 3000);
});
