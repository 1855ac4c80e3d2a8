/**
 * Decoders for every kernel record kind (schemas/records.h, bpf/*.h). Records travel
 * undecoded from the edge; processors decode them here. Decoding never throws on bad
 * input: `decodeRecord` returns a failure kind the caller counts.
 */
import {
  CONN_CLOSE_REC, CONN_INFO_REC, CONN_OPEN_REC, FLOW_TUPLE, PEER_ADDR, REC_HDR, SKB_DROP_REC,
  SOCK_DATA_REC, TCP_EVENT_REC,
} from './layouts.js';

/** Record kinds (enum rec_kind); ranges are reserved per concern. */
export const RecordKind = {
  ConnOpen: 0x0001,
  ConnInfo: 0x0002,
  ConnClose: 0x0003,
  SockData: 0x0010,
  TcpRetransmit: 0x0020,
  TcpReset: 0x0021,
  SkbDrop: 0x0022,
  TlsData: 0x0030,
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

/** A captured socket's CONN_INFO repeats with its next data after this long (bpf/conn.h). */
export const CONN_INFO_REFRESH_NS = 10_000_000_000;

/** Kinds stay below this, so per-kind counters are arrays. */
export const REC_KIND_MAX = 0x40;

/** Layout version each decoder understands, per kind. */
export const RECORD_VERSIONS: Readonly<Record<RecordKind, number>> = {
  [RecordKind.ConnOpen]: 1,
  [RecordKind.ConnInfo]: 1,
  [RecordKind.ConnClose]: 1,
  [RecordKind.SockData]: 1,
  [RecordKind.TcpRetransmit]: 1,
  [RecordKind.TcpReset]: 1,
  [RecordKind.SkbDrop]: 1,
  [RecordKind.TlsData]: 1,
};

/** Human names of kinds, for logs, metrics and capture_losses rows. */
export const KIND_NAMES: Readonly<Record<number, string>> = {
  [RecordKind.ConnOpen]: 'conn_open',
  [RecordKind.ConnInfo]: 'conn_info',
  [RecordKind.ConnClose]: 'conn_close',
  [RecordKind.SockData]: 'sock_data',
  [RecordKind.TcpRetransmit]: 'tcp_retransmit',
  [RecordKind.TcpReset]: 'tcp_reset',
  [RecordKind.SkbDrop]: 'skb_drop',
  [RecordKind.TlsData]: 'tls_data',
};

export function kindName(kind: number): string {
  return KIND_NAMES[kind] ?? `kind_${kind}`;
}

/** rec_hdr.flags */
export const HdrFlags = { OwnerKnown: 1 << 0 } as const;

/** conn_*_rec.conn_flags */
export const ConnFlags = {
  Midlife: 1 << 0,
  Captured: 1 << 1,
  RoleGuessed: 1 << 2,
  NeverEstablished: 1 << 3,
} as const;

/** sock_data_rec.data_flags */
export const DataFlags = {
  Truncated: 1 << 0,
  NoBuffer: 1 << 1,
  Last: 1 << 2,
  ReadFailed: 1 << 3,
} as const;

/** tcp_event_rec.event_flags */
export const TcpEventFlags = { Synack: 1 << 0, RstSent: 1 << 1, NoSocket: 1 << 2 } as const;

/** skb_drop_rec.drop_flags */
export const DropFlags = { HasPorts: 1 << 0 } as const;

export const Role = { Unknown: 0, Client: 1, Server: 2 } as const;
export type Role = (typeof Role)[keyof typeof Role];

export const Direction = { Egress: 0, Ingress: 1 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

/** enum tls_op (bpf/tls.h): the `syscall` field of TLS_DATA records. */
export const TLS_OPS = ['', 'SSL_read', 'SSL_write', 'SSL_read_ex', 'SSL_write_ex'] as const;

/** enum sock_op */
export const SOCK_OPS = ['other', 'read', 'write', 'readv', 'writev', 'recvfrom', 'sendto', 'recvmsg', 'sendmsg', 'recvmmsg', 'sendmmsg'] as const;

/** Linux TCP states by number (include/net/tcp_states.h); stable across kernels. */
export const TCP_STATES = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING', 'NEW_SYN_RECV', 'BOUND_INACTIVE'] as const;

export function tcpStateName(n: number): string {
  return TCP_STATES[n] ?? `STATE_${n}`;
}

/** Common header of every record. */
export interface RecordHeader {
  kind: number;
  version: number;
  flags: number;
  sizeBytes: number;
  /** CLOCK_MONOTONIC nanoseconds (exact below 2^53 ns, about 104 days of uptime). */
  tsNs: number;
  /** Socket cookie; 0 when no socket is known. */
  connId: number;
  tgid: number;
  pid: number;
}

/** A socket's or packet's addresses; IPv4 as IPv4-mapped IPv6 text. */
export interface FlowTuple {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  /** 4 or 6: the family the socket was opened with. */
  family: 4 | 6;
  /** IP protocol number (6 TCP, 17 UDP). */
  protocol: number;
}

export interface PeerAddr {
  addr: string;
  port: number;
}

export interface ConnOpenRecord extends RecordHeader {
  tuple: FlowTuple;
  cgroupId: bigint;
  connectTsNs: number;
  netnsIno: number;
  role: number;
  connFlags: number;
  comm: string;
}

export interface ConnInfoRecord extends RecordHeader {
  tuple: FlowTuple;
  cgroupId: bigint;
  openTsNs: number;
  netnsIno: number;
  role: number;
  connFlags: number;
  comm: string;
}

export interface ConnCloseRecord extends RecordHeader {
  tuple: FlowTuple;
  openTsNs: number;
  txBytes: number;
  rxBytes: number;
  cgroupId: bigint;
  retransmits: number;
  netnsIno: number;
  role: number;
  connFlags: number;
  oldState: number;
  comm: string;
}

/**
 * Socket payload (kind SockData) or TLS plaintext (kind TlsData: same layout, positions
 * count plaintext bytes, `syscall` is an enum tls_op).
 */
export interface SockDataRecord extends RecordHeader {
  /** Position of payload[0] in this direction of the socket. */
  posBytes: number;
  /** Bytes the whole syscall moved. */
  lenBytes: number;
  /** Offset of payload[0] within the syscall's bytes. */
  offsetBytes: number;
  syscall: number;
  direction: Direction;
  dataFlags: number;
  /** Datagram peer of an unconnected UDP socket, else null. */
  peer: PeerAddr | null;
  /** The captured bytes (a view into the envelope's record blob). */
  payload: Buffer;
}

export interface TcpEventRecord extends RecordHeader {
  tuple: FlowTuple;
  netnsIno: number;
  reason: number;
  state: number;
  eventFlags: number;
  comm: string;
}

export interface SkbDropRecord extends RecordHeader {
  tuple: FlowTuple;
  location: bigint;
  reason: number;
  netnsIno: number;
  ifindex: number;
  pktLenBytes: number;
  state: number;
  dropFlags: number;
}

export type DecodedRecord =
  | ConnOpenRecord | ConnInfoRecord | ConnCloseRecord | SockDataRecord | TcpEventRecord | SkbDropRecord;

/** Why a record could not be decoded; counted per kind by callers. */
export type DecodeFailure = 'truncated' | 'bad_size' | 'unknown_kind' | 'unknown_version';

function u64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 0x1_0000_0000;
}

function cstr(b: Buffer, off: number, len: number): string {
  let end = off;
  const max = off + len;
  while (end < max && b[end] !== 0) end++;
  return b.toString('latin1', off, end);
}

/** 16 address bytes as text: dotted IPv4 behind ::ffff: when mapped, else IPv6. */
export function formatAddr(b: Buffer, off: number): string {
  let mapped = b[off + 10] === 0xff && b[off + 11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) if (b[off + i] !== 0) mapped = false;
  if (mapped) return `::ffff:${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[off + i] << 8) | b[off + i + 1]).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function decodeTuple(b: Buffer, off: number): FlowTuple {
  const f = FLOW_TUPLE.fields;
  return {
    saddr: formatAddr(b, off + f.saddr),
    daddr: formatAddr(b, off + f.daddr),
    sport: b.readUInt16LE(off + f.sport),
    dport: b.readUInt16LE(off + f.dport),
    family: b.readUInt16LE(off + f.family) === 10 ? 6 : 4,
    protocol: b[off + f.protocol],
  };
}

/** Read the common header at `off`. The caller has checked that 32 bytes are there. */
export function decodeHeader(b: Buffer, off: number): RecordHeader {
  const f = REC_HDR.fields;
  return {
    kind: b.readUInt16LE(off + f.kind),
    version: b[off + f.version],
    flags: b[off + f.flags],
    sizeBytes: b.readUInt32LE(off + f.size_bytes),
    tsNs: u64(b, off + f.ts_ns),
    connId: u64(b, off + f.conn_id),
    tgid: b.readUInt32LE(off + f.tgid),
    pid: b.readUInt32LE(off + f.pid),
  };
}

/** Minimum size of each kind's record (its struct size). */
const MIN_SIZE: Readonly<Record<number, number>> = {
  [RecordKind.ConnOpen]: CONN_OPEN_REC.size,
  [RecordKind.ConnInfo]: CONN_INFO_REC.size,
  [RecordKind.ConnClose]: CONN_CLOSE_REC.size,
  [RecordKind.SockData]: SOCK_DATA_REC.size,
  [RecordKind.TcpRetransmit]: TCP_EVENT_REC.size,
  [RecordKind.TcpReset]: TCP_EVENT_REC.size,
  [RecordKind.SkbDrop]: SKB_DROP_REC.size,
  [RecordKind.TlsData]: SOCK_DATA_REC.size,
};

/**
 * Decode the record at `off` of `b` (a record blob). Returns the record, or the reason it
 * cannot be decoded. Never throws for any input bytes.
 */
export function decodeRecord(b: Buffer, off: number): DecodedRecord | DecodeFailure {
  if (off + REC_HDR.size > b.length) return 'truncated';
  const h = decodeHeader(b, off);
  const min = MIN_SIZE[h.kind];
  if (min === undefined) return 'unknown_kind';
  if (h.version !== RECORD_VERSIONS[h.kind as RecordKind]) return 'unknown_version';
  if (h.sizeBytes < min) return 'bad_size';
  if (off + h.sizeBytes > b.length) return 'truncated';
  // Each kind's fields are added to the header object: node 20's V8 makes `{ ...h, x }` cost
  // about a microsecond per added property, far more than the rest of the decode.
  switch (h.kind) {
    case RecordKind.ConnOpen: {
      const f = CONN_OPEN_REC.fields;
      const r = h as ConnOpenRecord;
      r.tuple = decodeTuple(b, off + f.tuple);
      r.cgroupId = b.readBigUInt64LE(off + f.cgroup_id);
      r.connectTsNs = u64(b, off + f.connect_ts_ns);
      r.netnsIno = b.readUInt32LE(off + f.netns_ino);
      r.role = b[off + f.role];
      r.connFlags = b[off + f.conn_flags];
      r.comm = cstr(b, off + f.comm, 16);
      return r;
    }
    case RecordKind.ConnInfo: {
      const f = CONN_INFO_REC.fields;
      const r = h as ConnInfoRecord;
      r.tuple = decodeTuple(b, off + f.tuple);
      r.cgroupId = b.readBigUInt64LE(off + f.cgroup_id);
      r.openTsNs = u64(b, off + f.open_ts_ns);
      r.netnsIno = b.readUInt32LE(off + f.netns_ino);
      r.role = b[off + f.role];
      r.connFlags = b[off + f.conn_flags];
      r.comm = cstr(b, off + f.comm, 16);
      return r;
    }
    case RecordKind.ConnClose: {
      const f = CONN_CLOSE_REC.fields;
      const r = h as ConnCloseRecord;
      r.tuple = decodeTuple(b, off + f.tuple);
      r.openTsNs = u64(b, off + f.open_ts_ns);
      r.txBytes = u64(b, off + f.tx_bytes);
      r.rxBytes = u64(b, off + f.rx_bytes);
      r.cgroupId = b.readBigUInt64LE(off + f.cgroup_id);
      r.retransmits = b.readUInt32LE(off + f.retransmits);
      r.netnsIno = b.readUInt32LE(off + f.netns_ino);
      r.role = b[off + f.role];
      r.connFlags = b[off + f.conn_flags];
      r.oldState = b[off + f.old_state];
      r.comm = cstr(b, off + f.comm, 16);
      return r;
    }
    case RecordKind.SockData:
    case RecordKind.TlsData: {
      const f = SOCK_DATA_REC.fields;
      const cap = b.readUInt32LE(off + f.cap_bytes);
      if (f.payload + cap > h.sizeBytes) return 'bad_size';
      const peerFamily = b.readUInt16LE(off + f.peer + PEER_ADDR.fields.family);
      const r = h as SockDataRecord;
      r.posBytes = u64(b, off + f.pos_bytes);
      r.lenBytes = b.readUInt32LE(off + f.len_bytes);
      r.offsetBytes = b.readUInt32LE(off + f.offset_bytes);
      r.syscall = b.readUInt16LE(off + f.syscall);
      r.direction = (b[off + f.direction] ? 1 : 0) as Direction;
      r.dataFlags = b[off + f.data_flags];
      r.peer = peerFamily
        ? { addr: formatAddr(b, off + f.peer + PEER_ADDR.fields.addr), port: b.readUInt16LE(off + f.peer + PEER_ADDR.fields.port) }
        : null;
      r.payload = b.subarray(off + f.payload, off + f.payload + cap);
      return r;
    }
    case RecordKind.TcpRetransmit:
    case RecordKind.TcpReset: {
      const f = TCP_EVENT_REC.fields;
      const r = h as TcpEventRecord;
      r.tuple = decodeTuple(b, off + f.tuple);
      r.netnsIno = b.readUInt32LE(off + f.netns_ino);
      r.reason = b.readUInt32LE(off + f.reason);
      r.state = b[off + f.state];
      r.eventFlags = b[off + f.event_flags];
      r.comm = cstr(b, off + f.comm, 16);
      return r;
    }
    case RecordKind.SkbDrop: {
      const f = SKB_DROP_REC.fields;
      const r = h as SkbDropRecord;
      r.tuple = decodeTuple(b, off + f.tuple);
      r.location = b.readBigUInt64LE(off + f.location);
      r.reason = b.readUInt32LE(off + f.reason);
      r.netnsIno = b.readUInt32LE(off + f.netns_ino);
      r.ifindex = b.readUInt32LE(off + f.ifindex);
      r.pktLenBytes = b.readUInt32LE(off + f.pkt_len_bytes);
      r.state = b[off + f.state];
      r.dropFlags = b[off + f.drop_flags];
      return r;
    }
  }
  return 'unknown_kind';
}

/** Records in a blob are 8-byte aligned: the next record starts here. */
export function nextRecordOffset(off: number, sizeBytes: number): number {
  // Arithmetic, not `& ~7`: bitwise operators wrap at 2^31, and a forged size near 2^32
  // would give back this very offset.
  return off + Math.ceil(sizeBytes / 8) * 8;
}

/** Location of the drop address inside an skb_drop_rec, for the edge's symbol table. */
export const SKB_DROP_LOCATION_OFFSET = SKB_DROP_REC.fields.location;
/** Location of the drop reason inside an skb_drop_rec. */
export const SKB_DROP_REASON_OFFSET = SKB_DROP_REC.fields.reason;
