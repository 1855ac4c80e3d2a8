/**
 * What every benchmark shares: the module shape the runner loads, the machine line, CPU
 * pinning, and formatting of rates and ratios. Benchmarks print figures measured against
 * a baseline in the same run; they never run inside tests.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, release, arch } from 'node:os';
import koffi from 'koffi';

/** Where a benchmark prints its result lines. */
export interface BenchContext {
  /** Print one result line under the benchmark's heading. */
  line(text: string): void;
}

/** One benchmark module (`bench/<name>.bench.ts`) exports `benchmark` of this shape. */
export interface Benchmark {
  /** Short name, matched by the runner's filter argument. */
  readonly name: string;
  /** One line: what is measured against what. */
  readonly title: string;
  run(ctx: BenchContext): Promise<void>;
}

/** "<cpu model>, <n> cores, Linux <release> <arch>, node <version>". */
export function machineLine(): string {
  const c = cpus();
  const model = (c[0]?.model ?? 'unknown cpu').replace(/\s+/g, ' ').trim();
  return `${model}, ${c.length} cores, Linux ${release()} ${arch()}, node ${process.version}`;
}

/** A positive number from the environment, or `fallback`. */
export function envNumber(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`${name}: expected a positive number, got ${JSON.stringify(v)}`);
  return n;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >>> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** 2_900_000 → "2.90M"; 41_000 → "41.0k". */
export function fmtCount(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(0);
}

/** 0.31 → "31.0%"; 0 → "0.000%"; small ratios keep their digits. */
export function fmtPct(ratio: number): string {
  const p = ratio * 100;
  if (p === 0 || p < 1) return `${p.toFixed(3)}%`;
  return `${p.toFixed(1)}%`;
}

const libc = koffi.load('libc.so.6');
const schedSetaffinity = libc.func('int sched_setaffinity(int pid, size_t size, const uint8_t *mask)') as
  (pid: number, size: number, mask: Uint8Array) => number;
const schedGetaffinity = libc.func('int sched_getaffinity(int pid, size_t size, _Out_ uint8_t *mask)') as
  (pid: number, size: number, mask: Uint8Array) => number;
/** sizeof(cpu_set_t) in glibc: 1024 CPUs. */
const CPU_SET_BYTES = 128;

function threadIds(): number[] {
  return readdirSync('/proc/self/task').map(Number);
}

/**
 * Pin every thread of this process (V8 and libuv helpers included, and the threads they
 * start later, which inherit it) to `cpuList`. Returns a function restoring the previous
 * affinity of each thread that still exists.
 */
export function pinProcess(cpuList: number[]): () => void {
  const mask = new Uint8Array(CPU_SET_BYTES);
  for (const c of cpuList) mask[c >>> 3] |= 1 << (c & 7);
  const saved = new Map<number, Uint8Array>();
  for (const tid of threadIds()) {
    const old = new Uint8Array(CPU_SET_BYTES);
    if (schedGetaffinity(tid, CPU_SET_BYTES, old) === 0) saved.set(tid, old);
    if (schedSetaffinity(tid, CPU_SET_BYTES, mask) !== 0) {
      throw new Error(`sched_setaffinity(${tid}, cpus ${cpuList.join(',')}) failed (errno ${koffi.errno()})`);
    }
  }
  return () => {
    for (const [tid, old] of saved) schedSetaffinity(tid, CPU_SET_BYTES, old);
  };
}

/** CPU time (user + system, all threads) of this process in seconds. */
export function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** /proc/stat and /proc/<pid>/stat count in USER_HZ, 100 on every Linux architecture netrig targets. */
const USER_HZ = 100;

/** Seconds each CPU spent busy or stolen by the hypervisor since boot (index = CPU id). */
export function cpuBusySeconds(): number[] {
  const out: number[] = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    // user nice system idle iowait irq softirq steal
    const [user, nice, system, , , irq, softirq, steal] = m[2].split(' ').map(Number);
    out[Number(m[1])] = (user + nice + system + irq + softirq + steal) / USER_HZ;
  }
  return out;
}

/** CPU seconds (user + system) of process `pid`, 0 once it is gone. */
export function processCpuSeconds(pid: number | string): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
  } catch {
    return 0;
  }
}

/** Online CPUs of this machine, from /sys (cpus() counts them too, but not their ids). */
export function onlineCpus(): number[] {
  const out: number[] = [];
  for (const part of readFileSync('/sys/devices/system/cpu/online', 'utf8').trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out;
}
