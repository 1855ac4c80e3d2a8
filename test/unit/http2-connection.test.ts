/**
 * Http2Connection beyond the fixtures: timeouts, idleness, the stream cap, the header
 * block cap, shared counters, roles from the bytes, GOAWAY for streams opened later,
 * hostile control frames, what happens after close, and the gRPC helpers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ExchangeFlags, Http2Connection, grpcPath, newHttp2Stats, percentDecode,
  type Dir, type Http2ConnectionOptions, type Http2Exchange, type RoleHint,
} from '../../processors/http2/connection.js';
import { FrameFlags, FrameType, PREFACE } from '../../processors/http2/frames.js';
import { frame } from '../fixtures/http2/fixture.js';
import { HpackEncoder, type FieldSpec } from '../fixtures/http2/hpack-encoder.js';

/** A conversation driven by hand: each `send` is one syscall at the given record time. */
class Conv {
  readonly out: Http2Exchange[] = [];
  readonly conn: Http2Connection;
  readonly enc = [new HpackEncoder(), new HpackEncoder()];
  private readonly pos: [number, number] = [0, 0];

  /** Streams time out after 1000 ns unless `opts` says otherwise. */
  constructor(hint: RoleHint = 'client', opts: Http2ConnectionOptions = {}) {
    this.conn = new Http2Connection(hint, (x) => this.out.push(x), { streamTimeoutNs: 1000, ...opts });
  }

  send(dir: Dir, bytes: Buffer, tsNs: number, syscallStart = true): this {
    this.conn.data(dir, { type: 'data', pos: this.pos[dir], data: bytes, tsNs, syscallStart });
    this.pos[dir] += bytes.length;
    return this;
  }

  gap(dir: Dir, len: number, tsNs: number): this {
    this.conn.data(dir, { type: 'gap', pos: this.pos[dir], len, tsNs, cause: 'lost' });
    this.pos[dir] += len;
    return this;
  }

  headers(dir: Dir, id: number, fields: Array<[string, string]>, endStream: boolean): Buffer {
    const block = this.enc[dir].encode(fields.map(([name, value]): FieldSpec => ({ name, value })));
    return frame(FrameType.HEADERS, FrameFlags.END_HEADERS | (endStream ? FrameFlags.END_STREAM : 0), id, block);
  }

  get(id: number, path = `/s${id}`): Buffer {
    return this.headers(0, id, [[':method', 'GET'], [':scheme', 'http'], [':authority', 'h'], [':path', path]], true);
  }

  ok(id: number, status = '200', endStream = true): Buffer {
    return this.headers(1, id, [[':status', status]], endStream);
  }

  start(ts = 1): this {
    return this.send(0, Buffer.concat([PREFACE, frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(0))]), ts)
      .send(1, frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(0)), ts);
  }

  paths(): string[] {
    return this.out.map((x) => `${x.streamId} ${x.path} ${x.timedOut ? 'timeout' : x.status}`);
  }
}

const data = (id: number, body: Buffer | string, end = false): Buffer => frame(FrameType.DATA, end ? FrameFlags.END_STREAM : 0, id, Buffer.from(body));

test('a stream without a response times out on expire, by record time', () => {
  const c = new Conv().start();
  c.send(0, c.get(1), 1000);
  c.conn.expire(1999);
  assert.equal(c.out.length, 0);
  assert.equal(c.conn.isIdle(), false);
  c.conn.expire(2000);
  assert.deepEqual(c.paths(), ['1 /s1 timeout']);
  assert.equal(c.out[0].respFirstTsNs, 0);
  assert.equal(c.conn.stats.timedOut, 1);
  assert.equal(c.conn.isIdle(), true);
  // A late response to the expired stream is ignored; the next stream pairs normally.
  c.send(1, c.ok(1), 2500);
  c.send(0, c.get(3), 3000).send(1, c.ok(3, '201'), 3100);
  assert.deepEqual(c.paths(), ['1 /s1 timeout', '3 /s3 201']);
  assert.equal(c.conn.stats.untrackedFrames, 1);
});

test('a stream with response frames flowing does not expire; one still sending its request does not either', () => {
  const c = new Conv().start();
  c.send(0, c.get(1), 1000).send(1, c.ok(1, '200', false), 1100).send(1, data(1, 'a'), 1900);
  c.conn.expire(2500);
  assert.equal(c.out.length, 0);
  c.send(0, c.headers(0, 3, [[':method', 'POST'], [':scheme', 'http'], [':authority', 'h'], [':path', '/up']], false), 3000);
  c.conn.expire(1e12);
  assert.deepEqual(c.paths(), ['1 /s1 200']);
  assert.ok(c.out[0].flags & ExchangeFlags.RespEndMissing);
  c.conn.close();
  assert.deepEqual(c.paths(), ['1 /s1 200', '3 /up timeout']);
  assert.ok(c.out[1].flags & ExchangeFlags.ReqEndMissing);
});

test('isIdle: no stream, no partial frame, no open header block', () => {
  const c = new Conv();
  assert.equal(c.conn.isIdle(), true);
  c.start();
  assert.equal(c.conn.isIdle(), true);
  const req = c.get(1);
  c.send(0, req.subarray(0, 5), 10);
  assert.equal(c.conn.isIdle(), false, 'partial frame header');
  c.send(0, req.subarray(5), 10, false);
  assert.equal(c.conn.isIdle(), false, 'open stream');
  c.send(1, c.ok(1), 20);
  assert.equal(c.conn.isIdle(), true);
  c.send(0, frame(FrameType.HEADERS, 0, 3, Buffer.from([0x82])), 30);
  assert.equal(c.conn.isIdle(), false, 'header block waiting for CONTINUATION');
});

test('the stream cap: new streams beyond it are counted and ignored, memory stays bounded', () => {
  const c = new Conv('client', { maxStreams: 10 }).start();
  for (let id = 1; id <= 41; id += 2) c.send(0, c.get(id), 100);
  assert.equal(c.conn.openStreams, 10);
  assert.equal(c.conn.stats.droppedStreams, 11);
  for (let id = 1; id <= 41; id += 2) c.send(1, c.ok(id), 200);
  assert.equal(c.out.length, 10);
  // The dropped streams' request blocks and responses.
  assert.equal(c.conn.stats.untrackedFrames, 22);
  // HPACK stayed in step through the dropped streams' blocks.
  c.send(0, c.get(43, '/after'), 300).send(1, c.ok(43, '204'), 310);
  assert.deepEqual(c.paths().slice(-1), ['43 /after 204']);
  assert.equal(c.conn.stats.unknownFields, 0);
});

test('a header block over the cap: the fields before the cap are kept, the table forgotten', () => {
  const c = new Conv('client', { maxHeaderBlockBytes: 256 }).start();
  const big = c.enc[0].encode([
    { name: ':method', value: 'GET' }, { name: ':scheme', value: 'http' }, { name: ':path', value: '/big' },
    { name: ':authority', value: 'h', mode: 'inc' }, { name: 'x-pad', value: 'p'.repeat(2000), mode: 'inc', huffman: 'off' },
  ]);
  c.send(0, Buffer.concat([
    frame(FrameType.HEADERS, FrameFlags.END_STREAM, 1, big.subarray(0, 1000)),
    frame(FrameType.CONTINUATION, FrameFlags.END_HEADERS, 1, big.subarray(1000)),
  ]), 10);
  assert.ok(c.conn.bufferedBytes <= 256);
  c.send(1, c.ok(1), 20);
  c.send(0, c.get(3), 30).send(1, c.ok(3), 40);
  assert.deepEqual(c.paths(), ['1 /big 200', '3 /s3 200']);
  assert.ok(c.out[0].flags & ExchangeFlags.ReqHeadPartial);
  assert.equal(c.out[0].reqHeaderBytes, big.length);
  // Request 3 indexes :authority, added by request 1 before the table was forgotten.
  assert.equal(c.out[1].authority, '');
  assert.ok(c.out[1].flags & ExchangeFlags.ReqUnknownFields);
  assert.equal(c.conn.stats.truncatedBlocks, 1);
});

test('counters can be shared across connections', () => {
  const stats = newHttp2Stats();
  for (let i = 0; i < 3; i++) {
    const c = new Conv('client', { stats }).start();
    c.send(0, c.get(1), 1).send(1, c.ok(1), 2);
  }
  assert.equal(stats.exchanges, 3);
  assert.equal(stats.prefaces, 3);
});

test('roles come from the bytes: :status and :method decide without a preface or hint', () => {
  const c = new Conv('unknown', { midlife: true });
  // Mid-life: the response direction is seen first, then requests.
  c.send(1, c.ok(1, '200', false), 10);
  c.send(0, c.get(3), 20).send(1, c.ok(3), 30);
  assert.equal(c.conn.role, 'client');
  assert.equal(c.conn.recognized, true);
  assert.deepEqual(c.paths(), ['3 /s3 200']);
  // Stream 1's response told the roles; its request was before the capture.
  c.conn.close();
  assert.deepEqual(c.paths(), ['3 /s3 200', '1  200']);
  assert.ok(c.out[1].flags & ExchangeFlags.ReqMissing);
  assert.ok(c.out[1].flags & ExchangeFlags.RespEndMissing);
  assert.deepEqual(c.out.map((x) => x.role), ['client', 'client']);
});

test('a capture on the server side with an unknown hint: the preface decides', () => {
  const c = new Conv('unknown');
  c.send(1, Buffer.concat([PREFACE, c.headers(1, 1, [[':method', 'GET'], [':scheme', 'http'], [':authority', 'x'], [':path', '/']], true)]), 1);
  c.send(0, c.headers(0, 1, [[':status', '204']], true), 2);
  assert.equal(c.conn.role, 'server');
  assert.deepEqual(c.paths(), ['1 / 204']);
  // Each exchange carries the socket's side, for its row.
  assert.equal(c.out[0].role, 'server');
});

test('GOAWAY: streams opened above the last-stream-id later are refused at once', () => {
  const c = new Conv().start();
  c.send(0, c.get(1), 10);
  const goaway = Buffer.alloc(8);
  goaway.writeUInt32BE(1);
  c.send(1, frame(FrameType.GOAWAY, 0, 0, goaway), 20);
  c.send(0, c.get(3), 30);
  assert.deepEqual(c.paths(), ['3 /s3 0']);
  assert.ok(c.out[0].flags & ExchangeFlags.Refused);
  assert.equal(c.out[0].timedOut, false);
  c.send(1, c.ok(1), 40);
  assert.deepEqual(c.paths(), ['3 /s3 0', '1 /s1 200']);
});

test('SETTINGS raise the frame size used to judge resynchronisation', () => {
  const c = new Conv().start();
  const s = Buffer.alloc(6);
  s.writeUInt16BE(5);
  s.writeUInt32BE(1 << 20, 2);
  c.send(0, frame(FrameType.SETTINGS, 0, 0, s), 5);
  c.send(0, c.get(1), 10);
  c.send(1, c.ok(1, '200', false), 20);
  c.gap(1, 100, 30);
  // After the gap, a 100000-byte DATA frame at a syscall start is plausible: the client allowed 1 MiB.
  c.send(1, data(1, Buffer.alloc(100000), true), 40);
  assert.equal(c.conn.stats.resyncs, 1);
  assert.equal(c.out[0].respBodyBytes, 100000);
  assert.ok(c.out[0].flags & ExchangeFlags.RespBodyPartial);
});

test('damaged and hostile control frames are counted and ignored', () => {
  const c = new Conv().start();
  c.send(0, c.get(1), 10);
  // RST_STREAM whose payload is in a gap.
  const rst = frame(FrameType.RST_STREAM, 0, 1, Buffer.alloc(4));
  c.send(1, rst.subarray(0, 10), 20).gap(1, 3, 20);
  assert.equal(c.out.length, 0);
  assert.equal(c.conn.stats.damagedControlFrames, 1);
  // A CONTINUATION out of place.
  c.send(1, frame(FrameType.CONTINUATION, FrameFlags.END_HEADERS, 1, Buffer.from([0x88])), 30);
  assert.equal(c.conn.stats.continuationErrors, 1);
  c.send(1, c.ok(1), 40);
  assert.deepEqual(c.paths(), ['1 /s1 200']);
  assert.equal(c.conn.stats.internalErrors, 0);
});

test('after close, events are counted and ignored', () => {
  const c = new Conv().start();
  c.send(0, c.get(1), 1);
  c.conn.close();
  assert.deepEqual(c.paths(), ['1 /s1 timeout']);
  c.send(1, c.ok(1), 2);
  assert.equal(c.out.length, 1);
  assert.ok(c.conn.stats.ignoredBytes > 0);
  assert.equal(c.conn.isIdle(), true);
  c.conn.close();
  c.conn.expire(1e12);
  assert.equal(c.out.length, 1);
});

test('a throwing callback is the caller\'s: the connection stays usable', () => {
  let n = 0;
  const conn = new Http2Connection('client', () => {
    n++;
    if (n === 1) throw new Error('sink failed');
  });
  const enc = new HpackEncoder();
  const req = (id: number): Buffer => frame(FrameType.HEADERS, FrameFlags.END_HEADERS | FrameFlags.END_STREAM, id,
    enc.encode([{ name: ':method', value: 'GET' }, { name: ':scheme', value: 'http' }, { name: ':authority', value: 'a' }, { name: ':path', value: '/' }]));
  const renc = new HpackEncoder();
  const resp = (id: number): Buffer => frame(FrameType.HEADERS, FrameFlags.END_HEADERS | FrameFlags.END_STREAM, id, renc.encode([{ name: ':status', value: '200' }]));
  conn.data(0, { type: 'data', pos: 0, data: Buffer.concat([PREFACE, req(1), req(3)]), tsNs: 1, syscallStart: true });
  const r1 = resp(1);
  assert.throws(() => conn.data(1, { type: 'data', pos: 0, data: r1, tsNs: 2, syscallStart: true }), /sink failed/);
  conn.data(1, { type: 'data', pos: r1.length, data: resp(3), tsNs: 3, syscallStart: true });
  assert.equal(n, 2);
  assert.equal(conn.stats.internalErrors, 0);
});

test('grpc-message percent-decoding and gRPC paths', () => {
  assert.equal(percentDecode('not%20found'), 'not found');
  assert.equal(percentDecode('%E2%9C%93 ok'), '✓ ok');
  assert.equal(percentDecode('100%'), '100%');
  assert.equal(percentDecode('%zz%4'), '%zz%4');
  assert.deepEqual(grpcPath('/helloworld.Greeter/SayHello'), ['helloworld.Greeter', 'SayHello']);
  assert.deepEqual(grpcPath('/a/b/c'), ['', '']);
  assert.deepEqual(grpcPath('/index.html'), ['', '']);
});
