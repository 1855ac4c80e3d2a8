/**
 * The embedded ClickHouse engine under a data dir, served on the ClickHouse-compatible HTTP
 * endpoint on 127.0.0.1 with its reader and writer credentials: what `netrig up` runs in its
 * own process, and what `netrig store` runs alone, so processors in other processes or
 * containers of the same host (`--clickhouse-url`, user netrig_writer) write to it.
 */
import { resolve } from 'node:path';
import { ClickHouseEndpoint, WRITER_USER } from '../lib/clickhouse-endpoint.js';
import { openClickHouse, type ClickHouse } from '../lib/clickhouse.js';
import { intValue } from '../lib/config.js';
import { holdingDataDir } from '../lib/data-dir.js';
import { logger, type Logger } from '../lib/logger.js';
import type { Credentials } from '../lib/basic-auth.js';
import { secretOfFlag } from '../lib/secret-file.js';
import { identifier } from '../schemas/migrate.js';
import { endpointCredentials, writeEndpoint, writerPasswordFile } from './endpoint-file.js';

export interface StoreInput {
  /** Locked by the caller: the engine is one process's. */
  dataDir: string;
  database?: string;
  httpHost?: string;
  httpPort?: string | number;
  /** The reader's user and password (generated at first start when not given). */
  user?: string;
  password?: string;
  /** The writer's password (generated at first start when not given). */
  writerPassword?: string;
}

export interface ServedStore {
  ch: ClickHouse;
  endpoint: ClickHouseEndpoint;
  url: string;
  /** The endpoint's reader (the page of `netrig up` reads as it, and asks browsers for it). */
  reader: Credentials;
  close(): Promise<void>;
}

/** Open the engine under `o.dataDir` and serve it; resolves once the endpoint listens. */
export async function serveStore(o: StoreInput, log: Logger): Promise<ServedStore> {
  const ch = await openClickHouse({ dataDir: o.dataDir, database: identifier('database', o.database ?? 'netrig') });
  try {
    const host = o.httpHost ?? '127.0.0.1';
    const credentials = endpointCredentials(o.dataDir, o.user ?? 'default', o.password, o.writerPassword);
    const endpoint = new ClickHouseEndpoint({
      connection: ch.connection!, database: ch.database, ...credentials,
      host, port: intValue('http-port', o.httpPort ?? 8123, 0, 65535), log,
    });
    await endpoint.start();
    const url = `http://${host}:${endpoint.port}`;
    let removeEndpointFile: () => void;
    try {
      removeEndpointFile = writeEndpoint(o.dataDir, { url, user: o.user ?? 'default', database: ch.database, pid: process.pid });
    } catch (err) {
      await endpoint.stop();
      throw err;
    }
    log.info({ url, database: ch.database, writer: WRITER_USER, writerPasswordFile: writerPasswordFile(o.dataDir) }, 'ClickHouse endpoint serving the embedded engine');
    return {
      ch, endpoint, url, reader: credentials.reader,
      async close() {
        removeEndpointFile();
        await endpoint.stop();
        await ch.close();
      },
    };
  } catch (err) {
    await ch.close();
    throw err;
  }
}

/** `netrig store`: lock the data dir and serve its engine until stopped. */
export async function runStore(input: Omit<StoreInput, 'dataDir'> & { dataDir?: string; writerPasswordFile?: string }): Promise<{ stop(): Promise<void> }> {
  const dataDir = resolve(input.dataDir ?? './.netrig');
  const writerPassword = input.writerPasswordFile === undefined ? undefined : secretOfFlag('writer-password-file', input.writerPasswordFile);
  return holdingDataDir(dataDir, async () => {
    const store = await serveStore({ ...input, dataDir, writerPassword }, logger('store'));
    return { stop: () => store.close() };
  });
}
