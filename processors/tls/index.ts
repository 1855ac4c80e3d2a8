/**
 * tls: one `tls_handshakes` row per TLS handshake seen at the start of any TCP stream,
 * whatever its port: SNI, ALPN offered and chosen (when visible), version, cipher, and
 * handshake_ns from the ClientHello to the client's first encrypted record after the
 * ServerHello. A connection is read only until its handshake is done.
 */
import { l7Function, l7Row, type L7Protocol } from '../l7/protocol.js';
import { newTlsStats, TlsHandshakeTracker, type TlsHandshake, type TlsStats } from './handshake.js';

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
  open: (h, onItem, stats) => new TlsHandshakeTracker(h.role, onItem, { stats: stats as TlsStats, midlife: h.midlife }),
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
