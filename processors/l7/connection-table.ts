/**
 * The one connection table of a shard's lane, shared by every L7 protocol it runs: who owns
 * each connection (CONN_INFO), a reassembler per direction (socket bytes and TLS plaintext
 * kept apart), the protocols still reading it, its retransmits and drops (./harm.ts: the rows
 * of its exchanges carry those while they were in flight), node-time sweeps (timeouts, late
 * records after close, idle eviction), rows held until the owner is known, and the pins that
 * tell the runtime which message a new owner must re-read from. A protocol (./protocol.ts) only
 * supplies a tracker per connection and a row per item.
 *
 * Every protocol that may speak on a connection (its transport, its stream, its port rules,
 * its first byte) gets a tracker at the first data; a protocol lets go once its tracker
 * stops or does not recognise the bytes in time, and the connection's reassembly goes with
 * the last one.
 *
 * Connections idle for a while (PARK_IDLE_NS; at once past MAX_UNPARKED) are parked: when
 * every protocol still reading one can rebuild its tracker from a resume point
 * (L7Protocol.resume) and stands exactly there, between items, the trackers and reassemblers
 * are dropped and only the points and stream positions are kept; the next data builds them
 * again from there, as a processor resuming after a restart would. Most connections of a
 * busy node are idle keep-alive connections, and a parked one costs a few hundred bytes
 * instead of a few kilobytes of parser state.
 *
 * Pins, at message granularity: a connection idle before a message and busy after it is
 * pinned there, so a re-read from there sees its unfinished item from the first byte. The
 * message that told a connection's owner stays pinned for CONN_INFO_REFRESH_NS: after that
 * the kernel repeats CONN_INFO before the connection's next data.
 *
 * The table is bounded: past the processor's connection budget the least recently used
 * connection is forgotten, counted in capture_losses (cause `conn_table_full`, one row per
 * message that forgot any, with the number of connections). The table's insertion order is
 * its recency order: a connection that gets a record moves to the back unless it is already
 * in the newer half, so most records cost no move and the one forgotten was idle for at
 * least half the table's turnover.
 */
import {
  CONN_INFO_REFRESH_NS, ConnFlags, Direction, RecordKind, Role,
  type ConnCloseRecord, type ConnInfoRecord, type DecodedRecord, type SockDataRecord,
} from '../../schemas/records.js';
import { keepHarm, type Harm } from './harm.js';
import { DEFAULT_ROW_OPTIONS, type RowOptions } from './path-mask.js';
import type { EnvelopeContext, FunctionLane, LaneContext } from '../runtime/function.js';
import { PinSet } from '../runtime/pins.js';
import { connUuid, wallNs } from '../runtime/rows.js';
import { resumeKey, type ConnMeta, type ConnView, type L7Protocol, type ResumeState } from './protocol.js';
import type { L7Tracker } from './tracker.js';
import { StreamReassembler, type ReassemblyStats, type StreamEvent } from './reassembly.js';
import type { RoleHint } from './sides.js';

/** Connections are checked for timeouts at most this often per node. */
const SWEEP_EVERY_NS = 1e9;
/** State of a closed connection is kept this long for records that arrive late. */
const CLOSED_GRACE_NS = 2e9;
/** A pin older than this is released: a crash loses that one item, the stream moves on. */
const MAX_PIN_AGE_NS = 120e9;
/**
 * A pin further back than this many stream messages is released (counted as pins_released)
 * whatever the node clocks say: a node that stops sending (its edge gone) or an envelope
 * whose node time is forged ahead never moves its own time on, and its pins would hold the
 * shard's acknowledgements until the consumer's ack window (200,000) stalls the shard. By
 * sequence, so a re-read releases at the same messages.
 */
export const MAX_PIN_SPAN = 100_000;
/** How often (in stream messages) pins are checked against MAX_PIN_SPAN. */
const PIN_SPAN_CHECK_EVERY = 4096;
/** An item waits this long for its connection's owner before its row goes without. */
const META_WAIT_NS = 15e9;
/**
 * A connection idle between items this long (node time) is parked at the next sweep. Not at
 * once: a keep-alive connection in use would otherwise build its trackers, reassemblers and
 * parsers again for every exchange (about 1.7 KiB of garbage and a third of the lanes' time
 * in the processor benchmark), and the ones that make up most of a busy node's table are
 * idle for far longer.
 */
const PARK_IDLE_NS = 2e9;
/**
 * Past this many connections in a table that are not parked, an idle one is parked at once
 * after its exchange, as before PARK_IDLE_NS: a burst of new connections would otherwise
 * hold their parsers for two seconds each (100k sockets: over 400 MiB of heap at the peak).
 */
export const MAX_UNPARKED = 1024;
/** Connections idle this long are forgotten (their resume points are remembered). */
const IDLE_EVICT_NS = 600e9;
/** Resume points remembered per protocol for forgotten or resumed connections. */
const MAX_RESUME_POINTS = 1_000_000;
/** Connections kept apart by stream: TLS plaintext under this key suffix. */
const TLS_SUFFIX = '|tls';
/** The capture_losses cause of connections forgotten to stay within the budget. */
export const CONN_TABLE_FULL = 'conn_table_full';

/**
 * Connections a processor tracks by default: about 1 GiB of memory at the 4 KiB a tracked
 * socket may take (README, memory benchmark).
 */
export const DEFAULT_MAX_CONNECTIONS = 262_144;

/** How many connections the lanes of one processor may track together. */
export class ConnectionBudget {
  used = 0;
  constructor(readonly max: number) {}
}

/** One protocol of the table, with the context of its function and what it resumes from. */
export interface TableMember {
  p: L7Protocol<unknown>;
  ctx: LaneContext;
  resumed: ResumeState;
}

interface HeldItem {
  member: number;
  x: unknown;
  clock: [number, number];
  since: number;
}

interface Conn extends ConnView {
  harms: Harm[] | null;
  /** `${node prefix}${cookie}`, with TLS_SUFFIX for TLS plaintext. */
  key: string;
  /** Reassemblers, from the first data on while any protocol reads. */
  dirs: [StreamReassembler, StreamReassembler] | null;
  /** Trackers by member index, from the first data on. */
  trackers: (L7Tracker | null)[] | null;
  /** Each direction's fan-out to the trackers (sinksOf), while there are trackers. */
  sinks: [(ev: StreamEvent) => void, (ev: StreamEvent) => void] | null;
  /** Members still reading the connection, a bit each. */
  live: number;
  /** Members that completed an item here, a bit each. */
  itemsSeen: number;
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
  closedAtNs: number;
  /** Where each member may resume (see L7Protocol.resume), by member index. */
  resumeAt: (number | undefined)[] | null;
  /** Parked: the stream positions each direction had reached (trackers and dirs are null). */
  parkedAt: [number, number] | null;
  /** Items waiting for the connection's owner. */
  held: HeldItem[] | null;
  /** When it last moved to the back of the table (ConnectionTable.moves). */
  movedAt: number;
}

/** Count what grew in `counters` (numbers, or objects of numbers) since `reported`; returns the new baseline. */
function reportDeltas(counters: object, reported: Map<string, number>, ctx: LaneContext, prefix = ''): Map<string, number> {
  const flat = new Map<string, number>();
  for (const [k, v] of Object.entries(counters)) {
    if (typeof v === 'number') flat.set(prefix + k, v);
    else if (v && typeof v === 'object') for (const [k2, v2] of Object.entries(v)) if (typeof v2 === 'number') flat.set(`${prefix}${k}_${k2}`, v2);
  }
  for (const [k, v] of flat) {
    const d = v - (reported.get(k) ?? 0);
    if (d > 0) ctx.count(k, d);
  }
  return flat;
}

/**
 * Where a direction's stream events go: every tracker of a member still reading the
 * connection. Made once per connection while it has trackers (a closure per record was a
 * third of the table's garbage).
 */
function fanOut(c: Conn, dir: 0 | 1): (ev: StreamEvent) => void {
  return (ev) => {
    const trackers = c.trackers;
    if (!trackers) return;
    const live = c.live;
    for (let i = 0; i < trackers.length; i++) if (live & (1 << i)) trackers[i]?.data(dir, ev);
  };
}

/** The connection's two directions' fan-outs. */
function sinksOf(c: Conn): [(ev: StreamEvent) => void, (ev: StreamEvent) => void] {
  return (c.sinks ??= [fanOut(c, 0), fanOut(c, 1)]);
}

function roleHint(role: number): RoleHint {
  return role === Role.Client ? 'client' : role === Role.Server ? 'server' : 'unknown';
}

export class ConnectionTable implements FunctionLane {
  /** Every connection by key, least recently used first. */
  private readonly conns = new Map<string, Conn>();
  /**
   * Keys made for the envelope being handled, by socket cookie: a key is built (and hashed)
   * once per connection and envelope, not once per record (a fresh concatenation per record
   * cost more than the lookup). Cleared when the prefix changes.
   */
  private keys = new Map<number, string>();
  private keysPrefix = '';
  private readonly pins = new PinSet();
  private readonly touched = new Set<Conn>();
  private readonly stats: object[];
  /** Reassembly counters of every connection of the table. */
  private readonly reassembly: ReassemblyStats = { lostBytes: 0, uncapturedBytes: 0, reordered: 0, duplicates: 0, overlapBytes: 0, invalid: 0 };
  private readonly lastSweep = new Map<string, number>();
  private lastSpanCheck = 0;
  /** Moves to the back of the table so far: the recency clock. */
  private moves = 0;
  /** Connections parked now. */
  private parked = 0;
  /** Counters already reported as metrics, per member and of reassembly. */
  private reported: Map<string, number>[];
  private reportedReassembly = new Map<string, number>();
  private clock: [number, number] = [0, 0];
  /** Members reading socket bytes and TLS plaintext, a bit each. */
  private readonly plainMembers: number;
  private readonly tlsMembers: number;
  /** Connections forgotten for the budget while the current message was handled, per node. */
  private evicted = new Map<string, { region: string; run: string; n: number }>();

  constructor(
    private readonly members: readonly TableMember[],
    private readonly budget: ConnectionBudget,
    /** The table's own context: its capture_losses rows and counters. */
    private readonly ctx: LaneContext,
    private readonly rowOptions: Readonly<RowOptions> = DEFAULT_ROW_OPTIONS,
  ) {
    if (members.length > 30) throw new RangeError('a connection table runs at most 30 protocols');
    this.stats = members.map((m) => m.p.newStats());
    this.reported = members.map(() => new Map());
    let plain = 0;
    let tls = 0;
    members.forEach((m, i) => {
      if (m.p.plain) plain |= 1 << i;
      if (m.p.tls) tls |= 1 << i;
    });
    this.plainMembers = plain;
    this.tlsMembers = tls;
  }

  onRecord(rec: DecodedRecord, env: EnvelopeContext): void {
    this.clock = env.envelope.clock;
    const key = this.keyOf(env.connPrefix, rec.connId);
    switch (rec.kind) {
      case RecordKind.ConnInfo:
        this.owner(key, rec as ConnInfoRecord, env);
        break;
      case RecordKind.SockData:
        if (this.plainMembers) this.data(this.conn(key, false, rec.connId, env, rec.tsNs), rec as SockDataRecord);
        break;
      case RecordKind.TlsData:
        if (this.tlsMembers) {
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
      case RecordKind.TcpRetransmit:
      case RecordKind.SkbDrop:
        // Trouble on a connection the table does not track (or none: a drop without a socket) is the tcp function's alone.
        for (const c of [this.conns.get(key), this.conns.get(key + TLS_SUFFIX)]) {
          if (c && keepHarm(c.harms ??= [], { tsNs: rec.tsNs, drop: rec.kind === RecordKind.SkbDrop })) this.ctx.count('harm_forgotten');
        }
        break;
    }
  }

  /** The connection key of `cookie` on the node of `prefix`, made once per envelope. */
  private keyOf(prefix: string, cookie: number): string {
    if (prefix !== this.keysPrefix) {
      this.keys = new Map();
      this.keysPrefix = prefix;
    }
    let key = this.keys.get(cookie);
    if (key === undefined) {
      key = `${prefix}${cookie}`;
      // Flattened once, so every lookup hashes the same flat string (its hash is kept in it).
      key.charCodeAt(0);
      this.keys.set(cookie, key);
    }
    return key;
  }

  /**
   * CONN_INFO names a socket's owner before its first data (and again after silences). Only
   * captured sockets of a transport some member reads will have data that matters: the
   * others are not tracked at all.
   */
  private owner(key: string, r: ConnInfoRecord, env: EnvelopeContext): void {
    if (!(r.connFlags & ConnFlags.Captured)) return;
    const meta: ConnMeta = { tuple: r.tuple, role: r.role, tgid: r.tgid, comm: r.comm, connFlags: r.connFlags };
    if (!this.members.some((m) => this.speaks(m.p, meta))) return;
    const c = this.conns.get(key) ?? (this.plainMembers ? this.conn(key, false, r.connId, env, r.tsNs) : undefined);
    for (const x of [c, this.conns.get(key + TLS_SUFFIX)]) {
      if (!x) continue;
      x.meta = meta;
      if (x.held) {
        for (const h of x.held.splice(0)) this.emit(x, h.member, h.x, h.clock);
        x.held = null;
      }
      if (x.metaPinSeq) this.pins.release(x.metaPinSeq);
      x.metaPinSeq = env.seq;
      // Ages count from no later than the envelope's sealing: a forged timestamp from the
      // future would otherwise keep the pin, and the lane's acknowledgements, forever.
      x.metaPinUntilNs = Math.min(r.tsNs, env.envelope.mono) + CONN_INFO_REFRESH_NS;
      this.pins.add(env.seq);
    }
  }

  /** The protocol reads this connection's transport and accepts its owner's ports. */
  private speaks(p: L7Protocol<unknown>, meta: ConnMeta): boolean {
    const proto = meta.tuple.protocol;
    return (proto === 6 ? p.tcp : proto === 17 ? p.udp : false) && (!p.accepts || p.accepts(meta));
  }

  private conn(key: string, tls: boolean, cookie: number, env: EnvelopeContext, tsNs: number): Conn {
    let c = this.conns.get(key);
    if (c) {
      if (this.moves - c.movedAt > this.conns.size >> 1) {
        this.conns.delete(key);
        this.conns.set(key, c);
        c.movedAt = ++this.moves;
      }
      return c;
    }
    if (this.budget.used >= this.budget.max) this.evictOne(env);
    const connId = connUuid(env.envelope.boot, cookie);
    let meta: ConnMeta | null = null;
    let resumeAt: (number | undefined)[] | null = null;
    if (this.members.some((m) => m.resumed.points.size || m.resumed.owners.size)) {
      const rk = resumeKey(env.envelope.node, connId, tls);
      this.members.forEach((m, i) => {
        meta ??= m.resumed.owners.get(rk) ?? null;
        const point = m.resumed.points.get(rk);
        if (point !== undefined) (resumeAt ??= [])[i] = point;
      });
    }
    c = {
      key, node: env.envelope.node, region: env.envelope.region, connId, tls, meta,
      dirs: null, trackers: null, sinks: null, live: tls ? this.tlsMembers : this.plainMembers, itemsSeen: 0,
      firstTsNs: tsNs, lastTsNs: tsNs, bytesSeen: 0, pinSeq: 0, pinTsNs: 0, pinReleased: false,
      metaPinSeq: 0, metaPinUntilNs: 0, closedAtNs: 0, resumeAt, parkedAt: null, held: null, movedAt: ++this.moves, harms: null,
    };
    this.conns.set(key, c);
    this.budget.used++;
    return c;
  }

  private data(c: Conn, rec: SockDataRecord): void {
    if (!c.live || c.closedAtNs) return;
    const udp = c.meta?.tuple.protocol === 17;
    if (!c.trackers) this.open(c, rec, udp);
    const trackers = c.trackers;
    const dirs = c.dirs;
    if (!trackers || !dirs) return;
    const dir = rec.direction === Direction.Egress ? 0 : 1;
    if (udp) {
      for (let i = 0; i < trackers.length; i++) trackers[i]?.datagram?.(dir, rec);
    } else {
      const sinks = sinksOf(c);
      dirs[dir].push(rec, sinks[dir]);
      const other = dir === 0 ? 1 : 0;
      dirs[other].expire(rec.tsNs, sinks[other]);
    }
    c.lastTsNs = Math.max(c.lastTsNs, rec.tsNs);
    c.bytesSeen += rec.lenBytes;
    for (let i = 0; i < trackers.length; i++) {
      const t = trackers[i];
      if (!t) continue;
      const p = this.members[i].p;
      if (t.stopReason) this.letGo(c, i, t.stopReason);
      else if (!t.recognized && (c.bytesSeen > p.giveUpBytes || rec.tsNs - c.firstTsNs > p.giveUpNs || this.rejectsStart(p, rec))) this.letGo(c, i, 'unrecognised');
    }
    this.touched.add(c);
  }

  /**
   * At a connection's first data: a tracker for every member that may speak on it; the
   * others let go (counted when the first byte ruled them out).
   */
  private open(c: Conn, rec: SockDataRecord, udp: boolean): void {
    const trackers: (L7Tracker | null)[] = new Array(this.members.length).fill(null);
    const parked = c.parkedAt;
    for (let i = 0; i < this.members.length; i++) {
      if (!(c.live & (1 << i))) continue;
      const { p, resumed } = this.members[i];
      // Without an owner a socket is taken for TCP, and no port rule can pass.
      if (!parked && !(c.meta ? this.speaks(p, c.meta) : p.tcp && !p.accepts)) {
        c.live &= ~(1 << i);
      } else if (!parked && this.rejectsStart(p, rec)) {
        // Another protocol's first bytes: nothing is built for it.
        c.live &= ~(1 << i);
        this.members[i].ctx.count('abandoned_unrecognised');
      } else {
        trackers[i] = p.open({
          role: roleHint(c.meta?.role ?? Role.Unknown),
          midlife: Boolean(c.meta && c.meta.connFlags & ConnFlags.Midlife),
          tls: c.tls,
          udp,
          resume: c.resumeAt?.[i],
          known: resumed.known.size ? resumed.known.get(resumeKey(c.node, c.connId, c.tls)) : undefined,
          boundaries: parked ?? undefined,
        }, (x) => this.item(c, i, x), this.stats[i]);
      }
    }
    if (!c.live) return;
    c.trackers = trackers;
    c.dirs = [
      new StreamReassembler({ stats: this.reassembly, nextPos: parked?.[0] }),
      new StreamReassembler({ stats: this.reassembly, nextPos: parked?.[1] }),
    ];
    if (parked) {
      // The trackers start afresh: so does the time and the bytes they have to recognise theirs.
      c.firstTsNs = rec.tsNs;
      c.bytesSeen = 0;
      this.parked--;
    }
    c.parkedAt = null;
  }

  /**
   * An idle connection whose every tracker stands at its resume point, between items:
   * trackers and reassemblers can go and be built again from the points at the next data.
   * The point is a position of the request direction (the owner's role tells which).
   */
  private parkable(c: Conn): boolean {
    const { trackers, dirs, resumeAt, meta } = c;
    if (!trackers || !dirs || !resumeAt || !meta || c.closedAtNs || c.held?.length) return false;
    if (meta.role !== Role.Client && meta.role !== Role.Server) return false;
    const reqPos = dirs[meta.role === Role.Client ? 0 : 1].nextPos;
    if (dirs[0].pendingBytes > 0 || dirs[1].pendingBytes > 0) return false;
    for (let i = 0; i < trackers.length; i++) {
      const t = trackers[i];
      if (!t) continue;
      if (!this.members[i].p.resume || resumeAt[i] !== reqPos || !t.isIdle()) return false;
    }
    return true;
  }

  private park(c: Conn): void {
    c.parkedAt = [c.dirs![0].nextPos, c.dirs![1].nextPos];
    c.trackers = null;
    c.sinks = null;
    c.dirs = null;
    this.parked++;
  }

  /** The connection's first bytes can never start this protocol. */
  private rejectsStart(p: L7Protocol<unknown>, rec: SockDataRecord): boolean {
    if (!p.rejectsFirstByte || rec.posBytes !== 0 || rec.offsetBytes !== 0 || rec.payload.length === 0) return false;
    return p.rejectsFirstByte(rec.payload[0]);
  }

  /** Member `i` reads the connection no more; with the last one go its trackers and reassembly. */
  private letGo(c: Conn, i: number, why: string): void {
    c.live &= ~(1 << i);
    if (c.trackers) c.trackers[i] = null;
    this.members[i].ctx.count(`abandoned_${why}`);
    if (!c.live) {
      // Nothing more is parsed: only the owner stays (a TLS stream of the socket borrows it).
      c.trackers = null;
      c.sinks = null;
      c.dirs = null;
    }
  }

  private close(c: Conn, tsNs: number): void {
    const trackers = c.trackers;
    if (trackers && c.dirs) {
      for (const d of [0, 1] as const) c.dirs[d].flush(sinksOf(c)[d]);
      for (const t of trackers) t?.close();
    }
    c.closedAtNs = tsNs;
    this.touched.add(c);
  }

  /** An item is complete: its row now, or once the connection's owner is known. */
  private item(c: Conn, i: number, x: unknown): void {
    c.itemsSeen |= 1 << i;
    const point = this.members[i].p.resume?.fromItem(x);
    if (point !== null && point !== undefined) (c.resumeAt ??= [])[i] = point;
    if (c.meta) this.emit(c, i, x, this.clock);
    else (c.held ??= []).push({ member: i, x, clock: this.clock, since: c.lastTsNs });
  }

  private emit(c: Conn, i: number, x: unknown, clock: [number, number]): void {
    const { p, ctx } = this.members[i];
    const row = p.row(x, c, clock, this.rowOptions);
    if (row) ctx.emit(p.table, row);
  }

  private unpin(c: Conn): void {
    if (c.pinSeq) this.pins.release(c.pinSeq);
    c.pinSeq = 0;
  }

  /** A connection holds state a new owner could not rebuild from later messages. */
  private busy(c: Conn): boolean {
    if (c.held?.length) return true;
    const trackers = c.trackers;
    if (!c.live || c.closedAtNs || !trackers || !c.dirs) return false;
    if (c.dirs[0].pendingBytes > 0 || c.dirs[1].pendingBytes > 0) return true;
    for (let i = 0; i < trackers.length; i++) {
      const t = trackers[i];
      if (!t) continue;
      if (this.members[i].p.pinUntilFirstItem && !(c.itemsSeen & (1 << i))) return true;
      if (!t.isIdle()) return true;
    }
    return false;
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
    this.updatePins(env.seq, now);
    const check = Math.floor(env.seq / PIN_SPAN_CHECK_EVERY);
    if (check !== this.lastSpanCheck) {
      this.lastSpanCheck = check;
      if (this.pins.min() < env.seq - MAX_PIN_SPAN) this.releaseOldPins(env.seq - MAX_PIN_SPAN);
    }
    if (this.evicted.size) this.reportEvictions(env);
  }

  /** Release every pin taken before `seq` (MAX_PIN_SPAN), counted. */
  private releaseOldPins(seq: number): void {
    for (const c of this.conns.values()) {
      if (c.pinSeq && c.pinSeq < seq) {
        this.ctx.count('pins_released');
        this.unpin(c);
        c.pinReleased = true;
      }
      if (c.metaPinSeq && c.metaPinSeq < seq) {
        this.pins.release(c.metaPinSeq);
        c.metaPinSeq = 0;
      }
    }
  }

  private updatePins(seq: number, now: number): void {
    for (const c of this.touched) {
      if (!this.busy(c)) {
        this.unpin(c);
        c.pinReleased = false;
        if ((now - c.lastTsNs >= PARK_IDLE_NS || this.conns.size - this.parked > MAX_UNPARKED) && this.parkable(c)) this.park(c);
      } else if (!c.pinSeq && !c.pinReleased) {
        c.pinSeq = seq;
        c.pinTsNs = Math.min(c.lastTsNs, now);
        this.pins.add(seq);
      }
    }
    this.touched.clear();
  }

  /** Timeouts, late-record grace, stale pins, owner waits and eviction for one node's connections. */
  private sweep(node: string, now: number): void {
    for (const c of this.conns.values()) {
      if (c.node !== node) continue;
      const trackers = c.trackers;
      const dirs = c.dirs;
      if (trackers && dirs && !c.closedAtNs) {
        for (const d of [0, 1] as const) dirs[d].expire(now, sinksOf(c)[d]);
        for (let i = 0; i < trackers.length; i++) {
          const t = trackers[i];
          if (!t) continue;
          t.expire(now);
          if (!t.recognized && now - c.firstTsNs > this.members[i].p.giveUpNs) this.letGo(c, i, 'unrecognised');
        }
      }
      if (c.held?.length && now - c.held[0].since > META_WAIT_NS) {
        this.ctx.count('rows_without_owner', c.held.length);
        for (const h of c.held.splice(0)) this.emit(c, h.member, h.x, h.clock);
        c.held = null;
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
      if (gone && !this.busy(c)) this.forget(c, !c.closedAtNs);
      else this.touched.add(c);
    }
  }

  /** Drop a connection's state; an open one's resume points are remembered for its return. */
  private forget(c: Conn, remember: boolean): void {
    if (remember && c.resumeAt) {
      const rk = resumeKey(c.node, c.connId, c.tls);
      c.resumeAt.forEach((point, i) => {
        if (point === undefined) return;
        const points = this.members[i].resumed.points;
        if (points.size >= MAX_RESUME_POINTS) points.delete(points.keys().next().value!);
        points.set(rk, point);
      });
    }
    this.unpin(c);
    if (c.metaPinSeq) this.pins.release(c.metaPinSeq);
    c.metaPinSeq = 0;
    if (c.parkedAt) this.parked--;
    this.touched.delete(c);
    this.conns.delete(c.key);
    this.budget.used--;
  }

  /** Forget the least recently used connection to make room; what it held in progress is lost. */
  private evictOne(env: EnvelopeContext): void {
    const c = this.conns.values().next().value;
    if (!c) return; // the other lanes hold the budget: this one goes over it by a connection
    this.forget(c, true);
    const e = this.evicted.get(c.node);
    if (e) e.n++;
    else this.evicted.set(c.node, { region: c.region, run: env.envelope.run, n: 1 });
  }

  private reportEvictions(env: EnvelopeContext): void {
    const ts = wallNs(env.envelope.mono, env.envelope.clock);
    for (const [node, e] of this.evicted) {
      this.ctx.emit('capture_losses', {
        ts, region: e.region, node, run_id: e.run, kind: 'connection', cause: CONN_TABLE_FULL, records: 0, envelopes: 0, connections: e.n,
      });
      this.ctx.count('connections_evicted', e.n);
    }
    this.evicted = new Map();
  }

  /** Protocol and reassembly counters as function event metrics (deltas since the last report). */
  private reportStats(): void {
    this.members.forEach((m, i) => {
      this.reported[i] = reportDeltas(this.stats[i], this.reported[i], m.ctx);
    });
    this.reportedReassembly = reportDeltas(this.reassembly, this.reportedReassembly, this.ctx, 'reassembly_');
  }

  lowWaterMark(): number {
    return this.pins.min();
  }

  connections(): { tracked: number; parked: number } {
    return { tracked: this.conns.size, parked: this.parked };
  }

  /** The lane closes: its connections leave the processor's budget. */
  release(): void {
    this.budget.used -= this.conns.size;
    this.conns.clear();
    this.keys.clear();
  }
}
