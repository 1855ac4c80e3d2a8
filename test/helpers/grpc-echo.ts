/**
 * gRPC peers for end-to-end tests: a @grpc/grpc-js server of `netrig.test.Echo`
 * (grpc-echo-service.ts) in one host's namespace and a @grpc/grpc-js client in another, each
 * its own `node` process started with `ip netns exec`, both over h2c (insecure credentials:
 * Node links OpenSSL statically, so netrig would not see Node's TLS plaintext). The client
 * makes all its calls over one channel and reports what it saw; before it closes, the test
 * learns its connections' local ports from `ss`.
 */
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { Host } from './netns.js';
import { waitExit } from './nats-server.js';
import type { EchoMethod } from './grpc-echo-service.js';

const SERVER_SCRIPT = fileURLToPath(new URL('./grpc-echo-server-main.js', import.meta.url));
const CLIENT_SCRIPT = fileURLToPath(new URL('./grpc-echo-client-main.js', import.meta.url));
const READY_TIMEOUT_MS = 15_000;

export interface GrpcEchoServer {
  readonly addr: string;
  readonly port: number;
  /** Pid of the server process (comm `node`). */
  readonly pid: number;
  /** Batches of unary calls answered so far (see grpc-echo-server-main.ts). */
  readonly batches: { calls: number; complete: boolean }[];
  /** Stop the server (stdin closed, then SIGKILL if it lingers). Idempotent. */
  stop(): Promise<void>;
}

/** One call as the client saw it. */
export interface GrpcCallResult {
  method: EchoMethod;
  /** Size of the request message. */
  bytes: number;
  code: number;
  details: string;
  /** Sizes of the messages received. */
  replies: number[];
  /** Unary: the reply was the request's bytes. */
  echoed: boolean;
  /** From just before the call started to its status, as the client measured it. */
  elapsedNs: number;
}

export interface GrpcClientRun {
  /** Pid of the client process (comm `node`). */
  pid: number;
  /** In the order the phases listed them. */
  calls: GrpcCallResult[];
  /** Local ports of the client's established connections to the server, before it closed. */
  localPorts: number[];
}

/** A line-oriented JSON reader of a child's stdout. */
function jsonLines(child: ChildProcess, what: string, stderr: () => string) {
  const it = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return async <T>(event: string): Promise<T> => {
    const l = await it.next();
    if (l.done) throw new Error(`${what} ended before '${event}' (exit ${child.exitCode ?? child.signalCode}): ${stderr()}`);
    const msg = JSON.parse(l.value) as { event: string };
    if (msg.event !== event) throw new Error(`${what} said ${l.value}, expected '${event}'`);
    return msg as T;
  };
}

/** Start the Echo server on `host`'s address (a free port); unary calls are gathered `gather` at a time. */
export async function startGrpcEchoServer(host: Host, opts: { gather: number }): Promise<GrpcEchoServer> {
  const child = host.spawn(process.execPath, [SERVER_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const next = jsonLines(child, 'grpc echo server', () => stderr);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    child.stdin!.end();
    if (!(await waitExit(child, 5000))) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
  };
  child.stdin!.on('error', () => undefined);
  child.stdin!.write(JSON.stringify({ addr: host.addr, gather: opts.gather }) + '\n');
  const timer = setTimeout(() => child.kill('SIGKILL'), READY_TIMEOUT_MS);
  let port: number;
  try {
    ({ port } = await next<{ port: number }>('listening'));
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  const batches: { calls: number; complete: boolean }[] = [];
  // Batch reports arrive while the test runs.
  void (async () => {
    for (;;) {
      try {
        const b = await next<{ calls: number; complete: boolean }>('batch');
        batches.push({ calls: b.calls, complete: b.complete });
      } catch {
        return;
      }
    }
  })();
  return { addr: host.addr, port, pid: child.pid!, batches, stop };
}

/** Local ports of `host`'s established TCP connections to remote port `dport`. */
export async function establishedLocalPorts(host: Host, dport: number): Promise<number[]> {
  const r = await host.exec('ss', ['-tnH', 'state', 'established', `dport = :${dport}`]);
  if (r.code !== 0) throw new Error(`ss failed in ${host.ns}: ${r.stderr}`);
  // Columns: Recv-Q Send-Q Local:Port Peer:Port (the state column is left out with a state filter).
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => Number(/:(\d+)$/.exec(l.trim().split(/\s+/)[2])?.[1]));
}

/**
 * Run the client in `host`'s namespace against `server`: the calls of each phase together,
 * the phases one after the other, all over one channel.
 */
export async function runGrpcEchoClient(host: Host, server: GrpcEchoServer, phases: { method: EchoMethod; bytes: number }[][], timeoutMs = 60_000): Promise<GrpcClientRun> {
  const child = host.spawn(process.execPath, [CLIENT_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin!.on('error', () => undefined);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const next = jsonLines(child, 'grpc echo client', () => stderr);
    child.stdin!.write(JSON.stringify({ target: `${server.addr}:${server.port}`, phases }) + '\n');
    const { calls } = await next<{ calls: GrpcCallResult[] }>('done');
    let localPorts: number[];
    try {
      localPorts = await establishedLocalPorts(host, server.port);
    } finally {
      child.stdin!.end('close\n');
    }
    await next('closed');
    await waitExit(child, timeoutMs);
    return { pid: child.pid!, calls, localPorts };
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
  }
}
