/**
 * netrig replay: a time range of the raw stream, and one node of it, re-run into a separate
 * database; the rows are exactly those of the envelopes published inside the range, with
 * its progress reported as it goes (the window found by time, a deleted message skipped). A
 * replay into a database live processors write to (their consumers, or only their leases)
 * is refused and touches nothing of theirs.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { EdgeConfig } from '../../edge/config.js';
import { LiveDatabaseError } from '../../lib/errors.js';
import { progressLine } from '../../cli/replay-progress.js';
import { runReplay } from '../../processors/replay.js';
import { seqAtTime, type ReplayProgress } from '../../processors/replay-progress.js';
import { ShardLeases } from '../../processors/runtime/leases.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { Role } from '../../schemas/records.js';
import type { NatsServerHandle } from '../helpers/nats-server.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { connClose, envelope } from '../helpers/records.js';
import { runCli, splitStderr } from '../helpers/cli.js';
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

test('progress: the window found by time, reports as it goes, ending at the whole window with the rows written', async () => {
  const jsm = await jetstreamManager(nc);
  await publishEnvelopes(nc, closes([101, 102, 103], 'p', 1));
  await pause();
  const from = new Date();
  const first = (await jsm.streams.info(STREAM.name)).state.last_seq + 1;
  const ids = Array.from({ length: 200 }, (_, i) => 1000 + i);
  await publishEnvelopes(nc, closes(ids, 'p', 10));
  const last = (await jsm.streams.info(STREAM.name)).state.last_seq;
  await pause();
  const to = new Date();
  await pause();
  await publishEnvelopes(nc, closes([104, 105], 'p', 300));

  // The window's ends by time, with a deleted message where the search looks.
  const end = (await jsm.streams.info(STREAM.name)).state;
  assert.equal(await seqAtTime(jsm, STREAM.name, from, end.first_seq, end.last_seq), first, 'the first message at or after --from');
  assert.equal(await seqAtTime(jsm, STREAM.name, to, end.first_seq, end.last_seq), last + 1, 'the first message after --to');
  await jsm.streams.deleteMessage(STREAM.name, first, false);
  assert.equal(await seqAtTime(jsm, STREAM.name, from, end.first_seq, end.last_seq), first + 1, 'a deleted first message is stepped over');
  assert.equal(await seqAtTime(jsm, STREAM.name, new Date(Date.now() + 60_000), end.first_seq, end.last_seq), end.last_seq + 1, 'a time after the stream: past its end');

  const ch = await freshClickHouse('progress');
  try {
    const reports: ReplayProgress[] = [];
    const r = await runReplay({ nats: nats.url, from: from.toISOString(), to: to.toISOString(), functions: 'tcp', shards: 4, stream: STREAM.name, ttlDays: 3650 },
      { ch }, { intervalMs: 10, report: (p) => reports.push(p) });
    assert.deepEqual(r.rows, { connections: ids.length - 1, tcp_events: 0 }, 'the window\'s connections but the deleted one');
    assert.ok(reports.length >= 1, 'reported');
    for (let i = 1; i < reports.length; i++) {
      assert.ok(reports[i].share >= reports[i - 1].share && reports[i].messages >= reports[i - 1].messages, `progress never goes back: ${JSON.stringify(reports)}`);
    }
    const final = reports.at(-1)!;
    assert.equal(final.share, 1, 'the last report: the whole window');
    assert.equal(final.etaMs, 0, 'nothing left');
    assert.equal(final.rows, ids.length - 1, 'the rows written');
    assert.ok(final.messages >= ids.length - 1 && final.records >= ids.length - 1, `messages and records of the window counted: ${JSON.stringify(final)}`);
    assert.match(progressLine(final), /^replay: 100\.0% of the window, \d+ messages, \d+ records, 199 rows, [\d,]+ messages\/s, \d+ s so far, done$/);
  } finally {
    await ch.close();
  }

  // As a user runs it, stderr not a terminal: plain progress lines, the last one the whole window; the result on stdout.
  const dataDir = mkdtempSync(join(tmpdir(), `netrig-replay-cli-${process.pid}-`));
  try {
    const r = await runCli(['replay', '--nats', nats.url, '--from', from.toISOString(), '--to', to.toISOString(), '--functions', 'tcp', '--shards', '4',
      '--stream', STREAM.name, '--subject-prefix', STREAM.subjectPrefix, '--data-dir', dataDir, '--database', 'replay_cli', '--ttl-days', '3650', '--progress-interval', '1']);
    assert.equal(r.code, 0, r.stderr);
    // (The records' times are of 1970: kept by a long --ttl-days.)
    assert.equal(r.stdout, 'replayed into database replay_cli: connections=199 tcp_events=0\n');
    const lines = splitStderr(r.stderr).plain;
    assert.ok(lines.length >= 1 && lines.every((l) => /^replay: \d+\.\d% of the window, [\d,]+ messages, [\d,]+ records, [\d,]+ rows, [\d,]+ messages\/s, .* so far, .*$/.test(l)), `progress lines only: ${JSON.stringify(lines)}`);
    assert.match(lines.at(-1)!, /^replay: 100\.0% of the window, .* 199 rows, .* done$/);
    assert.ok(!r.stderr.includes('\x1b') && !r.stderr.includes('\r'), 'no terminal escapes when stderr is not a terminal');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
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
