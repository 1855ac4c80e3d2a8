/**
 * Http1Parser on its own: framing rules, kept and never-kept headers, size caps, gaps and
 * resynchronisation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Http1Parser, LINE_BUFFER_BYTES, MAX_HEADERS, MAX_TARGET_BYTES, MessageFlags,
  type ExpectKind, type Http1Message, type StopReason,
} from '../../processors/http1/parser.js';

/** A syscall's bytes (string), bytes continuing a syscall, or a gap. */
type Piece = string | { cont: string } | { gap: number };

interface Parsed {
  parser: Http1Parser;
  msgs: Http1Message[];
  started: number;
  stops: StopReason[];
  desyncs: number;
}

/** Feed pieces as events 1000 ns apart; the request method hook answers `method`. */
function parse(pieces: Piece[], opts: { expect?: ExpectKind; method?: string | null; finish?: boolean } = {}): Parsed {
  const out: Parsed = { parser: null as unknown as Http1Parser, msgs: [], started: 0, stops: [], desyncs: 0 };
  const parser = new Http1Parser({
    onStart: () => out.started++,
    onEnd: (m) => out.msgs.push(m),
    onDesync: () => out.desyncs++,
    onStop: (r) => out.stops.push(r),
    requestMethod: () => (opts.method === undefined ? 'GET' : opts.method),
  }, { expect: opts.expect });
  out.parser = parser;
  let pos = 0;
  pieces.forEach((p, i) => {
    const tsNs = (i + 1) * 1000;
    if (typeof p === 'object' && 'gap' in p) {
      parser.push({ type: 'gap', pos, len: p.gap, tsNs, cause: 'lost' });
      pos += p.gap;
      return;
    }
    const data = Buffer.from(typeof p === 'string' ? p : p.cont, 'latin1');
    parser.push({ type: 'data', pos, data, tsNs, syscallStart: typeof p === 'string' });
    pos += data.length;
  });
  if (opts.finish) parser.finish();
  return out;
}

const has = (m: Http1Message, flag: number): boolean => (m.flags & flag) !== 0;

test('request line, kept headers, Content-Length body', () => {
  const { msgs } = parse([
    'POST /p?x=1 HTTP/1.1\r\nHOST: h.example\r\ncontent-type: text/plain\r\nUser-Agent:  ua/1 \r\nContent-Length: 3\r\n\r\nabc',
  ]);
  assert.equal(msgs.length, 1);
  const m = msgs[0];
  assert.equal(m.kind, 'request');
  assert.equal(m.method, 'POST');
  assert.equal(m.target, '/p?x=1');
  assert.equal(m.host, 'h.example');
  assert.equal(m.contentType, 'text/plain');
  assert.equal(m.userAgent, 'ua/1');
  assert.equal(m.version, '1.1');
  assert.equal(m.bodyBytes, 3);
  assert.equal(m.headerBytes, m.wireBytes - 3);
  assert.ok(has(m, MessageFlags.KeepAlive));
});

test('no header value outside the allowlist is kept', () => {
  const { msgs } = parse([
    'GET / HTTP/1.1\r\nAuthorization: Bearer s3cr3t\r\nCookie: a=s3cr3t\r\nProxy-Authorization: s3cr3t\r\nX-Token: s3cr3t\r\n\r\n',
    'HTTP/1.1 200 OK\r\nSet-Cookie: s3cr3t\r\nContent-Length: 0\r\n\r\n',
  ]);
  assert.equal(msgs.length, 2);
  assert.doesNotMatch(JSON.stringify(msgs), /s3cr3t/);
});

test('bare LF line ends, and empty lines between messages, are accepted', () => {
  const { msgs } = parse(['GET /a HTTP/1.1\n\n\r\n\r\nGET /lf HTTP/1.0\nHost: x\n\n']);
  assert.deepEqual(msgs.map((m) => m.target), ['/a', '/lf']);
  assert.equal(msgs[1].startPos, 21);
  assert.equal(msgs[1].version, '1.0');
  assert.ok(!has(msgs[1], MessageFlags.KeepAlive));
});

test('HTTP/1.0 keep-alive and HTTP/1.1 close', () => {
  const { msgs } = parse([
    'GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n',
  ]);
  assert.ok(has(msgs[0], MessageFlags.KeepAlive));
  assert.ok(!has(msgs[1], MessageFlags.KeepAlive));
});

test('list headers are read member by member: case, spaces and empty members ignored, the last transfer coding decides', () => {
  const { msgs } = parse([
    'GET /a HTTP/1.0\r\nConnection: Upgrade ,\tKEEP-ALIVE , \r\n\r\n'
    + 'GET /b HTTP/1.1\r\nConnection: keep-alives, closed\r\n\r\n'
    + 'GET /c HTTP/1.1\r\nConnection: ,close\r\n\r\n',
  ]);
  assert.deepEqual(msgs.map((m) => has(m, MessageFlags.KeepAlive)), [true, true, false]);
  // "chunked," ends with an empty member: not chunked, so this request's framing is an error.
  const trailing = parse(['POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n']);
  assert.equal(trailing.parser.stats.parseErrors.transfer_encoding, 1);
  const upper = parse(['POST / HTTP/1.1\r\nTransfer-Encoding: Gzip ,CHUNKED\r\n\r\n2\r\nab\r\n0\r\n\r\n']);
  assert.equal(upper.msgs[0].bodyBytes, 2);
});

test('the request target is kept up to MAX_TARGET_BYTES', () => {
  const target = `/${'a'.repeat(3000)}`;
  const { msgs } = parse([`GET ${target} HTTP/1.1\r\n\r\n`]);
  assert.equal(msgs[0].target.length, MAX_TARGET_BYTES);
  assert.equal(msgs[0].wireBytes, target.length + 17);
});

test('a start line over the cap loses sync without holding more than the line buffer', () => {
  const { parser, msgs } = parse([`GET / HTTP/1.1\r\n\r\nGET /${'a'.repeat(9000)}`]);
  assert.ok(parser.bufferedBytes <= LINE_BUFFER_BYTES, `${parser.bufferedBytes} buffered`);
  parser.push({ type: 'data', pos: 9023, data: Buffer.from(' HTTP/1.1\r\n\r\n'), tsNs: 2, syscallStart: false });
  assert.equal(msgs.length, 1);
  assert.equal(parser.stats.parseErrors.line_too_long, 1);
  assert.equal(parser.bufferedBytes, 0);
});

test('a 100 KiB header line is counted, not held, and breaks the header block cap', () => {
  const head = 'GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nX-Big: ';
  const p = parse([head]);
  let pos = head.length;
  for (let i = 0; i < 100; i++) {
    p.parser.push({ type: 'data', pos, data: Buffer.alloc(1024, 0x76), tsNs: 2000, syscallStart: false });
    pos += 1024;
    assert.ok(p.parser.bufferedBytes <= LINE_BUFFER_BYTES, `${p.parser.bufferedBytes} buffered after ${i + 1} KiB`);
  }
  assert.equal(p.parser.stats.parseErrors.header_limit, 1);
  assert.equal(p.desyncs, 1);
});

test('a long kept header below the caps is truncated, not an error', () => {
  const { msgs } = parse([`GET / HTTP/1.1\r\nUser-Agent: ${'u'.repeat(20000)}\r\n\r\n`]);
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0].userAgent.length, 512);
  assert.equal(msgs[0].flags & MessageFlags.HeadPartial, 0);
});

test('more than MAX_HEADERS header lines lose sync; the message ends inferred', () => {
  const many = Array.from({ length: MAX_HEADERS + 1 }, (_, i) => `X-${i}: v\r\n`).join('');
  const p = parse([`GET /many HTTP/1.1\r\n${many}\r\n`, 'GET /next HTTP/1.1\r\n\r\n']);
  assert.equal(p.parser.stats.parseErrors.header_limit, 1);
  assert.deepEqual(p.msgs.map((m) => m.target), ['/many', '/next']);
  assert.ok(has(p.msgs[0], MessageFlags.EndInferred));
  assert.ok(has(p.msgs[0], MessageFlags.HeadPartial));
  assert.equal(p.msgs[0].endPos, p.msgs[1].startPos);
});

test('Content-Length: identical lists accepted, conflicts and junk rejected', () => {
  assert.equal(parse(['GET / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab']).msgs[0].bodyBytes, 2);
  for (const bad of ['1, 2', '-1', '0x10', '', '12345678901234567']) {
    const p = parse([`GET / HTTP/1.1\r\nContent-Length: ${bad}\r\n\r\n`]);
    assert.equal(p.parser.stats.parseErrors.content_length, 1, `Content-Length: ${bad}`);
  }
  const twice = parse(['GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n']);
  assert.equal(twice.parser.stats.parseErrors.content_length, 1);
});

test('Transfer-Encoding: chunked last means chunked; otherwise an error on requests, close-delimited on responses', () => {
  const req = parse(['POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n']);
  assert.equal(req.msgs[0].bodyBytes, 3);
  const badReq = parse(['POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n']);
  assert.equal(badReq.parser.stats.parseErrors.transfer_encoding, 1);
  const resp = parse(['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabcdef'], { finish: true });
  assert.equal(resp.msgs[0].bodyBytes, 6);
  assert.equal(resp.msgs[0].flags & MessageFlags.EndInferred, 0);
});

test('chunked: extensions, trailers, sizes in hex, chunks split anywhere', () => {
  const body = '1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\nF \r\n0123456789abcde\r\n0\r\nT: 1\r\n\r\n';
  const whole = parse([`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body}`]);
  assert.equal(whole.msgs[0].bodyBytes, 26 + 15);
  const pieces: Piece[] = ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', ...[...body].map((c) => ({ cont: c }))];
  assert.deepEqual(parse(pieces).msgs.map((m) => ({ ...m, lastTsNs: 0 })), whole.msgs.map((m) => ({ ...m, lastTsNs: 0 })));
});

test('chunked: a malformed size line or missing CRLF after data loses sync', () => {
  for (const bad of ['zz\r\n', '3\r\nabcX\r\n', `${'f'.repeat(14)}\r\n`]) {
    const p = parse([`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${bad}`]);
    assert.equal(p.parser.stats.parseErrors.chunk, 1, JSON.stringify(bad));
  }
});

test('responses without body: HEAD, 1xx, 204, 304; and CL 0', () => {
  const head = parse(['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'], { method: 'HEAD' });
  assert.deepEqual(head.msgs.map((m) => m.bodyBytes), [0, 0]);
  for (const status of [100, 103, 204, 304]) {
    const p = parse([`HTTP/1.1 ${status} X\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx`]);
    assert.deepEqual(p.msgs.map((m) => m.status), [status, 200], `status ${status}`);
    assert.equal(p.msgs[0].interim, status < 200);
  }
});

test('a response whose request method is unknown is framed as for GET', () => {
  const p = parse(['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'], { method: null });
  assert.equal(p.msgs[0].bodyBytes, 2);
});

test('101 and a 2xx answer to CONNECT stop the parser; later bytes are ignored', () => {
  const up = parse(['HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00\x12', 'HTTP/1.1 200 OK\r\n\r\n']);
  assert.deepEqual(up.stops, ['upgrade']);
  assert.equal(up.msgs.length, 1);
  assert.equal(up.msgs[0].upgrade, 'h2c');
  assert.equal(up.parser.stats.ignoredBytes, 3 + 19);
  const tunnel = parse(['HTTP/1.1 200 OK\r\n\r\n\x16\x03'], { method: 'CONNECT' });
  assert.deepEqual(tunnel.stops, ['connect']);
  const refused = parse(['HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n'], { method: 'CONNECT' });
  assert.deepEqual(refused.stops, []);
});

test('the HTTP/2 preface stops the parser, in sync or while seeking', () => {
  assert.deepEqual(parse(['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']).stops, ['h2']);
  assert.deepEqual(parse([{ cont: 'junk' }, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']).stops, ['h2']);
});

test('a start line of the wrong kind for the direction is an error', () => {
  const p = parse(['GET / HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\n\r\n'], { expect: 'request' });
  assert.equal(p.parser.stats.parseErrors.wrong_direction, 1);
  assert.equal(p.msgs.length, 1);
  // Out of sync, a start line of the wrong kind is just not a candidate.
  const seeking = parse(['HTTP/1.1 200 OK\r\n\r\n'], { expect: 'request' });
  assert.equal(seeking.parser.stats.parseErrors.wrong_direction, 0);
  assert.equal(seeking.parser.stats.discardedBytes, 19);
});

test('in sync any token method is accepted; resynchronising needs a known one at a syscall start', () => {
  const inSync = parse(['FOO /x HTTP/1.1\r\n\r\n']);
  assert.equal(inSync.msgs.length, 0, 'the stream starts out of sync');
  const afterOne = parse(['GET / HTTP/1.1\r\n\r\nFOO /x HTTP/1.1\r\n\r\n']);
  assert.deepEqual(afterOne.msgs.map((m) => m.method), ['GET', 'FOO']);
  // Mid-syscall bytes never start a message while out of sync, however plausible.
  const mid = parse([{ cont: 'GET /a HTTP/1.1\r\n\r\n' }, 'GET /b HTTP/1.1\r\n\r\n']);
  assert.deepEqual(mid.msgs.map((m) => m.target), ['/b']);
  assert.equal(mid.parser.stats.discardedBytes, 19);
});

test('a candidate that stalls before its prefix gives way to the next syscall', () => {
  const p = parse(['GE', 'GET /x HTTP/1.1\r\n\r\n']);
  assert.deepEqual(p.msgs.map((m) => m.target), ['/x']);
});

test('a gap inside a known-length body is skipped and counted', () => {
  const p = parse(['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab', { gap: 5 }, { cont: 'cde' }, 'HTTP/1.1 204 No\r\n\r\n']);
  assert.equal(p.msgs[0].bodyBytes, 10);
  assert.ok(has(p.msgs[0], MessageFlags.BodyPartial));
  assert.equal(p.msgs[0].lastTsNs, 3000);
  assert.equal(p.msgs[1].status, 204);
  assert.equal(p.desyncs, 0);
});

test('a gap past the end of a body ends the message and loses sync', () => {
  const p = parse(['HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab', { gap: 10 }, { cont: 'junk' }, 'HTTP/1.1 200 OK\r\n\r\n']);
  assert.equal(p.msgs[0].bodyBytes, 4);
  assert.equal(p.msgs[0].endPos, p.msgs[0].startPos + p.msgs[0].headerBytes + 4);
  assert.equal(p.desyncs, 1);
  assert.equal(p.parser.stats.resyncs, 2);
  assert.equal(p.msgs.length, 1, 'the last response is close-delimited and still open');
});

test('a gap inside a chunk is skipped; one across a chunk boundary loses framing', () => {
  const inside = parse(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nab', { gap: 3 }, { cont: 'fgh\r\n0\r\n\r\n' }]);
  assert.equal(inside.msgs[0].bodyBytes, 8);
  assert.ok(has(inside.msgs[0], MessageFlags.BodyPartial));
  const across = parse(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab', { gap: 6 }, 'HTTP/1.1 204 No\r\n\r\n']);
  assert.equal(across.desyncs, 1);
  assert.deepEqual(across.msgs.map((m) => m.status), [200, 204]);
  assert.ok(has(across.msgs[0], MessageFlags.EndInferred));
  assert.equal(across.msgs[0].endPos, across.msgs[1].startPos);
  assert.equal(across.msgs[0].lastTsNs, 2000);
});

test('a gap in the headers keeps the message open until the next start', () => {
  const p = parse(['GET /g HTTP/1.1\r\nHost: a', { gap: 7 }, { cont: 'rest\r\n\r\n' }, 'GET /n HTTP/1.1\r\n\r\n']);
  assert.deepEqual(p.msgs.map((m) => m.target), ['/g', '/n']);
  const m = p.msgs[0];
  assert.ok(has(m, MessageFlags.EndInferred) && has(m, MessageFlags.HeadPartial));
  assert.equal(m.headerBytes, m.wireBytes);
  assert.equal(m.lastTsNs, 3000);
});

test('finish ends a close-delimited body normally and cuts anything else short', () => {
  const close = parse(['HTTP/1.0 200 OK\r\n\r\nbody'], { finish: true });
  assert.equal(close.msgs[0].bodyBytes, 4);
  assert.equal(close.msgs[0].flags & (MessageFlags.EndInferred | MessageFlags.BodyPartial), 0);
  const cut = parse(['HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nbody'], { finish: true });
  assert.ok(has(cut.msgs[0], MessageFlags.EndInferred) && has(cut.msgs[0], MessageFlags.BodyPartial));
  assert.equal(cut.msgs[0].bodyBytes, 4);
});

test('timestamps: first byte and last byte events', () => {
  const p = parse(['GET / HT', { cont: 'TP/1.1\r\nContent-Length: 2\r\n\r\n' }, { cont: 'a' }, { cont: 'b' }]);
  assert.equal(p.msgs[0].firstTsNs, 1000);
  assert.equal(p.msgs[0].lastTsNs, 4000);
});

test('idle and atBoundary follow the message state', () => {
  const p = parse(['GET / HTTP/1.1\r\nContent-Length: 2\r\n\r\na']);
  assert.equal(p.parser.idle, false);
  assert.equal(p.parser.atBoundary, false);
  p.parser.push({ type: 'data', pos: 38, data: Buffer.from('b'), tsNs: 1, syscallStart: false });
  assert.equal(p.parser.idle, true);
  assert.equal(p.parser.atBoundary, true);
});

test('control characters in a kept header value are an error; in other values they are not read', () => {
  const bad = parse(['GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: a\rb\x0e\r\n\r\n']);
  assert.equal(bad.parser.stats.parseErrors.header, 1);
  const other = parse(['GET / HTTP/1.1\r\nX-Other: a\x01b\r\n\r\n']);
  assert.equal(other.msgs.length, 1);
  assert.equal(other.parser.stats.parseErrors.header, 0);
});

test('events that skip or repeat positions lose sync', () => {
  const p = parse(['GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab']);
  p.parser.push({ type: 'data', pos: 100, data: Buffer.from('GET /n HTTP/1.1\r\n\r\n'), tsNs: 9000, syscallStart: true });
  assert.equal(p.parser.stats.desyncs.discontinuity, 1);
  assert.deepEqual(p.msgs.map((m) => m.target), ['/', '/n']);
  assert.ok(has(p.msgs[0], MessageFlags.EndInferred));
});
