/**
 * The nats-server `netrig up` owns (lib/nats-server.ts with the roles of cli/nats-roles.ts):
 * a connection without credentials is refused; the edge role runs a whole edge (stream,
 * publishes, capture control watch, heartbeats) but cannot read the raw stream, delete it or
 * change capture settings; the processor role runs a whole processor (consumers, leases,
 * dead letters, heartbeats) but cannot delete streams or publish raw envelopes; admin can do
 * all of that. The JetStream store holds no plaintext of what is published (a store written
 * before encryption is encrypted when loaded), and after a restart the same passwords and key
 * read it back. With TLS, a client that trusts the CA connects and one that does not is
 * refused.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { natsRoles } from '../../cli/nats-roles.js';
import { CaptureControl, CONTROL_BUCKET } from '../../edge/control.js';
import { edgeConfig } from '../../edge/config.js';
import { Edge } from '../../edge/edge.js';
import { FileSource } from '../../edge/file-source.js';
import type { CaptureSettings } from '../../edge/libbpf-source.js';
import { NatsAuthError, NatsTlsError } from '../../lib/errors.js';
import { Heartbeat, readProcessors, readStatus, type EdgeStatus } from '../../lib/heartbeat.js';
import { connectNats, isPermissionDenied, type NatsClientInput } from '../../lib/nats.js';
import { startOwnedNatsServer, type OwnedNatsServer } from '../../lib/nats-server.js';
import { runProcessor } from '../../processors/index.js';
import { Role } from '../../schemas/records.js';
import { onExit, uniqueToken } from '../helpers/cleanup.js';
import { runCli, splitStderr } from '../helpers/cli.js';
import { testLogger } from '../helpers/edge-run.js';
import { startNatsServer } from '../helpers/nats-server.js';
import { blob, connClose } from '../helpers/records.js';
import { freshClickHouse, removeClickHouseData, rows, waitFor } from '../helpers/processor-run.js';

const STREAM = 'NETRIG_RAW';
const PREFIX = 'netrig.raw';
const SHARDS = 4;
const log = testLogger('nats-security');

/** An owned nats-server on a free port with a temporary data dir; undo() stops it and removes the dir. */
async function ownedServer(o: { tls?: boolean } = {}): Promise<{ server: OwnedNatsServer; dataDir: string; undo(): Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), `netrig-natsauth-${process.pid}-`));
  const unregister = onExit(`nats data ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
  let server: OwnedNatsServer | undefined;
  const undo = async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    unregister();
  };
  try {
    server = await startOwnedNatsServer({ dataDir, port: 0, tls: o.tls, roles: natsRoles({ stream: STREAM, subjectPrefix: PREFIX }), log });
  } catch (err) {
    await undo();
    throw err;
  }
  return { server, dataDir, undo };
}

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** Whether `err` is NATS refusing the credential a subject. */
const denied = (err: unknown) => isPermissionDenied(err);

/** Connections opened by a test, closed after it. */
const open: NatsConnection[] = [];
async function as(input: NatsClientInput, name: string): Promise<NatsConnection> {
  const nc = await connectNats(input, `${name}-${process.pid}`, log);
  open.push(nc);
  return nc;
}
async function closeAll(): Promise<void> {
  await Promise.allSettled(open.splice(0).map((nc) => nc.close()));
}

describe('roles on one server', () => {
  let s: Awaited<ReturnType<typeof ownedServer>>;
  let adminJsm: JetStreamManager;
  const node = uniqueToken('n');
  /** The edge's connection-close records: one connection per shard. */
  const closes = Array.from({ length: SHARDS }, (_, i) => connClose({ tsNs: 2e9 + i, connId: 100 + i, tgid: 1 }, { saddr: '10.77.8.1', daddr: '10.77.8.2', sport: 41000 + i, dport: 80 }, { role: Role.Client, comm: 'x', openTsNs: 1e9, txBytes: i, rxBytes: i }));

  before(async () => {
    s = await ownedServer();
    adminJsm = await jetstreamManager(await as(s.server.client('admin'), 'admin'));
  });
  after(async () => {
    await closeAll();
    await s?.undo();
    removeClickHouseData();
  });

  test('the secrets are 0600 files in a 0700 directory, and so is the configuration', () => {
    const auth = join(s.dataDir, 'nats-auth');
    assert.equal(statSync(auth).mode & 0o777, 0o700);
    for (const f of ['edge.password', 'processor.password', 'admin.password', 'jetstream.key']) assert.equal(statSync(join(auth, f)).mode & 0o777, 0o600, f);
    assert.equal(statSync(join(s.dataDir, 'nats.conf')).mode & 0o777, 0o600, 'nats.conf');
  });

  test('a connection without credentials, or with a wrong password, is refused with a clear error', async () => {
    await assert.rejects(connectNats({ nats: s.server.url }, 'anonymous', log), (err: Error) => err instanceof NatsAuthError && /requires credentials/.test(err.message));
    await assert.rejects(connectNats({ ...s.server.client('edge'), natsPassword: 'wrong' }, 'wrong', log), (err: Error) => err instanceof NatsAuthError && /refused user edge/.test(err.message));
  });

  test('the edge role runs an edge: stream, envelopes, capture control and heartbeats', async () => {
    const nc = await as(s.server.client('edge'), 'edge');
    const cfg = edgeConfig({ node, shards: SHARDS, stream: STREAM, subjectPrefix: PREFIX });
    const edge = await Edge.start(new FileSource(blob(closes)), nc, { ...cfg.edge, bootId: 'b'.repeat(32) }, log);
    const applied: CaptureSettings[] = [];
    const control = await CaptureControl.start(nc, { base: {}, region: 'default', node, self: cfg.source.settings.exclude, log, apply: (c) => applied.push(c), replicas: 1 });
    const id = uniqueToken('edge');
    const hb = await Heartbeat.start<EdgeStatus>(nc, 'edge', async () => ({ region: 'default', node, run: edge.runId, records_per_s: 0, capture: edge.capture }), log, { id });
    try {
      await edge.whenSourceDone();
      const info = await adminJsm.streams.info(STREAM);
      assert.ok(info.state.messages >= 1, 'the envelopes are in the raw stream');
      // The admin changes the capture settings; the edge's watch sees it.
      const kv = await new Kvm(await as(s.server.client('admin'), 'admin-kv')).open(CONTROL_BUCKET);
      await kv.put(`default.${node}`, JSON.stringify({ sampleRate: 0.5 }));
      await waitFor('the edge to apply the override', () => applied.some((a) => a.samplePerMillion === 500_000), 10_000);
      assert.ok((await readStatus(await as(s.server.client('admin'), 'admin-status'))).some((e) => e.kind === 'edge' && e.id === id), 'its heartbeat is in the status bucket');
      await kv.delete(`default.${node}`);
    } finally {
      control.stop();
      await hb.stop();
      await edge.stop();
    }
  });

  test('the edge role publishes raw envelopes but cannot read the raw stream, delete it, or change capture settings', async () => {
    const nc = await as(s.server.client('edge'), 'edge-denied');
    const ack = await jetstream(nc).publish(`${PREFIX}.x.y.z`, 'from an edge');
    assert.equal(ack.stream, STREAM, 'netrig.raw.x.y.z lands in the raw stream');
    const jsm = await jetstreamManager(nc);
    await assert.rejects(jsm.consumers.add(STREAM, { durable_name: uniqueToken('peek') }), denied, 'no consumer on the raw stream');
    await assert.rejects(jsm.streams.getMessage(STREAM, { seq: 1 }), denied, 'no message get');
    await assert.rejects(jsm.streams.delete(STREAM), denied, 'no stream delete');
    await assert.rejects(jsm.streams.purge(STREAM), denied, 'no purge');
    const kv = await new Kvm(nc).open(CONTROL_BUCKET);
    await assert.rejects(kv.put('default', JSON.stringify({ sampleRate: 0 })), denied, 'no put into netrig_capture');
    await assert.rejects(kv.delete('default'), denied, 'no delete in netrig_capture');
    // Nor a plain subscription to the raw subjects or to another role's inbox.
    for (const subject of [`${PREFIX}.>`, '_INBOX_processor.>', '_INBOX.>']) {
      const sub = nc.subscribe(subject);
      const err = await sub.closed;
      assert.ok(denied(err), `no subscription to ${subject}`);
    }
  });

  test('the processor role runs a processor that consumes the edge\'s envelopes, but cannot delete streams or publish raw', async () => {
    // Bytes that are no envelope: the processor dead-letters them.
    await jetstream(await as(s.server.client('edge'), 'edge-garbage')).publish(`${PREFIX}.default.${node}.0`, 'not msgpack');
    const ch = await freshClickHouse('natsauth');
    const running = await runProcessor({ ...s.server.client('processor'), functions: 'tcp', shards: SHARDS, stream: STREAM, subjectPrefix: PREFIX, metricsPort: 0, leaseTtl: 2, ttlDays: 3650 }, { ch });
    try {
      let got: { n: string }[] = [];
      await waitFor('the connections rows', async () => {
        got = await rows<{ n: string }>(ch, `SELECT count() AS n FROM ${ch.database}.connections WHERE node = '${node}'`);
        return Number(got[0].n) === closes.length;
      }, 30_000, () => JSON.stringify(got));
      assert.equal((await readProcessors(running.nc, ch.database)).length, 1, 'the processor role reads the heartbeats (netrig up\'s summary does)');
      await waitFor('the dead letter', async () => (await adminJsm.streams.info('NETRIG_DLQ').catch(() => null))?.state.messages === 1, 30_000);
    } finally {
      await running.stop();
      await ch.close();
    }
    const nc = await as(s.server.client('processor'), 'processor-denied');
    const jsm = await jetstreamManager(nc);
    for (const stream of [STREAM, 'NETRIG_DLQ', `KV_${CONTROL_BUCKET}`]) await assert.rejects(jsm.streams.delete(stream), denied, `no delete of ${stream}`);
    await assert.rejects(jetstream(nc).publish(`${PREFIX}.x.y.z`, 'forged'), denied, 'no raw publish');
    await assert.rejects((await new Kvm(nc).open(CONTROL_BUCKET)).put('default', '{}'), denied, 'no put into netrig_capture');
  });

  test('commands: no credential, or one of the wrong role, is one clear line; admin configures', async () => {
    const url = ['--nats', s.server.url];
    const role = (r: 'edge' | 'admin') => ['--nats-user', r, '--nats-password', s.server.client(r).natsPassword!];
    const oneLine = (r: { code: number | null; stderr: string }, pattern: RegExp) => {
      assert.equal(r.code, 1, r.stderr);
      const { plain } = splitStderr(r.stderr);
      assert.equal(plain.length, 1, r.stderr);
      assert.match(plain[0], pattern);
    };
    oneLine(await runCli(['status', ...url]), /^netrig: NATS at \S+ requires credentials: pass --nats-user/);
    oneLine(await runCli(['configure', ...url, ...role('edge'), '--sample-rate', '0.5']), /^netrig: NATS denied this credential publish on \$KV\.netrig_capture\.default: use a credential whose role allows it/);
    const set = await runCli(['configure', ...url, ...role('admin'), '--region', 'cli', '--sample-rate', '0.5']);
    assert.equal(set.code, 0, set.stderr);
    const show = await runCli(['configure', ...url, ...role('admin'), '--region', 'cli', '--show']);
    assert.deepEqual(JSON.parse(show.stdout), { sampleRate: '0.5' });
    assert.equal((await runCli(['configure', ...url, ...role('admin'), '--region', 'cli', '--clear'])).code, 0);
  });

  test('admin may do all of it', async () => {
    const nc = await as(s.server.client('admin'), 'admin-all');
    const kv = await new Kvm(nc).open(CONTROL_BUCKET);
    await kv.put('default', '{}');
    await kv.delete('default');
    const consumer = uniqueToken('admin');
    await adminJsm.consumers.add(STREAM, { durable_name: consumer });
    assert.ok(((await adminJsm.streams.getMessage(STREAM, { seq: 1 }))?.data.length ?? 0) > 0, 'it reads the raw stream');
    await adminJsm.consumers.delete(STREAM, consumer);
    const scratch = uniqueToken('SCRATCH');
    await adminJsm.streams.add({ name: scratch, subjects: [`${scratch}.>`] });
    assert.equal(await adminJsm.streams.delete(scratch), true, 'it deletes a stream');
  });
});

test('the store holds no plaintext, one written before encryption included; after a restart the same passwords and key read it back', async () => {
  const before = `netrig-plaintext-marker-${uniqueToken('before')}`;
  const marker = `netrig-plaintext-marker-${uniqueToken('m')}`;
  const dataDir = mkdtempSync(join(tmpdir(), `netrig-natsauth-${process.pid}-`));
  const unregister = onExit(`nats data ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
  const storeDir = join(dataDir, 'nats');
  const holding = (text: string) => filesUnder(storeDir).filter((f) => readFileSync(f).includes(text));
  try {
    // A store written without encryption (netrig before it): the same grep finds the marker there.
    const plain = await startNatsServer({ storeDir });
    try {
      const nc = await connectNats({ nats: plain.url }, 'plain', log);
      await (await jetstreamManager(nc)).streams.add({ name: STREAM, subjects: [`${PREFIX}.>`] });
      await jetstream(nc).publish(`${PREFIX}.r.n.0`, before);
      await nc.close();
    } finally {
      await plain.cleanup();
    }
    assert.notDeepEqual(holding(before), [], 'an unencrypted store shows the marker');

    const owned = await startOwnedNatsServer({ dataDir, port: 0, roles: natsRoles({ stream: STREAM, subjectPrefix: PREFIX }), log });
    try {
      const edge = await as(owned.client('edge'), 'edge');
      await jetstream(edge).publish(`${PREFIX}.r.n.0`, marker);
    } finally {
      await closeAll();
      // Stopped, the server has written everything it holds.
      await owned.stop();
    }
    assert.ok(filesUnder(storeDir).some((f) => f.endsWith('.blk') && statSync(f).size > marker.length), 'the stream has a message block');
    assert.deepEqual(holding(marker), [], 'no store file holds what was published');
    assert.deepEqual(holding(before), [], 'nor what was published before encryption was on');

    // Restart on the same data dir: same passwords, same key.
    const again = await startOwnedNatsServer({ dataDir, port: 0, roles: natsRoles({ stream: STREAM, subjectPrefix: PREFIX }), log });
    try {
      const consumer = await jetstream(await as(again.client('admin'), 'admin-again')).consumers.get(STREAM);
      const got: string[] = [];
      for (let i = 0; i < 2; i++) got.push((await consumer.next({ expires: 5000 }))?.string() ?? '(nothing)');
      assert.deepEqual(got, [before, marker], 'a consumer reads both back');
    } finally {
      await closeAll();
      await again.stop();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    unregister();
  }
});
test('TLS: a client that trusts the CA connects; one that does not is refused with a clear error', async () => {
  const s = await ownedServer({ tls: true });
  try {
    assert.ok(s.server.tlsCa, 'the server names its CA');
    const nc = await as(s.server.client('admin'), 'tls');
    assert.ok(nc.info?.tls_required, 'the server requires TLS');
    await assert.rejects(connectNats({ ...s.server.client('admin'), natsTlsCa: undefined }, 'no-ca', log), (err: Error) => err instanceof NatsTlsError && /--nats-tls-ca/.test(err.message));
  } finally {
    await closeAll();
    await s.undo();
  }
});
