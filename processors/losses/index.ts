/**
 * losses: one `capture_losses` row per loss count an envelope carries (kernel ring buffer
 * full, edge buffer full while NATS was away, ...), and one per gap in an edge run's
 * envelopes of a shard (`shard_seq`): envelopes the raw stream discarded by its age or
 * size limits before this lane read them, cause `stream_discarded`, with the envelopes and
 * the records they held. Every envelope belongs to one shard, so each loss is written once.
 *
 * A gap is seen between two envelopes of a run this lane read; envelopes discarded while
 * no lane of the shard ran are counted by the runtime (the stream's first sequence moved
 * past where the shard resumes) in `netrig_processor_stream_discarded_messages_total`.
 */
import { kindName } from '../../schemas/records.js';
import type { EnvelopeContext, FunctionLane, LaneContext, ProcessingFunction } from '../runtime/function.js';
import { wallNs } from '../runtime/rows.js';

export const STREAM_DISCARDED = 'stream_discarded';
/** Edge runs whose position a lane remembers (the oldest-seen is forgotten past this). */
const MAX_RUNS = 4096;
/** Discards are logged at most this often per lane, with what was discarded since. */
const LOG_EVERY_MS = 60_000;

/** Where an edge run's envelopes of this shard had got to: the next shard_seq, and records before it. */
interface RunPosition {
  nextSeq: number;
  records: number;
}

class LossesLane implements FunctionLane {
  private readonly runs = new Map<string, RunPosition>();
  private loggedAt = -Infinity;
  private unlogged = { envelopes: 0, records: 0 };

  constructor(private readonly ctx: LaneContext) {}

  onRecord(): void {}

  onEnvelope(env: EnvelopeContext): void {
    const e = env.envelope;
    const ts = wallNs(e.mono, e.clock);
    for (const l of e.lost) {
      this.ctx.emit('capture_losses', {
        ts, region: e.region, node: e.node, run_id: e.run,
        kind: kindName(l.kind), cause: l.cause, records: l.records, envelopes: 0, connections: 0,
      });
    }
    if (e.shard_seq === undefined || e.shard_records === undefined) return;
    const key = `${e.node}|${e.run}`;
    const at = this.runs.get(key);
    if (at && e.shard_seq > at.nextSeq) {
      const envelopes = e.shard_seq - at.nextSeq;
      const records = Math.max(0, e.shard_records - at.records);
      this.ctx.emit('capture_losses', {
        ts, region: e.region, node: e.node, run_id: e.run, kind: 'all', cause: STREAM_DISCARDED, records, envelopes, connections: 0,
      });
      this.ctx.count(STREAM_DISCARDED, envelopes);
      this.unlogged.envelopes += envelopes;
      this.unlogged.records += records;
      if (performance.now() - this.loggedAt >= LOG_EVERY_MS) {
        this.loggedAt = performance.now();
        this.ctx.log.warn({ node: e.node, run: e.run, ...this.unlogged, seq: env.seq }, 'the raw stream discarded envelopes before they were read (its age or size limit); counted in capture_losses');
        this.unlogged = { envelopes: 0, records: 0 };
      }
    }
    if (at && e.shard_seq < at.nextSeq) return; // an older envelope: the position stays
    this.runs.delete(key);
    this.runs.set(key, { nextSeq: e.shard_seq + 1, records: e.shard_records + e.count });
    if (this.runs.size > MAX_RUNS) this.runs.delete(this.runs.keys().next().value!);
  }

  lowWaterMark(): number {
    return Infinity;
  }
}

export const lossesFunction = {
  name: 'losses',
  kinds: [],
  tables: ['capture_losses'],
  createLane: (ctx: LaneContext) => new LossesLane(ctx),
} satisfies ProcessingFunction;
