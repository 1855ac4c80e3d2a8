/**
 * A processor: runs a set of functions over the shards it owns. Each shard's lane runs every
 * function in one pass and reads through one durable pull consumer; rows from all lanes are
 * flushed to ClickHouse together, then each lane acknowledges up to what is committed and
 * below its low-water mark.
 *
 * Processors writing one database share the shards by lease (./leases.ts): a processor
 * opens a shard's lane once it holds the shard's lease, commits and acknowledges only
 * while the lease is valid, and closes them when it hands the lease back or loses it.
 * Without leases (a replay into a database of its own) it reads the shards it is given.
 *
 * When a shard's lane opens, its consumer is recreated at its acknowledgement floor + 1,
 * so the messages the previous owner had handled but not acknowledged come back at once
 * and in order (a plain durable would redeliver them only after ack_wait, behind newer
 * ones); the rows it committed from them are suppressed (./committed.ts).
 *
 * A stop is bounded (stopDeadlineMs): past the deadline every ClickHouse call still running
 * is aborted and nothing it held is acknowledged, so a stop while ClickHouse is away ends,
 * and what was not committed is delivered again at the next start.
 */
import type { RowOptions } from '../l7/path-mask.js';
import {
  AckPolicy, DeliverPolicy, JetStreamApiCodes, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamManager, type JsMsg,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { isJsApiError } from '../../lib/nats.js';
import type { ClickHouse } from '../../lib/clickhouse.js';
import type { Logger } from '../../lib/logger.js';
import { migrate } from '../../schemas/migrate.js';
import { waitForStream } from '../../lib/raw-stream.js';
import { DeadLetters } from './dlq.js';
import type { ProcessingFunction } from './function.js';
import { functionGroup, Lane, laneTables } from './lane.js';
import { ConnectionBudget, DEFAULT_MAX_CONNECTIONS } from '../l7/connection-table.js';
import { ProcessorMetrics } from './metrics.js';
import { readCommitted, resumeSource } from './committed.js';
import { ShardLeases, type LeaseMember } from './leases.js';
import { ClickHouseSink, type CommitFence, type CommittedRows, type RowSink } from './sink.js';

export interface ProcessorOptions {
  nc: NatsConnection;
  ch: ClickHouse;
  functions: ProcessingFunction[];
  /**
   * Own shards by lease, sharing them with the other processors of the database; without
   * it the processor reads `shards` alone.
   */
  leases?: { ttlMs: number; shardCount: number; member: LeaseMember; replicas?: number };
  /** Shards to read without leases. */
  shards?: number[];
  stream: string;
  subjectPrefix: string;
  /** Rows are inserted at least this often. */
  flushIntervalMs: number;
  /** Retention of rows, in days. */
  ttlDays: number;
  /** Lanes stop pulling while this many rows wait for ClickHouse. */
  maxPendingRows: number;
  /**
   * Connections the lanes track together, at most (past it the least recently used are
   * forgotten, counted); DEFAULT_MAX_CONNECTIONS if not given.
   */
  maxConnections?: number;
  log: Logger;
  metrics?: ProcessorMetrics;
  /** Read only part of the stream (netrig replay); all of it, live, by default. */
  window?: StreamWindow;
  /**
   * Opens another connection to the same NATS. Lanes then read through connections of
   * their own, LANES_PER_CONNECTION to each, so that however many lanes run, what a
   * connection can have waiting on the server stays below the server's per-client limit
   * (max_pending, 64 MiB by default), past which the server cuts the client off as a slow
   * consumer. Without it every lane reads through `nc`.
   */
  connect?: () => Promise<NatsConnection>;
  /**
   * How long stop() may wait for ClickHouse (DEFAULT_STOP_DEADLINE_MS if not given): past it
   * inserts and queries still running are abandoned, their envelopes left unacknowledged.
   */
  stopDeadlineMs?: number;
  /** What rows keep (query values in paths); masked by default. */
  rowOptions?: Readonly<RowOptions>;
  /** Told of the rows of each block once committed (the traffic metrics). */
  onCommitted?: CommittedRows;
  /**
   * Send the functions' rows to a sink of the exporter's instead of ClickHouse
   * (processors/otlp/); `abandon`, given to it, is aborted at the stop deadline. The lanes
   * are then named `name`: their consumers and leases are apart from those of the processors
   * writing the database, so neither waits for the other. Nothing is migrated and no
   * committed row is looked up: a lane resumes at its consumer's acknowledgement floor, and
   * what was sent but not acknowledged before a crash is sent again.
   */
  exporter?: { name: string; sink(abandon: AbortSignal): RowSink };
}

/** Ten seconds: a healthy ClickHouse commits a flush well within it. */
export const DEFAULT_STOP_DEADLINE_MS = 10_000;

/** A part of the raw stream: from a time, up to a sequence and time, for some edges. */
export interface StreamWindow {
  fromTime: Date;
  toTime: Date;
  /** The stream's last sequence when the window was opened: nothing after it is read. */
  endSeq: number;
  region?: string;
  node?: string;
}

const ACK_WAIT_NS = 300 * 1e9;
/**
 * Messages one lane's consumer may have requested and not yet received. Envelopes are
 * sealed at 256 KiB, so that is about 2 MiB. (Pulls bounded by bytes instead stall in
 * nats.js once a backlog builds: it stops re-pulling with messages still pending.)
 */
const PULL_MESSAGES = 8;
/** Lanes per NATS connection when the processor may open more: about 32 MiB of pulls each. */
const LANES_PER_CONNECTION = 16;
const MAX_ACK_PENDING = 200_000;
const LAG_POLL_MS = 5000;

/**
 * The ack subject of a message. Lanes keep only this string for messages awaiting their
 * acknowledgement, not the message itself, so payloads are freed as soon as they are handled.
 */
function replySubject(m: JsMsg): string {
  return (m as unknown as { msg: { reply?: string } }).msg.reply ?? '';
}

/**
 * Durable consumer name of a shard's lane, by its functions (functionGroup). The database is
 * part of it: pipelines writing to different databases (a replay, a second deployment) read
 * the stream independently.
 */
export function consumerName(database: string, functions: string, shard: number): string {
  return `netrig_${database}_${functions}_${shard}`;
}

export class Processor {
  readonly metrics: ProcessorMetrics;
  readonly lanes: Lane[] = [];
  /** When rows were last inserted; null before the first insert. */
  lastCommit: Date | null = null;
  private readonly sink: RowSink;
  /** Aborted at the stop deadline: every ClickHouse call still running gives up. */
  private readonly abandon = new AbortController();
  /** Each open lane's consumer and the loop reading it. */
  private readonly reading = new Map<Lane, { it: ConsumerMessages; loop: Promise<void> }>();
  /** Connections opened for lanes (not `nc`), closed at stop. */
  private readonly laneConnections: NatsConnection[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private lagTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private stopping = false;
  private capacityWaiters: (() => void)[] = [];
  private streamId = '';
  private jsm!: JetStreamManager;
  private dlq!: DeadLetters;
  private leases: ShardLeases | null = null;
  private readonly budget: ConnectionBudget;
  /** The functions' group name (functionGroup). */
  private readonly group: string;
  private readonly fence: CommitFence = {
    dropped: (lane) => lane.dropped,
    valid: (lane) => !lane.dropped && (!this.leases || this.leases.valid(lane.shard)),
  };

  private constructor(private readonly o: ProcessorOptions) {
    this.metrics = o.metrics ?? new ProcessorMetrics();
    this.sink = o.exporter?.sink(this.abandon.signal)
      ?? new ClickHouseSink(o.ch, this.metrics, o.log, (table, row, err) => this.dlq.sendRow(this.streamId, table, row, err.message), this.abandon.signal, o.onCommitted);
    this.budget = new ConnectionBudget(o.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
    this.group = o.exporter?.name ?? functionGroup(o.functions.map((f) => f.name));
  }

  /** Apply migrations, then take a share of the shards (or the given ones) and consume. */
  static async start(o: ProcessorOptions): Promise<Processor> {
    const p = new Processor(o);
    try {
      await p.init();
    } catch (err) {
      await p.stop().catch(() => undefined);
      throw err;
    }
    return p;
  }

  private async init(): Promise<void> {
    const { nc, ch, log } = this.o;
    if (!this.o.exporter) await migrate(ch.client, { database: ch.database, ttlDays: this.o.ttlDays, cluster: ch.cluster });
    this.jsm = await jetstreamManager(nc);
    const info = await waitForStream(nc, this.o.stream, log);
    this.streamId = `${info.config.name}@${info.created}`;
    this.dlq = new DeadLetters(nc, log, info.config.max_age, this.metrics);
    this.flushTimer = setInterval(() => void this.flush(), this.o.flushIntervalMs);
    this.lagTimer = setInterval(() => void this.pollLag(), LAG_POLL_MS);
    const l = this.o.leases;
    if (l) {
      this.leases = await ShardLeases.start({
        nc, database: ch.database, shardCount: l.shardCount, member: l.member, ttlMs: l.ttlMs, replicas: l.replicas ?? 1, log,
        take: (shard) => this.openShard(shard),
        handBack: (shards) => this.closeShards(shards, true),
        drop: (shard) => void this.closeShards([shard], false),
      });
    } else {
      for (const shard of this.o.shards ?? []) await this.openShard(shard);
    }
    log.info({ stream: this.streamId, functions: this.o.functions.map((f) => f.name), shards: this.shards() }, 'processor started');
  }

  /** Shards whose lanes this processor runs, ascending. */
  shards(): number[] {
    return [...new Set(this.lanes.map((l) => l.shard))].sort((a, b) => a - b);
  }

  /** Open a shard's lane, resuming where the shard's last owner left it. */
  private async openShard(shard: number): Promise<void> {
    const committed = this.o.exporter ? new Map() : await readCommitted(this.o.ch, laneTables(this.o.functions), this.streamId, shard, this.abandon.signal);
    const firstSeq = (await this.jsm.streams.info(this.o.stream)).state.first_seq;
    const resumeFrom = await this.consumerStart(consumerName(this.o.ch.database, this.group, shard));
    const lane = await Lane.create({
      functions: this.o.functions, name: this.group, shard, streamId: this.streamId, committed, budget: this.budget, metrics: this.metrics, dlq: this.dlq, resumeFrom,
      log: this.o.log.child({ shard }), query: (sql, params) => this.query(sql, params), rowOptions: this.o.rowOptions,
    });
    this.lanes.push(lane);
    await this.openConsumer(lane, await this.laneConnection(shard));
    const discarded = resumeFrom > 1 ? firstSeq - resumeFrom : 0;
    if (discarded > 0) {
      // Unread messages aged or sized out of the stream while no lane of the shard ran.
      this.metrics.streamDiscarded.inc({ shard: String(shard) }, discarded);
      this.o.log.warn({ shard, messages: discarded, firstSeq }, 'the raw stream discarded messages this shard had not read (its age or size limit)');
    }
  }

  /**
   * Close the lanes of `shards`: stop their consumers and, when `commit`, insert their rows
   * and acknowledge (a hand-back); otherwise their rows and acknowledgements are dropped
   * (a lost lease: the next owner re-reads what they covered).
   */
  private async closeShards(shards: number[], commit: boolean): Promise<void> {
    const closing = this.lanes.filter((l) => shards.includes(l.shard));
    for (const lane of closing) {
      if (!commit) lane.dropped = true;
      this.reading.get(lane)?.it.stop();
    }
    for (const w of this.capacityWaiters.splice(0)) w();
    await Promise.allSettled(closing.map((l) => this.reading.get(l)?.loop));
    if (commit) {
      await this.flush();
      // The acknowledgements reach the server before the lease is handed back.
      await this.o.nc.flush().catch(() => undefined);
    }
    for (const lane of closing) {
      lane.dropped = true;
      lane.close();
      this.reading.delete(lane);
      this.lanes.splice(this.lanes.indexOf(lane), 1);
      const labels = { fn: lane.name, shard: String(lane.shard) };
      this.metrics.lag.remove(labels);
      this.metrics.lwmLag.remove(labels);
    }
  }

  /** A lane's query of what was committed: `{db}.table` read where a resuming processor reads it (resumeSource). */
  private async query<T>(sql: string, params?: Record<string, unknown>): Promise<T[]> {
    const query = sql.replace(/\{db\}\.([A-Za-z_][A-Za-z0-9_]*)/g, (_, table: string) => resumeSource(this.o.ch, table)).replaceAll('{db}', this.o.ch.database);
    const rs = await this.o.ch.client.query({ query, query_params: params, format: 'JSONEachRow', abort_signal: this.abandon.signal });
    return rs.json<T>();
  }

  /**
   * Where a lane's consumer resumes: its acknowledgement floor + 1, 1 for a new lane. A
   * consumer created at a start sequence reports an ack floor of 0 until its first
   * acknowledgement (nats-server 2.9), so never below the sequence it was created at.
   */
  private async consumerStart(name: string): Promise<number> {
    try {
      const ci = await this.jsm.consumers.info(this.o.stream, name);
      const created = ci.config.deliver_policy === DeliverPolicy.StartSequence ? ci.config.opt_start_seq ?? 1 : 1;
      return Math.max(ci.ack_floor.stream_seq + 1, created);
    } catch (err) {
      if (!isJsApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
      return 1;
    }
  }

  /** The connection the i-th lane reads through. */
  private async laneConnection(i: number): Promise<NatsConnection> {
    if (!this.o.connect) return this.o.nc;
    const k = Math.floor(i / LANES_PER_CONNECTION);
    while (this.laneConnections.length <= k) this.laneConnections.push(await this.o.connect());
    return this.laneConnections[k];
  }

  private async openConsumer(lane: Lane, nc: NatsConnection): Promise<void> {
    const name = consumerName(this.o.ch.database, lane.name, lane.shard);
    const start = lane.resumeFrom;
    const jsm = this.jsm;
    try {
      await jsm.consumers.delete(this.o.stream, name);
    } catch (err) {
      if (!isJsApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
    }
    const w = this.o.window;
    const from = start > 1
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start }
      : w ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: w.fromTime.toISOString() } : { deliver_policy: DeliverPolicy.All };
    await jsm.consumers.add(this.o.stream, {
      durable_name: name,
      filter_subject: `${this.o.subjectPrefix}.${w?.region ?? '*'}.${w?.node ?? '*'}.${lane.shard}`,
      ack_policy: AckPolicy.All,
      ...from,
      ack_wait: ACK_WAIT_NS,
      max_ack_pending: MAX_ACK_PENDING,
      max_deliver: -1,
    });
    const consumer = await jetstream(nc).consumers.get(this.o.stream, name);
    const it = await consumer.consume({ max_messages: PULL_MESSAGES });
    this.reading.set(lane, { it, loop: this.consumeLoop(lane, it) });
  }

  private async consumeLoop(lane: Lane, it: ConsumerMessages): Promise<void> {
    const w = this.o.window;
    const toNs = w ? BigInt(w.toTime.getTime()) * 1_000_000n : 0n;
    for await (const m of it) {
      if (this.stopping || lane.dropped) break;
      if (w && (m.seq > w.endSeq || m.info.timestampNanos > toNs)) {
        lane.windowDone = true;
        continue;
      }
      lane.handle({ seq: m.seq, subject: m.subject, data: m.data, reply: replySubject(m) });
      if (this.pendingRows() >= this.o.maxPendingRows) {
        void this.flush();
        await new Promise<void>((r) => this.capacityWaiters.push(r));
      }
    }
  }

  private pendingRows(): number {
    let n = 0;
    for (const l of this.lanes) n += l.pendingRows;
    return n;
  }

  /** Insert pending rows, then acknowledge what they and the low-water marks allow. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      // Rows an abandoned insert took are gone from the lanes, not committed: acknowledging
      // what was handled would skip them, so after the stop deadline nothing is.
      if (this.abandon.signal.aborted) return;
      // What may be acknowledged is fixed now, together with the rows this insert takes: a
      // pin released while the insert runs belongs to a row that is not in it.
      const handled = new Map(this.lanes.map((l) => [l, l.ackLimit()]));
      this.metrics.pendingRows.set(this.pendingRows());
      try {
        if (await this.sink.flush([...handled.keys()], this.fence)) this.lastCommit = new Date();
      } catch (err) {
        this.o.log.error({ err: (err as Error).message }, 'flush abandoned');
        return;
      }
      for (const [lane, limit] of handled) {
        if (!this.fence.valid(lane)) continue;
        const reply = lane.takeAck(limit);
        if (reply) this.o.nc.publish(reply, '+ACK');
      }
      for (const w of this.capacityWaiters.splice(0)) w();
    });
    return this.flushing;
  }

  private async pollLag(): Promise<void> {
    const conns = { tracked: 0, parked: 0 };
    for (const lane of this.lanes) {
      const c = lane.connections();
      conns.tracked += c.tracked;
      conns.parked += c.parked;
    }
    this.metrics.connections.set({ state: 'active' }, conns.tracked - conns.parked);
    this.metrics.connections.set({ state: 'parked' }, conns.parked);
    for (const lane of [...this.lanes]) {
      const labels = { fn: lane.name, shard: String(lane.shard) };
      this.metrics.lwmLag.set(labels, lane.lowWaterLag());
      try {
        const ci = await this.jsm.consumers.info(this.o.stream, consumerName(this.o.ch.database, lane.name, lane.shard));
        if (!lane.dropped) this.metrics.lag.set(labels, ci.num_pending);
      } catch {
        // Lag is informational; the consume loop reports real failures.
      }
    }
  }

  /**
   * With a window: resolves once every lane has read to its end (a message past the window,
   * or nothing left to deliver) and the rows are committed.
   */
  async windowDone(pollMs = 250): Promise<void> {
    const jsm = await jetstreamManager(this.o.nc);
    for (;;) {
      let open = 0;
      for (const lane of this.lanes) {
        if (lane.windowDone) continue;
        const ci = await jsm.consumers.info(this.o.stream, consumerName(this.o.ch.database, lane.name, lane.shard));
        if (ci.num_pending === 0 && ci.num_ack_pending === 0 || ci.num_pending === 0 && ci.delivered.stream_seq <= lane.processedSeq) lane.windowDone = true;
        else open++;
      }
      if (!open) break;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    await this.flush();
  }

  /** Remove the consumers of the shards given without leases (a replay's are of no further use). */
  async deleteConsumers(): Promise<void> {
    const jsm = await jetstreamManager(this.o.nc);
    for (const shard of this.o.shards ?? []) await jsm.consumers.delete(this.o.stream, consumerName(this.o.ch.database, this.group, shard)).catch(() => undefined);
  }

  /** Consumer lag summed over lanes (messages not yet delivered). */
  async lag(): Promise<number> {
    const jsm = await jetstreamManager(this.o.nc);
    let n = 0;
    for (const lane of this.lanes) n += (await jsm.consumers.info(this.o.stream, consumerName(this.o.ch.database, lane.name, lane.shard))).num_pending;
    return n;
  }

  /**
   * Stop consuming, commit what was handled, acknowledge, hand the leases back, and stop;
   * past the stop deadline what is not committed yet is abandoned unacknowledged.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const deadlineMs = this.o.stopDeadlineMs ?? DEFAULT_STOP_DEADLINE_MS;
    const deadline = setTimeout(() => {
      this.o.log.warn({ deadlineMs }, 'stop deadline passed: ClickHouse calls abandoned; what they held is not acknowledged and is read again at the next start');
      this.abandon.abort();
    }, deadlineMs);
    try {
      if (this.flushTimer) clearInterval(this.flushTimer);
      if (this.lagTimer) clearInterval(this.lagTimer);
      if (this.leases) await this.leases.stop();
      else await this.closeShards(this.shards(), true);
      await Promise.allSettled(this.laneConnections.map((c) => c.drain()));
    } finally {
      clearTimeout(deadline);
    }
    this.o.log.info('processor stopped');
  }
}
