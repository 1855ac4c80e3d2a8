/**
 * End to end: nats-server killed in the middle of a run and restarted on the same port and
 * store while traffic goes on. Within the edge's buffer bound nothing is lost: every record
 * the edge drained reaches the stream exactly once. Beyond the bound the edge drops whole
 * envelopes and counts them: records on the stream plus records reported lost with cause
 * buffer_full equal what it drained, kind by kind, exactly.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kindName, RecordKind, Role, REC_KIND_MAX } from '../../schemas/records.js';
import { cleanupAll, pollUntil, sleep } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type Host } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { readStream, type StreamReader } from '../helpers/stream-reader.js';

interface Rig {
  nats: NatsServerHandle;
  client: Host;
  server: Host;
  nginx: NginxHandle;
  edge: EdgeRun;
}

/** nats-server, two hosts with nginx, and the edge; all torn down after the test. */
async function rig(t: TestContext, maxBufferBytes: string): Promise<Rig> {
  const parts: Partial<Rig> & { destroyHosts?: () => Promise<void> } = {};
  t.after(() => cleanupAll(
    () => parts.edge?.stop(),
    () => parts.nginx?.stop(),
    () => parts.destroyHosts?.(),
    () => parts.nats?.cleanup(),
  ));
  parts.nats = await startNatsServer();
  const hosts = await createHostPair();
  parts.destroyHosts = hosts.destroy;
  parts.client = hosts.client;
  parts.server = hosts.server;
  parts.nginx = await startNginx(hosts.server);
  parts.edge = await startEdge({
    nats: parts.nats.url,
    netns: [hosts.client.netnsIno(), hosts.server.netnsIno()],
    input: { maxBufferBytes },
  });
  return parts as Rig;
}

/** One curl invocation (keep-alive) in the client namespace; returns its local port. */
async function curl(r: Rig, args: string[]): Promise<number> {
  const res = await r.client.exec('curl', ['-sS', '--max-time', '30', '-w', '%{local_port}\\n', ...args]);
  assert.equal(res.code, 0, `curl failed: ${res.stderr}`);
  return Number(res.stdout.trim().split('\n')[0]);
}

function urls(r: Rig, paths: string[]): string[] {
  return paths.flatMap((p) => ['-o', '/dev/null', `http://${r.server.addr}:${r.nginx.port}${p}`]);
}

/** Records per kind the edge drained, as plain numbers. */
function drained(edge: EdgeRun): number[] {
  return Array.from(edge.edge.drained);
}

function describeKinds(n: number[]): string {
  return n.map((v, k) => (v ? `${kindName(k)}=${v}` : '')).filter(Boolean).join(' ');
}

/**
 * Envelope sequences of one run on the stream: each once, 1..max with no gap when nothing
 * was dropped. Per shard always 1..n with the records before each, whatever the edge
 * dropped (a gap there would read as envelopes the stream discarded).
 */
function assertSequences(reader: StreamReader, run: string, contiguous: boolean): void {
  const byShard = new Map<number, { shardSeq?: number; shardRecords?: number; count: number }[]>();
  for (const { env } of reader.envelopes.filter((e) => e.env.run === run)) {
    let list = byShard.get(env.shard);
    if (!list) byShard.set(env.shard, (list = []));
    list.push({ shardSeq: env.shard_seq, shardRecords: env.shard_records, count: env.count });
  }
  for (const [shard, list] of byShard) {
    list.sort((a, b) => (a.shardSeq ?? 0) - (b.shardSeq ?? 0));
    let records = 0;
    list.forEach((e, i) => {
      assert.deepEqual([e.shardSeq, e.shardRecords], [i + 1, records], `shard ${shard}: envelope ${i + 1} of the run on it, after ${records} records`);
      records += e.count;
    });
  }
  const seqs = reader.envelopes.filter((e) => e.env.run === run).map((e) => e.env.seq).sort((a, b) => a - b);
  assert.equal(new Set(seqs).size, seqs.length, 'no envelope twice on the stream (message-id de-duplication)');
  const ids = reader.envelopes.filter((e) => e.env.run === run).map((e) => e.msgId);
  assert.equal(new Set(ids).size, ids.length, 'no message id twice');
  if (contiguous) assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'every envelope of the run is on the stream');
}

/** The connection from the client's `port` is on the stream with its payload. */
function assertConnectionCaptured(reader: StreamReader, r: Rig, port: number, what: string): void {
  const opens = reader.connOpens({ netns: r.client.netnsIno(), role: Role.Client }).filter((o) => o.tuple.sport === port && o.tuple.dport === r.nginx.port);
  assert.equal(opens.length, 1, `${what}: the client connection from port ${port} is on the stream`);
  assert.ok(reader.data(opens[0].connId).length > 0, `${what}: its data records are on the stream`);
  assert.equal(reader.connCloses(opens[0].connId).length, 1, `${what}: its close record is on the stream`);
}

test('NATS killed and restarted within the buffer bound: every drained record arrives exactly once, no loss', async (t) => {
  const r = await rig(t, '256MiB');
  const before = await curl(r, urls(r, ['/copy/small.txt', '/text', '/status/404']));
  await pollUntil(() => r.edge.edge.drained[RecordKind.ConnClose] > 0, 10_000);

  // Kill the server in the middle of the run and make traffic while it is away.
  await r.nats.kill();
  const sockDataBefore = r.edge.edge.drained[RecordKind.SockData];
  const during: number[] = [];
  for (let i = 0; i < 3; i++) during.push(await curl(r, urls(r, ['/copy/small.txt', '/copy/hello.html', '/chunked/hello.html', '/big.bin'])));
  // Wait until what the traffic produced is sealed into envelopes waiting in the buffer.
  assert.ok(await pollUntil(() => r.edge.edge.drained[RecordKind.SockData] > sockDataBefore && r.edge.edge.bufferedBytes > 0, 10_000), 'envelopes wait in the buffer while NATS is away');
  await sleep(1500);
  assert.ok(r.edge.edge.bufferedBytes > 0, 'still buffered while NATS is away');

  await r.nats.restart();
  const afterRestart = await curl(r, urls(r, ['/copy/small.txt', '/echo']));
  assert.ok(await pollUntil(() => r.edge.edge.bufferedBytes === 0, 60_000, 200), `the buffer drains once NATS is back (${r.edge.edge.bufferedBytes} bytes left)`);
  // Let the last connection's close be drained, then stop: the edge flushes what it holds.
  await sleep(1000);
  await r.edge.stop();

  const reader = await readStream(r.nats.url, r.edge.stream);
  const run = r.edge.edge.runId;
  const got = reader.countByKind(run);
  const want = drained(r.edge);
  assert.deepEqual(got, want, `records on the stream per kind (${describeKinds(got)}) = records drained (${describeKinds(want)})`);
  assert.equal(reader.envelopeCount(run), want.reduce((a, b) => a + b, 0), 'envelope counts agree with their records');
  assert.deepEqual(reader.losses(run), [], 'no loss reported');
  assert.equal(r.edge.edge.ledger.total(), 0, 'the edge counted no loss');
  assert.deepEqual(reader.failures, [], 'every envelope and record decodes');
  assertSequences(reader, run, true);
  assertConnectionCaptured(reader, r, before, 'before the outage');
  for (const p of during) assertConnectionCaptured(reader, r, p, 'during the outage');
  assertConnectionCaptured(reader, r, afterRestart, 'after the restart');
});

test('NATS away beyond the buffer bound: records on the stream + records lost (buffer_full) = records drained, per kind', async (t) => {
  const r = await rig(t, '1MiB');
  const dir = mkdtempSync(join(tmpdir(), `netrig-outage-${process.pid}-`));
  const unregister = onExit(`temp ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    unregister();
  });
  const body = join(dir, 'body.bin');
  writeFileSync(body, randomBytes(1024 * 1024));

  await curl(r, urls(r, ['/copy/small.txt']));
  await r.nats.kill();
  // Bounded: rounds of ~2 MiB of captured payload each until the edge has dropped envelopes
  // (and two rounds more), at most 20 rounds or 60 s.
  const deadline = Date.now() + 60_000;
  let rounds = 0;
  let extra = 2;
  while (rounds < 20 && Date.now() < deadline && extra > 0) {
    rounds++;
    await curl(r, ['-o', '/dev/null', '--data-binary', `@${body}`, `http://${r.server.addr}:${r.nginx.port}/echo`, '--next', ...urls(r, ['/copy/big.bin'])]);
    await sleep(200);
    if (r.edge.edge.ledger.total('buffer_full') > 0) extra--;
  }
  const lostWhileDown = r.edge.edge.ledger.total('buffer_full');
  assert.ok(lostWhileDown > 0, `the 1 MiB buffer overflowed after ${rounds} rounds`);
  assert.ok(r.edge.edge.bufferedBytes <= 1024 * 1024, 'the buffer never holds more than its bound');

  await r.nats.restart();
  await curl(r, urls(r, ['/copy/small.txt']));
  assert.ok(await pollUntil(() => r.edge.edge.bufferedBytes === 0, 60_000, 200), 'the buffer drains once NATS is back');
  // The losses ride in the next envelopes (heartbeats at the latest): wait until the stream
  // reports all of them, then stop the edge.
  const total = r.edge.edge.ledger.total('buffer_full');
  let reader: StreamReader = await readStream(r.nats.url, r.edge.stream);
  const run = r.edge.edge.runId;
  assert.ok(await pollUntil(async () => {
    reader = await readStream(r.nats.url, r.edge.stream);
    return reader.lostByKind('buffer_full', run).reduce((a, b) => a + b, 0) >= total;
  }, 30_000, 500), `the stream reports the ${total} records lost`);
  await r.edge.stop();
  reader = await readStream(r.nats.url, r.edge.stream);

  const got = reader.countByKind(run);
  const lost = reader.lostByKind('buffer_full', run);
  const want = drained(r.edge);
  const sum = got.map((g, k) => g + lost[k]);
  assert.deepEqual(sum, want, `received (${describeKinds(got)}) + lost (${describeKinds(lost)}) = drained (${describeKinds(want)})`);
  assert.ok(lost.reduce((a, b) => a + b, 0) > 0, 'losses were reported');
  assert.ok(lost[RecordKind.SockData] > 0, 'payload records were among the losses');
  // The stream's loss counts are the edge's own ledger, kind by kind.
  for (let k = 0; k < REC_KIND_MAX; k++) {
    assert.equal(lost[k], r.edge.edge.ledger.totals.get(`${k}/buffer_full`) ?? 0, `lost ${kindName(k)}`);
  }
  const causes = new Set(reader.losses(run).map((l) => l.cause));
  assert.deepEqual([...causes], ['buffer_full'], 'the only cause of loss is the full buffer');
  assert.deepEqual(reader.failures, [], 'every envelope and record decodes');
  assertSequences(reader, run, false);
});
