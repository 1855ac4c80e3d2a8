/**
 * The traffic as Prometheus metrics on the processor's metrics port, from the rows it
 * commits: requests per endpoint (method and path template, never the raw path) by status,
 * their duration, and TCP retransmits, resets and drops. A counter counts what this process
 * committed since it started, as Prometheus counters do; both roles of an exchange are
 * counted, each under its `role`.
 *
 * Series are bounded: each metric keeps at most `maxSeries` label sets. Past that an
 * observation is counted under the label set whose every value is OVERFLOW, and in
 * netrig_traffic_series_overflow_total, so sums over a metric stay right and the cap shows.
 */
import { Counter, type Registry } from 'prom-client';
import type { Row } from './function.js';

/** Every label value of the series that takes observations past the cap. */
export const OVERFLOW = '_overflow_';
/** Label values longer than this are cut (a Host header can be long). */
const MAX_LABEL_CHARS = 128;
export const DEFAULT_MAX_SERIES = 5000;
/** Upper bounds of the duration histograms' buckets, in seconds (the OTLP exporter's too). */
export const DURATION_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A value as a label: a string, cut to MAX_LABEL_CHARS. */
export const text = (v: unknown): string => {
  const s = String(v ?? '');
  return s.length > MAX_LABEL_CHARS ? s.slice(0, MAX_LABEL_CHARS) : s;
};

/** One label set's tallies: a counter's count, or a histogram's count, sum and per-bucket counts (not cumulative). */
export interface Series {
  labels: Record<string, string>;
  count: number;
  sum: number;
  buckets: Float64Array | null;
}

/**
 * One metric family, tallied per label set in a map keyed by the label values, and exposed
 * through the registry at scrape time. Rows reach it on the commit path, so an observation
 * is one key and one map lookup: prom-client's own counters and histograms hash and validate
 * the label object on every call (2.4 µs per HTTP row for the two families, measured). The
 * OTLP exporter (processors/otlp/metrics.ts) tallies its metrics in families of its own.
 */
export class TrafficFamily {
  private readonly series = new Map<string, Series>();
  private readonly overflowKey: string;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'histogram',
    private readonly labelNames: readonly string[],
    private readonly maxSeries: number,
    private readonly onOverflow: () => void,
  ) {
    this.overflowKey = labelNames.map(() => OVERFLOW).join('\u0000');
  }

  /** Count one observation of `value` (a histogram's; a counter's is 1) under `values`, the label values in labelNames' order. */
  add(values: string[], value = 1): void {
    const key = values.join('\u0000');
    let s = this.series.get(key);
    if (!s) {
      if (this.series.size >= this.maxSeries) {
        // Past the cap, into the overflow set (itself one series more than the cap).
        this.onOverflow();
        s = this.series.get(this.overflowKey) ?? this.create(this.overflowKey, this.labelNames.map(() => OVERFLOW));
      } else {
        s = this.create(key, values);
      }
    }
    s.count++;
    if (s.buckets) {
      s.sum += value;
      const b = s.buckets;
      for (let i = 0; i < DURATION_BUCKETS_S.length; i++) {
        if (value <= DURATION_BUCKETS_S[i]) {
          b[i]++;
          break;
        }
      }
    }
  }

  private create(key: string, values: string[]): Series {
    const labels = Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]]));
    const s: Series = { labels, count: 0, sum: 0, buckets: this.type === 'histogram' ? new Float64Array(DURATION_BUCKETS_S.length) : null };
    this.series.set(key, s);
    return s;
  }

  /** Every label set's tallies. */
  all(): IterableIterator<Series> {
    return this.series.values();
  }

  /** The family as prom-client's registry formats it. */
  get(): { name: string; help: string; type: string; aggregator: 'sum'; values: { metricName?: string; labels: Record<string, string | number>; value: number }[] } {
    const values: { metricName?: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const s of this.series.values()) {
      if (!s.buckets) {
        values.push({ labels: s.labels, value: s.count });
        continue;
      }
      let cumulative = 0;
      for (let i = 0; i < DURATION_BUCKETS_S.length; i++) {
        cumulative += s.buckets[i];
        values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le: DURATION_BUCKETS_S[i] }, value: cumulative });
      }
      values.push({ metricName: `${this.name}_bucket`, labels: { ...s.labels, le: '+Inf' }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values };
  }

  reset(): void {
    this.series.clear();
  }
}

export class TrafficMetrics {
  private readonly requests: TrafficFamily;
  private readonly duration: TrafficFamily;
  private readonly tcpEvents: TrafficFamily;

  constructor(registry: Registry, readonly maxSeries = DEFAULT_MAX_SERIES) {
    const overflow = new Counter({ name: 'netrig_traffic_series_overflow_total', help: 'Observations counted under the _overflow_ label set because the metric had --metrics-max-series label sets already, per metric', labelNames: ['metric'] as const, registers: [registry] });
    const family = (name: string, help: string, type: 'counter' | 'histogram', labelNames: string[]) => {
      const f = new TrafficFamily(name, help, type, labelNames, maxSeries, () => overflow.inc({ metric: name }));
      registry.registerMetric(f as unknown as Counter);
      return f;
    };
    this.requests = family('netrig_http_requests_total', 'HTTP requests and gRPC calls per endpoint (method and path template) and role, by status (0: no response) and gRPC status (-1: not gRPC)', 'counter',
      ['role', 'host', 'method', 'endpoint', 'status', 'grpc_status']);
    this.duration = family('netrig_http_request_duration_seconds', 'First request byte to last response byte of answered HTTP requests and gRPC calls, per endpoint and role', 'histogram',
      ['role', 'host', 'method', 'endpoint']);
    this.tcpEvents = family('netrig_tcp_events_total', 'TCP retransmits, SYN/ACK retransmits, resets sent and received, and packet drops (reason: the kernel\'s drop reason, or the reset reason)', 'counter',
      ['kind', 'reason']);
  }

  /** Count the rows of `table` just committed. */
  observe(table: string, rows: readonly Row[]): void {
    if (table === 'http_requests') for (const r of rows) this.request(r);
    else if (table === 'tcp_events') for (const r of rows) this.tcpEvents.add([text(r.kind), text(r.drop_reason || r.reset_reason)]);
  }

  private request(r: Row): void {
    const role = text(r.role);
    const host = text(r.host);
    const method = text(r.method);
    const endpoint = text(r.path_template);
    this.requests.add([role, host, method, endpoint, String(r.status), String(r.grpc_status)]);
    const latency = Number(r.latency_ns);
    if (latency > 0) this.duration.add([role, host, method, endpoint], latency / 1e9);
  }
}
