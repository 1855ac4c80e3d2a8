/**
 * `netrig nats` and `netrig store`, the parts of `netrig up` that deployments run in
 * separate processes or containers (deploy/compose/). A hub and a region started by
 * `netrig nats`: the region's JetStream domain answers through the hub once its leaf node
 * has joined with the hub's generated leaf password, and a region with a wrong one never
 * joins; a role's password given from a file is the one the server takes; no role connects
 * without its password, nor does anything its role is not granted; a region without the
 * leaf password is refused at start. `netrig store`: the writer takes
 * the password from --writer-password-file, creates netrig's tables (its migrations) and
 * inserts; the reader sees the row; neither works without its password.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@clickhouse/client';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { runCli, spawnCli, type CliChild } from '../helpers/cli.js';
import { freePort, waitForDomain } from '../helpers/nats-server.js';
import { WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { inboxPrefix, isPermissionDenied } from '../../lib/nats.js';
import { migrate } from '../../schemas/migrate.js';

const password = (dir: string, role: string) => readFileSync(join(dir, 'nats-auth', `${role}.password`), 'utf8').trim();

describe('netrig nats: a hub and a region joined as a leaf node', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'netrig-nats-cmd-'));
  const hubDir = join(tmp, 'hub');
  const regionDir = join(tmp, 'region');
  let hub: CliChild;
  let region: CliChild;
  let hubPort = 0;
  let regionPort = 0;
  let nc: NatsConnection | null = null;
  let leafPort = 0;

  before(async () => {
    [hubPort, regionPort] = [await freePort(), await freePort()];
    leafPort = await freePort();
    hub = spawnCli(['nats', '--data-dir', hubDir, '--nats-port', String(hubPort), '--domain', 'hub', '--leafnode-port', String(leafPort)]);
    await hub.waitLog('the hub ready', (l) => l.msg === 'nats-server started', 30_000);
    writeFileSync(join(tmp, 'edge.password'), 'given-edge-pw\n', { mode: 0o600 });
    region = spawnCli(['nats', '--data-dir', regionDir, '--nats-port', String(regionPort), '--domain', 'dom-eu', '--user-password-file', `edge=${join(tmp, 'edge.password')}`,
      '--leaf-remote', `nats-leaf://127.0.0.1:${leafPort}`, '--leaf-password-file', join(hubDir, 'nats-auth', 'leaf.password')]);
    await region.waitLog('the region ready', (l) => l.msg === 'nats-server started', 30_000);
  });

  after(() => cleanupAll(() => nc?.close(), () => region?.kill(), () => hub?.kill(), () => rmSync(tmp, { recursive: true, force: true })));

  test("the region's JetStream domain answers through the hub, to the hub's admin", async () => {
    nc = await connect({ servers: `nats://127.0.0.1:${hubPort}`, user: 'admin', pass: password(hubDir, 'admin'), inboxPrefix: inboxPrefix('admin') });
    const info = await waitForDomain(nc, 'dom-eu', () => `${region.tail()}\n${hub.tail()}`, 30_000);
    assert.equal(info.domain, 'dom-eu');
  });

  test('the given edge password is the server\'s; no role connects without its password; the edge may not use the admin API', async () => {
    assert.equal(password(regionDir, 'edge'), 'given-edge-pw');
    await assert.rejects(connect({ servers: `nats://127.0.0.1:${regionPort}`, reconnect: false }), /Authorization/i);
    await assert.rejects(connect({ servers: `nats://127.0.0.1:${regionPort}`, user: 'edge', pass: 'wrong', reconnect: false }), /Authorization/i);
    const edge = await connect({ servers: `nats://127.0.0.1:${regionPort}`, user: 'edge', pass: 'given-edge-pw', inboxPrefix: inboxPrefix('edge') });
    try {
      // The server answers the request's publish with a permissions violation (no timeout).
      await assert.rejects(edge.request('$JS.API.STREAM.DELETE.NETRIG_RAW', '', { timeout: 5000 }), (err: Error) => isPermissionDenied(err));
    } finally {
      await edge.close();
    }
  });

  test('a region with a wrong leaf password never joins the hub', async () => {
    writeFileSync(join(tmp, 'wrong-leaf.password'), 'not-the-hub-password\n', { mode: 0o600 });
    const stray = spawnCli(['nats', '--data-dir', join(tmp, 'stray'), '--nats-port', String(await freePort()), '--domain', 'dom-stray',
      '--leaf-remote', `nats-leaf://127.0.0.1:${leafPort}`, '--leaf-password-file', join(tmp, 'wrong-leaf.password')]);
    try {
      await stray.waitLog('the stray region ready', (l) => l.msg === 'nats-server started', 30_000);
      // Its leaf node retries every second; ten seconds of refusals.
      const joined = await pollUntil(async () => {
        try {
          await nc!.request('$JS.dom-stray.API.INFO', '', { timeout: 500 });
          return true;
        } catch {
          return false;
        }
      }, 10_000, 500);
      assert.equal(joined, false, 'the stray region answered through the hub');
    } finally {
      await stray.kill();
    }
  });

  test('a region without the hub\'s leaf password, or both a hub and a region, is refused', async () => {
    const r = await runCli(['nats', '--data-dir', join(tmp, 'bad'), '--nats-port', '0', '--leaf-remote', 'nats-leaf://127.0.0.1:1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /leaf-password-file/);
    const both = await runCli(['nats', '--data-dir', join(tmp, 'bad'), '--nats-port', '0', '--leafnode-port', '7422', '--leaf-remote', 'nats-leaf://127.0.0.1:1', '--leaf-password-file', '/dev/null']);
    assert.notEqual(both.code, 0);
    assert.match(both.stderr, /a hub \(--leafnode-port\) or joins one/);
  });
});

describe('netrig store: the embedded engine served to processors of this host', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'netrig-store-cmd-'));
  const dataDir = join(tmp, 'store');
  let store: CliChild;
  let url = '';

  before(async () => {
    writeFileSync(join(tmp, 'writer.password'), 'w-secret-1\n', { mode: 0o600 });
    store = spawnCli(['store', '--data-dir', dataDir, '--http-port', '0', '--writer-password-file', join(tmp, 'writer.password')]);
    url = String((await store.waitLog('the endpoint', (l) => typeof l.url === 'string', 60_000)).url);
  });

  after(() => cleanupAll(() => store?.kill(), () => rmSync(tmp, { recursive: true, force: true })));

  test('the writer (given password) migrates and inserts, the reader (generated password) reads; without them, refused', async () => {
    const writer = createClient({ url, username: WRITER_USER, password: 'w-secret-1', database: 'netrig' });
    const reader = createClient({ url, username: 'default', password: readFileSync(join(dataDir, 'endpoint', 'reader.password'), 'utf8').trim(), database: 'netrig' });
    const stranger = createClient({ url, username: WRITER_USER, password: 'guess', database: 'netrig' });
    try {
      await migrate(writer, { database: 'netrig', ttlDays: 30 });
      await writer.insert({
        table: 'netrig.capture_losses', format: 'JSONEachRow',
        values: [{ ts: '2026-12-07 00:00:00', region: 'r', node: 'n', cause: 'test', records: 7 }],
        clickhouse_settings: { insert_deduplication_token: 'store-cmd-1' },
      });
      const rows = await (await reader.query({ query: "SELECT sum(records) AS n FROM netrig.capture_losses WHERE cause = 'test'", format: 'JSONEachRow' })).json<{ n: string }>();
      assert.equal(Number(rows[0].n), 7);
      // Recognised by the codes a ClickHouse server answers with: 516 AUTHENTICATION_FAILED, 164 READONLY.
      await assert.rejects(stranger.query({ query: 'SELECT 1' }), (e: Error & { code?: string }) => e.code === '516');
      await assert.rejects(reader.command({ query: 'DROP TABLE netrig.capture_losses' }), (e: Error & { code?: string }) => e.code === '164');
    } finally {
      await Promise.all([writer.close(), reader.close(), stranger.close()]);
    }
  });
});
