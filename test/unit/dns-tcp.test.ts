/**
 * DnsTcpSplitter: framing over any split, the largest message, loss of framing at gaps and
 * implausible frames, and resynchronisation at syscall starts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StreamEvent } from '../../processors/l7/reassembly.js';
import { DnsTcpSplitter, plausibleFrame, type DnsTcpMessage } from '../../processors/dns/tcp.js';
import { encodeMsg } from '../fixtures/dns/fixture.js';

function framed(...msgs: Buffer[]): Buffer {
  return Buffer.concat(msgs.map((m) => {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(m.length);
    return Buffer.concat([p, m]);
  }));
}

const q = (id: number, name = 'example.com'): Buffer => encodeMsg({ type: 'query', id, questions: [{ type: 'A', name }] });

/** Collects messages as copies (they may be views) with their metadata. */
class Sink {
  readonly out: Array<Omit<DnsTcpMessage, 'msg'> & { hex: string }> = [];
  readonly splitter: DnsTcpSplitter;
  pos = 0;
  constructor(midlife = false) {
    this.splitter = new DnsTcpSplitter((m) => this.out.push({ pos: m.pos, firstTsNs: m.firstTsNs, lastTsNs: m.lastTsNs, partial: m.partial, hex: m.msg.toString('hex') }), { midlife });
  }
  data(b: Buffer, tsNs: number, syscallStart = true): void {
    const ev: StreamEvent = { type: 'data', pos: this.pos, data: b, tsNs, syscallStart };
    this.splitter.push(ev);
    this.pos += b.length;
  }
  gap(len: number, tsNs: number, cause: 'lost' | 'uncaptured' = 'lost'): void {
    this.splitter.push({ type: 'gap', pos: this.pos, len, tsNs, cause });
    this.pos += len;
  }
}

test('messages are framed the same however the bytes are cut', () => {
  const stream = framed(q(1), q(2, 'b.example'), q(3, 'ccc.example.org'));
  const whole = new Sink();
  whole.data(stream, 10);
  assert.deepEqual(whole.out.map((m) => m.hex), [q(1), q(2, 'b.example'), q(3, 'ccc.example.org')].map((b) => b.toString('hex')));
  assert.deepEqual(whole.out.map((m) => m.pos), [0, 31, 60]);
  for (let a = 0; a <= stream.length; a++) {
    for (let b = a; b <= stream.length; b += 7) {
      const s = new Sink();
      s.data(stream.subarray(0, a), 10);
      s.data(stream.subarray(a, b), 10, false);
      s.data(stream.subarray(b), 10, false);
      assert.deepEqual(s.out, whole.out, `cuts ${a}/${b}`);
    }
  }
  const bytes = new Sink();
  for (let i = 0; i < stream.length; i++) bytes.data(stream.subarray(i, i + 1), 10 + i, i === 0);
  assert.deepEqual(bytes.out.map((m) => [m.hex, m.firstTsNs, m.lastTsNs]),
    [[whole.out[0].hex, 10, 40], [whole.out[1].hex, 41, 69], [whole.out[2].hex, 70, 10 + stream.length - 1]]);
  assert.equal(bytes.splitter.bufferedBytes, 0);
});

test('a 65535-byte message, and bytes held never exceed one frame', () => {
  const big = Buffer.concat([q(9), Buffer.alloc(65535 - q(9).length, 0)]);
  const stream = framed(big, q(10));
  const s = new Sink();
  let max = 0;
  for (let i = 0; i < stream.length; i += 1000) {
    s.data(stream.subarray(i, i + 1000), i, i === 0);
    max = Math.max(max, s.splitter.bufferedBytes);
  }
  assert.equal(s.out.length, 2);
  assert.equal(s.out[0].hex.length, 2 * 65535);
  assert.ok(max <= 2 + 65535);
});

test('a gap past a frame\'s end loses framing until a syscall starts with a plausible frame', () => {
  const s = new Sink();
  const m1 = framed(q(1));
  s.data(m1.subarray(0, 10), 1);
  assert.equal(s.splitter.atBoundary, false);
  // The gap hides the rest of the first frame and 3 bytes of whatever followed it.
  s.gap(m1.length - 10 + 3, 2);
  assert.equal(s.splitter.inSync, false);
  assert.equal(s.splitter.bufferedBytes, 0);
  // Not a syscall start: skipped.
  s.data(framed(q(2)), 3, false);
  // A syscall start with garbage: a miss.
  s.data(Buffer.from('GET / HTTP/1.1\r\n\r\n'), 4);
  s.data(framed(q(3), q(4)), 5);
  const at = m1.length + 3 + framed(q(2)).length + 18;
  // The first frame's length was known: it ends, partial, where the gap passes its end.
  assert.deepEqual(s.out.map((m) => [m.pos, m.partial]), [[0, true], [at, false], [at + 31, false]]);
  const st = s.splitter.stats;
  assert.deepEqual([st.gaps, st.desyncs, st.resyncs, st.resyncMisses, st.messages], [1, 1, 1, 1, 3]);
  assert.equal(st.skippedBytes, framed(q(2)).length + 18);
});

test('a gap inside a frame of known length keeps framing; the message is cut at the hole', () => {
  const big = encodeMsg({ type: 'response', id: 1, questions: [{ type: 'TXT', name: 'big.example' }],
    answers: Array.from({ length: 40 }, () => ({ type: 'TXT' as const, name: 'big.example', data: 'x'.repeat(200) })) });
  const f = framed(big, q(2));
  const s = new Sink();
  s.data(f.subarray(0, 300), 1); // the capture kept 300 bytes of the syscall...
  s.gap(big.length + 2 - 300, 1, 'uncaptured'); // ...and the rest of the frame is known by count
  s.data(f.subarray(big.length + 2), 2);
  assert.deepEqual(s.out.map((m) => [m.pos, m.partial, m.hex.length / 2]), [[0, true, 298], [big.length + 2, false, q(2).length]]);
  assert.equal(s.splitter.stats.partialMessages, 1);
  assert.equal(s.splitter.stats.desyncs, 0);
  // Holes, then bytes, then the frame's end: still the part before the first hole.
  const t = new Sink();
  t.data(f.subarray(0, 50), 1);
  t.gap(10, 2);
  t.data(f.subarray(60, big.length + 2), 3, false);
  assert.deepEqual(t.out.map((m) => [m.partial, m.hex.length / 2, m.lastTsNs]), [[true, 48, 3]]);
  // A gap running past the frame's end hides the next prefix: framing is lost, but the
  // message it cut is handed on as if the gap had stopped at its end.
  const u = new Sink();
  u.data(f.subarray(0, 50), 1);
  u.gap(big.length + 2 - 50 + 1, 2);
  assert.deepEqual(u.out.map((m) => [m.partial, m.hex.length / 2, m.lastTsNs]), [[true, 48, 2]]);
  assert.deepEqual([u.splitter.inSync, u.splitter.stats.desyncs], [false, 1]);
});

test('an implausibly short frame in sync loses framing', () => {
  const s = new Sink();
  s.data(Buffer.from([0, 5, 1, 2, 3, 4, 5]), 1);
  s.data(framed(q(7)), 2);
  assert.equal(s.out.length, 1);
  assert.equal(s.splitter.stats.desyncs, 1);
  assert.equal(s.splitter.stats.resyncs, 1);
});

test('a probe cut short by the next syscall start gives way to it', () => {
  const s = new Sink(true);
  s.data(Buffer.from([0xc0, 0, 2, 1, 0, 0]), 1);
  s.data(framed(q(5)), 2);
  assert.equal(s.out.length, 1);
  assert.deepEqual([s.splitter.stats.resyncMisses, s.splitter.stats.resyncs], [1, 1]);
});

test('a probe may read a length prefix written by its own syscall', () => {
  const s = new Sink(true);
  const f = framed(q(6));
  s.data(f.subarray(0, 2), 1);
  s.data(f.subarray(2, 8), 1, false);
  s.data(f.subarray(8), 1, false);
  assert.equal(s.out.length, 1);
});

test('the probe rarely accepts random bytes', () => {
  let seed = 1;
  let accepted = 0;
  const b = Buffer.alloc(14);
  for (let i = 0; i < 100000; i++) {
    for (let k = 0; k < 14; k++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      b[k] = seed >>> 24;
    }
    if (plausibleFrame(b, 0)) accepted++;
  }
  assert.ok(accepted < 10, `${accepted} of 100000 random probes accepted`);
  assert.ok(plausibleFrame(framed(q(1)), 0));
});
