/**
 * How far a replay is. Its window is a range of stream sequences, found by the times of the
 * stored messages at its ends; each lane reads its shard's messages of that range in order,
 * so the share of the range behind a lane's last message is how far that lane is, and the
 * replay is as far as its lanes are on average. The time left is the time so far scaled by
 * what is left of that share.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import { metricTotal } from './runtime/metrics.js';
import type { Processor } from './runtime/processor.js';

export interface ReplayProgress {
  /** 0..1 of the window read. */
  share: number;
  /** Stream messages, records and committed rows so far (every function, every table). */
  messages: number;
  records: number;
  rows: number;
  elapsedMs: number;
  /** Estimated time left; null until something was read. */
  etaMs: number | null;
}

/** Sequences looked at past a deleted one before the search takes the range as ending there. */
const DELETED_RUN = 64;

/** The first stored message at or after `seq` (up to `max`): its sequence and time, or null. */
async function storedAt(jsm: JetStreamManager, stream: string, seq: number, max: number): Promise<{ seq: number; time: Date } | null> {
  for (let s = seq; s <= max && s < seq + DELETED_RUN; s++) {
    const m = await jsm.streams.getMessage(stream, { seq: s });
    if (m) return { seq: s, time: m.time };
  }
  return null;
}

/**
 * The first sequence in [lo, hi] of a message stored at or after `time` (hi + 1 when none
 * was): a binary search over the stored messages' times, about log2(hi - lo) requests.
 */
export async function seqAtTime(jsm: JetStreamManager, stream: string, time: Date, lo: number, hi: number): Promise<number> {
  let a = lo;
  let b = hi + 1;
  while (a < b) {
    const mid = Math.floor((a + b) / 2);
    const m = await storedAt(jsm, stream, mid, b - 1);
    if (!m || m.time >= time) b = mid;
    else a = m.seq + 1;
  }
  // `a` may be a deleted sequence before the message found: that message is the answer.
  return a > hi ? a : (await storedAt(jsm, stream, a, hi))?.seq ?? hi + 1;
}

/** Progress of `processor` over the sequences [firstSeq, endSeq], started at `startedMs`. */
export async function replayProgress(processor: Processor, firstSeq: number, endSeq: number, startedMs: number): Promise<ReplayProgress> {
  const span = Math.max(1, endSeq - firstSeq + 1);
  const lanes = processor.lanes;
  let sum = 0;
  for (const lane of lanes) sum += lane.windowDone ? 1 : Math.min(1, Math.max(0, (lane.processedSeq - firstSeq + 1) / span));
  const share = lanes.length ? sum / lanes.length : 0;
  const elapsedMs = Date.now() - startedMs;
  const m = processor.metrics;
  return {
    share,
    messages: await metricTotal(m.messages),
    records: await metricTotal(m.records),
    rows: await metricTotal(m.rows),
    elapsedMs,
    etaMs: share > 0 ? (elapsedMs * (1 - share)) / share : null,
  };
}
