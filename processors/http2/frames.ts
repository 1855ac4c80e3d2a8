/**
 * Incremental HTTP/2 frame parser (RFC 9113 §4, §6) for one direction of a connection, fed
 * the reassembler's in-order `data` and `gap` events (processors/l7/reassembly.ts).
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

type State =
  /** Before the first event. */
  | 'new'
  /** At position 0 of a direction seen from its start: preface or frame header next. */
  | 'start'
  /** Out of sync: skip to a syscall boundary. */
  | 'seek'
  /** Collecting a possible frame header (or preface) from a syscall boundary. */
  | 'candidate'
  /** Collecting the preface, in sync. */
  | 'preface'
  /** Collecting a frame header, in sync. */
  | 'header'
  /** Collecting Pad Length / priority / promised id. */
  | 'pre'
  | 'content'
  /** Padding, or the payload of a malformed frame. */
  | 'skip'
  | 'stopped';

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

/** Incremental frame parser of one direction. Never throws on input bytes. */
export class Http2FrameParser {
  readonly stats: Http2FrameStats;
  /**
   * SETTINGS_MAX_FRAME_SIZE of the receiving side (set by the owner from the other
   * direction's SETTINGS): longer frames are counted, and resynchronisation accepts no
   * longer frame.
   */
  maxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  private readonly hooks: Http2FrameHooks;
  private readonly fromStart: boolean;

  private state: State = 'new';
  /** Stream position of the next byte; -1 before the first event. */
  private pos = -1;
  /** Header, preface or candidate bytes collected. */
  private readonly hdr = Buffer.alloc(PREFACE.length);
  private hdrLen = 0;
  private hdrPos = 0;
  private hdrTs = 0;
  private frame: Http2Frame | null = null;
  /** Bytes left in the current state ('pre', 'content', 'skip'). */
  private remaining = 0;
  /** Payload bytes of the current frame not yet consumed. */
  private payloadLeft = 0;
  private readonly pre = Buffer.alloc(FRAME_HEADER_BYTES);
  private preNeed = 0;
  private preLen = 0;
  private readonly ctl = Buffer.alloc(CONTROL_PAYLOAD_BYTES);
  private ctlLen = 0;

  constructor(hooks: Http2FrameHooks, opts: Http2FrameParserOptions = {}) {
    this.hooks = hooks;
    this.fromStart = opts.fromStart ?? false;
    this.stats = opts.stats ?? newFrameStats();
  }

  /** Input bytes held: a partial header, prefix fields, a control payload. */
  get bufferedBytes(): number {
    return this.hdrLen + this.preLen + this.ctlLen;
  }

  /** Not inside a frame (or the preface): nothing would be lost by starting afresh here. */
  get idle(): boolean {
    switch (this.state) {
      case 'new': case 'seek': case 'stopped': return true;
      case 'start': case 'header': return this.hdrLen === 0;
      default: return false;
    }
  }

  /** Framing is known (not skipping to a syscall boundary). */
  get inSync(): boolean {
    return this.state !== 'seek' && this.state !== 'candidate' && this.state !== 'new';
  }

  /** Feed the next event of this direction. */
  push(ev: StreamEvent): void {
    if (this.state === 'stopped') {
      if (ev.type === 'data') this.stats.ignoredBytes += ev.data.length;
      return;
    }
    if (this.pos < 0) {
      this.pos = ev.pos;
      this.state = this.fromStart && ev.pos === 0 ? 'start' : 'seek';
    } else if (ev.pos !== this.pos) {
      // The events skipped or repeated bytes: nothing parsed so far frames what follows.
      this.loseSync('discontinuity', null);
      this.pos = ev.pos;
    }
    if (ev.type === 'gap') {
      if (ev.len > 0) this.gap(ev.len, ev.tsNs);
    } else {
      this.data(ev.data, ev.tsNs, ev.syscallStart);
    }
  }

  /** Stop for good (the connection closed); a frame in progress is abandoned. */
  stop(): void {
    this.state = 'stopped';
    this.frame = null;
    this.hdrLen = 0;
    this.preLen = 0;
    this.ctlLen = 0;
  }

  // ---- data ------------------------------------------------------------------------

  private data(buf: Buffer, ts: number, syscallStart: boolean): void {
    const base = this.pos;
    const n = buf.length;
    if (syscallStart && (this.state === 'seek' || this.state === 'candidate')) {
      // A candidate that did not complete within its syscall gives way to the new one.
      if (this.state === 'candidate') this.candidateFailed();
      this.state = 'candidate';
      this.hdrLen = 0;
      this.hdrPos = base;
      this.hdrTs = ts;
    }
    let off = 0;
    while (off < n) {
      switch (this.state) {
        case 'start':
          this.state = buf[off] === PREFACE[0] ? 'preface' : 'header';
          this.hdrLen = 0;
          break;
        case 'seek':
        case 'new':
          this.stats.discardedBytes += n - off;
          off = n;
          break;
        case 'candidate':
          off = this.candidate(buf, off, n, ts);
          break;
        case 'preface':
          off = this.preface(buf, off, n, base, ts);
          break;
        case 'header': {
          if (this.hdrLen === 0) {
            this.hdrPos = base + off;
            this.hdrTs = ts;
          }
          const take = Math.min(FRAME_HEADER_BYTES - this.hdrLen, n - off);
          buf.copy(this.hdr, this.hdrLen, off, off + take);
          this.hdrLen += take;
          off += take;
          if (this.hdrLen === FRAME_HEADER_BYTES) this.startFrame(false, ts);
          break;
        }
        case 'pre': {
          const take = Math.min(this.remaining, n - off);
          buf.copy(this.pre, this.preLen, off, off + take);
          this.preLen += take;
          this.remaining -= take;
          this.payloadLeft -= take;
          off += take;
          if (this.remaining === 0) this.preDone(ts);
          break;
        }
        case 'content': {
          const take = Math.min(this.remaining, n - off);
          const f = this.frame!;
          if (isContentType(f.type)) {
            this.hooks.onContent(f, buf.subarray(off, off + take), take, ts);
          } else if (f.type <= FrameType.CONTINUATION && this.ctlLen < CONTROL_PAYLOAD_BYTES) {
            const keep = Math.min(take, CONTROL_PAYLOAD_BYTES - this.ctlLen);
            buf.copy(this.ctl, this.ctlLen, off, off + keep);
            this.ctlLen += keep;
          }
          this.remaining -= take;
          this.payloadLeft -= take;
          off += take;
          if (this.remaining === 0) this.contentDone(ts);
          break;
        }
        case 'skip': {
          const take = Math.min(this.remaining, n - off);
          this.remaining -= take;
          this.payloadLeft -= take;
          off += take;
          if (this.remaining === 0) this.endFrame(ts);
          break;
        }
        case 'stopped':
          this.stats.ignoredBytes += n - off;
          off = n;
          break;
      }
    }
    this.pos = base + n;
  }

  /** Collect a candidate from a syscall boundary; a failed one sends the rest of the syscall to 'seek'. */
  private candidate(buf: Buffer, off: number, n: number, ts: number): number {
    while (off < n) {
      const c = buf[off++];
      this.hdr[this.hdrLen++] = c;
      if (this.hdr[0] === PREFACE[0]) {
        if (c !== PREFACE[this.hdrLen - 1]) {
          this.candidateFailed();
          return off;
        }
        if (this.hdrLen === PREFACE.length) {
          this.stats.resyncs++;
          this.prefaceDone(this.hdrPos + PREFACE.length, this.hdrTs);
          return off;
        }
      } else if (this.hdrLen === FRAME_HEADER_BYTES) {
        if (!this.plausibleHeader()) {
          this.candidateFailed();
          return off;
        }
        this.stats.resyncs++;
        this.startFrame(true, ts);
        return off;
      }
    }
    return off;
  }

  private candidateFailed(): void {
    this.stats.discardedBytes += this.hdrLen;
    this.hdrLen = 0;
    this.state = 'seek';
  }

  private plausibleHeader(): boolean {
    const h = this.hdr;
    const length = (h[0] << 16) | (h[1] << 8) | h[2];
    const type = h[3];
    const flags = h[4];
    if (type >= FrameType.CONTINUATION || (flags & ~DEFINED_FLAGS[type]) !== 0 || (h[5] & 0x80) !== 0) return false;
    const streamId = h.readUInt32BE(5);
    if (length > this.maxFrameSize || !frameHeaderValid(type, flags, streamId, length)) return false;
    return this.hooks.plausible(type, flags, streamId);
  }

  private preface(buf: Buffer, off: number, n: number, base: number, ts: number): number {
    while (off < n) {
      if (buf[off] !== PREFACE[this.hdrLen]) {
        this.stats.discardedBytes += this.hdrLen;
        this.hdrLen = 0;
        this.loseSync('parse_error', 'preface');
        return off;
      }
      this.hdrLen++;
      off++;
      if (this.hdrLen === PREFACE.length) {
        this.prefaceDone(base + off, ts);
        return off;
      }
    }
    return off;
  }

  private prefaceDone(endPos: number, ts: number): void {
    this.stats.prefaces++;
    this.hdrLen = 0;
    this.state = 'header';
    this.hooks.onPreface(endPos, ts);
  }

  // ---- frames ----------------------------------------------------------------------

  private startFrame(resynced: boolean, ts: number): void {
    const h = this.hdr;
    const length = (h[0] << 16) | (h[1] << 8) | h[2];
    const type = h[3];
    const flags = h[4];
    const streamId = h.readUInt32BE(5) & 0x7fffffff;
    this.hdrLen = 0;
    if (!resynced && !frameHeaderValid(type, flags, streamId, length)) {
      this.stats.discardedBytes += FRAME_HEADER_BYTES;
      this.loseSync('parse_error', 'header');
      return;
    }
    const f: Http2Frame = {
      type, flags, streamId, length, pos: this.hdrPos, firstTsNs: this.hdrTs, lastTsNs: ts, padLength: 0,
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
      this.malformed(ts);
    } else if (this.preNeed > 0) {
      this.state = 'pre';
      this.remaining = this.preNeed;
    } else {
      this.beginContent(ts);
    }
  }

  /** The prefix fields are in: Pad Length and the promised stream id. */
  private preDone(ts: number): void {
    const f = this.frame!;
    let i = 0;
    if (f.flags & FrameFlags.PADDED) f.padLength = this.pre[i++];
    if (f.type === FrameType.HEADERS && f.flags & FrameFlags.PRIORITY) i += 5;
    if (f.type === FrameType.PUSH_PROMISE) f.promisedId = this.pre.readUInt32BE(i) & 0x7fffffff;
    this.preLen = 0;
    if (f.padLength > this.payloadLeft) this.malformed(ts);
    else this.beginContent(ts);
  }

  private beginContent(ts: number): void {
    const f = this.frame!;
    const len = this.payloadLeft - f.padLength;
    f.contentLength = len;
    this.state = 'content';
    this.remaining = len;
    if (len === 0) this.contentDone(ts);
  }

  /** Content is done: padding follows, or the frame ends. */
  private contentDone(ts: number): void {
    if (this.payloadLeft > 0) {
      this.state = 'skip';
      this.remaining = this.payloadLeft;
    } else {
      this.endFrame(ts);
    }
  }

  /** Prefix fields longer than the payload: the frame is skipped by its length, sync kept. */
  private malformed(ts: number): void {
    const f = this.frame!;
    this.stats.frameErrors.padding++;
    f.malformed = true;
    f.padLength = 0;
    f.contentLength = 0;
    this.state = 'skip';
    this.remaining = this.payloadLeft;
    if (this.remaining === 0) this.endFrame(ts);
  }

  private endFrame(ts: number): void {
    const f = this.frame!;
    if (ts > f.lastTsNs) f.lastTsNs = ts;
    this.frame = null;
    this.state = 'header';
    this.hdrLen = 0;
    const payload = this.ctl.subarray(0, this.ctlLen);
    this.ctlLen = 0;
    this.hooks.onFrameEnd(f, payload);
  }

  // ---- gaps ------------------------------------------------------------------------

  private gap(len: number, ts: number): void {
    this.pos += len;
    switch (this.state) {
      case 'seek':
      case 'new':
      case 'stopped':
        return;
      case 'candidate':
        this.candidateFailed();
        return;
      case 'start':
      case 'preface':
      case 'header':
        // Whole frames may hide in the gap, even between frames.
        this.loseSync('gap', null);
        return;
      default:
        break;
    }
    let left = len;
    while (left > 0 && this.frame) {
      const f = this.frame;
      const take = Math.min(left, this.remaining);
      f.lostBytes += take;
      this.stats.frameGapBytes += take;
      if (ts > f.lastTsNs) f.lastTsNs = ts;
      left -= take;
      this.remaining -= take;
      this.payloadLeft -= take;
      if (this.state === 'pre') {
        // Pad Length unseen: the rest of the payload counts as content, padding included.
        this.preLen = 0;
        f.padLength = 0;
        f.contentLength = this.payloadLeft;
        this.state = 'content';
        this.remaining = this.payloadLeft;
        if (this.remaining === 0) this.endFrame(ts);
      } else if (this.state === 'content') {
        if (isContentType(f.type)) this.hooks.onContent(f, null, take, ts);
        if (this.remaining === 0) this.contentDone(ts);
      } else if (this.remaining === 0) {
        this.endFrame(ts);
      }
    }
    if (left > 0) this.loseSync('gap', null);
  }

  /** Framing is lost: skip to the next plausible frame header at a syscall boundary. */
  private loseSync(cause: FrameDesyncCause, error: FrameErrorKind | null): void {
    if (error) this.stats.frameErrors[error]++;
    const wasSeeking = this.state === 'seek' || this.state === 'candidate' || this.state === 'new';
    if (this.state === 'candidate') this.stats.discardedBytes += this.hdrLen;
    this.state = 'seek';
    this.frame = null;
    this.hdrLen = 0;
    this.preLen = 0;
    this.ctlLen = 0;
    if (wasSeeking) return;
    this.stats.desyncs[cause]++;
    this.hooks.onDesync(cause);
  }
}
