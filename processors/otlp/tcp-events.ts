/**
 * The recent TCP events (retransmits, resets, drops) of each connection, so that a span can
 * carry those that happened while its exchange was in flight. A connection's events and its
 * exchanges come through the same shard in kernel order, and an exchange's row is completed
 * after the events during it, so an event is kept for as long as an exchange could still
 * cover it: RETAIN_NS of event time, and at most MAX_EVENTS in all (past that the oldest are
 * forgotten, counted).
 */
import type { Row } from '../runtime/function.js';

export interface TcpEvent {
  tsNs: bigint;
  kind: string;
  state: string;
  dropReason: string;
  dropLocation: string;
  resetReason: string;
}

/** Two minutes: longer than the request timeout after which an exchange is written as timed out. */
const RETAIN_NS = 120_000_000_000n;
const MAX_EVENTS = 100_000;

export class RecentTcpEvents {
  private readonly byConn = new Map<string, TcpEvent[]>();
  /** Every kept event's connection, oldest first (events arrive in about time order). */
  private readonly order: { conn: string; tsNs: bigint }[] = [];
  private head = 0;
  private newestNs = 0n;

  /** `onForgotten`: told of events dropped for the cap before their time. */
  constructor(private readonly onForgotten: (n: number) => void) {}

  /** Keep a tcp_events row. */
  add(r: Row): void {
    const conn = String(r.conn_id);
    const e: TcpEvent = {
      tsNs: BigInt(String(r.ts)), kind: String(r.kind), state: String(r.state),
      dropReason: String(r.drop_reason ?? ''), dropLocation: String(r.drop_location ?? ''), resetReason: String(r.reset_reason ?? ''),
    };
    let list = this.byConn.get(conn);
    if (!list) this.byConn.set(conn, (list = []));
    list.push(e);
    this.order.push({ conn, tsNs: e.tsNs });
    if (e.tsNs > this.newestNs) this.newestNs = e.tsNs;
  }

  /** The connection's kept events. */
  of(connId: string): readonly TcpEvent[] {
    return this.byConn.get(connId) ?? [];
  }

  /** Forget events older than RETAIN_NS before the newest, and the oldest past MAX_EVENTS. */
  prune(): void {
    const horizon = this.newestNs - RETAIN_NS;
    let forgotten = 0;
    while (this.head < this.order.length) {
      const o = this.order[this.head];
      const overCap = this.order.length - this.head > MAX_EVENTS;
      if (o.tsNs >= horizon && !overCap) break;
      if (overCap && o.tsNs >= horizon) forgotten++;
      const list = this.byConn.get(o.conn);
      list?.shift();
      if (list && !list.length) this.byConn.delete(o.conn);
      this.head++;
    }
    if (this.head > 4096 && this.head * 2 > this.order.length) {
      this.order.splice(0, this.head);
      this.head = 0;
    }
    if (forgotten) this.onForgotten(forgotten);
  }
}
