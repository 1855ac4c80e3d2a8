/**
 * Rows as OpenTelemetry spans (semantic conventions for HTTP, RPC and DNS): one span per
 * http_requests row (an HTTP exchange or a gRPC call) and per dns_queries row, CLIENT or
 * SERVER by the row's role.
 *
 * The two ends of one exchange share a trace: its id is derived from what both captures see
 * alike — the client's and the server's address and port, where the request starts in the
 * client-to-server byte stream (DNS: the query id) and a five-minute bucket of the start
 * time, which tells apart exchanges on a 4-tuple reused later. Exchanges that straddle a
 * bucket boundary between the two ends' clocks (the network's delay apart) land in two
 * traces. Span ids are derived the same way per role, so a span sent again after a restart
 * keeps its ids.
 */
import { createHash } from 'node:crypto';
import { SpanKind, SpanStatusCode, type Attributes, type HrTime, type SpanContext } from '@opentelemetry/api';
import type { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import {
  ATTR_CLIENT_ADDRESS, ATTR_CLIENT_PORT, ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PEER_ADDRESS, ATTR_NETWORK_PEER_PORT, ATTR_NETWORK_PROTOCOL_NAME, ATTR_NETWORK_PROTOCOL_VERSION, ATTR_NETWORK_TRANSPORT,
  ATTR_RPC_METHOD, ATTR_RPC_STATUS_CODE, ATTR_RPC_SYSTEM_NAME, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_SERVICE_NAME, ATTR_URL_PATH,
  ATTR_URL_QUERY, ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import {
  ATTR_DNS_ANSWERS, ATTR_DNS_QUESTION_NAME, ATTR_HOST_NAME, ATTR_PROCESS_EXECUTABLE_NAME, ATTR_PROCESS_PID, ATTR_URL_TEMPLATE,
} from '@opentelemetry/semantic-conventions/incubating';
import type { Row } from '../runtime/function.js';
import type { TcpEvent } from './tcp-events.js';

/** A span as OpenTelemetry's OTLP serializer takes it. */
export type ExportedSpan = Parameters<typeof ProtobufTraceSerializer.serializeRequest>[0][number];
type TimedEvent = ExportedSpan['events'][number];

/** The scope every span and metric is reported under. */
export const SCOPE = { name: 'netrig', version: '0.1.0' };

/** Exchanges of one 4-tuple and request position in one bucket of this many seconds share a trace. */
const TRACE_BUCKET_S = 300;

/** gRPC status codes by number, as `rpc.status_code` spells them. */
const GRPC_STATUS = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
/** Codes a gRPC server reports as its own errors (the RPC conventions); a client, any code but OK. */
const GRPC_SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);
/** DNS rcodes by number. */
const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** Nanoseconds since the epoch in a decimal string (a row's DateTime64(9) value) plus `addNs`, as HrTime: exact, in two numbers. */
export function hrTime(ns: string, addNs = 0): HrTime {
  const sec = Number(ns.slice(0, -9) || '0');
  const frac = Number(ns.slice(-9)) + addNs;
  return [sec + Math.floor(frac / 1e9), frac % 1e9];
}

/** One hash of what both ends see: the trace id, and a span id per role from its other half. */
function ids(key: string, role: string): { traceId: string; spanId: string } {
  const h = createHash('sha256').update(key).digest('hex');
  return { traceId: h.slice(0, 32), spanId: role === 'server' ? h.slice(48, 64) : h.slice(32, 48) };
}

function bucket(ns: string): number {
  return Math.floor(Number(ns.slice(0, -9) || '0') / TRACE_BUCKET_S);
}

/** The trace and span ids of an http_requests row: equal traces for its two ends. */
export function exchangeIds(r: Row): { traceId: string; spanId: string } {
  return ids(`http|${r.client_addr}|${r.client_port}|${r.server_addr}|${r.server_port}|${r.req_pos}|${bucket(String(r.ts))}`, String(r.role));
}

/** The trace and span ids of a dns_queries row. */
export function queryIds(r: Row): { traceId: string; spanId: string } {
  return ids(`dns|${r.client_addr}|${r.client_port}|${r.server_addr}|${r.server_port}|${r.query_id}|${bucket(String(r.ts))}`, String(r.role));
}

/** One Resource per process a span came from (node, pid, process name): the serializer groups spans by it. */
export class Resources {
  private readonly byProcess = new Map<string, Resource>();

  of(r: Row): Resource {
    const key = `${r.region}|${r.node}|${r.pid}|${r.comm}`;
    let res = this.byProcess.get(key);
    if (!res) {
      res = resourceFromAttributes({
        [ATTR_SERVICE_NAME]: String(r.comm || 'unknown'),
        [ATTR_HOST_NAME]: String(r.node),
        [ATTR_PROCESS_PID]: Number(r.pid),
        [ATTR_PROCESS_EXECUTABLE_NAME]: String(r.comm),
        'netrig.region': String(r.region),
      });
      // Bounded: processes come and go; a new map costs one Resource per process again.
      if (this.byProcess.size >= 10_000) this.byProcess.clear();
      this.byProcess.set(key, res);
    }
    return res;
  }
}

/** The Host header without its port, as `server.address` is in spans and metrics, else the server's address. */
export function serverAddress(r: Row): string {
  return r.host ? String(r.host).replace(/:\d+$/, '') : addr(r.server_addr);
}

/** IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d); spans carry them plain. */
function addr(v: unknown): string {
  const s = String(v);
  return s.startsWith('::ffff:') && s.includes('.') ? s.slice(7) : s;
}

function span(o: {
  name: string; kind: SpanKind; ctx: SpanContext; start: HrTime; end: HrTime; attributes: Attributes; events: TimedEvent[];
  error: string | null; resource: Resource;
}): ExportedSpan {
  let durS = o.end[0] - o.start[0];
  let durNs = o.end[1] - o.start[1];
  if (durNs < 0) {
    durS -= 1;
    durNs += 1e9;
  }
  return {
    name: o.name,
    kind: o.kind,
    spanContext: () => o.ctx,
    startTime: o.start,
    endTime: o.end,
    duration: [durS, durNs],
    status: o.error === null ? { code: SpanStatusCode.UNSET } : { code: SpanStatusCode.ERROR, message: o.error },
    attributes: o.attributes,
    links: [],
    events: o.events,
    ended: true,
    resource: o.resource,
    instrumentationScope: SCOPE,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}

/** Why an exchange failed, as `error.type`, or null (the HTTP and RPC conventions: a server's 4xx is the client's fault). */
function exchangeError(r: Row, server: boolean): string | null {
  if (r.timed_out) return 'timeout';
  const grpc = Number(r.grpc_status);
  if (grpc > 0 && (!server || GRPC_SERVER_ERRORS.has(grpc))) return GRPC_STATUS[grpc] ?? String(grpc);
  const status = Number(r.status);
  if (status >= (server ? 500 : 400)) return String(status);
  return null;
}

/** An http_requests row (HTTP exchange or gRPC call) as a span, with the connection's TCP events during it. */
export function exchangeSpan(r: Row, tcp: readonly TcpEvent[], resource: Resource): ExportedSpan {
  const server = r.role === 'server';
  const start = hrTime(String(r.ts));
  const end = hrTime(String(r.ts), Number(r.latency_ns));
  const path = String(r.path);
  const q = path.indexOf('?');
  const template = String(r.path_template);
  const method = String(r.method);
  const a: Attributes = {
    [ATTR_HTTP_REQUEST_METHOD]: method,
    [ATTR_URL_PATH]: q < 0 ? path : path.slice(0, q),
    [server ? ATTR_HTTP_ROUTE : ATTR_URL_TEMPLATE]: template,
    [ATTR_SERVER_ADDRESS]: serverAddress(r),
    [ATTR_SERVER_PORT]: Number(r.server_port),
    [ATTR_NETWORK_PEER_ADDRESS]: addr(server ? r.client_addr : r.server_addr),
    [ATTR_NETWORK_PEER_PORT]: Number(server ? r.client_port : r.server_port),
    [ATTR_NETWORK_PROTOCOL_NAME]: 'http',
    [ATTR_NETWORK_PROTOCOL_VERSION]: r.protocol === 'h2' || r.protocol === 'grpc' ? '2' : String(r.protocol),
    'netrig.node': String(r.node),
    'netrig.conn_id': String(r.conn_id),
    'netrig.ttfb_ns': Number(r.ttfb_ns),
  };
  if (q >= 0) a[ATTR_URL_QUERY] = path.slice(q + 1);
  if (server) {
    a[ATTR_CLIENT_ADDRESS] = addr(r.client_addr);
    a[ATTR_CLIENT_PORT] = Number(r.client_port);
  }
  if (Number(r.status) > 0) a[ATTR_HTTP_RESPONSE_STATUS_CODE] = Number(r.status);
  if (r.user_agent) a[ATTR_USER_AGENT_ORIGINAL] = String(r.user_agent);
  if (r.tls) a['netrig.tls'] = true;
  if (r.partial) a['netrig.partial'] = true;
  let name = `${method} ${template}`;
  if (r.grpc_service) {
    const rpc = `${r.grpc_service}/${r.grpc_method}`;
    name = rpc;
    a[ATTR_RPC_SYSTEM_NAME] = 'grpc';
    a[ATTR_RPC_METHOD] = rpc;
    const g = Number(r.grpc_status);
    if (g >= 0) a[ATTR_RPC_STATUS_CODE] = GRPC_STATUS[g] ?? String(g);
  }
  const error = exchangeError(r, server);
  if (error !== null) a[ATTR_ERROR_TYPE] = error;
  return span({
    name, kind: server ? SpanKind.SERVER : SpanKind.CLIENT, ctx: { ...exchangeIds(r), traceFlags: 1, isRemote: false },
    start, end, attributes: a, events: tcpEventsDuring(tcp, String(r.ts), Number(r.latency_ns)), error, resource,
  });
}

/** The TCP events in [start, start + durationNs], as span events. */
function tcpEventsDuring(tcp: readonly TcpEvent[], startNs: string, durationNs: number): TimedEvent[] {
  if (!tcp.length) return [];
  const from = BigInt(startNs);
  const to = from + BigInt(durationNs);
  const out: TimedEvent[] = [];
  for (const e of tcp) {
    if (e.tsNs < from || e.tsNs > to) continue;
    const attributes: Attributes = { 'netrig.tcp.state': e.state };
    if (e.dropReason) attributes['netrig.drop.reason'] = e.dropReason;
    if (e.dropLocation) attributes['netrig.drop.location'] = e.dropLocation;
    if (e.resetReason) attributes['netrig.reset.reason'] = e.resetReason;
    out.push({ name: `tcp.${e.kind}`, time: [Number(e.tsNs / 1_000_000_000n), Number(e.tsNs % 1_000_000_000n)], attributes, droppedAttributesCount: 0 });
  }
  return out;
}

/** A dns_queries row as a span. */
export function querySpan(r: Row, resource: Resource): ExportedSpan {
  const server = r.role === 'server';
  const rcode = Number(r.rcode);
  const a: Attributes = {
    [ATTR_DNS_QUESTION_NAME]: String(r.qname),
    'netrig.dns.qtype': String(r.qtype),
    'netrig.dns.rcode': rcode >= 0 ? RCODES[rcode] ?? String(rcode) : 'none',
    [ATTR_SERVER_ADDRESS]: addr(r.server_addr),
    [ATTR_SERVER_PORT]: Number(r.server_port),
    [ATTR_NETWORK_PEER_ADDRESS]: addr(server ? r.client_addr : r.server_addr),
    [ATTR_NETWORK_PEER_PORT]: Number(server ? r.client_port : r.server_port),
    [ATTR_NETWORK_TRANSPORT]: String(r.transport),
    'netrig.node': String(r.node),
  };
  const answers = r.answers as string[];
  if (answers.length) a[ATTR_DNS_ANSWERS] = answers;
  if (Number(r.retries)) a['netrig.dns.retries'] = Number(r.retries);
  const error = r.timed_out ? 'timeout' : rcode > 0 ? RCODES[rcode] ?? String(rcode) : null;
  if (error !== null) a[ATTR_ERROR_TYPE] = error;
  return span({
    name: `DNS ${r.qtype}`, kind: server ? SpanKind.SERVER : SpanKind.CLIENT, ctx: { ...queryIds(r), traceFlags: 1, isRemote: false },
    start: hrTime(String(r.ts)), end: hrTime(String(r.ts), Number(r.latency_ns)), attributes: a, events: [], error, resource,
  });
}
