/**
 * tcp: one `connections` row per closed TCP connection and one `tcp_events` row per
 * retransmit, reset and drop. Stateless: every record carries what its row needs, so this
 * lane never holds anything a restart would have to re-read.
 */
import {
  ConnFlags, RecordKind, TcpEventFlags, tcpStateName,
  type ConnCloseRecord, type DecodedRecord, type SkbDropRecord, type TcpEventRecord,
} from '../../schemas/records.js';
import type { EnvelopeContext, FunctionLane, LaneContext, ProcessingFunction } from '../runtime/function.js';
import { connUuid, roleName, wallNs } from '../runtime/rows.js';

const NO_CONN = '00000000-0000-0000-0000-000000000000';
const IP_PROTOCOLS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

function connId(ctx: EnvelopeContext, cookie: number): string {
  return cookie ? connUuid(ctx.envelope.boot, cookie) : NO_CONN;
}

function closeRow(r: ConnCloseRecord, ctx: EnvelopeContext) {
  const e = ctx.envelope;
  const openNs = r.openTsNs || r.tsNs;
  return {
    ts_open: wallNs(openNs, e.clock),
    ts_close: wallNs(r.tsNs, e.clock),
    region: e.region,
    node: e.node,
    conn_id: connId(ctx, r.connId),
    pid: r.tgid,
    comm: r.comm,
    role: roleName(r.role),
    saddr: r.tuple.saddr,
    sport: r.tuple.sport,
    daddr: r.tuple.daddr,
    dport: r.tuple.dport,
    bytes_sent: r.txBytes,
    bytes_received: r.rxBytes,
    retransmits: r.retransmits,
    duration_ns: Math.max(0, r.tsNs - openNs),
    netns: r.netnsIno,
    cgroup_id: r.cgroupId.toString(),
    established: r.connFlags & ConnFlags.NeverEstablished ? 0 : 1,
    midlife: r.connFlags & ConnFlags.Midlife ? 1 : 0,
    last_state: tcpStateName(r.oldState),
  };
}

function eventKind(r: TcpEventRecord): string {
  if (r.kind === RecordKind.TcpRetransmit) return r.eventFlags & TcpEventFlags.Synack ? 'synack_retransmit' : 'retransmit';
  return r.eventFlags & TcpEventFlags.RstSent ? 'reset_sent' : 'reset_received';
}

function eventRow(r: TcpEventRecord | SkbDropRecord, ctx: EnvelopeContext) {
  const e = ctx.envelope;
  const drop = r.kind === RecordKind.SkbDrop ? (r as SkbDropRecord) : null;
  const ev = drop ? null : (r as TcpEventRecord);
  return {
    ts: wallNs(r.tsNs, e.clock),
    region: e.region,
    node: e.node,
    conn_id: connId(ctx, r.connId),
    pid: r.tgid,
    comm: ev?.comm ?? '',
    kind: ev ? eventKind(ev) : 'drop',
    saddr: r.tuple.saddr,
    sport: r.tuple.sport,
    daddr: r.tuple.daddr,
    dport: r.tuple.dport,
    protocol: IP_PROTOCOLS[r.tuple.protocol] ?? String(r.tuple.protocol),
    state: r.state ? tcpStateName(r.state) : '',
    drop_reason: drop ? (e.drop_reasons?.[drop.reason] ?? `REASON_${drop.reason}`) : '',
    drop_location: drop ? (e.ksyms?.[drop.location.toString(16)] ?? `0x${drop.location.toString(16)}`) : '',
    reset_reason: ev && ev.kind === RecordKind.TcpReset && ev.eventFlags & TcpEventFlags.RstSent ? String(ev.reason) : '',
    ifindex: drop?.ifindex ?? 0,
    pkt_len: drop?.pktLenBytes ?? 0,
    netns: r.netnsIno,
  };
}

class TcpLane implements FunctionLane {
  constructor(private readonly ctx: LaneContext) {}

  onRecord(rec: DecodedRecord, env: EnvelopeContext): void {
    switch (rec.kind) {
      case RecordKind.ConnClose:
        this.ctx.emit('connections', closeRow(rec as ConnCloseRecord, env));
        break;
      case RecordKind.TcpRetransmit:
      case RecordKind.TcpReset:
      case RecordKind.SkbDrop:
        this.ctx.emit('tcp_events', eventRow(rec as TcpEventRecord | SkbDropRecord, env));
        break;
    }
  }

  lowWaterMark(): number {
    return Infinity;
  }
}

export const tcpFunction = {
  name: 'tcp',
  kinds: [RecordKind.ConnClose, RecordKind.TcpRetransmit, RecordKind.TcpReset, RecordKind.SkbDrop],
  tables: ['connections', 'tcp_events'],
  createLane: (ctx: LaneContext) => new TcpLane(ctx),
} satisfies ProcessingFunction;
