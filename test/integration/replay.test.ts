/**
 * netrig replay: a time range of the raw stream, and one node of it, re-run into a separate
 * database; the rows are exactly those of the envelopes published inside the range. A
 * replay into a database live processors write to (their consumers, or only their leases)
 * is refused and touches nothing of theirs.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { EdgeConfig } from '../../edge/config.js';
import { LiveDatabaseError } from '../../lib/errors.js';
import { runReplay } from '../../processors/replay.js';
import { ShardLeases } from '../../processors/runtime/leases.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { Role } from '../../schemas/records.js';
import type { NatsServerHandle } from '../helpers/nats-server.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { connClose, envelope } from '../helpers/records.js';
import { testLogger } from '../helpers/edge-run.js';
import { drainProcessor, freshClickHouse, publishEnvelopes, removeClickHouseData, rows, startEdgeProcessor, STREAM } from '../helpers/processor-run.js';

let nats: NatsServerHandle;
let nc: NatsConnection;

natsServerForFile((server, conn) => {
  nats = server;
  nc = conn;
});
after(() => removeClickHouseData());

const tuple = { saddr: '10.77.9.1', daddr: '10.77.9.2', sport: 40000, dport: 80 };

/** One envelope per connection close, cookie `id`, from `node`. */
function closes(ids: number[], node: string, seq0: number) {
  return ids.map((id, i) => envelope({
    seq: seq0 + i, node, shard: id % 4,
    records: [connClose({ tsNs: 2e9 + id, connId: id, tgid: 1 }, { ...tuple, sport: 40000 + id }, { role: Role.Client, comm: 'x', openTsNs: 1e9, txBytes: id, rxBytes: id })],
  }));
}

const pause = () => new Promise((r) => setTimeout(r, 300));

test('a replay reads only its time range and node, into its own database', async () => {
  await publishEnvelopes(nc, closes([1, 2], 'a', 1));
  await pause();
  const from = new Date();
  await publishEnvelopes(nc, [...closes([3, 4], 'a', 3), ...closes([5], 'b', 1)]);
  await pause();
  const to = new Date();
  await pause();
  await publishEnvelopes(nc, closes([6], 'a', 5));

  const ch = await freshClickHouse('replay');
  try {
    const r = await runReplay({ nats: nats.url, from: from.toISOString(), to: to.toISOString(), functions: 'tcp', shards: 4, stream: STREAM.name, ttlDays: 3650 }, { ch });
    assert.equal(r.database, ch.database);
    assert.deepEqual(r.rows, { connections: 3, tcp_events: 0 });
    const got = await rows<{ node: string; bytes_sent: string }>(ch, `SELECT node, bytes_sent FROM ${ch.database}.connections ORDER BY bytes_sent`);
    assert.deepEqual(got, [{ node: 'a', bytes_sent: '3' }, { node: 'a', bytes_sent: '4' }, { node: 'b', bytes_sent: '5' }]);

    // The replay's consumers are gone afterwards.
    const names: string[] = [];
    for await (const ci of (await jetstreamManager(nc)).consumers.list(STREAM.name)) names.push(ci.name);
    assert.deepEqual(names.filter((n) => n.includes(ch.database)), []);
  } finally {
    await ch.close();
  }

  const ch2 = await freshClickHouse('replay');
  try {
    const r = await runReplay({ nats: nats.url, from: from.toISOString(), to: to.toISOString(), node: 'b', functions: 'tcp', shards: 4, stream: STREAM.name, ttlDays: 3650 }, { ch: ch2 });
    assert.deepEqual(r.rows, { connections: 1, tcp_events: 0 });
  } finally {
    await ch2.close();
  }
});

test('a replay into a database live processors write to is refused, and leaves them alone', async () => {
  const live = await startEdgeProcessor(nats.url, { stream: STREAM.name, subjectPrefix: STREAM.subjectPrefix, config: { edge: { shards: 4 } } as EdgeConfig }, [tcpFunction], 'live');
  try {
    const jsm = await jetstreamManager(nc);
    const consumers = async () => {
      const out = new Map<string, string>();
      for await (const ci of jsm.consumers.list(STREAM.name)) if (ci.name.includes(live.ch.database)) out.set(ci.name, ci.created);
      return out;
    };
    const before = await consumers();
    assert.equal(before.size, 4, 'the live processor reads 4 shards');

    await assert.rejects(
      runReplay({ nats: nats.url, functions: 'tcp', shards: 4, stream: STREAM.name, ttlDays: 3650 }, { ch: live.ch }),
      (err: Error) => err instanceof LiveDatabaseError && err.message.includes(`database ${live.ch.database} is written by processors`) && /--database/.test(err.message),
    );
    assert.deepEqual(await consumers(), before, 'the live consumers were neither deleted nor recreated');

    // The live processor goes on writing.
    await publishEnvelopes(nc, closes([90], 'live-node', 1));
    await drainProcessor(live.processor, nc, STREAM.name, STREAM.subjectPrefix);
    const got = await rows<{ n: string }>(live.ch, `SELECT count() AS n FROM ${live.ch.database}.connections WHERE node = 'live-node'`);
    assert.deepEqual(got, [{ n: '1' }], 'the next connection written once');
  } finally {
    await live.processor.stop();
    await live.nc.close();
    await live.ch.close();
  }
});

test('a replay into a database a processor holds leases on is refused, even before it has consumers', async () => {
  const ch = await freshClickHouse('leased');
  const member = { id: `leaser-${process.pid}`, host: 'test', pid: process.pid, functions: ['tcp'] };
  const taken: number[] = [];
  const leases = await ShardLeases.start({
    nc, database: ch.database, shardCount: 4, member, ttlMs: 3000, replicas: 1, log: testLogger('leases'),
    take: async (shard) => {
      taken.push(shard);
    },
    handBack: async () => undefined,
    drop: () => undefined,
  });
  try {
    assert.deepEqual(taken.sort(), [0, 1, 2, 3], 'the only member holds every shard');
    await assert.rejects(
      runReplay({ nats: nats.url, functions: 'tcp', shards: 4, stream: STREAM.name, ttlDays: 3650 }, { ch }),
      (err: Error) => err instanceof LiveDatabaseError && err.message.includes(`processor ${member.id}`),
    );
  } finally {
    await leases.stop();
  }
  // Once it has handed its leases back and left, the database is free to replay into.
  try {
    const r = await runReplay({ nats: nats.url, functions: 'tcp', shards: 4, stream: STREAM.name, ttlDays: 3650 }, { ch });
    assert.equal(r.database, ch.database);
    assert.ok(r.rows.connections > 0, 'the closes the earlier tests published are replayed');
  } finally {
    await ch.close();
  }
});
