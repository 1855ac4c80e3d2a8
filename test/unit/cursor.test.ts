/**
 * Cursor: big-endian reads, views, and every read past the end of its range refused with
 * a CursorRangeError that leaves the cursor where it was.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cursor, CursorRangeError } from '../../processors/l7/cursor.js';

const bytes = Buffer.from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0xff, 0xfe, 0xfd, 0xfc]);

test('reads advance the offset and decode big-endian', () => {
  const c = new Cursor(bytes);
  assert.equal(c.u8(), 0x01);
  assert.equal(c.u16be(), 0x0203);
  assert.equal(c.u24be(), 0x040506);
  assert.equal(c.u32be(), 0x0708_09ff);
  assert.equal(c.offset, 10);
  assert.equal(c.remaining, 3);
  c.skip(1);
  assert.deepEqual([...c.bytes(2)], [0xfd, 0xfc]);
  assert.equal(c.remaining, 0);
});

test('u32be with the top bit set is a positive number', () => {
  assert.equal(new Cursor(bytes, 9).u32be(), 0xfffefdfc);
});

test('a read past the end throws CursorRangeError and moves nothing', () => {
  const reads: Array<[string, (c: Cursor) => unknown, number]> = [
    ['u8', (c) => c.u8(), 1], ['u16be', (c) => c.u16be(), 2], ['u24be', (c) => c.u24be(), 3],
    ['u32be', (c) => c.u32be(), 4], ['bytes', (c) => c.bytes(5), 5], ['skip', (c) => c.skip(5), 5],
    ['take', (c) => c.take(5), 5],
  ];
  for (const [what, read, want] of reads) {
    // One byte short: `want - 1` bytes left in the range, more in the buffer beyond it.
    const c = new Cursor(bytes, 3, 3 + want - 1);
    assert.throws(() => read(c), CursorRangeError, what);
    assert.equal(c.offset, 3, what);
    assert.doesNotThrow(() => read(new Cursor(bytes, 3, 3 + want)), what);
  }
  const c = new Cursor(bytes, 11, 13);
  try {
    c.u24be();
    assert.fail('no error');
  } catch (err) {
    assert.ok(err instanceof CursorRangeError);
    assert.ok(err instanceof RangeError);
    assert.equal(err.name, 'CursorRangeError');
    assert.deepEqual([err.offset, err.want, err.end], [11, 3, 13]);
  }
});

test('reading exactly to the end is allowed; the range end binds, not the buffer end', () => {
  const c = new Cursor(bytes, 2, 6);
  assert.equal(c.u32be(), 0x03040506);
  assert.throws(() => c.u8(), CursorRangeError);
  c.reset(bytes, 0, 2);
  assert.equal(c.u16be(), 0x0102);
  assert.throws(() => c.u8(), CursorRangeError, 'bytes past the range exist but are not readable');
});

test('negative lengths are refused', () => {
  const c = new Cursor(bytes, 4);
  assert.throws(() => c.bytes(-1), CursorRangeError);
  assert.throws(() => c.skip(-2), CursorRangeError);
  assert.equal(c.offset, 4);
});

test('bytes() is a view, not a copy', () => {
  const b = Buffer.from([1, 2, 3, 4]);
  const v = new Cursor(b, 1).bytes(2);
  b[1] = 9;
  assert.deepEqual([...v], [9, 3]);
});

test('take() hands out a bounded cursor over the next bytes and skips them', () => {
  const c = new Cursor(bytes);
  c.skip(1);
  const sub = c.take(3);
  assert.equal(c.offset, 4);
  assert.deepEqual([sub.offset, sub.end, sub.remaining], [1, 4, 3]);
  assert.equal(sub.u16be(), 0x0203);
  assert.throws(() => sub.u16be(), CursorRangeError, 'the parent continues, the sub-cursor does not');
  assert.equal(sub.u8(), 0x04);
  assert.equal(c.u8(), 0x05);
});
