/**
 * dns: one `dns_queries` row per DNS query with its response, or timed out, over UDP (each
 * datagram a message; unconnected server sockets name each datagram's peer) and TCP (2-byte
 * length prefix), on port 53. Queries and responses are matched by id, peer and question.
 */
import { l7Function, l7Row, type ConnView, type RowPeers, type L7Protocol } from '../l7/protocol.js';
import { DnsMatcher, newDnsStats, type DnsExchange, type DnsStats } from './matcher.js';

const DNS_PORT = 53;

/** Client and server of an unconnected UDP exchange: the local socket and the datagram's peer. */
function dnsPeers(x: DnsExchange, c: ConnView): RowPeers | undefined {
  if (!x.peer || !c.meta) return undefined;
  const local = { addr: c.meta.tuple.saddr, port: c.meta.tuple.sport };
  const [client, server] = x.role === 'client' ? [local, x.peer] : [x.peer, local];
  return { client_addr: client.addr, client_port: client.port, server_addr: server.addr, server_port: server.port };
}

export const dnsProtocol: L7Protocol<DnsExchange> = {
  name: 'dns',
  table: 'dns_queries',
  plain: true,
  tls: false,
  tcp: true,
  udp: true,
  giveUpBytes: Infinity,
  giveUpNs: Infinity,
  pinUntilFirstItem: false,
  accepts: (m) => m.tuple.sport === DNS_PORT || m.tuple.dport === DNS_PORT,
  newStats: newDnsStats,
  open: (h, onItem, stats) => new DnsMatcher(onItem, { stats: stats as DnsStats, midlife: h.midlife }),
  row(x, c, clock) {
    return l7Row({
      transport: x.transport,
      query_id: x.id,
      qname: x.qname,
      qtype: x.qtypeName,
      rcode: x.rcode,
      answers: x.answers,
      answer_count: x.answerCount,
      latency_ns: x.latencyNs,
      timed_out: x.timedOut ? 1 : 0,
      truncated: x.truncated ? 1 : 0,
      retries: x.retries,
    }, c, x.queryTsNs, clock, x.role, dnsPeers(x, c));
  },
};

export const dnsFunction = l7Function(dnsProtocol);
