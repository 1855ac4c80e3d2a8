/**
 * Processors that share the work by lease (processors/runtime/leases.ts), as `netrig
 * process` children writing one ClickHouse endpoint (the embedded engine served by this
 * test's process) while a generated HTTP/1 stream flows (test/helpers/http1-stream.ts):
 *
 * - three start, one is killed with SIGKILL, a fourth joins, one stops with SIGTERM: every
 *   row exactly once, every shard owned at the end by a live processor, lag back to zero;
 * - two start at the same instant: never two owners of a shard, as their logs of the leases
 *   they held show, and every row exactly once.
 *
 * Leases last 3 s here, so a killed processor's shards pass on within seconds.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { readProcessors } from '../../lib/heartbeat.js';
import { LEASE_BUCKET } from '../../processors/runtime/leases.js';
import { FUNCTIONS } from '../../processors/index.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { assertExactlyOnce, committedRows, generate, pendingMessages, publish, SHARDS, type Generated } from '../helpers/http1-stream.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { ProcessorChild } from '../helpers/processor-child.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const ALL = Object.keys(FUNCTIONS);
const READER_PASSWORD = randomBytes(12).toString('hex');
const WRITER_PASSWORD = randomBytes(12).toString('hex');
/** Envelopes published at a time, and the pause after each group: the stream flows for a while. */
const FEED_BATCH = 16;
const FEED_PAUSE_MS = 40;

let nats: NatsServerHandle;
let nc: NatsConnection;
let ch: ClickHouse;
let endpoint: ClickHouseEndpoint;
let stream: Generated;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  ch = await freshClickHouse('scale');
  endpoint = await startTestEndpoint(ch, WRITER_PASSWORD, READER_PASSWORD);
  stream = generate(0x5ca1_e007);
});

after(async () => {
  await endpoint?.stop();
  await ch?.close();
  removeClickHouseData();
  await nc?.close();
  await nats?.cleanup();
});

const query = <T>(sql: string) => rows<T>(ch, sql);

function processor(database: string): ProcessorChild {
  return new ProcessorChild({ natsUrl: nats.url, clickhouseUrl: `http://127.0.0.1:${endpoint.port}`, clickhouseUser: WRITER_USER, clickhousePassword: WRITER_PASSWORD, database, functions: ALL });
}

/** Envelopes of the stream published so far (by either test). */
let published = 0;

/** Feeds the rest of the stream in the background, as edges would, until all of it is published. */
class Feeder {
  readonly done: Promise<void>;
  private stopped = false;

  constructor(private readonly g: Generated) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    while (published < this.g.envelopes.length && !this.stopped) {
      const batch = this.g.envelopes.slice(published, published + FEED_BATCH);
      await publish(nc, batch);
      published += batch.length;
      await new Promise((r) => setTimeout(r, FEED_PAUSE_MS));
    }
  }

  stop(): void {
    this.stopped = true;
  }
}

const logs = (cs: ProcessorChild[]) => () => cs.map((c, i) => `--- processor ${i + 1} (pid ${c.child.pid})\n${c.log()}`).join('\n');

const pending = (database: string) => pendingMessages(nc, database, ALL);

/** Wait until every row is there, or (short of that) nothing is pending and no row came for 2 s. */
async function untilConsumed(database: string, cs: ProcessorChild[]): Promise<void> {
  const total = stream.expected.http.size + stream.expected.connections.length + stream.expected.losses.length;
  let stable = 0;
  let last = -1;
  await waitFor('consuming the whole stream', async () => {
    const n = await committedRows(query, database);
    if (n === total) return true;
    stable = n === last && (await pending(database)) === 0 ? stable + 1 : 0;
    last = n;
    return stable >= 20; // polled every 100 ms
  }, 180_000, logs(cs));
}

/**
 * No shard ever had two owners: per shard, the spans from each processor's `lease acquired`
 * to its `lease released` (logged before the key is deleted), `lease lost` (or the time
 * the lease stopped being usable, if earlier) or its kill never overlap.
 */
function assertOneOwnerAtATime(cs: ProcessorChild[], killedAt: Map<ProcessorChild, number>): void {
  const spans = new Map<number, { who: number; from: number; to: number }[]>();
  cs.forEach((c, who) => {
    const open = new Map<number, number>();
    const close = (shard: number, to: number) => {
      const from = open.get(shard);
      assert.ok(from !== undefined, `processor ${who + 1} gave up shard ${shard} it did not hold`);
      open.delete(shard);
      let list = spans.get(shard);
      if (!list) spans.set(shard, (list = []));
      list.push({ who: who + 1, from, to });
    };
    for (const e of c.leaseEvents) {
      const t = Date.parse(e.time);
      if (e.msg === 'lease acquired') {
        assert.ok(!open.has(e.shard), `processor ${who + 1} acquired shard ${e.shard} twice`);
        open.set(e.shard, t);
      } else {
        close(e.shard, e.usableUntil ? Math.min(t, Date.parse(e.usableUntil)) : t);
      }
    }
    for (const shard of [...open.keys()]) close(shard, killedAt.get(c) ?? Infinity);
  });
  for (const [shard, list] of spans) {
    list.sort((a, b) => a.from - b.from);
    for (let i = 1; i < list.length; i++) {
      const [a, b] = [list[i - 1], list[i]];
      assert.ok(b.from >= a.to, `shard ${shard}: processor ${b.who} took it at ${new Date(b.from).toISOString()} while processor ${a.who} held it until ${new Date(a.to).toISOString()}`);
    }
  }
}

test('three processors, one killed, a fourth joins, one stopped: every row once, every shard owned', { timeout: 600_000 }, async () => {
  const database = `scale_${process.pid}_a`;
  const cs: ProcessorChild[] = [];
  const killedAt = new Map<ProcessorChild, number>();
  const feeder = new Feeder(stream);
  try {
    cs.push(processor(database), processor(database), processor(database));
    await Promise.all(cs.map((c) => c.port));
    const [p1, p2, p3] = cs;
    await waitFor('three processors sharing the shards', () => cs.every((c) => c.heldShards().length >= 4)
      && new Set(cs.flatMap((c) => c.heldShards())).size === SHARDS, 60_000, logs(cs));
    const total = stream.expected.http.size + stream.expected.connections.length + stream.expected.losses.length;
    await waitFor('a fifth of the rows', async () => (await committedRows(query, database)) >= total / 5, 120_000, logs(cs));

    await p1.signal('SIGKILL');
    killedAt.set(p1, Date.now());
    assert.equal(p1.child.signalCode, 'SIGKILL');
    await waitFor('the killed processor\'s shards taken over', () => new Set([...p2.heldShards(), ...p3.heldShards()]).size === SHARDS, 60_000, logs(cs));

    const p4 = processor(database);
    cs.push(p4);
    await p4.port;
    await waitFor('the fourth processor taking a share', () => p4.heldShards().length >= 4, 60_000, logs(cs));

    assert.equal(await p2.signal('SIGTERM'), 0, `the second processor stopped cleanly:\n${p2.log()}`);
    assert.deepEqual(p2.heldShards(), [], 'it handed every shard back');
    await waitFor('the stopped processor\'s shards taken over', () => new Set([...p3.heldShards(), ...p4.heldShards()]).size === SHARDS, 60_000, logs(cs));

    await feeder.done;
    await untilConsumed(database, cs);

    // Every shard is owned by one of the two live processors, as the lease bucket and
    // their heartbeats say, and nothing is left to read.
    const kv = await new Kvm(nc).open(LEASE_BUCKET);
    for (let s = 0; s < SHARDS; s++) assert.equal((await kv.get(`${database}.s.${[...ALL].sort().join('-')}.${s}`))?.operation, 'PUT', `shard ${s} has a lease`);
    await waitFor('heartbeats showing the two live processors with every shard and no lag', async () => {
      const st = await readProcessors(nc, database);
      const lanes = st.flatMap((s) => s.lanes);
      return st.length === 2 && new Set(st.map((s) => s.pid)).size === 2 && st.every((s) => [p3.child.pid, p4.child.pid].includes(s.pid))
        && lanes.length === SHARDS && new Set(lanes).size === SHARDS && st.every((s) => s.lag === 0);
    }, 30_000, async () => JSON.stringify(await readProcessors(nc, database)));
    assert.equal(await pending(database), 0);

    await assertExactlyOnce(query, database, stream.expected, 'after a kill, a join and a stop');
    assert.equal(await p3.signal('SIGTERM'), 0, p3.log());
    assert.equal(await p4.signal('SIGTERM'), 0, p4.log());
    assertOneOwnerAtATime(cs, killedAt);
  } finally {
    feeder.stop();
    await feeder.done.catch(() => undefined);
    for (const c of cs) await c.signal('SIGKILL');
  }
});

test('two processors started at the same instant never own a shard together', { timeout: 600_000 }, async () => {
  const database = `scale_${process.pid}_b`;
  const cs = [processor(database), processor(database)];
  const feeder = new Feeder(stream);
  try {
    await Promise.all(cs.map((c) => c.port));
    await feeder.done;
    await untilConsumed(database, cs);
    await assertExactlyOnce(query, database, stream.expected, 'by two processors started together');
    // A third whose functions overlap theirs without being the same would write their rows again: refused.
    const clash = new ProcessorChild({ natsUrl: nats.url, clickhouseUrl: `http://127.0.0.1:${endpoint.port}`, clickhouseUser: WRITER_USER, clickhousePassword: WRITER_PASSWORD, database, functions: ['http1', 'tcp'] });
    cs.push(clash);
    await assert.rejects(clash.port, /writes scale_\d+_b with functions http1,http2,dns,tls,tcp,losses: run the same functions/);
    assert.notEqual(clash.child.exitCode, 0);
    cs.pop();
    for (const c of cs) assert.equal(await c.signal('SIGTERM'), 0, c.log());
    assert.ok(cs.every((c) => !/"msg":"lease [a-z -]+ failed/.test(c.log())), logs(cs)());
    assertOneOwnerAtATime(cs, new Map());
    assert.ok(cs.every((c) => c.leaseEvents.some((e) => e.msg === 'lease acquired')), 'both held shards');
  } finally {
    feeder.stop();
    await feeder.done.catch(() => undefined);
    for (const c of cs) await c.signal('SIGKILL');
  }
});
