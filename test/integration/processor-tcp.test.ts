/**
 * Recorded envelopes through a real nats-server into the embedded ClickHouse engine with the
 * tcp and losses functions: rows checked exactly; a second, fresh consumer reading the same
 * stream from the start adds no row; a malformed envelope is counted, dead-lettered, and
 * does not stop the processor; a row the engine refuses (a value its column cannot hold) no
 * longer stalls its table: the block is split until the row stands alone, the row goes to the
 * dead-letter stream with the engine's reason, every other row is committed, and later
 * messages go on being written. Dead letters are kept no longer than the raw stream keeps
 * its messages.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { logger } from '../../lib/logger.js';
import { DLQ_STREAM } from '../../processors/runtime/dlq.js';
import type { EnvelopeContext, LaneContext, ProcessingFunction } from '../../processors/runtime/function.js';
import { wallNs } from '../../processors/runtime/rows.js';
import { Processor, consumerName } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { lossesFunction } from '../../processors/losses/index.js';
import { RecordKind, Role, TcpEventFlags } from '../../schemas/records.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { connClose, envelope, skbDrop, tcpEvent } from '../helpers/records.js';
import { freshClickHouse, publishEnvelopes, removeClickHouseData, rows, STREAM, waitFor } from '../helpers/processor-run.js';

let nc: NatsConnection;

natsServerForFile((_server, conn) => {
  nc = conn;
});
after(() => removeClickHouseData());

// Fixture times are in 2023: the tables are created with a retention long enough to keep them.
const BOOT = '3e43dd63-6003-4ed5-8a7e-59214f932070';
const client = { saddr: '10.77.1.1', daddr: '10.77.1.2', sport: 40000, dport: 80 };
const server = { saddr: '10.77.1.2', daddr: '10.77.1.1', sport: 80, dport: 40000 };

function fixture() {
  return [
    envelope({
      seq: 1, shard: 0, boot: BOOT, mono: 3_000_000_000,
      records: [
        connClose({ tsNs: 2_000_000_000, connId: 7, tgid: 100 }, client, { role: Role.Client, comm: 'curl', openTsNs: 1_000_000_000, txBytes: 79, rxBytes: 612, retransmits: 2, oldState: 4 }),
        tcpEvent(RecordKind.TcpRetransmit, { tsNs: 1_500_000_000, connId: 7, tgid: 100 }, client, { comm: 'curl' }),
      ],
    }),
    envelope({
      seq: 2, shard: 1, boot: BOOT, mono: 3_000_000_000,
      records: [
        connClose({ tsNs: 2_000_000_500, connId: 8, tgid: 200 }, server, { role: Role.Server, comm: 'nginx', openTsNs: 1_000_000_100, txBytes: 612, rxBytes: 79, oldState: 9 }),
        tcpEvent(RecordKind.TcpReset, { tsNs: 2_000_000_400, connId: 8, tgid: 200 }, server, { comm: 'nginx', eventFlags: TcpEventFlags.RstSent, reason: 3 }),
        skbDrop({ tsNs: 1_600_000_000, connId: 0 }, { ...client, protocol: 6 }, { location: 0xffffffff81a2b3c4n, reason: 12, pktLenBytes: 60 }),
      ],
      ksyms: { ffffffff81a2b3c4: 'nf_hook_slow+0x9e' },
      drop_reasons: { 12: 'NETFILTER_DROP' },
      lost: [{ kind: RecordKind.SockData, cause: 'ringbuf_full', records: 5 }],
    }),
    // A heartbeat: no records, only a loss count.
    envelope({ seq: 3, shard: 2, boot: BOOT, mono: 4_000_000_000, records: [], lost: [{ kind: RecordKind.SockData, cause: 'buffer_full', records: 3 }] }),
  ];
}

async function runUntilIdle(ch: Awaited<ReturnType<typeof freshClickHouse>>): Promise<Processor> {
  const p = await Processor.start({
    nc, ch, functions: [tcpFunction, lossesFunction], shards: [0, 1, 2, 3], stream: STREAM.name,
    subjectPrefix: STREAM.subjectPrefix, flushIntervalMs: 50, ttlDays: 3650, maxPendingRows: 10_000, log: logger('test'),
  });
  await waitFor('consumers to drain', async () => (await p.lag()) === 0 && p.lanes.every((l) => l.pendingRows === 0));
  await p.flush();
  return p;
}

test('tcp and losses rows are exact, and a fresh consumer adds none', async () => {
  const ch = await freshClickHouse();
  try {
    await publishEnvelopes(nc, fixture());
    const p1 = await runUntilIdle(ch);
    await waitFor('rows', async () => (await rows(ch, `SELECT count() AS n FROM ${ch.database}.connections`))[0].n === '2');
    await p1.stop();

    const conns = await rows(ch, `SELECT toString(ts_open) AS ts_open, toString(ts_close) AS ts_close, conn_id, pid, comm, role, saddr, sport, daddr, dport, bytes_sent, bytes_received, retransmits, duration_ns, established, midlife, last_state FROM ${ch.database}.connections ORDER BY ts_close`);
    assert.deepEqual(conns, [
      { ts_open: '2023-11-14 22:13:21.000000000', ts_close: '2023-11-14 22:13:22.000000000', conn_id: '3e43dd63-6003-4ed5-0000-000000000007', pid: 100, comm: 'curl', role: 'client', saddr: '::ffff:10.77.1.1', sport: 40000, daddr: '::ffff:10.77.1.2', dport: 80, bytes_sent: '79', bytes_received: '612', retransmits: 2, duration_ns: '1000000000', established: 1, midlife: 0, last_state: 'FIN_WAIT1' },
      { ts_open: '2023-11-14 22:13:21.000000100', ts_close: '2023-11-14 22:13:22.000000500', conn_id: '3e43dd63-6003-4ed5-0000-000000000008', pid: 200, comm: 'nginx', role: 'server', saddr: '::ffff:10.77.1.2', sport: 80, daddr: '::ffff:10.77.1.1', dport: 40000, bytes_sent: '612', bytes_received: '79', retransmits: 0, duration_ns: '1000000400', established: 1, midlife: 0, last_state: 'LAST_ACK' },
    ]);
    const events = await rows(ch, `SELECT toString(ts) AS ts, conn_id, pid, comm, kind, saddr, sport, dport, state, drop_reason, drop_location, reset_reason, pkt_len FROM ${ch.database}.tcp_events ORDER BY ts`);
    assert.deepEqual(events, [
      { ts: '2023-11-14 22:13:21.500000000', conn_id: '3e43dd63-6003-4ed5-0000-000000000007', pid: 100, comm: 'curl', kind: 'retransmit', saddr: '::ffff:10.77.1.1', sport: 40000, dport: 80, state: 'ESTABLISHED', drop_reason: '', drop_location: '', reset_reason: '', pkt_len: 0 },
      { ts: '2023-11-14 22:13:21.600000000', conn_id: '00000000-0000-0000-0000-000000000000', pid: 0, comm: '', kind: 'drop', saddr: '::ffff:10.77.1.1', sport: 40000, dport: 80, state: '', drop_reason: 'NETFILTER_DROP', drop_location: 'nf_hook_slow+0x9e', reset_reason: '', pkt_len: 60 },
      { ts: '2023-11-14 22:13:22.000000400', conn_id: '3e43dd63-6003-4ed5-0000-000000000008', pid: 200, comm: 'nginx', kind: 'reset_sent', saddr: '::ffff:10.77.1.2', sport: 80, dport: 40000, state: 'ESTABLISHED', drop_reason: '', drop_location: '', reset_reason: '3', pkt_len: 0 },
    ]);
    const losses = await rows(ch, `SELECT kind, cause, records, run_id FROM ${ch.database}.capture_losses ORDER BY cause`);
    assert.deepEqual(losses, [
      { kind: 'sock_data', cause: 'buffer_full', records: '3', run_id: 'run1' },
      { kind: 'sock_data', cause: 'ringbuf_full', records: '5', run_id: 'run1' },
    ]);

    // A fresh consumer from the start of the stream: every row is already committed.
    const jsm = await jetstreamManager(nc);
    for (const s of [0, 1, 2, 3]) await jsm.consumers.delete(STREAM.name, consumerName(ch.database, 'losses-tcp', s));
    const p2 = await runUntilIdle(ch);
    const suppressed = await p2.metrics.rowsSuppressed.get();
    await p2.stop();
    assert.equal(suppressed.values.reduce((a, v) => a + v.value, 0), 7, 'all 7 rows were seen again and suppressed');
    const counts = await rows(ch, `SELECT (SELECT count() FROM ${ch.database}.connections) AS c, (SELECT count() FROM ${ch.database}.tcp_events) AS e, (SELECT count() FROM ${ch.database}.capture_losses) AS l`);
    assert.deepEqual(counts, [{ c: '2', e: '3', l: '2' }]);
  } finally {
    await ch.close();
  }
});

test('malformed envelopes are counted and dead-lettered, and processing goes on', async () => {
  const ch = await freshClickHouse();
  const stream = { ...STREAM, name: 'NETRIG_RAW_BAD', subjectPrefix: 'netrig.bad' };
  try {
    await publishEnvelopes(nc, [envelope({ seq: 1, shard: 0, records: [] })], stream);
    const js = jetstream(nc);
    await js.publish('netrig.bad.test.node1.0', new TextEncoder().encode('not msgpack at all \u00ff'), { msgID: 'garbage-1' });
    await publishEnvelopes(nc, [envelope({ seq: 2, shard: 0, records: [connClose({ tsNs: 2e9, connId: 9, tgid: 1 }, client, { role: Role.Client, comm: 'x', openTsNs: 1e9, txBytes: 1, rxBytes: 1 })] })], stream);
    const p = await Processor.start({
      nc, ch, functions: [tcpFunction], shards: [0], stream: stream.name, subjectPrefix: stream.subjectPrefix,
      flushIntervalMs: 50, ttlDays: 3650, maxPendingRows: 10_000, log: logger('test'),
    });
    await waitFor('the row after the garbage', async () => (await rows(ch, `SELECT count() AS n FROM ${ch.database}.connections`))[0].n === '1');
    const failures = (await p.metrics.decodeFailures.get()).values;
    await p.stop();
    assert.ok(failures.some((v) => v.labels.failure === 'not_msgpack' && v.value === 1), JSON.stringify(failures));
    const jsm = await jetstreamManager(nc);
    await waitFor('the dead letter', async () => (await jsm.streams.info('NETRIG_DLQ').catch(() => null))?.state.messages === 1);
    const dead = await jsm.streams.getMessage('NETRIG_DLQ', { last_by_subj: 'netrig.dlq.envelope_not_msgpack' });
    assert.equal(dead?.header.get('Netrig-Subject'), 'netrig.bad.test.node1.0');
  } finally {
    await ch.close();
  }
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

test('a row ClickHouse refuses is dead-lettered with the reason, the rest of its block and later blocks are committed', async () => {
  const ch = await freshClickHouse('refused');
  const stream = { ...STREAM, name: 'NETRIG_REFUSED', subjectPrefix: 'netrig.refused' };
  // 40 envelopes in one flush: one block of 40 rows, one of them refused.
  await publishEnvelopes(nc, Array.from({ length: 40 }, (_, i) => envelope({ records: [], seq: i + 1, shard: 0, node: 'refusals', mono: 5e9 + i })), stream);
  const p = await Processor.start({
    nc, ch, functions: [oneRowPerEnvelope], shards: [0], stream: stream.name, subjectPrefix: stream.subjectPrefix,
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
    const refusedLetter = () => jsm.streams.getMessage(DLQ_STREAM, { last_by_subj: 'netrig.dlq.row_refused' }).catch(() => null);
    await waitFor('the dead letter stored', async () => (await refusedLetter()) !== null);
    const m = await refusedLetter();
    assert.ok(m);
    const letters = await jsm.streams.info(DLQ_STREAM, { subjects_filter: 'netrig.dlq.row_refused' });
    assert.deepEqual(letters.state.subjects, { 'netrig.dlq.row_refused': 1 }, 'one dead letter: the refused row');
    assert.equal(m.header.get('Netrig-Table'), 'capture_losses');
    assert.match(m.header.get('Netrig-Error'), /Unsigned type must not contain '-'|CANNOT_PARSE_NUMBER/);
    assert.equal((m.json() as { records: number }).records, -13);
    const dlq = await jsm.streams.info(DLQ_STREAM);
    assert.ok(dlq.config.max_age > 0 && dlq.config.max_age <= stream.maxAgeSeconds * 1e9, 'kept no longer than the raw stream');

    // Later messages are written: nothing stalls behind the refused row.
    await publishEnvelopes(nc, [envelope({ records: [], seq: 41, shard: 0, node: 'refusals', mono: 6e9 })], stream);
    await waitFor('the next message handled', async () => p.lanes[0].pendingRows === 1);
    await p.flush();
    assert.equal((await seqs()).at(-1), 41);
  } finally {
    await p.stop();
    await ch.close();
  }
});
