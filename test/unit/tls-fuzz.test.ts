/**
 * Deterministic fuzzing of the TLS record layer, hello parsing and handshake tracking:
 * mutated fixtures and hellos, random bytes, random splits and out-of-contract events.
 * Nothing may throw (an exception caught inside the tracker counts as a failure too),
 * held bytes stay under their caps, at most one handshake comes per connection and it is
 * self-consistent; clean conversations give the same result however they are split.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataFlags } from '../../schemas/records.js';
import { StreamReassembler } from '../../processors/l7/reassembly.js';
import { parseClientHello, parseServerHello } from '../../processors/tls/hello.js';
import { TlsHandshakeTracker, type Dir, type TlsHandshake } from '../../processors/tls/handshake.js';
import { MAX_HANDSHAKE_MESSAGE_BYTES } from '../../processors/tls/records.js';
import { splitAt, splitRecord } from '../helpers/splits.js';
import { loadFixtures, mirrored, run, toRecords, type Rec } from '../fixtures/tls/fixture.js';
import {
  appData, ccs, CH13, clientHello, clientHelloBody, extAlpn, extSni, SH13, serverHello, serverHelloBody,
} from '../fixtures/tls/build.js';
import { Rng } from '../helpers/prng.js';

const MAX_BUFFERED = 2 * (MAX_HANDSHAKE_MESSAGE_BYTES + 9);

function mutateBytes(b: Buffer, rng: Rng): Buffer {
  const out = Buffer.from(b);
  switch (rng.int(5)) {
    case 0:
      for (let k = 1 + rng.int(4); k > 0 && out.length; k--) out[rng.int(out.length)] ^= 1 << rng.int(8);
      return out;
    case 1: // a length field made huge or zero
      if (out.length >= 2) out.writeUInt16BE(rng.pick([0, 1, 0xffff, 0x4801, rng.int(65536)]), rng.int(out.length - 1));
      return out;
    case 2:
      return out.subarray(0, rng.int(out.length + 1));
    case 3:
      return Buffer.concat([out, rng.bytes(rng.int(40))]);
    default: { // a range cut out
      const a = rng.int(out.length + 1);
      return Buffer.concat([out.subarray(0, a), out.subarray(a + rng.int(20))]);
    }
  }
}

/** One random change to a copy of a conversation's records. */
function mutate(recs: Rec[], rng: Rng): Rec[] {
  const out: Rec[] = recs.map((r) => ({ ...r, payload: Buffer.from(r.payload) }));
  if (out.length === 0) return out;
  const i = rng.int(out.length);
  const r = out[i];
  switch (rng.int(7)) {
    case 0:
    case 1:
      r.payload = mutateBytes(r.payload, rng);
      break;
    case 2:
      out.splice(i, 1);
      break;
    case 3:
      out.splice(Math.min(out.length, i + rng.int(3)), 0, { ...r });
      break;
    case 4:
      if (i + 1 < out.length) [out[i], out[i + 1]] = [out[i + 1], out[i]];
      break;
    case 5:
      r.dataFlags |= DataFlags.Truncated;
      r.lenBytes = r.offsetBytes + r.payload.length + rng.int(5000);
      r.payload = r.payload.subarray(0, rng.int(r.payload.length + 1));
      break;
    default:
      r.posBytes = rng.pick([0, r.posBytes + rng.int(1 << 16), Math.max(0, r.posBytes - rng.int(100))]);
      r.offsetBytes = Math.min(r.offsetBytes, r.posBytes);
      break;
  }
  return out;
}

function check(hs: TlsHandshake[], where: string): void {
  assert.ok(hs.length <= 1, `${where}: ${hs.length} handshakes on one connection`);
  for (const h of hs) {
    if (h.complete) {
      assert.ok(h.handshakeNs === Math.max(0, h.handshakeEndTsNs - h.clientHelloTsNs) && h.handshakeEndTsNs >= h.serverHelloTsNs, `${where}: timing`);
      assert.ok(h.version !== '' && h.cipher !== '', `${where}: a complete handshake has a ServerHello`);
    } else {
      assert.ok(h.handshakeNs === 0 && h.handshakeEndTsNs === 0 && h.incomplete !== null, `${where}: incomplete`);
    }
    assert.ok(h.sni.length <= 255 && h.alpnOffered.length <= 32, `${where}: caps`);
  }
}

/** Feed with checks after every record; expire now and then, close at the end. */
function feed(recs: Rec[], rng: Rng, where: string): void {
  const hs: TlsHandshake[] = [];
  const t = new TlsHandshakeTracker(rng.pick(['client', 'server', 'unknown'] as const), (h) => hs.push(h), {
    midlife: rng.chance(0.05), handshakeTimeoutNs: rng.int(3000),
  });
  const ra = [0, 1].map(() => new StreamReassembler({ maxPendingBytes: 8192, maxPendingChunks: 16, maxHoldNs: 1000 }));
  for (const rec of recs) {
    ra[rec.dir].push(rec, (ev) => t.data(rec.dir, ev));
    if (rng.chance(0.05)) t.expire(rec.tsNs + rng.int(5000));
    assert.ok(t.bufferedBytes <= MAX_BUFFERED, `${where}: ${t.bufferedBytes} bytes held`);
  }
  for (const dir of [0, 1] as const) ra[dir].flush((ev) => t.data(dir, ev));
  t.close();
  assert.equal(t.stats.internalErrors, 0, `${where}: ${String((t.lastInternalError as Error | null)?.stack)}`);
  assert.equal(t.isIdle(), true, `${where}: idle after close`);
  check(hs, where);
}

test('hello parsers never throw on mutated hellos', () => {
  const bodies = [
    clientHelloBody({ suites: [0x1301, 0xc02f], extensions: [extSni('f.example'), extAlpn('h2')] }),
    serverHelloBody({ extensions: [extAlpn('h2')] }),
  ];
  for (let seed = 1; seed <= 20000; seed++) {
    const rng = new Rng(seed);
    let b = rng.pick(bodies);
    for (let k = 1 + rng.int(3); k > 0; k--) b = mutateBytes(b, rng);
    parseClientHello(b);
    parseServerHello(b);
  }
});

test('mutated fixtures, from either end', () => {
  const all = loadFixtures().flatMap((fx) => [toRecords(fx), toRecords(mirrored(fx))]);
  for (let seed = 1; seed <= 2500; seed++) {
    const rng = new Rng(0x7150 + seed);
    let recs = rng.pick(all);
    for (let k = 1 + rng.int(4); k > 0; k--) recs = mutate(recs, rng);
    if (rng.chance(0.5)) recs = recs.flatMap((r) => splitRecord(r, [rng.int(r.payload.length + 1)]) as Rec[]);
    feed(recs, rng, `mutated fixture, seed ${seed}`);
  }
});

/** A generated conversation: hellos, change_cipher_spec and records in random groupings. */
function generated(rng: Rng): Rec[] {
  const client: Buffer[] = [rng.chance(0.5) ? CH13(rng.pick(['a.example', 'b.example', ''])) : clientHello({ suites: [0xc02f] })];
  const server: Buffer[] = [rng.chance(0.5) ? SH13() : serverHello({ suite: 0xc02f, extensions: [extAlpn('http/1.1')] })];
  for (let k = rng.int(4); k > 0; k--) server.push(rng.pick([ccs(), appData(rng.int(3000)), appData(19)]));
  for (let k = rng.int(4); k > 0; k--) client.push(rng.pick([ccs(), appData(rng.int(200)), appData(53)]));
  const recs: Rec[] = [];
  const pos: [number, number] = [0, 0];
  let ts = 1000;
  const emit = (dir: Dir, b: Buffer): void => {
    recs.push({ dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: b.length, dataFlags: DataFlags.Last, payload: b, tsNs: ts });
    pos[dir] += b.length;
    ts += 1000;
  };
  emit(0, client.shift()!);
  emit(1, Buffer.concat(server));
  while (client.length) emit(0, Buffer.concat(client.splice(0, 1 + rng.int(2))));
  return recs;
}

test('generated handshakes give the same result however they are split', () => {
  let complete = 0;
  for (let seed = 1; seed <= 1500; seed++) {
    const rng = new Rng(0x6e0 + seed);
    const recs = generated(rng);
    const outcome = (rs: Rec[]): string => {
      const r = run({ hint: 'client', midlife: false }, rs);
      complete += r.handshakes.filter((h) => h.complete).length;
      return JSON.stringify({ h: r.handshakes, s: r.tracker.stats });
    };
    const whole = outcome(recs);
    const total = recs.reduce((n, r) => n + r.payload.length, 0);
    assert.equal(outcome(splitAt(recs, 1 + rng.int(total - 1))), whole, `seed ${seed}`);
  }
  assert.ok(complete > 1000, `only ${complete} complete handshakes generated`);
});

test('random bytes, and random bytes behind a plausible TLS start', () => {
  for (let seed = 1; seed <= 1000; seed++) {
    const rng = new Rng(0xb17e + seed);
    const recs: Rec[] = [];
    const pos: [number, number] = [0, 0];
    for (let n = 1 + rng.int(8); n > 0; n--) {
      const dir: Dir = rng.chance(0.5) ? 0 : 1;
      let payload = rng.bytes(rng.int(400));
      if (pos[dir] === 0 && rng.chance(0.7)) payload = Buffer.concat([Buffer.from([22, 3, rng.pick([1, 3]), rng.int(256), rng.int(256), rng.pick([1, 2])]), payload]);
      recs.push({ dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: payload.length, payload, tsNs: n, dataFlags: DataFlags.Last });
      pos[dir] += payload.length;
    }
    feed(recs, rng, `random bytes, seed ${seed}`);
  }
});

test('raw events outside the reassembler contract', () => {
  for (let seed = 1; seed <= 500; seed++) {
    const rng = new Rng(0xe7e0 + seed);
    const hs: TlsHandshake[] = [];
    const t = new TlsHandshakeTracker('unknown', (h) => hs.push(h));
    const pos = [0, 0];
    const pieces = [CH13(), SH13(), ccs(), appData(60), rng.bytes(50)];
    for (let n = 0; n < 30; n++) {
      const dir: Dir = rng.chance(0.5) ? 0 : 1;
      if (rng.chance(0.2)) pos[dir] += rng.int(200) - 100;
      if (rng.chance(0.1)) {
        t.data(dir, { type: 'gap', pos: pos[dir], len: rng.int(300) - 10, tsNs: n, cause: 'lost' });
      } else {
        const data = rng.pick(pieces);
        t.data(dir, { type: 'data', pos: Math.max(0, pos[dir]), data, tsNs: rng.int(100), syscallStart: rng.chance(0.5) });
        pos[dir] += data.length;
      }
    }
    t.close();
    assert.equal(t.stats.internalErrors, 0, `raw seed ${seed}: ${String((t.lastInternalError as Error | null)?.stack)}`);
    check(hs, `raw seed ${seed}`);
  }
});
