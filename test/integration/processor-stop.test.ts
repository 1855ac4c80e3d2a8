/**
 * Stopping a processor while ClickHouse hangs: `netrig process` children write the embedded
 * engine served by this test's process through a TCP proxy the test makes stop answering
 * (bytes dropped both ways, connections left open: a server that hangs).
 *
 * - one SIGINT with an insert hanging: the processor ends, by its stop deadline (exit 0,
 *   the deadline logged), leaving what it had not committed unacknowledged in the stream;
 * - the next processor picks that up; a second SIGINT while its insert hangs exits at once
 *   (130, without the deadline);
 * - a third processor, ClickHouse answering again, writes every row exactly once.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { functionGroup } from '../../processors/runtime/lane.js';
import { consumerName } from '../../processors/runtime/processor.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { ClickHouseProxy } from '../helpers/clickhouse-proxy.js';
import { assertExactlyOnce, committedRows, generate, pendingMessages, publish, SHARDS } from '../helpers/http1-stream.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { ProcessorChild } from '../helpers/processor-child.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const FUNCTIONS = ['http1', 'tcp', 'losses'];
const PASSWORD = randomBytes(12).toString('hex');
const SEED = 0x5707_2026;

let nats: NatsServerHandle;
let nc: NatsConnection;
let ch: ClickHouse;
let endpoint: ClickHouseEndpoint;
let proxy: ClickHouseProxy;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  ch = await freshClickHouse('stop');
  endpoint = await startTestEndpoint(ch, PASSWORD);
  proxy = new ClickHouseProxy(endpoint.port);
  await proxy.start();
});

after(async () => {
  await proxy?.stop();
  await endpoint?.stop();
  await ch?.close();
  removeClickHouseData();
  await nc?.close();
  await nats?.cleanup();
});

/** Messages delivered to the lanes of `database` and not acknowledged, over every shard. */
async function unacknowledged(database: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  let n = 0;
  for (let s = 0; s < SHARDS; s++) n += (await jsm.consumers.info('NETRIG_RAW', consumerName(database, functionGroup(FUNCTIONS), s))).num_ack_pending;
  return n;
}

test('SIGINT while ClickHouse hangs ends by the stop deadline, a second SIGINT at once, and the next processor writes every row exactly once', async () => {
  const { envelopes, expected } = generate(SEED);
  const total = expected.http.size + expected.connections.length + expected.losses.length;
  const third = Math.ceil(envelopes.length / 3);
  const database = `stop_${process.pid}`;
  const query = <T>(sql: string) => rows<T>(ch, sql);
  const children: ProcessorChild[] = [];
  const start = async () => {
    const c = new ProcessorChild({ natsUrl: nats.url, clickhouseUrl: `http://127.0.0.1:${proxy.port}`, clickhouseUser: WRITER_USER, clickhousePassword: PASSWORD, database, functions: FUNCTIONS });
    children.push(c);
    await c.port;
    return c;
  };
  /** Let `c` commit rows, then make ClickHouse hang and feed `more` until an insert of it is held. */
  const hangWithInsertInFlight = async (c: ProcessorChild, more: typeof envelopes) => {
    await waitFor('rows committed', async () => (await c.metric('netrig_processor_rows_total')) > 0, 60_000, () => c.log());
    proxy.hang();
    const held = proxy.heldInserts;
    await publish(nc, more);
    await waitFor('an insert held by the hanging ClickHouse', () => proxy.heldInserts > held, 60_000, () => c.log());
  };
  try {
    await publish(nc, envelopes.slice(0, third));

    // One SIGINT: the stop ends by its deadline, leaving the envelopes of the held insert unacknowledged.
    const a = await start();
    await hangWithInsertInFlight(a, envelopes.slice(third, 2 * third));
    assert.equal(await a.signal('SIGINT'), 0, `the processor stopped (exit 0) while ClickHouse hung:\n${a.log()}`);
    assert.match(a.log(), /stop deadline passed/, 'by its stop deadline');
    assert.ok(await unacknowledged(database) > 0, 'what it had not committed stays unacknowledged in the stream');
    proxy.resume();

    // Two SIGINTs: the second exits at once, 128 + SIGINT.
    const b = await start();
    await hangWithInsertInFlight(b, envelopes.slice(2 * third));
    b.child.kill('SIGINT');
    await waitFor('the first SIGINT taken', () => b.log().includes('"msg":"stopping"'), 30_000, () => b.log());
    assert.equal(await b.signal('SIGINT'), 130, `the second SIGINT exits at once with 130:\n${b.log()}`);
    assert.doesNotMatch(b.log(), /stop deadline passed/, 'without waiting for the deadline');
    assert.match(b.log(), /second SIGINT: exiting now/);
    proxy.resume();

    // ClickHouse answers again: the next processor takes over what both left.
    const c = await start();
    let stable = 0;
    let last = -1;
    await waitFor('every row committed', async () => {
      const n = await committedRows(query, database);
      if (n === total) return true;
      // Short of the expected count: done once it holds every shard (the killed one's leases
      // lapse first), nothing is pending and no row came for 2 s.
      if (c.heldShards().length < SHARDS) return false;
      stable = n === last && (await pendingMessages(nc, database, FUNCTIONS)) === 0 ? stable + 1 : 0;
      last = n;
      return stable >= 20;
    }, 120_000, () => c.log());
    assert.equal(await c.signal('SIGTERM'), 0, `the last processor stopped cleanly:\n${c.log()}`);
    await assertExactlyOnce(query, database, expected, 'after a bounded stop and an immediate one');
  } finally {
    proxy.resume();
    for (const c of children) await c.signal('SIGKILL');
  }
});
