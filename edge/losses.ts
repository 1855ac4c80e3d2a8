/**
 * Loss ledger: records lost anywhere on the way to the stream, per kind and cause, waiting
 * to ride in the next envelope. Every loss is counted here exactly once and leaves exactly
 * once, in the envelope that reaches JetStream first.
 */
import type { LossCount } from '../schemas/envelope.js';

/** Causes of loss the edge reports. */
export const LossCause = {
  /** The kernel could not reserve ring-buffer space: the drain fell behind. */
  RingbufFull: 'ringbuf_full',
  /** The edge's envelope buffer was full: NATS too slow or away for too long. */
  BufferFull: 'buffer_full',
  /** Envelopes still unsent when the edge stopped. */
  Shutdown: 'shutdown',
} as const;
export type LossCause = (typeof LossCause)[keyof typeof LossCause];

export class LossLedger {
  private pending = new Map<string, LossCount>();
  /** Totals since start, per `${kind}/${cause}`, for metrics and tests. */
  readonly totals = new Map<string, number>();

  add(kind: number, cause: string, records: number): void {
    if (records <= 0) return;
    const key = `${kind}/${cause}`;
    const p = this.pending.get(key);
    if (p) p.records += records;
    else this.pending.set(key, { kind, cause, records });
    this.totals.set(key, (this.totals.get(key) ?? 0) + records);
  }

  /** Count every record of a batch (per-kind counts) as lost for `cause`. */
  addBatch(kinds: Uint32Array, cause: string): void {
    for (let k = 0; k < kinds.length; k++) if (kinds[k]) this.add(k, cause, kinds[k]);
  }

  /** Put back counts an envelope took but never delivered (totals already include them). */
  restore(counts: LossCount[]): void {
    for (const l of counts) {
      const key = `${l.kind}/${l.cause}`;
      const p = this.pending.get(key);
      if (p) p.records += l.records;
      else this.pending.set(key, { ...l });
    }
  }

  /** Counts are waiting for an envelope. */
  hasPending(): boolean {
    return this.pending.size > 0;
  }

  /** Hand the pending counts to an envelope and start afresh. */
  take(): LossCount[] {
    if (this.pending.size === 0) return [];
    const out = [...this.pending.values()];
    this.pending = new Map();
    return out;
  }

  total(cause?: string): number {
    let n = 0;
    for (const [key, v] of this.totals) if (!cause || key.endsWith(`/${cause}`)) n += v;
    return n;
  }
}
