/**
 * End to end: the edge (real eBPF, in this process) publishing to a real nats-server on a
 * random port while curl and a raw client in one network namespace talk HTTP/1.1 to nginx
 * in another. The envelopes on the stream must decode to the connections (both ends, with
 * matching 4-tuples and the socket cookie as conn_id), their byte counts, and the payload
 * bytes exactly as the clients sent and received them, positions intact across sendfile.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  ConnFlags, DataFlags, Direction, RecordKind, Role,
  type ConnCloseRecord, type ConnOpenRecord,
} from '../../schemas/records.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, socketCookies, type Host, type HostPair } from '../helpers/netns.js';
import { BIG_FILE_BYTES, startNginx, type NginxHandle } from '../helpers/nginx.js';
import { getRequest, postRequest, rawHttpSession, type RawHttpResult } from '../helpers/raw-http.js';
import { mismatches, recordAddr, StreamReader, uncovered, type Assembled } from '../helpers/stream-reader.js';

const CAPTURE_BYTES = 16 * 1024;
/** curl options for every request: its local address and port, status and connects on one line. */
const CURL_COMMON = ['-sS', '--max-time', '30', '-w', '%{local_ip} %{local_port} %{http_code} %{num_connects}\\n'];

for (const capturePath of CAPTURE_PATHS) describe(`edge capture: HTTP between two network namespaces (capture path: ${capturePath})`, () => {
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
    nginx = await startNginx(server);
    edge = await startEdge({
      nats: nats.url,
      netns: [client.netnsIno(), server.netnsIno()],
      input: { captureBytes: CAPTURE_BYTES, capturePath },
    });
    reader = await StreamReader.open(nats.url, edge.stream);
  });

  after(() => cleanupAll(
    () => reader?.close(),
    () => edge?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
  ));

  /** The two ends of one TCP connection as the stream tells them. */
  interface ConnPair {
    clientOpen: ConnOpenRecord;
    serverOpen: ConnOpenRecord;
    clientClose: ConnCloseRecord;
    serverClose: ConnCloseRecord;
  }

  function sameTuple(r: ConnOpenRecord | ConnCloseRecord, saddr: string, sport: number, daddr: string, dport: number): boolean {
    return r.tuple.saddr === recordAddr(saddr) && r.tuple.sport === sport && r.tuple.daddr === recordAddr(daddr) && r.tuple.dport === dport;
  }

  /** Both ends of the connection from `caddr:cport` to nginx, once both are closed on the stream. */
  async function connPair(caddr: string, cport: number, saddr: string): Promise<ConnPair> {
    const port = nginx!.port;
    let state = '';
    const find = (): ConnPair | null => {
      // Found by namespace, role and ports; the addresses are checked once found.
      const clientOpen = reader!.connOpens({ netns: client.netnsIno(), role: Role.Client }).filter((r) => r.tuple.sport === cport && r.tuple.dport === port);
      const serverOpen = reader!.connOpens({ netns: server.netnsIno(), role: Role.Server }).filter((r) => r.tuple.sport === port && r.tuple.dport === cport);
      const clientClose = clientOpen.length === 1 ? reader!.connCloses(clientOpen[0].connId) : [];
      const serverClose = serverOpen.length === 1 ? reader!.connCloses(serverOpen[0].connId) : [];
      state = `client opens ${clientOpen.length}, server opens ${serverOpen.length}, client closes ${clientClose.length}, server closes ${serverClose.length}; ` +
        `records with this port: ${JSON.stringify(reader!.records.filter(({ rec }) => 'tuple' in rec && (rec.tuple.sport === cport || rec.tuple.dport === cport)).map(({ rec }) => rec), (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`;
      if (clientOpen.length !== 1 || serverOpen.length !== 1 || clientClose.length !== 1 || serverClose.length !== 1) return null;
      return { clientOpen: clientOpen[0], serverOpen: serverOpen[0], clientClose: clientClose[0], serverClose: serverClose[0] };
    };
    let pair: ConnPair | null = null;
    await reader!.waitFor(`open and close records of ${caddr}:${cport} -> ${saddr}:${port} on both ends`, () => (pair = find()) !== null)
      .catch((err: Error) => {
        throw new Error(`${err.message}: ${state}`);
      });
    const p = pair! as ConnPair;
    assert.ok(sameTuple(p.clientOpen, caddr, cport, saddr, port), `client CONN_OPEN tuple ${JSON.stringify(p.clientOpen.tuple)}, expected ${caddr}:${cport} -> ${saddr}:${port}`);
    assert.ok(sameTuple(p.serverOpen, saddr, port, caddr, cport), `server CONN_OPEN tuple ${JSON.stringify(p.serverOpen.tuple)}, expected ${saddr}:${port} -> ${caddr}:${cport}`);
    return p;
  }

  /** Checks every connection must pass, whoever the client is. */
  function checkConnection(p: ConnPair, clientComm: string): void {
    const { clientOpen, serverOpen, clientClose, serverClose } = p;
    const ids = [clientOpen.connId, serverOpen.connId];
    assert.ok(ids[0] > 0 && ids[1] > 0, 'conn ids are socket cookies, never 0');
    assert.notEqual(ids[0], ids[1], 'the two ends are two sockets');
    assert.equal(clientOpen.comm, clientComm, 'client CONN_OPEN comm');
    assert.equal(clientOpen.tuple.protocol, 6);
    assert.equal(serverOpen.tuple.protocol, 6);
    // Client saddr/sport are the server's daddr/dport and the other way round.
    assert.equal(clientOpen.tuple.saddr, serverOpen.tuple.daddr);
    assert.equal(clientOpen.tuple.sport, serverOpen.tuple.dport);
    assert.equal(clientOpen.tuple.daddr, serverOpen.tuple.saddr);
    assert.equal(clientOpen.tuple.dport, serverOpen.tuple.sport);
    assert.equal(clientOpen.tuple.family, serverOpen.tuple.family);

    for (const [open, close, role, comm, netns] of [
      [clientOpen, clientClose, Role.Client, clientComm, client.netnsIno()],
      [serverOpen, serverClose, Role.Server, 'nginx', server.netnsIno()],
    ] as const) {
      const id = open.connId;
      const side = role === Role.Client ? 'client' : 'server';
      assert.equal(open.netnsIno, netns, `${side} CONN_OPEN netns`);
      assert.equal(close.role, role, `${side} CONN_CLOSE role`);
      assert.deepEqual(close.tuple, open.tuple, `${side} CONN_CLOSE tuple`);
      assert.equal(close.netnsIno, netns, `${side} CONN_CLOSE netns`);
      // CONN_INFO: first process-context sight; captured because the namespace is included.
      const infos = reader!.connInfos(id);
      assert.ok(infos.length >= 1, `${side} has a CONN_INFO`);
      for (const info of infos) {
        assert.equal(info.comm, comm, `${side} CONN_INFO comm`);
        assert.equal(info.role, role, `${side} CONN_INFO role`);
        assert.deepEqual(info.tuple, open.tuple, `${side} CONN_INFO tuple`);
        assert.equal(info.netnsIno, netns, `${side} CONN_INFO netns`);
        assert.ok(info.connFlags & ConnFlags.Captured, `${side} CONN_INFO says captured`);
        assert.equal(info.connFlags & ConnFlags.Midlife, 0, `${side} seen from its start`);
      }
      assert.equal(close.comm, comm, `${side} CONN_CLOSE comm`);
      // Every record of the connection carries its id: the data records tile each
      // direction without a gap, and the byte counts at close equal their sum.
      for (const [dir, total, name] of [[Direction.Egress, close.txBytes, 'tx'], [Direction.Ingress, close.rxBytes, 'rx']] as const) {
        const a = reader!.payload(id, dir);
        assert.deepEqual(a.inconsistencies, [], `${side} ${name} records consistent`);
        assert.ok(a.contiguous, `${side} ${name} syscalls tile the byte stream without gaps`);
        assert.equal(reader!.dataBytes(id, dir), total, `${side} CONN_CLOSE ${name}_bytes = sum of its data records' lenBytes`);
        assert.equal(a.totalBytes, total, `${side} ${name} positions end at ${name}_bytes`);
        assert.ok(total > 0, `${side} moved ${name} bytes`);
      }
      // Records naming this connection by tuple all carry the same conn id.
      for (const r of reader!.byTuple({ saddr: open.tuple.saddr, sport: open.tuple.sport, daddr: open.tuple.daddr, dport: open.tuple.dport }, [RecordKind.ConnOpen, RecordKind.ConnInfo, RecordKind.ConnClose])) {
        assert.equal(r.connId, id, `${side} record kind ${r.kind} carries the connection's id`);
      }
      for (const d of reader!.data(id)) {
        assert.ok(d.payload.length <= CAPTURE_BYTES, 'no record carries more than the capture limit');
        assert.equal(d.tgid, reader!.connInfos(id)[0].tgid, `${side} data records come from the owner`);
      }
    }
    // What one end sent, the other received.
    assert.equal(clientClose.txBytes, serverClose.rxBytes, 'client tx = server rx');
    assert.equal(clientClose.rxBytes, serverClose.txBytes, 'client rx = server tx');
  }

  /** Captured bytes of `a` equal `expected` and cover it completely. */
  function assertExact(a: Assembled, expected: Buffer, what: string): void {
    assert.equal(a.totalBytes, expected.length, `${what}: length`);
    assert.deepEqual(mismatches(a, expected), [], `${what}: captured bytes`);
    assert.equal(uncovered(a), 0, `${what}: every byte captured`);
    assert.ok(a.bytes.equals(expected), `${what}: byte-exact`);
  }

  /** Run curl in the client namespace; each invocation's requests must share one connection. */
  async function curlSession(saddr: string, statuses: string[], args: string[]): Promise<ConnPair> {
    // Options apply per `--next` part, so each part repeats them.
    const r = await client.exec('curl', [...CURL_COMMON, ...args.flatMap((a) => (a === '--next' ? ['--next', ...CURL_COMMON] : [a]))]);
    assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n').map((l) => l.split(' '));
    assert.deepEqual(lines.map((l) => l[2]), statuses, 'HTTP statuses');
    // Keep-alive: one connection for all the invocation's requests.
    assert.deepEqual(lines.map((l) => l[3]), ['1', ...lines.slice(1).map(() => '0')], 'one connect per invocation');
    const [laddr, lport] = lines[0];
    assert.ok(lines.every((l) => l[1] === lport), 'every request on the same local port');
    const pair = await connPair(laddr, Number(lport), saddr);
    checkConnection(pair, 'curl');
    assert.equal(pair.clientOpen.tuple.family, saddr.includes(':') ? 6 : 4);
    assert.ok(pair.clientOpen.connectTsNs > 0, 'active open has its connect() time');
    assert.equal(pair.serverOpen.connectTsNs, 0, 'passive open has none');
    return pair;
  }

  test('curl keep-alive connections: open, info and close records on both ends, byte counts = data records', async () => {
    const base = `http://${server.addr}:${nginx!.port}`;
    // A 500 ends keepalive in nginx: it goes last.
    await curlSession(server.addr, ['200', '404', '503', '200', '200', '500'],
      ['/small.txt', '/status/404', '/status/503', '/chunked/hello.html', '/text', '/status/500'].flatMap((p) => ['-o', '/dev/null', `${base}${p}`]));
    await curlSession(server.addr, ['200', '200'],
      ['-o', '/dev/null', '--data-binary', 'name=netrig&kind=test', `${base}/echo`, '--next', '-o', '/dev/null', `${base}/big.bin`]);
  });

  test('curl over IPv6: the records carry the full IPv6 4-tuple', async () => {
    const base = `http://[${server.addr6}]:${nginx!.port}`;
    const pair = await curlSession(server.addr6, ['200', '200'],
      ['-g', ...['/hello.html', '/copy/small.txt'].flatMap((p) => ['-o', '/dev/null', `${base}${p}`])]);
    assert.equal(pair.clientOpen.tuple.saddr, client.addr6);
    assert.equal(pair.clientOpen.tuple.daddr, server.addr6);
  });

  /** Run a raw session, noting the socket cookies of both ends while it is open. */
  async function rawSession(requests: Buffer[]): Promise<{ res: RawHttpResult; pair: ConnPair; cookies: { client: number[]; server: number[] } }> {
    const cookies = { client: [] as number[], server: [] as number[] };
    const res = await rawHttpSession(client, server.addr, nginx!.port, requests, {
      beforeClose: async ({ localPort }) => {
        cookies.client = await socketCookies(client, { sport: localPort });
        cookies.server = await socketCookies(server, { dport: localPort });
      },
    });
    const pair = await connPair(res.localAddress, res.localPort, server.addr);
    return { res, pair, cookies };
  }

  test('payload byte-exact below the capture limit, mirrored on the server side; conn_id is the socket cookie (or made at first sight)', async () => {
    const host = `${server.addr}:${nginx!.port}`;
    const body = randomBytes(3000);
    const requests = [
      getRequest(host, '/copy/small.txt'),
      getRequest(host, '/status/404'),
      postRequest(host, '/echo', body),
      getRequest(host, '/chunked/hello.html'),
      getRequest(host, '/status/503'),
      getRequest(host, '/text'),
    ];
    const { res, pair, cookies } = await rawSession(requests);
    assert.deepEqual(res.exchanges.map((e) => e.status), [200, 404, 200, 200, 503, 200]);
    assert.ok(res.sent.equals(Buffer.concat(requests)), 'the client sent exactly the requests');
    const chunked = res.exchanges[3];
    assert.match(res.received.subarray(chunked.respStart, chunked.respEnd).toString('latin1'), /\r\nTransfer-Encoding: chunked\r\n/i, 'nginx answered /chunked/ chunked');

    checkConnection(pair, 'node');
    if (capturePath === 'syscall') {
      // No socket cookie on this path: ids made at first sight, bit 52 set, one per socket.
      for (const id of [pair.clientOpen.connId, pair.serverOpen.connId]) assert.ok(id >= 2 ** 52 && id < 2 ** 53, `made conn_id ${id}`);
      assert.notEqual(pair.clientOpen.connId, pair.serverOpen.connId);
    } else {
      assert.deepEqual(cookies.client, [pair.clientOpen.connId], 'client conn_id = its socket cookie (ss sk:)');
      assert.deepEqual(cookies.server, [pair.serverOpen.connId], 'server conn_id = its socket cookie (ss sk:)');
    }

    const c = pair.clientOpen.connId, s = pair.serverOpen.connId;
    assertExact(reader!.payload(c, Direction.Egress), res.sent, 'client egress = what it sent');
    assertExact(reader!.payload(c, Direction.Ingress), res.received, 'client ingress = what it received');
    assertExact(reader!.payload(s, Direction.Ingress), res.sent, 'server ingress = what the client sent');
    assertExact(reader!.payload(s, Direction.Egress), res.received, 'server egress = what the client received');
    assert.equal(pair.clientClose.txBytes, res.sent.length);
    assert.equal(pair.clientClose.rxBytes, res.received.length);
    for (const d of [...reader!.data(c), ...reader!.data(s)]) {
      assert.equal(d.dataFlags & (DataFlags.Truncated | DataFlags.NoBuffer | DataFlags.ReadFailed), 0, 'nothing truncated below the limit');
    }
  });

  test('1 MiB sendfile response: positions still advance, the next responses are captured byte-exact in place', async () => {
    const host = `${server.addr}:${nginx!.port}`;
    const requests = [getRequest(host, '/big.bin'), getRequest(host, '/status/503'), getRequest(host, '/copy/small.txt')];
    const { res, pair } = await rawSession(requests);
    assert.deepEqual(res.exchanges.map((e) => e.status), [200, 503, 200]);
    const big = res.exchanges[0];
    assert.ok(res.received.subarray(big.respEnd - BIG_FILE_BYTES, big.respEnd).equals(nginx!.files['big.bin']), 'the client got the file');
    checkConnection(pair, 'node');

    const c = pair.clientOpen.connId, s = pair.serverOpen.connId;
    const after = res.exchanges[1].respStart;
    // Server: the file went out by sendfile, with no user buffer: records with only lengths.
    const srvOut = reader!.payload(s, Direction.Egress);
    const noBuffer = srvOut.syscalls.filter((x) => x.flags & DataFlags.NoBuffer);
    assert.ok(noBuffer.length > 0, 'sendfile produced records without a buffer');
    assert.ok(noBuffer.every((x) => x.captured === 0 && x.flags & DataFlags.Truncated && x.flags & DataFlags.Last), 'no-buffer records carry no bytes and say so');
    assert.ok(noBuffer.reduce((n, x) => n + x.len, 0) >= BIG_FILE_BYTES, 'the no-buffer records account for the whole file');
    assert.equal(srvOut.totalBytes, res.received.length, 'server egress positions account for every byte');
    assert.deepEqual(mismatches(srvOut, res.received), [], 'every captured server egress byte sits at its position');
    assert.equal(uncovered(srvOut, after), 0, 'the responses after the file are captured completely');
    assert.ok(srvOut.bytes.subarray(after).equals(res.received.subarray(after)), 'server egress after the file is byte-exact');

    // Client: it read the file in reads larger than the capture limit: truncated records.
    const cliIn = reader!.payload(c, Direction.Ingress);
    assert.ok(cliIn.syscalls.some((x) => x.flags & DataFlags.Truncated && x.captured === CAPTURE_BYTES && x.len > CAPTURE_BYTES), 'large reads were truncated at the capture limit');
    assert.ok(cliIn.syscalls.every((x) => x.captured === Math.min(x.len, CAPTURE_BYTES)), 'each read captured up to the limit');
    assert.equal(cliIn.totalBytes, res.received.length);
    assert.deepEqual(mismatches(cliIn, res.received), [], 'every captured client ingress byte sits at its position');
    assert.equal(uncovered(cliIn, after), 0, 'the responses after the file are captured completely');
    assert.ok(cliIn.bytes.subarray(after).equals(res.received.subarray(after)), 'client ingress after the file is byte-exact');

    assertExact(reader!.payload(c, Direction.Egress), res.sent, 'client egress');
    assertExact(reader!.payload(s, Direction.Ingress), res.sent, 'server ingress');
  });
});
