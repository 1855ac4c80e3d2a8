/**
 * A TCP proxy in front of a ClickHouse HTTP endpoint that a test can make misbehave:
 *
 * - hang(): bytes either way are dropped and every connection is kept open (a server that
 *   black-holes: requests neither fail nor finish); resume() answers again and cuts the
 *   connections held meanwhile (their requests are lost anyway);
 * - nextInsert(): resolves when the next request carrying an INSERT passes through; from then
 *   on that connection's request bytes still reach the engine but its answers are held, so
 *   the insert lands while its sender never learns it did (a client killed then leaves an
 *   insert committed but unacknowledged).
 *
 * It counts the inserts it swallowed while hanging.
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';

export class ClickHouseProxy {
  port = 0;
  /** Requests carrying an INSERT received while hanging. */
  heldInserts = 0;
  private hanging = false;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** Client sockets whose answers are held (their insert is in flight). */
  private readonly answersHeld = new Set<Socket>();
  private insertWaiter: (() => void) | null = null;

  constructor(private readonly target: number) {
    this.server = createServer((client) => this.accept(client));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  private accept(client: Socket): void {
    const upstream = tcpConnect(this.target, '127.0.0.1');
    for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
      this.sockets.add(from);
      from.on('data', (d: Buffer) => {
        const request = from === client;
        if (this.hanging) {
          if (request && d.includes('INSERT')) this.heldInserts++;
          return;
        }
        if (request && this.insertWaiter && d.includes('INSERT')) {
          this.answersHeld.add(client);
          const w = this.insertWaiter;
          this.insertWaiter = null;
          w();
        }
        if (!request && this.answersHeld.has(client)) return;
        to.write(d);
      });
      from.on('error', () => to.destroy());
      from.on('close', () => {
        this.sockets.delete(from);
        this.answersHeld.delete(from);
        to.destroy();
      });
    }
  }

  hang(): void {
    this.hanging = true;
  }

  /** Answer again; the connections held while hanging are cut. */
  resume(): void {
    this.hanging = false;
    for (const s of this.sockets) s.destroy();
  }

  /**
   * Resolves when the next INSERT request passes (its answer then held), or rejects after
   * `timeoutMs`.
   */
  nextInsert(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.insertWaiter = null;
        reject(new Error(`no INSERT through the proxy within ${timeoutMs} ms`));
      }, timeoutMs);
      this.insertWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async stop(): Promise<void> {
    this.insertWaiter = null;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
