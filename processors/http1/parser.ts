/**
 * Incremental HTTP/1.x parser for one direction of a connection, fed the reassembler's
 * in-order `data` and `gap` events (processors/l7/reassembly.ts).
 *
 * Bodies are counted, never buffered: the only bytes held are the current line (start
 * line, header line, chunk-size line), at most `LINE_BUFFER_BYTES`. Every size has a cap;
 * exceeding one loses sync instead of buffering more. Results do not depend on how the
 * bytes are split into events, only on the bytes, the gaps and the syscall boundaries.
 *
 * Out of sync (at the start of a capture, after a gap that hides framing, after a parse
 * error) the parser skips bytes until a plausible message start at a syscall boundary: a
 * request line with a known method, a status line, or the HTTP/2 preface. A message whose
 * framing was lost stays open and is closed at that next start, its end inferred
 * (`MessageFlags.EndInferred`).
 *
 * Only a few header values are kept (Host, Content-Type, User-Agent, Upgrade, and what
 * framing needs); no other header value, credentials included, is ever decoded.
 */
import type { StreamEvent } from '../l7/reassembly.js';

/** Longest start line, line terminator included; longer ones lose sync. */
export const MAX_START_LINE_BYTES = 8 * 1024;
/** Largest header block (start line to empty line) and largest trailer block. */
export const MAX_HEADER_BLOCK_BYTES = 64 * 1024;
/** Most field lines in one header block or trailer block. */
export const MAX_HEADERS = 100;
/** Longest chunk-size line, extensions and terminator included. */
export const MAX_CHUNK_LINE_BYTES = 4 * 1024;
/** Bytes of one line held in memory; the rest of a longer header line is counted, not kept. */
export const LINE_BUFFER_BYTES = 8 * 1024;
/** Longest request target kept, in bytes. */
export const MAX_TARGET_BYTES = 2 * 1024;
/** Longest kept header value (Host, Content-Type, User-Agent, Upgrade), in bytes. */
export const MAX_VALUE_BYTES = 512;

const MAX_METHOD_BYTES = 24;
/** 16^13 = 2^52: chunk sizes and Content-Length stay exact in a number. */
const MAX_SIZE_HEX_DIGITS = 13;
const MAX_SIZE_DEC_DIGITS = 15;
const FIRST_LINE_BUFFER_BYTES = 256;

const LF = 10;
const CR = 13;
const SP = 32;
const HT = 9;

/** Methods accepted when resynchronising: a known token makes a false start unlikely. */
export const KNOWN_METHODS: ReadonlySet<string> = new Set([
  'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH',
  'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'SEARCH', 'REPORT', 'PURGE',
]);
const METHOD_PREFIXES = [...KNOWN_METHODS].map((m) => Buffer.from(`${m} `, 'latin1'));
const H2_PREFACE_LINE = Buffer.from('PRI * HTTP/2.0', 'latin1');
const HTTP1_PREFIX = Buffer.from('HTTP/1.', 'latin1');
/** "HTTP/1.x 200": enough of a status line to commit to it. */
const STATUS_PREFIX_BYTES = 12;
/** Bytes that decide whether a line can be a start line (the longest method and SP fit). */
const PREFIX_BYTES = MAX_METHOD_BYTES + 1;

/** Bits of `Http1Message.flags`. */
export const MessageFlags = {
  /** Some body bytes were not seen (a gap was skipped, or the message was cut short). */
  BodyPartial: 1 << 0,
  /** The end was not seen: it is the next message's start or the stream's end. */
  EndInferred: 1 << 1,
  /** The header block was not fully parsed: kept header values may be missing. */
  HeadPartial: 1 << 2,
  /** The connection stays open after this message (HTTP/1.1 default, or keep-alive). */
  KeepAlive: 1 << 3,
} as const;

export type MessageKind = 'request' | 'response';
/** Which start lines a parser accepts: 'any' until the connection knows its roles. */
export type ExpectKind = 'any' | MessageKind;
/** Why a parser stopped for good: the connection no longer speaks HTTP/1. */
export type StopReason = 'upgrade' | 'connect' | 'h2';
/** Why a parser lost sync. */
export type DesyncCause = 'gap' | 'parse_error' | 'discontinuity';
/** Counted parse errors, by what was malformed. */
export type ParseErrorKind =
  | 'start_line' | 'wrong_direction' | 'line_too_long' | 'header' | 'header_limit'
  | 'content_length' | 'transfer_encoding' | 'chunk';

/**
 * One HTTP/1 message. The parser creates it at the start line, fills it in as parsing goes
 * on, and hands it over for good in `onEnd`.
 */
export interface Http1Message {
  kind: MessageKind;
  /** Request method; '' for responses. */
  method: string;
  /** Request target as sent (origin, absolute, authority or asterisk form), at most MAX_TARGET_BYTES; '' for responses. */
  target: string;
  /** Host header; '' if absent. */
  host: string;
  /** Response status; 0 for requests. */
  status: number;
  version: '1.0' | '1.1';
  /** Stream position of the first byte of the start line. */
  startPos: number;
  /** Stream position after the last byte; -1 while open. */
  endPos: number;
  /** Bytes of the start line, header lines and empty line. */
  headerBytes: number;
  /** Body bytes: payload bytes (chunk data for chunked bodies), skipped bytes included. */
  bodyBytes: number;
  /** endPos - startPos: every byte of the message, framing included. */
  wireBytes: number;
  /** CLOCK_MONOTONIC ns of the event holding the first byte. */
  firstTsNs: number;
  /** CLOCK_MONOTONIC ns of the event holding the last byte. */
  lastTsNs: number;
  /** `MessageFlags` bits. */
  flags: number;
  contentType: string;
  userAgent: string;
  /** Upgrade header (e.g. 'websocket', 'h2c'); '' if absent. */
  upgrade: string;
  /** The request carries `Expect: 100-continue`. */
  expectContinue: boolean;
  /** A 1xx response other than 101: not the final response to its request. */
  interim: boolean;
}

/** What the parser tells its owner (the connection's pairing layer). */
export interface Http1ParserHooks {
  /** A start line was recognised; `msg` is open and is filled in as parsing goes on. */
  onStart(msg: Http1Message): void;
  /** `msg` ended (completely, or with an inferred end) and will not change again. */
  onEnd(msg: Http1Message): void;
  /** Sync was lost: bytes are skipped until the next recognised start. */
  onDesync(cause: DesyncCause): void;
  /** The stream stopped speaking HTTP/1 (after `onEnd` of the message that said so). */
  onStop(reason: StopReason): void;
  /** Method of the request the response being parsed answers, or null if unknown. */
  requestMethod(): string | null;
  /**
   * The response being parsed answers no request this connection saw (capture or a re-read
   * began after it): its framing cannot be trusted (a HEAD response announces a body it does
   * not carry), so the parser skips to the next message start instead of counting a body.
   */
  responseUnpaired?(): boolean;
}

/** Counters of one or more parsers; pass one object to many parsers to sum them. */
export interface Http1ParserStats {
  requests: number;
  responses: number;
  /** 1xx responses other than 101. */
  interimResponses: number;
  /** Times sync was lost, by cause. */
  desyncs: Record<DesyncCause, number>;
  /** Times a message start was found after sync was lost. */
  resyncs: number;
  /** Data bytes skipped while out of sync. */
  discardedBytes: number;
  /** Data bytes after the stream stopped speaking HTTP/1 or ended. */
  ignoredBytes: number;
  parseErrors: Record<ParseErrorKind, number>;
}

export function newParserStats(): Http1ParserStats {
  return {
    requests: 0, responses: 0, interimResponses: 0,
    desyncs: { gap: 0, parse_error: 0, discontinuity: 0 },
    resyncs: 0, discardedBytes: 0, ignoredBytes: 0,
    parseErrors: {
      start_line: 0, wrong_direction: 0, line_too_long: 0, header: 0, header_limit: 0,
      content_length: 0, transfer_encoding: 0, chunk: 0,
    },
  };
}

type State =
  /** Out of sync: skip to a plausible start at a syscall boundary. */
  | 'seek'
  /** In sync between messages: the next byte starts a message (leading CRLFs skipped). */
  | 'idle'
  /** Collecting one line of kind `lineKind`. */
  | 'line'
  /** Content-Length body. */
  | 'body'
  /** Data of one chunk. */
  | 'chunk_data'
  /** Body delimited by the end of the stream. */
  | 'until_close'
  | 'stopped';
type LineKind = 'start' | 'header' | 'chunk_size' | 'chunk_end' | 'trailer';

/** Prefix match result: the bytes so far cannot, may, or do begin a start line. */
const NO = 0;
const PARTIAL = 1;
const MATCH = 2;

/** RFC 9110 tchar. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;

function literalPrefix(b: Buffer, n: number, lit: Buffer): number {
  const m = Math.min(n, lit.length);
  for (let i = 0; i < m; i++) if (b[i] !== lit[i]) return NO;
  return n >= lit.length ? MATCH : PARTIAL;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** "HTTP/1." DIGIT SP 3DIGIT */
function statusPrefix(b: Buffer, n: number): number {
  if (literalPrefix(b, n, HTTP1_PREFIX) === NO) return NO;
  for (let i = HTTP1_PREFIX.length; i < Math.min(n, STATUS_PREFIX_BYTES); i++) {
    if (i === 8 ? b[i] !== SP : !isDigit(b[i])) return NO;
  }
  return n >= STATUS_PREFIX_BYTES ? MATCH : PARTIAL;
}

/** Any token method followed by SP (accepted while in sync). */
function tokenPrefix(b: Buffer, n: number): number {
  for (let i = 0; i < n; i++) {
    if (b[i] === SP) return i > 0 ? MATCH : NO;
    if (!TCHAR[b[i]] || i >= MAX_METHOD_BYTES) return NO;
  }
  return PARTIAL;
}

/** Can b[0, n) begin a start line? Out of sync only known methods count. */
function startPrefix(b: Buffer, n: number, knownOnly: boolean): number {
  let best = Math.max(statusPrefix(b, n), literalPrefix(b, n, H2_PREFACE_LINE));
  if (knownOnly) {
    for (const m of METHOD_PREFIXES) if (best < MATCH) best = Math.max(best, literalPrefix(b, n, m));
  } else {
    best = Math.max(best, tokenPrefix(b, n));
  }
  return best;
}

/** The only header fields whose values are read; indices are the H_ constants. */
const KEPT_BYTES = ['host', 'content-length', 'transfer-encoding', 'connection', 'expect', 'content-type', 'user-agent', 'upgrade']
  .map((h) => Buffer.from(h, 'latin1'));
const H_HOST = 0, H_CONTENT_LENGTH = 1, H_TRANSFER_ENCODING = 2, H_CONNECTION = 3, H_EXPECT = 4,
  H_CONTENT_TYPE = 5, H_USER_AGENT = 6, H_UPGRADE = 7;

/** Index of field name `b[0, n)` (a valid token) in KEPT_BYTES, or -1. */
function keptHeader(b: Buffer, n: number): number {
  outer: for (let k = 0; k < KEPT_BYTES.length; k++) {
    const name = KEPT_BYTES[k];
    if (name.length !== n) continue;
    // Tokens only: OR-ing 0x20 lowercases letters and leaves '-' alone.
    for (let i = 0; i < n; i++) if ((b[i] | 0x20) !== name[i]) continue outer;
    return k;
  }
  return -1;
}

function newMessage(kind: MessageKind, startPos: number, tsNs: number): Http1Message {
  return {
    kind, method: '', target: '', host: '', status: 0, version: '1.1', startPos, endPos: -1,
    headerBytes: 0, bodyBytes: 0, wireBytes: 0, firstTsNs: tsNs, lastTsNs: tsNs, flags: 0,
    contentType: '', userAgent: '', upgrade: '', expectContinue: false, interim: false,
  };
}

/**
 * Bytes of `msg` were in an event at `ts`. Its last timestamp only moves forward, so
 * durations stay non-negative even if hostile positions reorder time.
 */
function seen(msg: Http1Message, ts: number): void {
  if (ts > msg.lastTsNs) msg.lastTsNs = ts;
}

const CLOSE = Buffer.from('close', 'latin1');
const KEEP_ALIVE = Buffer.from('keep-alive', 'latin1');
const CHUNKED = Buffer.from('chunked', 'latin1');
const CONTINUE_100 = Buffer.from('100-continue', 'latin1');

/** Whether b[from, to) is `token` (lowercase letters, digits, '-'), ignoring letter case. */
function tokenAt(b: Buffer, from: number, to: number, token: Buffer): boolean {
  if (to - from !== token.length) return false;
  // OR-ing 0x20 lowercases letters and leaves digits and '-' alone; kept values hold no controls.
  for (let i = 0; i < token.length; i++) if ((b[from + i] | 0x20) !== token[i]) return false;
  return true;
}

/** Bounds of the list member nextMember found last (module state: no object per member). */
let memberStart = 0;
let memberEnd = 0;

/**
 * The member of the comma-separated list b[.., to) starting at `i`, spaces around it trimmed,
 * into memberStart/memberEnd; returns where the next member starts, past `to` after the last.
 * Lists are read in place: these headers come with nearly every message.
 */
function nextMember(b: Buffer, i: number, to: number): number {
  let j = i;
  while (j < to && b[j] !== 44) j++;
  let m0 = i;
  let m1 = j;
  while (m0 < m1 && (b[m0] === SP || b[m0] === HT)) m0++;
  while (m1 > m0 && (b[m1 - 1] === SP || b[m1 - 1] === HT)) m1--;
  memberStart = m0;
  memberEnd = m1;
  return j + 1;
}

/** Whether `token` is a member of the list b[from, to) (letter case ignored). */
function hasMember(b: Buffer, from: number, to: number, token: Buffer): boolean {
  for (let i = from; i <= to; ) {
    i = nextMember(b, i, to);
    if (tokenAt(b, memberStart, memberEnd, token)) return true;
  }
  return false;
}

/** Whether the last member of the list b[from, to) is `token` (letter case ignored). */
function lastMemberIs(b: Buffer, from: number, to: number, token: Buffer): boolean {
  for (let i = from; ; ) {
    i = nextMember(b, i, to);
    if (i > to) return tokenAt(b, memberStart, memberEnd, token);
  }
}

/** Incremental parser of one direction. Never throws on input bytes. */
export class Http1Parser {
  /** Which start lines are accepted; the connection narrows it once roles are known. */
  expect: ExpectKind;
  readonly stats: Http1ParserStats;
  private readonly hooks: Http1ParserHooks;

  private state: State = 'seek';
  /** Stream position of the next byte; -1 before the first event. */
  private pos = -1;

  private lineKind: LineKind = 'start';
  private line: Buffer = Buffer.alloc(0);
  private lineKept = 0;
  private lineLen = 0;
  private lineLast = 0;
  private linePos = 0;
  private lineTs = 0;
  /** The start line being collected began out of sync (a candidate at a syscall boundary). */
  private lineFromSeek = false;
  private linePrefix = NO;

  /** Current message; in 'seek' a message whose framing was lost, kept open. */
  private msg: Http1Message | null = null;
  private headDone = false;
  private fieldCount = 0;
  private blockStart = 0;
  private contentLength = -1;
  private transferEncoding = false;
  private chunked = false;
  private connClose = false;
  private connKeepAlive = false;
  private remaining = 0;

  /** A stream position known to be between messages: a first event there starts in sync. */
  private readonly boundary: number;

  constructor(hooks: Http1ParserHooks, opts: { expect?: ExpectKind; stats?: Http1ParserStats; boundary?: number } = {}) {
    this.hooks = hooks;
    this.expect = opts.expect ?? 'any';
    this.stats = opts.stats ?? newParserStats();
    this.boundary = opts.boundary ?? -1;
  }

  /** Bytes of input held (the current line). */
  get bufferedBytes(): number {
    return this.state === 'line' ? this.lineKept : 0;
  }

  /** No message open and no bytes held: nothing would be lost by starting afresh here. */
  get idle(): boolean {
    return this.msg === null && this.state !== 'line';
  }

  /**
   * Not inside a message's framing: between messages, or skipping bytes while out of
   * sync (a message whose framing was lost may still be open then).
   */
  get atBoundary(): boolean {
    return this.state === 'idle' || this.state === 'seek' || this.state === 'stopped';
  }

  /** Feed the next event of this direction. */
  push(ev: StreamEvent): void {
    if (this.state === 'stopped') {
      if (ev.type === 'data') this.stats.ignoredBytes += ev.data.length;
      return;
    }
    if (this.pos < 0) {
      this.pos = ev.pos;
      if (ev.pos === this.boundary && this.state === 'seek') this.state = 'idle';
    } else if (ev.pos !== this.pos) {
      // The events skipped or repeated bytes: nothing parsed so far can be trusted to frame what follows.
      this.loseSync('discontinuity', null, ev.tsNs);
      this.pos = ev.pos;
    }
    if (ev.type === 'gap') {
      if (ev.len > 0) this.gap(ev.len, ev.tsNs);
    } else {
      this.data(ev.data, ev.tsNs, ev.syscallStart);
    }
  }

  /**
   * The stream ended (connection closed): a body delimited by the close ends here, any
   * other open message ends here with its end inferred. The parser is stopped afterwards.
   */
  finish(): void {
    this.closeOpen(true);
    this.state = 'stopped';
  }

  /** Stop parsing for good (the other direction saw an upgrade); an open message ends here. */
  stop(): void {
    this.closeOpen(false);
    this.state = 'stopped';
  }

  private closeOpen(streamEnd: boolean): void {
    const msg = this.msg;
    if (!msg || this.state === 'stopped') return;
    if (this.state === 'until_close' && streamEnd) this.endMessage(this.pos, msg.lastTsNs);
    else this.inferEnd(this.pos);
  }

  // ---- data ------------------------------------------------------------------------

  private data(buf: Buffer, ts: number, syscallStart: boolean): void {
    const base = this.pos;
    const n = buf.length;
    let off = 0;
    // A syscall boundary is where resynchronisation looks; an unconfirmed candidate that
    // did not even reach a full prefix before its syscall ended gives way to the new one.
    if (syscallStart && (this.state === 'seek' || (this.state === 'line' && this.lineKind === 'start'
        && this.lineFromSeek && this.linePrefix !== MATCH))) {
      if (this.state === 'line') this.stats.discardedBytes += this.lineLen;
      this.beginStartLine(base, ts, true);
    }
    while (off < n) {
      switch (this.state) {
        case 'seek':
          this.stats.discardedBytes += n - off;
          if (this.msg) seen(this.msg, ts);
          off = n;
          break;
        case 'idle':
          while (off < n && (buf[off] === CR || buf[off] === LF)) off++;
          if (off < n) this.beginStartLine(base + off, ts, false);
          break;
        case 'line':
          off = this.lineBytes(buf, off, base, ts);
          break;
        case 'body': {
          const take = Math.min(this.remaining, n - off);
          this.msg!.bodyBytes += take;
          seen(this.msg!, ts);
          this.remaining -= take;
          off += take;
          if (this.remaining === 0) this.endMessage(base + off, ts);
          break;
        }
        case 'chunk_data': {
          const take = Math.min(this.remaining, n - off);
          this.msg!.bodyBytes += take;
          seen(this.msg!, ts);
          this.remaining -= take;
          off += take;
          if (this.remaining === 0) this.beginLine('chunk_end', base + off, ts);
          break;
        }
        case 'until_close':
          this.msg!.bodyBytes += n - off;
          seen(this.msg!, ts);
          off = n;
          break;
        case 'stopped':
          this.stats.ignoredBytes += n - off;
          off = n;
          break;
      }
    }
    this.pos = base + n;
  }

  private beginStartLine(pos: number, ts: number, fromSeek: boolean): void {
    this.beginLine('start', pos, ts);
    this.lineFromSeek = fromSeek;
    this.linePrefix = PARTIAL;
  }

  private beginLine(kind: LineKind, pos: number, ts: number): void {
    this.state = 'line';
    this.lineKind = kind;
    this.lineKept = 0;
    this.lineLen = 0;
    this.lineLast = 0;
    this.linePos = pos;
    this.lineTs = ts;
  }

  /** Absolute position of the first byte over the current line's size cap. */
  private lineCapPos(): number {
    switch (this.lineKind) {
      case 'start': return this.linePos + MAX_START_LINE_BYTES;
      case 'header':
      case 'trailer': return this.blockStart + MAX_HEADER_BLOCK_BYTES;
      case 'chunk_size':
      case 'chunk_end': return this.linePos + MAX_CHUNK_LINE_BYTES;
    }
  }

  /** Collect line bytes from buf[off]; process the line at its LF. Returns the new offset. */
  private lineBytes(buf: Buffer, off: number, base: number, ts: number): number {
    // A cap is crossed at a fixed stream position, however the bytes are split: the line
    // takes bytes up to that one, the rest is skipped out of sync.
    const over = this.lineCapPos() - base;
    // One pass finds the LF and keeps the line's bytes (up to LINE_BUFFER_BYTES): lines are
    // short, and Buffer#copy's native call costs more than the bytes.
    const scanEnd = Math.min(buf.length, over);
    let line = this.line;
    let k = this.lineKept;
    let lf = -1;
    for (let i = off; i < scanEnd; i++) {
      const c = buf[i];
      if (k < line.length) line[k++] = c;
      else if (k < LINE_BUFFER_BYTES) {
        this.lineKept = k;
        this.reserveLine(k + 1);
        line = this.line;
        line[k++] = c;
      }
      if (c === LF) {
        lf = i;
        break;
      }
    }
    const stop = lf >= 0 ? lf + 1 : Math.min(buf.length, over + 1);
    // Without an LF the line also takes the first byte past its cap, if present: it shows the cap crossed.
    if (lf < 0 && stop > scanEnd && scanEnd >= off && k < LINE_BUFFER_BYTES) {
      if (k >= line.length) {
        this.lineKept = k;
        this.reserveLine(k + 1);
        line = this.line;
      }
      line[k++] = buf[scanEnd];
    }
    this.lineKept = k;
    const cr = lf >= 0 && (lf > off ? buf[lf - 1] : this.lineLast) === CR;
    this.lineLen += stop - off;
    this.lineLast = buf[stop - 1];
    const end = base + stop;
    if (this.lineKind !== 'start' && this.msg) seen(this.msg, ts);

    if (this.lineKind === 'start' && this.linePrefix !== MATCH) {
      this.linePrefix = startPrefix(this.line, Math.min(this.lineKept, PREFIX_BYTES), this.lineFromSeek);
      if (this.linePrefix === NO || (lf >= 0 && this.linePrefix !== MATCH)) {
        this.startLineFailed('start_line', ts);
        return stop;
      }
    }
    if (end > this.lineCapPos()) {
      if (this.lineKind === 'start') this.startLineFailed('line_too_long', ts);
      else this.loseSync('parse_error', this.lineKind === 'header' || this.lineKind === 'trailer' ? 'header_limit' : 'chunk', ts);
      return stop;
    }
    if (lf < 0) return stop;
    const len = Math.min(this.lineKept, this.lineLen - (cr ? 2 : 1));
    const truncated = this.lineLen - (cr ? 2 : 1) > this.lineKept;
    this.state = 'idle';
    switch (this.lineKind) {
      case 'start': this.startLine(len, end, ts); break;
      case 'header': this.headerLine(len, truncated, end, ts); break;
      case 'chunk_size': this.chunkSizeLine(len, end, ts); break;
      case 'chunk_end':
        if (len !== 0) this.loseSync('parse_error', 'chunk', ts);
        else this.beginLine('chunk_size', end, ts);
        break;
      case 'trailer': this.trailerLine(len, end, ts); break;
    }
    return stop;
  }

  private reserveLine(size: number): void {
    if (size <= this.line.length) return;
    let cap = Math.max(this.line.length, FIRST_LINE_BUFFER_BYTES);
    while (cap < size) cap *= 2;
    const next = Buffer.allocUnsafe(Math.min(cap, LINE_BUFFER_BYTES));
    this.line.copy(next, 0, 0, this.lineKept);
    this.line = next;
  }

  private startLineFailed(kind: ParseErrorKind, ts: number): void {
    if (this.lineFromSeek) {
      // A false candidate while seeking: keep seeking, nothing new was lost.
      this.stats.discardedBytes += this.lineLen;
      if (this.msg) seen(this.msg, ts);
      this.state = 'seek';
      return;
    }
    this.stats.discardedBytes += this.lineLen;
    this.loseSync('parse_error', kind, ts);
  }

  // ---- start line and headers --------------------------------------------------------

  private startLine(n: number, end: number, ts: number): void {
    const b = this.line;
    if (n === H2_PREFACE_LINE.length && literalPrefix(b, n, H2_PREFACE_LINE) === MATCH) {
      if (this.msg) this.inferEnd(this.linePos);
      this.state = 'stopped';
      this.hooks.onStop('h2');
      return;
    }
    const isResponse = literalPrefix(b, n, HTTP1_PREFIX) === MATCH;
    const kind: MessageKind = isResponse ? 'response' : 'request';
    const parsed = isResponse ? this.parseStatusLine(n) : this.parseRequestLine(n);
    if (!parsed) {
      this.startLineFailed('start_line', ts);
      return;
    }
    if (this.expect !== 'any' && this.expect !== kind) {
      this.startLineFailed('wrong_direction', ts);
      return;
    }
    // A message left open by lost framing ends where this one begins.
    if (this.msg) this.inferEnd(this.linePos);
    if (this.lineFromSeek) this.stats.resyncs++;
    const msg = newMessage(kind, this.linePos, this.lineTs);
    seen(msg, ts);
    if (isResponse) {
      msg.version = b[7] === 48 ? '1.0' : '1.1';
      msg.status = (b[9] - 48) * 100 + (b[10] - 48) * 10 + (b[11] - 48);
      msg.interim = msg.status < 200 && msg.status !== 101;
    } else {
      const sp1 = b.indexOf(SP);
      const sp2 = b.indexOf(SP, sp1 + 1);
      msg.method = b.toString('latin1', 0, sp1);
      msg.target = b.toString('utf8', sp1 + 1, Math.min(sp2, sp1 + 1 + MAX_TARGET_BYTES));
      msg.version = b[n - 1] === 48 ? '1.0' : '1.1';
    }
    this.msg = msg;
    this.headDone = false;
    this.fieldCount = 0;
    this.blockStart = msg.startPos;
    this.contentLength = -1;
    this.transferEncoding = false;
    this.chunked = false;
    this.connClose = false;
    this.connKeepAlive = false;
    this.beginLine('header', end, ts);
    this.hooks.onStart(msg);
  }

  /** METHOD SP target SP HTTP/1.x, single spaces. */
  private parseRequestLine(n: number): boolean {
    const b = this.line;
    let i = 0;
    while (i < n && TCHAR[b[i]]) i++;
    if (i === 0 || i >= n || i > MAX_METHOD_BYTES || b[i] !== SP) return false;
    if (this.lineFromSeek && !KNOWN_METHODS.has(b.toString('latin1', 0, i))) return false;
    const t0 = i + 1;
    let j = t0;
    while (j < n && b[j] > SP && b[j] !== 0x7f) j++;
    // The version is the last 8 bytes: "HTTP/1." DIGIT.
    if (j === t0 || j >= n || b[j] !== SP || n - j - 1 !== 8) return false;
    for (let k = 0; k < HTTP1_PREFIX.length; k++) if (b[j + 1 + k] !== HTTP1_PREFIX[k]) return false;
    return isDigit(b[n - 1]);
  }

  /** HTTP/1.x SP 3DIGIT [SP reason]; the reason is not kept. */
  private parseStatusLine(n: number): boolean {
    const b = this.line;
    if (n < STATUS_PREFIX_BYTES || statusPrefix(b, n) !== MATCH) return false;
    if (n > STATUS_PREFIX_BYTES && b[STATUS_PREFIX_BYTES] !== SP) return false;
    return b[9] !== 48;
  }

  private headerLine(n: number, truncated: boolean, end: number, ts: number): void {
    if (n === 0) {
      this.headEnd(end, ts);
      return;
    }
    if (++this.fieldCount > MAX_HEADERS) {
      this.loseSync('parse_error', 'header_limit', ts);
      return;
    }
    const b = this.line;
    // Obsolete line folding continues the previous value; kept values simply end early.
    if (b[0] === SP || b[0] === HT) {
      this.beginLine('header', end, ts);
      return;
    }
    let colon = 0;
    while (colon < n && TCHAR[b[colon]]) colon++;
    if (colon === 0 || colon >= n || b[colon] !== 58) {
      this.loseSync('parse_error', 'header', ts);
      return;
    }
    let v0 = colon + 1;
    let v1 = n;
    while (v0 < v1 && (b[v0] === SP || b[v0] === HT)) v0++;
    while (v1 > v0 && (b[v1 - 1] === SP || b[v1 - 1] === HT)) v1--;
    const msg = this.msg!;
    const kept = keptHeader(b, colon);
    // RFC 9110 §5.5: CR, LF and NUL never belong in a value; a kept value takes no controls.
    if (kept >= 0) {
      for (let i = v0; i < v1; i++) {
        if ((b[i] < SP && b[i] !== HT) || b[i] === 0x7f) {
          this.loseSync('parse_error', 'header', ts);
          return;
        }
      }
    }
    switch (kept) {
      case H_HOST: msg.host = this.value(v0, v1); break;
      case H_CONTENT_TYPE: msg.contentType = this.value(v0, v1); break;
      case H_USER_AGENT: msg.userAgent = this.value(v0, v1); break;
      case H_UPGRADE: msg.upgrade = this.value(v0, v1); break;
      case H_EXPECT:
        if (!truncated && hasMember(b, v0, v1, CONTINUE_100)) msg.expectContinue = true;
        break;
      case H_CONNECTION:
        if (truncated) break;
        if (hasMember(b, v0, v1, CLOSE)) this.connClose = true;
        if (hasMember(b, v0, v1, KEEP_ALIVE)) this.connKeepAlive = true;
        break;
      case H_TRANSFER_ENCODING: {
        if (truncated) {
          this.loseSync('parse_error', 'transfer_encoding', ts);
          return;
        }
        this.transferEncoding = true;
        this.chunked = lastMemberIs(b, v0, v1, CHUNKED);
        break;
      }
      case H_CONTENT_LENGTH:
        if (truncated || !this.contentLengthValue(v0, v1)) {
          this.loseSync('parse_error', 'content_length', ts);
          return;
        }
        break;
    }
    this.beginLine('header', end, ts);
  }

  private value(v0: number, v1: number): string {
    return this.line.toString('utf8', v0, Math.min(v1, v0 + MAX_VALUE_BYTES));
  }

  /** 1*DIGIT, or a list of identical ones (RFC 9110 §8.6); must agree with earlier fields. */
  private contentLengthValue(v0: number, v1: number): boolean {
    const b = this.line;
    let value = -1;
    let i = v0;
    while (i <= v1) {
      while (i < v1 && (b[i] === SP || b[i] === HT)) i++;
      let digits = 0;
      let n = 0;
      while (i < v1 && isDigit(b[i])) {
        n = n * 10 + (b[i] - 48);
        i++;
        if (++digits > MAX_SIZE_DEC_DIGITS) return false;
      }
      while (i < v1 && (b[i] === SP || b[i] === HT)) i++;
      if (digits === 0 || (value >= 0 && n !== value)) return false;
      value = n;
      if (i < v1 && b[i] !== 44) return false;
      i++;
    }
    if (this.contentLength >= 0 && this.contentLength !== value) return false;
    this.contentLength = value;
    return true;
  }

  /** The empty line: decide how the body is delimited (RFC 9112 §6.3). */
  private headEnd(end: number, ts: number): void {
    const msg = this.msg!;
    this.headDone = true;
    msg.headerBytes = end - msg.startPos;
    const keepAlive = msg.version === '1.1' ? !this.connClose : this.connKeepAlive && !this.connClose;
    if (keepAlive) msg.flags |= MessageFlags.KeepAlive;
    if (msg.kind === 'request') {
      if (msg.method === 'CONNECT') {
        this.endMessage(end, ts);
      } else if (this.transferEncoding) {
        // Only chunked as the last coding frames a request body (RFC 9112 §6.3).
        if (this.chunked) this.beginLine('chunk_size', end, ts);
        else this.loseSync('parse_error', 'transfer_encoding', ts);
      } else if (this.contentLength > 0) {
        this.beginBody();
      } else {
        this.endMessage(end, ts);
      }
      return;
    }
    const status = msg.status;
    if (status < 200) {
      this.endMessage(end, ts);
      if (status === 101) this.stopHere('upgrade');
      return;
    }
    const method = this.hooks.requestMethod();
    if (this.hooks.responseUnpaired?.() && (this.transferEncoding || this.contentLength !== 0)) {
      this.endMessage(end, ts);
      this.state = 'seek';
    } else if (method === 'CONNECT' && status < 300) {
      this.endMessage(end, ts);
      this.stopHere('connect');
    } else if (method === 'HEAD' || status === 204 || status === 304) {
      this.endMessage(end, ts);
    } else if (this.transferEncoding) {
      if (this.chunked) this.beginLine('chunk_size', end, ts);
      else this.untilClose();
    } else if (this.contentLength > 0) {
      this.beginBody();
    } else if (this.contentLength === 0) {
      this.endMessage(end, ts);
    } else {
      this.untilClose();
    }
  }

  private beginBody(): void {
    this.state = 'body';
    this.remaining = this.contentLength;
  }

  private untilClose(): void {
    this.msg!.flags &= ~MessageFlags.KeepAlive;
    this.state = 'until_close';
  }

  private stopHere(reason: StopReason): void {
    this.state = 'stopped';
    this.hooks.onStop(reason);
  }

  // ---- chunked bodies --------------------------------------------------------------

  /** chunk-size [ BWS ";" extensions ]; extensions are ignored. */
  private chunkSizeLine(n: number, end: number, ts: number): void {
    const b = this.line;
    let i = 0;
    let size = 0;
    for (; i < n; i++) {
      const c = b[i] | 0x20;
      const d = isDigit(b[i]) ? b[i] - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
      if (d < 0) break;
      size = size * 16 + d;
    }
    let j = i;
    while (j < n && (b[j] === SP || b[j] === HT)) j++;
    if (i === 0 || i > MAX_SIZE_HEX_DIGITS || (j < n && b[j] !== 59)) {
      this.loseSync('parse_error', 'chunk', ts);
      return;
    }
    if (size === 0) {
      this.fieldCount = 0;
      this.blockStart = end;
      this.beginLine('trailer', end, ts);
      return;
    }
    this.state = 'chunk_data';
    this.remaining = size;
  }

  /** Trailer fields are counted against the caps and never kept. */
  private trailerLine(n: number, end: number, ts: number): void {
    if (n === 0) {
      this.endMessage(end, ts);
      return;
    }
    if (++this.fieldCount > MAX_HEADERS) {
      this.loseSync('parse_error', 'header_limit', ts);
      return;
    }
    this.beginLine('trailer', end, ts);
  }

  // ---- gaps ------------------------------------------------------------------------

  private gap(len: number, ts: number): void {
    const at = this.pos;
    this.pos += len;
    const msg = this.msg;
    switch (this.state) {
      case 'seek':
        if (msg) seen(msg, ts);
        return;
      case 'line':
        if (this.lineKind === 'start' && this.lineFromSeek) {
          // The candidate is cut short: back to seeking; the gap belongs to an open message.
          this.stats.discardedBytes += this.lineLen;
          if (msg) seen(msg, ts);
          this.state = 'seek';
          return;
        }
        if (msg) seen(msg, ts);
        this.loseSync('gap', null, ts);
        return;
      case 'body':
      case 'chunk_data': {
        const take = Math.min(len, this.remaining);
        msg!.bodyBytes += take;
        seen(msg!, ts);
        msg!.flags |= MessageFlags.BodyPartial;
        this.remaining -= take;
        if (this.state === 'chunk_data') {
          if (take < len) this.loseSync('gap', null, ts);
          else if (this.remaining === 0) this.beginLine('chunk_end', at + take, ts);
          return;
        }
        if (this.remaining === 0) this.endMessage(at + take, ts);
        if (take < len) this.loseSync('gap', null, ts);
        return;
      }
      case 'until_close':
        msg!.bodyBytes += len;
        seen(msg!, ts);
        msg!.flags |= MessageFlags.BodyPartial;
        return;
      case 'idle':
        // Whole messages may hide in the gap: framing is lost even though none was open.
        this.loseSync('gap', null, ts);
        return;
      case 'stopped':
        return;
    }
  }

  // ---- message ends and sync ---------------------------------------------------------

  private endMessage(endPos: number, lastTs: number): void {
    const msg = this.msg!;
    msg.endPos = endPos;
    msg.wireBytes = endPos - msg.startPos;
    seen(msg, lastTs);
    this.msg = null;
    this.state = 'idle';
    this.count(msg);
    this.hooks.onEnd(msg);
  }

  /**
   * End the open message at `endPos` without having seen its end: sizes follow from
   * positions, and the body (or the head) is marked partial since its framing was not seen.
   * Its last timestamp is that of the last byte attributed to it so far.
   */
  private inferEnd(endPos: number): void {
    const msg = this.msg!;
    msg.flags |= MessageFlags.EndInferred;
    if (this.headDone) {
      msg.flags |= MessageFlags.BodyPartial;
      msg.bodyBytes = Math.max(msg.bodyBytes, endPos - msg.startPos - msg.headerBytes);
    } else {
      msg.flags |= MessageFlags.HeadPartial;
      msg.headerBytes = endPos - msg.startPos;
    }
    msg.endPos = endPos;
    msg.wireBytes = endPos - msg.startPos;
    this.msg = null;
    this.count(msg);
    this.hooks.onEnd(msg);
  }

  private count(msg: Http1Message): void {
    if (msg.kind === 'request') this.stats.requests++;
    else if (msg.interim) this.stats.interimResponses++;
    else this.stats.responses++;
  }

  /**
   * Framing is lost: skip to the next plausible start. An open message stays open; its
   * end is inferred when the next start is found or the stream ends.
   */
  private loseSync(cause: DesyncCause, error: ParseErrorKind | null, ts: number): void {
    if (error) this.stats.parseErrors[error]++;
    this.stats.desyncs[cause]++;
    if (this.msg) {
      seen(this.msg, ts);
      if (!this.headDone) this.msg.flags |= MessageFlags.HeadPartial;
    }
    this.state = 'seek';
    this.hooks.onDesync(cause);
  }
}
