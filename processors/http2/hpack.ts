/**
 * HPACK (RFC 7541) decoding for one direction of an HTTP/2 connection, built for capture
 * that may begin anywhere and may lose bytes.
 *
 * The dynamic table is tracked as the run of most recent insertions whose contents are
 * known. A valid encoder's dynamic index 62 + k always names the (k+1)-th most recent
 * insertion, whatever was evicted, so known entries decode right as long as no insertion
 * was missed since they were made. When header block bytes are not seen (capture started
 * mid-connection, a gap, a block over the buffering cap, a malformed block), the decoder
 * forgets its entries (`lose`): older entries become unknown, and a field that refers to
 * one is returned marked (`{ name: null, value: null, unknownIndex }`), never guessed.
 * New insertions are tracked again at once, so later fields referring to them decode.
 *
 * Eviction is computed from entry sizes, conservatively: an entry is dropped only when it
 * is certainly evicted (the sizes of it and every newer entry exceed the table's maximum
 * size, or a known upper bound of it), and the table is known to be complete again when
 * nothing older can still fit in it (a table size update to 0 empties it). An insertion
 * whose name refers to an unknown entry is tracked as a placeholder: its position is
 * known, its contents and exact size are not.
 *
 * Only the values of names the owner keeps (`keep`) are decoded into strings; other values
 * are skipped (a Huffman-coded value added to the table is decoded only to learn its
 * length). Memory is bounded: strings kept in the table are capped, and past
 * `MAX_TABLE_STORED_BYTES` the oldest known entries are forgotten (as unknown). Hostile
 * input (bad Huffman code, integer overflow, strings longer than the block, index 0) is
 * counted, never thrown; the table is forgotten after it, since later fields cannot be
 * trusted to line up.
 */

/** One decoded header field. */
export interface HeaderField {
  /**
   * Field name as sent (HTTP/2 names are lowercase); null when it refers to a dynamic
   * table entry whose contents are unknown.
   */
  name: string | null;
  /** Value; null when unknown, or not decoded because the owner does not keep this name. */
  value: string | null;
  /** The dynamic-table index (62 and up) that could not be resolved; 0 when resolved. */
  unknownIndex: number;
}

/** How decoding a header block ended. */
export type HpackStatus =
  /** Every field decoded (unknown entries included). */
  | 'ok'
  /** The block was declared incomplete: the complete fields before its end were decoded. */
  | 'partial'
  | HpackError;

/** Malformed header blocks, by what was wrong; the table is forgotten after each. */
export type HpackError =
  /** An integer longer than 5 continuation bytes or above 2^32. */
  | 'integer'
  /** Index 0. */
  | 'index'
  /** An invalid Huffman code: EOS inside the string, or padding that is not a prefix of EOS. */
  | 'huffman'
  /** A complete block ended inside a representation (a string longer than the block, ...). */
  | 'incomplete';

/** Counters of one or more decoders; pass one object to many decoders to sum them. */
export interface HpackStats {
  headerBlocks: number;
  headerFields: number;
  /** Fields that referred to a dynamic-table entry whose contents were not known. */
  unknownFields: number;
  /** Dynamic indices beyond a table known to be complete (encoder bug or garbage): marked unknown. */
  badIndices: number;
  /** Dynamic table size updates above the limit the decoding side announced, or after a field. */
  badSizeUpdates: number;
  hpackErrors: Record<HpackError, number>;
  /** Times a decoder with known entries had to forget them (header block bytes not seen). */
  tableResets: number;
  /** Known entries forgotten to stay within MAX_TABLE_STORED_BYTES. */
  tableOverflows: number;
}

export function newHpackStats(): HpackStats {
  return {
    headerBlocks: 0, headerFields: 0, unknownFields: 0, badIndices: 0, badSizeUpdates: 0,
    hpackErrors: { integer: 0, index: 0, huffman: 0, incomplete: 0 },
    tableResets: 0, tableOverflows: 0,
  };
}

/** SETTINGS_HEADER_TABLE_SIZE before any SETTINGS (RFC 7540 §6.5.2). */
export const DEFAULT_HEADER_TABLE_SIZE = 4096;
/** Entry size overhead (RFC 7541 §4.1). */
export const ENTRY_OVERHEAD = 32;
/** Bytes of strings (plus ENTRY_OVERHEAD per entry) a decoder keeps for its table. */
export const MAX_TABLE_STORED_BYTES = 64 * 1024;
/** Longest name kept; longer names are cut (no kept name is that long). */
export const MAX_NAME_BYTES = 256;
/** Default cap on a decoded value, in bytes. */
export const DEFAULT_MAX_VALUE_BYTES = 4096;

/** Largest integer accepted; header block integers are lengths, indices and table sizes. */
const MAX_INT = 2 ** 32 - 1;
const INCOMPLETE = -1;
const OVERFLOW = -2;
const BAD_HUFFMAN = -3;
const BAD_INDEX = -4;
/** RFC 7541 Appendix A. */
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''],
  ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''],
  ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''],
  ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''], ['proxy-authorization', ''], ['range', ''],
  ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''], ['set-cookie', ''],
  ['strict-transport-security', ''], ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''],
  ['www-authenticate', ''],
];

/**
 * Huffman code lengths in bits of symbols 0..255 and EOS (256), RFC 7541 Appendix B,
 * sixteen symbols a row. The code is canonical: codes of one length are consecutive in
 * symbol order and each length continues where the shorter one ended, so the lengths
 * define every code (the test checks codes against the RFC's hex column).
 */
const HUFFMAN_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //         0x20  !"#$%&'()*+,-./
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //              0x30 0123456789:;<=>?
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //                0x40 @ABCDEFGHIJKLMNO
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //             0x50 PQRSTUVWXYZ[\]^_
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //                0x60 `abcdefghijklmno
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //            0x70 pqrstuvwxyz{|}~
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
  30, //                                                             EOS
];

const EOS = 256;

/** [code, bit length] of each symbol, the code in the low bits; derived from HUFFMAN_LENGTHS. */
export const HUFFMAN_CODES: ReadonlyArray<readonly [number, number]> = (() => {
  const order = HUFFMAN_LENGTHS.map((len, sym) => ({ len, sym })).sort((a, b) => a.len - b.len || a.sym - b.sym);
  const codes: Array<[number, number]> = new Array(HUFFMAN_LENGTHS.length);
  let code = 0;
  let len = order[0].len;
  for (const s of order) {
    code *= 2 ** (s.len - len);
    len = s.len;
    codes[s.sym] = [code, len];
    code++;
  }
  return codes;
})();

/**
 * Huffman decoding as a state machine over 4-bit steps: a state is an internal node of the
 * code tree (the bits read since the last symbol), and each (state, nibble) gives the next
 * state and at most one symbol (codes are at least 5 bits long). 256 states × 16.
 */
const HUFF_NEXT = new Uint8Array(256 * 16);
/** Symbol emitted by a step, -1 for none; EOS (256) inside a string is an error. */
const HUFF_EMIT = new Int16Array(256 * 16);
/** States where a string may end: the bits since the last symbol are at most 7 ones (EOS prefix). */
const HUFF_ACCEPT = new Uint8Array(256);
(() => {
  // Tree: internal nodes 0..255 (0 the root); child values >= 0 are nodes, < 0 are ~symbol.
  const child: Array<[number, number]> = [[0, 0]];
  let nodes = 1;
  const depth = [0];
  const ones = [true];
  HUFFMAN_CODES.forEach(([code, len], sym) => {
    let n = 0;
    for (let i = len - 1; i > 0; i--) {
      const bit = Math.floor(code / 2 ** i) % 2;
      if (child[n][bit] === 0) {
        child[n][bit] = nodes;
        child.push([0, 0]);
        depth.push(depth[n] + 1);
        ones.push(ones[n] && bit === 1);
        nodes++;
      }
      n = child[n][bit];
    }
    child[n][code % 2] = ~sym;
  });
  for (let s = 0; s < 256; s++) {
    HUFF_ACCEPT[s] = s === 0 || (ones[s] && depth[s] <= 7) ? 1 : 0;
    for (let v = 0; v < 16; v++) {
      let n = s;
      let emit = -1;
      for (let i = 3; i >= 0; i--) {
        const next = child[n][(v >> i) & 1];
        if (next < 0) {
          emit = ~next;
          n = 0;
        } else {
          n = next;
        }
      }
      HUFF_NEXT[s * 16 + v] = n;
      HUFF_EMIT[s * 16 + v] = emit;
    }
  }
})();

/**
 * Decode Huffman-coded `b[from, to)`: the decoded length, or a negative number for an
 * invalid code (EOS inside, or padding other than up to 7 one bits). At most `cap`
 * bytes are written to `out` (none when `out` is null); the length counts them all.
 */
export function huffmanDecode(b: Uint8Array, from: number, to: number, out: Uint8Array | null, cap: number): number {
  let state = 0;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = b[i];
    let k = state * 16 + (c >> 4);
    let e = HUFF_EMIT[k];
    if (e >= 0) {
      if (e === EOS) return BAD_HUFFMAN;
      if (out && n < cap) out[n] = e;
      n++;
    }
    state = HUFF_NEXT[k];
    k = state * 16 + (c & 15);
    e = HUFF_EMIT[k];
    if (e >= 0) {
      if (e === EOS) return BAD_HUFFMAN;
      if (out && n < cap) out[n] = e;
      n++;
    }
    state = HUFF_NEXT[k];
  }
  return HUFF_ACCEPT[state] ? n : BAD_HUFFMAN;
}

/** A dynamic table entry whose position is known. */
interface Entry {
  /** null: a placeholder whose name (and so contents) is unknown. */
  name: string | null;
  /** Octet length of the name as sent (names are stored cut at MAX_NAME_BYTES). */
  nameLen: number;
  /** Kept value, or null when the name is not kept (or the entry is a placeholder). */
  value: string | null;
  /** Entry size (RFC 7541 §4.1); a lower bound for placeholders. */
  size: number;
  /** Bytes this entry holds, for MAX_TABLE_STORED_BYTES. */
  cost: number;
}

const STATIC_ENTRIES: readonly Entry[] = STATIC_TABLE.map(([name, value]) => ({
  name, nameLen: name.length, value, size: name.length + value.length + ENTRY_OVERHEAD, cost: 0,
}));

export interface HpackDecoderOptions {
  /**
   * Names whose values are decoded; other values are skipped and never held. Default:
   * every name (for tests and tools, not for processing captured traffic).
   */
  keep?: ReadonlySet<string>;
  /** Longest value decoded, in bytes; longer values are cut (default 4 KiB). */
  maxValueBytes?: number;
  /** Counters to add to (shared across decoders); a new object by default. */
  stats?: HpackStats;
}

/** Snapshot of one tracked entry, newest first (`HpackDecoder.entries`). */
export interface TableEntry {
  name: string | null;
  value: string | null;
  size: number;
}

/** Decoder of the header blocks of one direction. Never throws on input bytes. */
export class HpackDecoder {
  readonly stats: HpackStats;
  private readonly keep: ReadonlySet<string> | null;
  private readonly maxValueBytes: number;
  private readonly scratch: Buffer;

  /** Tracked entries, oldest first from `head`: the most recent insertions, contiguous. */
  private ents: Entry[] = [];
  private head = 0;
  /** Sum of tracked entry sizes (a lower bound when placeholders are among them). */
  private total = 0;
  private stored = 0;
  /** The table's maximum size as last set by the encoder; -1 when unknown. */
  private maxSize = -1;
  /** SETTINGS_HEADER_TABLE_SIZE of the decoding side (an upper bound of maxSize); -1 when unknown. */
  private limit = -1;
  /** The tracked entries are the whole table. */
  private complete = false;

  // Results of readInt / readString, kept in fields to avoid allocating per field.
  private at = 0;
  private strLen = 0;
  private str: string | null = null;

  constructor(opts: HpackDecoderOptions = {}) {
    this.keep = opts.keep ?? null;
    this.maxValueBytes = opts.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
    this.stats = opts.stats ?? newHpackStats();
    this.scratch = Buffer.alloc(Math.max(this.maxValueBytes, MAX_NAME_BYTES));
  }

  /** The table's whole contents are known (seen from the connection's start, or emptied since). */
  get known(): boolean {
    return this.complete;
  }

  /** Entries whose position is known (placeholders included). */
  get entryCount(): number {
    return this.ents.length - this.head;
  }

  /** Sum of the tracked entries' sizes (a lower bound when placeholders are among them). */
  get tableSize(): number {
    return this.total;
  }

  /** Bytes held for the table: kept strings plus ENTRY_OVERHEAD per entry. */
  get storedBytes(): number {
    return this.stored;
  }

  /** The table's maximum size, or -1 when unknown. */
  get maxTableSize(): number {
    return this.maxSize;
  }

  /** Tracked entries, newest (index 62) first. */
  entries(): TableEntry[] {
    const out: TableEntry[] = [];
    for (let i = this.ents.length - 1; i >= this.head; i--) {
      const e = this.ents[i];
      out.push({ name: e.name, value: e.value, size: e.size });
    }
    return out;
  }

  /**
   * The direction is seen from the connection's start: the table is empty and its maximum
   * size is `maxSize` (the protocol default unless a test says otherwise).
   */
  startKnown(maxSize = DEFAULT_HEADER_TABLE_SIZE): void {
    this.clear();
    this.complete = true;
    this.maxSize = maxSize;
    this.limit = maxSize;
  }

  /** Header block bytes of this direction were not seen: forget every tracked entry. */
  lose(): void {
    if (this.entryCount > 0 || this.complete) this.stats.tableResets++;
    this.clear();
    this.complete = false;
    this.maxSize = -1;
  }

  /** The decoding side announced SETTINGS_HEADER_TABLE_SIZE: an upper bound of the table's size. */
  setLimit(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) return;
    this.limit = n;
    this.evict();
  }

  /**
   * Decode one header block (HEADERS or PUSH_PROMISE with its CONTINUATIONs), calling
   * `onField` for each field in order. `complete` false: `block` is only a prefix of the
   * block (the rest was not seen or not buffered); its complete fields are decoded and the
   * table is forgotten afterwards.
   */
  decode(block: Uint8Array, onField: (f: HeaderField) => void, complete = true): HpackStatus {
    this.stats.headerBlocks++;
    const end = block.length;
    let off = 0;
    let fields = 0;
    while (off < end) {
      const b = block[off];
      let r: number;
      if (b & 0x80) {
        r = this.indexed(block, off, end, onField);
        fields++;
      } else if (b & 0x40) {
        r = this.literal(block, off, end, 6, true, onField);
        fields++;
      } else if (b & 0x20) {
        r = this.sizeUpdate(block, off, end, fields > 0);
      } else {
        r = this.literal(block, off, end, 4, false, onField);
        fields++;
      }
      if (r < 0) {
        if (r === INCOMPLETE && !complete) break;
        const kind: HpackError = r === INCOMPLETE ? 'incomplete' : r === OVERFLOW ? 'integer' : r === BAD_HUFFMAN ? 'huffman' : 'index';
        this.stats.hpackErrors[kind]++;
        this.lose();
        return kind;
      }
      off = r;
    }
    if (!complete) {
      this.lose();
      return 'partial';
    }
    return 'ok';
  }

  // ---- representations ---------------------------------------------------------------

  /** Returns the offset after the representation, or a negative error. */
  private indexed(b: Uint8Array, off: number, end: number, onField: (f: HeaderField) => void): number {
    const idx = this.readInt(b, off, end, 7);
    if (idx < 0) return idx;
    if (idx === 0) return BAD_INDEX;
    const e = this.lookup(idx);
    this.stats.headerFields++;
    if (!e || e.name === null) {
      this.stats.unknownFields++;
      onField({ name: null, value: null, unknownIndex: idx });
    } else {
      onField({ name: e.name, value: this.kept(e.name) ? e.value : null, unknownIndex: 0 });
    }
    return this.at;
  }

  private literal(b: Uint8Array, off: number, end: number, prefix: number, index: boolean, onField: (f: HeaderField) => void): number {
    const idx = this.readInt(b, off, end, prefix);
    if (idx < 0) return idx;
    let name: string | null;
    let nameLen: number;
    let unknown = 0;
    let pos = this.at;
    if (idx === 0) {
      const r = this.readString(b, pos, end, true, MAX_NAME_BYTES, true, 'latin1');
      if (r < 0) return r;
      pos = r;
      name = this.str;
      nameLen = this.strLen;
    } else {
      const e = this.lookup(idx);
      name = e ? e.name : null;
      nameLen = e ? e.nameLen : 0;
      if (name === null) unknown = idx;
    }
    const keep = name !== null && this.kept(name);
    const r = this.readString(b, pos, end, keep, this.maxValueBytes, index, 'utf8');
    if (r < 0) return r;
    const value = keep ? this.str : null;
    if (index) this.insert(name, nameLen, value, this.strLen);
    this.stats.headerFields++;
    if (unknown) this.stats.unknownFields++;
    onField({ name, value, unknownIndex: unknown });
    return r;
  }

  private sizeUpdate(b: Uint8Array, off: number, end: number, afterField: boolean): number {
    const size = this.readInt(b, off, end, 5);
    if (size < 0) return size;
    // RFC 7541 §4.2 / §6.3: only at a block's start, and within the announced limit. The
    // encoder's table follows it either way, so it is applied and counted.
    if (afterField || (this.limit >= 0 && size > this.limit)) this.stats.badSizeUpdates++;
    this.maxSize = size;
    if (size === 0) {
      this.clear();
      this.complete = true;
    }
    this.evict();
    return this.at;
  }

  // ---- primitives --------------------------------------------------------------------

  /** RFC 7541 §5.1 integer with a `prefix`-bit prefix at `off`; sets `at` past it. */
  private readInt(b: Uint8Array, off: number, end: number, prefix: number): number {
    const mask = (1 << prefix) - 1;
    let v = b[off] & mask;
    off++;
    if (v === mask) {
      let m = 0;
      for (;;) {
        if (off >= end) return INCOMPLETE;
        const c = b[off++];
        v += (c & 0x7f) * 2 ** m;
        m += 7;
        if ((c & 0x80) === 0) break;
        if (m >= 35) return OVERFLOW;
      }
      if (v > MAX_INT) return OVERFLOW;
    }
    this.at = off;
    return v;
  }

  /**
   * RFC 7541 §5.2 string at `off`; returns the offset after it or a negative error. Sets
   * `str` (when `want`, cut at `cap` bytes) and `strLen` (decoded octets; computed when
   * `want` or `needLen`, else -1).
   */
  private readString(
    b: Uint8Array, off: number, end: number, want: boolean, cap: number, needLen: boolean, enc: BufferEncoding,
  ): number {
    if (off >= end) return INCOMPLETE;
    const huffman = (b[off] & 0x80) !== 0;
    const len = this.readInt(b, off, end, 7);
    if (len < 0) return len;
    const start = this.at;
    if (len > end - start) return INCOMPLETE;
    this.str = null;
    this.strLen = -1;
    if (!huffman) {
      this.strLen = len;
      if (want) this.str = Buffer.from(b.buffer, b.byteOffset + start, Math.min(len, cap)).toString(enc);
    } else if (want || needLen) {
      const n = huffmanDecode(b, start, start + len, want ? this.scratch : null, cap);
      if (n < 0) return n;
      this.strLen = n;
      if (want) this.str = this.scratch.toString(enc, 0, Math.min(n, cap));
    }
    return start + len;
  }

  private kept(name: string): boolean {
    return this.keep === null || this.keep.has(name);
  }

  // ---- the table ---------------------------------------------------------------------

  /** Entry at HPACK index `idx` (>= 1), or null when it is unknown. */
  private lookup(idx: number): Entry | null {
    if (idx <= STATIC_ENTRIES.length) return STATIC_ENTRIES[idx - 1];
    const k = idx - STATIC_ENTRIES.length - 1;
    const n = this.ents.length - this.head;
    if (k < n) return this.ents[this.ents.length - 1 - k];
    if (this.complete) this.stats.badIndices++;
    return null;
  }

  /** A literal with incremental indexing; `name` null: its name refers to an unknown entry. */
  private insert(name: string | null, nameLen: number, value: string | null, valueLen: number): void {
    const size = (name === null ? 0 : nameLen) + valueLen + ENTRY_OVERHEAD;
    const cost = (name?.length ?? 0) + (value?.length ?? 0) + ENTRY_OVERHEAD;
    this.ents.push({ name, nameLen, value, size, cost });
    this.total += size;
    this.stored += cost;
    this.evict();
  }

  /**
   * Drop entries certainly evicted (sizes are exact or lower bounds; the bound is the
   * table's maximum size or an upper bound of it), then enforce the memory bound.
   */
  private evict(): void {
    const bound = this.maxSize >= 0 ? this.maxSize : this.limit;
    if (bound >= 0) {
      while (this.total > bound && this.head < this.ents.length) {
        this.dropOldest();
        // Everything older than an evicted entry is evicted too: what is left is the table.
        this.complete = true;
      }
      if (this.total + ENTRY_OVERHEAD > bound) this.complete = true;
    }
    while (this.stored > MAX_TABLE_STORED_BYTES && this.head < this.ents.length) {
      this.dropOldest();
      this.complete = false;
      this.stats.tableOverflows++;
    }
  }

  private dropOldest(): void {
    const e = this.ents[this.head];
    this.ents[this.head] = undefined as unknown as Entry;
    this.head++;
    this.total -= e.size;
    this.stored -= e.cost;
    if (this.head > 64 && this.head * 2 > this.ents.length) {
      this.ents = this.ents.slice(this.head);
      this.head = 0;
    }
  }

  private clear(): void {
    this.ents = [];
    this.head = 0;
    this.total = 0;
    this.stored = 0;
  }
}
