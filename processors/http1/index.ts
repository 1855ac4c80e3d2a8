/**
 * http1: HTTP/1.0 and 1.1 exchanges in both roles → `http_requests`, from socket bytes and,
 * for HTTPS, from the TLS plaintext the OpenSSL uprobes capture (rows with tls = 1).
 *
 * Per connection: a reassembler per direction orders the captured chunks by byte position
 * and turns gaps into events, and an Http1Connection pairs requests with responses. Kernel
 * time drives timeouts (a request without a response becomes a timed-out row after
 * REQUEST_TIMEOUT_NS of node time), so re-reading the same messages always gives the same
 * rows.
 *
 * Recovery: a connection in the middle of an exchange pins the message where that exchange
 * began, so a new owner re-reads it whole. A connection's first exchange pins its first
 * message too (a connection seen mid-life pairs only after it has seen a response). Where
 * the last exchange already committed ended is read back from http_requests when a lane
 * resumes, so an idle connection's next request pairs at once.
 */
import { ConnFlags, Direction, RecordKind, Role, type ConnCloseRecord, type ConnInfoRecord, type ConnOpenRecord, type DecodedRecord, type FlowTuple, type SockDataRecord } from '../../schemas/records.js';
import { StreamReassembler, type StreamEvent } from '../l7/reassembly.js';
import type { EnvelopeContext, FunctionLane, LaneContext, ProcessingFunction, Row } from '../runtime/function.js';
import { PinSet } from '../runtime/pins.js';
import { connUuid, sides, wallNs } from '../runtime/rows.js';
import { ExchangeFlags, Http1Connection, newHttp1Stats, type Http1Exchange, type RoleHint } from './connection.js';

/** A request without a response for this long (node time) becomes a timed-out row. */
const REQUEST_TIMEOUT_NS = 30e9;
/** Connections are checked for timeouts at most this often per node. */
const SWEEP_EVERY_NS = 1e9;
/** State of a closed connection is kept this long for records that arrive late. */
const CLOSED_GRACE_NS = 2e9;
/** A connection whose bytes show no HTTP/1 start line within this much is left alone. */
const GIVE_UP_BYTES = 64 * 1024;
const GIVE_UP_NS = 30e9;
/** A pin older than this is released: a crash loses that one exchange, the stream moves on. */
const MAX_PIN_AGE_NS = 120e9;
/** An exchange waits this long for the connection's owner (CONN_INFO) before its row goes without. */
const META_WAIT_NS = 15e9;
/** Connections idle this long are forgotten (their boundary is remembered). */
const IDLE_EVICT_NS = 600e9;
/** Boundaries remembered for forgotten or resumed connections. */
const MAX_BOUNDARIES = 1_000_000;

const PARTIAL_FLAGS = ExchangeFlags.ReqBodyPartial | ExchangeFlags.ReqEndInferred | ExchangeFlags.ReqHeadPartial
  | ExchangeFlags.RespBodyPartial | ExchangeFlags.RespEndInferred | ExchangeFlags.RespHeadPartial;

/** Who owns a connection, from CONN_OPEN / CONN_INFO. */
interface ConnMeta {
  tuple: FlowTuple;
  role: number;
  tgid: number;
  comm: string;
  connFlags: number;
}

interface Conn {
  /** Fed TLS plaintext (uprobes) rather than the socket's bytes. */
  tls: boolean;
  node: string;
  /** conn_id of its rows (boot id and socket cookie). */
  connId: string;
  meta: ConnMeta | null;
  dirs: [StreamReassembler, StreamReassembler];
  http: Http1Connection | null;
  /** Not HTTP/1 (or switched away): records are ignored. */
  abandoned: boolean;
  firstTsNs: number;
  lastTsNs: number;
  bytesSeen: number;
  /** Pinned sequence (0: none). */
  pinSeq: number;
  pinTsNs: number;
  /** A released pin is not taken again until the connection is idle. */
  pinReleased: boolean;
  emittedAny: boolean;
  closedAtNs: number;
  /** Request-direction end of the last complete exchange (-1: none). */
  lastReqEnd: number;
  /** Exchanges waiting for the connection's owner, with the envelope clock they completed under. */
  held: { x: Http1Exchange; clock: [number, number]; tsNs: number }[];
}

/** Connections fed TLS plaintext are kept apart from their socket bytes under this key suffix. */
const TLS_SUFFIX = '|tls';

/** Key of a connection's remembered boundary: node, conn_id and tls, as rows carry them. */
function boundaryKey(node: string, connId: string, tls: boolean): string {
  return `${node}|${connId}|${tls ? 1 : 0}`;
}

/**
 * The first byte of a connection cannot start an HTTP/1 message (methods and "HTTP/" start
 * with a capital letter): TLS, SSH, database protocols are let go at once.
 */
function notHttpStart(rec: SockDataRecord): boolean {
  if (rec.posBytes !== 0 || rec.offsetBytes !== 0 || rec.payload.length === 0) return false;
  const b = rec.payload[0];
  return b < 0x41 || b > 0x5a;
}

function roleHint(role: number): RoleHint {
  return role === Role.Client ? 'client' : role === Role.Server ? 'server' : 'unknown';
}

class Http1Lane implements FunctionLane {
  private readonly conns = new Map<string, Conn>();
  private readonly pins = new PinSet();
  private readonly touched = new Set<Conn>();
  private readonly stats = newHttp1Stats();
  /** Counters already reported as metrics. */
  private reported = new Map<string, number>();
  private readonly lastSweep = new Map<string, number>();
  /** conn key → request-direction position where the last recorded exchange ended. */
  private readonly boundaries: Map<string, number>;
  private clock: [number, number] = [0, 0];
  private region = '';

  constructor(private readonly ctx: LaneContext, boundaries: Map<string, number>) {
    this.boundaries = boundaries;
  }

  onRecord(rec: DecodedRecord, env: EnvelopeContext): void {
    this.clock = env.envelope.clock;
    this.region = env.envelope.region;
    const key = env.connPrefix + rec.connId;
    switch (rec.kind) {
      case RecordKind.ConnOpen:
      case RecordKind.ConnInfo: {
        const r = rec as ConnOpenRecord | ConnInfoRecord;
        const meta = { tuple: r.tuple, role: r.role, tgid: r.tgid, comm: r.comm, connFlags: r.connFlags };
        const c = this.conns.get(key);
        // CONN_OPEN of a server socket names no owner; CONN_INFO always does.
        if (c && (rec.kind === RecordKind.ConnInfo || !c.meta)) this.setMeta(c, meta);
        else if (!c && r.tuple.protocol === 6) this.conn(key, false, rec.connId, env, rec.tsNs).meta = meta;
        const t = this.conns.get(key + TLS_SUFFIX);
        if (t && (rec.kind === RecordKind.ConnInfo || !t.meta)) this.setMeta(t, meta);
        break;
      }
      case RecordKind.SockData:
        this.data(this.conn(key, false, rec.connId, env, rec.tsNs), rec as SockDataRecord);
        break;
      case RecordKind.TlsData: {
        const t = this.conn(key + TLS_SUFFIX, true, rec.connId, env, rec.tsNs);
        t.meta ??= this.conns.get(key)?.meta ?? null;
        this.data(t, rec as SockDataRecord);
        break;
      }
      case RecordKind.ConnClose:
        for (const c of [this.conns.get(key), this.conns.get(key + TLS_SUFFIX)]) {
          if (c && !c.closedAtNs) this.close(c, (rec as ConnCloseRecord).tsNs);
        }
        break;
    }
  }

  private setMeta(c: Conn, meta: ConnMeta): void {
    c.meta = meta;
    this.releaseHeld(c);
  }

  private conn(key: string, tls: boolean, cookie: number, env: EnvelopeContext, tsNs: number): Conn {
    let c = this.conns.get(key);
    if (!c) {
      const connId = connUuid(env.envelope.boot, cookie);
      c = {
        tls, node: env.envelope.node, connId, meta: null,
        dirs: [new StreamReassembler(), new StreamReassembler()], http: null, abandoned: false,
        firstTsNs: tsNs, lastTsNs: tsNs, bytesSeen: 0, pinSeq: 0, pinTsNs: 0, pinReleased: false,
        emittedAny: false, closedAtNs: 0, lastReqEnd: this.boundaries.get(boundaryKey(env.envelope.node, connId, tls)) ?? -1, held: [],
      };
      this.conns.set(key, c);
    }
    return c;
  }

  private data(c: Conn, rec: SockDataRecord): void {
    if (c.abandoned || c.closedAtNs) return;
    if (!c.http) {
      c.http = new Http1Connection(roleHint(c.meta?.role ?? Role.Unknown), (x) => this.exchange(c, x), {
        stats: this.stats,
        midlife: Boolean(c.meta && c.meta.connFlags & ConnFlags.Midlife),
        resumeRequestPos: c.lastReqEnd >= 0 ? c.lastReqEnd : undefined,
      });
    }
    const http = c.http;
    const dir = rec.direction === Direction.Egress ? 0 : 1;
    c.dirs[dir].push(rec, (ev: StreamEvent) => http.data(dir, ev));
    const other = 1 - dir;
    c.dirs[other].expire(rec.tsNs, (ev: StreamEvent) => http.data(other as 0 | 1, ev));
    c.lastTsNs = Math.max(c.lastTsNs, rec.tsNs);
    c.bytesSeen += rec.lenBytes;
    if (http.stopReason) this.abandon(c, http.stopReason);
    else if (!http.recognized && (c.bytesSeen > GIVE_UP_BYTES || rec.tsNs - c.firstTsNs > GIVE_UP_NS || notHttpStart(rec))) {
      this.abandon(c, 'not_http1');
    }
    this.touched.add(c);
  }

  private abandon(c: Conn, why: string): void {
    c.abandoned = true;
    c.http = null;
    this.ctx.count(`abandoned_${why}`);
    this.unpin(c);
  }

  private close(c: Conn, tsNs: number): void {
    if (c.http) {
      const http = c.http;
      c.dirs[0].flush((ev) => http.data(0, ev));
      c.dirs[1].flush((ev) => http.data(1, ev));
      http.close();
    }
    c.closedAtNs = tsNs;
    this.touched.add(c);
  }

  /** An exchange is complete: its row now, or once the connection's owner is known. */
  private exchange(c: Conn, x: Http1Exchange): void {
    c.emittedAny = true;
    if (!x.timedOut && !(x.flags & ExchangeFlags.Upgraded)) c.lastReqEnd = x.reqStartPos + x.reqBytes;
    if (c.meta) this.emitRow(c, x, this.clock);
    else c.held.push({ x, clock: this.clock, tsNs: x.reqFirstTsNs });
  }

  private releaseHeld(c: Conn): void {
    for (const h of c.held.splice(0)) this.emitRow(c, h.x, h.clock);
  }

  private emitRow(c: Conn, x: Http1Exchange, clock: [number, number]): void {
    const role = c.http?.role === 'server' || (c.http?.role !== 'client' && c.meta?.role === Role.Server) ? Role.Server : Role.Client;
    const m = c.meta;
    const addr = m ? sides(m.tuple, role) : { client_addr: '::', client_port: 0, server_addr: '::', server_port: 0 };
    const row: Row = {
      ts: wallNs(x.reqFirstTsNs, clock),
      region: this.region,
      node: c.node,
      conn_id: c.connId,
      pid: m?.tgid ?? 0,
      comm: m?.comm ?? '',
      role: role === Role.Server ? 'server' : 'client',
      ...addr,
      protocol: x.version,
      method: x.method,
      host: x.host,
      path: x.path,
      status: x.status,
      req_messages: 1,
      resp_messages: x.status ? 1 : 0,
      req_bytes: x.reqBytes,
      resp_bytes: x.respBytes,
      ttfb_ns: x.respFirstTsNs ? Math.max(0, x.respFirstTsNs - x.reqFirstTsNs) : 0,
      latency_ns: x.respLastTsNs ? Math.max(0, x.respLastTsNs - x.reqFirstTsNs) : 0,
      tls: c.tls ? 1 : 0,
      timed_out: x.timedOut ? 1 : 0,
      req_pos: x.reqStartPos,
      content_type: x.contentType,
      user_agent: x.userAgent,
      partial: x.flags & PARTIAL_FLAGS ? 1 : 0,
    };
    this.ctx.emit('http_requests', row);
  }

  private unpin(c: Conn): void {
    if (c.pinSeq) this.pins.release(c.pinSeq);
    c.pinSeq = 0;
  }

  /** A connection holds state a new owner could not rebuild from later messages. */
  private busy(c: Conn): boolean {
    if (c.abandoned) return false;
    if (c.held.length) return true;
    if (c.closedAtNs) return false;
    if (!c.emittedAny) return true;
    return !c.http || !c.http.isIdle() || c.dirs[0].pendingBytes > 0 || c.dirs[1].pendingBytes > 0;
  }

  onEnvelope(env: EnvelopeContext): void {
    this.clock = env.envelope.clock;
    const node = env.envelope.node;
    const now = env.envelope.mono;
    if (now - (this.lastSweep.get(node) ?? 0) >= SWEEP_EVERY_NS) {
      this.lastSweep.set(node, now);
      this.sweep(node, now);
      this.reportStats();
    }
    this.updatePins(env.seq);
  }

  /** Parser and pairing counters as function event metrics (deltas since the last report). */
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

  /**
   * Pins at message granularity: a connection idle before this message and busy after it
   * is pinned here, so a re-read from here sees its exchange from the first byte.
   */
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
      if (c.http && !c.closedAtNs) {
        const http = c.http;
        c.dirs[0].expire(now, (ev) => http.data(0, ev));
        c.dirs[1].expire(now, (ev) => http.data(1, ev));
        http.expire(now, REQUEST_TIMEOUT_NS);
        if (!http.recognized && now - c.firstTsNs > GIVE_UP_NS) this.abandon(c, 'not_http1');
      }
      if (c.held.length && now - c.held[0].tsNs > META_WAIT_NS) {
        this.ctx.count('rows_without_owner', c.held.length);
        for (const h of c.held.splice(0)) this.emitRow(c, h.x, h.clock);
      }
      if (c.pinSeq && now - c.pinTsNs > MAX_PIN_AGE_NS) {
        this.ctx.count('pins_released');
        this.unpin(c);
        c.pinReleased = true;
      }
      const gone = c.closedAtNs ? now - c.closedAtNs > CLOSED_GRACE_NS : now - c.lastTsNs > IDLE_EVICT_NS;
      if (gone && !this.busy(c)) {
        if (!c.closedAtNs && c.lastReqEnd >= 0) this.remember(boundaryKey(c.node, c.connId, c.tls), c.lastReqEnd);
        this.unpin(c);
        this.conns.delete(key);
      } else {
        this.touched.add(c);
      }
    }
  }

  private remember(key: string, pos: number): void {
    if (this.boundaries.size >= MAX_BOUNDARIES) {
      const oldest = this.boundaries.keys().next().value;
      if (oldest !== undefined) this.boundaries.delete(oldest);
    }
    this.boundaries.set(key, pos);
  }

  lowWaterMark(): number {
    return this.pins.min();
  }
}

/**
 * Where each connection's last committed exchange ended, from this function's own rows, so
 * a resuming lane pairs an idle connection's next request at once.
 */
async function committedBoundaries(ctx: LaneContext): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (!ctx.resuming) return out;
  const rows = await ctx.query<{ node: string; conn_id: string; tls: number; end_pos: string }>(
    `SELECT node, toString(conn_id) AS conn_id, tls, max(req_pos + req_bytes) AS end_pos
     FROM {db}.http_requests
     WHERE _stream = {stream:String} AND _fn = 'http1' AND _shard = {shard:UInt16} AND timed_out = 0
     GROUP BY node, conn_id, tls`,
    { stream: ctx.streamId, shard: ctx.shard },
  );
  for (const r of rows) out.set(boundaryKey(r.node, r.conn_id, Number(r.tls) === 1), Number(r.end_pos));
  return out;
}

export const http1Function: ProcessingFunction = {
  name: 'http1',
  kinds: [RecordKind.ConnOpen, RecordKind.ConnInfo, RecordKind.SockData, RecordKind.TlsData, RecordKind.ConnClose],
  tables: ['http_requests'],
  async createLane(ctx) {
    return new Http1Lane(ctx, await committedBoundaries(ctx));
  },
};
