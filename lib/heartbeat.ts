/**
 * Heartbeats of running netrig processes in a NATS KV bucket: every edge and processor puts
 * what it is doing under its own key every few seconds, and the bucket forgets a key that
 * stopped beating (its TTL), so `netrig status` shows what runs now, from anywhere that
 * reaches NATS. A process that stops cleanly deletes its key at once.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from './logger.js';
import { kvBucket } from './nats.js';

export const STATUS_BUCKET = 'netrig_status';
export const HEARTBEAT_MS = 5000;
/** A key not renewed for this long is gone: four missed beats. */
const STATUS_TTL_MS = 4 * HEARTBEAT_MS;

/** What every heartbeat carries. */
export interface StatusCommon {
  kind: 'processor' | 'edge';
  /** `<host>-<pid>-<random>`: unique per process start. */
  id: string;
  host: string;
  pid: number;
  /** ISO time the process started beating. */
  started: string;
}

export interface ProcessorStatus extends StatusCommon {
  kind: 'processor';
  database: string;
  functions: string[];
  /** Shards this processor reads. */
  lanes: number[];
  /** Messages its consumers have yet to deliver. */
  lag: number;
  /** ISO time of its last insert, null before the first. */
  last_commit: string | null;
}

export interface EdgeStatus extends StatusCommon {
  kind: 'edge';
  region: string;
  node: string;
  run: string;
  records_per_s: number;
  capture: { path: string; features: string[] };
}

export type NetrigStatus = ProcessorStatus | EdgeStatus;
type Detail<S extends NetrigStatus> = Omit<S, keyof StatusCommon>;

/** The status bucket, created on first use (with `replicas`). */
export function statusBucket(nc: NatsConnection, replicas = 1): Promise<KV> {
  return kvBucket(nc, STATUS_BUCKET, { history: 1, ttl: STATUS_TTL_MS, replicas });
}

/** `<host>-<pid>-<random>`: an id unique to one start of one netrig process part. */
export function instanceId(): string {
  return `${hostname().replace(/[^A-Za-z0-9_-]/g, '_')}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** Beats for one process until stop(). */
export class Heartbeat<S extends NetrigStatus> {
  private readonly common: StatusCommon;
  private timer: NodeJS.Timeout | null = null;
  private beating: Promise<void> = Promise.resolve();
  private failedOnce = false;

  private constructor(private readonly kv: KV, kind: S['kind'], id: string, private readonly describe: () => Promise<Detail<S>>, private readonly log: Logger) {
    this.common = { kind, id, host: hostname(), pid: process.pid, started: new Date().toISOString() };
  }

  static async start<S extends NetrigStatus>(nc: NatsConnection, kind: S['kind'], describe: () => Promise<Detail<S>>, log: Logger, o: { replicas?: number; id?: string } = {}): Promise<Heartbeat<S>> {
    const hb = new Heartbeat<S>(await statusBucket(nc, o.replicas), kind, o.id ?? instanceId(), describe, log);
    await hb.beat();
    hb.timer = setInterval(() => void hb.beat(), HEARTBEAT_MS).unref();
    return hb;
  }

  private get key(): string {
    return `${this.common.kind}.${this.common.id}`;
  }

  private beat(): Promise<void> {
    this.beating = this.beating.then(async () => {
      try {
        await this.kv.put(this.key, JSON.stringify({ ...this.common, ...(await this.describe()) }));
      } catch (err) {
        // Status is informational: a missed beat shows as a stale or missing entry.
        if (!this.failedOnce) this.log.warn({ err: (err as Error).message }, 'heartbeat failed (logged once)');
        this.failedOnce = true;
      }
    });
    return this.beating;
  }

  /** Stop beating and remove this process's entry. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.beating;
    await this.kv.delete(this.key).catch(() => undefined);
  }
}

/** Every live entry of the bucket, processors first, then edges, each by id. */
export async function readStatus(nc: NatsConnection): Promise<NetrigStatus[]> {
  const kv = await statusBucket(nc);
  const out: NetrigStatus[] = [];
  for await (const key of await kv.keys()) {
    const e = await kv.get(key);
    if (!e || e.operation !== 'PUT' || !e.value.length) continue;
    try {
      out.push(e.json<NetrigStatus>());
    } catch {
      // Not ours to show: a hand-written key.
    }
  }
  return out.sort((a, b) => (a.kind === b.kind ? a.id.localeCompare(b.id) : a.kind === 'processor' ? -1 : 1));
}

/** The live processors writing `database`. */
export async function readProcessors(nc: NatsConnection, database: string): Promise<ProcessorStatus[]> {
  return (await readStatus(nc)).filter((s): s is ProcessorStatus => s.kind === 'processor' && s.database === database);
}
