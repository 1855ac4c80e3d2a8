/**
 * --clickhouse-cluster: the cluster DDL netrig's migrations turn into (schemas/cluster-ddl.ts),
 * migrate() on a cluster against a recording client, the insert settings and resume reads of
 * a clustered processor, and the CLI refusing a cluster without a server. No ClickHouse server
 * can run here, so the DDL is checked as text.
 */
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ClickHouseClient } from '@clickhouse/client';
import type { ClickHouse, RowsInsert } from '../../lib/clickhouse.js';
import { ClusterDdlError, ConfigError } from '../../lib/errors.js';
import { clickhouseTarget } from '../../processors/index.js';
import { readCommitted, resumeSource } from '../../processors/runtime/committed.js';
import { insertBlock, insertSettings } from '../../processors/runtime/sink.js';
import { allReplicas, clickhouseCluster, clusterName, clusterStatements } from '../../schemas/cluster-ddl.js';
import { bootstrapStatements, migrate, migrationFiles, migrationStatements, MIGRATIONS_DIR } from '../../schemas/migrate.js';
import { runCli } from '../helpers/cli.js';

const opts = { database: 'netrig', ttlDays: 30 };
const file = (f: string) => readFileSync(`${MIGRATIONS_DIR}/${f}`, 'utf8');

test('every statement of every migration converts, each one ON CLUSTER; each table becomes a replicated one and a Distributed one over it, each view one on every host', () => {
  const files = migrationFiles();
  assert.ok(files.length >= 4);
  for (const f of files) {
    const plain = migrationStatements(file(f), opts);
    const clustered = migrationStatements(file(f), { ...opts, cluster: 'c' });
    assert.ok(plain.length > 0, f);
    const isView = (s: string) => s.startsWith('CREATE VIEW ');
    assert.equal(clustered.length, plain.reduce((n, s) => n + (isView(s) ? 1 : 2), 0), `${f}: two statements for each table statement, one for each view`);
    for (const s of clustered) {
      assert.match(s, /^(CREATE TABLE IF NOT EXISTS|ALTER TABLE|CREATE VIEW IF NOT EXISTS) netrig\.[a-z_]+ ON CLUSTER 'c'\s/, s.slice(0, 80));
      assert.doesNotMatch(s, /non_replicated_deduplication_window|ENGINE = MergeTree/);
    }
    let at = 0;
    for (const s of plain) {
      if (isView(s)) {
        assert.equal(clustered[at++], s.replace(/^(CREATE VIEW IF NOT EXISTS netrig\.[a-z_]+) AS/, "$1 ON CLUSTER 'c' AS"), `${f}: the view as it is, ON CLUSTER`);
        continue;
      }
      const [local, distributed] = clustered.slice(at, at + 2);
      at += 2;
      const create = /^CREATE TABLE IF NOT EXISTS netrig\.([a-z_]+)/.exec(s);
      if (create) {
        const t = create[1];
        assert.match(local, new RegExp(`^CREATE TABLE IF NOT EXISTS netrig\\.${t}_local ON CLUSTER 'c'\\n\\(`));
        assert.match(local, /\nENGINE = ReplicatedMergeTree\('\/clickhouse\/tables\/\{shard\}\/\{database\}\/\{table\}', '\{replica\}'\)\nPARTITION BY /);
        assert.match(local, /\nSETTINGS replicated_deduplication_window = 10000$/);
        // Everything but the head and the engine as the plain table has it.
        assert.equal(local.replace(/_local ON CLUSTER 'c'/, '').replace(/ENGINE = ReplicatedMergeTree\([^)]*\)/, 'ENGINE = MergeTree').replace('SETTINGS replicated_', 'SETTINGS non_replicated_'), s);
        assert.equal(distributed, `CREATE TABLE IF NOT EXISTS netrig.${t} ON CLUSTER 'c' AS netrig.${t}_local ENGINE = Distributed('c', netrig, ${t}_local, _shard)`);
      } else {
        assert.match(s, /^ALTER TABLE netrig\.[a-z_]+ ADD COLUMN IF NOT EXISTS /);
      }
    }
  }
});

test('capture_losses on a cluster: the exact DDL of its replicated and Distributed tables', () => {
  const statements = migrationStatements(file('001_initial.sql'), { ...opts, cluster: 'netrig-prod' });
  const i = statements.findIndex((s) => s.startsWith('CREATE TABLE IF NOT EXISTS netrig.capture_losses_local '));
  assert.deepEqual(statements.slice(i, i + 2), [
    `CREATE TABLE IF NOT EXISTS netrig.capture_losses_local ON CLUSTER 'netrig-prod'
(
    ts       DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    region   LowCardinality(String),
    node     LowCardinality(String),
    run_id   String,
    kind     LowCardinality(String),
    cause    LowCardinality(String),
    records  UInt64,
    _stream  LowCardinality(String),
    _fn      LowCardinality(String),
    _shard   UInt16,
    _seq     UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY toDate(ts)
ORDER BY (node, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY
SETTINGS replicated_deduplication_window = 10000`,
    "CREATE TABLE IF NOT EXISTS netrig.capture_losses ON CLUSTER 'netrig-prod' AS netrig.capture_losses_local ENGINE = Distributed('netrig-prod', netrig, capture_losses_local, _shard)",
  ]);
});

test('an ALTER applies to the replicated table, then to the Distributed one', () => {
  assert.deepEqual(migrationStatements(file('003_stream_discarded.sql'), { ...opts, cluster: 'c' }), [
    "ALTER TABLE netrig.capture_losses_local ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS envelopes UInt64 DEFAULT 0 AFTER records",
    "ALTER TABLE netrig.capture_losses ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS envelopes UInt64 DEFAULT 0 AFTER records",
  ]);
  // Commas inside a type or a string are not commands of their own.
  const alter = "ALTER TABLE netrig.t ADD COLUMN IF NOT EXISTS e Enum8('a, (b' = 1, 'it''s' = 2) COMMENT 'x, y', ADD COLUMN IF NOT EXISTS d Decimal(9, 2)";
  assert.deepEqual(clusterStatements(alter, 'c'), [
    "ALTER TABLE netrig.t_local ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS e Enum8('a, (b' = 1, 'it''s' = 2) COMMENT 'x, y', ADD COLUMN IF NOT EXISTS d Decimal(9, 2)",
    "ALTER TABLE netrig.t ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS e Enum8('a, (b' = 1, 'it''s' = 2) COMMENT 'x, y', ADD COLUMN IF NOT EXISTS d Decimal(9, 2)",
  ]);
});

test('the bootstrap on a cluster: the database ON CLUSTER, schema_migrations replicated whole to every host; without a cluster as before', () => {
  assert.deepEqual(bootstrapStatements('netrig', 'c'), [
    "CREATE DATABASE IF NOT EXISTS netrig ON CLUSTER 'c'",
    "CREATE TABLE IF NOT EXISTS netrig.schema_migrations ON CLUSTER 'c' (version UInt32, name String, applied_at DateTime DEFAULT now()) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}') ORDER BY version",
  ]);
  assert.deepEqual(bootstrapStatements('netrig'), [
    'CREATE DATABASE IF NOT EXISTS netrig',
    'CREATE TABLE IF NOT EXISTS netrig.schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version',
  ]);
  // An engine's own arguments follow the replication ones.
  assert.deepEqual(clusterStatements('CREATE TABLE IF NOT EXISTS d.v (k UInt8, ver UInt32, _shard UInt16) ENGINE = ReplacingMergeTree(ver) ORDER BY k', 'c')[0],
    "CREATE TABLE IF NOT EXISTS d.v_local ON CLUSTER 'c' (k UInt8, ver UInt32, _shard UInt16) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', ver) ORDER BY k");
});

test('without a cluster the migrations are the plain statements, no cluster DDL in them', () => {
  for (const f of migrationFiles()) {
    for (const s of migrationStatements(file(f), opts)) {
      assert.doesNotMatch(s, /ON CLUSTER|Replicated|Distributed|_local\b/);
    }
  }
  assert.match(migrationStatements(file('001_initial.sql'), opts)[0], /\nENGINE = MergeTree\n[\s\S]*\nSETTINGS non_replicated_deduplication_window = 10000$/);
});

test('statement shapes the converter does not know are refused, naming the statement', () => {
  const refused = [
    'DROP TABLE netrig.http_requests',
    'CREATE TABLE netrig.t (a UInt8, _shard UInt16) ENGINE = MergeTree ORDER BY a',
    'CREATE TABLE IF NOT EXISTS netrig.t (a UInt8, _shard UInt16) ENGINE = Memory',
    'CREATE TABLE IF NOT EXISTS netrig.t (a UInt8, _shard UInt16) ENGINE = SummingMergeTree ORDER BY a',
    "CREATE TABLE IF NOT EXISTS netrig.t ON CLUSTER 'x' (a UInt8, _shard UInt16) ENGINE = MergeTree ORDER BY a",
    'CREATE TABLE IF NOT EXISTS t (a UInt8, _shard UInt16) ENGINE = MergeTree ORDER BY a',
    'CREATE TABLE IF NOT EXISTS netrig.t (a UInt8, b UInt16) ENGINE = MergeTree ORDER BY a',
    'CREATE TABLE IF NOT EXISTS netrig.t AS netrig.u',
    'CREATE MATERIALIZED VIEW IF NOT EXISTS netrig.mv TO netrig.t AS SELECT 1',
    'ALTER TABLE netrig.t MODIFY TTL toDateTime(ts) + INTERVAL 7 DAY',
    'ALTER TABLE netrig.t ADD INDEX i a TYPE minmax',
    'ALTER TABLE netrig.t ADD COLUMN x UInt8',
    'ALTER TABLE netrig.t ADD COLUMN IF NOT EXISTS x UInt8, DROP COLUMN y',
    "ALTER TABLE netrig.t ON CLUSTER 'x' ADD COLUMN IF NOT EXISTS x UInt8",
    'ALTER TABLE netrig.t DELETE WHERE 1',
    'INSERT INTO netrig.t VALUES (1)',
    'OPTIMIZE TABLE netrig.t FINAL',
    'RENAME TABLE netrig.t TO netrig.u',
  ];
  for (const s of refused) {
    assert.throws(() => clusterStatements(s, 'c'), (err: Error) => err instanceof ClusterDdlError && err.code === 'ERR_CLUSTER_DDL' && err.statement === s
      && err.message.includes(s.slice(0, 30)), s);
  }
  // A migration file with such a statement fails as a whole, before anything runs.
  assert.throws(() => migrationStatements('CREATE DATABASE IF NOT EXISTS {db};\nTRUNCATE TABLE {db}.t;\n', { ...opts, cluster: 'c' }), ClusterDdlError);
  // An ALTER of schema_migrations (on every host, no Distributed table) is not known either.
  assert.throws(() => clusterStatements('ALTER TABLE netrig.schema_migrations ADD COLUMN IF NOT EXISTS x UInt8', 'c', 'everyHost'), ClusterDdlError);
});

test('cluster names: those of remote_servers pass; anything that could break out of the DDL is refused', () => {
  for (const ok of ['c', 'netrig_prod', 'netrig-prod', 'eu.cluster-1']) assert.equal(clusterName('clickhouse-cluster', ok), ok);
  for (const bad of ['', "c'; DROP DATABASE netrig; --", 'c d', '`c`', 'c)', '1c', 'c\n', 'c\\', "c'", 'x'.repeat(200)]) {
    const isConfig = (err: Error) => err instanceof ConfigError && err.key === 'clickhouse-cluster';
    assert.throws(() => clusterName('clickhouse-cluster', bad), isConfig, JSON.stringify(bad));
    assert.throws(() => migrationStatements(file('001_initial.sql'), { ...opts, cluster: bad }), isConfig, JSON.stringify(bad));
    assert.throws(() => bootstrapStatements('netrig', bad), isConfig, JSON.stringify(bad));
    assert.throws(() => clickhouseCluster({ clickhouseUrl: 'http://ch:8123', clickhouseCluster: bad }), isConfig, JSON.stringify(bad));
  }
});

test('a cluster needs a server: refused for the embedded engine; the target carries it only when given', () => {
  assert.throws(() => clickhouseCluster({ clickhouseCluster: 'c' }), (err: Error) => err instanceof ConfigError && err.key === 'clickhouse-cluster' && /--clickhouse-url/.test(err.message));
  assert.equal(clickhouseCluster({ clickhouseUrl: 'http://ch:8123' }), undefined);
  assert.throws(() => clickhouseTarget({ clickhouseCluster: 'c' }), ConfigError);
  assert.deepEqual(clickhouseTarget({ clickhouseUrl: 'http://ch:8123', clickhouseCluster: 'c' }), { url: 'http://ch:8123', user: undefined, password: undefined, database: 'netrig', cluster: 'c' });
  assert.deepEqual(clickhouseTarget({ clickhouseUrl: 'http://ch:8123' }), { url: 'http://ch:8123', user: undefined, password: undefined, database: 'netrig' });
  assert.deepEqual(clickhouseTarget({ dataDir: '/d' }), { dataDir: '/d', database: 'netrig' });
});

test('insert settings: synchronous through the Distributed table on a cluster, unchanged otherwise', async () => {
  assert.deepEqual(insertSettings('tok', 10), { insert_deduplication_token: 'tok', insert_deduplicate: 1, max_insert_block_size: 1_048_576 });
  assert.deepEqual(insertSettings('tok', 2_000_000, 'c'), { insert_deduplication_token: 'tok', insert_deduplicate: 1, max_insert_block_size: 2_000_001, distributed_foreground_insert: 1 });
  // Through insertBlock, as the sink sends them.
  const sent: RowsInsert[] = [];
  const ch = (cluster?: string) => ({ database: 'netrig', cluster, insert: async (i: RowsInsert) => void sent.push(i) }) as unknown as ClickHouse;
  const rows = [{ ts: '1', _shard: 3, _seq: 7 }];
  await insertBlock(ch('c'), 'capture_losses', rows, 'tok');
  await insertBlock(ch(), 'capture_losses', rows, 'tok');
  assert.equal(sent[0].table, 'netrig.capture_losses', 'the Distributed table, by its usual name');
  assert.equal(sent[0].settings.distributed_foreground_insert, 1);
  assert.equal(sent[0].settings.insert_deduplication_token, 'tok');
  assert.equal('distributed_foreground_insert' in sent[1].settings, false);
});

test('a resuming processor reads every replica on a cluster, the table otherwise', async () => {
  assert.equal(allReplicas('netrig', 'http_requests', 'c'), "clusterAllReplicas('c', netrig.http_requests_local)");
  assert.equal(resumeSource({ database: 'netrig', cluster: 'c' }, 'connections'), "clusterAllReplicas('c', netrig.connections_local)");
  assert.equal(resumeSource({ database: 'netrig' }, 'connections'), 'netrig.connections');
  const queries: string[] = [];
  const client = { query: async ({ query }: { query: string }) => (queries.push(query), { json: async () => [{ _fn: 'tcp', day: 20000, seq: '42' }] }) };
  const committed = await readCommitted({ database: 'netrig', cluster: 'c', client } as unknown as ClickHouse, ['connections'], 's@1', 3);
  assert.match(queries[0], /FROM clusterAllReplicas\('c', netrig\.connections_local\) WHERE _stream = \{stream:String\} AND _shard = \{shard:UInt16\}/);
  assert.equal(committed.get('tcp')?.get('connections', 20000), 42);
  await readCommitted({ database: 'netrig', client } as unknown as ClickHouse, ['connections'], 's@1', 3);
  assert.match(queries[1], /FROM netrig\.connections WHERE /);
});

/** A ClickHouseClient that records what migrate() sends; `tables` answers system.tables, `versions` schema_migrations. */
function recordingClient(tables: { engine: string }[], versions: number[]) {
  const commands: string[] = [];
  const queries: string[] = [];
  const inserts: { table: string; token: unknown }[] = [];
  const client = {
    command: async ({ query }: { query: string }) => void commands.push(query),
    query: async ({ query }: { query: string }) => {
      queries.push(query);
      const rows = /system\.tables/.test(query) ? tables : versions.map((version) => ({ version }));
      return { json: async () => rows };
    },
    insert: async (i: { table: string; clickhouse_settings: Record<string, unknown> }) => void inserts.push({ table: i.table, token: i.clickhouse_settings.insert_deduplication_token }),
  } as unknown as ClickHouseClient;
  return { client, commands, queries, inserts };
}

/** Versions of every migration in schemas/migrations/, in order. */
const ALL_VERSIONS = migrationFiles().map((f) => Number(f.slice(0, 3)));

test('migrate on a cluster: bootstrap and every migration as cluster DDL on a new database; nothing ON CLUSTER once applied', async () => {
  const fresh = recordingClient([], []);
  assert.deepEqual(await migrate(fresh.client, { ...opts, cluster: 'c' }), ALL_VERSIONS);
  const expected = [...bootstrapStatements('netrig', 'c'), ...migrationFiles().flatMap((f) => migrationStatements(file(f), { ...opts, cluster: 'c' }))];
  assert.deepEqual(fresh.commands, expected);
  assert.ok(fresh.commands.every((q) => q.includes(" ON CLUSTER 'c'")));
  assert.deepEqual(fresh.inserts, ALL_VERSIONS.map((v) => ({ table: 'netrig.schema_migrations', token: `netrig.migration.${v}` })));

  // Applied already: no DDL at all (ON CLUSTER waits for every host; a host down must not stop a restart).
  const applied = recordingClient([{ engine: 'ReplicatedReplacingMergeTree' }], ALL_VERSIONS);
  assert.deepEqual(await migrate(applied.client, { ...opts, cluster: 'c' }), []);
  assert.deepEqual(applied.commands, []);

  // Bootstrapped, one migration missing: only its statements.
  const behind = recordingClient([{ engine: 'ReplicatedReplacingMergeTree' }], ALL_VERSIONS.slice(0, -1));
  assert.deepEqual(await migrate(behind.client, { ...opts, cluster: 'c' }), ALL_VERSIONS.slice(-1));
  assert.deepEqual(behind.commands, migrationStatements(file(migrationFiles().at(-1)!), { ...opts, cluster: 'c' }));
});

test('migrate on a cluster refuses a database made without one; without a cluster it runs as before', async () => {
  const plainDb = recordingClient([{ engine: 'ReplacingMergeTree' }], ALL_VERSIONS);
  await assert.rejects(migrate(plainDb.client, { ...opts, cluster: 'c' }), (err: Error) => err instanceof ConfigError && err.key === 'clickhouse-cluster' && /--database/.test(err.message));
  assert.deepEqual(plainDb.commands, []);

  const plain = recordingClient([], []);
  assert.deepEqual(await migrate(plain.client, opts), ALL_VERSIONS);
  assert.deepEqual(plain.commands, [...bootstrapStatements('netrig'), ...migrationFiles().flatMap((f) => migrationStatements(file(f), opts))]);
  assert.ok(plain.queries.every((q) => !q.includes('system.tables')));
});

test('the CLI refuses --clickhouse-cluster without --clickhouse-url, and a bad name, before starting anything', async () => {
  for (const args of [['process'], ['replay'], ['up'], ['query', 'SELECT 1']]) {
    const r = await runCli([...args, '--clickhouse-cluster', 'c'], { timeoutMs: 20_000 });
    assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /^netrig: clickhouse-cluster: needs --clickhouse-url: the embedded engine is a single server/, args[0]);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${args[0]}: one line`);
  }
  const bad = await runCli(['process', '--clickhouse-url', 'http://127.0.0.1:1', '--clickhouse-cluster', "c'; DROP DATABASE netrig"], { timeoutMs: 20_000 });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^netrig: clickhouse-cluster: expected a cluster name of remote_servers/);
});
