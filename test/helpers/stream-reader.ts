/**
 * Reads a raw stream the way a processor would: every message through a JetStream ordered
 * consumer, decoded with decodeEnvelope and decodeRecord/nextRecordOffset. Keeps every
 * envelope and decoded record, reads incrementally (update() fetches only what is new) and
 * answers the questions tests ask: records of a kind, of a connection, of a 4-tuple, of a
 * namespace; losses; a connection's payload reassembled by byte position.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { decodeEnvelope, type Envelope, type EnvelopeFailure } from '../../schemas/envelope.js';
import {
  decodeHeader, decodeRecord, nextRecordOffset, DataFlags, RecordKind, REC_KIND_MAX,
  type ConnCloseRecord, type ConnInfoRecord, type ConnOpenRecord, type DecodedRecord, type DecodeFailure,
  type Direction, type SkbDropRecord, type SockDataRecord, type TcpEventRecord,
} from '../../schemas/records.js';
import { REC_HDR } from '../../schemas/layouts.js';

/** One envelope as it came off the stream. */
export interface StreamEnvelope {
  /** Stream sequence of the message. */
  streamSeq: number;
  subject: string;
  /** Nats-Msg-Id header. */
  msgId: string | undefined;
  env: Envelope;
}

/** One decoded record and the envelope that carried it. */
export interface StreamRecord<R extends DecodedRecord = DecodedRecord> {
  rec: R;
  env: Envelope;
  streamSeq: number;
}

/** A 4-tuple as tests write it: IPv4 dotted or IPv6 text, ports as numbers. */
export interface Tuple {
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
}

/** One syscall's worth of data records (all chunks sharing its start position). */
export interface SyscallData {
  /** Position of the syscall's first byte in its direction. */
  start: number;
  /** Bytes the syscall moved. */
  len: number;
  /** Union of the data flags of its records. */
  flags: number;
  /** Payload bytes its records carry. */
  captured: number;
  syscall: number;
}

/** One direction of one connection, reassembled by byte position. */
export interface Assembled {
  /** Sum of the syscall lengths: what the direction moved according to the records. */
  totalBytes: number;
  /** Bytes by position (zero where nothing was captured), length totalBytes or more. */
  bytes: Buffer;
  /** 1 where a record carried the byte. */
  covered: Uint8Array;
  /** Syscalls in position order. */
  syscalls: SyscallData[];
  /** Syscall ranges tile [0, totalBytes) with no gap and no overlap. */
  contiguous: boolean;
  /** Records whose payload claims bytes beyond the syscall they belong to, or overlaps. */
  inconsistencies: string[];
}

/** Text of an address as decoded records spell it: IPv4 as ::ffff:a.b.c.d. */
export function recordAddr(a: string): string {
  return /^\d+\.\d+\.\d+\.\d+$/.test(a) ? `::ffff:${a}` : a.toLowerCase();
}

/** Reassemble one direction of a connection from its data records. */
export function assemble(records: SockDataRecord[]): Assembled {
  const bySyscall = new Map<number, SyscallData>();
  const inconsistencies: string[] = [];
  for (const r of records) {
    const start = r.posBytes - r.offsetBytes;
    let s = bySyscall.get(start);
    if (!s) bySyscall.set(start, (s = { start, len: r.lenBytes, flags: 0, captured: 0, syscall: r.syscall }));
    if (s.len !== r.lenBytes) inconsistencies.push(`records at ${start} disagree on the syscall length (${s.len} vs ${r.lenBytes})`);
    s.flags |= r.dataFlags;
    s.captured += r.payload.length;
    if (r.offsetBytes + r.payload.length > r.lenBytes) inconsistencies.push(`record at ${r.posBytes} carries ${r.payload.length} bytes beyond its syscall's ${r.lenBytes}`);
  }
  const syscalls = [...bySyscall.values()].sort((a, b) => a.start - b.start);
  let totalBytes = 0;
  let contiguous = true;
  for (const s of syscalls) {
    if (s.start !== totalBytes) contiguous = false;
    totalBytes = Math.max(totalBytes, s.start + s.len);
  }
  if (syscalls.reduce((n, s) => n + s.len, 0) !== totalBytes) contiguous = false;
  const bytes = Buffer.alloc(totalBytes);
  const covered = new Uint8Array(totalBytes);
  for (const r of records) {
    const end = Math.min(r.posBytes + r.payload.length, totalBytes);
    for (let p = r.posBytes; p < end; p++) {
      const b = r.payload[p - r.posBytes];
      if (covered[p] && bytes[p] !== b) inconsistencies.push(`two records disagree on the byte at ${p}`);
      bytes[p] = b;
      covered[p] = 1;
    }
  }
  return { totalBytes, bytes, covered, syscalls, contiguous, inconsistencies };
}

/** Positions in [from, to) of `a` that no record carried. */
export function uncovered(a: Assembled, from = 0, to = a.totalBytes): number {
  let n = 0;
  for (let p = from; p < to; p++) if (!a.covered[p]) n++;
  return n;
}

/** Positions where `a` carried a byte that differs from `expected` (first few), or where it lies beyond it. */
export function mismatches(a: Assembled, expected: Buffer, limit = 5): string[] {
  const out: string[] = [];
  for (let p = 0; p < a.totalBytes && out.length < limit; p++) {
    if (!a.covered[p]) continue;
    if (p >= expected.length) out.push(`captured byte at ${p} beyond the ${expected.length} expected`);
    else if (a.bytes[p] !== expected[p]) out.push(`byte at ${p}: captured 0x${a.bytes[p].toString(16)}, expected 0x${expected[p].toString(16)}`);
  }
  return out;
}

export class StreamReader {
  readonly envelopes: StreamEnvelope[] = [];
  readonly records: StreamRecord[] = [];
  /** Envelopes or records that failed to decode. */
  readonly failures: { streamSeq: number; failure: EnvelopeFailure | DecodeFailure }[] = [];
  private lastSeq = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly ownConnection: boolean,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    readonly stream: string,
  ) {}

  /** A reader of `stream` on the server at `url` (own connection), or over `nc`. */
  static async open(server: string | NatsConnection, stream: string): Promise<StreamReader> {
    const own = typeof server === 'string';
    const nc = own ? await connect({ servers: server, name: `netrig-test-reader-${process.pid}` }) : server;
    const jsm = await jetstreamManager(nc);
    return new StreamReader(nc, own, jetstream(nc), jsm, stream);
  }

  /** Fetch every message stored since the last update; returns how many arrived. */
  async update(timeoutMs = 30_000): Promise<number> {
    const info = await this.jsm.streams.info(this.stream);
    const last = info.state.last_seq;
    if (last <= this.lastSeq) return 0;
    const consumer = await this.js.consumers.get(this.stream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.lastSeq + 1,
    });
    const msgs = await consumer.consume({ max_messages: 512 });
    const timer = setTimeout(() => void msgs.close(), timeoutMs);
    let n = 0;
    try {
      for await (const m of msgs) {
        if (m.seq <= this.lastSeq) continue;
        this.add(m.seq, m.subject, m.headers?.get('Nats-Msg-Id') || undefined, m.data);
        this.lastSeq = m.seq;
        n++;
        if (m.seq >= last) break;
      }
    } finally {
      clearTimeout(timer);
      await msgs.close();
    }
    if (this.lastSeq < last) throw new Error(`stream ${this.stream}: read up to ${this.lastSeq} of ${last} within ${timeoutMs} ms`);
    return n;
  }

  private add(streamSeq: number, subject: string, msgId: string | undefined, data: Uint8Array): void {
    const env = decodeEnvelope(data);
    if (typeof env === 'string') {
      this.failures.push({ streamSeq, failure: env });
      return;
    }
    this.envelopes.push({ streamSeq, subject, msgId, env });
    const b = env.records;
    let off = 0;
    while (off + REC_HDR.size <= b.length) {
      const r = decodeRecord(b, off);
      if (typeof r === 'string') {
        this.failures.push({ streamSeq, failure: r });
        const size = decodeHeader(b, off).sizeBytes;
        if (size < REC_HDR.size) break;
        off = nextRecordOffset(off, size);
        continue;
      }
      this.records.push({ rec: r, env, streamSeq });
      off = nextRecordOffset(off, r.sizeBytes);
    }
  }

  /** update() until `pred` holds; rejects with `what` and the last state after `timeoutMs`. */
  async waitFor(what: string, pred: (r: this) => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.update();
      if (pred(this)) return;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (stream ${this.stream}: ${this.envelopes.length} envelopes, ${this.records.length} records)`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Records of one kind (optionally of one edge run). */
  ofKind<R extends DecodedRecord = DecodedRecord>(kind: number, run?: string): StreamRecord<R>[] {
    return this.records.filter((r) => r.rec.kind === kind && (!run || r.env.run === run)) as StreamRecord<R>[];
  }

  /** Every record of a connection (conn_id), in stream order. */
  ofConn(connId: number): StreamRecord[] {
    return this.records.filter((r) => r.rec.connId === connId);
  }

  connOpens(filter: { netns?: number; role?: number } = {}): ConnOpenRecord[] {
    return this.ofKind<ConnOpenRecord>(RecordKind.ConnOpen).map((r) => r.rec)
      .filter((r) => (filter.netns === undefined || r.netnsIno === filter.netns) && (filter.role === undefined || r.role === filter.role));
  }

  connInfos(connId: number): ConnInfoRecord[] {
    return this.ofKind<ConnInfoRecord>(RecordKind.ConnInfo).map((r) => r.rec).filter((r) => r.connId === connId);
  }

  connCloses(connId: number): ConnCloseRecord[] {
    return this.ofKind<ConnCloseRecord>(RecordKind.ConnClose).map((r) => r.rec).filter((r) => r.connId === connId);
  }

  /** Connection records (open, info, close, TCP events) whose tuple is `t`, local side first. */
  byTuple(t: Tuple, kinds: number[] = [RecordKind.ConnOpen, RecordKind.ConnInfo, RecordKind.ConnClose, RecordKind.TcpRetransmit, RecordKind.TcpReset]): (ConnOpenRecord | ConnInfoRecord | ConnCloseRecord | TcpEventRecord)[] {
    const saddr = recordAddr(t.saddr), daddr = recordAddr(t.daddr);
    const out: (ConnOpenRecord | ConnInfoRecord | ConnCloseRecord | TcpEventRecord)[] = [];
    for (const { rec } of this.records) {
      if (!kinds.includes(rec.kind) || !('tuple' in rec) || rec.kind === RecordKind.SkbDrop) continue;
      const u = rec.tuple;
      if (u.saddr === saddr && u.daddr === daddr && u.sport === t.sport && u.dport === t.dport) out.push(rec as ConnOpenRecord);
    }
    return out;
  }

  /** Data records of a connection in one direction. */
  data(connId: number, direction?: Direction): SockDataRecord[] {
    return this.ofKind<SockDataRecord>(RecordKind.SockData).map((r) => r.rec)
      .filter((r) => r.connId === connId && (direction === undefined || r.direction === direction));
  }

  /** One direction of a connection reassembled by byte position. */
  payload(connId: number, direction: Direction): Assembled {
    return assemble(this.data(connId, direction));
  }

  /** Sum of lenBytes over a direction's syscalls (each syscall once: its LAST record). */
  dataBytes(connId: number, direction: Direction): number {
    return this.data(connId, direction).filter((r) => r.dataFlags & DataFlags.Last).reduce((n, r) => n + r.lenBytes, 0);
  }

  tcpEvents(kind: typeof RecordKind.TcpRetransmit | typeof RecordKind.TcpReset): StreamRecord<TcpEventRecord>[] {
    return this.ofKind<TcpEventRecord>(kind);
  }

  drops(): StreamRecord<SkbDropRecord>[] {
    return this.ofKind<SkbDropRecord>(RecordKind.SkbDrop);
  }

  /** Records per kind (index = kind), optionally of one run. */
  countByKind(run?: string): number[] {
    const n = new Array<number>(REC_KIND_MAX).fill(0);
    for (const e of this.envelopes) {
      if (run && e.env.run !== run) continue;
      const b = e.env.records;
      for (let off = 0; off + REC_HDR.size <= b.length;) {
        const h = decodeHeader(b, off);
        if (h.sizeBytes < REC_HDR.size) break;
        if (h.kind < REC_KIND_MAX) n[h.kind]++;
        off = nextRecordOffset(off, h.sizeBytes);
      }
    }
    return n;
  }

  /** Sum of the envelopes' `count` fields, optionally of one run. */
  envelopeCount(run?: string): number {
    return this.envelopes.filter((e) => !run || e.env.run === run).reduce((n, e) => n + e.env.count, 0);
  }

  /** Records reported lost per kind (index = kind), for one cause or all, optionally of one run. */
  lostByKind(cause?: string, run?: string): number[] {
    const n = new Array<number>(REC_KIND_MAX).fill(0);
    for (const e of this.envelopes) {
      if (run && e.env.run !== run) continue;
      for (const l of e.env.lost) if (!cause || l.cause === cause) n[l.kind] += l.records;
    }
    return n;
  }

  /** Every loss entry of every envelope, optionally of one run. */
  losses(run?: string): { kind: number; cause: string; records: number }[] {
    return this.envelopes.filter((e) => !run || e.env.run === run).flatMap((e) => e.env.lost);
  }

  async close(): Promise<void> {
    if (this.ownConnection) await this.nc.close().catch(() => undefined);
  }
}

/** Read a whole stream once. */
export async function readStream(server: string | NatsConnection, stream: string): Promise<StreamReader> {
  const r = await StreamReader.open(server, stream);
  try {
    await r.update();
    return r;
  } finally {
    await r.close();
  }
}
