/**
 * The data dir (`--data-dir`, default ./.netrig): the embedded engine's store, the owned
 * nats-server's store, netrig.lock and endpoint.json. What is in it decides where netrig
 * writes and which endpoint its commands trust, so it is created 0700, and an existing one
 * must belong to this user and be writable by no one else. Files in it are opened without
 * following symlinks and must be plain files of this user's.
 *
 * One process holds it at a time: an flock(2) on netrig.lock (through koffi: Node has no
 * flock). The kernel takes the lock and hands it back atomically, and drops it when the
 * process ends however it ends, so two processes started at the same instant cannot both
 * hold it and a dead holder's lock is simply free. The lock file carries the holder's pid
 * for messages; it is removed, still locked, when the holder lets go.
 */
import { closeSync, constants, chmodSync, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import koffi from 'koffi';
import { DataDirFileError, DataDirLockedError, DataDirPermissionError, PrerequisiteError } from './errors.js';

const flock = koffi.load('libc.so.6').func('int flock(int fd, int operation)') as (fd: number, op: number) => number;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

const LOCK_FILE = 'netrig.lock';
/** Opens of the lock file that found it replaced under them before giving up (each needs another process to let go). */
const LOCK_ATTEMPTS = 10;

const uid = (): number => process.getuid!();

/**
 * Create `dir` (0700) if it is missing; refuse it if another user owns it or others may write
 * to it. One that only others may read (made by an older netrig) is made 0700. A data dir
 * that is a symlink is judged by the directory it names.
 */
export function prepareDataDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory()) throw new DataDirPermissionError(dir, 'is not a directory', `rm ${dir}`);
  if (st.uid !== uid()) throw new DataDirPermissionError(dir, `is owned by uid ${st.uid}, not by this user (uid ${uid()})`, `chown -R ${uid()} ${dir} && chmod 700 ${dir}`);
  const writers = [st.mode & 0o020 ? 'its group' : '', st.mode & 0o002 ? 'others' : ''].filter(Boolean);
  if (writers.length) throw new DataDirPermissionError(dir, `is writable by ${writers.join(' and ')} (mode ${(st.mode & 0o777).toString(8)})`, `chmod 700 ${dir}`);
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

/**
 * Open `name` in `dir` with `flags`, never through a symlink, creating it 0600 when
 * O_CREAT is given; refuse anything but a plain file of this user's with no other link
 * (checked on the open descriptor, before anything is written). Never truncates: callers
 * that rewrite a file truncate it after the check.
 */
export function openDataDirFile(dir: string, name: string, flags: number): number {
  const path = join(dir, name);
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO planted there must not hang.
    fd = openSync(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new DataDirFileError(path, 'is a symlink', { cause: err });
    throw err;
  }
  const st = fstatSync(fd);
  const problem = !st.isFile() ? 'is not a regular file' : st.nlink !== 1 ? 'has other hard links' : st.uid !== uid() ? `is owned by uid ${st.uid}` : null;
  if (problem) {
    closeSync(fd);
    throw new DataDirFileError(path, problem);
  }
  return fd;
}

/** Write `text` as the whole of `name` in `dir` (0600, never through a symlink). */
export function writeDataDirFile(dir: string, name: string, text: string): void {
  const fd = openDataDirFile(dir, name, constants.O_WRONLY | constants.O_CREAT);
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, text, 0);
  } finally {
    closeSync(fd);
  }
}

/** The text of `name` in `dir`, null if there is none (never through a symlink). */
export function readDataDirFile(dir: string, name: string): string | null {
  let fd: number;
  try {
    fd = openDataDirFile(dir, name, constants.O_RDONLY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Whether a process with this pid exists (one of another user's too). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The pid of another live process holding `dataDir`, as its lock file tells (null if none).
 * For messages and for finding a running `netrig up`: the lock itself is the flock.
 */
export function dataDirHolder(dataDir: string): number | null {
  try {
    const pid = Number((readDataDirFile(resolve(dataDir), LOCK_FILE) ?? '').trim());
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

/** Data dirs this process holds, by absolute path: the lock file's descriptor and the holds on it. */
const held = new Map<string, { fd: number; holds: number }>();

/**
 * Start what `start` starts holding `dataDir`'s lock (`netrig nats`, `netrig store`): the lock
 * goes when it stops, or at once if it fails to start.
 */
export async function holdingDataDir(dataDir: string, start: () => Promise<{ stop(): Promise<void> }>): Promise<{ stop(): Promise<void> }> {
  const unlock = lockDataDir(dataDir);
  try {
    const running = await start();
    return {
      async stop() {
        try {
          await running.stop();
        } finally {
          unlock();
        }
      },
    };
  } catch (err) {
    unlock();
    throw err;
  }
}

/**
 * Take `dataDir` for this process (preparing it first), or fail naming the process that
 * holds it; returns the release. Holds within one process nest (`netrig up` holds the dir
 * and opens the engine under it, which holds it too); the last release lets go.
 */
export function lockDataDir(dataDir: string): () => void {
  const dir = resolve(dataDir);
  const mine = held.get(dir);
  if (mine) mine.holds++;
  else held.set(dir, { fd: takeLock(dir), holds: 1 });
  let released = false;
  return () => {
    const h = held.get(dir);
    if (released || !h) return;
    released = true;
    if (--h.holds > 0) return;
    held.delete(dir);
    // Removed while still locked: whoever opened it meanwhile finds it gone once it locks, and opens again.
    rmSync(join(dir, LOCK_FILE), { force: true });
    closeSync(h.fd);
  };
}

function takeLock(dir: string): number {
  prepareDataDir(dir);
  const path = join(dir, LOCK_FILE);
  for (let attempt = 1; attempt <= LOCK_ATTEMPTS; attempt++) {
    const fd = openDataDirFile(dir, LOCK_FILE, constants.O_RDWR | constants.O_CREAT);
    if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      const errno = koffi.errno();
      closeSync(fd);
      if (errno === EWOULDBLOCK) throw new DataDirLockedError(dir, dataDirHolder(dir));
      throw new PrerequisiteError(`cannot lock ${path} (flock errno ${errno}): put --data-dir on a local filesystem`);
    }
    // The holder before us may have removed the file between our open and our lock: the
    // lock counts only on the file that is in place.
    const inPlace = lstatSync(path, { throwIfNoEntry: false });
    const ours = fstatSync(fd);
    if (inPlace && inPlace.ino === ours.ino && inPlace.dev === ours.dev) {
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}\n`, 0);
      return fd;
    }
    closeSync(fd);
  }
  throw new DataDirLockedError(dir, dataDirHolder(dir));
}
