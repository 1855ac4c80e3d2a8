/**
 * End to end: every socket syscall form the edge captures, on both ends. A small C program
 * (test/fixtures/syscalls/sockcalls.c, compiled here with clang) in one network namespace
 * talks to itself in another: write/read, writev/readv, sendto/recvfrom and sendmsg/recvmsg
 * over TCP, then sendto/recvfrom, sendmsg/recvmsg and sendmmsg/recvmmsg over unconnected
 * UDP sockets. Each message carries a tag naming its form and direction; each must reach
 * the stream exactly once per end, byte-exact, with its syscall and direction, and the
 * unconnected UDP ones with the datagram's peer address and port.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Direction, RecordKind, SOCK_OPS, type SockDataRecord } from '../../schemas/records.js';
import { cleanupAll } from '../helpers/cleanup-all.js';
import { onExit } from '../helpers/cleanup.js';
import { CAPTURE_PATHS, startEdge, type EdgeRun } from '../helpers/edge-run.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, runOk, type HostPair } from '../helpers/netns.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { recordAddr, StreamReader } from '../helpers/stream-reader.js';

const SOURCE = join(REPO_ROOT, 'test/fixtures/syscalls/sockcalls.c');
const MSG_BYTES = 16;
const TCP_PORT = 7301;
const UDP_PORT = 7302;

type Op = (typeof SOCK_OPS)[number];

/** A message as sockcalls.c tags it: "c2s-write.......", "c2s-udp-sendto.." */
function tag(dir: 'c2s' | 's2c', name: string): string {
  return `${dir}-${name}`.padEnd(MSG_BYTES, '.');
}

/** One message: sent with `send` by one end, received with `recv` by the other. */
interface Expected {
  tag: string;
  send: Op;
  recv: Op;
  udp: boolean;
  fromClient: boolean;
}

function expectedMessages(): Expected[] {
  const out: Expected[] = [];
  const tcp: [Op, Op][] = [['write', 'read'], ['writev', 'readv'], ['sendto', 'recvfrom'], ['sendmsg', 'recvmsg']];
  const udp: [Op, Op][] = [['sendto', 'recvfrom'], ['sendmsg', 'recvmsg']];
  for (const fromClient of [true, false]) {
    const dir = fromClient ? 'c2s' : 's2c';
    for (const [send, recv] of tcp) out.push({ tag: tag(dir, send), send, recv, udp: false, fromClient });
    for (const [send, recv] of udp) out.push({ tag: tag(dir, `udp-${send}`), send, recv, udp: true, fromClient });
    for (let i = 0; i < 3; i++) out.push({ tag: tag(dir, `udp-mmsg${i}`), send: 'sendmmsg', recv: 'recvmmsg', udp: true, fromClient });
  }
  return out;
}

for (const capturePath of CAPTURE_PATHS) describe(`edge capture: every socket syscall form (capture path: ${capturePath})`, () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let edge: EdgeRun | undefined;
  let reader: StreamReader | undefined;
  let dir = '';
  let unregisterDir = () => {};

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'netrig-sockcalls-'));
    const d = dir;
    unregisterDir = onExit(`temp ${d}`, () => rmSync(d, { recursive: true, force: true }));
    await runOk('clang', ['-O2', '-Wall', '-Werror', SOURCE, '-o', join(dir, 'sockcalls')]);
    nats = await startNatsServer();
    hosts = await createHostPair();
    edge = await startEdge({ nats: nats.url, netns: [hosts.client.netnsIno(), hosts.server.netnsIno()], input: { capturePath } });
    reader = await StreamReader.open(nats.url, edge.stream);
  });

  after(() => cleanupAll(
    () => reader?.close(),
    () => edge?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
    () => {
      rmSync(dir, { recursive: true, force: true });
      unregisterDir();
    },
  ));

  test('each message on both ends with its syscall, direction, bytes and UDP peer', async () => {
    const { client, server } = hosts!;
    const bin = join(dir, 'sockcalls');
    const srv = server.spawn(bin, ['server', server.addr, String(TCP_PORT), String(UDP_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let srvOut = '';
    let srvErr = '';
    srv.stdout!.on('data', (b: Buffer) => (srvOut += b.toString()));
    srv.stderr!.on('data', (b: Buffer) => (srvErr += b.toString()));
    const srvDone = new Promise<number | null>((r) => srv.once('close', r));
    try {
      const deadline = Date.now() + 10_000;
      while (!srvOut.includes('ready')) {
        assert.ok(Date.now() < deadline && srv.exitCode === null, `sockcalls server did not start: ${srvErr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const c = await client.exec(bin, ['client', server.addr, String(TCP_PORT), String(UDP_PORT)], { timeoutMs: 20_000 });
      assert.equal(c.code, 0, `sockcalls client failed: ${c.stderr}`);
      assert.equal(await Promise.race([srvDone, new Promise((r) => setTimeout(() => r('timeout'), 10_000))]), 0, `sockcalls server failed: ${srvErr}`);
    } finally {
      if (srv.exitCode === null) srv.kill('SIGKILL');
    }

    const expected = expectedMessages();
    const netns = { client: client.netnsIno(), server: server.netnsIno() };
    // Data records carry no namespace: their sockets' CONN_INFO does.
    const nsOf = (connId: number) => reader!.connInfos(connId)[0]?.netnsIno;
    const found = (e: Expected, sending: boolean): SockDataRecord[] => reader!.ofKind<SockDataRecord>(RecordKind.SockData).map((r) => r.rec)
      .filter((r) => r.payload.toString('latin1') === e.tag && nsOf(r.connId) === (sending === e.fromClient ? netns.client : netns.server)
        && r.direction === (sending ? Direction.Egress : Direction.Ingress));
    await reader!.waitFor(`both ends of ${expected.length} tagged messages`, () => expected.every((e) => found(e, true).length && found(e, false).length));

    const clientAddr = recordAddr(client.addr);
    const serverAddr = recordAddr(server.addr);
    for (const e of expected) {
      for (const sending of [true, false]) {
        const recs = found(e, sending);
        const what = `${e.tag} ${sending ? 'sent' : 'received'} by the ${sending === e.fromClient ? 'client' : 'server'}`;
        assert.equal(recs.length, 1, `${what}: one record, got ${recs.length}`);
        const r = recs[0];
        assert.equal(SOCK_OPS[r.syscall], sending ? e.send : e.recv, `${what}: syscall`);
        assert.equal(r.lenBytes, MSG_BYTES, `${what}: length`);
        assert.equal(r.payload.length, MSG_BYTES, `${what}: captured bytes`);
        if (e.udp) {
          // Unconnected sockets: a datagram's peer is the other end (the server's fixed port,
          // the client's ephemeral one), as the sender addressed it and the receiver learned it.
          const peerIsServer = sending === e.fromClient;
          assert.equal(r.peer?.addr, peerIsServer ? serverAddr : clientAddr, `${what}: peer address`);
          if (peerIsServer) assert.equal(r.peer?.port, UDP_PORT, `${what}: peer port`);
          else assert.ok(r.peer && r.peer.port > 0 && r.peer.port !== UDP_PORT, `${what}: peer port ${r.peer?.port}`);
        } else {
          assert.equal(r.peer, null, `${what}: no peer on a connected socket`);
        }
      }
    }
  });
});
