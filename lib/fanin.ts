/**
 * Fan-in: a hub's raw stream sources every region's raw stream across JetStream domains.
 *
 * Each region runs its own NATS with JetStream under its own domain (its edges publish
 * there, so a region captures on while its link to the hub is down) and joins the hub as a
 * leaf node. The hub's stream, named like the raw stream so processors need no new flag,
 * sources each region's stream through that domain's API prefix (`$JS.<domain>.API`),
 * subjects intact. A source takes only its own region's subjects
 * (`<prefix>.<region>.>`): a region cannot write another's envelopes into the hub.
 *
 * Input: the hub's URL and REGION=DOMAIN pairs. Output: the hub stream, created or with the
 * missing sources added (what is there is kept), and each source's lag and last activity.
 */
import { JetStreamApiCodes, jetstreamManager, type ExternalStream, type StreamInfo, type StreamSource, type StreamSourceInfo } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { ConfigError, PrerequisiteError } from './errors.js';
import type { Logger } from './logger.js';
import { isJsApiError } from './nats.js';
import { rawStreamConfig, type StreamSettings } from './raw-stream.js';

/** One region's raw stream as the hub reaches it. */
export interface FaninSource {
  region: string;
  /** The region's JetStream domain. */
  domain: string;
}

/** What `netrig fanin --show` prints for one source. */
export interface FaninSourceState extends FaninSource {
  /** Messages of the region's stream not yet in the hub's. */
  lag: number;
  /** Milliseconds since the source last moved a message or heard from the region; null if never. */
  activeAgoMs: number | null;
  /** Why the source is not running, as the hub says. */
  error?: string;
}

const NS_PER_MS = 1_000_000;
/** Region names and domains: what a subject token or a JetStream domain may hold. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const API_PREFIX = /^\$JS\.([A-Za-z0-9_-]+)\.API$/;

/** A source's state as the server reports it: which external stream, and (2.10+) its filter. */
type SourceInfo = StreamSourceInfo & { external?: ExternalStream; filter_subject?: string };

/** A JetStream domain (of `netrig nats --domain`) as fan-in can source it; a clear error for anything else. */
export function domainName(key: string, v: string): string {
  if (!NAME.test(v)) throw new ConfigError(key, `expected letters, digits, '-' and '_', at most 64, got ${JSON.stringify(v)}`);
  return v;
}

/** "REGION=DOMAIN" → a source; a clear error for anything else. */
export function parseSource(text: string): FaninSource {
  const eq = text.indexOf('=');
  const region = eq < 0 ? '' : text.slice(0, eq);
  const domain = eq < 0 ? '' : text.slice(eq + 1);
  if (!NAME.test(region) || !NAME.test(domain)) {
    throw new ConfigError('source', `expected REGION=DOMAIN (letters, digits, '-' and '_', at most 64 each), got ${JSON.stringify(text)}`);
  }
  return { region, domain };
}

function apiPrefix(domain: string): string {
  return `$JS.${domain}.API`;
}

function sourceConfig(s: StreamSettings, f: FaninSource): StreamSource {
  return { name: s.name, external: { api: apiPrefix(f.domain), deliver: '' }, filter_subject: `${s.subjectPrefix}.${f.region}.>` };
}

/** The region and domain a source of the hub stream was made for, if netrig made it. */
function sourceOf(s: StreamSettings, src: { external?: ExternalStream; filter_subject?: string }): FaninSource | null {
  const domain = API_PREFIX.exec(src.external?.api ?? '')?.[1];
  const prefix = `${s.subjectPrefix}.`;
  const filter = src.filter_subject ?? '';
  if (!domain || !filter.startsWith(prefix) || !filter.endsWith('.>')) return null;
  return { region: filter.slice(prefix.length, -2), domain };
}

/**
 * Create the hub stream with `sources`, or add to an existing one the sources it lacks
 * (kept: its other sources, subjects and limits). A domain already sourced under another
 * region name, or a region from another domain, is refused rather than rewritten.
 */
export async function ensureHubStream(nc: NatsConnection, s: StreamSettings, sources: FaninSource[], log: Logger): Promise<{ created: boolean; added: FaninSource[] }> {
  const regions = new Set(sources.map((f) => f.region));
  const domains = new Set(sources.map((f) => f.domain));
  if (regions.size !== sources.length || domains.size !== sources.length) {
    throw new ConfigError('source', 'each region and each domain may be named once');
  }
  const jsm = await jetstreamManager(nc);
  let info: StreamInfo | null = null;
  try {
    info = await jsm.streams.info(s.name);
  } catch (err) {
    if (!isJsApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
  }
  if (!info) {
    await jsm.streams.add({ ...rawStreamConfig(s), sources: sources.map((f) => sourceConfig(s, f)) });
    log.info({ stream: s.name, sources }, 'hub stream created');
    return { created: true, added: sources };
  }
  const present = (info.config.sources ?? []).map((src) => sourceOf(s, src)).filter((f): f is FaninSource => f !== null);
  const added: FaninSource[] = [];
  for (const f of sources) {
    const same = present.find((p) => p.domain === f.domain || p.region === f.region);
    if (!same) added.push(f);
    else if (same.domain !== f.domain || same.region !== f.region) {
      throw new ConfigError('source', `${f.region}=${f.domain}: the hub stream ${s.name} already sources region ${same.region} from domain ${same.domain}`);
    }
  }
  if (added.length) {
    await jsm.streams.update(s.name, { ...info.config, sources: [...(info.config.sources ?? []), ...added.map((f) => sourceConfig(s, f))] });
    log.info({ stream: s.name, added }, 'sources added to the hub stream');
  }
  return { created: false, added };
}

/** Each source of the hub stream with its lag and last activity, as the server lists them. */
export async function hubSources(nc: NatsConnection, s: StreamSettings): Promise<FaninSourceState[]> {
  const jsm = await jetstreamManager(nc);
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(s.name);
  } catch (err) {
    if (!isJsApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
    throw new PrerequisiteError(`the hub has no stream ${s.name}: make it with netrig fanin --source REGION=DOMAIN`, { cause: err });
  }
  const out: FaninSourceState[] = [];
  for (const src of (info.sources ?? []) as SourceInfo[]) {
    // Servers before 2.10 do not report a source's filter: it is in the configuration.
    const f = sourceOf(s, { external: src.external, filter_subject: src.filter_subject ?? info.config.sources?.find((c) => c.external?.api === src.external?.api)?.filter_subject });
    if (!f) continue;
    out.push({
      ...f,
      lag: src.lag,
      activeAgoMs: src.active >= 0 ? Math.round(src.active / NS_PER_MS) : null,
      ...(src.error ? { error: `${src.error.description} (${src.error.err_code})` } : {}),
    });
  }
  return out;
}
