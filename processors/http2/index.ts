/**
 * http2: HTTP/2 streams and gRPC calls → `http_requests` (protocol 'h2' or 'grpc'), over h2c
 * (prior knowledge) and h2 over TLS (the OpenSSL uprobes' plaintext). One row per stream,
 * per role: gRPC service and method from :path, grpc-status and grpc-message from the
 * trailers, and messages counted each way for unary and streaming calls alike.
 *
 * HPACK state cannot be rebuilt by a new owner of a connection that is already open: its
 * header fields that refer to dynamic-table entries inserted before are marked unknown
 * (never guessed), flagged `partial`, until the table is known again.
 */
import { harmColumns } from '../l7/harm.js';
import { storedPath } from '../l7/path-mask.js';
import { pathTemplate } from '../l7/path-template.js';
import { l7Function, l7Row, type L7Protocol } from '../l7/protocol.js';
import type { Row } from '../runtime/function.js';
import { ExchangeFlags, Http2Connection, newHttp2Stats, type Http2Exchange, type Http2Stats } from './connection.js';

/** END_STREAMs a RST_STREAM cut off: the protocol's doing, not the capture's. */
const END_FLAGS = ExchangeFlags.ReqEndMissing | ExchangeFlags.RespEndMissing;

const PARTIAL_FLAGS = ExchangeFlags.ReqUnknownFields | ExchangeFlags.RespUnknownFields | ExchangeFlags.ReqHeadPartial
  | ExchangeFlags.RespHeadPartial | ExchangeFlags.ReqBodyPartial | ExchangeFlags.RespBodyPartial | ExchangeFlags.ReqEndMissing
  | ExchangeFlags.RespEndMissing | ExchangeFlags.ReqMissing | ExchangeFlags.MessagesPartial;

export const http2Protocol: L7Protocol<Http2Exchange> = {
  name: 'http2',
  table: 'http_requests',
  plain: true,
  tls: true,
  tcp: true,
  udp: false,
  giveUpBytes: 64 * 1024,
  giveUpNs: 30e9,
  pinUntilFirstItem: false,
  // A client starts with the preface ("PRI"), a server with a SETTINGS frame (length < 2^16).
  rejectsFirstByte: (b) => b !== 0x50 && b !== 0x00,
  newStats: newHttp2Stats,
  open: (h, onItem, stats) => new Http2Connection(h.role, onItem, { stats: stats as Http2Stats, midlife: h.midlife }),
  row(x, c, clock, opts) {
    const answered = x.respFirstTsNs > 0;
    const startNs = x.reqFirstTsNs || x.respFirstTsNs;
    const fields: Row = {
      protocol: x.protocol,
      method: x.method,
      host: x.authority,
      path: storedPath(x.path, opts),
      path_template: pathTemplate(x.path),
      status: x.status,
      grpc_service: x.grpcService,
      grpc_method: x.grpcMethod,
      grpc_status: x.grpcStatus,
      grpc_message: x.grpcMessage,
      req_messages: x.protocol === 'grpc' ? x.reqMessages : 1,
      resp_messages: x.protocol === 'grpc' ? x.respMessages : answered ? 1 : 0,
      req_bytes: x.reqBytes,
      resp_bytes: x.respBytes,
      ttfb_ns: answered && x.reqFirstTsNs ? Math.max(0, x.respFirstTsNs - x.reqFirstTsNs) : 0,
      latency_ns: answered && x.reqFirstTsNs ? Math.max(0, x.respLastTsNs - x.reqFirstTsNs) : 0,
      tls: c.tls ? 1 : 0,
      timed_out: x.timedOut ? 1 : 0,
      req_pos: x.reqStartPos,
      content_type: x.contentType,
      user_agent: x.userAgent,
      partial: x.flags & (x.resetCode >= 0 ? PARTIAL_FLAGS & ~END_FLAGS : PARTIAL_FLAGS) ? 1 : 0,
    };
    // The connection's trouble while this stream was in flight (other streams' share it).
    harmColumns(fields, c.harms, startNs, answered ? x.respLastTsNs : null);
    return l7Row(fields, c, startNs, clock, x.role);
  },
};

export const http2Function = l7Function(http2Protocol);
