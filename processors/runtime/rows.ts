/**
 * Helpers every function uses to build rows: kernel time to wall-clock time, connection
 * ids, and client/server sides of a tuple.
 */
import type { Envelope } from '../../schemas/envelope.js';
import { Role, type FlowTuple } from '../../schemas/records.js';

const NS = 1_000_000_000;

/**
 * Wall-clock time of a kernel CLOCK_MONOTONIC timestamp, using the envelope's offset, as
 * nanoseconds since the epoch in a decimal string (what DateTime64(9) takes as input).
 * Exact integer arithmetic: no float rounding of nanoseconds.
 */
export function wallNs(monoNs: number, clock: Envelope['clock']): string {
  const monoS = Math.floor(monoNs / NS);
  let s = clock[0] + monoS;
  let ns = clock[1] + (monoNs - monoS * NS);
  if (ns >= NS) {
    s += 1;
    ns -= NS;
  }
  return `${s}${String(ns).padStart(9, '0')}`;
}

/**
 * Connection id: a UUID of the node's boot id (first 8 bytes) and the socket cookie, unique
 * per node across reboots and never reused within a boot.
 */
export function connUuid(bootId: string, cookie: number): string {
  const b = bootId.replaceAll('-', '').padEnd(16, '0');
  const c = cookie.toString(16).padStart(16, '0');
  const id = `${b.slice(0, 8)}-${b.slice(8, 12)}-${b.slice(12, 16)}-${c.slice(0, 4)}-${c.slice(4, 16)}`;
  // Flattened: the concatenation is a tree of a dozen string pieces, and connection tables
  // keep one id per connection for its lifetime (about 400 bytes each before, 56 after).
  id.charCodeAt(0);
  return id;
}

export function roleName(role: number): 'client' | 'server' | 'unknown' {
  return role === Role.Client ? 'client' : role === Role.Server ? 'server' : 'unknown';
}

/** Client and server address of a socket tuple (local side first) given the socket's role. */
export function sides(t: FlowTuple, role: number): { client_addr: string; client_port: number; server_addr: string; server_port: number } {
  return role === Role.Server
    ? { client_addr: t.daddr, client_port: t.dport, server_addr: t.saddr, server_port: t.sport }
    : { client_addr: t.saddr, client_port: t.sport, server_addr: t.daddr, server_port: t.dport };
}
