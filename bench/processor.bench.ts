/**
 * Processor: HTTP/1 exchanges per second per core through the real Processor (http1
 * function: envelope and record decoding, reassembly, parsing, pairing, rows, one insert
 * per flush into the embedded ClickHouse engine, acknowledgements), against tshark
 * dissecting the same exchanges from a pcap.
 *
 * Traffic (bench/http-traffic.ts): NETRIG_BENCH_EXCHANGES (100k) keep-alive exchanges over
 * 2000 connections — API GETs with JSON answers, static assets, POSTs with the body as a
 * second write, 304s, 404s, chunked answers — half the connections captured at the client,
 * half at the server. The same conversations become kernel records sealed into envelopes
 * exactly as the edge seals them (its Batcher: per shard, 2048 records / 256 KiB / 100 ms
 * of node time), published to a real nats-server (pinned to cpu 0), and a pcap of their
 * packets (handshakes, MSS segments, correct seq/ack, FIN close) for tshark.
 *
 * netrig: this process pinned to cpu 1 (chdb's engine threads included) runs
 * Processor.start with http1 over 16 shards into a fresh database (migrated beforehand)
 * and is timed until every lane handled its shard's last message and the rows are
 * committed; the row count must equal the exchanges. Exchanges per core = exchanges / CPU
 * seconds of this process (process.cpuUsage, every thread); wall-clock rate beside it.
 *
 * tshark: `tshark -r file.pcap -n -Y http -T fields -e ...` (method, host, uri, status,
 * time, content type, user agent — the row's columns) pinned to cpu 1, output to a file,
 * CPU from /usr/bin/time; its start-up (dissector registration, measured on a one-exchange
 * pcap) is subtracted, and its response count must equal the exchanges.
 *
 * Where time goes (same pinning): the lanes alone (Lane.handle on the encoded envelopes:
 * msgpack, record decoding, reassembly, HTTP parsing, pairing, row objects), the rows as
 * JSONCompactEachRow bytes, and inserting those rows into the engine in blocks the size of
 * the processor's flushes, against @clickhouse/client's own insert of the same blocks (the
 * baseline of the insert); the rest of the full run is NATS, acks and the runtime.
 *
 * Rounds alternate netrig, tshark and lanes-only; medians are reported.
 * Environment: NETRIG_BENCH_EXCHANGES (100000), NETRIG_BENCH_ROUNDS (3).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { pino } from 'pino';
import type { ClickHouse } from '../lib/clickhouse.js';
import { ensureStream, type StreamSettings } from '../lib/raw-stream.js';
import { http1Function } from '../processors/http1/index.js';
import type { DeadLetters } from '../processors/runtime/dlq.js';
import type { Row } from '../processors/runtime/function.js';
import { compactRows, insertBlock } from '../processors/runtime/sink.js';
import { ConnectionBudget, DEFAULT_MAX_CONNECTIONS } from '../processors/l7/connection-table.js';
import { functionGroup, Lane } from '../processors/runtime/lane.js';
import { ProcessorMetrics } from '../processors/runtime/metrics.js';
import { Processor, consumerName } from '../processors/runtime/processor.js';
import { migrate } from '../schemas/migrate.js';
import { freshClickHouse, removeClickHouseData } from '../test/helpers/processor-run.js';
import {
  f, machineLoad, pinPid, runCmd, sleep, startBenchNats, tempDir, threadCpuSeconds, threadsOf, type BenchNats, type TempDir,
} from './common.js';
import { cpuSeconds, envNumber, fmtCount, median, onlineCpus, pinProcess, processCpuSeconds, type BenchContext, type Benchmark } from './harness.js';
import { generateTraffic, recordBlob, sealEnvelopes, type EncodedEnvelope, type Traffic } from './http-traffic.js';
import { writePcap } from './pcap.js';

const EXCHANGES = Math.round(envNumber('NETRIG_BENCH_EXCHANGES', 100_000));
const ROUNDS = Math.round(envNumber('NETRIG_BENCH_ROUNDS', 3));
const CONNECTIONS = 2000;
const SHARDS = 16;
const WORK_CPU = 1;
const OTHER_CPU = 0;
/** The processor's default flush interval (processors/index.ts). */
const FLUSH_MS = 500;
const TARGET_PER_CORE = 50_000;
const TARGET_RATIO = 8;
/** Node time of the traffic and the wall clock its rows land on (about now). */
const START_NS = 1000e9;
const EPOCH_S = Math.floor(Date.now() / 1000) - 1000 - Math.ceil(EXCHANGES / 10_000) - 60;
const STREAM: StreamSettings = {
  name: 'NETRIG_RAW', subjectPrefix: 'netrig.raw', maxAgeSeconds: 0, maxBytes: 8 * 1024 ** 3, duplicateWindowSeconds: 120, replicas: 1,
};
const TSHARK_FIELDS = ['http.request.method', 'http.host', 'http.request.uri', 'http.response.code', 'http.time', 'http.content_type', 'http.user_agent'];

const quiet = pino({ level: process.env.NETRIG_LOG_LEVEL ?? 'warn' }, pino.destination({ dest: 2, sync: true }));

interface Prepared {
  traffic: Traffic;
  envelopes: EncodedEnvelope[];
  records: number;
  pcap: string;
  tinyPcap: string;
  /** Last stream sequence per shard. */
  lastOfShard: Map<number, number>;
}

/** CPU seconds of this process's main (JavaScript) thread and of all its other threads. */
function threadCpu(): { main: number; others: number } {
  let main = 0;
  let others = 0;
  // A thread gone between the listing and its read counts 0: its time is lost to both sides alike.
  for (const t of threadsOf(process.pid)) {
    const c = threadCpuSeconds(process.pid, t);
    if (t === process.pid) main += c;
    else others += c;
  }
  return { main, others };
}

interface NetrigRound {
  wall: number;
  cpu: number;
  /** Of `cpu`: the JavaScript thread; the rest is V8's GC helpers, libuv workers and the chdb engine's threads. */
  mainCpu: number;
  natsCpu: number;
  rows: number;
}

interface TsharkRound {
  wall: number;
  cpu: number;
  responses: number;
  requests: number;
  maxRssMiB: number;
}

interface LanesRound {
  cpu: number;
  rows: number;
}

async function prepare(ctx: BenchContext, dir: TempDir, nc: NatsConnection): Promise<Prepared> {
  const t = performance.now();
  const traffic = generateTraffic({ exchanges: EXCHANGES, connections: CONNECTIONS, spanNs: Math.max(10, EXCHANGES / 10_000) * 1e9, startNs: START_NS, seed: 42 });
  const { blob, records } = recordBlob(traffic);
  const envelopes = sealEnvelopes(blob, {
    node: 'bench-node', region: 'bench', run: 'bench0run', boot: '6c1f4a2e-8d3b-4c55-9e07-1b2a3c4d5e6f',
    subjectPrefix: STREAM.subjectPrefix, shards: SHARDS, clock: [EPOCH_S, 0],
  });
  const pcap = join(dir.path, 'traffic.pcap');
  const pk = writePcap(pcap, traffic.conversations, EPOCH_S);
  const one = generateTraffic({ exchanges: 1, connections: 1, spanNs: 1e9, startNs: START_NS, seed: 7 });
  const tinyPcap = join(dir.path, 'one.pcap');
  writePcap(tinyPcap, one.conversations, EPOCH_S);
  const client = traffic.conversations.filter((c) => c.captured === 'client').reduce((n, c) => n + c.exchanges, 0);
  const envBytes = envelopes.reduce((n, e) => n + e.data.length, 0);
  ctx.line(
    `traffic: ${fmtCount(EXCHANGES)} exchanges (${fmtCount(client)} captured at the client, ${fmtCount(EXCHANGES - client)} at the server) ` +
    `on ${CONNECTIONS} keep-alive connections, ${(traffic.wireBytes / 2 ** 20).toFixed(0)} MiB of HTTP; ` +
    `${fmtCount(records)} records in ${envelopes.length} envelopes (${(envBytes / 2 ** 20).toFixed(0)} MiB); ` +
    `pcap ${fmtCount(pk.packets)} packets (${(pk.bytes / 2 ** 20).toFixed(0)} MiB); built in ${((performance.now() - t) / 1000).toFixed(1)} s`,
  );

  await ensureStream(nc, STREAM, quiet);
  const js = jetstream(nc);
  const lastOfShard = new Map<number, number>();
  const inflight = new Set<Promise<void>>();
  for (const e of envelopes) {
    const p = js.publish(e.subject, e.data, { msgID: e.msgId, timeout: 30_000 }).then((ack) => {
      if (ack.seq > (lastOfShard.get(e.shard) ?? 0)) lastOfShard.set(e.shard, ack.seq);
      inflight.delete(p);
    });
    inflight.add(p);
    if (inflight.size >= 64) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const info = await (await jetstreamManager(nc)).streams.info(STREAM.name);
  if (info.state.messages !== envelopes.length) throw new Error(`stream holds ${info.state.messages} messages, ${envelopes.length} published`);
  return { traffic, envelopes, records, pcap, tinyPcap, lastOfShard };
}

/** The real Processor (http1, 16 shards) from the start of the stream into a fresh database, pinned. */
async function netrigRound(p: Prepared, nc: NatsConnection, nats: BenchNats): Promise<NetrigRound> {
  const ch = await freshClickHouse('bench');
  let proc: Processor | null = null;
  const unpin = pinProcess([WORK_CPU]);
  try {
    await migrate(ch.client, { database: ch.database, ttlDays: 30 });
    await sleep(200);
    const cpu0 = cpuSeconds();
    const th0 = threadCpu();
    const nats0 = processCpuSeconds(nats.pid);
    const t0 = performance.now();
    proc = await Processor.start({
      nc, ch, functions: [http1Function], shards: Array.from({ length: SHARDS }, (_, i) => i), stream: STREAM.name,
      subjectPrefix: STREAM.subjectPrefix, flushIntervalMs: FLUSH_MS, ttlDays: 30, maxPendingRows: 200_000, log: quiet,
    });
    const deadline = Date.now() + 600_000;
    while (!proc.lanes.every((l) => l.processedSeq >= (p.lastOfShard.get(l.shard) ?? 0))) {
      if (Date.now() > deadline) throw new Error('the processor did not handle the stream within 10 minutes');
      await sleep(5);
    }
    await proc.flush();
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds() - cpu0;
    const mainCpu = threadCpu().main - th0.main;
    const natsCpu = processCpuSeconds(nats.pid) - nats0;
    const r = await (await ch.client.query({ query: `SELECT count() AS n, countIf(status = 0 OR timed_out = 1 OR partial = 1) AS bad FROM ${ch.database}.http_requests`, format: 'JSONEachRow' })).json<{ n: string; bad: string }>();
    const rows = Number(r[0].n);
    if (rows !== EXCHANGES || Number(r[0].bad) !== 0) {
      throw new Error(`netrig wrote ${rows} rows (${r[0].bad} without a complete response) for ${EXCHANGES} exchanges`);
    }
    return { wall, cpu, mainCpu, natsCpu, rows };
  } finally {
    unpin();
    await proc?.stop();
    const jsm = await jetstreamManager(nc);
    for (let s = 0; s < SHARDS; s++) await jsm.consumers.delete(STREAM.name, consumerName(ch.database, functionGroup(['http1']), s)).catch(() => undefined);
    await ch.client.command({ query: `DROP DATABASE IF EXISTS ${ch.database} SYNC` }).catch(() => undefined);
    await ch.close();
  }
}

/** tshark over a pcap, pinned; CPU from /usr/bin/time. */
async function tshark(pcap: string, out: string): Promise<TsharkRound> {
  const fields = TSHARK_FIELDS.flatMap((x) => ['-e', x]);
  const cmd = `exec taskset -c ${WORK_CPU} /usr/bin/time -f '%e %U %S %M' tshark -r '${pcap}' -n -Y http -T fields -E separator=/t ${fields.join(' ')} > '${out}'`;
  const r = await runCmd('sh', ['-c', cmd], 600_000);
  if (r.code !== 0) throw new Error(`tshark failed (${r.code}): ${r.stderr.slice(-2000)}`);
  const m = /([\d.]+) ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr.trim());
  if (!m) throw new Error(`no /usr/bin/time line in tshark's stderr: ${r.stderr.slice(-500)}`);
  // Count requests and responses in the output.
  const text = readFileSync(out, 'latin1');
  let requests = 0;
  let responses = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    const cols = line.split('\t');
    if (cols[0]) requests++;
    if (cols[3]) responses++;
  }
  return { wall: Number(m[1]), cpu: Number(m[2]) + Number(m[3]), responses, requests, maxRssMiB: Number(m[4]) / 1024 };
}

/** Lanes alone, pinned: decode, reassembly, parsing, pairing, rows; no NATS, no ClickHouse. */
async function lanesRound(p: Prepared, keep: Row[] | null): Promise<LanesRound> {
  const metrics = new ProcessorMetrics();
  const dlq = { send() {} } as unknown as DeadLetters;
  const lanes: Lane[] = [];
  for (let s = 0; s < SHARDS; s++) {
    lanes.push(await Lane.create({
      functions: [http1Function], shard: s, query: async () => [], streamId: 'NETRIG_RAW@bench', resumeFrom: 1, committed: new Map(), budget: new ConnectionBudget(DEFAULT_MAX_CONNECTIONS),
      metrics, dlq, log: quiet,
    }));
  }
  const unpin = pinProcess([WORK_CPU]);
  try {
    await sleep(100);
    let rows = 0;
    const cpu0 = cpuSeconds();
    let seq = 0;
    for (const e of p.envelopes) {
      const lane = lanes[e.shard];
      lane.handle({ seq: ++seq, subject: e.subject, data: e.data, reply: '' });
      if (lane.pendingRows >= 512) {
        for (const taken of lane.takeRows().values()) {
          rows += taken.length;
          if (keep) for (const r of taken) keep.push(r);
        }
      }
    }
    for (const lane of lanes) {
      for (const taken of lane.takeRows().values()) {
        rows += taken.length;
        if (keep) for (const r of taken) keep.push(r);
      }
    }
    const cpu = cpuSeconds() - cpu0;
    if (rows !== EXCHANGES) throw new Error(`lanes made ${rows} rows for ${EXCHANGES} exchanges`);
    return { cpu, rows };
  } finally {
    unpin();
  }
}

interface SinkCosts {
  /** Rows to JSONCompactEachRow bytes. */
  serialize: number;
  /** The processor's insert (serialize included): rows as data, settings in the INSERT's SETTINGS clause. */
  insert: number;
  insertWall: number;
  /** Baseline: @clickhouse/client's insert on the engine's connection, which sends each setting as a SET statement ahead of the rows. */
  clientInsert: number;
}

/**
 * The insert alone, into fresh databases in flush-sized blocks, CPU seconds of each path:
 * the processor's (insertBlock) and, as the baseline, the client's insert with the same
 * settings as clickhouse_settings.
 */
async function sinkCosts(rows: Row[], blockRows: number): Promise<SinkCosts> {
  const unpin = pinProcess([WORK_CPU]);
  const blocks: Row[][] = [];
  for (let i = 0; i < rows.length; i += blockRows) blocks.push(rows.slice(i, i + blockRows));
  const columns = Object.keys(rows[0]);
  const timed = async (insert: (ch: ClickHouse, block: Row[], n: number) => Promise<void>): Promise<{ cpu: number; wall: number }> => {
    const ch: ClickHouse = await freshClickHouse('benchins');
    try {
      await migrate(ch.client, { database: ch.database, ttlDays: 30 });
      await sleep(100);
      const c0 = cpuSeconds();
      const t0 = performance.now();
      for (let n = 0; n < blocks.length; n++) await insert(ch, blocks[n], n);
      const r = { cpu: cpuSeconds() - c0, wall: (performance.now() - t0) / 1000 };
      const got = await (await ch.client.query({ query: `SELECT count() AS n FROM ${ch.database}.http_requests`, format: 'JSONEachRow' })).json<{ n: string }>();
      if (Number(got[0].n) !== rows.length) throw new Error(`inserted ${got[0].n} of ${rows.length} rows`);
      return r;
    } finally {
      await ch.client.command({ query: `DROP DATABASE IF EXISTS ${ch.database} SYNC` }).catch(() => undefined);
      await ch.close();
    }
  };
  try {
    const c0 = cpuSeconds();
    let bytes = 0;
    for (const b of blocks) bytes += compactRows(b, columns).length;
    const serialize = cpuSeconds() - c0;
    if (!bytes) throw new Error('no rows');
    const client = await timed(async (ch, block, n) => {
      await ch.client.insert({
        table: `${ch.database}.http_requests`, columns: columns as [string, ...string[]], values: block.map((r) => columns.map((c) => r[c])), format: 'JSONCompactEachRow',
        clickhouse_settings: { insert_deduplication_token: `bench-${n}`, insert_deduplicate: 1, max_insert_block_size: String(Math.max(1_048_576, block.length + 1)) },
      });
    });
    const ours = await timed((ch, block, n) => insertBlock(ch, 'http_requests', block, `bench-${n}`));
    return { serialize, insert: ours.cpu, insertWall: ours.wall, clientInsert: client.cpu };
  } finally {
    unpin();
  }
}

async function run(ctx: BenchContext): Promise<void> {
  if (!onlineCpus().includes(WORK_CPU) || !onlineCpus().includes(OTHER_CPU)) throw new Error(`needs cpus ${OTHER_CPU} and ${WORK_CPU}`);
  ctx.line(`before: ${await machineLoad()}`);
  const dir = tempDir('processor');
  let nats: BenchNats | null = null;
  let nc: NatsConnection | null = null;
  try {
    // A backlog of envelopes can exceed nats-server's default 64 MiB per-client outbound limit
    // (16 lanes x 256 messages in flight): see the transport benchmark's last line.
    nats = await startBenchNats({ maxPendingBytes: 1024 ** 3 });
    pinPid(nats.pid, [OTHER_CPU]);
    nc = await connect({ servers: nats.url, name: 'bench-processor' });
    const p = await prepare(ctx, dir, nc);
    ctx.line(`pinning: netrig processor / tshark / lanes on cpu ${WORK_CPU}; nats-server on cpu ${OTHER_CPU} (max_pending raised to 1 GiB); ${ROUNDS} rounds, alternating; flush every ${FLUSH_MS} ms (default)`);

    // tshark start-up, once: its dissector registration, paid per run whatever the pcap.
    const startups: number[] = [];
    for (let i = 0; i < 3; i++) startups.push((await tshark(p.tinyPcap, join(dir.path, 'one.txt'))).cpu);
    const startup = median(startups);

    const nr: NetrigRound[] = [];
    const tr: TsharkRound[] = [];
    const lr: LanesRound[] = [];
    const kept: Row[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const steps: (() => Promise<string>)[] = [
        async () => {
          const r = await netrigRound(p, nc!, nats!);
          nr.push(r);
          return `netrig ${f(r.wall, 2)} s wall, ${f(r.cpu, 2)} cpu-s -> ${fmtCount(r.rows / r.cpu)} exch/cpu-s (${fmtCount(r.rows / r.wall)}/s wall; JS thread ${f(r.mainCpu, 2)} cpu-s, other threads ${f(r.cpu - r.mainCpu, 2)}; nats-server ${f(r.natsCpu, 2)} cpu-s)`;
        },
        async () => {
          const r = await tshark(p.pcap, join(dir.path, 'tshark.txt'));
          if (r.responses !== EXCHANGES || r.requests !== EXCHANGES) throw new Error(`tshark found ${r.requests} requests and ${r.responses} responses for ${EXCHANGES} exchanges`);
          tr.push(r);
          return `tshark ${f(r.wall, 2)} s wall, ${f(r.cpu, 2)} cpu-s -> ${fmtCount(r.responses / (r.cpu - startup))} exch/cpu-s (max RSS ${f(r.maxRssMiB, 0)} MiB)`;
        },
        async () => {
          const r = await lanesRound(p, i === 0 ? kept : null);
          lr.push(r);
          return `lanes only ${f(r.cpu, 2)} cpu-s -> ${fmtCount(r.rows / r.cpu)} exch/cpu-s`;
        },
      ];
      const order = i % 2 ? [1, 2, 0] : [0, 1, 2];
      const parts: string[] = [];
      for (const k of order) parts.push(await steps[k]());
      ctx.line(`round ${i + 1}  ${parts.join('  |  ')}`);
    }
    // Flush-sized blocks: what one 500 ms flush carries at the measured rate.
    const netrigWall = median(nr.map((r) => r.rows / r.wall));
    const blockRows = Math.max(1000, Math.round((netrigWall * FLUSH_MS) / 1000));
    const sink = await sinkCosts(kept, blockRows);
    kept.length = 0;

    const perCore = median(nr.map((r) => r.rows / r.cpu));
    const tsharkPerCore = median(tr.map((r) => r.responses / (r.cpu - startup)));
    const tsharkRaw = median(tr.map((r) => r.responses / r.cpu));
    const ratio = perCore / tsharkPerCore;
    ctx.line(
      `processor  netrig http1 -> ClickHouse: ${fmtCount(perCore)} exchanges/s per core (${fmtCount(netrigWall)}/s wall)  |  ` +
      `tshark -Y http: ${fmtCount(tsharkPerCore)} exchanges/s per core (start-up ${f(startup, 2)} cpu-s subtracted; ${fmtCount(tsharkRaw)}/s with it)  |  ratio ${f(ratio, 1)}x`,
    );
    const usPer = (cpu: number) => (cpu / EXCHANGES) * 1e6;
    const total = usPer(median(nr.map((r) => r.cpu)));
    const lanes = usPer(median(lr.map((r) => r.cpu)));
    const serialize = usPer(sink.serialize);
    const insert = usPer(sink.insert);
    ctx.line(
      `where the time goes, µs of cpu per exchange: full processor ${f(total, 2)} = lanes (msgpack, records, reassembly, HTTP parse, pairing, row objects) ${f(lanes, 2)} ` +
      `+ insert (rows -> JSONCompactEachRow -> engine, ${fmtCount(blockRows)}-row blocks) ${f(insert, 2)} (of which serializing ${f(serialize, 2)}) + NATS, acks, runtime ${f(total - lanes - insert, 2)}; ` +
      `decode + reassembly only: ${fmtCount(1e6 / lanes)} exchanges/s per core; insert alone ${fmtCount(EXCHANGES / sink.insertWall)} rows/s wall`,
    );
    ctx.line(
      `insert path: settings in the INSERT's SETTINGS clause, rows as data ${f(insert, 2)} µs/row  |  baseline @clickhouse/client insert (settings sent as SET statements) ${f(usPer(sink.clientInsert), 2)} µs/row  |  ${f(sink.clientInsert / sink.insert, 2)}x`,
    );
    const met = perCore >= TARGET_PER_CORE && ratio >= TARGET_RATIO;
    ctx.line(
      `target >= ${fmtCount(TARGET_PER_CORE)} exchanges/s per core including the insert and >= ${TARGET_RATIO}x tshark: ${met ? 'met' : 'NOT met'} ` +
      `(${fmtCount(perCore)}/s per core, ${f(ratio, 1)}x)`,
    );
    if (nats.slowConsumers()) ctx.line(`WARNING: nats-server cut off a slow consumer ${nats.slowConsumers()} times: figures are not valid`);
    ctx.line(`after: ${await machineLoad()}`);
  } finally {
    await nc?.close().catch(() => undefined);
    await nats?.stop();
    removeClickHouseData();
    dir.remove();
  }
}

export const benchmark: Benchmark = {
  name: 'processor',
  title: 'HTTP/1 exchanges/s per core: Processor (http1 -> embedded ClickHouse) vs tshark -Y http on a pcap of the same exchanges',
  run,
};
