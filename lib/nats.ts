/**
 * NATS connections for edge, processors and the commands: one place builds the connect
 * options (servers, credentials, TLS trust), reconnects forever once connected, and turns a
 * refused first connection into a clear error.
 */
import { readFileSync } from 'node:fs';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KV, type KvOptions } from '@nats-io/kv';
import {
  AuthorizationError, connect, credsAuthenticator, PermissionViolationError, UserAuthenticationExpiredError,
  type ConnectionOptions, type NatsConnection,
} from '@nats-io/transport-node';
import { ConfigError, NatsAuthError, NatsPermissionError, NatsTlsError, PrerequisiteError } from './errors.js';
import type { Logger } from './logger.js';
import { passwordOfFlags } from './secret-file.js';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';

/** How a client reaches NATS and proves who it is, as the `--nats*` flags give it. */
export interface NatsClientInput {
  /** Server URL(s), comma-separated. */
  nats?: string;
  /** A NATS .creds file (JWT and seed of a decentralised-auth user). */
  natsCreds?: string;
  natsUser?: string;
  natsPassword?: string;
  /** A file holding the password (a mounted secret), read when no password is given. */
  natsPasswordFile?: string;
  /** PEM file of the CA that signed the server's certificate; TLS is used when the server asks for it. */
  natsTlsCa?: string;
}

/**
 * Inbox prefix of a user: `_INBOX_<user>`. Replies (request responses, consumer deliveries)
 * come to inboxes, so a role allowed to subscribe to every `_INBOX.>` could read what
 * JetStream delivers to the others; each role may subscribe under its own prefix only.
 */
export function inboxPrefix(user: string): string {
  return `_INBOX_${user}`;
}

/** The connect options for `input`: servers, credentials, CA. */
export function natsConnectOptions(input: NatsClientInput, name: string): ConnectionOptions {
  const servers = input.nats ?? DEFAULT_NATS_URL;
  const o: ConnectionOptions = {
    servers: servers.split(',').map((s) => s.trim()),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  };
  if (input.natsCreds && input.natsUser) throw new ConfigError('nats-creds', 'give either --nats-creds or --nats-user/--nats-password, not both');
  if (input.natsCreds) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(input.natsCreds);
    } catch (err) {
      throw new ConfigError('nats-creds', `cannot read ${input.natsCreds}: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
    }
    o.authenticator = credsAuthenticator(creds);
  } else if (input.natsUser) {
    o.user = input.natsUser;
    o.pass = passwordOfFlags('nats-password', input.natsPassword, input.natsPasswordFile, '--nats-password (or NETRIG_NATS_PASSWORD)') ?? '';
    o.inboxPrefix = inboxPrefix(input.natsUser);
  } else if (input.natsPassword || input.natsPasswordFile) {
    throw new ConfigError('nats-password', 'a password needs its user: add --nats-user');
  }
  if (input.natsTlsCa) o.tls = { caFile: input.natsTlsCa };
  return o;
}

/** The error of class `cls` in `err`'s cause chain (`err` included), if any. */
function causeOf<T extends Error>(err: unknown, cls: abstract new (...a: never[]) => T): T | null {
  for (let e = err, depth = 0; e && depth < 8; e = (e as Error).cause, depth++) if (e instanceof cls) return e;
  return null;
}

function causedBy(err: unknown, cls: abstract new (...a: never[]) => Error): boolean {
  return causeOf(err, cls) !== null;
}

/** The TLS verification code (node's `err.code`, e.g. SELF_SIGNED_CERT_IN_CHAIN) in the cause chain, if any. */
function tlsFailure(err: unknown): string | null {
  for (let e = err, depth = 0; e && depth < 8; e = (e as Error).cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /CERT|SIGNATURE|ERR_TLS|ERR_SSL|HOSTNAME/.test(code)) return code;
  }
  return null;
}

/** Connect with `input`'s options; rejects with what to do if the server is unreachable or refuses. */
export async function connectNats(input: NatsClientInput, name: string, log: Logger): Promise<NatsConnection> {
  const opts = natsConnectOptions(input, name);
  const servers = input.nats ?? DEFAULT_NATS_URL;
  let nc: NatsConnection;
  try {
    nc = await connect(opts);
  } catch (err) {
    if (causedBy(err, AuthorizationError) || causedBy(err, UserAuthenticationExpiredError)) {
      throw new NatsAuthError(servers, input.natsUser ?? (input.natsCreds ? `from ${input.natsCreds}` : null), { cause: err });
    }
    const tls = tlsFailure(err);
    if (tls) throw new NatsTlsError(servers, tls, Boolean(input.natsTlsCa), { cause: err });
    throw new PrerequisiteError(`cannot reach NATS at ${servers} (${(err as Error).message}): start nats-server (with -js) or pass the right --nats URL`, { cause: err });
  }
  const denied = new Set<string>();
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ nats: s.type, server: (s as { server?: string }).server }, `nats ${s.type}`);
      // A denied subject is a credential of the wrong role or a server config that lacks a grant.
      const e = (s as { error?: unknown }).error;
      if (s.type === 'error' && e instanceof PermissionViolationError && !denied.has(`${e.operation} ${e.subject}`)) {
        denied.add(`${e.operation} ${e.subject}`);
        log.error({ operation: e.operation, subject: e.subject, user: input.natsUser }, 'NATS denied this credential a subject (logged once per subject)');
      }
    }
  })();
  return nc;
}

/** Whether `err` is the JetStream API error `code` (JetStreamApiCodes): by code, never by its text. */
export function isJsApiError(err: unknown, code: JetStreamApiCodes): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** Whether `err` is NATS refusing this credential a subject (a publish, subscription or JetStream API request). */
export function isPermissionDenied(err: unknown): boolean {
  return causedBy(err, PermissionViolationError);
}

/** `err` as a NatsPermissionError when NATS denied a subject, else null. */
export function natsPermissionError(err: unknown): NatsPermissionError | null {
  const pe = causeOf(err, PermissionViolationError);
  return pe ? new NatsPermissionError(pe.operation === 'publish' ? 'publish' : 'subscribe', pe.subject, { cause: err }) : null;
}

/** A KV bucket that exists, or null when nothing has created it yet. */
export async function openKvBucket(nc: NatsConnection, name: string): Promise<KV | null> {
  try {
    const kv = await new Kvm(nc).open(name);
    await kv.status();
    return kv;
  } catch (err) {
    if (isJsApiError(err, JetStreamApiCodes.StreamNotFound)) return null;
    throw err;
  }
}

/**
 * A KV bucket of netrig's: the existing one as it is (another part of netrig may have made
 * it, with other replicas), else created with `opts`.
 */
export async function kvBucket(nc: NatsConnection, name: string, opts: Partial<KvOptions>): Promise<KV> {
  return (await openKvBucket(nc, name)) ?? new Kvm(nc).create(name, opts);
}
