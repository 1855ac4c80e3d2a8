/**
 * A process that takes a data dir's lock (lib/data-dir.ts) on cue, for tests racing
 * several of them. argv[2]: the data dir.
 *
 * stdout: `ready` once loaded; after a line on stdin (the cue) it takes the lock and prints
 * `won` or `locked <pid|null>` (DataDirLockedError) or `error <code>`; after stdin ends it
 * releases what it holds and exits 0.
 */
import { createInterface } from 'node:readline';
import { lockDataDir } from '../../lib/data-dir.js';
import { DataDirLockedError, NetrigError } from '../../lib/errors.js';

const dir = process.argv[2];
let release: (() => void) | null = null;
const lines = createInterface({ input: process.stdin });
lines.once('line', () => {
  try {
    release = lockDataDir(dir);
    process.stdout.write('won\n');
  } catch (err) {
    if (err instanceof DataDirLockedError) process.stdout.write(`locked ${err.pid}\n`);
    else process.stdout.write(`error ${err instanceof NetrigError ? err.code : (err as Error).message}\n`);
  }
});
lines.once('close', () => {
  release?.();
  process.exit(0);
});
process.stdout.write('ready\n');
