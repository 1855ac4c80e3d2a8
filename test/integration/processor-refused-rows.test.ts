/**
 * A row the engine refuses (a value its column cannot hold) no longer stalls the table: the
 * block is split until the row stands alone, the row goes to the dead-letter stream with the
 * engine's reason, every other row is committed, and later messages go on being written.
 * Dead letters are kept no longer than the raw stream keeps its messages.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { logger } from '../../lib/logger.js';
import { DLQ_STREAM } from '../../processors/runtime/dlq.js';
import type { EnvelopeContext, LaneContext, ProcessingFunction } from '../../processors/runtime/function.js';
import { Processor } from '../../processors/runtime/processor.js';
import { wallNs } from '../../processors/runtime/rows.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { envelope } from '../helpers/records.js';
import { freshClickHouse, publishEnvelopes, removeClickHouseData, rows, STREAM, waitFor } from '../helpers/processor-run.js';

let nats: NatsServerHandle;
let nc: NatsConnection;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
  removeClickHouseData();
});

/** One capture_losses row per envelope, its `records` the envelope's seq; seq 13 writes -13, which UInt64 refuses. */
const oneRowPerEnvelope: ProcessingFunction = {
  name: 'probe',
  kinds: [],
  tables: ['capture_losses'],
  createLane: (ctx: LaneContext) => ({
    onRecord() {},
    onEnvelope(env: EnvelopeContext) {
      const e = env.envelope;
      ctx.emit('capture_losses', {
        ts: wallNs(e.mono, e.clock), region: e.region, node: e.node, run_id: e.run, kind: 'all', cause: 'probe',
        records: e.seq === 13 ? -13 : e.seq, envelopes: 0, connections: 0,
      });
    },
    lowWaterMark: () => Infinity,
  }),
};

test('a refused row is dead-lettered with the reason, the rest of its block and later blocks are committed', async () => {
  const ch = await freshClickHouse('refused');
  // 40 envelopes in one flush: one block of 40 rows, one of them refused.
  await publishEnvelopes(nc, Array.from({ length: 40 }, (_, i) => envelope({ records: [], seq: i + 1, shard: 0, node: 'refusals', mono: 5e9 + i })));
  const p = await Processor.start({
    nc, ch, functions: [oneRowPerEnvelope], shards: [0], stream: STREAM.name, subjectPrefix: STREAM.subjectPrefix,
    flushIntervalMs: 5000, ttlDays: 3650, maxPendingRows: 10_000, log: logger('test'),
  });
  try {
    await waitFor('40 messages handled', async () => p.lanes[0].pendingRows === 40);
    await p.flush();
    const seqs = async () => (await rows<{ records: string }>(ch, `SELECT records FROM ${ch.database}.capture_losses WHERE node = 'refusals' ORDER BY records`)).map((r) => Number(r.records));
    assert.deepEqual(await seqs(), Array.from({ length: 40 }, (_, i) => i + 1).filter((s) => s !== 13));
    const refused = (await p.metrics.rowsRefused.get()).values;
    assert.deepEqual(refused.map((v) => [v.labels.table, v.labels.code, v.value]), [['capture_losses', '72', 1]]);

    // The dead letter: the row as JSON, with the table and the engine's error.
    const jsm = await jetstreamManager(nc);
    await waitFor('the dead letter stored', async () => (await jsm.streams.info(DLQ_STREAM).catch(() => null))?.state.messages === 1);
    const m = await jsm.streams.getMessage(DLQ_STREAM, { last_by_subj: 'netrig.dlq.row_refused' });
    assert.ok(m);
    assert.equal(m.header.get('Netrig-Table'), 'capture_losses');
    assert.match(m.header.get('Netrig-Error'), /Unsigned type must not contain '-'|CANNOT_PARSE_NUMBER/);
    assert.equal((m.json() as { records: number }).records, -13);
    const dlq = await jsm.streams.info(DLQ_STREAM);
    assert.ok(dlq.config.max_age > 0 && dlq.config.max_age <= STREAM.maxAgeSeconds * 1e9, 'kept no longer than the raw stream');

    // Later messages are written: nothing stalls behind the refused row.
    await publishEnvelopes(nc, [envelope({ records: [], seq: 41, shard: 0, node: 'refusals', mono: 6e9 })]);
    await waitFor('the next message handled', async () => p.lanes[0].pendingRows === 1);
    await p.flush();
    assert.equal((await seqs()).at(-1), 41);
  } finally {
    await p.stop();
    await ch.close();
  }
});
