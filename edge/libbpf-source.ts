/**
 * The eBPF record source: loads bpf/build/netrig.bpf.o through libbpf, configures it,
 * attaches every program and drains the ring buffer from mapped memory. Capture settings
 * and filters live in maps, so they change at run time without reloading.
 */
import type { Logger } from '../lib/logger.js';
import { FILTER_KEY, NETRIG_CONFIG } from '../schemas/layouts.js';
import { REC_KIND_MAX } from '../schemas/records.js';
import { BpfObject, type AttachedProgram, type BpfMapHandle } from './bpf-object.js';
import { libbpf, libbpfStrerror } from './libbpf.js';
import { RingBufferReader } from './ringbuf.js';
import type { CaptureDescription, RecordSource, RecordVisitor, SourceLoss } from './source.js';
import { prepareHost } from './system.js';
import { TlsTargets } from './tls-targets.js';
import { BpfError } from '../lib/errors.js';
import { planObject, type CapturePlan, type PayloadPath } from './capture-plan.js';

/** New libssl files (containers, processes started later with their own) are looked for this often. */
const TLS_SCAN_MS = 10_000;

/** Loss causes as the kernel numbers them (enum loss_cause). */
const KERNEL_LOSS_CAUSES = ['ringbuf_full', 'tls_unattributed'];

/** Which sockets' payload is captured. Lifecycle and TCP events are never filtered. */
export interface FilterSet {
  pids: number[];
  ports: number[];
  cgroups: bigint[];
  netns: number[];
}

export interface CaptureSettings {
  /** Most payload bytes captured per syscall (split into 8 KiB records, at most 64 KiB). */
  captureBytes: number;
  /** Share of sockets whose payload is captured, in millionths (1e6 = all). */
  samplePerMillion: number;
  /** Also report the noisy drop reasons: NOT_SPECIFIED and QUEUE_PURGE (frees at socket close). */
  reportNoisyDrops: boolean;
  /** Capture only sockets matching every non-empty list. */
  include: FilterSet;
  /** Never capture sockets matching any of these. */
  exclude: FilterSet;
}

export interface LibbpfSourceOptions {
  objectPath: string;
  /** Ring buffer size in bytes (a power of two, multiple of the page size). */
  ringBytes: number;
  /**
   * TLS connections whose plaintext positions are kept at once, before the least recently
   * used is forgotten (other socket state lives in the sockets' own storage, unbounded).
   */
  tlsConnTableEntries: number;
  /** The payload path: chosen by probing the kernel (`auto`), or forced. */
  capturePath: 'auto' | PayloadPath;
  settings: CaptureSettings;
}

const FILTER_TYPES = { pids: 0, ports: 1, cgroups: 2, netns: 3 } as const;
const INCLUDE = 1;
const EXCLUDE = 2;

export class LibbpfSource implements RecordSource {
  readonly exhausted = false;
  readonly programs: AttachedProgram[];
  /** How this kernel is captured: the payload path and the features active. */
  readonly capture: CaptureDescription;
  private readonly ring: RingBufferReader;
  private readonly losses: BpfMapHandle;
  private readonly cfgMap: BpfMapHandle;
  private readonly filterMap: BpfMapHandle;
  private readonly ncpus: number;
  private readonly lossSeen = new Float64Array(REC_KIND_MAX * KERNEL_LOSS_CAUSES.length);
  private filterEntries = new Map<string, { key: Buffer; action: number }>();
  private readonly tls: TlsTargets;
  private readonly tlsTimer: NodeJS.Timeout;

  private constructor(
    private readonly obj: BpfObject,
    plan: CapturePlan,
    opts: LibbpfSourceOptions,
    private readonly log: Logger,
  ) {
    this.capture = { path: plan.payload, features: plan.features };
    this.ncpus = libbpf.numPossibleCpus();
    this.losses = obj.map('losses');
    this.cfgMap = obj.map('netrig_cfg');
    this.filterMap = obj.map('filters');
    this.configure(opts.settings);
    this.programs = obj.attachAll();
    this.tls = new TlsTargets(obj, log);
    this.tls.scan();
    this.tlsTimer = setInterval(() => this.tls.scan(), TLS_SCAN_MS).unref();
    const events = obj.map('events');
    this.ring = new RingBufferReader(events.fd, events.maxEntries);
  }

  /** Prepare the host, then open, size, load, configure and attach. */
  static open(opts: LibbpfSourceOptions, log: Logger): LibbpfSource {
    prepareHost();
    const obj = BpfObject.open(opts.objectPath, log);
    try {
      const plan = planObject(obj, opts.capturePath === 'auto' ? undefined : opts.capturePath);
      log.info({ payload: plan.payload, features: plan.features, skipped: plan.skipped }, 'capture plan for this kernel');
      obj.setMaxEntries('events', opts.ringBytes);
      obj.setMaxEntries('tls_conns', opts.tlsConnTableEntries);
      obj.load();
      return new LibbpfSource(obj, plan, opts, log);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** Rewrite capture settings and filters; applies to sockets first seen from now on. */
  configure(s: CaptureSettings): void {
    const cfg = Buffer.alloc(NETRIG_CONFIG.size);
    const f = NETRIG_CONFIG.fields;
    let includeMask = 0;
    for (const [name, type] of Object.entries(FILTER_TYPES)) {
      if (s.include[name as keyof FilterSet].length) includeMask |= 1 << type;
    }
    cfg.writeUInt32LE(Math.min(s.captureBytes, 65536), f.capture_bytes);
    cfg.writeUInt32LE(s.samplePerMillion, f.sample_per_million);
    cfg.writeUInt32LE(includeMask, f.include_mask);
    cfg.writeUInt32LE(s.reportNoisyDrops ? 1 : 0, f.drop_flags);
    this.update(this.cfgMap, Buffer.alloc(4), cfg);

    // Filters: write the wanted entries, delete the ones no longer wanted.
    const wanted = new Map<string, { key: Buffer; action: number }>();
    for (const [set, action] of [[s.include, INCLUDE], [s.exclude, EXCLUDE]] as const) {
      for (const [name, type] of Object.entries(FILTER_TYPES)) {
        for (const v of set[name as keyof FilterSet]) {
          const key = Buffer.alloc(FILTER_KEY.size);
          key.writeUInt32LE(type, FILTER_KEY.fields.type);
          key.writeBigUInt64LE(BigInt(v), FILTER_KEY.fields.value);
          wanted.set(`${type}:${v}`, { key, action });
        }
      }
    }
    for (const [id, e] of this.filterEntries) if (!wanted.has(id)) libbpf.mapDelete(this.filterMap.fd, e.key);
    for (const e of wanted.values()) this.update(this.filterMap, e.key, Buffer.from([e.action]));
    this.filterEntries = wanted;
  }

  private update(map: BpfMapHandle, key: Buffer, value: Buffer): void {
    const err = libbpf.mapUpdate(map.fd, key, value, 0);
    if (err) throw new BpfError(`updating map ${map.name} failed: ${libbpfStrerror(err)}`, err);
  }

  poll(visit: RecordVisitor): number {
    return this.ring.drain(visit);
  }

  fill(): number {
    return this.ring.pending() / this.ring.size;
  }

  /** Kernel losses since the last call, summed over CPUs. */
  takeLosses(): SourceLoss[] {
    const out: SourceLoss[] = [];
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(8 * this.ncpus);
    for (let idx = 0; idx < this.lossSeen.length; idx++) {
      key.writeUInt32LE(idx);
      if (libbpf.mapLookup(this.losses.fd, key, value)) continue;
      let total = 0;
      for (let c = 0; c < this.ncpus; c++) total += Number(value.readBigUInt64LE(8 * c));
      const delta = total - this.lossSeen[idx];
      if (delta > 0) {
        this.lossSeen[idx] = total;
        out.push({
          kind: Math.floor(idx / KERNEL_LOSS_CAUSES.length),
          cause: KERNEL_LOSS_CAUSES[idx % KERNEL_LOSS_CAUSES.length],
          records: delta,
        });
      }
    }
    return out;
  }

  close(): void {
    clearInterval(this.tlsTimer);
    this.ring.close();
    this.obj.close();
    this.log.info('bpf programs detached');
  }
}
