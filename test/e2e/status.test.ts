/**
 * netrig status: an edge (real eBPF) and a processor running against one nats-server each
 * put heartbeats in the status bucket; `netrig status --format json` (the CLI, a child)
 * prints one object per line for each with what it does, and the table form names both. A
 * processor that stops removes its entry at once.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runEdge, type RunningEdge } from '../../edge/index.js';
import type { EdgeStatus, NetrigStatus, ProcessorStatus } from '../../lib/heartbeat.js';
import { runProcessor, type RunningProcessor } from '../../processors/index.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { onExit, uniqueToken } from '../helpers/cleanup.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { CLI } from '../helpers/paths.js';

const run = promisify(execFile);
const SHARDS = 4;

let nats: NatsServerHandle | undefined;
let edge: RunningEdge | undefined;
let processor: RunningProcessor | undefined;
let dataDir = '';
let unregisterDir = () => {};
const token = uniqueToken('status');

before(async () => {
  nats = await startNatsServer();
  dataDir = mkdtempSync(join(tmpdir(), `netrig-status-${process.pid}-`));
  const d = dataDir;
  unregisterDir = onExit(`status data ${d}`, () => rmSync(d, { recursive: true, force: true }));
  const stream = `NETRIG_STATUS_${token}`;
  const subjectPrefix = `netrig.status.${token}`;
  edge = await runEdge({ nats: nats.url, region: 'eu', node: `node-${token}`, shards: SHARDS, stream, subjectPrefix, metricsPort: 0, includePorts: '1' });
  processor = await runProcessor({ nats: nats.url, functions: 'tcp,losses', shards: SHARDS, stream, subjectPrefix, dataDir, database: 'status_db', metricsPort: 0, flushIntervalMs: 100 });
});

after(() => cleanupAll(
  () => processor?.stop(),
  () => edge?.stop(),
  () => nats?.cleanup(),
  () => {
    rmSync(dataDir, { recursive: true, force: true });
    unregisterDir();
  },
));

async function status(format: 'json' | 'table'): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, 'status', '--nats', nats!.url, '--format', format], { timeout: 30_000 });
  return stdout;
}

test('json: one object per line for the edge and the processor, with what each does', async () => {
  const lines = (await status('json')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as NetrigStatus);
  assert.deepEqual(lines.map((s) => s.kind), ['processor', 'edge']);
  const [p, e] = lines as [ProcessorStatus, EdgeStatus];
  for (const s of [p, e]) {
    assert.equal(s.host, hostname());
    assert.equal(s.pid, process.pid);
    assert.ok(!Number.isNaN(Date.parse(s.started)), `started ${s.started}`);
    assert.match(s.id, new RegExp(`-${process.pid}-[0-9a-f]{6}$`));
  }
  assert.notEqual(p.id, e.id);
  assert.equal(p.database, 'status_db');
  assert.deepEqual(p.functions, ['tcp', 'losses']);
  assert.deepEqual(p.lanes, [0, 1, 2, 3]);
  assert.equal(typeof p.lag, 'number');
  assert.ok(p.last_commit === null || !Number.isNaN(Date.parse(p.last_commit)));
  assert.equal(e.region, 'eu');
  assert.equal(e.node, `node-${token}`);
  assert.equal(e.run, edge!.edge.runId);
  assert.equal(typeof e.records_per_s, 'number');
  assert.deepEqual(e.capture, edge!.edge.capture);
});

test('table: both named, and a stopped processor is gone at once', async () => {
  const table = await status('table');
  assert.match(table, /^kind\s+id\s+host\s+pid\s+started\s+doing/m);
  assert.match(table, /^processor .* db status_db, tcp,losses, lanes 0-3 \(4\)/m);
  assert.match(table, new RegExp(`^edge .* eu/node-${token} run ${edge!.edge.runId}`, 'm'));
  assert.match(table, /\(2 rows\)/);
  await processor!.stop();
  processor = undefined;
  const after = (await status('json')).split('\n').filter(Boolean).map((l) => (JSON.parse(l) as NetrigStatus).kind);
  assert.deepEqual(after, ['edge']);
});
