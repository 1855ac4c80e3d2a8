/**
 * netrig status: the processors and edges running now, from their heartbeats in NATS
 * (lib/heartbeat.ts). `table` for people; `json`, one object per line, for scripts.
 */
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { ConfigError } from '../lib/errors.js';
import { readStatus, type NetrigStatus } from '../lib/heartbeat.js';
import type { NatsClientInput } from '../lib/nats.js';
import { natsAuthDir } from '../lib/nats-server.js';
import { theRunningUp } from '../lib/running-ups.js';
import { formatTable } from './query.js';

/**
 * How `netrig status` reaches NATS: as told (--nats), else the running `netrig up`'s (the one
 * holding --data-dir when given): its own nats-server as its admin role unless credentials
 * are given, or the --nats it was started with.
 */
export function statusNats(input: NatsClientInput & { dataDir?: string }): NatsClientInput {
  if (input.nats !== undefined) return input;
  const up = theRunningUp(input.dataDir);
  if (!up) {
    const which = input.dataDir === undefined ? 'runs on this host' : `holds ${input.dataDir}`;
    throw new ConfigError('nats', `no \`netrig up\` ${which} to ask: pass --nats URL with its credentials (--nats-user and --nats-password-file, or --nats-creds)`);
  }
  const toUp = { ...input, nats: up.nats.url, natsTlsCa: input.natsTlsCa ?? up.nats.tlsCa };
  const given = input.natsUser !== undefined || input.natsCreds !== undefined;
  return !up.nats.owned || given ? toUp : { ...toUp, natsUser: 'admin', natsPasswordFile: join(natsAuthDir(up.dataDir), 'admin.password') };
}

/** One line of what the entry does, for the table. */
function detail(s: NetrigStatus): string {
  if (s.kind === 'processor') {
    return `db ${s.database}, ${s.functions.join(',')}, lanes ${s.lanes.length ? `${s.lanes[0]}-${s.lanes[s.lanes.length - 1]} (${s.lanes.length})` : '-'}, lag ${s.lag}, last commit ${s.last_commit ?? 'never'}`;
  }
  return `${s.region}/${s.node} run ${s.run}, ${s.records_per_s} records/s, capture ${s.capture.path} (${s.capture.features.join(',')})`;
}

export async function printStatus(nc: NatsConnection, format: string, out: NodeJS.WritableStream): Promise<void> {
  if (format !== 'table' && format !== 'json') throw new ConfigError('format', `expected table or json, got ${JSON.stringify(format)}`);
  const entries = await readStatus(nc);
  if (format === 'json') {
    for (const s of entries) out.write(`${JSON.stringify(s)}\n`);
    return;
  }
  out.write(formatTable({
    meta: ['kind', 'id', 'host', 'pid', 'started', 'doing'].map((name) => ({ name, type: name === 'pid' ? 'UInt32' : 'String' })),
    data: entries.map((s) => [s.kind, s.id, s.host, s.pid, s.started, detail(s)]),
  }));
}
