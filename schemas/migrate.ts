/**
 * Applies the numbered ClickHouse migrations in schemas/migrations/ (NNN_name.sql) to a
 * database, in order, recording each in `schema_migrations`. Idempotent: applied versions
 * are skipped and every statement is itself IF NOT EXISTS. On a cluster (`cluster`) every
 * statement is turned into its cluster form (./cluster-ddl.ts).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ClickHouseClient } from '@clickhouse/client';
import { ConfigError } from '../lib/errors.js';
import { clusterName, clusterStatements } from './cluster-ddl.js';

/** schemas/migrations in the source tree (dist/schemas/ → ../../schemas/migrations). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../schemas/migrations/', import.meta.url));

export interface MigrationOptions {
  database: string;
  /** Rows older than this many days are dropped by TTL. */
  ttlDays: number;
  /**
   * A cluster of the server's remote_servers: ON CLUSTER DDL, replicated tables behind
   * Distributed ones (./cluster-ddl.ts). Absent: plain tables on the one server.
   */
  cluster?: string;
}

/** A database or table name safe to splice into DDL. */
export function identifier(key: string, v: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(v)) throw new ConfigError(key, `expected a ClickHouse identifier (letters, digits, '_'), got ${JSON.stringify(v)}`);
  return v;
}

/** The statements of one migration file, placeholders substituted. */
export function migrationStatements(sql: string, opts: MigrationOptions): string[] {
  const text = sql
    .split('\n')
    .filter((l) => !l.trim().startsWith('--'))
    .join('\n')
    .replaceAll('{db}', identifier('database', opts.database))
    .replaceAll('{ttl_days}', String(Math.max(1, Math.floor(opts.ttlDays))));
  const statements = text.split(/;\s*(?:\n|$)/).map((s) => s.trim()).filter(Boolean);
  if (opts.cluster === undefined) return statements;
  const cluster = clusterName('clickhouse-cluster', opts.cluster);
  return statements.flatMap((s) => clusterStatements(s, cluster));
}

/**
 * The statements that precede the migrations: the database and the table recording them.
 * On a cluster that table is replicated whole to every host.
 */
export function bootstrapStatements(database: string, cluster?: string): string[] {
  const db = identifier('database', database);
  const statements = [
    `CREATE DATABASE IF NOT EXISTS ${db}`,
    `CREATE TABLE IF NOT EXISTS ${db}.schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version`,
  ];
  return cluster === undefined ? statements : statements.flatMap((s) => clusterStatements(s, cluster, 'everyHost'));
}

/**
 * On a cluster: whether this host has the replicated schema_migrations already. ON CLUSTER
 * DDL waits for every host of the cluster, so the bootstrap runs only when it is missing:
 * a processor restarting while a host is down still starts. A database made without a
 * cluster (plain tables) is refused: its tables are not converted.
 */
async function bootstrapped(client: ClickHouseClient, db: string): Promise<boolean> {
  const rs = await client.query({
    query: "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
    query_params: { db }, format: 'JSONEachRow',
  });
  const rows = await rs.json<{ engine: string }>();
  if (!rows.length) return false;
  if (!rows[0].engine.startsWith('Replicated')) {
    throw new ConfigError('clickhouse-cluster', `database ${db} was made without --clickhouse-cluster (its tables are ${rows[0].engine}, not replicated) and is not converted: name another --database for the cluster`);
  }
  return true;
}

/** The migration files of `dir` (NNN_name.sql), in the order they apply. */
export function migrationFiles(dir = MIGRATIONS_DIR): string[] {
  return readdirSync(dir).filter((f) => /^\d+_.*\.sql$/.test(f)).sort();
}

/** Apply every migration not yet recorded; returns the versions applied now. */
export async function migrate(client: ClickHouseClient, opts: MigrationOptions, dir = MIGRATIONS_DIR): Promise<number[]> {
  const db = identifier('database', opts.database);
  const cluster = opts.cluster === undefined ? undefined : clusterName('clickhouse-cluster', opts.cluster);
  if (cluster === undefined || !(await bootstrapped(client, db))) {
    for (const query of bootstrapStatements(db, cluster)) await client.command({ query });
  }
  const done = new Set(
    (await (await client.query({ query: `SELECT version FROM ${db}.schema_migrations FINAL`, format: 'JSONEachRow' })).json<{ version: number }>())
      .map((r) => Number(r.version)),
  );
  const applied: number[] = [];
  for (const file of migrationFiles(dir)) {
    const version = Number(file.slice(0, file.indexOf('_')));
    if (done.has(version)) continue;
    for (const q of migrationStatements(readFileSync(`${dir}/${file}`, 'utf8'), opts)) await client.command({ query: q });
    // Always a token: the embedded engine applies settings session-wide, so an insert
    // without one could inherit another insert's token and be dropped as a duplicate.
    await client.insert({
      table: `${db}.schema_migrations`, values: [{ version, name: file }], format: 'JSONEachRow',
      clickhouse_settings: { insert_deduplication_token: `${db}.migration.${version}` },
    });
    applied.push(version);
  }
  return applied;
}
