/**
 * A fan-in deployment on this host, as separate netrig processes (the freshness benchmark's
 * per-region run): a hub and two regions each `netrig nats` (the regions under their own
 * JetStream domains, joined to the hub as leaf nodes), an edge per region publishing to its
 * region's server and capturing only its region's nginx port, `netrig fanin` making the hub's
 * raw stream source both, `netrig store` (the embedded engine on the HTTP endpoint) and one
 * `netrig process` reading the hub. Every part connects with its role's password.
 */
import { join } from 'node:path';
import { readEndpoint } from '../cli/endpoint-file.js';
import { CLI } from '../test/helpers/paths.js';
import { freePort } from '../test/helpers/nats-server.js';
import { endpointQuery, runCmd, sleep, spawnChild, tempDir, waitForStderr, type Child } from './common.js';

export interface FaninRegion {
  region: string;
  /** The nginx port this region's edge captures. */
  port: number;
}

export interface FaninStack {
  query(sql: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startFaninStack(cpus: number[], netns: number[], regions: FaninRegion[]): Promise<FaninStack> {
  const data = tempDir('fanin');
  const children: Child[] = [];
  const netrig = (args: string[]) => {
    const c = spawnChild('taskset', ['-c', cpus.join(','), process.execPath, CLI, ...args], { group: true, env: { ...process.env, NETRIG_LOG_LEVEL: 'info' } });
    children.push(c);
    return c;
  };
  const stop = async () => {
    for (const c of children.reverse()) await c.stop('SIGTERM', 30_000);
    data.remove();
  };
  try {
    const dir = (name: string) => join(data.path, name);
    const password = (server: string, role: string) => join(dir(server), 'nats-auth', `${role}.password`);
    const hubPort = await freePort();
    const leafPort = await freePort();
    const hub = netrig(['nats', '--data-dir', dir('hub'), '--nats-port', String(hubPort), '--domain', 'hub', '--leafnode-port', String(leafPort)]);
    await waitForStderr(hub, 'the hub', /nats-server started/);
    for (const r of regions) {
      const port = await freePort();
      const nats = netrig(['nats', '--data-dir', dir(r.region), '--nats-port', String(port), '--domain', r.region,
        '--leaf-remote', `nats-leaf://127.0.0.1:${leafPort}`, '--leaf-password-file', password('hub', 'leaf')]);
      await waitForStderr(nats, `${r.region}'s nats`, /nats-server started/);
      const edge = netrig(['edge', '--nats', `nats://127.0.0.1:${port}`, '--nats-user', 'edge', '--nats-password-file', password(r.region, 'edge'),
        '--region', r.region, '--node', `${r.region}-1`, '--metrics-port', '0', '--include-netns', netns.join(','), '--include-ports', String(r.port)]);
      await waitForStderr(edge, `${r.region}'s edge`, /edge running/);
    }
    // The regions' domains answer once their leaf nodes have joined: retry until then.
    const sources = regions.flatMap((r) => ['--source', `${r.region}=${r.region}`]);
    for (let i = 0; ; i++) {
      const fanin = await runCmd(process.execPath, [CLI, 'fanin', '--nats', `nats://127.0.0.1:${hubPort}`, '--nats-user', 'admin', '--nats-password-file', password('hub', 'admin'), ...sources]);
      if (fanin.code === 0) break;
      if (i === 60) throw new Error(`netrig fanin failed: ${fanin.stderr.slice(-2000)}`);
      await sleep(500);
    }
    const httpPort = await freePort();
    const store = netrig(['store', '--data-dir', dir('store'), '--http-port', String(httpPort)]);
    await waitForStderr(store, 'the store', /ClickHouse endpoint serving/);
    const processor = netrig(['process', '--nats', `nats://127.0.0.1:${hubPort}`, '--nats-user', 'processor', '--nats-password-file', password('hub', 'processor'),
      '--clickhouse-url', `http://127.0.0.1:${httpPort}`, '--clickhouse-user', 'netrig_writer', '--clickhouse-password-file', join(dir('store'), 'endpoint', 'writer.password'),
      '--metrics-port', '0', '--functions', 'http1']);
    await waitForStderr(processor, 'the processor', /processor running/);
    const found = readEndpoint(dir('store'));
    if (!found) throw new Error('netrig store runs but its endpoint file is missing');
    return { query: endpointQuery(found.url, 'default', found.password), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
