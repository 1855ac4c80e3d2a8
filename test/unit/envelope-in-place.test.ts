/**
 * Envelopes encoded around their records (the edge's path): the same envelope as
 * encodeEnvelope gives once decoded, written only into the headroom in front of the records,
 * with a copy when the header does not fit; and the batcher's sealed batches carry that
 * headroom, keep their records when the next batch is filled, and hold no full buffer when
 * small.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batcher, ENVELOPE_HEADROOM, type SealedBatch } from '../../edge/batcher.js';
import { decodeEnvelope, encodeEnvelope, encodeEnvelopeInPlace, ENVELOPE_VERSION, type Envelope } from '../../schemas/envelope.js';
import { sockData } from '../helpers/records.js';

const HEADROOM = 512;
const FILL = 0xee;

/** `records` placed after HEADROOM bytes of FILL in a buffer of their own. */
function placed(records: Buffer): { frame: Buffer; records: Buffer } {
  const frame = Buffer.alloc(HEADROOM + records.length + 16, FILL);
  records.copy(frame, HEADROOM);
  return { frame, records: frame.subarray(HEADROOM, HEADROOM + records.length) };
}

function envelope(records: Buffer, extra: Partial<Envelope> = {}): Envelope {
  return {
    v: ENVELOPE_VERSION, region: 'eu', node: 'n1', run: 'r1', seq: 7, shard: 3, shard_seq: 2, shard_records: 10,
    boot: '6c1f4a2e-8d3b-4c55-9e07-1b2a3c4d5e6f', clock: [1_700_000_000, 5], mono: 123_456_789, count: 2,
    records, lost: [], capture: { path: 'socket', features: ['drop_reasons'] }, ...extra,
  };
}

const RECORDS = Buffer.concat([sockData({ tsNs: 1, connId: 9 }, { direction: 0, posBytes: 0, payload: Buffer.from('GET / HTTP/1.1\r\n\r\n') }), sockData({ tsNs: 2, connId: 9 }, { direction: 0, posBytes: 18, payload: Buffer.alloc(300, 0x61) })]);

test('in place: decodes to the same envelope, written into the headroom only, no copy of the records', () => {
  for (const extra of [{}, { lost: [{ kind: 1, cause: 'ringbuf_full', records: 4 }], ksyms: { ffffffff81000000: 'tcp_v4_rcv+0x5e3' }, drop_reasons: { 2: 'NOT_SPECIFIED' } }]) {
    const { frame, records } = placed(RECORDS);
    const e = envelope(records, extra);
    const out = encodeEnvelopeInPlace(e, HEADROOM);
    assert.equal(out.buffer, frame.buffer, 'the records\' own memory');
    assert.equal(out.byteOffset + out.length, records.byteOffset + records.length, 'ends with the records');
    assert.ok(out.byteOffset > frame.byteOffset, 'within the headroom');
    assert.ok(frame.subarray(0, out.byteOffset - frame.byteOffset).every((b) => b === FILL), 'nothing written before the header');
    assert.ok(frame.subarray(HEADROOM + RECORDS.length).every((b) => b === FILL), 'nothing written after the records');
    assert.ok(records.equals(RECORDS), 'records unchanged');
    assert.deepEqual(decodeEnvelope(out), decodeEnvelope(encodeEnvelope(envelope(RECORDS, extra))));
  }
});

test('in place: a header larger than the headroom, or no headroom, is encoded as a copy', () => {
  const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`ffffffff8100${String(i).padStart(4, '0')}`, `some_kernel_function_${i}+0x1f`]));
  for (const [extra, headroom] of [[{ ksyms: many }, HEADROOM], [{}, 0]] as const) {
    const { frame, records } = placed(RECORDS);
    const out = encodeEnvelopeInPlace(envelope(records, extra), headroom);
    assert.notEqual(out.buffer, frame.buffer);
    assert.ok(frame.subarray(0, HEADROOM).every((b) => b === FILL), 'headroom untouched');
    assert.deepEqual(decodeEnvelope(out), decodeEnvelope(encodeEnvelope(envelope(RECORDS, extra))));
  }
});

test('sealed batches carry the headroom; a handed-over buffer keeps its records while the next batch fills', () => {
  const sealed: SealedBatch[] = [];
  const maxBatchBytes = 64 * 1024;
  const b = new Batcher({ shards: 1, maxBatchBytes, maxBatchRecords: 1_000_000 }, (s) => sealed.push(s));
  const rec = (i: number) => sockData({ tsNs: i, connId: 5 }, { direction: 0, posBytes: 0, payload: Buffer.alloc(1000, i & 0xff) });
  let i = 0;
  while (sealed.length < 2) {
    const r = rec(++i);
    b.add(r, 0, r.length, 0);
  }
  const small = rec(++i);
  b.add(small, 0, small.length, 0);
  b.flush();
  assert.equal(sealed.length, 3);
  const [first, second, third] = sealed;
  for (const s of sealed) {
    assert.equal(s.headroom, ENVELOPE_HEADROOM);
    assert.ok(s.records.byteOffset >= ENVELOPE_HEADROOM, 'headroom in front, in the same memory');
  }
  assert.notEqual(first.records.buffer, second.records.buffer, 'a full batch hands its buffer over');
  assert.equal(first.records.readBigUInt64LE(8), 1n, 'the first batch still holds its first record');
  assert.equal(third.count, 1);
  assert.equal(third.heldBytes, ENVELOPE_HEADROOM + third.records.length, 'a small batch is copied into a buffer of its size');
  assert.ok(first.heldBytes >= maxBatchBytes);
});
