/**
 * The capture check run inside each kernel of the matrix (scripts/test-kernels.sh boots the
 * kernel under qemu with this machine's files): the edge loads and attaches netrig's capture
 * as it would on that kernel (the path chosen by probing), a nats-server takes its
 * envelopes, and between two network namespaces a raw HTTP/1 client talks to nginx, dig asks
 * unbound over UDP, a client connects to a closed port (refused: a reset, and the SYN
 * dropped), and another sends while the server's link is down (retransmits). The decoded
 * records must show both ends of the HTTP connection with their roles and the payload
 * byte-exact each way, the DNS datagrams both ways with the question, the refused
 * connection's close, reset and drop, and the retransmits. One line on stdout: `kernel <release>: ok <what>` or
 * `kernel <release>: FAIL <why>`; the exit code says the same.
 */
import { once } from 'node:events';
import { release } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { getRequest, postRequest, rawHttpSession } from '../helpers/raw-http.js';
import { mismatches, recordAddr, StreamReader, uncovered, type Assembled } from '../helpers/stream-reader.js';
import { startUnbound, type UnboundHandle } from '../helpers/unbound.js';
import { ConnFlags, DataFlags, Direction, RecordKind, Role, type SockDataRecord } from '../../schemas/records.js';

const QNAME = 'matrix.netrig.test';
const CLOSED_PORT = 9;
/** How long the server's link stays down under a connection with data in flight. */
const LINK_DOWN_MS = 2500;
/**
 * Client of the retransmit case, run in the client namespace: connects, prints its local
 * port, sends a request when told to on stdin, and exits after its timeout.
 */
const RETRANSMIT_CLIENT = `
const s = require('net').connect(Number(process.argv[2]), process.argv[1], () => console.log(s.localPort));
s.on('error', () => {});
process.stdin.once('data', () => s.write('GET /hello.html HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'));
setTimeout(() => process.exit(0), 8000);
`;

class CheckFailed extends Error {}

/** Bytes sent without a user buffer (nginx's sendfile): only their length is recorded. */
function uncapturable(a: Assembled): number {
  return a.syscalls.filter((s) => s.flags & DataFlags.NoBuffer).reduce((n, s) => n + s.len, 0);
}

function expect(ok: boolean, what: string): void {
  if (!ok) throw new CheckFailed(what);
}

async function check(): Promise<string> {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let unbound: UnboundHandle | undefined;
  let edge: EdgeRun | undefined;
  let reader: StreamReader | undefined;
  try {
    nats = await startNatsServer();
    hosts = await createHostPair();
    const { client, server } = hosts;
    nginx = await startNginx(server);
    unbound = await startUnbound(server, { zones: { 'netrig.test.': [`${QNAME}. A 192.0.2.7`] } });
    // The guest's /tmp is a small tmpfs: a stream bounded to fit it.
    edge = await startEdge({ nats: nats.url, netns: [client.netnsIno(), server.netnsIno()], input: { streamMaxBytes: '64MiB' } });
    reader = await StreamReader.open(nats.url, edge.stream);
    const { capture } = edge.source;

    // HTTP/1: every byte each way, as the client wrote and read them.
    const host = `${server.addr}:${nginx.port}`;
    const requests = [getRequest(host, '/hello.html'), postRequest(host, '/echo', Buffer.alloc(2000, 'x'))];
    const http = await rawHttpSession(client, server.addr, nginx.port, requests);
    // DNS over UDP.
    const dig = await client.exec('dig', [ '+tries=1', '+time=10', `@${server.addr}`, '-p', String(unbound.port), QNAME, 'A']);
    expect(/192\.0\.2\.7/.test(dig.stdout), `dig got no answer: ${dig.stdout}${dig.stderr}`);
    // A refused connection: the server's kernel answers the SYN with a reset.
    await client.exec('curl', ['-sS', '--max-time', '5', `http://${server.addr}:${CLOSED_PORT}/`]);
    // A retransmit: the server's link goes down while the client's request is in flight.
    const lossy = client.spawn(process.execPath, ['-e', RETRANSMIT_CLIENT, server.addr, String(nginx.port)], { stdio: ['pipe', 'pipe', 'ignore'] });
    const [portLine] = await Promise.race([once(lossy.stdout!, 'data'), sleep(20_000).then(() => [''])]);
    const lossyPort = Number(String(portLine).trim());
    expect(lossyPort > 0, 'the retransmit client did not connect');
    await server.exec('ip', ['link', 'set', 'veth0', 'down']);
    lossy.stdin!.write('go\n');
    await sleep(LINK_DOWN_MS);
    await server.exec('ip', ['link', 'set', 'veth0', 'up']);
    lossy.kill('SIGKILL');

    let why = '';
    const found = () => {
      const opens = reader!.connOpens().filter((o) => o.tuple.sport === http.localPort || o.tuple.dport === http.localPort);
      const c = opens.find((o) => o.role === Role.Client);
      const s = opens.find((o) => o.role === Role.Server);
      if (!c || !s) return (why = `HTTP connection opens: client ${!!c}, server ${!!s}`), null;
      const ce = reader!.payload(c.connId, Direction.Egress), ci = reader!.payload(c.connId, Direction.Ingress);
      const se = reader!.payload(s.connId, Direction.Egress), si = reader!.payload(s.connId, Direction.Ingress);
      const wrong = ([['client sent', ce, http.sent], ['server received', si, http.sent], ['client received', ci, http.received], ['server sent', se, http.received]] as const)
        .map(([what, a, b]) => [what, a.totalBytes !== b.length ? `${a.totalBytes} of ${b.length} bytes` : [...mismatches(a, b), ...(uncapturable(a) !== uncovered(a) ? [`${uncovered(a)} bytes uncaptured`] : [])].join('; ')])
        .filter(([, problem]) => problem);
      if (wrong.length) return (why = `HTTP payload not exact: ${wrong.map(([w, p]) => `${w}: ${p}`).join(', ')}`), null;
      const udp = reader!.ofKind<SockDataRecord>(RecordKind.SockData).map((r) => r.rec)
        .filter((r) => r.payload.includes(Buffer.from('matrix')) && r.payload.length > 12);
      const dnsOut = udp.filter((r) => r.direction === Direction.Egress).length;
      const dnsIn = udp.filter((r) => r.direction === Direction.Ingress).length;
      if (dnsOut < 2 || dnsIn < 2) return (why = `DNS datagrams with the question: ${dnsOut} sent, ${dnsIn} received (want 2 each: dig and unbound)`), null;
      const refused = reader!.ofKind(RecordKind.ConnClose).map((r) => r.rec)
        .find((r) => 'tuple' in r && r.tuple.dport === CLOSED_PORT && ((r as { connFlags: number }).connFlags & ConnFlags.NeverEstablished) !== 0);
      const resets = reader!.tcpEvents(RecordKind.TcpReset).map((r) => r.rec)
        .filter((r) => r.tuple.sport === CLOSED_PORT || r.tuple.dport === CLOSED_PORT);
      if (!refused || resets.length === 0) return (why = `refused connection: close ${!!refused}, resets ${resets.length}`), null;
      // The SYN to the closed port dies in the server's kernel: no socket takes it.
      const drops = reader!.drops().map((r) => r.rec).filter((r) => r.tuple.dport === CLOSED_PORT);
      if (drops.length === 0) return (why = 'no drop record for the SYN to the closed port'), null;
      const retransmits = reader!.tcpEvents(RecordKind.TcpRetransmit).map((r) => r.rec).filter((r) => r.tuple.sport === lossyPort);
      if (retransmits.length === 0) return (why = `no retransmit of the client on port ${lossyPort} while the link was down`), null;
      return {
        bytes: http.sent.length + http.received.length, dns: dnsOut + dnsIn, resets: resets.length, clientAddr: c.tuple.saddr,
        drops: drops.length, reasons: [...new Set(drops.map((d) => d.reason))].join('/'), retransmits: retransmits.length,
      };
    };
    await reader.waitFor('the capture', () => found() !== null, 60_000).catch(() => {
      throw new CheckFailed(why);
    });
    const r = found()!;
    expect(r.clientAddr === recordAddr(client.addr), `client address ${r.clientAddr}`);
    return `path=${capture.path} features=${capture.features.join(',') || '-'} http=2 exchanges ${r.bytes} bytes exact both ends, dns=${r.dns} datagrams, refused=close+${r.resets} reset(s)+${r.drops} drop(s) reason ${r.reasons}, retransmits=${r.retransmits}`;
  } finally {
    await cleanupAll(
      () => reader?.close(),
      () => edge?.stop(),
      () => unbound?.stop(),
      () => nginx?.stop(),
      () => hosts?.destroy(),
      () => nats?.cleanup(),
    );
  }
}

try {
  console.log(`kernel ${release()}: ok ${await check()}`);
  process.exit(0);
} catch (err) {
  const why = err instanceof CheckFailed ? err.message : String((err as Error).stack ?? err).split('\n').slice(0, 6).join(' | ');
  console.log(`kernel ${release()}: FAIL ${why.replace(/\s+/g, ' ')}`);
  process.exit(1);
}
