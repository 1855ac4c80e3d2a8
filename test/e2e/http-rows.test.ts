/**
 * End to end: the edge (real eBPF) and a processor (http1, tcp, losses) in this process, a
 * real nats-server and the embedded ClickHouse engine, while curl and a raw client in one
 * network namespace talk HTTP/1.1 to nginx in another: keep-alive, POST, HEAD, chunked,
 * 404, 500 (which ends keep-alive), a 1 MiB file sent with sendfile followed by more
 * requests, and pipelined requests written in one write. `http_requests` must then hold
 * exactly those exchanges, once per end (client and server role), with the method, path,
 * Host header, status, content type and the sizes on the wire the client saw, request
 * positions and conn ids consistent per socket, `partial` only where bytes were not
 * captured, and a latency above zero and no larger than what the client measured.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { http1Function } from '../../processors/http1/index.js';
import { lossesFunction } from '../../processors/losses/index.js';
import type { Processor } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { Direction, Role } from '../../schemas/records.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, run, type Host, type HostPair } from '../helpers/netns.js';
import { BIG_FILE_BYTES, startNginx, type NginxHandle } from '../helpers/nginx.js';
import { drainProcessor, removeClickHouseData, rows, startEdgeProcessor, waitFor } from '../helpers/processor-run.js';
import { getRequest, postRequest, rawHttpSession, type RawHttpResult } from '../helpers/raw-http.js';
import { StreamReader, uncovered } from '../helpers/stream-reader.js';

const CAPTURE_BYTES = 16 * 1024;
/** What curl measured, one line per transfer ('|' never occurs in these fields). */
const CURL_WRITE_OUT = '%{http_code}|%{local_ip}|%{local_port}|%{num_connects}|%{size_request}|%{size_header}|%{size_download}|%{time_total}|%{content_type}\\n';
/** curl prints time_total in whole microseconds: the kernel's nanoseconds may exceed it by less than one. */
const CURL_TIME_SLACK_NS = 1000;

/** One exchange as the client saw it. */
interface Seen {
  method: string;
  path: string;
  status: number;
  /** Request bytes the client wrote (start line, headers, body). */
  reqBytes: number;
  /** Response bytes the client read (status line, headers, body with its framing). */
  respBytes: number;
  contentType: string;
  /** The time the client measured for the exchange, in ns: an upper bound of its latency. */
  clientNs: number;
}

/** One connection as the client saw it, exchanges in order. */
interface SeenConn {
  clientPort: number;
  comm: string;
  userAgent: string;
  exchanges: Seen[];
}

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
  method?: 'GET' | 'HEAD' | 'POST';
  body?: string;
}

for (const capturePath of CAPTURE_PATHS) describe(`http_requests rows: curl and a raw client against nginx, both roles (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
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
  /** Every connection checked so far: the table may hold nothing else. */
  const checked: SeenConn[] = [];

  before(async () => {
    outDir = mkdtempSync(join(tmpdir(), `netrig-http-rows-${process.pid}-`));
    const dir = outDir;
    unregisterOut = onExit(`temp ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    const version = /^curl (\S+)/.exec((await run('curl', ['--version'])).stdout)?.[1];
    assert.ok(version, 'curl --version names its version');
    curlUserAgent = `curl/${version}`;

    nats = await startNatsServer();
    hosts = await createHostPair();
    client = hosts.client;
    server = hosts.server;
    nginx = await startNginx(server);
    edge = await startEdge({
      nats: nats.url,
      netns: [client.netnsIno(), server.netnsIno()],
      input: { captureBytes: CAPTURE_BYTES, capturePath },
    });
    reader = await StreamReader.open(nats.url, edge.stream);
    ({ ch, nc, processor } = await startEdgeProcessor(nats.url, edge, [http1Function, tcpFunction, lossesFunction], 'http_rows'));
  });

  after(() => cleanupAll(
    () => processor?.stop(),
    () => nc?.close(),
    () => ch?.close(),
    () => reader?.close(),
    () => edge?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
    () => removeClickHouseData(),
    () => {
      if (outDir) rmSync(outDir, { recursive: true, force: true });
      unregisterOut();
    },
  ));

  const hostHeader = () => `${server.addr}:${nginx!.port}`;
  let outFiles = 0;

  /**
   * One curl invocation in the client namespace (keep-alive across its transfers). Bodies
   * are kept raw (--raw: chunked framing included) so their file size is the body on the
   * wire. Returns the connections it used, as the client saw them.
   */
  async function curl(parts: CurlPart[]): Promise<SeenConn[]> {
    const files = parts.map(() => join(outDir, `body-${++outFiles}`));
    const args = parts.flatMap((p, i) => [
      ...(i ? ['--next'] : []),
      '-sS', '--max-time', '30', '--raw', '-w', CURL_WRITE_OUT, '-o', files[i],
      ...(p.method === 'HEAD' ? ['-I'] : []),
      ...(p.body !== undefined ? ['--data-binary', p.body] : []),
      `http://${hostHeader()}${p.path}`,
    ]);
    const r = await client.exec('curl', args);
    assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n').map((l) => l.split('|'));
    assert.equal(lines.length, parts.length, `one line per transfer: ${r.stdout}`);
    const conns: SeenConn[] = [];
    lines.forEach((l, i) => {
      const [code, localIp, localPort, connects, sizeRequest, sizeHeader, sizeDownload, timeTotal, contentType] = l;
      const p = parts[i];
      assert.equal(localIp, client.addr, 'curl used the client address');
      const port = Number(localPort);
      if (connects === '1') conns.push({ clientPort: port, comm: 'curl', userAgent: curlUserAgent, exchanges: [] });
      else assert.equal(connects, '0', 'a transfer makes at most one connection');
      const conn = conns[conns.length - 1];
      assert.ok(conn && conn.clientPort === port, `transfer ${i} (${p.path}) reused the previous connection`);
      // With --raw the body file holds the body as it came over the wire.
      const wireBody = p.method === 'HEAD' ? 0 : statSync(files[i]).size;
      if (p.path.startsWith('/chunked/')) assert.ok(wireBody > Number(sizeDownload), `${p.path}: the raw body carries the chunk framing`);
      else if (p.method !== 'HEAD') assert.equal(wireBody, Number(sizeDownload), `${p.path}: body size`);
      conn.exchanges.push({
        method: p.method ?? (p.body !== undefined ? 'POST' : 'GET'),
        path: p.path,
        status: Number(code),
        // size_request counts what curl sent: start line, headers and the (small) body.
        reqBytes: Number(sizeRequest),
        respBytes: Number(sizeHeader) + wireBody,
        contentType,
        clientNs: Math.round(Number(timeTotal) * 1e9) + CURL_TIME_SLACK_NS,
      });
    });
    return conns;
  }

  /** One raw-client connection: what it sent and read, exchange by exchange. */
  function rawConn(res: RawHttpResult, requests: Buffer[], method: (i: number) => string, path: (i: number) => string): SeenConn {
    assert.ok(res.sent.equals(Buffer.concat(requests)), 'the raw client sent exactly the requests');
    return {
      clientPort: res.localPort,
      comm: 'node',
      userAgent: 'netrig-raw/1',
      exchanges: res.exchanges.map((x, i) => {
        const head = res.received.subarray(x.respStart, x.respEnd).toString('latin1').split('\r\n\r\n')[0];
        return {
          method: method(i),
          path: path(i),
          status: x.status,
          reqBytes: x.reqEnd - x.reqStart,
          respBytes: x.respEnd - x.respStart,
          contentType: /\r\ncontent-type:[ \t]*([^\r]*)/i.exec(head)?.[1] ?? '',
          clientNs: x.elapsedNs,
        };
      }),
    };
  }

  /**
   * SQL condition on `connections` for both ends of the test's connections from client
   * ports `ports` (comma-separated) to nginx; other sockets on this machine may use the same
   * ports in other namespaces.
   */
  function connEnds(ports: string): string {
    const c = `toIPv6('::ffff:${client.addr}')`;
    const s = `toIPv6('::ffff:${server.addr}')`;
    return `((role = 'client' AND saddr = ${c} AND sport IN (${ports}) AND daddr = ${s} AND dport = ${nginx!.port})
      OR (role = 'server' AND saddr = ${s} AND sport = ${nginx!.port} AND daddr = ${c} AND dport IN (${ports})))`;
  }

  /** Wait until both ends of `conns` are closed and processed, every row flushed. */
  async function settle(conns: SeenConn[]): Promise<void> {
    const db = ch!.database;
    const ports = conns.map((c) => c.clientPort).join(',');
    // Connection rows come from the close records, which follow the sockets' data on the stream.
    await waitFor(`connection rows of both ends of client ports ${ports}`, async () => {
      const r = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${db}.connections WHERE ${connEnds(ports)}`);
      return Number(r[0].n) >= 2 * conns.length;
    }, 60_000);
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
  }

  async function rowsOf(conn: SeenConn): Promise<HttpRow[]> {
    return rows<HttpRow>(ch!, `SELECT region, node, toString(conn_id) AS conn_id, pid, comm, role, client_addr, client_port, server_addr, server_port,
        protocol, method, host, path, status, req_messages, resp_messages, req_bytes, resp_bytes, ttfb_ns, latency_ns, tls,
        timed_out, req_pos, content_type, user_agent, partial
      FROM ${ch!.database}.http_requests WHERE client_port = ${conn.clientPort} AND client_addr = toIPv6('::ffff:${client.addr}')
      ORDER BY role, req_pos`);
  }

  /** The parent pid of a live process. */
  function parentPid(pid: number): number {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  }

  /**
   * Whether nginx sends the response body with sendfile (static files outside /copy/ and
   * /chunked/): no user buffer, so the server end cannot capture it.
   */
  function bySendfile(x: Seen): boolean {
    return x.method !== 'HEAD' && x.status === 200 && /^\/(small\.txt|hello\.html|big\.bin)$/.test(x.path);
  }

  /** conn_id (socket cookie) on the stream of the client or the server end of `conn`. */
  function streamConnId(conn: SeenConn, role: 'client' | 'server'): number {
    const opens = role === 'client'
      ? reader!.connOpens({ netns: client.netnsIno(), role: Role.Client }).filter((o) => o.tuple.sport === conn.clientPort && o.tuple.dport === nginx!.port)
      : reader!.connOpens({ netns: server.netnsIno(), role: Role.Server }).filter((o) => o.tuple.sport === nginx!.port && o.tuple.dport === conn.clientPort);
    assert.equal(opens.length, 1, `one CONN_OPEN of the ${role} end of port ${conn.clientPort} on the stream`);
    return opens[0].connId;
  }

  /**
   * Per end and exchange, whether some of its bytes (request or response) were not captured,
   * by the data records on the stream: what `partial` must say.
   */
  async function uncapturedByExchange(conn: SeenConn): Promise<Record<'client' | 'server', boolean[]>> {
    await reader!.update();
    const out = { client: [] as boolean[], server: [] as boolean[] };
    for (const role of ['client', 'server'] as const) {
      const id = streamConnId(conn, role);
      const req = reader!.payload(id, role === 'client' ? Direction.Egress : Direction.Ingress);
      const resp = reader!.payload(id, role === 'client' ? Direction.Ingress : Direction.Egress);
      let reqPos = 0;
      let respPos = 0;
      for (const x of conn.exchanges) {
        out[role].push(uncovered(req, reqPos, reqPos + x.reqBytes) + uncovered(resp, respPos, respPos + x.respBytes) > 0);
        reqPos += x.reqBytes;
        respPos += x.respBytes;
      }
    }
    return out;
  }

  /**
   * A connection's rows, exactly: one client-role and one server-role row per exchange, in
   * order, every column as the client saw it; `partial` where the stream shows bytes of the
   * exchange that were not captured (and always for bodies nginx sent with sendfile).
   */
  async function checkConn(conn: SeenConn): Promise<Record<'client' | 'server', boolean[]>> {
    checked.push(conn);
    const all = await rowsOf(conn);
    const uncaptured = await uncapturedByExchange(conn);
    const what = (role: string, i: number) => `port ${conn.clientPort} ${role} row ${i} (${conn.exchanges[i]?.method} ${conn.exchanges[i]?.path})`;
    const byRole = { client: all.filter((r) => r.role === 'client'), server: all.filter((r) => r.role === 'server') };
    assert.equal(byRole.client.length, conn.exchanges.length, `client rows of port ${conn.clientPort}: ${JSON.stringify(all, null, 1)}`);
    assert.equal(byRole.server.length, conn.exchanges.length, `server rows of port ${conn.clientPort}: ${JSON.stringify(all, null, 1)}`);
    // One socket, one conn_id; the two ends are two sockets.
    const clientIds = new Set(byRole.client.map((r) => r.conn_id));
    const serverIds = new Set(byRole.server.map((r) => r.conn_id));
    assert.equal(clientIds.size, 1, 'the client rows share one conn_id');
    assert.equal(serverIds.size, 1, 'the server rows share one conn_id');
    assert.notEqual([...clientIds][0], [...serverIds][0], 'client and server sockets have their own conn_id');
    // Server rows name nginx's worker (a child of the master this test started).
    const serverPids = new Set(byRole.server.map((r) => r.pid));
    assert.equal(serverPids.size, 1, 'one nginx worker served the connection');
    assert.equal(parentPid([...serverPids][0]), nginx!.pid, 'the server pid is a worker of the test nginx');
    assert.ok(byRole.client.every((r) => r.pid > 0 && r.pid !== nginx!.pid), 'client rows carry the client pid');

    let pos = 0;
    conn.exchanges.forEach((x, i) => {
      for (const role of ['client', 'server'] as const) {
        const r = byRole[role][i];
        const { ttfb_ns, latency_ns, conn_id, pid, ...rest } = r;
        assert.deepEqual(rest, {
          region: edge!.config.edge.region,
          node: edge!.node,
          comm: role === 'client' ? conn.comm : 'nginx',
          role,
          client_addr: `::ffff:${client.addr}`,
          client_port: conn.clientPort,
          server_addr: `::ffff:${server.addr}`,
          server_port: nginx!.port,
          protocol: 'http/1.1',
          method: x.method,
          host: hostHeader(),
          path: x.path,
          status: x.status,
          req_messages: 1,
          resp_messages: 1,
          req_bytes: String(x.reqBytes),
          resp_bytes: String(x.respBytes),
          tls: 0,
          timed_out: 0,
          // A fresh connection: both ends count request bytes from 0, so they agree.
          req_pos: String(pos),
          content_type: x.contentType,
          user_agent: conn.userAgent,
          partial: uncaptured[role][i] ? 1 : 0,
        }, what(role, i));
        if (role === 'server' && bySendfile(x)) assert.equal(r.partial, 1, `${what(role, i)}: nginx sent the body with sendfile, uncaptured`);
        const latency = Number(latency_ns);
        const ttfb = Number(ttfb_ns);
        assert.ok(latency > 0, `${what(role, i)}: latency ${latency} ns above zero`);
        assert.ok(latency <= x.clientNs, `${what(role, i)}: latency ${latency} ns within the ${x.clientNs} ns the client measured`);
        assert.ok(ttfb > 0 && ttfb <= latency, `${what(role, i)}: ttfb ${ttfb} ns in (0, latency ${latency}]`);
      }
      pos += x.reqBytes;
    });

    // The rows account for every byte of the connection, as the tcp function counted it.
    const ends = await rows<{ role: string; bytes_sent: string; bytes_received: string; conn_id: string }>(ch!, `
      SELECT role, bytes_sent, bytes_received, toString(conn_id) AS conn_id FROM ${ch!.database}.connections
      WHERE ${connEnds(String(conn.clientPort))} ORDER BY role`);
    const reqTotal = conn.exchanges.reduce((n, x) => n + x.reqBytes, 0);
    const respTotal = conn.exchanges.reduce((n, x) => n + x.respBytes, 0);
    assert.deepEqual(ends, [
      { role: 'client', bytes_sent: String(reqTotal), bytes_received: String(respTotal), conn_id: [...clientIds][0] },
      { role: 'server', bytes_sent: String(respTotal), bytes_received: String(reqTotal), conn_id: [...serverIds][0] },
    ], 'connection byte counts = sums of the rows, same conn_ids');
    return uncaptured;
  }

  test('curl keep-alive: GET x3, POST with a body, HEAD, chunked and 404 on one connection', async () => {
    const conns = await curl([
      { path: '/small.txt' },
      { path: '/hello.html' },
      { path: '/text' },
      { path: '/echo', body: 'name=netrig&kind=test&filler=' + 'x'.repeat(300) },
      { path: '/small.txt', method: 'HEAD' },
      { path: '/chunked/hello.html' },
      { path: '/status/404' },
    ]);
    assert.equal(conns.length, 1, 'one connection for all seven transfers');
    const x = conns[0].exchanges;
    assert.deepEqual(x.map((e) => e.status), [200, 200, 200, 200, 200, 200, 404]);
    const chunkedBody = readFileSync(join(outDir, `body-${outFiles - 1}`), 'latin1');
    assert.match(chunkedBody, /^[0-9a-f]+\r\n[\s\S]*\r\n0\r\n\r\n$/, 'the /chunked/ body came chunked');
    await settle(conns);
    const partial = await checkConn(conns[0]);
    assert.deepEqual(partial.client, x.map(() => false), 'curl\'s rows are whole: it read every response in reads within the capture limit');
  });

  test('a 500 ends keep-alive: its connection holds the exchanges up to it, the next request a new one', async () => {
    const conns = await curl([{ path: '/text' }, { path: '/status/500' }, { path: '/small.txt' }, { path: '/hello.html' }]);
    assert.equal(conns.length, 2, 'nginx closed the connection after the 500: curl opened a second one');
    assert.deepEqual(conns.map((c) => c.exchanges.map((e) => e.status)), [[200, 500], [200, 200]]);
    await settle(conns);
    for (const c of conns) assert.ok((await checkConn(c)).client.every((p) => !p), 'curl\'s rows are whole');
  });

  test('curl: 1 MiB by sendfile, then two more requests on the same connection', async () => {
    const conns = await curl([{ path: '/big.bin' }, { path: '/small.txt' }, { path: '/chunked/small.txt' }]);
    assert.equal(conns.length, 1);
    const c = conns[0];
    assert.deepEqual(c.exchanges.map((e) => e.status), [200, 200, 200]);
    assert.ok(c.exchanges[0].respBytes > BIG_FILE_BYTES, 'the whole file came');
    await settle(conns);
    const partial = await checkConn(c);
    // resp_bytes stays exact although the body was not captured: sizes come from framing.
    // nginx sent the file with sendfile (no user buffer): the server row is partial; curl's
    // is partial exactly when some of its reads were longer than the capture limit. (nginx
    // writes /chunked/small.txt with one writev of 19 segments, more than the edge reads
    // (SOCK_DATA_MAX_IOV): that server row is partial too, as the stream shows.)
    assert.equal(partial.server[0], true, 'the server row of the file is partial');
    assert.deepEqual(partial.client.slice(1), [false, false], 'the requests after the file were captured whole by the client');
  });

  test('raw client: 1 MiB by sendfile read in large reads (truncated capture), then two more requests', async () => {
    const host = hostHeader();
    const paths = ['/big.bin', '/text', '/copy/small.txt'];
    const requests = paths.map((p) => getRequest(host, p));
    const res = await rawHttpSession(client, server.addr, nginx!.port, requests);
    assert.deepEqual(res.exchanges.map((e) => e.status), [200, 200, 200]);
    const big = res.exchanges[0];
    assert.ok(res.received.subarray(big.respEnd - BIG_FILE_BYTES, big.respEnd).equals(nginx!.files['big.bin']), 'the client got the file');
    const conn = rawConn(res, requests, () => 'GET', (i) => paths[i]);
    await settle([conn]);
    // The client read the file in reads beyond the capture limit: both rows of the file are
    // partial, their resp_bytes exact all the same; the next two exchanges are whole.
    const partial = await checkConn(conn);
    assert.deepEqual(partial, { client: [true, false, false], server: [true, false, false] });
  });

  test('raw client: pipelined requests (three GETs and a POST in one write)', async () => {
    const host = hostHeader();
    const body = randomBytes(2000);
    const specs: [string, string][] = [['GET', '/small.txt'], ['GET', '/chunked/hello.html'], ['GET', '/status/404'], ['POST', '/echo']];
    const requests = specs.map(([m, p]) => (m === 'POST' ? postRequest(host, p, body) : getRequest(host, p)));
    const res = await rawHttpSession(client, server.addr, nginx!.port, requests, { pipeline: true });
    assert.deepEqual(res.exchanges.map((e) => e.status), [200, 200, 404, 200]);
    const conn = rawConn(res, requests, (i) => specs[i][0], (i) => specs[i][1]);
    await settle([conn]);
    // The requests went out in one write: the client's egress is one syscall.
    await reader!.update();
    const open = reader!.connOpens({ netns: client.netnsIno(), role: Role.Client }).find((o) => o.tuple.sport === conn.clientPort);
    assert.ok(open, 'the client connection is on the stream');
    assert.equal(reader!.payload(open.connId, Direction.Egress).syscalls.length, 1, 'all four requests in one write');
    const partial = await checkConn(conn);
    assert.deepEqual(partial.client, [false, false, false, false], 'the client\'s rows are whole');
  });

  test('the table holds nothing else: exactly the exchanges above, none timed out', async () => {
    const ports = checked.map((c) => c.clientPort);
    assert.equal(new Set(ports).size, ports.length, 'every connection had its own client port');
    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const want = checked.reduce((n, c) => n + c.exchanges.length, 0);
    const got = await rows<{ role: string; n: string; timed_out: string; ports: string }>(ch!, `
      SELECT role, count() AS n, sum(timed_out) AS timed_out, toString(groupUniqArray(client_port)) AS ports
      FROM ${ch!.database}.http_requests GROUP BY role ORDER BY role`);
    assert.deepEqual(got.map((r) => [r.role, Number(r.n), Number(r.timed_out)]), [['client', want, 0], ['server', want, 0]],
      `rows per role (client ports ${JSON.stringify(got.map((r) => r.ports))}, expected ${JSON.stringify(ports)})`);
    const losses = await rows<{ n: string }>(ch!, `SELECT count() AS n FROM ${ch!.database}.capture_losses`);
    assert.equal(losses[0].n, '0', 'nothing was lost on the way');
  });
});
