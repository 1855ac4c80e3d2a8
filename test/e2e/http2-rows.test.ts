/**
 * End to end over HTTP/2 with prior knowledge (h2c) and gRPC: the edge (real eBPF) and a
 * processor (http2, http1, tcp, losses) in this process, a real nats-server and the
 * embedded ClickHouse engine, while real clients in one network namespace talk to real
 * servers in another:
 *
 * - curl --http2-prior-knowledge against nginx (h2c): GET, HEAD, PUT with a body, 404;
 * - nghttp: many streams multiplexed on one connection, paths and statuses differing per
 *   stream, every frame it sent and received printed (-v), so each stream's exact request
 *   position and bytes each way are known; and POSTs answered, then reset by nginx with
 *   NO_ERROR, after the whole request was sent;
 * - a node:http2 client whose POST nginx answers and resets (NO_ERROR) before its body is
 *   sent, then a GET on the same connection;
 * - h2load: N requests over one connection, M streams at a time, cycling over three paths;
 * - a @grpc/grpc-js client and server (netrig.test.Echo): unary calls multiplexed on one
 *   channel and answered in reverse order, a server-streaming call, a call failing with
 *   NOT_FOUND and a percent-encoded grpc-message.
 *
 * `http_requests` must then hold exactly those streams, once per end (client and server
 * role), each with its own right method, :authority, path, status, content type, user
 * agent, gRPC service, method, status, message and message counts, request positions and
 * sizes equal at both ends (exact where the client printed its frames), one conn_id per
 * socket, nothing partial, nothing timed out, no HTTP/1 rows, and latencies above zero
 * and no larger than what the client measured.
 *
 * curl 7.88.1 (Debian 12) cannot reuse an h2c prior-knowledge connection (its second
 * transfer fails with "Error in the HTTP2 framing layer", curl/curl#10634, fixed in 8.0):
 * each curl transfer gets its own connection here; nghttp, h2load and gRPC multiplex.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { http1Function } from '../../processors/http1/index.js';
import { http2Function } from '../../processors/http2/index.js';
import { lossesFunction } from '../../processors/losses/index.js';
import type { Processor } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { Role } from '../../schemas/records.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { ECHO_SERVICE_NAME, FAIL_MESSAGE, FAIL_STATUS, STREAM_REPLY_BYTES } from '../helpers/grpc-echo-service.js';
import { runGrpcEchoClient, startGrpcEchoServer, type GrpcCallResult, type GrpcEchoServer } from '../helpers/grpc-echo.js';
import { H2_FRAME_HEADER_BYTES, H2_PREFACE_BYTES, parseH2load, parseNghttp, runNodeH2Client, runTimed } from '../helpers/h2-clients.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, run, type Host, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { drainProcessor, removeClickHouseData, rows, startEdgeProcessor, waitFor } from '../helpers/processor-run.js';
import { StreamReader } from '../helpers/stream-reader.js';

/** Per syscall: nginx and h2load gather many streams' frames into one write. */
const CAPTURE_BYTES = 64 * 1024;
/** What curl measured ('|' never occurs in these fields). */
const CURL_WRITE_OUT = '%{http_code}|%{http_version}|%{num_connects}|%{local_ip}|%{local_port}|%{size_download}|%{time_total}|%{content_type}\\n';
/** curl prints time_total in whole microseconds. */
const CURL_TIME_SLACK_NS = 1000;
/** The content type nginx (see helpers/nginx.ts) answers each path with (none for a PUT to /dav/). */
const CONTENT_TYPES: Record<string, string> = {
  '/copy/small.txt': 'text/plain',
  '/copy/hello.html': 'text/html',
  '/text': 'application/octet-stream',
  '/echo': 'application/octet-stream',
  '/status/404': 'text/html',
  '/status/503': 'text/html',
};
const expectedType = (path: string) => (path.startsWith('/dav/') ? '' : CONTENT_TYPES[path]);
/** Most bytes a gRPC call's header blocks (request or response, trailers included) and an empty END_STREAM DATA frame take. */
const GRPC_HEADERS_MAX_BYTES = 600;
/** Frame header and gRPC message prefix (flag, length) of one message in one DATA frame. */
const GRPC_MESSAGE_OVERHEAD = H2_FRAME_HEADER_BYTES + 5;
/** Request sizes of the unary calls, started together: 1000 bytes apart, so their rows' sizes tell them apart. */
const UNARY_BYTES = [3100, 100, 4100, 1100, 2100];

/** A row as JSONEachRow gives it (64-bit integers as strings). */
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
  grpc_service: string;
  grpc_method: string;
  grpc_status: number;
  grpc_message: string;
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

/** A byte count: exact, or a closed range where the client cannot know it exactly. */
type Bytes = number | [number, number];

/** One stream as the client saw it. */
interface SeenStream {
  protocol: 'h2' | 'grpc';
  method: string;
  path: string;
  status: number;
  contentType: string;
  grpc?: { service: string; method: string; status: number; message: string; reqMessages: number; respMessages: number };
  /** Exact position of its request in the client's egress, when the client printed its frames. */
  reqPos?: number;
  reqBytes: Bytes;
  respBytes: Bytes;
  /** The time the client measured for the stream, in ns: an upper bound of its latency. */
  clientNs: number;
}

/** One connection as the client saw it, streams in the order their requests went out. */
interface SeenConn {
  what: string;
  clientPort: number;
  serverPort: number;
  clientComm: string;
  clientPid: number;
  /** A user agent, or a pattern for one the client chooses itself. */
  userAgent: string | RegExp;
  host: string;
  streams: SeenStream[];
  /** Every byte each way, when the client printed them (nghttp). */
  totals?: { sent: number; received: number };
}

function inRange(n: number, b: Bytes): boolean {
  return typeof b === 'number' ? n === b : n >= b[0] && n <= b[1];
}

for (const capturePath of CAPTURE_PATHS) describe(`http_requests rows over h2c and gRPC: nghttp, h2load, curl, nginx and @grpc/grpc-js, both roles (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let grpcServer: GrpcEchoServer | undefined;
  let edge: EdgeRun | undefined;
  let reader: StreamReader | undefined;
  let ch: ClickHouse | undefined;
  let nc: NatsConnection | undefined;
  let processor: Processor | undefined;
  let outDir = '';
  let unregisterOut = () => {};
  let client: Host;
  let server: Host;
  let curlUserAgent = '';
  let nghttp2Version = '';
  /** Every connection checked so far: the table may hold nothing else. */
  const checked: SeenConn[] = [];

  before(async () => {
    outDir = mkdtempSync(join(tmpdir(), `netrig-http2-rows-${process.pid}-`));
    const dir = outDir;
    unregisterOut = onExit(`temp ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    const curlVersion = /^curl (\S+)/.exec((await run('curl', ['--version'])).stdout)?.[1];
    assert.ok(curlVersion, 'curl --version names its version');
    curlUserAgent = `curl/${curlVersion}`;
    nghttp2Version = /^nghttp nghttp2\/(\S+)/.exec((await run('nghttp', ['--version'])).stdout)?.[1] ?? '';
    assert.ok(nghttp2Version, 'nghttp --version names its version');

    nats = await startNatsServer();
    hosts = await createHostPair();
    client = hosts.client;
    server = hosts.server;
    nginx = await startNginx(server, { http2: true });
    grpcServer = await startGrpcEchoServer(server, { gather: UNARY_BYTES.length });
    edge = await startEdge({
      nats: nats.url,
      netns: [client.netnsIno(), server.netnsIno()],
      input: { captureBytes: CAPTURE_BYTES, capturePath },
    });
    reader = await StreamReader.open(nats.url, edge.stream);
    ({ ch, nc, processor } = await startEdgeProcessor(nats.url, edge, [http2Function, http1Function, tcpFunction, lossesFunction], 'http2_rows'));
  });

  after(() => cleanupAll(
    () => processor?.stop(),
    () => nc?.close(),
    () => ch?.close(),
    () => reader?.close(),
    () => edge?.stop(),
    () => grpcServer?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
    () => removeClickHouseData(),
    () => {
      if (outDir) rmSync(outDir, { recursive: true, force: true });
      unregisterOut();
    },
  ));

  const nginxAuthority = () => `${server.addr}:${nginx!.port}`;
  const url = (path: string) => `http://${nginxAuthority()}${path}`;

  /**
   * SQL condition on `connections` for both ends of the test's connections from client
   * ports `ports` (comma-separated) to `serverPort`; other sockets on this machine may use
   * the same ports in other namespaces.
   */
  function connEnds(ports: string, serverPort: number): string {
    const c = `toIPv6('::ffff:${client.addr}')`;
    const s = `toIPv6('::ffff:${server.addr}')`;
    return `((role = 'client' AND saddr = ${c} AND sport IN (${ports}) AND daddr = ${s} AND dport = ${serverPort})
      OR (role = 'server' AND saddr = ${s} AND sport = ${serverPort} AND daddr = ${c} AND dport IN (${ports})))`;
  }

  /** Client ports of the connections process `pid` opened to `serverPort`, as the stream shows them. */
  async function clientPortsOf(pid: number, serverPort: number, n: number): Promise<number[]> {
    const opens = () => reader!.connOpens({ netns: client.netnsIno(), role: Role.Client })
      .filter((o) => o.tgid === pid && o.tuple.dport === serverPort).map((o) => o.tuple.sport);
    await reader!.waitFor(`${n} connection(s) of pid ${pid} to port ${serverPort}`, () => opens().length >= n, 30_000);
    const ports = opens();
    assert.equal(ports.length, n, `pid ${pid} opened exactly ${n} connection(s) to port ${serverPort}: ${ports}`);
    return ports;
  }

  /** Wait until both ends of `conns` are closed and processed, every row flushed. */
  async function settle(conns: SeenConn[]): Promise<void> {
    const db = ch!.database;
    for (const serverPort of new Set(conns.map((c) => c.serverPort))) {
      const ports = conns.filter((c) => c.serverPort === serverPort).map((c) => c.clientPort);
      // Connection rows come from the close records, which follow the sockets' data on the stream.
      await waitFor(`connection rows of both ends of client ports ${ports} to ${serverPort}`, async () => {
        const r = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${db}.connections WHERE ${connEnds(ports.join(','), serverPort)}`);
        return Number(r[0].n) >= 2 * ports.length;
      }, 60_000);
    }
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
  }

  async function rowsOf(conn: SeenConn): Promise<HttpRow[]> {
    return rows<HttpRow>(ch!, `SELECT region, node, toString(conn_id) AS conn_id, pid, comm, role, client_addr, client_port,
        server_addr, server_port, protocol, method, host, path, status, grpc_service, grpc_method, grpc_status, grpc_message,
        req_messages, resp_messages, req_bytes, resp_bytes, ttfb_ns, latency_ns, tls, timed_out, req_pos, content_type,
        user_agent, partial
      FROM ${ch!.database}.http_requests
      WHERE client_port = ${conn.clientPort} AND client_addr = toIPv6('::ffff:${client.addr}') AND server_port = ${conn.serverPort}
      ORDER BY role, req_pos`);
  }

  /** The parent pid of a live process. */
  function parentPid(pid: number): number {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  }

  /** Server end of a connection: nginx's worker, or the gRPC server. */
  function serverOf(conn: SeenConn): { comm: string; pidOk: (pid: number) => boolean } {
    if (conn.serverPort === grpcServer!.port) return { comm: 'node', pidOk: (pid) => pid === grpcServer!.pid };
    return { comm: 'nginx', pidOk: (pid) => parentPid(pid) === nginx!.pid };
  }

  /**
   * A connection's rows, exactly: one client-role and one server-role row per stream, in
   * the order the requests went out, every column as the client saw it.
   */
  async function checkConn(conn: SeenConn, all?: HttpRow[]): Promise<void> {
    checked.push(conn);
    all ??= await rowsOf(conn);
    const dump = () => JSON.stringify(all, null, 1);
    const byRole = { client: all.filter((r) => r.role === 'client'), server: all.filter((r) => r.role === 'server') };
    assert.equal(byRole.client.length, conn.streams.length, `${conn.what}: client rows of port ${conn.clientPort}: ${dump()}`);
    assert.equal(byRole.server.length, conn.streams.length, `${conn.what}: server rows of port ${conn.clientPort}: ${dump()}`);
    // One socket, one conn_id; the two ends are two sockets.
    const clientIds = new Set(byRole.client.map((r) => r.conn_id));
    const serverIds = new Set(byRole.server.map((r) => r.conn_id));
    assert.equal(clientIds.size, 1, `${conn.what}: the client rows share one conn_id`);
    assert.equal(serverIds.size, 1, `${conn.what}: the server rows share one conn_id`);
    assert.notEqual([...clientIds][0], [...serverIds][0], `${conn.what}: client and server sockets have their own conn_id`);
    const srv = serverOf(conn);
    const serverPids = new Set(byRole.server.map((r) => r.pid));
    assert.equal(serverPids.size, 1, `${conn.what}: one server process served the connection`);
    assert.ok(srv.pidOk([...serverPids][0]), `${conn.what}: the server pid ${[...serverPids][0]} is the test's server`);
    assert.ok(byRole.client.every((r) => r.pid === conn.clientPid), `${conn.what}: client rows carry the client's pid ${conn.clientPid}`);

    conn.streams.forEach((x, i) => {
      const what = (role: string) => `${conn.what}, port ${conn.clientPort} ${role} row ${i} (${x.method} ${x.path})`;
      for (const role of ['client', 'server'] as const) {
        const r = byRole[role][i];
        const { ttfb_ns, latency_ns, conn_id, pid, req_bytes, resp_bytes, req_pos, user_agent, ...rest } = r;
        assert.deepEqual(rest, {
          region: edge!.config.edge.region,
          node: edge!.node,
          comm: role === 'client' ? conn.clientComm : srv.comm,
          role,
          client_addr: `::ffff:${client.addr}`,
          client_port: conn.clientPort,
          server_addr: `::ffff:${server.addr}`,
          server_port: conn.serverPort,
          protocol: x.protocol,
          method: x.method,
          host: conn.host,
          path: x.path,
          status: x.status,
          grpc_service: x.grpc?.service ?? '',
          grpc_method: x.grpc?.method ?? '',
          grpc_status: x.grpc?.status ?? -1,
          grpc_message: x.grpc?.message ?? '',
          req_messages: x.grpc?.reqMessages ?? 1,
          resp_messages: x.grpc?.respMessages ?? 1,
          tls: 0,
          timed_out: 0,
          content_type: x.contentType,
          partial: 0,
        }, `${what(role)}: ${dump()}`);
        if (typeof conn.userAgent === 'string') assert.equal(user_agent, conn.userAgent, `${what(role)}: user agent`);
        else assert.match(user_agent, conn.userAgent, `${what(role)}: user agent`);
        if (x.reqPos !== undefined) assert.equal(Number(req_pos), x.reqPos, `${what(role)}: request position`);
        assert.ok(inRange(Number(req_bytes), x.reqBytes), `${what(role)}: req_bytes ${req_bytes}, the client says ${JSON.stringify(x.reqBytes)}`);
        assert.ok(inRange(Number(resp_bytes), x.respBytes), `${what(role)}: resp_bytes ${resp_bytes}, the client says ${JSON.stringify(x.respBytes)}`);
        const latency = Number(latency_ns);
        const ttfb = Number(ttfb_ns);
        assert.ok(latency > 0, `${what(role)}: latency ${latency} ns above zero`);
        assert.ok(latency <= x.clientNs, `${what(role)}: latency ${latency} ns within the ${x.clientNs} ns the client measured`);
        assert.ok(ttfb > 0 && ttfb <= latency, `${what(role)}: ttfb ${ttfb} ns in (0, latency ${latency}]`);
      }
      // The two ends saw the same bytes of the stream.
      const [c, s] = [byRole.client[i], byRole.server[i]];
      assert.deepEqual([s.req_pos, s.req_bytes, s.resp_bytes, s.user_agent], [c.req_pos, c.req_bytes, c.resp_bytes, c.user_agent],
        `${what('both')}: request position, sizes and user agent equal at both ends`);
    });
    const positions = byRole.client.map((r) => r.req_pos);
    assert.equal(new Set(positions).size, positions.length, `${conn.what}: every stream its own request position`);

    // The rows' bytes fit in the connection's, as the tcp function counted them (the
    // preface, SETTINGS and other control frames are in no row).
    const ends = await rows<{ role: string; bytes_sent: string; bytes_received: string; conn_id: string }>(ch!, `
      SELECT role, bytes_sent, bytes_received, toString(conn_id) AS conn_id FROM ${ch!.database}.connections
      WHERE ${connEnds(String(conn.clientPort), conn.serverPort)} ORDER BY role`);
    assert.deepEqual(ends.map((e) => [e.role, e.conn_id]), [['client', [...clientIds][0]], ['server', [...serverIds][0]]], `${conn.what}: connection rows, same conn_ids`);
    const [ce, se] = ends;
    // Counted as the applications moved them: bytes still unread when a socket closed (a
    // last RST_STREAM or GOAWAY racing the close) are not.
    assert.ok(Number(se.bytes_received) <= Number(ce.bytes_sent) && Number(ce.bytes_received) <= Number(se.bytes_sent),
      `${conn.what}: neither end read more than the other sent: ${JSON.stringify(ends)}`);
    if (conn.totals) {
      assert.deepEqual([Number(ce.bytes_sent), Number(ce.bytes_received)], [conn.totals.sent, conn.totals.received],
        `${conn.what}: the connection moved exactly the frames the client printed`);
    }
    const reqSum = byRole.client.reduce((n, r) => n + Number(r.req_bytes), 0);
    const respSum = byRole.client.reduce((n, r) => n + Number(r.resp_bytes), 0);
    assert.ok(reqSum + H2_PREFACE_BYTES + H2_FRAME_HEADER_BYTES <= Number(ce.bytes_sent), `${conn.what}: request bytes ${reqSum} within the ${ce.bytes_sent} sent`);
    assert.ok(respSum + H2_FRAME_HEADER_BYTES <= Number(ce.bytes_received), `${conn.what}: response bytes ${respSum} within the ${ce.bytes_received} received`);
  }

  // ---- curl ---------------------------------------------------------------------------

  interface CurlPart {
    path: string;
    method?: 'GET' | 'HEAD' | 'PUT';
    /** PUT: the body to upload. */
    body?: string;
  }

  /** One curl transfer over h2c, on its own connection (see the module comment). */
  async function curl(p: CurlPart, n: number): Promise<SeenConn> {
    const file = join(outDir, `curl-body-${n}`);
    const upload = join(outDir, `curl-upload-${n}`);
    if (p.body !== undefined) writeFileSync(upload, p.body);
    const r = await runTimed(client, 'curl', [
      '--http2-prior-knowledge', '-sS', '--max-time', '30', '-w', CURL_WRITE_OUT, '-o', file,
      ...(p.method === 'HEAD' ? ['-I'] : []),
      ...(p.method === 'PUT' ? ['-T', upload] : []),
      url(p.path),
    ]);
    assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
    const [code, version, connects, localIp, localPort, sizeDownload, timeTotal, contentType] = r.stdout.trim().split('|');
    assert.deepEqual([version, connects, localIp], ['2', '1', client.addr], `curl ${p.path}: HTTP/2 over one new connection from the client address`);
    const body = Number(sizeDownload);
    if (p.method !== 'HEAD') assert.equal(statSync(file).size, body, `curl ${p.path}: body size`);
    const method = p.method ?? 'GET';
    assert.equal(contentType, expectedType(p.path), `curl ${p.path}: content type`);
    assert.deepEqual(await clientPortsOf(r.pid, nginx!.port, 1), [Number(localPort)], `curl ${p.path}: its one connection`);
    const reqBody = p.body ? H2_FRAME_HEADER_BYTES + Buffer.byteLength(p.body) : 0;
    const respBody = body ? H2_FRAME_HEADER_BYTES + body : 0;
    return {
      what: `curl ${method} ${p.path}`,
      clientPort: Number(localPort),
      serverPort: nginx!.port,
      clientComm: 'curl',
      clientPid: r.pid,
      userAgent: curlUserAgent,
      host: nginxAuthority(),
      streams: [{
        protocol: 'h2',
        method,
        path: p.path,
        status: Number(code),
        contentType,
        // Its HEADERS frame (HPACK: a few hundred bytes at most) and the body's DATA frame.
        reqBytes: [H2_FRAME_HEADER_BYTES + 1 + reqBody, H2_FRAME_HEADER_BYTES + 300 + reqBody],
        respBytes: [H2_FRAME_HEADER_BYTES + 1 + respBody, H2_FRAME_HEADER_BYTES + 300 + respBody],
        clientNs: Math.round(Number(timeTotal) * 1e9) + CURL_TIME_SLACK_NS,
      }],
    };
  }

  test('curl --http2-prior-knowledge: GET, HEAD, PUT with a body and a 404, one row per stream and role', async () => {
    // PUT to /dav/: nginx reads the whole body before it answers. (A POST to a `return`
    // location is answered, and reset with NO_ERROR, as soon as its HEADERS are read; curl
    // sends the body in a later write, so whether it gets there first is a race: that case
    // is the node:http2 test's below.)
    const parts: CurlPart[] = [
      { path: '/copy/small.txt' },
      { path: '/copy/hello.html', method: 'HEAD' },
      { path: `/dav/put-${process.pid}.txt`, method: 'PUT', body: 'name=netrig&kind=h2c&filler=' + 'x'.repeat(500) },
      { path: '/status/404' },
    ];
    const conns: SeenConn[] = [];
    for (const [i, p] of parts.entries()) conns.push(await curl(p, i));
    assert.deepEqual(conns.map((c) => c.streams[0].status), [200, 200, 201, 404]);
    assert.equal(new Set(conns.map((c) => c.clientPort)).size, conns.length, 'one connection per transfer');
    await settle(conns);
    for (const c of conns) await checkConn(c);
  });

  // ---- nghttp -------------------------------------------------------------------------

  /** One nghttp run (-v -s: frames and per-stream times) over one connection. */
  async function nghttp(args: string[], urls: string[], what: string): Promise<SeenConn> {
    const r = await runTimed(client, 'nghttp', ['-n', '-v', '-s', ...args, ...urls]);
    assert.equal(r.code, 0, `nghttp failed: ${r.stderr}\n${r.stdout}`);
    const seen = parseNghttp(r.stdout);
    const [port] = await clientPortsOf(r.pid, nginx!.port, 1);
    return {
      what,
      clientPort: port,
      serverPort: nginx!.port,
      clientComm: 'nghttp',
      clientPid: r.pid,
      userAgent: `nghttp2/${nghttp2Version}`,
      host: nginxAuthority(),
      totals: { sent: seen.sentBytes, received: seen.receivedBytes },
      streams: seen.streams.map((s) => {
        assert.equal(s.req[':authority'], nginxAuthority(), `${what}: stream ${s.id} :authority`);
        assert.equal(s.req['user-agent'], `nghttp2/${nghttp2Version}`, `${what}: stream ${s.id} user-agent`);
        return {
          protocol: 'h2' as const,
          method: s.req[':method'],
          path: s.req[':path'],
          status: Number(s.resp[':status']),
          contentType: s.resp['content-type'] ?? '',
          reqPos: s.reqPos,
          reqBytes: s.reqBytes,
          respBytes: s.respBytes,
          // Streams nghttp printed no time for are bounded by the whole run.
          clientNs: s.processNs ?? r.elapsedNs,
        };
      }),
    };
  }

  test('nghttp: ten streams multiplexed on one connection, each its own row (path, status, position, bytes)', async () => {
    const paths = ['/copy/small.txt', '/status/404', '/copy/hello.html', '/status/503', '/text'];
    // -m 2: each URI twice; all ten requests go out before any response is read.
    const conn = await nghttp(['-m', '2'], paths.map(url), 'nghttp -m 2 (5 URIs)');
    assert.deepEqual(conn.streams.map((s) => [s.method, s.path, s.status, s.contentType]),
      paths.flatMap((p) => {
        const status = p === '/status/404' ? 404 : p === '/status/503' ? 503 : 200;
        return [['GET', p, status, CONTENT_TYPES[p]], ['GET', p, status, CONTENT_TYPES[p]]];
      }), 'nghttp opened one stream per request, in order');
    assert.ok(conn.streams.every((s) => s.clientNs < 60e9), 'nghttp timed every stream');
    await settle([conn]);
    await checkConn(conn);
  });

  test('nghttp: three POSTs with a body on one connection, answered before nginx resets each stream (RST_STREAM NO_ERROR)', async () => {
    const body = join(outDir, 'post-body');
    writeFileSync(body, Buffer.alloc(1200, 'netrig h2c post body\n'));
    const conn = await nghttp(['-m', '3', '-d', body], [url('/echo')], 'nghttp -m 3 -d (POST /echo)');
    assert.deepEqual(conn.streams.map((s) => [s.method, s.path, s.status]), [0, 1, 2].map(() => ['POST', '/echo', 200]));
    assert.ok(conn.streams.every((s) => (s.reqBytes as number) > 1200 + 2 * H2_FRAME_HEADER_BYTES), 'each request carried the body');
    await settle([conn]);
    await checkConn(conn);
  });

  // ---- node:http2 ---------------------------------------------------------------------

  test('node:http2: a POST answered and reset (RST_STREAM NO_ERROR) before its body was sent, then a GET on the same connection', async () => {
    // nginx answers /echo as soon as the request's HEADERS are in, then resets the stream
    // with NO_ERROR (RFC 9113 §8.1): the request never ends. Every byte was captured, so
    // the rows are not `partial` (which says bytes of the exchange were not captured): the
    // END_STREAM a reset stream lacks is the protocol's doing, not the capture's.
    const ua = 'netrig-h2/1';
    const res = await runNodeH2Client(client, `http://${nginxAuthority()}`, [
      { method: 'POST', path: '/echo', holdOpen: true, userAgent: ua },
      { method: 'GET', path: '/text', userAgent: ua },
    ]);
    assert.deepEqual(res.results.map((r) => [r.status, r.contentType, r.rstCode]),
      [[200, CONTENT_TYPES['/echo'], 0], [200, CONTENT_TYPES['/text'], 0]], 'what the client saw');
    assert.deepEqual(await clientPortsOf(res.pid, nginx!.port, 1), [res.localPort], 'its one connection');
    const conn: SeenConn = {
      what: 'node:http2 early answer',
      clientPort: res.localPort,
      serverPort: nginx!.port,
      clientComm: 'node',
      clientPid: res.pid,
      userAgent: ua,
      host: nginxAuthority(),
      streams: res.results.map((r, i) => {
        const path = i === 0 ? '/echo' : '/text';
        return {
          protocol: 'h2' as const,
          method: i === 0 ? 'POST' : 'GET',
          path,
          status: r.status,
          contentType: r.contentType,
          // HEADERS only (no DATA: the body was never sent); the answer's HEADERS and DATA.
          reqBytes: [H2_FRAME_HEADER_BYTES + 1, H2_FRAME_HEADER_BYTES + 300] as [number, number],
          respBytes: [2 * H2_FRAME_HEADER_BYTES + 1 + r.bodyBytes, 2 * H2_FRAME_HEADER_BYTES + 300 + r.bodyBytes] as [number, number],
          clientNs: r.elapsedNs,
        };
      }),
    };
    await settle([conn]);
    await checkConn(conn);
  });

  // ---- h2load -------------------------------------------------------------------------

  test('h2load: 30 requests over one connection, 6 streams at a time, cycling over three paths', async () => {
    const N = 30;
    const paths = ['/copy/small.txt', '/text', '/status/404'];
    const r = await runTimed(client, 'h2load', ['-n', String(N), '-c', '1', '-m', '6', ...paths.map(url)]);
    assert.equal(r.code, 0, `h2load failed: ${r.stderr}\n${r.stdout}`);
    const h = parseH2load(r.stdout);
    assert.deepEqual(h.requests, { total: N, started: N, done: N, succeeded: N * 2 / 3, failed: N / 3, errored: 0, timeout: 0 }, r.stdout);
    assert.deepEqual(h.statusCodes, { '2xx': N * 2 / 3, '3xx': 0, '4xx': N / 3, '5xx': 0 }, r.stdout);
    const [port] = await clientPortsOf(r.pid, nginx!.port, 1);
    const conn: SeenConn = {
      what: 'h2load -n 30 -c 1 -m 6',
      clientPort: port,
      serverPort: nginx!.port,
      clientComm: 'h2load',
      clientPid: r.pid,
      userAgent: `h2load nghttp2/${nghttp2Version}`,
      host: nginxAuthority(),
      // h2load submits its requests in turn over the URIs: the i-th stream asks for paths[i % 3].
      streams: Array.from({ length: N }, (_, i) => {
        const path = paths[i % paths.length];
        return {
          protocol: 'h2' as const,
          method: 'GET',
          path,
          status: path === '/status/404' ? 404 : 200,
          contentType: CONTENT_TYPES[path],
          reqBytes: [H2_FRAME_HEADER_BYTES + 1, H2_FRAME_HEADER_BYTES + 300] as [number, number],
          respBytes: [2 * H2_FRAME_HEADER_BYTES + 2, 2 * H2_FRAME_HEADER_BYTES + 300 + 1000] as [number, number],
          clientNs: h.maxRequestNs,
        };
      }),
    };
    await settle([conn]);
    const all = await rowsOf(conn);
    await checkConn(conn, all);
    // What h2load received of the streams: header blocks and DATA payloads, each response
    // one HEADERS frame and one DATA frame (nginx sends these small bodies whole, with
    // END_STREAM).
    const respSum = all.filter((x) => x.role === 'client').reduce((n, x) => n + Number(x.resp_bytes), 0);
    assert.equal(respSum, h.traffic.headers + h.traffic.data + 2 * H2_FRAME_HEADER_BYTES * N, 'response bytes = what h2load received of the streams');
  });

  // ---- gRPC ---------------------------------------------------------------------------

  test('gRPC (@grpc/grpc-js, h2c): five unary calls multiplexed on one channel, a server stream and a NOT_FOUND, one row each', async () => {
    const srv = grpcServer!;
    const res = await runGrpcEchoClient(client, srv, [
      UNARY_BYTES.map((bytes) => ({ method: 'Unary' as const, bytes })),
      [{ method: 'ServerStream', bytes: 40 }],
      [{ method: 'Fail', bytes: 7 }],
    ]);
    // What the client saw.
    const unary = res.calls.filter((c) => c.method === 'Unary');
    assert.deepEqual(unary.map((c) => [c.code, c.replies, c.echoed]), UNARY_BYTES.map((b) => [0, [b], true]), 'every unary call echoed');
    const stream = res.calls.find((c) => c.method === 'ServerStream')!;
    assert.deepEqual([stream.code, stream.replies], [0, [...STREAM_REPLY_BYTES]], 'the server stream');
    const fail = res.calls.find((c) => c.method === 'Fail')!;
    assert.deepEqual([fail.code, fail.details, fail.replies], [FAIL_STATUS, FAIL_MESSAGE, []], 'the failing call');
    assert.deepEqual(srv.batches.slice(-1), [{ calls: UNARY_BYTES.length, complete: true }],
      'the server had every unary call open at once before it answered');
    assert.equal(res.localPorts.length, 1, `one connection for every call: ${res.localPorts}`);
    const [port] = res.localPorts;
    assert.deepEqual(await clientPortsOf(res.pid, srv.port, 1), [port], 'the client process opened that one connection');

    const expect = (c: GrpcCallResult) => {
      const respMessages = c.replies.length;
      const respPayload = c.replies.reduce((n, b) => n + GRPC_MESSAGE_OVERHEAD + b, 0);
      const reqMin = H2_FRAME_HEADER_BYTES + 1 + GRPC_MESSAGE_OVERHEAD + c.bytes;
      const respMin = H2_FRAME_HEADER_BYTES + 1 + respPayload;
      return {
        protocol: 'grpc' as const,
        method: 'POST',
        path: `/${ECHO_SERVICE_NAME}/${c.method}`,
        status: 200,
        contentType: 'application/grpc+proto',
        grpc: {
          service: ECHO_SERVICE_NAME, method: c.method, status: c.code,
          // The grpc-message the client decoded ("OK" on success, as grpc-js sends it).
          message: c.details,
          reqMessages: 1, respMessages,
        },
        reqBytes: [reqMin, reqMin + GRPC_HEADERS_MAX_BYTES] as [number, number],
        respBytes: [respMin, respMin + GRPC_HEADERS_MAX_BYTES] as [number, number],
        clientNs: c.elapsedNs,
      };
    };
    const conn: SeenConn = {
      what: 'grpc-js client',
      clientPort: port,
      serverPort: srv.port,
      clientComm: 'node',
      clientPid: res.pid,
      userAgent: /^grpc-node-js\/\d+\.\d+\.\d+/,
      host: `${srv.addr}:${srv.port}`,
      streams: [],
    };
    await settle([conn]);
    const all = await rowsOf(conn);
    // The unary calls went out together: their order on the wire is grpc-js's. Each row
    // belongs to the one call whose sizes it fits (the calls' sizes lie 1000 bytes apart).
    const clientRows = all.filter((r) => r.role === 'client');
    conn.streams = clientRows.map((r) => {
      const fits = res.calls.filter((c) => {
        const e = expect(c);
        return r.path === e.path && inRange(Number(r.req_bytes), e.reqBytes) && inRange(Number(r.resp_bytes), e.respBytes);
      });
      assert.equal(fits.length, 1, `client row at ${r.req_pos} (${r.path}, ${r.req_bytes}/${r.resp_bytes} bytes) fits exactly one call: ${JSON.stringify(fits)}`);
      return expect(fits[0]);
    });
    assert.deepEqual(conn.streams.map((s) => s.path).sort(), res.calls.map((c) => `/${ECHO_SERVICE_NAME}/${c.method}`).sort(), 'every call has its row');
    assert.equal(new Set(conn.streams.map((s) => JSON.stringify([s.path, s.reqBytes]))).size, res.calls.length, 'no call has two rows');
    await checkConn(conn, all);
  });

  // ---- the whole table ----------------------------------------------------------------

  test('the table holds nothing else: exactly the streams above, no HTTP/1 rows, none timed out', async () => {
    const ports = checked.map((c) => `${c.serverPort}/${c.clientPort}`);
    assert.equal(new Set(ports).size, ports.length, 'every connection had its own client port');
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const want = (p: string) => checked.reduce((n, c) => n + c.streams.filter((s) => s.protocol === p).length, 0);
    const got = await rows<{ role: string; protocol: string; n: string; timed_out: string }>(ch!, `
      SELECT role, protocol, count() AS n, sum(timed_out) AS timed_out
      FROM ${ch!.database}.http_requests GROUP BY role, protocol ORDER BY role, protocol`);
    assert.deepEqual(got.map((r) => [r.role, r.protocol, Number(r.n), Number(r.timed_out)]), [
      ['client', 'grpc', want('grpc'), 0], ['client', 'h2', want('h2'), 0],
      ['server', 'grpc', want('grpc'), 0], ['server', 'h2', want('h2'), 0],
    ], 'rows per role and protocol (partial is checked row by row above)');
    const losses = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${ch!.database}.capture_losses`);
    assert.equal(losses[0].n, '0', 'nothing was lost on the way');
  });
});
