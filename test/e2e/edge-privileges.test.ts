/**
 * End to end: `netrig edge` started as root with exactly the capabilities edge/privileges.ts
 * names (everything else out of its bounding set, by setpriv) loads, attaches its programs
 * and the TLS uprobes, then becomes `nobody`: its main thread keeps CAP_BPF, CAP_PERFMON,
 * CAP_SYS_ADMIN and CAP_SYS_PTRACE, every other thread keeps none, and it still captures
 * HTTP between two network namespaces and exits 0 on SIGINT with nothing left attached.
 * Without CAP_BPF it refuses to start naming what is missing; without CAP_SYS_ADMIN it runs
 * and says that TLS plaintext is not captured.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Direction, Role } from '../../schemas/records.js';
import { Cap, capMask, threadCreds, type CapName } from '../../edge/privileges.js';
import { bpfIdsOf, bpftoolLinks } from '../helpers/bpf-objects.js';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { uniqueToken } from '../helpers/cleanup.js';
import { spawnCli, type CliChild } from '../helpers/cli.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { StreamReader } from '../helpers/stream-reader.js';

/** What the edge starts with: the README's list. */
const START_CAPS: CapName[] = ['BPF', 'PERFMON', 'SYS_ADMIN', 'SYS_PTRACE', 'SYSLOG', 'SETUID', 'SETGID'];
const KEPT = capMask(['BPF', 'PERFMON', 'SYS_ADMIN', 'SYS_PTRACE']);
const NOBODY = 65534;

/** setpriv arguments that leave exactly `caps` in the bounding set of a root process. */
function onlyCaps(caps: CapName[]): string[] {
  return ['setpriv', `--bounding-set=-all,${caps.map((c) => `+${c.toLowerCase()}`).join(',')}`, '--'];
}

function edgeArgs(nats: string, token: string, netns: number[]): string[] {
  return ['edge', '--nats', nats, '--metrics-port', '0', '--stream', `NETRIG_PRIV_${token}`, '--subject-prefix', `netrig.priv.${token}`,
    '--node', token, '--include-netns', netns.join(',')];
}

describe('edge privileges: exactly the capabilities it needs, and nobody once attached', () => {
  let nats: NatsServerHandle | undefined;
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  const children: CliChild[] = [];

  before(async () => {
    nats = await startNatsServer();
    hosts = await createHostPair();
    nginx = await startNginx(hosts.server);
  });

  after(() => cleanupAll(
    ...children.map((c) => () => c.kill()),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    () => nats?.cleanup(),
  ));

  function start(caps: CapName[], token: string): CliChild {
    const c = spawnCli(edgeArgs(nats!.url, token, [hosts!.client.netnsIno(), hosts!.server.netnsIno()]), { logLevel: 'info', prefix: onlyCaps(caps) });
    children.push(c);
    return c;
  }

  test('with the listed capabilities it captures, and after attaching keeps four on its main thread and none elsewhere', async () => {
    const token = uniqueToken('priv');
    const edge = start(START_CAPS, token);
    await edge.waitLog('privileges dropped', (l) => l.msg === 'privileges dropped');
    await edge.waitLog('edge running', (l) => /^edge running/.test(l.msg ?? ''));
    assert.ok(edge.logs.some((l) => l.msg === 'TLS plaintext uprobes attached'), `TLS uprobes attached before the drop:\n${edge.tail()}`);

    // The node process is a child of setpriv's exec: same pid.
    const threads = threadCreds(edge.pid);
    assert.ok(threads.length > 1, 'node runs several threads');
    for (const t of threads) {
      assert.equal(t.uid, NOBODY, `thread ${t.tid} runs as nobody`);
      const allowed = t.tid === edge.pid ? KEPT : 0n;
      assert.equal(t.permitted & ~allowed, 0n, `thread ${t.tid} permitted ${t.permitted.toString(16)} within ${allowed.toString(16)}`);
    }
    const main = threads.find((t) => t.tid === edge.pid)!;
    assert.equal(main.effective, KEPT, 'the main thread keeps CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_SYS_PTRACE');
    assert.equal((main.effective >> BigInt(Cap.SETUID)) & 1n, 0n, 'it cannot become root again');

    // Traffic after the drop still reaches the stream, payload included.
    const path = `/text?priv=${token}`;
    const r = await hosts!.client.exec('curl', ['-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{http_code}', `http://${hosts!.server.addr}:${nginx!.port}${path}`]);
    assert.equal(r.stdout, '200', `curl: ${r.stderr}`);
    const reader = await StreamReader.open(nats!.url, `NETRIG_PRIV_${token}`);
    try {
      await reader.waitFor('the request on the stream', (rd) => rd.connOpens({ netns: hosts!.server.netnsIno(), role: Role.Server })
        .some((o) => rd.payload(o.connId, Direction.Ingress).bytes.includes(`GET ${path} `)), 30_000);
    } finally {
      await reader.close();
    }

    const own = bpfIdsOf(edge.pid);
    assert.ok(own.links.size > 0, 'it holds its links');
    const end = await edge.stop('SIGINT');
    assert.deepEqual(end, { code: 0, signal: null }, `exit 0 after SIGINT:\n${edge.tail()}`);
    const gone = await pollUntil(async () => (await bpftoolLinks()).every((l) => !own.links.has(l.id)), 10_000, 100);
    assert.ok(gone, 'none of its links remain');
  });

  test('without CAP_BPF it refuses to start and names what is missing', async () => {
    const edge = start(['PERFMON', 'SYS_PTRACE', 'SYSLOG', 'SETUID', 'SETGID'], uniqueToken('nobpf'));
    await pollUntil(() => edge.exited(), 60_000, 50);
    await edge.stop('SIGTERM'); // exited already: waits for its output
    assert.equal(edge.child.exitCode, 1, `exit 1:\n${edge.tail()}`);
    assert.ok(edge.stderrPlain.some((l) => /CAP_BPF to load programs/.test(l)), `the error names CAP_BPF:\n${edge.tail()}`);
  });

  test('without CAP_SYS_ADMIN it runs and says TLS plaintext is not captured', async () => {
    const edge = start(['BPF', 'PERFMON', 'SYS_PTRACE', 'SYSLOG', 'SETUID', 'SETGID'], uniqueToken('noadmin'));
    await edge.waitLog('edge running', (l) => /^edge running/.test(l.msg ?? ''));
    assert.ok(edge.logs.some((l) => /TLS plaintext is not captured: the edge lacks CAP_SYS_ADMIN/.test(l.msg ?? '')), `it says why TLS is off:\n${edge.tail()}`);
    assert.ok(!edge.logs.some((l) => l.level >= 40 && /uprobe/.test(String(l.libbpf ?? ''))), 'no per-probe libbpf warnings');
    const main = threadCreds(edge.pid).find((t) => t.tid === edge.pid)!;
    assert.equal(main.effective, capMask(['BPF', 'PERFMON', 'SYS_PTRACE']), 'it keeps only what it had of the four');
    assert.deepEqual(await edge.stop('SIGINT'), { code: 0, signal: null }, `exit 0 after SIGINT:\n${edge.tail()}`);
  });
});
