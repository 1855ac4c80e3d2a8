/**
 * Dead letters: stream messages that cannot be decoded, and rows ClickHouse refused, go once
 * to the dead-letter stream (`netrig.dlq.<reason>`) with their origin in headers, so they
 * can be inspected later.
 */
import { createHash } from 'node:crypto';
import { jetstream, jetstreamManager, JetStreamApiCodes, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../lib/logger.js';
import { isJsApiError } from '../../lib/nats.js';

export const DLQ_STREAM = 'NETRIG_DLQ';
export const DLQ_PREFIX = 'netrig.dlq';

/** Dead letters are kept this long at most (and never longer than the raw stream keeps its messages). */
const MAX_AGE_NS = 7 * 86400 * 1e9;

export class DeadLetters {
  private ready: Promise<void> | null = null;
  private readonly sent = new Set<number>();
  private readonly maxAgeNs: number;

  /**
   * `rawMaxAgeNs`: how long the raw stream keeps messages (0: no age limit). A dead letter
   * holds the same captured bytes (headers, bodies, TLS plaintext), so it is kept no longer.
   */
  constructor(private readonly nc: NatsConnection, private readonly log: Logger, rawMaxAgeNs = 0) {
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

  /** Send a message's bytes to the dead-letter stream once per stream sequence. */
  send(reason: string, stream: string, seq: number, subject: string, data: Uint8Array): void {
    if (this.sent.has(seq)) return;
    this.sent.add(seq);
    if (this.sent.size > 10_000) this.sent.clear();
    this.store(reason, data, `${stream}.${seq}`, { 'Netrig-Stream': stream, 'Netrig-Seq': String(seq), 'Netrig-Subject': subject });
  }

  /** Publish a dead letter under `reason` with its origin in headers; a failure is logged, never thrown. */
  private store(reason: string, data: Uint8Array, msgID: string, origin: Record<string, string>): void {
    const h = headers();
    for (const [k, v] of Object.entries(origin)) h.set(k, v);
    h.set('Netrig-Reason', reason);
    this.ensure()
      .then(() => jetstream(this.nc).publish(`${DLQ_PREFIX}.${reason}`, data, { headers: h, msgID }))
      .catch((err: Error) => this.log.warn({ err: err.message, reason, ...origin }, 'dead letter not stored'));
  }
}
