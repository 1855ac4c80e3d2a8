/**
 * The endpoint's caps, every default in one place: request body sizes, and the limits every
 * statement runs under (a client may ask for lower ones, never higher).
 */
import { intValue } from '../config.js';

export interface EndpointLimits {
  /** A query (the URL's or the body's), bytes. */
  maxQueryBytes: number;
  /** A writer's insert body, bytes, as sent and decompressed. */
  maxInsertBytes: number;
  /** `max_execution_time` of every statement, seconds. */
  maxExecutionSeconds: number;
  /** `max_result_bytes` of a read. */
  maxResultBytes: number;
  /** `max_memory_usage` of every statement, bytes. */
  maxMemoryBytes: number;
  /** Reads running at once (each holds an engine thread while it fetches); more wait. */
  maxConcurrentReads: number;
  /** Inserts and migrations running at once; more wait. */
  maxConcurrentWrites: number;
}

const MiB = 1024 * 1024;

/**
 * Defaults. A processor's insert is one block per table and day of at most its pending rows
 * (200 000, a few hundred bytes each as JSONCompactEachRow): 256 MiB leaves room for that.
 */
export const DEFAULT_LIMITS: EndpointLimits = {
  maxQueryBytes: MiB,
  maxInsertBytes: 256 * MiB,
  maxExecutionSeconds: 120,
  maxResultBytes: 1024 * MiB,
  maxMemoryBytes: 2048 * MiB,
  maxConcurrentReads: 2,
  maxConcurrentWrites: 4,
};

/** The limits in force: the defaults, overridden by what is given (each checked). */
export function endpointLimits(given: Partial<EndpointLimits> = {}): EndpointLimits {
  const l = { ...DEFAULT_LIMITS, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) };
  return {
    maxQueryBytes: intValue('max-query-bytes', l.maxQueryBytes, 1024, 64 * MiB),
    maxInsertBytes: intValue('max-insert-bytes', l.maxInsertBytes, 1024, 4096 * MiB),
    maxExecutionSeconds: intValue('max-execution-seconds', l.maxExecutionSeconds, 1, 86_400),
    maxResultBytes: intValue('max-result-bytes', l.maxResultBytes, 1024, Number.MAX_SAFE_INTEGER),
    maxMemoryBytes: intValue('max-memory-bytes', l.maxMemoryBytes, MiB, Number.MAX_SAFE_INTEGER),
    maxConcurrentReads: intValue('max-concurrent-reads', l.maxConcurrentReads, 1, 64),
    maxConcurrentWrites: intValue('max-concurrent-writes', l.maxConcurrentWrites, 1, 64),
  };
}

/** Settings a request may not raise above the endpoint's limit (0 means none: the limit). */
export function limitSettings(l: EndpointLimits, read: boolean): Record<string, number> {
  return {
    max_execution_time: l.maxExecutionSeconds,
    max_memory_usage: l.maxMemoryBytes,
    ...(read ? { max_result_bytes: l.maxResultBytes } : {}),
  };
}
