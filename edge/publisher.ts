/**
 * JetStream publisher for sealed envelopes. One publish in flight per shard keeps each
 * shard's envelopes in order on the stream; shards publish in parallel. A failed publish is
 * retried with the same message id (JetStream drops the copy if the first one landed)
 * until it succeeds. While NATS is slow or away envelopes wait in a bounded buffer; an
 * envelope that does not fit is dropped and its records are counted as lost.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { encodeEnvelopeInPlace, envelopeSubject, messageId, type Envelope, type LossCount } from '../schemas/envelope.js';
import type { Logger } from '../lib/logger.js';
import { LossCause, type LossLedger } from './losses.js';
import type { EdgeMetrics } from './metrics.js';

/** An envelope waiting to be published; encoded at its first attempt. */
export interface PendingEnvelope {
  /**
   * Everything but `lost`, which is filled from the ledger at the first attempt, and the
   * shard's sequence and record count, which count only envelopes that are published.
   */
  envelope: Omit<Envelope, 'lost' | 'shard_seq' | 'shard_records'>;
  /** Records per kind, to count them exactly if the envelope is dropped. */
  kinds: Uint32Array;
  /** Bytes it holds in the buffer. */
  bytes: number;
  /** Bytes in front of the envelope's records that its header may be written into. */
  headroom: number;
  encoded?: Buffer;
  /** Loss counts it took from the ledger when it was encoded. */
  lost?: LossCount[];
}

export interface PublisherOptions {
  subjectPrefix: string;
  /** Most bytes of envelopes waiting for NATS before new ones are dropped. */
  maxBufferBytes: number;
  /** How long one publish waits for its acknowledgement. */
  publishTimeoutMs: number;
}

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;

export class Publisher {
  private readonly queues: PendingEnvelope[][] = [];
  private readonly running: boolean[] = [];
  /** Per shard: envelopes encoded for publishing so far, and their records. */
  private readonly shardSeq: number[] = [];
  private readonly shardRecords: number[] = [];
  private buffered = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private lastErrorLogged = 0;

  constructor(
    private js: JetStreamClient,
    private readonly opts: PublisherOptions,
    private readonly ledger: LossLedger,
    private readonly metrics: EdgeMetrics,
    private readonly log: Logger,
  ) {}

  /** Envelopes of `shard` waiting to be published. */
  queued(shard: number): number {
    return this.queues[shard]?.length ?? 0;
  }

  /** Bytes waiting in the buffer. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Queue an envelope; returns false (and counts its records as lost) if the buffer is full. */
  enqueue(p: PendingEnvelope): boolean {
    if (this.stopped || this.buffered + p.bytes > this.opts.maxBufferBytes) {
      this.ledger.addBatch(p.kinds, LossCause.BufferFull);
      this.metrics.envelopesDropped.inc();
      return false;
    }
    const shard = p.envelope.shard;
    (this.queues[shard] ??= []).push(p);
    this.buffered += p.bytes;
    this.metrics.bufferedBytes.set(this.buffered);
    if (!this.running[shard]) void this.pump(shard);
    return true;
  }

  private async pump(shard: number): Promise<void> {
    this.running[shard] = true;
    const q = this.queues[shard];
    let backoff = RETRY_MIN_MS;
    while (q.length && !this.stopped) {
      const p = q[0];
      if (!p.encoded) {
        p.lost = this.ledger.take();
        const seq = (this.shardSeq[shard] ?? 0) + 1;
        const records = this.shardRecords[shard] ?? 0;
        this.shardSeq[shard] = seq;
        this.shardRecords[shard] = records + p.envelope.count;
        p.encoded = encodeEnvelopeInPlace({ ...p.envelope, shard_seq: seq, shard_records: records, lost: p.lost }, p.headroom);
      }
      const started = performance.now();
      try {
        await this.js.publish(envelopeSubject(this.opts.subjectPrefix, p.envelope), p.encoded, {
          msgID: messageId(p.envelope),
          timeout: this.opts.publishTimeoutMs,
        });
      } catch (err) {
        this.metrics.publishErrors.inc();
        const now = Date.now();
        if (now - this.lastErrorLogged > 5000) {
          this.lastErrorLogged = now;
          this.log.warn({ err: (err as Error).message, bufferedBytes: this.buffered }, 'publish failed; retrying');
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, RETRY_MAX_MS);
        continue;
      }
      backoff = RETRY_MIN_MS;
      q.shift();
      this.buffered -= p.bytes;
      this.metrics.bufferedBytes.set(this.buffered);
      this.metrics.publishSeconds.observe((performance.now() - started) / 1000);
      this.metrics.envelopesOut.inc();
      this.metrics.bytesOut.inc(p.encoded.length);
      this.metrics.recordsOut.inc(p.envelope.count);
    }
    this.running[shard] = false;
    if (!this.running.some(Boolean)) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolve once every queued envelope is published, or after `timeoutMs`. */
  async flush(timeoutMs: number): Promise<boolean> {
    if (!this.running.some(Boolean)) return true;
    return new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  /**
   * Stop publishing; envelopes still queued are counted as lost for 'shutdown', and the loss
   * counts they carried go back to the ledger.
   */
  stop(): number {
    this.stopped = true;
    let records = 0;
    for (const q of this.queues) {
      for (const p of q ?? []) {
        if (p.lost) this.ledger.restore(p.lost);
        this.ledger.addBatch(p.kinds, LossCause.Shutdown);
        records += p.envelope.count;
      }
      if (q) q.length = 0;
    }
    this.buffered = 0;
    return records;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
