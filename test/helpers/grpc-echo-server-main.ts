/**
 * A @grpc/grpc-js server of `netrig.test.Echo` (grpc-echo-service.ts) over h2c (insecure
 * credentials), run as its own process inside a test host's namespace (see grpc-echo.ts).
 *
 * Unary calls are held until `gather` of them are open at once, then answered in reverse
 * order of arrival, so the streams of one connection are provably multiplexed and their
 * responses interleave out of order (after GATHER_TIMEOUT_MS whatever is open is answered
 * anyway, reported as incomplete).
 *
 * stdin, first line: {"addr","gather"}; the server stops when stdin ends.
 * stdout lines: {"event":"listening","port"}, then {"event":"batch","calls","complete"} per
 * batch of unary calls answered.
 */
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { ECHO_SERVICE, FAIL_MESSAGE, FAIL_STATUS, STREAM_REPLY_BYTES, payload } from './grpc-echo-service.js';

interface Spec {
  addr: string;
  gather: number;
}

const GATHER_TIMEOUT_MS = 20_000;

type Pending = { req: Buffer; callback: grpc.sendUnaryData<Buffer> };

function say(msg: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(msg) + '\n');
}

async function main(): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const spec = JSON.parse((await lines.next()).value as string) as Spec;

  let pending: Pending[] = [];
  let timer: NodeJS.Timeout | null = null;
  const answer = (complete: boolean) => {
    if (timer) clearTimeout(timer);
    timer = null;
    const batch = pending.reverse();
    pending = [];
    for (const p of batch) p.callback(null, p.req);
    say({ event: 'batch', calls: batch.length, complete });
  };

  const server = new grpc.Server();
  server.addService(ECHO_SERVICE, {
    Unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      pending.push({ req: call.request, callback });
      if (pending.length >= spec.gather) answer(true);
      else timer ??= setTimeout(() => answer(false), GATHER_TIMEOUT_MS);
    },
    ServerStream(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      STREAM_REPLY_BYTES.forEach((n, i) => call.write(payload(n, 1000 + i)));
      call.end();
    },
    Fail(_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      callback({ code: FAIL_STATUS, details: FAIL_MESSAGE });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${spec.addr}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  say({ event: 'listening', port });

  // Runs until stdin ends (the test stops it, or the test process went away).
  for await (const _ of { [Symbol.asyncIterator]: () => lines }) {
    // Nothing else is read.
  }
  if (timer) clearTimeout(timer);
  server.forceShutdown();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`grpc-echo-server: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
