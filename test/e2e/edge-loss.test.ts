/**
 * End to end: packet loss made by nftables inside the server's namespace (a random share of
 * the packets to and from the HTTP port dropped both ways) must reach the stream as the
 * TCP_RETRANSMIT records of the connections that suffered it, and as SKB_DROP records
 * whose reason the envelope names NETFILTER_DROP and whose location it symbolizes
 * (nf_hook_slow+0x... or, on kernels where nf_tables frees the packet itself as 6.18 does,
 * nft_do_chain+0x...).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConnFlags, DropFlags, RecordKind, TcpEventFlags,
  type ConnCloseRecord, type ConnOpenRecord, type SkbDropRecord, type TcpEventRecord,
} from '../../schemas/records.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type Host, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { recordAddr, StreamReader, type StreamRecord } from '../helpers/stream-reader.js';

/** Share of packets dropped each way: numgen random mod 10 < DROP_TENTHS. */
const DROP_TENTHS = 3;
const MAX_ROUNDS = 40;
const MAX_TRAFFIC_MS = 120_000;

for (const capturePath of CAPTURE_PATHS) describe(`edge loss: nftables drops a share of the packets to and from nginx (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let edge: EdgeRun | undefined;
  let reader: StreamReader | undefined;
  let client: Host;
  let server: Host;

  before(async () => {
    nats = await startNatsServer();
    hosts = await createHostPair();
    client = hosts.client;
    server = hosts.server;
    // Under loss a connection can be left half-closed (a lost RST is never resent): short
    // idle and FIN_WAIT2 timeouts let every connection reach CLOSE soon after the traffic.
    nginx = await startNginx(server, { keepaliveTimeoutS: 3 });
    for (const h of [client, server]) {
      const r = await h.exec('sysctl', ['-q', '-w', 'net.ipv4.tcp_fin_timeout=3']);
      assert.equal(r.code, 0, `sysctl in ${h.ns}: ${r.stderr}`);
    }
    edge = await startEdge({ nats: nats.url, netns: [client.netnsIno(), server.netnsIno()], input: { capturePath } });
    reader = await StreamReader.open(nats.url, edge.stream);
  });

  after(() => cleanupAll(
    () => reader?.close(),
    () => edge?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
  ));

  const ours = (netns: number) => netns === client.netnsIno() || netns === server.netnsIno();
  const pairAddrs = () => new Set([client.addr, server.addr, client.addr6, server.addr6].map(recordAddr));

  /** Retransmits in our namespaces of connections the stream knows, and netfilter drops there. */
  function evidence() {
    const r = reader!;
    const opens = new Map<number, ConnOpenRecord>();
    for (const o of r.ofKind<ConnOpenRecord>(RecordKind.ConnOpen)) if (ours(o.rec.netnsIno)) opens.set(o.rec.connId, o.rec);
    const closes = new Map<number, ConnCloseRecord>();
    for (const c of r.ofKind<ConnCloseRecord>(RecordKind.ConnClose)) if (ours(c.rec.netnsIno)) closes.set(c.rec.connId, c.rec);
    const retransmits = r.tcpEvents(RecordKind.TcpRetransmit).filter((e) => ours(e.rec.netnsIno));
    const connRetransmits = retransmits.filter((e) => !(e.rec.eventFlags & TcpEventFlags.Synack) && opens.has(e.rec.connId));
    const drops = r.drops().filter((d) => ours(d.rec.netnsIno));
    const nfDrops = drops.filter((d) => d.env.drop_reasons?.[String(d.rec.reason)] === 'NETFILTER_DROP');
    return { opens, closes, retransmits, connRetransmits, drops, nfDrops };
  }

  test('retransmits with the connection 4-tuple, NETFILTER_DROP drops symbolized in netfilter', async () => {
    const port = nginx!.port;
    const rules = `
table inet netrig_loss {
  chain input { type filter hook input priority 0; policy accept; tcp dport ${port} numgen random mod 10 < ${DROP_TENTHS} drop; }
  chain output { type filter hook output priority 0; policy accept; tcp sport ${port} numgen random mod 10 < ${DROP_TENTHS} drop; }
}
`;
    const nft = await server.exec('nft', ['-f', '-'], { input: rules });
    assert.equal(nft.code, 0, `nft failed: ${nft.stderr}`);

    // Bounded traffic: rounds of keep-alive requests until the stream shows both kinds of
    // evidence, at most MAX_ROUNDS rounds or MAX_TRAFFIC_MS.
    const base = `http://${server.addr}:${port}`;
    const deadline = Date.now() + MAX_TRAFFIC_MS;
    let rounds = 0;
    let ev = evidence();
    while (rounds < MAX_ROUNDS && Date.now() < deadline) {
      rounds++;
      // Failures (timeouts under loss) are expected and fine: the loss is what is measured.
      await client.exec('curl', ['-s', '--max-time', '10', ...['/copy/small.txt', '/hello.html', '/text', '/copy/hello.html'].flatMap((p) => ['-o', '/dev/null', `${base}${p}`])]);
      await reader!.update();
      ev = evidence();
      const bothWays = ev.nfDrops.some((d) => d.rec.tuple.dport === port) && ev.nfDrops.some((d) => d.rec.tuple.sport === port);
      if (ev.connRetransmits.length > 0 && bothWays && rounds >= 3) break;
    }
    // Stop the loss, then let the connections close (bounded).
    const del = await server.exec('nft', ['delete', 'table', 'inet', 'netrig_loss']);
    assert.equal(del.code, 0, `nft delete failed: ${del.stderr}`);
    // A connection whose SYN was resent and that curl gave up on before it was established
    // has a retransmit and a close but no open: its close is waited for too.
    await reader!.waitFor('close records of every connection opened or retransmitted in the namespaces', () => {
      ev = evidence();
      const retransmitted = ev.retransmits.filter((e) => !(e.rec.eventFlags & TcpEventFlags.Synack)).map((e) => e.rec.connId);
      return [...ev.opens.keys(), ...retransmitted].every((id) => ev.closes.has(id));
    }, 90_000);
    ev = evidence();

    // Retransmits: each names a connection of ours, with its 4-tuple.
    assert.ok(ev.connRetransmits.length > 0, `no TCP_RETRANSMIT of a known connection after ${rounds} rounds (${ev.retransmits.length} retransmits in the namespaces)`);
    const addrs = pairAddrs();
    for (const { rec } of ev.retransmits as StreamRecord<TcpEventRecord>[]) {
      assert.ok(rec.tuple.sport === port || rec.tuple.dport === port, `retransmit on the HTTP port: ${JSON.stringify(rec.tuple)}`);
      assert.ok(addrs.has(rec.tuple.saddr) && addrs.has(rec.tuple.daddr), `retransmit between our hosts: ${JSON.stringify(rec.tuple)}`);
      if (rec.eventFlags & TcpEventFlags.Synack) {
        // A SYN/ACK resent for a request socket: the server's side, no connection id yet.
        assert.equal(rec.connId, 0);
        assert.equal(rec.netnsIno, server.netnsIno());
        assert.equal(rec.tuple.sport, port);
        continue;
      }
      assert.ok(rec.connId > 0, 'a retransmit of a socket carries its cookie');
      const open = ev.opens.get(rec.connId);
      const close = ev.closes.get(rec.connId);
      assert.ok(open || close, `retransmit conn_id ${rec.connId} is a connection on the stream`);
      if (open) {
        assert.deepEqual(rec.tuple, open.tuple, 'retransmit 4-tuple = its connection\'s (local side first)');
        assert.equal(rec.netnsIno, open.netnsIno);
      } else {
        assert.ok(close!.connFlags & ConnFlags.NeverEstablished, `retransmit conn_id ${rec.connId} has no open: its connection was never established`);
      }
      // The owner is known for connections whose owner the kernel saw.
      if (close?.comm) assert.equal(rec.comm, close.comm, 'retransmit comm = its connection owner\'s');
    }
    const retransmitted = new Set(ev.connRetransmits.map((e) => e.rec.connId));
    const counted = [...retransmitted].reduce((n, id) => n + (ev.closes.get(id)?.retransmits ?? 0), 0);
    assert.ok(counted > 0, 'CONN_CLOSE counts the retransmits of the connections that had them');

    // Drops: netfilter's, in the server's namespace, named and symbolized by the envelope.
    assert.ok(ev.nfDrops.length > 0, `no NETFILTER_DROP drop after ${rounds} rounds (${ev.drops.length} drops in the namespaces: ${[...new Set(ev.drops.map((d) => d.env.drop_reasons?.[String(d.rec.reason)]))].join(', ')})`);
    for (const { rec, env } of ev.nfDrops as StreamRecord<SkbDropRecord>[]) {
      assert.equal(rec.netnsIno, server.netnsIno(), 'netfilter drops happen in the server namespace');
      assert.ok(rec.dropFlags & DropFlags.HasPorts, 'the drop has ports');
      assert.equal(rec.tuple.protocol, 6);
      assert.ok(rec.tuple.sport === port || rec.tuple.dport === port, `dropped packet to or from the HTTP port: ${JSON.stringify(rec.tuple)}`);
      assert.ok(addrs.has(rec.tuple.saddr) && addrs.has(rec.tuple.daddr), `dropped packet between our hosts: ${JSON.stringify(rec.tuple)}`);
      const sym = env.ksyms?.[rec.location.toString(16)];
      assert.ok(sym, `the envelope symbolizes location 0x${rec.location.toString(16)}`);
      // Where netfilter frees a dropped packet: nf_hook_slow, or nft_do_chain on kernels
      // where nf_tables drops with the reason itself (6.18 does; its own kfree_skb trace
      // output says location=nft_do_chain+0x...).
      assert.match(sym, /^(nf_hook_slow|nft_do_chain)\+0x[0-9a-f]+$/, 'netfilter drops are freed in netfilter');
      assert.ok(rec.location !== 0n);
    }
    // Both directions were dropped: packets to the port (input) and from it (output).
    assert.ok(ev.nfDrops.some((d) => d.rec.tuple.dport === port), 'a packet to the server was dropped');
    assert.ok(ev.nfDrops.some((d) => d.rec.tuple.sport === port), 'a packet from the server was dropped');
    // Every drop the envelopes name is a name of this kernel's drop reasons.
    for (const d of ev.drops) assert.ok(d.env.drop_reasons?.[String(d.rec.reason)], `reason ${d.rec.reason} named in its envelope`);
  });
});
