/**
 * `netrig up` writes where its ClickHouse endpoint listens into the data dir, so commands
 * run while it holds the store (`netrig query`, `netrig report`) go through it; and keeps the
 * endpoint's passwords in 0600 files of the 0700 directory `<data dir>/endpoint/`:
 * `reader.password` (what `netrig query` and `netrig report` read) and `writer.password`
 * (for more processors: `--clickhouse-user netrig_writer --clickhouse-password-file ...`).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { dataDirHolder, readDataDirFile, writeDataDirFile } from '../lib/data-dir.js';
import { WRITER_USER } from '../lib/clickhouse-endpoint.js';
import type { Credentials } from '../lib/endpoint/request.js';
import { readSecret, secretFile, secretOfFlag } from '../lib/secret-file.js';

const FILE = 'endpoint.json';
const SECRETS_DIR = 'endpoint';
const READER_FILE = 'reader.password';
const WRITER_FILE = 'writer.password';

export interface EndpointInfo {
  url: string;
  user: string;
  database: string;
  pid: number;
}

/** The endpoint's two credentials: generated at first start unless given (then written there). */
export function endpointCredentials(dataDir: string, user: string, password?: string, writerPassword?: string): { reader: Credentials; writer: Credentials } {
  return {
    reader: readerCredentials(dataDir, user, password),
    writer: { user: WRITER_USER, password: secretFile(join(dataDir, SECRETS_DIR), WRITER_FILE, writerPassword).value },
  };
}

/** The reader's credential alone (the page's, when `netrig up` writes to a server and serves no endpoint). */
export function readerCredentials(dataDir: string, user: string, password?: string): Credentials {
  return { user, password: secretFile(join(dataDir, SECRETS_DIR), READER_FILE, password).value };
}

/** Where the writer's password is kept, for processors attached to the endpoint. */
export function writerPasswordFile(dataDir: string): string {
  return join(dataDir, SECRETS_DIR, WRITER_FILE);
}

/** Write endpoint.json (0600, never through a symlink planted there); returns its removal. */
export function writeEndpoint(dataDir: string, info: EndpointInfo): () => void {
  writeDataDirFile(dataDir, FILE, JSON.stringify(info));
  return () => rmSync(join(dataDir, FILE), { force: true });
}

/** The endpoint of the live `netrig up` holding `dataDir`, with its reader password, if any. */
export function readEndpoint(dataDir: string): (EndpointInfo & { password: string }) | null {
  const holder = dataDirHolder(dataDir);
  if (!holder) return null;
  const text = readDataDirFile(dataDir, FILE);
  try {
    const info = JSON.parse(text ?? 'null') as EndpointInfo | null;
    return info?.pid === holder ? { ...info, password: readSecret(join(dataDir, SECRETS_DIR, READER_FILE)) } : null;
  } catch {
    // Being written this instant, or damaged: no endpoint to use.
    return null;
  }
}

/** `opts` with `clickhousePassword` read from `--clickhouse-password-file` when only the file is given. */
export function withPasswordFile<T extends { clickhousePassword?: string; clickhousePasswordFile?: string }>(opts: T): T {
  if (opts.clickhousePasswordFile === undefined || opts.clickhousePassword !== undefined) return opts;
  return { ...opts, clickhousePassword: secretOfFlag('clickhouse-password-file', opts.clickhousePasswordFile) };
}
