/**
 * A seeded campaign of hostile stream messages for a processor, made one at a time (a
 * million of them are never held at once), and what the decoders say of each.
 *
 * Message n is, by a seeded draw: every VALID_EVERY-th a valid envelope of node `trusted`
 * holding one whole HTTP/1 exchange on a connection of its own (path `/v/<n>`), whose row
 * must arrive exactly once; otherwise, of node `hostile`, one of
 * - forged: valid msgpack, an envelope with one hostile field (wrong types, huge, negative,
 *   NaN, float or unsafe integers, boot ids not hex, names with control characters or too
 *   long, strings near the server's 1 MiB max_payload, nested maps, unknown versions);
 * - records: a valid envelope whose records are forged (sizes past the bytes present or
 *   near 2^32, zero, below the kind's minimum, truncated records, unknown versions, unknown
 *   kinds, half a megabyte of minimal records of an unknown kind);
 * - not an envelope: msgpack scalars, arrays, maps without the fields, nesting deeper than
 *   the decoder's stack, ext types;
 * - not msgpack: random bytes, text, nothing at all;
 * - mutated: a real envelope with bits flipped in its encoding or its records, truncated,
 *   spliced with another, or with a slice repeated.
 */
import { Packr } from 'msgpackr';
import { decodeEnvelope, encodeEnvelope, type Envelope } from '../../schemas/envelope.js';
import { REC_HDR } from '../../schemas/layouts.js';
import { DataFlags, decodeRecord, nextRecordOffset, RECORD_VERSIONS, RecordKind, Role } from '../../schemas/records.js';
import { Rng } from './prng.js';
import { connInfo, envelope, sockData } from './records.js';

/** One valid envelope in this many messages. */
export const VALID_EVERY = 100;
export const SHARDS = 16;
export const TRUSTED = { region: 'test', node: 'trusted', run: 'run-t' };
export const HOSTILE = { region: 'wild', node: 'hostile', run: 'run-h' };
/** Node time between consecutive messages: the campaign's million span 1000 s of it. */
const STEP_NS = 1e6;
const T0_NS = 5e9;

/** Plain msgpack for what the envelope encoder would not write (non-envelopes, forged types). */
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export interface HostileMessage {
  subject: string;
  data: Uint8Array;
  /** For a valid envelope: the path of its one request. */
  validPath?: string;
  /** The message was made to be rejected (a mutated one may still be valid). */
  mustReject: boolean;
}

/** One whole HTTP/1 exchange (CONN_INFO, request, response) on connection `cookie`. */
function exchange(node: typeof TRUSTED, seq: number, cookie: number, path: string): Envelope {
  const t = T0_NS + seq * STEP_NS;
  const tuple = { saddr: '10.0.0.1', sport: 10000 + (cookie % 50000), daddr: '10.0.0.2', dport: 80 };
  const req = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: h\r\n\r\n`);
  const resp = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  return envelope({
    ...node, seq, shard: seq % SHARDS, mono: t + 1e5,
    records: [
      connInfo({ tsNs: t, connId: cookie, tgid: 7 }, tuple, Role.Client, 'curl'),
      sockData({ tsNs: t + 10, connId: cookie, tgid: 7 }, { direction: 0, posBytes: 0, payload: req, dataFlags: DataFlags.Last }),
      sockData({ tsNs: t + 20, connId: cookie, tgid: 7 }, { direction: 1, posBytes: 0, payload: resp, dataFlags: DataFlags.Last }),
    ],
  });
}

/**
 * An envelope of node `node` with no records that moves its node time to `mono` (what an
 * edge sends when quiet), on the hostile subjects of `shard`.
 */
export function heartbeat(node: string, seq: number, shard: number, mono: number): HostileMessage {
  const e = envelope({ ...HOSTILE, node, seq, shard, mono, records: [] });
  return { subject: `netrig.raw.${HOSTILE.region}.${HOSTILE.node}.${shard}`, data: encodeEnvelope(e), mustReject: false };
}

/** Forged envelope fields: each replaces or adds fields of a real envelope. */
const FORGED: ((rng: Rng) => Record<string, unknown>)[] = [
  () => ({ region: 7 }), () => ({ node: ['a'] }), () => ({ run: null }), () => ({ seq: '12' }), () => ({ shard: true }),
  () => ({ count: {} }), () => ({ records: 'text' }), () => ({ records: [1, 2, 3] }), () => ({ lost: {} }), () => ({ clock: 'now' }),
  () => ({ mono: '5' }), () => ({ boot: 12 }), () => ({ capture: 'x' }), () => ({ ksyms: [1] }),
  () => ({ seq: -1 }), () => ({ seq: 2 ** 64 }), () => ({ seq: NaN }), () => ({ seq: Infinity }), () => ({ seq: 1.5 }), () => ({ seq: 2 ** 53 }),
  () => ({ shard: -1 }), () => ({ shard: 2 ** 32 }), () => ({ count: -5 }), () => ({ mono: NaN }), () => ({ mono: -Infinity }), () => ({ mono: 1.5 }),
  () => ({ clock: [NaN, 0] }), () => ({ clock: [-1, 0] }), () => ({ shard_seq: -1 }), () => ({ shard_records: 0.5 }),
  () => ({ lost: [{ kind: 2 ** 40, cause: 'x', records: 1 }] }), () => ({ lost: [{ kind: 1, cause: 'x', records: NaN }] }),
  () => ({ boot: 'zz-not-hex' }), () => ({ boot: '' }), () => ({ node: 'a\u0000b' }), () => ({ region: '\x1b[31mred' }), () => ({ run: 'a\x7f' }),
  (rng) => ({ node: 'x'.repeat(257 + rng.int(4000)) }), () => ({ lost: [{ kind: 1, cause: '\n', records: 1 }] }),
  () => ({ region: { a: { b: { c: 1 } } } }), () => ({ clock: { 0: 1, 1: 2 } }), () => ({ capture: { path: 'socket', features: [{ x: 1 }] } }),
  () => ({ ksyms: { a: { b: 'c' } } }), () => ({ drop_reasons: { 1: 'x'.repeat(300) } }),
  () => ({ v: 2 }), () => ({ v: '1' }), () => ({ v: 0 }), () => ({ v: undefined }),
];

/** The real envelope forged fields replace: rejected whatever it holds, so one serves all. */
const FORGE_BASE = exchange(HOSTILE, 1, 1, '/forged');

/** The rare forged fields that fill most of the server's 1 MiB max_payload. */
const FORGED_BIG: (() => Record<string, unknown>)[] = [
  () => ({ node: 'x'.repeat(900_000) }), () => ({ run: '\u0001'.repeat(900_000) }),
  () => ({ ksyms: Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, 'sym+0x10'])) }),
];

/** A map of a thousand fields, none of them an envelope's. */
const WIDE_MAP = packr.pack(Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`f${i}`, i])));

/** Non-envelopes in msgpack. */
const NOT_ENVELOPES: ((rng: Rng) => Uint8Array)[] = [
  () => packr.pack(42), () => packr.pack('hello'), () => packr.pack(null), () => packr.pack([1, 2, 3]), () => packr.pack(true),
  () => packr.pack(1.5), () => packr.pack({}), () => packr.pack({ v: 1 }), (rng) => packr.pack(rng.bytes(64)),
  () => WIDE_MAP,
  // Nesting deeper than the decoder's stack: fixarray of one, 100k deep.
  () => Buffer.alloc(100_000, 0x91), () => Buffer.from([0xc1]), () => Buffer.from([0xd4, 0xff, 0x00]),
  () => Buffer.from([0xd6, 0xff, 0, 0, 0, 0]), () => Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]),
];

/** Forged record bytes: each rewrites a real exchange's records (3 records: info, request, response). */
const FORGED_RECORDS: ((recs: Buffer, rng: Rng) => Buffer)[] = [
  (r) => setSize(r, 0, r.length + 8), (r) => setSize(r, 0, 0xffff_fff8), (r) => setSize(r, 0, 0xffff_ffff), (r) => setSize(r, 0, 0),
  (r) => setSize(r, 0, REC_HDR.size - 1), (r, rng) => r.subarray(0, 1 + rng.int(REC_HDR.size - 1)), (r, rng) => {
    // Cut inside the second record (not at a boundary, which would leave whole records).
    const second = nextRecordOffset(0, r.readUInt32LE(REC_HDR.fields.size_bytes));
    return r.subarray(0, second + 1 + rng.int(r.readUInt32LE(second + REC_HDR.fields.size_bytes) - 1));
  },
  (r) => {
    r[REC_HDR.fields.version] = 9;
    return r;
  },
  // A SOCK_DATA header alone: framed, but below its kind's size.
  (r) => {
    r.writeUInt16LE(RecordKind.SockData, REC_HDR.fields.kind);
    return setSize(r, 0, REC_HDR.size);
  },
];

/** Unknown kinds (below REC_KIND_MAX and the largest): counted and passed over, not rejected. */
const UNKNOWN_KINDS = [0x3f, 0xffff];

function setSize(recs: Buffer, off: number, size: number): Buffer {
  recs.writeUInt32LE(size >>> 0, off + REC_HDR.fields.size_bytes);
  return recs;
}

/** Half a megabyte of minimal records of an unknown kind. */
function unknownKindFlood(): Buffer {
  const b = Buffer.alloc(512 * 1024);
  for (let off = 0; off < b.length; off += REC_HDR.size) {
    b.writeUInt16LE(0x3e, off + REC_HDR.fields.kind);
    b.writeUInt32LE(REC_HDR.size, off + REC_HDR.fields.size_bytes);
  }
  return b;
}

/** A real envelope's encoding, mutated. */
function mutate(rng: Rng, e: Envelope, other: Envelope): Uint8Array {
  const how = rng.int(5);
  if (how === 0) {
    // Bytes of the raw records: sizes, kinds, versions, positions, lengths, payload.
    for (let k = 1 + rng.int(8); k > 0; k--) e.records[rng.int(e.records.length)] = rng.int(256);
    return encodeEnvelope(e);
  }
  const data = Buffer.from(encodeEnvelope(e));
  if (how === 1) {
    for (let k = 1 + rng.int(4); k > 0; k--) data[rng.int(data.length)] ^= 1 << rng.int(8);
    return data;
  }
  if (how === 2) return data.subarray(0, rng.int(data.length));
  if (how === 3) {
    const b = encodeEnvelope(other);
    return Buffer.concat([data.subarray(0, rng.int(data.length)), b.subarray(rng.int(b.length))]);
  }
  const at = rng.int(data.length);
  const len = 1 + rng.int(Math.min(64, data.length - at));
  return Buffer.concat([data.subarray(0, at + len), data.subarray(at)]);
}

/** Message n of the campaign seeded `seed` (n from 1; the same n gives the same message). */
export function hostileMessage(seed: number, n: number): HostileMessage {
  const rng = new Rng(seed ^ Math.imul(n, 0x9e3779b1));
  const shard = n % SHARDS;
  if (n % VALID_EVERY === 0) {
    const path = `/v/${n}`;
    const e = exchange(TRUSTED, n, 0x1000_0000 + n, path);
    return { subject: `netrig.raw.${TRUSTED.region}.${TRUSTED.node}.${shard}`, data: encodeEnvelope(e), validPath: path, mustReject: false };
  }
  const subject = `netrig.raw.${HOSTILE.region}.${HOSTILE.node}.${shard}`;
  const real = () => exchange(HOSTILE, n, 1 + rng.int(64), `/h/${n}`);
  const draw = rng.next();
  if (draw < 0.25) {
    const big = rng.chance(1 / 20_000);
    const fields = big ? rng.pick(FORGED_BIG)() : rng.pick(FORGED)(rng);
    return { subject, data: packr.pack({ ...FORGE_BASE, ...fields }), mustReject: true };
  }
  if (draw < 0.4) {
    const e = real();
    if (rng.chance(1 / 20_000)) return { subject, data: encodeEnvelope({ ...e, records: unknownKindFlood() }), mustReject: false };
    if (rng.chance(0.15)) {
      e.records.writeUInt16LE(rng.pick(UNKNOWN_KINDS), REC_HDR.fields.kind);
      return { subject, data: encodeEnvelope(e), mustReject: false };
    }
    return { subject, data: encodeEnvelope({ ...e, records: rng.pick(FORGED_RECORDS)(e.records, rng) }), mustReject: true };
  }
  if (draw < 0.5) return { subject, data: rng.pick(NOT_ENVELOPES)(rng), mustReject: true };
  if (draw < 0.6) {
    const text = rng.int(3);
    const data = text === 0 ? Buffer.alloc(0) : text === 1 ? Buffer.from(`GET /${n} HTTP/1.1\r\n\r\n`) : rng.bytes(1 + rng.int(2000));
    // Random bytes may spell a msgpack map by chance; the decoders judge those.
    return { subject, data, mustReject: text !== 2 };
  }
  return { subject, data: mutate(rng, real(), exchange(HOSTILE, n + 1, 1 + rng.int(64), `/s/${n}`)), mustReject: false };
}

/** What a lane running functions that read `wanted` kinds does with a message. */
export interface Verdict {
  /** Why it is rejected (dead-lettered), by its first failure; null: accepted. */
  rejected: string | null;
  /** Records of kinds no decoder knows (counted, passed over). */
  unknownKinds: number;
  /** The node an accepted envelope says it comes from. */
  node?: string;
}

/**
 * What the decoders say of a message, by the rule the lane follows: the envelope is
 * decoded (decodeEnvelope); its records are framed (a header must fit, and its size cover
 * at least the header and at most the bytes left, or the rest cannot be framed); a record
 * of a kind the functions read is decoded (decodeRecord); a record of a kind no decoder
 * knows is counted. The first failure that is not an unknown kind rejects the message.
 */
export function verdict(data: Uint8Array, wanted: ReadonlySet<number>): Verdict {
  const env = decodeEnvelope(data);
  if (typeof env === 'string') return { rejected: `envelope_${env}`, unknownKinds: 0 };
  const recs = env.records;
  let rejected: string | null = null;
  let unknownKinds = 0;
  for (let off = 0; off < recs.length;) {
    if (off + REC_HDR.size > recs.length) return { rejected: rejected ?? 'record_truncated', unknownKinds, node: env.node };
    const kind = recs.readUInt16LE(off + REC_HDR.fields.kind);
    const size = recs.readUInt32LE(off + REC_HDR.fields.size_bytes);
    if (size < REC_HDR.size || size > recs.length - off) return { rejected: rejected ?? 'record_bad_size', unknownKinds, node: env.node };
    if (wanted.has(kind)) {
      const rec = decodeRecord(recs, off);
      if (typeof rec === 'string') rejected ??= `record_${rec}`;
    } else if (!(kind in RECORD_VERSIONS)) {
      unknownKinds++;
    }
    off = nextRecordOffset(off, size);
  }
  return { rejected, unknownKinds, node: env.node };
}
