/**
 * DNS over TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by a two-byte length.
 * A splitter turns the StreamEvents of one direction into whole messages, whatever the
 * syscall and record boundaries, on the shared framing reader (processors/l7/framing.ts).
 *
 * A gap inside a message whose length is known keeps the framing: the message is handed
 * on up to its first missing byte (its header and question are usually there; a response
 * larger than the capture limit still pairs). A gap over a length prefix, or running on
 * past a message's end, loses the framing (the message it cut is still handed on): the
 * bytes it hides held lengths we never saw. The splitter then waits for a
 * syscall boundary (senders write a length prefix and its message together, in one
 * syscall) where a length prefix and a plausible header follow, and counts the resync.
 * A stream first seen after its start (mid-life, or its first record lost) starts that way.
 */
import { Cursor } from '../l7/cursor.js';
import { FramingReader, type FrameFormat, type FrameSink, type FramingLoss } from '../l7/framing.js';
import type { StreamEvent } from '../l7/reassembly.js';
import { HEADER_BYTES, MIN_QUESTION_BYTES, MIN_RR_BYTES } from './wire.js';

const PREFIX_BYTES = 2;
/** Prefix and header: enough to judge whether a frame start is plausible. */
const PROBE_BYTES = PREFIX_BYTES + HEADER_BYTES;

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
 * Can a message of `len` bytes start with the DNS header at the cursor? Strict enough
 * that random bytes at a syscall start rarely pass: opcode assigned, Z bit clear, at most
 * one question, and counts the length can hold.
 */
function plausibleMessage(len: number, header: Cursor): boolean {
  if (len < HEADER_BYTES) return false;
  header.skip(2); // id
  const flags = header.u16be();
  const opcode = (flags >> 11) & 0xf;
  if (opcode === 3 || opcode > 6 || (flags & 0x0040) !== 0) return false;
  const qd = header.u16be();
  if (qd > 1) return false;
  const rrs = header.u16be() + header.u16be() + header.u16be();
  return qd * MIN_QUESTION_BYTES + rrs * MIN_RR_BYTES <= len - HEADER_BYTES;
}

const probeCursor = new Cursor();

/** Can a frame (length prefix and DNS header, 14 bytes) start at `b[off]`? */
export function plausibleFrame(b: Buffer, off: number): boolean {
  const c = probeCursor.reset(b, off, off + PROBE_BYTES);
  return plausibleMessage(c.u16be(), c);
}

const DNS_TCP_FORMAT: FrameFormat = {
  headerBytes: PREFIX_BYTES,
  probeBytes: PROBE_BYTES,
  preface: null,
  payloadLength: (prefix) => prefix.u16be(),
  valid: (_prefix, len) => len >= HEADER_BYTES,
  plausible: (probe, len) => {
    probe.skip(PREFIX_BYTES);
    return plausibleMessage(len, probe);
  },
  opens: null,
};

const EMPTY = Buffer.alloc(0);

/** Splits one direction of a DNS-over-TCP stream into messages. Never throws on input. */
export class DnsTcpSplitter implements FrameSink {
  readonly stats: DnsTcpStats;
  private readonly reader: FramingReader;
  /** The whole message as one view into an event, when it arrived in one piece. */
  private view: Buffer | null = null;
  /** The message assembled from pieces; null until a piece arrives that is not all of it. */
  private body: Buffer | null = null;
  private bodyLen = 0;
  /** Message bytes passed so far, seen or in gaps. */
  private filled = 0;
  private framePos = 0;
  private firstTs = 0;
  /** Offset in the message of its first byte not seen (a gap inside the frame); -1 when none. */
  private holeAt = -1;

  constructor(
    private readonly onMessage: (m: DnsTcpMessage) => void,
    opts: DnsTcpSplitterOptions = {},
  ) {
    this.stats = opts.stats ?? newDnsTcpStats();
    this.reader = new FramingReader(DNS_TCP_FORMAT, this, !opts.midlife);
  }

  /** Bytes held (allocated) for a frame not yet complete: at most 65535. */
  get bufferedBytes(): number {
    return this.reader.bufferedBytes + (this.body ? this.bodyLen : 0);
  }

  /** In sync and between messages: nothing would be lost by starting afresh here. */
  get atBoundary(): boolean {
    return this.reader.inSync && this.reader.idle;
  }

  /** Framing is held (false while waiting for a syscall boundary after a gap). */
  get inSync(): boolean {
    return this.reader.inSync;
  }

  push(ev: StreamEvent): void {
    if (ev.type === 'gap') this.stats.gaps++;
    this.reader.push(ev);
  }

  onFrameStart(_prefix: Cursor, len: number, pos: number, tsNs: number, resynced: boolean): void {
    if (resynced) this.stats.resyncs++;
    this.bodyLen = len;
    this.filled = 0;
    this.framePos = pos;
    this.firstTs = tsNs;
    this.holeAt = -1;
  }

  onPayload(chunk: Buffer | null, len: number): void {
    if (chunk === null) {
      if (this.holeAt < 0) this.holeAt = this.filled;
    } else if (this.holeAt < 0) {
      // Usual case: the whole message inside one event. Keep a view, copy nothing.
      if (len === this.bodyLen) {
        this.view = chunk;
      } else {
        this.body ??= Buffer.allocUnsafe(this.bodyLen);
        chunk.copy(this.body, this.filled);
      }
    }
    this.filled += len;
  }

  onFrameEnd(tsNs: number): void {
    const whole = this.view ?? this.body ?? EMPTY;
    const partial = this.holeAt >= 0;
    const m: DnsTcpMessage = {
      msg: partial ? whole.subarray(0, this.holeAt) : whole, pos: this.framePos, firstTsNs: this.firstTs, lastTsNs: tsNs, partial,
    };
    this.view = null;
    this.body = null;
    this.stats.messages++;
    if (partial) this.stats.partialMessages++;
    this.onMessage(m);
  }

  onDesync(cause: FramingLoss): void {
    if (cause !== 'midstream') this.stats.desyncs++;
    this.view = null;
    this.body = null;
  }

  onSkipped(bytes: number, probeMissed: boolean): void {
    this.stats.skippedBytes += bytes;
    if (probeMissed) this.stats.resyncMisses++;
  }
}
