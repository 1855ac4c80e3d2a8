/**
 * Dead letters: stream messages that cannot be decoded go, once, to the dead-letter stream
 * (`netrig.dlq.<reason>`) with their origin in headers, so they can be inspected later.
 */
import { jetstream, jetstreamManager, StorageType, DiscardPolicy } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../lib/logger.js';

export const DLQ_STREAM = 'NETRIG_DLQ';
export const DLQ_PREFIX = 'netrig.dlq';

export class DeadLetters {
  private ready: Promise<void> | null = null;
  private readonly sent = new Set<number>();

  constructor(private readonly nc: NatsConnection, private readonly log: Logger) {}

  private ensure(): Promise<void> {
    this.ready ??= (async () => {
      const jsm = await jetstreamManager(this.nc);
      try {
        await jsm.streams.info(DLQ_STREAM);
      } catch {
        await jsm.streams.add({
          name: DLQ_STREAM, subjects: [`${DLQ_PREFIX}.>`], storage: StorageType.File, discard: DiscardPolicy.Old,
          max_bytes: 256 * 1024 * 1024, max_age: 7 * 86400 * 1e9, duplicate_window: 3600 * 1e9,
        });
      }
    })();
    return this.ready;
  }

  /** Send a message's bytes to the dead-letter stream once per stream sequence. */
  send(reason: string, stream: string, seq: number, subject: string, data: Uint8Array): void {
    if (this.sent.has(seq)) return;
    this.sent.add(seq);
    if (this.sent.size > 10_000) this.sent.clear();
    const h = headers();
    h.set('Netrig-Stream', stream);
    h.set('Netrig-Seq', String(seq));
    h.set('Netrig-Subject', subject);
    h.set('Netrig-Reason', reason);
    this.ensure()
      .then(() => jetstream(this.nc).publish(`${DLQ_PREFIX}.${reason}`, data, { headers: h, msgID: `${stream}.${seq}` }))
      .catch((err: Error) => this.log.warn({ err: err.message, seq, reason }, 'dead letter not stored'));
  }
}
