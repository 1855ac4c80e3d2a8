/**
 * OTLP/HTTP with protobuf bodies: one POST per export to `<endpoint>/v1/traces` or
 * `/v1/metrics`, and what its answer means by the OTLP specification — success, a
 * retryable failure (429, 502, 503, 504, a network error or a timeout; with the delay the
 * collector asked for in Retry-After), or a rejection that retrying cannot change.
 */
import { ConfigError, NetrigError } from '../../lib/errors.js';

/** The collector refused an export for good (its status and the start of its answer). */
export class OtlpRejectedError extends NetrigError {
  constructor(readonly signal: string, readonly status: number, body: string) {
    super('ERR_OTLP_REJECTED', `the OTLP collector refused ${signal} with HTTP ${status}${body ? `: ${body}` : ''} (not retried: the data is counted as rejected)`);
  }
}

/** An export that may succeed when tried again; `retryAfterMs` when the collector said when. */
export class OtlpUnavailableError extends NetrigError {
  constructor(readonly signal: string, message: string, readonly retryAfterMs?: number, options?: ErrorOptions) {
    super('ERR_OTLP_UNAVAILABLE', `exporting ${signal} over OTLP: ${message}`, options);
  }
}

export type OtlpSignal = 'traces' | 'metrics';

const RETRYABLE = new Set([429, 502, 503, 504]);
/** One export waits this long for the collector's answer. */
const REQUEST_TIMEOUT_MS = 10_000;
/** A Retry-After beyond this is cut to it: the exporter keeps trying. */
const MAX_RETRY_AFTER_MS = 60_000;

export interface OtlpTarget {
  /** Base URL: the signal's path is appended (`http://collector:4318` → `.../v1/traces`). */
  endpoint: URL;
  /** Headers sent with every export (authentication). */
  headers: Record<string, string>;
}

/** `--otlp-endpoint` and its headers, checked. */
export function otlpTarget(endpoint: string, headers: Record<string, string> = {}): OtlpTarget {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch (err) {
    throw new ConfigError('otlp-endpoint', `'${endpoint}' is not a URL (e.g. http://127.0.0.1:4318)`, { cause: err });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError('otlp-endpoint', `'${endpoint}' must be an http:// or https:// URL (OTLP/HTTP)`);
  if (url.username || url.password) throw new ConfigError('otlp-endpoint', 'put credentials in a header (--otlp-header or --otlp-header-file), not in the URL');
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) throw new ConfigError('otlp-header', `'${name}' is not a header name`);
    if (/[\r\n\0]/.test(value)) throw new ConfigError('otlp-header', `the value of ${name} holds a line break or NUL`);
  }
  return { endpoint: url, headers };
}

function signalUrl(t: OtlpTarget, signal: OtlpSignal): string {
  const base = t.endpoint.href.replace(/\/+$/, '');
  return `${base}/v1/${signal}`;
}

function retryAfterMs(v: string | null): number | undefined {
  if (!v) return undefined;
  const s = Number(v);
  const ms = Number.isFinite(s) ? s * 1000 : Date.parse(v) - Date.now();
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, MAX_RETRY_AFTER_MS) : undefined;
}

/** POST one export; resolves with the collector's answer body, throws OtlpRejectedError or OtlpUnavailableError. */
export async function postExport(t: OtlpTarget, signal: OtlpSignal, body: Uint8Array, abort: AbortSignal): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(signalUrl(t, signal), {
      method: 'POST',
      headers: { ...t.headers, 'content-type': 'application/x-protobuf' },
      // The serializer's bytes as they are; fetch's typings want an ArrayBuffer-backed view.
      body: body as Uint8Array<ArrayBuffer>,
      signal: AbortSignal.any([abort, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
    });
  } catch (err) {
    throw new OtlpUnavailableError(signal, (err as Error).message, undefined, { cause: err });
  }
  const answer = new Uint8Array(await res.arrayBuffer().catch(() => new ArrayBuffer(0)));
  if (res.ok) return answer;
  if (RETRYABLE.has(res.status)) throw new OtlpUnavailableError(signal, `HTTP ${res.status}`, retryAfterMs(res.headers.get('retry-after')));
  throw new OtlpRejectedError(signal, res.status, Buffer.from(answer.subarray(0, 200)).toString('utf8').replace(/[^\x20-\x7e]/g, '?'));
}
