/**
 * processors/: NATS JetStream → ClickHouse.
 *
 * Input: envelopes of raw kernel records from the raw stream (schemas/envelope.ts), one
 * durable consumer per shard, for the shards this processor holds leases on
 * (runtime/leases.ts: processors of one database share the shards and take over from
 * each other). Each shard's lane runs every function in one pass (runtime/lane.ts); the
 * L7 protocols share its one connection table (l7/connection-table.ts).
 * Output: rows in ClickHouse (schemas/migrations/): http_requests (http1, http2), dns_queries (dns),
 * tls_handshakes (tls), connections and tcp_events (tcp), capture_losses (losses; and
 * connections the table forgot, `_fn` 'l7'); and on the metrics port the processor's health
 * and the traffic of the rows it commits (runtime/traffic-metrics.ts). Given an OTLP
 * endpoint, also spans and metrics to an OpenTelemetry collector, from lanes of their own
 * (otlp/).
 */
import type { Server } from 'node:http';
import { openClickHouse, type ClickHouse, type ClickHouseTarget } from '../lib/clickhouse.js';
import { intValue } from '../lib/config.js';
import { replicasValue } from '../lib/raw-stream.js';
import { ConfigError } from '../lib/errors.js';
import { logger } from '../lib/logger.js';
import { Heartbeat, instanceId, type ProcessorStatus } from '../lib/heartbeat.js';
import { hostname } from 'node:os';
import { metricsAccess, serveMetrics, type MetricsInput } from '../lib/metrics-server.js';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats, type NatsClientInput } from '../lib/nats.js';
import { identifier } from '../schemas/migrate.js';
import { clickhouseCluster } from '../schemas/cluster-ddl.js';
import { dnsFunction } from './dns/index.js';
import { http1Function } from './http1/index.js';
import { http2Function } from './http2/index.js';
import { lossesFunction } from './losses/index.js';
import type { ProcessingFunction } from './runtime/function.js';
import { ProcessorMetrics } from './runtime/metrics.js';
import { Processor } from './runtime/processor.js';
import { DEFAULT_LEASE_TTL_MS } from './runtime/leases.js';
import { DEFAULT_MAX_SERIES, TrafficMetrics } from './runtime/traffic-metrics.js';
import { DEFAULT_MAX_CONNECTIONS } from './l7/connection-table.js';
import type { RowOptions } from './l7/path-mask.js';
import { tcpFunction } from './tcp/index.js';
import { tlsFunction } from './tls/index.js';
import { OTLP_EXPORTER, startOtlpExporter, type OtlpInput } from './otlp/index.js';

export { Processor, type ProcessorOptions } from './runtime/processor.js';
export { DEFAULT_MAX_CONNECTIONS } from './l7/connection-table.js';
export type { ProcessingFunction, FunctionLane, LaneContext, Row } from './runtime/function.js';

/** Every processing function, by name. */
export const FUNCTIONS: Readonly<Record<string, ProcessingFunction>> = {
  http1: http1Function,
  http2: http2Function,
  dns: dnsFunction,
  tls: tlsFunction,
  tcp: tcpFunction,
  losses: lossesFunction,
};

/** Options as the CLI gives them. */
export interface ProcessInput extends NatsClientInput, MetricsInput, OtlpInput {
  functions?: string;
  shards?: string | number;
  stream?: string;
  subjectPrefix?: string;
  clickhouseUrl?: string;
  clickhouseUser?: string;
  clickhousePassword?: string;
  /** A cluster of the server's remote_servers to spread the tables over (needs clickhouseUrl). */
  clickhouseCluster?: string;
  database?: string;
  dataDir?: string;
  ttlDays?: string | number;
  flushIntervalMs?: string | number;
  metricsPort?: string | number;
  /** Seconds a shard lease lasts without renewal. */
  leaseTtl?: string | number;
  /** Connections tracked at most. */
  maxConnections?: string | number;
  /** Keep query parameter values in `path` (masked by default). */
  keepQueryValues?: boolean;
  /** Replicas of the KV buckets this processor creates (leases, status): 1, 3 or 5. */
  streamReplicas?: string | number;
  /** Label sets each traffic metric keeps at most (processors/runtime/traffic-metrics.ts). */
  metricsMaxSeries?: string | number;
}

/** The functions named in a comma-separated list ("all" or empty: every function). */
export function selectFunctions(list: string | undefined): ProcessingFunction[] {
  if (!list || list === 'all') return Object.values(FUNCTIONS);
  return list.split(',').map((n) => {
    const f = FUNCTIONS[n.trim()];
    if (!f) throw new ConfigError('functions', `unknown function '${n.trim()}'; known: ${Object.keys(FUNCTIONS).join(', ')}`);
    return f;
  });
}

/** What rows keep, from the CLI's flags. */
export function rowOptions(input: ProcessInput): RowOptions {
  return { keepQueryValues: input.keepQueryValues === true };
}

/** Where rows go: a server URL if given (and its cluster), else the embedded engine under the data dir. */
export function clickhouseTarget(input: ProcessInput): ClickHouseTarget {
  const database = identifier('database', input.database ?? 'netrig');
  const cluster = clickhouseCluster(input);
  if (input.clickhouseUrl) {
    return { url: input.clickhouseUrl, user: input.clickhouseUser, password: input.clickhousePassword, database, ...(cluster === undefined ? {} : { cluster }) };
  }
  return { dataDir: input.dataDir ?? './.netrig', database };
}

export interface RunningProcessor {
  processor: Processor;
  ch: ClickHouse;
  /** The processor's NATS connection (its heartbeats, leases and acknowledgements). */
  nc: NatsConnection;
  metricsPort: number;
  stop(): Promise<void>;
}

/** Start a processor with its own NATS connection and ClickHouse client (or the given one). */
export async function runProcessor(input: ProcessInput, shared?: { ch?: ClickHouse }): Promise<RunningProcessor> {
  const log = logger('processor');
  const functions = selectFunctions(input.functions);
  const shardCount = intValue('shards', input.shards ?? 16, 1, 1024);
  const replicas = replicasValue(input.streamReplicas);
  // Metrics first: a port in use is an error before the processor touches NATS or any lane.
  const metrics = new ProcessorMetrics();
  const traffic = new TrafficMetrics(metrics.registry, intValue('metrics-max-series', input.metricsMaxSeries ?? DEFAULT_MAX_SERIES, 1, 1_000_000));
  const m = await serveMetrics(metrics.registry, metricsAccess(input, input.metricsPort ?? 9465));
  log.info({ metricsPort: m.port }, 'processor metrics served');
  const server: Server = m.server;
  let nc: NatsConnection | undefined;
  let ch: ClickHouse | undefined = shared?.ch;
  let processor: Processor | undefined;
  let exporter: Processor | null = null;
  try {
    nc = await connectNats(input, 'netrig-processor', log);
    ch ??= await openClickHouse(clickhouseTarget(input));
    const id = instanceId();
    const common = {
      stream: input.stream ?? 'NETRIG_RAW',
      subjectPrefix: input.subjectPrefix ?? 'netrig.raw',
      flushIntervalMs: intValue('flush-interval-ms', input.flushIntervalMs ?? 500, 10, 60_000),
      ttlDays: intValue('ttl-days', input.ttlDays ?? 30, 1, 3650),
      maxConnections: intValue('max-connections', input.maxConnections ?? DEFAULT_MAX_CONNECTIONS, 1000, 100_000_000),
      connect: () => connectNats(input, 'netrig-processor-lanes', log),
      rowOptions: rowOptions(input),
    };
    const leases = {
      shardCount,
      ttlMs: intValue('lease-ttl', input.leaseTtl ?? DEFAULT_LEASE_TTL_MS / 1000, 1, 300) * 1000,
      replicas,
      member: { id, host: hostname(), pid: process.pid, functions: functions.map((f) => f.name) },
    };
    processor = await Processor.start({
      ...common, nc, ch, functions, log, metrics, leases, maxPendingRows: 200_000,
      onCommitted: (table, rows) => traffic.observe(table, rows),
    });
    // The exporter's lanes are members of their own group (`otlp`) under an id of their own.
    exporter = input.otlpEndpoint === undefined ? null : await startOtlpExporter({
      ...common, input, nc, ch, log, registry: metrics.registry, maxSeries: traffic.maxSeries,
      leases: { ...leases, member: { ...leases.member, id: `${id}-${OTLP_EXPORTER}` } },
    });
    const chRef = ch;
    const running = processor;
    const exporting = exporter;
    const heartbeat = await Heartbeat.start<ProcessorStatus>(nc, 'processor', async () => ({
      database: chRef.database,
      functions: [...functions.map((f) => f.name), ...(exporting ? [OTLP_EXPORTER] : [])],
      lanes: running.shards(),
      lag: await running.metrics.totalLag(),
      last_commit: running.lastCommit?.toISOString() ?? null,
    }), log, { id, replicas });
    const ownCh = !shared?.ch;
    const ncRef = nc;
    return {
      processor: running, ch, nc: ncRef, metricsPort: m.port,
      async stop() {
        await exporting?.stop();
        await running.stop();
        await heartbeat.stop();
        server.close();
        await ncRef.drain().catch(() => undefined);
        if (ownCh) await chRef.close();
      },
    };
  } catch (err) {
    await exporter?.stop().catch(() => undefined);
    await processor?.stop().catch(() => undefined);
    server.close();
    await nc?.close().catch(() => undefined);
    if (ch && !shared?.ch) await ch.close();
    throw err;
  }
}
