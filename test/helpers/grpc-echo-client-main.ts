/**
 * A @grpc/grpc-js client of `netrig.test.Echo` (grpc-echo-service.ts) over h2c (insecure
 * credentials), run as its own process inside a test host's namespace (see grpc-echo.ts).
 * Every call goes over one channel, so over one HTTP/2 connection. Calls are made in
 * phases: the calls of a phase are started together (multiplexed), a phase starts when
 * the previous one has finished. Each call reports what the client saw: status, details,
 * the sizes of the messages received, whether a unary reply echoed the request, and the
 * time from just before the call started to its status (CLOCK_MONOTONIC, in ns).
 *
 * stdin, first line: {"target","phases":[[{"method","bytes"}...]...]}.
 * stdout: {"event":"done","calls":[...]} (in the order given), then after a line on stdin
 * the channel is closed and {"event":"closed"} follows.
 */
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { ECHO_SERVICE_NAME, payload, type EchoMethod } from './grpc-echo-service.js';

interface CallSpec {
  method: EchoMethod;
  /** Size of the request message. */
  bytes: number;
}

interface Spec {
  target: string;
  phases: CallSpec[][];
}

interface CallResult extends CallSpec {
  code: number;
  details: string;
  /** Sizes of the messages received. */
  replies: number[];
  /** Unary: the reply is the request's bytes. */
  echoed: boolean;
  elapsedNs: number;
}

const identity = (b: Buffer): Buffer => b;

function call(client: grpc.Client, spec: CallSpec, seed: number): Promise<CallResult> {
  const path = `/${ECHO_SERVICE_NAME}/${spec.method}`;
  const req = payload(spec.bytes, seed);
  const t0 = process.hrtime.bigint();
  const done = (code: number, details: string, replies: Buffer[]): CallResult => ({
    ...spec, code, details, replies: replies.map((r) => r.length),
    echoed: replies.length === 1 && replies[0].equals(req),
    elapsedNs: Number(process.hrtime.bigint() - t0),
  });
  return new Promise((resolve) => {
    if (spec.method === 'ServerStream') {
      const replies: Buffer[] = [];
      const stream = client.makeServerStreamRequest(path, identity, identity, req);
      stream.on('data', (b: Buffer) => replies.push(b));
      // Errors come with their status too; the status is the end of the call.
      stream.on('error', () => undefined);
      stream.on('status', (s: grpc.StatusObject) => resolve(done(s.code, s.details, replies)));
    } else {
      let reply: Buffer | undefined;
      const unary = client.makeUnaryRequest(path, identity, identity, req, (_err: grpc.ServiceError | null, r?: Buffer) => {
        reply = r;
      });
      // The status (with the details the server sent, "OK" included) ends the call.
      unary.on('status', (s: grpc.StatusObject) => setImmediate(() => resolve(done(s.code, s.details, reply ? [reply] : []))));
    }
  });
}

async function main(): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const spec = JSON.parse((await lines.next()).value as string) as Spec;
  const client = new grpc.Client(spec.target, grpc.credentials.createInsecure());
  const results: CallResult[] = [];
  let seed = 0;
  for (const phase of spec.phases) {
    results.push(...(await Promise.all(phase.map((c) => call(client, c, ++seed)))));
  }
  process.stdout.write(JSON.stringify({ event: 'done', calls: results }) + '\n');
  await lines.next();
  client.close();
  process.stdout.write(JSON.stringify({ event: 'closed' }) + '\n');
  rl.close();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`grpc-echo-client: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
