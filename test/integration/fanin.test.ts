/**
 * Fan-in with three real nats-servers: two regions, each with JetStream under its own
 * domain and joined to a hub as a leaf node on loopback, and the hub. Each region's raw
 * stream holds its own edge's envelopes; `netrig fanin` makes the hub's stream source
 * them (the second region added by a second run, the first kept); a `netrig process` on
 * the hub writes every exchange exactly once, each with its region; `--show` reports each
 * source caught up; a domain already sourced under another region is refused.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { runCli } from '../helpers/cli.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { assertExactlyOnce, committedRows, generate, publish, type Expected, type Origin } from '../helpers/http1-stream.js';
import { freePort, startNatsServer, waitForDomain, type NatsServerHandle } from '../helpers/nats-server.js';
import { ProcessorChild } from '../helpers/processor-child.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const FUNCTIONS = ['http1', 'tcp', 'losses'];
const PASSWORD = randomBytes(12).toString('hex');
const REGIONS: (Origin & { domain: string; seed: number })[] = [
  { region: 'eu', domain: 'dom-eu', node: 'node-eu', run: 'run-eu', boot: '0e0e0e0e-1111-4c11-9a57-3b8e2f7d1c05', seed: 0xe0 },
  { region: 'us', domain: 'dom-us', node: 'node-us', run: 'run-us', boot: '05050505-2222-4c11-9a57-3b8e2f7d1c05', seed: 0x05 },
];

let hub: NatsServerHandle;
const regions: NatsServerHandle[] = [];
let hubNc: NatsConnection;
let ch: ClickHouse;
let endpoint: ClickHouseEndpoint;
let processor: ProcessorChild | undefined;

before(async () => {
  const leafPort = await freePort();
  hub = await startNatsServer({ domain: 'hub', config: `leafnodes { listen: "127.0.0.1:${leafPort}" }` });
  for (const r of REGIONS) {
    regions.push(await startNatsServer({ domain: r.domain, config: `leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:${leafPort}" } ] }` }));
  }
  hubNc = await connect({ servers: hub.url });
  // The hub reaches a region's JetStream once its leaf node has joined.
  for (const r of REGIONS) await waitForDomain(hubNc, r.domain, () => hub.log());
  ch = await freshClickHouse('fanin');
  endpoint = await startTestEndpoint(ch, PASSWORD);
});

after(() => cleanupAll(
  () => processor?.signal('SIGTERM'),
  () => endpoint?.stop(),
  () => ch?.close(),
  () => removeClickHouseData(),
  () => hubNc?.close(),
  ...regions.map((r) => () => r.cleanup()),
  () => hub?.cleanup(),
));

/** Publish a region's generated stream to its own NATS, as its edge would. */
async function publishRegion(server: NatsServerHandle, r: (typeof REGIONS)[number]): Promise<{ expected: Expected; envelopes: number }> {
  const { envelopes, expected } = generate(r.seed, r);
  const nc = await connect({ servers: server.url });
  try {
    await publish(nc, envelopes);
  } finally {
    await nc.close();
  }
  return { expected, envelopes: envelopes.length };
}

async function fanin(...args: string[]) {
  return runCli(['fanin', '--nats', hub.url, ...args]);
}

test('the hub stream sources both regions through their domains; every exchange once, with its region', async () => {
  const published: { expected: Expected; envelopes: number }[] = [];
  for (const [i, r] of REGIONS.entries()) published.push(await publishRegion(regions[i], r));

  // The first region, then both: the second run adds the second and keeps the first.
  const first = await fanin('--source', 'eu=dom-eu');
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /created NETRIG_RAW: eu=dom-eu/);
  const second = await fanin('--source', 'eu=dom-eu', '--source', 'us=dom-us');
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /added to NETRIG_RAW: us=dom-us/);
  const again = await fanin('--source', 'us=dom-us');
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /NETRIG_RAW already sources: us=dom-us/);

  // Every envelope of both regions on the hub, subjects intact.
  const jsm = await jetstreamManager(hubNc);
  const total = published.reduce((n, p) => n + p.envelopes, 0);
  await waitFor('every envelope sourced into the hub', async () => (await jsm.streams.info('NETRIG_RAW')).state.messages === total, 60_000,
    async () => `hub holds ${(await jsm.streams.info('NETRIG_RAW')).state.messages} of ${total}`);
  const info = await jsm.streams.info('NETRIG_RAW', { subjects_filter: '>' });
  for (const [i, r] of REGIONS.entries()) {
    const n = Object.entries(info.state.subjects ?? {}).filter(([s]) => s.startsWith(`netrig.raw.${r.region}.${r.node}.`)).reduce((a, [, c]) => a + c, 0);
    assert.equal(n, published[i].envelopes, `region ${r.region}'s envelopes under its own subjects`);
  }
  assert.equal(Object.keys(info.state.subjects ?? {}).filter((s) => !/^netrig\.raw\.(eu|us)\.node-(eu|us)\.\d+$/.test(s)).length, 0, 'no other subjects');

  // --show: each source caught up, with its last activity.
  const show = await fanin('--show', '--format', 'json');
  assert.equal(show.code, 0, show.stderr);
  const states = show.stdout.trim().split('\n').map((l) => JSON.parse(l) as { region: string; domain: string; lag: number; activeAgoMs: number | null });
  assert.deepEqual(states.map((s) => `${s.region}=${s.domain}`).sort(), ['eu=dom-eu', 'us=dom-us']);
  for (const s of states) {
    assert.equal(s.lag, 0, `${s.region} caught up`);
    assert.ok(s.activeAgoMs !== null && s.activeAgoMs >= 0, `${s.region} active`);
  }
  const table = await fanin('--show');
  assert.match(table.stdout, /eu\s+│?\s*dom-eu/);

  // A processor on the hub: every exchange of both regions once, each with its region.
  const database = `fanin_${process.pid}`;
  processor = new ProcessorChild({ natsUrl: hub.url, clickhouseUrl: `http://127.0.0.1:${endpoint.port}`, clickhouseUser: WRITER_USER, clickhousePassword: PASSWORD, database, functions: FUNCTIONS });
  await processor.port;
  const want = {
    http: new Map(published.flatMap((p) => [...p.expected.http])),
    connections: published.flatMap((p) => p.expected.connections),
    losses: published.flatMap((p) => p.expected.losses),
  };
  const query = <T>(sql: string) => rows<T>(ch, sql);
  // Every table's rows: each is its own insert, so exchanges can be in before losses are.
  const rowsWanted = want.http.size + want.connections.length + want.losses.length;
  await waitFor('every row of both regions', async () => (await committedRows(query, database)) >= rowsWanted, 120_000, () => processor!.log());
  await assertExactlyOnce(query, database, want, 'from two regions through the hub');
  const byRegion = await query<{ region: string; node: string; n: string }>(`SELECT region, node, count() AS n FROM ${database}.http_requests GROUP BY region, node ORDER BY region`);
  assert.deepEqual(byRegion.map((r) => [r.region, r.node, Number(r.n)]), REGIONS.map((r, i) => [r.region, r.node, published[i].expected.http.size]).sort());
});

test('a domain already sourced under another region name, bad pairs, no source and no hub stream are refused', async () => {
  const taken = await fanin('--source', 'asia=dom-eu');
  assert.equal(taken.code, 1);
  assert.match(taken.stderr, /already sources region eu from domain dom-eu/);
  for (const bad of ['eu', 'eu=', '=dom', 'e u=dom', 'eu=dom.x']) {
    const r = await fanin('--source', bad);
    assert.equal(r.code, 1, bad);
    assert.match(r.stderr, /source: expected REGION=DOMAIN/, bad);
  }
  const missing = await fanin('--show', '--stream', 'NETRIG_NONE');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /the hub has no stream NETRIG_NONE: make it with netrig fanin --source/);
  const none = await fanin();
  assert.equal(none.code, 1);
  assert.match(none.stderr, /name at least one REGION=DOMAIN, or --show/);
  const twice = await fanin('--source', 'eu=a', '--source', 'eu=b');
  assert.match(twice.stderr, /each region and each domain may be named once/);
});
