/**
 * The kernel boundary: a source of raw record bytes. Everything above it (batching,
 * envelopes, publishing) is the same whether records come from eBPF or from a file.
 */
import type { RecordVisitor } from './ringbuf.js';

export type { RecordVisitor };

/** Losses the source itself saw, per kind and cause. */
export interface SourceLoss {
  kind: number;
  cause: string;
  records: number;
}

/** How a source captures: its path (`socket`, `syscall`, `file`) and the features active. */
export interface CaptureDescription {
  path: string;
  features: string[];
}

/** A source of raw kernel records (each starting with rec_hdr, 8-byte aligned). */
export interface RecordSource {
  /** What this source captures and how; carried in envelopes and metrics. */
  readonly capture: CaptureDescription;
  /** Hand every available record to `visit` without blocking; returns how many. */
  poll(visit: RecordVisitor): number;
  /** Losses since the previous call. */
  takeLosses(): SourceLoss[];
  /** How full the source's buffer is, 0 to 1. */
  fill(): number;
  /** True once a finite source (a file) has delivered everything. */
  readonly exhausted: boolean;
  /** Release everything the source holds; for libbpf, detach every program. */
  close(): void;
}
