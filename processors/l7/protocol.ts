/**
 * The contract between the connection table (./connection-table.ts) and an L7 protocol: how
 * the protocol recognises its connections, the tracker it keeps per connection, and the row
 * of each item a tracker completes. A protocol is a processing function (`l7Function`) whose
 * connections the shard's one table tracks.
 */
import { RecordKind, Role, type FlowTuple } from '../../schemas/records.js';
import type { LaneContext, ProcessingFunction, Row } from '../runtime/function.js';
import { sides, wallNs } from '../runtime/rows.js';
import type { RowOptions } from './path-mask.js';
import type { Harm } from './harm.js';
import type { L7Tracker, TrackerHints } from './tracker.js';

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
  /** Its retransmits and drops so far (./harm.ts), null before the first. */
  harms: readonly Harm[] | null;
}

/**
 * A protocol in the registry of L7 trackers: its name, the transports and streams it reads,
 * how it recognises (or rules out) a connection from its owner and first bytes, its tracker
 * and its rows.
 */
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
  /** The row of an item, or null to write none; `opts` says what the processor keeps. */
  row(x: X, c: ConnView, clock: [number, number], opts: Readonly<RowOptions>): Row | null;
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

/** A ResumeState with nothing to resume from. */
export function noResumeState(): ResumeState {
  return { points: new Map(), owners: new Map(), known: new Map() };
}

/** Key of a connection's remembered resume point: node, conn_id and tls, as rows carry them. */
export function resumeKey(node: string, connId: string, tls: boolean): string {
  return `${node}|${connId}|${tls ? 1 : 0}`;
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

/** A processing function for an L7 protocol, tracked in the shard's connection table. */
export function l7Function<X>(p: L7Protocol<X>): ProcessingFunction {
  const kinds: number[] = [RecordKind.ConnInfo, RecordKind.ConnClose];
  // A TCP connection's retransmits and drops: the rows of its exchanges carry them.
  if (p.tcp) kinds.push(RecordKind.TcpRetransmit, RecordKind.SkbDrop);
  if (p.plain) kinds.push(RecordKind.SockData);
  if (p.tls) kinds.push(RecordKind.TlsData);
  return { name: p.name, kinds, tables: [p.table], protocol: p as L7Protocol<unknown> };
}
