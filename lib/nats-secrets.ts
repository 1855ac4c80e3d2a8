/**
 * Secrets of the nats-server `netrig up` owns, generated at first start into 0600 files of
 * a 0700 directory under the data dir and read back on every later start, so that role
 * passwords and the JetStream encryption key stay the same across restarts.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A 0700 directory (created if missing; tightened if it exists). */
export function privateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  return dir;
}

/**
 * The secret in `<dir>/<name>`: read if the file is there, else `bytes` random bytes in hex,
 * written with mode 0600 and exclusive creation (two starts never write two secrets).
 */
export function secretFile(dir: string, name: string, bytes = 24): { path: string; value: string } {
  const path = join(privateDir(dir), name);
  try {
    return { path, value: readFileSync(path, 'utf8').trim() };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = randomBytes(bytes).toString('hex');
  writeFileSync(path, `${value}\n`, { mode: 0o600, flag: 'wx' });
  return { path, value };
}
