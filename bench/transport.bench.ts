/**
 * Transport: records/s from the edge into JetStream and from JetStream into a processor,
 * each against a bare NATS client moving the same bytes.
 *
 * Records: NETRIG_BENCH_TRANSPORT_EXCHANGES (200k) HTTP/1 exchanges of bench/http-traffic.ts
 * on 2000 connections as the kernel records them (mostly SOCK_DATA of a few hundred bytes,
 * CONN_OPEN/INFO/CLOSE around them) in one recorded blob.
 *
 * (a) edge -> JetStream. The real Edge (edge/edge.ts) drains a FileSource over the blob
 * (batches per shard, envelopes, the Publisher: one publish in flight per shard) into a
 * real nats-server (file storage, temporary store) and is timed until every envelope is
 * acknowledged (whenSourceDone); every record must be published, none lost. The edge's
 * buffer bound is raised to hold the whole blob (the file source gives everything at once;
 * the default 256 MiB would count the excess as lost instead of measuring the transport).
 * Baselines publish the envelopes the edge published in an earlier run of the same round
 * (read back from its stream: same bytes, subjects, message ids, heartbeats included):
 *   bare js 1/shard   @nats-io/jetstream publish, one in flight per shard (the edge's policy);
 *   bare js 32/shard  the same with 32 in flight per shard (order kept: one connection);
 *   core publish      plain NATS publishes with the Nats-Msg-Id header, no acknowledgement
 *                     wait, timed until the stream holds them all.
 * (b) JetStream -> processor, over the stream the edge filled: the real Processor (a lane per
 * shard, its consumers, envelope and record decoding, acks) with a function that only
 * counts the records (no rows), against bare consumers (one per shard, same filter, ack
 * policy all, consume() of 256) that ack every message, and the same that also decode each
 * envelope (msgpack) and walk its record headers.
 *
 * Rounds interleave the variants (order alternating); medians are reported with the CPU
 * seconds of this process and of nats-server. Nothing is pinned: both may use both cores.
 * Environment: NETRIG_BENCH_TRANSPORT_EXCHANGES (200000), NETRIG_BENCH_ROUNDS (3).
 */
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { pino } from 'pino';
import { Edge } from '../edge/edge.js';
import { edgeConfig } from '../edge/config.js';
import { FileSource } from '../edge/file-source.js';
import { ensureStream, type StreamSettings } from '../lib/raw-stream.js';
import type { ProcessingFunction } from '../processors/runtime/function.js';
import { Processor, consumerName } from '../processors/runtime/processor.js';
import { functionGroup } from '../processors/runtime/lane.js';
import { migrate } from '../schemas/migrate.js';
import { decodeEnvelope } from '../schemas/envelope.js';
import { RecordKind } from '../schemas/records.js';
import { freshClickHouse, removeClickHouseData } from '../test/helpers/processor-run.js';
import { f, machineLoad, sleep, startBenchNats, type BenchNats } from './common.js';
import { cpuSeconds, envNumber, fmtCount, median, processCpuSeconds, type BenchContext, type Benchmark } from './harness.js';
import { generateTraffic, kindsOf, recordBlob } from './http-traffic.js';

const EXCHANGES = Math.round(envNumber('NETRIG_BENCH_TRANSPORT_EXCHANGES', 200_000));
const ROUNDS = Math.round(envNumber('NETRIG_BENCH_ROUNDS', 3));
const SHARDS = 16;
/** The edge's records per CPU-second of its own process, ring to JetStream. */
const TARGET_EDGE_PER_CORE = 1_000_000;
const PREFIX = 'netrig.raw';
const BOOT = '6c1f4a2e-8d3b-4c55-9e07-1b2a3c4d5e6f';
const quiet = pino({ level: process.env.NETRIG_LOG_LEVEL ?? 'warn' }, pino.destination({ dest: 2, sync: true }));

function streamSettings(name: string): StreamSettings {
  return { name, subjectPrefix: PREFIX, maxAgeSeconds: 0, maxBytes: 16 * 1024 ** 3, duplicateWindowSeconds: 120, replicas: 1 };
}

/** A message as the edge published it. */
interface Published {
  subject: string;
  data: Uint8Array;
  msgId: string;
  shard: number;
}

interface Measured {
  /** From the start until done; `startup`: until the first message or record arrived (consumers only). */
  seconds: number;
  startup: number;
  /** CPU seconds of this process and of nats-server over the run. */
  cpu: number;
  natsCpu: number;
}

async function recreate(jsm: JetStreamManager, nc: NatsConnection, name: string): Promise<void> {
  await jsm.streams.delete(name).catch(() => undefined);
  await ensureStream(nc, streamSettings(name), quiet);
}

/** Time, CPU of this process and of nats-server over `fn`; `fn` may call first() when the first item arrives. */
async function measure(nats: BenchNats, fn: (first: () => void) => Promise<void>): Promise<Measured> {
  const c0 = cpuSeconds();
  const n0 = processCpuSeconds(nats.pid);
  const t0 = performance.now();
  let t1 = 0;
  await fn(() => {
    if (!t1) t1 = performance.now();
  });
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, startup: t1 ? (t1 - t0) / 1000 : 0, cpu: cpuSeconds() - c0, natsCpu: processCpuSeconds(nats.pid) - n0 };
}

/** The real edge over the blob into `stream`; checks every record was published and none lost. */
async function edgeRun(nc: NatsConnection, nats: BenchNats, blob: Buffer, records: number, stream: string): Promise<Measured & { envelopes: number }> {
  const cfg = edgeConfig({ node: 'bench-node', region: 'bench', stream, subjectPrefix: PREFIX, maxBufferBytes: '16GiB', metricsPort: 0 });
  const source = new FileSource(blob);
  let edge: Edge | null = null;
  try {
    const m = await measure(nats, async () => {
      edge = await Edge.start(source, nc, { ...cfg.edge, stream: streamSettings(stream), bootId: BOOT }, quiet);
      await edge.whenSourceDone();
    });
    const e = edge as unknown as Edge;
    const out = (await e.metrics.recordsOut.get()).values.reduce((s, v) => s + v.value, 0);
    const lost = (await e.metrics.lost.get()).values.reduce((s, v) => s + v.value, 0);
    const envelopes = (await e.metrics.envelopesOut.get()).values.reduce((s, v) => s + v.value, 0);
    if (out !== records || lost !== 0) throw new Error(`edge published ${out} of ${records} records, lost ${lost}`);
    return { ...m, envelopes };
  } finally {
    await (edge as Edge | null)?.stop(10_000);
  }
}

/** Every message of a stream, in order, as published (subject, bytes, message id). */
async function readBack(nc: NatsConnection, stream: string): Promise<Published[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const last = info.state.last_seq;
  const out: Published[] = [];
  const c = await jetstream(nc).consumers.get(stream);
  const it = await c.consume({ max_messages: 512 });
  for await (const m of it) {
    const subject = m.subject;
    out.push({ subject, data: Uint8Array.prototype.slice.call(m.data), msgId: m.headers?.get('Nats-Msg-Id') ?? '', shard: Number(subject.slice(subject.lastIndexOf('.') + 1)) });
    if (m.seq >= last) break;
  }
  it.stop();
  if (out.length !== info.state.messages || out.some((p) => !p.msgId)) throw new Error(`read back ${out.length} of ${info.state.messages} messages (or some without a message id)`);
  return out;
}

/** JetStream publishes of `msgs`, up to `window` in flight per shard, shards in parallel. */
async function barePublish(nc: NatsConnection, msgs: Published[], window: number): Promise<void> {
  const js = jetstream(nc);
  const byShard: Published[][] = Array.from({ length: SHARDS }, () => []);
  for (const m of msgs) byShard[m.shard].push(m);
  await Promise.all(byShard.map(async (list) => {
    const inflight = new Set<Promise<unknown>>();
    for (const m of list) {
      const p: Promise<unknown> = js.publish(m.subject, m.data, { msgID: m.msgId, timeout: 30_000 }).then(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size >= window) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  }));
}

/** Core NATS publishes with the message id header; resolves when the stream holds them all. */
async function corePublish(nc: NatsConnection, msgs: Published[], stream: string): Promise<void> {
  for (const m of msgs) {
    const h = headers();
    h.set('Nats-Msg-Id', m.msgId);
    nc.publish(m.subject, m.data, { headers: h });
  }
  await nc.flush();
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + 300_000;
  for (;;) {
    const s = await jsm.streams.info(stream);
    if (s.state.messages >= msgs.length) return;
    if (Date.now() > deadline) throw new Error(`stream ${stream} holds ${s.state.messages} of ${msgs.length} after 300 s`);
    await sleep(2);
  }
}

/** Last sequence per shard of a stream. */
async function lastOfShards(nc: NatsConnection, stream: string): Promise<number[]> {
  const jsm = await jetstreamManager(nc);
  const out: number[] = [];
  for (let s = 0; s < SHARDS; s++) {
    const m = await jsm.streams.getMessage(stream, { last_by_subj: `${PREFIX}.*.*.${s}` }).catch(() => null);
    out.push(m?.seq ?? 0);
  }
  return out;
}

const ALL_KINDS = Object.values(RecordKind) as number[];

/** The real Processor with a function that only counts records; returns records seen. */
async function processorRun(nc: NatsConnection, nats: BenchNats, stream: string, last: number[], limitMs = 600_000): Promise<Measured & { records: number }> {
  const ch = await freshClickHouse('benchtr');
  let proc: Processor | null = null;
  let records = 0;
  let first = () => {};
  const fn: ProcessingFunction = {
    name: 'benchcount', kinds: ALL_KINDS, tables: [],
    createLane: () => ({
      onRecord: () => {
        if (!records++) first();
      },
      lowWaterMark: () => Infinity,
    }),
  };
  try {
    await migrate(ch.client, { database: ch.database, ttlDays: 30 });
    const m = await measure(nats, async (onFirst) => {
      first = onFirst;
      const p = (proc = await Processor.start({
        nc, ch, functions: [fn], shards: Array.from({ length: SHARDS }, (_, i) => i), stream, subjectPrefix: PREFIX,
        flushIntervalMs: 500, ttlDays: 30, maxPendingRows: 200_000, log: quiet,
      }));
      const deadline = Date.now() + limitMs;
      while (!p.lanes.every((l) => l.processedSeq >= last[l.shard])) {
        if (Date.now() > deadline) throw new Error(`the processor did not read the stream within ${limitMs / 1000} s (${records} records so far)`);
        await sleep(2);
      }
    });
    return { ...m, records };
  } finally {
    await (proc as Processor | null)?.stop();
    const jsm = await jetstreamManager(nc);
    for (let s = 0; s < SHARDS; s++) await jsm.consumers.delete(stream, consumerName(ch.database, functionGroup([fn.name]), s)).catch(() => undefined);
    await ch.client.command({ query: `DROP DATABASE IF EXISTS ${ch.database} SYNC` }).catch(() => undefined);
    await ch.close();
  }
}

let bareConsumers = 0;

/** Bare consumers (one per shard, ack all, consume 256) acking every message; with `decode`, msgpack and record headers too. */
async function bareConsume(nc: NatsConnection, nats: BenchNats, stream: string, last: number[], decode: boolean): Promise<Measured & { records: number }> {
  const jsm = await jetstreamManager(nc);
  const names = Array.from({ length: SHARDS }, (_, s) => `bench_bare_${++bareConsumers}_${s}`);
  let records = 0;
  try {
    const m = await measure(nats, async (first) => {
      await Promise.all(names.map(async (name, s) => {
        if (!last[s]) return;
        await jsm.consumers.add(stream, {
          durable_name: name, filter_subject: `${PREFIX}.*.*.${s}`, ack_policy: AckPolicy.All, deliver_policy: DeliverPolicy.All,
          ack_wait: 300e9, max_ack_pending: 200_000,
        });
        const it = await (await jetstream(nc).consumers.get(stream, name)).consume({ max_messages: 256 });
        for await (const msg of it) {
          first();
          if (decode) {
            const e = decodeEnvelope(msg.data);
            if (typeof e === 'string') throw new Error(`undecodable envelope: ${e}`);
            const r = e.records;
            for (let off = 0; off < r.length; off += (r.readUInt32LE(off + 4) + 7) & ~7) records++;
          }
          msg.ack();
          if (msg.seq >= last[s]) break;
        }
        it.stop();
      }));
    });
    return { ...m, records };
  } finally {
    for (const name of names) await jsm.consumers.delete(stream, name).catch(() => undefined);
  }
}

type PubKind = 'edge' | 'js1' | 'js32' | 'core';
type SubKind = 'processor' | 'bare' | 'bareDecode';
const PUB_LABEL: Record<PubKind, string> = { edge: 'netrig edge', js1: 'bare js 1/shard', js32: 'bare js 32/shard', core: 'core publish' };
const SUB_LABEL: Record<SubKind, string> = { processor: 'netrig processor', bare: 'bare consumer', bareDecode: 'bare consumer + decode' };

/** nats-server's per-client outbound limit in these runs (its default is 64 MiB; see the check at the end). */
const MAX_PENDING = 1024 ** 3;

/** Count disconnects of a connection (a slow consumer is cut off by the server). */
function watchDisconnects(nc: NatsConnection): () => number {
  let n = 0;
  void (async () => {
    for await (const st of nc.status()) if (st.type === 'disconnect') n++;
  })();
  return () => n;
}

async function run(ctx: BenchContext): Promise<void> {
  ctx.line(`before: ${await machineLoad()}`);
  let nats: BenchNats | null = null;
  let nc: NatsConnection | null = null;
  try {
    const t = performance.now();
    const traffic = generateTraffic({ exchanges: EXCHANGES, connections: 2000, spanNs: Math.max(10, EXCHANGES / 10_000) * 1e9, startNs: 1000e9, seed: 43 });
    const { blob, records } = recordBlob(traffic);
    const kinds = kindsOf(blob);
    ctx.line(
      `records: ${fmtCount(records)} (${fmtCount(kinds[RecordKind.SockData])} SOCK_DATA, ${fmtCount(records - kinds[RecordKind.SockData])} CONN_OPEN/INFO/CLOSE) ` +
      `from ${fmtCount(EXCHANGES)} HTTP/1 exchanges on 2000 connections, ${(blob.length / 2 ** 20).toFixed(0)} MiB, ${(blob.length / records).toFixed(0)} B/record; built in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
    nats = await startBenchNats({ maxPendingBytes: MAX_PENDING });
    nc = await connect({ servers: nats.url, name: 'bench-transport' });
    const disconnects = watchDisconnects(nc);
    const jsm = await jetstreamManager(nc);
    const srv = nats;
    const conn = nc;

    // The edge's envelopes, read back once, for the publish baselines.
    await recreate(jsm, conn, 'BENCH');
    const first = await edgeRun(conn, srv, blob, records, 'BENCH');
    const published = await readBack(conn, 'BENCH');
    await jsm.streams.delete('BENCH');
    const pubBytes = published.reduce((n, p) => n + p.data.length, 0);
    ctx.line(
      `envelopes: ${published.length} (${(pubBytes / 2 ** 20).toFixed(0)} MiB, ${fmtCount(records / published.length)} records each on average; warm-up edge run ${f(first.seconds, 2)} s); ` +
      `nats-server max_pending raised to ${MAX_PENDING / 2 ** 20} MiB (see the last line)`,
    );

    const pubs: Record<PubKind, Measured[]> = { edge: [], js1: [], js32: [], core: [] };
    const subs: Record<SubKind, (Measured & { records: number })[]> = { processor: [], bare: [], bareDecode: [] };
    const pubOrder: PubKind[] = ['edge', 'js1', 'js32', 'core'];
    const subOrder: SubKind[] = ['processor', 'bare', 'bareDecode'];
    for (let i = 0; i < ROUNDS; i++) {
      const parts: string[] = [];
      for (const k of i % 2 ? [...pubOrder].reverse() : pubOrder) {
        // One stream at a time: they would share subjects.
        await recreate(jsm, conn, 'BENCH');
        await sleep(200);
        let m: Measured;
        if (k === 'edge') m = await edgeRun(conn, srv, blob, records, 'BENCH');
        else if (k === 'core') m = await measure(srv, () => corePublish(conn, published, 'BENCH'));
        else m = await measure(srv, () => barePublish(conn, published, k === 'js1' ? 1 : 32));
        pubs[k].push(m);
        parts.push(`${k} ${fmtCount(records / m.seconds)}`);
        if (k === 'edge') {
          // (b) over what the edge published.
          const last = await lastOfShards(conn, 'BENCH');
          for (const sk of i % 2 ? [...subOrder].reverse() : subOrder) {
            await sleep(200);
            const r = sk === 'processor'
              ? await processorRun(conn, srv, 'BENCH', last)
              : await bareConsume(conn, srv, 'BENCH', last, sk === 'bareDecode');
            if (sk !== 'bare' && r.records !== records) throw new Error(`${sk}: saw ${r.records} of ${records} records`);
            subs[sk].push(r);
            parts.push(`${sk} ${fmtCount(records / (r.seconds - r.startup))}`);
          }
        } else {
          const st = await jsm.streams.info('BENCH');
          if (st.state.messages !== published.length) throw new Error(`${k}: stream holds ${st.state.messages} of ${published.length}`);
        }
        await jsm.streams.delete('BENCH');
      }
      ctx.line(`round ${i + 1} (records/s)  ${parts.join('  ')}`);
    }
    if (disconnects() || srv.slowConsumers()) throw new Error(`the client was disconnected ${disconnects()} times (${srv.slowConsumers()} slow consumer reports): figures are not valid`);

    const pct = (ms: Measured[], sel: (m: Measured) => number) => f(median(ms.map((m) => sel(m) / m.seconds)) * 100, 0);
    const rate = (ms: Measured[]) => records / median(ms.map((m) => m.seconds - m.startup));
    const desc = (ms: Measured[]) => {
      const secs = median(ms.map((m) => m.seconds - m.startup));
      const startup = median(ms.map((m) => m.startup));
      return `${fmtCount(records / secs)} rec/s, ${(pubBytes / 2 ** 20 / secs).toFixed(0)} MiB/s` +
        (startup ? ` (after ${f(startup, 2)} s to the first message)` : '') +
        `; cpu: this process ${pct(ms, (m) => m.cpu)}%, nats-server ${pct(ms, (m) => m.natsCpu)}%`;
    };
    ctx.line(`(a) edge -> JetStream  ${PUB_LABEL.edge}: ${desc(pubs.edge)}`);
    for (const k of ['js1', 'js32', 'core'] as const) {
      ctx.line(`    ${PUB_LABEL[k]}: ${desc(pubs[k])}  |  edge / ${k}: ${f(rate(pubs.edge) / rate(pubs[k]), 2)}x`);
    }
    const edgePerCore = records / median(pubs.edge.map((m) => m.cpu));
    ctx.line(
      `target >= ${fmtCount(TARGET_EDGE_PER_CORE)} records per cpu-second from the ring into JetStream (the edge's process; nats-server apart): ` +
      `${edgePerCore >= TARGET_EDGE_PER_CORE ? 'met' : 'NOT met'} (${fmtCount(edgePerCore)}/cpu-s, ${f(1e6 / edgePerCore, 2)} µs per record)`,
    );
    ctx.line(`(b) JetStream -> processor  ${SUB_LABEL.processor}: ${desc(subs.processor)}`);
    for (const k of ['bare', 'bareDecode'] as const) {
      ctx.line(`    ${SUB_LABEL[k]}: ${desc(subs[k])}  |  processor / ${k}: ${f(rate(subs.processor) / rate(subs[k]), 2)}x`);
    }

    // The processor against a nats-server with its default 64 MiB max_pending: with a backlog,
    // 16 consumers pulling 256 envelopes of up to 256 KiB each can exceed it.
    await nc.close();
    nc = null;
    await nats.stop();
    nats = null;
    nats = await startBenchNats();
    nc = await connect({ servers: nats.url, name: 'bench-transport-default' });
    const drops = watchDisconnects(nc);
    const jsm2 = await jetstreamManager(nc);
    await recreate(jsm2, nc, 'BENCH');
    await barePublish(nc, published, 1);
    const last = await lastOfShards(nc, 'BENCH');
    let outcome: string;
    try {
      const r = await processorRun(nc, nats, 'BENCH', last, 60_000);
      outcome = `read all ${fmtCount(r.records)} records in ${f(r.seconds, 1)} s`;
    } catch (err) {
      outcome = `FAILED: ${(err as Error).message}`;
    }
    ctx.line(
      `backlog on a default nats-server (max_pending 64 MiB), the same ${(pubBytes / 2 ** 20).toFixed(0)} MiB waiting: the processor ${outcome}; ` +
      `slow consumer disconnects: ${nats.slowConsumers()} reported by the server, ${drops()} seen by the client`,
    );
    ctx.line(`after: ${await machineLoad()}`);
  } finally {
    await nc?.close().catch(() => undefined);
    await nats?.stop();
    removeClickHouseData();
  }
}

export const benchmark: Benchmark = {
  name: 'transport',
  title: 'records/s edge -> JetStream (real Edge, FileSource) and JetStream -> Processor, vs bare NATS clients moving the same envelopes',
  run,
};
