/**
 * Http1Connection beyond the fixtures: timeouts, idleness, the pipelining bound, shared
 * counters, mid-life connections, causality, and what happens after close.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Http1Connection, newHttp1Stats, type Dir, type Http1ConnectionOptions, type Http1Exchange, type RoleHint,
} from '../../processors/http1/connection.js';
import { LINE_BUFFER_BYTES } from '../../processors/http1/parser.js';

/** A conversation driven by hand: each `send` is one syscall at the given record time. */
class Conv {
  readonly out: Http1Exchange[] = [];
  readonly conn: Http1Connection;
  private readonly pos: [number, number] = [0, 0];

  /** Requests time out after 1000 ns unless `opts` says otherwise. */
  constructor(hint: RoleHint = 'client', opts: Http1ConnectionOptions = {}) {
    this.conn = new Http1Connection(hint, (x) => this.out.push(x), { requestTimeoutNs: 1000, ...opts });
  }

  send(dir: Dir, text: string, tsNs: number, syscallStart = true): void {
    const data = Buffer.from(text, 'latin1');
    this.conn.data(dir, { type: 'data', pos: this.pos[dir], data, tsNs, syscallStart });
    this.pos[dir] += data.length;
  }

  paths(): string[] {
    return this.out.map((x) => `${x.path} ${x.timedOut ? 'timeout' : x.status}`);
  }
}

const get = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: h\r\n\r\n`;
const ok = (status = 200, body = ''): string => `HTTP/1.1 ${status} X\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

test('a request without a response times out on expire, by record time', () => {
  const c = new Conv();
  c.send(0, get('/slow'), 1000);
  c.conn.expire(1999);
  assert.equal(c.out.length, 0);
  assert.equal(c.conn.isIdle(), false);
  c.conn.expire(2000);
  assert.deepEqual(c.paths(), ['/slow timeout']);
  const x = c.out[0];
  assert.equal(x.respBytes, 0);
  assert.equal(x.respFirstTsNs, 0);
  assert.equal(c.conn.stats.timedOut, 1);
  assert.equal(c.conn.isIdle(), true);
  // The late response must not be taken by the next request.
  c.send(1, ok(200, 'late'), 2500);
  c.send(0, get('/next'), 3000);
  c.send(1, ok(201), 3500);
  assert.deepEqual(c.paths(), ['/slow timeout', '/next 201']);
  assert.equal(c.conn.stats.droppedResponses, 1);
});

test('no timeout while the response direction is still sending', () => {
  const c = new Conv();
  c.send(0, get('/1') + get('/2'), 1000);
  c.send(1, 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234', 1500);
  c.send(1, '567', 1900, false);
  c.conn.expire(2400);
  assert.equal(c.out.length, 0);
  c.send(1, '89', 2000, false);
  c.send(1, ok(202), 2100);
  assert.deepEqual(c.paths(), ['/1 200', '/2 202']);
});

test('a request still being sent does not time out', () => {
  const c = new Conv();
  c.send(0, 'POST /up HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc', 1000);
  c.conn.expire(1e12);
  assert.equal(c.out.length, 0);
  c.conn.close();
  assert.deepEqual(c.paths(), ['/up timeout']);
  assert.equal(c.out[0].reqBodyBytes, 3);
});

test('isIdle is true only between exchanges', () => {
  const c = new Conv();
  assert.equal(c.conn.isIdle(), true);
  c.send(0, 'GET / HTTP/1.1\r\n', 1000);
  assert.equal(c.conn.isIdle(), false, 'request head in progress');
  c.send(0, '\r\n', 1001, false);
  assert.equal(c.conn.isIdle(), false, 'waiting for the response');
  c.send(1, 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no', 1500);
  assert.equal(c.conn.isIdle(), false, 'response body in progress');
  c.send(1, 'k', 1501, false);
  assert.equal(c.conn.isIdle(), true);
  assert.equal(c.out.length, 1);
});

test('pipelining deeper than maxPipeline drops the excess, never mispairs', () => {
  const c = new Conv('client', { maxPipeline: 4 });
  c.send(0, [0, 1, 2, 3, 4, 5].map((i) => get(`/${i}`)).join(''), 1000);
  c.send(1, [0, 1, 2, 3, 4, 5].map((i) => ok(200 + i)).join(''), 2000);
  assert.deepEqual(c.paths(), ['/0 200', '/1 201', '/2 202', '/3 203']);
  assert.equal(c.conn.stats.droppedRequests, 2);
  assert.equal(c.conn.stats.droppedResponses, 2);
});

test('one stats object can sum many connections', () => {
  const stats = newHttp1Stats();
  for (let i = 0; i < 3; i++) {
    const c = new Conv('client', { stats });
    c.send(0, get('/'), 1000);
    c.send(1, ok(), 2000);
  }
  assert.equal(stats.exchanges, 3);
  assert.equal(stats.requests, 3);
});

test('on a mid-life connection the first request waits for a response to be seen', () => {
  const fresh = new Conv();
  fresh.send(0, get('/a'), 1000);
  fresh.send(1, ok(), 2000);
  assert.deepEqual(fresh.paths(), ['/a 200']);

  const midlife = new Conv('client', { midlife: true });
  midlife.send(0, get('/a'), 1000);
  midlife.send(1, ok(), 2000);
  midlife.send(0, get('/b'), 3000);
  midlife.send(1, ok(204), 4000);
  assert.deepEqual(midlife.paths(), ['/b 204']);
});

test('a response that starts before its request is not paired', () => {
  const c = new Conv();
  c.send(0, get('/a'), 1000);
  c.send(1, ok(), 900);
  assert.equal(c.out.length, 0);
  assert.equal(c.conn.stats.droppedResponses, 1);
  assert.equal(c.conn.stats.droppedRequests, 1);
});

test('the role comes from the bytes when the hint is unknown', () => {
  const c = new Conv('unknown');
  assert.equal(c.conn.role, 'unknown');
  c.send(1, get('/in'), 1000);
  assert.equal(c.conn.role, 'server');
  c.send(0, ok(), 2000);
  assert.deepEqual(c.paths(), ['/in 200']);
  assert.equal(c.conn.stats.roleMismatches, 0);
});

test('after an upgrade the connection is idle and ignores bytes', () => {
  const c = new Conv();
  c.send(0, 'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', 1000);
  c.send(1, 'HTTP/1.1 101 Switching\r\n\r\n', 2000);
  assert.equal(c.conn.stopReason, 'upgrade');
  assert.equal(c.conn.isIdle(), true);
  c.send(0, get('/x'), 3000);
  assert.equal(c.conn.stats.ignoredBytes, get('/x').length);
  assert.equal(c.conn.stats.requests, 1);
});

test('after close nothing more is parsed or emitted', () => {
  const c = new Conv();
  c.send(0, get('/a'), 1000);
  c.send(1, ok(), 2000);
  c.conn.close();
  c.send(0, get('/b'), 3000);
  c.send(1, ok(), 4000);
  c.conn.close();
  assert.deepEqual(c.paths(), ['/a 200']);
  assert.equal(c.conn.stats.ignoredBytes, get('/b').length + ok().length);
});

test('buffered bytes stay bounded under endless lines in both directions', () => {
  const c = new Conv();
  c.send(0, get('/'), 1000);
  c.send(1, ok(), 2000);
  c.send(0, 'GET /', 3000);
  c.send(1, 'HTTP/1.1 200 OK\r\nX: ', 3000);
  for (let i = 0; i < 40; i++) {
    c.send(0, 'a'.repeat(1000), 4000 + i, false);
    c.send(1, 'b'.repeat(1000), 4000 + i, false);
    assert.ok(c.conn.bufferedBytes <= 2 * LINE_BUFFER_BYTES, `${c.conn.bufferedBytes} buffered`);
  }
});

test('an exception from the exchange callback reaches its caller untouched', () => {
  const conn = new Http1Connection('client', () => {
    throw new Error('sink failed');
  });
  conn.data(0, { type: 'data', pos: 0, data: Buffer.from(get('/')), tsNs: 1, syscallStart: true });
  assert.throws(
    () => conn.data(1, { type: 'data', pos: 0, data: Buffer.from(ok()), tsNs: 2, syscallStart: true }),
    /sink failed/,
  );
  assert.equal(conn.stats.internalErrors, 0);
});
