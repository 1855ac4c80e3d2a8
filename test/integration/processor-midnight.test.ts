/**
 * Exactly-once rows when a block straddles midnight. ClickHouse makes an insert atomic per
 * partition only, and every table is partitioned by day, so one flush whose rows span two
 * days can land one day and not the other. Here a single envelope closes connections on
 * both sides of midnight (kernel times set in the fixture); a constraint on `connections`
 * makes the second day's insert fail, so the processor (`netrig process`, a child) keeps
 * retrying it with the first day committed, and is killed with SIGKILL there. The
 * constraint goes, a new processor reads the stream again: every connection must then be
 * in ClickHouse exactly once, on its own day.
 *
 * The partition columns the processors commit by are also checked against the tables' DDL.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { logger } from '../../lib/logger.js';
import { ensureStream } from '../../lib/raw-stream.js';
import { PARTITION_COLUMN } from '../../schemas/partitions.js';
import { RecordKind, Role } from '../../schemas/records.js';
import { onExit } from '../helpers/cleanup.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { ProcessorChild, queryStore } from '../helpers/processor-child.js';
import { publishEnvelopes, STREAM } from '../helpers/processor-run.js';
import { connClose, envelope } from '../helpers/records.js';

let nats: NatsServerHandle;
let nc: NatsConnection;
let dataDir = '';
let unregisterDir = () => {};
const database = `midnight_${process.pid}`;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  dataDir = mkdtempSync(join(tmpdir(), `netrig-midnight-${process.pid}-`));
  const d = dataDir;
  unregisterDir = onExit(`processor data ${d}`, () => rmSync(d, { recursive: true, force: true }));
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
  rmSync(dataDir, { recursive: true, force: true });
  unregisterDir();
});

/** The fixture's envelope clock: CLOCK_REALTIME − CLOCK_MONOTONIC = 2023-11-14 22:13:20 UTC. */
const CLOCK_S = 1_700_000_000;
/** Midnight (2023-11-15 00:00:00 UTC) in the fixture's kernel time. */
const MIDNIGHT_MONO_NS = (1_700_006_400 - CLOCK_S) * 1e9;
const BEFORE = 40;
const AFTER = 40;
const query = <T>(sql: string) => queryStore<T>(dataDir, database, sql);

/** Poll the processor's log for `pattern`. */
async function waitLog(c: ProcessorChild, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(c.log())) {
    assert.ok(Date.now() < deadline, `no ${pattern} in the processor's log:\n${c.log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('a block straddling midnight, killed between its day partitions, lands exactly once', { timeout: 300_000 }, async () => {
  // Tables first: a processor that finds an empty stream creates them and stops.
  await ensureStream(nc, STREAM, logger('test'));
  const first = new ProcessorChild({ natsUrl: nats.url, dataDir, database, functions: ['tcp'] });
  await first.port;
  await waitLog(first, /processor started/, 30_000);
  assert.equal(await first.signal('SIGTERM'), 0, first.log());

  const [ddl] = await query<{ keys: string[] }>(
    `SELECT groupArray(concat(name, '=', partition_key)) AS keys FROM system.tables WHERE database = '${database}' AND name IN (${Object.keys(PARTITION_COLUMN).map((t) => `'${t}'`).join(',')})`);
  assert.deepEqual(ddl.keys.sort(), Object.entries(PARTITION_COLUMN).map(([t, c]) => `${t}=toDate(${c})`).sort(), 'partition columns as the DDL has them');

  // The second day's rows cannot be inserted while this holds.
  await query(`ALTER TABLE ${database}.connections ADD CONSTRAINT not_after_midnight CHECK toDate(ts_close) < toDate('2023-11-15')`);

  // One envelope: closes on the first day, then on the second.
  const records: Buffer[] = [];
  const ids: number[] = [];
  for (let i = 0; i < BEFORE + AFTER; i++) {
    const tsNs = MIDNIGHT_MONO_NS + (i < BEFORE ? -(BEFORE - i) : i - BEFORE + 1) * 1e7;
    const cookie = 0x6000 + i;
    ids.push(cookie);
    records.push(connClose({ tsNs, connId: cookie, tgid: 4242 },
      { saddr: '10.1.0.1', sport: 30000 + i, daddr: '10.1.0.2', dport: 80 },
      { role: Role.Client, comm: 'curl', openTsNs: tsNs - 5e6, txBytes: 100 + i, rxBytes: 200 + i }));
  }
  await publishEnvelopes(nc, [envelope({ records, seq: 1, mono: MIDNIGHT_MONO_NS + 2e9 })]);
  assert.equal(records.length, BEFORE + AFTER);
  assert.ok(records.every((r) => r.readUInt16LE(0) === RecordKind.ConnClose));

  // The first day lands, the second keeps failing: kill the processor there.
  const crashed = new ProcessorChild({ natsUrl: nats.url, dataDir, database, functions: ['tcp'] });
  await crashed.port;
  await waitLog(crashed, /insert failed; retrying/, 60_000);
  await crashed.signal('SIGKILL');
  assert.equal(crashed.child.signalCode, 'SIGKILL');
  const landed = await query<{ day: string; n: string }>(
    `SELECT toString(toDate(ts_close)) AS day, count() AS n FROM ${database}.connections GROUP BY day ORDER BY day`);
  assert.deepEqual(landed.map((r) => [r.day, Number(r.n)]), [['2023-11-14', BEFORE]], 'the crash left the first day only');

  // Without the constraint, a new processor reads the message again.
  await query(`ALTER TABLE ${database}.connections DROP CONSTRAINT not_after_midnight`);
  const last = new ProcessorChild({ natsUrl: nats.url, dataDir, database, functions: ['tcp'] });
  await last.port;
  const deadline = Date.now() + 60_000;
  while ((await last.metric('netrig_processor_rows_total')) < AFTER) {
    assert.ok(Date.now() < deadline, `the second day was not written:\n${last.log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // A second more for anything written twice to show up.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await last.signal('SIGTERM'), 0, last.log());

  const rows = await query<{ day: string; n: string; distinct_ids: string }>(
    `SELECT toString(toDate(ts_close)) AS day, count() AS n, uniqExact(conn_id) AS distinct_ids FROM ${database}.connections GROUP BY day ORDER BY day`);
  assert.deepEqual(rows.map((r) => [r.day, Number(r.n), Number(r.distinct_ids)]),
    [['2023-11-14', BEFORE, BEFORE], ['2023-11-15', AFTER, AFTER]], 'every connection once, on its own day');
  const [{ bytes }] = await query<{ bytes: string }>(`SELECT sum(bytes_sent) AS bytes FROM ${database}.connections`);
  assert.equal(Number(bytes), ids.reduce((n, _, i) => n + 100 + i, 0), 'the rows are those connections');
});
