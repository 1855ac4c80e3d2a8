/**
 * The envelope: one JetStream message carrying one batch of raw kernel records from one
 * edge, msgpack-encoded. Processors validate it with `decodeEnvelope`, which never throws.
 */
import { Packr } from 'msgpackr';

export const ENVELOPE_VERSION = 1;

/** Records lost before they reached the stream, since the previous envelope of this run. */
export interface LossCount {
  /** Record kind (enum rec_kind). */
  kind: number;
  /** Where they were lost: 'ringbuf_full' (kernel), 'buffer_full' (edge, NATS too slow or away), ... */
  cause: string;
  records: number;
}

/** One batch of raw records and everything a processor needs to interpret it. */
export interface Envelope {
  /** Envelope layout version. */
  v: number;
  region: string;
  node: string;
  /** Random id of this edge run; new at every start. */
  run: string;
  /** Per-run sequence across all shards; the message id is `<node>.<run>.<seq>`. */
  seq: number;
  shard: number;
  /**
   * Per-run, per-shard sequence of the envelopes the edge published, from 1: a gap is
   * envelopes the stream lost after the edge published them (discarded by its age or size
   * limits before a processor read them). Optional: older edges leave it out.
   */
  shard_seq?: number;
  /** Records in this run's earlier envelopes of this shard: with a gap, how many records it lost. */
  shard_records?: number;
  /** /proc/sys/kernel/random/boot_id of the node: with the socket cookie, the connection id. */
  boot: string;
  /** CLOCK_REALTIME − CLOCK_MONOTONIC when the batch was sealed, as [seconds, nanoseconds]. */
  clock: [number, number];
  /** CLOCK_MONOTONIC when the batch was sealed, in ns: the edge's "now", also for empty heartbeats. */
  mono: number;
  /** Number of records in `records`. */
  count: number;
  /** Concatenated raw records, each 8-byte aligned, each starting with rec_hdr. */
  records: Buffer;
  /** Losses counted since the previous envelope of this run. */
  lost: LossCount[];
  /** Kernel symbols for drop locations in this batch: hex address → "function+0xoff". */
  ksyms?: Record<string, string>;
  /** Names of drop reasons in this batch on this node's kernel: reason number → name. */
  drop_reasons?: Record<string, string>;
  /**
   * How the edge captures on this node's kernel: the payload path (`socket`: socket
   * tracepoints, 6.3+; `syscall`: syscall tracepoints; `file`: replayed bytes) and the
   * features active (drop and reset reasons, TLS). Optional: older edges leave it out.
   */
  capture?: { path: string; features: string[] };
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

export function encodeEnvelope(e: Envelope): Buffer {
  return packr.pack(e);
}

const NO_RECORDS = Buffer.alloc(0);
/** msgpack bin8 of length 0, and the bin32 header that replaces it: 0xc6 and a u32 length. */
const EMPTY_BIN8 = [0xc4, 0x00];
const BIN32_HEADER_BYTES = 5;

/**
 * The envelope encoded around its records where they lie: the map with `records` last is
 * written into the `headroom` bytes in front of `e.records` (memory the caller owns), so a
 * batch's records are not copied again. The same message as `encodeEnvelope` gives, but
 * for key order and the records' bin32 length. Falls back to `encodeEnvelope` when the
 * header does not fit.
 */
export function encodeEnvelopeInPlace(e: Envelope, headroom: number): Buffer {
  const { records, ...header } = e;
  if (headroom <= BIN32_HEADER_BYTES) return encodeEnvelope(e);
  const head = packr.pack({ ...header, records: NO_RECORDS });
  const keep = head.length - EMPTY_BIN8.length;
  const frameBytes = keep + BIN32_HEADER_BYTES;
  if (frameBytes > headroom || head[keep] !== EMPTY_BIN8[0] || head[keep + 1] !== EMPTY_BIN8[1]) return encodeEnvelope(e);
  const out = Buffer.from(records.buffer, records.byteOffset - frameBytes, frameBytes + records.length);
  head.copy(out, 0, 0, keep);
  out[keep] = 0xc6;
  out.writeUInt32BE(records.length, keep + 1);
  return out;
}

/** Message id for JetStream de-duplication. */
export function messageId(e: Pick<Envelope, 'node' | 'run' | 'seq'>): string {
  return `${e.node}.${e.run}.${e.seq}`;
}

/** Subject an envelope is published on. */
export function envelopeSubject(prefix: string, e: Pick<Envelope, 'region' | 'node' | 'shard'>): string {
  return `${prefix}.${e.region}.${e.node}.${e.shard}`;
}

/** Subject tokens may not contain '.', '*', '>' or whitespace. */
export function isSubjectToken(s: string): boolean {
  return s.length > 0 && !/[.*>\s]/.test(s);
}

/** Why an envelope was rejected. */
export type EnvelopeFailure = 'not_msgpack' | 'not_map' | 'bad_version' | 'bad_field';

/** Longest region, node, run or loss cause an envelope may carry. */
const MAX_NAME_CHARS = 256;
/** Most loss counts, kernel symbols or drop reason names in one envelope. */
const MAX_ENTRIES = 4096;
/** Latest plausible wall-clock second of the CLOCK_REALTIME − CLOCK_MONOTONIC offset: 2200-01-01. */
const MAX_CLOCK_S = 7_258_118_400;
/**
 * Largest CLOCK_MONOTONIC an envelope may carry, in ns: about 31 years of uptime. Above
 * 2^53 (104 days) the edge's float loses nanoseconds, but the value stays usable.
 */
const MAX_MONO_NS = 1e18;

/** A short printable name: no control characters, at most MAX_NAME_CHARS. */
function isStr(v: unknown): v is string {
  return typeof v === 'string' && v.length <= MAX_NAME_CHARS && !/[\x00-\x1f\x7f]/.test(v);
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A map of short strings (kernel symbols, drop reasons), bounded in size. */
function isNameMap(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const entries = Object.entries(v);
  return entries.length <= MAX_ENTRIES && entries.every(([k, s]) => k.length <= MAX_NAME_CHARS && isStr(s));
}

/** Decode and validate; returns the failure kind instead of throwing. */
export function decodeEnvelope(data: Uint8Array): Envelope | EnvelopeFailure {
  let o: unknown;
  // msgpackr refuses bad input by throwing, and capturing the stack is most of a refusal's
  // cost (a truncated envelope: 24 µs with the default 10 frames, 9 µs with none). Nothing
  // asynchronous runs in between, so no other error loses its stack.
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    o = packr.unpack(data);
  } catch {
    return 'not_msgpack';
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return 'not_map';
  const e = o as Record<string, unknown>;
  if (e.v !== ENVELOPE_VERSION) return 'bad_version';
  // Names end up in rows and subjects; the boot id is hex (it becomes part of a UUID).
  if (!isStr(e.region) || !isStr(e.node) || !isStr(e.run) || !isStr(e.boot) || !/^[0-9a-f-]{1,64}$/i.test(e.boot)) return 'bad_field';
  if (!isUint(e.seq) || !isUint(e.shard) || e.shard > 0xffff || !isUint(e.count)) return 'bad_field';
  if (typeof e.mono !== 'number' || !Number.isInteger(e.mono) || e.mono < 0 || e.mono > MAX_MONO_NS) return 'bad_field';
  if (e.shard_seq !== undefined && !isUint(e.shard_seq) || e.shard_records !== undefined && !isUint(e.shard_records)) return 'bad_field';
  if (!Array.isArray(e.clock) || e.clock.length !== 2 || !e.clock.every(isUint) || e.clock[0] > MAX_CLOCK_S || e.clock[1] >= 1e9) return 'bad_field';
  if (!(e.records instanceof Uint8Array)) return 'bad_field';
  if (!Array.isArray(e.lost) || e.lost.length > MAX_ENTRIES) return 'bad_field';
  for (const l of e.lost as unknown[]) {
    const x = l as Record<string, unknown>;
    if (typeof l !== 'object' || l === null || !isUint(x.kind) || x.kind > 0xffff || !isStr(x.cause) || !isUint(x.records)) return 'bad_field';
  }
  if (e.ksyms !== undefined && !isNameMap(e.ksyms) || e.drop_reasons !== undefined && !isNameMap(e.drop_reasons)) return 'bad_field';
  if (e.capture !== undefined) {
    const c = e.capture as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || !isStr(c.path) || !Array.isArray(c.features) || c.features.length > 64 || !c.features.every(isStr)) return 'bad_field';
  }
  if (!Buffer.isBuffer(e.records)) e.records = Buffer.from(e.records.buffer, e.records.byteOffset, e.records.byteLength);
  return e as unknown as Envelope;
}
