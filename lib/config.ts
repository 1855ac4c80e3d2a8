/**
 * Validation helpers for configuration values: each error names the key and what is
 * allowed, so a user can fix the flag at once.
 */
import { ConfigError } from './errors.js';

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };
const DURATION_UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/** An integer in [min, max]. */
export function intValue(key: string, v: unknown, min: number, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(key, `expected a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** A byte size such as 4096, "64KiB", "32MiB" or "2GiB", in [min, max]. */
export function bytesValue(key: string, v: unknown, min: number, max: number): number {
  if (typeof v === 'number') return intValue(key, v, min, max);
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(String(v));
  const unit = m ? BYTE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new ConfigError(key, `expected a size such as 65536, 64KiB or 32MiB, got ${JSON.stringify(v)}`);
  return intValue(key, Number(m[1]) * unit, min, max);
}

/** A duration such as "500ms", "30s", "24h" or "7d", returned in seconds, in [min, max]. */
export function durationSeconds(key: string, v: unknown, min: number, max: number): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(String(v));
  if (!m) throw new ConfigError(key, `expected a duration such as 500ms, 30s, 24h or 7d, got ${JSON.stringify(v)}`);
  const s = Number(m[1]) * DURATION_UNITS[m[2] ?? 's'];
  if (s < min || s > max) throw new ConfigError(key, `expected a duration from ${min}s to ${max}s, got ${JSON.stringify(v)}`);
  return s;
}

/** A NATS subject token (no dots, wildcards or spaces). */
export function tokenValue(key: string, v: unknown): string {
  const s = String(v ?? '');
  if (!/^[A-Za-z0-9_-]+$/.test(s)) throw new ConfigError(key, `expected letters, digits, '-' or '_' (it becomes a NATS subject token), got ${JSON.stringify(v)}`);
  return s;
}

/** A comma-separated list of integers, each in [min, max]. */
export function intList(key: string, v: unknown, min: number, max: number): number[] {
  if (v === undefined || v === null || v === '') return [];
  const parts = Array.isArray(v) ? v : String(v).split(',');
  return parts.map((p) => intValue(key, String(p).trim(), min, max));
}

/** A power of two in [min, max]. */
export function powerOfTwo(key: string, n: number, min: number, max: number): number {
  if (n < min || n > max || (n & (n - 1)) !== 0) throw new ConfigError(key, `expected a power of two from ${min} to ${max}, got ${n}`);
  return n;
}

/** One of a fixed set of words. */
export function choiceValue<T extends string>(key: string, v: unknown, allowed: readonly T[]): T {
  if (allowed.includes(v as T)) return v as T;
  throw new ConfigError(key, `expected one of ${allowed.join(', ')}, got ${String(v)}`);
}
