/**
 * RED metrics per endpoint and TCP event counters, tallied from the rows the exporter's
 * lanes produce and sent as OTLP metrics: cumulative since the exporter started, tallied
 * and capped by the Prometheus metrics' families (processors/runtime/traffic-metrics.ts),
 * under the semantic conventions' names and attributes where they have them:
 * - http.server.request.duration / http.client.request.duration (histograms, s): answered
 *   requests and gRPC calls by method, route (the path template), server address and status;
 * - netrig.http.requests (sum): every request and call by role, including those without a
 *   response (status 0) — the rate and the errors of RED;
 * - dns.lookup.duration (histogram, s): client queries by name and error;
 * - netrig.tcp.events (sum): retransmits, resets and drops by kind and reason.
 */
import type { Attributes, HrTime } from '@opentelemetry/api';
import type { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type MetricData } from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { Row } from '../runtime/function.js';
import { DURATION_BUCKETS_S, text, TrafficFamily, type Series } from '../runtime/traffic-metrics.js';
import { SCOPE, serverAddress } from './spans.js';

/** Metrics as OpenTelemetry's OTLP serializer takes them. */
export type ExportedMetrics = Parameters<typeof ProtobufMetricsSerializer.serializeRequest>[0];

/** Attributes whose values are numbers in the conventions. */
const NUMERIC = new Set(['http.response.status_code']);

const REQUEST_LABELS = ['netrig.role', 'server.address', 'http.request.method', 'http.route', 'http.response.status_code', 'rpc.status_code'];
const DURATION_LABELS = ['http.request.method', 'http.route', 'server.address', 'http.response.status_code'];

function now(): HrTime {
  const ms = Date.now();
  return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
}

export class OtlpMetrics {
  private readonly requests: TrafficFamily;
  private readonly serverDuration: TrafficFamily;
  private readonly clientDuration: TrafficFamily;
  private readonly dnsDuration: TrafficFamily;
  private readonly tcpEvents: TrafficFamily;
  private readonly start = now();
  private readonly resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'netrig' });

  /** `onOverflow`: told of an observation counted under the overflow label set, per metric. */
  constructor(maxSeries: number, onOverflow: (metric: string) => void) {
    const family = (name: string, help: string, type: 'counter' | 'histogram', labels: string[]) =>
      new TrafficFamily(name, help, type, labels, maxSeries, () => onOverflow(name));
    this.requests = family('netrig.http.requests', 'HTTP requests and gRPC calls by role, endpoint and status (0: no response)', 'counter', REQUEST_LABELS);
    this.serverDuration = family('http.server.request.duration', 'Duration of HTTP requests and gRPC calls as their servers handled them', 'histogram', DURATION_LABELS);
    this.clientDuration = family('http.client.request.duration', 'Duration of HTTP requests and gRPC calls as their clients saw them', 'histogram', DURATION_LABELS);
    this.dnsDuration = family('dns.lookup.duration', 'Duration of DNS queries as their clients saw them', 'histogram', ['dns.question.name', 'error.type']);
    this.tcpEvents = family('netrig.tcp.events', 'TCP retransmits, SYN/ACK retransmits, resets sent and received, and packet drops', 'counter', ['netrig.tcp.event', 'netrig.tcp.reason']);
  }

  /** Tally a row of the exporter's lanes. */
  observe(table: string, r: Row): void {
    if (table === 'http_requests') {
      const status = String(r.status);
      const grpc = Number(r.grpc_status);
      const method = text(r.method);
      const route = text(r.path_template);
      const host = text(serverAddress(r));
      this.requests.add([text(r.role), host, method, route, status, grpc >= 0 ? String(grpc) : '']);
      const latency = Number(r.latency_ns);
      if (latency > 0) (r.role === 'server' ? this.serverDuration : this.clientDuration).add([method, route, host, status], latency / 1e9);
    } else if (table === 'dns_queries') {
      if (r.role === 'client') this.dnsDuration.add([text(r.qname), r.timed_out ? 'timeout' : Number(r.rcode) > 0 ? String(r.rcode) : ''], Number(r.latency_ns) / 1e9);
    } else if (table === 'tcp_events') {
      this.tcpEvents.add([text(r.kind), text(r.drop_reason || r.reset_reason)]);
    }
  }

  /** Everything tallied so far, cumulative. */
  collect(): ExportedMetrics {
    const at = now();
    const metrics: MetricData[] = [];
    for (const f of [this.requests, this.serverDuration, this.clientDuration, this.dnsDuration, this.tcpEvents]) {
      const series = [...f.all()];
      if (!series.length) continue;
      if (f.type === 'counter') {
        metrics.push({
          descriptor: { name: f.name, description: f.help, unit: f.name === 'netrig.tcp.events' ? '{event}' : '{request}', valueType: 1 },
          aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.SUM, isMonotonic: true,
          dataPoints: series.map((s) => ({ startTime: this.start, endTime: at, attributes: attributes(s), value: s.count })),
        });
      } else {
        metrics.push({
          descriptor: { name: f.name, description: f.help, unit: 's', valueType: 1 },
          aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.HISTOGRAM,
          dataPoints: series.map((s) => ({
            startTime: this.start, endTime: at, attributes: attributes(s),
            value: { count: s.count, sum: s.sum, buckets: { boundaries: DURATION_BUCKETS_S, counts: [...(s.buckets ?? []), s.count - bucketed(s)] } },
          })),
        });
      }
    }
    return { resource: this.resource, scopeMetrics: metrics.length ? [{ scope: SCOPE, metrics }] : [] };
  }
}

/** Observations within the finite buckets (the rest are above the last bound). */
function bucketed(s: Series): number {
  let n = 0;
  for (const c of s.buckets ?? []) n += c;
  return n;
}

/** A series' labels as attributes: empty values left out, numeric ones as numbers. */
function attributes(s: Series): Attributes {
  const a: Attributes = {};
  for (const [k, v] of Object.entries(s.labels)) {
    if (v === '' || (NUMERIC.has(k) && v === '0')) continue;
    a[k] = NUMERIC.has(k) && /^\d+$/.test(v) ? Number(v) : v;
  }
  return a;
}
