/**
 * losses: one `capture_losses` row per loss count an envelope carries (kernel ring buffer
 * full, edge buffer full while NATS was away, ...). Every envelope belongs to one shard, so
 * each count is written once.
 */
import { kindName } from '../../schemas/records.js';
import type { EnvelopeContext, FunctionLane, LaneContext, ProcessingFunction } from '../runtime/function.js';
import { wallNs } from '../runtime/rows.js';

class LossesLane implements FunctionLane {
  constructor(private readonly ctx: LaneContext) {}

  onRecord(): void {}

  onEnvelope(env: EnvelopeContext): void {
    const e = env.envelope;
    for (const l of e.lost) {
      this.ctx.emit('capture_losses', {
        ts: wallNs(e.mono, e.clock), region: e.region, node: e.node, run_id: e.run,
        kind: kindName(l.kind), cause: l.cause, records: l.records,
      });
    }
  }

  lowWaterMark(): number {
    return Infinity;
  }
}

export const lossesFunction: ProcessingFunction = {
  name: 'losses',
  kinds: [],
  tables: ['capture_losses'],
  createLane: (ctx) => new LossesLane(ctx),
};
