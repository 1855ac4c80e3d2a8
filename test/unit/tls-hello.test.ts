/**
 * ClientHello and ServerHello parsing: what is read, GREASE, bounds on every vector, and the
 * names of versions, suites and groups.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cipherSuiteName, groupName, isGrease, MAX_LIST, MAX_SNI_CHARS, parseClientHello, parseServerHello, tlsVersionName,
  type ClientHello, type ServerHello,
} from '../../processors/tls/hello.js';
import {
  clientHelloBody, ext, extAlpn, extGroups, extKeyShares, extKeyShareSelected, extPsk, extSni, extVersionSelected,
  extVersionsOffered, HRR_RANDOM, serverHelloBody,
} from '../fixtures/tls/build.js';

function ch(body: Buffer): ClientHello {
  const r = parseClientHello(body);
  assert.ok(r.ok, r.ok ? '' : r.failure);
  return r.hello;
}

function sh(body: Buffer): ServerHello {
  const r = parseServerHello(body);
  assert.ok(r.ok, r.ok ? '' : r.failure);
  return r.hello;
}

test('a ClientHello with the usual extensions', () => {
  const h = ch(clientHelloBody({
    suites: [0x0a0a, 0x1301, 0x1302, 0xc02f], sessionId: Buffer.alloc(32, 1),
    extensions: [ext(0x1a1a, Buffer.alloc(0)), extSni('WWW.Example.COM'), extAlpn('h2', 'http/1.1'), extVersionsOffered(0x2a2a, 0x0304, 0x0303),
      extGroups(0x3a3a, 0x001d, 0x0017), extKeyShares(0x3a3a, 0x001d), extPsk(), ext(42, Buffer.alloc(0))],
  }));
  assert.deepEqual(h.cipherSuites, [0x1301, 0x1302, 0xc02f]);
  assert.equal(h.sni, 'www.example.com');
  assert.deepEqual(h.alpn, ['h2', 'http/1.1']);
  assert.deepEqual(h.versions, [0x0304, 0x0303]);
  assert.deepEqual(h.groups, [0x001d, 0x0017]);
  assert.deepEqual(h.keyShareGroups, [0x001d]);
  assert.deepEqual(h.extensions, [0x1a1a, 0, 16, 43, 10, 51, 41, 42]);
  assert.equal(h.pskOffered, true);
  assert.equal(h.earlyData, true);
  assert.equal(h.sessionId.length, 32);
});

test('a ClientHello without extensions (SSL 3.0-era clients) and with an empty block', () => {
  const bare = ch(clientHelloBody({ suites: [0x002f] }));
  assert.equal(bare.sni, '');
  assert.deepEqual(bare.extensions, []);
  const empty = ch(clientHelloBody({ suites: [0x002f], extensions: [] }));
  assert.deepEqual(empty.extensions, []);
});

test('every vector is bounds-checked', () => {
  const good = clientHelloBody({ suites: [0x1301], extensions: [extSni('a.example'), extAlpn('h2')] });
  // Every truncation is a failure, never an exception — except the one that ends right
  // before the extensions block: a hello without extensions is legal.
  const beforeExtensions = 2 + 32 + 1 + 2 + 2 + 2;
  for (let n = 0; n < good.length; n++) {
    const r = parseClientHello(good.subarray(0, n));
    assert.equal(r.ok, n === beforeExtensions, `prefix ${n}`);
  }
  const cases: Array<[string, Buffer]> = [
    ['session id over 32', Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([33]), Buffer.alloc(33), Buffer.from([0, 2, 0x13, 1, 1, 0])])],
    ['no cipher suites', Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([0, 0, 0, 1, 0])])],
    ['odd cipher suites', Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([0, 0, 3, 0x13, 1, 0, 1, 0])])],
    ['no compression', Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([0, 0, 2, 0x13, 1, 0])])],
    ['extensions over the end', Buffer.concat([clientHelloBody(), Buffer.from([0x10, 0])])],
    ['extension over its block', clientHelloBody({ extensions: [Buffer.from([0, 0, 0, 9, 0, 1])] })],
    ['sni list over the extension', clientHelloBody({ extensions: [ext(0, Buffer.from([0, 9, 0, 0, 1, 0x61]))] })],
    ['sni name over the list', clientHelloBody({ extensions: [ext(0, Buffer.from([0, 4, 0, 0, 9, 0x61]))] })],
    ['empty alpn protocol', clientHelloBody({ extensions: [ext(16, Buffer.from([0, 1, 0]))] })],
    ['alpn name over the list', clientHelloBody({ extensions: [ext(16, Buffer.from([0, 3, 5, 0x68, 0x32]))] })],
    ['odd versions', clientHelloBody({ extensions: [ext(43, Buffer.from([3, 3, 4, 3]))] })],
    ['key share over the list', clientHelloBody({ extensions: [ext(51, Buffer.from([0, 6, 0, 0x1d, 0, 0x20, 1, 2]))] })],
  ];
  for (const [what, body] of cases) {
    const r = parseClientHello(body);
    assert.equal(r.ok, false, what);
  }
});

test('values from the wire are capped and printable', () => {
  const h = ch(clientHelloBody({
    extensions: [extSni(`${'a'.repeat(300)}\x00\n`), extAlpn(...Array.from({ length: 50 }, (_, i) => `p${i}\x7f`))],
  }));
  assert.equal(h.sni.length, MAX_SNI_CHARS);
  assert.equal(h.alpn.length, MAX_LIST);
  assert.equal(h.alpn[0], 'p0\\x7f');
  assert.equal(ch(clientHelloBody({ extensions: [extSni('x\\y\x01')] })).sni, 'x\\x5cy\\x01');
});

test('ServerHello: TLS 1.2 with ALPN, TLS 1.3 through supported_versions, HelloRetryRequest', () => {
  const h12 = sh(serverHelloBody({ suite: 0xc02f, extensions: [extAlpn('http/1.1'), ext(0xff01, Buffer.from([0]))] }));
  assert.deepEqual([h12.version, h12.cipherSuite, h12.alpn, h12.helloRetryRequest], [0x0303, 0xc02f, 'http/1.1', false]);
  const h13 = sh(serverHelloBody({ suite: 0x1302, extensions: [extVersionSelected(0x0304), extKeyShareSelected(0x0017), extPsk()] }));
  assert.deepEqual([h13.version, h13.legacyVersion, h13.keyShareGroup, h13.pskAccepted, h13.alpn], [0x0304, 0x0303, 0x0017, true, null]);
  const hrr = sh(serverHelloBody({ random: HRR_RANDOM, extensions: [extVersionSelected(0x0304), extKeyShareSelected(0x0017, false)] }));
  assert.equal(hrr.helloRetryRequest, true);
  assert.equal(hrr.keyShareGroup, 0x0017);
  const old = sh(serverHelloBody({ suite: 0x002f }));
  assert.deepEqual([old.version, old.extensions], [0x0303, []]);
  for (let n = 0; n < 38; n++) assert.equal(parseServerHello(serverHelloBody().subarray(0, n)).ok, false);
});

test('names', () => {
  assert.deepEqual([0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x7f1c].map(tlsVersionName), ['SSL 3.0', 'TLS 1.0', 'TLS 1.1', 'TLS 1.2', 'TLS 1.3', '0x7f1c']);
  assert.equal(cipherSuiteName(0xc02f), 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256');
  assert.equal(cipherSuiteName(0x1302), 'TLS_AES_256_GCM_SHA384');
  assert.equal(cipherSuiteName(0xcca8), 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256');
  assert.equal(cipherSuiteName(0xfefe), '0xfefe');
  assert.equal(groupName(0x001d), 'x25519');
  assert.equal(groupName(0x11ec), 'X25519MLKEM768');
  assert.equal(groupName(0x0999), '0x0999');
  assert.ok(isGrease(0x0a0a) && isGrease(0xfafa) && !isGrease(0x0a1a) && !isGrease(0x1301));
});
