/**
 * `netrig up` as the end-to-end tests run it over a pair of network namespaces: its own
 * nats-server and endpoint on free ports, every metrics port and the page on a port of its
 * choosing, capture limited to the pair's namespaces, its data dir and run dir under `dir`
 * (so `query`, `report` and `status` given NETRIG_RUN_DIR find it and no other).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import { readEndpoint } from '../../cli/endpoint-file.js';
import { spawnCli, type CliChild, type LogLine } from './cli.js';
import { freePort } from './nats-server.js';
import type { HostPair } from './netns.js';

export interface UpRun {
  up: CliChild;
  dataDir: string;
  /** NETRIG_RUN_DIR for the CLI commands that should find this up. */
  env: Record<string, string>;
  /** Its "running" log line (the page's URL, the ports). */
  running: LogLine;
  /** A client of its endpoint as its reader. */
  reader: ClickHouseClient;
}

/** Start `netrig up` with `extra` flags and wait until it runs. The caller stops `up` and closes `reader`. */
export async function startUp(dir: string, hosts: HostPair, extra: string[] = []): Promise<UpRun> {
  const dataDir = join(dir, 'data');
  const env = { NETRIG_RUN_DIR: join(dir, 'run') };
  const up = spawnCli([
    'up', '--data-dir', dataDir, '--nats-port', String(await freePort()), '--http-port', String(await freePort()), '--ui-port', '0',
    '--metrics-port', '0', '--processor-metrics-port', '0',
    '--include-netns', `${hosts.client.netnsIno()},${hosts.server.netnsIno()}`, ...extra,
  ], { env });
  try {
    const running = await up.waitLog("'netrig up: running'", (l) => /^netrig up: running/.test(l.msg ?? ''));
    const ep = readEndpoint(dataDir);
    assert.ok(ep, "up's endpoint is advertised in its data dir");
    const reader = createClient({ url: ep.url, username: ep.user, password: ep.password, database: ep.database, log: { level: ClickHouseLogLevel.OFF } });
    return { up, dataDir, env, running, reader };
  } catch (err) {
    up.kill();
    throw err;
  }
}
