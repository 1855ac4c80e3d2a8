/**
 * netrig's DDL for a ClickHouse cluster (--clickhouse-cluster NAME): each statement of the
 * migrations (schemas/migrations/) and of their bootstrap (schema_migrations), turned into
 * its cluster form by its recognised shape. A shape not recognised is refused
 * (ClusterDdlError), so a future migration cannot run on one server of a cluster only.
 *
 * - `CREATE DATABASE IF NOT EXISTS db` → the same ON CLUSTER.
 * - `CREATE TABLE IF NOT EXISTS db.t (…) ENGINE = [Replacing]MergeTree …` → a replicated
 *   table `db.t_local` on every host (ReplicatedMergeTree under the {shard} and {replica}
 *   macros, the same partitioning, order and TTL, `replicated_deduplication_window` for
 *   `non_replicated_deduplication_window`) and `db.t`, a Distributed table over them, sharded
 *   by `_shard`: the name processors read and write keeps its meaning.
 * - `ALTER TABLE db.t ADD COLUMN IF NOT EXISTS …` → the same on `db.t_local`, then on `db.t`
 *   (an insert naming the column finds it on the shards once the Distributed table has it).
 * - `CREATE VIEW IF NOT EXISTS db.v AS …` → the same ON CLUSTER: a view on every host, reading
 *   the Distributed tables by their usual names.
 * - schema_migrations is replicated to every host of the cluster instead (one replication
 *   group, no Distributed table): any host a processor connects to knows what is applied.
 *
 * Why `_shard` (the processing shard, whose lane wrote the row) is the sharding key: the sink
 * (processors/runtime/sink.ts) inserts one block per table and day partition and counts it
 * committed for each lane up to the block's highest `_seq` (processors/runtime/committed.ts),
 * which holds only if each lane's rows of a block land whole or not at all. A Distributed
 * insert splits the block by sharding key and writes each part to its shard on its own, so a
 * key spreading one lane's rows over several shards (a hash of the connection, say) could
 * leave part of them written when a processor dies: its successor would read the lane's
 * max(_seq) and never write the rest. With `_shard` each lane's rows go to one shard, as one
 * atomic part. It is deterministic too, as deduplication needs: a retried block splits into
 * the same parts. Rows spread by lane: --shards a multiple of the cluster's shards (by weight)
 * spreads them evenly.
 *
 * How deduplication works through the Distributed table (ClickHouse docs and source):
 * - The insert is synchronous only with `distributed_foreground_insert = 1` (alias
 *   `insert_distributed_sync`): the INSERT succeeds only after all the data is saved on all
 *   shards, on one replica of each when `internal_replication` is true
 *   (https://clickhouse.com/docs/operations/settings/settings#distributed_foreground_insert).
 *   In the default background mode the insert returns once the data is queued on the
 *   receiving host, and a failed send would never reach the sink to be retried.
 * - The query's settings travel with each shard's part: to a remote replica in the INSERT it
 *   sends, to a local one in a copy of the query's context ("Forward user settings",
 *   src/Storages/Distributed/DistributedSink.cpp), so `prefer_localhost_replica` changes
 *   nothing here. Each shard's part therefore carries the block's `insert_deduplication_token`.
 * - With a token, a replicated table deduplicates on the token, not on the data
 *   (https://clickhouse.com/docs/guides/developer/deduplicating-inserts-on-retries), per
 *   partition, in the deduplication log of the shard's own ZooKeeper path (the {shard} macro):
 *   a retry's part goes to the shard that has it and is dropped there, or lands where the first
 *   attempt failed. (A token ignores the data, hence a key that splits a retry the same way.)
 * - `insert_distributed_one_random_shard` applies only to Distributed tables without a
 *   sharding key; these have one.
 */
import { ClusterDdlError, ConfigError } from '../lib/errors.js';

/** Suffix of the replicated table behind each Distributed one. */
export const LOCAL_SUFFIX = '_local';
/** The Distributed tables' sharding key: the processing shard (see the module comment). */
export const SHARDING_KEY = '_shard';
/** Replication of a sharded table: one replication group per shard, a replica per host. */
export const SHARD_REPLICATION = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'";
/**
 * Replication of a table every host holds whole (schema_migrations): one group across the
 * cluster, so its replica names must differ across shards, not only within one.
 */
export const CLUSTER_REPLICATION = "'/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}'";

/** Where a table lives: split across shards behind a Distributed table, or whole on every host. */
export type Placement = 'sharded' | 'everyHost';

/**
 * A cluster name safe to splice into DDL (always as a string literal). Names in
 * remote_servers often carry '-' or '.', which identifier() refuses.
 */
export function clusterName(key: string, v: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,126}$/.test(v)) {
    throw new ConfigError(key, `expected a cluster name of remote_servers (letters, digits, '_', '-', '.'), got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * The cluster of a command's flags, validated; undefined without --clickhouse-cluster. The
 * embedded engine (no --clickhouse-url) is one server: a cluster there is refused.
 */
export function clickhouseCluster(input: { clickhouseUrl?: string; clickhouseCluster?: string }): string | undefined {
  if (input.clickhouseCluster === undefined) return undefined;
  if (!input.clickhouseUrl) {
    throw new ConfigError('clickhouse-cluster', 'needs --clickhouse-url: the embedded engine is a single server, with no cluster; give a server of the cluster');
  }
  return clusterName('clickhouse-cluster', input.clickhouseCluster);
}

/**
 * A table of the cluster read on every replica of every shard (`clusterAllReplicas`): what a
 * processor resumes from. A row counts as soon as one replica has it, before its peers fetch
 * it (a Distributed read asks one replica per shard, which may not have it yet). A replica
 * that does not answer fails the read (skip_unavailable_shards stays 0): the shard's lane
 * does not open until it answers, rather than opening on a partial view and writing twice.
 */
export function allReplicas(database: string, table: string, cluster: string): string {
  return `clusterAllReplicas('${cluster}', ${database}.${table}${LOCAL_SUFFIX})`;
}

const NAME = '[A-Za-z_][A-Za-z0-9_]*';
const CREATE_DATABASE = new RegExp(`^CREATE DATABASE IF NOT EXISTS (${NAME})$`);
/** db, table, space before the column list, columns, space after, engine, its arguments, the rest (PARTITION BY, ORDER BY, TTL, SETTINGS). */
const CREATE_TABLE = new RegExp(`^CREATE TABLE IF NOT EXISTS (${NAME})\\.(${NAME})(\\s*)\\(([\\s\\S]+)\\)(\\s*)ENGINE = (MergeTree|ReplacingMergeTree)(?:\\(([^()]*)\\))?((?:\\s[\\s\\S]*)?)$`);
const CREATE_VIEW = new RegExp(`^CREATE VIEW IF NOT EXISTS (${NAME})\\.(${NAME}) AS(\\s[\\s\\S]+)$`);
const ALTER_TABLE = new RegExp(`^ALTER TABLE (${NAME})\\.(${NAME}) ([\\s\\S]+)$`);
const ADD_COLUMN = /^ADD COLUMN IF NOT EXISTS \S/;

/**
 * Split at the commas outside parentheses and string literals: the commands of an ALTER
 * (a type such as Enum8('a' = 1, 'b' = 2) has commas of its own).
 */
function topLevelParts(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === "'") quoted = false;
    } else if (c === "'") quoted = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(text.slice(start).trim());
  return parts;
}

/**
 * The cluster form of one statement (migrationStatements' output, placeholders substituted):
 * one or more statements, every one ON CLUSTER. `placement` applies to a CREATE TABLE.
 * Throws ClusterDdlError for a shape it does not know.
 */
export function clusterStatements(statement: string, cluster: string, placement: Placement = 'sharded'): string[] {
  const c = `'${clusterName('clickhouse-cluster', cluster)}'`;
  const s = statement.trim();

  const db = CREATE_DATABASE.exec(s);
  if (db) return [`CREATE DATABASE IF NOT EXISTS ${db[1]} ON CLUSTER ${c}`];

  const t = CREATE_TABLE.exec(s);
  if (t) {
    const [, database, table, before, columns, after, engine, args, rest] = t;
    const replication = placement === 'sharded' ? SHARD_REPLICATION : CLUSTER_REPLICATION;
    const replicated = `ENGINE = Replicated${engine}(${replication}${args?.trim() ? `, ${args.trim()}` : ''})`;
    const settings = rest.replace(/\bnon_replicated_deduplication_window\b/g, 'replicated_deduplication_window');
    if (placement === 'everyHost') {
      return [`CREATE TABLE IF NOT EXISTS ${database}.${table} ON CLUSTER ${c}${before}(${columns})${after}${replicated}${settings}`];
    }
    if (!new RegExp(`(?:^|[(,])\\s*${SHARDING_KEY}\\s`).test(columns)) {
      throw new ClusterDdlError(s, `no ${SHARDING_KEY} column to shard the Distributed table by`);
    }
    const local = `${table}${LOCAL_SUFFIX}`;
    return [
      `CREATE TABLE IF NOT EXISTS ${database}.${local} ON CLUSTER ${c}${before}(${columns})${after}${replicated}${settings}`,
      `CREATE TABLE IF NOT EXISTS ${database}.${table} ON CLUSTER ${c} AS ${database}.${local} ENGINE = Distributed(${c}, ${database}, ${local}, ${SHARDING_KEY})`,
    ];
  }
  if (/^CREATE TABLE /.test(s)) throw new ClusterDdlError(s, 'a CREATE TABLE other than IF NOT EXISTS db.table (columns) ENGINE = MergeTree or ReplacingMergeTree');

  const v = CREATE_VIEW.exec(s);
  if (v) return [`CREATE VIEW IF NOT EXISTS ${v[1]}.${v[2]} ON CLUSTER ${c} AS${v[3]}`];

  const a = ALTER_TABLE.exec(s);
  if (a) {
    const [, database, table, commands] = a;
    const unknown = topLevelParts(commands).find((cmd) => !ADD_COLUMN.test(cmd));
    if (unknown !== undefined) throw new ClusterDdlError(s, `the ALTER command "${unknown.slice(0, 40)}" (only ADD COLUMN IF NOT EXISTS is known)`);
    if (placement !== 'sharded') throw new ClusterDdlError(s, 'an ALTER of a table on every host');
    return [
      `ALTER TABLE ${database}.${table}${LOCAL_SUFFIX} ON CLUSTER ${c} ${commands}`,
      `ALTER TABLE ${database}.${table} ON CLUSTER ${c} ${commands}`,
    ];
  }
  throw new ClusterDdlError(s, 'an unknown statement');
}
