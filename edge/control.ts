/**
 * Capture settings changed at run time: a NATS KV bucket holds overrides of the edge's
 * flags (sampling rate, capture size, include/exclude filters) under the keys `default`,
 * `<region>` and `<region>.<node>`, the more specific winning. Every edge watches them and
 * rewrites its BPF config and filter maps, without reloading anything. The new settings
 * apply to sockets first seen afterwards (sampling is decided once per socket).
 */
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../lib/logger.js';
import { kvBucket } from '../lib/nats.js';
import { edgeConfig, type EdgeInput } from './config.js';
import type { CaptureSettings, FilterSet } from './libbpf-source.js';

export const CONTROL_BUCKET = 'netrig_capture';

/** The flags a KV entry may override, as `netrig configure` writes them. */
export type CaptureOverrides = Pick<EdgeInput,
  'sampleRate' | 'captureBytes' | 'reportNoisyDrops' | 'includePids' | 'excludePids' | 'includePorts' |
  'excludePorts' | 'includeNetns' | 'excludeNetns' | 'includeCgroups'>;

const OVERRIDE_KEYS: readonly (keyof CaptureOverrides)[] = [
  'sampleRate', 'captureBytes', 'reportNoisyDrops', 'includePids', 'excludePids', 'includePorts',
  'excludePorts', 'includeNetns', 'excludeNetns', 'includeCgroups',
];

/** Keep only the known override fields of a parsed KV value. */
function overrides(v: unknown): CaptureOverrides {
  const out: Record<string, unknown> = {};
  if (v && typeof v === 'object') for (const k of OVERRIDE_KEYS) if (k in v) out[k] = (v as Record<string, unknown>)[k];
  return out as CaptureOverrides;
}

/** Open the control bucket (created on first use, with `replicas`). */
export function controlBucket(nc: NatsConnection, replicas = 1): Promise<KV> {
  return kvBucket(nc, CONTROL_BUCKET, { history: 5, replicas });
}

/** The key for a scope: `default`, a region, or one node of a region. */
export function controlKey(region?: string, node?: string): string {
  if (node && !region) throw new Error('a node override needs its region');
  return node ? `${region}.${node}` : region ?? 'default';
}

export class CaptureControl {
  private readonly layers = new Map<string, CaptureOverrides>();
  private stopWatch: (() => void) | null = null;

  private constructor(
    private readonly base: EdgeInput,
    private readonly keys: string[],
    /** Exclusions netrig adds for itself; never overridden. */
    private readonly self: FilterSet,
    private readonly apply: (s: CaptureSettings) => void,
    private readonly log: Logger,
  ) {}

  /** Watch the keys of this edge's scope and apply every change. */
  static async start(nc: NatsConnection, o: {
    base: EdgeInput; region: string; node: string; self: FilterSet; apply: (s: CaptureSettings) => void; log: Logger; replicas: number;
  }): Promise<CaptureControl> {
    const keys = ['default', o.region, `${o.region}.${o.node}`];
    const c = new CaptureControl(o.base, keys, o.self, o.apply, o.log);
    const kv = await controlBucket(nc, o.replicas);
    const watch = await kv.watch();
    c.stopWatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) {
        if (!keys.includes(e.key)) continue;
        if (e.operation === 'PUT') {
          try {
            c.layers.set(e.key, overrides(e.json()));
          } catch {
            o.log.warn({ key: e.key }, 'capture override is not JSON; ignored');
            continue;
          }
        } else {
          c.layers.delete(e.key);
        }
        c.reapply(e.key);
      }
    })();
    return c;
  }

  /** Merge flags and overrides (most specific last), validate, and apply. */
  private reapply(changed: string): void {
    let merged: EdgeInput = { ...this.base };
    for (const k of this.keys) merged = { ...merged, ...this.layers.get(k) };
    let settings: CaptureSettings;
    try {
      settings = edgeConfig(merged).source.settings;
    } catch (err) {
      this.log.warn({ key: changed, err: (err as Error).message }, 'capture override rejected; settings unchanged');
      return;
    }
    const ex = settings.exclude;
    for (const k of Object.keys(this.self) as (keyof FilterSet)[]) {
      (ex[k] as unknown[]) = [...new Set([...(ex[k] as unknown[]), ...(this.self[k] as unknown[])])];
    }
    this.apply(settings);
    const count = (f: FilterSet) => Object.fromEntries(Object.entries(f).map(([k, v]) => [k, (v as unknown[]).length]));
    this.log.info({ key: changed, samplePerMillion: settings.samplePerMillion, captureBytes: settings.captureBytes, include: count(settings.include), exclude: count(settings.exclude) }, 'capture settings changed');
  }

  stop(): void {
    this.stopWatch?.();
  }
}
