/**
 * netrig fanin: create or extend the hub's raw stream from REGION=DOMAIN sources
 * (lib/fanin.ts), or show each source's lag and last activity. `table` for people; `json`,
 * one object per line, for scripts.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { ConfigError } from '../lib/errors.js';
import { ensureHubStream, hubSources, parseSource, type FaninSource } from '../lib/fanin.js';
import type { Logger } from '../lib/logger.js';
import { streamSettings, type StreamInput, type StreamSettings } from '../lib/raw-stream.js';
import { formatTable } from './query.js';

export interface FaninInput extends StreamInput {
  source?: string[];
  show?: boolean;
  format?: string;
}

export interface FaninPlan {
  settings: StreamSettings;
  sources: FaninSource[];
  show: boolean;
  format: 'table' | 'json';
}

/** The flags checked, before anything connects. */
export function faninPlan(input: FaninInput): FaninPlan {
  const format = input.format ?? 'table';
  if (format !== 'table' && format !== 'json') throw new ConfigError('format', `expected table or json, got ${JSON.stringify(format)}`);
  const sources = (input.source ?? []).map(parseSource);
  if (!input.show && !sources.length) throw new ConfigError('source', 'name at least one REGION=DOMAIN, or --show');
  return { settings: streamSettings(input), sources, show: input.show ?? false, format };
}

export async function runFanin(nc: NatsConnection, plan: FaninPlan, out: NodeJS.WritableStream, log: Logger): Promise<void> {
  const { settings, sources, format } = plan;
  if (sources.length) {
    const r = await ensureHubStream(nc, settings, sources, log);
    const what = r.created ? `created ${settings.name}` : r.added.length ? `added to ${settings.name}` : `${settings.name} already sources`;
    out.write(`${what}: ${(r.created || r.added.length ? r.added : sources).map((f) => `${f.region}=${f.domain}`).join(' ')}\n`);
  }
  if (!plan.show) return;
  const states = await hubSources(nc, settings);
  if (format === 'json') {
    for (const s of states) out.write(`${JSON.stringify(s)}\n`);
    return;
  }
  out.write(formatTable({
    meta: [['region', 'String'], ['domain', 'String'], ['lag', 'UInt64'], ['last_active', 'String'], ['error', 'String']].map(([name, type]) => ({ name, type })),
    data: states.map((s) => [s.region, s.domain, s.lag, s.activeAgoMs === null ? 'never' : `${(s.activeAgoMs / 1000).toFixed(1)} s ago`, s.error ?? '']),
  }));
}
