/**
 * End to end: a client resets its connection (RST) with requests in flight before nginx
 * answers. nginx's worker is stopped (SIGSTOP) while the client connects, writes two
 * pipelined requests and resets, and continued once the server socket has taken the reset:
 * it then accepts the dead connection, reads both requests (still queued), tries to answer
 * the first and fails (ECONNRESET), logs that request with $status 200 and $bytes_sent 0,
 * and closes without reading the second.
 *
 * The stream must show what happened: the reset received, then nginx's read of both
 * requests, no byte sent, and the connection's close after that read (the close record
 * waits for the socket to be released, so data that still moves after a reset belongs to
 * its connection). `http_requests` must then hold one server row per request, status 0 and
 * timed_out: the response never left the server.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { http1Function } from '../../processors/http1/index.js';
import type { Processor } from '../../processors/runtime/processor.js';
import { tcpFunction } from '../../processors/tcp/index.js';
import { Direction, RecordKind, Role, TcpEventFlags, type ConnCloseRecord, type SockDataRecord, type TcpEventRecord } from '../../schemas/records.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type AccessLogEntry, type NginxHandle } from '../helpers/nginx.js';
import { drainProcessor, removeClickHouseData, rows, startEdgeProcessor, waitFor } from '../helpers/processor-run.js';
import { getRequest } from '../helpers/raw-http.js';
import { sendThenHold, type ResetClient } from '../helpers/reset-client.js';
import { StreamReader } from '../helpers/stream-reader.js';

interface ServerRow {
  method: string;
  path: string;
  status: number;
  timed_out: number;
  req_pos: string;
  req_bytes: string;
  resp_bytes: string;
  resp_messages: number;
  latency_ns: string;
}

for (const capturePath of CAPTURE_PATHS) describe(`http_requests rows: the client resets before nginx answers (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let edge: EdgeRun | undefined;
  let reader: StreamReader | undefined;
  let ch: ClickHouse | undefined;
  let nc: NatsConnection | undefined;
  let processor: Processor | undefined;
  let resetClient: ResetClient | undefined;
  let stoppedWorker = 0;

  before(async () => {
    nats = await startNatsServer();
    hosts = await createHostPair();
    nginx = await startNginx(hosts.server);
    edge = await startEdge({ nats: nats.url, netns: [hosts.client.netnsIno(), hosts.server.netnsIno()], input: { capturePath } });
    reader = await StreamReader.open(nats.url, edge.stream);
    ({ ch, nc, processor } = await startEdgeProcessor(nats.url, edge, [http1Function, tcpFunction], 'http_reset'));
  });

  after(() => cleanupAll(
    () => {
      if (stoppedWorker) process.kill(stoppedWorker, 'SIGCONT');
    },
    () => resetClient?.stop(),
    () => processor?.stop(),
    () => nc?.close(),
    () => ch?.close(),
    () => reader?.close(),
    () => edge?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
    () => removeClickHouseData(),
  ));

  test('RST before nginx reads: both requests become server rows with status 0 and timed_out, as nginx\'s log and the records show', async () => {
    const { client, server } = hosts!;
    const host = `${server.addr}:${nginx!.port}`;
    const requests = [getRequest(host, '/copy/small.txt'), getRequest(host, '/text')];
    const reqTotal = requests[0].length + requests[1].length;

    // nginx has one worker: stopped, it accepts and reads nothing until continued.
    const worker = Number(readFileSync(`/proc/${nginx!.pid}/task/${nginx!.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
    assert.ok(worker > 0, 'nginx has a worker');
    process.kill(worker, 'SIGSTOP');
    stoppedWorker = worker;
    resetClient = await sendThenHold(client, server.addr, nginx!.port, requests);
    const clientPort = resetClient.localPort;
    await resetClient.reset();

    // The server socket (established by the kernel, not yet accepted) takes the reset.
    let serverId = 0;
    let resetRec: TcpEventRecord | undefined;
    await reader!.waitFor(`the server socket of client port ${clientPort} receiving the reset`, (r) => {
      serverId = r.connOpens({ netns: server.netnsIno(), role: Role.Server }).find((o) => o.tuple.dport === clientPort)?.connId ?? 0;
      resetRec = r.tcpEvents(RecordKind.TcpReset).map((e) => e.rec).find((e) => e.connId === serverId && !(e.eventFlags & TcpEventFlags.RstSent));
      return serverId > 0 && resetRec !== undefined;
    }, 30_000);
    process.kill(worker, 'SIGCONT');
    stoppedWorker = 0;

    // nginx accepts, reads, fails to answer the first request and logs it.
    let logged: AccessLogEntry[] = [];
    await waitFor(`nginx's log of client port ${clientPort}`, () => {
      logged = nginx!.accessLog().filter((e) => e.remotePort === clientPort);
      return logged.length > 0;
    }, 30_000);
    assert.deepEqual(logged.map((e) => [e.connectionRequests, e.method, e.uri, e.status, e.bytesSent, e.bodyBytesSent]), [[1, 'GET', '/copy/small.txt', 200, 0, 0]],
      'nginx logs the first request with status 200 and nothing sent (its write failed), and never handles the second');

    // The close record follows the read, and counts it.
    let close: ConnCloseRecord | undefined;
    await reader!.waitFor(`the close of the server socket of client port ${clientPort}`, (r) => {
      close = r.connCloses(serverId)[0];
      return close !== undefined;
    }, 30_000);
    const data = reader!.ofKind<SockDataRecord>(RecordKind.SockData).filter((d) => d.rec.connId === serverId);
    const ingress = data.filter((d) => d.rec.direction === Direction.Ingress);
    assert.equal(data.length - ingress.length, 0, 'no byte of a response was sent: no egress record');
    const read = reader!.payload(serverId, Direction.Ingress);
    assert.ok(read.contiguous && read.totalBytes === reqTotal, `nginx read both requests from position 0 (${JSON.stringify(read.syscalls)})`);
    assert.ok(read.bytes.equals(Buffer.concat(requests)), 'the bytes read are the requests');
    assert.ok(ingress.every((d) => d.rec.tsNs > resetRec!.tsNs), 'nginx read them after the reset');
    const closeSeq = reader!.ofKind<ConnCloseRecord>(RecordKind.ConnClose).find((c) => c.rec.connId === serverId)!.streamSeq;
    assert.ok(ingress.every((d) => d.streamSeq <= closeSeq), 'the close record comes after the data on the stream');
    assert.deepEqual([close!.rxBytes, close!.txBytes], [reqTotal, 0], 'the close counts the bytes read after the reset');

    await drainProcessor(processor!, nc!, edge!.stream, edge!.subjectPrefix);
    const got = await rows<ServerRow>(ch!, `
      SELECT method, path, status, timed_out, req_pos, req_bytes, resp_bytes, resp_messages, latency_ns
      FROM ${ch!.database}.http_requests
      WHERE role = 'server' AND client_port = ${clientPort} AND client_addr = toIPv6('::ffff:${client.addr}') ORDER BY req_pos`);
    assert.deepEqual(got, [
      { method: 'GET', path: '/copy/small.txt', status: 0, timed_out: 1, req_pos: '0', req_bytes: String(requests[0].length), resp_bytes: '0', resp_messages: 0, latency_ns: '0' },
      { method: 'GET', path: '/text', status: 0, timed_out: 1, req_pos: String(requests[0].length), req_bytes: String(requests[1].length), resp_bytes: '0', resp_messages: 0, latency_ns: '0' },
    ], 'one server row per request read, none answered');
  });
});
