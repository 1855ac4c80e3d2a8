/**
 * HTTP exchanges whose bytes are known exactly: raw-http-client-main.js runs in a host's
 * namespace, sends each request over one keep-alive TCP connection (one write each, or all
 * in one write when pipelining) and saves every byte it sent and received, with the time
 * each exchange took as the client saw it. Before it closes, `beforeClose` can look at the
 * open connection.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Host } from './netns.js';
import { waitExit } from './nats-server.js';

const CLIENT_SCRIPT = fileURLToPath(new URL('./raw-http-client-main.js', import.meta.url));

/** Byte ranges of one request/response within the connection's directions. */
export interface RawExchange {
  reqStart: number;
  reqEnd: number;
  respStart: number;
  respEnd: number;
  status: number;
  /** Nanoseconds from just before the request's write to the read that completed its response. */
  elapsedNs: number;
}

export interface RawHttpResult {
  localAddress: string;
  localPort: number;
  /** Every byte the client wrote, in order. */
  sent: Buffer;
  /** Every byte the client read, in order. */
  received: Buffer;
  exchanges: RawExchange[];
}

export interface RawHttpOptions {
  /** Called while the connection is still open, after the last response. */
  beforeClose?: (conn: { localAddress: string; localPort: number }) => Promise<void>;
  timeoutMs?: number;
  /** Write every request in one single write before reading any response (pipelining). */
  pipeline?: boolean;
}

/** A GET request with the headers a browser-less client sends. */
export function getRequest(host: string, path: string, extra: Record<string, string> = {}): Buffer {
  const h = Object.entries({ Host: host, 'User-Agent': 'netrig-raw/1', Accept: '*/*', ...extra }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return Buffer.from(`GET ${path} HTTP/1.1\r\n${h}\r\n`, 'latin1');
}

/** A POST request carrying `body`. */
export function postRequest(host: string, path: string, body: Buffer, contentType = 'application/octet-stream'): Buffer {
  const head = `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: netrig-raw/1\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

/** Run `requests` over one connection from `client` to addr:port. */
export async function rawHttpSession(client: Host, addr: string, port: number, requests: Buffer[], opts: RawHttpOptions = {}): Promise<RawHttpResult> {
  const out = mkdtempSync(join(tmpdir(), `netrig-raw-${process.pid}-`));
  const child = client.spawn(process.execPath, [CLIENT_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = Date.now();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  try {
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const next = async (event: string) => {
      const l = await lines.next();
      if (l.done) {
        // Its output ends before its exit is reaped: wait a little to say how it ended.
        await waitExit(child, 2000);
        const how = timedOut ? `killed after the ${timeoutMs} ms timeout` : `exit ${child.exitCode}, signal ${child.signalCode}`;
        throw new Error(`raw client ended before '${event}' after ${Date.now() - started} ms (${how}): ${stderr}`);
      }
      const msg = JSON.parse(l.value) as { event: string } & Record<string, unknown>;
      if (msg.event !== event) throw new Error(`raw client said ${l.value}, expected '${event}'`);
      return msg;
    };
    child.stdin!.write(JSON.stringify({ addr, port, requests: requests.map((r) => r.toString('base64')), out, pipeline: opts.pipeline ?? false }) + '\n');
    const done = (await next('done')) as unknown as { localAddress: string; localPort: number; exchanges: RawExchange[] };
    try {
      await opts.beforeClose?.({ localAddress: done.localAddress, localPort: done.localPort });
    } finally {
      child.stdin!.end('close\n');
    }
    await next('closed');
    await waitExit(child, timeoutMs);
    return {
      localAddress: done.localAddress,
      localPort: done.localPort,
      exchanges: done.exchanges,
      sent: readFileSync(join(out, 'sent.bin')),
      received: readFileSync(join(out, 'received.bin')),
    };
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
    rmSync(out, { recursive: true, force: true });
  }
}
