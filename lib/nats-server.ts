/**
 * A nats-server owned by a netrig process (`netrig up`): Debian's nats-server with
 * JetStream, run from a configuration file it writes at every start (lib/nats-config.ts):
 * one user per role with only the subjects that role needs, the store under the data dir
 * encrypted at rest, and TLS whenever it listens beyond loopback (or when asked). Role
 * passwords and the encryption key are generated at first start (lib/secret-file.ts).
 *
 * Data dir layout: `nats/` the JetStream store, `nats.conf` (0600), `nats-auth/` (0700:
 * `<role>.password`, `jetstream.key`), `nats-tls/` (the CA, `ca.pem`, and the server's
 * certificate). It is started through `setpriv --pdeathsig` so it dies with its owner even
 * if the owner is killed outright.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError, PortInUseError, PrerequisiteError } from './errors.js';
import type { Logger } from './logger.js';
import { renderNatsConfig, type NatsGrants } from './nats-config.js';
import { privateDir, secretFile } from './secret-file.js';
import { ensureNatsTls } from './nats-tls.js';
import type { NatsClientInput } from './nats.js';

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;

export interface OwnedNatsOptions {
  dataDir: string;
  /** Listen address; 127.0.0.1 by default. Beyond loopback the server speaks TLS only. */
  host?: string;
  /** Client port; 0 lets the server pick a free one. */
  port: number;
  /** TLS even on loopback. */
  tls?: boolean;
  /** Users by role name, with what each may publish and subscribe to. */
  roles: Record<string, NatsGrants>;
  /** JetStream domain (a region's, for fan-in). */
  domain?: string;
  /** Passwords by role given instead of generated (mounted secrets); written to nats-auth/ too. */
  passwords?: Record<string, string>;
  /** A hub: accept leaf nodes on this port as user `leaf`, with `leafPassword` or one generated into nats-auth/leaf.password. */
  leafnodePort?: number;
  leafPassword?: string;
  /** A region: join the hub at this URL (nats-leaf://host:port) as user `leaf` with this password. */
  leafRemote?: { url: string; password: string; tlsCa?: string };
  log: Logger;
}

export interface OwnedNatsServer {
  url: string;
  port: number;
  pid: number;
  /** The CA certificate clients must trust, when the server speaks TLS. */
  tlsCa: string | null;
  /** What a client of `role` connects with: URL, user, password, CA. */
  client(role: string): NatsClientInput;
  stop(): Promise<void>;
}

/** Where the owned nats-server keeps its roles' passwords (`<role>.password`). */
export function natsAuthDir(dataDir: string): string {
  return join(dataDir, 'nats-auth');
}

/** Whether `cmd` is on the PATH. */
export function commandExists(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Whether `host` is reachable from this host only. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** The user leaf nodes (regions) join a hub as; accepted on the leaf node port only. */
export const LEAF_USER = 'leaf';

/** `url` (nats-leaf://host:port) carrying the leaf user and its password. */
function leafUrl(url: string, password: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new ConfigError('leaf-remote', `expected a URL like nats-leaf://hub:7422, got ${JSON.stringify(url)}`, { cause: err });
  }
  if (!['nats-leaf:', 'nats:', 'tls:'].includes(u.protocol) || !u.port) throw new ConfigError('leaf-remote', `expected nats-leaf://host:port, got ${JSON.stringify(url)}`);
  u.username = LEAF_USER;
  u.password = password;
  return u.toString();
}

/** Start nats-server as `o` describes; resolves when it accepts clients. */
export async function startOwnedNatsServer(o: OwnedNatsOptions): Promise<OwnedNatsServer> {
  if (!commandExists('nats-server')) {
    throw new PrerequisiteError("nats-server is not installed: run 'scripts/setup.sh' (it installs Debian's nats-server) or pass --nats to use a running one");
  }
  const host = o.host ?? '127.0.0.1';
  // Encrypted or not, stream names and subjects (regions, nodes) are no one else's business.
  const storeDir = privateDir(join(o.dataDir, 'nats'));
  const authDir = natsAuthDir(o.dataDir);
  const passwords = Object.fromEntries(Object.keys(o.roles).map((role) => [role, secretFile(authDir, `${role}.password`, o.passwords?.[role]).value]));
  const wildcard = host === '0.0.0.0' || host === '::';
  // Clients of this host reach a wildcard listener through loopback.
  const connectHost = wildcard ? '127.0.0.1' : host;
  const tls = o.tls || !isLoopback(host)
    ? ensureNatsTls(join(o.dataDir, 'nats-tls'), ['127.0.0.1', '::1', 'localhost', hostname(), ...(wildcard ? [] : [host])])
    : null;
  const configFile = join(o.dataDir, 'nats.conf');
  writeFileSync(configFile, renderNatsConfig({
    serverName: o.domain ? `netrig-${o.domain}` : 'netrig', host, port: o.port === 0 ? -1 : o.port, storeDir,
    encryptionKey: secretFile(authDir, 'jetstream.key', undefined, 32).value,
    users: Object.entries(o.roles).map(([role, grants]) => ({ user: role, password: passwords[role], ...grants })),
    tls: tls ? { cert: tls.cert, key: tls.key } : undefined,
    domain: o.domain,
    leafListen: o.leafnodePort === undefined ? undefined : { port: o.leafnodePort, user: LEAF_USER, password: secretFile(authDir, `${LEAF_USER}.password`, o.leafPassword).value },
    leafRemote: o.leafRemote && { url: leafUrl(o.leafRemote.url, o.leafRemote.password), tlsCa: o.leafRemote.tlsCa },
  }), { mode: 0o600 });

  const args = ['-c', configFile];
  const child: ChildProcess = commandExists('setpriv')
    ? spawn('setpriv', ['--pdeathsig', 'SIGTERM', 'nats-server', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let port = o.port;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new PrerequisiteError(`nats-server did not become ready in ${READY_TIMEOUT_MS} ms:\n${output.slice(-2000)}`));
    }, READY_TIMEOUT_MS);
    const onData = (c: Buffer) => {
      output += c.toString();
      const listening = /Listening for client connections on \S+:(\d+)/.exec(output);
      if (listening) port = Number(listening[1]);
      if (/Server is ready/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (/address already in use/i.test(output)) reject(new PortInUseError(o.port, 'nats-server; pass --nats-port'));
      else reject(new PrerequisiteError(`nats-server exited (${code}) before it was ready:\n${output.slice(-2000)}`));
    });
  });
  child.removeAllListeners('exit');
  const url = `nats://${isIP(connectHost) === 6 ? `[${connectHost}]` : connectHost}:${port}`;
  o.log.info({ port, host, tls: Boolean(tls), storeDir, config: configFile, pid: child.pid }, 'nats-server started');
  return {
    url,
    port,
    pid: child.pid!,
    tlsCa: tls?.ca ?? null,
    client(role: string): NatsClientInput {
      if (!(role in passwords)) throw new Error(`no NATS role ${role}`);
      return { nats: url, natsUser: role, natsPassword: passwords[role], natsTlsCa: tls?.ca, natsCreds: undefined, natsPasswordFile: undefined };
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(t);
      o.log.info('nats-server stopped');
    },
  };
}
