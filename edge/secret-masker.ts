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
 *   line end; an empty line ends it; a line that is not `token ":" value` (or an obs-fold
 *   continuation) also ends it. Only lines of a header block are looked at, but the start
 *   rule errs toward masking: a body line containing "HTTP/1." makes the lines after it a
 *   candidate block until one of them is not a header line.
 * - A stream's first byte (position 0) is a line start inside a possible block.
 * - Positions jump (a lost or truncated record, bytes moved without a buffer, a stream first
 *   seen mid-life, state forgotten): what the missing bytes held is unknown, so the first
 *   line of the record, up to its line feed, is masked whole unless it is a request or status
 *   line, and the bytes after it are treated as a possible header block. The exception is a
 *   stream seen from position 0 whose first byte cannot begin HTTP/1 (not 'A'..'Z': TLS
 *   ciphertext, HTTP/2, DNS, databases): after a gap it is only scanned for start lines.
 *
 * Cost: outside header blocks a record is one Buffer.indexOf for "HTTP/1." (native), so
 * bodies, ciphertext and HTTP/2 frames cost little; inside a block, one indexOf per line
 * plus a byte loop over header names (at most MAX_NAME bytes kept) and secret values.
 */
import { SOCK_DATA_REC } from '../schemas/layouts.js';
import { RecordKind } from '../schemas/records.js';

/** Header names whose values are masked, lower case. */
export const SECRET_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'] as const;

/** Index in SecretMasker.masked of lines masked by the gap rule. */
export const MASKED_AFTER_GAP = SECRET_HEADERS.length;

/** The byte every masked byte becomes. */
export const MASK_BYTE = 0x2a; // '*'

/** Streams with carry state at most; past it the oldest is forgotten (its next record is a gap). */
export const DEFAULT_MAX_STREAMS = 65536;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;
const SLASH = 0x2f;
const MARKER = Buffer.from('HTTP/1.', 'latin1');
/** Bytes of a line kept across records: enough for a marker split at the record boundary. */
const TAIL = MARKER.length - 1;
/** Name bytes kept: the longest secret name (proxy-authorization, 19). */
const MAX_NAME = 19;

const SECRET_NAMES = SECRET_HEADERS.map((n) => Buffer.from(n, 'latin1'));

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
  /** Reading a header name. */
  Name: 3,
  /** Whitespace after a header name, before its colon. */
  NameSpace: 4,
  /** In a secret value: mask up to the line feed. */
  Secret: 5,
  /** In a line that is kept: skip to the line feed, then LineStart. */
  Line: 6,
} as const;
type Mode = (typeof Mode)[keyof typeof Mode];

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
  readonly name = new Uint8Array(MAX_NAME);
  /** Name bytes so far (may exceed MAX_NAME; only the first MAX_NAME are kept). */
  nameLen = 0;
  /** Last bytes of the previous record, for a start-line marker split across records. */
  readonly tail = new Uint8Array(TAIL);
  tailLen = 0;
}

/** Lowercase an ASCII letter (other bytes unchanged). */
function lower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}

/** Index of the secret header the stream's name is, or -1. */
function secretIndex(st: StreamState): number {
  if (st.nameLen > MAX_NAME) return -1;
  for (let k = 0; k < SECRET_NAMES.length; k++) {
    const n = SECRET_NAMES[k];
    if (n.length !== st.nameLen) continue;
    let j = 0;
    while (j < n.length && lower(st.name[j]) === n[j]) j++;
    if (j === n.length) return k;
  }
  return -1;
}

/** The name read so far is exactly "HTTP" (a status line's start, before its '/'). */
function nameIsHttp(st: StreamState): boolean {
  return st.nameLen === 4 && st.name[0] === 0x48 && st.name[1] === 0x54 && st.name[2] === 0x54 && st.name[3] === 0x50;
}

function startsWith(p: Buffer, at: number, end: number, s: Buffer): boolean {
  if (end - at < s.length) return false;
  for (let j = 0; j < s.length; j++) if (p[at + j] !== s[j]) return false;
  return true;
}

/**
 * The line p[0, end) is a status line ("HTTP/1.x ...") or a request line ("METHOD target
 * HTTP/1.x"). `complete`: the line feed was seen at `end`; without it only a status line
 * can be recognised.
 */
export function isStartLine(p: Buffer, end: number, complete: boolean): boolean {
  if (startsWith(p, 0, end, MARKER)) return true;
  if (!complete) return false;
  let k = 0;
  while (k < end && k <= 20 && p[k] >= 0x41 && p[k] <= 0x5a) k++;
  if (k === 0 || k > 20 || p[k] !== SP) return false;
  const e = end > 0 && p[end - 1] === CR ? end - 1 : end;
  return e - 9 > k && p[e - 9] === SP && startsWith(p, e - 8, e - 1, MARKER);
}

/** The marker lies across the end of the previous record and the start of `p`. */
function markerAcrossSeam(st: StreamState, p: Buffer): boolean {
  if (st.tailLen === 0) return false;
  const head = Math.min(p.length, TAIL);
  for (let s = 0; s < st.tailLen; s++) {
    const fromTail = st.tailLen - s;
    if (fromTail + head < MARKER.length) return false;
    let j = 0;
    while (j < fromTail && st.tail[s + j] === MARKER[j]) j++;
    if (j < fromTail) continue;
    while (j < MARKER.length && p[j - fromTail] === MARKER[j]) j++;
    if (j === MARKER.length) return true;
  }
  return false;
}

/** Keep the last bytes of `p` (with the old tail if `p` is short) for the next record. */
function keepTail(st: StreamState, p: Buffer): void {
  const n = p.length;
  if (n >= TAIL) {
    for (let j = 0; j < TAIL; j++) st.tail[j] = p[n - TAIL + j];
    st.tailLen = TAIL;
    return;
  }
  const keep = Math.min(st.tailLen, TAIL - n);
  st.tail.copyWithin(0, st.tailLen - keep, st.tailLen);
  for (let j = 0; j < n; j++) st.tail[keep + j] = p[j];
  st.tailLen = keep + n;
}

/** Masks secret header values in SockData and TlsData records, in place. */
export class SecretMasker {
  /** Values masked per SECRET_HEADERS index; at MASKED_AFTER_GAP, lines masked by the gap rule. */
  readonly masked = new Float64Array(SECRET_HEADERS.length + 1);
  private readonly streams = new Map<string, StreamState>();

  constructor(private readonly maxStreams = DEFAULT_MAX_STREAMS) {}

  /** Streams with carry state now. */
  get size(): number {
    return this.streams.size;
  }

  /**
   * Mask the record at buf[off, off + len) — a SockData or TlsData record — in place.
   * `connLo`/`connHi` are the halves of its conn_id (the caller has read them).
   */
  maskRecord(buf: Buffer, off: number, len: number, kind: number, connLo: number, connHi: number): void {
    const f = SOCK_DATA_REC.fields;
    if (len < SOCK_DATA_REC.size) return;
    const cap = Math.min(buf.readUInt32LE(off + f.cap_bytes), len - SOCK_DATA_REC.size);
    const pos = buf.readUInt32LE(off + f.pos_bytes) + buf.readUInt32LE(off + f.pos_bytes + 4) * 0x1_0000_0000;
    const key = `${connLo}.${connHi}.${kind}.${buf[off + f.direction]}`;
    let st = this.streams.get(key);
    const fresh = !st;
    if (!st) {
      if (this.streams.size >= this.maxStreams) this.streams.delete(this.streams.keys().next().value!);
      st = new StreamState();
      this.streams.set(key, st);
    }
    if (cap === 0) return;
    const p = buf.subarray(off + f.payload, off + f.payload + cap);
    let i = 0;
    if (fresh && pos === 0) {
      st.opaque = p[0] < 0x41 || p[0] > 0x5a;
    } else if (fresh || pos !== st.expect) {
      i = this.resync(st, p);
    }
    st.expect = pos + cap;
    this.scan(st, p, i);
    keepTail(st, p);
  }

  /** Forget a closed connection's streams. */
  forget(connLo: number, connHi: number): void {
    for (const kind of [RecordKind.SockData, RecordKind.TlsData]) {
      this.streams.delete(`${connLo}.${connHi}.${kind}.0`);
      this.streams.delete(`${connLo}.${connHi}.${kind}.1`);
    }
  }

  /** Positions jumped: apply the gap rule; returns where scanning goes on. */
  private resync(st: StreamState, p: Buffer): number {
    st.tailLen = 0;
    st.lastSecret = false;
    if (st.opaque) {
      st.mode = Mode.Out;
      return 0;
    }
    const lf = p.indexOf(LF);
    const end = lf < 0 ? p.length : lf;
    if (isStartLine(p, end, lf >= 0)) {
      st.mode = Mode.Line;
      return 0;
    }
    // Mask the unknown line as if it were a secret value's tail.
    st.mode = Mode.Secret;
    st.valueStarted = true;
    for (let j = 0; j < end; j++) if (p[j] !== CR) { this.masked[MASKED_AFTER_GAP]++; break; }
    return 0;
  }

  private scan(st: StreamState, p: Buffer, from: number): void {
    const n = p.length;
    let i = from;
    if (i === 0 && st.mode === Mode.Out && markerAcrossSeam(st, p)) st.mode = Mode.Line;
    while (i < n) {
      switch (st.mode) {
        case Mode.Out: {
          const m = p.indexOf(MARKER, i);
          if (m < 0) return;
          st.mode = Mode.Line;
          i = m + MARKER.length;
          break;
        }
        case Mode.Line: {
          const lf = p.indexOf(LF, i);
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
            st.mode = Mode.Name;
            st.nameLen = 0;
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
          while (i < n && TOKEN[p[i]]) {
            if (st.nameLen < MAX_NAME) st.name[st.nameLen] = p[i];
            st.nameLen++;
            i++;
          }
          if (i === n) return;
          const c = p[i];
          if (c === COLON) this.colon(st);
          else if (c === SP || c === HT) st.mode = Mode.NameSpace;
          // A status line ("HTTP" then '/') starts a block; anything else is not a header
          // line and ends one (the rest of the line is scanned for a request line's marker).
          else st.mode = c === SLASH && nameIsHttp(st) ? Mode.Line : Mode.Out;
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
          let j = i;
          for (; j < n; j++) {
            const c = p[j];
            if (c === LF) break;
            if (c === CR) continue;
            if (!st.valueStarted) {
              if (c === SP || c === HT) continue;
              st.valueStarted = true;
            }
            p[j] = MASK_BYTE;
          }
          if (j === n) return;
          st.mode = Mode.LineStart;
          i = j + 1;
          break;
        }
      }
    }
  }

  /** The colon after a header name: a secret value follows, or a kept one. */
  private colon(st: StreamState): void {
    const k = secretIndex(st);
    st.lastSecret = k >= 0;
    if (k < 0) {
      st.mode = Mode.Line;
      return;
    }
    st.mode = Mode.Secret;
    st.valueStarted = false;
    this.masked[k]++;
  }
}
