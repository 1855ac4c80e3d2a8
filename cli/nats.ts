/**
 * `netrig nats`: the nats-server `netrig up` runs, alone — JetStream with its store
 * encrypted, a password per role (edge, processor, admin) generated at first start into
 * `<data dir>/nats-auth/<role>.password`, each role allowed only its subjects
 * (cli/nats-roles.ts) — for deployments whose parts run in separate processes or
 * containers. For fan-in, a region's server takes a JetStream domain and joins its hub as a
 * leaf node; the hub accepts leaf nodes on its own port with the password in
 * `nats-auth/leaf.password`.
 */
import { resolve } from 'node:path';
import { intValue } from '../lib/config.js';
import { lockDataDir } from '../lib/data-dir.js';
import { ConfigError } from '../lib/errors.js';
import { logger } from '../lib/logger.js';
import { startOwnedNatsServer } from '../lib/nats-server.js';
import { secretOfFlag } from '../lib/secret-file.js';
import { natsRoles } from './nats-roles.js';

export interface NatsInput {
  dataDir?: string;
  natsHost?: string;
  natsPort?: string | number;
  natsTls?: boolean;
  stream?: string;
  subjectPrefix?: string;
  domain?: string;
  leafnodePort?: string | number;
  leafRemote?: string;
  leafPasswordFile?: string;
  natsTlsCa?: string;
}

/** A JetStream domain: nats-server takes letters, digits, '-' and '_' (it is a subject token). */
function domainValue(v: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(v)) throw new ConfigError('domain', `expected letters, digits, '-' or '_', got ${JSON.stringify(v)}`);
  return v;
}

export async function runNats(input: NatsInput): Promise<{ stop(): Promise<void> }> {
  if (input.leafRemote !== undefined && input.leafnodePort !== undefined) {
    throw new ConfigError('leaf-remote', 'a server is a hub (--leafnode-port) or joins one (--leaf-remote), not both');
  }
  if (input.leafRemote !== undefined && input.leafPasswordFile === undefined) {
    throw new ConfigError('leaf-password-file', "--leaf-remote needs the hub's leaf password (its <data dir>/nats-auth/leaf.password)");
  }
  const dataDir = resolve(input.dataDir ?? './.netrig');
  const unlock = lockDataDir(dataDir);
  try {
    const server = await startOwnedNatsServer({
      dataDir, host: input.natsHost, port: intValue('nats-port', input.natsPort ?? 4222, 0, 65535), tls: input.natsTls,
      roles: natsRoles({ stream: input.stream ?? 'NETRIG_RAW', subjectPrefix: input.subjectPrefix ?? 'netrig.raw' }),
      domain: input.domain === undefined ? undefined : domainValue(input.domain),
      leafnodePort: input.leafnodePort === undefined ? undefined : intValue('leafnode-port', input.leafnodePort, 1, 65535),
      leafRemote: input.leafRemote === undefined ? undefined
        : { url: input.leafRemote, password: secretOfFlag('leaf-password-file', input.leafPasswordFile!), tlsCa: input.natsTlsCa },
      log: logger('nats'),
    });
    return {
      async stop() {
        await server.stop();
        unlock();
      },
    };
  } catch (err) {
    unlock();
    throw err;
  }
}
