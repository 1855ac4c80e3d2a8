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
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Row } from './function.js';

/** Every label value of the series that takes observations past the cap. */
export const OVERFLOW = '_overflow_';
/** Label values longer than this are cut (a Host header can be long). */
const MAX_LABEL_CHARS = 128;
export const DEFAULT_MAX_SERIES = 5000;

const HTTP_LABELS = ['role', 'host', 'method', 'endpoint', 'status', 'grpc_status'] as const;
const DURATION_LABELS = ['role', 'host', 'method', 'endpoint'] as const;
const TCP_LABELS = ['kind', 'reason'] as const;

type Labels<L extends readonly string[]> = Record<L[number], string>;

const text = (v: unknown): string => {
  const s = String(v ?? '');
  return s.length > MAX_LABEL_CHARS ? s.slice(0, MAX_LABEL_CHARS) : s;
};

/** The label sets a metric has, capped: a new set past the cap becomes the overflow set. */
class SeriesCap<L extends readonly string[]> {
  private readonly seen = new Set<string>();
  private readonly overflowLabels: Labels<L>;

  constructor(private readonly names: L, private readonly max: number, private readonly onOverflow: () => void) {
    this.overflowLabels = Object.fromEntries(names.map((n) => [n, OVERFLOW])) as Labels<L>;
  }

  labels(l: Labels<L>): Labels<L> {
    let key = '';
    for (const n of this.names) key += `${l[n as L[number]]}\u0000`;
    if (this.seen.has(key)) return l;
    if (this.seen.size < this.max) {
      this.seen.add(key);
      return l;
    }
    this.onOverflow();
    return this.overflowLabels;
  }
}

export class TrafficMetrics {
  private readonly overflow: Counter<'metric'>;
  private readonly requests: Counter<(typeof HTTP_LABELS)[number]>;
  private readonly duration: Histogram<(typeof DURATION_LABELS)[number]>;
  private readonly tcpEvents: Counter<(typeof TCP_LABELS)[number]>;
  private readonly requestSeries: SeriesCap<typeof HTTP_LABELS>;
  private readonly durationSeries: SeriesCap<typeof DURATION_LABELS>;
  private readonly tcpSeries: SeriesCap<typeof TCP_LABELS>;

  constructor(registry: Registry, maxSeries = DEFAULT_MAX_SERIES) {
    const registers = [registry];
    this.overflow = new Counter({ name: 'netrig_traffic_series_overflow_total', help: 'Observations counted under the _overflow_ label set because the metric had --metrics-max-series label sets already, per metric', labelNames: ['metric'] as const, registers });
    this.requests = new Counter({ name: 'netrig_http_requests_total', help: 'HTTP requests and gRPC calls per endpoint (method and path template) and role, by status (0: no response) and gRPC status (-1: not gRPC)', labelNames: HTTP_LABELS, registers });
    this.duration = new Histogram({
      name: 'netrig_http_request_duration_seconds', help: 'First request byte to last response byte of answered HTTP requests and gRPC calls, per endpoint and role', labelNames: DURATION_LABELS, registers,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    });
    this.tcpEvents = new Counter({ name: 'netrig_tcp_events_total', help: 'TCP retransmits, SYN/ACK retransmits, resets sent and received, and packet drops (reason: the kernel\'s drop reason, or the reset reason)', labelNames: TCP_LABELS, registers });
    const capped = (metric: string) => () => this.overflow.inc({ metric });
    this.requestSeries = new SeriesCap(HTTP_LABELS, maxSeries, capped('netrig_http_requests_total'));
    this.durationSeries = new SeriesCap(DURATION_LABELS, maxSeries, capped('netrig_http_request_duration_seconds'));
    this.tcpSeries = new SeriesCap(TCP_LABELS, maxSeries, capped('netrig_tcp_events_total'));
  }

  /** Count the rows of `table` just committed. */
  observe(table: string, rows: readonly Row[]): void {
    if (table === 'http_requests') for (const r of rows) this.request(r);
    else if (table === 'tcp_events') for (const r of rows) this.tcpEvents.inc(this.tcpSeries.labels({ kind: text(r.kind), reason: text(r.drop_reason || r.reset_reason) }));
  }

  private request(r: Row): void {
    const role = text(r.role);
    const host = text(r.host);
    const method = text(r.method);
    const endpoint = text(r.path_template);
    this.requests.inc(this.requestSeries.labels({ role, host, method, endpoint, status: String(r.status), grpc_status: String(r.grpc_status) }));
    const latency = Number(r.latency_ns);
    if (latency > 0) this.duration.observe(this.durationSeries.labels({ role, host, method, endpoint }), latency / 1e9);
  }
}
