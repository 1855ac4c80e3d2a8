/**
 * processors/otlp/: the `otlp` function — the raw stream to an OpenTelemetry collector.
 *
 * Input: the envelopes the processors writing ClickHouse read, through lanes of its own
 * (consumers `netrig_<db>_otlp_<shard>`, shard leases under the group `otlp`, shared by
 * every exporter of the database) running the http1, http2, dns and tcp functions, so that
 * a slow or absent collector never holds back the ClickHouse rows, and those never hold
 * back the export. Its lanes acknowledge once the collector has taken their spans.
 * Output: over OTLP/HTTP protobuf (./client.ts), a span per HTTP/gRPC exchange and per DNS
 * query with the TCP events during it (./spans.ts), and RED and TCP metrics (./metrics.ts);
 * the exporter's own counters (`netrig_otlp_*`) on the processor's metrics port.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { intValue } from '../../lib/config.js';
import { ConfigError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import { secretOfFlag } from '../../lib/secret-file.js';
import { dnsFunction } from '../dns/index.js';
import { http1Function } from '../http1/index.js';
import { http2Function } from '../http2/index.js';
import type { LeaseMember } from '../runtime/leases.js';
import { ProcessorMetrics } from '../runtime/metrics.js';
import { Processor, type ProcessorOptions } from '../runtime/processor.js';
import { tcpFunction } from '../tcp/index.js';
import { otlpTarget } from './client.js';
import { OtlpSink } from './sink.js';

/** The exporter's name: of its lanes, consumers and lease group, and in the processor's status. */
export const OTLP_EXPORTER = 'otlp';
/** Rows the exporter's lanes hold at most while the collector is slow (its memory bound). */
const MAX_PENDING_ROWS = 20_000;

/** The exporter's flags as the CLI gives them. */
export interface OtlpInput {
  otlpEndpoint?: string;
  /** `name=value` headers sent with every export. */
  otlpHeader?: string[];
  /** `name=file`: a header whose value is the file's first line (a mounted secret). */
  otlpHeaderFile?: string[];
  /** Seconds between metric exports. */
  otlpMetricsInterval?: string | number;
}

function pair(flag: string, v: string): [string, string] {
  const i = v.indexOf('=');
  if (i <= 0) throw new ConfigError(flag, `'${v}' is not name=value`);
  return [v.slice(0, i).trim(), v.slice(i + 1)];
}

/** The headers of --otlp-header and --otlp-header-file. */
export function otlpHeaders(input: OtlpInput): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const v of input.otlpHeader ?? []) {
    const [name, value] = pair('otlp-header', v);
    headers[name] = value;
  }
  for (const v of input.otlpHeaderFile ?? []) {
    const [name, file] = pair('otlp-header-file', v);
    headers[name] = secretOfFlag('otlp-header-file', file);
  }
  return headers;
}

export interface OtlpExporterOptions extends Pick<ProcessorOptions, 'stream' | 'subjectPrefix' | 'flushIntervalMs' | 'ttlDays' | 'maxConnections' | 'rowOptions' | 'connect'> {
  input: OtlpInput;
  nc: NatsConnection;
  /** The database whose pipeline this exports (its name scopes consumers and leases). */
  ch: ClickHouse;
  log: Logger;
  /** The processor's registry: the exporter's metrics are served beside its own. */
  registry: Registry;
  maxSeries: number;
  leases: { ttlMs: number; shardCount: number; member: LeaseMember; replicas?: number };
}

/** Start the exporter (the caller checked input.otlpEndpoint is given). */
export async function startOtlpExporter(o: OtlpExporterOptions): Promise<Processor> {
  const target = otlpTarget(o.input.otlpEndpoint ?? '', otlpHeaders(o.input));
  const metricsIntervalMs = intValue('otlp-metrics-interval', o.input.otlpMetricsInterval ?? 10, 1, 3600) * 1000;
  const log = o.log.child({ exporter: OTLP_EXPORTER });
  const processor = await Processor.start({
    nc: o.nc, ch: o.ch, log, connect: o.connect,
    functions: [http1Function, http2Function, dnsFunction, tcpFunction],
    exporter: {
      name: OTLP_EXPORTER,
      sink: (abandon) => new OtlpSink({ target, log, registry: o.registry, maxSeries: o.maxSeries, metricsIntervalMs, abandon }),
    },
    metrics: new ProcessorMetrics(o.registry, 'netrig_otlp'),
    leases: { ...o.leases, member: { ...o.leases.member, functions: [OTLP_EXPORTER] } },
    stream: o.stream, subjectPrefix: o.subjectPrefix, flushIntervalMs: o.flushIntervalMs, ttlDays: o.ttlDays,
    maxPendingRows: MAX_PENDING_ROWS, maxConnections: o.maxConnections, rowOptions: o.rowOptions,
  });
  log.info({ endpoint: target.endpoint.origin, headers: Object.keys(target.headers) }, 'exporting spans and metrics over OTLP/HTTP');
  return processor;
}
