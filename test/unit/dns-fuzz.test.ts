/**
 * Deterministic fuzzing of DNS decoding, framing and pairing: mutated and random messages
 * as datagrams, generated TCP conversations with random splits, losses and mutations, and
 * raw out-of-contract events. Nothing may throw (an exception caught inside the matcher
 * counts as a failure too), held bytes and waiting queries stay under their caps, and
 * exchanges stay self-consistent; clean TCP conversations give the same result however
 * their records are split.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { DataFlags } from '../../schemas/records.js';
import { StreamReassembler } from '../../processors/l7/reassembly.js';
import { DnsMatcher, type Dir, type DnsExchange, type DnsPeer } from '../../processors/dns/matcher.js';
import { decodeDns, MAX_ANSWER_VALUES, MAX_VALUE_CHARS } from '../../processors/dns/wire.js';
import { splitRecord } from '../helpers/splits.js';
import { loadFixtures, run, toSteps, type Rec, type Step } from '../fixtures/dns/fixture.js';
import { Rng } from '../helpers/prng.js';

const MAX_PENDING = 64;
const MAX_BUFFERED = 2 * (2 + 65535);

const NAMES = ['a.example', 'www.example.com', 'x.y.z.example.org', '.', 'MiXeD.Example', 'svc.cluster.local'];
const PEERS: Array<DnsPeer | null> = [null, { addr: '::ffff:10.0.0.1', port: 53 }, { addr: '::ffff:10.0.0.2', port: 40000 }, { addr: '2001:db8::1', port: 53 }];

/** A valid message: a query or a response with a few answers. */
function message(rng: Rng, id = rng.int(8)): Buffer {
  const name = rng.pick(NAMES);
  const response = rng.chance(0.5);
  const answers: dnsPacket.Answer[] = [];
  if (response) {
    for (let k = rng.int(5); k > 0; k--) {
      answers.push(rng.pick<dnsPacket.Answer>([
        { type: 'A', name, data: `10.0.${rng.int(256)}.${rng.int(256)}` },
        { type: 'AAAA', name, data: '2001:db8::5' },
        { type: 'CNAME', name, data: rng.pick(NAMES.filter((n) => n !== '.')) },
        { type: 'TXT', name, data: ['t'.repeat(rng.int(300))] },
        { type: 'MX', name, data: { preference: 1, exchange: 'mx.example' } },
      ]));
    }
  }
  return dnsPacket.encode({
    type: response ? 'response' : 'query', id, flags: rng.int(1 << 15) & 0x07b0,
    questions: rng.chance(0.95) ? [{ type: rng.pick(['A', 'AAAA', 'TXT'] as const), name }] : [], answers,
  });
}

/** One random change: flip bits, plant pointers, cut, extend, or inflate counts. */
function mutate(b: Buffer, rng: Rng): Buffer {
  const out = Buffer.from(b);
  switch (rng.int(6)) {
    case 0:
      for (let k = 1 + rng.int(4); k > 0 && out.length; k--) out[rng.int(out.length)] ^= 1 << rng.int(8);
      return out;
    case 1: { // a compression pointer anywhere, to anywhere
      if (out.length < 2) return out;
      const at = rng.int(out.length - 1);
      out.writeUInt16BE(0xc000 | rng.int(Math.max(1, out.length + 4)), at);
      return out;
    }
    case 2:
      return out.subarray(0, rng.int(out.length + 1));
    case 3:
      return Buffer.concat([out, rng.bytes(rng.int(40))]);
    case 4:
      if (out.length >= 12) out.writeUInt16BE(rng.pick([0, 1, 2, 255, 65535]), rng.pick([4, 6, 8, 10]));
      return out;
    default: { // a label length byte made wrong
      if (out.length > 12) out[12 + rng.int(out.length - 12)] = rng.pick([0x3f, 0x40, 0x80, 0xbf, 0xff, 0x00]);
      return out;
    }
  }
}

function checkExchanges(xs: DnsExchange[], where: string): void {
  for (const x of xs) {
    assert.ok(x.answers.length <= MAX_ANSWER_VALUES && x.answers.every((a) => a.length <= MAX_VALUE_CHARS), `${where}: answer caps`);
    assert.ok(x.answerCount >= x.answers.length, `${where}: answer count`);
    if (x.timedOut) assert.ok(x.rcode === -1 && x.latencyNs === 0 && x.responseTsNs === 0, `${where}: timed out`);
    else assert.ok(x.rcode >= 0 && x.rcode <= 15 && x.latencyNs >= 0 && x.latencyNs === Math.max(0, x.responseTsNs - x.queryTsNs), `${where}: response`);
    assert.ok(x.qname.length <= 4 * 255, `${where}: qname length`);
  }
}

test('decodeDns never throws and keeps its caps on mutated and random bytes', () => {
  for (let seed = 1; seed <= 20000; seed++) {
    const rng = new Rng(seed);
    let b = rng.chance(0.1) ? rng.bytes(rng.int(600)) : message(rng);
    for (let k = rng.int(4); k > 0; k--) b = mutate(b, rng);
    const r = decodeDns(b);
    if (r.ok) {
      assert.ok(r.msg.answers.length <= MAX_ANSWER_VALUES && r.msg.answers.every((a) => a.length <= MAX_VALUE_CHARS), `seed ${seed}`);
      assert.ok(r.msg.answerCount <= r.msg.ancount, `seed ${seed}`);
    }
  }
});

test('UDP: mutated datagrams between many peers, both directions, with expiry', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const rng = new Rng(0xd0d0 + seed);
    const xs: DnsExchange[] = [];
    const m = new DnsMatcher((x) => xs.push(x), { maxPending: MAX_PENDING, queryTimeoutNs: rng.int(5000) });
    for (let n = 0, ts = 0; n < 200; n++, ts += rng.int(1000)) {
      let b = message(rng);
      if (rng.chance(0.2)) b = mutate(b, rng);
      m.datagram(rng.chance(0.5) ? 0 : 1, { payload: b, tsNs: ts, peer: rng.pick(PEERS), posBytes: -1 });
      if (rng.chance(0.05)) m.expire(ts);
      assert.ok(m.pendingCount <= MAX_PENDING, `seed ${seed}: ${m.pendingCount} waiting`);
    }
    m.close();
    assert.equal(m.stats.internalErrors, 0, `seed ${seed}: ${String((m.lastInternalError as Error | null)?.stack)}`);
    assert.equal(m.pendingCount, 0);
    checkExchanges(xs, `udp seed ${seed}`);
  }
});

/** A query and its answer. */
function pair(rng: Rng, id: number): [Buffer, Buffer] {
  const q = { type: rng.pick(['A', 'AAAA', 'TXT'] as const), name: rng.pick(NAMES) };
  return [
    dnsPacket.encode({ type: 'query', id, flags: 0x0100, questions: [q] }),
    dnsPacket.encode({ type: 'response', id, flags: 0x0180, questions: [q], answers: q.type === 'A' ? [{ type: 'A', name: q.name, data: '10.9.8.7' }] : [] }),
  ];
}

/** Prefixed TCP frames of `msgs`. */
function frames(msgs: Buffer[]): Buffer {
  return Buffer.concat(msgs.flatMap((m) => [Buffer.from([m.length >> 8, m.length & 0xff]), m]));
}

/** A clean TCP conversation: pipelined queries, then their answers in any order and grouping. */
function cleanConversation(rng: Rng): Step[] {
  const pairs = Array.from({ length: 1 + rng.int(6) }, (_, i) => pair(rng, i));
  const steps: Step[] = [];
  const pos: [number, number] = [0, 0];
  let ts = 1000;
  const send = (dir: Dir, msgs: Buffer[]): void => {
    const payload = frames(msgs);
    steps.push({ kind: 'record', rec: { dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: payload.length, dataFlags: DataFlags.Last, payload, tsNs: ts } });
    pos[dir] += payload.length;
    ts += 1000;
  };
  const queries = pairs.map((p) => p[0]);
  while (queries.length) send(0, queries.splice(0, 1 + rng.int(3)));
  const answers = pairs.map((p) => p[1]).sort(() => rng.next() - 0.5);
  while (answers.length) send(1, answers.splice(0, 1 + rng.int(3)));
  return steps;
}

/** A TCP conversation of random messages, mutated, mis-framed and lost now and then. */
function conversation(rng: Rng, mutateP: number): Step[] {
  const steps: Step[] = [];
  const pos: [number, number] = [0, 0];
  for (let n = 1 + rng.int(8), ts = 1000; n > 0; n--, ts += 1000) {
    const dir: Dir = rng.chance(0.5) ? 0 : 1;
    const parts: Buffer[] = [];
    for (let k = 1 + rng.int(3); k > 0; k--) {
      let m = message(rng, rng.int(4));
      if (rng.chance(mutateP)) m = mutate(m, rng);
      const p = Buffer.alloc(2);
      p.writeUInt16BE(rng.chance(mutateP / 4) ? rng.int(65536) : m.length);
      parts.push(p, m);
    }
    const payload = rng.chance(mutateP / 4) ? rng.bytes(rng.int(64)) : Buffer.concat(parts);
    const rec: Rec = { dir, posBytes: pos[dir], offsetBytes: 0, lenBytes: payload.length, dataFlags: DataFlags.Last, payload, tsNs: ts };
    pos[dir] += payload.length;
    if (rng.chance(mutateP / 2)) continue; // lost
    steps.push({ kind: 'record', rec });
  }
  return steps;
}

function randomSplits(steps: Step[], rng: Rng): Step[] {
  return steps.flatMap((s) => {
    if (s.kind !== 'record') return [s];
    const n = s.rec.payload.length;
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(n + 1)).sort((a, b) => a - b);
    return splitRecord(s.rec, cuts).map((rec): Step => ({ kind: 'record', rec: rec as Rec }));
  });
}

test('TCP: generated conversations with mutations, losses and random splits', () => {
  for (let seed = 1; seed <= 1500; seed++) {
    const rng = new Rng(0x7c9 + seed);
    const steps = randomSplits(conversation(rng, 0.3), rng);
    const xs: DnsExchange[] = [];
    const m = new DnsMatcher((x) => xs.push(x), { maxPending: MAX_PENDING, midlife: rng.chance(0.2) });
    const ra = [0, 1].map(() => new StreamReassembler({ maxPendingBytes: 4096, maxPendingChunks: 16, maxHoldNs: 1000 }));
    for (const s of steps) {
      if (s.kind !== 'record') continue;
      ra[s.rec.dir].push(s.rec, (ev) => m.data(s.rec.dir, ev));
      assert.ok(m.bufferedBytes <= MAX_BUFFERED && m.pendingCount <= MAX_PENDING, `seed ${seed}: bounds`);
    }
    for (const dir of [0, 1] as const) ra[dir].flush((ev) => m.data(dir, ev));
    m.close();
    assert.equal(m.stats.internalErrors, 0, `seed ${seed}: ${String((m.lastInternalError as Error | null)?.stack)}`);
    checkExchanges(xs, `tcp seed ${seed}`);
  }
});

test('TCP: clean conversations give the same result however their records are split', () => {
  let answered = 0;
  for (let seed = 1; seed <= 800; seed++) {
    const rng = new Rng(0x5e7 + seed);
    const steps = cleanConversation(rng);
    const r = run({}, steps);
    answered += r.exchanges.filter((x) => !x.timedOut).length;
    const whole = JSON.stringify({ x: r.exchanges, s: r.matcher.stats });
    const split = run({}, randomSplits(steps, rng));
    assert.equal(JSON.stringify({ x: split.exchanges, s: split.matcher.stats }), whole, `seed ${seed}`);
  }
  assert.ok(answered > 2000, `only ${answered} answered exchanges generated`);
});

test('mutated fixtures', () => {
  const fixtures = loadFixtures();
  for (let seed = 1; seed <= 1500; seed++) {
    const rng = new Rng(0xf1f + seed);
    const fx = rng.pick(fixtures);
    const steps = toSteps(fx).map((s): Step => {
      if (!rng.chance(0.3)) return s;
      if (s.kind === 'datagram') return { ...s, bytes: mutate(s.bytes, rng) };
      if (s.kind === 'record') return { ...s, rec: { ...s.rec, payload: mutate(s.rec.payload, rng) } };
      return s;
    });
    const r = run(fx, randomSplits(steps, rng));
    assert.equal(r.matcher.stats.internalErrors, 0, `${fx.name} seed ${seed}: ${String((r.matcher.lastInternalError as Error | null)?.stack)}`);
    checkExchanges(r.exchanges, `${fx.name} seed ${seed}`);
  }
});

test('raw events outside the reassembler contract', () => {
  for (let seed = 1; seed <= 500; seed++) {
    const rng = new Rng(0xe7e + seed);
    const m = new DnsMatcher(() => {}, { maxPending: MAX_PENDING });
    const pos = [0, 0];
    for (let n = 0; n < 40; n++) {
      const dir: Dir = rng.chance(0.5) ? 0 : 1;
      if (rng.chance(0.2)) pos[dir] += rng.int(200) - 100;
      if (rng.chance(0.15)) {
        const len = rng.int(300) - 10;
        m.data(dir, { type: 'gap', pos: pos[dir], len, tsNs: n, cause: 'lost' });
        pos[dir] += Math.max(0, len);
      } else {
        const data = rng.chance(0.5) ? rng.bytes(rng.int(100)) : Buffer.concat([Buffer.from([0, 40]), message(rng)]);
        m.data(dir, { type: 'data', pos: pos[dir], data, tsNs: n, syscallStart: rng.chance(0.5) });
        pos[dir] += data.length;
      }
      assert.ok(m.bufferedBytes <= MAX_BUFFERED);
    }
    m.close();
    assert.equal(m.stats.internalErrors, 0, `raw seed ${seed}: ${String((m.lastInternalError as Error | null)?.stack)}`);
  }
});
