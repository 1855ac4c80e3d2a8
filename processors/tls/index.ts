/**
 * tls: one `tls_handshakes` row per TLS handshake seen at the start of any TCP stream,
 * whatever its port: SNI, ALPN offered and chosen (when visible), version, cipher, and
 * handshake_ns from the ClientHello to the client's first encrypted record after the
 * ServerHello. A connection is read only until its handshake is done.
 */
import { l7Function, l7Row, type L7Protocol, type L7Tracker, type TrackerHints } from '../l7/protocol.js';
import type { StreamEvent } from '../l7/reassembly.js';
import { newTlsStats, TlsHandshakeTracker, type TlsHandshake, type TlsStats } from './handshake.js';

/** A handshake not complete this long after its ClientHello (node time) is written incomplete. */
const HANDSHAKE_TIMEOUT_NS = 10e9;

class TlsTracker implements L7Tracker {
  private readonly t: TlsHandshakeTracker;
  private done = false;

  constructor(h: TrackerHints, onItem: (x: TlsHandshake) => void, stats: TlsStats) {
    this.t = new TlsHandshakeTracker(h.role, (x) => {
      this.done = true;
      onItem(x);
    }, { stats, midlife: h.midlife });
  }

  data(dir: 0 | 1, ev: StreamEvent): void {
    this.t.data(dir, ev);
  }

  expire(nowNs: number): void {
    this.t.expire(nowNs, HANDSHAKE_TIMEOUT_NS);
  }

  close(): void {
    this.t.close();
  }

  isIdle(): boolean {
    return this.t.isIdle();
  }

  /** The tracker itself decides within a few bytes whether a stream is TLS. */
  get recognized(): boolean {
    return true;
  }

  /** Not TLS, or the handshake is written: the rest of the connection is not read. */
  get stopReason(): string | null {
    return this.t.noHandshakeReason ?? (this.done ? 'handshake_done' : null);
  }
}

export const tlsProtocol: L7Protocol<TlsHandshake> = {
  name: 'tls',
  table: 'tls_handshakes',
  plain: true,
  tls: false,
  tcp: true,
  udp: false,
  giveUpBytes: Infinity,
  giveUpNs: Infinity,
  pinUntilFirstItem: false,
  // Every TLS stream starts with a handshake record (content type 22).
  rejectsFirstByte: (b) => b !== 0x16,
  newStats: newTlsStats,
  open: (h, onItem, stats) => new TlsTracker(h, onItem, stats as TlsStats),
  row(x, c, clock) {
    return l7Row({
      sni: x.sni,
      alpn_offered: x.alpnOffered,
      alpn: x.alpn,
      version: x.version,
      cipher: x.cipher,
      handshake_ns: x.handshakeNs,
      completed: x.complete ? 1 : 0,
    }, c, x.clientHelloTsNs, clock, x.role);
  },
};

export const tlsFunction = l7Function(tlsProtocol);
