/**
 * One DNS message (RFC 1035 §4) decoded from captured bytes, safely.
 *
 * The header, the first question and the answer section are walked here rather than by
 * `dns-packet`'s `decode`: that throws on the first malformed byte (the whole message is
 * lost, and only an English message tells why), decodes every section including the
 * additional records nobody reads here, decodes labels as UTF-8 (lossy for binary
 * labels), and cannot return a response whose answer section is cut off but whose header
 * and question still pair it with its query. `dns-packet` supplies the names of types,
 * rcodes and opcodes, and its encoder builds the test fixtures (whose decoding is checked
 * against its decoder).
 *
 * Bounds: labels ≤ 63 bytes (the 0x40/0x80 label types are rejected), names ≤ 255 bytes
 * on the wire, compression pointers inside the message, at most 127 of them per name and
 * never to an offset already visited (so a loop is an error, not a hang); section counts
 * are trusted only as far as the bytes present hold records.
 */
import { createRequire } from 'node:module';
import { formatAddr } from '../../schemas/records.js';
import { Cursor, CursorRangeError } from '../l7/cursor.js';

const require = createRequire(import.meta.url);
const dnsTypes = require('dns-packet/types.js') as { toString(type: number): string };
const dnsRcodes = require('dns-packet/rcodes.js') as { toString(rcode: number): string };
const dnsOpcodes = require('dns-packet/opcodes.js') as { toString(opcode: number): string };

export const HEADER_BYTES = 12;
/** Longest name on the wire, length octets and root label included (RFC 1035 §2.3.4). */
export const MAX_NAME_BYTES = 255;
export const MAX_LABEL_BYTES = 63;
/** A name has at most 127 labels, so more pointers than that means a loop. */
const MAX_POINTERS = 127;
/** Answer values kept per message; `answerCount` still counts every record decoded. */
export const MAX_ANSWER_VALUES = 16;
/** Characters kept per answer value (TXT can be long). */
export const MAX_VALUE_CHARS = 256;
/** Smallest question: root name, type, class. */
export const MIN_QUESTION_BYTES = 5;
/** Smallest resource record: root name, type, class, ttl, rdlength. */
export const MIN_RR_BYTES = 11;

/** Why a message (or its answer section) could not be decoded; counted by callers. */
export type DnsWireFailure =
  /** Fewer than 12 bytes. */
  | 'short_header'
  /** A name, question or record runs past the end of the message. */
  | 'truncated'
  /** A label type other than a plain label or a pointer (0x40, 0x80: lengths 64–191). */
  | 'bad_label'
  /** A name longer than 255 bytes on the wire. */
  | 'name_too_long'
  /** A compression pointer outside the message. */
  | 'bad_pointer'
  /** A compression pointer chain that revisits an offset or is longer than any name. */
  | 'pointer_loop'
  /** Record data that does not fit its type (an A record of 5 bytes, a name past rdlength). */
  | 'bad_rdata';

export const DNS_WIRE_FAILURES: readonly DnsWireFailure[] = [
  'short_header', 'truncated', 'bad_label', 'name_too_long', 'bad_pointer', 'pointer_loop', 'bad_rdata',
];

export interface DnsFlags {
  /** Authoritative answer. */
  aa: boolean;
  /** Truncated: the answer did not fit (UDP); the client retries over TCP. */
  tc: boolean;
  /** Recursion desired. */
  rd: boolean;
  /** Recursion available. */
  ra: boolean;
  /** Authentic data (DNSSEC). */
  ad: boolean;
  /** Checking disabled (DNSSEC). */
  cd: boolean;
}

/** A decoded DNS message: what pairing and a `dns_queries` row need, no more. */
export interface DnsMessage {
  id: number;
  /** QR bit: true for a response, false for a query. */
  qr: boolean;
  /** 0 QUERY, 4 NOTIFY, 5 UPDATE, ... */
  opcode: number;
  /** Header rcode (4 bits; EDNS extended rcodes are not read). */
  rcode: number;
  flags: DnsFlags;
  /** Question count as the header states it. */
  qdcount: number;
  /** Answer count as the header states it. */
  ancount: number;
  /** The message has a question (qdcount ≥ 1; responses such as FORMERR may have none). */
  hasQuestion: boolean;
  /** First question's name, as on the wire ("example.com", "." for the root; '' without question). */
  qname: string;
  /** First question's type; 0 without question. */
  qtype: number;
  /** Its name: "A", "AAAA", "TYPE65534"; '' without question. */
  qtypeName: string;
  /** First question's class (1 IN); 0 without question. */
  qclass: number;
  /** Answer-section records decoded (all types). */
  answerCount: number;
  /**
   * Values of the first answers of the kinds users look for, in wire order, at most
   * MAX_ANSWER_VALUES: A/AAAA addresses, CNAME/DNAME/NS/PTR targets, "pref host" for MX,
   * "prio weight port target" for SRV, TXT strings concatenated. Each ≤ MAX_VALUE_CHARS.
   */
  answers: string[];
  /** Why the answer section stopped early (records before it are kept), or null. */
  answerError: DnsWireFailure | null;
}

export type DnsDecodeResult =
  | { ok: true; msg: DnsMessage }
  | { ok: false; failure: DnsWireFailure };

/** Name of a record type: dns-packet's names, RFC 3597 `TYPEn` for the rest. */
export function typeName(type: number): string {
  if (type === 64) return 'SVCB';
  if (type === 65) return 'HTTPS';
  const n = dnsTypes.toString(type);
  return n.startsWith('UNKNOWN_') ? `TYPE${type}` : n;
}

export function rcodeName(rcode: number): string {
  return dnsRcodes.toString(rcode);
}

export function opcodeName(opcode: number): string {
  return dnsOpcodes.toString(opcode);
}

/**
 * Thrown inside this module only, caught by `decodeDns`; never escapes. Reads past the
 * message's end throw the cursor's CursorRangeError instead, caught alike.
 */
class WireError {
  constructor(readonly failure: DnsWireFailure) {}
}

/** The failure a decode error stands for: a read past the message's end is truncation. */
function failureOf(err: unknown): DnsWireFailure {
  if (err instanceof WireError) return err.failure;
  if (err instanceof CursorRangeError) return 'truncated';
  throw err;
}

/** Offsets visited by the current name's pointers; reused (single-threaded, never re-entered). */
const visited = new Int32Array(MAX_POINTERS);

/**
 * A label in presentation form (RFC 1035 §5.1, as dig prints it): printable ASCII kept,
 * `.`, `\\` and `"` escaped with a backslash, other bytes (space included) as \DDD.
 */
function appendLabel(out: string[], b: Buffer, start: number, len: number): void {
  // Usual case: nothing to escape, one slice instead of a string built per character.
  let plain = true;
  for (let i = start; i < start + len && plain; i++) {
    const c = b[i];
    plain = c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c && c !== 0x22;
  }
  if (plain) {
    out.push(b.toString('latin1', start, start + len));
    return;
  }
  let s = '';
  for (let i = start; i < start + len; i++) {
    const c = b[i];
    if (c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c && c !== 0x22) s += String.fromCharCode(c);
    else if (c === 0x2e || c === 0x5c || c === 0x22) s += `\\${String.fromCharCode(c)}`;
    else s += `\\${String(c).padStart(3, '0')}`;
  }
  out.push(s);
}

/** TXT text: printable ASCII and spaces kept, `\\` doubled, other bytes as \DDD. */
function appendText(out: string[], b: Buffer, start: number, len: number): void {
  let s = '';
  for (let i = start; i < start + len; i++) {
    const c = b[i];
    if (c >= 0x20 && c < 0x7f && c !== 0x5c) s += String.fromCharCode(c);
    else if (c === 0x5c) s += '\\\\';
    else s += `\\${String(c).padStart(3, '0')}`;
  }
  out.push(s);
}

/**
 * Decode the name at `off`. `limit` bounds where the name's own bytes (before any pointer)
 * may run: the message end, or the end of the record data holding it. Pointers may go
 * anywhere inside the message. Returns the text and the offset just after the name.
 */
function readName(b: Buffer, off: number, limit: number): { name: string; end: number } {
  const labels: string[] = [];
  let pos = off;
  let end = -1;
  let wireLen = 1;
  let jumps = 0;
  for (;;) {
    const lim = end < 0 ? limit : b.length;
    if (pos >= lim) throw new WireError('truncated');
    const len = b[pos];
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= lim) throw new WireError('truncated');
      const target = ((len & 0x3f) << 8) | b[pos + 1];
      if (end < 0) end = pos + 2;
      if (target >= b.length) throw new WireError('bad_pointer');
      if (target === pos) throw new WireError('pointer_loop');
      for (let i = 0; i < jumps; i++) if (visited[i] === target) throw new WireError('pointer_loop');
      if (jumps === MAX_POINTERS) throw new WireError('pointer_loop');
      visited[jumps++] = target;
      pos = target;
      continue;
    }
    if (kind !== 0) throw new WireError('bad_label');
    wireLen += len + 1;
    if (wireLen > MAX_NAME_BYTES) throw new WireError('name_too_long');
    if (pos + 1 + len > lim) throw new WireError('truncated');
    appendLabel(labels, b, pos + 1, len);
    pos += 1 + len;
  }
  return { name: labels.length === 0 ? '.' : labels.join('.'), end };
}

function cap(s: string): string {
  return s.length <= MAX_VALUE_CHARS ? s : s.slice(0, MAX_VALUE_CHARS);
}

/** TXT rdata: character-strings concatenated (how SPF and most readers take them). */
function txtValue(b: Buffer, start: number, end: number): string {
  const parts: string[] = [];
  let pos = start;
  let chars = 0;
  while (pos < end && chars < MAX_VALUE_CHARS) {
    const len = b[pos];
    if (pos + 1 + len > end) throw new WireError('bad_rdata');
    appendText(parts, b, pos + 1, len);
    chars += parts[parts.length - 1].length;
    pos += 1 + len;
  }
  return cap(parts.join(''));
}

function ipv4(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** The value of one answer record, or null for types not listed (or empty data). */
function answerValue(b: Buffer, type: number, start: number, end: number): string | null {
  const len = end - start;
  switch (type) {
    case 1: // A
      if (len !== 4) throw new WireError('bad_rdata');
      return ipv4(b, start);
    case 28: // AAAA
      if (len !== 16) throw new WireError('bad_rdata');
      return formatAddr(b, start);
    case 2: // NS
    case 5: // CNAME
    case 12: // PTR
    case 39: { // DNAME
      const n = readRdataName(b, start, end);
      return cap(n.name);
    }
    case 15: { // MX
      if (len < 3) throw new WireError('bad_rdata');
      const n = readRdataName(b, start + 2, end);
      return cap(`${b.readUInt16BE(start)} ${n.name}`);
    }
    case 33: { // SRV
      if (len < 7) throw new WireError('bad_rdata');
      const n = readRdataName(b, start + 6, end);
      return cap(`${b.readUInt16BE(start)} ${b.readUInt16BE(start + 2)} ${b.readUInt16BE(start + 4)} ${n.name}`);
    }
    case 16: // TXT
      return txtValue(b, start, end);
    default:
      return null;
  }
}

/** A name inside record data: its own bytes must end inside the data. */
function readRdataName(b: Buffer, start: number, end: number): { name: string; end: number } {
  try {
    return readName(b, start, end);
  } catch (err) {
    // A name cut by rdlength is bad record data; loops and bad labels keep their kind.
    if (err instanceof WireError && err.failure === 'truncated' && end < b.length) throw new WireError('bad_rdata');
    throw err;
  }
}

function readHeader(b: Buffer): DnsMessage {
  const f = b.readUInt16BE(2);
  return {
    id: b.readUInt16BE(0),
    qr: (f & 0x8000) !== 0,
    opcode: (f >> 11) & 0xf,
    rcode: f & 0xf,
    flags: {
      aa: (f & 0x0400) !== 0, tc: (f & 0x0200) !== 0, rd: (f & 0x0100) !== 0,
      ra: (f & 0x0080) !== 0, ad: (f & 0x0020) !== 0, cd: (f & 0x0010) !== 0,
    },
    qdcount: b.readUInt16BE(4),
    ancount: b.readUInt16BE(6),
    hasQuestion: false, qname: '', qtype: 0, qtypeName: '', qclass: 0,
    answerCount: 0, answers: [], answerError: null,
  };
}

/**
 * Decode one DNS message. Never throws: a message whose header or first question cannot
 * be read is a failure; a message whose answer section breaks off keeps the answers
 * before the break and says why in `answerError`.
 */
export function decodeDns(b: Buffer): DnsDecodeResult {
  if (b.length < HEADER_BYTES) return { ok: false, failure: 'short_header' };
  const msg = readHeader(b);
  // Fixed-size fields after names are read with the cursor; names move it by their length.
  const c = new Cursor(b, HEADER_BYTES);
  try {
    if (msg.qdcount > 0) {
      const q = readName(b, c.offset, b.length);
      c.offset = q.end;
      msg.qname = q.name;
      msg.qtype = c.u16be();
      msg.qtypeName = typeName(msg.qtype);
      msg.qclass = c.u16be();
      msg.hasQuestion = true;
    }
  } catch (err) {
    return { ok: false, failure: failureOf(err) };
  }
  try {
    // Further questions (practically never sent) stand between us and the answers.
    for (let i = 1; i < msg.qdcount; i++) {
      if (c.remaining < MIN_QUESTION_BYTES) throw new WireError('truncated');
      c.offset = readName(b, c.offset, b.length).end;
      c.skip(4); // type, class
    }
    for (let i = 0; i < msg.ancount; i++) {
      // A count larger than the bytes can hold ends here, without trying every record.
      if (c.remaining < MIN_RR_BYTES) throw new WireError('truncated');
      c.offset = readName(b, c.offset, b.length).end;
      const type = c.u16be();
      c.skip(6); // class, ttl
      const rdata = c.take(c.u16be());
      if (msg.answers.length < MAX_ANSWER_VALUES) {
        const v = answerValue(b, type, rdata.offset, rdata.end);
        if (v !== null) msg.answers.push(v);
      }
      msg.answerCount++;
    }
  } catch (err) {
    msg.answerError = failureOf(err);
  }
  return { ok: true, msg };
}

/**
 * ASCII-lowercase a name for matching and rows: resolvers randomise the case of query
 * names (DNS 0x20) and servers echo it, so case is noise for users.
 */
export function lowerName(name: string): string {
  return name.replace(/[A-Z]+/g, (s) => s.toLowerCase());
}
