/**
 * Builds raw kernel records and envelopes in tests, byte for byte as the BPF programs and
 * the edge write them (the layouts in schemas/layouts.ts, checked against BTF).
 */
import {
  CONN_CLOSE_REC, CONN_INFO_REC, CONN_OPEN_REC, FLOW_TUPLE, REC_HDR, SKB_DROP_REC, SOCK_DATA_REC, TCP_EVENT_REC,
} from '../../schemas/layouts.js';
import { ENVELOPE_VERSION, encodeEnvelope, type Envelope, type LossCount } from '../../schemas/envelope.js';
import { DataFlags, RECORD_VERSIONS, RecordKind } from '../../schemas/records.js';

export interface TupleSpec {
  saddr: string; // dotted IPv4 or IPv6 text
  daddr: string;
  sport: number;
  dport: number;
  protocol?: number;
}

export interface HeaderSpec {
  tsNs: number;
  connId: number;
  tgid?: number;
  pid?: number;
  flags?: number;
}

function writeU64(b: Buffer, off: number, v: number | bigint): void {
  b.writeBigUInt64LE(BigInt(v), off);
}

function writeAddr(b: Buffer, off: number, a: string): void {
  if (a.includes('.')) {
    const parts = a.replace(/^::ffff:/, '').split('.').map(Number);
    b[off + 10] = 0xff;
    b[off + 11] = 0xff;
    parts.forEach((p, i) => (b[off + 12 + i] = p));
    return;
  }
  const [head, tail = ''] = a.split('::');
  const hs = head ? head.split(':') : [];
  const ts = tail ? tail.split(':') : [];
  const groups = [...hs, ...new Array(8 - hs.length - ts.length).fill('0'), ...ts];
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), off + 2 * i));
}

function header(b: Buffer, kind: number, size: number, h: HeaderSpec): void {
  const f = REC_HDR.fields;
  b.writeUInt16LE(kind, f.kind);
  b[f.version] = RECORD_VERSIONS[kind as RecordKind];
  b[f.flags] = h.flags ?? (h.tgid ? 1 : 0);
  b.writeUInt32LE(size, f.size_bytes);
  writeU64(b, f.ts_ns, h.tsNs);
  writeU64(b, f.conn_id, h.connId);
  b.writeUInt32LE(h.tgid ?? 0, f.tgid);
  b.writeUInt32LE(h.pid ?? h.tgid ?? 0, f.pid);
}

function tuple(b: Buffer, off: number, t: TupleSpec): void {
  const f = FLOW_TUPLE.fields;
  writeAddr(b, off + f.saddr, t.saddr);
  writeAddr(b, off + f.daddr, t.daddr);
  b.writeUInt16LE(t.sport, off + f.sport);
  b.writeUInt16LE(t.dport, off + f.dport);
  b.writeUInt16LE(t.saddr.includes('.') ? 2 : 10, off + f.family);
  b[off + f.protocol] = t.protocol ?? 6;
}

export function connOpen(h: HeaderSpec, t: TupleSpec, role: number, comm = '', connFlags = 0): Buffer {
  const b = Buffer.alloc(CONN_OPEN_REC.size);
  const f = CONN_OPEN_REC.fields;
  header(b, RecordKind.ConnOpen, b.length, h);
  tuple(b, f.tuple, t);
  b[f.role] = role;
  b[f.conn_flags] = connFlags;
  b.write(comm, f.comm, 15, 'latin1');
  return b;
}

export function connInfo(h: HeaderSpec, t: TupleSpec, role: number, comm: string, connFlags = 2, openTsNs = 0): Buffer {
  const b = Buffer.alloc(CONN_INFO_REC.size);
  const f = CONN_INFO_REC.fields;
  header(b, RecordKind.ConnInfo, b.length, h);
  tuple(b, f.tuple, t);
  writeU64(b, f.open_ts_ns, openTsNs);
  b[f.role] = role;
  b[f.conn_flags] = connFlags;
  b.write(comm, f.comm, 15, 'latin1');
  return b;
}

export function connClose(h: HeaderSpec, t: TupleSpec, o: { role: number; comm: string; openTsNs: number; txBytes: number; rxBytes: number; retransmits?: number; oldState?: number; connFlags?: number }): Buffer {
  const b = Buffer.alloc(CONN_CLOSE_REC.size);
  const f = CONN_CLOSE_REC.fields;
  header(b, RecordKind.ConnClose, b.length, h);
  tuple(b, f.tuple, t);
  writeU64(b, f.open_ts_ns, o.openTsNs);
  writeU64(b, f.tx_bytes, o.txBytes);
  writeU64(b, f.rx_bytes, o.rxBytes);
  b.writeUInt32LE(o.retransmits ?? 0, f.retransmits);
  b[f.role] = o.role;
  b[f.conn_flags] = o.connFlags ?? 0;
  b[f.old_state] = o.oldState ?? 1;
  b.write(o.comm, f.comm, 15, 'latin1');
  return b;
}

/** One data record; `payload` is what was captured, `lenBytes` what the syscall moved. */
export function sockData(h: HeaderSpec, o: { direction: 0 | 1; posBytes: number; payload: Buffer; lenBytes?: number; offsetBytes?: number; dataFlags?: number; syscall?: number }): Buffer {
  const f = SOCK_DATA_REC.fields;
  const b = Buffer.alloc(SOCK_DATA_REC.size + o.payload.length);
  header(b, RecordKind.SockData, b.length, h);
  writeU64(b, f.pos_bytes, o.posBytes);
  b.writeUInt32LE(o.lenBytes ?? o.payload.length, f.len_bytes);
  b.writeUInt32LE(o.payload.length, f.cap_bytes);
  b.writeUInt32LE(o.offsetBytes ?? 0, f.offset_bytes);
  b.writeUInt16LE(o.syscall ?? 2, f.syscall);
  b[f.direction] = o.direction;
  b[f.data_flags] = o.dataFlags ?? 4;
  o.payload.copy(b, f.payload);
  return b;
}

export function tcpEvent(kind: number, h: HeaderSpec, t: TupleSpec, o: { state?: number; eventFlags?: number; reason?: number; comm?: string } = {}): Buffer {
  const b = Buffer.alloc(TCP_EVENT_REC.size);
  const f = TCP_EVENT_REC.fields;
  header(b, kind, b.length, h);
  tuple(b, f.tuple, t);
  b.writeUInt32LE(o.reason ?? 0, f.reason);
  b[f.state] = o.state ?? 1;
  b[f.event_flags] = o.eventFlags ?? 0;
  b.write(o.comm ?? '', f.comm, 15, 'latin1');
  return b;
}

export function skbDrop(h: HeaderSpec, t: TupleSpec, o: { location: bigint; reason: number; pktLenBytes?: number; state?: number }): Buffer {
  const b = Buffer.alloc(SKB_DROP_REC.size);
  const f = SKB_DROP_REC.fields;
  header(b, RecordKind.SkbDrop, b.length, h);
  tuple(b, f.tuple, t);
  b.writeBigUInt64LE(o.location, f.location);
  b.writeUInt32LE(o.reason, f.reason);
  b.writeUInt32LE(o.pktLenBytes ?? 60, f.pkt_len_bytes);
  b[f.state] = o.state ?? 0;
  b[f.drop_flags] = 1;
  return b;
}

/** Concatenate records 8-byte aligned, as an envelope carries them. */
export function blob(records: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    parts.push(r);
    const pad = ((r.length + 7) & ~7) - r.length;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  return Buffer.concat(parts);
}

/** An envelope as the edge would seal it. */
export function envelope(o: { records: Buffer[]; seq: number; shard?: number; node?: string; region?: string; run?: string; boot?: string; mono?: number; lost?: LossCount[]; ksyms?: Record<string, string>; drop_reasons?: Record<string, string> }): Envelope {
  return {
    v: ENVELOPE_VERSION,
    region: o.region ?? 'test',
    node: o.node ?? 'node1',
    run: o.run ?? 'run1',
    seq: o.seq,
    shard: o.shard ?? 0,
    boot: o.boot ?? '3e43dd63-6003-4ed5-8a7e-59214f932070',
    clock: [1_700_000_000, 0],
    mono: o.mono ?? 0,
    count: o.records.length,
    records: blob(o.records),
    lost: o.lost ?? [],
    ...(o.ksyms ? { ksyms: o.ksyms } : {}),
    ...(o.drop_reasons ? { drop_reasons: o.drop_reasons } : {}),
  };
}

export { encodeEnvelope };

/**
 * What a capture of one syscall moving `bytes` holds: all of them, only the first `cap`
 * (Truncated), or none (`nobuf`: sendfile, NoBuffer).
 */
export function captured(bytes: Buffer, o: { cap?: number; nobuf?: boolean }): { payload: Buffer; dataFlags: number } {
  if (o.nobuf) return { payload: Buffer.alloc(0), dataFlags: DataFlags.Last | DataFlags.NoBuffer | DataFlags.Truncated };
  if (o.cap !== undefined && o.cap < bytes.length) return { payload: bytes.subarray(0, o.cap), dataFlags: DataFlags.Last | DataFlags.Truncated };
  return { payload: bytes, dataFlags: DataFlags.Last };
}
