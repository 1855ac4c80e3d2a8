/**
 * `netrig up` writes where its ClickHouse endpoint listens into the data dir, so commands
 * run while it holds the store (`netrig query`, `netrig report`) go through it.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { dataDirHolder, readDataDirFile, writeDataDirFile } from '../lib/data-dir.js';

const FILE = 'endpoint.json';

export interface EndpointInfo {
  url: string;
  user: string;
  database: string;
  pid: number;
}

/** Write endpoint.json (0600, never through a symlink planted there); returns its removal. */
export function writeEndpoint(dataDir: string, info: EndpointInfo): () => void {
  writeDataDirFile(dataDir, FILE, JSON.stringify(info));
  return () => rmSync(join(dataDir, FILE), { force: true });
}

/** The endpoint of the live `netrig up` holding `dataDir`, if any. */
export function readEndpoint(dataDir: string): EndpointInfo | null {
  const holder = dataDirHolder(dataDir);
  if (!holder) return null;
  const text = readDataDirFile(dataDir, FILE);
  try {
    const info = JSON.parse(text ?? 'null') as EndpointInfo | null;
    return info?.pid === holder ? info : null;
  } catch {
    // Being written this instant, or damaged: no endpoint to use.
    return null;
  }
}
