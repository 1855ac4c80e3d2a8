/**
 * End to end: `netrig edge` as its own process attaches its programs, and on SIGTERM or
 * SIGINT stops cleanly (exit code 0) leaving nothing behind in the kernel: none of its
 * programs, links or maps, and nothing of it under /sys/fs/bpf. A second signal while it
 * stops (NATS gone, so the stop waits on it) exits at once with 128 + the signal's number,
 * and leaves nothing behind either: the kernel drops what only its descriptors held. Its
 * own objects are told apart from anyone else's (another edge, other tools) by the ids of
 * the descriptors it held, read from /proc/<pid>/fdinfo. It never maps the embedded engine.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import { pollUntil } from '../helpers/cleanup-all.js';
import { killSync, onExit, uniqueToken } from '../helpers/cleanup.js';
import {
  bpffsEntries, bpfIdsOf, bpftoolLinks, bpftoolMaps, bpftoolProgs, pinnedObject, type BpfIds,
} from '../helpers/bpf-objects.js';
import { startNatsServer, waitExit } from '../helpers/nats-server.js';
import { CLI } from '../helpers/paths.js';

/** Programs the edge must attach (C function names; the kernel keeps 15 characters). */
const EXPECTED_PROGRAMS = [
  'inet_sock_set_state', 'sock_send_length', 'sock_recv_length', 'sys_exit_recvfrom', 'sys_exit_recvmsg',
  'sys_exit_recvmmsg', 'sys_exit_sendmmsg', 'tcp_retransmit_skb', 'tcp_send_reset', 'tcp_receive_reset', 'kfree_skb', 'tcp_destroy_sock',
];
const KERNEL_NAME_LEN = 15;

interface LogLine { msg?: string; programs?: number; [k: string]: unknown }

/** `twice`: a second signal once it has started stopping, with NATS stopped so the stop waits. */
async function detachCase(t: TestContext, signal: 'SIGTERM' | 'SIGINT', twice = false): Promise<void> {
  const nats = await startNatsServer();
  t.after(() => nats.cleanup());
  const token = uniqueToken('detach');
  const pinsBefore = bpffsEntries();

  const child = spawn(process.execPath, [
    CLI, 'edge', '--nats', nats.url, '--metrics-port', '0', '--stream', `NETRIG_DETACH_${token}`, '--node', token,
  ], { env: { ...process.env, NETRIG_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const pid = child.pid!;
  const unregister = onExit(`netrig edge ${pid}`, () => killSync(pid));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, 10_000);
    }
    unregister();
  });

  // Its log (pino JSON lines on stderr): wait until it runs, keep everything for messages.
  const log: LogLine[] = [];
  const raw: string[] = [];
  let attached = -1;
  const running = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no 'edge running' within 60 s:\n${raw.join('\n')}`)), 60_000);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`netrig edge exited (${code ?? sig}) before it ran:\n${raw.join('\n')}`));
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      raw.push(line);
      let l: LogLine;
      try {
        l = JSON.parse(line) as LogLine;
      } catch {
        return;
      }
      log.push(l);
      if (l.msg === 'bpf programs attached') attached = Number(l.programs);
      if (/^edge running/.test(l.msg ?? '')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await running;
  assert.ok(attached > 0, `it logged that programs are attached (${attached})`);
  // The embedded engine is loaded only where it is used (lib/chdb.ts): never in an edge.
  assert.ok(!readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libchdb'), 'libchdb is not mapped into the edge');

  // Its objects, by the descriptors it holds.
  const own: BpfIds = bpfIdsOf(pid);
  // Tracepoint programs attach once each; the TLS uprobe programs are loaded too and attach
  // once per libssl file found, so there are at least as many of both as the log counted.
  assert.ok(own.progs.size >= attached, `it holds a descriptor for every attached program (${own.progs.size} >= ${attached})`);
  assert.ok(own.links.size >= attached, `a link for every attached program (${own.links.size} >= ${attached})`);
  assert.ok(own.maps.size > 0, 'it holds its maps');

  const progs = (await bpftoolProgs()).filter((p) => own.progs.has(p.id));
  assert.equal(progs.length, own.progs.size, 'bpftool prog show lists every program it holds');
  const names = progs.map((p) => p.name ?? '');
  for (const want of EXPECTED_PROGRAMS) {
    assert.ok(names.some((n) => n.startsWith(want.slice(0, KERNEL_NAME_LEN))), `program ${want} is loaded (have ${names.join(', ')})`);
  }
  const links = (await bpftoolLinks()).filter((l) => own.links.has(l.id));
  assert.equal(links.length, own.links.size, 'bpftool link show lists every link it holds');
  for (const l of links) assert.ok(l.prog_id !== undefined && own.progs.has(l.prog_id), `link ${l.id} attaches one of its programs`);

  // Stop it and wait for a clean exit (or, signalled twice, an immediate one).
  if (twice) await nats.stop();
  child.kill(signal);
  if (twice) {
    assert.ok(await pollUntil(() => log.some((l) => l.msg === 'stopping'), 30_000, 50), `it logged that it is stopping:\n${raw.slice(-10).join('\n')}`);
    child.kill(signal);
  }
  assert.ok(await waitExit(child, 30_000), `it exits after ${signal} (waited up to 30 s)`);
  assert.equal(child.signalCode, null, `not killed by ${child.signalCode}`);
  if (twice) {
    assert.equal(child.exitCode, 128 + constants.signals[signal], `exit code 128 + ${signal} after the second one:\n${raw.slice(-10).join('\n')}`);
    assert.ok(raw.some((l) => l.includes(`second ${signal}: exiting now`)), 'it said why it exits at once');
  } else {
    assert.equal(child.exitCode, 0, `exit code 0 after ${signal}:\n${raw.slice(-10).join('\n')}`);
    assert.ok(log.some((l) => l.msg === 'bpf programs detached'), 'it logged that programs are detached');
  }
  assert.ok(log.some((l) => l.msg === 'stopping' && l.signal === signal), `it logged the ${signal}`);

  // Nothing of it left in the kernel (freeing after the last descriptor closes is deferred
  // a little: poll, bounded).
  let left = { progs: [] as number[], links: [] as number[], maps: [] as number[] };
  const gone = await pollUntil(async () => {
    const [p, l, m] = await Promise.all([bpftoolProgs(), bpftoolLinks(), bpftoolMaps()]);
    left = {
      progs: p.filter((x) => own.progs.has(x.id)).map((x) => x.id),
      links: l.filter((x) => own.links.has(x.id)).map((x) => x.id),
      maps: m.filter((x) => own.maps.has(x.id)).map((x) => x.id),
    };
    return left.progs.length + left.links.length + left.maps.length === 0;
  }, 10_000, 100);
  assert.ok(gone, `programs, links or maps of it remain: ${JSON.stringify(left)}`);

  // Nothing of it under /sys/fs/bpf: a new entry may only be someone else's pinned object.
  const ours: string[] = [];
  for (const p of bpffsEntries()) {
    if (pinsBefore.has(p)) continue;
    const obj = await pinnedObject(p);
    const foreign = obj && !(obj.kind === 'prog' ? own.progs : obj.kind === 'map' ? own.maps : own.links).has(obj.id);
    if (!foreign) ours.push(p);
  }
  assert.deepEqual(ours, [], 'nothing created under /sys/fs/bpf');
}

test('SIGTERM: the edge exits 0 and leaves no programs, links, maps or pins', (t) => detachCase(t, 'SIGTERM'));

test('SIGINT: the edge exits 0 and leaves no programs, links, maps or pins', (t) => detachCase(t, 'SIGINT'));

test('SIGINT twice: the edge exits at once with 130 and leaves no programs, links, maps or pins', (t) => detachCase(t, 'SIGINT', true));

test('SIGTERM twice: the edge exits at once with 143 and leaves no programs, links, maps or pins', (t) => detachCase(t, 'SIGTERM', true));
