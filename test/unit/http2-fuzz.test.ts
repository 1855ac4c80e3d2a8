/**
 * Deterministic fuzzing of reassembly, framing, HPACK and stream matching: mutated
 * fixtures, generated HTTP/2-like conversations, random bytes and raw out-of-contract
 * events. Nothing may throw (an exception caught inside the connection counts as a failure
 * too), held bytes, HPACK tables and open streams stay under their caps, and emitted
 * exchanges stay self-consistent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataFlags } from '../../schemas/records.js';
import { StreamReassembler } from '../../processors/l7/reassembly.js';
import {
  DEFAULT_MAX_HEADER_BLOCK_BYTES, Http2Connection, MAX_PATH_BYTES, MAX_VALUE_BYTES, type Dir, type Http2Exchange,
} from '../../processors/http2/connection.js';
import { CONTROL_PAYLOAD_BYTES, FrameFlags, FrameType, PREFACE } from '../../processors/http2/frames.js';
import { MAX_TABLE_STORED_BYTES } from '../../processors/http2/hpack.js';
import {
  byteByByte, frame, loadFixtures, run, splitAt, splitRecord, toRecords, type Rec,
} from '../fixtures/http2/fixture.js';
import { HpackEncoder, type BlockItem } from '../fixtures/http2/hpack-encoder.js';
import { Rng } from '../helpers/prng.js';

const MAX_PENDING_BYTES = 4096;
const MAX_PENDING_CHUNKS = 16;
const MAX_BUFFERED = 2 * (DEFAULT_MAX_HEADER_BLOCK_BYTES + CONTROL_PAYLOAD_BYTES + PREFACE.length);

/**
 * Exchanges must be self-consistent. Credentials (SECRET in the inputs) must not leak,
 * unless mutations rewrote the bytes so that a secret became a kept value.
 */
function checkExchanges(xs: Http2Exchange[], where: string, secretsMayMove: boolean): void {
  const ids = new Set<number>();
  for (const x of xs) {
    assert.ok(x.streamId > 0 && x.streamId % 2 === 1, `${where}: stream id ${x.streamId}`);
    assert.ok(!ids.has(x.streamId), `${where}: stream ${x.streamId} emitted twice`);
    ids.add(x.streamId);
    for (const [body, head, wire] of [[x.reqBodyBytes, x.reqHeaderBytes, x.reqBytes], [x.respBodyBytes, x.respHeaderBytes, x.respBytes]]) {
      assert.ok(body >= 0 && head >= 0 && body + head <= wire, `${where}: sizes ${body}+${head} > ${wire}`);
    }
    assert.ok(x.reqFirstTsNs <= x.reqLastTsNs && x.respFirstTsNs <= x.respLastTsNs, `${where}: timestamps`);
    assert.ok(Buffer.byteLength(x.path) <= MAX_PATH_BYTES, `${where}: path length`);
    for (const v of [x.method, x.authority, x.scheme, x.contentType, x.userAgent, x.grpcMessage]) {
      assert.ok(Buffer.byteLength(v) <= MAX_VALUE_BYTES, `${where}: value length`);
    }
    assert.ok(x.reqMessages >= 0 && x.respMessages >= 0);
    if (x.timedOut) assert.equal(x.respBytes, 0, `${where}: a timed-out exchange has no response`);
    if (!secretsMayMove) assert.doesNotMatch(JSON.stringify(x), /SECRET/, `${where}: a credential leaked`);
  }
}

/** Feed records with invariant checks after each; expire now and then, close at the end. */
function feed(recs: Rec[], rng: Rng, where: string, secretsMayMove = false): void {
  const xs: Http2Exchange[] = [];
  const maxStreams = rng.pick([4, 100, 1000]);
  const conn = new Http2Connection(rng.pick(['client', 'server', 'unknown'] as const), (x) => xs.push(x), {
    midlife: rng.chance(0.3), maxStreams, streamTimeoutNs: rng.int(3000),
  });
  const ra = [0, 1].map(() => new StreamReassembler({ maxPendingBytes: MAX_PENDING_BYTES, maxPendingChunks: MAX_PENDING_CHUNKS, maxHoldNs: 1000 }));
  for (const rec of recs) {
    ra[rec.dir].push(rec, (ev) => conn.data(rec.dir, ev));
    if (rng.chance(0.05)) conn.expire(rec.tsNs + rng.int(5000));
    assert.ok(conn.bufferedBytes <= MAX_BUFFERED, `${where}: connection holds ${conn.bufferedBytes} bytes`);
    assert.ok(conn.hpackBytes <= 2 * MAX_TABLE_STORED_BYTES, `${where}: HPACK holds ${conn.hpackBytes} bytes`);
    assert.ok(conn.openStreams <= maxStreams, `${where}: ${conn.openStreams} streams open`);
  }
  for (const dir of [0, 1] as const) ra[dir].flush((ev) => conn.data(dir, ev));
  conn.close();
  assert.equal(conn.stats.internalErrors, 0, `${where}: ${String((conn.lastInternalError as Error | null)?.stack)}`);
  assert.equal(conn.openStreams, 0);
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

const NAMES = [':method', ':path', ':authority', ':scheme', ':status', 'content-type', 'user-agent', 'grpc-status',
  'grpc-message', 'te', 'x-custom', 'authorization', 'cookie', 'host', 'x-very-long-name-'.repeat(20)];
const VALUES = ['GET', 'POST', '/', '/pkg.Svc/Method', 'application/grpc', '200', '204', '0', '5', 'not%20found', 'trailers',
  'SECRETvalue', '', 'v'.repeat(3000), 'é%E2%9C', 'http'];

/** A random header block: fields in every representation, size updates, sometimes garbage. */
function block(enc: HpackEncoder, rng: Rng, request: boolean): Buffer {
  if (rng.chance(0.05)) return rng.bytes(rng.int(40));
  const items: BlockItem[] = [];
  if (rng.chance(0.05)) items.push({ sizeUpdate: rng.pick([0, 64, 256, 4096]) });
  items.push(request ? { name: ':method', value: rng.pick(['GET', 'POST']) } : { name: ':status', value: rng.pick(['100', '200', '404']) });
  for (let k = rng.int(6); k > 0; k--) {
    const name = rng.pick(NAMES);
    // Credentials are only ever sent under credential names.
    const value = name === 'authorization' || name === 'cookie' ? 'SECRET=1' : rng.pick(VALUES).replace('SECRET', 'S3CRET');
    items.push({ name, value, mode: rng.pick(['auto', 'inc', 'noidx', 'never'] as const), huffman: rng.pick(['auto', 'on', 'off'] as const) });
  }
  return enc.encode(items);
}

/** A random frame of one direction. */
function randomFrame(enc: HpackEncoder, rng: Rng, request: boolean, ids: number[]): Buffer {
  const id = rng.chance(0.1) ? rng.int(20) : rng.pick(ids);
  const pad = rng.chance(0.1) ? rng.int(20) : -1;
  const padded = (b: Buffer): Buffer => (pad < 0 ? b : Buffer.concat([Buffer.from([pad]), b, Buffer.alloc(pad)]));
  const padFlag = pad < 0 ? 0 : FrameFlags.PADDED;
  const end = rng.chance(0.4) ? FrameFlags.END_STREAM : 0;
  switch (rng.int(12)) {
    case 0: case 1: case 2: {
      const b = block(enc, rng, request);
      if (rng.chance(0.2) && b.length > 2) {
        const cut = 1 + rng.int(b.length - 1);
        return Buffer.concat([
          frame(FrameType.HEADERS, end | padFlag, id, padded(b.subarray(0, cut))),
          frame(FrameType.CONTINUATION, rng.chance(0.9) ? FrameFlags.END_HEADERS : 0, rng.chance(0.9) ? id : id + 2, b.subarray(cut)),
        ]);
      }
      return frame(FrameType.HEADERS, FrameFlags.END_HEADERS | end | padFlag, id, padded(b));
    }
    case 3: case 4: case 5: {
      const msgs: Buffer[] = [];
      for (let k = rng.int(3); k > 0; k--) {
        const body = rng.bytes(rng.int(50));
        const h = Buffer.alloc(5);
        h[0] = rng.chance(0.9) ? 0 : rng.int(3);
        h.writeUInt32BE(rng.chance(0.9) ? body.length : rng.int(1 << 20), 1);
        msgs.push(h, body);
      }
      if (rng.chance(0.1)) msgs.push(Buffer.alloc(rng.int(20000), rng.int(256)));
      return frame(FrameType.DATA, end | padFlag, id, padded(Buffer.concat(msgs)));
    }
    case 6: {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(rng.int(14));
      return frame(FrameType.RST_STREAM, 0, id, b);
    }
    case 7: {
      const s = Buffer.alloc(12);
      s.writeUInt16BE(1, 0);
      s.writeUInt32BE(rng.pick([0, 100, 4096, 65536, 2 ** 32 - 1]), 2);
      s.writeUInt16BE(5, 6);
      s.writeUInt32BE(rng.pick([16384, 1 << 20, 100]), 8);
      return frame(FrameType.SETTINGS, rng.chance(0.2) ? FrameFlags.ACK : 0, 0, rng.chance(0.2) ? Buffer.alloc(0) : s);
    }
    case 8: {
      const g = Buffer.alloc(8);
      g.writeUInt32BE(rng.int(12));
      return frame(FrameType.GOAWAY, 0, 0, g);
    }
    case 9:
      return frame(rng.pick([FrameType.PING, FrameType.WINDOW_UPDATE, FrameType.PRIORITY]), 0, rng.chance(0.5) ? 0 : id, rng.bytes(rng.pick([4, 5, 8])));
    case 10: {
      const p = Buffer.alloc(4);
      p.writeUInt32BE(id + 1);
      return frame(FrameType.PUSH_PROMISE, FrameFlags.END_HEADERS, id, Buffer.concat([p, block(enc, rng, true)]));
    }
    default:
      return frame(rng.int(256), rng.int(256), rng.int(2 ** 31), rng.bytes(rng.int(30)));
  }
}

/** Records of a generated conversation: random sizes, splits, losses and truncations. */
function generated(rng: Rng): Rec[] {
  const recs: Rec[] = [];
  const pos: [number, number] = [0, 0];
  const enc = [new HpackEncoder(), new HpackEncoder()];
  const ids = [1, 3, 5, 7, 9, 11];
  let first = [true, true];
  for (let n = 1 + rng.int(16), ts = 1000; n > 0; n--, ts += rng.int(1500)) {
    const dir: Dir = rng.chance(0.5) ? 0 : 1;
    const parts: Buffer[] = [];
    if (first[dir] && dir === 0 && rng.chance(0.8)) parts.push(PREFACE);
    first = dir === 0 ? [false, first[1]] : [first[0], false];
    for (let k = 1 + rng.int(4); k > 0; k--) parts.push(randomFrame(enc[dir], rng, dir === 0, ids));
    const bytes = rng.chance(0.05) ? rng.bytes(rng.int(64)) : Buffer.concat(parts);
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
  for (let seed = 1; seed <= 4000; seed++) {
    const rng = new Rng(seed);
    let recs = rng.pick(fixtures);
    for (let k = 1 + rng.int(4); k > 0; k--) recs = mutate(recs, rng);
    feed(recs, rng, `mutated fixture, seed ${seed}`, true);
  }
});

test('generated HTTP/2-like conversations', () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const rng = new Rng(0x5eed0000 + seed);
    feed(generated(rng), rng, `generated, seed ${seed}`);
  }
});

test('generated conversations give the same result however their records are split', () => {
  const outcome = (recs: Rec[]): string => {
    const r = run({ hint: 'client', midlife: false }, recs);
    return JSON.stringify({ exchanges: r.exchanges, stats: r.conn.stats });
  };
  for (let seed = 1; seed <= 1000; seed++) {
    const rng = new Rng(0x5711700 + seed);
    const recs = generated(rng);
    const whole = outcome(recs);
    const total = recs.reduce((n, r) => n + r.payload.length, 0);
    assert.equal(outcome(splitAt(recs, rng.int(total + 1))), whole, `split, seed ${seed}`);
    if (total < 2048) assert.equal(outcome(byteByByte(recs)), whole, `byte by byte, seed ${seed}`);
  }
});

test('random bytes', () => {
  for (let seed = 1; seed <= 500; seed++) {
    const rng = new Rng(0xb17e0000 + seed);
    const pos: [number, number] = [0, 0];
    const recs: Rec[] = [];
    for (let n = rng.int(10); n > 0; n--) {
      const dir: Dir = rng.chance(0.5) ? 0 : 1;
      const payload = rng.chance(0.3) ? Buffer.concat([PREFACE, rng.bytes(rng.int(300))]) : rng.bytes(rng.int(300));
      recs.push({ dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: payload.length, payload, tsNs: n, dataFlags: DataFlags.Last });
      pos[dir] += payload.length;
    }
    feed(recs, rng, `random bytes, seed ${seed}`);
  }
});

test('raw events outside the reassembler contract do not break the connection', () => {
  for (let seed = 1; seed <= 500; seed++) {
    const rng = new Rng(0xe7e70000 + seed);
    const xs: Http2Exchange[] = [];
    const conn = new Http2Connection('unknown', (x) => xs.push(x), { maxStreams: 8, streamTimeoutNs: rng.int(50) });
    const enc = [new HpackEncoder(), new HpackEncoder()];
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
        const data = randomFrame(enc[dir], rng, dir === 0, [1, 3, 5]);
        conn.data(dir, { type: 'data', pos: pos[dir], data, tsNs: rng.int(100), syscallStart: rng.chance(0.7) });
        pos[dir] += data.length;
      }
      if (rng.chance(0.1)) conn.expire(rng.int(200));
      assert.ok(conn.bufferedBytes <= MAX_BUFFERED);
      assert.ok(conn.openStreams <= 8);
    }
    conn.close();
    assert.equal(conn.stats.internalErrors, 0, `raw events, seed ${seed}: ${String((conn.lastInternalError as Error | null)?.stack)}`);
  }
});
