/**
 * The losses function's `stream_discarded` rows: a gap in an edge run's envelopes of a
 * shard (`shard_seq`) is the envelopes the raw stream discarded before the lane read them,
 * with the records they held (`shard_records`); runs are tracked apart, an envelope older
 * than the position (a redelivery) moves nothing, and envelopes of older edges (no
 * shard_seq) are read as before.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logger } from '../../lib/logger.js';
import { lossesFunction, STREAM_DISCARDED } from '../../processors/losses/index.js';
import type { Row } from '../../processors/runtime/function.js';
import { envelope } from '../helpers/records.js';

function lane() {
  const rows: Row[] = [];
  const counted = new Map<string, number>();
  const l = lossesFunction.createLane({
    shard: 0, log: logger('test'), streamId: 's@1', resuming: false, resumeFrom: 1,
    query: async () => [],
    emit: (table, row) => {
      assert.equal(table, 'capture_losses');
      rows.push(row);
    },
    count: (event, n = 1) => counted.set(event, (counted.get(event) ?? 0) + n),
  });
  if (l instanceof Promise) throw new Error('the losses lane is created at once');
  /** One envelope of `run` with `shard_seq`, `count` records and `shard_records` before it. */
  const feed = (run: string, shardSeq: number | undefined, shardRecords: number, count: number, seq: number) => {
    const e = { ...envelope({ records: [], seq, run, mono: 5e9 }), count };
    if (shardSeq !== undefined) Object.assign(e, { shard_seq: shardSeq, shard_records: shardRecords });
    l.onEnvelope!({ envelope: e, seq, connPrefix: 'node1:boot:' });
  };
  return { rows, counted, feed };
}

test('a gap in a run\'s shard sequence is one stream_discarded row with its envelopes and records', () => {
  const { rows, counted, feed } = lane();
  feed('r1', 1, 0, 10, 1);
  feed('r1', 2, 10, 5, 2);
  // 3, 4 and 5 (7 + 8 + 9 records) were discarded.
  feed('r1', 6, 39, 2, 3);
  feed('r1', 7, 41, 0, 4);
  assert.deepEqual(rows.map((r) => [r.run_id, r.kind, r.cause, r.envelopes, r.records]), [['r1', 'all', STREAM_DISCARDED, 3, 24]]);
  assert.equal(counted.get(STREAM_DISCARDED), 3);
});

test('runs are tracked apart; a redelivered older envelope and envelopes without shard_seq change nothing', () => {
  const { rows, feed } = lane();
  feed('a', 1, 0, 1, 1);
  feed('b', 4, 30, 1, 2); // first seen mid-run: no baseline, no row
  feed('a', 2, 1, 1, 3);
  feed('a', 1, 0, 1, 4); // older: ignored
  feed('b', 5, 31, 1, 5);
  feed('a', 3, 2, 1, 6);
  feed('c', undefined, 0, 3, 7);
  feed('c', undefined, 0, 3, 8);
  feed('b', 7, 40, 1, 9); // b's 6 (8 records) discarded
  assert.deepEqual(rows.map((r) => [r.run_id, r.envelopes, r.records]), [['b', 1, 8]]);
});

test('loss counts the edge reported keep their rows, with no envelopes', () => {
  const { rows } = lane();
  const l = lossesFunction.createLane({
    shard: 0, log: logger('test'), streamId: 's@1', resuming: false, resumeFrom: 1, query: async () => [],
    emit: (_t, row) => rows.push(row), count: () => undefined,
  });
  const e = envelope({ records: [], seq: 1, lost: [{ kind: 3, cause: 'ringbuf_full', records: 12 }] });
  (l as { onEnvelope(c: unknown): void }).onEnvelope({ envelope: e, seq: 1, connPrefix: '' });
  assert.deepEqual(rows.map((r) => [r.cause, r.records, r.envelopes]), [['ringbuf_full', 12, 0]]);
});
