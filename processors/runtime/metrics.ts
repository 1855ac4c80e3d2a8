/**
 * The processor's Prometheus metrics: a processor's under `netrig_processor_`, the OTLP
 * exporter's lanes (processors/otlp/) under `netrig_otlp_` in the same registry.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** A metric's values summed over all its label sets. */
export async function metricTotal(m: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await m.get()).values.reduce((n, v) => n + v.value, 0);
}

/** Where a set of metrics registers and how their names begin: set before a subclass's fields are created. */
class MetricScope {
  constructor(readonly registry: Registry, protected readonly prefix: string) {}
}

export class ProcessorMetrics extends MetricScope {
  constructor(registry = new Registry(), prefix = 'netrig_processor') {
    super(registry, prefix);
  }

  readonly messages = new Counter({ name: `${this.prefix}_messages_total`, help: 'Stream messages handled, per function', labelNames: ['fn'] as const, registers: [this.registry] });
  readonly records = new Counter({ name: `${this.prefix}_records_total`, help: 'Records handed to functions, per function', labelNames: ['fn'] as const, registers: [this.registry] });
  readonly rows = new Counter({ name: `${this.prefix}_rows_total`, help: 'Rows committed to ClickHouse, per table', labelNames: ['table'] as const, registers: [this.registry] });
  readonly rowsSuppressed = new Counter({ name: `${this.prefix}_rows_suppressed_total`, help: 'Rows not written again because a previous run committed them', labelNames: ['table'] as const, registers: [this.registry] });
  readonly decodeFailures = new Counter({ name: `${this.prefix}_decode_failures_total`, help: 'Envelopes or records that could not be decoded, per function, kind and failure', labelNames: ['fn', 'kind', 'failure'] as const, registers: [this.registry] });
  readonly messagesRejected = new Counter({ name: `${this.prefix}_messages_rejected_total`, help: 'Stream messages rejected (dead-lettered), once per message, per function and first reason', labelNames: ['fn', 'reason'] as const, registers: [this.registry] });
  readonly deadLetters = new Counter({ name: `${this.prefix}_dead_letters_total`, help: 'Dead letters offered to the dead-letter stream, per reason and outcome (stored; shed: over the storage rate; failed: the publish failed)', labelNames: ['reason', 'outcome'] as const, registers: [this.registry] });
  readonly events = new Counter({ name: `${this.prefix}_function_events_total`, help: 'Events counted by functions (parse errors, resyncs, timeouts...)', labelNames: ['fn', 'event'] as const, registers: [this.registry] });
  readonly insertSeconds = new Histogram({ name: `${this.prefix}_insert_seconds`, help: 'ClickHouse insert latency', labelNames: ['table'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly rowsRefused = new Counter({ name: `${this.prefix}_rows_refused_total`, help: 'Rows ClickHouse refused for their data or the table\'s schema, dead-lettered, per table and ClickHouse error code', labelNames: ['table', 'code'] as const, registers: [this.registry] });
  readonly insertErrors = new Counter({ name: `${this.prefix}_insert_errors_total`, help: 'Failed ClickHouse inserts (retried)', labelNames: ['table'] as const, registers: [this.registry] });
  readonly pendingRows = new Gauge({ name: `${this.prefix}_pending_rows`, help: 'Rows waiting to be inserted', registers: [this.registry] });
  readonly lag = new Gauge({ name: `${this.prefix}_consumer_lag_messages`, help: 'Messages in the stream not yet delivered to a lane', labelNames: ['fn', 'shard'] as const, registers: [this.registry] });
  readonly streamDiscarded = new Counter({ name: `${this.prefix}_stream_discarded_messages_total`, help: 'Stream messages (of every shard) the raw stream discarded between where a shard resumed and its first message, per shard', labelNames: ['shard'] as const, registers: [this.registry] });
  readonly connections = new Gauge({ name: `${this.prefix}_connections`, help: 'Connections the lanes track, by state (active: parsing state held; parked: idle, only where to resume)', labelNames: ['state'] as const, registers: [this.registry] });
  readonly lwmLag = new Gauge({ name: `${this.prefix}_low_water_lag_messages`, help: 'Messages between a lane\'s low-water mark and its newest message', labelNames: ['fn', 'shard'] as const, registers: [this.registry] });

  /** Consumer lag summed over lanes, as last polled. */
  totalLag(): Promise<number> {
    return metricTotal(this.lag);
  }
}
