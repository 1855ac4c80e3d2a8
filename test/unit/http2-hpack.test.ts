/**
 * HPACK decoding: RFC 7541 Appendix C examples (C.1 integers as size updates, C.2 single
 * representations, C.3–C.6 request and response sequences with their dynamic tables),
 * the Huffman code against Appendix B, and what a capture needs beyond the RFC: unknown
 * dynamic entries marked (never guessed) and tracked through insertions, evictions and
 * size updates, bounded memory, values of unkept names never decoded, hostile input
 * counted instead of thrown.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  HUFFMAN_CODES, HpackDecoder, MAX_TABLE_STORED_BYTES, STATIC_TABLE, huffmanDecode,
  type HeaderField, type HpackDecoderOptions,
} from '../../processors/http2/hpack.js';
import { HpackEncoder, encodeInt, encodeString, huffmanEncode } from '../fixtures/http2/hpack-encoder.js';

const hx = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function decode(d: HpackDecoder, block: Buffer, complete = true): { status: string; fields: HeaderField[] } {
  const fields: HeaderField[] = [];
  const status = d.decode(block, (f) => fields.push(f), complete);
  return { status, fields };
}

/** `name: value` lines; unknown fields as `?62`. */
function lines(fields: HeaderField[]): string[] {
  return fields.map((f) => (f.unknownIndex ? `?${f.unknownIndex}` : `${f.name}: ${f.value ?? '(not kept)'}`));
}

/** The table as `[size] name: value`, newest first, as the RFC prints it. */
function table(d: HpackDecoder): string[] {
  return d.entries().map((e) => `[${e.size}] ${e.name ?? '?'}: ${e.value ?? '?'}`);
}

function known(maxSize?: number, opts: HpackDecoderOptions = {}): HpackDecoder {
  const d = new HpackDecoder(opts);
  d.startKnown(maxSize);
  return d;
}

test('C.1: integers with a 5-bit prefix (as dynamic table size updates)', () => {
  const d = new HpackDecoder();
  assert.equal(decode(d, hx('2a')).status, 'ok'); // C.1.1: 10
  assert.equal(d.maxTableSize, 10);
  assert.equal(decode(d, hx('3f9a0a')).status, 'ok'); // C.1.2: 1337
  assert.equal(d.maxTableSize, 1337);
  assert.deepEqual(encodeInt(1337, 5, 0x20), [0x3f, 0x9a, 0x0a]);
  assert.deepEqual(encodeInt(42, 8, 0), [42]); // C.1.3
});

test('C.2.1: literal header field with indexing', () => {
  const d = known();
  const r = decode(d, hx('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'));
  assert.equal(r.status, 'ok');
  assert.deepEqual(lines(r.fields), ['custom-key: custom-header']);
  assert.deepEqual(table(d), ['[55] custom-key: custom-header']);
  assert.equal(d.tableSize, 55);
});

test('C.2.2: literal header field without indexing', () => {
  const d = known();
  const r = decode(d, hx('040c 2f73 616d 706c 652f 7061 7468'));
  assert.deepEqual(lines(r.fields), [':path: /sample/path']);
  assert.deepEqual(table(d), []);
});

test('C.2.3: literal header field never indexed', () => {
  const d = known();
  const r = decode(d, hx('1008 7061 7373 776f 7264 0673 6563 7265 74'));
  assert.deepEqual(lines(r.fields), ['password: secret']);
  assert.deepEqual(table(d), []);
});

test('C.2.4: indexed header field', () => {
  const d = known();
  assert.deepEqual(lines(decode(d, hx('82')).fields), [':method: GET']);
  assert.deepEqual(table(d), []);
});

const REQUEST_1 = [':method: GET', ':scheme: http', ':path: /', ':authority: www.example.com'];
const REQUEST_2 = [...REQUEST_1, 'cache-control: no-cache'];
const REQUEST_3 = [':method: GET', ':scheme: https', ':path: /index.html', ':authority: www.example.com', 'custom-key: custom-value'];
const TABLE_1 = ['[57] :authority: www.example.com'];
const TABLE_2 = ['[53] cache-control: no-cache', ...TABLE_1];
const TABLE_3 = ['[54] custom-key: custom-value', ...TABLE_2];

function sequence(d: HpackDecoder, steps: Array<[string, string[], string[], number]>): void {
  for (const [block, fields, tbl, size] of steps) {
    const r = decode(d, hx(block));
    assert.equal(r.status, 'ok');
    assert.deepEqual(lines(r.fields), fields);
    assert.deepEqual(table(d), tbl);
    assert.equal(d.tableSize, size);
  }
  assert.equal(d.known, true);
  assert.equal(d.stats.unknownFields, 0);
}

test('C.3: requests without Huffman coding', () => {
  sequence(known(), [
    ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', REQUEST_1, TABLE_1, 57],
    ['8286 84be 5808 6e6f 2d63 6163 6865', REQUEST_2, TABLE_2, 110],
    ['8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65', REQUEST_3, TABLE_3, 164],
  ]);
});

test('C.4: requests with Huffman coding', () => {
  sequence(known(), [
    ['8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', REQUEST_1, TABLE_1, 57],
    ['8286 84be 5886 a8eb 1064 9cbf', REQUEST_2, TABLE_2, 110],
    ['8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', REQUEST_3, TABLE_3, 164],
  ]);
});

const RESPONSE_1 = [':status: 302', 'cache-control: private', 'date: Mon, 21 Oct 2013 20:13:21 GMT', 'location: https://www.example.com'];
const RESPONSE_2 = [':status: 307', ...RESPONSE_1.slice(1)];
const RESPONSE_3 = [
  ':status: 200', 'cache-control: private', 'date: Mon, 21 Oct 2013 20:13:22 GMT', 'location: https://www.example.com',
  'content-encoding: gzip', 'set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1',
];
const RTABLE_1 = ['[63] location: https://www.example.com', '[65] date: Mon, 21 Oct 2013 20:13:21 GMT', '[52] cache-control: private', '[42] :status: 302'];
// (":status", "302") is evicted to make room for (":status", "307").
const RTABLE_2 = ['[42] :status: 307', ...RTABLE_1.slice(0, 3)];
const RTABLE_3 = [
  '[98] set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1', '[52] content-encoding: gzip',
  '[65] date: Mon, 21 Oct 2013 20:13:22 GMT',
];

test('C.5: responses without Huffman coding, evicting at 256 bytes', () => {
  sequence(known(256), [
    [`4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
      3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`, RESPONSE_1, RTABLE_1, 222],
    ['4803 3330 37c1 c0bf', RESPONSE_2, RTABLE_2, 222],
    [`88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
      7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
      6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`, RESPONSE_3, RTABLE_3, 215],
  ]);
});

test('C.6: responses with Huffman coding, evicting at 256 bytes', () => {
  sequence(known(256), [
    [`4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad
      1718 63c7 8f0b 97c8 e9ae 82ae 43d3`, RESPONSE_1, RTABLE_1, 222],
    ['4883 640e ffc1 c0bf', RESPONSE_2, RTABLE_2, 222],
    [`88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
      e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
    RESPONSE_3, RTABLE_3, 215],
  ]);
});

test('the test encoder reproduces the RFC blocks it can express', () => {
  const e = new HpackEncoder();
  const f = (name: string, value: string): { name: string; value: string; huffman: 'off' } => ({ name, value, huffman: 'off' });
  assert.equal(e.encode([f(':method', 'GET'), f(':scheme', 'http'), f(':path', '/'), f(':authority', 'www.example.com')]).toString('hex'),
    hx('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d').toString('hex'));
  const h = new HpackEncoder();
  assert.equal(h.encode([{ name: ':method', value: 'GET' }, { name: ':scheme', value: 'http' }, { name: ':path', value: '/' },
    { name: ':authority', value: 'www.example.com' }]).toString('hex'), hx('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff').toString('hex'));
});

test('Appendix B: the Huffman code is complete and matches the RFC codes', () => {
  assert.equal(HUFFMAN_CODES.length, 257);
  assert.equal(HUFFMAN_CODES.reduce((sum, [, len]) => sum + 2 ** -len, 0), 1);
  const rfc: Array<[number, number, number]> = [
    [0, 0x1ff8, 13], [1, 0x7fffd8, 23], [9, 0xffffea, 24], [10, 0x3ffffffc, 30], [22, 0x3ffffffe, 30],
    [32, 0x14, 6], [38, 0xf8, 8], [48, 0x0, 5], [58, 0x5c, 7], [60, 0x7ffc, 15], [88, 0xfc, 8], [92, 0x7fff0, 19],
    [97, 0x3, 5], [116, 0x9, 5], [122, 0x7b, 7], [127, 0xffffffc, 28], [128, 0xfffe6, 20], [153, 0x1fffdc, 21],
    [199, 0x1ffffec, 25], [203, 0x7ffffde, 27], [220, 0xffffffd, 28], [249, 0xffffffe, 28], [254, 0x7fffff0, 27],
    [255, 0x3ffffee, 26], [256, 0x3fffffff, 30],
  ];
  for (const [sym, code, len] of rfc) assert.deepEqual(HUFFMAN_CODES[sym], [code, len], `symbol ${sym}`);
});

test('Huffman: every byte value round-trips; bad codes are rejected', () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  for (const s of [all, Buffer.from(all).reverse(), Buffer.alloc(0), Buffer.from('a'), Buffer.from('\xff\x00', 'latin1')]) {
    const enc = huffmanEncode(s);
    const out = Buffer.alloc(s.length);
    assert.equal(huffmanDecode(enc, 0, enc.length, out, out.length), s.length);
    assert.deepEqual(out, s);
  }
  // EOS inside the string.
  assert.ok(huffmanDecode(hx('ffffffff'), 0, 4, null, 0) < 0);
  // 'a' (00011) then 11 padding bits: padding longer than 7 bits.
  assert.ok(huffmanDecode(hx('1fff'), 0, 2, null, 0) < 0);
  // 'a' then padding that is not a prefix of EOS.
  assert.ok(huffmanDecode(hx('18'), 0, 1, null, 0) < 0);
  assert.equal(huffmanDecode(hx('1f'), 0, 1, null, 0), 1);
  // Output is cut at the cap; the length still counts every byte.
  const enc = huffmanEncode(Buffer.from('abcdef'));
  const out = Buffer.alloc(3);
  assert.equal(huffmanDecode(enc, 0, enc.length, out, 3), 6);
  assert.equal(out.toString(), 'abc');
});

test('static table: 61 entries, as Appendix A', () => {
  assert.equal(STATIC_TABLE.length, 61);
  assert.deepEqual(STATIC_TABLE[0], [':authority', '']);
  assert.deepEqual(STATIC_TABLE[7], [':status', '200']);
  assert.deepEqual(STATIC_TABLE[60], ['www-authenticate', '']);
});

test('an unknown table: dynamic references are marked, never guessed, and new insertions are known', () => {
  const d = new HpackDecoder();
  assert.equal(d.known, false);
  // 62 and 63 are unknown; a literal with indexing becomes 62, the old 62 becomes 63.
  let r = decode(d, Buffer.from([0xbe, 0xbf, 0x82]));
  assert.equal(r.status, 'ok');
  assert.deepEqual(lines(r.fields), ['?62', '?63', ':method: GET']);
  assert.deepEqual(r.fields[0], { name: null, value: null, unknownIndex: 62 });
  const e = new HpackEncoder();
  r = decode(d, Buffer.concat([e.encode([{ name: 'x-a', value: '1', mode: 'inc' }]), Buffer.from([0xbe, 0xbf])]));
  assert.deepEqual(lines(r.fields), ['x-a: 1', 'x-a: 1', '?63']);
  assert.equal(d.stats.unknownFields, 3);
  assert.equal(d.stats.badIndices, 0);
});

test('a literal whose name is unknown inserts a placeholder: its position is known, its contents are not', () => {
  const d = new HpackDecoder();
  // Literal with incremental indexing, name index 62 (unknown), value "v".
  const block = Buffer.from([0x40 | 62, ...encodeString('v', 'off')]);
  let r = decode(d, block);
  assert.deepEqual(r.fields, [{ name: null, value: null, unknownIndex: 62 }]);
  const e = new HpackEncoder();
  r = decode(d, Buffer.concat([e.encode([{ name: 'content-type', value: 'text/plain', mode: 'inc' }]), Buffer.from([0xbe, 0xbf, 0xc0])]));
  // 62: content-type (just added), 63: the placeholder, 64: unknown.
  assert.deepEqual(lines(r.fields), ['content-type: text/plain', 'content-type: text/plain', '?63', '?64']);
  assert.deepEqual(table(d), ['[54] content-type: text/plain', '[33] ?: ?']);
});

test('lose(): every entry becomes unknown; the table is tracked again from the next insertion', () => {
  const d = known();
  const e = new HpackEncoder();
  decode(d, e.encode([{ name: ':authority', value: 'a.example', mode: 'inc' }, { name: 'user-agent', value: 'ua', mode: 'inc' }]));
  assert.deepEqual(lines(decode(d, Buffer.from([0xbe, 0xbf])).fields), ['user-agent: ua', ':authority: a.example']);
  d.lose();
  assert.equal(d.known, false);
  assert.equal(d.stats.tableResets, 1);
  assert.deepEqual(lines(decode(d, Buffer.from([0xbe, 0xbf])).fields), ['?62', '?63']);
  decode(d, e.encode([{ name: ':path', value: '/new', mode: 'inc' }]));
  assert.deepEqual(lines(decode(d, Buffer.from([0xbe, 0xbf, 0xc0])).fields), [':path: /new', '?63', '?64']);
});

test('a partial block: complete fields before the cut are decoded, then the table is forgotten', () => {
  const d = known();
  const e = new HpackEncoder();
  const block = e.encode([{ name: ':method', value: 'GET' }, { name: ':path', value: '/long/path/here', mode: 'inc', huffman: 'off' }]);
  const r = decode(d, block.subarray(0, 5), false);
  assert.equal(r.status, 'partial');
  assert.deepEqual(lines(r.fields), [':method: GET']);
  assert.equal(d.known, false);
  assert.equal(d.entryCount, 0);
});

test('eviction keeps knowledge consistent: a size update to 0 empties the table, which is then fully known', () => {
  const d = new HpackDecoder();
  const e = new HpackEncoder();
  decode(d, Buffer.concat([Buffer.from([0x20, 0x3f, 0x21]), e.encode([{ name: 'x-a', value: '1', mode: 'inc' }])])); // sizes 0, then 64
  assert.equal(d.known, true);
  assert.equal(d.maxTableSize, 64);
  // 36 + 36 > 64: x-a is evicted by x-b.
  decode(d, new HpackEncoder().encode([{ name: 'x-b', value: '2', mode: 'inc' }]));
  assert.deepEqual(table(d), ['[36] x-b: 2']);
  const r = decode(d, Buffer.from([0xbe, 0xbf]));
  assert.deepEqual(lines(r.fields), ['x-b: 2', '?63']);
  assert.equal(d.stats.badIndices, 1, 'a reference beyond a fully known table is counted');
});

test('an exact maximum learned mid-capture evicts known entries and completes the table', () => {
  const d = new HpackDecoder();
  // Size update to 100: older unknown entries may remain while there is room for them.
  decode(d, Buffer.from([0x3f, 0x45]));
  assert.equal(d.maxTableSize, 100);
  assert.equal(d.known, false);
  const e = new HpackEncoder();
  decode(d, e.encode([{ name: 'x-one', value: 'aaaaaaaaaaaaaaaaaaaa', mode: 'inc' }])); // 57
  assert.equal(d.known, false, 'room for an older entry is left');
  decode(d, e.encode([{ name: 'x-two', value: 'bbbbbbbbbbbbbbbbbbbb', mode: 'inc' }])); // 57: x-one evicted
  assert.equal(d.known, true);
  assert.deepEqual(table(d), ['[57] x-two: bbbbbbbbbbbbbbbbbbbb']);
});

test('SETTINGS_HEADER_TABLE_SIZE bounds the table of an unknown-size decoder', () => {
  const d = new HpackDecoder();
  d.setLimit(60);
  const e = new HpackEncoder();
  decode(d, e.encode([{ name: 'x-one', value: 'aaaa', mode: 'inc' }])); // 41 + 32 > 60: nothing older fits
  assert.equal(d.known, true);
  decode(d, Buffer.from([0x3f, 0xe1, 0x1f])); // size update 4096 > 60
  assert.equal(d.stats.badSizeUpdates, 1);
});

test('a size update after a field is counted and applied', () => {
  const d = known();
  assert.equal(decode(d, Buffer.from([0x82, 0x20])).status, 'ok');
  assert.equal(d.stats.badSizeUpdates, 1);
  assert.equal(d.maxTableSize, 0);
});

test('memory stays bounded whatever the announced table size', () => {
  const d = new HpackDecoder();
  const e = new HpackEncoder();
  e.maxSize = 2 ** 30;
  decode(d, Buffer.from(encodeInt(2 ** 30, 5, 0x20)));
  assert.equal(d.maxTableSize, 2 ** 30);
  for (let i = 0; i < 300; i++) decode(d, e.encode([{ name: `x-${i}`, value: 'v'.repeat(1000), mode: 'inc', huffman: 'off' }]));
  assert.ok(d.storedBytes <= MAX_TABLE_STORED_BYTES, `${d.storedBytes} bytes stored`);
  assert.ok(d.stats.tableOverflows > 0);
  assert.equal(d.known, false);
  // Recent entries still decode; forgotten old ones are unknown.
  assert.deepEqual(lines(decode(d, Buffer.from([0xbe])).fields), [`x-299: ${'v'.repeat(1000)}`]);
  const r = decode(d, Buffer.from(encodeInt(62 + 299, 7, 0x80)));
  assert.deepEqual(r.fields, [{ name: null, value: null, unknownIndex: 62 + 299 }]);
});

test('values of names not kept are never decoded, in fields or in the table', () => {
  const d = known(undefined, { keep: new Set([':path']) });
  const e = new HpackEncoder();
  const r = decode(d, e.encode([
    { name: ':path', value: '/p', mode: 'inc' },
    { name: 'authorization', value: 'Bearer SECRET', mode: 'inc', huffman: 'on' },
    { name: 'cookie', value: 'SECRET=1', mode: 'never', huffman: 'off' },
  ]));
  assert.deepEqual(lines(r.fields), [':path: /p', 'authorization: (not kept)', 'cookie: (not kept)']);
  assert.doesNotMatch(JSON.stringify(d.entries()), /SECRET/);
  // Entry sizes still count the value's decoded length (13 bytes).
  assert.deepEqual(table(d), ['[58] authorization: ?', '[39] :path: /p']);
});

test('values are cut at maxValueBytes; sizes use the full length', () => {
  const d = known(undefined, { maxValueBytes: 8 });
  const e = new HpackEncoder();
  const r = decode(d, e.encode([{ name: 'x-long', value: '0123456789abcdef', mode: 'inc', huffman: 'on' }]));
  assert.deepEqual(lines(r.fields), ['x-long: 01234567']);
  assert.equal(d.tableSize, 6 + 16 + 32);
});

test('hostile blocks are counted, never thrown, and the table is forgotten after them', () => {
  const cases: Array<[string, Buffer, string]> = [
    ['index 0', Buffer.from([0x80]), 'index'],
    ['integer overflow', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), 'integer'],
    ['integer above 2^32', Buffer.from([0xff, 0x80, 0x80, 0x80, 0x80, 0x10]), 'integer'],
    ['unterminated integer', Buffer.from([0xff, 0x80]), 'incomplete'],
    ['string longer than the block', Buffer.from([0x40, 0x7f, 0x10, 0x61]), 'incomplete'],
    ['name without value', Buffer.from([0x40, 0x01, 0x61]), 'incomplete'],
    ['bad Huffman', Buffer.from([0x40, 0x81, 0x61, 0x81, 0xff]), 'huffman'],
  ];
  for (const [what, block, kind] of cases) {
    const d = known();
    decode(d, new HpackEncoder().encode([{ name: 'x', value: 'y', mode: 'inc' }]));
    const r = decode(d, block);
    assert.equal(r.status, kind, what);
    assert.equal(d.stats.hpackErrors[kind as 'index'], 1, what);
    assert.equal(d.known, false, what);
    assert.equal(d.entryCount, 0, what);
  }
});
