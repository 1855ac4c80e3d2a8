/**
 * A lane: one processing function on one shard. It decodes the shard's envelopes, hands
 * the records the function wants to it, tags every row with the sequence of the message
 * that completed it, and knows up to which sequence the stream may be acknowledged.
 *
 * Exactly-once rows: rows completed by a message at or below the sequence already committed
 * for (stream, function, shard, table, day partition) are suppressed, so re-reading after a
 * crash, a redelivery or a fresh consumer never writes a row twice.
 */
import type { Logger } from '../../lib/logger.js';
import { decodeEnvelope } from '../../schemas/envelope.js';
import { REC_HDR } from '../../schemas/layouts.js';
import { decodeRecord, kindName, nextRecordOffset, RECORD_VERSIONS } from '../../schemas/records.js';
import { partitionDay, type CommittedSeqs } from './committed.js';
import type { DeadLetters } from './dlq.js';
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

export interface LaneOptions {
  fn: ProcessingFunction;
  shard: number;
  /** Read-only queries against the rows' database. */
  query: LaneContext['query'];
  /** Identity of the stream the rows derive from: `<name>@<created>`. */
  streamId: string;
  /** First stream sequence the lane's consumer delivers (1: the start of the stream). */
  resumeFrom: number;
  /** Highest sequence already committed per table and day partition by earlier runs. */
  committed: CommittedSeqs;
  metrics: ProcessorMetrics;
  dlq: DeadLetters;
  log: Logger;
}

export class Lane {
  readonly fn: ProcessingFunction;
  readonly shard: number;
  /** First stream sequence the lane's consumer delivers. */
  readonly resumeFrom: number;
  /** Highest sequence fully handled. */
  processedSeq = 0;
  /** A windowed read (replay) reached its end on this lane. */
  windowDone = false;
  /** The lane's shard lease was lost: nothing more is handled, committed or acknowledged. */
  dropped = false;
  private impl!: FunctionLane;
  private readonly wanted: Uint8Array;
  /** Rows per table waiting for the next insert, in message order. */
  private pending = new Map<string, Row[]>();
  private pendingCount = 0;
  private currentSeq = 0;
  /** Reply subjects of handled, unacknowledged messages: [seq, reply]. */
  private unacked: [number, string][] = [];
  private readonly loggedOnce = new Set<string>();

  private constructor(private readonly o: LaneOptions) {
    this.fn = o.fn;
    this.shard = o.shard;
    this.resumeFrom = o.resumeFrom;
    this.wanted = new Uint8Array(0x10000);
    for (const k of o.fn.kinds) this.wanted[k] = 1;
  }

  /** A lane with its function's state created (which may read committed rows to resume). */
  static async create(o: LaneOptions): Promise<Lane> {
    const lane = new Lane(o);
    const fnLabel = { fn: o.fn.name };
    lane.impl = await o.fn.createLane({
      shard: o.shard,
      log: o.log,
      streamId: o.streamId,
      resuming: o.committed.any,
      resumeFrom: o.resumeFrom,
      query: o.query,
      emit: (table, row) => lane.emit(table, row),
      count: (event, n = 1) => o.metrics.events.inc({ ...fnLabel, event }, n),
    });
    return lane;
  }

  /** Rows waiting to be inserted. */
  get pendingRows(): number {
    return this.pendingCount;
  }

  private emit(table: string, row: Row): void {
    const seq = this.currentSeq;
    if (seq <= this.o.committed.get(table, partitionDay(table, row))) {
      this.o.metrics.rowsSuppressed.inc({ table });
      return;
    }
    row._stream = this.o.streamId;
    row._fn = this.fn.name;
    row._shard = this.shard;
    row._seq = seq;
    let rows = this.pending.get(table);
    if (!rows) this.pending.set(table, (rows = []));
    rows.push(row);
    this.pendingCount++;
  }

  /** Log a failure once per kind of failure, count it always. */
  private failure(kind: string, failure: string, detail: Record<string, unknown>): void {
    this.o.metrics.decodeFailures.inc({ fn: this.fn.name, kind, failure });
    const key = `${kind}/${failure}`;
    if (!this.loggedOnce.has(key)) {
      this.loggedOnce.add(key);
      this.o.log.warn({ fn: this.fn.name, shard: this.shard, kind, failure, ...detail }, 'undecodable input (logged once per kind)');
    }
  }

  /** Handle one message. Never throws: bad input is counted, logged once and dead-lettered. */
  handle(m: LaneMessage): void {
    if (m.seq <= this.processedSeq) return; // redelivered: already handled
    this.currentSeq = m.seq;
    this.o.metrics.messages.inc({ fn: this.fn.name });
    const env = decodeEnvelope(m.data);
    if (typeof env === 'string') {
      this.failure('envelope', env, { seq: m.seq, subject: m.subject });
      this.o.dlq.send(`envelope_${env}`, this.o.streamId, m.seq, m.subject, m.data);
    } else {
      const ctx: EnvelopeContext = { envelope: env, seq: m.seq, connPrefix: `${env.node}:${env.boot}:` };
      const recs = env.records;
      let off = 0;
      let handled = 0;
      while (off < recs.length) {
        if (off + REC_HDR.size > recs.length) {
          this.failure('record', 'truncated', { seq: m.seq, off });
          this.o.dlq.send('record_truncated', this.o.streamId, m.seq, m.subject, m.data);
          break;
        }
        const kind = recs.readUInt16LE(off + REC_HDR.fields.kind);
        const size = recs.readUInt32LE(off + REC_HDR.fields.size_bytes);
        if (size < REC_HDR.size) {
          this.failure(kindName(kind), 'bad_size', { seq: m.seq, off, size });
          this.o.dlq.send('record_bad_size', this.o.streamId, m.seq, m.subject, m.data);
          break;
        }
        if (this.wanted[kind]) {
          const rec = decodeRecord(recs, off);
          if (typeof rec === 'string') {
            this.failure(kindName(kind), rec, { seq: m.seq, off });
            this.o.dlq.send(`record_${rec}`, this.o.streamId, m.seq, m.subject, m.data);
          } else {
            try {
              this.impl.onRecord(rec, ctx);
              handled++;
            } catch (err) {
              this.failure(kindName(kind), 'function_error', { seq: m.seq, err: (err as Error).stack });
            }
          }
        } else if (!(kind in RECORD_VERSIONS)) {
          this.failure(kindName(kind), 'unknown_kind', { seq: m.seq });
        }
        off = nextRecordOffset(off, size);
      }
      try {
        this.impl.onEnvelope?.(ctx);
      } catch (err) {
        this.failure('envelope', 'function_error', { seq: m.seq, err: (err as Error).stack });
      }
      this.o.metrics.records.inc({ fn: this.fn.name }, handled);
    }
    this.processedSeq = m.seq;
    this.unacked.push([m.seq, m.reply]);
  }

  /** Take the pending rows for an insert; the lane keeps emitting into fresh buffers. */
  takeRows(): Map<string, Row[]> {
    const out = this.pending;
    this.pending = new Map();
    this.pendingCount = 0;
    return out;
  }

  /** After a successful insert of the rows of `table` for `day` up to `seq`. */
  committed(table: string, day: number, seq: number): void {
    this.o.committed.note(table, day, seq);
  }

  /** Highest sequence that may be acknowledged once the rows emitted so far are committed. */
  ackLimit(): number {
    return Math.min(this.processedSeq, this.impl.lowWaterMark() - 1);
  }

  /**
   * The reply subject to acknowledge now (AckAll: it covers every earlier message), given
   * that rows of messages up to `committedSeq` are in ClickHouse; null if nothing is due.
   */
  takeAck(committedSeq: number): string | null {
    const upTo = Math.min(committedSeq, this.impl.lowWaterMark() - 1);
    let reply: string | null = null;
    let i = 0;
    while (i < this.unacked.length && this.unacked[i][0] <= upTo) reply = this.unacked[i++][1];
    if (i) this.unacked = this.unacked.slice(i);
    return reply;
  }

  /** Messages between the low-water mark and the newest handled message. */
  lowWaterLag(): number {
    const lwm = this.impl.lowWaterMark();
    return lwm === Infinity ? 0 : Math.max(0, this.processedSeq - lwm + 1);
  }
}
