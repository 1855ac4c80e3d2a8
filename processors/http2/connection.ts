/**
 * HTTP/2 and gRPC on one connection: a frame parser (./frames.ts) and an HPACK decoder
 * (./hpack.ts) per kernel direction, fed the reassemblers' events, and the streams they
 * carry. Each client-initiated stream becomes one `Http2Exchange` when it completes (both
 * END_STREAMs, or RST_STREAM, or refused by GOAWAY), times out (`expire`) or the
 * connection ends (`close`). Streams are matched by id, so multiplexing needs no
 * ordering rules; server push is counted and ignored.
 *
 * Roles: the direction that sent the preface, or a HEADERS block with `:method` (or the
 * other one, for `:status`), carries requests; until the bytes tell, the kernel's hint.
 * Each stream remembers the direction that opened it.
 *
 * Capture that starts mid-connection, or loses bytes: header fields that refer to unknown
 * dynamic-table entries are marked unknown by the decoder and their values stay empty (the
 * exchange is flagged), never guessed. When framing is lost in a direction, every open
 * stream is flagged as missing bytes there, the direction's HPACK table is forgotten, and
 * stream ids that may have been opened in the lost bytes are remembered: response frames
 * on such an id (or on any id below the first one seen, for a capture that began
 * mid-life) open an exchange flagged `ReqMissing`; frames on ids known to be closed are
 * ignored. A stream opened in the lost bytes and answered later is thus still reported,
 * with what can be known. Response frames on an id above every stream seen opened do the
 * same: the request direction is read behind (directions are read independently), and
 * the exchange loses its flag when the request's HEADERS arrive. Such exchanges wait for
 * their request until `expire` or `close`.
 *
 * gRPC (content-type application/grpc*): service and method from `:path`, grpc-status
 * and grpc-message from trailers (or a trailers-only response), and length-prefixed
 * messages counted in each direction across DATA frames (a gap inside a message keeps the
 * count; a gap over a message prefix stops it and flags the exchange).
 *
 * Only the values of :method, :path, :authority, :scheme, :status, host, content-type,
 * user-agent, grpc-status and grpc-message are ever decoded; credentials never are.
 *
 * Resuming: HPACK tables are connection state that cannot be rebuilt from later bytes. A
 * processor that takes a connection over (or re-creates one it forgot while idle) must
 * construct it with `midlife: true`: its header fields that refer to entries inserted
 * earlier are then marked unknown instead of being decoded against an empty table, and
 * framing is found again at a syscall boundary. `isIdle()` only says no stream and no
 * frame is open.
 */
import type { StreamEvent } from '../l7/reassembly.js';
import {
  DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_BYTES, FrameFlags, FrameType, Http2FrameParser, MAX_FRAME_SIZE_LIMIT, newFrameStats,
  type Http2Frame, type Http2FrameHooks, type Http2FrameStats,
} from './frames.js';
import { HpackDecoder, newHpackStats, type HeaderField, type HpackStats } from './hpack.js';
import type { Dir, RoleHint } from '../l7/sides.js';
import { GuardedTracker, type GuardStats, type L7Tracker } from '../l7/tracker.js';
export type { Dir, RoleHint };

/** Bits of `Http2Exchange.flags`. */
export const ExchangeFlags = {
  /** Request header fields referred to unknown dynamic-table entries: their values are missing. */
  ReqUnknownFields: 1 << 0,
  RespUnknownFields: 1 << 1,
  /** A request header block was not fully decoded (gap, over the cap, malformed). */
  ReqHeadPartial: 1 << 2,
  RespHeadPartial: 1 << 3,
  /**
   * Request bytes of this stream were not seen (a gap in a DATA frame, or framing lost
   * while the stream was open): body and message counts may be low.
   */
  ReqBodyPartial: 1 << 4,
  RespBodyPartial: 1 << 5,
  /** The request's END_STREAM was not seen. */
  ReqEndMissing: 1 << 6,
  /** The response began but its END_STREAM was not seen. */
  RespEndMissing: 1 << 7,
  /** The request's headers were not seen (sent before capture began, or in lost bytes). */
  ReqMissing: 1 << 8,
  /** Above the last-stream-id of the server's GOAWAY, without a response: not processed. */
  Refused: 1 << 9,
  /** gRPC message framing was lost or a message was cut: message counts may be low. */
  MessagesPartial: 1 << 10,
} as const;

/** One stream: a request and its response (or none). */
export interface Http2Exchange {
  /** This socket's side: 'client' when it sent requests (as the bytes showed, else the hint). */
  role: 'client' | 'server';
  streamId: number;
  protocol: 'h2' | 'grpc';
  /** :method; '' when not seen or unknown. */
  method: string;
  /** :path, at most MAX_PATH_BYTES. */
  path: string;
  /** :authority, or Host. */
  authority: string;
  scheme: string;
  /** Final :status (a 1xx only when nothing followed it); 0 when none. */
  status: number;
  /** content-type of the response. */
  contentType: string;
  /** user-agent of the request. */
  userAgent: string;
  /** gRPC: "package.Service" and "Method" from "/package.Service/Method"; '' otherwise. */
  grpcService: string;
  grpcMethod: string;
  /** gRPC: grpc-status of the trailers (or trailers-only response); -1 when none. */
  grpcStatus: number;
  /** gRPC: grpc-message, percent-decoded, at most MAX_VALUE_BYTES. */
  grpcMessage: string;
  /** gRPC: length-prefixed messages each way (complete ones); 0 for plain HTTP/2. */
  reqMessages: number;
  respMessages: number;
  /**
   * Stream position (request direction) of the request's first frame seen: with node,
   * conn_id and role, a row key (the stream id is one too). -1 when no request frame was seen.
   */
  reqStartPos: number;
  /** HPACK bytes of the request's header blocks (trailers included). */
  reqHeaderBytes: number;
  respHeaderBytes: number;
  /** DATA bytes without padding. */
  reqBodyBytes: number;
  respBodyBytes: number;
  /** Bytes of the stream's HEADERS, CONTINUATION and DATA frames, frame headers and padding included. */
  reqBytes: number;
  respBytes: number;
  /** First byte of the request's first frame (its HEADERS) and last byte of its last (END_STREAM). 0 when none. */
  reqFirstTsNs: number;
  reqLastTsNs: number;
  respFirstTsNs: number;
  respLastTsNs: number;
  /** No response came before `expire` or `close` (and no reset or refusal). */
  timedOut: boolean;
  /** RST_STREAM error code; -1 when the stream was not reset. */
  resetCode: number;
  /** Who sent the RST_STREAM; '' when none. */
  resetBy: 'client' | 'server' | '';
  /** `ExchangeFlags` bits. */
  flags: number;
}

/** Counters of one or more connections; pass one object to many connections to sum them. */
export interface Http2Stats extends Http2FrameStats, HpackStats, GuardStats {
  exchanges: number;
  /** Exchanges emitted without a response (`timedOut`). */
  timedOut: number;
  /** Exchanges ended by RST_STREAM. */
  resets: number;
  /** Exchanges refused by GOAWAY. */
  refused: number;
  /** Exchanges whose request headers were not seen (`ReqMissing`). */
  orphans: number;
  /** New streams not tracked because `maxStreams` were open. */
  droppedStreams: number;
  /** Streams abandoned by an internal error. */
  abandonedStreams: number;
  /** HEADERS / DATA / RST_STREAM frames of streams not tracked (closed, pushed, never seen, over the cap). */
  untrackedFrames: number;
  /** Header blocks cut at `maxHeaderBlockBytes`. */
  truncatedBlocks: number;
  /** Header blocks with bytes in a gap, or interrupted. */
  damagedBlocks: number;
  /** CONTINUATION out of place, or a header block interrupted by another frame. */
  continuationErrors: number;
  /** Control frames (SETTINGS, GOAWAY, RST_STREAM) with bytes in a gap: ignored. */
  damagedControlFrames: number;
  /** The bytes contradicted the kernel's role hint. */
  roleMismatches: number;
}

export function newHttp2Stats(): Http2Stats {
  return {
    ...newFrameStats(), ...newHpackStats(),
    exchanges: 0, timedOut: 0, resets: 0, refused: 0, orphans: 0, droppedStreams: 0, abandonedStreams: 0,
    untrackedFrames: 0, truncatedBlocks: 0, damagedBlocks: 0, continuationErrors: 0, damagedControlFrames: 0,
    roleMismatches: 0, internalErrors: 0,
  };
}

/** Most streams tracked at once on one connection. */
export const DEFAULT_MAX_STREAMS = 1000;
/** A stream silent this long (node time) is emitted: timed out if it has no response. */
export const DEFAULT_STREAM_TIMEOUT_NS = 60e9;
/** Largest header block buffered (HEADERS + CONTINUATIONs); the rest is counted, not decoded. */
export const DEFAULT_MAX_HEADER_BLOCK_BYTES = 64 * 1024;
/** Longest :path kept, in bytes. */
export const MAX_PATH_BYTES = 2 * 1024;
/** Longest other kept value, in bytes. */
export const MAX_VALUE_BYTES = 512;
/** Header names whose values are decoded. */
export const KEPT_HEADERS: ReadonlySet<string> = new Set([
  ':method', ':path', ':authority', ':scheme', ':status', 'host', 'content-type', 'user-agent', 'grpc-status', 'grpc-message',
]);

/** Stream id ranges remembered per direction as possibly opened in lost bytes. */
const MAX_LOST_RANGES = 16;
/** Orphan stream ids remembered after their exchange was emitted, so late frames do not reopen them. */
const MAX_RETIRED = 256;
const FIRST_BLOCK_BUFFER_BYTES = 256;
/** A block buffer grown beyond this is released after its block. */
const KEEP_BLOCK_BUFFER_BYTES = 16 * 1024;
const SETTINGS_HEADER_TABLE_SIZE = 1;
const SETTINGS_MAX_FRAME_SIZE = 5;

export interface Http2ConnectionOptions {
  /** Counters to add to (shared across connections); a new object by default. */
  stats?: Http2Stats;
  /** Most streams tracked at once (default 1000); further new streams are counted and ignored. */
  maxStreams?: number;
  /** Largest header block buffered (default 64 KiB). */
  maxHeaderBlockBytes?: number;
  /** How long `expire` lets a stream stay silent (default 60 s). */
  streamTimeoutNs?: number;
  /**
   * The connection was open before capture began (ConnFlags.Midlife), or its earlier bytes
   * were handled by another owner: position 0 is not its start, HPACK tables are unknown.
   */
  midlife?: boolean;
}

/** One direction of one stream. */
interface Half {
  seen: boolean;
  startPos: number;
  firstTsNs: number;
  lastTsNs: number;
  headerBytes: number;
  bodyBytes: number;
  wireBytes: number;
  ended: boolean;
  unknownFields: boolean;
  headPartial: boolean;
  bodyPartial: boolean;
  method: string;
  path: string;
  authority: string;
  host: string;
  scheme: string;
  status: number;
  contentType: string;
  userAgent: string;
  grpcStatus: number;
  grpcMessage: string;
  /** gRPC framing: prefix bytes read of the current message (0..4), its length, payload bytes left. */
  gHdr: number;
  gLen: number;
  gLeft: number;
  gMessages: number;
  /** Framing lost, or a message cut: counting stopped or a message was not counted. */
  gPartial: boolean;
  gStopped: boolean;
}

interface Stream {
  id: number;
  /** The kernel direction that opened it: its requests. */
  reqDir: Dir;
  half: [Half, Half];
  /** Opened in bytes not seen. */
  orphan: boolean;
  refused: boolean;
  resetCode: number;
  resetDir: -1 | Dir;
  lastActivityNs: number;
}

/** A header block being assembled in one direction. */
interface Block {
  type: number;
  streamId: number;
  /** END_STREAM of its HEADERS frame. */
  endStream: boolean;
  pos: number;
  firstTsNs: number;
  lastTsNs: number;
  /** Fragment bytes (HPACK), all of them, buffered or not. */
  bytes: number;
  /** Bytes buffered. */
  len: number;
  wireBytes: number;
  /** Bytes beyond the cap were not buffered. */
  truncated: boolean;
  /** Bytes were in a gap: nothing after them is buffered. */
  damaged: boolean;
}

/** Values of one decoded header block. */
interface BlockValues {
  unknown: boolean;
  hasMethod: boolean;
  hasStatus: boolean;
  method: string;
  path: string;
  authority: string;
  host: string;
  scheme: string;
  status: number;
  contentType: string;
  userAgent: string;
  grpcStatus: number;
  grpcMessage: string | null;
}

function newHalf(): Half {
  return {
    seen: false, startPos: -1, firstTsNs: 0, lastTsNs: 0, headerBytes: 0, bodyBytes: 0, wireBytes: 0, ended: false,
    unknownFields: false, headPartial: false, bodyPartial: false, method: '', path: '', authority: '', host: '',
    scheme: '', status: 0, contentType: '', userAgent: '', grpcStatus: -1, grpcMessage: '',
    gHdr: 0, gLen: 0, gLeft: 0, gMessages: 0, gPartial: false, gStopped: false,
  };
}

function newValues(): BlockValues {
  const v = {} as BlockValues;
  resetValues(v);
  return v;
}

function resetValues(v: BlockValues): void {
  v.unknown = false;
  v.hasMethod = false;
  v.hasStatus = false;
  v.method = '';
  v.path = '';
  v.authority = '';
  v.host = '';
  v.scheme = '';
  v.status = 0;
  v.contentType = '';
  v.userAgent = '';
  v.grpcStatus = -1;
  v.grpcMessage = null;
}

/** `s` cut to at most `max` UTF-8 bytes. */
function cut(s: string, max: number): string {
  if (s.length * 3 <= max || Buffer.byteLength(s) <= max) return s;
  return Buffer.from(s).subarray(0, max).toString();
}

/** A decimal number of at most `digits` digits, or -1. */
function decimal(s: string, digits: number): number {
  if (s.length === 0 || s.length > digits) return -1;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/** gRPC's percent-encoding (grpc-message): %XX escapes of UTF-8 bytes; malformed escapes stay. */
export function percentDecode(s: string): string {
  if (!s.includes('%')) return s;
  const raw = Buffer.from(s);
  const out = Buffer.alloc(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 37 && i + 2 < raw.length) {
      const hi = hexDigit(raw[i + 1]);
      const lo = hexDigit(raw[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out[n++] = hi * 16 + lo;
        i += 2;
        continue;
      }
    }
    out[n++] = raw[i];
  }
  return out.toString('utf8', 0, n);
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 0x20;
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

/** "/package.Service/Method" → ["package.Service", "Method"]; ['', ''] for other paths. */
export function grpcPath(path: string): [string, string] {
  const m = /^\/([^/?#]+)\/([^/?#]+)$/.exec(path);
  return m ? [m[1], m[2]] : ['', ''];
}

function isGrpc(contentType: string): boolean {
  return contentType.toLowerCase().startsWith('application/grpc');
}

/** Note that frame bytes of `h` were seen, from `pos` at `firstTs` to `lastTs`. */
function touch(h: Half, pos: number, firstTs: number, lastTs: number): void {
  if (!h.seen) {
    h.seen = true;
    h.startPos = pos;
    h.firstTsNs = firstTs;
    h.lastTsNs = lastTs;
  } else if (lastTs > h.lastTsNs) {
    // Timestamps only move forward, so durations stay non-negative whatever the input.
    h.lastTsNs = lastTs;
  }
}

/** HTTP/2 on one connection. Never throws on input; exchanges go to `onExchange`. */
export class Http2Connection extends GuardedTracker<Http2Exchange, Http2Stats> implements L7Tracker {
  /** HTTP/2 has no way to switch the connection to another protocol. */
  readonly stopReason = null;
  private parsers: [Http2FrameParser, Http2FrameParser];
  private readonly hpack: [HpackDecoder, HpackDecoder];
  private readonly streams = new Map<number, Stream>();
  /** Direction carrying requests as the bytes showed; -1 until they do. */
  private reqDir: -1 | Dir = -1;
  private prefaceSeen = false;
  private pseudoSeen = false;
  private readonly started: [boolean, boolean] = [false, false];
  /** Highest stream id opened by a HEADERS block (0: none); client stream ids only grow. */
  private highestOpened = 0;
  /** Per direction: stream id ranges (lo, hi) exclusive that may have been opened in bytes not seen. */
  private readonly lost: [Array<[number, number]>, Array<[number, number]>] = [[[0, Infinity]], [[0, Infinity]]];
  /** Ids emitted while inside a lost range: late frames must not open them again. */
  private readonly retired = new Set<number>();
  /** Last-stream-id of GOAWAY frames sent in each direction. */
  private readonly goaway: [number, number] = [Infinity, Infinity];
  private readonly blocks: [Block | null, Block | null] = [null, null];
  private readonly blockBuf: [Buffer, Buffer] = [Buffer.alloc(0), Buffer.alloc(0)];
  /** Per direction: the frame whose content is being read belongs to the open block. */
  private readonly inBlock: [boolean, boolean] = [false, false];
  /** Per direction: the stream of the DATA frame being read. */
  private readonly cur: [Stream | null, Stream | null] = [null, null];
  private readonly vals = newValues();
  private closed = false;
  private readonly maxStreams: number;
  private readonly maxBlock: number;
  private readonly streamTimeoutNs: number;
  private readonly midlife: boolean;
  private readonly onField = (f: HeaderField): void => this.field(f);

  constructor(
    private readonly hint: RoleHint,
    onExchange: (x: Http2Exchange) => void,
    opts: Http2ConnectionOptions = {},
  ) {
    super(onExchange, opts.stats ?? newHttp2Stats());
    this.maxStreams = opts.maxStreams ?? DEFAULT_MAX_STREAMS;
    this.maxBlock = opts.maxHeaderBlockBytes ?? DEFAULT_MAX_HEADER_BLOCK_BYTES;
    this.streamTimeoutNs = opts.streamTimeoutNs ?? DEFAULT_STREAM_TIMEOUT_NS;
    this.midlife = opts.midlife ?? false;
    this.parsers = [this.newParser(0), this.newParser(1)];
    const hp = { keep: KEPT_HEADERS, maxValueBytes: MAX_PATH_BYTES, stats: this.stats };
    this.hpack = [new HpackDecoder(hp), new HpackDecoder(hp)];
  }

  /** The role the bytes showed, or the hint until they did. */
  get role(): RoleHint {
    if (this.reqDir < 0) return this.hint;
    return this.reqDir === 0 ? 'client' : 'server';
  }

  /** The bytes were recognised as HTTP/2: a preface, or a header block with :method or :status. */
  get recognized(): boolean {
    return this.prefaceSeen || this.pseudoSeen;
  }

  /** Streams tracked now; at most `maxStreams`. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Input bytes held: partial frame headers, control payloads, header blocks. */
  get bufferedBytes(): number {
    return this.parsers[0].bufferedBytes + this.parsers[1].bufferedBytes
      + (this.blocks[0]?.len ?? 0) + (this.blocks[1]?.len ?? 0);
  }

  /** Bytes held for the two HPACK tables (bounded by 2 × MAX_TABLE_STORED_BYTES). */
  get hpackBytes(): number {
    return this.hpack[0].storedBytes + this.hpack[1].storedBytes;
  }

  /**
   * No open stream, no partial frame and no header block in progress. HPACK tables are
   * still connection state: see the module comment on resuming.
   */
  isIdle(): boolean {
    if (this.closed) return true;
    return this.streams.size === 0 && this.parsers[0].idle && this.parsers[1].idle
      && !this.blocks[0] && !this.blocks[1];
  }

  /** Feed the next event of kernel direction `dir`. */
  data(dir: Dir, ev: StreamEvent): void {
    if (this.closed) {
      if (ev.type === 'data') this.stats.ignoredBytes += ev.data.length;
      return;
    }
    this.run(() => {
      if (!this.started[dir]) {
        this.started[dir] = true;
        if (!this.midlife && ev.pos === 0) {
          this.hpack[dir].startKnown();
          this.lost[dir].length = 0;
        }
      }
      this.parsers[dir].push(ev);
    });
  }

  /**
   * Streams without a frame in either direction for `streamTimeoutNs` are emitted, if their
   * request ended (or its end may have been lost): without a response they time out.
   * Streams whose request is still being sent stay open.
   */
  expire(nowNs: number): void {
    if (this.closed) return;
    this.run(() => {
      for (const s of [...this.streams.values()]) {
        if (nowNs - s.lastActivityNs < this.streamTimeoutNs) continue;
        const req = s.half[s.reqDir];
        if (req.ended || s.orphan || req.bodyPartial || req.headPartial) this.emit(s);
      }
    });
  }

  /** The connection ended: a header block in progress is decoded as far as it goes, every open stream is emitted. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.run(() => {
      for (const dir of [0, 1] as const) {
        if (this.blocks[dir]) this.finishBlock(dir, true);
        this.parsers[dir].stop();
      }
      for (const s of [...this.streams.values()]) this.emit(s);
      this.streams.clear();
    });
  }

  // ---- frame hooks -------------------------------------------------------------------

  private newParser(dir: Dir): Http2FrameParser {
    const hooks: Http2FrameHooks = {
      onPreface: () => this.onPreface(dir),
      onFrameStart: (f) => this.onFrameStart(dir, f),
      onContent: (f, chunk, len, ts) => this.onContent(dir, f, chunk, len, ts),
      onFrameEnd: (f, payload) => this.onFrameEnd(dir, f, payload),
      onDesync: () => this.onDesync(dir),
      plausible: (type, _flags, streamId) => this.plausible(dir, type, streamId),
    };
    return new Http2FrameParser(hooks, { fromStart: !this.midlife, stats: this.stats });
  }

  private onPreface(dir: Dir): void {
    this.prefaceSeen = true;
    this.decideRoles(dir);
  }

  private onFrameStart(dir: Dir, f: Http2Frame): void {
    const block = this.blocks[dir];
    this.inBlock[dir] = false;
    this.cur[dir] = null;
    if (f.type === FrameType.CONTINUATION) {
      if (block && block.streamId === f.streamId) {
        this.inBlock[dir] = true;
        block.wireBytes += FRAME_HEADER_BYTES + f.length;
      } else {
        // Its block's start was not seen: the fragment cannot be decoded, the table misses it.
        this.stats.continuationErrors++;
        if (block) this.finishBlock(dir, true);
        this.hpack[dir].lose();
      }
      return;
    }
    if (block) {
      // A header block must continue with CONTINUATION frames only (RFC 9113 §6.10).
      this.stats.continuationErrors++;
      this.finishBlock(dir, true);
    }
    if (f.type === FrameType.HEADERS || f.type === FrameType.PUSH_PROMISE) {
      this.blocks[dir] = {
        type: f.type, streamId: f.streamId, endStream: f.type === FrameType.HEADERS && (f.flags & FrameFlags.END_STREAM) !== 0,
        pos: f.pos, firstTsNs: f.firstTsNs, lastTsNs: f.firstTsNs, bytes: 0, len: 0, wireBytes: FRAME_HEADER_BYTES + f.length,
        truncated: false, damaged: false,
      };
      this.inBlock[dir] = true;
      // A request stream is open from its HEADERS frame on, so that a response read before
      // the block's last CONTINUATION (the directions are read independently) finds it.
      if (f.type === FrameType.HEADERS && this.reqDir === dir && f.streamId % 2 === 1
        && f.streamId > this.highestOpened) {
        this.streamFor(dir, f.streamId, true);
      }
    } else if (f.type === FrameType.DATA) {
      const s = this.streamFor(dir, f.streamId, false);
      this.cur[dir] = s;
      if (!s) {
        this.stats.untrackedFrames++;
        return;
      }
      // Counted at the start, so a frame cut short (lost framing, close) still counts whole.
      const h = s.half[dir];
      touch(h, f.pos, f.firstTsNs, f.firstTsNs);
      h.wireBytes += FRAME_HEADER_BYTES + f.length;
      this.activity(s, f.firstTsNs);
    }
  }

  private onContent(dir: Dir, f: Http2Frame, chunk: Buffer | null, len: number, ts: number): void {
    if (f.type === FrameType.DATA) {
      const s = this.cur[dir];
      if (!s) return;
      const h = s.half[dir];
      h.bodyBytes += len;
      if (!chunk) h.bodyPartial = true;
      this.grpc(h, chunk, len);
      return;
    }
    const b = this.blocks[dir];
    if (!b || !this.inBlock[dir]) return;
    b.bytes += len;
    if (ts > b.lastTsNs) b.lastTsNs = ts;
    if (!chunk) {
      b.damaged = true;
      return;
    }
    if (b.damaged || b.truncated) return;
    const room = this.maxBlock - b.len;
    const take = Math.min(room, len);
    if (take > 0) {
      this.reserveBlock(dir, b.len + take);
      chunk.copy(this.blockBuf[dir], b.len, 0, take);
      b.len += take;
    }
    if (take < len) b.truncated = true;
  }

  private onFrameEnd(dir: Dir, f: Http2Frame, payload: Buffer): void {
    switch (f.type) {
      case FrameType.DATA: {
        const s = this.cur[dir];
        this.cur[dir] = null;
        if (!s) return;
        const h = s.half[dir];
        touch(h, f.pos, f.firstTsNs, f.lastTsNs);
        if (f.lostBytes > 0) h.bodyPartial = true;
        this.activity(s, f.lastTsNs);
        if (f.flags & FrameFlags.END_STREAM) this.endHalf(s, dir, f.lastTsNs);
        this.check(s);
        return;
      }
      case FrameType.HEADERS:
      case FrameType.PUSH_PROMISE:
      case FrameType.CONTINUATION: {
        const b = this.blocks[dir];
        if (!b || !this.inBlock[dir]) return;
        if (f.lastTsNs > b.lastTsNs) b.lastTsNs = f.lastTsNs;
        if (f.malformed) b.damaged = true;
        if (f.flags & FrameFlags.END_HEADERS) this.finishBlock(dir, false);
        return;
      }
      case FrameType.RST_STREAM: {
        const s = this.streams.get(f.streamId);
        if (f.lostBytes > 0 || payload.length < 4) {
          this.stats.damagedControlFrames++;
          return;
        }
        if (!s) {
          this.stats.untrackedFrames++;
          return;
        }
        s.resetCode = payload.readUInt32BE(0);
        s.resetDir = dir;
        this.activity(s, f.lastTsNs);
        this.check(s);
        return;
      }
      case FrameType.SETTINGS:
        if (f.flags & FrameFlags.ACK) return;
        if (f.lostBytes > 0) {
          this.stats.damagedControlFrames++;
          return;
        }
        this.settings(dir, payload);
        return;
      case FrameType.GOAWAY:
        if (f.lostBytes > 0 || payload.length < 8) {
          this.stats.damagedControlFrames++;
          return;
        }
        this.onGoaway(dir, payload.readUInt32BE(0) & 0x7fffffff);
        return;
      case FrameType.WINDOW_UPDATE:
      case FrameType.PRIORITY: {
        const s = f.streamId ? this.streams.get(f.streamId) : undefined;
        if (s) this.activity(s, f.lastTsNs);
        return;
      }
      default:
        return;
    }
  }

  /**
   * Framing was lost in `dir`: frames of any open stream may be gone, the HPACK table may
   * have changed, and streams may have been opened unseen.
   */
  private onDesync(dir: Dir): void {
    if (this.blocks[dir]) this.finishBlock(dir, true);
    this.hpack[dir].lose();
    this.cur[dir] = null;
    this.inBlock[dir] = false;
    for (const s of this.streams.values()) {
      const h = s.half[dir];
      if (h.ended) continue;
      // Its message framing in this direction can no longer be followed.
      h.bodyPartial = true;
      h.gPartial = true;
      h.gStopped = true;
    }
    this.openLostRange(dir);
  }

  /** Resynchronisation: is a frame of `type` on `streamId` plausible in `dir`? */
  private plausible(dir: Dir, type: number, streamId: number): boolean {
    const req = this.effectiveReqDir();
    switch (type) {
      case FrameType.HEADERS:
      case FrameType.DATA:
        // Even streams are pushed: only servers send frames on them.
        return streamId % 2 === 1 || req !== dir;
      case FrameType.PUSH_PROMISE:
        return streamId % 2 === 1 && req !== dir;
      default:
        return true;
    }
  }

  // ---- header blocks -----------------------------------------------------------------

  private reserveBlock(dir: Dir, size: number): void {
    const buf = this.blockBuf[dir];
    if (size <= buf.length) return;
    let cap = Math.max(buf.length, FIRST_BLOCK_BUFFER_BYTES);
    while (cap < size) cap *= 2;
    const next = Buffer.allocUnsafe(Math.min(cap, this.maxBlock));
    buf.copy(next, 0, 0, this.blocks[dir]?.len ?? 0);
    this.blockBuf[dir] = next;
  }

  /**
   * Decode the block of `dir` and apply it to its stream. `interrupted`: it ended without
   * END_HEADERS (lost framing, another frame, the connection's end).
   */
  private finishBlock(dir: Dir, interrupted: boolean): void {
    const b = this.blocks[dir]!;
    this.blocks[dir] = null;
    this.inBlock[dir] = false;
    const complete = !interrupted && !b.damaged && !b.truncated;
    if (b.truncated) this.stats.truncatedBlocks++;
    if (b.damaged || interrupted) this.stats.damagedBlocks++;
    const v = this.vals;
    resetValues(v);
    const status = this.hpack[dir].decode(this.blockBuf[dir].subarray(0, b.len), this.onField, complete);
    if (this.blockBuf[dir].length > KEEP_BLOCK_BUFFER_BYTES) this.blockBuf[dir] = Buffer.alloc(0);
    if (b.type === FrameType.PUSH_PROMISE) return;
    if (v.hasMethod || v.hasStatus) {
      this.pseudoSeen = true;
      this.decideRoles(v.hasMethod ? dir : dir === 0 ? 1 : 0);
    }
    const s = this.streamFor(dir, b.streamId, true);
    if (!s) {
      this.stats.untrackedFrames++;
      return;
    }
    const h = s.half[dir];
    // The request of a stream first seen by its response (the directions are read
    // independently): it is not missing after all.
    if (s.orphan && dir === s.reqDir && !h.seen && v.hasMethod) {
      s.orphan = false;
      if (s.id > this.highestOpened) {
        this.highestOpened = s.id;
        this.closeLostRange(dir, s.id);
      }
    }
    touch(h, b.pos, b.firstTsNs, b.lastTsNs);
    h.headerBytes += b.bytes;
    h.wireBytes += b.wireBytes;
    if (v.unknown) h.unknownFields = true;
    if (status !== 'ok') h.headPartial = true;
    if (!h.method) h.method = v.method;
    if (!h.path) h.path = v.path;
    if (!h.authority) h.authority = v.authority;
    if (!h.host) h.host = v.host;
    if (!h.scheme) h.scheme = v.scheme;
    if (!h.userAgent) h.userAgent = v.userAgent;
    // A final status replaces an interim (1xx) one; trailers carry none.
    if (v.status > 0 && h.status < 200) h.status = v.status;
    // The content type of the headers, not of trailers.
    if (!h.contentType && v.contentType) h.contentType = v.contentType;
    if (v.grpcStatus >= 0) h.grpcStatus = v.grpcStatus;
    if (v.grpcMessage !== null) h.grpcMessage = v.grpcMessage;
    this.activity(s, b.lastTsNs);
    // END_STREAM is in the HEADERS frame's header: known even when the block was not.
    if (b.endStream) this.endHalf(s, dir, b.lastTsNs);
    this.check(s);
  }

  /** One decoded field of the block being finished. */
  private field(f: HeaderField): void {
    const v = this.vals;
    if (f.unknownIndex) {
      v.unknown = true;
      return;
    }
    if (f.name === ':method') v.hasMethod = true;
    else if (f.name === ':status') v.hasStatus = true;
    const value = f.value;
    if (value === null) return;
    switch (f.name) {
      case ':method': if (!v.method) v.method = cut(value, MAX_VALUE_BYTES); break;
      case ':path': if (!v.path) v.path = value; break;
      case ':authority': if (!v.authority) v.authority = cut(value, MAX_VALUE_BYTES); break;
      case 'host': if (!v.host) v.host = cut(value, MAX_VALUE_BYTES); break;
      case ':scheme': if (!v.scheme) v.scheme = cut(value, MAX_VALUE_BYTES); break;
      case ':status': if (!v.status) v.status = Math.max(0, decimal(value, 3)); break;
      case 'content-type': if (!v.contentType) v.contentType = cut(value, MAX_VALUE_BYTES); break;
      case 'user-agent': if (!v.userAgent) v.userAgent = cut(value, MAX_VALUE_BYTES); break;
      case 'grpc-status': v.grpcStatus = decimal(value, 9); break;
      case 'grpc-message': v.grpcMessage = cut(percentDecode(value), MAX_VALUE_BYTES); break;
    }
  }

  // ---- streams -----------------------------------------------------------------------

  private effectiveReqDir(): -1 | Dir {
    if (this.reqDir >= 0) return this.reqDir;
    return this.hint === 'client' ? 0 : this.hint === 'server' ? 1 : -1;
  }

  private decideRoles(reqDir: Dir): void {
    if (this.reqDir >= 0) return;
    this.reqDir = reqDir;
    if (this.hint !== 'unknown' && this.hint !== this.role) this.stats.roleMismatches++;
  }

  /**
   * The stream of a HEADERS block (`opening`) or DATA frame of `dir` on `id`: a tracked
   * one, a new one, an orphan whose opening was not seen, or null (closed, pushed,
   * over the cap).
   */
  private streamFor(dir: Dir, id: number, opening: boolean): Stream | null {
    const known = this.streams.get(id);
    if (known) return known;
    if (id % 2 === 0) return null;
    const eff = this.effectiveReqDir();
    const fromRequester = eff < 0 ? opening : eff === dir;
    if (this.retired.has(id)) return null;
    if (fromRequester && opening && id > this.highestOpened) {
      this.highestOpened = id;
      this.closeLostRange(dir, id);
      return this.newStream(id, dir, false);
    }
    if (eff < 0 && !opening) return null;
    const reqDir: Dir = fromRequester ? dir : dir === 0 ? 1 : 0;
    // A response on a stream its requester has not shown yet (the request direction is read
    // behind: the directions are read independently), or a stream opened in bytes not seen.
    if (!(reqDir !== dir && id > this.highestOpened) && !this.inLostRange(reqDir, id)) return null;
    return this.newStream(id, reqDir, true);
  }

  private newStream(id: number, reqDir: Dir, orphan: boolean): Stream | null {
    if (this.streams.size >= this.maxStreams) {
      this.stats.droppedStreams++;
      return null;
    }
    const s: Stream = {
      id, reqDir, half: [newHalf(), newHalf()], orphan, refused: id > this.goaway[reqDir === 0 ? 1 : 0],
      resetCode: -1, resetDir: -1, lastActivityNs: 0,
    };
    this.streams.set(id, s);
    return s;
  }

  private inLostRange(dir: Dir, id: number): boolean {
    return this.lost[dir].some(([lo, hi]) => id > lo && id < hi);
  }

  private openLostRange(dir: Dir): void {
    const ranges = this.lost[dir];
    const last = ranges[ranges.length - 1];
    if (last && last[1] === Infinity) return;
    ranges.push([this.highestOpened, Infinity]);
    if (ranges.length > MAX_LOST_RANGES) ranges.shift();
  }

  private closeLostRange(dir: Dir, id: number): void {
    const ranges = this.lost[dir];
    const last = ranges[ranges.length - 1];
    if (last && last[1] === Infinity) last[1] = id;
  }

  private activity(s: Stream, ts: number): void {
    if (ts > s.lastActivityNs) s.lastActivityNs = ts;
  }

  private endHalf(s: Stream, dir: Dir, ts: number): void {
    const h = s.half[dir];
    h.ended = true;
    if (ts > h.lastTsNs) h.lastTsNs = ts;
    if (h.gHdr > 0 || h.gLeft > 0) h.gPartial = true;
  }

  /** Emit the stream if it is over. */
  private check(s: Stream): void {
    if (!this.streams.has(s.id)) return;
    const req = s.half[s.reqDir];
    const resp = s.half[s.reqDir === 0 ? 1 : 0];
    // An orphan waits for its request (it may be read late) until `expire` or `close`.
    if (s.resetDir >= 0 || (resp.ended && req.ended) || (s.refused && req.ended && !resp.seen)) this.emit(s);
  }

  private onGoaway(dir: Dir, last: number): void {
    if (last < this.goaway[dir]) this.goaway[dir] = last;
    // Streams opened by the receiver above last-stream-id will not be processed.
    for (const s of [...this.streams.values()]) {
      if (s.reqDir !== dir && s.id > last && !s.half[dir].seen) {
        s.refused = true;
        this.check(s);
      }
    }
  }

  private settings(dir: Dir, payload: Buffer): void {
    // Settings of the sender govern what it receives: the other direction.
    const other: Dir = dir === 0 ? 1 : 0;
    for (let i = 0; i + 6 <= payload.length; i += 6) {
      const id = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      if (id === SETTINGS_HEADER_TABLE_SIZE) this.hpack[other].setLimit(value);
      else if (id === SETTINGS_MAX_FRAME_SIZE && value >= DEFAULT_MAX_FRAME_SIZE && value <= MAX_FRAME_SIZE_LIMIT) {
        this.parsers[other].maxFrameSize = value;
      }
    }
  }

  /** Count gRPC length-prefixed messages (1-byte flag, 4-byte length) in DATA content. */
  private grpc(h: Half, chunk: Buffer | null, len: number): void {
    if (h.gStopped) return;
    if (!chunk) {
      // A gap inside a message payload keeps framing; one over a prefix loses it.
      if (h.gHdr === 0 && h.gLeft >= len) {
        h.gLeft -= len;
        if (len > 0 && h.gLeft === 0) h.gMessages++;
        return;
      }
      h.gPartial = true;
      h.gStopped = true;
      return;
    }
    let i = 0;
    while (i < len) {
      if (h.gLeft > 0) {
        const take = Math.min(h.gLeft, len - i);
        h.gLeft -= take;
        i += take;
        if (h.gLeft === 0) h.gMessages++;
        continue;
      }
      const c = chunk[i++];
      if (h.gHdr === 0) {
        if (c > 1) {
          // Not a compressed flag: not gRPC framing (or lost). Counting stops.
          h.gStopped = true;
          h.gPartial = true;
          return;
        }
        h.gLen = 0;
      } else {
        h.gLen = h.gLen * 256 + c;
      }
      if (++h.gHdr === 5) {
        h.gHdr = 0;
        if (h.gLen === 0) h.gMessages++;
        else h.gLeft = h.gLen;
      }
    }
  }

  // ---- exchanges ---------------------------------------------------------------------

  private emit(s: Stream): void {
    this.streams.delete(s.id);
    if (s.orphan || this.inLostRange(0, s.id) || this.inLostRange(1, s.id)) {
      this.retired.add(s.id);
      if (this.retired.size > MAX_RETIRED) this.retired.delete(this.retired.values().next().value!);
    }
    if (this.cur[0] === s) this.cur[0] = null;
    if (this.cur[1] === s) this.cur[1] = null;
    const x = this.toExchange(s);
    this.stats.exchanges++;
    if (x.timedOut) this.stats.timedOut++;
    if (s.resetDir >= 0) this.stats.resets++;
    if (x.flags & ExchangeFlags.Refused) this.stats.refused++;
    if (s.orphan) this.stats.orphans++;
    this.deliver(x);
  }

  private toExchange(s: Stream): Http2Exchange {
    const req = s.half[s.reqDir];
    const resp = s.half[s.reqDir === 0 ? 1 : 0];
    const grpc = isGrpc(req.contentType) || isGrpc(resp.contentType);
    const [grpcService, grpcMethod] = grpc ? grpcPath(req.path) : ['', ''];
    const refused = s.refused && !resp.seen && s.resetDir < 0;
    let flags = 0;
    if (req.unknownFields) flags |= ExchangeFlags.ReqUnknownFields;
    if (resp.unknownFields) flags |= ExchangeFlags.RespUnknownFields;
    if (req.headPartial) flags |= ExchangeFlags.ReqHeadPartial;
    if (resp.headPartial) flags |= ExchangeFlags.RespHeadPartial;
    if (req.bodyPartial) flags |= ExchangeFlags.ReqBodyPartial;
    if (resp.bodyPartial) flags |= ExchangeFlags.RespBodyPartial;
    if (!req.ended) flags |= ExchangeFlags.ReqEndMissing;
    if (resp.seen && !resp.ended) flags |= ExchangeFlags.RespEndMissing;
    if (s.orphan) flags |= ExchangeFlags.ReqMissing;
    if (refused) flags |= ExchangeFlags.Refused;
    if (grpc && (req.gPartial || resp.gPartial)) flags |= ExchangeFlags.MessagesPartial;
    return {
      role: this.role === 'server' ? 'server' : 'client', streamId: s.id, protocol: grpc ? 'grpc' : 'h2', method: req.method, path: req.path,
      authority: req.authority || req.host, scheme: req.scheme, status: resp.status, contentType: resp.contentType,
      userAgent: req.userAgent, grpcService, grpcMethod,
      grpcStatus: grpc ? resp.grpcStatus : -1, grpcMessage: grpc ? resp.grpcMessage : '',
      reqMessages: grpc ? req.gMessages : 0, respMessages: grpc ? resp.gMessages : 0,
      reqStartPos: req.startPos, reqHeaderBytes: req.headerBytes, respHeaderBytes: resp.headerBytes,
      reqBodyBytes: req.bodyBytes, respBodyBytes: resp.bodyBytes, reqBytes: req.wireBytes, respBytes: resp.wireBytes,
      reqFirstTsNs: req.firstTsNs, reqLastTsNs: req.lastTsNs, respFirstTsNs: resp.firstTsNs, respLastTsNs: resp.lastTsNs,
      timedOut: !resp.seen && s.resetDir < 0 && !refused,
      resetCode: s.resetCode, resetBy: s.resetDir < 0 ? '' : s.resetDir === s.reqDir ? 'client' : 'server',
      flags,
    };
  }

  /** Start afresh out of sync, as if the capture began at the next record. */
  protected override recover(): void {
    this.stats.abandonedStreams += this.streams.size;
    this.streams.clear();
    for (const dir of [0, 1] as const) {
      this.blocks[dir] = null;
      this.inBlock[dir] = false;
      this.cur[dir] = null;
      this.hpack[dir].lose();
      this.openLostRange(dir);
    }
    const sizes = [this.parsers[0].maxFrameSize, this.parsers[1].maxFrameSize];
    this.parsers = [this.newParser(0), this.newParser(1)];
    this.parsers[0].maxFrameSize = sizes[0];
    this.parsers[1].maxFrameSize = sizes[1];
  }
}
