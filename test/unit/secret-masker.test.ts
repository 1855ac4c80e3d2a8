/**
 * The edge's secret masker, byte for byte: whole records, byte by byte and split at every
 * boundary give the same bytes; both directions, TLS plaintext, gaps, forgotten streams, and
 * the batcher masking its copy and never the ring.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SOCK_DATA_REC } from '../../schemas/layouts.js';
import { DataFlags, RecordKind } from '../../schemas/records.js';
import { Batcher, type SealedBatch } from '../../edge/batcher.js';
import { MASKED_AFTER_GAP, SecretMasker, isStartLine } from '../../edge/secret-masker.js';
import { byteByByte, splitAt, type Rec } from '../helpers/splits.js';
import { connClose, sockData } from '../helpers/records.js';

const CONN = 7;

/** A conversation as records, one per part, positions counted per direction. */
function conversation(parts: [0 | 1, string][]): Rec[] {
  const pos = [0, 0];
  return parts.map(([dir, text]) => {
    const payload = Buffer.from(text, 'latin1');
    const r: Rec = { dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: payload.length, dataFlags: DataFlags.Last, payload, tsNs: 1 };
    pos[dir] += payload.length;
    return r;
  });
}

/** The record bytes of `r` as the kernel writes them, with `kind`. */
function recordBytes(r: Rec, kind: number, connId = CONN): Buffer {
  const b = sockData({ tsNs: r.tsNs, connId }, { direction: r.dir, posBytes: r.posBytes, payload: r.payload, lenBytes: r.lenBytes, dataFlags: r.dataFlags });
  b.writeUInt16LE(kind, 0);
  return b;
}

/**
 * Bytes around each record while it is masked, as other records lie around it in a batch:
 * a start line and a secret header, which the masker must neither read nor write.
 */
const GUARD = Buffer.from('HTTP/1.1 200 OK\r\nCookie: guard\r\n'.repeat(3), 'latin1');

/** Each direction's bytes after masking every record in order. */
function masked(recs: Rec[], o: { kind?: number; masker?: SecretMasker; connId?: number } = {}): [string, string] {
  const masker = o.masker ?? new SecretMasker();
  const out: string[] = ['', ''];
  for (const r of recs) {
    const rec = recordBytes(r, o.kind ?? RecordKind.SockData, o.connId);
    const b = Buffer.concat([GUARD, rec, GUARD]);
    masker.maskRecord(b, GUARD.length, rec.length, o.kind ?? RecordKind.SockData, o.connId ?? CONN, 0);
    assert.ok(b.subarray(0, GUARD.length).equals(GUARD) && b.subarray(GUARD.length + rec.length).equals(GUARD), 'bytes around the record untouched');
    out[r.dir] += b.subarray(GUARD.length + SOCK_DATA_REC.size, GUARD.length + rec.length).toString('latin1');
  }
  return [out[0], out[1]];
}

/** Whole, byte by byte and split at every boundary: the same masked bytes every time. */
function assertEverySplit(recs: Rec[], expected: [string, string], kind: number = RecordKind.SockData): void {
  assert.deepEqual(masked(recs, { kind }), expected, 'whole records');
  assert.deepEqual(masked(byteByByte(recs), { kind }), expected, 'byte by byte');
  const total = recs.reduce((n, r) => n + r.payload.length, 0);
  for (let i = 1; i < total; i++) assert.deepEqual(masked(splitAt(recs, i), { kind }), expected, `split at ${i}`);
}

const REQUEST = 'GET /a HTTP/1.1\r\nHost: example\r\nAuthorization: Bearer s3cr3t\r\ncookie:sid=abc; x=1\r\nAccept: */*\r\n\r\n';
const REQUEST_MASKED = 'GET /a HTTP/1.1\r\nHost: example\r\nAuthorization: *************\r\ncookie:************\r\nAccept: */*\r\n\r\n';
const RESPONSE = 'HTTP/1.1 200 OK\r\nSet-Cookie: sid=new; HttpOnly\r\nContent-Length: 13\r\n\r\nCookie: body\n';
const RESPONSE_MASKED = 'HTTP/1.1 200 OK\r\nSet-Cookie: *****************\r\nContent-Length: 13\r\n\r\nCookie: body\n';

test('secret values are masked in both directions; names, other headers and bodies stay', () => {
  const recs = conversation([[0, REQUEST], [1, RESPONSE]]);
  assertEverySplit(recs, [REQUEST_MASKED, RESPONSE_MASKED]);
});

test('TLS plaintext records are masked the same way, apart from the socket bytes', () => {
  const recs = conversation([[0, REQUEST], [1, RESPONSE]]);
  assertEverySplit(recs, [REQUEST_MASKED, RESPONSE_MASKED], RecordKind.TlsData);
  // One connection: ciphertext on the socket, plaintext from the uprobes, each its own stream.
  const masker = new SecretMasker();
  const cipher = conversation([[0, '\x16\x03\x01 Cookie: not a header\r\n'], [0, 'Authorization: opaque\r\n']]);
  assert.deepEqual(masked(cipher, { masker }), ['\x16\x03\x01 Cookie: not a header\r\nAuthorization: opaque\r\n', '']);
  assert.deepEqual(masked(conversation([[0, REQUEST]]), { masker, kind: RecordKind.TlsData }), [REQUEST_MASKED, '']);
});

test('names are case-insensitive; obs-fold, space before the colon and long names', () => {
  const req = 'POST /x HTTP/1.0\r\nPROXY-AUTHORIZATION:  Basic dTpw\r\nX-Long-Header-Name-Beyond-Nineteen: keep\r\n'
    + 'Cookie : a=1\r\nSet-Cookie: b=2\r\n\t c=3\r\nX-Cookie: keep\r\nAuthorization\r\n\r\n';
  const out = 'POST /x HTTP/1.0\r\nPROXY-AUTHORIZATION:  **********\r\nX-Long-Header-Name-Beyond-Nineteen: keep\r\n'
    + 'Cookie : ***\r\nSet-Cookie: ***\r\n\t ***\r\nX-Cookie: keep\r\nAuthorization\r\n\r\n';
  assertEverySplit(conversation([[0, req]]), [out, '']);
});

test('pipelined requests, a body, and a request after the body', () => {
  const a = 'POST /a HTTP/1.1\r\nContent-Length: 20\r\n\r\nAuthorization: body\n';
  const b = 'GET /b HTTP/1.1\nCookie: k=v\n\nGET /c HTTP/1.1\r\nCookie: z\r\n\r\n';
  const out = 'POST /a HTTP/1.1\r\nContent-Length: 20\r\n\r\nAuthorization: body\nGET /b HTTP/1.1\nCookie: ***\n\nGET /c HTTP/1.1\r\nCookie: *\r\n\r\n';
  assertEverySplit(conversation([[0, a], [0, b]]), [out, '']);
});

test('a long body is searched for start lines within its record only', () => {
  // Over 256 bytes: the native search, bounded to the record (the next record's bytes, or
  // the guard's start line, must not be taken for this record's).
  const head = 'HTTP/1.1 200 OK\r\nContent-Length: 700\r\n\r\n';
  const body = 'x'.repeat(600);
  const next = 'z\r\nCookie: visible\r\n' + 'y'.repeat(80);
  const recs = conversation([[1, head + body], [1, next]]);
  assert.deepEqual(masked(recs), ['', head + body + next]);
});

test('a body line containing HTTP/1. makes the next lines a candidate block (errs toward masking)', () => {
  const req = 'POST /a HTTP/1.1\r\nContent-Length: 59\r\n\r\nsee HTTP/1.1 docs\nCookie: in-body\nno header: x\n<p>ends it\nCookie: kept\n';
  const out = 'POST /a HTTP/1.1\r\nContent-Length: 59\r\n\r\nsee HTTP/1.1 docs\nCookie: *******\nno header: x\n<p>ends it\nCookie: kept\n';
  assertEverySplit(conversation([[0, req]]), [out, '']);
});

test('an HTTP/2 connection is never masked', () => {
  const h2 = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x0c\x04\x00\x00\x00\x00\x00\ncookie: x\r\n';
  assertEverySplit(conversation([[0, h2]]), [h2, '']);
});

test('a gap inside a secret value: the first line after it is masked whole', () => {
  const recs = conversation([[0, 'GET / HTTP/1.1\r\nCookie: abc'], [0, 'LOST'], [0, 'def\r\nHost: h\r\nCookie: q\r\n\r\n']]);
  const masker = new SecretMasker();
  assert.deepEqual(masked([recs[0], recs[2]], { masker }), ['GET / HTTP/1.1\r\nCookie: ******\r\nHost: h\r\nCookie: *\r\n\r\n', '']);
  assert.equal(masker.masked[MASKED_AFTER_GAP], 1);
  assert.equal(masker.masked[2], 2);
});

test('a gap before a start line masks nothing; a stream first seen mid-life starts with the gap rule', () => {
  const recs = conversation([[1, 'HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\nbody'], [1, 'x'.repeat(50)], [1, 'HTTP/1.1 204 No\r\nSet-Cookie: t\r\n\r\n']]);
  assert.deepEqual(masked([recs[0], recs[2]]), ['', 'HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\nbodyHTTP/1.1 204 No\r\nSet-Cookie: *\r\n\r\n']);
  const req = conversation([[0, 'skip'], [0, 'GET /x HTTP/1.1\r\nCookie: c\r\n\r\n'], [0, 'tail-of-a-secret\r\nCookie: d\r\n\r\n']]);
  assert.deepEqual(masked([req[1]]), ['GET /x HTTP/1.1\r\nCookie: *\r\n\r\n', '']);
  assert.deepEqual(masked([req[2]]), ['****************\r\nCookie: *\r\n\r\n', '']);
});

test('a gap in a body (a sendfile, a truncated syscall) masks nothing; the next block is read', () => {
  const body = 'Cookie-like: body bytes\nAuthorization: also body\n';
  const recs = conversation([[1, 'HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\nbody'], [1, 'x'.repeat(50)], [1, body], [1, 'HTTP/1.1 200 OK\r\nSet-Cookie: s\r\n\r\n']]);
  const masker = new SecretMasker();
  assert.deepEqual(masked([recs[0], recs[2], recs[3]], { masker }), ['', `HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\nbody${body}HTTP/1.1 200 OK\r\nSet-Cookie: *\r\n\r\n`]);
  assert.equal(masker.masked[MASKED_AFTER_GAP], 0);
});

test('a stream that began as another protocol is only scanned after a gap', () => {
  const recs = conversation([[0, '\x00\x01binary'], [0, 'LOST'], [0, 'Cookie-like: text\nGET / HTTP/1.1\r\nCookie: e\r\n\r\n']]);
  assert.deepEqual(masked([recs[0], recs[2]]), ['\x00\x01binaryCookie-like: text\nGET / HTTP/1.1\r\nCookie: *\r\n\r\n', '']);
});

test('a forgotten stream (closed, or evicted past the limit) takes the gap rule on its next record', () => {
  const recs = conversation([[0, 'GET / HTTP/1.1\r\nCookie: ab'], [0, 'cd\r\n\r\n']]);
  const masker = new SecretMasker(2);
  masked([recs[0]], { masker });
  masked(conversation([[0, 'GET / HTTP/1.1\r\n']]), { masker, connId: 8 });
  masked(conversation([[0, 'GET / HTTP/1.1\r\n']]), { masker, connId: 9 });
  assert.equal(masker.size, 2);
  assert.deepEqual(masked([recs[1]], { masker }), ['**\r\n\r\n', '']);
  const closed = new SecretMasker();
  masked([recs[0]], { masker: closed });
  closed.forget(CONN, 0);
  assert.equal(closed.size, 0);
});

test('start lines are recognised by their shape', () => {
  const line = (s: string, complete = true) => isStartLine(Buffer.from(s), 0, Buffer.byteLength(s), complete);
  assert.equal(line('HTTP/1.1 200 OK'), true);
  assert.equal(line('HTTP/1.', false), true);
  assert.equal(line('GET /x?a=b HTTP/1.1\r'), true);
  assert.equal(line('GET /x?a=b HTTP/1.1', false), false);
  assert.equal(line('get /x HTTP/1.1'), false);
  assert.equal(line('sid=GET HTTP/1.1'), false);
  assert.equal(line('GET HTTP/1.1'), false);
});

test('the batcher masks its copy of a record and forgets closed connections; the ring is untouched', () => {
  const masker = new SecretMasker();
  const sealed: SealedBatch[] = [];
  const batcher = new Batcher({ shards: 1, maxBatchBytes: 1 << 16, maxBatchRecords: 100, masker }, (b) => sealed.push(b));
  const [rec] = conversation([[0, REQUEST]]);
  const ring = Buffer.alloc(1024);
  const bytes = recordBytes(rec, RecordKind.SockData);
  bytes.copy(ring, 8);
  batcher.add(ring, 8, bytes.length, 0);
  assert.equal(masker.size, 1);
  const close = connClose({ tsNs: 2, connId: CONN }, { saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1, dport: 80 }, { role: 1, comm: 'c', openTsNs: 1, txBytes: 0, rxBytes: 0 });
  batcher.add(close, 0, close.length, 0);
  batcher.flush();
  assert.equal(masker.size, 0);
  assert.equal(ring.subarray(8 + SOCK_DATA_REC.size, 8 + bytes.length).toString('latin1'), REQUEST);
  assert.equal(sealed[0].records.subarray(SOCK_DATA_REC.size, bytes.length).toString('latin1'), REQUEST_MASKED);
});
