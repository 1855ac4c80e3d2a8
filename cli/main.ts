#!/usr/bin/env node
/**
 * The netrig command line: edge, process, up, query, report, replay.
 */
import { Command } from 'commander';
import { NetrigError } from '../lib/errors.js';
import { rootLogger } from '../lib/logger.js';
import { runEdge } from '../edge/index.js';
import { runProcessor } from '../processors/index.js';

const program = new Command('netrig').description('eBPF network observability: kernel → NATS JetStream → ClickHouse');

/** Run until SIGINT/SIGTERM, then stop cleanly. */
function untilSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (sig: string) => {
    if (stopping) return;
    stopping = true;
    rootLogger.info({ signal: sig }, 'stopping');
    stop().then(() => process.exit(0), (err) => fail(err));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
}

function fail(err: unknown): never {
  if (err instanceof NetrigError) {
    process.stderr.write(`netrig: ${err.message}\n`);
    if (err.cause && process.env.NETRIG_LOG_LEVEL === 'debug') process.stderr.write(`cause: ${String((err.cause as Error).stack ?? err.cause)}\n`);
  } else {
    process.stderr.write(`netrig: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(1);
}

program
  .command('edge')
  .description('load the eBPF programs and publish what they capture to NATS JetStream')
  .option('--nats <url>', 'NATS server URL(s), comma-separated', 'nats://127.0.0.1:4222')
  .option('--region <name>', 'region this node belongs to', 'default')
  .option('--node <name>', 'node name (default: hostname)')
  .option('--shards <n>', 'shards per node', '16')
  .option('--stream <name>', 'JetStream stream name', 'NETRIG_RAW')
  .option('--stream-max-age <duration>', 'stream retention by age (e.g. 24h, 7d)', '24h')
  .option('--stream-max-bytes <size>', 'stream retention by size (e.g. 8GiB)', '8GiB')
  .option('--duplicate-window <duration>', 'message-id de-duplication window', '2m')
  .option('--capture-bytes <size>', 'payload bytes captured per syscall (max 64KiB)', '16KiB')
  .option('--sample-rate <share>', 'share of connections whose payload is captured (0..1)', '1')
  .option('--ring-bytes <size>', 'kernel ring buffer size (power of two)', '32MiB')
  .option('--conn-table <n>', 'sockets tracked at once', '262144')
  .option('--max-buffer-bytes <size>', 'envelopes buffered while NATS is away', '256MiB')
  .option('--include-pids <list>', 'capture payload only for these pids')
  .option('--exclude-pids <list>', 'never capture payload for these pids')
  .option('--include-ports <list>', 'capture payload only for these local or remote ports')
  .option('--exclude-ports <list>', 'never capture payload for these ports')
  .option('--include-netns <list>', 'capture payload only in these network namespaces (inode numbers)')
  .option('--exclude-netns <list>', 'never capture payload in these network namespaces')
  .option('--include-cgroups <list>', 'capture payload only in these cgroup v2 ids')
  .option('--report-unspecified-drops', 'also report drops whose reason is NOT_SPECIFIED')
  .option('--metrics-port <port>', 'Prometheus /metrics port (0 picks one)', '9464')
  .action(async (opts) => {
    const running = await runEdge(opts).catch(fail);
    rootLogger.info({ metricsPort: running.metricsPort }, 'edge running; Ctrl-C stops it');
    untilSignal(() => running.stop());
  });

program
  .command('process')
  .description('run processing functions: raw stream → ClickHouse rows')
  .option('--nats <url>', 'NATS server URL(s), comma-separated', 'nats://127.0.0.1:4222')
  .option('--functions <list>', 'functions to run (comma-separated, or all)', 'all')
  .option('--shards <n>', 'shards per node, as the edges publish them', '16')
  .option('--stream <name>', 'JetStream stream name', 'NETRIG_RAW')
  .option('--clickhouse-url <url>', 'a ClickHouse server (default: the embedded engine under --data-dir)')
  .option('--clickhouse-user <user>', 'ClickHouse user', 'default')
  .option('--clickhouse-password <password>', 'ClickHouse password', '')
  .option('--database <name>', 'ClickHouse database', 'netrig')
  .option('--data-dir <dir>', 'embedded ClickHouse data directory', './.netrig')
  .option('--ttl-days <n>', 'row retention in days', '30')
  .option('--flush-interval-ms <ms>', 'insert at least this often', '500')
  .option('--metrics-port <port>', 'Prometheus /metrics port (0 picks one)', '9465')
  .action(async (opts) => {
    const running = await runProcessor(opts).catch(fail);
    rootLogger.info({ metricsPort: running.metricsPort, clickhouse: running.ch.where }, 'processor running; Ctrl-C stops it');
    untilSignal(() => running.stop());
  });

program.parseAsync(process.argv).catch(fail);
