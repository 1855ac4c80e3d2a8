/**
 * StreamReassembler: in-order delivery, reordering, duplicates and overlaps, lost holes,
 * truncated syscalls, records without a user buffer, and bounded holding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataFlags } from '../../schemas/records.js';
import { StreamReassembler, type StreamEvent, type StreamRecord } from '../../processors/l7/reassembly.js';

/** A record of a syscall that moved exactly `text`, starting at `pos`. */
function rec(pos: number, text: string, tsNs = pos, extra: Partial<StreamRecord> = {}): StreamRecord {
  const payload = Buffer.from(text, 'latin1');
  return { posBytes: pos, offsetBytes: 0, lenBytes: payload.length, dataFlags: DataFlags.Last, payload, tsNs, ...extra };
}

/** Events as compact strings: `d@pos:text`, `d@pos:text*` (syscall start), `u@pos+len`, `l@pos+len`. */
function collector(): { events: StreamEvent[]; out: (ev: StreamEvent) => void; trace: () => string[] } {
  const events: StreamEvent[] = [];
  return {
    events,
    out: (ev) => events.push(ev.type === 'data' ? { ...ev, data: Buffer.from(ev.data) } : ev),
    trace: () => events.map((ev) => ev.type === 'data'
      ? `d@${ev.pos}:${ev.data.toString('latin1')}${ev.syscallStart ? '*' : ''}`
      : `${ev.cause === 'lost' ? 'l' : 'u'}@${ev.pos}+${ev.len}`),
  };
}

/** Events must tile the stream: each starts where the previous ended. */
function assertContiguous(events: StreamEvent[]): void {
  for (let i = 1; i < events.length; i++) {
    const p = events[i - 1];
    const end = p.pos + (p.type === 'data' ? p.data.length : p.len);
    assert.equal(events[i].pos, end, `event ${i} starts at ${events[i].pos}, previous ended at ${end}`);
  }
}

test('in-order records pass straight through, syscall starts marked', () => {
  const r = new StreamReassembler();
  const c = collector();
  assert.equal(r.nextPos, -1);
  r.push(rec(0, 'GET / '), c.out);
  // One syscall split into two records: the second does not start the syscall.
  r.push(rec(6, 'HTTP/1.1', 6, { offsetBytes: 6, lenBytes: 14, dataFlags: 0 }), c.out);
  r.push(rec(14, '\r\n\r\n', 14, { offsetBytes: 14, lenBytes: 14 }), c.out);
  assert.deepEqual(c.trace(), ['d@0:GET / *', 'd@6:HTTP/1.1', 'd@14:\r\n\r\n']);
  assert.equal(r.nextPos, 18);
  assert.equal(r.pendingBytes, 0);
});

test('the first record defines the start, even mid-stream', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(5000, 'abc', 1, { offsetBytes: 100, lenBytes: 103 }), c.out);
  r.push(rec(5003, 'def'), c.out);
  assert.deepEqual(c.trace(), ['d@5000:abc', 'd@5003:def*']);
  assert.equal(r.stats.lostBytes, 0);
});

test('a reordered record is held and delivered in order', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'aa'), c.out);
  r.push(rec(4, 'cc'), c.out);
  assert.equal(r.pendingBytes, 2);
  r.push(rec(2, 'bb'), c.out);
  assert.deepEqual(c.trace(), ['d@0:aa*', 'd@2:bb*', 'd@4:cc*']);
  assert.equal(r.stats.reordered, 1);
  assert.equal(r.stats.lostBytes, 0);
  assert.equal(r.pendingBytes, 0);
});

test('held records are copied, so the caller may reuse its buffer', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'a'), c.out);
  const later = rec(2, 'zz');
  r.push(later, c.out);
  later.payload.fill(0x21);
  r.push(rec(1, 'b'), c.out);
  assert.deepEqual(c.trace(), ['d@0:a*', 'd@1:b*', 'd@2:zz*']);
});

test('duplicates are dropped and overlaps trimmed', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'abcd'), c.out);
  r.push(rec(0, 'abcd'), c.out);
  r.push(rec(2, 'cdef'), c.out);
  r.push(rec(6, 'gh'), c.out);
  r.push(rec(6, 'gh'), c.out);
  assert.deepEqual(c.trace(), ['d@0:abcd*', 'd@4:ef', 'd@6:gh*']);
  assert.equal(r.stats.duplicates, 2);
  assert.equal(r.stats.overlapBytes, 2);
  assertContiguous(c.events);
});

test('a duplicate of a held record is dropped', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'a'), c.out);
  r.push(rec(5, 'xyz'), c.out);
  r.push(rec(5, 'xyz'), c.out);
  assert.equal(r.pendingBytes, 3);
  assert.equal(r.stats.duplicates, 1);
});

test('a hole still missing at flush is a lost gap', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'aa', 10), c.out);
  r.push(rec(10, 'bb', 20), c.out);
  assert.deepEqual(c.trace(), ['d@0:aa*']);
  r.flush(c.out);
  assert.deepEqual(c.trace(), ['d@0:aa*', 'l@2+8', 'd@10:bb*']);
  assert.equal(c.events[1].tsNs, 20);
  assert.equal(r.stats.lostBytes, 8);
  // The missing record arriving late changes nothing.
  r.push(rec(2, '12345678', 15), c.out);
  assert.equal(c.events.length, 3);
  assert.equal(r.stats.duplicates, 1);
});

test('a hole is declared lost once records wait longer than maxHoldNs', () => {
  const r = new StreamReassembler({ maxHoldNs: 100 });
  const c = collector();
  r.push(rec(0, 'a', 1000), c.out);
  r.push(rec(5, 'b', 1010), c.out);
  r.expire(1109, c.out);
  assert.deepEqual(c.trace(), ['d@0:a*']);
  r.expire(1110, c.out);
  assert.deepEqual(c.trace(), ['d@0:a*', 'l@1+4', 'd@5:b*']);
  // A record of the same direction carries the time too: 'd' frees 'c', and waits itself.
  r.push(rec(10, 'c', 2000), c.out);
  r.push(rec(20, 'd', 2100), c.out);
  assert.deepEqual(c.trace().slice(3), ['l@6+4', 'd@10:c*']);
  assert.equal(r.pendingChunks, 1);
});

test('holding stays within maxPendingBytes and maxPendingChunks', () => {
  const r = new StreamReassembler({ maxPendingBytes: 10, maxPendingChunks: 3 });
  const c = collector();
  r.push(rec(0, 'a'), c.out);
  // Every other 4-byte record is missing; each push may force the oldest hole out.
  for (let i = 0; i < 20; i++) {
    r.push(rec(2 + i * 8, 'xxxx'), c.out);
    assert.ok(r.pendingBytes <= 10, `pendingBytes ${r.pendingBytes}`);
    assert.ok(r.pendingChunks <= 3, `pendingChunks ${r.pendingChunks}`);
  }
  r.flush(c.out);
  assertContiguous(c.events);
  assert.equal(r.pendingBytes, 0);
  assert.equal(r.stats.lostBytes, 1 + 19 * 4);
});

test('one record larger than maxPendingBytes is not held at all', () => {
  const r = new StreamReassembler({ maxPendingBytes: 4 });
  const c = collector();
  r.push(rec(0, 'a'), c.out);
  r.push(rec(3, 'abcdefgh'), c.out);
  assert.deepEqual(c.trace(), ['d@0:a*', 'l@1+2', 'd@3:abcdefgh*']);
  assert.equal(r.pendingBytes, 0);
});

test('a truncated syscall ends in an uncaptured gap, not loss', () => {
  const r = new StreamReassembler();
  const c = collector();
  // A 1000-byte syscall captured as two records of 4 bytes each.
  r.push(rec(0, 'HTTP', 1, { lenBytes: 1000, dataFlags: 0 }), c.out);
  r.push(rec(4, '/1.1', 1, { offsetBytes: 4, lenBytes: 1000, dataFlags: DataFlags.Last | DataFlags.Truncated }), c.out);
  r.push(rec(1000, 'next', 2), c.out);
  assert.deepEqual(c.trace(), ['d@0:HTTP*', 'd@4:/1.1', 'u@8+992', 'd@1000:next*']);
  assert.equal(r.stats.uncapturedBytes, 992);
  assert.equal(r.stats.lostBytes, 0);
});

test('a record without a user buffer (sendfile) is one uncaptured gap', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'hdr'), c.out);
  r.push(rec(3, '', 2, { lenBytes: 50000, dataFlags: DataFlags.Last | DataFlags.NoBuffer | DataFlags.Truncated }), c.out);
  r.push(rec(50003, 'x', 3), c.out);
  assert.deepEqual(c.trace(), ['d@0:hdr*', 'u@3+50000', 'd@50003:x*']);
});

test('a truncated record that overlaps delivered bytes keeps only its new tail', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(0, 'abcdef'), c.out);
  r.push(rec(2, 'cd', 1, { lenBytes: 10, dataFlags: DataFlags.Last | DataFlags.Truncated }), c.out);
  assert.deepEqual(c.trace(), ['d@0:abcdef*', 'u@6+6']);
  assert.equal(r.nextPos, 12);
});

test('records with impossible numbers are counted and dropped', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(-1, 'a'), c.out);
  r.push(rec(0, 'a', 0, { offsetBytes: 5 }), c.out);
  r.push(rec(Number.NaN, 'a'), c.out);
  r.push(rec(2 ** 53, 'a'), c.out);
  r.push(rec(0, 'a', 0, { lenBytes: 1.5 }), c.out);
  assert.equal(r.stats.invalid, 5);
  assert.equal(c.events.length, 0);
  assert.equal(r.nextPos, -1);
});

test('an empty record is ignored', () => {
  const r = new StreamReassembler();
  const c = collector();
  r.push(rec(7, ''), c.out);
  assert.equal(r.nextPos, -1);
  assert.equal(c.events.length, 0);
});
