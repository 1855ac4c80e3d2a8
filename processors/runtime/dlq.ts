/**
 * Dead letters: stream messages that cannot be decoded, and rows ClickHouse refused, go once
 * to the dead-letter stream (`netrig.dlq.<reason>`) with their origin in headers, so they
 * can be inspected later.
 *
 * Storage is bounded, counting is not: each reason stores at most STORE_PER_S dead letters a
 * second (bursts of STORE_BURST), with at most MAX_IN_FLIGHT publishes awaiting the server;
 * the rest are shed. Every dead letter is counted by reason and outcome (stored, shed,
 * failed), so a flood of bad input costs a counter increment per message, not a JetStream
 * round trip, and a rare reason is still stored while another floods.
 */
import { createHash } from 'node:crypto';
import { jetstream, jetstreamManager, JetStreamApiCodes, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../lib/logger.js';
import { isJsApiError } from '../../lib/nats.js';
import type { ProcessorMetrics } from './metrics.js';

export const DLQ_STREAM = 'NETRIG_DLQ';
export const DLQ_PREFIX = 'netrig.dlq';

/** Dead letters are kept this long at most (and never longer than the raw stream keeps its messages). */
const MAX_AGE_NS = 7 * 86400 * 1e9;
/** Dead letters stored per reason and second, sustained. */
export const STORE_PER_S = 100;
/** Dead letters of one reason stored at once before the rate applies. */
export const STORE_BURST = 1000;
/** Dead-letter publishes awaiting the server's acknowledgement, at most. */
const MAX_IN_FLIGHT = 256;

/** A token bucket: STORE_BURST tokens, refilled at STORE_PER_S. */
interface Bucket {
  tokens: number;
  atMs: number;
}

export class DeadLetters {
  private ready: Promise<void> | null = null;
  private readonly maxAgeNs: number;
  private readonly buckets = new Map<string, Bucket>();
  private inFlight = 0;

  /**
   * `rawMaxAgeNs`: how long the raw stream keeps messages (0: no age limit). A dead letter
   * holds the same captured bytes (headers, bodies, TLS plaintext), so it is kept no longer.
   * `metrics`: where outcomes are counted (netrig_processor_dead_letters_total).
   */
  constructor(private readonly nc: NatsConnection, private readonly log: Logger, rawMaxAgeNs = 0, private readonly metrics?: ProcessorMetrics) {
    this.maxAgeNs = rawMaxAgeNs > 0 ? Math.min(MAX_AGE_NS, rawMaxAgeNs) : MAX_AGE_NS;
  }

  private ensure(): Promise<void> {
    this.ready ??= (async () => {
      const jsm = await jetstreamManager(this.nc);
      try {
        const info = await jsm.streams.info(DLQ_STREAM);
        if (!info.config.max_age || info.config.max_age > this.maxAgeNs) {
          await jsm.streams.update(DLQ_STREAM, { ...info.config, max_age: this.maxAgeNs, duplicate_window: Math.min(info.config.duplicate_window, this.maxAgeNs) });
        }
      } catch (err) {
        if (!isJsApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
        await jsm.streams.add({
          name: DLQ_STREAM, subjects: [`${DLQ_PREFIX}.>`], storage: StorageType.File, discard: DiscardPolicy.Old,
          max_bytes: 256 * 1024 * 1024, max_age: this.maxAgeNs, duplicate_window: Math.min(3600 * 1e9, this.maxAgeNs),
        });
      }
    })();
    return this.ready;
  }

  /**
   * Send a row ClickHouse refused (as JSON, with the table and the engine's error), once per
   * row: `netrig.dlq.row_refused`.
   */
  sendRow(stream: string, table: string, row: Record<string, unknown>, error: string): void {
    const data = Buffer.from(JSON.stringify(row));
    const id = createHash('sha1').update(data).digest('hex');
    this.store('row_refused', data, `${stream}.${table}.${id}`, {
      'Netrig-Stream': stream, 'Netrig-Seq': String(row._seq), 'Netrig-Table': table,
      'Netrig-Error': error.slice(0, 1000).replace(/[\r\n]+/g, ' '),
    });
  }

  /**
   * Send a message's bytes to the dead-letter stream (the caller sends each message once;
   * its message id, by stream sequence, keeps a re-read after a restart from storing it twice).
   */
  send(reason: string, stream: string, seq: number, subject: string, data: Uint8Array): void {
    this.store(reason, data, `${stream}.${seq}`, { 'Netrig-Stream': stream, 'Netrig-Seq': String(seq), 'Netrig-Subject': subject });
  }

  /** May a dead letter of `reason` be stored now: a token of its bucket and room in flight. */
  private admit(reason: string): boolean {
    if (this.inFlight >= MAX_IN_FLIGHT) return false;
    const now = Date.now();
    let b = this.buckets.get(reason);
    if (!b) this.buckets.set(reason, (b = { tokens: STORE_BURST, atMs: now }));
    b.tokens = Math.min(STORE_BURST, b.tokens + (now - b.atMs) * STORE_PER_S / 1000);
    b.atMs = now;
    if (b.tokens < 1) return false;
    b.tokens--;
    return true;
  }

  /**
   * Publish a dead letter under `reason` with its origin in headers, if the rate allows; the
   * outcome is counted, a failure logged, nothing thrown.
   */
  private store(reason: string, data: Uint8Array, msgID: string, origin: Record<string, string>): void {
    if (!this.admit(reason)) {
      this.metrics?.deadLetters.inc({ reason, outcome: 'shed' });
      return;
    }
    const h = headers();
    for (const [k, v] of Object.entries(origin)) h.set(k, v);
    h.set('Netrig-Reason', reason);
    this.inFlight++;
    this.ensure()
      .then(() => jetstream(this.nc).publish(`${DLQ_PREFIX}.${reason}`, data, { headers: h, msgID }))
      .then(() => this.metrics?.deadLetters.inc({ reason, outcome: 'stored' }))
      .catch((err: Error) => {
        this.metrics?.deadLetters.inc({ reason, outcome: 'failed' });
        this.log.warn({ err: err.message, reason, ...origin }, 'dead letter not stored');
      })
      .finally(() => this.inFlight--);
  }
}
