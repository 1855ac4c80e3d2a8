/**
 * A raw HTTP/1.1 client whose bytes are known exactly, run as its own process inside a test
 * host's namespace (see raw-http.ts). It opens one TCP connection, writes each request with
 * one write, reads each response completely (Content-Length or chunked), then reports on
 * stdout and waits for a line on stdin before closing, so the test can look at the open
 * socket (ss) first. At the end it saves every byte sent and received to files. With
 * `pipeline`, every request goes out in one single write before any response is read.
 * Each exchange reports the time from just before its request's write to the read that
 * completed its response (CLOCK_MONOTONIC, as the kernel's timestamps).
 *
 * stdin, first line: {"addr","port","requests":[base64...],"out":dir,"pipeline"?:bool}
 * stdout lines: {"event":"done","localAddress","localPort","exchanges":[...]}, then after the
 * stdin line, {"event":"closed"} once the socket is closed and the files are written.
 */
import { connect, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

interface Spec {
  addr: string;
  port: number;
  requests: string[];
  out: string;
  pipeline?: boolean;
}

/** Byte ranges of one exchange within the connection's two directions. */
interface Exchange {
  reqStart: number;
  reqEnd: number;
  respStart: number;
  respEnd: number;
  status: number;
  /** Nanoseconds from just before the request's write to the read that completed its response. */
  elapsedNs: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

/** Length of a complete response at the start of `b`, or -1 if more bytes are needed. */
function responseLength(b: Buffer): { len: number; status: number } {
  const he = b.indexOf(HEADER_END);
  if (he < 0) return { len: -1, status: 0 };
  const head = b.subarray(0, he).toString('latin1');
  const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(head)?.[1] ?? 0);
  const bodyStart = he + 4;
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    let p = bodyStart;
    for (;;) {
      const le = b.indexOf(CRLF, p);
      if (le < 0) return { len: -1, status };
      const size = parseInt(b.subarray(p, le).toString('latin1').split(';')[0], 16);
      p = le + 2;
      if (size === 0) {
        // Trailers (none expected) end with an empty line.
        for (;;) {
          const te = b.indexOf(CRLF, p);
          if (te < 0) return { len: -1, status };
          const empty = te === p;
          p = te + 2;
          if (empty) return { len: p, status };
        }
      }
      p += size + 2;
      if (p > b.length) return { len: -1, status };
    }
  }
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  const len = bodyStart + (cl ? Number(cl[1]) : 0);
  return { len: b.length >= len ? len : -1, status };
}

async function main(): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const spec = JSON.parse((await lines.next()).value as string) as Spec;
  const requests = spec.requests.map((r) => Buffer.from(r, 'base64'));

  const sock: Socket = connect({ host: spec.addr, port: spec.port });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.setNoDelay(true);
  const sent: Buffer[] = [];
  const received: Buffer[] = [];
  let sentBytes = 0;
  let receivedBytes = 0;
  let pending = Buffer.alloc(0);
  let waiter: (() => void) | null = null;
  let ended = false;
  sock.on('data', (d: Buffer) => {
    received.push(d);
    receivedBytes += d.length;
    pending = Buffer.concat([pending, d]);
    waiter?.();
  });
  sock.on('end', () => {
    ended = true;
    waiter?.();
  });

  const exchanges: Exchange[] = [];
  /** Read (and wait for) the next complete response; its exchange starts at `reqStart` and `t0`. */
  const readResponse = async (reqStart: number, reqEnd: number, t0: bigint) => {
    const respStart = receivedBytes - pending.length;
    for (;;) {
      const r = responseLength(pending);
      if (r.len >= 0) {
        pending = pending.subarray(r.len);
        const elapsedNs = Number(process.hrtime.bigint() - t0);
        exchanges.push({ reqStart, reqEnd, respStart, respEnd: respStart + r.len, status: r.status, elapsedNs });
        return;
      }
      if (ended) throw new Error(`connection closed by the server after ${receivedBytes} bytes`);
      await new Promise<void>((resolve) => (waiter = resolve));
      waiter = null;
    }
  };
  if (spec.pipeline) {
    const all = Buffer.concat(requests);
    const t0 = process.hrtime.bigint();
    sock.write(all);
    sent.push(all);
    sentBytes += all.length;
    let reqStart = 0;
    for (const req of requests) {
      await readResponse(reqStart, reqStart + req.length, t0);
      reqStart += req.length;
    }
  } else {
    for (const req of requests) {
      const reqStart = sentBytes;
      const t0 = process.hrtime.bigint();
      sock.write(req);
      sent.push(req);
      sentBytes += req.length;
      await readResponse(reqStart, sentBytes, t0);
    }
  }
  process.stdout.write(JSON.stringify({ event: 'done', localAddress: sock.localAddress, localPort: sock.localPort, exchanges }) + '\n');

  await lines.next();
  await new Promise<void>((resolve) => {
    sock.once('close', () => resolve());
    sock.end();
  });
  writeFileSync(join(spec.out, 'sent.bin'), Buffer.concat(sent));
  writeFileSync(join(spec.out, 'received.bin'), Buffer.concat(received));
  process.stdout.write(JSON.stringify({ event: 'closed' }) + '\n');
  rl.close();
}

main().catch((err) => {
  process.stderr.write(`raw-http-client: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
