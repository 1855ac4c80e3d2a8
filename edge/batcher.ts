/**
 * Shard batches: raw records copied out of the ring buffer into one growing buffer per
 * shard, sealed when full or old enough. The shard follows from the connection id, so a
 * connection's records always travel in one shard, in order. Records are not decoded:
 * only the kind (for loss accounting) and the connection id (for the shard) are read, and
 * payload records are handed to the secret masker — in the batch's copy, never in the ring.
 */
import { REC_HDR } from '../schemas/layouts.js';
import { REC_KIND_MAX, RecordKind, SKB_DROP_LOCATION_OFFSET, SKB_DROP_REASON_OFFSET } from '../schemas/records.js';
import type { SecretMasker } from './secret-masker.js';

/** Records at or below this size are copied word by word; larger ones with one memcpy. */
const SMALL_RECORD_BYTES = 256;

/**
 * Bytes free in front of a sealed batch's records, in the same memory, for the envelope's
 * header (schemas/envelope.ts encodeEnvelopeInPlace): a header that fits is written there
 * and the records are not copied again. Headers are some 200 bytes, more with loss counts,
 * kernel symbols and drop reasons.
 */
export const ENVELOPE_HEADROOM = 4096;

/** A sealed batch: the records and what is needed to account for them. */
export interface SealedBatch {
  shard: number;
  records: Buffer;
  count: number;
  /** Records per kind, so a dropped batch can be counted exactly. */
  kinds: Uint32Array;
  /** Drop locations (kernel addresses) in this batch, for symbolization. */
  dropLocations: Set<bigint>;
  /** Drop reasons in this batch, for naming. */
  dropReasons: Set<number>;
  /** Bytes in front of `records` that are the batch's own to write the envelope header into. */
  headroom: number;
  /** Memory the batch holds (records, headroom, the rest of a handed-over buffer). */
  heldBytes: number;
}

/** Shard of a connection id given as its two 32-bit halves. */
export function shardOf(lo: number, hi: number, shards: number): number {
  const h = Math.imul(lo ^ hi, 0x9e3779b1) >>> 0;
  // A mask, not an integer division, for power-of-two counts (the default 16): the same
  // shard, and ~10 ns less per record on the drain path (bench/drain.bench.ts).
  return (shards & (shards - 1)) === 0 ? h & (shards - 1) : h % shards;
}

/** Records in a buffer of their own with ENVELOPE_HEADROOM bytes in front. */
function framed(bytes: number): Buffer {
  return Buffer.allocUnsafeSlow(ENVELOPE_HEADROOM + bytes).subarray(ENVELOPE_HEADROOM);
}

class ShardBatch {
  buf!: Buffer;
  words!: Int32Array;
  used = 0;
  count = 0;
  openedAt = 0;
  kinds = new Uint32Array(REC_KIND_MAX);
  dropLocations = new Set<bigint>();
  dropReasons = new Set<number>();

  constructor(private readonly capacity: number) {
    this.renew();
  }

  /** A new buffer: the last one went with its sealed batch. */
  renew(): void {
    this.buf = framed(this.capacity);
    this.words = new Int32Array(this.buf.buffer, this.buf.byteOffset, this.capacity >>> 2);
  }

  /**
   * The records, framed: a batch at least half full hands its buffer over (a new one is
   * made for the next batch), a smaller one is copied into one of its own size, so a
   * queue of small envelopes does not hold a full buffer each.
   */
  takeRecords(): Buffer {
    if (this.used * 2 >= this.capacity) {
      const records = this.buf.subarray(0, this.used);
      this.renew();
      return records;
    }
    const records = framed(this.used);
    this.buf.copy(records, 0, 0, this.used);
    return records;
  }

  reset(): void {
    this.used = 0;
    this.count = 0;
    this.kinds = new Uint32Array(REC_KIND_MAX);
    this.dropLocations = new Set();
    this.dropReasons = new Set();
  }
}

export interface BatcherOptions {
  shards: number;
  /** Seal a shard's batch once it holds this many bytes. */
  maxBatchBytes: number;
  /** Seal a shard's batch once it holds this many records. */
  maxBatchRecords: number;
  /** Masks secret header values in payload records; none: records are copied as they are. */
  masker?: SecretMasker;
}

/** Routes raw records to shard batches and hands sealed batches to `onSealed`. */
export class Batcher {
  private readonly batches: ShardBatch[];
  private readonly opts: BatcherOptions;
  /** Records that were not valid enough to route (too short), counted, never thrown. */
  malformed = 0;
  /** Word view of the last source buffer: the ring buffer hands the same one every time. */
  private srcData: Uint8Array | null = null;
  private srcWords: Int32Array = new Int32Array(0);

  constructor(opts: BatcherOptions, private readonly onSealed: (b: SealedBatch) => void) {
    this.opts = opts;
    // Room for a full batch plus one maximal record, 8-byte aligned.
    const capacity = (opts.maxBatchBytes + 64 * 1024 + 7) & ~7;
    this.batches = Array.from({ length: opts.shards }, () => new ShardBatch(capacity));
  }

  /**
   * Add the record at data[off, off + len). `data` must be 4-byte aligned at `off`
   * (ring-buffer records are 8-byte aligned). `now` stamps when a batch was opened.
   */
  add(data: Uint8Array, off: number, len: number, now: number): void {
    if (len < REC_HDR.size) {
      this.malformed++;
      return;
    }
    if (data !== this.srcData) {
      this.srcData = data;
      this.srcWords = new Int32Array(data.buffer, data.byteOffset, data.byteLength >>> 2);
    }
    const words = this.srcWords;
    const w = off >>> 2;
    const connLo = words[w + (REC_HDR.fields.conn_id >>> 2)];
    const connHi = words[w + (REC_HDR.fields.conn_id >>> 2) + 1];
    const kind = words[w] & 0xffff;
    const shard = shardOf(connLo, connHi, this.opts.shards);
    const b = this.batches[shard];
    const padded = (len + 7) & ~7;
    if (b.used + padded > b.buf.length) this.seal(b, shard);
    if (b.count === 0) b.openedAt = now;
    if (padded <= SMALL_RECORD_BYTES) {
      // Two words per iteration (padded is a multiple of 8): ~20% less time per small record.
      const dst = b.words;
      const d = b.used >>> 2;
      for (let i = 0, n = padded >>> 2; i < n; i += 2) {
        dst[d + i] = words[w + i];
        dst[d + i + 1] = words[w + i + 1];
      }
    } else {
      b.buf.set(data.subarray(off, off + padded), b.used);
    }
    if (kind < REC_KIND_MAX) b.kinds[kind]++;
    const masker = this.opts.masker;
    if (masker && (kind === RecordKind.SockData || kind === RecordKind.TlsData)) {
      masker.maskRecord(b.buf, b.used, len, kind, connLo, connHi);
    } else if (masker && kind === RecordKind.ConnClose) {
      masker.forget(connLo, connHi);
    }
    if (kind === RecordKind.SkbDrop) {
      b.dropLocations.add(b.buf.readBigUInt64LE(b.used + SKB_DROP_LOCATION_OFFSET));
      b.dropReasons.add(b.buf.readUInt32LE(b.used + SKB_DROP_REASON_OFFSET));
    }
    b.used += padded;
    b.count++;
    if (b.used >= this.opts.maxBatchBytes || b.count >= this.opts.maxBatchRecords) {
      this.seal(b, shard);
    }
  }

  /** Seal every batch opened at or before `olderThan` (all non-empty ones by default). */
  flush(olderThan = Infinity): void {
    this.batches.forEach((b, shard) => {
      if (b.count > 0 && b.openedAt <= olderThan) this.seal(b, shard);
    });
  }

  private seal(b: ShardBatch, shard: number): void {
    if (b.count === 0) return;
    const records = b.takeRecords();
    this.onSealed({
      shard,
      records,
      count: b.count,
      kinds: b.kinds,
      dropLocations: b.dropLocations,
      dropReasons: b.dropReasons,
      headroom: ENVELOPE_HEADROOM,
      heldBytes: records.buffer.byteLength,
    });
    b.reset();
  }
}
