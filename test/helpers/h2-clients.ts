/**
 * HTTP/2 command-line clients as test peers, and what they say about their own traffic:
 *
 * - `nghttp -v -s`: every frame it sent and received (type, length, stream), the request
 *   header fields it sent and the response fields it got, and per stream the time from
 *   just before its request's first byte was sent to its response's end. From the frames
 *   the exact bytes of each stream in each direction and the position of each request's
 *   HEADERS in the client's byte stream follow (the 24-byte preface first).
 * - `h2load`: request and status counts, traffic (total, header block and DATA bytes
 *   received) and the longest time a request took.
 *
 * - h2-node-client-main.ts (node:http2): requests whose body is held back, so the server
 *   answers before the request ends.
 *
 * Durations are printed rounded (nghttp2's util::format_duration: whole µs below 1 ms, two
 * decimals of ms or s above): upper bounds are taken as the printed value plus one unit of
 * its last digit.
 */
import { fileURLToPath } from 'node:url';
import type { Host } from './netns.js';

/** RFC 9113 §3.4: the client connection preface. */
export const H2_PREFACE_BYTES = 24;
export const H2_FRAME_HEADER_BYTES = 9;

/** A command run in a host's namespace: its output, pid and the wall time it took. */
export interface TimedRun {
  stdout: string;
  stderr: string;
  code: number | null;
  pid: number;
  /** From just before the spawn to the exit, in ns: an upper bound of anything it timed. */
  elapsedNs: number;
}

/**
 * Run `cmd` in `host`'s namespace (`ip netns exec` execs in place: the pid is the
 * command's), with `input` on its stdin.
 */
export function runTimed(host: Host, cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<TimedRun> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = host.spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd} in ${host.ns}: ${e.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code, pid: child.pid!,
        elapsedNs: Number(process.hrtime.bigint() - t0),
      });
    });
  });
}

/** Upper bound in ns of a duration nghttp2 printed ("311us", "1.46ms", "2.10s"). */
export function durationUpperNs(text: string): number {
  const m = /^(\d+(?:\.(\d+))?)(us|ms|s)$/.exec(text);
  if (!m) throw new Error(`not an nghttp2 duration: '${text}'`);
  const unitNs = m[3] === 'us' ? 1e3 : m[3] === 'ms' ? 1e6 : 1e9;
  const decimals = m[2]?.length ?? 0;
  return Math.ceil((Number(m[1]) + 10 ** -decimals) * unitNs);
}

export interface H2Frame {
  dir: 'send' | 'recv';
  type: string;
  length: number;
  flags: number;
  streamId: number;
}

/** One stream as nghttp saw it. */
export interface NghttpStream {
  id: number;
  /** Request fields it sent (:method, :path, :authority, ...). */
  req: Record<string, string>;
  /** Response fields it received (:status, content-type, ...). */
  resp: Record<string, string>;
  /** Position of its first frame (HEADERS) in the client's egress: preface and earlier frames before it. */
  reqPos: number;
  /** Bytes of its HEADERS, CONTINUATION and DATA frames each way (frame headers and padding included). */
  reqBytes: number;
  respBytes: number;
  /** From `-s`: upper bound of requestStart → responseEnd in ns; null when nghttp printed none. */
  processNs: number | null;
}

export interface NghttpRun {
  frames: H2Frame[];
  /** By stream id, in the order the streams were opened. */
  streams: NghttpStream[];
  /** Every byte it sent (preface and all frames) and received (all frames). */
  sentBytes: number;
  receivedBytes: number;
}

const FRAME_LINE = /^\[\s*[\d.]+\] (send|recv) (\w+) frame <length=(\d+), flags=0x([0-9a-f]+), stream_id=(\d+)>/;
const RECV_FIELD = /^\[\s*[\d.]+\] recv \(stream_id=(\d+)\) (:?[^:]+): (.*)$/;
const SENT_FIELD = /^ {10}(:?[a-z0-9-]+): (.*)$/;
const STAT_LINE = /^\s*(\d+)\s+\+(\S+)\s+\+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)$/;
const STREAM_FRAMES = new Set(['HEADERS', 'CONTINUATION', 'DATA']);

/** Parse what `nghttp -v -s` printed. */
export function parseNghttp(stdout: string): NghttpRun {
  const frames: H2Frame[] = [];
  const streams = new Map<number, NghttpStream>();
  const stream = (id: number): NghttpStream => {
    let s = streams.get(id);
    if (!s) streams.set(id, (s = { id, req: {}, resp: {}, reqPos: -1, reqBytes: 0, respBytes: 0, processNs: null }));
    return s;
  };
  let sent = H2_PREFACE_BYTES;
  let received = 0;
  /** The stream of the HEADERS frame just sent, whose fields follow on indented lines. */
  let sentHeaders: NghttpStream | null = null;
  let inStats = false;
  for (const line of stdout.split('\n')) {
    const f = FRAME_LINE.exec(line);
    if (f) {
      const frame: H2Frame = { dir: f[1] as 'send' | 'recv', type: f[2], length: Number(f[3]), flags: parseInt(f[4], 16), streamId: Number(f[5]) };
      frames.push(frame);
      const size = H2_FRAME_HEADER_BYTES + frame.length;
      sentHeaders = null;
      if (STREAM_FRAMES.has(frame.type) && frame.streamId) {
        const s = stream(frame.streamId);
        if (frame.dir === 'send') {
          if (s.reqPos < 0) s.reqPos = sent;
          s.reqBytes += size;
          if (frame.type === 'HEADERS') sentHeaders = s;
        } else {
          s.respBytes += size;
        }
      }
      if (frame.dir === 'send') sent += size;
      else received += size;
      continue;
    }
    const r = RECV_FIELD.exec(line);
    if (r) {
      stream(Number(r[1])).resp[r[2]] = r[3];
      continue;
    }
    const h = sentHeaders && SENT_FIELD.exec(line);
    if (h && sentHeaders) {
      sentHeaders.req[h[1]] = h[2];
      continue;
    }
    if (/^id\s+responseEnd\s+requestStart\s+process/.test(line)) {
      inStats = true;
      continue;
    }
    const st = inStats ? STAT_LINE.exec(line) : null;
    if (st) stream(Number(st[1])).processNs = durationUpperNs(st[4]);
  }
  return { frames, streams: [...streams.values()].filter((s) => s.reqPos >= 0).sort((a, b) => a.id - b.id), sentBytes: sent, receivedBytes: received };
}

export interface H2loadRun {
  requests: { total: number; started: number; done: number; succeeded: number; failed: number; errored: number; timeout: number };
  /** Responses by status class: 2xx, 3xx, 4xx, 5xx. */
  statusCodes: { '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** Bytes received: all of them, header blocks (HEADERS frame payloads), DATA payloads. */
  traffic: { total: number; headers: number; data: number };
  /** Upper bound of the longest request (request submitted → stream closed), in ns. */
  maxRequestNs: number;
}

/** Parse what `h2load` printed. */
export function parseH2load(stdout: string): H2loadRun {
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(stdout);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  const traffic = /traffic: \S+ \((\d+)\) total, \S+ \((\d+)\) headers \(space savings [\d.]+%\), \S+ \((\d+)\) data/.exec(stdout);
  const time = /time for request:\s+(\S+)\s+(\S+)/.exec(stdout);
  if (!req || !codes || !traffic || !time) throw new Error(`unexpected h2load output:\n${stdout}`);
  const n = (m: RegExpExecArray, i: number) => Number(m[i]);
  return {
    requests: { total: n(req, 1), started: n(req, 2), done: n(req, 3), succeeded: n(req, 4), failed: n(req, 5), errored: n(req, 6), timeout: n(req, 7) },
    statusCodes: { '2xx': n(codes, 1), '3xx': n(codes, 2), '4xx': n(codes, 3), '5xx': n(codes, 4) },
    traffic: { total: n(traffic, 1), headers: n(traffic, 2), data: n(traffic, 3) },
    maxRequestNs: durationUpperNs(time[2]),
  };
}

const NODE_H2_CLIENT = fileURLToPath(new URL('./h2-node-client-main.js', import.meta.url));

export interface NodeH2Request {
  method: string;
  path: string;
  /** Body bytes sent with the request. */
  body?: number;
  /** Never send the request's END_STREAM: the server ends the stream. */
  holdOpen?: boolean;
  userAgent: string;
}

export interface NodeH2Result {
  status: number;
  contentType: string;
  bodyBytes: number;
  /** RST_STREAM code the stream closed with (0: NO_ERROR or none). */
  rstCode: number;
  /** From just before the request to the stream's close, as the client measured it. */
  elapsedNs: number;
}

/** Requests one after the other over one node:http2 session from `host` to `url` (http://addr:port). */
export async function runNodeH2Client(host: Host, url: string, requests: NodeH2Request[]): Promise<{ pid: number; localPort: number; results: NodeH2Result[] }> {
  const r = await runTimed(host, process.execPath, [NODE_H2_CLIENT], { input: JSON.stringify({ url, requests }) + '\n' });
  if (r.code !== 0) throw new Error(`node:http2 client failed (${r.code}): ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { event: string; localPort: number; results: NodeH2Result[] };
  return { pid: r.pid, localPort: out.localPort, results: out.results };
}
