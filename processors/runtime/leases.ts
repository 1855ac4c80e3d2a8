/**
 * Shard leases: which processor owns which shard's lanes, in a NATS KV bucket.
 *
 * Every processor writing a database puts a member key (`<db>.m.<id>`) and one key per shard
 * it owns (`<db>.s.<functions>.<shard>`), and renews them every ttl/5 by compare-and-set on
 * the revision. Processors running the same functions share the shards; processors with
 * other functions (`--functions http1` on some, `tcp,losses` on others) lease the shards
 * apart, and a processor whose functions overlap a live member's without being the same
 * refuses to start (both would write the shared functions' rows). The bucket forgets a key not written for ttl (its max age), so the shards of a
 * killed processor become free by themselves; a processor that stops hands its shards back
 * by deleting their keys after committing. Each member aims at a fair share — the live
 * members sorted by id, the first `shards % members` take one more — taking free shards up
 * to it and handing back the ones above it, so a processor that joins gets work and one
 * that leaves has its work taken over.
 *
 * Fencing: a processor may commit rows or acknowledge messages of a shard only while its
 * lease is valid, which is until half a ttl after the send of the last renewal the server
 * accepted. The server frees the key no earlier than a whole ttl after that renewal, so
 * a lease's previous owner has stopped starting inserts at least half a ttl before anyone
 * else can take it, whatever pauses it (garbage collection, a partition from NATS) in
 * between; the next owner of a lease that ran out waits half a ttl more before it reads
 * what was committed, so an insert has a whole ttl to land (10 s by default).
 */
import { JetStreamApiCodes } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { ConfigError, NatsStalledError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { isJsApiError, kvBucket, openKvBucket } from '../../lib/nats.js';
import { functionGroup } from './lane.js';

export const LEASE_BUCKET = 'netrig_leases';
export const DEFAULT_LEASE_TTL_MS = 10_000;

/** What a member key holds. */
export interface LeaseMember {
  id: string;
  host: string;
  pid: number;
  functions: string[];
}

export interface ShardLeasesOptions {
  nc: NatsConnection;
  database: string;
  /** Shards per node, as the edges publish them: leases exist for 0..shardCount-1. */
  shardCount: number;
  member: LeaseMember;
  ttlMs: number;
  /** Replicas of the lease bucket if this processor creates it. */
  replicas: number;
  log: Logger;
  /** The lease of `shard` is held: start its lanes. A rejection hands the lease back. */
  take(shard: number): Promise<void>;
  /** The leases of `shards` are about to be handed back: commit their work and close their lanes. */
  handBack(shards: number[]): Promise<void>;
  /** The lease of `shard` is gone: close its lanes, committing nothing more. */
  drop(shard: number): void;
}

interface Held {
  revision: number;
  /** performance.now() until which the lease may be used. */
  validUntil: number;
}

/** The lease bucket, created if missing; its max age is the lease ttl, which every processor must share. */
async function leaseBucket(nc: NatsConnection, ttlMs: number, replicas: number): Promise<KV> {
  const kv = await kvBucket(nc, LEASE_BUCKET, { history: 1, ttl: ttlMs, replicas });
  const ttl = (await kv.status()).ttl;
  if (ttl !== ttlMs) throw new ConfigError('lease-ttl', `the processors sharing this NATS use leases of ${ttl / 1000} s (bucket ${LEASE_BUCKET}): pass --lease-ttl ${ttl / 1000}`);
  return kv;
}

/** Ids of the live members writing `database` (none when no processor does). */
export async function liveMembers(nc: NatsConnection, database: string): Promise<string[]> {
  const kv = await openKvBucket(nc, LEASE_BUCKET);
  if (!kv) return [];
  const out: string[] = [];
  for await (const k of await kv.keys(`${database}.m.*`)) out.push(k.slice(`${database}.m.`.length));
  return out.sort();
}

export class ShardLeases {
  private readonly held = new Map<number, Held>();
  private timer: NodeJS.Timeout | null = null;
  private renewing: Promise<void> = Promise.resolve();
  private rebalancing: Promise<void> | null = null;
  private stopped = false;
  private readonly failedOnce = new Set<string>();

  private constructor(private readonly o: ShardLeasesOptions, private readonly kv: KV) {}

  /** Join: register as a member, wait a renewal period so members starting together see each other, then take a share. */
  static async start(o: ShardLeasesOptions): Promise<ShardLeases> {
    const leases = new ShardLeases(o, await leaseBucket(o.nc, o.ttlMs, o.replicas));
    const clash = (await leases.view()).others.find((m) => m.functions.some((f) => o.member.functions.includes(f)));
    if (clash) {
      throw new ConfigError('functions', `processor ${clash.id} (pid ${clash.pid} on ${clash.host}) writes ${o.database} with functions ${clash.functions.join(',')}: `
        + `run the same functions as it (they share the shards) or functions it does not run, not ${o.member.functions.join(',')}`);
    }
    await leases.kv.put(leases.memberKey, JSON.stringify(o.member));
    await new Promise((r) => setTimeout(r, leases.renewMs));
    // Renewals start before the first share is taken: opening a shard's lanes takes time.
    leases.timer = setInterval(() => leases.onTimer(), leases.renewMs);
    leases.rebalancing = leases.rebalance().finally(() => {
      leases.rebalancing = null;
    });
    try {
      await leases.rebalancing;
    } catch (err) {
      await leases.stop().catch(() => undefined);
      throw err;
    }
    return leases;
  }

  /**
   * Renewals run on their own chain, so that a slow hand-back or take (a flush, opening
   * consumers) never keeps the other leases from being renewed; rebalancing waits for them.
   */
  private onTimer(): void {
    this.renewing = this.renewing.then(() => this.renew()).catch((err) => this.warnOnce('renewal', err));
    if (this.stopped || this.rebalancing) return;
    this.rebalancing = this.renewing.then(() => this.rebalance()).catch((err) => this.warnOnce('rebalance', err)).finally(() => {
      this.rebalancing = null;
    });
  }

  private get renewMs(): number {
    return Math.max(100, Math.floor(this.o.ttlMs / 5));
  }

  private get memberKey(): string {
    return `${this.o.database}.m.${this.o.member.id}`;
  }

  private get group(): string {
    return functionGroup(this.o.member.functions);
  }

  private shardKey(shard: number): string {
    return `${this.o.database}.s.${this.group}.${shard}`;
  }

  /** Shards whose leases are held now, ascending. */
  shards(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b);
  }

  /** Whether rows and acknowledgements of `shard` may be committed now. */
  valid(shard: number): boolean {
    const h = this.held.get(shard);
    return !!h && performance.now() < h.validUntil;
  }

  private warnOnce(what: string, err: unknown): void {
    if (this.failedOnce.has(what)) return;
    this.failedOnce.add(what);
    this.o.log.warn({ err: (err as Error).message }, `lease ${what} failed (logged once)`);
  }

  private value(): string {
    return JSON.stringify(this.o.member);
  }

  private async renew(): Promise<void> {
    await this.kv.put(this.memberKey, this.value()).catch((err) => this.warnOnce('membership renewal', err));
    for (const [shard, h] of this.held) {
      const sent = performance.now();
      try {
        h.revision = await this.kv.update(this.shardKey(shard), this.value(), h.revision);
        h.validUntil = sent + this.o.ttlMs / 2;
      } catch (err) {
        if (isJsApiError(err, JetStreamApiCodes.StreamWrongLastSequence)) this.lose(shard, 'taken by another processor');
        else this.warnOnce('renewal', err);
      }
    }
    for (const [shard, h] of this.held) if (performance.now() >= h.validUntil) this.lose(shard, 'not renewed in time');
  }

  private lose(shard: number, reason: string): void {
    const h = this.held.get(shard);
    if (!h) return;
    this.held.delete(shard);
    this.o.log.warn({ shard, revision: h.revision, reason, usableUntil: new Date(Date.now() - performance.now() + h.validUntil).toISOString() }, 'lease lost');
    this.o.drop(shard);
  }

  /** Members running this processor's functions (ids), others, and shard owners, as the bucket holds them now. */
  private async view(): Promise<{ members: string[]; others: LeaseMember[]; owners: Map<number, string> }> {
    const members: string[] = [];
    const others: LeaseMember[] = [];
    const owners = new Map<number, string>();
    const shards = `${this.o.database}.s.${this.group}.`;
    // A key listing whose server restarts under it may never end: cut it off after a ttl,
    // or rebalancing, which waits for it, would stop for good and no lease be taken again.
    const keys = await this.kv.keys(`${this.o.database}.>`);
    let stalled = false;
    const bound = setTimeout(() => {
      stalled = true;
      keys.stop();
    }, this.o.ttlMs);
    try {
      for await (const k of keys) {
        const memberKey = k.startsWith(`${this.o.database}.m.`);
        if (!memberKey && !k.startsWith(shards)) continue;
        const e = await this.kv.get(k);
        if (e?.operation !== 'PUT') continue;
        const m = e.json<LeaseMember>();
        if (!memberKey) owners.set(Number(k.slice(shards.length)), m.id);
        else if (functionGroup(m.functions) === this.group) members.push(m.id);
        else others.push(m);
      }
    } finally {
      clearTimeout(bound);
    }
    if (stalled) throw new NatsStalledError(`listing the keys of ${LEASE_BUCKET}`, this.o.ttlMs);
    if (!members.includes(this.o.member.id)) members.push(this.o.member.id);
    return { members: members.sort(), others, owners };
  }

  private async rebalance(): Promise<void> {
    const { members, owners } = await this.view();
    const n = this.o.shardCount;
    const rank = members.indexOf(this.o.member.id);
    const share = Math.floor(n / members.length) + (rank < n % members.length ? 1 : 0);
    if (this.held.size > share) await this.release(this.shards().slice(share));
    const taken: number[] = [];
    let expired = false;
    for (let shard = 0; shard < n && this.held.size < share && !this.stopped; shard++) {
      if (this.held.has(shard) || owners.has(shard)) continue;
      const got = await this.acquire(shard);
      if (!got) continue;
      taken.push(shard);
      expired ||= got === 'expired';
    }
    if (!taken.length) return;
    // A lease that ran out (rather than being handed back) may belong to an owner whose
    // last insert, issued while its lease was valid, has yet to land: give it half a ttl
    // more before reading what it committed. Renewals go on meanwhile.
    if (expired) await new Promise((r) => setTimeout(r, this.o.ttlMs / 2));
    for (const shard of taken) {
      if (!this.held.has(shard)) continue;
      try {
        await this.o.take(shard);
      } catch (err) {
        this.o.log.error({ shard, err: (err as Error).message }, 'could not start the lanes of a leased shard; handing it back');
        await this.release([shard]);
      }
    }
  }

  /**
   * Create the shard's key: 'handed-back' if its last owner deleted it, 'expired' if there
   * was none (it ran out, or the shard was never leased); null if another member has it.
   */
  private async acquire(shard: number): Promise<'handed-back' | 'expired' | null> {
    const previous = await this.kv.get(this.shardKey(shard));
    if (previous?.operation === 'PUT') return null;
    const sent = performance.now();
    let revision: number;
    try {
      revision = await this.kv.create(this.shardKey(shard), this.value());
    } catch (err) {
      // Another member took it first.
      if (isJsApiError(err, JetStreamApiCodes.StreamWrongLastSequence)) return null;
      throw err;
    }
    this.held.set(shard, { revision, validUntil: sent + this.o.ttlMs / 2 });
    this.o.log.info({ shard, revision }, 'lease acquired');
    return previous ? 'handed-back' : 'expired';
  }

  /** Commit the shards' work, then delete their keys so that others may take them at once. */
  private async release(shards: number[]): Promise<void> {
    if (!shards.length) return;
    await this.o.handBack(shards);
    // A renewal in flight would change the revision the deletion names.
    await this.renewing;
    const gone: [number, Held][] = [];
    for (const shard of shards) {
      const h = this.held.get(shard);
      if (!h) continue;
      this.held.delete(shard);
      gone.push([shard, h]);
      this.o.log.info({ shard, revision: h.revision }, 'lease released');
    }
    for (const [shard, h] of gone) {
      await this.kv.delete(this.shardKey(shard), { previousSeq: h.revision }).catch((err) => this.warnOnce('hand-back', err));
    }
  }

  /** Hand every lease back (SIGTERM) and leave the membership. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.rebalancing;
    // Renewals go on while the hand-back commits.
    await this.release(this.shards()).catch((err) => this.warnOnce('hand-back', err));
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.renewing;
    await this.kv.delete(this.memberKey).catch(() => undefined);
  }
}
