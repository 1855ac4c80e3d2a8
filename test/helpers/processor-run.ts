/**
 * Processor plumbing for integration and end-to-end tests: the embedded ClickHouse engine
 * in a temporary directory (one per test file: chdb allows one data path per process), a
 * database per test, the raw stream, envelopes published with their message ids, a
 * processor over an edge's stream, and waiting for rows.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { openClickHouse, type ClickHouse } from '../../lib/clickhouse.js';
import { logger } from '../../lib/logger.js';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { ProcessingFunction } from '../../processors/runtime/function.js';
import { Processor } from '../../processors/runtime/processor.js';
import { ensureStream } from '../../lib/raw-stream.js';
import { encodeEnvelope, envelopeSubject, messageId, type Envelope } from '../../schemas/envelope.js';
import { onExit } from './cleanup.js';
import { testLogger, type EdgeRun } from './edge-run.js';

let dataDir: string | null = null;
let unregister: (() => void) | null = null;
let counter = 0;

/** A fresh database in this file's embedded engine. */
export async function freshClickHouse(prefix = 't'): Promise<ClickHouse> {
  if (!dataDir) {
    dataDir = mkdtempSync(join(tmpdir(), `netrig-ch-${process.pid}-`));
    const dir = dataDir;
    unregister = onExit(`clickhouse data ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  }
  const database = `${prefix}_${process.pid}_${++counter}`;
  return openClickHouse({ dataDir, database });
}

/** Remove this file's embedded data directory (call once, after the last test). */
export function removeClickHouseData(): void {
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  unregister?.();
  dataDir = null;
}

export const STREAM = { name: 'NETRIG_RAW', subjectPrefix: 'netrig.raw', maxAgeSeconds: 3600, maxBytes: 1 << 30, duplicateWindowSeconds: 120, replicas: 1 };

/** Create the raw stream and publish envelopes as the edge would. */
export async function publishEnvelopes(nc: NatsConnection, envelopes: Envelope[], stream = STREAM): Promise<void> {
  await ensureStream(nc, stream, logger('test'));
  const js = jetstream(nc);
  for (const e of envelopes) {
    await js.publish(envelopeSubject(stream.subjectPrefix, e), encodeEnvelope(e), { msgID: messageId(e) });
  }
}

/** Rows of a query. */
export async function rows<T = Record<string, unknown>>(ch: ClickHouse, sql: string): Promise<T[]> {
  const rs = await ch.client.query({ query: sql, format: 'JSONEachRow' });
  return rs.json<T>();
}

/**
 * Poll `check` until it returns true, or fail after `timeoutMs` with `what` (and what
 * `detail` tells then: logs, state).
 */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, detail?: () => string | Promise<string>): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${detail ? `:\n${await detail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Wait until every lane of `p` has handled the last message stored on its shard's subjects
 * (`<subjectPrefix>.*.*.<shard>`), then flush: every row of what is on the stream now is
 * in ClickHouse.
 */
export async function drainProcessor(p: Processor, nc: NatsConnection, stream: string, subjectPrefix: string, timeoutMs = 30_000): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const lastOfShard = new Map<number, number>();
  for (const shard of new Set(p.lanes.map((l) => l.shard))) {
    // null when the shard has no message yet.
    const m = await jsm.streams.getMessage(stream, { last_by_subj: `${subjectPrefix}.*.*.${shard}` });
    lastOfShard.set(shard, m?.seq ?? 0);
  }
  let state = '';
  await waitFor(`processor on ${stream} to drain`, async () => {
    for (const lane of p.lanes) {
      const last = lastOfShard.get(lane.shard) ?? 0;
      if (lane.processedSeq < last) {
        state = `lane ${lane.name}/${lane.shard}: handled up to ${lane.processedSeq}, the shard's last message is ${last}`;
        return false;
      }
    }
    return true;
  }, timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message} (${state})`);
  });
  await p.flush();
}

/** A processor in this process over what an edge publishes, with its own connection and database. */
export interface EdgeProcessor {
  processor: Processor;
  nc: NatsConnection;
  ch: ClickHouse;
}

/**
 * Process an edge's stream (every shard) with `functions` into a fresh database named after
 * `dbPrefix`, flushing every 100 ms. The caller stops the processor and closes nc and ch.
 */
export async function startEdgeProcessor(natsUrl: string, edge: Pick<EdgeRun, 'stream' | 'subjectPrefix' | 'config'>, functions: ProcessingFunction[], dbPrefix: string): Promise<EdgeProcessor> {
  const ch = await freshClickHouse(dbPrefix);
  let nc: NatsConnection | null = null;
  try {
    nc = await connect({ servers: natsUrl, name: `netrig-test-processor-${process.pid}` });
    const processor = await Processor.start({
      nc, ch, functions,
      shards: Array.from({ length: edge.config.edge.shards }, (_, i) => i),
      stream: edge.stream, subjectPrefix: edge.subjectPrefix,
      flushIntervalMs: 100, ttlDays: 30, maxPendingRows: 100_000, log: testLogger('processor'),
    });
    return { processor, nc, ch };
  } catch (err) {
    await nc?.close().catch(() => undefined);
    await ch.close();
    throw err;
  }
}
