/**
 * Memory: resident memory (VmRSS) of the edge and the processor, run as separate processes
 * (`netrig edge`, `netrig process` with every function and the embedded ClickHouse engine,
 * both pinned to cpu 1, a nats-server of their own), against their own idle figures (empty
 * stream, nothing captured yet) as the baseline:
 *   idle       a few seconds after start;
 *   load       the overhead benchmark's load: h2load -> nginx at 10k req/s for
 *              NETRIG_BENCH_SECONDS (10) s from one namespace to another (cpu 0), sampled
 *              every 250 ms during the load and while the processor drains (up to
 *              NETRIG_BENCH_DRAIN_S, 45 s): the maximum;
 *   connections NETRIG_BENCH_CONNS (100k) TCP connections opened from a client namespace to
 *              a server namespace (bench/conn-client.ts, conn-server.ts: pairs of processes of
 *              at most 16k connections each, on a port per pair), one
 *              small request each, then held open and idle: both ends are captured sockets
 *              the processors track (200k); measured once every request's rows are
 *              committed (or after the drain bound). The workload's own RSS is shown for scale.
 * Also the kernel memory of the edge's BPF maps (bpftool, bytes_memlock), which RSS does
 * not show.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createHostPair, type HostPair } from '../test/helpers/netns.js';
import { freePort } from '../test/helpers/nats-server.js';
import { CLI } from '../test/helpers/paths.js';
import { envNumber, onlineCpus, pinProcess, type BenchContext, type Benchmark } from './harness.js';
import { f, machineLoad, rssMiB, sleep, spawnChild, startBenchNats, tempDir, type BenchNats, type Child } from './common.js';
import { runH2load, startBenchNginx, type BenchNginx } from './workload.js';

/** The edge's resident memory, idle and under load. */
const TARGET_EDGE_MIB = 64;
const LOAD_CPU = 0;
const NETRIG_CPU = 1;
const SECONDS = envNumber('NETRIG_BENCH_SECONDS', 10);
const DRAIN_S = envNumber('NETRIG_BENCH_DRAIN_S', 45);
const CONNS = Math.round(envNumber('NETRIG_BENCH_CONNS', 100_000));
/** Open files per process are capped at 20000 here (no CAP_SYS_RESOURCE): connections are spread over processes. */
const CONNS_PER_PROCESS = 16_000;
const FIRST_PORT = 9001;
const HERE = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));

/** A netrig CLI command as a pinned child, ready once `ready` shows on its log. */
async function startCli(args: string[], ready: RegExp): Promise<Child> {
  const c = spawnChild('taskset', ['-c', String(NETRIG_CPU), process.execPath, CLI, ...args], { group: true, env: { ...process.env, NETRIG_LOG_LEVEL: 'info' } });
  const deadline = Date.now() + 60_000;
  while (!ready.test(c.stderr())) {
    if (c.exited() || Date.now() > deadline) {
      const err = c.stderr().slice(-3000);
      await c.stop('SIGKILL');
      throw new Error(`netrig ${args[0]} did not start: ${err}`);
    }
    await sleep(50);
  }
  return c;
}

/** http_requests rows the processor committed, from its metrics. */
async function committedRows(metricsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const m = /netrig_processor_rows_total\{table="http_requests"\} (\d+)/.exec(text);
  return m ? Number(m[1]) : 0;
}

/** Resident MiB of the BPF maps a process has mapped (the edge's ring buffer), from smaps. */
function mappedBpfMiB(pid: number): number {
  try {
    let kb = 0;
    let inMap = false;
    for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
      if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inMap = line.endsWith('anon_inode:bpf-map');
      else if (inMap && line.startsWith('Rss:')) kb += Number(/(\d+)/.exec(line)![1]);
    }
    return kb / 1024;
  } catch {
    return NaN;
  }
}

/** Kernel memory of the BPF maps a process holds open, MiB (from each map fd's fdinfo memlock). */
function bpfMapMiB(pid: number): number {
  let bytes = 0;
  const seen = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let target = '';
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (target !== 'anon_inode:bpf-map') continue;
      const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const id = /map_id:\s*(\d+)/.exec(info)?.[1] ?? fd;
      if (seen.has(id)) continue;
      seen.add(id);
      bytes += Number(/memlock:\s*(\d+)/.exec(info)?.[1] ?? 0);
    }
  } catch {
    return NaN;
  }
  return bytes / 2 ** 20;
}

interface Sample {
  edge: number;
  proc: number;
  nats: number;
}

class Sampler {
  max: Sample = { edge: 0, proc: 0, nats: 0 };
  private timer: NodeJS.Timeout | null = null;
  constructor(private readonly pids: { edge: number; proc: number; nats: number }) {}
  now(): Sample {
    return { edge: rssMiB(this.pids.edge), proc: rssMiB(this.pids.proc), nats: rssMiB(this.pids.nats) };
  }
  start(): void {
    this.max = this.now();
    this.timer = setInterval(() => {
      const s = this.now();
      for (const k of ['edge', 'proc', 'nats'] as const) if (s[k] > this.max[k]) this.max[k] = s[k];
    }, 250);
  }
  stop(): Sample {
    if (this.timer) clearInterval(this.timer);
    const s = this.now();
    for (const k of ['edge', 'proc', 'nats'] as const) if (s[k] > this.max[k]) this.max[k] = s[k];
    return this.max;
  }
}

async function waitRows(proc: Child, metricsPort: number, want: number, seconds: number): Promise<{ rows: number; waited: number }> {
  const t = performance.now();
  let rows = 0;
  let failures = 0;
  for (;;) {
    try {
      rows = await committedRows(metricsPort);
      failures = 0;
    } catch (err) {
      // A busy processor can miss a poll (a keep-alive connection closed under the request);
      // ten in a row, or an exit, end the benchmark.
      if (++failures >= 10 || proc.exited()) {
        const cause = (err as Error & { cause?: Error }).cause?.message ?? '';
        throw new Error(`the processor's metrics did not answer (${(err as Error).message} ${cause}; ${proc.exited() ? `it exited with ${proc.child.exitCode ?? proc.child.signalCode}` : 'it runs'}): ${proc.stderr().slice(-3000)}`);
      }
      await sleep(1000);
      continue;
    }
    if (rows >= want || performance.now() - t >= seconds * 1000) break;
    await sleep(500);
  }
  return { rows, waited: (performance.now() - t) / 1000 };
}

async function run(ctx: BenchContext): Promise<void> {
  if (!onlineCpus().includes(LOAD_CPU) || !onlineCpus().includes(NETRIG_CPU)) throw new Error(`needs cpus ${LOAD_CPU} and ${NETRIG_CPU}`);
  ctx.line(`before: ${await machineLoad()}`);
  const unpin = pinProcess([NETRIG_CPU]);
  const data = tempDir('memory');
  let pair: HostPair | null = null;
  let nats: BenchNats | null = null;
  let edge: Child | null = null;
  let proc: Child | null = null;
  let nginx: BenchNginx | null = null;
  const servers: Child[] = [];
  const clients: Child[] = [];
  try {
    pair = await createHostPair();
    const netns = [pair.client.netnsIno(), pair.server.netnsIno()].join(',');
    nats = await startBenchNats();
    const metricsPort = await freePort();
    edge = await startCli(['edge', '--nats', nats.url, '--region', 'bench', '--node', 'bench', '--include-netns', netns, '--metrics-port', '0'], /edge running/);
    proc = await startCli(['process', '--nats', nats.url, '--data-dir', data.path, '--metrics-port', String(metricsPort)], /processor running/);
    const pids = { edge: edge.pid, proc: proc.pid, nats: nats.pid };
    const sampler = new Sampler(pids);
    await sleep(5000);
    const idle = sampler.now();
    const ringRss = mappedBpfMiB(edge.pid);
    const bpf = bpfMapMiB(edge.pid);
    ctx.line(
      `idle: edge ${f(idle.edge, 0)} MiB (of it the ring buffer's mapping ${f(ringRss, 0)} MiB), processor ${f(idle.proc, 0)} MiB (all functions, embedded ClickHouse), nats-server ${f(idle.nats, 0)} MiB; ` +
      `edge's BPF maps (kernel memory, not in RSS): ${Number.isFinite(bpf) ? `${f(bpf, 0)} MiB` : 'unknown'}`,
    );
    const d = (x: number, base: number) => `${f(x, 0)} MiB (${x >= base ? '+' : ''}${f(x - base, 0)}, ${f(x / base, 2)}x idle)`;

    // Load: the overhead benchmark's 10k req/s.
    nginx = await startBenchNginx(pair.server, [LOAD_CPU]);
    // nginx's readiness check made an exchange of its own.
    const readyRows = (await waitRows(proc, metricsPort, 2, 10)).rows;
    sampler.start();
    const r = await runH2load(pair.client, [LOAD_CPU], ['-D', String(SECONDS), '-c', '50', '-t', '1', '--rps', '200'], `${nginx.url}/small.txt`);
    const drained = await waitRows(proc, metricsPort, readyRows + 2 * r.succeeded, DRAIN_S);
    drained.rows -= readyRows;
    const load = sampler.stop();
    ctx.line(
      `load (${r.succeeded} requests at ${f(r.reqPerS / 1000, 1)}k req/s, ${drained.rows} of ${2 * r.succeeded} rows committed ${f(drained.waited, 0)} s after it), max: ` +
      `edge ${d(load.edge, idle.edge)}, processor ${d(load.proc, idle.proc)}, nats-server ${f(load.nats, 0)} MiB`,
    );
    const edgeMax = Math.max(idle.edge, load.edge);
    ctx.line(
      `target edge RSS <= ${TARGET_EDGE_MIB} MiB idle and under load: ${edgeMax <= TARGET_EDGE_MIB ? 'met' : 'NOT met'} ` +
      `(idle ${f(idle.edge, 0)}, load ${f(load.edge, 0)} MiB; without the ring's mapping ${f(idle.edge - ringRss, 0)} and ${f(load.edge - ringRss, 0)} MiB)`,
    );
    await nginx.stop();
    nginx = null;
    const baseRows = await committedRows(metricsPort);

    // 100k connections held open.
    for (const [host, sysctls] of [
      [pair.client, ['net.ipv4.ip_local_port_range=1024 65535']],
      [pair.server, ['net.core.somaxconn=65535', 'net.ipv4.tcp_max_syn_backlog=65535']],
    ] as const) {
      for (const s of sysctls) {
        const res = await host.exec('sysctl', ['-w', s]);
        if (res.code !== 0) throw new Error(`sysctl -w ${s} in ${host.ns}: ${res.stderr}`);
      }
    }
    const procs = Math.ceil(CONNS / CONNS_PER_PROCESS);
    const ports = Array.from({ length: procs }, (_, i) => FIRST_PORT + i);
    for (const port of ports) {
      servers.push(spawnChild('ip', ['netns', 'exec', pair.server.ns, 'taskset', '-c', String(LOAD_CPU), process.execPath, HERE('conn-server.js'), pair.server.addr, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] }));
    }
    const t0 = Date.now();
    while (!servers.every((sv) => /listening/.test(sv.stdout()))) {
      if (servers.some((sv) => sv.exited()) || Date.now() - t0 > 15_000) throw new Error(`conn-server did not start: ${servers.map((sv) => sv.stderr()).join(' ')}`);
      await sleep(50);
    }
    sampler.start();
    const tc = performance.now();
    ports.forEach((port, i) => {
      const n = Math.floor(CONNS / procs) + (i < CONNS % procs ? 1 : 0);
      clients.push(spawnChild('ip', ['netns', 'exec', pair!.client.ns, 'taskset', '-c', String(LOAD_CPU), process.execPath, HERE('conn-client.js'), pair!.server.addr, String(port), String(n), '500'], { stdio: ['pipe', 'pipe', 'pipe'] }));
    });
    let opened = 0;
    let failed = 0;
    for (;;) {
      const states = clients.map((c) => /ready (\d+) (\d+)/.exec(c.stdout()));
      if (states.every(Boolean)) {
        opened = states.reduce((n, m) => n + Number(m![1]), 0);
        failed = states.reduce((n, m) => n + Number(m![2]), 0);
        break;
      }
      if (clients.some((c) => c.exited()) || performance.now() - tc > 180_000) {
        throw new Error(`conn-client: ${clients.map((c) => c.stdout().slice(-100) + c.stderr().slice(-500)).join(' | ')}`);
      }
      await sleep(200);
    }
    const openSecs = (performance.now() - tc) / 1000;
    if (opened < CONNS * 0.99) throw new Error(`only ${opened} of ${CONNS} connections got their answer (${failed} failed)`);
    const conns = await waitRows(proc, metricsPort, baseRows + 2 * opened, DRAIN_S * 2);
    await sleep(2000);
    const held = sampler.now();
    const peak = sampler.stop();
    const bpf2 = bpfMapMiB(edge.pid);
    const perConn = (x: number, base: number) => `${f(((x - base) * 1024) / (2 * opened), 2)} KiB per captured socket`;
    ctx.line(
      `${opened} connections open (${f(openSecs, 0)} s to open; ${2 * opened} captured sockets), ${conns.rows - baseRows} of ${2 * opened} rows committed after ${f(conns.waited, 0)} s more: ` +
      `edge ${d(held.edge, idle.edge)}, processor ${d(held.proc, idle.proc)} = ${perConn(held.proc, idle.proc)}; peak while opening: edge ${f(peak.edge, 0)}, processor ${f(peak.proc, 0)} MiB; ` +
      `edge's BPF maps ${Number.isFinite(bpf2) ? `${f(bpf2, 0)} MiB` : 'unknown'}`,
    );
    const sum = (cs: Child[]) => cs.reduce((n, c) => n + rssMiB(c.pid), 0);
    ctx.line(`for scale, the workload holding them: ${procs} server processes ${f(sum(servers), 0)} MiB, ${procs} client processes ${f(sum(clients), 0)} MiB (node)`);
    if (nats.slowConsumers()) ctx.line(`WARNING: nats-server cut off a slow consumer ${nats.slowConsumers()} times during the benchmark`);
    ctx.line(`after: ${await machineLoad()}`);
  } finally {
    for (const c of [...clients, ...servers]) await c.stop('SIGKILL');
    await nginx?.stop();
    await proc?.stop('SIGTERM', 30_000);
    await edge?.stop('SIGTERM', 30_000);
    await nats?.stop();
    await pair?.destroy();
    data.remove();
    unpin();
  }
}

export const benchmark: Benchmark = {
  name: 'memory',
  title: 'RSS of netrig edge and netrig process: idle, under 10k req/s, and with 100k open connections tracked',
  run,
};
