/**
 * The edge's configuration: one function turns user input (CLI flags) into validated
 * options with defaults, naming the key of any bad value.
 */
import { metricsAccess, type MetricsAccess, type MetricsInput } from '../lib/metrics-server.js';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../lib/errors.js';
import { bytesValue, choiceValue, durationSeconds, intList, intValue, powerOfTwo, tokenValue } from '../lib/config.js';
import type { NatsClientInput } from '../lib/nats.js';
import { streamSettings, type StreamInput } from '../lib/raw-stream.js';
import type { EdgeOptions } from './edge.js';
import type { CaptureSettings, LibbpfSourceOptions } from './libbpf-source.js';

/** Options as the CLI or a caller gives them; strings where a user types them. */
export interface EdgeInput extends NatsClientInput, MetricsInput, StreamInput {
  region?: string;
  node?: string;
  shards?: number | string;
  captureBytes?: string | number;
  sampleRate?: string | number;
  ringBytes?: string | number;
  tlsConnTable?: string | number;
  maxBufferBytes?: string | number;
  lingerMs?: string | number;
  heartbeat?: string;
  includePids?: string | number[];
  excludePids?: string | number[];
  includePorts?: string | number[];
  excludePorts?: string | number[];
  includeNetns?: string | number[];
  excludeNetns?: string | number[];
  includeCgroups?: string | bigint[];
  reportNoisyDrops?: boolean;
  metricsPort?: string | number;
  objectPath?: string;
  /** `auto` (by probing the kernel), `socket` or `syscall`: see edge/capture-plan.ts. */
  capturePath?: string;
  /** `mask` (default): secret HTTP/1 header values are masked before publishing; `keep`. */
  rawSecrets?: string;
  /** User the edge becomes once attached (edge/privileges.ts); `root` or none keeps root. */
  runAs?: string;
}

export interface EdgeConfig {
  nats: string;
  edge: Omit<EdgeOptions, 'bootId'>;
  source: LibbpfSourceOptions;
  metrics: MetricsAccess;
  /** User to drop to once attached, or null to stay as started. */
  runAs: string | null;
}

/** The BPF object built by `make -C bpf`, relative to this file in dist/ or the source tree. */
export const DEFAULT_OBJECT_PATH = fileURLToPath(new URL('../../bpf/build/netrig.bpf.o', import.meta.url));

function cgroupList(v: EdgeInput['includeCgroups']): bigint[] {
  if (!v) return [];
  return (Array.isArray(v) ? v : v.split(',')).map((x) => BigInt(String(x).trim()));
}

/**
 * `--run-as`: a user name, or null for `root` or nothing given (keep root): only `netrig
 * edge`, a process of its own, drops by default; an edge in a process that does more (tests,
 * `netrig up`) keeps its credentials unless asked.
 */
function runAsValue(v: string | undefined): string | null {
  if (v === undefined) return null;
  const user = v;
  if (!/^[a-z_][a-z0-9_.-]{0,31}\$?$/i.test(user)) throw new ConfigError('run-as', `expected a user name, got '${user}'`);
  return user === 'root' ? null : user;
}

/** Validate `input` and fill in defaults. */
export function edgeConfig(input: EdgeInput): EdgeConfig {
  const sampleRate = Number(input.sampleRate ?? 1);
  if (!(sampleRate >= 0 && sampleRate <= 1)) throw new ConfigError('sample-rate', `expected a share from 0 to 1, got ${input.sampleRate}`);
  const settings: CaptureSettings = {
    captureBytes: bytesValue('capture-bytes', input.captureBytes ?? '16KiB', 0, 65536),
    samplePerMillion: Math.round(sampleRate * 1_000_000),
    reportNoisyDrops: input.reportNoisyDrops ?? false,
    include: {
      pids: intList('include-pids', input.includePids, 1, 2 ** 22),
      ports: intList('include-ports', input.includePorts, 1, 65535),
      cgroups: cgroupList(input.includeCgroups),
      netns: intList('include-netns', input.includeNetns, 1, 2 ** 32 - 1),
    },
    exclude: {
      pids: [process.pid, ...intList('exclude-pids', input.excludePids, 1, 2 ** 22)],
      ports: intList('exclude-ports', input.excludePorts, 1, 65535),
      cgroups: [],
      netns: intList('exclude-netns', input.excludeNetns, 1, 2 ** 32 - 1),
    },
  };
  return {
    nats: input.nats ?? 'nats://127.0.0.1:4222',
    metrics: metricsAccess(input, input.metricsPort ?? 9464),
    runAs: runAsValue(input.runAs),
    edge: {
      region: tokenValue('region', input.region ?? 'default'),
      node: tokenValue('node', input.node ?? hostname().replace(/[^A-Za-z0-9_-]/g, '_')),
      shards: intValue('shards', input.shards ?? 16, 1, 1024),
      stream: streamSettings(input),
      maxBatchBytes: 256 * 1024,
      maxBatchRecords: 2048,
      lingerMs: intValue('linger-ms', input.lingerMs ?? 100, 1, 10_000),
      heartbeatMs: durationSeconds('heartbeat', input.heartbeat ?? '1s', 0.1, 60) * 1000,
      maxBufferBytes: bytesValue('max-buffer-bytes', input.maxBufferBytes ?? '256MiB', 1024 ** 2, 2 ** 40),
      publishTimeoutMs: 5000,
      pollIntervalMs: 5,
      maskSecrets: choiceValue('raw-secrets', input.rawSecrets ?? 'mask', ['mask', 'keep'] as const) === 'mask',
    },
    source: {
      objectPath: input.objectPath ?? DEFAULT_OBJECT_PATH,
      ringBytes: powerOfTwo('ring-bytes', bytesValue('ring-bytes', input.ringBytes ?? '32MiB', 64 * 1024, 1024 ** 3), 64 * 1024, 1024 ** 3),
      tlsConnTableEntries: intValue('tls-conn-table', input.tlsConnTable ?? 65536, 1024, 1 << 24),
      capturePath: choiceValue('capture-path', input.capturePath ?? 'auto', ['auto', 'socket', 'syscall'] as const),
      settings,
    },
  };
}
