/**
 * `netrig up` writes where its ClickHouse endpoint listens into the data dir, so commands
 * run while it holds the store (`netrig query`, `netrig report`) go through it.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dataDirHolder } from '../lib/clickhouse.js';

const FILE = 'endpoint.json';

export interface EndpointInfo {
  url: string;
  user: string;
  database: string;
  pid: number;
}

export function writeEndpoint(dataDir: string, info: EndpointInfo): () => void {
  const path = join(dataDir, FILE);
  writeFileSync(path, JSON.stringify(info));
  return () => rmSync(path, { force: true });
}

/** The endpoint of the live `netrig up` holding `dataDir`, if any. */
export function readEndpoint(dataDir: string): EndpointInfo | null {
  const holder = dataDirHolder(dataDir);
  if (!holder) return null;
  try {
    const info = JSON.parse(readFileSync(join(dataDir, FILE), 'utf8')) as EndpointInfo;
    return info.pid === holder ? info : null;
  } catch {
    return null;
  }
}
