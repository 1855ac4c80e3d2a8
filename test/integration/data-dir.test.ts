/**
 * The data dir (lib/data-dir.ts): one holder at a time even when processes race for it at
 * the same instant, a SIGKILLed holder's lock free at once, the dir 0700 and refused when it
 * belongs to someone else or others may write to it, and no file in it written through a
 * symlink or a hard link planted there. The racers are real processes
 * (test/helpers/data-dir-lock-main.ts) taking the lock on one cue.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeEndpoint } from '../../cli/endpoint-file.js';
import { dataDirHolder, lockDataDir } from '../../lib/data-dir.js';
import { DataDirFileError, DataDirLockedError, DataDirPermissionError } from '../../lib/errors.js';
import { onExit } from '../helpers/cleanup.js';
import { DataDirLocker } from '../helpers/data-dir-locker.js';

/** Rounds of the race; each spawns RACERS fresh processes on a fresh dir. */
const ROUNDS = 20;
const RACERS = 3;
/** uid and gid of `nobody` on Debian. */
const NOBODY = 65534;

const root = mkdtempSync(join(tmpdir(), `netrig-datadir-${process.pid}-`));
const unregister = onExit(`data dir test ${root}`, () => rmSync(root, { recursive: true, force: true }));
after(() => {
  rmSync(root, { recursive: true, force: true });
  unregister();
});

let dirs = 0;
const freshPath = () => join(root, `d${++dirs}`);

test(`${RACERS} processes cued at the same instant: exactly one holds the data dir, ${ROUNDS} rounds out of ${ROUNDS}`, async () => {
  for (let round = 1; round <= ROUNDS; round++) {
    // Odd rounds race on a dir none has created yet; even ones on a dir with a dead holder's lock file.
    const dir = freshPath();
    if (round % 2 === 0) {
      mkdirSync(dir, { mode: 0o700 });
      writeFileSync(join(dir, 'netrig.lock'), '999999999\n', { mode: 0o600 });
    }
    const racers = Array.from({ length: RACERS }, () => new DataDirLocker(dir));
    try {
      await Promise.all(racers.map((r) => r.ready));
      for (const r of racers) r.cue();
      const answers = await Promise.all(racers.map((r) => r.answer));
      const winners = racers.filter((_, i) => answers[i] === 'won');
      assert.equal(winners.length, 1, `round ${round}: one winner (answers: ${answers.join(', ')})`);
      const winnerPid = winners[0].child.pid!;
      for (const a of answers.filter((x) => x !== 'won')) {
        assert.match(a, /^locked (\d+|null)$/, `round ${round}: the others are told it is held`);
        if (a !== 'locked null') assert.equal(a, `locked ${winnerPid}`, `round ${round}: naming the winner`);
      }
      assert.equal(dataDirHolder(dir), winnerPid, `round ${round}: the lock file names the winner`);
    } finally {
      for (const r of racers) assert.equal(await r.finish(), 0);
    }
    assert.equal(existsSync(join(dir, 'netrig.lock')), false, `round ${round}: the winner removed its lock file on release`);
  }
});

test('a holder killed with SIGKILL leaves the data dir free; a live one is named', async () => {
  const dir = freshPath();
  const holder = new DataDirLocker(dir);
  await holder.ready;
  holder.cue();
  assert.equal(await holder.answer, 'won');
  assert.throws(() => lockDataDir(dir), (err) => err instanceof DataDirLockedError && err.pid === holder.child.pid);
  await holder.kill();
  assert.ok(existsSync(join(dir, 'netrig.lock')), 'the killed holder left its lock file');
  const release = lockDataDir(dir);
  try {
    assert.equal(readFileSync(join(dir, 'netrig.lock'), 'utf8'), `${process.pid}\n`);
  } finally {
    release();
  }
});

test('holds nest within a process: the last release lets go', async () => {
  const dir = freshPath();
  const first = lockDataDir(dir);
  const second = lockDataDir(dir);
  first();
  first(); // a release runs once
  const other = new DataDirLocker(dir);
  try {
    await other.ready;
    other.cue();
    assert.equal(await other.answer, `locked ${process.pid}`, 'still held after one of two releases');
  } finally {
    await other.finish();
  }
  second();
  assert.equal(existsSync(join(dir, 'netrig.lock')), false);
  lockDataDir(dir)();
});

test('the data dir is created 0700; one only readable by others is made 0700', () => {
  const dir = join(freshPath(), 'nested', '.netrig');
  lockDataDir(dir)();
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  chmodSync(dir, 0o755);
  lockDataDir(dir)();
  assert.equal(statSync(dir).mode & 0o777, 0o700);
});

test('a data dir writable by its group or others, or owned by another user, is refused with the command that fixes it', () => {
  for (const [mode, says] of [[0o770, /writable by its group .*chmod 700/], [0o707, /writable by others .*chmod 700/], [0o777, /writable by its group and others .*chmod 700/]] as const) {
    const dir = freshPath();
    mkdirSync(dir, { mode: 0o700 });
    chmodSync(dir, mode);
    assert.throws(() => lockDataDir(dir), (err) => err instanceof DataDirPermissionError && says.test(err.message), `mode ${mode.toString(8)}`);
    assert.equal(existsSync(join(dir, 'netrig.lock')), false, 'nothing written in it');
  }
  const dir = freshPath();
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, NOBODY, NOBODY);
  assert.throws(() => lockDataDir(dir), (err) => err instanceof DataDirPermissionError && /owned by uid 65534.*chown -R/.test(err.message));
  assert.equal(existsSync(join(dir, 'netrig.lock')), false, 'nothing written in it');
});

test('a symlink or a hard link planted at netrig.lock or endpoint.json is refused, its target untouched', () => {
  const victim = join(root, `victim-${process.pid}`);
  writeFileSync(victim, 'precious\n');
  const endpoint = { url: 'http://127.0.0.1:1', user: 'default', database: 'netrig', pid: process.pid };

  const lockLinked = freshPath();
  mkdirSync(lockLinked, { mode: 0o700 });
  symlinkSync(victim, join(lockLinked, 'netrig.lock'));
  assert.throws(() => lockDataDir(lockLinked), (err) => err instanceof DataDirFileError && /netrig\.lock is a symlink/.test(err.message));

  const endpointLinked = freshPath();
  const release = lockDataDir(endpointLinked);
  try {
    symlinkSync(victim, join(endpointLinked, 'endpoint.json'));
    assert.throws(() => writeEndpoint(endpointLinked, endpoint), (err) => err instanceof DataDirFileError && /endpoint\.json is a symlink/.test(err.message));
    rmSync(join(endpointLinked, 'endpoint.json'));
    linkSync(victim, join(endpointLinked, 'endpoint.json'));
    assert.throws(() => writeEndpoint(endpointLinked, endpoint), (err) => err instanceof DataDirFileError && /has other hard links/.test(err.message));
  } finally {
    release();
  }
  assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the target was not written');
});

test('endpoint.json is written 0600', () => {
  const dir = freshPath();
  const release = lockDataDir(dir);
  try {
    writeEndpoint(dir, { url: 'http://127.0.0.1:1', user: 'default', database: 'netrig', pid: process.pid })();
    const remove = writeEndpoint(dir, { url: 'http://127.0.0.1:2', user: 'default', database: 'netrig', pid: process.pid });
    assert.equal(statSync(join(dir, 'endpoint.json')).mode & 0o777, 0o600);
    assert.equal(JSON.parse(readFileSync(join(dir, 'endpoint.json'), 'utf8')).url, 'http://127.0.0.1:2');
    remove();
  } finally {
    release();
  }
});
