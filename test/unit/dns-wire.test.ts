/**
 * decodeDns: agreement with dns-packet on well-formed messages, the limits on labels, names,
 * pointers and counts, answer values, and failure kinds for broken bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import {
  decodeDns, lowerName, MAX_ANSWER_VALUES, MAX_VALUE_CHARS, typeName, type DnsDecodeResult, type DnsMessage,
} from '../../processors/dns/wire.js';
import { encodeMsg, hexBytes } from '../fixtures/dns/fixture.js';

function ok(r: DnsDecodeResult): DnsMessage {
  assert.ok(r.ok, `expected a message, got ${r.ok ? '' : r.failure}`);
  return r.msg;
}

function failure(r: DnsDecodeResult): string {
  assert.ok(!r.ok, 'expected a failure');
  return r.failure;
}

/** Header (id 1, response, qd/an as given) followed by `body`. */
function msg(qd: number, an: number, body: Buffer | string, flags = 0x8180): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(1, 0);
  h.writeUInt16BE(flags, 2);
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  return Buffer.concat([h, typeof body === 'string' ? hexBytes([body]) : body]);
}

/** A name in wire form from its labels. */
function wireName(labels: string[]): Buffer {
  return Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

test('header fields and flags', () => {
  const m = ok(decodeDns(encodeMsg({
    type: 'response', id: 0xbeef, flags: ['aa', 'tc', 'rd', 'ra', 'ad', 'cd'], rcode: 'SERVFAIL', opcode: 'NOTIFY',
    questions: [{ type: 'SOA', name: 'example.com' }],
  })));
  assert.equal(m.id, 0xbeef);
  assert.equal(m.qr, true);
  assert.equal(m.opcode, 4);
  assert.equal(m.rcode, 2);
  assert.deepEqual(m.flags, { aa: true, tc: true, rd: true, ra: true, ad: true, cd: true });
  assert.equal(m.qname, 'example.com');
  assert.equal(m.qtype, 6);
  assert.equal(m.qtypeName, 'SOA');
  assert.equal(m.qclass, 1);
  const q = ok(decodeDns(encodeMsg({ type: 'query', id: 1, questions: [{ type: 'A', name: 'a' }] })));
  assert.equal(q.qr, false);
  assert.deepEqual(q.flags, { aa: false, tc: false, rd: false, ra: false, ad: false, cd: false });
});

test('agrees with dns-packet on generated messages', () => {
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const label = (): string => Array.from({ length: 1 + rnd(12) }, () => 'abcdefghijklmnopqrstuvwxyz0123456789-'[rnd(37)]).join('');
  const name = (): string => Array.from({ length: 1 + rnd(4) }, label).join('.');
  for (let i = 0; i < 500; i++) {
    const qname = name();
    const answers: dnsPacket.Answer[] = [];
    for (let k = rnd(6); k > 0; k--) {
      switch (rnd(6)) {
        case 0: answers.push({ type: 'A', name: qname, data: `${rnd(256)}.${rnd(256)}.${rnd(256)}.${rnd(256)}` }); break;
        case 1: answers.push({ type: 'AAAA', name: qname, data: `2001:db8::${rnd(65536).toString(16)}` }); break;
        case 2: answers.push({ type: 'CNAME', name: qname, data: name() }); break;
        case 3: answers.push({ type: 'MX', name: qname, data: { preference: rnd(100), exchange: name() } }); break;
        case 4: answers.push({ type: 'NS', name: qname, data: name() }); break;
        default: answers.push({ type: 'TXT', name: qname, data: [label(), label()] }); break;
      }
    }
    const bytes = dnsPacket.encode({ type: rnd(2) ? 'response' : 'query', id: rnd(65536), flags: rnd(1 << 15) & 0x87b0, questions: [{ type: 'A', name: qname }], answers });
    const theirs = dnsPacket.decode(bytes);
    const ours = ok(decodeDns(bytes));
    assert.equal(ours.id, theirs.id);
    assert.equal(ours.qr, theirs.type === 'response');
    assert.equal(ours.flags.rd, theirs.flag_rd);
    assert.equal(ours.flags.tc, theirs.flag_tc);
    assert.equal(ours.qname, theirs.questions![0].name);
    assert.equal(ours.qtypeName, theirs.questions![0].type);
    assert.equal(ours.answerCount, theirs.answers!.length);
    const values = theirs.answers!.map((a) => {
      const d = (a as { data: unknown }).data;
      if (a.type === 'MX') return `${(d as { preference: number }).preference} ${(d as { exchange: string }).exchange}`;
      if (a.type === 'TXT') return (d as Buffer[]).map((b) => b.toString()).join('');
      return String(d);
    });
    assert.deepEqual(ours.answers, values);
    assert.equal(ours.answerError, null);
  }
});

test('a response without a question', () => {
  const m = ok(decodeDns(msg(0, 0, '', 0x8181)));
  assert.equal(m.hasQuestion, false);
  assert.equal(m.qname, '');
  assert.equal(m.rcode, 1);
});

test('labels: 63 bytes fit, the 0x40 and 0x80 label types are rejected', () => {
  const l63 = 'x'.repeat(63);
  assert.equal(ok(decodeDns(msg(1, 0, Buffer.concat([wireName([l63, 'com']), hexBytes(['00 01 00 01'])])))).qname, `${l63}.com`);
  for (const first of [0x40, 0x7f, 0x80, 0xbf]) {
    const body = Buffer.concat([Buffer.from([first]), Buffer.alloc(first & 0x3f, 0x61), hexBytes(['00 00 01 00 01'])]);
    assert.equal(failure(decodeDns(msg(1, 0, body))), 'bad_label', `label byte ${first.toString(16)}`);
  }
});

test('names: 255 bytes on the wire fit, 256 do not, also when pointers build them', () => {
  // 3 × 63-byte labels (192) + 61-byte label (62) + root (1) = 255.
  const max = [63, 63, 63, 61].map((n) => 'n'.repeat(n));
  assert.equal(ok(decodeDns(msg(1, 0, Buffer.concat([wireName(max), hexBytes(['00 01 00 01'])])))).qname.length, 253);
  const over = [63, 63, 63, 62].map((n) => 'n'.repeat(n));
  assert.equal(failure(decodeDns(msg(1, 0, Buffer.concat([wireName(over), hexBytes(['00 01 00 01'])])))), 'name_too_long');
  // The answer's owner: a 62-byte label, then a pointer to the 4-label question name (255 + 63).
  const q = Buffer.concat([wireName(max), hexBytes(['00 01 00 01'])]);
  const rr = Buffer.concat([Buffer.from([62]), Buffer.alloc(62, 0x61), hexBytes(['c0 0c 00 01 00 01 00 00 00 00 00 04 01 02 03 04'])]);
  assert.equal(ok(decodeDns(msg(1, 1, Buffer.concat([q, rr])))).answerError, 'name_too_long');
});

test('pointers: back and forward, out of range, loops of any shape, chain length', () => {
  // Forward pointer: the question points at a name stored after it (legal, if unusual).
  const fwd = ok(decodeDns(msg(1, 0, 'c0 12 00 01 00 01 03 66 77 64 00')));
  assert.equal(fwd.qname, 'fwd');
  assert.equal(failure(decodeDns(msg(1, 0, 'c0 20 00 01 00 01'))), 'bad_pointer');
  assert.equal(failure(decodeDns(msg(1, 0, 'c0 0c 00 01 00 01'))), 'pointer_loop');
  // 12: pointer -> 14; 14: label "a", pointer -> 12: a.a.a... revisits 12 (or outgrows 255 bytes first).
  assert.equal(failure(decodeDns(msg(1, 0, 'c0 0e 01 61 c0 0c'))), 'pointer_loop');
  // A chain of distinct pointers, each to the one before; a name uses at most 127 pointers.
  // @12: question, a pointer to the chain's last pointer; @18: root; @19...: the chain.
  const explicit = (n: number): Buffer => {
    const root = 18;
    const first = 19;
    const last = first + 2 * (n - 1);
    const parts: number[] = [0xc0 | (last >> 8), last & 0xff, 0, 1, 0, 1, 0];
    for (let k = 0; k < n; k++) {
      const target = k === 0 ? root : first + 2 * (k - 1);
      parts.push(0xc0 | (target >> 8), target & 0xff);
    }
    return msg(1, 0, Buffer.from(parts));
  };
  assert.equal(ok(decodeDns(explicit(126))).qname, '.');
  assert.equal(failure(decodeDns(explicit(127))), 'pointer_loop');
});

test('counts are bounded by the bytes present', () => {
  const q = Buffer.concat([wireName(['big']), hexBytes(['00 01 00 01'])]);
  const rr = hexBytes(['c0 0c 00 01 00 01 00 00 00 3c 00 04 0a 00 00 01']);
  const t0 = process.hrtime.bigint();
  const m = ok(decodeDns(msg(1, 65535, Buffer.concat([q, rr]))));
  assert.ok(process.hrtime.bigint() - t0 < 50_000_000n);
  assert.equal(m.answerCount, 1);
  assert.deepEqual(m.answers, ['10.0.0.1']);
  assert.equal(m.answerError, 'truncated');
  // qdcount 65535 with one question: the question is read, the rest is missing.
  const many = ok(decodeDns(msg(65535, 0, q)));
  assert.equal(many.qname, 'big');
  assert.equal(many.answerError, 'truncated');
});

test('every prefix of a valid message decodes or fails cleanly', () => {
  const full = encodeMsg({
    type: 'response', id: 3, questions: [{ type: 'A', name: 'www.example.com' }],
    answers: [{ type: 'CNAME', name: 'www.example.com', data: 'x.example.net' }, { type: 'A', name: 'x.example.net', data: '192.0.2.1' }],
  });
  for (let n = 0; n <= full.length; n++) {
    const r = decodeDns(full.subarray(0, n));
    if (n < 12) assert.equal(failure(r), 'short_header');
    else if (n < 12 + 17 + 4) assert.equal(failure(r), 'truncated');
    else if (n < full.length) assert.equal(ok(r).answerError, 'truncated', `prefix ${n}`);
    else assert.equal(ok(r).answerError, null);
  }
});

test('record data that does not fit its type', () => {
  const q = Buffer.concat([wireName(['r']), hexBytes(['00 01 00 01'])]);
  const a5 = ok(decodeDns(msg(1, 2, Buffer.concat([q, hexBytes(['c0 0c 00 01 00 01 00 00 00 3c 00 05 01 02 03 04 05', 'c0 0c 00 01 00 01 00 00 00 3c 00 04 01 02 03 04'])]))));
  assert.equal(a5.answerError, 'bad_rdata');
  assert.equal(a5.answerCount, 0);
  // A CNAME whose name runs past rdlength (2 bytes of a 4-byte name).
  const cn = ok(decodeDns(msg(1, 1, Buffer.concat([q, hexBytes(['c0 0c 00 05 00 01 00 00 00 3c 00 02 02 61 62 00 00'])]))));
  assert.equal(cn.answerError, 'bad_rdata');
  // Unknown types are counted but have no value.
  const unk = ok(decodeDns(msg(1, 1, Buffer.concat([q, hexBytes(['c0 0c ff 00 00 01 00 00 00 3c 00 03 01 02 03'])]))));
  assert.equal(unk.answerCount, 1);
  assert.deepEqual(unk.answers, []);
});

test('presentation form of odd labels and text, and caps', () => {
  const q = Buffer.concat([Buffer.from([5]), Buffer.from('a.b\\c', 'latin1'), Buffer.from([3, 0x20, 0x00, 0xff]), Buffer.from([0]), hexBytes(['00 01 00 01'])]);
  assert.equal(ok(decodeDns(msg(1, 0, q))).qname, 'a\\.b\\\\c.\\032\\000\\255');
  const long = 'y'.repeat(255);
  const txt = ok(decodeDns(encodeMsg({ type: 'response', questions: [{ type: 'TXT', name: 't' }], answers: [{ type: 'TXT', name: 't', data: [long, long] }] })));
  assert.equal(txt.answers[0].length, MAX_VALUE_CHARS);
  const many = ok(decodeDns(encodeMsg({
    type: 'response', questions: [{ type: 'A', name: 'm' }],
    answers: Array.from({ length: 40 }, (_, i) => ({ type: 'A' as const, name: 'm', data: `10.0.0.${i}` })),
  })));
  assert.equal(many.answers.length, MAX_ANSWER_VALUES);
  assert.equal(many.answerCount, 40);
});

test('type names and lowercasing', () => {
  assert.equal(typeName(1), 'A');
  assert.equal(typeName(65), 'HTTPS');
  assert.equal(typeName(64), 'SVCB');
  assert.equal(typeName(65534), 'TYPE65534');
  assert.equal(lowerName('WwW.ExAmPlE.CoM\\065'), 'www.example.com\\065');
});
