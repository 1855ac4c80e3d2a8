/**
 * Edge drain: records/s and loss of netrig's ring-buffer drain (the mapped ring read by
 * RingBufferReader.drain, each record handed to Batcher.add, up to sealed shard batches —
 * everything before msgpack and NATS) against libbpf's own consumer (ring_buffer__new with
 * a per-record callback registered through koffi), under the same in-kernel load.
 *
 * libbpf's consumer is driven by ring_buffer__consume, not ring_buffer__poll: poll waits on
 * an epoll the kernel signals only on wakeups, and the load writes with BPF_RB_NO_WAKEUP as
 * netrig's programs do, so poll never sees a record (the bench measures and prints this).
 *
 * Load: bench/drain.bpf.c on tracepoint syscalls:sys_enter_getppid writes one 64-byte
 * netrig-shaped record per getppid(2) of bench/build/loadgen (pinned to CPU 0) with
 * BPF_RB_NO_WAKEUP, counting accepted and refused records per CPU. This process is pinned
 * to CPU 1. Both consumers run the edge's schedule (edge/edge.ts `tick`): drain, seal
 * batches older than the linger, then the next drain at once (setImmediate) when this one
 * took at least BUSY_DRAIN_RECORDS, else after pollIntervalMs.
 *
 * Steady state: each round runs the load for a warm-up plus a measuring window; only the
 * window counts (records produced, refused and consumed between its two snapshots).
 * Rounds alternate between the consumers; the median round is reported. The load runs
 * twice: as fast as one core makes it (what each consumer sustains) and paced at the
 * target rate (the target: that rate with zero loss, every round). Every round also
 * checks that each getppid call reached the program, each accepted record was consumed
 * exactly once and sealed, and every shard got records.
 *
 * Full buffer: the ring is filled with no consumer running, then one drain of it is timed;
 * the consumer is kept across fills (warm mapping and batch buffers, as in the edge) and
 * the first, cold drain is not counted. Each path is also timed without the Batcher (the
 * reader alone; the callback alone) to show where the time goes.
 *
 * Environment: NETRIG_BENCH_SECONDS (window, default 5), NETRIG_BENCH_ROUNDS (3),
 * NETRIG_BENCH_FULL_ROUNDS (5).
 */
import { BUSY_DRAIN_RECORDS } from '../edge/edge.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { Batcher, type SealedBatch } from '../edge/batcher.js';
import { BpfObject, type BpfMapHandle } from '../edge/bpf-object.js';
import { edgeConfig } from '../edge/config.js';
import { libbpf, libbpfStrerror } from '../edge/libbpf.js';
import { RingBufferReader } from '../edge/ringbuf.js';
import { prepareHost } from '../edge/system.js';
import { logger } from '../lib/logger.js';
import {
  cpuBusySeconds, cpuSeconds, envNumber, fmtCount, fmtPct, median, onlineCpus, pinProcess, processCpuSeconds,
  type BenchContext, type Benchmark,
} from './harness.js';

const BUILD = new URL('../../bench/build/', import.meta.url);
const OBJECT_PATH = fileURLToPath(new URL('drain.bpf.o', BUILD));
const LOADGEN_PATH = fileURLToPath(new URL('loadgen', BUILD));

/** Same ring for both consumers: the edge's default size. */
const RING_BYTES = 32 * 1024 * 1024;
/** sizeof(struct drain_rec) (bench/drain.h), plus the ring's 8-byte record header. */
const RECORD_BYTES = 64;
const SLOT_BYTES = RECORD_BYTES + 8;
const LOAD_CPU = 0;
const DRAIN_CPU = 1;
const WARMUP_S = 1;
/** The load runs on a little past the window so the window closes under load. */
const TAIL_S = 0.3;
const WINDOW_S = envNumber('NETRIG_BENCH_SECONDS', 5);
const ROUNDS = Math.round(envNumber('NETRIG_BENCH_ROUNDS', 3));
const FULL_ROUNDS = Math.round(envNumber('NETRIG_BENCH_FULL_ROUNDS', 5));
/** The target for the edge drain on one core. */
const TARGET_RATE = 2.5e6;
/** enum drain_count (bench/drain.h). */
const DRAIN_OK = 0;
const DRAIN_FULL = 1;

/** The edge's batching and polling defaults, so the bench follows them when they change. */
const EDGE = edgeConfig({}).edge;

// libbpf's ring-buffer consumer, bound here: the edge does not use it.
const lib = koffi.load('libbpf.so.1');
koffi.opaque('netrig_bench_ring_buffer');
const SampleFn = koffi.proto('int netrig_bench_ring_sample(void *ctx, void *data, size_t size)');
type RingPtr = { readonly __brand: 'ring_buffer' };
const ringBuffer = {
  create: lib.func('netrig_bench_ring_buffer *ring_buffer__new(int map_fd, netrig_bench_ring_sample *sample_cb, void *ctx, void *opts)') as
    (fd: number, cb: bigint, ctx: null, opts: null) => RingPtr | null,
  poll: lib.func('int ring_buffer__poll(netrig_bench_ring_buffer *rb, int timeout_ms)') as (rb: RingPtr, timeoutMs: number) => number,
  consume: lib.func('int ring_buffer__consume(netrig_bench_ring_buffer *rb)') as (rb: RingPtr) => number,
  free: lib.func('void ring_buffer__free(netrig_bench_ring_buffer *rb)') as (rb: RingPtr) => void,
};
/** memcpy with the destination a JS buffer (koffi passes typed arrays by reference). */
const memcpyIn = koffi.load('libc.so.6').func('memcpy', 'void *', ['uint8_t *', 'void *', 'size_t']) as
  (dst: Uint8Array, src: bigint, n: number) => unknown;

interface Counts {
  ok: number;
  full: number;
}

/** The load program: loaded and attached once, pointed at one load generator at a time. */
class LoadProgram {
  readonly events: BpfMapHandle;
  private readonly counts: BpfMapHandle;
  private readonly cfg: BpfMapHandle;
  private readonly ncpus = libbpf.numPossibleCpus();
  private readonly key = Buffer.alloc(4);
  private readonly value: Buffer;

  private constructor(private readonly obj: BpfObject) {
    this.events = obj.map('events');
    this.counts = obj.map('counts');
    this.cfg = obj.map('drain_cfg');
    this.value = Buffer.alloc(8 * this.ncpus);
  }

  static open(): LoadProgram {
    const log = logger('bench.drain');
    log.level = 'warn';
    const obj = BpfObject.open(OBJECT_PATH, log);
    try {
      obj.setMaxEntries('events', RING_BYTES);
      obj.load();
      const p = new LoadProgram(obj);
      obj.attachAll();
      return p;
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** Produce records for `tgid`'s getppid calls only (0: for nobody). */
  target(tgid: number): void {
    const v = Buffer.alloc(8);
    v.writeUInt32LE(tgid, 0);
    const err = libbpf.mapUpdate(this.cfg.fd, Buffer.alloc(4), v, 0);
    if (err) throw new Error(`updating drain_cfg failed: ${libbpfStrerror(err)}`);
  }

  /** Records accepted and refused by the ring so far, summed over CPUs. */
  read(): Counts {
    return { ok: this.sum(DRAIN_OK), full: this.sum(DRAIN_FULL) };
  }

  private sum(idx: number): number {
    this.key.writeUInt32LE(idx);
    const err = libbpf.mapLookup(this.counts.fd, this.key, this.value);
    if (err) throw new Error(`reading counts[${idx}] failed: ${libbpfStrerror(err)}`);
    let total = 0;
    for (let c = 0; c < this.ncpus; c++) total += Number(this.value.readBigUInt64LE(8 * c));
    return total;
  }

  /** Detach and free everything (links in reverse order, then the object). */
  close(): void {
    try {
      this.target(0);
    } finally {
      this.obj.close();
    }
  }
}

/** One run of bench/build/loadgen, held at its start gate until go(). */
class LoadGen {
  private readonly child: ChildProcess;
  private out = '';
  private readonly done: Promise<number>;
  exited = false;

  constructor(args: string[]) {
    this.child = spawn(LOADGEN_PATH, [String(LOAD_CPU), ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.done = new Promise((resolve, reject) => {
      this.child.once('error', reject);
      this.child.once('exit', (code, signal) => {
        this.exited = true;
        const m = /calls=(\d+)/.exec(this.out);
        if (code === 0 && m) resolve(Number(m[1]));
        else reject(new Error(`loadgen exited with ${signal ?? code}: ${this.out.trim()}`));
      });
    });
    this.done.catch(() => undefined);
    if (this.child.pid === undefined) throw new Error(`cannot start ${LOADGEN_PATH}`);
  }

  get pid(): number {
    return this.child.pid!;
  }

  go(): void {
    this.child.stdin!.end('g');
  }

  /** getppid calls made, once the load generator has exited. */
  calls(): Promise<number> {
    return this.done;
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

/** What every record is handed to: the edge's Batcher, with its clock and sealed output. */
class Sink {
  nowMs = performance.now();
  sealedRecords = 0;
  /** Records sealed per shard: every shard must get some, or records were not read right. */
  readonly shardRecords = new Float64Array(EDGE.shards);
  readonly batcher = new Batcher(
    { shards: EDGE.shards, maxBatchBytes: EDGE.maxBatchBytes, maxBatchRecords: EDGE.maxBatchRecords },
    (b: SealedBatch) => {
      this.sealedRecords += b.count;
      this.shardRecords[b.shard] += b.count;
    },
  );
  /** Called every few thousand records by consumers that cannot return between polls. */
  checkpoint: () => void = () => undefined;
  /** Called before each poll of the edge schedule. */
  beforePoll: () => void = () => undefined;
}

/** A consumer of the ring under test. */
interface Consumer {
  /** Records taken since creation. */
  readonly taken: number;
  /** Bytes in the ring not yet consumed, when the consumer can tell cheaply. */
  pending?(): number;
  /** Take what the ring holds now without blocking; returns the records taken. */
  poll(): number;
  close(): void;
}

/** netrig's path: the mapped ring, each record into Batcher.add as edge/edge.ts does. */
class NetrigConsumer implements Consumer {
  taken = 0;
  private readonly reader: RingBufferReader;
  private readonly visit: (data: Uint8Array, off: number, len: number) => void;

  constructor(fd: number, sink: Sink, batch = true) {
    this.reader = new RingBufferReader(fd, RING_BYTES);
    this.visit = batch ? (data, off, len) => sink.batcher.add(data, off, len, sink.nowMs) : () => undefined;
  }

  poll(): number {
    const n = this.reader.drain(this.visit);
    this.taken += n;
    return n;
  }

  pending(): number {
    return this.reader.pending();
  }

  close(): void {
    this.reader.close();
  }
}

/** Callback checkpoints every this many records (a power of two). */
const CHECKPOINT_RECORDS = 1 << 14;

/**
 * libbpf's path: the koffi callback runs once per record inside ring_buffer__consume
 * (or ring_buffer__poll, see `wakeupProbe`). It gets a pointer; the cheapest way found to
 * hand those bytes to Batcher.add is one memcpy call into a reused staging buffer (about
 * 1.7M rec/s from a full ring here, against 0.5M for koffi.decode and 0.35M for a
 * koffi.view per record), so the libbpf side is measured at its best.
 */
class LibbpfConsumer implements Consumer {
  taken = 0;
  private readonly rb: RingPtr;
  private readonly cb: bigint;
  /** Larger than any record of the load; a fresh ArrayBuffer, so 8-byte aligned. */
  private readonly staging = new Uint8Array(4096);

  constructor(fd: number, sink: Sink, batch = true, private readonly viaEpoll = false) {
    const staging = this.staging;
    const onRecord = batch
      ? (_ctx: unknown, data: bigint, size: number): number => {
        memcpyIn(staging, data, size);
        sink.batcher.add(staging, 0, size, sink.nowMs);
        if ((++this.taken & (CHECKPOINT_RECORDS - 1)) === 0) sink.checkpoint();
        return 0;
      }
      : (): number => {
        if ((++this.taken & (CHECKPOINT_RECORDS - 1)) === 0) sink.checkpoint();
        return 0;
      };
    this.cb = koffi.register(onRecord, koffi.pointer(SampleFn));
    const rb = ringBuffer.create(fd, this.cb, null, null);
    if (!rb) {
      koffi.unregister(this.cb);
      throw new Error(`ring_buffer__new failed: ${libbpfStrerror(koffi.errno())}`);
    }
    this.rb = rb;
  }

  poll(): number {
    const n = this.viaEpoll ? ringBuffer.poll(this.rb, 0) : ringBuffer.consume(this.rb);
    if (n < 0) throw new Error(`ring_buffer__${this.viaEpoll ? 'poll' : 'consume'} failed: ${libbpfStrerror(n)}`);
    return n;
  }

  close(): void {
    ringBuffer.free(this.rb);
    koffi.unregister(this.cb);
  }
}

type ConsumerKind = 'netrig' | 'libbpf';

const LABELS: Record<ConsumerKind, string> = {
  netrig: 'netrig mmap reader',
  libbpf: 'libbpf ring_buffer__consume + koffi callback',
};

function makeConsumer(kind: ConsumerKind, fd: number, sink: Sink, batch = true): Consumer {
  return kind === 'netrig' ? new NetrigConsumer(fd, sink, batch) : new LibbpfConsumer(fd, sink, batch);
}

interface Snapshot {
  t: number;
  taken: number;
  counts: Counts;
  /** CPU seconds of this process, of the load generator, and of each CPU (busy + stolen). */
  cpu: number;
  genCpu: number;
  cpus: number[];
}

/** Result of one steady-state round, over its measuring window. */
interface RoundResult {
  kind: ConsumerKind;
  seconds: number;
  produced: number;
  lost: number;
  consumed: number;
  /** CPU time of this process over the window / wall time. */
  cpu: number;
  /**
   * Share of the load CPU and of the drain CPU taken by anything else (other processes,
   * interrupts, the hypervisor) over the window: noise that can cost records.
   */
  othersLoadCpu: number;
  othersDrainCpu: number;
  /** Longest time between two polls in the window, ms. */
  maxGapMs: number;
  /** Highest ring fill seen before a poll in the window (NaN when the consumer cannot tell). */
  maxFill: number;
}

/**
 * Drain as edge/edge.ts `tick` does until `stop()`: poll, seal batches older than the
 * linger, then poll again at once after a busy drain, else after the poll interval.
 */
function drainOnEdgeSchedule(consumer: Consumer, sink: Sink, stop: () => boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const tick = (): void => {
      try {
        sink.nowMs = performance.now();
        sink.beforePoll();
        const n = consumer.poll();
        sink.batcher.flush(sink.nowMs - EDGE.lingerMs);
        sink.checkpoint();
        if (stop()) resolve();
        else if (n >= BUSY_DRAIN_RECORDS) setImmediate(tick);
        else setTimeout(tick, EDGE.pollIntervalMs);
      } catch (err) {
        reject(err);
      }
    };
    tick();
  });
}

/**
 * One steady-state round: start the load, drain on the edge's schedule until the load
 * generator exits, take the rest, and check that every call produced a record attempt and
 * every accepted record was consumed once and reached a sealed batch.
 */
async function steadyRound(prog: LoadProgram, kind: ConsumerKind, rate = 0): Promise<RoundResult> {
  const sink = new Sink();
  const consumer = makeConsumer(kind, prog.events.fd, sink);
  let gen: LoadGen | null = null;
  try {
    const before = prog.read();
    gen = new LoadGen(['seconds', String(WARMUP_S + WINDOW_S + TAIL_S), ...(rate ? ['rate', String(rate)] : [])]);
    prog.target(gen.pid);
    let start: Snapshot | null = null;
    let end: Snapshot | null = null;
    const genPid = gen.pid;
    const snap = (): Snapshot => ({
      t: performance.now(), taken: consumer.taken, counts: prog.read(),
      cpu: cpuSeconds(), genCpu: processCpuSeconds(genPid), cpus: cpuBusySeconds(),
    });
    let lastPoll = NaN;
    let maxGapMs = 0;
    let maxFill = consumer.pending ? 0 : NaN;
    sink.beforePoll = () => {
      if (!start || end) return;
      if (sink.nowMs - lastPoll > maxGapMs) maxGapMs = sink.nowMs - lastPoll;
      lastPoll = sink.nowMs;
      if (consumer.pending) maxFill = Math.max(maxFill, consumer.pending() / RING_BYTES);
    };
    const t0 = performance.now();
    const startAt = t0 + WARMUP_S * 1000;
    const endAt = startAt + WINDOW_S * 1000;
    sink.checkpoint = () => {
      const now = performance.now();
      if (!start && now >= startAt) start = snap();
      else if (start && !end && now >= endAt) end = snap();
    };
    gen.go();

    const g = gen;
    await drainOnEdgeSchedule(consumer, sink, () => g.exited);
    const calls = await gen.calls();
    prog.target(0);
    consumer.poll();
    sink.batcher.flush();
    const after = prog.read();

    const produced = after.ok + after.full - before.ok - before.full;
    const accepted = after.ok - before.ok;
    if (calls !== produced || consumer.taken !== accepted || sink.sealedRecords !== accepted) {
      throw new Error(`${kind}: counts disagree: ${calls} calls, ${produced} records produced, ${accepted} accepted, ${consumer.taken} consumed, ${sink.sealedRecords} in sealed batches`);
    }
    if (sink.shardRecords.some((n) => n === 0)) {
      throw new Error(`${kind}: some shards got no records (${sink.shardRecords.join(' ')}): records were not read as written`);
    }
    if (!start || !end) throw new Error(`${kind}: the measuring window did not close (the load generator stopped early?)`);
    const s: Snapshot = start;
    const e: Snapshot = end;
    const seconds = (e.t - s.t) / 1000;
    return {
      kind,
      seconds,
      produced: e.counts.ok + e.counts.full - s.counts.ok - s.counts.full,
      lost: e.counts.full - s.counts.full,
      consumed: e.taken - s.taken,
      cpu: (e.cpu - s.cpu) / seconds,
      othersLoadCpu: Math.max(0, e.cpus[LOAD_CPU] - s.cpus[LOAD_CPU] - (e.genCpu - s.genCpu)) / seconds,
      othersDrainCpu: Math.max(0, e.cpus[DRAIN_CPU] - s.cpus[DRAIN_CPU] - (e.cpu - s.cpu)) / seconds,
      maxGapMs,
      maxFill,
    };
  } finally {
    prog.target(0);
    gen?.kill();
    consumer.close();
  }
}

/**
 * ring_buffer__poll waits on epoll, which the kernel signals only on a ring-buffer wakeup;
 * the load, like netrig's programs, writes with BPF_RB_NO_WAKEUP. Run a poll-driven libbpf
 * consumer created on the empty ring for a moment and count what it sees.
 */
async function wakeupProbe(prog: LoadProgram): Promise<{ taken: number; accepted: number }> {
  const sink = new Sink();
  const consumer = new LibbpfConsumer(prog.events.fd, sink, false, true);
  let gen: LoadGen | null = null;
  try {
    const before = prog.read();
    gen = new LoadGen(['seconds', '0.3']);
    prog.target(gen.pid);
    gen.go();
    const g = gen;
    await drainOnEdgeSchedule(consumer, sink, () => g.exited);
    await gen.calls();
    prog.target(0);
    consumer.poll();
    return { taken: consumer.taken, accepted: prog.read().ok - before.ok };
  } finally {
    prog.target(0);
    gen?.kill();
    consumer.close();
    emptyRing(prog);
  }
}

/** Drop whatever the ring holds. */
function emptyRing(prog: LoadProgram): void {
  const rest = new NetrigConsumer(prog.events.fd, new Sink(), false);
  rest.poll();
  rest.close();
}

/** Fill the (empty) ring with no consumer running; returns the records it holds. */
async function fillRing(prog: LoadProgram): Promise<number> {
  const before = prog.read();
  const gen = new LoadGen(['calls', String(Math.ceil((RING_BYTES / SLOT_BYTES) * 1.05))]);
  try {
    prog.target(gen.pid);
    gen.go();
    await gen.calls();
  } finally {
    prog.target(0);
    gen.kill();
  }
  const after = prog.read();
  if (after.full === before.full) throw new Error('the ring did not fill up');
  return after.ok - before.ok;
}

/**
 * Records/s of draining a full ring, `rounds` times with one consumer kept across rounds
 * (as the edge keeps its reader: mapping and batch buffers warm), after one untimed drain.
 */
async function fullDrains(prog: LoadProgram, kind: ConsumerKind, batch: boolean, rounds: number): Promise<number[]> {
  const sink = new Sink();
  const consumer = makeConsumer(kind, prog.events.fd, sink, batch);
  const rates: number[] = [];
  try {
    for (let i = 0; i <= rounds; i++) {
      const stored = await fillRing(prog);
      const before = consumer.taken;
      sink.nowMs = performance.now();
      const t = performance.now();
      while (consumer.taken - before < stored && consumer.poll() > 0);
      const seconds = (performance.now() - t) / 1000;
      if (consumer.taken - before !== stored) {
        throw new Error(`${kind}: drained ${consumer.taken - before} of the ${stored} records the ring held`);
      }
      if (i > 0) rates.push(stored / seconds);
    }
    sink.batcher.flush();
    if (batch && consumer.taken !== sink.sealedRecords) {
      throw new Error(`${kind}: ${consumer.taken} records drained, ${sink.sealedRecords} sealed`);
    }
    return rates;
  } finally {
    consumer.close();
  }
}

function medianRound(rounds: RoundResult[]): RoundResult {
  const byRate = [...rounds].sort((a, b) => a.consumed / a.seconds - b.consumed / b.seconds);
  return byRate[(byRate.length - 1) >>> 1];
}

const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;

function describe(r: RoundResult): string {
  // Gaps and fill only mean something for a consumer that returns between polls.
  const gap = Number.isNaN(r.maxFill) ? '' : `, max gap ${r.maxGapMs.toFixed(0)} ms, fill <= ${pct(r.maxFill)}`;
  return `produced ${fmtCount(r.produced / r.seconds)}/s, consumed ${fmtCount(r.consumed / r.seconds)}/s, ` +
    `loss ${fmtPct(r.lost / r.produced)}, cpu ${pct(r.cpu)}${gap}, ` +
    `others on cpu ${LOAD_CPU}/${DRAIN_CPU} ${pct(r.othersLoadCpu)}/${pct(r.othersDrainCpu)}`;
}

/** ROUNDS steady rounds of each consumer, alternating which goes first; `rate` 0: as fast as the load goes. */
async function interleavedRounds(ctx: BenchContext, prog: LoadProgram, label: string, rate: number): Promise<Record<ConsumerKind, RoundResult[]>> {
  const rounds: Record<ConsumerKind, RoundResult[]> = { netrig: [], libbpf: [] };
  for (let i = 0; i < ROUNDS; i++) {
    const order: ConsumerKind[] = i % 2 ? ['libbpf', 'netrig'] : ['netrig', 'libbpf'];
    const parts: string[] = [];
    for (const kind of order) {
      const r = await steadyRound(prog, kind, rate);
      rounds[kind].push(r);
      parts.push(`${kind}: ${describe(r)}`);
    }
    ctx.line(`${label} ${i + 1}  ${parts.join('  |  ')}`);
  }
  return rounds;
}

async function run(ctx: BenchContext): Promise<void> {
  if (!onlineCpus().includes(LOAD_CPU) || !onlineCpus().includes(DRAIN_CPU)) {
    throw new Error(`needs CPUs ${LOAD_CPU} and ${DRAIN_CPU} online (load generator and drain on separate cores)`);
  }
  for (const p of [OBJECT_PATH, LOADGEN_PATH]) {
    if (!existsSync(p)) throw new Error(`${p} is missing: run 'make -C bench' (after 'make -C bpf')`);
  }
  prepareHost();
  const unpin = pinProcess([DRAIN_CPU]);
  let prog: LoadProgram | null = null;
  try {
    prog = LoadProgram.open();
    ctx.line(
      `load: getppid(2) loop on cpu ${LOAD_CPU} -> tracepoint -> bpf_ringbuf_output(${RECORD_BYTES} B, NO_WAKEUP); ` +
      `drain on cpu ${DRAIN_CPU}; ring ${RING_BYTES >> 20} MiB; ${WARMUP_S} s warm-up + ${WINDOW_S} s window; ` +
      `${ROUNDS} rounds each, interleaved; ${EDGE.shards} shards, busy -> setImmediate, else ${EDGE.pollIntervalMs} ms timer`,
    );

    const probe = await wakeupProbe(prog);
    ctx.line(
      `libbpf ring_buffer__poll(rb, 0) on the edge's schedule saw ${probe.taken} of ${probe.accepted} records in 0.3 s: ` +
      `BPF_RB_NO_WAKEUP never signals its epoll, so the libbpf side calls ring_buffer__consume (the same per-record callback loop, no epoll)`,
    );

    const rounds = await interleavedRounds(ctx, prog, 'round', 0);
    const n = medianRound(rounds.netrig);
    const l = medianRound(rounds.libbpf);
    const nRate = n.consumed / n.seconds;
    const lRate = l.consumed / l.seconds;
    ctx.line(
      `drain  ${LABELS.netrig}: ${fmtCount(nRate)} rec/s, loss ${fmtPct(n.lost / n.produced)}  |  ` +
      `${LABELS.libbpf}: ${fmtCount(lRate)} rec/s, loss ${fmtPct(l.lost / l.produced)}  |  ratio ${(nRate / lRate).toFixed(1)}x`,
    );

    const full = {
      netrigBatch: median(await fullDrains(prog, 'netrig', true, FULL_ROUNDS)),
      netrigRaw: median(await fullDrains(prog, 'netrig', false, FULL_ROUNDS)),
      libbpfBatch: median(await fullDrains(prog, 'libbpf', true, FULL_ROUNDS)),
      libbpfRaw: median(await fullDrains(prog, 'libbpf', false, FULL_ROUNDS)),
    };
    ctx.line(
      `full buffer (${fmtCount(Math.floor(RING_BYTES / SLOT_BYTES))} records, median of ${FULL_ROUNDS})  ` +
      `netrig drain -> Batcher: ${fmtCount(full.netrigBatch)} rec/s (reader alone ${fmtCount(full.netrigRaw)})  |  ` +
      `libbpf consume -> callback -> Batcher: ${fmtCount(full.libbpfBatch)} rec/s (callback alone ${fmtCount(full.libbpfRaw)})  |  ` +
      `ratio ${(full.netrigBatch / full.libbpfBatch).toFixed(1)}x`,
    );

    // The target: the load paced at the target rate, drained with no loss in every round.
    const paced = await interleavedRounds(ctx, prog, 'paced round', TARGET_RATE);
    const lossOf = (rs: RoundResult[]) => rs.reduce((n, r) => n + r.lost, 0) / rs.reduce((n, r) => n + r.produced, 0);
    // A paced producer on a shared host can fall a little short of the rate: a round counts
    // when it offered at least 97% of the target and nothing was lost.
    const good = paced.netrig.filter((r) => r.lost === 0 && r.produced / r.seconds >= TARGET_RATE * 0.97).length;
    const lossy = paced.netrig.filter((r) => r.lost > 0);
    ctx.line(
      `at ${fmtCount(TARGET_RATE)} rec/s offered  ${LABELS.netrig}: loss ${fmtPct(lossOf(paced.netrig))} over ${ROUNDS} rounds  |  ` +
      `${LABELS.libbpf}: loss ${fmtPct(lossOf(paced.libbpf))}`,
    );
    ctx.line(
      `target ${fmtCount(TARGET_RATE)} rec/s with zero loss on one core: ${good === ROUNDS ? 'met' : 'NOT met'} ` +
      `(${good} of ${ROUNDS} paced rounds lossless at >= 97% of the rate; offered ${paced.netrig.map((r) => fmtCount(r.produced / r.seconds)).join(', ')}` +
      (lossy.length ? `; rounds with loss had other work on cpu ${DRAIN_CPU} at ${lossy.map((r) => pct(r.othersDrainCpu)).join(', ')} and gaps up to ${lossy.map((r) => r.maxGapMs.toFixed(0)).join(', ')} ms` : '') +
      ')',
    );
  } finally {
    prog?.close();
    unpin();
  }
}

export const benchmark: Benchmark = {
  name: 'drain',
  title: 'edge ring-buffer drain (RingBufferReader.drain -> Batcher.add) vs libbpf ring_buffer__consume with a koffi callback, same kernel load',
  run,
};
