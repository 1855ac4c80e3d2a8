/**
 * Incremental HTTP/2 frame parser (RFC 9113 §4, §6) for one direction of a connection, fed
 * the reassembler's in-order `data` and `gap` events (processors/l7/reassembly.ts) through
 * the shared framing reader (processors/l7/framing.ts), which finds the frames.
 *
 * Frame content is streamed, not buffered: DATA data and header block fragments go to the
 * owner chunk by chunk (`onContent`), padding and the fields before content (Pad Length,
 * HEADERS priority, PUSH_PROMISE's promised stream) are stripped here. Only the 9-byte
 * header (24 bytes for the preface) and the payload of control frames, up to
 * CONTROL_PAYLOAD_BYTES, are held. Results depend only on the bytes, the gaps and the
 * syscall boundaries, never on how the bytes are split into events.
 *
 * A direction seen from the connection's start begins in sync: with the client preface
 * ("PRI * HTTP/2.0...") or with a frame (the server's SETTINGS). Otherwise, and after
 * framing is lost, the parser skips bytes to a syscall boundary (`syscallStart`) that
 * begins a plausible frame header — a known type other than CONTINUATION, only the flags
 * that type defines, the reserved bit clear, the stream id and length rules of the type,
 * a length within the maximum frame size, and the owner's stream rules for the direction
 * (`plausible`) — or the preface. A gap inside a frame's payload keeps sync: the frame's
 * length says where the next frame starts; its content is reported as unseen (a null
 * chunk). A gap over a frame header, or past a frame's end, loses sync.
 */
import { Cursor } from '../l7/cursor.js';
import { FramingReader, type FrameFormat, type FrameSink, type FramingLoss } from '../l7/framing.js';
import type { StreamEvent } from '../l7/reassembly.js';

export const FRAME_HEADER_BYTES = 9;
/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** SETTINGS_MAX_FRAME_SIZE before any SETTINGS, and its least allowed value. */
export const DEFAULT_MAX_FRAME_SIZE = 16384;
/** Largest SETTINGS_MAX_FRAME_SIZE (and largest frame length the header can carry). */
export const MAX_FRAME_SIZE_LIMIT = 2 ** 24 - 1;
/** Payload bytes of a control frame (SETTINGS, PING, GOAWAY, ...) held; the rest is counted. */
export const CONTROL_PAYLOAD_BYTES = 1024;

export const FrameType = {
  DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7,
  WINDOW_UPDATE: 8, CONTINUATION: 9,
} as const;

export const FrameFlags = {
  END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20,
} as const;

/** Names of frame types for counters; 'unknown' for extension types (ignored, RFC 9113 §5.5). */
export const FRAME_TYPE_NAMES = [
  'data', 'headers', 'priority', 'rst_stream', 'settings', 'push_promise', 'ping', 'goaway', 'window_update', 'continuation',
] as const;
export type FrameTypeName = (typeof FRAME_TYPE_NAMES)[number] | 'unknown';

/** Flags each known type defines (RFC 9113 §6), by type. */
const DEFINED_FLAGS = [0x09, 0x2d, 0, 0, 0x01, 0x0c, 0x01, 0, 0, 0x04];

/** Why a parser lost sync. */
export type FrameDesyncCause = 'gap' | 'parse_error' | 'discontinuity';

/** The cause counted for each way the framing reader loses sync; null: sync was never held. */
const DESYNC_CAUSES: Record<FramingLoss, FrameDesyncCause | null> = {
  midstream: null, gap: 'gap', discontinuity: 'discontinuity', invalid: 'parse_error', preface: 'parse_error',
  not_opening: 'parse_error',
};

/** Counted framing errors. */
export type FrameErrorKind =
  /** A direction began with 'P' but not with the preface. */
  | 'preface'
  /** A frame header breaking its type's stream id or length rules (sync is lost). */
  | 'header'
  /** Pad Length (and priority or promised id) longer than the payload: the frame is skipped. */
  | 'padding'
  /** A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE: parsed anyway. */
  | 'oversized';

/** Counters of one or more frame parsers; pass one object to many parsers to sum them. */
export interface Http2FrameStats {
  frames: number;
  frameTypes: Record<FrameTypeName, number>;
  prefaces: number;
  desyncs: Record<FrameDesyncCause, number>;
  /** Times a frame header (or the preface) was found after sync was lost or at a mid-life start. */
  resyncs: number;
  /** Data bytes skipped while out of sync. */
  discardedBytes: number;
  /** Data bytes after the parser stopped. */
  ignoredBytes: number;
  /** Frame bytes (payload) in gaps, sync kept. */
  frameGapBytes: number;
  frameErrors: Record<FrameErrorKind, number>;
}

export function newFrameStats(): Http2FrameStats {
  return {
    frames: 0,
    frameTypes: {
      data: 0, headers: 0, priority: 0, rst_stream: 0, settings: 0, push_promise: 0, ping: 0, goaway: 0,
      window_update: 0, continuation: 0, unknown: 0,
    },
    prefaces: 0,
    desyncs: { gap: 0, parse_error: 0, discontinuity: 0 },
    resyncs: 0, discardedBytes: 0, ignoredBytes: 0, frameGapBytes: 0,
    frameErrors: { preface: 0, header: 0, padding: 0, oversized: 0 },
  };
}

/** One frame, created at its header and handed to the owner at start, content and end. */
export interface Http2Frame {
  type: number;
  flags: number;
  /** Stream identifier, reserved bit cleared. */
  streamId: number;
  /** Payload length from the header. */
  length: number;
  /** Stream position of the header's first byte. */
  pos: number;
  /** CLOCK_MONOTONIC ns of the event holding the header's first byte. */
  firstTsNs: number;
  /** CLOCK_MONOTONIC ns of the event holding the last byte (set at the end). */
  lastTsNs: number;
  /** Pad Length of a PADDED frame; 0 when unpadded or not seen. */
  padLength: number;
  /**
   * Bytes of content: DATA data and header block fragments without padding and prefix
   * fields, the whole payload for other types. -1 until known; when the prefix fields were
   * not seen, the rest of the payload (padding included) counts as content.
   */
  contentLength: number;
  /** PUSH_PROMISE's promised stream id (0 when not seen). */
  promisedId: number;
  /** Payload bytes in gaps. */
  lostBytes: number;
  /** Found while resynchronising. */
  resynced: boolean;
  /** Pad Length (or prefix fields) exceeded the payload: content not reported. */
  malformed: boolean;
}

/** What the parser tells its owner (the connection). */
export interface Http2FrameHooks {
  /** The client preface ended at `pos`. */
  onPreface(pos: number, tsNs: number): void;
  /** A frame header was read (and, for padded frames, nothing else yet). */
  onFrameStart(f: Http2Frame): void;
  /**
   * Content of a DATA frame or a header block fragment (HEADERS, CONTINUATION,
   * PUSH_PROMISE), in order; `chunk` is null for bytes in a gap. The chunk is a view into
   * the event: consume it before returning.
   */
  onContent(f: Http2Frame, chunk: Buffer | null, len: number, tsNs: number): void;
  /**
   * The frame ended. `payload` holds a control frame's payload (at most
   * CONTROL_PAYLOAD_BYTES; valid during the call); empty for content frames.
   */
  onFrameEnd(f: Http2Frame, payload: Buffer): void;
  /** Sync was lost: bytes are skipped until a plausible frame header. */
  onDesync(cause: FrameDesyncCause): void;
  /** Whether a frame of `type` on `streamId` is plausible in this direction (resynchronising only). */
  plausible(type: number, flags: number, streamId: number): boolean;
}

export interface Http2FrameParserOptions {
  /** Position 0 of this direction is the connection's start (not a mid-life capture). */
  fromStart?: boolean;
  stats?: Http2FrameStats;
}

/** Types whose content goes to `onContent`. */
function isContentType(type: number): boolean {
  return type === FrameType.DATA || type === FrameType.HEADERS || type === FrameType.CONTINUATION
    || type === FrameType.PUSH_PROMISE;
}

/** Stream id and length rules of a frame header (RFC 9113 §6); true when they hold. */
export function frameHeaderValid(type: number, flags: number, streamId: number, length: number): boolean {
  switch (type) {
    case FrameType.DATA:
    case FrameType.HEADERS:
    case FrameType.CONTINUATION:
    case FrameType.PUSH_PROMISE:
      return streamId !== 0;
    case FrameType.PRIORITY:
      return streamId !== 0 && length === 5;
    case FrameType.RST_STREAM:
      return streamId !== 0 && length === 4;
    case FrameType.SETTINGS:
      return streamId === 0 && length % 6 === 0 && ((flags & FrameFlags.ACK) === 0 || length === 0);
    case FrameType.PING:
      return streamId === 0 && length === 8;
    case FrameType.GOAWAY:
      return streamId === 0 && length >= 8;
    case FrameType.WINDOW_UPDATE:
      return length === 4;
    default:
      return true;
  }
}

/** Where the parser is inside a frame's payload. */
type Phase =
  /** Collecting Pad Length / priority / promised id. */
  | 'pre'
  | 'content'
  /** Padding, or the payload of a malformed frame. */
  | 'skip';

/**
 * HTTP/2 framing for the shared reader: the 9-byte header and the preface; resync judges
 * a header by its type's rules, the receiver's frame size and the owner's stream rules.
 */
class Http2FrameFormat implements FrameFormat {
  readonly headerBytes = FRAME_HEADER_BYTES;
  readonly probeBytes = FRAME_HEADER_BYTES;
  readonly preface = PREFACE;
  readonly opens = null;
  maxFrameSize = DEFAULT_MAX_FRAME_SIZE;

  constructor(private readonly hooks: Http2FrameHooks) {}

  payloadLength(header: Cursor): number {
    return header.u24be();
  }

  valid(header: Cursor, length: number): boolean {
    header.skip(3);
    const type = header.u8();
    const flags = header.u8();
    return frameHeaderValid(type, flags, header.u32be() & 0x7fffffff, length);
  }

  plausible(header: Cursor, length: number): boolean {
    header.skip(3);
    const type = header.u8();
    const flags = header.u8();
    const streamId = header.u32be();
    if (type >= FrameType.CONTINUATION || (flags & ~DEFINED_FLAGS[type]) !== 0 || streamId > 0x7fffffff) return false;
    if (length > this.maxFrameSize || !frameHeaderValid(type, flags, streamId, length)) return false;
    return this.hooks.plausible(type, flags, streamId);
  }
}

/** Incremental frame parser of one direction, on the shared framing reader. Never throws on input bytes. */
export class Http2FrameParser implements FrameSink {
  readonly stats: Http2FrameStats;
  private readonly hooks: Http2FrameHooks;
  private readonly format: Http2FrameFormat;
  private readonly reader: FramingReader;
  private frame: Http2Frame | null = null;
  private phase: Phase = 'content';
  /** Bytes left in the current phase. */
  private remaining = 0;
  /** Payload bytes of the current frame not yet consumed. */
  private payloadLeft = 0;
  private readonly pre = Buffer.alloc(FRAME_HEADER_BYTES);
  private readonly preCursor = new Cursor();
  private preNeed = 0;
  private preLen = 0;
  private readonly ctl = Buffer.alloc(CONTROL_PAYLOAD_BYTES);
  private ctlLen = 0;

  constructor(hooks: Http2FrameHooks, opts: Http2FrameParserOptions = {}) {
    this.hooks = hooks;
    this.stats = opts.stats ?? newFrameStats();
    this.format = new Http2FrameFormat(hooks);
    this.reader = new FramingReader(this.format, this, opts.fromStart ?? false);
  }

  /**
   * SETTINGS_MAX_FRAME_SIZE of the receiving side (set by the owner from the other
   * direction's SETTINGS): longer frames are counted, and resynchronisation accepts no
   * longer frame.
   */
  get maxFrameSize(): number {
    return this.format.maxFrameSize;
  }

  set maxFrameSize(size: number) {
    this.format.maxFrameSize = size;
  }

  /** Input bytes held: a partial header, prefix fields, a control payload. */
  get bufferedBytes(): number {
    return this.reader.bufferedBytes + this.preLen + this.ctlLen;
  }

  /** Not inside a frame (or the preface): nothing would be lost by starting afresh here. */
  get idle(): boolean {
    return this.reader.idle;
  }

  /** Framing is known (not skipping to a syscall boundary). */
  get inSync(): boolean {
    return this.reader.inSync;
  }

  /** Feed the next event of this direction. */
  push(ev: StreamEvent): void {
    if (this.reader.stopped) {
      if (ev.type === 'data') this.stats.ignoredBytes += ev.data.length;
      return;
    }
    this.reader.push(ev);
  }

  /** Stop for good (the connection closed); a frame in progress is abandoned. */
  stop(): void {
    this.reader.stop();
    this.frame = null;
    this.preLen = 0;
    this.ctlLen = 0;
  }

  // ---- reader events -----------------------------------------------------------------

  onPreface(endPos: number, tsNs: number, resynced: boolean): void {
    if (resynced) this.stats.resyncs++;
    this.stats.prefaces++;
    this.hooks.onPreface(endPos, tsNs);
  }

  onFrameStart(header: Cursor, length: number, pos: number, tsNs: number, resynced: boolean): void {
    header.skip(3);
    const type = header.u8();
    const flags = header.u8();
    const streamId = header.u32be() & 0x7fffffff;
    if (resynced) this.stats.resyncs++;
    const f: Http2Frame = {
      type, flags, streamId, length, pos, firstTsNs: tsNs, lastTsNs: tsNs, padLength: 0,
      contentLength: -1, promisedId: 0, lostBytes: 0, resynced, malformed: false,
    };
    this.frame = f;
    this.stats.frames++;
    this.stats.frameTypes[type < FRAME_TYPE_NAMES.length ? FRAME_TYPE_NAMES[type] : 'unknown']++;
    if (length > this.maxFrameSize) this.stats.frameErrors.oversized++;
    this.payloadLeft = length;
    this.ctlLen = 0;
    this.preLen = 0;
    this.preNeed = 0;
    if (type === FrameType.DATA || type === FrameType.HEADERS || type === FrameType.PUSH_PROMISE) {
      if (flags & FrameFlags.PADDED) this.preNeed++;
      if (type === FrameType.HEADERS && flags & FrameFlags.PRIORITY) this.preNeed += 5;
      if (type === FrameType.PUSH_PROMISE) this.preNeed += 4;
    }
    this.hooks.onFrameStart(f);
    if (this.frame !== f) return;
    if (this.preNeed > length) {
      this.malformed();
    } else if (this.preNeed > 0) {
      this.phase = 'pre';
      this.remaining = this.preNeed;
    } else {
      this.beginContent();
    }
  }

  onPayload(chunk: Buffer | null, len: number, tsNs: number): void {
    const f = this.frame;
    if (!f) return;
    if (tsNs > f.lastTsNs) f.lastTsNs = tsNs;
    if (chunk === null) {
      this.payloadGap(f, len, tsNs);
      return;
    }
    let off = 0;
    while (off < len && this.frame === f) {
      const take = Math.min(this.remaining, len - off);
      this.remaining -= take;
      this.payloadLeft -= take;
      switch (this.phase) {
        case 'pre':
          chunk.copy(this.pre, this.preLen, off, off + take);
          this.preLen += take;
          if (this.remaining === 0) this.preDone();
          break;
        case 'content':
          if (isContentType(f.type)) {
            this.hooks.onContent(f, chunk.subarray(off, off + take), take, tsNs);
          } else if (f.type <= FrameType.CONTINUATION && this.ctlLen < CONTROL_PAYLOAD_BYTES) {
            const keep = Math.min(take, CONTROL_PAYLOAD_BYTES - this.ctlLen);
            chunk.copy(this.ctl, this.ctlLen, off, off + keep);
            this.ctlLen += keep;
          }
          if (this.remaining === 0) this.contentDone();
          break;
        case 'skip':
          break;
      }
      off += take;
    }
  }

  onFrameEnd(tsNs: number): void {
    const f = this.frame;
    if (!f) return;
    if (tsNs > f.lastTsNs) f.lastTsNs = tsNs;
    this.frame = null;
    const payload = this.ctl.subarray(0, this.ctlLen);
    this.ctlLen = 0;
    this.hooks.onFrameEnd(f, payload);
  }

  onDesync(loss: FramingLoss): void {
    this.frame = null;
    this.preLen = 0;
    this.ctlLen = 0;
    const cause = DESYNC_CAUSES[loss];
    if (cause === null) return;
    if (loss === 'invalid') this.stats.frameErrors.header++;
    else if (loss === 'preface') this.stats.frameErrors.preface++;
    this.stats.desyncs[cause]++;
    this.hooks.onDesync(cause);
  }

  onSkipped(bytes: number): void {
    this.stats.discardedBytes += bytes;
  }

  // ---- payload -----------------------------------------------------------------------

  /** The prefix fields are in: Pad Length and the promised stream id. */
  private preDone(): void {
    const f = this.frame!;
    const c = this.preCursor.reset(this.pre, 0, this.preLen);
    if (f.flags & FrameFlags.PADDED) f.padLength = c.u8();
    if (f.type === FrameType.HEADERS && f.flags & FrameFlags.PRIORITY) c.skip(5);
    if (f.type === FrameType.PUSH_PROMISE) f.promisedId = c.u32be() & 0x7fffffff;
    this.preLen = 0;
    if (f.padLength > this.payloadLeft) this.malformed();
    else this.beginContent();
  }

  private beginContent(): void {
    const f = this.frame!;
    const len = this.payloadLeft - f.padLength;
    f.contentLength = len;
    this.phase = 'content';
    this.remaining = len;
    if (len === 0) this.contentDone();
  }

  /** Content is done: padding follows, or the frame ends (the reader says when). */
  private contentDone(): void {
    this.phase = 'skip';
    this.remaining = this.payloadLeft;
  }

  /** Prefix fields longer than the payload: the frame is skipped by its length, sync kept. */
  private malformed(): void {
    const f = this.frame!;
    this.stats.frameErrors.padding++;
    f.malformed = true;
    f.padLength = 0;
    f.contentLength = 0;
    this.phase = 'skip';
    this.remaining = this.payloadLeft;
  }

  /** `len` payload bytes in a gap; the reader has kept them within the frame. */
  private payloadGap(f: Http2Frame, len: number, tsNs: number): void {
    f.lostBytes += len;
    this.stats.frameGapBytes += len;
    let left = len;
    while (left > 0 && this.frame === f) {
      const take = Math.min(left, this.remaining);
      left -= take;
      this.remaining -= take;
      this.payloadLeft -= take;
      if (this.phase === 'pre') {
        // Pad Length unseen: the rest of the payload counts as content, padding included.
        this.preLen = 0;
        f.padLength = 0;
        f.contentLength = this.payloadLeft;
        this.phase = 'content';
        this.remaining = this.payloadLeft;
      } else if (this.phase === 'content') {
        if (isContentType(f.type)) this.hooks.onContent(f, null, take, tsNs);
        if (this.remaining === 0) this.contentDone();
      }
    }
  }
}
