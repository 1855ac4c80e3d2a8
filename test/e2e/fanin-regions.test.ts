/**
 * End to end: two regions fanned into a hub, and one region's link cut. Three real
 * nats-servers (each region's JetStream under its own domain, joined to the hub as a leaf
 * node on loopback), an edge per region (real eBPF; each captures its own nginx's port),
 * `netrig fanin` on the hub, a `netrig process` on the hub. curl talks to both nginx
 * instances all along. The us region's link to the hub is cut for 60 s by nftables
 * dropping its leaf connection's packets (no clean close) and any new connection to the
 * leaf port, while its traffic goes on; then healed. Every request must then be in
 * `http_requests` exactly once per end, with its region, as each nginx logged it; the hub
 * must not have had us's envelopes during the cut, eu's must have kept flowing, and the
 * catch-up time after the heal is reported.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { cleanupAll, sleep } from '../helpers/cleanup-all.js';
import { runCli } from '../helpers/cli.js';
import { startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { freePort, startNatsServer, waitForDomain, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, run, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { ProcessorChild } from '../helpers/processor-child.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const FUNCTIONS = ['http1', 'tcp', 'losses'];
const PASSWORD = randomBytes(12).toString('hex');
const CUT_MS = 60_000;
const BEFORE_CUT_MS = 8_000;
/** Traffic after the heal, and the bound on catching up. */
const AFTER_HEAL_MS = 8_000;
const CATCH_UP_MS = 120_000;
/** One curl per region every this often. */
const REQUEST_EVERY_MS = 250;
/** Dead leaf connections are found within seconds, not the default minutes. */
const LEAF_PINGS = 'ping_interval: "1s"\nping_max: 3';
const TABLE = `netrig_fanin_${process.pid}`;

interface Region {
  region: string;
  domain: string;
  nats?: NatsServerHandle;
  nginx?: NginxHandle;
  edge?: EdgeRun;
  /** Requests curl completed (status 200). */
  ok: number;
}

const regions: Region[] = [{ region: 'eu', domain: 'dom-eu', ok: 0 }, { region: 'us', domain: 'dom-us', ok: 0 }];
let hub: NatsServerHandle | undefined;
let leafPort = 0;
let hosts: HostPair | undefined;
let hubNc: NatsConnection | undefined;
let ch: ClickHouse | undefined;
let endpoint: ClickHouseEndpoint | undefined;
let processor: ProcessorChild | undefined;
let cut = false;

before(async () => {
  leafPort = await freePort();
  hub = await startNatsServer({ domain: 'hub', config: `${LEAF_PINGS}\nleafnodes { listen: "127.0.0.1:${leafPort}" }` });
  hubNc = await connect({ servers: hub.url });
  hosts = await createHostPair();
  for (const [i, r] of regions.entries()) {
    r.nats = await startNatsServer({ domain: r.domain, config: `${LEAF_PINGS}\nleafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:${leafPort}" } ] }` });
    r.nginx = await startNginx(hosts.server, { port: 8081 + i, ipv6: false });
    r.edge = await startEdge({
      nats: r.nats.url, stream: 'NETRIG_RAW', netns: [hosts.client.netnsIno(), hosts.server.netnsIno()],
      input: { region: r.region, node: `node-${r.region}`, subjectPrefix: 'netrig.raw', includePorts: String(r.nginx.port) },
    });
  }
  for (const r of regions) await waitForDomain(hubNc, r.domain, () => hub!.log());
  ch = await freshClickHouse('fanin_e2e');
  endpoint = await startTestEndpoint(ch, PASSWORD);
});

after(() => cleanupAll(
  () => (cut ? run('nft', ['delete', 'table', 'inet', TABLE]) : undefined),
  () => processor?.signal('SIGTERM'),
  ...regions.flatMap((r) => [() => r.edge?.stop(), () => r.nginx?.stop()]),
  () => hosts?.destroy(),
  () => endpoint?.stop(),
  () => ch?.close(),
  () => removeClickHouseData(),
  () => hubNc?.close(),
  ...regions.map((r) => () => r.nats?.cleanup()),
  () => hub?.cleanup(),
));

/** Requests of the traffic nginx logged (its start-up probe asks for another file). */
function served(r: Region): number {
  return r.nginx!.accessLog().filter((e) => e.uri === '/hello.html').length;
}

/** Envelopes of `region` in `stream` of the server `jsm` talks to. */
async function envelopesOf(jsm: JetStreamManager, region: string): Promise<number> {
  const info = await jsm.streams.info('NETRIG_RAW', { subjects_filter: `netrig.raw.${region}.>` });
  return Object.values(info.state.subjects ?? {}).reduce((a, n) => a + n, 0);
}

/** The local port of `pid`'s established connection to the hub's leaf port. */
async function leafConnectionPort(pid: number): Promise<number> {
  const r = await run('ss', ['-tnpH', 'state', 'established', `( dport = :${leafPort} )`]);
  const line = r.stdout.split('\n').find((l) => l.includes(`pid=${pid},`));
  const m = line && /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+/.exec(line);
  if (!m) throw new Error(`no leaf connection of pid ${pid} to port ${leafPort}:\n${r.stdout}`);
  return Number(m[1]);
}

test('two regions through the hub; one region cut off for 60 s catches up; every request once, with its region', async (t) => {
  const [eu, us] = regions;
  const fanin = await runCli(['fanin', '--nats', hub!.url, '--source', 'eu=dom-eu', '--source', 'us=dom-us']);
  assert.equal(fanin.code, 0, fanin.stderr);
  const database = `fanin_e2e_${process.pid}`;
  processor = new ProcessorChild({ natsUrl: hub!.url, clickhouseUrl: `http://127.0.0.1:${endpoint!.port}`, clickhouseUser: WRITER_USER, clickhousePassword: PASSWORD, database, functions: FUNCTIONS });
  await processor.port;

  // Traffic to both regions all along, bounded in time and count.
  let trafficOn = true;
  const traffic = (async () => {
    const maxRounds = Math.ceil((BEFORE_CUT_MS + CUT_MS + AFTER_HEAL_MS + 30_000) / REQUEST_EVERY_MS);
    for (let i = 0; trafficOn && i < maxRounds; i++) {
      const started = Date.now();
      await Promise.all(regions.map(async (r) => {
        const c = await hosts!.client.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://${hosts!.server.addr}:${r.nginx!.port}/hello.html`]);
        if (c.stdout.trim() === '200') r.ok++;
      }));
      await sleep(Math.max(0, REQUEST_EVERY_MS - (Date.now() - started)));
    }
  })();

  const hubJsm = await jetstreamManager(hubNc!);
  const usNc = await connect({ servers: us.nats!.url });
  try {
    const usJsm = await jetstreamManager(usNc);
    await sleep(BEFORE_CUT_MS);
    await waitFor('us envelopes on the hub before the cut', async () => (await envelopesOf(hubJsm, 'us')) > 0, 30_000);

    // Cut: us's leaf connection loses every packet both ways, and no new one can be made.
    const port = await leafConnectionPort(us.nats!.pid!);
    const rules = `table inet ${TABLE} {
  chain output { type filter hook output priority 0; policy accept;
    tcp sport ${port} tcp dport ${leafPort} drop
    tcp sport ${leafPort} tcp dport ${port} drop
    tcp dport ${leafPort} tcp flags & (syn | ack) == syn drop
  }
}`;
    const nft = await run('nft', ['-f', '-'], { input: rules });
    assert.equal(nft.code, 0, `nft: ${nft.stderr}`);
    cut = true;
    const hubUsAtCut = await envelopesOf(hubJsm, 'us');
    const hubEuAtCut = await envelopesOf(hubJsm, 'eu');
    await sleep(CUT_MS);
    const hubUsBeforeHeal = await envelopesOf(hubJsm, 'us');
    const usAtHeal = await envelopesOf(usJsm, 'us');
    assert.ok(usAtHeal > hubUsBeforeHeal + 100, `us went on capturing into its own stream during the cut (${usAtHeal} envelopes there, ${hubUsBeforeHeal} on the hub)`);
    // Envelopes already in flight when the rules went in may still land; a few at most.
    assert.ok(hubUsBeforeHeal - hubUsAtCut <= 5, `the hub got ${hubUsBeforeHeal - hubUsAtCut} us envelopes during the cut`);
    assert.ok((await envelopesOf(hubJsm, 'eu')) > hubEuAtCut + 100, 'eu kept flowing into the hub during the cut');

    // Heal, and time the catch-up: until the hub holds everything us had at the heal.
    const del = await run('nft', ['delete', 'table', 'inet', TABLE]);
    assert.equal(del.code, 0, `nft delete: ${del.stderr}`);
    cut = false;
    const healed = Date.now();
    await waitFor('the hub caught up with us', async () => (await envelopesOf(hubJsm, 'us')) >= usAtHeal, CATCH_UP_MS, async () => `hub has ${await envelopesOf(hubJsm, 'us')} of ${usAtHeal}`);
    const catchUpMs = Date.now() - healed;
    t.diagnostic(`us caught up ${(catchUpMs / 1000).toFixed(1)} s after the heal of a ${CUT_MS / 1000} s cut (${usAtHeal - hubUsBeforeHeal} envelopes held back)`);
    await sleep(AFTER_HEAL_MS);
  } finally {
    trafficOn = false;
    await traffic;
    await usNc.close();
  }

  // Every request once per end, with its region, as each nginx logged it.
  const query = <T>(sql: string) => rows<T>(ch!, sql);
  for (const r of regions) {
    const logged = served(r);
    assert.ok(r.ok > 100 && logged >= r.ok, `${r.region}: ${r.ok} requests completed, ${logged} logged`);
  }
  const counts = async () => new Map((await query<{ k: string; n: string }>(
    `SELECT concat(region, '|', toString(role)) AS k, count() AS n FROM ${database}.http_requests GROUP BY k`)).map((x) => [x.k, Number(x.n)]));
  await waitFor('every request of both regions, both ends', async () => {
    const c = await counts();
    return regions.every((r) => (c.get(`${r.region}|server`) ?? 0) >= served(r) && (c.get(`${r.region}|client`) ?? 0) >= r.ok);
  }, 120_000, async () => `${JSON.stringify([...(await counts())])}; wanted ${regions.map((r) => `${r.region} ${served(r)}/${r.ok}`).join(', ')}; ${processor!.log().slice(-2000)}`);
  await sleep(2000);
  const c = await counts();
  for (const r of regions) {
    assert.equal(c.get(`${r.region}|server`), served(r), `${r.region}: server rows = nginx's access log`);
    assert.equal(c.get(`${r.region}|client`), r.ok, `${r.region}: client rows = curl's completed requests`);
  }
  const [dups] = await query<{ n: string }>(`SELECT count() - uniqExact(node, conn_id, role, req_pos) AS n FROM ${database}.http_requests`);
  assert.equal(Number(dups.n), 0, 'no exchange twice');
  const wrong = await query<{ n: string }>(`SELECT count() AS n FROM ${database}.http_requests WHERE NOT ((region = 'eu' AND server_port = ${eu.nginx!.port}) OR (region = 'us' AND server_port = ${us.nginx!.port}))`);
  assert.equal(Number(wrong[0].n), 0, 'each region holds only its own nginx\'s exchanges');
});
