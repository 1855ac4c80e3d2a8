/**
 * A client that sends requests and then resets its connection (SO_LINGER 0: RST, not FIN)
 * without reading anything, run as its own process inside a test host's namespace (see
 * reset-client.ts).
 *
 * stdin, first line: {"addr","port","requests":[base64...]}: it connects, writes every
 * request in one write, and prints {"event":"sent","localPort"}; at the next stdin line it
 * resets the connection, prints {"event":"reset"} and exits.
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

interface Spec {
  addr: string;
  port: number;
  requests: string[];
}

async function main(): Promise<void> {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const spec = JSON.parse((await lines.next()).value as string) as Spec;
  const sock = connect({ host: spec.addr, port: spec.port });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => sock.write(Buffer.concat(spec.requests.map((r) => Buffer.from(r, 'base64'))), (err) => (err ? reject(err) : resolve())));
  process.stdout.write(JSON.stringify({ event: 'sent', localPort: sock.localPort }) + '\n');
  await lines.next();
  await new Promise<void>((resolve) => {
    sock.once('close', () => resolve());
    sock.resetAndDestroy();
  });
  process.stdout.write(JSON.stringify({ event: 'reset' }) + '\n');
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`reset-client: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
