/**
 * Fault campaign: a million hostile stream messages (test/helpers/hostile-envelopes.ts)
 * through `netrig process` (a child process, every function, the embedded engine) reading
 * a real nats-server, with one valid envelope in a hundred interleaved.
 *
 * - 0 crashes: the processor's pid never changes and it never exits until told to; then it
 *   stops cleanly.
 * - 0 hangs: once everything is published, every shard's consumer has nothing pending and
 *   its acknowledgement floor is within MAX_PIN_SPAN messages of the shard's last message
 *   within DRAIN_BOUND_MS (quiet heartbeats move every node's time on at the end, as an edge
 *   does; a node time forged ahead never moves on, and holds a pin at most MAX_PIN_SPAN
 *   messages back, released then and counted).
 * - memory bounded: the processor's RSS, sampled throughout, stays under RSS_BOUND, and its
 *   peak over the second half of the messages is within RSS_GROWTH of its peak over the
 *   first half. Its connection table is bounded (--max-connections MAX_CONNECTIONS, reached
 *   early: mutated envelopes open connections under random ids) so the plateau shows.
 * - every bad one counted, exactly: the test asks the decoders about each message it sends
 *   (hostile-envelopes.ts `verdict`: the envelope decoder, the records' framing, the record
 *   decoder for the kinds the functions read); the processor's rejected-message counter
 *   must equal that per reason, its messages counter the number sent, its unknown-kind
 *   counter the unknown records, and its dead letters (stored + shed over the storage rate
 *   + failed) the rejected messages, with every stored one in the dead-letter stream. So
 *   sent = accepted + rejected, with rejected known to the message.
 * - the valid envelopes' rows are in ClickHouse exactly once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { logger } from '../../lib/logger.js';
import { ensureStream } from '../../lib/raw-stream.js';
import { FUNCTIONS } from '../../processors/index.js';
import { DLQ_STREAM } from '../../processors/runtime/dlq.js';
import { functionGroup } from '../../processors/runtime/lane.js';
import { consumerName } from '../../processors/runtime/processor.js';
import { onExit } from '../helpers/cleanup.js';
import { MAX_PIN_SPAN } from '../../processors/l7/connection-table.js';
import { heartbeat, hostileMessage, SHARDS, TRUSTED, verdict, type HostileMessage } from '../helpers/hostile-envelopes.js';
import type { NatsServerHandle } from '../helpers/nats-server.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { ProcessorChild, queryStore } from '../helpers/processor-child.js';
import { STREAM, waitFor } from '../helpers/processor-run.js';

const MESSAGES = 1_000_000;
const SEED = 0x0bad_f00d;
/** Messages published per acknowledged publish: the rest go without an ack request, in order before it. */
const PUBLISH_BATCH = 256;
/** Acknowledged publishes awaited at once. */
const ACKS_IN_FLIGHT = 8;
/** After the last publish, the processor has this long to handle and acknowledge everything. */
const DRAIN_BOUND_MS = 180_000;
/**
 * The processor (node, every function, the embedded engine) idles at about 290 MiB (README,
 * Memory); its connection table is bounded by --max-connections, and nothing else it holds
 * grows with the number of messages. 1 GiB leaves room for the engine's inserts and garbage
 * not yet collected.
 */
const RSS_BOUND = 1 << 30;
/** The peak RSS over the second half may exceed the peak over the first half by at most this factor. */
const RSS_GROWTH = 1.25;
/** The processor's connection table bound for the run. */
const MAX_CONNECTIONS = 20_000;
const SAMPLE_MS = 250;

let nats: NatsServerHandle;
let nc: NatsConnection;

natsServerForFile((server, conn) => {
  nats = server;
  nc = conn;
});

/** Resident set of a process, in bytes. */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU seconds a process has used (user + system). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Sum of a metric's series whose label `key` is `value` (all of them without a key). */
function sum(series: { labels: Record<string, string>; value: number }[], key?: string, value?: string): number {
  return series.filter((s) => !key || s.labels[key] === value).reduce((n, s) => n + s.value, 0);
}

test('1M hostile envelopes through netrig process: no crash, no hang, memory bounded, every bad one counted, valid rows exactly once', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), `netrig-hostile-${process.pid}-`));
  const unregister = onExit(`processor data ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
  const database = `hostile_${process.pid}`;
  const functions = Object.keys(FUNCTIONS);
  const wanted = new Set(Object.values(FUNCTIONS).flatMap((f) => f.kinds));
  let child: ProcessorChild | null = null;
  let sampling = true;
  let sampler: Promise<void> = Promise.resolve();
  try {
    await ensureStream(nc, { ...STREAM, maxAgeSeconds: 0, maxBytes: -1 }, logger('test'));
    // Leases of 30 s: the campaign starves the machine's two cores, and a lease lost to a
    // late renewal would re-read its shard (counting messages again); takeover has its own tests.
    child = new ProcessorChild({ natsUrl: nats.url, dataDir, database, functions, leaseTtl: 30, maxConnections: MAX_CONNECTIONS });
    const c = child;
    const pid = c.child.pid!;
    await c.port;

    // RSS and messages handled, sampled until the end.
    const samples: { handled: number; rss: number }[] = [];
    sampler = (async () => {
      while (sampling && c.child.exitCode === null) {
        samples.push({ handled: await c.metric('netrig_processor_messages_total').catch(() => -1), rss: rss(pid) });
        await new Promise((r) => setTimeout(r, SAMPLE_MS));
      }
    })();

    // Publish as an edge would, fast: PUBLISH_BATCH - 1 messages without an ack request,
    // then one with, ACKS_IN_FLIGHT of those awaited at once. A stream stores a
    // connection's messages in order, so an ack covers its batch.
    const started = Date.now();
    const js = jetstream(nc);
    const expected = { rejected: new Map<string, number>(), unknownKinds: 0, validPaths: [] as string[], mustRejectAccepted: [] as number[] };
    const acks: Promise<unknown>[] = [];
    /** Nodes of accepted envelopes, and the shards they came on. */
    const nodes = new Map<string, Set<number>>();
    let sent = 0;
    const send = async (m: HostileMessage, n: number) => {
      const v = verdict(m.data, wanted);
      if (v.node !== undefined) {
        const shard = Number(m.subject.slice(m.subject.lastIndexOf('.') + 1));
        if (!nodes.has(v.node)) nodes.set(v.node, new Set());
        nodes.get(v.node)!.add(shard);
      }
      if (v.rejected) expected.rejected.set(v.rejected, (expected.rejected.get(v.rejected) ?? 0) + 1);
      else if (m.mustReject) expected.mustRejectAccepted.push(n);
      expected.unknownKinds += v.unknownKinds;
      if (m.validPath) {
        assert.equal(v.rejected, null, `valid envelope ${n} is valid`);
        expected.validPaths.push(m.validPath);
      }
      sent++;
      if (sent % PUBLISH_BATCH) {
        nc.publish(m.subject, m.data);
        return;
      }
      acks.push(js.publish(m.subject, m.data));
      if (acks.length >= ACKS_IN_FLIGHT) await acks.shift();
    };
    for (let n = 1; n <= MESSAGES; n++) await send(hostileMessage(SEED, n), n);
    // Quiet heartbeats well past every timeout of node time, on every shard, from every
    // node an accepted envelope named (mutations rename nodes): an edge keeps sending them,
    // and until a node's time moves on, what its connections hold in progress keeps their
    // messages unacknowledged.
    const quietMono = 5e9 + (MESSAGES + 1) * 1e6 + 900e9;
    let hb = MESSAGES;
    for (const [node, shards] of nodes) for (const s of shards) await send(heartbeat(node, ++hb, s, quietMono), hb);
    await Promise.all(acks);
    const publishedMs = Date.now() - started;
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(STREAM.name);
    assert.equal(info.state.messages, sent, 'every message is in the stream');
    process.stdout.write(`# published ${sent} (${nodes.size} nodes) in ${publishedMs} ms, CPU ${((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(1)} s, processor ${cpuSeconds(pid).toFixed(1)} s\n`);
    assert.deepEqual(expected.mustRejectAccepted.slice(0, 10), [], 'every message made to be rejected is rejected by the decoders');

    // 0 hangs: every shard handled to its last message within the bound, and acknowledged to
    // within MAX_PIN_SPAN of it (a node time forged ahead holds a pin only that far back).
    const group = functionGroup(functions);
    const lastOfShard: number[] = [];
    for (let s = 0; s < SHARDS; s++) lastOfShard.push((await jsm.streams.getMessage(STREAM.name, { last_by_subj: `${STREAM.subjectPrefix}.*.*.${s}` }))!.seq);
    let state = '';
    await waitFor('every shard handled, and acknowledged to within MAX_PIN_SPAN of its last message', async () => {
      const open: string[] = [];
      for (let s = 0; s < SHARDS; s++) {
        const ci = await jsm.consumers.info(STREAM.name, consumerName(database, group, s)).catch(() => null);
        if (!ci || ci.num_pending !== 0 || ci.ack_floor.stream_seq < lastOfShard[s] - MAX_PIN_SPAN) open.push(`${s}: pending ${ci?.num_pending}, ack floor ${ci?.ack_floor.stream_seq} of ${lastOfShard[s]}`);
      }
      state = open.join('; ');
      return open.length === 0;
    }, DRAIN_BOUND_MS, () => `${state}\n${c.log()}`);
    const drainedMs = Date.now() - started;
    const processorCpu = cpuSeconds(pid);
    const testCpu = (process.cpuUsage().user + process.cpuUsage().system) / 1e6;

    // 0 crashes.
    assert.deepEqual(c.leaseEvents.filter((e) => e.msg !== 'lease acquired'), [], 'every shard read by one lane, start to end');
    assert.equal(c.child.pid, pid);
    assert.equal(c.child.exitCode, null, `the processor is running:\n${c.log()}`);
    assert.equal(c.child.signalCode, null);

    // Every message handled once; every rejected one counted by reason, as the decoders say.
    const metrics = async (name: string) => c.metricSeries(name);
    assert.equal(await c.metric('netrig_processor_messages_total'), sent, 'every message handled once');
    const rejected = await metrics('netrig_processor_messages_rejected_total');
    const byReason = Object.fromEntries(rejected.map((s) => [s.labels.reason, s.value]).sort());
    assert.deepEqual(byReason, Object.fromEntries([...expected.rejected].sort()), 'rejected messages per reason');
    const rejectedTotal = sum(rejected);
    const failures = await metrics('netrig_processor_decode_failures_total');
    assert.equal(sum(failures, 'failure', 'unknown_kind'), expected.unknownKinds, 'every record of an unknown kind counted');
    assert.equal(sum(failures, 'failure', 'lane_error'), 0, 'no exception reached a lane');
    assert.equal(sum(failures, 'failure', 'function_error'), 0, 'no function threw');
    // Dead letters: each rejected message offered once, stored within the rate or shed, counted either way.
    // (Rows ClickHouse refuses, from mutated envelopes that decode, are dead letters too: row_refused.)
    const messageLetters = async () => (await metrics('netrig_processor_dead_letters_total')).filter((s) => s.labels.reason !== 'row_refused');
    let letters = await messageLetters();
    await waitFor('dead letters in flight to settle', async () => sum((letters = await messageLetters())) === rejectedTotal, 30_000,
      () => `${sum(letters)} of ${rejectedTotal}`);
    const refusedRows = await c.metric('netrig_processor_rows_refused_total');
    assert.equal(sum(await metrics('netrig_processor_dead_letters_total'), 'reason', 'row_refused'), refusedRows, 'every refused row dead-lettered');
    assert.equal(sum(letters, 'outcome', 'failed'), 0, 'no dead letter failed');
    const stored = sum(letters, 'outcome', 'stored');
    assert.ok(stored > 0 && sum(letters, 'outcome', 'shed') > 0, `some stored (${stored}), the flood shed`);
    // The dead-letter stream keeps its newest 256 MiB (discard old): what it received is its last sequence.
    assert.equal((await jsm.streams.info(DLQ_STREAM)).state.last_seq, stored + refusedRows, 'every stored dead letter reached the dead-letter stream');

    // Memory bounded.
    sampling = false;
    await sampler;
    const firstHalf = samples.filter((s) => s.handled >= 0 && s.handled <= sent / 2);
    const peakEarly = Math.max(...firstHalf.map((s) => s.rss));
    const peakLate = Math.max(...samples.filter((s) => s.handled > sent / 2).map((s) => s.rss));
    const peak = Math.max(peakEarly, peakLate);
    const MiB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    const figures = `${sent} messages (${rejectedTotal} rejected, ${stored} dead letters stored, ${refusedRows} rows refused) published in ${(publishedMs / 1000).toFixed(1)} s, `
      + `handled and acknowledged in ${(drainedMs / 1000).toFixed(1)} s (${Math.round(sent / (drainedMs / 1000))}/s); `
      + `RSS peak ${MiB(peak)}, over the first half ${MiB(peakEarly)}, over the second ${MiB(peakLate)} (${samples.length} samples); `
      + `CPU: processor ${processorCpu.toFixed(1)} s, this test ${testCpu.toFixed(1)} s`;
    process.stdout.write(`# fault campaign: ${figures}\n`);
    assert.ok(firstHalf.length >= 2, `RSS sampled during the first half (${figures})`);
    assert.ok(peak < RSS_BOUND, `RSS under ${MiB(RSS_BOUND)} (${figures})`);
    assert.ok(peakLate <= peakEarly * RSS_GROWTH, `RSS over the second half within ${RSS_GROWTH}x of the first half's (${figures})`);

    assert.equal(await c.signal('SIGTERM'), 0, `the processor stopped cleanly:\n${c.log()}`);
    child = null;

    // The valid envelopes' rows, exactly once.
    const got = await queryStore<{ path: string; n: string }>(dataDir, database,
      `SELECT path, count() AS n FROM ${database}.http_requests WHERE node = '${TRUSTED.node}' GROUP BY path`);
    const doubled = got.filter((r) => r.n !== '1').map((r) => r.path);
    const gotPaths = new Set(got.map((r) => r.path));
    const missing = expected.validPaths.filter((p) => !gotPaths.has(p));
    assert.deepEqual({ rows: got.length, missing: missing.slice(0, 10), doubled: doubled.slice(0, 10) }, { rows: expected.validPaths.length, missing: [], doubled: [] });
  } finally {
    sampling = false;
    await sampler;
    await child?.signal('SIGKILL');
    await jetstreamManager(nc).then((jsm) => Promise.allSettled([jsm.streams.delete(STREAM.name), jsm.streams.delete(DLQ_STREAM)]));
    rmSync(dataDir, { recursive: true, force: true });
    unregister();
  }
});
