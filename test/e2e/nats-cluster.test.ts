/**
 * End to end on a three-node JetStream cluster (three real nats-servers routed on
 * loopback): an edge (real eBPF) creates the raw stream and its buckets with
 * `--stream-replicas 3`, a `netrig process` with the same, both given every server's URL,
 * while curl talks to nginx. In the middle of the run the raw stream's leader is
 * SIGKILLed. The edge and the processor must carry on by themselves (no restart): every
 * request in `http_requests` exactly once per end, as nginx logged it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { cleanupAll, sleep } from '../helpers/cleanup-all.js';
import { startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { freePort, startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { ProcessorChild } from '../helpers/processor-child.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const FUNCTIONS = ['http1', 'tcp', 'losses'];
const PASSWORD = randomBytes(12).toString('hex');
const SERVERS = 3;
const BEFORE_KILL_MS = 8_000;
const AFTER_KILL_MS = 15_000;
const REQUEST_EVERY_MS = 100;

const servers: NatsServerHandle[] = [];
let urls = '';
let nc: NatsConnection | undefined;
let hosts: HostPair | undefined;
let nginx: NginxHandle | undefined;
let edge: EdgeRun | undefined;
let ch: ClickHouse | undefined;
let endpoint: ClickHouseEndpoint | undefined;
let processor: ProcessorChild | undefined;

before(async () => {
  const clusterPorts = await Promise.all(Array.from({ length: SERVERS }, () => freePort()));
  for (let i = 0; i < SERVERS; i++) {
    const routes = clusterPorts.filter((_, j) => j !== i).map((p) => `"nats-route://127.0.0.1:${p}"`).join(', ');
    servers.push(await startNatsServer({
      config: `server_name: n${i + 1}\ncluster { name: netrig-test, listen: "127.0.0.1:${clusterPorts[i]}", routes: [ ${routes} ] }`,
    }));
  }
  urls = servers.map((s) => s.url).join(',');
  nc = await connect({ servers: servers.map((s) => s.url) });
  // Not checked here: the API answers only once the cluster has a leader, which is waited for.
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  await waitFor('the JetStream cluster to elect its leader', async () => {
    try {
      await jsm.getAccountInfo();
      return true;
    } catch {
      return false;
    }
  }, 60_000, () => servers.map((s) => s.log().split('\n').slice(-5).join('\n')).join('\n--\n'));
  hosts = await createHostPair();
  nginx = await startNginx(hosts.server, { ipv6: false });
  edge = await startEdge({
    nats: urls, stream: 'NETRIG_RAW', netns: [hosts.client.netnsIno(), hosts.server.netnsIno()],
    input: { subjectPrefix: 'netrig.raw', streamReplicas: 3, includePorts: String(nginx.port) },
  });
  ch = await freshClickHouse('cluster');
  endpoint = await startTestEndpoint(ch, PASSWORD);
});

after(() => cleanupAll(
  () => processor?.signal('SIGTERM'),
  () => edge?.stop(),
  () => nginx?.stop(),
  () => hosts?.destroy(),
  () => endpoint?.stop(),
  () => ch?.close(),
  () => removeClickHouseData(),
  () => nc?.close(),
  ...servers.map((s) => () => s.cleanup()),
));

test('the raw stream\'s leader killed mid-run: edge and processor carry on, every request once', async (t) => {
  const jsm = await jetstreamManager(nc!);
  const stream = await jsm.streams.info('NETRIG_RAW');
  assert.equal(stream.config.num_replicas, 3, 'the edge made the raw stream with three replicas');
  const database = `cluster_${process.pid}`;
  processor = new ProcessorChild({ natsUrl: urls, clickhouseUrl: `http://127.0.0.1:${endpoint!.port}`, clickhouseUser: WRITER_USER, clickhousePassword: PASSWORD, database, functions: FUNCTIONS, streamReplicas: 3 });
  await processor.port;
  // The processor's buckets (leases, status) are replicated like the stream: a lease bucket
  // on the killed server alone would stop every processor.
  for (const bucket of ['KV_netrig_leases', 'KV_netrig_status']) {
    await waitFor(`${bucket} with three replicas`, async () => {
      try {
        return (await jsm.streams.info(bucket)).config.num_replicas === 3;
      } catch {
        return false;
      }
    }, 30_000, () => processor!.log());
  }

  let ok = 0;
  let trafficOn = true;
  const traffic = (async () => {
    const maxRounds = Math.ceil((BEFORE_KILL_MS + AFTER_KILL_MS + 30_000) / REQUEST_EVERY_MS);
    for (let i = 0; trafficOn && i < maxRounds; i++) {
      const started = Date.now();
      const c = await hosts!.client.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://${hosts!.server.addr}:${nginx!.port}/hello.html`]);
      if (c.stdout.trim() === '200') ok++;
      await sleep(Math.max(0, REQUEST_EVERY_MS - (Date.now() - started)));
    }
  })();
  let killed = '';
  try {
    await sleep(BEFORE_KILL_MS);
    const leader = (await jsm.streams.info('NETRIG_RAW')).cluster?.leader;
    const victim = servers.find((_, i) => `n${i + 1}` === leader);
    assert.ok(victim, `the raw stream has a leader among the servers (${leader})`);
    killed = leader!;
    await victim.kill();
    t.diagnostic(`SIGKILLed ${killed}, the raw stream's leader, after ${BEFORE_KILL_MS / 1000} s`);
    await sleep(AFTER_KILL_MS);
  } finally {
    trafficOn = false;
    await traffic;
  }
  const newLeader = (await jsm.streams.info('NETRIG_RAW')).cluster?.leader;
  assert.ok(newLeader && newLeader !== killed, `another server leads the raw stream (${newLeader})`);

  const served = () => nginx!.accessLog().filter((e) => e.uri === '/hello.html').length;
  assert.ok(ok > 100 && served() >= ok, `${ok} requests completed, ${served()} logged`);
  const query = <T>(sql: string) => rows<T>(ch!, sql);
  const counts = async () => new Map((await query<{ role: string; n: string }>(
    `SELECT toString(role) AS role, count() AS n FROM ${database}.http_requests GROUP BY role`)).map((x) => [x.role, Number(x.n)]));
  await waitFor('every request, both ends', async () => {
    const c = await counts();
    return (c.get('server') ?? 0) >= served() && (c.get('client') ?? 0) >= ok;
  }, 120_000, async () => `${JSON.stringify([...(await counts())])}; wanted ${served()}/${ok}; ${processor!.log().slice(-3000)}`);
  await sleep(2000);
  const c = await counts();
  assert.equal(c.get('server'), served(), 'server rows = nginx\'s access log');
  assert.equal(c.get('client'), ok, 'client rows = curl\'s completed requests');
  const [dups] = await query<{ n: string }>(`SELECT count() - uniqExact(node, conn_id, role, req_pos) AS n FROM ${database}.http_requests`);
  assert.equal(Number(dups.n), 0, 'no exchange twice');
  assert.equal(processor!.child.exitCode, null, 'the processor ran on by itself');
});
