/**
 * An HTTP/2 client on node:http2 (h2c, prior knowledge), run as its own process inside a
 * test host's namespace (see runNodeH2Client in h2-clients.ts), for what command-line
 * clients cannot do on purpose: a request whose body is held back, so the server answers
 * (and may reset the stream) before the request ends. Requests go one after the other over
 * one session; each reports what the client saw.
 *
 * stdin, first line: {"url","requests":[{"method","path","body"?:bytes,"holdOpen"?:bool,"userAgent"}]}.
 * With `holdOpen` the request's END_STREAM is never sent: the stream ends when the server
 * ends it. stdout: {"event":"done","localPort","results":[{"status","contentType","bodyBytes",
 * "rstCode","elapsedNs"}]} once the session is closed.
 */
import { connect, constants } from 'node:http2';
import { createInterface } from 'node:readline';

interface RequestSpec {
  method: string;
  path: string;
  body?: number;
  holdOpen?: boolean;
  userAgent: string;
}

interface Result {
  status: number;
  contentType: string;
  bodyBytes: number;
  /** RST_STREAM code the stream closed with (0: NO_ERROR, or closed without one). */
  rstCode: number;
  /** From just before the request to the stream's close, in ns. */
  elapsedNs: number;
}

async function main(): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  const spec = JSON.parse((await rl[Symbol.asyncIterator]().next()).value as string) as { url: string; requests: RequestSpec[] };
  rl.close();
  const session = connect(spec.url);
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  const localPort = session.socket.localPort;
  const results: Result[] = [];
  for (const r of spec.requests) {
    const t0 = process.hrtime.bigint();
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: r.method,
      [constants.HTTP2_HEADER_PATH]: r.path,
      'user-agent': r.userAgent,
    }, { endStream: !r.holdOpen && !r.body });
    if (r.body && !r.holdOpen) stream.end(Buffer.alloc(r.body, 'n'));
    const res: Result = { status: 0, contentType: '', bodyBytes: 0, rstCode: 0, elapsedNs: 0 };
    stream.on('response', (h) => {
      res.status = Number(h[constants.HTTP2_HEADER_STATUS]);
      res.contentType = String(h[constants.HTTP2_HEADER_CONTENT_TYPE] ?? '');
    });
    stream.on('data', (b: Buffer) => (res.bodyBytes += b.length));
    stream.on('error', () => undefined);
    await new Promise<void>((resolve) => stream.once('close', () => resolve()));
    res.rstCode = stream.rstCode ?? 0;
    res.elapsedNs = Number(process.hrtime.bigint() - t0);
    results.push(res);
  }
  await new Promise<void>((resolve) => session.close(() => resolve()));
  process.stdout.write(JSON.stringify({ event: 'done', localPort, results }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`h2-node-client: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
