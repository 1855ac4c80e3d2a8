/**
 * The packets of generated conversations (bench/http-traffic.ts) as a classic pcap file
 * (microsecond timestamps, Ethernet): per connection a three-way handshake, every write as
 * MSS-sized segments with correct sequence and acknowledgement numbers (PSH on a write's
 * last segment, the peer's data acknowledged by the next segment it gets back), and a
 * FIN/ACK close. IPv4 header checksums are right; TCP checksums are left 0 (Wireshark does
 * not check them by default). Packets of all connections are written in time order.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Conversation } from './http-traffic.js';

const MSS = 1448;
const ETH = 14;
const IP = 20;
const TCP = 20;
const SYN = 0x02;
const FIN = 0x01;
const PSH = 0x08;
const ACK = 0x10;

interface Packet {
  tsNs: number;
  c: Conversation;
  fromClient: boolean;
  seq: number;
  ack: number;
  flags: number;
  payload: Buffer | null;
}

function ipv4(a: string): number[] {
  return a.split('.').map(Number);
}

function packetsOf(c: Conversation, out: Packet[]): void {
  // Initial sequence numbers from the cookie: deterministic, different per connection.
  let cs = (c.cookie * 2654435761) >>> 0;
  let ss = (c.cookie * 40503 + 12345) >>> 0;
  const p = (tsNs: number, fromClient: boolean, flags: number, payload: Buffer | null) => {
    out.push({ tsNs, c, fromClient, seq: fromClient ? cs : ss, ack: flags & ACK ? (fromClient ? ss : cs) : 0, flags, payload });
  };
  const t0 = c.openNs - 100_000;
  p(t0, true, SYN, null);
  cs = (cs + 1) >>> 0;
  p(t0 + 30_000, false, SYN | ACK, null);
  ss = (ss + 1) >>> 0;
  p(t0 + 60_000, true, ACK, null);
  for (const w of c.writes) {
    const len = w.bytes.length;
    for (let off = 0; off < len; off += MSS) {
      const end = Math.min(len, off + MSS);
      p(w.tsNs + Math.floor(off / MSS) * 1000, w.fromClient, end === len ? PSH | ACK : ACK, w.bytes.subarray(off, end));
      if (w.fromClient) cs = (cs + end - off) >>> 0;
      else ss = (ss + end - off) >>> 0;
    }
  }
  p(c.closeNs, true, FIN | ACK, null);
  cs = (cs + 1) >>> 0;
  p(c.closeNs + 30_000, false, FIN | ACK, null);
  ss = (ss + 1) >>> 0;
  p(c.closeNs + 60_000, true, ACK, null);
}

/** Write the conversations' packets to `path`; returns packets and bytes written. */
export function writePcap(path: string, conversations: readonly Conversation[], epochS: number): { packets: number; bytes: number } {
  const packets: Packet[] = [];
  for (const c of conversations) packetsOf(c, packets);
  packets.sort((a, b) => a.tsNs - b.tsNs);

  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(8 << 20);
  let used = 0;
  let total = 0;
  const flush = () => {
    writeSync(fd, buf, 0, used);
    total += used;
    used = 0;
  };
  try {
    // Global header: magic, version 2.4, zone 0, sigfigs 0, snaplen, LINKTYPE_ETHERNET.
    buf.writeUInt32LE(0xa1b2c3d4, 0);
    buf.writeUInt16LE(2, 4);
    buf.writeUInt16LE(4, 6);
    buf.writeInt32LE(0, 8);
    buf.writeUInt32LE(0, 12);
    buf.writeUInt32LE(262144, 16);
    buf.writeUInt32LE(1, 20);
    used = 24;
    let ipId = 0;
    for (const k of packets) {
      const plen = k.payload?.length ?? 0;
      const frame = ETH + IP + TCP + plen;
      if (used + 16 + frame > buf.length) flush();
      const us = Math.floor(k.tsNs / 1000);
      buf.writeUInt32LE(epochS + Math.floor(us / 1e6), used);
      buf.writeUInt32LE(us % 1e6, used + 4);
      buf.writeUInt32LE(frame, used + 8);
      buf.writeUInt32LE(frame, used + 12);
      let o = used + 16;
      // Ethernet: dst, src, IPv4.
      const cm = [0x02, 0, 0, 0, 0, 0x01];
      const sm = [0x02, 0, 0, 0, 0, 0x02];
      const [dm, smac] = k.fromClient ? [sm, cm] : [cm, sm];
      for (let i = 0; i < 6; i++) buf[o + i] = dm[i];
      for (let i = 0; i < 6; i++) buf[o + 6 + i] = smac[i];
      buf.writeUInt16BE(0x0800, o + 12);
      o += ETH;
      // IPv4.
      const src = k.fromClient ? k.c.client : k.c.server;
      const dst = k.fromClient ? k.c.server : k.c.client;
      buf[o] = 0x45;
      buf[o + 1] = 0;
      buf.writeUInt16BE(IP + TCP + plen, o + 2);
      buf.writeUInt16BE(ipId++ & 0xffff, o + 4);
      buf.writeUInt16BE(0x4000, o + 6);
      buf[o + 8] = 64;
      buf[o + 9] = 6;
      buf.writeUInt16BE(0, o + 10);
      const s = ipv4(src.addr);
      const d = ipv4(dst.addr);
      for (let i = 0; i < 4; i++) {
        buf[o + 12 + i] = s[i];
        buf[o + 16 + i] = d[i];
      }
      let sum = 0;
      for (let i = 0; i < IP; i += 2) sum += buf.readUInt16BE(o + i);
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      buf.writeUInt16BE(~sum & 0xffff, o + 10);
      o += IP;
      // TCP.
      buf.writeUInt16BE(src.port, o);
      buf.writeUInt16BE(dst.port, o + 2);
      buf.writeUInt32BE(k.seq, o + 4);
      buf.writeUInt32BE(k.ack, o + 8);
      buf[o + 12] = (TCP / 4) << 4;
      buf[o + 13] = k.flags;
      buf.writeUInt16BE(65535, o + 14);
      buf.writeUInt16BE(0, o + 16);
      buf.writeUInt16BE(0, o + 18);
      o += TCP;
      if (k.payload) k.payload.copy(buf, o);
      used += 16 + frame;
    }
    flush();
  } finally {
    closeSync(fd);
  }
  return { packets: packets.length, bytes: total };
}
