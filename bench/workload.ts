/**
 * The workload of the overhead, freshness and memory benchmarks: nginx (one worker) in a
 * network namespace, pinned to chosen CPUs, keep-alive without a per-connection request
 * limit (the tests' nginx closes a connection after 1000 requests, which h2load's rate mode
 * does not survive), serving a small static file with an access log as nginx does by
 * default; and h2load runs whose CPU time, request counts and per-request latencies are
 * collected. `netrig up` as a child process, pinned, with its readiness and row count.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../test/helpers/nats-server.js';
import type { Host } from '../test/helpers/netns.js';
import { CLI } from '../test/helpers/paths.js';
import { readEndpoint } from '../cli/endpoint-file.js';
import { readSecret } from '../lib/secret-file.js';
import { fileURLToPath } from 'node:url';

/** bench/up-main.ts compiled beside this file. */
const UP_MAIN = fileURLToPath(new URL('./up-main.js', import.meta.url));
import {
  endpointQuery, mean, percentile, pinPid, processTree, sleep, spawnChild, tempDir, waitForStderr, type Child, type TempDir,
} from './common.js';

export interface BenchNginx {
  readonly port: number;
  readonly url: string;
  /** Master and worker pids. */
  pids(): number[];
  stop(): Promise<void>;
}

/** The body of /small.txt. */
export const SMALL_BODY = 'netrig bench small file\n'.repeat(6);

/** nginx, one worker, in `host`'s namespace on `port`, every process pinned to `cpus`. */
export async function startBenchNginx(host: Host, cpus: number[], port = 8080): Promise<BenchNginx> {
  const dir = tempDir('nginx');
  const root = join(dir.path, 'www');
  mkdirSync(root);
  writeFileSync(join(root, 'small.txt'), SMALL_BODY);
  const conf = join(dir.path, 'nginx.conf');
  writeFileSync(conf, `
daemon off;
master_process on;
worker_processes 1;
user root;
pid ${dir.path}/nginx.pid;
error_log ${dir.path}/error.log warn;
events { worker_connections 16384; }
http {
  access_log ${dir.path}/access.log;
  client_body_temp_path ${dir.path}/client_body;
  proxy_temp_path ${dir.path}/proxy;
  fastcgi_temp_path ${dir.path}/fastcgi;
  uwsgi_temp_path ${dir.path}/uwsgi;
  scgi_temp_path ${dir.path}/scgi;
  types { text/plain txt; }
  default_type application/octet-stream;
  sendfile on;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  server {
    listen ${host.addr}:${port} backlog=65535;
    root ${root};
    location / { try_files $uri =404; }
    location /fresh/ { return 200 "ok\\n"; }
  }
}
`);
  const c = spawnChild('ip', ['netns', 'exec', host.ns, 'taskset', '-c', cpus.join(','), 'nginx', '-p', dir.path, '-c', conf], { group: true });
  const stop = async () => {
    await c.stop('SIGTERM', 10_000);
    dir.remove();
  };
  const url = `http://${host.addr}:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await host.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `${url}/small.txt`]);
    if (r.stdout === '200') break;
    if (c.exited() || Date.now() > deadline) {
      const log = (() => {
        try {
          return readFileSync(join(dir.path, 'error.log'), 'utf8');
        } catch {
          return '';
        }
      })();
      await stop();
      throw new Error(`nginx did not answer: ${c.stderr()} ${log}`);
    }
    await sleep(50);
  }
  // `ip netns exec` and taskset exec in place: the child is nginx's master.
  const pids = () => processTree(c.pid);
  for (const p of pids()) pinPid(p, cpus);
  return { port, url, pids, stop };
}

export interface H2loadResult {
  /** Requests that got a 2xx. */
  succeeded: number;
  failed: number;
  /** h2load's own figures. */
  seconds: number;
  reqPerS: number;
  /** CPU seconds h2load used (utime + stime, from its parent shell's cutime + cstime). */
  cpu: number;
  /** Per-request durations in µs (start of request to end of response), when logged. */
  latenciesUs: number[];
  output: string;
}

/**
 * Run h2load inside `host`'s namespace pinned to `cpus`; `args` are h2load's options before
 * the URL. With `log`, per-request durations are read from its --log-file.
 */
export async function runH2load(host: Host, cpus: number[], args: string[], url: string, o: { log?: TempDir; timeoutMs?: number } = {}): Promise<H2loadResult> {
  const logFile = o.log ? join(o.log.path, `h2load-${Date.now()}.log`) : '';
  const cmd = `taskset -c ${cpus.join(',')} h2load --h1 ${args.join(' ')}${logFile ? ` --log-file=${logFile}` : ''} ${url}; echo "H2LOAD_EXIT $?"; cat /proc/$$/stat`;
  const c = spawnChild('ip', ['netns', 'exec', host.ns, 'sh', '-c', cmd]);
  const timer = setTimeout(() => void c.stop('SIGKILL'), o.timeoutMs ?? 120_000);
  await c.done;
  clearTimeout(timer);
  const out = c.stdout();
  const exit = /H2LOAD_EXIT (\d+)/.exec(out);
  if (!exit || exit[1] !== '0') throw new Error(`h2load failed (${exit?.[1] ?? 'killed'}): ${out.slice(-1500)} ${c.stderr().slice(-500)}`);
  // The shell's stat: cutime and cstime (fields 16, 17) hold the waited-for h2load.
  const stat = out.slice(out.lastIndexOf(exit[0]) + exit[0].length).trim();
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpu = (Number(fields[13]) + Number(fields[14])) / 100;
  const fin = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(out);
  const req = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(out);
  if (!fin || !req) throw new Error(`unexpected h2load output: ${out.slice(-1500)}`);
  const latenciesUs: number[] = [];
  if (logFile) {
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      const cols = line.split('\t');
      if (cols.length >= 3 && cols[1].startsWith('2')) latenciesUs.push(Number(cols[2]));
    }
  }
  return { succeeded: Number(req[1]), failed: Number(req[2]), seconds: Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1), reqPerS: Number(fin[3]), cpu, latenciesUs, output: out };
}

export function latencyLine(us: number[]): { mean: number; p99: number } {
  return { mean: mean(us), p99: percentile(us, 99) };
}

/** A running `netrig up` child: its pids (node and nats-server), endpoint and row counts. */
export interface NetrigUp {
  readonly child: Child;
  readonly endpoint: string;
  readonly natsUrl: string;
  /** The up process and its descendants (nats-server). */
  pids(): number[];
  /** NATS disconnects its edge or processor logged so far (a slow consumer is cut off). */
  disconnects(): number;
  /** SELECT through the endpoint; the body as text. */
  query(sql: string): Promise<string>;
  /** CPU seconds of the edge's drain loop so far (netrig_edge_drain_cpu_seconds_total). */
  edgeDrainCpu(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Start `node dist/cli/main.js up` pinned to `cpus`, on free ports, in a fresh data dir,
 * capturing payload only in the given network namespaces; resolves once it says it runs.
 * `extra` are more CLI options (e.g. --flush-interval-ms).
 */
export async function startNetrigUp(cpus: number[], netns: number[], o: { extra?: string[]; tuned?: { lingerMs: number; flushIntervalMs: number }; env?: NodeJS.ProcessEnv } = {}): Promise<NetrigUp> {
  const data = tempDir('up');
  const natsPort = await freePort();
  const httpPort = await freePort();
  const args = o.tuned
    ? ['-c', cpus.join(','), process.execPath, UP_MAIN, JSON.stringify({
      dataDir: data.path, natsPort, httpPort, uiPort: 0, metricsPort: 0, processorMetricsPort: 0, includeNetns: netns.join(','),
      lingerMs: o.tuned.lingerMs, flushIntervalMs: o.tuned.flushIntervalMs,
    })]
    : [
      '-c', cpus.join(','), process.execPath, CLI, 'up', '--data-dir', data.path, '--nats-port', String(natsPort), '--http-port', String(httpPort), '--ui-port', '0',
      '--metrics-port', '0', '--processor-metrics-port', '0', '--include-netns', netns.join(','), ...(o.extra ?? []),
    ];
  const env = o.env ?? {};
  const child = spawnChild('taskset', args, { group: true, env: { ...process.env, NETRIG_LOG_LEVEL: process.env.NETRIG_LOG_LEVEL ?? 'info', ...env } });
  const stop = async () => {
    await child.stop('SIGTERM', 30_000);
    data.remove();
  };
  try {
    await waitForStderr(child, 'netrig up', /netrig up: running/);
  } catch (err) {
    await stop();
    throw err;
  }
  const endpoint = `http://127.0.0.1:${httpPort}`;
  // The endpoint's reader credential, as `netrig query` finds it.
  const found = readEndpoint(data.path);
  if (!found) {
    await stop();
    throw new Error(`netrig up runs but its endpoint file under ${data.path} is missing`);
  }
  // The edge's metrics: the port up logged, the password it generated.
  const edgePort = /"edgeMetricsPort":(\d+)/.exec(child.stderr())?.[1];
  const metricsAuth = `Basic ${Buffer.from(`netrig:${readSecret(join(data.path, 'metrics', 'metrics.password'))}`).toString('base64')}`;
  return {
    child,
    endpoint,
    natsUrl: `nats://127.0.0.1:${natsPort}`,
    pids: () => processTree(child.pid),
    disconnects: () => (child.stderr().match(/"nats":"disconnect"/g) ?? []).length,
    async edgeDrainCpu() {
      if (!edgePort) throw new Error('netrig up did not log its edge metrics port');
      const res = await fetch(`http://127.0.0.1:${edgePort}/metrics`, { headers: { authorization: metricsAuth } });
      const text = await res.text();
      if (!res.ok) throw new Error(`edge metrics (${res.status}): ${text.slice(0, 200)}`);
      const m = /^netrig_edge_drain_cpu_seconds_total (\S+)$/m.exec(text);
      if (!m) throw new Error('no netrig_edge_drain_cpu_seconds_total in the edge metrics');
      return Number(m[1]);
    },
    query: endpointQuery(endpoint, 'default', found.password),
    stop,
  };
}
