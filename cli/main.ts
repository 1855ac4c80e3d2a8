#!/usr/bin/env node
/**
 * The netrig command line: up, edge, process, nats, store, replay, configure, fanin, query, status, ui, report.
 *
 * Each command loads its own modules when it runs: one `netrig` binary serves every role,
 * and an edge that loaded the processors, the ClickHouse client and the endpoint would hold
 * their code and heap for nothing (its resident size is a figure users compare).
 */
import { constants } from 'node:os';
import { Command, Option } from 'commander';
import { ConfigError, NetrigError } from '../lib/errors.js';
import { rootLogger } from '../lib/logger.js';
import { connectNats, natsPermissionError } from '../lib/nats.js';
import { logger } from '../lib/logger.js';
import type { CaptureOverrides } from '../edge/index.js';
import type { QueryTargetInput } from './query.js';
import { DEFAULT_MAX_CONNECTIONS } from '../processors/l7/connection-table.js';
import { REPORTS } from './reports.js';
import { FILTERS, reportNamed, reportQuery, sinceWindow, type ReportQuery } from './report-query.js';

const program = new Command('netrig').description('eBPF network observability: kernel → NATS JetStream → ClickHouse');

function fail(failure: unknown): never {
  const err = natsPermissionError(failure) ?? failure;
  if (err instanceof NetrigError) {
    process.stderr.write(`netrig: ${err.message}\n`);
    if (err.cause && process.env.NETRIG_LOG_LEVEL === 'debug') process.stderr.write(`cause: ${String((err.cause as Error).stack ?? err.cause)}\n`);
  } else {
    const e = err as { message?: string; stack?: string };
    process.stderr.write(`netrig: ${process.env.NETRIG_LOG_LEVEL === 'debug' ? e?.stack : e?.message ?? String(err)}\n`);
  }
  process.exit(1);
}

/**
 * Run until SIGINT/SIGTERM, then stop cleanly and exit 0 (the processor's stop is bounded:
 * ClickHouse away, what is not committed stays in the stream). A second signal exits at
 * once with 128 + its number. That detaches the BPF programs too: the edge pins nothing, so
 * its programs and links live only through this process's descriptors, which the kernel
 * closes at exit (edge/bpf-object.ts; test/e2e/edge-detach.test.ts checks with bpftool).
 */
function untilSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      // Plain stderr, written before exit (pino's asynchronous line could be lost).
      process.stderr.write(`netrig: second ${sig}: exiting now; what was not committed stays in the stream for the next start\n`);
      process.exit(128 + constants.signals[sig]);
    }
    stopping = true;
    rootLogger.info({ signal: sig }, 'stopping');
    stop().then(() => process.exit(0), fail);
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
}

/** Open the query target, print the result of the SQL (and its query parameters) `sql(database)` builds, close. */
async function queryAndPrint(opts: QueryTargetInput & { format: string }, sql: (database: string) => { query: string; params?: Record<string, string> }): Promise<void> {
  try {
    const [{ openQueryTarget, runQuery }, { withPasswordFile }] = await Promise.all([import('./query.js'), import('./endpoint-file.js')]);
    const t = await openQueryTarget(withPasswordFile(opts));
    try {
      const q = sql(t.database);
      await runQuery(t, q.query, opts.format, process.stdout, q.params);
    } finally {
      await t.close();
    }
  } catch (err) {
    fail(err);
  }
}

/** Commander's collector of an option given more than once: every value, in order. */
const repeatable = (v: string, acc: string[]): string[] => [...acc, v];

/** How a command reaches NATS: URL, credentials (lib/nats.ts natsConnectOptions builds the connect options). */
function natsOption(cmd: Command): Command {
  return cmd
    .option('--nats <url>', 'NATS server URL(s), comma-separated')
    .option('--nats-creds <file>', 'NATS credentials file (.creds)')
    .option('--nats-user <user>', 'NATS user (netrig up: edge, processor or admin)')
    .addOption(new Option('--nats-password <password>', 'password of --nats-user').env('NETRIG_NATS_PASSWORD'))
    .option('--nats-password-file <file>', 'read the password of --nats-user from this file (e.g. a mounted secret)')
    .option('--nats-tls-ca <file>', 'CA certificate that signed the NATS server\'s (netrig up: <data-dir>/nats-tls/ca.pem)');
}

const REPLICAS_HELP = 'replicas of the raw stream and of netrig\'s KV buckets (leases, status, capture control) this command creates: 1, or 3 or 5 on a JetStream cluster';

/** The raw stream a command creates (the edge's, or a hub's): lib/raw-stream.ts streamSettings reads these. */
function streamOptions(cmd: Command): Command {
  return cmd
    .option('--stream <name>', 'JetStream stream name (a hub\'s is named like its regions\')', 'NETRIG_RAW')
    .option('--subject-prefix <prefix>', 'subjects are <prefix>.<region>.<node>.<shard>', 'netrig.raw')
    .option('--stream-max-age <duration>', 'stream retention by age (e.g. 24h, 7d)', '24h')
    .option('--stream-max-bytes <size>', 'stream retention by size (e.g. 8GiB)', '8GiB')
    .option('--duplicate-window <duration>', 'message-id de-duplication window', '2m')
    .option('--stream-replicas <n>', REPLICAS_HELP, '1');
}

function edgeOptions(cmd: Command): Command {
  return streamOptions(cmd)
    .option('--region <name>', 'region this node belongs to', 'default')
    .option('--node <name>', 'node name (default: hostname)')
    .option('--shards <n>', 'shards per node', '16')
    .option('--capture-bytes <size>', 'payload bytes captured per syscall (max 64KiB)', '16KiB')
    .option('--sample-rate <share>', 'share of connections whose payload is captured (0..1)', '1')
    .option('--ring-bytes <size>', 'kernel ring buffer size (power of two)', '32MiB')
    .option('--capture-path <path>', 'payload capture: auto (probe the kernel), socket (6.3+ socket tracepoints) or syscall (syscall tracepoints, any kernel)', 'auto')
    .option('--tls-conn-table <n>', 'TLS connections whose plaintext is followed at once', '65536')
    .option('--max-buffer-bytes <size>', 'envelopes buffered while NATS is away', '256MiB')
    .option('--include-pids <list>', 'capture payload only for these pids')
    .option('--exclude-pids <list>', 'never capture payload for these pids')
    .option('--include-ports <list>', 'capture payload only for these local or remote ports')
    .option('--exclude-ports <list>', 'never capture payload for these ports')
    .option('--include-netns <list>', 'capture payload only in these network namespaces (inode numbers)')
    .option('--exclude-netns <list>', 'never capture payload in these network namespaces')
    .option('--include-cgroups <list>', 'capture payload only in these cgroup v2 ids')
    .option('--report-noisy-drops', 'also report drops with reason NOT_SPECIFIED or QUEUE_PURGE (mostly normal frees)')
    .option('--raw-secrets <mode>', 'values of Authorization, Proxy-Authorization, Cookie and Set-Cookie headers in the raw stream: mask (same-length *) or keep', 'mask')
    .option('--metrics-port <port>', 'edge Prometheus /metrics port (0 picks one)', '9464')
    .option('--metrics-host <addr>', 'address of the /metrics endpoint (beyond loopback only with --metrics-password-file)', '127.0.0.1')
    .option('--metrics-password-file <file>', 'require this password (Basic auth, user netrig) on /metrics');
}

/**
 * Where a command's rows are: the embedded engine or a server (processors/index.ts
 * clickhouseTarget reads these). --clickhouse-cluster is checked before the command starts
 * anything: up and process would otherwise meet it only after starting NATS.
 */
function clickhouseOptions(cmd: Command, database: { help: string; default?: string } = { help: 'ClickHouse database', default: 'netrig' },
  dataDir: { help: string; default?: string } = { help: 'data directory (embedded ClickHouse, NATS store)', default: './.netrig' }): Command {
  return cmd
    .option('--clickhouse-url <url>', 'a ClickHouse server (default: the embedded engine under --data-dir)')
    .option('--clickhouse-user <user>', 'ClickHouse user')
    .option('--clickhouse-password <password>', 'ClickHouse password')
    .option('--clickhouse-password-file <file>', 'read the ClickHouse password from this file (e.g. <data dir>/endpoint/writer.password)')
    .option('--clickhouse-cluster <name>', 'a cluster of the --clickhouse-url server\'s remote_servers to create the tables on: ON CLUSTER DDL, replicated tables behind Distributed ones')
    .option('--database <name>', database.help, database.default)
    .option('--data-dir <dir>', dataDir.help, dataDir.default)
    .hook('preAction', async (c) => {
      const { clickhouseCluster } = await import('../schemas/cluster-ddl.js');
      try {
        clickhouseCluster(c.opts());
      } catch (err) {
        fail(err);
      }
    });
}

function processorOptions(cmd: Command): Command {
  return cmd
    .option('--functions <list>', 'processing functions to run (comma-separated, or all)', 'all')
    .option('--ttl-days <n>', 'row retention in days', '30')
    .option('--flush-interval-ms <ms>', 'insert rows at least this often', '500')
    .option('--lease-ttl <seconds>', 'a shard lease not renewed for this long passes to another processor', '10')
    .option('--max-connections <n>', 'connections the processor tracks at most; past it the least recently used are forgotten (counted in capture_losses)', String(DEFAULT_MAX_CONNECTIONS))
    .option('--keep-query-values', 'keep query parameter values in the path column (masked as *** by default)')
    .option('--metrics-max-series <n>', 'label sets each traffic metric (requests, durations, TCP events; Prometheus and OTLP) keeps at most; past it observations count under _overflow_', '5000')
    .option('--otlp-endpoint <url>', 'also export spans and metrics to this OpenTelemetry collector over OTLP/HTTP protobuf (e.g. http://127.0.0.1:4318), from lanes of their own')
    .option('--otlp-header <name=value>', 'a header sent with every OTLP export (repeatable)', repeatable, [] as string[])
    .option('--otlp-header-file <name=file>', "a header whose value is the file's first line, e.g. a mounted token (repeatable)", repeatable, [] as string[])
    .option('--otlp-metrics-interval <seconds>', 'seconds between OTLP metric exports', '10');
}

clickhouseOptions(processorOptions(edgeOptions(natsOption(program.command('up')))))
  .description('run the whole pipeline on this host: nats-server, edge, processor, embedded ClickHouse with an HTTP endpoint')
  .option('--nats-port <port>', 'port of the nats-server netrig starts (when --nats is not given)', '4222')
  .option('--nats-host <addr>', 'listen address of the nats-server netrig starts; beyond loopback it speaks TLS only', '127.0.0.1')
  .option('--nats-tls', 'TLS on the nats-server netrig starts even on loopback')
  .option('--http-port <port>', 'port of the ClickHouse-compatible HTTP endpoint on 127.0.0.1', '8123')
  .option('--user <name>', 'user the HTTP endpoint reads as', 'default')
  .option('--password <password>', "the reader's password (default: generated at first start into <data dir>/endpoint/reader.password)")
  .option('--processor-metrics-port <port>', 'processor Prometheus /metrics port (0 picks one)', '9465')
  .option('--summary-interval <seconds>', 'seconds between summary updates', '1')
  .option('--ui-port <port>', 'port of the page on 127.0.0.1 (0 picks one); Basic auth as the endpoint\'s reader', '8124')
  .option('--no-ui', 'serve no page')
  .action(async (opts) => {
    const { up } = await import('./up.js');
    const running = await up(opts).catch(fail);
    untilSignal(() => running.stop());
  });

program.command('nats')
  .description("run netrig's nats-server alone (as netrig up does): JetStream, its store encrypted, a password per role in <data dir>/nats-auth/; for fan-in a domain and leaf nodes")
  .option('--data-dir <dir>', 'data directory (the JetStream store, nats-auth/ with the passwords)', './.netrig')
  .option('--nats-host <addr>', 'listen address; beyond loopback it speaks TLS only', '127.0.0.1')
  .option('--nats-port <port>', 'client port', '4222')
  .option('--nats-tls', 'TLS even on loopback')
  .option('--stream <name>', 'the raw stream the roles may use', 'NETRIG_RAW')
  .option('--subject-prefix <prefix>', 'subjects the edge role may publish on: <prefix>.>', 'netrig.raw')
  .option('--domain <name>', "JetStream domain (a region's own, which its hub sources as $JS.<domain>.API)")
  .option('--leafnode-port <port>', 'a hub: accept regions as leaf nodes on this port (password generated into <data dir>/nats-auth/leaf.password)')
  .option('--leaf-remote <url>', "a region: join the hub at this URL (nats-leaf://hub:7422) as a leaf node")
  .option('--leaf-password-file <file>', "the leaf password: a region's to join its hub (the hub's nats-auth/leaf.password), or a hub's own instead of a generated one")
  .option('--user-password-file <role=file>', 'a role\'s password (edge, processor, admin) from a file instead of generated, e.g. a mounted secret (repeatable)', repeatable, [] as string[])
  .option('--nats-tls-ca <file>', "CA certificate of the hub's, when the hub speaks TLS")
  .action(async (opts) => {
    const { runNats } = await import('./nats.js');
    const running = await runNats(opts).catch(fail);
    untilSignal(() => running.stop());
  });

program.command('store')
  .description('serve the embedded ClickHouse engine under --data-dir on the HTTP endpoint (127.0.0.1), for processors of this host to write to (--clickhouse-url, user netrig_writer)')
  .option('--data-dir <dir>', 'data directory of the engine', './.netrig')
  .option('--database <name>', 'ClickHouse database', 'netrig')
  .option('--http-port <port>', 'port of the endpoint on 127.0.0.1', '8123')
  .option('--user <name>', 'user the endpoint reads as', 'default')
  .option('--password <password>', "the reader's password (default: generated at first start into <data dir>/endpoint/reader.password)")
  .option('--writer-password-file <file>', "the writer's password, from this file (default: generated at first start into <data dir>/endpoint/writer.password)")
  .action(async (opts) => {
    const { runStore } = await import('./store.js');
    const running = await runStore(opts).catch(fail);
    untilSignal(() => running.stop());
  });

edgeOptions(natsOption(program.command('edge')))
  .description('load the eBPF programs and publish what they capture to NATS JetStream')
  .option('--run-as <user>', 'user the edge becomes once its programs are attached, keeping only CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_SYS_PTRACE on its main thread (root: stay root)', 'nobody')
  .action(async (opts) => {
    const { runEdge } = await import('../edge/index.js');
    const running = await runEdge(opts).catch(fail);
    rootLogger.info({ metricsPort: running.metricsPort }, 'edge running; Ctrl-C stops it');
    untilSignal(() => running.stop());
  });

clickhouseOptions(processorOptions(natsOption(program.command('process'))))
  .description('run processing functions: raw stream → ClickHouse rows')
  .option('--shards <n>', 'shards per node, as the edges publish them', '16')
  .option('--stream <name>', 'JetStream stream name', 'NETRIG_RAW')
  .option('--subject-prefix <prefix>', 'subjects the edges publish on: <prefix>.<region>.<node>.<shard>', 'netrig.raw')
  .option('--metrics-port <port>', 'Prometheus /metrics port (0 picks one)', '9465')
  .option('--metrics-host <addr>', 'address of the /metrics endpoint (beyond loopback only with --metrics-password-file)', '127.0.0.1')
  .option('--metrics-password-file <file>', 'require this password (Basic auth, user netrig) on /metrics')
  .option('--stream-replicas <n>', REPLICAS_HELP, '1')
  .action(async (opts) => {
    const [{ runProcessor }, { withPasswordFile }] = await Promise.all([import('../processors/index.js'), import('./endpoint-file.js')]);
    const running = await Promise.resolve().then(() => runProcessor(withPasswordFile(opts))).catch(fail);
    rootLogger.info({ metricsPort: running.metricsPort, clickhouse: running.ch.where }, 'processor running; Ctrl-C stops it');
    untilSignal(() => running.stop());
  });

clickhouseOptions(natsOption(program.command('replay')), { help: 'database the replay writes (default replay_<time>; not the live one)' })
  .description('re-run processing over a time range of the raw stream into a separate database, for forensics')
  .option('--from <time>', 'start of the range (ISO time or epoch ms)')
  .option('--to <time>', 'end of the range (default: now)')
  .option('--region <name>', 'only the envelopes of this region')
  .option('--node <name>', 'only the envelopes of this node')
  .option('--functions <list>', 'processing functions to run (comma-separated, or all)', 'all')
  .option('--shards <n>', 'shards per node, as the edges publish them', '16')
  .option('--stream <name>', 'JetStream stream name', 'NETRIG_RAW')
  .option('--subject-prefix <prefix>', 'subjects the edges publish on', 'netrig.raw')
  .option('--keep-query-values', 'keep query parameter values in the path column (masked as *** by default)')
  .option('--ttl-days <n>', 'retention of the replay\'s rows in days, counted from when the traffic happened (a replay of old traffic needs it longer)', '30')
  .option('--progress-interval <seconds>', 'seconds between progress lines on stderr (default: 1 on a terminal, else 10)')
  .action(async (opts) => {
    try {
      const [{ runReplay }, { progressPrinter }, { intValue }] = await Promise.all([import('../processors/replay.js'), import('./replay-progress.js'), import('../lib/config.js')]);
      const progress = progressPrinter(process.stderr, opts.progressInterval === undefined ? undefined : intValue('progress-interval', opts.progressInterval, 1, 3600));
      const r = await runReplay(opts, undefined, progress).finally(() => progress.end());
      process.stdout.write(`replayed into database ${r.database}: ${Object.entries(r.rows).map(([t, n]) => `${t}=${n}`).join(' ')}\n`);
    } catch (err) {
      fail(err);
    }
  });

natsOption(program.command('configure'))
  .description('change capture settings of running edges (all, a region, or one node) without restarting them')
  .option('--region <name>', 'only the edges of this region')
  .option('--node <name>', 'only this node (with --region)')
  .option('--sample-rate <share>', 'share of new connections whose payload is captured (0..1)')
  .option('--capture-bytes <size>', 'payload bytes captured per syscall (max 64KiB)')
  .option('--include-pids <list>').option('--exclude-pids <list>')
  .option('--include-ports <list>').option('--exclude-ports <list>')
  .option('--include-netns <list>').option('--exclude-netns <list>')
  .option('--include-cgroups <list>')
  .option('--report-noisy-drops', 'also report drops with reason NOT_SPECIFIED or QUEUE_PURGE')
  .option('--clear', 'remove the overrides of this scope')
  .option('--show', 'print the overrides of this scope')
  .option('--stream-replicas <n>', REPLICAS_HELP, '1')
  .action(async (opts) => {
    try {
      const [{ controlBucket, controlKey }, { replicasValue }] = await Promise.all([import('../edge/control.js'), import('../lib/raw-stream.js')]);
      const replicas = replicasValue(opts.streamReplicas);
      const nc = await connectNats(opts, 'netrig-configure', logger('configure'));
      try {
        const kv = await controlBucket(nc, replicas);
        const key = controlKey(opts.region, opts.node);
        if (opts.clear) await kv.delete(key);
        else if (opts.show) process.stdout.write(`${(await kv.get(key))?.string() ?? '{}'}\n`);
        else {
          const keys = ['sampleRate', 'captureBytes', 'reportNoisyDrops', 'includePids', 'excludePids', 'includePorts', 'excludePorts', 'includeNetns', 'excludeNetns', 'includeCgroups'] as const;
          const o: CaptureOverrides = {};
          for (const k of keys) if (opts[k] !== undefined) (o as Record<string, unknown>)[k] = opts[k];
          await kv.put(key, JSON.stringify(o));
        }
      } finally {
        await nc.close();
      }
    } catch (err) {
      fail(err);
    }
  });

streamOptions(natsOption(program.command('fanin')))
  .description('make the hub\'s raw stream source each region\'s (JetStream domains joined as leaf nodes), or show the sources')
  .option('--source <region=domain>', 'a region and its JetStream domain (repeatable); sources already there are kept', repeatable, [] as string[])
  .option('--show', 'print each source with its lag and last activity')
  .option('--format <format>', 'table (for people) or json (one object per line)', 'table')
  .action(async (opts) => {
    try {
      const { faninPlan, runFanin } = await import('./fanin.js');
      const plan = faninPlan(opts);
      const log = logger('fanin');
      const nc = await connectNats(opts, 'netrig-fanin', log);
      try {
        await runFanin(nc, plan, process.stdout, log);
      } finally {
        await nc.close();
      }
    } catch (err) {
      fail(err);
    }
  });

/** Commands that only read find the rows themselves when given no place (cli/query.ts openQueryTarget). */
const READ_DATABASE = { help: "ClickHouse database (default: the running netrig up's, else netrig)" };
const READ_DATA_DIR = { help: 'data directory of the rows (default: the running netrig up\'s, else ./.netrig)' };

clickhouseOptions(program.command('query'), READ_DATABASE, READ_DATA_DIR)
  .description('run SQL against the rows (through the running `netrig up`, a data dir, or a server)')
  .argument('<sql>', 'the SQL statement')
  .option('--format <format>', 'table (for people) or json (one object per line)', 'table')
  .action((sql: string, opts) => queryAndPrint(opts, () => ({ query: sql })));

natsOption(program.command('status'))
  .description("processors and edges running now, from their heartbeats in NATS (default: the running netrig up's)")
  .option('--data-dir <dir>', 'ask the netrig up holding this data dir (when several run)')
  .option('--format <format>', 'table (for people) or json (one object per line)', 'table')
  .action(async (opts) => {
    const { printStatus, statusNats } = await import('./status.js');
    const nc = await Promise.resolve().then(() => connectNats(statusNats(opts), 'netrig-status', logger('status'))).catch(fail);
    try {
      await printStatus(nc, opts.format, process.stdout);
    } catch (err) {
      fail(err as Error);
    } finally {
      await nc.close();
    }
  });

clickhouseOptions(program.command('ui'), READ_DATABASE, READ_DATA_DIR)
  .description('serve the page (service map, endpoints, TCP, DNS, TLS, losses) over the rows wherever they are (as `query` finds them; --clickhouse-url: any ClickHouse)')
  .option('--ui-port <port>', 'port of the page on 127.0.0.1 (0 picks one)', '8124')
  .option('--user <name>', 'user the page asks browsers for (Basic auth)', 'default')
  .option('--password <password>', 'password the page asks browsers for')
  .option('--password-file <file>', 'read the page\'s password from this file (e.g. <data dir>/endpoint/reader.password)')
  .action(async (opts) => {
    const { runUi } = await import('./ui.js');
    const running = await runUi(opts).catch(fail);
    untilSignal(() => running.stop());
  });

clickhouseOptions(program.command('report'), READ_DATABASE, READ_DATA_DIR)
  .description(`ready reports: ${Object.keys(REPORTS).join(', ')}`)
  .argument('<name>', 'report name')
  .option('--format <format>', 'table or json', 'table')
  .option('--since <interval>', 'look-back window, e.g. "1 HOUR", "15 MINUTE", "7 DAY"', '1 HOUR')
  .option('--filter <name=value>', `only rows matching (repeatable; HTTP reports): ${Object.keys(FILTERS).join(', ')}`, repeatable, [] as string[])
  .action(async (name: string, opts) => {
    let query: (database: string) => ReportQuery;
    try {
      const report = reportNamed(name);
      const window = sinceWindow(opts.since);
      const filters = Object.fromEntries((opts.filter as string[]).map((f) => {
        const i = f.indexOf('=');
        if (i <= 0) throw new ConfigError('filter', `expected name=value, got ${JSON.stringify(f)}`);
        return [f.slice(0, i), f.slice(i + 1)];
      }));
      // Checked before anything is opened: a bad filter is one line, not a connection.
      reportQuery(report, 'netrig', window, filters);
      query = (database) => reportQuery(report, database, window, filters);
    } catch (err) {
      fail(err);
    }
    await queryAndPrint(opts, query);
  });

program.parseAsync(process.argv).catch(fail);
