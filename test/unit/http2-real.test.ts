/**
 * Bytes from real HTTP/2 implementations, recorded by an in-process TCP relay on loopback
 * and replayed through reassembly into an Http2Connection: node's http2 module (nghttp2:
 * dynamic table indexing, Huffman coding, never-indexed credentials, trailers) and
 * @grpc/grpc-js (unary, server streaming, an error status). What the clients did must be
 * what the exchanges say, from the whole capture and from a capture that begins after
 * the first exchanges (mid-connection: the dynamic tables unknown).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { DataFlags } from '../../schemas/records.js';
import { StreamReassembler } from '../../processors/l7/reassembly.js';
import { ExchangeFlags, Http2Connection, type Http2Exchange } from '../../processors/http2/connection.js';
import type { Rec } from '../fixtures/http2/fixture.js';

/** Chunks relayed between a client and a server, as the client's socket would see them. */
class Relay {
  readonly recs: Rec[] = [];
  private readonly pos: [number, number] = [0, 0];
  private server: net.Server | null = null;

  async start(targetPort: number): Promise<number> {
    this.server = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      client.on('data', (b: Buffer) => {
        this.record(0, b);
        upstream.write(b);
      });
      upstream.on('data', (b: Buffer) => {
        this.record(1, b);
        client.write(b);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Client egress is kernel direction 0 on the client's socket. */
  private record(dir: 0 | 1, b: Buffer): void {
    this.recs.push({
      dir, posBytes: this.pos[dir], offsetBytes: 0, lenBytes: b.length, dataFlags: DataFlags.Last,
      payload: Buffer.from(b), tsNs: Number(process.hrtime.bigint()),
    });
    this.pos[dir] += b.length;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.close();
    await once(this.server, 'close');
  }
}

function replay(recs: Rec[], midlife = false): { xs: Http2Exchange[]; conn: Http2Connection } {
  const xs: Http2Exchange[] = [];
  const conn = new Http2Connection('client', (x) => xs.push(x), { midlife });
  const ra = [new StreamReassembler(), new StreamReassembler()];
  for (const r of recs) ra[r.dir].push(r, (ev) => conn.data(r.dir, ev));
  for (const dir of [0, 1] as const) ra[dir].flush((ev) => conn.data(dir, ev));
  conn.close();
  assert.equal(conn.stats.internalErrors, 0, String(conn.lastInternalError));
  return { xs: xs.sort((a, b) => a.streamId - b.streamId), conn };
}

function request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    let status = 0;
    let text = '';
    req.on('response', (h) => {
      status = Number(h[':status']);
    });
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      text += d;
    });
    req.on('end', () => resolve({ status, body: text }));
    req.on('error', reject);
    req.end(body);
  });
}

test('node http2 (nghttp2): requests, bodies, trailers and credentials', async () => {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path']);
    if (path === '/trailers') {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
      stream.end('with trailers');
      return;
    }
    if (headers[':method'] === 'POST') {
      let n = 0;
      stream.on('data', (d: Buffer) => {
        n += d.length;
      });
      stream.on('end', () => {
        stream.respond({ ':status': 201, 'content-type': 'application/json' });
        stream.end(JSON.stringify({ got: n }));
      });
      return;
    }
    stream.respond({ ':status': path === '/missing' ? 404 : 200, 'content-type': 'text/html; charset=utf-8', 'set-cookie': 'sid=SECRET' });
    stream.end(`<p>${path}</p>`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const relay = new Relay();
  const port = await relay.start((server.address() as net.AddressInfo).port);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const common = { 'user-agent': 'netrig-test/1.0', authorization: 'Bearer SECRET-TOKEN', cookie: 'a=SECRET' };
  const results = [];
  for (const p of ['/', '/a/b?c=d', '/missing']) results.push(await request(session, { ':path': p, ...common }));
  results.push(...await Promise.all([
    request(session, { ':path': '/x1', ...common }),
    request(session, { ':path': '/x2', ...common }),
    request(session, { ':method': 'POST', ':path': '/upload', 'content-type': 'application/octet-stream', ...common }, 'z'.repeat(40000)),
    request(session, { ':path': '/trailers', ...common }),
  ]));
  session.close();
  await once(session, 'close');
  server.close();
  await relay.stop();
  assert.deepEqual(results.map((r) => r.status), [200, 200, 404, 200, 200, 201, 200]);

  const { xs, conn } = replay(relay.recs);
  assert.deepEqual(xs.map((x) => `${x.streamId} ${x.method} ${x.path} ${x.status} ${x.authority} ${x.userAgent}`), [
    `1 GET / 200 127.0.0.1:${port} netrig-test/1.0`,
    `3 GET /a/b?c=d 200 127.0.0.1:${port} netrig-test/1.0`,
    `5 GET /missing 404 127.0.0.1:${port} netrig-test/1.0`,
    `7 GET /x1 200 127.0.0.1:${port} netrig-test/1.0`,
    `9 GET /x2 200 127.0.0.1:${port} netrig-test/1.0`,
    `11 POST /upload 201 127.0.0.1:${port} netrig-test/1.0`,
    `13 GET /trailers 200 127.0.0.1:${port} netrig-test/1.0`,
  ]);
  assert.equal(xs[5].reqBodyBytes, 40000);
  assert.equal(xs[5].contentType, 'application/json');
  assert.equal(xs[0].respBodyBytes, '<p>/</p>'.length);
  assert.equal(xs[6].respBodyBytes, 'with trailers'.length);
  for (const x of xs) {
    assert.equal(x.flags, 0, `stream ${x.streamId} flags ${x.flags}`);
    assert.equal(x.protocol, 'h2');
    assert.equal(x.scheme, 'http');
    assert.ok(x.reqFirstTsNs <= x.reqLastTsNs && x.reqFirstTsNs <= x.respFirstTsNs && x.respFirstTsNs <= x.respLastTsNs);
  }
  assert.equal(conn.role, 'client');
  assert.equal(conn.stats.unknownFields, 0);
  assert.ok(conn.stats.headerFields > 0);
  assert.doesNotMatch(JSON.stringify(xs), /SECRET/);

  // The same bytes from the fourth client syscall on: mid-connection, tables unknown.
  const firstLater = relay.recs.filter((r) => r.dir === 0)[3];
  const later = relay.recs.filter((r) => r.tsNs >= firstLater.tsNs);
  const mid = replay(later, true);
  for (const x of mid.xs) {
    const whole = xs.find((w) => w.streamId === x.streamId)!;
    // Whatever is known agrees with the whole capture; nothing is guessed.
    for (const k of ['method', 'path', 'authority', 'userAgent', 'contentType'] as const) {
      if (x[k] !== '') assert.equal(x[k], whole[k], `stream ${x.streamId} ${k}`);
    }
    if (x.status !== 0) assert.equal(x.status, whole.status);
    if (x[`authority`] === '' && !(x.flags & ExchangeFlags.ReqMissing)) assert.ok(x.flags & ExchangeFlags.ReqUnknownFields);
  }
  assert.ok(mid.xs.length > 0);
  assert.ok(mid.conn.stats.unknownFields > 0, 'nghttp2 indexed entries from before the capture');
});

const passthrough = (b: Buffer): Buffer => b;
const method = (path: string, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
  path, requestStream: false, responseStream, requestSerialize: passthrough, requestDeserialize: passthrough,
  responseSerialize: passthrough, responseDeserialize: passthrough,
});
const SERVICE = {
  SayHello: method('/test.v1.Greeter/SayHello', false),
  ListItems: method('/test.v1.Greeter/ListItems', true),
  GetItem: method('/test.v1.Greeter/GetItem', false),
};

test('grpc-js: unary, server streaming and an error status', async () => {
  const server = new grpc.Server();
  server.addService(SERVICE, {
    SayHello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.concat([Buffer.from('hello '), call.request])),
    ListItems: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      for (let i = 0; i < 5; i++) call.write(Buffer.alloc(i * 1000, 65 + i));
      call.end();
    },
    GetItem: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb({ code: grpc.status.NOT_FOUND, details: 'item 42 not found' }),
  });
  const serverPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  const relay = new Relay();
  const port = await relay.start(serverPort);
  const Client = grpc.makeGenericClientConstructor(SERVICE, 'Greeter');
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (...a: unknown[]) => unknown>;
  const unary = (name: string, req: Buffer): Promise<{ err: grpc.ServiceError | null; resp?: Buffer }> =>
    new Promise((resolve) => {
      client[name](req, (err: grpc.ServiceError | null, resp?: Buffer) => resolve({ err, resp }));
    });
  const hello = await unary('SayHello', Buffer.from('world'));
  assert.equal(hello.resp?.toString(), 'hello world');
  const items: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const call = client.ListItems(Buffer.from('all')) as grpc.ClientReadableStream<Buffer>;
    call.on('data', (b: Buffer) => items.push(b));
    call.on('end', () => resolve());
    call.on('error', reject);
  });
  assert.equal(items.length, 5);
  const missing = await unary('GetItem', Buffer.from('42'));
  assert.equal(missing.err?.code, grpc.status.NOT_FOUND);
  (client as unknown as grpc.Client).close();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  await relay.stop();

  const { xs } = replay(relay.recs);
  assert.deepEqual(xs.map((x) => [x.protocol, x.grpcService, x.grpcMethod, x.status, x.grpcStatus, x.grpcMessage, x.reqMessages, x.respMessages, x.flags]), [
    ['grpc', 'test.v1.Greeter', 'SayHello', 200, 0, 'OK', 1, 1, 0],
    ['grpc', 'test.v1.Greeter', 'ListItems', 200, 0, 'OK', 1, 5, 0],
    ['grpc', 'test.v1.Greeter', 'GetItem', 200, 5, 'item 42 not found', 1, 0, 0],
  ]);
  assert.equal(xs[1].respBodyBytes, 5 * 5 + (0 + 1000 + 2000 + 3000 + 4000));
  for (const x of xs) {
    assert.equal(x.method, 'POST');
    assert.match(x.contentType, /^application\/grpc/);
    assert.match(x.userAgent, /grpc-node-js/);
  }
});
