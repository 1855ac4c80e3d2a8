/**
 * End to end: a TCP connection already carrying requests when the edge starts is seen
 * mid-life, and its byte positions are where the connection really stands — from the
 * kernel's TCP counters, not from 0 — so a connection that outlives an edge restart goes on
 * numbering its bytes forward. curl makes 12 equal-length requests at 4/s over one
 * keep-alive connection to nginx; the edge starts after the first few. On the server end
 * every request record's position is its request number times the request length, and every
 * response record's a multiple of the (equal) response length; on the client end the same,
 * its egress one byte above (bytes_acked counts the SYN of an active open). On both payload
 * paths.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnFlags, Direction, RecordKind, Role, type ConnInfoRecord } from '../../schemas/records.js';
import { cleanupAll, pollUntil, sleep } from '../helpers/cleanup-all.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { waitExit, startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { readStream } from '../helpers/stream-reader.js';

const REQUESTS = 12;

for (const capturePath of CAPTURE_PATHS) test(`a connection open before the edge starts is seen mid-life at its true byte positions (capture path: ${capturePath})`, async (t) => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let edge: EdgeRun | undefined;
  let curl: ReturnType<HostPair['client']['spawn']> | undefined;
  t.after(() => cleanupAll(
    () => curl && curl.exitCode === null && curl.kill('SIGKILL'),
    () => edge?.stop(),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
  ));
  nats = await startNatsServer();
  hosts = await createHostPair();
  const { client, server } = hosts;
  nginx = await startNginx(server);
  const base = `http://${server.addr}:${nginx.port}`;
  const paths = Array.from({ length: REQUESTS }, (_, i) => `/t/m${String(i + 1).padStart(2, '0')}`);
  curl = client.spawn('curl', ['-sS', '--max-time', '30', '--rate', '4/s', ...paths.flatMap((p) => ['-o', '/dev/null', `${base}${p}`])], { stdio: 'ignore' });
  // A few requests before the edge is there.
  assert.ok(await pollUntil(() => nginx!.accessLog().length >= 4, 10_000, 20), 'curl made its first requests');
  edge = await startEdge({ nats: nats.url, netns: [client.netnsIno(), server.netnsIno()], input: { capturePath } });
  assert.ok(await waitExit(curl, 30_000), 'curl finished');
  assert.equal(curl.exitCode, 0, 'curl succeeded');
  await sleep(1000);
  await edge.stop();
  const reader = await readStream(nats.url, edge.stream);
  try {
    const before = nginx.accessLog().filter((e) => e.uri.startsWith('/t/m')).length;
    assert.equal(before, REQUESTS, 'nginx logged every request');
    for (const [host, role] of [[server, Role.Server], [client, Role.Client]] as const) {
      const port = (i: ConnInfoRecord) => (role === Role.Server ? i.tuple.sport : i.tuple.dport);
      const conns: number[] = [...new Set(reader.ofKind<ConnInfoRecord>(RecordKind.ConnInfo).map((r) => r.rec)
        .filter((i) => i.netnsIno === host.netnsIno() && i.connFlags & ConnFlags.Midlife && i.role === role && port(i) === nginx!.port)
        .map((i) => i.connId))];
      assert.equal(conns.length, 1, `one ${role === Role.Server ? 'server' : 'client'} socket seen mid-life`);
      const id = conns[0];
      const req = reader.data(id, role === Role.Server ? Direction.Ingress : Direction.Egress).filter((r) => r.offsetBytes === 0);
      const resp = reader.data(id, role === Role.Server ? Direction.Egress : Direction.Ingress).filter((r) => r.offsetBytes === 0);
      assert.ok(req.length >= 2 && req.length < REQUESTS, `some requests, not all, captured on it (${req.length})`);
      const reqLen = req[0].lenBytes;
      const respLen = resp[0].lenBytes;
      const above = role === Role.Client ? 1 : 0;
      for (const r of req) {
        const n = Number(/^GET \/t\/m(\d\d) /.exec(r.payload.toString('latin1'))?.[1]);
        assert.equal(r.lenBytes, reqLen, 'requests of equal length');
        assert.equal(r.posBytes, (n - 1) * reqLen + above, `request ${n} at its position in the stream`);
      }
      for (const r of resp) {
        assert.equal(r.lenBytes, respLen, 'responses of equal length');
        assert.ok(r.posBytes > 0 && r.posBytes % respLen === 0, `response at ${r.posBytes}: a multiple of ${respLen}`);
      }
    }
  } finally {
    await reader.close();
  }
});
