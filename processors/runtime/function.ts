/**
 * The contract between the runtime and a processing function. A function owns only its
 * protocol: it receives decoded records of the kinds it asks for and emits rows. The
 * runtime owns NATS, batching, acknowledgements, ClickHouse and metrics.
 *
 * A shard's functions run in one lane (./lane.ts): it decodes each envelope once and hands
 * each record to every function that wants its kind. A function keeps its own state for the
 * shard (`createLane`), or it is an L7 protocol (`protocol`): the lane keeps one connection
 * table for all of them (processors/l7/connection-table.ts) and hands each connection to the
 * protocols that recognise it. Everything a function emits while one stream message is
 * handled is tagged with that message's sequence; the runtime commits rows and acknowledges
 * messages so that a restart re-reads from the lane's low-water mark and never writes a row
 * twice.
 */
import type { L7Protocol } from '../l7/protocol.js';
import type { Logger } from '../../lib/logger.js';
import type { Envelope } from '../../schemas/envelope.js';
import type { DecodedRecord } from '../../schemas/records.js';

/** A row for one ClickHouse table: column name → JSON-serialisable value. */
export type Row = Record<string, string | number | boolean | null | string[]>;

/** The envelope a record came in, with the stream position of its message. */
export interface EnvelopeContext {
  envelope: Envelope;
  /** Stream sequence of the message. */
  seq: number;
  /** `${node}:${boot}:` — prefix of connection keys unique across nodes and reboots. */
  connPrefix: string;
}

/** What the runtime gives a function for one shard. */
export interface LaneContext {
  shard: number;
  log: Logger;
  /** Identity of the stream (`<name>@<created>`), as rows carry it in `_stream`. */
  streamId: string;
  /**
   * True when earlier runs committed rows for this function and shard: the lane re-reads
   * messages a previous owner handled, and may read its own committed rows to resume.
   */
  resuming: boolean;
  /** First stream sequence this lane reads (1: the start of the stream). */
  resumeFrom: number;
  /** Run a read-only query against the rows' database (`{db}` is replaced by its name). */
  query<T>(sql: string, params?: Record<string, unknown>): Promise<T[]>;
  /** Emit a row completed by the message being handled. */
  emit(table: string, row: Row): void;
  /** Count something the function saw (parse errors, resyncs, ...), exported as a metric. */
  count(event: string, n?: number): void;
}

/** One function's state for one shard. */
export interface FunctionLane {
  /** A record of a wanted kind, in stream order. */
  onRecord(rec: DecodedRecord, ctx: EnvelopeContext): void;
  /** Called once per message after its records: time moved to the node's `envelope.mono`. */
  onEnvelope?(ctx: EnvelopeContext): void;
  /**
   * The oldest stream sequence whose records this lane would need again to rebuild its
   * state after a crash; Infinity when it holds nothing that cannot be rebuilt from later
   * messages.
   */
  lowWaterMark(): number;
  /** The lane closes (its shard went to another processor): let go of shared resources. */
  release?(): void;
  /** Connections it tracks, and of them parked (state dropped until their next data). */
  connections?(): { tracked: number; parked: number };
}

/**
 * A processing function: a name (the `_fn` of its rows), the record kinds it wants and the
 * tables it writes; either its own state per shard or an L7 protocol.
 */
export interface ProcessingFunction {
  readonly name: string;
  readonly kinds: readonly number[];
  readonly tables: readonly string[];
  createLane?(ctx: LaneContext): FunctionLane | Promise<FunctionLane>;
  readonly protocol?: L7Protocol<unknown>;
}
