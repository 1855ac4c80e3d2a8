/**
 * edge/: kernel → NATS JetStream.
 *
 * Input: eBPF records from bpf/build/netrig.bpf.o (LibbpfSource) or recorded bytes
 * (FileSource), behind the RecordSource interface.
 * Output: msgpack envelopes (schemas/envelope.ts) on `<prefix>.<region>.<node>.<shard>` of
 * the raw stream, message id `<node>.<run>.<seq>`, losses counted in the envelopes.
 */
import type { Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import type { NatsConnection } from '@nats-io/transport-node';
import { logger } from '../lib/logger.js';
import { Heartbeat, type EdgeStatus } from '../lib/heartbeat.js';
import { serveMetrics } from '../lib/metrics-server.js';
import { connectNats } from '../lib/nats.js';
import { edgeConfig, type EdgeInput } from './config.js';
import { Edge } from './edge.js';
import { CaptureControl } from './control.js';
import { LibbpfSource } from './libbpf-source.js';
import { dropPrivileges } from './privileges.js';
import { bootId } from './system.js';

export { Edge, type EdgeOptions } from './edge.js';
export { edgeConfig, type EdgeConfig, type EdgeInput, DEFAULT_OBJECT_PATH } from './config.js';
export { LibbpfSource, type CaptureSettings, type FilterSet } from './libbpf-source.js';
export { FileSource } from './file-source.js';
export type { RecordSource } from './source.js';
export { bootId } from './system.js';
export { CONTROL_BUCKET, controlBucket, controlKey, type CaptureOverrides } from './control.js';

/** A running edge with its source, NATS connection and metrics endpoint. */
export interface RunningEdge {
  edge: Edge;
  source: LibbpfSource;
  metricsPort: number;
  stop(): Promise<void>;
}

/** Ports of NATS URLs that point at this host: the server side of our own publishes. */
function localNatsPorts(servers: string): number[] {
  const local = new Set(['localhost', '127.0.0.1', '::1', '[::1]', '0.0.0.0']);
  for (const addrs of Object.values(networkInterfaces())) for (const a of addrs ?? []) local.add(a.address);
  const ports: number[] = [];
  for (const s of servers.split(',')) {
    try {
      const u = new URL(s.includes('://') ? s.trim() : `nats://${s.trim()}`);
      if (local.has(u.hostname)) ports.push(Number(u.port || 4222));
    } catch {
      // An unparsable URL fails at connect with a clear message.
    }
  }
  return ports;
}

/**
 * Load the eBPF programs and publish what they capture until stop(). The edge's own
 * process and a local NATS server's port are excluded from payload capture, so netrig
 * never captures its own traffic. Capture settings follow the control bucket at run time.
 */
export async function runEdge(input: EdgeInput): Promise<RunningEdge> {
  const log = logger('edge');
  const cfg = edgeConfig(input);
  cfg.source.settings.exclude.ports.push(...localNatsPorts(cfg.nats));
  const nc: NatsConnection = await connectNats({ ...input, nats: cfg.nats }, `netrig-edge-${cfg.edge.node}`, log);
  let source: LibbpfSource | null = null;
  let server: Server | null = null;
  let control: CaptureControl | null = null;
  let heartbeat: Heartbeat<EdgeStatus> | null = null;
  try {
    const src = (source = LibbpfSource.open(cfg.source, log));
    const edge = await Edge.start(src, nc, { ...cfg.edge, bootId: bootId() }, log);
    control = await CaptureControl.start(nc, {
      base: input, region: cfg.edge.region, node: cfg.edge.node, self: cfg.source.settings.exclude, log,
      apply: (s) => src.configure(s), replicas: cfg.edge.stream.replicas,
    });
    const metrics = await serveMetrics(edge.metrics.registry, cfg.metrics);
    server = metrics.server;
    let seen = { records: 0, at: performance.now() };
    heartbeat = await Heartbeat.start<EdgeStatus>(nc, 'edge', async () => {
      const now = { records: edge.drainedTotal, at: performance.now() };
      const perS = (now.records - seen.records) / Math.max(0.001, (now.at - seen.at) / 1000);
      seen = now;
      return { region: cfg.edge.region, node: cfg.edge.node, run: edge.runId, records_per_s: Math.round(perS), capture: edge.capture };
    }, log, { replicas: cfg.edge.stream.replicas });
    // Everything that needs root is done: keep only what the running edge uses.
    if (cfg.runAs && process.getuid?.() === 0) {
      const dropped = await dropPrivileges(cfg.runAs);
      log.info({ user: cfg.runAs, uid: dropped.uid, kept: dropped.kept.map((c) => `CAP_${c}`) }, 'privileges dropped');
    }
    const ctl = control;
    const hb = heartbeat;
    return {
      edge,
      source: src,
      metricsPort: metrics.port,
      async stop() {
        ctl.stop();
        await hb.stop();
        await edge.stop();
        server?.close();
        await nc.drain().catch(() => undefined);
      },
    };
  } catch (err) {
    await heartbeat?.stop();
    control?.stop();
    source?.close();
    server?.close();
    await nc.close().catch(() => undefined);
    throw err;
  }
}
