/**
 * Masks the values of secret HTTP/1 headers (Authorization, Proxy-Authorization, Cookie,
 * Set-Cookie) in socket payload and TLS plaintext records before they are published. The
 * mask is a same-length fill of '*' over the value bytes only (not the name, the leading
 * spaces, CR or LF), so positions, Content-Length and the processors' parsing are unchanged.
 *
 * Each direction of each connection's socket bytes, and separately of its TLS plaintext, is
 * a stream with a small carry state, so a header name or value split across records (two
 * syscalls) is still found. Records of a stream are expected at consecutive positions
 * (pos_bytes); the rules:
 *
 * - Header block: a line containing "HTTP/1." (a request or status line) starts one at its
 *   line end; an empty line ends it, and so does a line that starts with a byte no header
 *   name has, or whose name could be a secret one's but is followed by neither ':' nor
 *   whitespace. Only lines of a header block are looked at, but these rules err toward
 *   masking: a body line containing "HTTP/1." makes the lines after it a candidate block
 *   until one of them ends it.
 * - A stream's first byte (position 0) is a line start inside a possible block.
 * - Positions jump (a lost or truncated record, bytes moved without a buffer, a stream first
 *   seen mid-life, state forgotten) while the stream stood in a header block, or with no
 *   state: what the missing bytes held is unknown, so the first line of the record, up to its
 *   line feed, is masked whole unless it is a request or status line, and the bytes after it
 *   are treated as a possible header block. A jump while the stream stood outside a block
 *   (in a body: a large sendfile or a truncated syscall skips body bytes) keeps scanning for
 *   start lines only, or a body's bytes would be masked. The same holds for a stream seen
 *   from position 0 whose first byte cannot begin HTTP/1 (not 'A'..'Z': TLS ciphertext,
 *   HTTP/2, DNS, databases).
 *
 * Records are scanned in place in the batch (no view per record). Cost: outside header
 * blocks a record is one search for "HTTP/1." (native above 256 bytes), so bodies,
 * ciphertext and HTTP/2 frames cost little; inside a block, a byte loop to each line's end
 * and over header names while they may still be a secret one's.
 */
import { SOCK_DATA_REC } from '../schemas/layouts.js';
import { RecordKind } from '../schemas/records.js';

/** Header names whose values are masked, lower case. */
export const SECRET_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'] as const;

/** Index in SecretMasker.masked of lines masked by the gap rule. */
export const MASKED_AFTER_GAP = SECRET_HEADERS.length;

/** The byte every masked byte becomes. */
export const MASK_BYTE = 0x2a; // '*'

/** Connections with carry state at most; past it the oldest is forgotten (its next record is a gap). */
export const DEFAULT_MAX_CONNS = 65536;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;
const SLASH = 0x2f;
const MARKER = Buffer.from('HTTP/1.', 'latin1');
/** Bytes of a line kept across records: enough for a marker split at the record boundary. */
const TAIL = MARKER.length - 1;
/**
 * Names a header-name matcher follows: the secret ones, then "HTTP" (a status line read as a
 * name up to its '/'). Matched case-insensitively against lower-case bytes.
 */
const NAMES = [...SECRET_HEADERS, 'http'].map((n) => Buffer.from(n, 'latin1'));
const HTTP_NAME = NAMES.length - 1;
/** Bits of NAMES, per lower-case first byte: most header names drop out at their first byte. */
const FIRST = new Uint8Array(256);
NAMES.forEach((n, k) => (FIRST[n[0]] |= 1 << k));

/** tchar of RFC 9110: the bytes a header name is made of. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = TOKEN[c + 0x20] = 1;

/** Where a stream stands between two bytes. */
const Mode = {
  /** Outside a header block: looking for a start line. */
  Out: 0,
  /** Inside a (possible) block, at the start of a line. */
  LineStart: 1,
  /** A CR at the start of a line: an LF next ends the block. */
  LineStartCr: 2,
  /** Reading a header name that may still be one of NAMES. */
  Name: 3,
  /** Whitespace after a header name, before its colon. */
  NameSpace: 4,
  /** In a secret value: mask up to the line feed. */
  Secret: 5,
  /** In a line that is kept: skip to the line feed, then LineStart. */
  Line: 6,
} as const;
type Mode = (typeof Mode)[keyof typeof Mode];

/** One direction of a connection's socket bytes or TLS plaintext. Plain fields only: cheap to make. */
class StreamState {
  /** Position after the last byte seen. */
  expect = 0;
  mode: Mode = Mode.LineStart;
  /** Seen from position 0 with a first byte that cannot begin HTTP/1. */
  opaque = false;
  /** Leading whitespace of a secret value is passed over, then everything up to LF is masked. */
  valueStarted = false;
  /** The last header line was secret, so an obs-fold continuation line is too. */
  lastSecret = false;
  /** Bits of NAMES the name read so far is still a prefix of. */
  alive = 0;
  nameLen = 0;
  /**
   * Last bytes of the previous record, for a marker split across records: up to TAIL (6)
   * bytes packed three to an integer, newest lowest (small-integer arithmetic only).
   */
  tailLo = 0;
  tailHi = 0;
  tailLen = 0;
}

/** The streams of one connection: socket and TLS plaintext, each direction. */
class ConnStreams {
  readonly s: (StreamState | undefined)[] = [undefined, undefined, undefined, undefined];
  constructor(readonly hi: number) {}
}

/** The name read so far, ended by `c`: the secret header it is, HTTP_NAME, or -1. */
function nameIndex(st: StreamState): number {
  for (let k = 0; k < NAMES.length; k++) if (st.alive & (1 << k) && NAMES[k].length === st.nameLen) return k;
  return -1;
}

function startsWith(p: Buffer, at: number, end: number, s: Buffer): boolean {
  if (end - at < s.length) return false;
  for (let j = 0; j < s.length; j++) if (p[at + j] !== s[j]) return false;
  return true;
}

/**
 * Where the next line feed in p[from, end) is, or -1. A byte loop: header lines are a few
 * dozen bytes, shorter than what a native indexOf call costs to enter.
 */
function lineFeed(p: Buffer, from: number, end: number): number {
  for (let j = from; j < end; j++) if (p[j] === LF) return j;
  return -1;
}

/** Below this many bytes the marker is searched for by a byte loop, above by a native search. */
const NATIVE_SEARCH_BYTES = 256;

/** Where the marker starts in p[from, end), or -1. */
function markerAt(p: Buffer, from: number, end: number): number {
  if (end - from > NATIVE_SEARCH_BYTES) {
    // A view bounds the native search: past `end` lie other records of the batch.
    const m = p.subarray(from, end).indexOf(MARKER);
    return m < 0 ? -1 : from + m;
  }
  for (let j = from; j + MARKER.length <= end; j++) if (p[j] === MARKER[0] && startsWith(p, j, end, MARKER)) return j;
  return -1;
}

/**
 * The line p[start, end) is a status line ("HTTP/1.x ...") or a request line ("METHOD target
 * HTTP/1.x"). `complete`: the line feed was seen at `end`; without it only a status line
 * can be recognised.
 */
export function isStartLine(p: Buffer, start: number, end: number, complete: boolean): boolean {
  if (startsWith(p, start, end, MARKER)) return true;
  if (!complete) return false;
  let k = start;
  while (k < end && k - start <= 20 && p[k] >= 0x41 && p[k] <= 0x5a) k++;
  if (k === start || k - start > 20 || k >= end || p[k] !== SP) return false;
  const e = end > start && p[end - 1] === CR ? end - 1 : end;
  return e - 9 > k && p[e - 9] === SP && startsWith(p, e - 8, e - 1, MARKER);
}

/** Byte `j` (0 oldest) of the stream's kept tail. */
function tailByte(st: StreamState, j: number): number {
  const k = st.tailLen - 1 - j;
  return k < 3 ? (st.tailLo >>> (8 * k)) & 0xff : (st.tailHi >>> (8 * (k - 3))) & 0xff;
}

/** Bytes the marker is made of: a tail ending in another byte cannot hold its start. */
const IN_MARKER = new Uint8Array(256);
for (const c of MARKER) IN_MARKER[c] = 1;

/** The marker lies across the end of the previous record and the start of p[start, end). */
function markerAcrossSeam(st: StreamState, p: Buffer, start: number, end: number): boolean {
  // Most records end in a line feed or body bytes: one look at the last byte rules them out.
  if (!IN_MARKER[st.tailLo & 0xff]) return false;
  for (let s = 0; s < st.tailLen; s++) {
    const fromTail = st.tailLen - s;
    if (fromTail + end - start < MARKER.length) return false;
    let j = 0;
    while (j < fromTail && tailByte(st, s + j) === MARKER[j]) j++;
    if (j < fromTail) continue;
    while (j < MARKER.length && p[start + j - fromTail] === MARKER[j]) j++;
    if (j === MARKER.length) return true;
  }
  return false;
}

/** Keep the last TAIL bytes seen (this record's p[start, end), after the older ones) for the next record. */
function keepTail(st: StreamState, p: Buffer, start: number, end: number): void {
  const n = end - start;
  let lo = n >= TAIL ? 0 : st.tailLo;
  let hi = n >= TAIL ? 0 : st.tailHi;
  for (let j = Math.max(start, end - TAIL); j < end; j++) {
    hi = ((hi << 8) | (lo >>> 16)) & 0xffffff;
    lo = ((lo << 8) | p[j]) & 0xffffff;
  }
  st.tailLo = lo;
  st.tailHi = hi;
  st.tailLen = Math.min(TAIL, st.tailLen + n);
}

/** Masks secret header values in SockData and TlsData records, in place. */
export class SecretMasker {
  /** Values masked per SECRET_HEADERS index; at MASKED_AFTER_GAP, lines masked by the gap rule. */
  readonly masked = new Float64Array(SECRET_HEADERS.length + 1);
  /**
   * Connections by the low half of their conn_id (a small integer key: no string per
   * record); a connection whose high half differs replaces the one there, whose next record
   * then takes the gap rule.
   */
  private readonly conns = new Map<number, ConnStreams>();

  constructor(private readonly maxConns = DEFAULT_MAX_CONNS) {}

  /** Connections with carry state now. */
  get size(): number {
    return this.conns.size;
  }

  /**
   * Mask the record at buf[off, off + len) — a SockData or TlsData record, `kind` — in
   * place. `connLo`/`connHi` are the halves of its conn_id (the caller has read them).
   */
  maskRecord(buf: Buffer, off: number, len: number, kind: number, connLo: number, connHi: number): void {
    const f = SOCK_DATA_REC.fields;
    if (len < SOCK_DATA_REC.size) return;
    const cap = Math.min(buf.readUInt32LE(off + f.cap_bytes), len - SOCK_DATA_REC.size);
    const pos = buf.readUInt32LE(off + f.pos_bytes) + buf.readUInt32LE(off + f.pos_bytes + 4) * 0x1_0000_0000;
    let conn = this.conns.get(connLo);
    if (!conn || conn.hi !== connHi) {
      if (!conn && this.conns.size >= this.maxConns) this.conns.delete(this.conns.keys().next().value!);
      conn = new ConnStreams(connHi);
      this.conns.set(connLo, conn);
    }
    const slot = (kind === RecordKind.TlsData ? 2 : 0) + (buf[off + f.direction] ? 1 : 0);
    let st = conn.s[slot];
    const fresh = !st;
    if (!st) st = conn.s[slot] = new StreamState();
    if (cap === 0) return;
    // The payload is buf[start, end), scanned in place: no view per record.
    const start = off + f.payload;
    const end = start + cap;
    if (fresh && pos === 0) {
      st.opaque = buf[start] < 0x41 || buf[start] > 0x5a;
    } else if (fresh || pos !== st.expect) {
      this.resync(st, buf, start, end, fresh);
    } else if (st.mode === Mode.Out && st.tailLen && markerAcrossSeam(st, buf, start, end)) {
      st.mode = Mode.Line;
    }
    st.expect = pos + cap;
    this.scan(st, buf, start, end);
    keepTail(st, buf, start, end);
  }

  /** Forget a closed connection's streams. */
  forget(connLo: number, connHi: number): void {
    if (this.conns.get(connLo)?.hi === connHi) this.conns.delete(connLo);
  }

  /** Positions jumped: apply the gap rule to the record p[start, end); scanning goes on from its start. */
  private resync(st: StreamState, p: Buffer, start: number, end: number, fresh: boolean): void {
    st.tailLen = 0;
    st.lastSecret = false;
    if (st.opaque || (!fresh && st.mode === Mode.Out)) {
      st.mode = Mode.Out;
      return;
    }
    const lf = lineFeed(p, start, end);
    const lineEnd = lf < 0 ? end : lf;
    if (isStartLine(p, start, lineEnd, lf >= 0)) {
      st.mode = Mode.Line;
      return;
    }
    // Mask the unknown line whole, as if it were the tail of a secret value.
    st.mode = Mode.Secret;
    st.valueStarted = true;
    if (lineEnd - start > 1 || (lineEnd - start === 1 && p[start] !== CR)) this.masked[MASKED_AFTER_GAP]++;
  }

  /** Scan (and mask) p[from, n), one record's payload, carrying the stream's state. */
  private scan(st: StreamState, p: Buffer, from: number, n: number): void {
    let i = from;
    while (i < n) {
      switch (st.mode) {
        case Mode.Out: {
          const m = markerAt(p, i, n);
          if (m < 0) return;
          st.mode = Mode.Line;
          i = m + MARKER.length;
          break;
        }
        case Mode.Line: {
          const lf = lineFeed(p, i, n);
          if (lf < 0) return;
          st.mode = Mode.LineStart;
          i = lf + 1;
          break;
        }
        case Mode.LineStart: {
          const c = p[i];
          if (c === CR) {
            st.mode = Mode.LineStartCr;
            i++;
          } else if (c === LF) {
            st.mode = Mode.Out;
            i++;
          } else if (c === SP || c === HT) {
            // obs-fold: the continuation of the previous header's value.
            st.mode = st.lastSecret ? Mode.Secret : Mode.Line;
            st.valueStarted = false;
          } else if (TOKEN[c]) {
            st.alive = FIRST[c | 0x20];
            st.nameLen = 1;
            i++;
            // A name that can be none of NAMES is a kept header line.
            if (st.alive) st.mode = Mode.Name;
            else {
              st.mode = Mode.Line;
              st.lastSecret = false;
            }
          } else {
            st.mode = Mode.Out;
          }
          break;
        }
        case Mode.LineStartCr:
          // CR LF ends the block; a CR and anything else is no header line either.
          st.mode = Mode.Out;
          if (p[i] === LF) i++;
          break;
        case Mode.Name: {
          let alive = st.alive;
          let len = st.nameLen;
          while (i < n && alive && TOKEN[p[i]]) {
            const c = p[i] | 0x20;
            for (let k = 0; k < NAMES.length; k++) if (alive & (1 << k) && NAMES[k][len] !== c) alive &= ~(1 << k);
            len++;
            i++;
          }
          st.alive = alive;
          st.nameLen = len;
          if (i === n) return;
          if (!alive) {
            st.mode = Mode.Line;
            st.lastSecret = false;
            break;
          }
          const c = p[i];
          if (c === COLON) this.colon(st);
          else if (c === SP || c === HT) st.mode = Mode.NameSpace;
          // A status line ("HTTP" then '/') starts a block; anything else is no header line
          // and ends one (the rest of the line is scanned for a request line's marker).
          else st.mode = c === SLASH && nameIndex(st) === HTTP_NAME ? Mode.Line : Mode.Out;
          i++;
          break;
        }
        case Mode.NameSpace: {
          const c = p[i];
          if (c === COLON) this.colon(st);
          else if (c !== SP && c !== HT) st.mode = Mode.Out;
          i++;
          break;
        }
        case Mode.Secret: {
          const lf = lineFeed(p, i, n);
          const end = lf < 0 ? n : lf;
          let a = i;
          if (!st.valueStarted) {
            while (a < end && (p[a] === SP || p[a] === HT)) a++;
            if (a < end) st.valueStarted = true;
          }
          // The CR of CR LF (here, or at the record's end before an LF in the next) stays.
          const b = end > a && p[end - 1] === CR ? end - 1 : end;
          // A loop for the usual short values: Buffer.fill costs more below some dozens of bytes.
          if (b - a > 64) p.fill(MASK_BYTE, a, b);
          else for (let j = a; j < b; j++) p[j] = MASK_BYTE;
          if (lf < 0) return;
          st.mode = Mode.LineStart;
          i = lf + 1;
          break;
        }
      }
    }
  }

  /** The colon after a header name: a secret value follows, or a kept one. */
  private colon(st: StreamState): void {
    const k = nameIndex(st);
    st.lastSecret = k >= 0 && k < SECRET_HEADERS.length;
    if (!st.lastSecret) {
      st.mode = Mode.Line;
      return;
    }
    st.mode = Mode.Secret;
    st.valueStarted = false;
    this.masked[k]++;
  }
}
