/**
 * A real unbound inside a test host's namespace, from a generated config in a temporary
 * directory: in the foreground (`do-daemonize: no`), no chroot, no user switch, logging to
 * stderr, one thread, the iterator module only (no trust anchors, no validation), and
 * static local zones the test defines, so every answer comes from the config and unbound
 * never sends a query of its own. It listens on UDP and TCP of the given addresses; ready
 * when it logs "start of service" (no probe query, so nothing reaches a capture).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killSync, onExit } from './cleanup.js';
import type { Host } from './netns.js';
import { waitExit } from './nats-server.js';

export interface UnboundOptions {
  /** Addresses to listen on (default: the host's IPv4 address). */
  interfaces?: string[];
  /** Port (default 53). */
  port?: number;
  /** Networks allowed to query, CIDR (default: the /24 of the host's IPv4 address). */
  allow?: string[];
  /**
   * Static local zones: zone name → local-data records ("www.netrig.test. A 192.0.2.10").
   * Names under a static zone without data get NXDOMAIN.
   */
  zones: Record<string, string[]>;
}

export interface UnboundHandle {
  readonly port: number;
  /** Pid of unbound (a single process, one thread). */
  readonly pid: number;
  /** Its output so far (the log). */
  log(): string;
  /** SIGTERM (then SIGKILL), remove its directory. Idempotent. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;

function config(dir: string, o: Required<UnboundOptions>): string {
  const zones = Object.entries(o.zones).flatMap(([zone, data]) => [
    `  local-zone: "${zone}" static`,
    ...data.map((d) => `  local-data: "${d}"`),
  ]);
  return [
    'server:',
    ...o.interfaces.map((a) => `  interface: ${a}`),
    `  port: ${o.port}`,
    '  do-daemonize: no',
    '  chroot: ""',
    '  username: ""',
    `  directory: "${dir}"`,
    `  pidfile: "${dir}/unbound.pid"`,
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 1',
    '  num-threads: 1',
    '  do-udp: yes',
    '  do-tcp: yes',
    '  module-config: "iterator"',
    ...o.allow.map((n) => `  access-control: ${n} allow`),
    ...zones,
    'remote-control:',
    '  control-enable: no',
    '',
  ].join('\n');
}

/** Start unbound in `host`'s namespace and wait until it serves. */
export async function startUnbound(host: Host, opts: UnboundOptions): Promise<UnboundHandle> {
  const o: Required<UnboundOptions> = {
    interfaces: opts.interfaces ?? [host.addr],
    port: opts.port ?? 53,
    allow: opts.allow ?? [`${host.addr.split('.').slice(0, 3).join('.')}.0/24`],
    zones: opts.zones,
  };
  const dir = mkdtempSync(join(tmpdir(), `netrig-unbound-${process.pid}-`));
  const conf = join(dir, 'unbound.conf');
  writeFileSync(conf, config(dir, o));
  const child = host.spawn('unbound', ['-d', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid!;
  let out = '';
  const keep = (b: Buffer) => (out = (out + b.toString()).slice(-64 * 1024));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const unregister = onExit(`unbound ${pid}`, () => {
    killSync(pid);
    rmSync(dir, { recursive: true, force: true });
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      if (!(await waitExit(child, 10_000))) {
        killSync(pid);
        await waitExit(child, 10_000);
      }
    }
    rmSync(dir, { recursive: true, force: true });
    unregister();
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!/start of service/.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      const why = child.exitCode !== null || child.signalCode !== null
        ? `exited (${child.exitCode ?? child.signalCode})` : `not ready within ${READY_TIMEOUT_MS} ms`;
      await stop();
      throw new Error(`unbound ${why}:\n${out}\nconfig:\n${config(dir, o)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port: o.port, pid, log: () => out, stop };
}
