/**
 * DNS over TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by a two-byte length.
 * A splitter turns the StreamEvents of one direction into whole messages, whatever the
 * syscall and record boundaries.
 *
 * A gap inside a message whose length is known keeps the framing: the message is handed
 * on up to its first missing byte (its header and question are usually there; a response
 * larger than the capture limit still pairs). Any other gap loses the framing: the bytes
 * it hides held lengths we never saw. The splitter then
 * waits for a syscall boundary (senders write a length prefix and its message together, in
 * one syscall) where a length prefix and a plausible header follow, and counts the resync.
 * A probe may read on into the next event, but a new syscall start abandons it for itself.
 * A stream first seen after its start (mid-life, or its first record lost) starts that way.
 */
import type { StreamEvent } from '../l7/reassembly.js';
import { HEADER_BYTES } from './wire.js';

const PREFIX_BYTES = 2;
/** Prefix and header: enough to judge whether a frame start is plausible. */
const PROBE_BYTES = PREFIX_BYTES + HEADER_BYTES;
/** Smallest resource record (root name, type, class, ttl, rdlength). */
const MIN_RR_BYTES = 11;
/** Smallest question (root name, type, class). */
const MIN_QUESTION_BYTES = 5;

/** One framed message. `msg` may be a view into the event's data: consume it before returning. */
export interface DnsTcpMessage {
  msg: Buffer;
  /** Stream position of the message's length prefix. */
  pos: number;
  /** Time of the event holding the prefix's first byte. */
  firstTsNs: number;
  /** Time of the event holding the message's last byte. */
  lastTsNs: number;
  /**
   * Bytes of the message were not seen (a gap inside the frame: capture cut short, records
   * lost); `msg` holds the part before the first missing byte.
   */
  partial: boolean;
}

/** Counters of one or more splitters. */
export interface DnsTcpStats {
  /** Messages framed. */
  messages: number;
  /** Messages framed with bytes missing inside them (kept up to the first missing byte). */
  partialMessages: number;
  /** Gap events seen (framing lost if it was held). */
  gaps: number;
  /** Times framing was lost: a gap, or an implausible frame in sync. */
  desyncs: number;
  /** Times framing was found again at a syscall boundary. */
  resyncs: number;
  /** Syscall starts tried while out of sync that did not look like a frame. */
  resyncMisses: number;
  /** Bytes passed over while out of sync (data bytes only; gaps are counted by reassembly). */
  skippedBytes: number;
}

export function newDnsTcpStats(): DnsTcpStats {
  return { messages: 0, partialMessages: 0, gaps: 0, desyncs: 0, resyncs: 0, resyncMisses: 0, skippedBytes: 0 };
}

export interface DnsTcpSplitterOptions {
  stats?: DnsTcpStats;
  /** The stream was open before capture began: position 0 is not a message boundary. */
  midlife?: boolean;
}

/**
 * Can a frame start here? Strict enough that random bytes at a syscall start rarely pass:
 * opcode assigned, Z bit clear, at most one question, and counts the length can hold.
 */
export function plausibleFrame(b: Buffer, off: number): boolean {
  const len = b.readUInt16BE(off);
  if (len < HEADER_BYTES) return false;
  const h = off + PREFIX_BYTES;
  const flags = b.readUInt16BE(h + 2);
  const opcode = (flags >> 11) & 0xf;
  if (opcode === 3 || opcode > 6 || (flags & 0x0040) !== 0) return false;
  const qd = b.readUInt16BE(h + 4);
  if (qd > 1) return false;
  const rrs = b.readUInt16BE(h + 6) + b.readUInt16BE(h + 8) + b.readUInt16BE(h + 10);
  return qd * MIN_QUESTION_BYTES + rrs * MIN_RR_BYTES <= len - HEADER_BYTES;
}

type State =
  /** Framing held: the next byte starts or continues a frame. */
  | 'sync'
  /** Framing lost: wait for a syscall start. */
  | 'lost'
  /** Framing lost, a frame tried from a syscall start: kept only if its probe is plausible. */
  | 'probe';

/** Splits one direction of a DNS-over-TCP stream into messages. Never throws on input. */
export class DnsTcpSplitter {
  readonly stats: DnsTcpStats;
  private state: State | 'start';
  /** Prefix (and, while probing, header) bytes of the frame being read. */
  private readonly head = Buffer.alloc(PROBE_BYTES);
  private headLen = 0;
  /** The message being assembled once its length is known; null while reading the head. */
  private body: Buffer | null = null;
  private bodyLen = 0;
  private framePos = 0;
  private firstTs = 0;
  /** Offset in the message of its first byte not seen (a gap inside the frame); -1 when none. */
  private holeAt = -1;

  constructor(
    private readonly onMessage: (m: DnsTcpMessage) => void,
    opts: DnsTcpSplitterOptions = {},
  ) {
    this.stats = opts.stats ?? newDnsTcpStats();
    this.state = opts.midlife ? 'lost' : 'start';
  }

  /** Bytes held (allocated) for a frame not yet complete: at most 2 + 65535. */
  get bufferedBytes(): number {
    return this.body ? PREFIX_BYTES + this.bodyLen : this.headLen;
  }

  /** In sync and between messages: nothing would be lost by starting afresh here. */
  get atBoundary(): boolean {
    return this.state !== 'lost' && this.state !== 'probe' && this.headLen === 0 && this.body === null;
  }

  /** Framing is held (false while waiting for a syscall boundary after a gap). */
  get inSync(): boolean {
    return this.state === 'sync' || this.state === 'start';
  }

  push(ev: StreamEvent): void {
    if (ev.type === 'gap') {
      this.stats.gaps++;
      const left = this.body ? this.bodyLen - (this.headLen - PREFIX_BYTES) : 0;
      if (this.state === 'sync' && this.body && ev.len > 0 && ev.len <= left) {
        // Inside a frame of known length (a capture cut short, a lost record): framing
        // holds, and the message is kept up to its first missing byte.
        if (this.holeAt < 0) this.holeAt = this.headLen - PREFIX_BYTES;
        this.headLen += ev.len;
        if (ev.len === left) this.emit(this.body, ev.tsNs);
        return;
      }
      if (this.state !== 'lost') this.stats.desyncs++;
      this.reset('lost');
      return;
    }
    if (this.state === 'start') this.state = ev.pos === 0 ? 'sync' : 'lost';
    if (this.state === 'probe' && ev.syscallStart) {
      // A probe still short of a header when the next syscall starts: that start is a
      // likelier frame start than bytes left over from before it.
      this.stats.resyncMisses++;
      this.stats.skippedBytes += this.headLen;
      this.reset('lost');
    }
    const d = ev.data;
    let i = 0;
    while (i < d.length) {
      if (this.state === 'lost') {
        if (!(ev.syscallStart && i === 0)) {
          this.stats.skippedBytes += d.length - i;
          return;
        }
        this.state = 'probe';
      }
      if (this.body === null) {
        if (this.headLen === 0) {
          this.framePos = ev.pos + i;
          this.firstTs = ev.tsNs;
          // Usual case: the whole frame inside this event. Emit a view, copy nothing.
          const avail = d.length - i;
          if (avail >= PROBE_BYTES) {
            const len = d.readUInt16BE(i);
            if (len >= HEADER_BYTES && avail >= PREFIX_BYTES + len && (this.state !== 'probe' || plausibleFrame(d, i))) {
              if (this.state === 'probe') {
                this.stats.resyncs++;
                this.state = 'sync';
              }
              this.emit(d.subarray(i + PREFIX_BYTES, i + PREFIX_BYTES + len), ev.tsNs);
              i += PREFIX_BYTES + len;
              continue;
            }
          }
        }
        // Reading the head: the prefix, plus the header while probing.
        const want = this.state === 'probe' ? PROBE_BYTES : PREFIX_BYTES;
        const n = Math.min(want - this.headLen, d.length - i);
        d.copy(this.head, this.headLen, i, i + n);
        this.headLen += n;
        i += n;
        if (this.headLen < want) return;
        if (!this.startFrame()) {
          // The rest of this event does not start at a syscall boundary: skipped.
          this.stats.skippedBytes += d.length - i;
          return;
        }
        if (this.headLen - PREFIX_BYTES === this.bodyLen) this.emit(this.body!, ev.tsNs);
        continue;
      }
      const filled = this.headLen - PREFIX_BYTES;
      const need = this.bodyLen - filled;
      const n = Math.min(need, d.length - i);
      if (this.holeAt < 0) d.copy(this.body, filled, i, i + n);
      this.headLen += n;
      i += n;
      if (n === need) this.emit(this.body, ev.tsNs);
    }
  }

  /** The head is complete: check it and allocate the message. False when the probe fails. */
  private startFrame(): boolean {
    const len = this.head.readUInt16BE(0);
    if (this.state === 'probe') {
      if (!plausibleFrame(this.head, 0)) {
        this.stats.resyncMisses++;
        this.stats.skippedBytes += this.headLen;
        this.reset('lost');
        return false;
      }
      this.stats.resyncs++;
      this.state = 'sync';
    } else if (len < HEADER_BYTES) {
      this.stats.desyncs++;
      this.stats.skippedBytes += this.headLen;
      this.reset('lost');
      return false;
    }
    this.body = Buffer.allocUnsafe(len);
    this.bodyLen = len;
    this.head.copy(this.body, 0, PREFIX_BYTES, this.headLen);
    return true;
  }

  private emit(msg: Buffer, lastTs: number): void {
    const partial = this.holeAt >= 0;
    const m: DnsTcpMessage = {
      msg: partial ? msg.subarray(0, this.holeAt) : msg, pos: this.framePos, firstTsNs: this.firstTs, lastTsNs: lastTs, partial,
    };
    this.reset('sync');
    this.stats.messages++;
    if (partial) this.stats.partialMessages++;
    this.onMessage(m);
  }

  private reset(state: State): void {
    this.state = state;
    this.holeAt = -1;
    this.headLen = 0;
    this.body = null;
    this.bodyLen = 0;
  }
}
