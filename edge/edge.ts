/**
 * The edge loop: drain a record source, batch records per shard, seal batches into
 * envelopes (stamped with the run, sequence, clock offset, losses and symbol names) and
 * hand them to the publisher. Empty heartbeat envelopes keep every shard's clock moving
 * while it is idle, so processors can time out requests deterministically.
 */
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import type { Logger } from '../lib/logger.js';
import { ENVELOPE_VERSION, type Envelope } from '../schemas/envelope.js';
import { kindName, REC_KIND_MAX } from '../schemas/records.js';
import { Batcher, type SealedBatch } from './batcher.js';
import { CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME_ID, clockNs } from './libc.js';
import { LossCause, LossLedger } from './losses.js';
import { EdgeMetrics } from './metrics.js';
import { Publisher } from './publisher.js';
import { MASKED_AFTER_GAP, SECRET_HEADERS, SecretMasker } from './secret-masker.js';
import type { CaptureDescription, RecordSource } from './source.js';
import { ensureStream, type StreamSettings } from '../lib/raw-stream.js';
import { KernelSymbols, readDropReasons } from './symbols.js';

export interface EdgeOptions {
  region: string;
  node: string;
  /** Shards per node; a connection's records always share one. */
  shards: number;
  stream: StreamSettings;
  /** Seal a shard's batch at this many bytes or records, or after lingerMs. */
  maxBatchBytes: number;
  maxBatchRecords: number;
  lingerMs: number;
  /** An idle shard gets an empty envelope this often. */
  heartbeatMs: number;
  /** Bytes of envelopes buffered while NATS is slow or away before new ones are dropped. */
  maxBufferBytes: number;
  publishTimeoutMs: number;
  /** Pause between drains when the source had little to give. */
  pollIntervalMs: number;
  /** The node's boot id. */
  bootId: string;
  /** Mask secret HTTP/1 header values before publishing (edge/secret-masker.ts). */
  maskSecrets: boolean;
}

/** A drain that yields this many records is followed at once by the next. */
export const BUSY_DRAIN_RECORDS = 4096;
const HOUSEKEEPING_MS = 1000;
/** What an empty heartbeat envelope is counted as holding in the publish buffer. */
const HEARTBEAT_BYTES = 256;

/** Offset CLOCK_REALTIME − CLOCK_MONOTONIC as [seconds, nanoseconds]. */
function clockOffset(): [number, number] {
  const mono = clockNs(CLOCK_MONOTONIC);
  const real = clockNs(CLOCK_REALTIME);
  const off = real - mono;
  return [Number(off / 1_000_000_000n), Number(off % 1_000_000_000n)];
}

export class Edge {
  /** Random id of this run, new at every start. */
  readonly runId = randomBytes(8).toString('hex');
  readonly metrics: EdgeMetrics;
  readonly ledger = new LossLedger();
  /** Records drained from the source since start, per kind (index = kind). */
  readonly drained = new Float64Array(REC_KIND_MAX);
  private seq = 0;
  private readonly batcher: Batcher;
  private readonly masker: SecretMasker | null;
  /** Masked values already counted in metrics, per SecretMasker.masked index. */
  private readonly maskedReported = new Float64Array(SECRET_HEADERS.length + 1);
  private readonly publisher: Publisher;
  private readonly symbols = new KernelSymbols();
  private readonly dropReasons = readDropReasons();
  private readonly lastEnvelopeMs: number[];
  private clock = clockOffset();
  private nowMs = performance.now();
  private lastHousekeeping = 0;
  private timer: NodeJS.Timeout | NodeJS.Immediate | null = null;
  private stopping = false;
  private sourceDone: (() => void) | null = null;
  private readonly visit = (data: Uint8Array, off: number, len: number) => this.batcher.add(data, off, len, this.nowMs);

  private constructor(
    private readonly source: RecordSource,
    nc: NatsConnection,
    private readonly opts: EdgeOptions,
    private readonly log: Logger,
    metrics?: EdgeMetrics,
  ) {
    this.metrics = metrics ?? new EdgeMetrics();
    this.masker = opts.maskSecrets ? new SecretMasker() : null;
    this.batcher = new Batcher(
      { shards: opts.shards, maxBatchBytes: opts.maxBatchBytes, maxBatchRecords: opts.maxBatchRecords, masker: this.masker ?? undefined },
      (b) => this.seal(b),
    );
    this.publisher = new Publisher(
      jetstream(nc),
      { subjectPrefix: opts.stream.subjectPrefix, maxBufferBytes: opts.maxBufferBytes, publishTimeoutMs: opts.publishTimeoutMs },
      this.ledger, this.metrics, log,
    );
    this.lastEnvelopeMs = new Array(opts.shards).fill(this.nowMs);
  }

  /** Ensure the stream exists, then start draining `source` into it. The caller keeps `nc`. */
  static async start(source: RecordSource, nc: NatsConnection, opts: EdgeOptions, log: Logger, metrics?: EdgeMetrics): Promise<Edge> {
    await ensureStream(nc, opts.stream, log);
    const edge = new Edge(source, nc, opts, log, metrics);
    log.info({ run: edge.runId, region: opts.region, node: opts.node, shards: opts.shards, capture: source.capture }, 'edge started');
    edge.metrics.captureInfo.set({ path: source.capture.path, features: source.capture.features.join(',') }, 1);
    edge.tick();
    return edge;
  }

  /** Records drained from the source since start, all kinds. */
  get drainedTotal(): number {
    return this.drained.reduce((a, b) => a + b, 0);
  }

  /** How the source captures: payload path and active features. */
  get capture(): CaptureDescription {
    return this.source.capture;
  }

  /** Bytes of envelopes waiting for NATS. */
  get bufferedBytes(): number {
    return this.publisher.bufferedBytes;
  }

  /** Resolves once a finite source is exhausted and everything it gave is published. */
  async whenSourceDone(): Promise<void> {
    if (!this.source.exhausted) await new Promise<void>((r) => (this.sourceDone = r));
    this.batcher.flush();
    await this.publisher.flush(60_000);
  }

  private tick = (): void => {
    this.timer = null;
    if (this.stopping) return;
    // The thread's own CPU clock: in `netrig up` the processor shares this thread.
    const cpu0 = clockNs(CLOCK_THREAD_CPUTIME_ID);
    this.nowMs = performance.now();
    const n = this.source.poll(this.visit);
    this.batcher.flush(this.nowMs - this.opts.lingerMs);
    if (this.nowMs - this.lastHousekeeping >= HOUSEKEEPING_MS) this.housekeeping();
    this.heartbeats();
    if (this.source.exhausted && this.sourceDone) {
      this.sourceDone();
      this.sourceDone = null;
    }
    this.metrics.drainCpu.inc(Number(clockNs(CLOCK_THREAD_CPUTIME_ID) - cpu0) / 1e9);
    this.timer = n >= BUSY_DRAIN_RECORDS ? setImmediate(this.tick) : setTimeout(this.tick, this.opts.pollIntervalMs);
  };

  private housekeeping(): void {
    this.lastHousekeeping = this.nowMs;
    this.clock = clockOffset();
    for (const l of this.source.takeLosses()) {
      this.ledger.add(l.kind, l.cause, l.records);
      this.metrics.lost.inc({ kind: kindName(l.kind), cause: l.cause }, l.records);
    }
    this.metrics.ringFill.set(this.source.fill());
    this.reportMasked();
  }

  /** Masked values since the last report, into the counter (the masker keeps plain numbers). */
  private reportMasked(): void {
    if (!this.masker) return;
    const m = this.masker.masked;
    for (let k = 0; k < m.length; k++) {
      const d = m[k] - this.maskedReported[k];
      if (d === 0) continue;
      this.maskedReported[k] = m[k];
      this.metrics.secretsMasked.inc({ header: k === MASKED_AFTER_GAP ? 'after_gap' : SECRET_HEADERS[k] }, d);
    }
  }

  /**
   * Empty envelopes for shards that sent nothing for a heartbeat interval. A shard with
   * envelopes still queued (NATS slow or away) needs none: those will move its clock.
   */
  private heartbeats(): void {
    for (let shard = 0; shard < this.opts.shards; shard++) {
      if (this.nowMs - this.lastEnvelopeMs[shard] >= this.opts.heartbeatMs) {
        if (this.publisher.queued(shard)) this.lastEnvelopeMs[shard] = this.nowMs;
        else this.heartbeat(shard);
      }
    }
  }

  private heartbeat(shard: number): void {
    this.seal({
      shard, records: Buffer.alloc(0), count: 0, kinds: new Uint32Array(REC_KIND_MAX), dropLocations: new Set(), dropReasons: new Set(),
      headroom: 0, heldBytes: HEARTBEAT_BYTES,
    });
  }

  private seal(b: SealedBatch): void {
    this.lastEnvelopeMs[b.shard] = this.nowMs;
    const envelope: Omit<Envelope, 'lost'> = {
      v: ENVELOPE_VERSION,
      region: this.opts.region,
      node: this.opts.node,
      run: this.runId,
      seq: ++this.seq,
      shard: b.shard,
      boot: this.opts.bootId,
      clock: this.clock,
      mono: Number(clockNs(CLOCK_MONOTONIC)),
      count: b.count,
      records: b.records,
      capture: this.source.capture,
    };
    if (b.dropLocations.size) {
      envelope.ksyms = {};
      for (const a of b.dropLocations) envelope.ksyms[a.toString(16)] = this.symbols.resolve(a);
      envelope.drop_reasons = {};
      for (const r of b.dropReasons) envelope.drop_reasons[r] = this.dropReasons.get(r) ?? `REASON_${r}`;
    }
    for (let k = 0; k < b.kinds.length; k++) {
      if (!b.kinds[k]) continue;
      this.drained[k] += b.kinds[k];
      this.metrics.recordsIn.inc({ kind: kindName(k) }, b.kinds[k]);
    }
    if (!this.publisher.enqueue({ envelope, kinds: b.kinds, bytes: b.heldBytes, headroom: b.headroom })) {
      for (let k = 0; k < b.kinds.length; k++) {
        if (b.kinds[k]) this.metrics.lost.inc({ kind: kindName(k), cause: LossCause.BufferFull }, b.kinds[k]);
      }
    }
  }

  /** Stop: drain what the source holds, publish it (waiting up to `flushMs`), release the source. */
  async stop(flushMs = 5000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.timer) {
      clearTimeout(this.timer as NodeJS.Timeout);
      clearImmediate(this.timer as NodeJS.Immediate);
    }
    this.source.poll(this.visit);
    // Kernel losses first, so the last envelopes carry them; an empty one if none is left.
    this.housekeeping();
    this.batcher.flush();
    if (this.ledger.hasPending()) this.heartbeat(0);
    const flushed = await this.publisher.flush(flushMs);
    const unsent = this.publisher.stop();
    this.source.close();
    if (!flushed || unsent || this.ledger.hasPending()) {
      this.log.warn({ unsentRecords: unsent, unreportedLosses: this.ledger.take() }, 'edge stopped with unsent records');
    }
    this.log.info({ run: this.runId, envelopes: this.seq }, 'edge stopped');
  }
}
