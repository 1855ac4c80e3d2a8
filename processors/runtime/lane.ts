/**
 * A lane: the processor's functions on one shard, in one pass. It decodes each of the
 * shard's envelopes once, hands each record to every function that wants its kind (the L7
 * protocols through the shard's one connection table), tags every row with its function and
 * the sequence of the message that completed it, and knows up to which sequence the stream
 * may be acknowledged.
 *
 * Exactly-once rows: rows completed by a message at or below the sequence already committed
 * for (stream, function, shard, table, day partition) are suppressed, so re-reading after a
 * crash, a redelivery or a fresh consumer never writes a row twice.
 */
import type { Logger } from '../../lib/logger.js';
import { decodeEnvelope } from '../../schemas/envelope.js';
import { REC_HDR } from '../../schemas/layouts.js';
import { decodeRecord, KIND_NAMES, nextRecordOffset, REC_KIND_MAX, RECORD_VERSIONS } from '../../schemas/records.js';
import { ConnectionTable, type ConnectionBudget, type TableMember } from '../l7/connection-table.js';
import { noResumeState } from '../l7/protocol.js';
import { CommittedSeqs, partitionDay } from './committed.js';
import type { DeadLetters } from './dlq.js';
import type { RowOptions } from '../l7/path-mask.js';
import type { EnvelopeContext, FunctionLane, LaneContext, ProcessingFunction, Row } from './function.js';
import type { ProcessorMetrics } from './metrics.js';

/** A stream message as a lane needs it. */
export interface LaneMessage {
  seq: number;
  subject: string;
  data: Uint8Array;
  /** Reply subject acknowledging this message (and, with AckAll, all before it). */
  reply: string;
}

/**
 * The function name of the connection table's own rows (capture_losses of connections it
 * forgot), present in every lane that runs an L7 protocol.
 */
export const CONNECTION_TABLE_FN = 'l7';

/**
 * A set of functions as one name, sorted and joined by '-': a lane's consumer is named by it,
 * and processors with the same name share the shards (./leases.ts).
 */
export function functionGroup(functions: readonly string[]): string {
  return [...functions].sort().join('-');
}

/** Tables a set of functions writes, the connection table's included. */
export function laneTables(functions: readonly ProcessingFunction[]): string[] {
  const tables = new Set(functions.flatMap((f) => f.tables));
  if (functions.some((f) => f.protocol)) tables.add('capture_losses');
  return [...tables];
}

export interface LaneOptions {
  functions: readonly ProcessingFunction[];
  /** The lane's name (its consumer's and metrics'), when not its functions' group: an exporter's (processors/otlp/). */
  name?: string;
  shard: number;
  /** Read-only queries against the rows' database. */
  query: LaneContext['query'];
  /** Identity of the stream the rows derive from: `<name>@<created>`. */
  streamId: string;
  /** First stream sequence the lane's consumer delivers (1: the start of the stream). */
  resumeFrom: number;
  /** Highest sequence already committed per table and day partition by earlier runs, per function. */
  committed: Map<string, CommittedSeqs>;
  /** Connections the processor's lanes may track together. */
  budget: ConnectionBudget;
  metrics: ProcessorMetrics;
  dlq: DeadLetters;
  log: Logger;
  /** What rows keep (query values in paths); masked by default. */
  rowOptions?: Readonly<RowOptions>;
}

/**
 * A record kind as a metric label and log key: its name, or `unknown` for every kind no
 * decoder knows, so forged kinds (any of 65,536) cannot multiply label sets and log lines.
 */
function kindLabel(kind: number): string {
  return KIND_NAMES[kind] ?? 'unknown';
}

export class Lane {
  /** The lane's functions as one name (functionGroup), or the exporter's it runs for. */
  readonly name: string;
  readonly shard: number;
  /** First stream sequence the lane's consumer delivers. */
  readonly resumeFrom: number;
  /** Highest sequence fully handled. */
  processedSeq = 0;
  /** A windowed read (replay) reached its end on this lane. */
  windowDone = false;
  /** The lane's shard lease was lost: nothing more is handled, committed or acknowledged. */
  dropped = false;
  /** Each function's state (the connection table once for every L7 protocol). */
  private impls: FunctionLane[] = [];
  /** The states that want each record kind. */
  private readonly byKind: FunctionLane[][] = Array.from({ length: REC_KIND_MAX }, () => []);
  /** Rows per table waiting for the next insert, in message order. */
  private pending = new Map<string, Row[]>();
  private pendingCount = 0;
  private currentSeq = 0;
  /** Reply subjects of handled, unacknowledged messages: [seq, reply]. */
  private unacked: [number, string][] = [];
  private readonly loggedOnce = new Set<string>();

  private constructor(private readonly o: LaneOptions) {
    this.name = o.name ?? functionGroup(o.functions.map((f) => f.name));
    this.shard = o.shard;
    this.resumeFrom = o.resumeFrom;
  }

  /** A lane with its functions' state created (which may read committed rows to resume). */
  static async create(o: LaneOptions): Promise<Lane> {
    const lane = new Lane(o);
    const members: TableMember[] = [];
    for (const fn of o.functions) {
      const ctx = lane.context(fn.name);
      const p = fn.protocol;
      if (p) members.push({ p, ctx, resumed: p.resume && ctx.resuming ? await p.resume.load(ctx) : noResumeState() });
      else if (fn.createLane) lane.add(await fn.createLane(ctx), fn.kinds);
      else throw new TypeError(`function ${fn.name} has neither a lane nor a protocol`);
    }
    if (members.length) {
      lane.add(new ConnectionTable(members, o.budget, lane.context(CONNECTION_TABLE_FN), o.rowOptions), [...new Set(o.functions.flatMap((f) => (f.protocol ? f.kinds : [])))]);
    }
    return lane;
  }

  private add(impl: FunctionLane, kinds: readonly number[]): void {
    this.impls.push(impl);
    for (const k of kinds) this.byKind[k].push(impl);
  }

  /** What function `fn` gets: its rows are tagged and suppressed under its name. */
  private context(fn: string): LaneContext {
    let committed = this.o.committed.get(fn);
    if (!committed) this.o.committed.set(fn, (committed = new CommittedSeqs()));
    const c = committed;
    return {
      shard: this.o.shard,
      log: this.o.log.child({ fn }),
      streamId: this.o.streamId,
      resuming: c.any,
      resumeFrom: this.o.resumeFrom,
      query: this.o.query,
      emit: (table, row) => this.emit(fn, c, table, row),
      count: (event, n = 1) => this.o.metrics.events.inc({ fn, event }, n),
    };
  }

  /** Rows waiting to be inserted. */
  get pendingRows(): number {
    return this.pendingCount;
  }

  private emit(fn: string, committed: CommittedSeqs, table: string, row: Row): void {
    const seq = this.currentSeq;
    if (seq <= committed.get(table, partitionDay(table, row))) {
      this.o.metrics.rowsSuppressed.inc({ table });
      return;
    }
    row._stream = this.o.streamId;
    row._fn = fn;
    row._shard = this.shard;
    row._seq = seq;
    let rows = this.pending.get(table);
    if (!rows) this.pending.set(table, (rows = []));
    rows.push(row);
    this.pendingCount++;
  }

  /** Log a failure once per kind of failure, count it always. */
  private failure(kind: string, failure: string, detail: Record<string, unknown>): void {
    this.o.metrics.decodeFailures.inc({ fn: this.name, kind, failure });
    const key = `${kind}/${failure}`;
    if (!this.loggedOnce.has(key)) {
      this.loggedOnce.add(key);
      this.o.log.warn({ fns: this.name, shard: this.shard, kind, failure, ...detail }, 'undecodable input (logged once per kind)');
    }
  }

  /**
   * Handle one message. Never throws: bad input is counted, logged once per kind of failure,
   * and a message that is rejected (its envelope, a record's framing or a record the
   * functions read cannot be decoded, or the lane itself failed on it) is counted once in
   * messagesRejected and offered to the dead-letter stream once, under its first reason.
   */
  handle(m: LaneMessage): void {
    if (m.seq <= this.processedSeq) return; // redelivered: already handled
    this.currentSeq = m.seq;
    this.o.metrics.messages.inc({ fn: this.name });
    let rejected: string | null;
    try {
      rejected = this.dispatch(m);
    } catch (err) {
      // A bug met by hostile input: the message is dead-lettered and passed, never retried
      // into a crash loop.
      this.failure('envelope', 'lane_error', { seq: m.seq, err: (err as Error).stack });
      rejected = 'lane_error';
    }
    if (rejected) {
      this.o.metrics.messagesRejected.inc({ fn: this.name, reason: rejected });
      this.o.dlq.send(rejected, this.o.streamId, m.seq, m.subject, m.data);
    }
    this.processedSeq = m.seq;
    this.unacked.push([m.seq, m.reply]);
  }

  /**
   * Decode a message's envelope and hand its records to the functions; returns why the
   * message is rejected (its first failure that rejects it), or null.
   */
  private dispatch(m: LaneMessage): string | null {
    const env = decodeEnvelope(m.data);
    if (typeof env === 'string') {
      this.failure('envelope', env, { seq: m.seq, subject: m.subject });
      return `envelope_${env}`;
    }
    let rejected: string | null = null;
    const ctx: EnvelopeContext = { envelope: env, seq: m.seq, connPrefix: `${env.node}:${env.boot}:` };
    const recs = env.records;
    let off = 0;
    let handled = 0;
    while (off < recs.length) {
      if (off + REC_HDR.size > recs.length) {
        this.failure('record', 'truncated', { seq: m.seq, off });
        rejected ??= 'record_truncated';
        break;
      }
      const kind = recs.readUInt16LE(off + REC_HDR.fields.kind);
      const size = recs.readUInt32LE(off + REC_HDR.fields.size_bytes);
      // A size past the bytes present would read beyond the record, or (near 2^32) wrap the
      // next offset back onto this one.
      if (size < REC_HDR.size || size > recs.length - off) {
        this.failure(kindLabel(kind), 'bad_size', { seq: m.seq, off, recordKind: kind, size });
        rejected ??= 'record_bad_size';
        break;
      }
      const wanting = kind < REC_KIND_MAX ? this.byKind[kind] : undefined;
      if (wanting?.length) {
        const rec = decodeRecord(recs, off);
        if (typeof rec === 'string') {
          this.failure(kindLabel(kind), rec, { seq: m.seq, off });
          rejected ??= `record_${rec}`;
        } else {
          handled++;
          for (const impl of wanting) {
            try {
              impl.onRecord(rec, ctx);
            } catch (err) {
              this.failure(kindLabel(kind), 'function_error', { seq: m.seq, err: (err as Error).stack });
            }
          }
        }
      } else if (!(kind in RECORD_VERSIONS)) {
        this.failure(kindLabel(kind), 'unknown_kind', { seq: m.seq, recordKind: kind });
      }
      off = nextRecordOffset(off, size);
    }
    for (const impl of this.impls) {
      try {
        impl.onEnvelope?.(ctx);
      } catch (err) {
        this.failure('envelope', 'function_error', { seq: m.seq, err: (err as Error).stack });
      }
    }
    this.o.metrics.records.inc({ fn: this.name }, handled);
    return rejected;
  }

  /** Take the pending rows for an insert; the lane keeps emitting into fresh buffers. */
  takeRows(): Map<string, Row[]> {
    const out = this.pending;
    this.pending = new Map();
    this.pendingCount = 0;
    return out;
  }

  /** After a successful insert of `rows` (this lane's, of `table` for `day`). */
  committed(table: string, day: number, rows: readonly Row[]): void {
    for (const row of rows) this.o.committed.get(row._fn as string)?.note(table, day, row._seq as number);
  }

  /** Highest sequence that may be acknowledged once the rows emitted so far are committed. */
  ackLimit(): number {
    return Math.min(this.processedSeq, this.lowWaterMark() - 1);
  }

  /** The oldest sequence any function would need again (Infinity: none). */
  private lowWaterMark(): number {
    let lwm = Infinity;
    for (const impl of this.impls) lwm = Math.min(lwm, impl.lowWaterMark());
    return lwm;
  }

  /** Connections its functions track, and of them parked. */
  connections(): { tracked: number; parked: number } {
    const n = { tracked: 0, parked: 0 };
    for (const impl of this.impls) {
      const c = impl.connections?.();
      if (c) {
        n.tracked += c.tracked;
        n.parked += c.parked;
      }
    }
    return n;
  }

  /** The lane closes: its functions let go of what they hold. */
  close(): void {
    for (const impl of this.impls) impl.release?.();
  }

  /**
   * The reply subject to acknowledge now (AckAll: it covers every earlier message), given
   * that rows of messages up to `committedSeq` are in ClickHouse; null if nothing is due.
   */
  takeAck(committedSeq: number): string | null {
    const upTo = Math.min(committedSeq, this.lowWaterMark() - 1);
    let reply: string | null = null;
    let i = 0;
    while (i < this.unacked.length && this.unacked[i][0] <= upTo) reply = this.unacked[i++][1];
    if (i) this.unacked = this.unacked.slice(i);
    return reply;
  }

  /** Messages between the low-water mark and the newest handled message. */
  lowWaterLag(): number {
    const lwm = this.lowWaterMark();
    return lwm === Infinity ? 0 : Math.max(0, this.processedSeq - lwm + 1);
  }
}
