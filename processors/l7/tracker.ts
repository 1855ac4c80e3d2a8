/**
 * What an L7 protocol puts on each connection (L7Tracker, opened with TrackerHints), and
 * the part of it every protocol writes the same way (GuardedTracker): input handled inside
 * a guard, completed items handed over after it.
 */
import type { SockDataRecord } from '../../schemas/records.js';
import type { StreamEvent } from './reassembly.js';
import type { Dir, RoleHint } from './sides.js';

/** What a protocol knows when it opens a tracker for a connection. */
export interface TrackerHints {
  role: RoleHint;
  /** Open before capture began: position 0 is not its start. */
  midlife: boolean;
  /** Fed TLS plaintext rather than socket bytes. */
  tls: boolean;
  /** A datagram socket: records are messages, not a byte stream. */
  udp: boolean;
  /** Protocol-specific resume point remembered for this connection (see L7Protocol.resume). */
  resume: number | undefined;
  /** Positions of this connection's committed items the re-read will see again (see ResumeState). */
  known: ReadonlySet<number> | undefined;
  /** Positions per direction known to be between items: where a parked connection stood. */
  boundaries: readonly [number, number] | undefined;
}

/** One protocol's state on one connection. Never throws on input. */
export interface L7Tracker {
  /** In-order stream events of kernel direction `dir` (0 egress, 1 ingress). */
  data(dir: Dir, ev: StreamEvent): void;
  /** One datagram (UDP sockets), when the protocol takes them. */
  datagram?(dir: Dir, rec: SockDataRecord): void;
  /**
   * Node time moved to `nowNs` (record time, never wall-clock, so re-reads give the same
   * items): time out what waited longer than the tracker's timeout.
   */
  expire(nowNs: number): void;
  close(): void;
  /** Nothing in progress: a new owner starting from the next record loses nothing. */
  isIdle(): boolean;
  /** The bytes were recognised as this protocol. */
  readonly recognized: boolean;
  /** Why this protocol stopped on the connection (switched away, not this protocol), or null. */
  readonly stopReason: string | null;
}

/** The counter every guarded tracker keeps. */
export interface GuardStats {
  /** Exceptions caught inside the tracker (bugs): counted, state reset, never thrown. */
  internalErrors: number;
}

/**
 * The guard and the ready queue of a tracker. A subclass handles each input inside `run`
 * and queues what it completes with `deliver`:
 * - the guard: a bug must not stop the processor on hostile bytes, so an exception thrown
 *   inside `run` is counted (`stats.internalErrors`), kept for the logs
 *   (`lastInternalError`) and answered by `recover`, the protocol's own reset;
 * - the queue: items reach `onItem` after the guarded region, so an exception thrown by the
 *   callback is the caller's, never taken for a bug of the tracker (nor resets it).
 * Items are handed over in the order they were delivered.
 */
export abstract class GuardedTracker<X, S extends GuardStats> {
  /** The last exception caught by the guard, for the runtime to log once. */
  lastInternalError: unknown = null;
  private readonly ready: X[] = [];

  /** `stats` may be shared by many trackers to sum their counters. */
  constructor(private readonly onItem: (x: X) => void, readonly stats: S) {}

  /** Queue a completed item; it reaches `onItem` when the current `run` ends. */
  protected deliver(x: X): void {
    this.ready.push(x);
  }

  /** Handle one input: `fn` under the guard, then hand over what it completed. */
  protected run(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.stats.internalErrors++;
      this.lastInternalError = err;
      this.recover();
    }
    while (this.ready.length > 0) this.onItem(this.ready.shift()!);
  }

  /** State after a caught exception may be anything: start afresh, as the protocol allows. */
  protected abstract recover(): void;
}
