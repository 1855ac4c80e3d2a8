/**
 * An OTLP/HTTP receiver for tests: POSTs to /v1/traces and /v1/metrics decoded with the
 * OpenTelemetry project's own protobuf definitions (opentelemetry-proto, as shipped in
 * @opentelemetry/otlp-grpc-exporter-base 0.38) through protobufjs — not with the code that
 * encoded them. It can answer as a failing collector would (`mode`).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const PROTOS = join(dirname(require.resolve('@opentelemetry/otlp-grpc-exporter-base/package.json')), 'build', 'protos');

function loadRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(PROTOS, target);
  root.loadSync([
    'opentelemetry/proto/collector/trace/v1/trace_service.proto',
    'opentelemetry/proto/collector/metrics/v1/metrics_service.proto',
  ], { keepCase: true });
  return root;
}

export interface DecodedAttribute {
  key: string;
  /** Field names as the .proto files spell them (keepCase). */
  value: { string_value?: string; int_value?: string; bool_value?: boolean; double_value?: number; array_value?: { values: DecodedAttribute['value'][] } };
}

export interface DecodedSpan {
  traceId: string;
  spanId: string;
  name: string;
  kind: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Record<string, string | number | boolean | string[]>;
  events: { name: string; timeUnixNano: string; attributes: Record<string, string | number | boolean | string[]> }[];
  status: { code: string; message: string };
  /** The span's resource attributes. */
  resource: Record<string, string | number | boolean | string[]>;
}

export interface DecodedPoint {
  metric: string;
  attributes: Record<string, string | number | boolean | string[]>;
  /** A sum's value or a histogram's count. */
  value: number;
}

type Mode = 'ok' | 'unavailable' | 'reject';

export interface OtlpReceiver {
  url: string;
  spans: DecodedSpan[];
  /** The data points of the last metrics export (cumulative, so the latest has every total). */
  lastMetrics(): DecodedPoint[];
  /** Requests answered, by signal and status. */
  answered: Map<string, number>;
  /** Headers of the last request. */
  lastHeaders: IncomingMessage['headers'];
  /** How the receiver answers from now on: 200; 503 with Retry-After 0; 400. */
  setMode(mode: Mode): void;
  close(): Promise<void>;
}

function value(v: DecodedAttribute['value']): string | number | boolean | string[] {
  if (v.string_value !== undefined) return v.string_value;
  if (v.int_value !== undefined) return Number(v.int_value);
  if (v.bool_value !== undefined) return v.bool_value;
  if (v.double_value !== undefined) return v.double_value;
  if (v.array_value) return v.array_value.values.map((x) => String(value(x)));
  return '';
}

function attrs(list: DecodedAttribute[] | undefined): Record<string, string | number | boolean | string[]> {
  return Object.fromEntries((list ?? []).map((a) => [a.key, value(a.value)]));
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * The spans, each span id once. Export is at least once: an export whose answer came too
 * late (a busy machine) is sent again, and a span sent twice must be the same span, ids and
 * all — a span id carried by two different spans throws.
 */
export function distinctSpans(spans: readonly DecodedSpan[]): DecodedSpan[] {
  const byId = new Map<string, DecodedSpan>();
  for (const s of spans) {
    const seen = byId.get(s.spanId);
    if (!seen) byId.set(s.spanId, s);
    else assert.deepEqual(s, seen, `span ${s.spanId} came twice with different contents`);
  }
  return [...byId.values()];
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const root = loadRoot();
  const traceRequest = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
  const traceResponse = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse');
  const metricsRequest = root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest');
  const metricsResponse = root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse');
  const toObject = { longs: String, enums: String, defaults: false, arrays: true };
  let mode: Mode = 'ok';
  let metrics: DecodedPoint[] = [];
  const r: OtlpReceiver = {
    url: '',
    spans: [],
    lastMetrics: () => metrics,
    answered: new Map(),
    lastHeaders: {},
    setMode: (m) => {
      mode = m;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };

  const answer = (res: ServerResponse, signal: string, status: number, body: Uint8Array = new Uint8Array()) => {
    r.answered.set(`${signal} ${status}`, (r.answered.get(`${signal} ${status}`) ?? 0) + 1);
    res.writeHead(status, { 'content-type': 'application/x-protobuf', ...(status === 503 ? { 'retry-after': '0' } : {}) });
    res.end(body);
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      r.lastHeaders = req.headers;
      const signal = req.url === '/v1/traces' ? 'traces' : req.url === '/v1/metrics' ? 'metrics' : '';
      if (req.method !== 'POST' || !signal || req.headers['content-type'] !== 'application/x-protobuf') return answer(res, signal || String(req.url), 404);
      if (mode === 'unavailable') return answer(res, signal, 503);
      if (mode === 'reject') return answer(res, signal, 400);
      const body = Buffer.concat(chunks);
      if (signal === 'traces') {
        const msg = traceRequest.toObject(traceRequest.decode(body), { ...toObject, bytes: Array }) as {
          resource_spans: { resource: { attributes: DecodedAttribute[] }; scope_spans: { spans: Record<string, unknown>[] }[] }[];
        };
        for (const rs of msg.resource_spans) {
          const resource = attrs(rs.resource.attributes);
          for (const ss of rs.scope_spans) {
            for (const s of ss.spans) {
              r.spans.push({
                traceId: hex(Uint8Array.from(s.trace_id as number[])),
                spanId: hex(Uint8Array.from(s.span_id as number[])),
                name: s.name as string,
                kind: s.kind as string,
                startTimeUnixNano: s.start_time_unix_nano as string,
                endTimeUnixNano: s.end_time_unix_nano as string,
                attributes: attrs(s.attributes as DecodedAttribute[]),
                events: ((s.events ?? []) as Record<string, unknown>[]).map((e) => ({ name: e.name as string, timeUnixNano: e.time_unix_nano as string, attributes: attrs(e.attributes as DecodedAttribute[]) })),
                status: { code: String((s.status as { code?: string } | undefined)?.code ?? 'STATUS_CODE_UNSET'), message: String((s.status as { message?: string } | undefined)?.message ?? '') },
                resource,
              });
            }
          }
        }
        return answer(res, signal, 200, traceResponse.encode(traceResponse.create({})).finish());
      }
      const msg = metricsRequest.toObject(metricsRequest.decode(body), toObject) as {
        resource_metrics: { scope_metrics: { metrics: { name: string; sum?: { data_points: Record<string, unknown>[] }; histogram?: { data_points: Record<string, unknown>[] } }[] }[] }[];
      };
      const points: DecodedPoint[] = [];
      for (const rm of msg.resource_metrics) {
        for (const sm of rm.scope_metrics) {
          for (const m of sm.metrics) {
            for (const p of m.sum?.data_points ?? []) points.push({ metric: m.name, attributes: attrs(p.attributes as DecodedAttribute[]), value: Number(p.as_int ?? p.as_double) });
            for (const p of m.histogram?.data_points ?? []) points.push({ metric: m.name, attributes: attrs(p.attributes as DecodedAttribute[]), value: Number(p.count) });
          }
        }
      }
      metrics = points;
      return answer(res, signal, 200, metricsResponse.encode(metricsResponse.create({})).finish());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return r;
}
