/**
 * HTTP/1 request/response pairing on one connection: two direction parsers
 * (./parser.ts) fed the reassemblers' events, and a FIFO of requests waiting for their
 * final responses (keep-alive and pipelining; interim 1xx responses do not pair).
 *
 * Pairing rules, chosen so that a wrong pair is never made; an exchange is dropped and
 * counted instead:
 * - Queued requests pair with final responses in order. A response that starts before
 *   the request it would pair with, or finds no request waiting, answers something
 *   not seen: it is dropped and pairing is suspended.
 * - Sync lost in the response direction (gap, parse error): any number of responses may
 *   be hidden, so requests still waiting are dropped and pairing is suspended. Sync lost
 *   in the request direction: requests already queued keep their place (their responses
 *   still come in order), but pairing is suspended for new requests.
 * - Suspended pairing resumes at a request that starts when no queued request is waiting,
 *   the response direction is not inside a message, and every response byte seen so far
 *   precedes the request; on a connection whose beginning was not seen (capture started
 *   mid-life), some response byte must have been seen too. HTTP/1 clients that do not
 *   pipeline send a request only after reading the previous response, so the next
 *   response answers that request.
 * - Pairing starts suspended: the first request pairs under the same rule, which also
 *   covers captures that begin in the middle of a connection. A request at a position the
 *   runtime knows to be a boundary (`resumeRequestPos`: where the last recorded exchange
 *   ended) pairs like one at position 0.
 */
import type { StreamEvent } from '../l7/reassembly.js';
import {
  Http1Parser, MessageFlags, newParserStats,
  type Http1Message, type Http1ParserHooks, type Http1ParserStats, type StopReason,
} from './parser.js';
import type { Dir, RoleHint } from '../l7/sides.js';
import { GuardedTracker, type GuardStats, type L7Tracker } from '../l7/tracker.js';
export type { Dir, RoleHint };

/** Bits of `Http1Exchange.flags`. */
export const ExchangeFlags = {
  /** Some request body bytes were not seen. */
  ReqBodyPartial: 1 << 0,
  /** The request's end was inferred (next request's start, or the connection's end). */
  ReqEndInferred: 1 << 1,
  /** The request's header block was not fully parsed. */
  ReqHeadPartial: 1 << 2,
  RespBodyPartial: 1 << 3,
  RespEndInferred: 1 << 4,
  RespHeadPartial: 1 << 5,
  /** The exchange switched the connection away from HTTP/1 (101, or a CONNECT tunnel). */
  Upgraded: 1 << 6,
} as const;

/** One request and its final response (or none: `timedOut`). */
export interface Http1Exchange {
  /** This socket's side: 'client' when it sent the request. */
  role: 'client' | 'server';
  method: string;
  /** Request target as sent, at most 2 KiB. */
  path: string;
  host: string;
  version: 'http/1.0' | 'http/1.1';
  /** Final response status; 0 when there is no response. */
  status: number;
  /** Stream position of the request's first byte: with node, conn_id and role, the row key. */
  reqStartPos: number;
  /** Request bytes on the wire, framing included. */
  reqBytes: number;
  /** Response bytes on the wire, framing included; 0 when there is no response. */
  respBytes: number;
  reqBodyBytes: number;
  respBodyBytes: number;
  reqFirstTsNs: number;
  reqLastTsNs: number;
  /** 0 when there is no response. */
  respFirstTsNs: number;
  /** 0 when there is no response. */
  respLastTsNs: number;
  /** No response came before `expire` or `close`. */
  timedOut: boolean;
  /** `ExchangeFlags` bits. */
  flags: number;
  /** Content-Type of the response. */
  contentType: string;
  /** User-Agent of the request. */
  userAgent: string;
}

/** Counters of one or more connections; pass one object to many connections to sum them. */
export interface Http1Stats extends Http1ParserStats, GuardStats {
  exchanges: number;
  /** Exchanges emitted without a response (`timedOut`). */
  timedOut: number;
  /** Requests not paired because pairing was suspended or their responses may be lost. */
  droppedRequests: number;
  /** Final responses not paired: their request was not seen or cannot be told. */
  droppedResponses: number;
  /** Times pairing resumed after being suspended. */
  realignments: number;
  /** The bytes contradicted the kernel's role hint. */
  roleMismatches: number;
  /** Connections that stopped speaking HTTP/1, by reason. */
  stops: Record<StopReason, number>;
}

export function newHttp1Stats(): Http1Stats {
  return {
    ...newParserStats(),
    exchanges: 0, timedOut: 0, droppedRequests: 0, droppedResponses: 0, realignments: 0,
    roleMismatches: 0, stops: { upgrade: 0, connect: 0, h2: 0 }, internalErrors: 0,
  };
}

/** Most requests waiting for responses on one connection. */
export const DEFAULT_MAX_PIPELINE = 64;
/** A request without a response for this long (node time) becomes a timed-out exchange. */
export const DEFAULT_REQUEST_TIMEOUT_NS = 30e9;

export interface Http1ConnectionOptions {
  /** Counters to add to (shared across connections); a new object by default. */
  stats?: Http1Stats;
  /** Most requests waiting for responses (default 64). */
  maxPipeline?: number;
  /** How long `expire` lets a request wait for its response (default 30 s). */
  requestTimeoutNs?: number;
  /** The connection was open before capture began (ConnFlags.Midlife): position 0 is not its start. */
  midlife?: boolean;
  /**
   * Request-direction position at which a request is known to start while the response
   * direction is at a message boundary: where the last exchange already recorded for this
   * connection ended. A processor resuming after a restart (or re-creating an evicted idle
   * connection) pairs the request starting there as it would one at position 0.
   */
  resumeRequestPos?: number;
  /**
   * Request-direction positions where requests already recorded for this connection start:
   * a processor re-reading messages it had handled pairs them again as it did then (their
   * rows are suppressed as committed), so the requests after them pair as they did then.
   */
  knownRequestPositions?: ReadonlySet<number>;
  /**
   * Positions per direction known to be between messages (where a parked connection's
   * streams stood): parsing starts in sync there, so even a start line split over
   * syscalls is read.
   */
  boundaries?: readonly [number, number];
}

/** A request waiting to be emitted: for its response, or for its own end. */
interface Pending {
  req: Http1Message;
  resp: Http1Message | null;
  reqDone: boolean;
  respDone: boolean;
  timedOut: boolean;
}

function messageBits(flags: number, partial: number, inferred: number, head: number): number {
  return (flags & MessageFlags.BodyPartial ? partial : 0)
    | (flags & MessageFlags.EndInferred ? inferred : 0)
    | (flags & MessageFlags.HeadPartial ? head : 0);
}

function toExchange(e: Pending, role: 'client' | 'server'): Http1Exchange {
  const { req, resp } = e;
  let flags = messageBits(req.flags, ExchangeFlags.ReqBodyPartial, ExchangeFlags.ReqEndInferred, ExchangeFlags.ReqHeadPartial);
  if (resp) {
    flags |= messageBits(resp.flags, ExchangeFlags.RespBodyPartial, ExchangeFlags.RespEndInferred, ExchangeFlags.RespHeadPartial);
    if (resp.status === 101 || (req.method === 'CONNECT' && resp.status >= 200 && resp.status < 300)) flags |= ExchangeFlags.Upgraded;
  }
  return {
    role, method: req.method, path: req.target, host: req.host, version: req.version === '1.0' ? 'http/1.0' : 'http/1.1',
    status: resp?.status ?? 0, reqStartPos: req.startPos, reqBytes: req.wireBytes, respBytes: resp?.wireBytes ?? 0,
    reqBodyBytes: req.bodyBytes, respBodyBytes: resp?.bodyBytes ?? 0,
    reqFirstTsNs: req.firstTsNs, reqLastTsNs: req.lastTsNs,
    respFirstTsNs: resp?.firstTsNs ?? 0, respLastTsNs: resp?.lastTsNs ?? 0,
    timedOut: e.timedOut, flags, contentType: resp?.contentType ?? '', userAgent: req.userAgent,
  };
}

/** HTTP/1 on one connection. Never throws on input; exchanges go to `onExchange`. */
export class Http1Connection extends GuardedTracker<Http1Exchange, Http1Stats> implements L7Tracker {
  private parsers: [Http1Parser, Http1Parser];
  /** Direction carrying requests, -1 until the first recognised start line. */
  private reqDir: -1 | Dir = -1;
  /** New requests are queued; false while pairing is suspended. */
  private aligned = false;
  private readonly queue: Pending[] = [];
  /** Queue entry of the request being parsed; null when that request was dropped. */
  private reqEntry: Pending | null = null;
  /** Queue entry whose final response is being parsed. */
  private respEntry: Pending | null = null;
  /** Latest event timestamp per direction, -1 before any. */
  private readonly lastTs: [number, number] = [-1, -1];
  private stoppedBy: StopReason | null = null;
  private closed = false;
  private readonly maxPipeline: number;
  private readonly requestTimeoutNs: number;
  private readonly midlife: boolean;
  private readonly resumeRequestPos: number;
  private readonly knownRequestPositions: ReadonlySet<number>;

  constructor(
    private readonly hint: RoleHint,
    onExchange: (x: Http1Exchange) => void,
    opts: Http1ConnectionOptions = {},
  ) {
    super(onExchange, opts.stats ?? newHttp1Stats());
    this.maxPipeline = opts.maxPipeline ?? DEFAULT_MAX_PIPELINE;
    this.requestTimeoutNs = opts.requestTimeoutNs ?? DEFAULT_REQUEST_TIMEOUT_NS;
    this.midlife = opts.midlife ?? false;
    this.resumeRequestPos = opts.resumeRequestPos ?? -1;
    this.knownRequestPositions = opts.knownRequestPositions ?? new Set();
    this.parsers = [this.newParser(0, opts.boundaries?.[0]), this.newParser(1, opts.boundaries?.[1])];
  }

  /** The role the bytes showed, or the hint until a start line was recognised. */
  get role(): RoleHint {
    if (this.reqDir < 0) return this.hint;
    return this.reqDir === 0 ? 'client' : 'server';
  }

  /** A start line was recognised: the bytes are HTTP/1 and the request direction is known. */
  get recognized(): boolean {
    return this.reqDir >= 0;
  }

  /** Why the connection stopped speaking HTTP/1, or null. */
  get stopReason(): StopReason | null {
    return this.stoppedBy;
  }

  /** Input bytes held by the parsers (partial lines); bounded by 2 × LINE_BUFFER_BYTES. */
  get bufferedBytes(): number {
    return this.parsers[0].bufferedBytes + this.parsers[1].bufferedBytes;
  }

  /**
   * No partial message in either direction and no request waiting: starting afresh from
   * the next record would lose nothing.
   */
  isIdle(): boolean {
    if (this.closed || this.stoppedBy) return true;
    return this.queue.length === 0 && this.parsers[0].idle && this.parsers[1].idle;
  }

  /** Feed the next event of kernel direction `dir`. */
  data(dir: Dir, ev: StreamEvent): void {
    // Only pairing in the other direction reads this direction's time: set it first.
    this.lastTs[dir] = Math.max(this.lastTs[dir], ev.tsNs);
    // Stopped parsers (upgrade, close) count what they are still fed.
    this.run(() => this.parsers[dir].push(ev));
  }

  /**
   * Requests that have waited `requestTimeoutNs` without any response byte (both
   * directions quiet since) become timed-out exchanges. A late response could then pair
   * with the wrong request, so pairing is suspended.
   */
  expire(nowNs: number): void {
    if (this.closed || this.stoppedBy || this.reqDir < 0) return;
    this.run(() => this.timeOut(nowNs));
  }

  private timeOut(nowNs: number): void {
    const respLast = this.lastTs[1 - this.reqDir];
    let any = false;
    for (const e of this.queue) {
      if (e.resp || e.timedOut) continue;
      if (!e.reqDone || nowNs - Math.max(e.req.lastTsNs, respLast) < this.requestTimeoutNs) break;
      e.timedOut = true;
      any = true;
    }
    if (any) {
      this.aligned = false;
      this.dropWaiting();
      this.emitDone();
    }
  }

  /**
   * The connection ended: bodies delimited by the close end, open messages end here
   * (inferred), and requests without a response become timed-out exchanges.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.run(() => {
      if (!this.stoppedBy) {
        // Requests end first, so a request cut short still precedes its response.
        const first: Dir = this.reqDir === 1 ? 1 : 0;
        this.parsers[first].finish();
        this.parsers[first === 0 ? 1 : 0].finish();
      }
      for (const e of this.queue) {
        if (!e.resp) e.timedOut = true;
        this.emit(e);
      }
      this.queue.length = 0;
      this.reqEntry = null;
      this.respEntry = null;
    });
  }

  // ---- parser hooks ----------------------------------------------------------------

  private newParser(dir: Dir, boundary?: number): Http1Parser {
    const hooks: Http1ParserHooks = {
      onStart: (msg) => this.onStart(dir, msg),
      onEnd: (msg) => this.onEnd(msg),
      onDesync: () => this.onDesync(dir),
      onStop: (reason) => this.onStop(reason),
      requestMethod: () => this.respEntry?.req.method ?? null,
      responseUnpaired: () => this.respEntry === null,
    };
    const expect = this.reqDir < 0 ? 'any' : dir === this.reqDir ? 'request' : 'response';
    return new Http1Parser(hooks, { expect, stats: this.stats, boundary });
  }

  private onStart(dir: Dir, msg: Http1Message): void {
    if (this.reqDir < 0) this.decideRoles(dir, msg);
    if (msg.kind === 'request') this.requestStart(msg);
    else this.responseStart(msg);
  }

  /** The first recognised start line tells which direction carries requests. */
  private decideRoles(dir: Dir, msg: Http1Message): void {
    const reqDir: Dir = msg.kind === 'request' ? dir : dir === 0 ? 1 : 0;
    this.reqDir = reqDir;
    if (this.hint !== 'unknown' && this.hint !== this.role) this.stats.roleMismatches++;
    this.parsers[reqDir].expect = 'request';
    this.parsers[1 - reqDir].expect = 'response';
  }

  private requestStart(msg: Http1Message): void {
    this.reqEntry = null;
    if (!this.aligned) {
      if (!this.canResume(msg)) {
        this.stats.droppedRequests++;
        return;
      }
      this.aligned = true;
      this.stats.realignments++;
    }
    if (this.queue.length >= this.maxPipeline) {
      this.stats.droppedRequests++;
      this.aligned = false;
      return;
    }
    const e: Pending = { req: msg, resp: null, reqDone: false, respDone: false, timedOut: false };
    this.queue.push(e);
    this.reqEntry = e;
  }

  /** See the module comment: may pairing resume at request `req`? */
  private canResume(req: Http1Message): boolean {
    const respDir = this.reqDir === 0 ? 1 : 0;
    if (this.firstWaiting() >= 0 || !this.parsers[respDir].atBoundary) return false;
    const respLast = this.lastTs[respDir];
    if (respLast > req.firstTsNs) return false;
    return respLast >= 0 || (req.startPos === 0 && !this.midlife) || req.startPos === this.resumeRequestPos
      || this.knownRequestPositions.has(req.startPos);
  }

  private responseStart(msg: Http1Message): void {
    this.respEntry = null;
    if (msg.interim) return;
    const i = this.firstWaiting();
    const e = i >= 0 ? this.queue[i] : null;
    if (!e || msg.firstTsNs < e.req.firstTsNs) {
      this.stats.droppedResponses++;
      this.aligned = false;
      this.dropWaiting();
      return;
    }
    e.resp = msg;
    this.respEntry = e;
  }

  private onEnd(msg: Http1Message): void {
    if (this.reqEntry?.req === msg) {
      this.reqEntry.reqDone = true;
      this.reqEntry = null;
    } else if (this.respEntry?.resp === msg) {
      this.respEntry.respDone = true;
      this.respEntry = null;
    }
    this.emitDone();
  }

  private onDesync(dir: Dir): void {
    if (this.reqDir < 0) return;
    this.aligned = false;
    if (dir !== this.reqDir) this.dropWaiting();
  }

  private onStop(reason: StopReason): void {
    this.stoppedBy = reason;
    this.stats.stops[reason]++;
    this.parsers[0].stop();
    this.parsers[1].stop();
    this.dropWaiting();
    this.emitDone();
  }

  // ---- queue -----------------------------------------------------------------------

  /** Index of the first request still waiting for a response, or -1. */
  private firstWaiting(): number {
    return this.queue.findIndex((e) => !e.resp && !e.timedOut);
  }

  /** Drop every request still waiting: their responses can no longer be told apart. */
  private dropWaiting(): void {
    const i = this.firstWaiting();
    if (i < 0) return;
    for (let k = i; k < this.queue.length; k++) {
      if (this.queue[k] === this.reqEntry) this.reqEntry = null;
    }
    this.stats.droppedRequests += this.queue.length - i;
    this.queue.length = i;
  }

  /** Emit finished exchanges from the head of the queue, in request order. */
  private emitDone(): void {
    while (this.queue.length > 0) {
      const e = this.queue[0];
      if (!e.reqDone || !(e.respDone || e.timedOut)) return;
      this.queue.shift();
      this.emit(e);
    }
  }

  private emit(e: Pending): void {
    if (e.timedOut) this.stats.timedOut++;
    this.stats.exchanges++;
    this.deliver(toExchange(e, this.role === 'server' ? 'server' : 'client'));
  }

  /** Start afresh out of sync, as if the capture began at the next record. */
  protected override recover(): void {
    this.stats.droppedRequests += this.queue.length;
    this.queue.length = 0;
    this.reqEntry = null;
    this.respEntry = null;
    this.aligned = false;
    this.parsers = [this.newParser(0), this.newParser(1)];
  }
}
