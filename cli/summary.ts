/**
 * The live summary of `netrig up`: records/s, rows/s per table, lost records, the
 * processors writing its database with their consumer lag and shards (from their
 * heartbeats, as `netrig status` shows them: more processors may have joined), and the
 * slowest endpoints by p99 (refreshed every 15 s). Redrawn in place on a terminal; one plain
 * line per interval otherwise (logs, CI).
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { Edge } from '../edge/edge.js';
import type { ClickHouse } from '../lib/clickhouse.js';
import { readProcessors, type ProcessorStatus } from '../lib/heartbeat.js';
import type { Processor } from '../processors/runtime/processor.js';

/**
 * The slowest endpoints are looked up this often, not at every redraw: the query reads
 * five minutes of requests (3M rows at 10k requests/s), and once a second it was a large
 * share of what `netrig up` spends at that rate.
 */
const TOP_REFRESH_MS = 15_000;

interface TopEndpoint {
  host: string;
  path: string;
  n: string;
  p99_ms: number;
}

export class Summary {
  private timer: NodeJS.Timeout | null = null;
  private lastRecords = 0;
  private lastRows = new Map<string, number>();
  private lastAt = performance.now();
  private busy = false;
  private lastTop: TopEndpoint[] = [];
  private lastTopAt = -Infinity;
  /** The edge's capture path and features, e.g. `socket (drop_reasons,reset_reasons,tls:openssl_uprobes)`. */
  private readonly capture: string;

  constructor(
    private readonly edge: Edge,
    private readonly processor: Processor,
    private readonly ch: ClickHouse,
    private readonly nc: NatsConnection,
    private readonly out: NodeJS.WriteStream,
    private readonly intervalMs: number,
  ) {
    this.capture = `${edge.capture.path} (${edge.capture.features.join(',')})`;
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async top(): Promise<TopEndpoint[]> {
    try {
      const rs = await this.ch.client.query({
        query: `SELECT host, path, count() AS n, round(quantile(0.99)(latency_ns) / 1e6, 2) AS p99_ms
                FROM ${this.ch.database}.http_requests WHERE ts > now64(9) - INTERVAL 5 MINUTE AND timed_out = 0
                GROUP BY host, path ORDER BY p99_ms DESC LIMIT 5`,
        format: 'JSONEachRow',
      });
      return await rs.json<TopEndpoint>();
    } catch {
      return [];
    }
  }

  /** Processors of this database by their heartbeats; this one's own figures until it has beaten. */
  private async processors(): Promise<{ n: number; lag: number; shards: number }> {
    const st = await readProcessors(this.nc, this.ch.database).catch((): ProcessorStatus[] => []);
    if (!st.length) return { n: 1, lag: await this.processor.metrics.totalLag(), shards: this.processor.shards().length };
    return { n: st.length, lag: st.reduce((a, s) => a + s.lag, 0), shards: new Set(st.flatMap((s) => s.lanes)).size };
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const now = performance.now();
      const secs = Math.max(0.001, (now - this.lastAt) / 1000);
      this.lastAt = now;
      const records = this.edge.drainedTotal;
      const recordsPerSec = (records - this.lastRecords) / secs;
      this.lastRecords = records;
      const rowsPerSec: [string, number][] = [];
      for (const v of (await this.processor.metrics.rows.get()).values) {
        const table = String(v.labels.table);
        rowsPerSec.push([table, (v.value - (this.lastRows.get(table) ?? 0)) / secs]);
        this.lastRows.set(table, v.value);
      }
      const lost = this.edge.ledger.total();
      const processors = await this.processors();
      if (now - this.lastTopAt >= TOP_REFRESH_MS) {
        this.lastTop = await this.top();
        this.lastTopAt = now;
      }
      const top = this.lastTop;
      if (this.out.isTTY) this.draw(recordsPerSec, rowsPerSec, lost, processors, top);
      else this.line(recordsPerSec, rowsPerSec, lost, processors, top);
    } finally {
      this.busy = false;
    }
  }

  private line(rps: number, rows: [string, number][], lost: number, p: { n: number; lag: number; shards: number }, top: TopEndpoint[]): void {
    const rowText = rows.map(([t, r]) => `${t}=${r.toFixed(1)}`).join(' ');
    const slow = top[0] ? ` slowest=${top[0].host}${top[0].path} p99=${top[0].p99_ms}ms` : '';
    this.out.write(`netrig: capture=${this.capture} records/s=${rps.toFixed(0)} rows/s ${rowText || '-'} lost=${lost} lag=${p.lag} processors=${p.n} shards=${p.shards}${slow}\n`);
  }

  private draw(rps: number, rows: [string, number][], lost: number, p: { n: number; lag: number; shards: number }, top: TopEndpoint[]): void {
    const lines = [
      `netrig up — ${new Date().toISOString()}  (Ctrl-C stops)`,
      '',
      `  capture       ${this.capture}`,
      `  records/s     ${rps.toFixed(0)}`,
      `  lost records  ${lost}`,
      `  processors    ${p.n} (shards held: ${p.shards})`,
      `  consumer lag  ${p.lag} messages`,
      '',
      '  rows/s',
      ...(rows.length ? rows.map(([t, r]) => `    ${t.padEnd(16)} ${r.toFixed(1)}`) : ['    -']),
      '',
      '  slowest endpoints (p99, last 5 min)',
      ...(top.length ? top.map((e) => `    ${String(e.p99_ms).padStart(10)} ms  ${e.n.padStart(7)}  ${e.host}${e.path}`) : ['    -']),
    ];
    this.out.write(`\x1b[H\x1b[2J${lines.join('\n')}\n`);
  }
}
