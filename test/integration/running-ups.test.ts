/**
 * How the reading commands find their rows (lib/running-ups.ts, cli/query.ts): the adverts
 * of running `netrig up`s judged by their data dirs' locks (live holders are real processes,
 * test/helpers/data-dir-lock-main.ts), stale and half-written adverts, several ups, none,
 * and reading never creating a store. The commands run as a user runs them, each in an empty
 * working directory of its own that must stay empty.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openClickHouse } from '../../lib/clickhouse.js';
import { runningUps, type UpAdvert } from '../../lib/running-ups.js';
import { onExit } from '../helpers/cleanup.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { assertOneLineError, runCli } from '../helpers/cli.js';
import { DataDirLocker } from '../helpers/data-dir-locker.js';
import { freePort } from '../helpers/nats-server.js';

/** uid of `nobody` on Debian. */
const NOBODY = 65534;

const root = mkdtempSync(join(tmpdir(), `netrig-running-ups-${process.pid}-`));
const unregister = onExit(`running ups test ${root}`, () => rmSync(root, { recursive: true, force: true }));
const lockers: DataDirLocker[] = [];
after(() => cleanupAll(...lockers.map((l) => () => l.kill()), () => {
  rmSync(root, { recursive: true, force: true });
  unregister();
}));

let dirs = 0;
const fresh = (what: string) => {
  const dir = join(root, `${what}-${++dirs}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
};

/** A live process holding a fresh data dir, as a running `netrig up` does. */
async function liveHolder(): Promise<{ dataDir: string; pid: number }> {
  const dataDir = fresh('data');
  const l = new DataDirLocker(dataDir);
  lockers.push(l);
  await l.ready;
  l.cue();
  assert.equal(await l.answer, 'won');
  return { dataDir, pid: l.child.pid! };
}

function advert(runDir: string, a: UpAdvert, name = `up-${a.pid}.json`): void {
  writeFileSync(join(runDir, name), JSON.stringify(a), { mode: 0o600 });
}

const upAdvert = (h: { dataDir: string; pid: number }, natsPort: number): UpAdvert =>
  ({ pid: h.pid, dataDir: h.dataDir, database: 'netrig', nats: { url: `nats://127.0.0.1:${natsPort}`, owned: false } });

/** Run a netrig command with `runDir` as its run directory, in an empty directory that must stay empty. */
async function cli(runDir: string, args: string[]) {
  const cwd = fresh('cwd');
  const r = await runCli(args, { env: { NETRIG_RUN_DIR: runDir }, cwd });
  assert.deepEqual(readdirSync(cwd), [], `netrig ${args.join(' ')} created nothing where it ran`);
  return r;
}

test('adverts: a live holder\'s is listed; stale, foreign and damaged ones are removed; one being written is kept', async () => {
  const runDir = fresh('run');
  process.env.NETRIG_RUN_DIR = runDir;
  try {
    const [a, b, c] = [await liveHolder(), await liveHolder(), await liveHolder()];
    advert(runDir, upAdvert(a, 1));
    // A dead up's advert, naming a dir no one holds.
    advert(runDir, upAdvert({ dataDir: fresh('dead'), pid: 999_999_999 }, 2));
    // A live pid's advert naming a dir another process holds (the pid was reused).
    advert(runDir, { ...upAdvert(c, 3), dataDir: b.dataDir });
    // Empty: its live writer has not written it yet.
    writeFileSync(join(runDir, `up-${b.pid}.json`), '', { mode: 0o600 });
    // Damaged, from a dead pid.
    writeFileSync(join(runDir, 'up-999999998.json'), '{"pid":', { mode: 0o600 });
    writeFileSync(join(runDir, 'notes.txt'), 'not an advert', { mode: 0o600 });
    const ups = runningUps();
    assert.deepEqual(ups.map((u) => u.dataDir), [a.dataDir], 'only the live holder\'s advert');
    assert.deepEqual(readdirSync(runDir).sort(), [`up-${a.pid}.json`, `up-${b.pid}.json`, 'notes.txt'].sort(), 'stale and damaged adverts removed, the one being written kept, other files left');
  } finally {
    delete process.env.NETRIG_RUN_DIR;
  }
});

test('several ups: query, report and status name their data dirs in one line; --data-dir picks one', async () => {
  const runDir = fresh('run');
  const [a, b] = [await liveHolder(), await liveHolder()];
  const [portA, portB] = [await freePort(), await freePort()];
  advert(runDir, upAdvert(a, portA));
  advert(runDir, upAdvert(b, portB));
  const several = new RegExp(`^netrig: data-dir: 2 netrig up run on this host: name one \\(--data-dir (${a.dataDir}|${b.dataDir}) or --data-dir (${a.dataDir}|${b.dataDir})\\)$`);
  for (const args of [['query', 'SELECT 1'], ['report', 'top-endpoints'], ['status']]) assertOneLineError(await cli(runDir, args), several, args[0]);
  // The one picked is the one asked: its (closed) NATS port is the one named.
  assertOneLineError(await cli(runDir, ['status', '--data-dir', b.dataDir]), new RegExp(`cannot reach NATS at nats://127\\.0\\.0\\.1:${portB}`), 'status --data-dir');
});

test('no up and no store: one line saying how to point the command, and nothing created', async () => {
  const runDir = join(fresh('run'), 'absent');
  const none = /^netrig: no rows to read: no `netrig up` runs on this host and \.\/\.netrig holds no store; start `netrig up`, or name the rows with --data-dir DIR or --clickhouse-url URL$/;
  assertOneLineError(await cli(runDir, ['query', 'SELECT 1']), none, 'query');
  assertOneLineError(await cli(runDir, ['report', 'top-endpoints']), none, 'report');
  assertOneLineError(await cli(runDir, ['status']), /^netrig: nats: no `netrig up` runs on this host to ask: pass --nats URL/, 'status');
  const empty = fresh('empty');
  assertOneLineError(await cli(runDir, ['query', '--data-dir', empty, 'SELECT 1']), new RegExp(`no rows to read: ${empty} holds no store and no \`netrig up\` holds it`), 'an empty --data-dir');
  assert.deepEqual(readdirSync(empty), [], 'the empty data dir stays empty');
  const missing = join(root, 'never-made');
  assertOneLineError(await cli(runDir, ['query', '--data-dir', missing, 'SELECT 1']), /holds no store/, 'a --data-dir that does not exist');
  assert.throws(() => readdirSync(missing), /ENOENT/, 'and it is not created');
});

test('a store without the database asked for: one line, and the database is not created', async () => {
  const runDir = fresh('run');
  const dataDir = fresh('store');
  const ch = await openClickHouse({ dataDir, database: 'netrig_kept' });
  await ch.close();
  assertOneLineError(await cli(runDir, ['query', '--data-dir', dataDir, '--database', 'netrig_absent', 'SELECT 1']),
    new RegExp(`^netrig: database: no database netrig_absent at ${dataDir}: name the one the processors write \\(--database\\)$`), 'missing database');
  const listed = await cli(runDir, ['query', '--data-dir', dataDir, '--format', 'json', "SELECT name FROM system.databases WHERE name LIKE 'netrig_%' ORDER BY name"]);
  assert.equal(listed.code, 1, 'the default database netrig is not there either');
  const kept = await cli(runDir, ['query', '--data-dir', dataDir, '--database', 'netrig_kept', '--format', 'json', "SELECT name FROM system.databases WHERE name LIKE 'netrig_%' ORDER BY name"]);
  assert.equal(kept.code, 0, kept.stderr);
  assert.deepEqual(kept.stdout.trim().split('\n').map((l) => JSON.parse(l) as { name: string }).map((r) => r.name), ['netrig_kept'], 'no database was created by reading');
});

test('a run directory another user owns is refused, not trusted', async () => {
  const runDir = fresh('run');
  chownSync(runDir, NOBODY, NOBODY);
  assertOneLineError(await cli(runDir, ['query', 'SELECT 1']), new RegExp(`${runDir} is owned by uid ${NOBODY}`), 'foreign run dir');
});
