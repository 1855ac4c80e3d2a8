/**
 * Secrets netrig generates at first start into 0600 files of a 0700 directory under the data
 * dir, read back on every later start so they stay the same across restarts.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './errors.js';

/** A 0700 directory (created if missing; tightened if it exists). */
export function privateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  return dir;
}

/**
 * The secret in `<dir>/<name>`: `override` when given (written to the file, so readers of the
 * file find the secret in force), else the file's content, else `bytes` random bytes in hex
 * written with mode 0600 and exclusive creation (two starts never write two secrets).
 */
export function secretFile(dir: string, name: string, override?: string, bytes = 24): { path: string; value: string } {
  const path = join(privateDir(dir), name);
  if (override !== undefined) {
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${override}\n`, { mode: 0o600 });
    renameSync(tmp, path);
    return { path, value: override };
  }
  try {
    chmodSync(path, 0o600);
    return { path, value: readFileSync(path, 'utf8').trim() };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = randomBytes(bytes).toString('hex');
  writeFileSync(path, `${value}\n`, { mode: 0o600, flag: 'wx' });
  return { path, value };
}

/** The secret a file holds (its first line), for commands given `--...-password-file`. */
export function readSecret(path: string): string {
  return readFileSync(path, 'utf8').split('\n')[0].trim();
}

/** The secret of the file a flag names; a ConfigError naming the flag if it cannot be read. */
export function secretOfFlag(flag: string, path: string): string {
  try {
    return readSecret(path);
  } catch (err) {
    throw new ConfigError(flag, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A password given inline (`inline`, e.g. `--password`) or by a file (`--<flag>-file`, a
 * mounted secret); undefined when neither. Both together are refused: a stale one (an
 * environment variable, say) must not silently beat the other.
 */
export function passwordOfFlags(flag: string, password: string | undefined, file: string | undefined, inline = `--${flag}`): string | undefined {
  if (password !== undefined && file !== undefined) throw new ConfigError(`${flag}-file`, `give either ${inline} or --${flag}-file, not both`);
  return file === undefined ? password : secretOfFlag(`${flag}-file`, file);
}
