/**
 * `netrig query` and `netrig report`: SQL against wherever the rows are. Through the
 * endpoint of a running `netrig up` when it holds the data dir (with the reader password
 * that up keeps in the data dir, unless one is given), else opening the embedded store
 * directly, or a ClickHouse server by URL. Given none of these, the `netrig up` running on
 * this host (lib/running-ups.ts).
 */
import { resolve } from 'node:path';
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import { ClickHouseAuthError, hasEmbeddedStore, openClickHouse } from '../lib/clickhouse.js';
import { ConfigError, StoreNotFoundError } from '../lib/errors.js';
import { theRunningUp } from '../lib/running-ups.js';
import { identifier } from '../schemas/migrate.js';
import { readEndpoint } from './endpoint-file.js';

export interface QueryTargetInput {
  dataDir?: string;
  clickhouseUrl?: string;
  clickhouseUser?: string;
  clickhousePassword?: string;
  database?: string;
}

export interface QueryTarget {
  client: ClickHouseClient;
  database: string;
  close(): Promise<void>;
}

/** The data dir the reading commands look in when given no target and no `netrig up` runs. */
const DEFAULT_DATA_DIR = './.netrig';

/** Where the rows are when the command names no place: the one running `netrig up`'s, else ./.netrig. */
function foundTarget(): { dataDir: string; clickhouseUrl?: string; database?: string; up: boolean } {
  const up = theRunningUp();
  if (up) return { dataDir: up.dataDir, clickhouseUrl: up.clickhouseUrl, database: up.database, up: true };
  return { dataDir: resolve(DEFAULT_DATA_DIR), up: false };
}

/**
 * Open the right client for a query: the server of --clickhouse-url; else the data dir's
 * (--data-dir, or the running `netrig up`'s, or ./.netrig): through its `netrig up`'s endpoint
 * while one holds it, else its embedded store. Nothing is created: a data dir without a store
 * or a missing database is an error.
 */
export async function openQueryTarget(input: QueryTargetInput): Promise<QueryTarget> {
  const found = input.clickhouseUrl !== undefined || input.dataDir !== undefined ? null : foundTarget();
  const database = identifier('database', input.database ?? found?.database ?? 'netrig');
  const url = input.clickhouseUrl ?? found?.clickhouseUrl;
  if (url !== undefined) {
    const ch = await openClickHouse({ url, user: input.clickhouseUser, password: input.clickhousePassword, database }, { create: false });
    return { client: ch.client, database, close: () => ch.close() };
  }
  const dataDir = resolve(found?.dataDir ?? input.dataDir!);
  const ep = readEndpoint(dataDir);
  if (ep) {
    const user = input.clickhouseUser ?? ep.user;
    const client = createClient({
      url: ep.url, username: user, password: input.clickhousePassword ?? ep.password, database,
      clickhouse_settings: { output_format_json_quote_64bit_integers: 1 },
      log: { level: ClickHouseLogLevel.OFF },
    });
    try {
      await client.query({ query: 'SELECT 1', format: 'JSONEachRow' }).then((r) => r.json());
    } catch (err) {
      await client.close();
      if ((err as { code?: string }).code === '516') throw new ClickHouseAuthError(ep.url, user, { cause: err });
      throw err;
    }
    return { client, database, close: () => client.close() };
  }
  if (!hasEmbeddedStore(dataDir)) {
    throw new StoreNotFoundError(dataDir, found && !found.up ? `no \`netrig up\` runs on this host and ${DEFAULT_DATA_DIR} holds no store` : `${dataDir} holds no store and no \`netrig up\` holds it`);
  }
  const ch = await openClickHouse({ dataDir, database }, { create: false });
  return { client: ch.client, database, close: () => ch.close() };
}

interface JsonCompact {
  meta: { name: string; type: string }[];
  data: unknown[][];
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Rows as an aligned text table, numbers right-aligned. */
export function formatTable(r: JsonCompact): string {
  const cols = r.meta.map((m) => m.name);
  const cells = r.data.map((row) => row.map(cell));
  const numeric = r.meta.map((m) => /^(U?Int|Float|Decimal)/.test(m.type.replace(/^(Nullable|LowCardinality)\(/, '')));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i].length)));
  const fmt = (vals: string[]) => vals.map((v, i) => (numeric[i] ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join('  ').trimEnd();
  return [fmt(cols), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(fmt), `(${r.data.length} row${r.data.length === 1 ? '' : 's'})`].join('\n') + '\n';
}

/** Run `sql` (with its query parameters, `{name:Type}` in the SQL) and write the result in `format` to `out`. */
export async function runQuery(t: QueryTarget, sql: string, format: string, out: NodeJS.WritableStream, params?: Record<string, string>): Promise<void> {
  if (format !== 'table' && format !== 'json') throw new ConfigError('format', `expected table or json, got ${JSON.stringify(format)}`);
  const text = sql.trim().replace(/;\s*$/, '');
  const isSelect = /^(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b/i.test(text);
  if (!isSelect) {
    await t.client.command({ query: text, query_params: params });
    return;
  }
  if (format === 'json') {
    const rs = await t.client.query({ query: text, query_params: params, format: 'JSONEachRow' });
    for (const row of await rs.json<Record<string, unknown>>()) out.write(`${JSON.stringify(row)}\n`);
    return;
  }
  const rs = await t.client.query({ query: text, query_params: params, format: 'JSONCompact' });
  out.write(formatTable(await rs.json<JsonCompact>() as unknown as JsonCompact));
}
