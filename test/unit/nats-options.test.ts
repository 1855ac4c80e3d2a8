/**
 * The NATS connect options every command builds (lib/nats.ts natsConnectOptions) and the
 * configuration the owned nats-server runs from (lib/nats-config.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../lib/errors.js';
import { renderNatsConfig } from '../../lib/nats-config.js';
import { natsConnectOptions } from '../../lib/nats.js';

test('a user and password: sent as given, with inboxes under the user\'s own prefix', () => {
  const o = natsConnectOptions({ nats: 'nats://a:1, nats://b:2', natsUser: 'edge', natsPassword: 'pw', natsTlsCa: '/ca.pem' }, 'n');
  assert.deepEqual(o.servers, ['nats://a:1', 'nats://b:2']);
  assert.equal(o.user, 'edge');
  assert.equal(o.pass, 'pw');
  assert.equal(o.inboxPrefix, '_INBOX_edge');
  assert.deepEqual(o.tls, { caFile: '/ca.pem' });
});

test('a password file: read, its trailing newline dropped; with a password too, or missing, a configuration error naming the flag', () => {
  const dir = mkdtempSync(join(tmpdir(), 'netrig-nats-pw-'));
  try {
    writeFileSync(join(dir, 'edge.password'), 's3cret\n', { mode: 0o600 });
    assert.equal(natsConnectOptions({ natsUser: 'edge', natsPasswordFile: join(dir, 'edge.password') }, 'n').pass, 's3cret');
    assert.throws(() => natsConnectOptions({ natsUser: 'edge', natsPassword: 'from-env', natsPasswordFile: join(dir, 'edge.password') }, 'n'),
      (err: Error) => err instanceof ConfigError && err.key === 'nats-password-file', 'a password and a password file: refused, neither wins silently');
    assert.throws(() => natsConnectOptions({ natsUser: 'edge', natsPasswordFile: join(dir, 'absent') }, 'n'), (err: Error) => err instanceof ConfigError && err.key === 'nats-password-file');
    assert.throws(() => natsConnectOptions({ natsPasswordFile: join(dir, 'edge.password') }, 'n'), (err: Error) => err instanceof ConfigError && err.key === 'nats-password');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no credentials: none sent, default inboxes, no TLS options', () => {
  const o = natsConnectOptions({}, 'n');
  assert.deepEqual(o.servers, ['nats://127.0.0.1:4222']);
  assert.equal(o.user, undefined);
  assert.equal(o.authenticator, undefined);
  assert.equal(o.inboxPrefix, undefined);
  assert.equal(o.tls, undefined);
});

test('contradictory or incomplete credentials are configuration errors naming the flag', () => {
  const key = (k: string) => (err: Error) => err instanceof ConfigError && err.key === k;
  assert.throws(() => natsConnectOptions({ natsCreds: '/x.creds', natsUser: 'edge' }, 'n'), key('nats-creds'));
  assert.throws(() => natsConnectOptions({ natsPassword: 'pw' }, 'n'), key('nats-password'));
  assert.throws(() => natsConnectOptions({ natsCreds: '/nonexistent/netrig.creds' }, 'n'), (err: Error) => key('nats-creds')(err) && /ENOENT/.test(err.message));
});

test('the server configuration quotes every string: `$JS` subjects stay literal, passwords cannot break out', () => {
  const text = renderNatsConfig({
    serverName: 'netrig', host: '127.0.0.1', port: -1, storeDir: '/d/nats', encryptionKey: 'k',
    users: [
      { user: 'edge', password: 'p"w\nx', publish: ['$JS.API.INFO', 'netrig.raw.>'], subscribe: ['_INBOX_edge.>'] },
      { user: 'admin', password: 'a' },
    ],
    tls: { cert: '/c.pem', key: '/k.pem' },
  });
  assert.match(text, /^ {2}cipher: chachapoly$/m);
  assert.ok(text.includes('{ user: "edge", password: "p\\"w\\nx", permissions: { publish: { allow: ["$JS.API.INFO", "netrig.raw.>"] }, subscribe: { allow: ["_INBOX_edge.>"] } } }'), text);
  assert.ok(text.includes('{ user: "admin", password: "a" }'), 'admin: no permissions block, every subject');
  assert.match(text, /^tls \{\n {2}cert_file: "\/c\.pem"\n {2}key_file: "\/k\.pem"/m);
});
