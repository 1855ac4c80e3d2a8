/**
 * The raw stream: created by the edge on first use with file storage, retention by age and
 * bytes, and a duplicate window for message-id de-duplication; an existing stream is left as
 * it is. Processors wait for it.
 */
import { JetStreamApiCodes, jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy, type StreamConfig, type StreamInfo } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { bytesValue, durationSeconds, intValue, tokenValue } from './config.js';
import { ConfigError } from './errors.js';
import type { Logger } from './logger.js';
import { isJsApiError } from './nats.js';

export interface StreamSettings {
  /** Stream name, `NETRIG_RAW` by default. */
  name: string;
  /** Subjects are `<prefix>.<region>.<node>.<shard>`. */
  subjectPrefix: string;
  /** Drop envelopes older than this; 0 keeps them forever. */
  maxAgeSeconds: number;
  /** Keep at most this many bytes; -1 for no limit. */
  maxBytes: number;
  /** Window in which a repeated message id is dropped. */
  duplicateWindowSeconds: number;
  replicas: number;
}

const NS_PER_S = 1_000_000_000;

/** The raw stream's settings as the CLI gives them (edge, fanin). */
export interface StreamInput {
  stream?: string;
  subjectPrefix?: string;
  streamMaxAge?: string;
  streamMaxBytes?: string | number;
  duplicateWindow?: string;
  /** Replicas of the raw stream and of netrig's KV buckets: 1, or 3 or 5 on a JetStream cluster. */
  streamReplicas?: string | number;
}

/** Validated stream settings with the defaults, naming the flag of any bad value. */
export function streamSettings(input: StreamInput): StreamSettings {
  return {
    name: tokenValue('stream', input.stream ?? 'NETRIG_RAW'),
    subjectPrefix: input.subjectPrefix ?? 'netrig.raw',
    maxAgeSeconds: durationSeconds('stream-max-age', input.streamMaxAge ?? '24h', 0, 10 * 365 * 86400),
    maxBytes: bytesValue('stream-max-bytes', input.streamMaxBytes ?? '8GiB', 1024 ** 2, 2 ** 50),
    duplicateWindowSeconds: durationSeconds('duplicate-window', input.duplicateWindow ?? '2m', 1, 86400),
    replicas: replicasValue(input.streamReplicas),
  };
}

/** `--stream-replicas`: 1, 3 or 5 (a JetStream cluster keeps an odd number for its quorum). */
export function replicasValue(v: string | number | undefined): number {
  const n = intValue('stream-replicas', v ?? 1, 1, 5);
  if (n % 2 === 0) throw new ConfigError('stream-replicas', `expected 1, 3 or 5, got ${n}`);
  return n;
}

/** Wait until the stream exists (an edge creates it); logs once while waiting. */
export async function waitForStream(nc: NatsConnection, name: string, log: Logger, signal?: AbortSignal): Promise<StreamInfo> {
  const jsm = await jetstreamManager(nc);
  let logged = false;
  for (;;) {
    try {
      return await jsm.streams.info(name);
    } catch (err) {
      if (!isJsApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
    }
    if (signal?.aborted) throw new Error(`stopped while waiting for stream ${name}`);
    if (!logged) {
      logged = true;
      log.info({ stream: name }, 'waiting for the stream: start an edge (netrig edge) to create it');
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Storage, retention, de-duplication and replicas of a raw stream (the edge's, or a hub's). */
export function rawStreamConfig(s: StreamSettings): Partial<StreamConfig> & { name: string } {
  return {
    name: s.name,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: s.maxAgeSeconds * NS_PER_S,
    max_bytes: s.maxBytes,
    duplicate_window: s.duplicateWindowSeconds * NS_PER_S,
    num_replicas: s.replicas,
  };
}

/** Create the stream if it is missing; returns its info either way. */
export async function ensureStream(nc: NatsConnection, s: StreamSettings, log: Logger): Promise<StreamInfo> {
  const jsm = await jetstreamManager(nc);
  try {
    return await jsm.streams.info(s.name);
  } catch (err) {
    if (!isJsApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
  }
  const info = await jsm.streams.add({ ...rawStreamConfig(s), subjects: [`${s.subjectPrefix}.>`] });
  log.info({ stream: s.name, subjects: info.config.subjects }, 'stream created');
  return info;
}
