/**
 * NATS connections for edge and processors: reconnect forever once connected, and a clear
 * error when the first connection cannot be made.
 */
import { JetStreamApiError, type JetStreamApiCodes } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { PrerequisiteError } from './errors.js';
import type { Logger } from './logger.js';

/** Connect to `servers` (comma-separated URLs); rejects with what to do if unreachable. */
export async function connectNats(servers: string, name: string, log: Logger): Promise<NatsConnection> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: servers.split(',').map((s) => s.trim()),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: 10_000,
    });
  } catch (err) {
    throw new PrerequisiteError(`cannot reach NATS at ${servers} (${(err as Error).message}): start nats-server (with -js) or pass the right --nats URL`, { cause: err });
  }
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ nats: s.type, server: (s as { server?: string }).server }, `nats ${s.type}`);
    }
  })();
  return nc;
}

/** Whether `err` is the JetStream API error `code` (JetStreamApiCodes): by code, never by its text. */
export function isJsApiError(err: unknown, code: JetStreamApiCodes): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}
