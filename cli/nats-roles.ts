/**
 * The NATS roles of `netrig up`'s own server, each with exactly the subjects its part uses:
 *
 * - edge: publishes envelopes on `<prefix>.>`; creates the raw stream if missing (stream
 *   info/create); watches the capture control bucket (reads only: it may not put); beats in
 *   the status bucket under `edge.*` keys.
 * - processor: durable pull consumers on the raw stream (create, info, delete, fetch, ack);
 *   the dead-letter stream (create, update, publish); the lease bucket (read and write); the
 *   status bucket (beats under `processor.*`, reads every entry for the summary).
 * - admin: everything (`netrig configure`, `status`, `replay`, stream management).
 *
 * Each role subscribes under its own inbox prefix only (lib/nats.ts inboxPrefix), so none
 * reads what JetStream delivers to another.
 */
import type { NatsGrants } from '../lib/nats-config.js';
import { inboxPrefix } from '../lib/nats.js';
import { STATUS_BUCKET } from '../lib/heartbeat.js';
import { CONTROL_BUCKET } from '../edge/control.js';
import { DLQ_PREFIX, DLQ_STREAM } from '../processors/runtime/dlq.js';
import { LEASE_BUCKET } from '../processors/runtime/leases.js';

export type NatsRole = 'edge' | 'processor' | 'admin';

const API = '$JS.API';

/** Creating a stream if it is missing, and reading its info. */
const ensure = (stream: string) => [`${API}.STREAM.INFO.${stream}`, `${API}.STREAM.CREATE.${stream}`];
/** Ordered (ephemeral) consumers: KV watch and keys, with their flow control. */
const watch = (stream: string) => [
  `${API}.CONSUMER.CREATE.${stream}`, `${API}.CONSUMER.CREATE.${stream}.>`, `${API}.CONSUMER.INFO.${stream}.*`, `${API}.CONSUMER.DELETE.${stream}.*`, `$JS.FC.${stream}.>`,
];
/** Reading one KV entry (direct get, or the stream message API when direct get is off). */
const get = (stream: string) => [`${API}.DIRECT.GET.${stream}.>`, `${API}.STREAM.MSG.GET.${stream}`];
const kvStream = (bucket: string) => `KV_${bucket}`;

/** What each role may publish and subscribe to, for the raw stream `stream` on `<subjectPrefix>.>`. */
export function natsRoles(o: { stream: string; subjectPrefix: string }): Record<NatsRole, NatsGrants> {
  const control = kvStream(CONTROL_BUCKET);
  const status = kvStream(STATUS_BUCKET);
  const leases = kvStream(LEASE_BUCKET);
  return {
    edge: {
      publish: [
        `${o.subjectPrefix}.>`, `${API}.INFO`, ...ensure(o.stream),
        ...ensure(control), ...watch(control),
        ...ensure(status), `$KV.${STATUS_BUCKET}.edge.>`,
      ],
      subscribe: [`${inboxPrefix('edge')}.>`],
    },
    processor: {
      publish: [
        `${API}.INFO`, `${API}.STREAM.INFO.${o.stream}`,
        `${API}.CONSUMER.CREATE.${o.stream}.>`, `${API}.CONSUMER.DURABLE.CREATE.${o.stream}.*`, `${API}.CONSUMER.INFO.${o.stream}.*`,
        `${API}.CONSUMER.DELETE.${o.stream}.*`, `${API}.CONSUMER.MSG.NEXT.${o.stream}.*`, `$JS.ACK.${o.stream}.>`,
        ...ensure(DLQ_STREAM), `${API}.STREAM.UPDATE.${DLQ_STREAM}`, `${DLQ_PREFIX}.>`,
        ...ensure(leases), ...watch(leases), ...get(leases), `$KV.${LEASE_BUCKET}.>`,
        ...ensure(status), ...watch(status), ...get(status), `$KV.${STATUS_BUCKET}.processor.>`,
      ],
      subscribe: [`${inboxPrefix('processor')}.>`],
    },
    admin: {},
  };
}
