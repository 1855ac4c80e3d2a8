/**
 * `netrig nats`: the nats-server `netrig up` runs, alone — JetStream with its store
 * encrypted, a password per role (edge, processor, admin) generated at first start into
 * `<data dir>/nats-auth/<role>.password`, each role allowed only its subjects
 * (cli/nats-roles.ts) — for deployments whose parts run in separate processes or
 * containers; passwords may be given from files (mounted secrets) instead. For fan-in, a
 * region's server takes a JetStream domain and joins its hub as a leaf node; the hub accepts
 * leaf nodes on its own port with the password in `nats-auth/leaf.password` (or given).
 */
import { resolve } from 'node:path';
import { intValue } from '../lib/config.js';
import { holdingDataDir } from '../lib/data-dir.js';
import { ConfigError } from '../lib/errors.js';
import { domainName } from '../lib/fanin.js';
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
  /** ROLE=FILE: a role's password from a file (a mounted secret) instead of generated. */
  userPasswordFile?: string[];
  natsTlsCa?: string;
}

/** The passwords `--user-password-file ROLE=FILE` gives, by role (one of `roles`). */
function givenPasswords(pairs: string[], roles: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const role = pair.slice(0, eq);
    if (eq < 1 || !roles.includes(role) || role in out) {
      throw new ConfigError('user-password-file', `expected ROLE=FILE with ROLE one of ${roles.join(', ')}, each once; got ${JSON.stringify(pair)}`);
    }
    out[role] = secretOfFlag('user-password-file', pair.slice(eq + 1));
  }
  return out;
}

export async function runNats(input: NatsInput): Promise<{ stop(): Promise<void> }> {
  if (input.leafRemote !== undefined && input.leafnodePort !== undefined) {
    throw new ConfigError('leaf-remote', 'a server is a hub (--leafnode-port) or joins one (--leaf-remote), not both');
  }
  const roles = natsRoles({ stream: input.stream ?? 'NETRIG_RAW', subjectPrefix: input.subjectPrefix ?? 'netrig.raw' });
  const passwords = givenPasswords(input.userPasswordFile ?? [], Object.keys(roles));
  const leafPassword = input.leafPasswordFile === undefined ? undefined : secretOfFlag('leaf-password-file', input.leafPasswordFile);
  if (input.leafRemote !== undefined && leafPassword === undefined) {
    throw new ConfigError('leaf-password-file', "--leaf-remote needs the hub's leaf password (its <data dir>/nats-auth/leaf.password)");
  }
  const dataDir = resolve(input.dataDir ?? './.netrig');
  return holdingDataDir(dataDir, () => startOwnedNatsServer({
    dataDir, host: input.natsHost, port: intValue('nats-port', input.natsPort ?? 4222, 0, 65535), tls: input.natsTls,
    roles, passwords,
    domain: input.domain === undefined ? undefined : domainName('domain', input.domain),
    leafnodePort: input.leafnodePort === undefined ? undefined : intValue('leafnode-port', input.leafnodePort, 1, 65535),
    leafPassword: input.leafnodePort === undefined ? undefined : leafPassword,
    leafRemote: input.leafRemote === undefined ? undefined : { url: input.leafRemote, password: leafPassword!, tlsCa: input.natsTlsCa },
    log: logger('nats'),
  }));
}
