/**
 * Drives reset-client-main.js in a host's namespace: requests written in one write, then,
 * when the test says so, the connection reset (RST) without reading a byte.
 */
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Host } from './netns.js';
import { waitExit } from './nats-server.js';

const CLIENT_SCRIPT = fileURLToPath(new URL('./reset-client-main.js', import.meta.url));

export interface ResetClient {
  /** The client's local port. */
  readonly localPort: number;
  /** Reset the connection; resolves once the socket is gone and the client has exited. */
  reset(): Promise<void>;
  /** Kill the client if it still runs. Idempotent. */
  stop(): Promise<void>;
}

/** Connect from `client` to addr:port and write `requests`; resolves once they are written. */
export async function sendThenHold(client: Host, addr: string, port: number, requests: Buffer[], timeoutMs = 30_000): Promise<ResetClient> {
  const child = client.spawn(process.execPath, [CLIENT_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const stop = async () => {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
  };
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async (event: string) => {
    const l = await lines.next();
    if (l.done) throw new Error(`reset client ended before '${event}' (exit ${child.exitCode}): ${stderr}`);
    const msg = JSON.parse(l.value) as { event: string; localPort?: number };
    if (msg.event !== event) throw new Error(`reset client said ${l.value}, expected '${event}'`);
    return msg;
  };
  try {
    child.stdin!.write(JSON.stringify({ addr, port, requests: requests.map((r) => r.toString('base64')) }) + '\n');
    const sent = await next('sent');
    return {
      localPort: sent.localPort!,
      async reset() {
        child.stdin!.end('reset\n');
        await next('reset');
        await waitExit(child, timeoutMs);
        clearTimeout(timer);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
