/**
 * What several benchmarks share beyond harness.ts: the machine's load as a line to print
 * beside figures, CPU time and memory of other processes, pinning them, child processes
 * and temporary directories that are cleaned up even when a benchmark fails or the runner
 * is interrupted (through the tests' exit safety net), percentiles.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killSync, onExit } from '../test/helpers/cleanup.js';
import { freePort, waitExit } from '../test/helpers/nats-server.js';
import { sleep } from '../test/helpers/cleanup-all.js';
import { cpuBusySeconds, processCpuSeconds } from './harness.js';

export { sleep };

/** "loadavg 1.02 0.88 0.61" */
export function loadavg(): string {
  return `loadavg ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`;
}

/**
 * Busy share of each CPU over a short look (default 1 s): what else runs on the machine
 * before or after a benchmark. "cpu0 3% cpu1 1%".
 */
export async function cpuShares(ms = 1000): Promise<string> {
  const a = cpuBusySeconds();
  await sleep(ms);
  const b = cpuBusySeconds();
  return b.map((v, i) => `cpu${i} ${(((v - a[i]) / (ms / 1000)) * 100).toFixed(0)}%`).join(' ');
}

/** Both: "loadavg ...; busy cpu0 ..% cpu1 ..%". */
export async function machineLoad(): Promise<string> {
  return `${loadavg()}; busy over 1 s: ${await cpuShares()}`;
}

/** The p-th percentile (0..100) of `xs`, nearest rank. */
export function percentile(xs: readonly number[], p: number): number {
  if (!xs.length) return NaN;
  const s = Float64Array.from(xs).sort();
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank];
}

export function mean(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return xs.length ? s / xs.length : NaN;
}

/** A temporary directory removed by remove(), or at exit if the benchmark dies first. */
export interface TempDir {
  readonly path: string;
  remove(): void;
}

export function tempDir(what: string): TempDir {
  const path = mkdtempSync(join(tmpdir(), `netrig-bench-${what}-${process.pid}-`));
  const unregister = onExit(`temp ${path}`, () => rmSync(path, { recursive: true, force: true }));
  let removed = false;
  return {
    path,
    remove() {
      if (removed) return;
      removed = true;
      rmSync(path, { recursive: true, force: true });
      unregister();
    },
  };
}

/** Thread ids of a process (empty once it is gone). */
export function threadsOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return [];
  }
}

/** Direct children of a process (from every thread's children list). */
export function childrenOf(pid: number): number[] {
  const out = new Set<number>();
  for (const tid of threadsOf(pid)) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (c) out.add(Number(c));
    } catch {
      // Thread gone.
    }
  }
  return [...out];
}

/** A process and all its descendants. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...childrenOf(out[i]));
  return out;
}

/** Command name of a process, or of `pid/task/tid` ('' once it is gone). */
export function commOf(pid: number | string): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Pin every thread of `pid` (and what it starts later) to `cpus`. */
export function pinPid(pid: number, cpus: number[]): void {
  const r = spawnSync('taskset', ['-a', '-cp', cpus.join(','), String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`taskset -a -cp ${cpus.join(',')} ${pid} failed: ${r.stderr?.toString().trim()}`);
}

/** CPU seconds of several processes. */
export function cpuOfAll(pids: readonly number[]): number {
  let s = 0;
  for (const p of pids) s += processCpuSeconds(p);
  return s;
}

/** CPU seconds of one thread of a process (0 once it is gone). */
export function threadCpuSeconds(pid: number, tid: number): number {
  return processCpuSeconds(`${pid}/task/${tid}`);
}

/** Command name of a thread ('' once it is gone). */
function threadComm(pid: number, tid: number): string {
  return commOf(`${pid}/task/${tid}`);
}

/**
 * CPU seconds of a set of processes measured by sampling, in total and by part: `partOf`
 * names the part each thread belongs to (from its process, thread id and name). Processes
 * and threads that exit between two samples keep their last value, so a short-lived one
 * still counts (up to the last sample); a process's time not seen on any of its threads
 * (threads that ended between samples) is the part `<process name>: ended threads`.
 */
export class CpuTally {
  private readonly procFirst = new Map<number, number>();
  private readonly procLast = new Map<number, number>();
  private readonly threadFirst = new Map<string, number>();
  private readonly threadLast = new Map<string, number>();
  private readonly partOfThread = new Map<string, string>();
  private readonly partOfProc = new Map<number, string>();
  private samples = 0;

  constructor(
    private readonly pids: () => number[],
    private readonly partOf: (pid: number, tid: number, comm: string) => string = (pid) => commOf(pid),
  ) {
    this.sample();
  }

  sample(): void {
    for (const p of this.pids()) {
      const c = processCpuSeconds(p);
      if (!this.procFirst.has(p)) {
        this.procFirst.set(p, this.samples ? 0 : c);
        this.partOfProc.set(p, commOf(p));
      }
      if (c > 0 || !this.procLast.has(p)) this.procLast.set(p, c);
      for (const t of threadsOf(p)) {
        const key = `${p}/${t}`;
        const tc = threadCpuSeconds(p, t);
        if (!this.threadFirst.has(key)) {
          // A thread (or process) first seen after the first sample was born since: from zero.
          this.threadFirst.set(key, this.samples ? 0 : tc);
          this.partOfThread.set(key, this.partOf(p, t, threadComm(p, t)));
        }
        if (tc > 0 || !this.threadLast.has(key)) this.threadLast.set(key, tc);
      }
    }
    this.samples++;
  }

  /** CPU seconds used since construction by every process seen. */
  total(): number {
    let s = 0;
    for (const [p, c] of this.procLast) s += c - (this.procFirst.get(p) ?? 0);
    return s;
  }

  /** The same seconds by part, largest first. */
  byPart(): [string, number][] {
    const parts = new Map<string, number>();
    const add = (k: string, v: number) => parts.set(k, (parts.get(k) ?? 0) + v);
    const seenOfProc = new Map<number, number>();
    for (const [key, c] of this.threadLast) {
      const d = c - (this.threadFirst.get(key) ?? 0);
      add(this.partOfThread.get(key)!, d);
      const p = Number(key.slice(0, key.indexOf('/')));
      seenOfProc.set(p, (seenOfProc.get(p) ?? 0) + d);
    }
    for (const [p, c] of this.procLast) {
      const rest = c - (this.procFirst.get(p) ?? 0) - (seenOfProc.get(p) ?? 0);
      if (rest > 0.005) add(`${this.partOfProc.get(p)}: ended threads`, rest);
    }
    return [...parts].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  }
}

/** Resident memory of a process in MiB (VmRSS), NaN once it is gone. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** A child process killed at exit if the benchmark dies first. */
export interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout and stderr so far (the last 256 KiB of each). */
  stdout(): string;
  stderr(): string;
  exited(): boolean;
  /** Resolves with the exit code (null: signal) once it exits. */
  readonly done: Promise<number | null>;
  /** SIGTERM (or `sig`), then SIGKILL after `graceMs`; waits for the exit. Idempotent. */
  stop(sig?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

const KEEP = 256 * 1024;

export function spawnChild(cmd: string, args: string[], opts: SpawnOptions & { group?: boolean } = {}): Child {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: opts.group ?? false, ...opts });
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
  const pid = child.pid;
  const group = opts.group ?? false;
  const unregister = onExit(`${cmd} ${pid}`, () => killSync(pid, group));
  let out = '';
  let err = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
    if (out.length > 2 * KEEP) out = out.slice(-KEEP);
  });
  child.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
    if (err.length > 2 * KEEP) err = err.slice(-KEEP);
  });
  const done = new Promise<number | null>((resolve) => {
    child.once('error', () => resolve(null));
    child.once('close', (code) => {
      unregister();
      resolve(code);
    });
  });
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    child, pid, done, exited,
    stdout: () => out,
    stderr: () => err,
    async stop(sig: NodeJS.Signals = 'SIGTERM', graceMs = 15_000) {
      if (!exited()) {
        try {
          if (group) process.kill(-pid, sig);
          else child.kill(sig);
        } catch {
          // Gone.
        }
        if (!(await waitExit(child, graceMs))) {
          killSync(pid, group);
          await waitExit(child, 10_000);
        }
      }
      if (group) killSync(pid, true);
      await Promise.race([done, sleep(5000)]);
    },
  };
}

/** Wait (bounded) for `re` in `c`'s stderr; throws with its tail if it exits first or time runs out. */
export async function waitForStderr(c: Child, what: string, re: RegExp, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(c.stderr())) {
    if (c.exited() || Date.now() > deadline) throw new Error(`${what} did not start: ${c.stderr().slice(-3000)}`);
    await sleep(50);
  }
}

/** SQL through a ClickHouse HTTP endpoint (netrig up's or netrig store's) as `user`: the body as text. */
export function endpointQuery(url: string, user: string, password: string): (sql: string) => Promise<string> {
  const authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  return async (sql: string) => {
    const res = await fetch(`${url}/?query=${encodeURIComponent(sql)}`, { headers: { authorization } });
    const body = await res.text();
    if (!res.ok) throw new Error(`query failed (${res.status}): ${body.slice(0, 500)}`);
    return body;
  };
}

/** Run a command to its end (killed after `timeoutMs`); output and exit code. */
export async function runCmd(cmd: string, args: string[], timeoutMs = 60_000, opts: SpawnOptions = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = spawnChild(cmd, args, opts);
  const timer = setTimeout(() => void c.stop('SIGKILL'), timeoutMs);
  const code = await c.done;
  clearTimeout(timer);
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

/** "12.3k" style for per-second figures; µs with 2 decimals. */
export function us(seconds: number): string {
  return `${(seconds * 1e6).toFixed(2)} µs`;
}

/** Fixed decimals without trailing noise. */
export function f(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : String(n);
}

/** A nats-server of a benchmark: JetStream, temporary store, random port, optional max_pending. */
export interface BenchNats {
  readonly url: string;
  readonly pid: number;
  /** The server's output so far. */
  log(): string;
  /** "Slow Consumer Detected" lines so far. */
  slowConsumers(): number;
  stop(): Promise<void>;
}

/**
 * Start nats-server with JetStream in a temporary store on a free 127.0.0.1 port. With
 * `maxPendingBytes`, the per-client outbound limit (default 64 MiB) is raised to it.
 */
export async function startBenchNats(o: { maxPendingBytes?: number } = {}): Promise<BenchNats> {
  const dir = tempDir('nats');
  const port = await freePort();
  const conf = join(dir.path, 'nats.conf');
  writeFileSync(conf, [
    `listen: 127.0.0.1:${port}`,
    `jetstream { store_dir: "${join(dir.path, 'js')}" }`,
    ...(o.maxPendingBytes ? [`max_pending: ${o.maxPendingBytes}`] : []),
  ].join('\n'));
  const c = spawnChild('nats-server', ['-c', conf]);
  const deadline = Date.now() + 20_000;
  while (!/Server is ready/.test(c.stderr() + c.stdout())) {
    if (c.exited() || Date.now() > deadline) {
      await c.stop('SIGKILL');
      dir.remove();
      throw new Error(`nats-server did not start: ${c.stderr().slice(-2000)}`);
    }
    await sleep(20);
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    pid: c.pid,
    log: () => c.stderr() + c.stdout(),
    slowConsumers: () => ((c.stderr() + c.stdout()).match(/Slow Consumer Detected/g) ?? []).length,
    async stop() {
      await c.stop('SIGTERM', 15_000);
      dir.remove();
    },
  };
}
