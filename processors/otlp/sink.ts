/**
 * The OTLP exporter's sink: at each flush of its lanes, their rows become spans (HTTP/gRPC
 * exchanges and DNS queries, with the TCP events during each exchange) sent in exports of
 * at most MAX_SPANS_PER_EXPORT, and every metricsIntervalMs the cumulative metrics. A
 * span export is retried with back-off until the collector takes it or the processor's
 * stop deadline passes; only then does the flush resolve and the lanes acknowledge, so the
 * exporter holds at most its lanes' pending rows (the processor stops pulling past them)
 * and a collector that is down or slow delays this exporter only. What the collector
 * refuses for good (a 4xx, or spans it reports rejected) is counted and logged, not
 * retried. A metrics export that fails is not retried: the next carries the same totals.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ProtobufMetricsSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { Counter, type Registry } from 'prom-client';
import { NetrigError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { Lane } from '../runtime/lane.js';
import type { CommitFence, RowSink } from '../runtime/sink.js';
import { OtlpRejectedError, OtlpUnavailableError, postExport, type OtlpSignal, type OtlpTarget } from './client.js';
import { OtlpMetrics } from './metrics.js';
import { exchangeSpan, querySpan, Resources, type ExportedSpan } from './spans.js';
import { RecentTcpEvents } from './tcp-events.js';

const MAX_SPANS_PER_EXPORT = 1000;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 10_000;
const FENCE_POLL_MS = 50;

/** A span and the lane whose row it is (whose lease must hold when it is sent). */
interface LaneSpan {
  lane: Lane;
  span: ExportedSpan;
}

/** A span export given up at the processor's stop deadline: its messages are not acknowledged and are exported again at the next start. */
export class ExportAbandonedError extends NetrigError {
  constructor(options?: ErrorOptions) {
    super('ERR_OTLP_ABANDONED', 'OTLP span export abandoned: the processor\'s stop deadline passed (its messages are exported again at the next start)', options);
  }
}

export interface OtlpSinkOptions {
  target: OtlpTarget;
  log: Logger;
  /** Where the exporter's own counters are registered (the processor's metrics port). */
  registry: Registry;
  /** Label sets each OTLP metric keeps at most. */
  maxSeries: number;
  /** Metrics are exported at most this often. */
  metricsIntervalMs: number;
  /** Aborted at the processor's stop deadline. */
  abandon: AbortSignal;
}

export class OtlpSink implements RowSink {
  private readonly spans: Counter<'outcome'>;
  private readonly exports: Counter<'signal' | 'outcome'>;
  private readonly metrics: OtlpMetrics;
  private readonly tcp: RecentTcpEvents;
  private readonly resources = new Resources();
  private lastMetricsAt = 0;
  /** Signals whose exports are failing now: logged once per outage. */
  private readonly failing = new Set<OtlpSignal>();
  private readonly loggedRejections = new Set<string>();

  constructor(private readonly o: OtlpSinkOptions) {
    const registers = [o.registry];
    this.spans = new Counter({ name: 'netrig_otlp_spans_total', help: 'Spans sent over OTLP, by outcome (exported; rejected: refused by the collector, not retried)', labelNames: ['outcome'] as const, registers });
    this.exports = new Counter({ name: 'netrig_otlp_exports_total', help: 'OTLP export requests, by signal and outcome (ok, retried, rejected, failed: a metrics export not retried)', labelNames: ['signal', 'outcome'] as const, registers });
    const overflow = new Counter({ name: 'netrig_otlp_series_overflow_total', help: 'Observations counted under the _overflow_ attribute set because the OTLP metric had --metrics-max-series sets already, per metric', labelNames: ['metric'] as const, registers });
    const forgotten = new Counter({ name: 'netrig_otlp_tcp_events_forgotten_total', help: 'TCP events forgotten before an exchange could carry them, for the cap on kept events', registers });
    this.metrics = new OtlpMetrics(o.maxSeries, (metric) => overflow.inc({ metric }));
    this.tcp = new RecentTcpEvents((n) => forgotten.inc(n));
  }

  async flush(lanes: readonly Lane[], fence: CommitFence): Promise<number> {
    // Rows of a lane that lost its lease are its next owner's to send and to count.
    const taken = lanes.map((lane) => ({ lane, tables: lane.takeRows() })).filter(({ lane }) => !fence.dropped(lane));
    // Events first: an exchange in this flush carries those of its connection during it.
    for (const { tables } of taken) {
      for (const r of tables.get('tcp_events') ?? []) {
        this.tcp.add(r);
        this.metrics.observe('tcp_events', r);
      }
    }
    const spans: LaneSpan[] = [];
    for (const { lane, tables } of taken) {
      for (const r of tables.get('http_requests') ?? []) {
        this.metrics.observe('http_requests', r);
        spans.push({ lane, span: exchangeSpan(r, this.tcp.of(String(r.conn_id)), this.resources.of(r)) });
      }
      for (const r of tables.get('dns_queries') ?? []) {
        this.metrics.observe('dns_queries', r);
        spans.push({ lane, span: querySpan(r, this.resources.of(r)) });
      }
    }
    this.tcp.prune();
    let sent = 0;
    for (let i = 0; i < spans.length; i += MAX_SPANS_PER_EXPORT) sent += await this.exportSpans(spans.slice(i, i + MAX_SPANS_PER_EXPORT), fence);
    if (Date.now() - this.lastMetricsAt >= this.o.metricsIntervalMs) await this.exportMetrics();
    return sent;
  }

  /**
   * Export spans until the collector takes them (or refuses them for good), returning how
   * many were sent; throws ExportAbandonedError at the stop deadline. Before each attempt
   * the fence is asked, as the ClickHouse sink asks it: spans of a lane that lost its lease
   * are left out (its next owner sends them), and the export waits while a lease is renewed.
   */
  private async exportSpans(batch: LaneSpan[], fence: CommitFence): Promise<number> {
    let backoff = RETRY_MIN_MS;
    for (;;) {
      if (this.o.abandon.aborted) throw new ExportAbandonedError();
      batch = batch.filter((s) => !fence.dropped(s.lane));
      if (!batch.length) return 0;
      if (!batch.every((s) => fence.valid(s.lane))) {
        await this.pause(FENCE_POLL_MS);
        continue;
      }
      const spans = batch.map((s) => s.span);
      const body = ProtobufTraceSerializer.serializeRequest(spans);
      if (!body) throw new NetrigError('ERR_OTLP_SERIALIZE', `OpenTelemetry's serializer produced no body for ${spans.length} spans`);
      try {
        const answer = await postExport(this.o.target, 'traces', body, this.o.abandon);
        this.recovered('traces');
        this.exports.inc({ signal: 'traces', outcome: 'ok' });
        const rejected = Math.min(spans.length, Number(ProtobufTraceSerializer.deserializeResponse(answer).partialSuccess?.rejectedSpans ?? 0));
        if (rejected > 0) this.rejected('traces', `the collector rejected ${rejected} of ${spans.length} spans`);
        this.spans.inc({ outcome: 'rejected' }, rejected);
        this.spans.inc({ outcome: 'exported' }, spans.length - rejected);
        return spans.length;
      } catch (err) {
        if (err instanceof OtlpRejectedError) {
          this.exports.inc({ signal: 'traces', outcome: 'rejected' });
          this.spans.inc({ outcome: 'rejected' }, spans.length);
          this.rejected('traces', err.message);
          return spans.length;
        }
        if (this.o.abandon.aborted) throw new ExportAbandonedError({ cause: err });
        this.exports.inc({ signal: 'traces', outcome: 'retried' });
        this.failed('traces', err as Error);
        await this.pause(err instanceof OtlpUnavailableError && err.retryAfterMs !== undefined ? err.retryAfterMs : backoff);
        backoff = Math.min(backoff * 2, RETRY_MAX_MS);
      }
    }
  }

  /** Export the cumulative metrics once; a failure waits for the next interval. */
  private async exportMetrics(): Promise<void> {
    this.lastMetricsAt = Date.now();
    const collected = this.metrics.collect();
    if (!collected.scopeMetrics.length) return;
    const body = ProtobufMetricsSerializer.serializeRequest(collected);
    if (!body) return;
    try {
      await postExport(this.o.target, 'metrics', body, this.o.abandon);
      this.recovered('metrics');
      this.exports.inc({ signal: 'metrics', outcome: 'ok' });
    } catch (err) {
      if (err instanceof OtlpRejectedError) {
        this.exports.inc({ signal: 'metrics', outcome: 'rejected' });
        this.rejected('metrics', err.message);
      } else {
        this.exports.inc({ signal: 'metrics', outcome: 'failed' });
        this.failed('metrics', err as Error);
      }
    }
  }

  private failed(signal: OtlpSignal, err: Error): void {
    if (this.failing.has(signal)) return;
    this.failing.add(signal);
    this.o.log.warn({ signal, endpoint: this.o.target.endpoint.origin, err: err.message }, 'OTLP export failing; retrying with back-off (logged once until it recovers)');
  }

  private recovered(signal: OtlpSignal): void {
    if (this.failing.delete(signal)) this.o.log.info({ signal }, 'OTLP export recovered');
  }

  private rejected(signal: OtlpSignal, message: string): void {
    const key = `${signal}/${message.slice(0, 80)}`;
    if (this.loggedRejections.has(key)) return;
    if (this.loggedRejections.size < 100) this.loggedRejections.add(key);
    this.o.log.error({ signal, err: message }, 'the OTLP collector refused data: counted in netrig_otlp_spans_total{outcome="rejected"} (logged once per reason)');
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.o.abandon }).catch(() => undefined);
  }
}
