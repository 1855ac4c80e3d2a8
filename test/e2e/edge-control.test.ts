/**
 * Capture settings changed at run time: `netrig edge` (runEdge) watches the control bucket,
 * and an override rewrites the BPF filter map without reloading. Connections opened after
 * an exclude override have their lifecycle records but no payload; after the override is
 * cleared, payload is captured again; a sample rate of 0 captures none.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { runEdge, controlBucket, controlKey, type RunningEdge } from '../../edge/index.js';
import { ConnFlags, RecordKind, type ConnInfoRecord } from '../../schemas/records.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { StreamReader } from '../helpers/stream-reader.js';

const STREAM = `NETRIG_CTL_${process.pid}`;
const PREFIX = `netrig.ctl${process.pid}`;
const REGION = 'ctl';
const NODE = `n${process.pid}`;

describe('edge control: capture settings change at run time', () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let edge: RunningEdge | undefined;
  let nc: NatsConnection | undefined;
  let reader: StreamReader | undefined;

  before(async () => {
    nats = await startNatsServer();
    hosts = await createHostPair();
    nginx = await startNginx(hosts.server);
    nc = await connect({ servers: nats.url });
    edge = await runEdge({
      nats: nats.url, region: REGION, node: NODE, stream: STREAM, subjectPrefix: PREFIX, metricsPort: 0,
      includeNetns: [hosts.client.netnsIno(), hosts.server.netnsIno()], heartbeat: '200ms', lingerMs: 20,
    });
    reader = await StreamReader.open(nc, STREAM);
  });

  after(async () => {
    await reader?.close();
    await edge?.stop();
    await nc?.close();
    await nginx?.stop();
    await hosts?.destroy();
    await nats?.cleanup();
  });

  /** One curl request; returns the client socket's local port. */
  async function request(): Promise<number> {
    const r = await hosts!.client.exec('curl', ['-sS', '-o', '/dev/null', '-w', '%{local_port}', `http://${hosts!.server.addr}:${nginx!.port}/small.txt`]);
    assert.equal(r.code, 0, r.stderr);
    return Number(r.stdout.trim());
  }

  /** The client-side CONN_INFO of the connection from `port`, once it is on the stream. */
  async function clientInfo(port: number): Promise<ConnInfoRecord> {
    let found: ConnInfoRecord | undefined;
    await reader!.waitFor(`CONN_INFO of client port ${port}`, (r) => {
      found = r.ofKind<ConnInfoRecord>(RecordKind.ConnInfo).map((s) => s.rec).find((i) => i.tuple.sport === port);
      return found !== undefined && r.ofKind(RecordKind.ConnClose).some((s) => s.rec.connId === found!.connId);
    });
    return found!;
  }

  /** Requests until one is captured (or not), bounded: an override applies to connections first seen after it. */
  async function requestUntil(captured: boolean): Promise<ConnInfoRecord> {
    for (let i = 0; i < 40; i++) {
      const info = await clientInfo(await request());
      if (Boolean(info.connFlags & ConnFlags.Captured) === captured) return info;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no connection with captured=${captured} after 40 requests`);
  }

  test('an exclude override stops payload capture, clearing it resumes', async () => {
    const before = await requestUntil(true);
    await reader!.waitFor('payload of the first connection', (r) => r.data(before.connId).length > 0);

    const kv = await controlBucket(nc!);
    await kv.put(controlKey(REGION, NODE), JSON.stringify({ excludePorts: String(nginx!.port) }));
    const excluded = await requestUntil(false);
    await reader!.update();
    assert.equal(reader!.data(excluded.connId).length, 0, 'no payload for a connection to an excluded port');
    assert.ok(reader!.connCloses(excluded.connId).length === 1, 'its lifecycle is still recorded');

    await kv.delete(controlKey(REGION, NODE));
    const again = await requestUntil(true);
    await reader!.waitFor('payload after the override is cleared', (r) => r.data(again.connId).length > 0);
  });

  test('a sample rate of 0 in the default scope captures no new connection', async () => {
    const kv = await controlBucket(nc!);
    await kv.put(controlKey(), JSON.stringify({ sampleRate: 0 }));
    try {
      const info = await requestUntil(false);
      await reader!.update();
      assert.equal(reader!.data(info.connId).length, 0);
    } finally {
      await kv.delete(controlKey());
    }
    await requestUntil(true);
  });
});
