/**
 * The connection tracking every L7 function shares: who owns each connection (CONN_OPEN and
 * CONN_INFO), a reassembler per direction (socket bytes and TLS plaintext kept apart),
 * node-time sweeps (timeouts, late records after close, eviction), rows held until the
 * owner is known, and the pins that tell the runtime which message a new owner must re-read
 * from. A protocol only supplies a tracker per connection and a row per item.
 *
 * Pins, at message granularity: a connection idle before a message and busy after it is
 * pinned there, so a re-read from there sees its unfinished item from the first byte. The
 * message that told a connection's owner stays pinned for CONN_INFO_REFRESH_NS: after that
 * the kernel repeats CONN_INFO before the connection's next data.
 */
import {
  CONN_INFO_REFRESH_NS, ConnFlags, Direction, RecordKind, Role,
  type ConnCloseRecord, type ConnInfoRecord, type DecodedRecord, type FlowTuple, type SockDataRecord,
} from '../../schemas/records.js';
import type { EnvelopeContext, FunctionLane, LaneContext, ProcessingFunction, Row } from '../runtime/function.js';
import { PinSet } from '../runtime/pins.js';
import { connUuid, sides, wallNs } from '../runtime/rows.js';
import { StreamReassembler, type StreamEvent } from './reassembly.js';
import type { RoleHint } from './sides.js';
import type { L7Tracker, TrackerHints } from './tracker.js';
export type { L7Tracker, TrackerHints } from './tracker.js';

/** Who owns a connection, from CONN_OPEN / CONN_INFO. */
export interface ConnMeta {
  tuple: FlowTuple;
  role: number;
  tgid: number;
  comm: string;
  connFlags: number;
}

/** What a resuming lane knows from its committed rows, per resumeKey. */
export interface ResumeState {
  /** Where each connection may resume (its last committed item's point). */
  points: Map<string, number>;
  /**
   * Owners of connections with committed rows: their CONN_INFO may lie before the re-read,
   * and items held for an owner would be emitted at another message than the first time
   * (and so not recognised as committed).
   */
  owners: Map<string, ConnMeta>;
  /** Positions of committed items at or after the message the lane resumes from. */
  known: Map<string, Set<number>>;
}

/** Connection facts a row needs. */
export interface ConnView {
  node: string;
  region: string;
  /** conn_id of its rows. */
  connId: string;
  tls: boolean;
  meta: ConnMeta | null;
}

export interface L7Protocol<X> {
  /** Function name (also the `_fn` of its rows). */
  readonly name: string;
  readonly table: string;
  /** Which byte streams it parses: socket bytes, TLS plaintext. */
  readonly plain: boolean;
  readonly tls: boolean;
  /** Which sockets: TCP streams, UDP datagrams. */
  readonly tcp: boolean;
  readonly udp: boolean;
  /** A connection not recognised within this many bytes or this much node time is let go. */
  readonly giveUpBytes: number;
  readonly giveUpNs: number;
  /** Pin a connection until its first item: it aligns on evidence a new owner must re-read. */
  readonly pinUntilFirstItem: boolean;
  /** The first byte of a connection (position 0) can never start this protocol. */
  rejectsFirstByte?(b: number): boolean;
  /** Only connections this accepts are tracked (e.g. DNS: port 53). */
  accepts?(meta: ConnMeta): boolean;
  /** Counters shared by all trackers of a lane. */
  newStats(): object;
  open(hints: TrackerHints, onItem: (x: X) => void, stats: object): L7Tracker;
  /** The row of an item, or null to write none. */
  row(x: X, c: ConnView, clock: [number, number]): Row | null;
  /**
   * Where a connection may resume after a restart or eviction: `fromItem` gives the point
   * after an item (e.g. where the request stream stood), `load` reads the points of
   * connections whose items are already committed.
   */
  resume?: {
    fromItem(x: X): number | null;
    load(ctx: LaneContext): Promise<ResumeState>;
  };
}

/** Key of a connection's remembered resume point: node, conn_id and tls, as rows carry them. */
export function resumeKey(node: string, connId: string, tls: boolean): string {
  return `${node}|${connId}|${tls ? 1 : 0}`;
}

/** Connections are checked for timeouts at most this often per node. */
const SWEEP_EVERY_NS = 1e9;
/** State of a closed connection is kept this long for records that arrive late. */
const CLOSED_GRACE_NS = 2e9;
/** A pin older than this is released: a crash loses that one item, the stream moves on. */
const MAX_PIN_AGE_NS = 120e9;
/** An item waits this long for its connection's owner before its row goes without. */
const META_WAIT_NS = 15e9;
/** Connections idle this long are forgotten (their resume point is remembered). */
const IDLE_EVICT_NS = 600e9;
/** Resume points remembered for forgotten or resumed connections. */
const MAX_RESUME_POINTS = 1_000_000;
/** Connections kept apart by stream: TLS plaintext under this key suffix. */
const TLS_SUFFIX = '|tls';

interface Conn<X> extends ConnView {
  /** Reassemblers and tracker, from the first data on. */
  dirs: [StreamReassembler, StreamReassembler] | null;
  tracker: L7Tracker | null;
  /** Not this protocol (or switched away): records are ignored. */
  abandoned: boolean;
  firstTsNs: number;
  lastTsNs: number;
  bytesSeen: number;
  /** Pinned sequence (0: none), when it was taken, and whether a stale one was released. */
  pinSeq: number;
  pinTsNs: number;
  pinReleased: boolean;
  /** The message that told the owner, pinned until node time passes metaPinUntilNs. */
  metaPinSeq: number;
  metaPinUntilNs: number;
  itemsSeen: boolean;
  closedAtNs: number;
  resume: number | undefined;
  /** Items waiting for the connection's owner, with the clock they completed under. */
  held: { x: X; clock: [number, number]; since: number }[];
}

function roleHint(role: number): RoleHint {
  return role === Role.Client ? 'client' : role === Role.Server ? 'server' : 'unknown';
}

/** The client and server columns of a row. */
export type RowPeers = ReturnType<typeof sides>;

const NO_PEERS: RowPeers = { client_addr: '::', client_port: 0, server_addr: '::', server_port: 0 };

/**
 * Completes a function's own columns into an L7 row: time, origin, owner, role, and the
 * client and server (from the connection's tuple seen from `role`, unless `peers` names
 * them). Columns are added to `fields` instead of spread into a new object: node 20's V8
 * takes a slow path for `{ ...a, b: 1 }` (about 1 µs per property added after the spread),
 * which was most of the cost of a row.
 */
export function l7Row(fields: Row, c: ConnView, tsNs: number, clock: [number, number], role: 'client' | 'server', peers?: RowPeers): Row {
  const m = c.meta;
  const p = peers ?? (m ? sides(m.tuple, role === 'server' ? Role.Server : Role.Client) : NO_PEERS);
  fields.ts = wallNs(tsNs, clock);
  fields.region = c.region;
  fields.node = c.node;
  fields.conn_id = c.connId;
  fields.pid = m?.tgid ?? 0;
  fields.comm = m?.comm ?? '';
  fields.role = role;
  fields.client_addr = p.client_addr;
  fields.client_port = p.client_port;
  fields.server_addr = p.server_addr;
  fields.server_port = p.server_port;
  return fields;
}

export class StreamLane<X> implements FunctionLane {
  private readonly conns = new Map<string, Conn<X>>();
  private readonly pins = new PinSet();
  private readonly touched = new Set<Conn<X>>();
  private readonly stats: object;
  private readonly lastSweep = new Map<string, number>();
  /** Counters already reported as metrics. */
  private reported = new Map<string, number>();
  private clock: [number, number] = [0, 0];

  constructor(
    private readonly p: L7Protocol<X>,
    private readonly ctx: LaneContext,
    private readonly resumed: ResumeState,
  ) {
    this.stats = p.newStats();
    this.resumePoints = resumed.points;
  }

  private readonly resumePoints: Map<string, number>;

  onRecord(rec: DecodedRecord, env: EnvelopeContext): void {
    this.clock = env.envelope.clock;
    const key = env.connPrefix + rec.connId;
    switch (rec.kind) {
      case RecordKind.ConnInfo:
        this.owner(key, rec as ConnInfoRecord, env);
        break;
      case RecordKind.SockData:
        if (this.p.plain) this.data(this.conn(key, false, rec.connId, env, rec.tsNs), rec as SockDataRecord);
        break;
      case RecordKind.TlsData:
        if (this.p.tls) {
          const t = this.conn(key + TLS_SUFFIX, true, rec.connId, env, rec.tsNs);
          t.meta ??= this.conns.get(key)?.meta ?? null;
          this.data(t, rec as SockDataRecord);
        }
        break;
      case RecordKind.ConnClose:
        for (const c of [this.conns.get(key), this.conns.get(key + TLS_SUFFIX)]) {
          if (c && !c.closedAtNs) this.close(c, (rec as ConnCloseRecord).tsNs);
        }
        break;
    }
  }

  /**
   * CONN_INFO names a socket's owner before its first data (and again after silences). Only
   * captured sockets will have data: the others are not tracked at all.
   */
  private owner(key: string, r: ConnInfoRecord, env: EnvelopeContext): void {
    const proto = r.tuple.protocol;
    if (!(proto === 6 ? this.p.tcp : proto === 17 ? this.p.udp : false) || !(r.connFlags & ConnFlags.Captured)) return;
    const meta: ConnMeta = { tuple: r.tuple, role: r.role, tgid: r.tgid, comm: r.comm, connFlags: r.connFlags };
    if (this.p.accepts && !this.p.accepts(meta)) return;
    const c = this.conns.get(key) ?? (this.p.plain ? this.conn(key, false, r.connId, env, r.tsNs) : undefined);
    for (const x of [c, this.conns.get(key + TLS_SUFFIX)]) {
      if (!x) continue;
      x.meta = meta;
      for (const h of x.held.splice(0)) this.emit(x, h.x, h.clock);
      if (x.metaPinSeq) this.pins.release(x.metaPinSeq);
      x.metaPinSeq = env.seq;
      x.metaPinUntilNs = r.tsNs + CONN_INFO_REFRESH_NS;
      this.pins.add(env.seq);
    }
  }

  private conn(key: string, tls: boolean, cookie: number, env: EnvelopeContext, tsNs: number): Conn<X> {
    let c = this.conns.get(key);
    if (!c) {
      const connId = connUuid(env.envelope.boot, cookie);
      c = {
        node: env.envelope.node, region: env.envelope.region, connId, tls, meta: null,
        dirs: null, tracker: null, abandoned: false,
        firstTsNs: tsNs, lastTsNs: tsNs, bytesSeen: 0, pinSeq: 0, pinTsNs: 0, pinReleased: false,
        metaPinSeq: 0, metaPinUntilNs: 0, itemsSeen: false, closedAtNs: 0,
        resume: this.resumePoints.get(resumeKey(env.envelope.node, connId, tls)), held: [],
      };
      c.meta = this.resumed.owners.get(resumeKey(env.envelope.node, connId, tls)) ?? null;
      this.conns.set(key, c);
    }
    return c;
  }

  private data(c: Conn<X>, rec: SockDataRecord): void {
    if (c.abandoned || c.closedAtNs) return;
    const udp = c.meta?.tuple.protocol === 17;
    if ((udp ? !this.p.udp : !this.p.tcp) || (this.p.accepts && !(c.meta && this.p.accepts(c.meta)))) {
      c.abandoned = true;
      return;
    }
    if (!c.tracker && this.rejectsStart(rec)) {
      // Another protocol's first bytes: nothing is built for it.
      this.abandon(c, 'unrecognised');
      return;
    }
    if (!c.tracker || !c.dirs) {
      c.dirs = [new StreamReassembler(), new StreamReassembler()];
      c.tracker = this.p.open({
        role: roleHint(c.meta?.role ?? Role.Unknown),
        midlife: Boolean(c.meta && c.meta.connFlags & ConnFlags.Midlife),
        tls: c.tls,
        udp,
        resume: c.resume,
        known: this.resumed.known.get(resumeKey(c.node, c.connId, c.tls)),
      }, (x) => this.item(c, x), this.stats);
    }
    const t = c.tracker;
    const dirs = c.dirs;
    const dir = rec.direction === Direction.Egress ? 0 : 1;
    if (udp && t.datagram) {
      t.datagram(dir, rec);
    } else {
      dirs[dir].push(rec, (ev: StreamEvent) => t.data(dir, ev));
      const other = dir === 0 ? 1 : 0;
      dirs[other].expire(rec.tsNs, (ev: StreamEvent) => t.data(other, ev));
    }
    c.lastTsNs = Math.max(c.lastTsNs, rec.tsNs);
    c.bytesSeen += rec.lenBytes;
    if (t.stopReason) {
      this.abandon(c, t.stopReason);
    } else if (!t.recognized && (c.bytesSeen > this.p.giveUpBytes || rec.tsNs - c.firstTsNs > this.p.giveUpNs || this.rejectsStart(rec))) {
      this.abandon(c, 'unrecognised');
    }
    this.touched.add(c);
  }

  /** The connection's first bytes can never start this protocol: let it go at once. */
  private rejectsStart(rec: SockDataRecord): boolean {
    if (!this.p.rejectsFirstByte || rec.posBytes !== 0 || rec.offsetBytes !== 0 || rec.payload.length === 0) return false;
    return this.p.rejectsFirstByte(rec.payload[0]);
  }

  private abandon(c: Conn<X>, why: string): void {
    c.abandoned = true;
    // Nothing more is parsed: only the owner stays (a TLS stream of the socket borrows it).
    c.tracker = null;
    c.dirs = null;
    this.ctx.count(`abandoned_${why}`);
    this.unpin(c);
  }

  private close(c: Conn<X>, tsNs: number): void {
    const t = c.tracker;
    if (t && c.dirs) {
      c.dirs[0].flush((ev) => t.data(0, ev));
      c.dirs[1].flush((ev) => t.data(1, ev));
      t.close();
    }
    c.closedAtNs = tsNs;
    this.touched.add(c);
  }

  /** An item is complete: its row now, or once the connection's owner is known. */
  private item(c: Conn<X>, x: X): void {
    c.itemsSeen = true;
    const point = this.p.resume?.fromItem(x);
    if (point !== null && point !== undefined) c.resume = point;
    if (c.meta) this.emit(c, x, this.clock);
    else c.held.push({ x, clock: this.clock, since: c.lastTsNs });
  }

  private emit(c: Conn<X>, x: X, clock: [number, number]): void {
    const row = this.p.row(x, c, clock);
    if (row) this.ctx.emit(this.p.table, row);
  }

  private unpin(c: Conn<X>): void {
    if (c.pinSeq) this.pins.release(c.pinSeq);
    c.pinSeq = 0;
  }

  /** A connection holds state a new owner could not rebuild from later messages. */
  private busy(c: Conn<X>): boolean {
    if (c.held.length) return true;
    if (c.abandoned || c.closedAtNs || !c.tracker || !c.dirs) return false;
    if (this.p.pinUntilFirstItem && !c.itemsSeen) return true;
    return !c.tracker.isIdle() || c.dirs[0].pendingBytes > 0 || c.dirs[1].pendingBytes > 0;
  }

  onEnvelope(env: EnvelopeContext): void {
    this.clock = env.envelope.clock;
    const node = env.envelope.node;
    const now = env.envelope.mono;
    // Sweeps at fixed steps of node time, so a re-read sweeps at the same messages.
    const step = Math.floor(now / SWEEP_EVERY_NS);
    if (step !== this.lastSweep.get(node)) {
      this.lastSweep.set(node, step);
      this.sweep(node, now);
      this.reportStats();
    }
    this.updatePins(env.seq);
  }

  private updatePins(seq: number): void {
    for (const c of this.touched) {
      if (!this.busy(c)) {
        this.unpin(c);
        c.pinReleased = false;
      } else if (!c.pinSeq && !c.pinReleased) {
        c.pinSeq = seq;
        c.pinTsNs = c.lastTsNs;
        this.pins.add(seq);
      }
    }
    this.touched.clear();
  }

  /** Timeouts, late-record grace, stale pins, owner waits and eviction for one node's connections. */
  private sweep(node: string, now: number): void {
    for (const [key, c] of this.conns) {
      if (c.node !== node) continue;
      const t = c.tracker;
      const dirs = c.dirs;
      if (t && dirs && !c.closedAtNs) {
        dirs[0].expire(now, (ev) => t.data(0, ev));
        dirs[1].expire(now, (ev) => t.data(1, ev));
        t.expire(now);
        if (!t.recognized && now - c.firstTsNs > this.p.giveUpNs) this.abandon(c, 'unrecognised');
      }
      if (c.held.length && now - c.held[0].since > META_WAIT_NS) {
        this.ctx.count('rows_without_owner', c.held.length);
        for (const h of c.held.splice(0)) this.emit(c, h.x, h.clock);
      }
      if (c.metaPinSeq && now > c.metaPinUntilNs) {
        this.pins.release(c.metaPinSeq);
        c.metaPinSeq = 0;
      }
      if (c.pinSeq && now - c.pinTsNs > MAX_PIN_AGE_NS) {
        this.ctx.count('pins_released');
        this.unpin(c);
        c.pinReleased = true;
      }
      const gone = c.closedAtNs ? now - c.closedAtNs > CLOSED_GRACE_NS : now - c.lastTsNs > IDLE_EVICT_NS;
      if (gone && !this.busy(c)) {
        if (!c.closedAtNs && c.resume !== undefined) this.remember(resumeKey(c.node, c.connId, c.tls), c.resume);
        this.unpin(c);
        if (c.metaPinSeq) this.pins.release(c.metaPinSeq);
        this.conns.delete(key);
      } else {
        this.touched.add(c);
      }
    }
  }

  private remember(key: string, point: number): void {
    if (this.resumePoints.size >= MAX_RESUME_POINTS) {
      const oldest = this.resumePoints.keys().next().value;
      if (oldest !== undefined) this.resumePoints.delete(oldest);
    }
    this.resumePoints.set(key, point);
  }

  /** Protocol counters as function event metrics (deltas since the last report). */
  private reportStats(): void {
    const flat = new Map<string, number>();
    for (const [k, v] of Object.entries(this.stats)) {
      if (typeof v === 'number') flat.set(k, v);
      else if (v && typeof v === 'object') for (const [k2, v2] of Object.entries(v)) if (typeof v2 === 'number') flat.set(`${k}_${k2}`, v2);
    }
    for (const [k, v] of flat) {
      const d = v - (this.reported.get(k) ?? 0);
      if (d > 0) this.ctx.count(k, d);
    }
    this.reported = flat;
  }

  lowWaterMark(): number {
    return this.pins.min();
  }
}

/** A processing function for an L7 protocol. */
export function l7Function<X>(p: L7Protocol<X>): ProcessingFunction {
  const kinds: number[] = [RecordKind.ConnInfo, RecordKind.ConnClose];
  if (p.plain) kinds.push(RecordKind.SockData);
  if (p.tls) kinds.push(RecordKind.TlsData);
  return {
    name: p.name,
    kinds,
    tables: [p.table],
    async createLane(ctx) {
      const resumed = p.resume && ctx.resuming ? await p.resume.load(ctx) : { points: new Map(), owners: new Map(), known: new Map() };
      return new StreamLane(p, ctx, resumed);
    },
  };
}
