/**
 * The edge in-process for a test: the real eBPF source (LibbpfSource) and the real Edge
 * publishing to a test's nats-server, on a stream and subject prefix of its own, with
 * payload capture restricted to the test's network namespaces. stop() flushes, detaches
 * and closes; the exit safety net detaches the programs if a test dies first.
 */
import { pino } from 'pino';
import type { NatsConnection } from '@nats-io/transport-node';
import { edgeConfig, type EdgeConfig, type EdgeInput } from '../../edge/config.js';
import { Edge } from '../../edge/edge.js';
import { LibbpfSource } from '../../edge/libbpf-source.js';
import { bootId } from '../../edge/system.js';
import { connectNats } from '../../lib/nats.js';
import type { Logger } from '../../lib/logger.js';
import { onExit, uniqueToken } from './cleanup.js';
import { BPF_OBJECT } from './paths.js';

/**
 * The payload paths end-to-end suites run on: `auto` is what this kernel gets by probing
 * (the socket tracepoints on 6.3+), `syscall` the fallback older kernels get, forced here so
 * it is proven on this kernel too (the kernel matrix proves it on older ones).
 */
export const CAPTURE_PATHS = ['auto', 'syscall'] as const;
export type CapturePathChoice = (typeof CAPTURE_PATHS)[number];

export interface EdgeRunOptions {
  /** URL of the test's nats-server. */
  nats: string;
  /** Network namespace inodes whose sockets' payload is captured (include.netns). */
  netns: number[];
  /** Stream name; unique per call by default. */
  stream?: string;
  /** Anything else edgeConfig() accepts (maxBufferBytes, captureBytes, ...). */
  input?: Omit<EdgeInput, 'nats' | 'stream' | 'includeNetns'>;
}

export interface EdgeRun {
  readonly edge: Edge;
  readonly source: LibbpfSource;
  /** The edge's own NATS connection. */
  readonly nc: NatsConnection;
  readonly config: EdgeConfig;
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly node: string;
  /** Flush (waiting up to `flushMs`), detach every program, close NATS. Idempotent. */
  stop(flushMs?: number): Promise<void>;
}

/** A quiet logger for tests: warnings and errors on stderr (NETRIG_LOG_LEVEL overrides). */
export function testLogger(component: string): Logger {
  return pino({ level: process.env.NETRIG_LOG_LEVEL ?? 'warn', base: { component, pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}

/** Load and attach the eBPF programs and start an edge publishing to `opts.nats`. */
export async function startEdge(opts: EdgeRunOptions): Promise<EdgeRun> {
  const token = uniqueToken('t');
  const stream = opts.stream ?? `NETRIG_TEST_${token}`;
  const node = opts.input?.node ?? `node-${token}`;
  const subjectPrefix = opts.input?.subjectPrefix ?? `netrig.test.${token}`;
  const config = edgeConfig({
    // NETRIG_BPF_OBJECT: run the tests against another build of the object (a patched one).
    objectPath: process.env.NETRIG_BPF_OBJECT || BPF_OBJECT,
    metricsPort: 0,
    ...opts.input,
    node,
    subjectPrefix,
    nats: opts.nats,
    stream,
    includeNetns: opts.netns,
  });
  const log = testLogger('edge');
  const nc = await connectNats({ nats: config.nats }, `netrig-test-edge-${token}`, log);
  let source: LibbpfSource | null = null;
  let unregister = () => {};
  try {
    source = LibbpfSource.open(config.source, log);
    const src = source;
    unregister = onExit(`edge ${token}`, () => src.close());
    const edge = await Edge.start(source, nc, { ...config.edge, bootId: bootId() }, log);
    let stopped: Promise<void> | null = null;
    return {
      edge, source, nc, config, stream, subjectPrefix, node,
      stop(flushMs = 10_000) {
        stopped ??= (async () => {
          try {
            await edge.stop(flushMs);
          } finally {
            unregister();
            await nc.close().catch(() => undefined);
          }
        })();
        return stopped;
      },
    };
  } catch (err) {
    unregister();
    source?.close();
    await nc.close().catch(() => undefined);
    throw err;
  }
}
