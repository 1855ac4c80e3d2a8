/**
 * Deterministic fuzzing of reassembly, parsing and pairing: mutated fixtures, generated
 * HTTP-like conversations, random bytes and raw out-of-contract events. Nothing may throw
 * (an exception caught inside the connection counts as a failure too), held bytes stay
 * under their caps, and emitted exchanges stay self-consistent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataFlags } from '../../schemas/records.js';
import { StreamReassembler } from '../../processors/l7/reassembly.js';
import { Http1Connection, type Dir, type Http1Exchange } from '../../processors/http1/connection.js';
import { LINE_BUFFER_BYTES } from '../../processors/http1/parser.js';
import { byteByByte, loadFixtures, run, splitAt, splitRecord, toRecords, type Rec } from '../fixtures/http1/fixture.js';
import { Rng } from '../helpers/prng.js';

const MAX_PENDING_BYTES = 4096;
const MAX_PENDING_CHUNKS = 16;

/**
 * Exchanges must be self-consistent. Credentials (SECRET in the inputs) must not leak,
 * unless mutations rewrote the bytes so that a secret became a kept value ("Host: SECRET").
 */
function checkExchanges(xs: Http1Exchange[], where: string, secretsMayMove: boolean): void {
  let lastStart = -1;
  for (const x of xs) {
    assert.ok(x.reqStartPos > lastStart, `${where}: request positions must increase (${x.reqStartPos} after ${lastStart})`);
    lastStart = x.reqStartPos;
    assert.ok(x.reqBytes > 0 && x.respBytes >= 0, `${where}: sizes ${x.reqBytes}/${x.respBytes}`);
    assert.ok(x.reqBodyBytes >= 0 && x.reqBodyBytes <= x.reqBytes, `${where}: request body ${x.reqBodyBytes} of ${x.reqBytes}`);
    assert.ok(x.respBodyBytes >= 0 && x.respBodyBytes <= x.respBytes, `${where}: response body ${x.respBodyBytes} of ${x.respBytes}`);
    assert.ok(x.reqFirstTsNs <= x.reqLastTsNs && x.respFirstTsNs <= x.respLastTsNs, `${where}: timestamps`);
    assert.ok(x.path.length <= 2048 && x.host.length <= 512 && x.userAgent.length <= 512, `${where}: kept value sizes`);
    if (x.timedOut) assert.equal(x.status, 0, `${where}: a timed-out exchange has no status`);
    else assert.ok(x.status >= 100 && x.status <= 999 && x.respFirstTsNs >= x.reqFirstTsNs, `${where}: response`);
    if (!secretsMayMove) assert.doesNotMatch(JSON.stringify(x), /SECRET/, `${where}: a credential leaked`);
  }
}

/** Feed records with invariant checks after each; expire now and then, close at the end. */
function feed(recs: Rec[], rng: Rng, where: string, secretsMayMove = false): void {
  const xs: Http1Exchange[] = [];
  const conn = new Http1Connection(rng.pick(['client', 'server', 'unknown'] as const), (x) => xs.push(x), {
    midlife: rng.chance(0.3), requestTimeoutNs: rng.int(3000),
  });
  const ra = [0, 1].map(() => new StreamReassembler({ maxPendingBytes: MAX_PENDING_BYTES, maxPendingChunks: MAX_PENDING_CHUNKS, maxHoldNs: 1000 }));
  for (const rec of recs) {
    ra[rec.dir].push(rec, (ev) => conn.data(rec.dir, ev));
    if (rng.chance(0.05)) conn.expire(rec.tsNs + rng.int(5000));
    for (const r of ra) {
      assert.ok(r.pendingBytes <= MAX_PENDING_BYTES && r.pendingChunks <= MAX_PENDING_CHUNKS, `${where}: reassembler holds ${r.pendingBytes} bytes`);
    }
    assert.ok(conn.bufferedBytes <= 2 * LINE_BUFFER_BYTES, `${where}: connection holds ${conn.bufferedBytes} bytes`);
  }
  for (const dir of [0, 1] as const) ra[dir].flush((ev) => conn.data(dir, ev));
  conn.close();
  assert.equal(conn.stats.internalErrors, 0, `${where}: ${String((conn.lastInternalError as Error | null)?.stack)}`);
  checkExchanges(xs, where, secretsMayMove);
}

/** One random change to a copy of a fixture's records. */
function mutate(recs: Rec[], rng: Rng): Rec[] {
  const out: Rec[] = recs.map((r) => ({ ...r, payload: Buffer.from(r.payload) }));
  if (out.length === 0) return out;
  const i = rng.int(out.length);
  const r = out[i];
  switch (rng.int(9)) {
    case 0: // flip bytes
      for (let k = 0; k < 1 + rng.int(4) && r.payload.length; k++) r.payload[rng.int(r.payload.length)] ^= 1 << rng.int(8);
      break;
    case 1: { // cut a range (positions now disagree with the bytes)
      const a = rng.int(r.payload.length + 1);
      const b = a + rng.int(r.payload.length - a + 1);
      r.payload = Buffer.concat([r.payload.subarray(0, a), r.payload.subarray(b)]);
      break;
    }
    case 2: { // duplicate a range in place
      const a = rng.int(r.payload.length + 1);
      const b = a + rng.int(Math.min(64, r.payload.length - a) + 1);
      r.payload = Buffer.concat([r.payload.subarray(0, b), r.payload.subarray(a)]);
      break;
    }
    case 3: // lose a record
      out.splice(i, 1);
      break;
    case 4: // deliver a record twice, maybe later
      out.splice(Math.min(out.length, i + rng.int(3)), 0, { ...r });
      break;
    case 5: // swap neighbours (reordering, also across directions)
      if (i + 1 < out.length) [out[i], out[i + 1]] = [out[i + 1], out[i]];
      break;
    case 6: // split a record at random points
      out.splice(i, 1, ...splitRecord(r, [rng.int(r.payload.length + 1), rng.int(r.payload.length + 1)].sort((x, y) => x - y)));
      break;
    case 7: // truncate the capture
      r.dataFlags |= rng.chance(0.5) ? DataFlags.Truncated : DataFlags.NoBuffer | DataFlags.Truncated;
      r.lenBytes = r.offsetBytes + r.payload.length + rng.int(100000);
      r.payload = r.payload.subarray(0, rng.int(r.payload.length + 1));
      break;
    case 8: // a hostile position
      r.posBytes = rng.pick([0, r.posBytes + rng.int(1 << 20), Math.max(0, r.posBytes - rng.int(100)), 2 ** 52]);
      r.offsetBytes = Math.min(r.offsetBytes, r.posBytes);
      break;
  }
  return out;
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'CONNECT', 'OPTIONS', 'BREW', 'get', 'PRI'];
const HEADERS = [
  'Host: h', 'Content-Length: 3', 'Content-Length: 0', 'Content-Length: 100000', 'Content-Length: x',
  'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip', 'Connection: close', 'Connection: keep-alive',
  'Expect: 100-continue', 'Upgrade: websocket', 'Authorization: Bearer SECRET', 'Cookie: SECRET=1', 'X-Fold:', ' folded',
];
const CHUNKS = ['3\r\nabc\r\n', '0\r\n\r\n', '0\r\nT: v\r\n\r\n', 'ffffffffffffff\r\n', '2;x=y\r\nab\r\n', 'z\r\n', '1\r\n'];

/** A random HTTP-like message: mostly valid pieces, sometimes broken. */
function message(rng: Rng, request: boolean): string {
  const parts: string[] = [];
  parts.push(request
    ? `${rng.pick(METHODS)} ${rng.pick(['/', '/a?b', '*', 'h:443', ''])} HTTP/1.${rng.pick(['0', '1', '1', 'x'])}`
    : `HTTP/1.${rng.pick(['0', '1', '1'])} ${rng.pick(['100', '101', '200', '204', '304', '404', '2000', '99'])} ${rng.pick(['OK', ''])}`);
  for (let k = rng.int(5); k > 0; k--) parts.push(rng.pick(HEADERS));
  // Now and then a line far over the caps.
  if (rng.chance(0.02)) parts.push(`X-Long: ${'v'.repeat(rng.int(70000))}`);
  let text = `${parts.join(rng.chance(0.9) ? '\r\n' : '\n')}\r\n\r\n`;
  for (let k = rng.int(4); k > 0; k--) text += rng.chance(0.5) ? rng.pick(CHUNKS) : 'abc';
  return text;
}

/** Records of a generated conversation: random sizes, splits, losses and truncations. */
function generated(rng: Rng): Rec[] {
  const recs: Rec[] = [];
  const pos: [number, number] = [0, 0];
  for (let n = 1 + rng.int(12), ts = 1000; n > 0; n--, ts += rng.int(1500)) {
    const c2s = rng.chance(0.5);
    const dir: Dir = c2s ? 0 : 1;
    const bytes = rng.chance(0.1) ? rng.bytes(rng.int(64)) : Buffer.from(message(rng, c2s), 'latin1');
    const start = pos[dir] + (rng.chance(0.05) ? rng.int(50) : 0);
    pos[dir] = start + bytes.length;
    if (bytes.length === 0 || rng.chance(0.05)) continue;
    const cap = rng.chance(0.1) ? rng.int(bytes.length) : bytes.length;
    const rec: Rec = {
      dir, posBytes: start, offsetBytes: 0, lenBytes: bytes.length, payload: bytes.subarray(0, cap), tsNs: ts,
      dataFlags: DataFlags.Last | (cap < bytes.length ? DataFlags.Truncated : 0),
    };
    recs.push(...splitRecord(rec, rng.chance(0.3) ? [rng.int(cap), rng.int(cap)].sort((x, y) => x - y) : []));
  }
  return recs;
}

test('mutated fixtures', () => {
  const fixtures = loadFixtures().map(toRecords);
  for (let seed = 1; seed <= 5000; seed++) {
    const rng = new Rng(seed);
    let recs = rng.pick(fixtures);
    for (let k = 1 + rng.int(4); k > 0; k--) recs = mutate(recs, rng);
    feed(recs, rng, `mutated fixture, seed ${seed}`, true);
  }
});

test('generated HTTP-like conversations', () => {
  for (let seed = 1; seed <= 5000; seed++) {
    const rng = new Rng(0x5eed0000 + seed);
    feed(generated(rng), rng, `generated, seed ${seed}`);
  }
});

test('generated conversations give the same result however their records are split', () => {
  const outcome = (recs: Rec[]): string => {
    const r = run({ hint: 'client', midlife: false }, recs);
    return JSON.stringify({ exchanges: r.exchanges, stats: r.conn.stats });
  };
  for (let seed = 1; seed <= 2000; seed++) {
    const rng = new Rng(0x5711700 + seed);
    const recs = generated(rng);
    const whole = outcome(recs);
    const total = recs.reduce((n, r) => n + r.payload.length, 0);
    assert.equal(outcome(splitAt(recs, rng.int(total + 1))), whole, `split, seed ${seed}`);
    if (total < 4096) assert.equal(outcome(byteByByte(recs)), whole, `byte by byte, seed ${seed}`);
  }
});

test('random bytes', () => {
  for (let seed = 1; seed <= 500; seed++) {
    const rng = new Rng(0xb17e0000 + seed);
    const pos: [number, number] = [0, 0];
    const recs: Rec[] = [];
    for (let n = rng.int(10); n > 0; n--) {
      const dir: Dir = rng.chance(0.5) ? 0 : 1;
      const payload = rng.bytes(rng.int(300));
      recs.push({ dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: payload.length, payload, tsNs: n, dataFlags: DataFlags.Last });
      pos[dir] += payload.length;
    }
    feed(recs, rng, `random bytes, seed ${seed}`);
  }
});

test('raw events outside the reassembler contract do not break the connection', () => {
  for (let seed = 1; seed <= 500; seed++) {
    const rng = new Rng(0xe7e70000 + seed);
    const xs: Http1Exchange[] = [];
    const conn = new Http1Connection('unknown', (x) => xs.push(x));
    const pos = [0, 0];
    for (let n = 0; n < 30; n++) {
      const dir: Dir = rng.chance(0.5) ? 0 : 1;
      // Positions that jump back and forth, and gaps of any length.
      if (rng.chance(0.2)) pos[dir] += rng.int(200) - 100;
      if (rng.chance(0.2)) {
        const len = rng.int(300) - 10;
        conn.data(dir, { type: 'gap', pos: pos[dir], len, tsNs: n, cause: rng.pick(['lost', 'uncaptured'] as const) });
        pos[dir] += Math.max(0, len);
      } else {
        const data = Buffer.from(message(rng, rng.chance(0.5)), 'latin1');
        conn.data(dir, { type: 'data', pos: pos[dir], data, tsNs: n, syscallStart: rng.chance(0.7) });
        pos[dir] += data.length;
      }
      assert.ok(conn.bufferedBytes <= 2 * LINE_BUFFER_BYTES);
    }
    conn.close();
    assert.equal(conn.stats.internalErrors, 0, `raw events, seed ${seed}: ${String((conn.lastInternalError as Error | null)?.stack)}`);
  }
});
