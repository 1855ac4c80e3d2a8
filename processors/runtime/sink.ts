/**
 * The ClickHouse sink: per flush, one insert per table and day partition, holding the rows
 * of every lane. Such an insert is one block in one partition, so it lands whole or not at
 * all (an insert spanning partitions does not); its deduplication token is built from the
 * lanes' sequence ranges, so a retried insert is stored once. Rows are committed only for
 * lanes whose shard lease is valid at the moment of each attempt (processors/runtime/leases.ts).
 *
 * A block the engine refuses for its data or the table's schema (a retry would get the same
 * answer) is split in halves until the refused rows stand alone: those go to the dead-letter
 * stream with the engine's reason, the rest is committed, and no table stalls behind one bad
 * row. The halves are inserted in order, so whatever a crash leaves committed is a prefix of
 * each lane's rows and the committed sequences still tell what to write again.
 *
 * Inserts are retried until they land or the processor's stop deadline passes (the `abandon`
 * signal): then the insert running is aborted and the flush fails, so nothing it held is
 * acknowledged and the stream delivers those envelopes again at the next start.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { clickHouseCode, isRefusedInsert, type ClickHouse } from '../../lib/clickhouse.js';
import { NetrigError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { Row } from './function.js';
import { partitionDay } from './committed.js';
import type { Lane } from './lane.js';
import type { ProcessorMetrics } from './metrics.js';

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;

/** An insert given up at the processor's stop deadline: its rows are not committed, their envelopes not acknowledged. */
export class InsertAbandonedError extends NetrigError {
  constructor(table: string, options?: ErrorOptions) {
    super('ERR_INSERT_ABANDONED', `insert into ${table} abandoned: the processor's stop deadline passed (its envelopes are read again at the next start)`, options);
  }
}

/** Row → its values as one JSON array, per column list. */
const rowWriters = new Map<string, (row: Row) => string>();

/**
 * A function that writes a row's values in `columns`' order as a JSON array. Generated, as
 * fast-json-stringify and pino generate theirs: reading each property by a literal name and
 * stringifying one array literal costs two thirds of filling an array in a loop (2.1 against
 * 3.0 µs per 36-column row). Column names come from netrig's own functions and are embedded
 * as JSON string literals, never as code.
 */
function rowWriter(columns: readonly string[]): (row: Row) => string {
  const key = columns.join('\0');
  let w = rowWriters.get(key);
  if (!w) {
    w = new Function('r', `return JSON.stringify([${columns.map((c) => `r[${JSON.stringify(c)}]`).join(',')}]);`) as (row: Row) => string;
    rowWriters.set(key, w);
  }
  return w;
}

/**
 * Rows as JSONCompactEachRow: values under one column list, which the engine parses in about
 * two thirds of the time the same row keyed by name takes.
 */
export function compactRows(rows: readonly Row[], columns: readonly string[]): Buffer {
  const write = rowWriter(columns);
  const lines = new Array<string>(rows.length);
  for (let i = 0; i < rows.length; i++) lines[i] = write(rows[i]);
  return Buffer.from(`${lines.join('\n')}\n`);
}

/**
 * The settings of a block's insert: its deduplication token, and a block size above its rows
 * so it is parsed as one block. On a cluster (`cluster`) the insert goes through a Distributed
 * table and must be synchronous (distributed_foreground_insert, alias insert_distributed_sync):
 * it then succeeds only once every shard's part is written, and a failure reaches the sink to
 * be retried (schemas/cluster-ddl.ts); in the default background mode it would return once
 * queued on the receiving host.
 */
export function insertSettings(token: string, rows: number, cluster?: string): Record<string, string | number> {
  const settings = { insert_deduplication_token: token, insert_deduplicate: 1, max_insert_block_size: Math.max(1_048_576, rows + 1) };
  return cluster === undefined ? settings : { ...settings, distributed_foreground_insert: 1 };
}

/**
 * Insert `rows` into `table` as one block (it lands whole or not at all) carrying the
 * deduplication `token`; `signal` aborts it. Every function's rows for a table carry every
 * column (in any order).
 */
export async function insertBlock(ch: ClickHouse, table: string, rows: Row[], token: string, signal?: AbortSignal): Promise<void> {
  const columns = Object.keys(rows[0]);
  await ch.insert({
    table: `${ch.database}.${table}`,
    columns,
    body: compactRows(rows, columns),
    format: 'JSONCompactEachRow',
    signal,
    settings: insertSettings(token, rows.length, ch.cluster),
  });
}

/** Which lanes' rows may be committed: the processor's leases, checked before every attempt. */
export interface CommitFence {
  /** The lane's lease is gone: its rows must never be written. */
  dropped(lane: Lane): boolean;
  /** The lane's lease is valid now: its rows may be written. */
  valid(lane: Lane): boolean;
}

/** Rows of one table and day partition, by the lane that emitted them. */
interface Block {
  table: string;
  day: number;
  parts: Map<Lane, Row[]>;
}

/** How long an insert waits, between checks, for a lease being renewed. */
const FENCE_POLL_MS = 50;

/** Where rows the engine refused go: the dead-letter stream, with the engine's reason. */
export type RefusedRows = (table: string, row: Row, err: Error) => void;

/** Told of each block of rows once it is committed (the rows the engine refused included: dead-lettered, they were still traffic). */
export type CommittedRows = (table: string, rows: readonly Row[]) => void;

/** Where a processor's rows go at each flush: ClickHouse, or an exporter's destination (processors/otlp/). */
export interface RowSink {
  /**
   * Send every lane's pending rows (lane.takeRows()), asking the fence before each attempt;
   * resolves with the rows sent once they are safe (only then are their messages
   * acknowledged), rejects when given up at the processor's stop deadline.
   */
  flush(lanes: readonly Lane[], fence: CommitFence): Promise<number>;
}

export class ClickHouseSink implements RowSink {
  private readonly loggedRefusals = new Set<string>();

  /** `abandon`: aborted at the processor's stop deadline; every insert then fails at once. */
  constructor(
    private readonly ch: ClickHouse,
    private readonly metrics: ProcessorMetrics,
    private readonly log: Logger,
    private readonly refused: RefusedRows,
    private readonly abandon: AbortSignal,
    private readonly onCommitted?: CommittedRows,
  ) {}

  /**
   * Insert every lane's pending rows (one block per table and day partition), retrying
   * until it succeeds or `abandon` is aborted (then InsertAbandonedError), and mark each block committed in its lanes as it
   * lands. Before each attempt the fence is asked: rows of a lane that lost its lease leave
   * the block, and the insert waits while a lease is being renewed. Returns rows written.
   */
  async flush(lanes: readonly Lane[], fence: CommitFence): Promise<number> {
    const blocks = new Map<string, Block>();
    for (const lane of lanes) {
      for (const [table, rows] of lane.takeRows()) {
        for (const row of rows) {
          const day = partitionDay(table, row);
          const key = `${table}|${day}`;
          let b = blocks.get(key);
          if (!b) blocks.set(key, (b = { table, day, parts: new Map() }));
          let part = b.parts.get(lane);
          if (!part) b.parts.set(lane, (part = []));
          part.push(row);
        }
      }
    }
    let written = 0;
    for (const b of blocks.values()) {
      const landed = await this.insert(b, fence);
      if (!landed) continue;
      for (const [lane, rows] of b.parts) {
        lane.committed(b.table, b.day, rows);
        this.onCommitted?.(b.table, rows);
      }
      this.metrics.rows.inc({ table: b.table }, landed);
      written += landed;
    }
    return written;
  }

  /** Insert a block; the rows written (0 when every lane in it lost its lease). */
  private async insert(b: Block, fence: CommitFence): Promise<number> {
    const { table } = b;
    let backoff = RETRY_MIN_MS;
    for (;;) {
      if (this.abandon.aborted) throw new InsertAbandonedError(table);
      for (const lane of b.parts.keys()) if (fence.dropped(lane)) b.parts.delete(lane);
      if (!b.parts.size) return 0;
      if (![...b.parts.keys()].every((lane) => fence.valid(lane))) {
        await this.pause(FENCE_POLL_MS);
        continue;
      }
      const ranges = [...b.parts].map(([lane, rows]) => `${lane.name}/${lane.shard}:${rows[0]._seq}-${rows[rows.length - 1]._seq}:${rows.length}`);
      const token = createHash('sha1').update(`${this.ch.database}.${table}|${b.day}|${ranges.sort().join('|')}`).digest('hex');
      const rows = [...b.parts.values()].flat();
      const end = this.metrics.insertSeconds.startTimer({ table });
      try {
        const written = await this.insertOrSplit(table, rows, token);
        end();
        return written;
      } catch (err) {
        if (this.abandon.aborted) throw new InsertAbandonedError(table, { cause: err });
        this.metrics.insertErrors.inc({ table });
        this.log.warn({ table, rows: rows.length, err: (err as Error).message }, 'insert failed; retrying');
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, RETRY_MAX_MS);
      }
    }
  }

  /** Wait `ms`, or less if the inserts are abandoned meanwhile. */
  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.abandon }).catch(() => undefined);
  }

  /**
   * Insert `rows`; if the engine refuses them, insert each half (its own token) and so on
   * down to single rows, which are dead-lettered. Returns the rows written. Any other error
   * is thrown for the caller to retry the whole block (the halves that landed are
   * deduplicated by their tokens).
   */
  private async insertOrSplit(table: string, rows: Row[], token: string): Promise<number> {
    try {
      await insertBlock(this.ch, table, rows, token, this.abandon);
      return rows.length;
    } catch (err) {
      if (!isRefusedInsert(err)) throw err;
      if (rows.length === 1) {
        this.refuse(table, rows[0], err as Error);
        return 0;
      }
      const mid = rows.length >> 1;
      return await this.insertOrSplit(table, rows.slice(0, mid), `${token}.0`)
        + await this.insertOrSplit(table, rows.slice(mid), `${token}.1`);
    }
  }

  private refuse(table: string, row: Row, err: Error): void {
    const code = clickHouseCode(err) ?? '';
    this.metrics.rowsRefused.inc({ table, code });
    const key = `${table}/${code}`;
    if (!this.loggedRefusals.has(key)) {
      this.loggedRefusals.add(key);
      this.log.error({ table, code, err: err.message.slice(0, 500), fn: row._fn, seq: row._seq }, 'ClickHouse refused a row: dead-lettered, the rest committed (logged once per table and code)');
    }
    this.refused(table, row, err);
  }
}
