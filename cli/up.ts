/**
 * `netrig up`: the whole pipeline on this host. A nats-server of its own (or --nats), the
 * embedded ClickHouse engine under the data dir served on a ClickHouse-compatible HTTP
 * endpoint (or --clickhouse-url), the page (cli/ui.ts), a processor and the edge; a live summary until Ctrl-C,
 * then everything stops in reverse order with nothing left attached or running. With its
 * own nats-server, the edge and the processor each connect in their role (cli/nats-roles.ts).
 */
import { join, resolve } from 'node:path';
import { runEdge, type EdgeInput, type RunningEdge } from '../edge/index.js';
import { openClickHouse, type ClickHouse } from '../lib/clickhouse.js';
import { lockDataDir } from '../lib/data-dir.js';
import { WRITER_USER, type ClickHouseEndpoint } from '../lib/clickhouse-endpoint.js';
import { intValue } from '../lib/config.js';
import { ConfigError } from '../lib/errors.js';
import { replicasValue } from '../lib/raw-stream.js';
import { advertiseUp } from '../lib/running-ups.js';
import { logger } from '../lib/logger.js';
import type { NatsClientInput } from '../lib/nats.js';
import { natsAuthDir, startOwnedNatsServer, type OwnedNatsServer } from '../lib/nats-server.js';
import { secretFile } from '../lib/secret-file.js';
import { metricsPasswordOfFile } from '../lib/metrics-server.js';
import { clickhouseTarget, runProcessor, type RunningProcessor } from '../processors/index.js';
import type { Credentials } from '../lib/basic-auth.js';
import type { PageServer } from '../ui/server.js';
import { readerCredentials, writerPasswordFile } from './endpoint-file.js';
import { servePage } from './ui.js';
import { serveStore } from './store.js';
import { natsRoles, type NatsRole } from './nats-roles.js';
import { Summary } from './summary.js';

export interface UpInput extends EdgeInput {
  dataDir?: string;
  natsPort?: string | number;
  /** Listen address of the owned nats-server; beyond loopback it speaks TLS only. */
  natsHost?: string;
  /** TLS on the owned nats-server even on loopback. */
  natsTls?: boolean;
  clickhouseUrl?: string;
  clickhouseUser?: string;
  clickhousePassword?: string;
  /** A cluster of the --clickhouse-url server's remote_servers to spread the tables over. */
  clickhouseCluster?: string;
  database?: string;
  httpHost?: string;
  httpPort?: string | number;
  user?: string;
  password?: string;
  functions?: string;
  ttlDays?: string | number;
  processorMetricsPort?: string | number;
  summaryInterval?: string | number;
  /** The page's port on 127.0.0.1 (0 picks one). */
  uiPort?: string | number;
  /** false (`--no-ui`): no page. */
  ui?: boolean;
}

/** A running `netrig up`. */
export interface Up {
  endpointUrl: string | null;
  /** Where the page is served, null with --no-ui. */
  pageUrl: string | null;
  natsUrl: string;
  stop(): Promise<void>;
}

function localPort(url: string | undefined): number[] {
  if (!url) return [];
  try {
    const u = new URL(url);
    return ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(u.hostname) ? [Number(u.port || (u.protocol === 'https:' ? 8443 : 8123))] : [];
  } catch {
    return [];
  }
}

export async function up(input: UpInput, out: NodeJS.WriteStream = process.stdout): Promise<Up> {
  const log = logger('up');
  if (!input.nats && replicasValue(input.streamReplicas) > 1) {
    throw new ConfigError('stream-replicas', "netrig up's own nats-server is one server, which holds one replica: give --nats with a JetStream cluster for 3 or 5");
  }
  const dataDir = resolve(input.dataDir ?? './.netrig');
  // Created 0700 and locked before anything is written under it.
  const unlock = lockDataDir(dataDir);
  const undo: (() => Promise<void> | void)[] = [unlock];
  const stopAll = async () => {
    for (const u of undo.splice(0).reverse()) {
      try {
        await u();
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'stop step failed');
      }
    }
  };
  try {
    // NATS: our own server unless one is given; with our own, each part connects in its role.
    let nats: OwnedNatsServer | null = null;
    if (!input.nats) {
      nats = await startOwnedNatsServer({
        dataDir, host: input.natsHost, port: intValue('nats-port', input.natsPort ?? 4222, 0, 65535), tls: input.natsTls, log,
        roles: natsRoles({ stream: input.stream ?? 'NETRIG_RAW', subjectPrefix: input.subjectPrefix ?? 'netrig.raw' }),
      });
      undo.push(() => nats!.stop());
    }
    const natsAs = (role: NatsRole): NatsClientInput => nats?.client(role) ?? input;
    const natsUrl = nats?.url ?? input.nats!;

    // ClickHouse: the embedded engine (served over HTTP) unless a server is given.
    let ch: ClickHouse;
    let endpoint: ClickHouseEndpoint | null = null;
    let endpointUrl: string | null = null;
    let reader: Credentials | null = null;
    if (input.clickhouseUrl) {
      const server = await openClickHouse(clickhouseTarget({ ...input, dataDir }));
      undo.push(() => server.close());
      ch = server;
    } else {
      const store = await serveStore({ ...input, dataDir }, log);
      undo.push(() => store.close());
      ({ ch, endpoint, url: endpointUrl, reader } = store);
    }

    // The page: through the endpoint as its reader (read-only), or on the server as the processor's
    // user; browsers log in as the endpoint's reader (with a server: its password generated all the same).
    let page: PageServer | null = null;
    if (input.ui !== false) {
      reader ??= readerCredentials(dataDir, input.user ?? 'default', input.password);
      let client = ch.client;
      if (endpointUrl) {
        const pageCh = await openClickHouse({ url: endpointUrl, user: reader.user, password: reader.password, database: ch.database }, { create: false });
        undo.push(() => pageCh.close());
        client = pageCh.client;
      }
      const served = await servePage(client, ch.database, reader, input.uiPort, log);
      undo.push(() => served.stop());
      page = served;
    }

    // Its Prometheus endpoints (edge, processor) take one password, generated at first start.
    const metricsPassword = secretFile(join(dataDir, 'metrics'), 'metrics.password', input.metricsPasswordFile === undefined ? undefined : metricsPasswordOfFile(input.metricsPasswordFile)).value;

    // The edge never captures netrig itself: this process, its nats-server, the endpoint.
    // The edge shares this process with the engine, which writes the data dir as its owner: it stays root.
    const edge: RunningEdge = await runEdge({
      ...input,
      ...natsAs('edge'),
      metricsPassword,
      excludePids: [...(nats ? [nats.pid] : []), ...String(input.excludePids ?? '').split(',').filter(Boolean).map(Number)],
      excludePorts: [...(endpoint ? [endpoint.port] : []), ...(page ? [page.port] : []), ...localPort(input.clickhouseUrl), ...String(input.excludePorts ?? '').split(',').filter(Boolean).map(Number)],
    });
    undo.push(() => edge.stop());

    const processor: RunningProcessor = await runProcessor(
      { ...input, ...natsAs('processor'), metricsPassword, metricsPort: input.processorMetricsPort ?? 0 },
      { ch },
    );
    undo.push(() => processor.stop());

    // Found from any directory by `netrig query`, `report` and `status` (lib/running-ups.ts).
    undo.push(advertiseUp({
      dataDir, database: input.database ?? 'netrig', clickhouseUrl: input.clickhouseUrl,
      nats: { url: natsUrl, owned: nats !== null, tlsCa: nats?.tlsCa ?? undefined },
    }));

    const summary = new Summary(edge.edge, processor.processor, ch, processor.nc, out, intValue('summary-interval', input.summaryInterval ?? 1, 1, 3600) * 1000);
    summary.start();
    undo.push(() => summary.stop());
    log.info({
      edgeMetricsPort: edge.metricsPort, processorMetricsPort: processor.metricsPort,
      nats: natsUrl, natsAuth: nats ? natsAuthDir(dataDir) : undefined, natsTlsCa: nats?.tlsCa ?? undefined, clickhouse: endpointUrl ?? ch.where, dataDir,
      page: page?.url,
      ...(endpoint ? { writer: WRITER_USER, writerPasswordFile: writerPasswordFile(dataDir) } : {}),
    }, 'netrig up: running; Ctrl-C stops it');
    return { endpointUrl, pageUrl: page?.url ?? null, natsUrl, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
