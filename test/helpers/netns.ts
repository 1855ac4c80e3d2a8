/**
 * Test hosts: network namespaces joined by a veth pair, each with lo up, an IPv4 address in
 * 10.77.<n>.0/24 and an IPv6 address in fd77:<n>::/64. Only these namespaces and addresses
 * ever see test traffic. Names carry this process's pid and a counter, so runs can go side
 * by side; destroy() (also run by the exit safety net) deletes both namespaces, which
 * removes the veth pair with them.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { statSync } from 'node:fs';
import { killSync, onExit, runQuiet } from './cleanup.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; null if killed by a signal. */
  code: number | null;
}

export interface ExecOptions {
  /** Kill the command after this long (default 60 s). */
  timeoutMs?: number;
  /** Bytes written to its stdin, then closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** One test host: a network namespace with its addresses. */
export interface Host {
  /** Namespace name, as `ip netns` knows it. */
  readonly ns: string;
  /** IPv4 address of its veth end. */
  readonly addr: string;
  /** IPv6 address of its veth end. */
  readonly addr6: string;
  /** Its veth interface (the name is the same in both namespaces' own view). */
  readonly ifname: string;
  /** Run a command inside the namespace and collect its output. Never rejects for a non-zero exit. */
  exec(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Start a command inside the namespace. */
  spawn(cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  /** Inode of the namespace (what the kernel's `net->ns.inum` and netrig's netns_ino say). */
  netnsIno(): number;
}

export interface HostPair {
  client: Host;
  server: Host;
  /** The n in 10.77.<n>.0/24 and fd77:<n>::/64. */
  readonly subnet: number;
  /** Delete both namespaces. Idempotent. */
  destroy(): Promise<void>;
}

/** Anything with an `after` hook, such as node:test's TestContext. */
export interface AfterHook {
  after(fn: () => unknown): void;
}

let pairs = 0;

/** Run a command (outside any namespace) and collect its output; rejects only if it cannot start. */
export function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
  });
}

/** Like run(), but rejects when the exit code is not 0. */
export async function runOk(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r;
}

class NsHost implements Host {
  private ino = 0;
  constructor(readonly ns: string, readonly addr: string, readonly addr6: string, readonly ifname: string) {}

  exec(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', this.ns, cmd, ...args], opts);
  }

  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], opts);
    // `ip netns exec` execs the command in place, so this pid is the command's.
    const unregister = onExit(`${cmd} in ${this.ns}`, () => killSync(child.pid));
    child.once('exit', unregister);
    return child;
  }

  netnsIno(): number {
    if (!this.ino) this.ino = statSync(`/run/netns/${this.ns}`).ino;
    return this.ino;
  }
}

/**
 * Create a client and a server namespace joined by a veth pair. With `t`, destroy() runs
 * in its after hook.
 */
export async function createHostPair(t?: AfterHook): Promise<HostPair> {
  pairs++;
  const token = `${process.pid}x${pairs}`;
  // Different pairs of one run get different subnets; across runs the namespaces are
  // isolated from each other anyway, so an equal subnet does not matter.
  const subnet = ((process.pid * 7 + pairs) % 250) + 1;
  const cns = `nrc${token}`;
  const sns = `nrs${token}`;
  const client = new NsHost(cns, `10.77.${subnet}.1`, `fd77:${subnet}::1`, 'veth0');
  const server = new NsHost(sns, `10.77.${subnet}.2`, `fd77:${subnet}::2`, 'veth0');

  let destroyed = false;
  const unregister = onExit(`netns ${cns} ${sns}`, () => {
    runQuiet('ip', ['netns', 'del', cns]);
    runQuiet('ip', ['netns', 'del', sns]);
  });
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await run('ip', ['netns', 'del', cns]);
    await run('ip', ['netns', 'del', sns]);
    unregister();
  };
  if (t) t.after(destroy);

  try {
    await runOk('ip', ['netns', 'add', cns]);
    await runOk('ip', ['netns', 'add', sns]);
    // Both ends are created directly inside the namespaces: no host-side names to clash.
    await runOk('ip', ['link', 'add', 'veth0', 'netns', cns, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', sns]);
    for (const h of [client, server]) {
      await runOk('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up']);
      await runOk('ip', ['-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', 'veth0']);
      // nodad: usable at once, no duplicate address detection delay.
      await runOk('ip', ['-n', h.ns, '-6', 'addr', 'add', `${h.addr6}/64`, 'dev', 'veth0', 'nodad']);
      await runOk('ip', ['-n', h.ns, 'link', 'set', 'veth0', 'up']);
    }
  } catch (err) {
    await destroy();
    throw err;
  }
  return { client, server, subnet, destroy };
}

/**
 * Socket cookies (what bpf_get_socket_cookie returns) of the host's established TCP sockets
 * with local port `sport` and/or remote port `dport`, from `ss -e` (`sk:<hex>`).
 */
export async function socketCookies(host: Host, filter: { sport?: number; dport?: number }): Promise<number[]> {
  const expr: string[] = [];
  if (filter.sport) expr.push(`sport = :${filter.sport}`);
  if (filter.dport) expr.push(`dport = :${filter.dport}`);
  const r = await host.exec('ss', ['-tnHie', 'state', 'established', ...(expr.length ? [expr.join(' and ')] : [])]);
  if (r.code !== 0) throw new Error(`ss failed in ${host.ns}: ${r.stderr}`);
  return [...r.stdout.matchAll(/\bsk:([0-9a-f]+)/g)].map((m) => parseInt(m[1], 16));
}

/** What execWithPid() gives: the output and the pid the command ran as. */
export interface PidExecResult extends ExecResult {
  pid: number;
}

/**
 * Run a command inside `host`'s namespace like Host.exec(), and also say which pid it ran
 * as (`ip netns exec` execs the command in place, so the spawned pid is the command's):
 * rows name the process that made the traffic. Never rejects for a non-zero exit.
 */
export function execWithPid(host: Host, cmd: string, args: string[], opts: ExecOptions = {}): Promise<PidExecResult> {
  return new Promise((resolve, reject) => {
    const child = host.spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd} in ${host.ns}: ${e.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ pid: child.pid!, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
  });
}
