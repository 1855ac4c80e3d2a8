/**
 * The Prometheus endpoints: with a password they answer 401 without it or with another,
 * and listen beyond loopback only with one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { ConfigError } from '../../lib/errors.js';
import { metricsAccess, metricsPasswordOfFile, serveMetrics } from '../../lib/metrics-server.js';

const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

test('with a password file: 401 without credentials or with others, 200 with them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'netrig-metrics-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'password');
  writeFileSync(file, 's3cret-metrics\n', { mode: 0o600 });
  const { server, port } = await serveMetrics(new Registry(), metricsAccess({ metricsPasswordFile: file }, 0));
  t.after(() => server.close());
  const url = `http://127.0.0.1:${port}/metrics`;
  assert.equal((await fetch(url)).status, 401);
  assert.equal((await fetch(url, { headers: basic('netrig', 'nope') })).status, 401);
  assert.equal((await fetch(url, { headers: basic('other', 's3cret-metrics') })).status, 401);
  assert.equal((await fetch(`http://127.0.0.1:${port}/`, { headers: basic('netrig', 's3cret-metrics') })).status, 404);
  assert.equal((await fetch(url, { headers: basic('netrig', 's3cret-metrics') })).status, 200);
});

test('beyond loopback only with a password; an unreadable or empty file is a config error', () => {
  assert.throws(() => metricsAccess({ metricsHost: '0.0.0.0' }, 9464), (e: unknown) => e instanceof ConfigError && e.key === 'metrics-host');
  assert.deepEqual(metricsAccess({ metricsHost: '0.0.0.0', metricsPassword: 'x' }, 9464).credentials, { user: 'netrig', password: 'x' });
  assert.equal(metricsAccess({}, 9464).credentials, null, 'loopback without a password: open, as before');
  assert.throws(() => metricsAccess({ metricsPasswordFile: '/nonexistent/netrig-metrics' }, 9464), (e: unknown) => e instanceof ConfigError && e.key === 'metrics-password-file');
  const dir = mkdtempSync(join(tmpdir(), 'netrig-metrics-'));
  try {
    writeFileSync(join(dir, 'empty'), '\n');
    assert.throws(() => metricsAccess({ metricsPasswordFile: join(dir, 'empty') }, 9464), (e: unknown) => e instanceof ConfigError && e.key === 'metrics-password-file');
    // netrig up reads the file the same way: an empty one never leaves its metrics open.
    assert.throws(() => metricsPasswordOfFile(join(dir, 'empty')), (e: unknown) => e instanceof ConfigError && e.key === 'metrics-password-file');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
