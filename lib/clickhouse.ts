/**
 * ClickHouse access for every netrig command, always through `@clickhouse/client`: the
 * embedded chdb engine under a data directory (one process may hold it: ./data-dir.ts), or
 * any ClickHouse server by URL. Errors a user can meet say what to do.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import type { Connection } from '@clickhouse/client-common';
import type { ChdbConnection } from 'chdb/connection';
import { loadChdbConnection } from './chdb.js';
import { lockDataDir } from './data-dir.js';
import { ConfigError, NetrigError, PrerequisiteError } from './errors.js';

/**
 * Where the rows live: a server by URL (`cluster`: a cluster of its remote_servers the tables
 * are spread over, schemas/cluster-ddl.ts), or the embedded engine under a directory.
 */
export type ClickHouseTarget =
  | { url: string; user?: string; password?: string; database: string; cluster?: string }
  | { dataDir: string; database: string };

/** The server answered but refused the credentials. */
export class ClickHouseAuthError extends NetrigError {
  constructor(url: string, user: string, options?: ErrorOptions) {
    super('ERR_CLICKHOUSE_AUTH', `ClickHouse at ${url} refused user '${user}': check --clickhouse-user and --clickhouse-password`, options);
  }
}

/** Rows already serialized in `format`, inserted as one block with per-insert settings. */
export interface RowsInsert {
  /** Qualified `database.table`. */
  table: string;
  columns: readonly string[];
  /** The rows, one per line. */
  body: Buffer;
  format: 'JSONCompactEachRow';
  settings: Record<string, string | number>;
  signal?: AbortSignal;
}

/** A connected client and how to release it. */
export interface ClickHouse {
  client: ClickHouseClient;
  /**
   * Insert serialized rows. Settings travel with the insert itself: in the URL of a server's
   * HTTP request, in the embedded engine's INSERT … SETTINGS clause (its client connection
   * would send each setting as a SET statement in front of the rows, which the engine then
   * splits from them at 2–3 µs per row and setting).
   */
  insert(i: RowsInsert): Promise<void>;
  database: string;
  /**
   * The cluster the tables are spread over (a server target given one): migrations emit
   * cluster DDL, inserts go through the Distributed tables synchronously, resuming reads
   * every replica (schemas/cluster-ddl.ts).
   */
  cluster?: string;
  /** Human description for logs: the URL or the data dir. */
  where: string;
  /** The embedded engine's connection (embedded targets only), for the HTTP endpoint. */
  connection?: Connection<Readable>;
  close(): Promise<void>;
}

/**
 * Error codes of an insert the engine refused for its data or the table's schema, which a
 * retry cannot fix: CANNOT_PARSE_TEXT (6), NO_SUCH_COLUMN_IN_TABLE (16),
 * CANNOT_PARSE_QUOTED_STRING (26), CANNOT_PARSE_INPUT_ASSERTION_FAILED (27),
 * CANNOT_PARSE_DATE (38), CANNOT_PARSE_DATETIME (41), TYPE_MISMATCH (53), UNKNOWN_TABLE (60),
 * ARGUMENT_OUT_OF_BOUND (69), CANNOT_CONVERT_TYPE (70), CANNOT_PARSE_NUMBER (72),
 * INCORRECT_DATA (117), CANNOT_READ_ARRAY_FROM_TEXT (130), TOO_LARGE_STRING_SIZE (131),
 * VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE (321), CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN (349),
 * INCORRECT_NUMBER_OF_COLUMNS (7), THERE_IS_NO_COLUMN (8), CANNOT_PARSE_ESCAPE_SEQUENCE (25),
 * CANNOT_PARSE_UUID (376), CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING (441), CANNOT_PARSE_BOOL
 * (467), CANNOT_PARSE_IPV4 (675), CANNOT_PARSE_IPV6 (676), UNKNOWN_ELEMENT_OF_ENUM (691); and
 * TOO_MANY_BYTES (307), a block larger than the server takes in one request (netrig up's
 * endpoint caps insert bodies): split, its halves go in.
 */
const REFUSED_INSERT_CODES = new Set([
  '6', '7', '8', '16', '25', '26', '27', '38', '41', '53', '60', '69', '70', '72', '117', '130', '131', '307', '321', '349',
  '376', '441', '467', '675', '676', '691',
]);

/**
 * The ClickHouse error code of `err`, or null for any other error. By shape, not class: the
 * embedded engine raises clickhouse-js's ClickHouseError from its own CommonJS copy of the
 * module, a different class from the one this ESM code imports.
 */
export function clickHouseCode(err: unknown): string | null {
  if (!(err instanceof Error)) return null;
  const e = err as { code?: unknown; type?: unknown; clickhouseCode?: unknown };
  if (typeof e.code === 'string' && /^\d+$/.test(e.code) && typeof e.type === 'string') return e.code;
  // chdb's own errors (its raw inserts): the engine's code as a number.
  return typeof e.clickhouseCode === 'number' && Number.isInteger(e.clickhouseCode) ? String(e.clickhouseCode) : null;
}

/** The engine refused an insert for its rows or the table (a retry gets the same answer). */
export function isRefusedInsert(err: unknown): boolean {
  const code = clickHouseCode(err);
  return code !== null && REFUSED_INSERT_CODES.has(code);
}

/** Settings every netrig client uses: 64-bit integers as strings in JSON, never rounded. */
const SETTINGS = { output_format_json_quote_64bit_integers: 1 } as const;

async function checkServer(client: ClickHouseClient, url: string, user: string): Promise<void> {
  let res;
  try {
    res = await client.ping();
  } catch (err) {
    throw new PrerequisiteError(`cannot reach ClickHouse at ${url} (${(err as Error).message}): start the server or pass the right --clickhouse-url`, { cause: err });
  }
  if (res.success) {
    // ping does not authenticate; a trivial query does.
    try {
      await client.query({ query: 'SELECT 1', format: 'JSONEachRow' }).then((r) => r.json());
      return;
    } catch (err) {
      const e = err as { code?: string; type?: string; message?: string };
      if (e.code === '516' || e.type === 'AUTHENTICATION_FAILED' || /authentication failed|wrong password|REQUIRED_PASSWORD/i.test(e.message ?? '')) {
        throw new ClickHouseAuthError(url, user, { cause: err });
      }
      throw err;
    }
  }
  const cause = (res as { error?: Error }).error;
  throw new PrerequisiteError(`cannot reach ClickHouse at ${url} (${cause?.message ?? 'no answer'}): start the server or pass the right --clickhouse-url`, { cause });
}

/** Where the embedded engine keeps its store under a data dir. */
export function embeddedStorePath(dataDir: string): string {
  return join(resolve(dataDir), 'clickhouse');
}

/** Whether a data dir holds an embedded store (without creating one). */
export function hasEmbeddedStore(dataDir: string): boolean {
  return existsSync(embeddedStorePath(dataDir));
}

/** With `create: false` (commands that only read), a missing database is an error, never made. */
async function useDatabase(client: ClickHouseClient, database: string, where: string, create: boolean): Promise<void> {
  if (create) {
    await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
    return;
  }
  const rs = await client.query({ query: `EXISTS DATABASE ${database}`, format: 'JSONCompact' });
  const { data } = await rs.json<[number | string]>();
  if (Number(data[0]?.[0]) !== 1) throw new ConfigError('database', `no database ${database} at ${where}: name the one the processors write (--database)`);
}

/** Connect to the target and make sure the database exists (creating it unless `create` is false). */
export async function openClickHouse(target: ClickHouseTarget, { create = true } = {}): Promise<ClickHouse> {
  if ('url' in target) {
    const user = target.user ?? 'default';
    const client = createClient({
      url: target.url,
      username: user,
      password: target.password ?? '',
      clickhouse_settings: SETTINGS,
      request_timeout: 60_000,
      // Failures reach the caller as errors with a clear message; the client's own log would print stacks.
      log: { level: ClickHouseLogLevel.OFF },
    });
    try {
      await checkServer(client, target.url, user);
      await useDatabase(client, target.database, target.url, create);
    } catch (err) {
      await client.close();
      throw err;
    }
    return {
      client,
      database: target.database,
      cluster: target.cluster,
      where: target.url,
      async insert(i) {
        // The rows as the request body, as they are (the client's insert() wants objects to
        // serialise itself for JSON formats); the settings go in the URL.
        const r = await client.exec({
          query: `INSERT INTO ${i.table} (${i.columns.join(', ')}) FORMAT ${i.format}`,
          values: Readable.from([i.body], { objectMode: false }),
          clickhouse_settings: i.settings,
          abort_signal: i.signal,
        });
        r.stream.resume();
      },
      close: () => client.close(),
    };
  }
  const dir = resolve(target.dataDir);
  const { createChdbConnection } = await loadChdbConnection();
  const unlock = lockDataDir(dir);
  let client: ClickHouseClient;
  const chdb: ChdbConnection = createChdbConnection({ path: embeddedStorePath(dir) });
  const connection = chdb as unknown as Connection<Readable>;
  try {
    client = createClient({ connection, clickhouse_settings: SETTINGS } as Parameters<typeof createClient>[0]);
    await useDatabase(client, target.database, dir, create);
    // Unqualified table names resolve in netrig's database (the engine's session is ours alone).
    await client.command({ query: `USE ${target.database}` });
  } catch (err) {
    unlock();
    throw err;
  }
  return {
    client,
    database: target.database,
    where: dir,
    connection,
    async insert(i) {
      // The engine takes the rows as data, zero-copy, and parses them off the event loop.
      await chdb.chdb.rawInsert({ table: i.table, columns: i.columns, values: i.body, format: i.format, settings: i.settings, signal: i.signal });
    },
    async close() {
      await client.close();
      unlock();
    },
  };
}
