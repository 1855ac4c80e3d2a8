/**
 * A real Prometheus (Debian's) scraping netrig's metrics: a generated configuration with one
 * job, Basic auth from a password file, scraped every second, its TSDB in a temporary
 * directory, listening on a free loopback port. query() runs PromQL through its HTTP API.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pollUntil } from './cleanup-all.js';
import { killSync, onExit } from './cleanup.js';
import { freePort, waitExit } from './nats-server.js';

export interface PrometheusTarget {
  /** host:port of a /metrics endpoint. */
  address: string;
  /** Basic auth: user and the file holding the password. */
  user: string;
  passwordFile: string;
}

/** One sample of an instant vector: its labels and value. */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface PrometheusHandle {
  readonly url: string;
  query(promql: string): Promise<PromSample[]>;
  /** Its output so far. */
  log(): string;
  stop(): Promise<void>;
}

export async function startPrometheus(target: PrometheusTarget): Promise<PrometheusHandle> {
  const dir = mkdtempSync(join(tmpdir(), `netrig-prometheus-${process.pid}-`));
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    'scrape_configs:',
    '  - job_name: netrig',
    '    basic_auth:',
    `      username: ${JSON.stringify(target.user)}`,
    `      password_file: ${JSON.stringify(target.passwordFile)}`,
    '    static_configs:',
    `      - targets: [${JSON.stringify(target.address)}]`,
    '',
  ].join('\n'));
  const child = spawn('prometheus', [
    `--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  const unregister = onExit(`prometheus ${child.pid}`, () => {
    killSync(child.pid);
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    child.kill('SIGTERM');
    if (!(await waitExit(child, 10_000))) child.kill('SIGKILL');
    await waitExit(child, 5000);
    rmSync(dir, { recursive: true, force: true });
    unregister();
  };
  const ready = await pollUntil(async () => (await fetch(`${url}/-/ready`).then((r) => r.status, () => 0)) === 200 || child.exitCode !== null, 30_000, 200);
  if (!ready || child.exitCode !== null) {
    await stop();
    throw new Error(`prometheus did not become ready:\n${output.slice(-2000)}`);
  }
  return {
    url,
    async query(promql) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
      const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] } };
      if (body.status !== 'success' || body.data?.resultType !== 'vector') throw new Error(`PromQL ${promql}: ${body.error ?? JSON.stringify(body)}`);
      return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    log: () => output,
    stop,
  };
}
