/**
 * http1: HTTP/1.0 and 1.1 exchanges in both roles → `http_requests`, from socket bytes and,
 * for HTTPS, from the TLS plaintext the OpenSSL uprobes capture (rows with tls = 1).
 *
 * Per connection an Http1Connection pairs requests with responses (processors/l7 does the
 * connection tracking, reassembly and pins). A request without a response becomes a
 * timed-out row after DEFAULT_REQUEST_TIMEOUT_NS of node time, so re-reading the same messages
 * always gives the same rows. A connection seen mid-life pairs only after it has seen a
 * response, so its first exchange stays pinned until then; where a connection's last
 * committed exchange ended is read back from http_requests when a lane resumes, so an idle
 * connection's next request pairs at once.
 */
import { harmColumns } from '../l7/harm.js';
import { l7Function, l7Row, noResumeState, resumeKey, type L7Protocol, type ResumeState } from '../l7/protocol.js';
import { storedPath } from '../l7/path-mask.js';
import { pathTemplate } from '../l7/path-template.js';
import type { LaneContext, Row } from '../runtime/function.js';
import { ConnFlags, Role } from '../../schemas/records.js';
import { ExchangeFlags, Http1Connection, newHttp1Stats, type Http1Exchange, type Http1Stats } from './connection.js';

const PARTIAL_FLAGS = ExchangeFlags.ReqBodyPartial | ExchangeFlags.ReqEndInferred | ExchangeFlags.ReqHeadPartial
  | ExchangeFlags.RespBodyPartial | ExchangeFlags.RespEndInferred | ExchangeFlags.RespHeadPartial;

/**
 * Where each connection's last committed exchange ended, from this function's own rows, so
 * a resuming lane pairs an idle connection's next request at once.
 */
async function committedBoundaries(ctx: LaneContext): Promise<ResumeState> {
  const rows = await ctx.query<{
    node: string; conn_id: string; tls: number; end_pos: string; positions: string[];
    pid: number; comm: string; role: string; ca: string; cp: number; sa: string; sp: number;
  }>(
    `SELECT node, toString(conn_id) AS conn_id, tls, max(req_pos + req_bytes) AS end_pos,
       groupArrayIf(req_pos, _seq >= {from:UInt64}) AS positions,
       argMax(pid, _seq) AS pid, argMax(comm, _seq) AS comm, argMax(toString(role), _seq) AS role,
       argMax(toString(client_addr), _seq) AS ca, argMax(client_port, _seq) AS cp,
       argMax(toString(server_addr), _seq) AS sa, argMax(server_port, _seq) AS sp
     FROM {db}.http_requests
     WHERE _stream = {stream:String} AND _fn = 'http1' AND _shard = {shard:UInt16} AND timed_out = 0
     GROUP BY node, conn_id, tls`,
    { stream: ctx.streamId, shard: ctx.shard, from: ctx.resumeFrom },
  );
  const out = noResumeState();
  for (const r of rows) {
    const key = resumeKey(r.node, r.conn_id, Number(r.tls) === 1);
    out.points.set(key, Number(r.end_pos));
    if (r.positions.length) out.known.set(key, new Set(r.positions.map(Number)));
    if (r.pid || r.comm) {
      const server = r.role === 'server';
      const family = r.ca.includes('.') ? 4 : 6;
      out.owners.set(key, {
        tuple: server
          ? { saddr: r.sa, sport: r.sp, daddr: r.ca, dport: r.cp, family, protocol: 6 }
          : { saddr: r.ca, sport: r.cp, daddr: r.sa, dport: r.sp, family, protocol: 6 },
        role: server ? Role.Server : Role.Client, tgid: r.pid, comm: r.comm, connFlags: ConnFlags.Captured,
      });
    }
  }
  return out;
}

export const http1Protocol: L7Protocol<Http1Exchange> = {
  name: 'http1',
  table: 'http_requests',
  plain: true,
  tls: true,
  tcp: true,
  udp: false,
  giveUpBytes: 64 * 1024,
  giveUpNs: 30e9,
  pinUntilFirstItem: true,
  // Methods and "HTTP/" start with a capital letter: TLS, SSH, databases are let go at once.
  rejectsFirstByte: (b) => b < 0x41 || b > 0x5a,
  newStats: newHttp1Stats,
  open: (h, onItem, stats) => new Http1Connection(h.role, onItem, {
    stats: stats as Http1Stats, midlife: h.midlife, resumeRequestPos: h.resume, knownRequestPositions: h.known, boundaries: h.boundaries,
  }),
  row(x, c, clock, opts) {
    const fields: Row = {
      protocol: x.version,
      method: x.method,
      host: x.host,
      path: storedPath(x.path, opts),
      path_template: pathTemplate(x.path),
      status: x.status,
      // Every row names every column: the sink sends rows as arrays under one column list.
      grpc_service: '',
      grpc_method: '',
      grpc_status: -1,
      grpc_message: '',
      req_messages: 1,
      resp_messages: x.status ? 1 : 0,
      req_bytes: x.reqBytes,
      resp_bytes: x.respBytes,
      ttfb_ns: x.respFirstTsNs ? Math.max(0, x.respFirstTsNs - x.reqFirstTsNs) : 0,
      latency_ns: x.respLastTsNs ? Math.max(0, x.respLastTsNs - x.reqFirstTsNs) : 0,
      tls: c.tls ? 1 : 0,
      timed_out: x.timedOut ? 1 : 0,
      req_pos: x.reqStartPos,
      content_type: x.contentType,
      user_agent: x.userAgent,
      partial: x.flags & PARTIAL_FLAGS ? 1 : 0,
    };
    harmColumns(fields, c.harms, x.reqFirstTsNs, x.respLastTsNs ? x.respLastTsNs : null);
    return l7Row(fields, c, x.reqFirstTsNs, clock, x.role);
  },
  resume: {
    fromItem: (x) => (x.timedOut || x.flags & ExchangeFlags.Upgraded ? null : x.reqStartPos + x.reqBytes),
    load: committedBoundaries,
  },
};

export const http1Function = l7Function(http1Protocol);
