/**
 * The edge's Prometheus metrics: records in, envelopes and bytes out, losses, ring-buffer
 * fill, publish latency, buffered bytes and masked secrets.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class EdgeMetrics {
  readonly registry = new Registry();
  readonly recordsIn = new Counter({ name: 'netrig_edge_records_in_total', help: 'Records drained from the ring buffer', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly recordsOut = new Counter({ name: 'netrig_edge_records_published_total', help: 'Records in envelopes acknowledged by JetStream', registers: [this.registry] });
  readonly envelopesOut = new Counter({ name: 'netrig_edge_envelopes_published_total', help: 'Envelopes acknowledged by JetStream', registers: [this.registry] });
  readonly bytesOut = new Counter({ name: 'netrig_edge_bytes_published_total', help: 'Envelope bytes acknowledged by JetStream', registers: [this.registry] });
  readonly envelopesDropped = new Counter({ name: 'netrig_edge_envelopes_dropped_total', help: 'Envelopes dropped because the buffer was full', registers: [this.registry] });
  readonly publishErrors = new Counter({ name: 'netrig_edge_publish_errors_total', help: 'Failed publish attempts (retried)', registers: [this.registry] });
  readonly lost = new Counter({ name: 'netrig_edge_lost_records_total', help: 'Records lost, per kind and cause', labelNames: ['kind', 'cause'] as const, registers: [this.registry] });
  readonly secretsMasked = new Counter({ name: 'netrig_edge_secrets_masked_total', help: 'Secret HTTP/1 header values masked before publishing, per header; after_gap: lines masked whole after a position gap', labelNames: ['header'] as const, registers: [this.registry] });
  readonly ringFill = new Gauge({ name: 'netrig_edge_ringbuf_fill_ratio', help: 'Share of the ring buffer holding undrained records', registers: [this.registry] });
  readonly bufferedBytes = new Gauge({ name: 'netrig_edge_buffered_bytes', help: 'Envelope bytes waiting for NATS', registers: [this.registry] });
  readonly captureInfo = new Gauge({ name: 'netrig_edge_capture_info', help: 'How this kernel is captured: payload path and active features (value 1)', labelNames: ['path', 'features'] as const, registers: [this.registry] });
  readonly drainCpu = new Counter({
    name: 'netrig_edge_drain_cpu_seconds_total',
    help: 'CPU time of the edge\'s drain loop on its thread: reading the ring, masking, batching, sealing and starting publishes (not acknowledgements)',
    registers: [this.registry],
  });
  readonly publishSeconds = new Histogram({ name: 'netrig_edge_publish_seconds', help: 'Publish latency until the JetStream acknowledgement', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [this.registry] });
}
