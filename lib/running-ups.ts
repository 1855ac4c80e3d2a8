/**
 * Where each running `netrig up` says it is, so `netrig query`, `report` and `status` find it
 * from any directory: one file per running up, `up-<pid>.json`, naming its data dir and where
 * its NATS and its rows are, in a 0700 directory of this user's — `/run/netrig` for root,
 * `$XDG_RUNTIME_DIR/netrig` or `<tmp>/netrig-<uid>` for others; `NETRIG_RUN_DIR` overrides.
 * The data dir's lock is the truth about whether the up still runs: a file an up left when
 * it was killed names a dir no one holds, and is removed by the next reader.
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dataDirHolder, pidAlive, prepareDataDir, readDataDirFile, writeDataDirFile } from './data-dir.js';
import { ConfigError } from './errors.js';

/** What a running `netrig up` tells the commands that look for it. */
export interface UpAdvert {
  pid: number;
  /** Absolute path of the data dir it holds. */
  dataDir: string;
  database: string;
  /** Its own nats-server (the roles' passwords are in <dataDir>/nats-auth/), or the --nats it was given. */
  nats: { url: string; owned: boolean; tlsCa?: string };
  /** The ClickHouse server it writes to when given --clickhouse-url; absent: its own endpoint (endpoint.json in the data dir). */
  clickhouseUrl?: string;
}

const PREFIX = 'up-';
const SUFFIX = '.json';

/** The directory of the adverts for this user. */
export function runDir(): string {
  if (process.env.NETRIG_RUN_DIR) return resolve(process.env.NETRIG_RUN_DIR);
  if (process.getuid!() === 0) return '/run/netrig';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'netrig');
  return join(tmpdir(), `netrig-${process.getuid!()}`);
}

/** Advertise this process's `netrig up`; returns the advert's removal. */
export function advertiseUp(advert: Omit<UpAdvert, 'pid'>): () => void {
  const dir = runDir();
  prepareDataDir(dir);
  const name = `${PREFIX}${process.pid}${SUFFIX}`;
  writeDataDirFile(dir, name, JSON.stringify({ ...advert, pid: process.pid }));
  return () => rmSync(join(dir, name), { force: true });
}

function isAdvert(v: unknown): v is UpAdvert {
  const a = v as UpAdvert;
  return typeof a === 'object' && a !== null && Number.isInteger(a.pid) && typeof a.dataDir === 'string' &&
    typeof a.database === 'string' && typeof a.nats?.url === 'string';
}

/**
 * The `netrig up`s of this user running on this host now, by pid. A missing directory is
 * none; one another user could have planted or may write to is refused
 * (DataDirPermissionError), since what it names decides which endpoint gets the password.
 */
export function runningUps(): UpAdvert[] {
  const dir = runDir();
  try {
    if (!statSync(dir).isDirectory()) return [];
  } catch {
    return [];
  }
  prepareDataDir(dir);
  const ups: UpAdvert[] = [];
  for (const name of readdirSync(dir)) {
    const pid = Number(name.slice(PREFIX.length, -SUFFIX.length));
    if (!name.startsWith(PREFIX) || !name.endsWith(SUFFIX) || !Number.isInteger(pid)) continue;
    let advert: unknown;
    try {
      advert = JSON.parse(readDataDirFile(dir, name) ?? 'null');
    } catch {
      // Being written this instant, or damaged: see below.
    }
    if (isAdvert(advert) && advert.pid === pid && dataDirHolder(advert.dataDir) === pid) ups.push(advert);
    // Unreadable while its writer lives: being written this instant. Anything else is stale.
    else if (isAdvert(advert) || !pidAlive(pid)) rmSync(join(dir, name), { force: true });
  }
  return ups.sort((a, b) => a.pid - b.pid);
}

/**
 * The `netrig up` to use: the one holding `dataDir` when given, else the one running on this
 * host; null when there is none, a ConfigError naming their data dirs when there are several.
 */
export function theRunningUp(dataDir?: string): UpAdvert | null {
  const ups = runningUps().filter((u) => dataDir === undefined || u.dataDir === resolve(dataDir));
  if (ups.length > 1) throw new ConfigError('data-dir', `${ups.length} netrig up run on this host: name one (${ups.map((u) => `--data-dir ${u.dataDir}`).join(' or ')})`);
  return ups[0] ?? null;
}
