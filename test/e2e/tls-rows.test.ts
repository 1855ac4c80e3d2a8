/**
 * End to end: the edge (real eBPF: socket capture and the OpenSSL uprobes) and a processor
 * (tls, http1, tcp, losses) in this process, a real nats-server and the embedded
 * ClickHouse engine, while curl and openssl s_client in one network namespace talk HTTPS
 * to nginx in another (self-signed certificate, SNI www.netrig.test, TLS 1.2 suite and
 * TLS 1.3 suite fixed by the server): TLS 1.3 and TLS 1.2 with ALPN http/1.1 only, h2
 * offered and chosen over TLS 1.3 and TLS 1.2, s_client offering "foo,http/1.1", and a
 * client (Python's ssl over memory BIOs) that sends its TLS 1.3 Finished and its request in
 * one segment, so nginx (which reads ahead) takes the request in with its handshake.
 *
 * `tls_handshakes` must hold one client row (curl/openssl) and one server row (nginx) per
 * connection with SNI, the ALPN list in the client's order, the chosen ALPN where the wire
 * shows it (TLS 1.2 ServerHello; '' for TLS 1.3), version, IANA cipher name, completed, and
 * a handshake time above zero and within what the client measured. `http_requests` must hold
 * the HTTP/1.1 exchanges decrypted by the uprobes (tls = 1) for both roles, with method,
 * path, Host, status and the plaintext sizes the client saw, and nothing from the
 * ciphertext (no tls = 0 row) nor from the h2 connections.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { http1Function } from '../../processors/http1/index.js';
import { lossesFunction } from '../../processors/losses/index.js';
import type { Processor } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { tlsFunction } from '../../processors/tls/index.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, execWithPid, run, runOk, type Host, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { drainProcessor, removeClickHouseData, rows, startEdgeProcessor, waitFor } from '../helpers/processor-run.js';

const SNI = 'www.netrig.test';
const TLS_PORT = 443;
/** What curl measured, one line per transfer ('|' never occurs in these fields). */
const CURL_WRITE_OUT = '%{http_code}|%{local_ip}|%{local_port}|%{num_connects}|%{size_request}|%{size_header}|%{size_download}|%{time_total}|%{content_type}|%{http_version}\\n';
/** curl prints time_total in whole microseconds: the kernel's nanoseconds may exceed it by less than one. */
const CURL_TIME_SLACK_NS = 1000;

/** One HTTP/1.1 exchange as the client saw it (plaintext). */
interface Seen {
  method: string;
  path: string;
  status: number;
  reqBytes: number;
  respBytes: number;
  contentType: string;
  /** Time the client measured for it, ns: an upper bound of its latency. */
  clientNs: number;
}

/** One TLS connection as the client saw it. */
interface SeenConn {
  what: string;
  /** Process that made it, and the comm its rows carry. */
  pid: number;
  comm: string;
  userAgent: string;
  clientPort: number;
  /** 'TLS 1.2' / 'TLS 1.3', as netrig spells versions. */
  version: string;
  /** IANA cipher suite name. */
  cipher: string;
  alpnOffered: string[];
  /** ALPN chosen, as the client learned it. */
  alpnChosen: string;
  /** Upper bound of the handshake time: the client's time for the whole first transfer. */
  boundNs: number;
  /** HTTP/1.1 exchanges, in order (none on an h2 connection). */
  exchanges: Seen[];
  /**
   * The client's plaintext goes through SSL_read/SSL_write calls that do the socket I/O
   * themselves, so the uprobes tie it to the socket: client-role http rows exist. Not so
   * for a client driving OpenSSL through memory BIOs (it moves the bytes itself).
   */
  clientPlaintext: boolean;
}

interface TlsRow {
  region: string;
  node: string;
  conn_id: string;
  pid: number;
  comm: string;
  role: 'client' | 'server';
  client_addr: string;
  client_port: number;
  server_addr: string;
  server_port: number;
  sni: string;
  alpn_offered: string[];
  alpn: string;
  version: string;
  cipher: string;
  handshake_ns: string;
  completed: number;
}

interface HttpRow {
  region: string;
  node: string;
  conn_id: string;
  pid: number;
  comm: string;
  role: 'client' | 'server';
  client_addr: string;
  client_port: number;
  server_addr: string;
  server_port: number;
  protocol: string;
  method: string;
  host: string;
  path: string;
  status: number;
  req_messages: number;
  resp_messages: number;
  req_bytes: string;
  resp_bytes: string;
  ttfb_ns: string;
  latency_ns: string;
  tls: number;
  timed_out: number;
  req_pos: string;
  content_type: string;
  user_agent: string;
  partial: number;
}

/** One curl transfer: path, method, and a body for POST. */
interface CurlPart {
  path: string;
  body?: string;
}

/** "TLSv1.2" (OpenSSL) → "TLS 1.2" (netrig). */
function versionName(openssl: string): string {
  const m = /^TLSv(1\.[0-3])$/.exec(openssl);
  assert.ok(m, `a TLS version: ${openssl}`);
  return `TLS ${m[1]}`;
}

/** The parent pid of a live process. */
function parentPid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

for (const capturePath of CAPTURE_PATHS) describe(`tls_handshakes and HTTPS http_requests rows: curl and openssl s_client against nginx (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let edge: EdgeRun | undefined;
  let ch: ClickHouse | undefined;
  let nc: NatsConnection | undefined;
  let processor: Processor | undefined;
  let client: Host;
  let server: Host;
  let curlUserAgent = '';
  /** IANA names of the suites nginx was told to use, by version. */
  const ianaCipher: Record<string, string> = {};
  /** Every connection checked so far: the tables may hold nothing else. */
  const checked: SeenConn[] = [];

  /** IANA name of an OpenSSL cipher name (TLS 1.3 suites are named the same in both). */
  async function iana(name: string): Promise<string> {
    if (name.startsWith('TLS_')) return name;
    // One line per suite (the TLS 1.3 suites come too): "IANA - OpenSSL version ...".
    const r = await runOk('openssl', ['ciphers', '-stdname', name]);
    const m = [...r.stdout.matchAll(/^(TLS_\S+)\s+-\s+(\S+)/gm)].find((x) => x[2] === name);
    assert.ok(m, `openssl names ${name}: ${r.stdout}`);
    return m[1];
  }

  before(async () => {
    const version = /^curl (\S+)/.exec((await run('curl', ['--version'])).stdout)?.[1];
    assert.ok(version, 'curl --version names its version');
    curlUserAgent = `curl/${version}`;
    // Both ends link the system's libssl.so.3, which the edge attaches its uprobes to.
    for (const bin of ['curl', 'nginx', 'openssl']) {
      const path = (await runOk('sh', ['-c', `command -v ${bin}`])).stdout.trim();
      assert.match((await runOk('ldd', [path])).stdout, /libssl\.so\.3 => \S*libssl\.so\.3/, `${bin} links libssl.so.3`);
    }

    nats = await startNatsServer();
    hosts = await createHostPair();
    client = hosts.client;
    server = hosts.server;
    nginx = await startNginx(server, { tls: { port: TLS_PORT, serverName: SNI } });
    ianaCipher['TLS 1.2'] = await iana(nginx.tls!.ciphers);
    ianaCipher['TLS 1.3'] = nginx.tls!.ciphersuites;
    edge = await startEdge({ nats: nats.url, netns: [client.netnsIno(), server.netnsIno()], input: { capturePath } });
    ({ ch, nc, processor } = await startEdgeProcessor(nats.url, edge, [tlsFunction, http1Function, tcpFunction, lossesFunction], 'tls_rows'));
  });

  after(() => cleanupAll(
    () => processor?.stop(),
    () => nc?.close(),
    () => ch?.close(),
    () => edge?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
    () => removeClickHouseData(),
  ));

  /**
   * One curl invocation over HTTPS (one connection, keep-alive across its transfers), with
   * `tlsArgs` choosing version and HTTP version. Returns the connection as curl saw it.
   */
  async function curl(what: string, tlsArgs: string[], parts: CurlPart[]): Promise<SeenConn> {
    const args = parts.flatMap((p, i) => [
      ...(i ? ['--next'] : []),
      '-sS', '-v', '-k', '--max-time', '30', '-o', '/dev/null', '-w', CURL_WRITE_OUT,
      '--resolve', `${SNI}:${TLS_PORT}:${server.addr}`, ...tlsArgs,
      ...(p.body !== undefined ? ['--data-binary', p.body] : []),
      `https://${SNI}${TLS_PORT === 443 ? '' : `:${TLS_PORT}`}${p.path}`,
    ]);
    const r = await execWithPid(client, 'curl', args, { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n').map((l) => l.split('|'));
    assert.equal(lines.length, parts.length, `one line per transfer: ${r.stdout}`);
    // curl -v: what was offered and agreed (once per connection).
    const using = [...r.stderr.matchAll(/SSL connection using (\S+) \/ (\S+)/g)];
    const offers = [...r.stderr.matchAll(/ALPN: offers (\S+)/g)];
    const accepted = [...r.stderr.matchAll(/ALPN: server accepted (\S+)/g)];
    assert.equal(using.length, 1, `one TLS handshake: ${r.stderr}`);
    assert.equal(offers.length, 1, `one ALPN offer: ${r.stderr}`);
    assert.equal(accepted.length, 1, `one ALPN choice: ${r.stderr}`);
    let conn: SeenConn | null = null;
    lines.forEach((l, i) => {
      const [code, localIp, localPort, connects, sizeRequest, sizeHeader, sizeDownload, timeTotal, contentType, httpVersion] = l;
      assert.equal(localIp, client.addr, 'curl used the client address');
      const clientNs = Math.round(Number(timeTotal) * 1e9) + CURL_TIME_SLACK_NS;
      if (i === 0) {
        assert.equal(connects, '1', 'the first transfer connected');
        conn = {
          what, pid: r.pid, comm: 'curl', userAgent: curlUserAgent, clientPort: Number(localPort),
          version: versionName(using[0][1]), cipher: using[0][2], alpnOffered: offers[0][1].split(','),
          alpnChosen: accepted[0][1], boundNs: clientNs, exchanges: [], clientPlaintext: true,
        };
      } else {
        assert.equal(connects, '0', `transfer ${i} reused the connection`);
        assert.equal(Number(localPort), conn!.clientPort, `transfer ${i} reused the connection`);
      }
      if (httpVersion === '1.1') {
        conn!.exchanges.push({
          method: parts[i].body !== undefined ? 'POST' : 'GET',
          path: parts[i].path,
          status: Number(code),
          reqBytes: Number(sizeRequest),
          respBytes: Number(sizeHeader) + Number(sizeDownload),
          contentType,
          clientNs,
        });
      }
    });
    const c = conn!;
    c.cipher = await iana(c.cipher);
    return c;
  }

  /**
   * openssl s_client: a TLS 1.2 handshake offering ALPN "foo,http/1.1", then one HTTP/1.1
   * request with Connection: close, written as is; stdout is exactly the response.
   */
  async function sClient(path: string): Promise<SeenConn> {
    const req = `GET ${path} HTTP/1.1\r\nHost: ${SNI}\r\nConnection: close\r\n\r\n`;
    const t0 = process.hrtime.bigint();
    const r = await execWithPid(client, 'openssl', [
      's_client', '-quiet', '-connect', `${server.addr}:${TLS_PORT}`, '-servername', SNI, '-alpn', 'foo,http/1.1', '-tls1_2',
    ], { input: req, timeoutMs: 30_000 });
    const wallNs = Number(process.hrtime.bigint() - t0);
    assert.equal(r.code, 0, `s_client failed: ${r.stderr}`);
    const resp = Buffer.from(r.stdout, 'latin1');
    const head = r.stdout.split('\r\n\r\n')[0];
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
    assert.ok(status, `an HTTP/1.1 response: ${r.stdout}`);
    // s_client does not say its local port: the client end's connection row does (by pid).
    let port = 0;
    await waitFor(`the connection row of s_client ${r.pid}`, async () => {
      const x = await rows<{ sport: number }>(ch!, `SELECT sport FROM ${ch!.database}.connections WHERE role = 'client' AND pid = ${r.pid}`);
      if (x.length === 1) port = x[0].sport;
      return x.length > 0;
    }, 30_000);
    return {
      what: 's_client TLS 1.2, ALPN foo,http/1.1', pid: r.pid, comm: 'openssl', userAgent: '', clientPort: port,
      // What the server was told to negotiate for TLS 1.2, and the only protocol both know.
      version: 'TLS 1.2', cipher: ianaCipher['TLS 1.2'], alpnOffered: ['foo', 'http/1.1'], alpnChosen: 'http/1.1',
      boundNs: wallNs,
      exchanges: [{
        method: 'GET', path, status: Number(status[1]), reqBytes: Buffer.byteLength(req), respBytes: resp.length,
        contentType: /\r\ncontent-type:[ \t]*([^\r]*)/i.exec(head)?.[1] ?? '', clientNs: wallNs,
      }],
      clientPlaintext: true,
    };
  }

  /**
   * A TLS 1.3 client (Python's ssl module over memory BIOs, on the system's libssl) that
   * sends its Finished and an HTTP/1.1 request (Connection: close) in one send, so they
   * reach nginx together: nginx reads ahead (SSL_CTX_set_read_ahead), so the read that ends
   * its handshake also takes in the request record, and its first SSL_read is then served
   * from OpenSSL's buffer without touching the socket. Prints the response on stdout and
   * its local port on stderr.
   */
  async function coalescedClient(path: string): Promise<SeenConn> {
    const script = `
import socket, ssl, sys
host, port, sni, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.set_alpn_protocols(['http/1.1'])
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=sni)
s = socket.create_connection((host, port), timeout=20)
sys.stderr.write('port=%d\\n' % s.getsockname()[1])
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(out.read())
        d = s.recv(65536)
        if not d:
            sys.exit('EOF during the handshake')
        inc.write(d)
tls.write(('GET %s HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' % (path, sni)).encode())
s.sendall(out.read())
resp = b''
eof = False
while not eof:
    d = s.recv(65536)
    if not d:
        break
    inc.write(d)
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLWantReadError:
            break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            chunk = b''
        if not chunk:
            eof = True
            break
        resp += chunk
sys.stdout.buffer.write(resp)
`;
    const req = `GET ${path} HTTP/1.1\r\nHost: ${SNI}\r\nConnection: close\r\n\r\n`;
    const t0 = process.hrtime.bigint();
    const r = await execWithPid(client, 'python3', ['-c', script, server.addr, String(TLS_PORT), SNI, path], { timeoutMs: 30_000 });
    const wallNs = Number(process.hrtime.bigint() - t0);
    assert.equal(r.code, 0, `the python client failed: ${r.stderr}`);
    const port = /port=(\d+)/.exec(r.stderr);
    assert.ok(port, `the python client said its port: ${r.stderr}`);
    const head = r.stdout.split('\r\n\r\n')[0];
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
    assert.ok(status, `an HTTP/1.1 response: ${r.stdout}`);
    return {
      what: 'python TLS 1.3, Finished and request in one send', pid: r.pid, comm: 'python3', userAgent: '', clientPort: Number(port[1]),
      version: 'TLS 1.3', cipher: ianaCipher['TLS 1.3'], alpnOffered: ['http/1.1'], alpnChosen: 'http/1.1', boundNs: wallNs,
      exchanges: [{
        method: 'GET', path, status: Number(status[1]), reqBytes: Buffer.byteLength(req), respBytes: Buffer.byteLength(r.stdout, 'latin1'),
        contentType: /\r\ncontent-type:[ \t]*([^\r]*)/i.exec(head)?.[1] ?? '', clientNs: wallNs,
      }],
      clientPlaintext: false,
    };
  }

  /** SQL condition on `connections` for both ends of the client port's connection to nginx. */
  function connEnds(port: number): string {
    const c = `toIPv6('::ffff:${client.addr}')`;
    const s = `toIPv6('::ffff:${server.addr}')`;
    return `((role = 'client' AND saddr = ${c} AND sport = ${port} AND daddr = ${s} AND dport = ${TLS_PORT})
      OR (role = 'server' AND saddr = ${s} AND sport = ${TLS_PORT} AND daddr = ${c} AND dport = ${port}))`;
  }

  /** Wait until both ends of `conn` are closed and processed, every row flushed. */
  async function settle(conn: SeenConn): Promise<Map<string, string>> {
    await waitFor(`connection rows of both ends of client port ${conn.clientPort}`, async () => {
      const r = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${ch!.database}.connections WHERE ${connEnds(conn.clientPort)}`);
      return Number(r[0].n) >= 2;
    }, 60_000);
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const ends = await rows<{ role: string; conn_id: string }>(ch!, `
      SELECT role, toString(conn_id) AS conn_id FROM ${ch!.database}.connections WHERE ${connEnds(conn.clientPort)}`);
    assert.equal(ends.length, 2, 'one connection row per end');
    return new Map(ends.map((e) => [e.role, e.conn_id]));
  }

  const base = (conn: SeenConn, role: 'client' | 'server') => ({
    region: edge!.config.edge.region,
    node: edge!.node,
    comm: role === 'client' ? conn.comm : 'nginx',
    role,
    client_addr: `::ffff:${client.addr}`,
    client_port: conn.clientPort,
    server_addr: `::ffff:${server.addr}`,
    server_port: TLS_PORT,
  });

  /** The connection's pids: the client's process, and a worker of the test's nginx. */
  function checkPids(conn: SeenConn, byRole: Record<'client' | 'server', { pid: number }[]>, what: string): void {
    for (const r of byRole.client) assert.equal(r.pid, conn.pid, `${what}: client rows name the client's pid`);
    for (const r of byRole.server) assert.equal(parentPid(r.pid), nginx!.pid, `${what}: server rows name a worker of the test nginx`);
  }

  /** One handshake row per end, as the client saw the handshake. */
  async function checkHandshake(conn: SeenConn, connIds: Map<string, string>): Promise<void> {
    const all = await rows<TlsRow>(ch!, `SELECT region, node, toString(conn_id) AS conn_id, pid, comm, role, client_addr, client_port,
        server_addr, server_port, sni, alpn_offered, alpn, version, cipher, handshake_ns, completed
      FROM ${ch!.database}.tls_handshakes
      WHERE client_addr = toIPv6('::ffff:${client.addr}') AND client_port = ${conn.clientPort} ORDER BY role`);
    const what = `${conn.what} (port ${conn.clientPort})`;
    assert.deepEqual(all.map((r) => r.role), ['client', 'server'], `${what}: one handshake row per end: ${JSON.stringify(all, null, 1)}`);
    for (const r of all) {
      const { conn_id, pid, handshake_ns, ...rest } = r;
      assert.deepEqual(rest, {
        ...base(conn, r.role),
        sni: SNI,
        alpn_offered: conn.alpnOffered,
        // TLS 1.3 sends the choice encrypted (EncryptedExtensions); TLS 1.2 in the ServerHello.
        alpn: conn.version === 'TLS 1.2' ? conn.alpnChosen : '',
        version: conn.version,
        cipher: conn.cipher,
        completed: 1,
      }, `${what}: ${r.role} handshake row`);
      assert.equal(conn_id, connIds.get(r.role), `${what}: the ${r.role} handshake row has its socket's conn_id`);
      const ns = Number(handshake_ns);
      assert.ok(ns > 0, `${what}: ${r.role} handshake ${ns} ns above zero`);
      assert.ok(ns <= conn.boundNs, `${what}: ${r.role} handshake ${ns} ns within the ${conn.boundNs} ns the client measured`);
    }
    checkPids(conn, { client: [all[0]], server: [all[1]] }, what);
  }

  /** The HTTP/1.1 exchanges from the TLS plaintext, once per end, and nothing from the ciphertext. */
  async function checkHttp(conn: SeenConn, connIds: Map<string, string>): Promise<void> {
    const all = await rows<HttpRow>(ch!, `SELECT region, node, toString(conn_id) AS conn_id, pid, comm, role, client_addr, client_port,
        server_addr, server_port, protocol, method, host, path, status, req_messages, resp_messages, req_bytes, resp_bytes,
        ttfb_ns, latency_ns, tls, timed_out, req_pos, content_type, user_agent, partial
      FROM ${ch!.database}.http_requests
      WHERE client_addr = toIPv6('::ffff:${client.addr}') AND client_port = ${conn.clientPort} ORDER BY role, req_pos`);
    const what = `${conn.what} (port ${conn.clientPort})`;
    const byRole = { client: all.filter((r) => r.role === 'client'), server: all.filter((r) => r.role === 'server') };
    // A memory-BIO client's SSL calls never touch the socket: its plaintext belongs to no
    // connection, and must not be pinned on one (no client rows).
    const roles = conn.clientPlaintext ? ['client', 'server'] as const : ['server'] as const;
    assert.equal(byRole.client.length, conn.clientPlaintext ? conn.exchanges.length : 0, `${what}: client rows: ${JSON.stringify(all, null, 1)}`);
    assert.equal(byRole.server.length, conn.exchanges.length, `${what}: server rows: ${JSON.stringify(all, null, 1)}`);
    checkPids(conn, byRole, what);
    let pos = 0;
    conn.exchanges.forEach((x, i) => {
      for (const role of roles) {
        const r = byRole[role][i];
        const { ttfb_ns, latency_ns, conn_id, pid, ...rest } = r;
        assert.deepEqual(rest, {
          ...base(conn, role),
          protocol: 'http/1.1',
          method: x.method,
          host: SNI,
          path: x.path,
          status: x.status,
          req_messages: 1,
          resp_messages: 1,
          req_bytes: String(x.reqBytes),
          resp_bytes: String(x.respBytes),
          tls: 1,
          timed_out: 0,
          // Plaintext positions count from the connection's first plaintext byte.
          req_pos: String(pos),
          content_type: x.contentType,
          user_agent: conn.userAgent,
          partial: 0,
        }, `${what}: ${role} row ${i} (${x.method} ${x.path})`);
        assert.equal(conn_id, connIds.get(role), `${what}: the ${role} http row has its socket's conn_id`);
        const latency = Number(latency_ns);
        const ttfb = Number(ttfb_ns);
        assert.ok(latency > 0 && latency <= x.clientNs, `${what}: ${role} row ${i}: latency ${latency} ns in (0, ${x.clientNs}] (what the client measured)`);
        assert.ok(ttfb > 0 && ttfb <= latency, `${what}: ${role} row ${i}: ttfb ${ttfb} ns in (0, latency ${latency}]`);
      }
      pos += x.reqBytes;
    });
  }

  async function checkConn(conn: SeenConn): Promise<void> {
    checked.push(conn);
    const connIds = await settle(conn);
    assert.notEqual(connIds.get('client'), connIds.get('server'), 'each end is its own socket');
    await checkHandshake(conn, connIds);
    await checkHttp(conn, connIds);
  }

  test('TLS 1.3, ALPN http/1.1 only: GET x2 and a 404 on one connection', async () => {
    const conn = await curl('curl TLS 1.3 --http1.1', ['--http1.1', '--tlsv1.3'], [{ path: '/small.txt' }, { path: '/text' }, { path: '/status/404' }]);
    assert.deepEqual([conn.version, conn.cipher, conn.alpnOffered, conn.alpnChosen], ['TLS 1.3', ianaCipher['TLS 1.3'], ['http/1.1'], 'http/1.1']);
    assert.deepEqual(conn.exchanges.map((x) => x.status), [200, 200, 404]);
    await checkConn(conn);
  });

  test('TLS 1.2, ALPN http/1.1 only: GET and POST with a body on one connection', async () => {
    const conn = await curl('curl TLS 1.2 --http1.1', ['--http1.1', '--tlsv1.2', '--tls-max', '1.2'],
      [{ path: '/hello.html' }, { path: '/echo', body: 'name=netrig&kind=tls&filler=' + 'x'.repeat(500) }]);
    assert.deepEqual([conn.version, conn.cipher, conn.alpnOffered, conn.alpnChosen], ['TLS 1.2', ianaCipher['TLS 1.2'], ['http/1.1'], 'http/1.1']);
    assert.deepEqual(conn.exchanges.map((x) => x.status), [200, 200]);
    await checkConn(conn);
  });

  test('TLS 1.3, h2 offered and chosen: a handshake row, no http1 row', async () => {
    const conn = await curl('curl TLS 1.3 --http2', ['--http2', '--tlsv1.3'], [{ path: '/small.txt' }, { path: '/text' }]);
    assert.deepEqual([conn.version, conn.alpnOffered, conn.alpnChosen, conn.exchanges.length], ['TLS 1.3', ['h2', 'http/1.1'], 'h2', 0]);
    await checkConn(conn);
  });

  test('TLS 1.2, h2 offered and chosen (visible in the ServerHello): a handshake row, no http1 row', async () => {
    const conn = await curl('curl TLS 1.2 --http2', ['--http2', '--tlsv1.2', '--tls-max', '1.2'], [{ path: '/hello.html' }]);
    assert.deepEqual([conn.version, conn.alpnOffered, conn.alpnChosen, conn.exchanges.length], ['TLS 1.2', ['h2', 'http/1.1'], 'h2', 0]);
    await checkConn(conn);
  });

  test('openssl s_client: TLS 1.2 offering foo,http/1.1, one request', async () => {
    const conn = await sClient('/text');
    assert.equal(conn.exchanges[0].status, 200);
    await checkConn(conn);
  });

  test('nothing was lost on the way', async () => {
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const losses = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${ch!.database}.capture_losses`);
    assert.equal(losses[0].n, '0', 'capture_losses is empty');
  });

  test('TLS 1.3, the request sent with the client Finished: nginx reads both in its handshake, its http row still comes', async () => {
    const conn = await coalescedClient('/small.txt');
    assert.equal(conn.exchanges[0].status, 200);
    await checkConn(conn);
  });

  test('the tables hold nothing else: exactly the handshakes and exchanges above', async () => {
    const ports = checked.map((c) => c.clientPort);
    assert.equal(new Set(ports).size, ports.length, 'every connection had its own client port');
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const hs = await rows<{ role: string; n: string; completed: string }>(ch!, `
      SELECT role, count() AS n, sum(completed) AS completed FROM ${ch!.database}.tls_handshakes GROUP BY role ORDER BY role`);
    assert.deepEqual(hs.map((r) => [r.role, Number(r.n), Number(r.completed)]),
      [['client', checked.length, checked.length], ['server', checked.length, checked.length]], 'one completed handshake per end and connection');
    const want = checked.reduce((n, c) => n + c.exchanges.length, 0);
    const wantClient = checked.reduce((n, c) => n + (c.clientPlaintext ? c.exchanges.length : 0), 0);
    const http = await rows<{ role: string; tls: number; n: string; timed_out: string; ports: string }>(ch!, `
      SELECT role, tls, count() AS n, sum(timed_out) AS timed_out, toString(groupUniqArray(client_port)) AS ports
      FROM ${ch!.database}.http_requests GROUP BY role, tls ORDER BY role, tls`);
    assert.deepEqual(http.map((r) => [r.role, r.tls, Number(r.n), Number(r.timed_out)]), [['client', 1, wantClient, 0], ['server', 1, want, 0]],
      `http rows per role: all from plaintext (tls = 1), none from ciphertext (ports ${JSON.stringify(http.map((r) => r.ports))})`);
  });
});
