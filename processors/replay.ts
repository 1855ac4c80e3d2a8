/**
 * netrig replay: re-run processing over a time range of the raw stream (optionally one
 * region or node) into a separate database, for forensics — the raw stream keeps what the
 * live tables summarised. The replay's consumers start at the range's first message, stop
 * at the stream's end when the replay began or at the range's end, and are removed after.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { openClickHouse, type ClickHouse } from '../lib/clickhouse.js';
import { intValue, tokenValue } from '../lib/config.js';
import { ConfigError, LiveDatabaseError } from '../lib/errors.js';
import { logger } from '../lib/logger.js';
import { connectNats } from '../lib/nats.js';
import { clickhouseTarget, FUNCTIONS, rowOptions, selectFunctions, type ProcessInput } from './index.js';
import { replayProgress, seqAtTime, type ReplayProgress } from './replay-progress.js';
import { consumerName, Processor } from './runtime/processor.js';
import { liveMembers } from './runtime/leases.js';

export interface ReplayInput extends ProcessInput {
  from?: string;
  to?: string;
  region?: string;
  node?: string;
}

export interface ReplayResult {
  database: string;
  /** Rows in each table of the replay database afterwards. */
  rows: Record<string, number>;
}

/** Whether a stream consumer is the durable of a processor lane writing `database`. */
function isProcessorConsumer(name: string, database: string): boolean {
  const prefix = consumerName(database, '', 0).slice(0, -2);
  const m = name.startsWith(prefix) ? /^([a-z0-9-]+)_\d+$/.exec(name.slice(prefix.length)) : null;
  return Boolean(m && m[1].split('-').every((fn) => fn in FUNCTIONS));
}

function timeValue(key: string, v: string | undefined, fallback: Date): Date {
  if (v === undefined) return fallback;
  const d = new Date(/^\d+$/.test(v) ? Number(v) : v);
  if (Number.isNaN(d.getTime())) throw new ConfigError(key, `expected a time such as 2026-11-22T03:00:00Z, got ${JSON.stringify(v)}`);
  return d;
}

/** Told how far the replay is, every `intervalMs` while it runs and once at its end. */
export interface ReplayProgressListener {
  intervalMs: number;
  report(p: ReplayProgress): void;
}

/**
 * Call `listener` every interval until the returned stop, which reports once more. A report
 * still being gathered when the next is due is not doubled; a failed one is skipped (progress
 * is for people: the replay itself reports real failures).
 */
function reportProgress(processor: Processor, firstSeq: number, endSeq: number, listener: ReplayProgressListener): () => Promise<void> {
  const started = Date.now();
  let gathering: Promise<void> | null = null;
  const tick = () => {
    gathering ??= replayProgress(processor, firstSeq, endSeq, started).then(listener.report, () => undefined).finally(() => (gathering = null));
    return gathering;
  };
  const timer = setInterval(() => void tick(), listener.intervalMs);
  return async () => {
    clearInterval(timer);
    await gathering;
    await tick();
  };
}

/**
 * Run a replay; `shared.ch` writes through an already open ClickHouse (its database) instead;
 * `progress` is told how far it is as it goes.
 */
export async function runReplay(input: ReplayInput, shared?: { ch?: ClickHouse }, progress?: ReplayProgressListener): Promise<ReplayResult> {
  const log = logger('replay');
  const fromTime = timeValue('from', input.from, new Date(0));
  const toTime = timeValue('to', input.to, new Date());
  if (toTime <= fromTime) throw new ConfigError('to', 'must be after --from');
  const database = shared?.ch?.database ?? input.database ?? `replay_${new Date().toISOString().replace(/\D/g, '').slice(0, 14)}`;
  if (database === 'netrig') throw new ConfigError('database', 'a replay writes into a separate database: name one other than the live "netrig"');
  const functions = selectFunctions(input.functions);
  const shardCount = intValue('shards', input.shards ?? 16, 1, 1024);
  const nc = await connectNats(input, 'netrig-replay', log);
  try {
    const ch = shared?.ch ?? (await openClickHouse(clickhouseTarget({ ...input, database })));
    try {
      const stream = input.stream ?? 'NETRIG_RAW';
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(stream);
      // Processors' durable consumers name their database: a replay must not share it, or it
      // would delete and recreate their consumers and write beside them.
      const live: string[] = (await liveMembers(nc, database)).map((id) => `processor ${id}`);
      for await (const ci of jsm.consumers.list(stream)) if (isProcessorConsumer(ci.name, database)) live.push(`consumer ${ci.name}`);
      if (live.length) throw new LiveDatabaseError(database, live);
      const processor = await Processor.start({
        nc, ch, functions, log,
        shards: Array.from({ length: shardCount }, (_, i) => i),
        stream,
        subjectPrefix: input.subjectPrefix ?? 'netrig.raw',
        flushIntervalMs: intValue('flush-interval-ms', input.flushIntervalMs ?? 500, 10, 60_000),
        ttlDays: intValue('ttl-days', input.ttlDays ?? 30, 1, 3650),
        maxPendingRows: 200_000,
        rowOptions: rowOptions(input),
        window: {
          fromTime, toTime, endSeq: info.state.last_seq,
          region: input.region ? tokenValue('region', input.region) : undefined,
          node: input.node ? tokenValue('node', input.node) : undefined,
        },
      });
      let stopProgress: (() => Promise<void>) | null = null;
      if (progress) {
        // The window as stream sequences: its first message, and the last before --to (nothing after the stream's end now is read).
        const firstSeq = await seqAtTime(jsm, stream, fromTime, info.state.first_seq, info.state.last_seq);
        const endSeq = (await seqAtTime(jsm, stream, toTime, firstSeq, info.state.last_seq)) - 1;
        stopProgress = reportProgress(processor, firstSeq, endSeq, progress);
      }
      try {
        await processor.windowDone();
      } finally {
        await stopProgress?.();
      }
      await processor.stop();
      await processor.deleteConsumers();
      const rows: Record<string, number> = {};
      for (const t of new Set(functions.flatMap((f) => f.tables))) {
        const rs = await ch.client.query({ query: `SELECT count() AS n FROM ${database}.${t}`, format: 'JSONEachRow' });
        rows[t] = Number((await rs.json<{ n: string }>())[0].n);
      }
      log.info({ database, rows, from: fromTime.toISOString(), to: toTime.toISOString() }, 'replay done');
      return { database, rows };
    } finally {
      if (!shared?.ch) await ch.close();
    }
  } finally {
    await nc.close();
  }
}
