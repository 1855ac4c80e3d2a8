/**
 * Byte-stream reassembly for L7 parsers, one reassembler per direction of a connection.
 *
 * The kernel numbers every byte a socket moves in one direction (`posBytes`). Records
 * normally arrive in that order, but they may be lost, duplicated or slightly reordered,
 * and a syscall's bytes may be only partly captured. The reassembler turns records into
 * an in-order sequence of `data` and `gap` events that covers every position exactly
 * once from the first record on: parsers never see a byte twice and always know how many
 * bytes they did not see, and why.
 */
import { DataFlags } from '../../schemas/records.js';

/** The fields of a sock_data record the reassembler reads (`SockDataRecord` has them all). */
export interface StreamRecord {
  /** Position of payload[0] in this direction of the socket. */
  posBytes: number;
  /** Offset of payload[0] within the syscall's bytes. */
  offsetBytes: number;
  /** Bytes the whole syscall moved. */
  lenBytes: number;
  /** `DataFlags` bits. */
  dataFlags: number;
  /** Captured bytes. */
  payload: Buffer;
  /** CLOCK_MONOTONIC ns of the syscall. */
  tsNs: number;
}

/** Why bytes of a stream will never be seen. */
export type GapCause =
  /** A syscall moved them but capture was truncated or had no user buffer (sendfile). */
  | 'uncaptured'
  /** Their records never arrived (ring buffer or transport loss, or held too long). */
  | 'lost';

/**
 * One in-order piece of a direction's byte stream; consecutive events are contiguous.
 * `data.data` may be a view into the caller's record buffer: consume it before returning.
 */
export type StreamEvent =
  | {
      type: 'data';
      /** Stream position of data[0]. */
      pos: number;
      data: Buffer;
      tsNs: number;
      /** data[0] is the first byte a send/receive syscall moved: parsers resynchronise there. */
      syscallStart: boolean;
    }
  | { type: 'gap'; pos: number; len: number; tsNs: number; cause: GapCause };

/** Counters of one reassembler; the caller may sum them across connections. */
export interface ReassemblyStats {
  /** Bytes declared lost: their records never arrived in time. */
  lostBytes: number;
  /** Bytes moved by syscalls but not captured (truncation, no user buffer). */
  uncapturedBytes: number;
  /** Records that arrived after a later record and filled a hole. */
  reordered: number;
  /** Records dropped because every byte they cover was already delivered or declared lost. */
  duplicates: number;
  /** Bytes cut from the front of records overlapping bytes already delivered. */
  overlapBytes: number;
  /** Records with impossible positions or lengths, dropped. */
  invalid: number;
}

export interface ReassemblerOptions {
  /** Most captured bytes held while waiting for a missing record (default 256 KiB). */
  maxPendingBytes?: number;
  /** Most records held while waiting for a missing record (default 64). */
  maxPendingChunks?: number;
  /**
   * Longest wait, in record time, for a missing record before its bytes are declared
   * lost (default 10 ms). Reordering comes from concurrent syscalls on one socket and
   * spans microseconds; a record still missing after this is lost.
   */
  maxHoldNs?: number;
  /** Counters to add to, shared by the reassemblers of a table (default: its own). */
  stats?: ReassemblyStats;
  /**
   * Position of the next byte, when known before the first record (a reassembler taking
   * over from one that was let go at that position); the first record's by default.
   */
  nextPos?: number;
}

export const DEFAULT_MAX_PENDING_BYTES = 256 * 1024;
export const DEFAULT_MAX_PENDING_CHUNKS = 64;
export const DEFAULT_MAX_HOLD_NS = 10_000_000;

/** A record that arrived ahead of the next expected position. */
interface Held {
  start: number;
  data: Buffer;
  /** End of its bytes including a known-uncaptured tail. */
  end: number;
  tsNs: number;
  syscallStart: boolean;
}

export type StreamSink = (ev: StreamEvent) => void;

function isCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** Reassembles one direction of one connection. Never throws on record contents. */
export class StreamReassembler {
  readonly stats: ReassemblyStats;
  private next = -1;
  /** Held records sorted by start; short in practice, so a plain array. */
  private readonly held: Held[] = [];
  private heldBytes = 0;
  private readonly maxPendingBytes: number;
  private readonly maxPendingChunks: number;
  private readonly maxHoldNs: number;

  constructor(opts: ReassemblerOptions = {}) {
    this.stats = opts.stats ?? { lostBytes: 0, uncapturedBytes: 0, reordered: 0, duplicates: 0, overlapBytes: 0, invalid: 0 };
    this.maxPendingBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.maxPendingChunks = opts.maxPendingChunks ?? DEFAULT_MAX_PENDING_CHUNKS;
    this.maxHoldNs = opts.maxHoldNs ?? DEFAULT_MAX_HOLD_NS;
    this.next = opts.nextPos ?? -1;
  }

  /** Next expected position, or -1 before the first record. */
  get nextPos(): number {
    return this.next;
  }

  /** Captured bytes held for reordering; at most `maxPendingBytes` between calls. */
  get pendingBytes(): number {
    return this.heldBytes;
  }

  /** Records held for reordering; at most `maxPendingChunks` between calls. */
  get pendingChunks(): number {
    return this.held.length;
  }

  /** Feed one record; in-order events go to `out` before this returns. */
  push(rec: StreamRecord, out: StreamSink): void {
    const { posBytes: start, offsetBytes, lenBytes, payload } = rec;
    const syscallEnd = start - offsetBytes + lenBytes;
    if (!isCount(start) || !isCount(offsetBytes) || !isCount(lenBytes) || offsetBytes > start
        || !Number.isSafeInteger(start + payload.length) || !Number.isSafeInteger(syscallEnd)) {
      this.stats.invalid++;
      return;
    }
    const dataEnd = start + payload.length;
    // The kernel flags the syscall's last record when it moved more than was captured:
    // the rest of the syscall is known, it just was not copied.
    const tail = (rec.dataFlags & (DataFlags.Truncated | DataFlags.NoBuffer)) !== 0;
    const end = tail && syscallEnd > dataEnd ? syscallEnd : dataEnd;
    if (end === start) return;
    if (this.next < 0) this.next = start;
    if (end <= this.next) {
      this.stats.duplicates++;
      return;
    }
    const held: Held = { start, data: payload, end, tsNs: rec.tsNs, syscallStart: offsetBytes === 0 };
    if (start > this.next) {
      this.hold(held, out);
      this.expire(rec.tsNs, out);
      return;
    }
    if (this.held.length > 0) this.stats.reordered++;
    this.deliver(held, out);
    this.drain(out);
    this.expire(rec.tsNs, out);
  }

  /**
   * Declare lost the holes that records held for longer than `maxHoldNs` wait on. `nowNs`
   * is record time (e.g. of any record of the connection), never wall-clock, so replays
   * give the same events. `push` does this with each record's own time.
   */
  expire(nowNs: number, out: StreamSink): void {
    while (this.held.length > 0 && nowNs - this.held[0].tsNs >= this.maxHoldNs) this.skipToHeld(out);
  }

  /** Deliver everything held, declaring the holes before it lost (connection closed or idle). */
  flush(out: StreamSink): void {
    while (this.held.length > 0) this.skipToHeld(out);
  }

  private hold(h: Held, out: StreamSink): void {
    let i = this.held.length;
    while (i > 0 && this.held[i - 1].start > h.start) i--;
    const prev = this.held[i - 1];
    if (prev && prev.start === h.start && prev.end >= h.end) {
      this.stats.duplicates++;
      return;
    }
    // A copy, because a view would pin the whole envelope blob while the record waits.
    h.data = Buffer.from(h.data);
    this.held.splice(i, 0, h);
    this.heldBytes += h.data.length;
    while (this.heldBytes > this.maxPendingBytes || this.held.length > this.maxPendingChunks) {
      this.skipToHeld(out);
    }
  }

  /** Declare the hole before the first held record lost, then deliver what follows it. */
  private skipToHeld(out: StreamSink): void {
    const first = this.held[0];
    if (first.start > this.next) {
      const len = first.start - this.next;
      this.stats.lostBytes += len;
      out({ type: 'gap', pos: this.next, len, tsNs: first.tsNs, cause: 'lost' });
      this.next = first.start;
    }
    this.drain(out);
  }

  /** Deliver held records that now start at or before the next expected position. */
  private drain(out: StreamSink): void {
    while (this.held.length > 0 && this.held[0].start <= this.next) {
      const h = this.held.shift()!;
      this.heldBytes -= h.data.length;
      if (h.end <= this.next) this.stats.duplicates++;
      else this.deliver(h, out);
    }
  }

  /** Emit the part of `h` from the next expected position on; `h.start <= next < h.end`. */
  private deliver(h: Held, out: StreamSink): void {
    const from = this.next;
    const dataEnd = h.start + h.data.length;
    if (from > h.start) this.stats.overlapBytes += Math.min(from, dataEnd) - h.start;
    if (from < dataEnd) {
      out({
        type: 'data', pos: from, data: from === h.start ? h.data : h.data.subarray(from - h.start),
        tsNs: h.tsNs, syscallStart: h.syscallStart && from === h.start,
      });
    }
    const tailFrom = Math.max(from, dataEnd);
    if (h.end > tailFrom) {
      this.stats.uncapturedBytes += h.end - tailFrom;
      out({ type: 'gap', pos: tailFrom, len: h.end - tailFrom, tsNs: h.tsNs, cause: 'uncaptured' });
    }
    this.next = h.end;
  }
}
