/**
 * DNS queries paired with their responses on one socket.
 *
 * Which side this socket is on is read from each message's QR bit and direction, never
 * from a role hint: a query it sends makes it the client of that exchange, a query it
 * receives the server. A stub resolver's socket sends queries and receives responses; a
 * server's socket (unbound on :53: one unconnected UDP socket, many clients) receives
 * queries from many peers and answers each of them. Both can happen on one socket.
 *
 * A response pairs with the pending query that has the same role (it travels the other
 * way), the same id, the same peer and the same question (name case-insensitively, type).
 * The peer is the datagram's address on an unconnected UDP socket; null stands for the
 * socket's connected peer. So two clients of one server that pick the same id never pair
 * across. Responses without a question (some FORMERR/REFUSED) pair by id and peer when
 * exactly one query fits.
 *
 * - A query repeated (same id, peer and question) while waiting is a retransmission: one
 *   exchange, timed from the first, with the retry counted.
 * - A response without a waiting query (capture began after the query, a duplicate, a
 *   late answer after a timeout) is counted and makes no row.
 * - A query that gets no response becomes a timed-out exchange at `expire` (record time,
 *   after `queryTimeoutNs`) or `close`.
 * - At most `maxPending` queries wait per socket; beyond that the oldest is dropped
 *   (counted, no row): newer queries are likelier to be answered while we watch.
 */
import type { StreamEvent } from '../l7/reassembly.js';
import { DnsTcpSplitter, newDnsTcpStats, type DnsTcpMessage, type DnsTcpStats } from './tcp.js';
import {
  DNS_WIRE_FAILURES, decodeDns, lowerName, rcodeName, type DnsMessage, type DnsWireFailure,
} from './wire.js';
import type { Dir } from '../l7/sides.js';
import { GuardedTracker, type GuardStats, type L7Tracker } from '../l7/tracker.js';
import type { SockDataRecord } from '../../schemas/records.js';
export type { Dir };

/** 'client' when this socket sent the query, 'server' when it received it. */
export type DnsRole = 'client' | 'server';
export type DnsTransport = 'udp' | 'tcp';

/** The other end of a datagram: address as text (IPv4 as ::ffff:a.b.c.d) and port. */
export interface DnsPeer {
  addr: string;
  port: number;
}

/** One query with its response, or without one (`timedOut`). */
export interface DnsExchange {
  id: number;
  /** Question name, ASCII-lowercased; "." for the root. */
  qname: string;
  qtype: number;
  /** "A", "AAAA", "TYPE65534". */
  qtypeName: string;
  opcode: number;
  /** Response rcode; -1 when timed out. */
  rcode: number;
  /** "NOERROR", "NXDOMAIN"; '' when timed out. */
  rcodeName: string;
  /** Answer values (see DnsMessage.answers); empty when timed out. */
  answers: string[];
  /** Answer records in the response; 0 when timed out. */
  answerCount: number;
  /** When the query's first byte moved (its syscall, on this socket). */
  queryTsNs: number;
  /** When the response's last byte moved; 0 when timed out. */
  responseTsNs: number;
  /** responseTsNs − queryTsNs (≥ 0); 0 when timed out. */
  latencyNs: number;
  timedOut: boolean;
  transport: DnsTransport;
  /** Datagram peer of an unconnected UDP socket; null: the socket's own (connected) peer. */
  peer: DnsPeer | null;
  /** The response had the TC bit: the answer did not fit, the client retries over TCP. */
  truncated: boolean;
  role: DnsRole;
  /** Retransmissions of the query seen before the response. */
  retries: number;
  /**
   * Stream position of the query in its direction (TCP: its length prefix; UDP: as given to
   * `message`, -1 when not): with node, conn_id and role, the row key. A retried query keeps
   * the first one's.
   */
  queryPos: number;
  /** Why the response's answer section broke off (answers before it are kept), or null. */
  answerError: DnsWireFailure | null;
}

/** Counters of one or more sockets; pass one object to many matchers to sum them. */
export interface DnsStats extends GuardStats {
  /** Messages handed in (datagrams, framed TCP messages). */
  messages: number;
  /** Messages that could not be decoded, by cause (no exchange can use them). */
  decodeFailures: Record<DnsWireFailure, number>;
  queries: number;
  responses: number;
  exchanges: number;
  /** Exchanges emitted without a response. */
  timedOut: number;
  /** Retransmitted queries folded into the first. */
  retries: number;
  /** Responses with no waiting query: capture began late, duplicates, answers after a timeout. */
  unmatchedResponses: number;
  /** Queries dropped because `maxPending` queries were already waiting. */
  droppedQueries: number;
  /** Responses whose answer section broke off; they still pair. */
  answerErrors: number;
  tcp: DnsTcpStats;
}

export function newDnsStats(): DnsStats {
  const decodeFailures = {} as Record<DnsWireFailure, number>;
  for (const f of DNS_WIRE_FAILURES) decodeFailures[f] = 0;
  return {
    messages: 0, decodeFailures, queries: 0, responses: 0, exchanges: 0, timedOut: 0, retries: 0,
    unmatchedResponses: 0, droppedQueries: 0, answerErrors: 0, internalErrors: 0, tcp: newDnsTcpStats(),
  };
}

/** Most queries waiting for responses on one socket (a busy server socket has many). */
export const DEFAULT_MAX_PENDING = 1024;
/** A query without a response for this long (node time) becomes a timed-out exchange. */
export const DEFAULT_QUERY_TIMEOUT_NS = 15e9;

export interface DnsMatcherOptions {
  /** Counters to add to (shared across sockets); a new object by default. */
  stats?: DnsStats;
  /** Most queries waiting for responses (default 1024). */
  maxPending?: number;
  /** How long `expire` lets a query wait for its response (default 15 s). */
  queryTimeoutNs?: number;
  /** TCP: the connection was open before capture began, so position 0 is not a message start. */
  midlife?: boolean;
}

interface Pending {
  key: string;
  role: DnsRole;
  id: number;
  peer: DnsPeer | null;
  peerKey: string;
  qname: string;
  qtype: number;
  qtypeName: string;
  opcode: number;
  tsNs: number;
  pos: number;
  transport: DnsTransport;
  retries: number;
}

/**
 * What the matcher reads of a datagram's record: its bytes, time, peer (unconnected
 * sockets; null on a connected one) and position in its direction, kept as `queryPos` so
 * rows get a deterministic key (-1 when unknown).
 */
export type Datagram = Pick<SockDataRecord, 'payload' | 'tsNs' | 'peer' | 'posBytes'>;

function peerKey(peer: DnsPeer | null): string {
  return peer ? `${peer.addr}#${peer.port}` : '';
}

/** DNS pairing for one socket. Never throws on input; exchanges go to `onExchange`. */
export class DnsMatcher extends GuardedTracker<DnsExchange, DnsStats> implements L7Tracker {
  /** Only sockets on port 53 are given a matcher: their bytes are taken for DNS. */
  readonly recognized = true;
  /** DNS never switches a socket to another protocol. */
  readonly stopReason = null;
  /** Waiting queries by key, oldest first (Map keeps insertion order). */
  private readonly pending = new Map<string, Pending>();
  private readonly splitters: [DnsTcpSplitter | null, DnsTcpSplitter | null] = [null, null];
  private readonly maxPending: number;
  private readonly queryTimeoutNs: number;
  private readonly midlife: boolean;

  constructor(onExchange: (x: DnsExchange) => void, opts: DnsMatcherOptions = {}) {
    super(onExchange, opts.stats ?? newDnsStats());
    this.maxPending = Math.max(1, opts.maxPending ?? DEFAULT_MAX_PENDING);
    this.queryTimeoutNs = opts.queryTimeoutNs ?? DEFAULT_QUERY_TIMEOUT_NS;
    this.midlife = opts.midlife ?? false;
  }

  /** Queries waiting for a response. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Bytes held for partial TCP messages (at most 2 × 65537). */
  get bufferedBytes(): number {
    return (this.splitters[0]?.bufferedBytes ?? 0) + (this.splitters[1]?.bufferedBytes ?? 0);
  }

  /** No query waiting and no partial TCP message: starting afresh would lose nothing. */
  isIdle(): boolean {
    if (this.pending.size > 0) return false;
    for (const s of this.splitters) if (s && s.bufferedBytes > 0) return false;
    return true;
  }

  /** One UDP datagram of kernel direction `dir` (0 sent, 1 received). */
  datagram(dir: Dir, d: Datagram): void {
    this.run(() => this.handle(dir, d.payload, d.tsNs, d.tsNs, d.peer, 'udp', d.posBytes));
  }

  /** The next StreamEvent of direction `dir` of a TCP connection (length-prefixed messages). */
  data(dir: Dir, ev: StreamEvent): void {
    this.run(() => {
      let s = this.splitters[dir];
      if (!s) {
        s = new DnsTcpSplitter((m) => this.onTcpMessage(dir, m), { stats: this.stats.tcp, midlife: this.midlife });
        this.splitters[dir] = s;
      }
      s.push(ev);
    });
  }

  /** Queries waiting for `queryTimeoutNs` or longer at `nowNs` become timed-out exchanges. */
  expire(nowNs: number): void {
    this.run(() => {
      for (const p of this.pending.values()) {
        if (nowNs - p.tsNs < this.queryTimeoutNs) continue;
        this.pending.delete(p.key);
        this.emitTimedOut(p);
      }
    });
  }

  /** The socket closed: every waiting query becomes a timed-out exchange. */
  close(): void {
    this.run(() => {
      for (const p of this.pending.values()) this.emitTimedOut(p);
      this.pending.clear();
    });
  }

  // ---- internals -------------------------------------------------------------------

  private onTcpMessage(dir: Dir, m: DnsTcpMessage): void {
    this.handle(dir, m.msg, m.firstTsNs, m.lastTsNs, null, 'tcp', m.pos);
  }

  private handle(
    dir: Dir, bytes: Buffer, firstTs: number, lastTs: number, peer: DnsPeer | null, transport: DnsTransport, pos: number,
  ): void {
    this.stats.messages++;
    const r = decodeDns(bytes);
    if (!r.ok) {
      this.stats.decodeFailures[r.failure]++;
      return;
    }
    if (r.msg.qr) this.response(dir, r.msg, lastTs, peer);
    else this.query(dir, r.msg, firstTs, peer, transport, pos);
  }

  private query(dir: Dir, msg: DnsMessage, tsNs: number, peer: DnsPeer | null, transport: DnsTransport, pos: number): void {
    this.stats.queries++;
    const role: DnsRole = dir === 0 ? 'client' : 'server';
    const qname = lowerName(msg.qname);
    const pk = peerKey(peer);
    const key = `${role}\0${msg.id}\0${pk}\0${qname}\0${msg.qtype}`;
    const existing = this.pending.get(key);
    if (existing) {
      existing.retries++;
      this.stats.retries++;
      return;
    }
    if (this.pending.size >= this.maxPending) {
      const oldest = this.pending.keys().next().value as string;
      this.pending.delete(oldest);
      this.stats.droppedQueries++;
    }
    this.pending.set(key, {
      key, role, id: msg.id, peer, peerKey: pk, qname, qtype: msg.qtype, qtypeName: msg.qtypeName,
      opcode: msg.opcode, tsNs, pos, transport, retries: 0,
    });
  }

  private response(dir: Dir, msg: DnsMessage, tsNs: number, peer: DnsPeer | null): void {
    this.stats.responses++;
    if (msg.answerError) this.stats.answerErrors++;
    // A response travels opposite to its query: one we receive answers one we sent.
    const role: DnsRole = dir === 1 ? 'client' : 'server';
    const pk = peerKey(peer);
    let p: Pending | undefined;
    if (msg.hasQuestion) {
      p = this.pending.get(`${role}\0${msg.id}\0${pk}\0${lowerName(msg.qname)}\0${msg.qtype}`);
    } else {
      for (const c of this.pending.values()) {
        if (c.role !== role || c.id !== msg.id || c.peerKey !== pk) continue;
        if (p) {
          p = undefined; // ambiguous: more than one query fits
          break;
        }
        p = c;
      }
    }
    if (!p) {
      this.stats.unmatchedResponses++;
      return;
    }
    this.pending.delete(p.key);
    this.stats.exchanges++;
    this.deliver({
      id: p.id, qname: p.qname, qtype: p.qtype, qtypeName: p.qtypeName, opcode: p.opcode,
      rcode: msg.rcode, rcodeName: rcodeName(msg.rcode), answers: msg.answers, answerCount: msg.answerCount,
      queryTsNs: p.tsNs, responseTsNs: tsNs, latencyNs: Math.max(0, tsNs - p.tsNs), timedOut: false,
      transport: p.transport, peer: p.peer, truncated: msg.flags.tc, role: p.role, retries: p.retries,
      queryPos: p.pos, answerError: msg.answerError,
    });
  }

  private emitTimedOut(p: Pending): void {
    this.stats.exchanges++;
    this.stats.timedOut++;
    this.deliver({
      id: p.id, qname: p.qname, qtype: p.qtype, qtypeName: p.qtypeName, opcode: p.opcode,
      rcode: -1, rcodeName: '', answers: [], answerCount: 0,
      queryTsNs: p.tsNs, responseTsNs: 0, latencyNs: 0, timedOut: true,
      transport: p.transport, peer: p.peer, truncated: false, role: p.role, retries: p.retries,
      queryPos: p.pos, answerError: null,
    });
  }

  /** Drop TCP framing: a new splitter resynchronises at the next syscall start. */
  protected override recover(): void {
    this.splitters[0] = null;
    this.splitters[1] = null;
  }
}
