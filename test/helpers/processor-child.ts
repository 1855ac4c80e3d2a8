/**
 * `netrig process` as a child process over the embedded engine, for tests that kill it,
 * and `netrig query` to read its store while no processor holds it (the engine allows one
 * process per data dir).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { killSync, onExit } from './cleanup.js';
import { waitExit } from './nats-server.js';
import { CLI } from './paths.js';

const run = promisify(execFile);

export interface ProcessorChildOptions {
  natsUrl: string;
  database: string;
  functions: string[];
  /** The embedded engine's data dir, or a server's URL and password. */
  dataDir?: string;
  clickhouseUrl?: string;
  clickhouseUser?: string;
  clickhousePassword?: string;
  /** Seconds (default 3: a killed processor's shards pass on quickly). */
  leaseTtl?: number;
  /** --max-connections (default: the processor's). */
  maxConnections?: number;
  /** --stream-replicas (default: the processor's). */
  streamReplicas?: number;
}

/** A lease event from a processor's log. */
export interface LeaseEvent {
  msg: 'lease acquired' | 'lease released' | 'lease lost';
  shard: number;
  /** ISO time of the log line. */
  time: string;
  /** For a lost lease: until when it could have been used. */
  usableUntil?: string;
}

/** `netrig process` as a child; its /metrics port comes from its log once it runs. */
export class ProcessorChild {
  readonly child: ChildProcess;
  private lines: string[] = [];
  /** Every lease event it logged, in order. */
  readonly leaseEvents: LeaseEvent[] = [];
  private readonly unregister: () => void;
  readonly port: Promise<number>;

  constructor(o: ProcessorChildOptions) {
    const store = o.clickhouseUrl
      ? ['--clickhouse-url', o.clickhouseUrl, '--clickhouse-user', o.clickhouseUser ?? 'default', '--clickhouse-password', o.clickhousePassword ?? '']
      : ['--data-dir', o.dataDir ?? ''];
    this.child = spawn(process.execPath, [
      CLI, 'process', '--nats', o.natsUrl, ...store, '--database', o.database, '--lease-ttl', String(o.leaseTtl ?? 3),
      '--functions', o.functions.join(','), '--flush-interval-ms', '50', '--metrics-port', '0', '--ttl-days', '3650',
      ...(o.maxConnections ? ['--max-connections', String(o.maxConnections)] : []),
      ...(o.streamReplicas ? ['--stream-replicas', String(o.streamReplicas)] : []),
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETRIG_LOG_LEVEL: 'info' } });
    const pid = this.child.pid;
    this.unregister = onExit(`netrig process ${pid}`, () => killSync(pid));
    this.port = new Promise<number>((resolve, reject) => {
      let partial = '';
      const onData = (chunk: Buffer) => {
        const text = partial + chunk.toString();
        const parts = text.split('\n');
        partial = parts.pop() ?? '';
        for (const line of parts) {
          this.lines.push(line);
          if (this.lines.length > 200) this.lines.shift();
          if (/"msg":"lease (acquired|released|lost)"/.test(line)) this.leaseEvents.push(JSON.parse(line) as LeaseEvent);
          // The port is served before the processor starts; resolve once it runs.
          const m = /"metricsPort":(\d+)/.exec(line);
          if (m && line.includes('processor running')) resolve(Number(m[1]));
        }
      };
      this.child.stdout!.on('data', onData);
      this.child.stderr!.on('data', onData);
      this.child.once('exit', (code, sig) => reject(new Error(`netrig process exited (${code ?? sig}) before it ran:\n${this.log()}`)));
    });
  }

  log(): string {
    return this.lines.join('\n');
  }

  /** Shards whose leases it holds, as its log tells. */
  heldShards(): number[] {
    const held = new Set<number>();
    for (const e of this.leaseEvents) {
      if (e.msg === 'lease acquired') held.add(e.shard);
      else held.delete(e.shard);
    }
    return [...held].sort((a, b) => a - b);
  }

  /** Sum of a counter or gauge over its labels, from /metrics. */
  async metric(name: string): Promise<number> {
    return (await this.metricSeries(name)).reduce((n, s) => n + s.value, 0);
  }

  /** Each label set of a counter or gauge with its value, from /metrics. */
  async metricSeries(name: string): Promise<{ labels: Record<string, string>; value: number }[]> {
    const text = await (await fetch(`http://127.0.0.1:${await this.port}/metrics`)).text();
    const series = [];
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      const labels: Record<string, string> = {};
      for (const m of line.slice(name.length, line.lastIndexOf(' ')).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
      series.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
    }
    return series;
  }

  async signal(sig: NodeJS.Signals): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
    if (!(await waitExit(this.child, 30_000))) {
      this.child.kill('SIGKILL');
      await waitExit(this.child, 10_000);
    }
    this.unregister();
    return this.child.exitCode;
  }
}

/** Rows through `netrig query` (a process of its own, since the engine locks the data dir). */
export async function queryStore<T>(dataDir: string, database: string, sql: string): Promise<T[]> {
  const { stdout } = await run(process.execPath, [CLI, 'query', '--data-dir', dataDir, '--database', database, '--format', 'json', sql], {
    maxBuffer: 256 << 20, env: { ...process.env, NETRIG_LOG_LEVEL: 'warn' },
  });
  return stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
}

