/**
 * A real nats-server for a test: spawned on a random free port of 127.0.0.1 with JetStream
 * and a temporary store, ready when it says so in its log. It can be stopped (SIGTERM),
 * killed (SIGKILL) and restarted on the same port and store, to test outages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { killSync, onExit } from './cleanup.js';

export interface NatsServerOptions {
  /** Enable JetStream (default true). */
  jetstream?: boolean;
  /** Port on 127.0.0.1; a free one by default. */
  port?: number;
  /** JetStream store directory; a fresh temporary one (removed by cleanup()) by default. */
  storeDir?: string;
  /** JetStream domain (a region's own, for fan-in through leaf nodes). */
  domain?: string;
  /** More configuration, as nats-server's config text (e.g. a `leafnodes { ... }` block). */
  config?: string;
}

export interface NatsServerHandle {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /** Pid of the running server, or undefined while it is down. */
  readonly pid: number | undefined;
  /** The server's log so far (last lines), for failure messages. */
  log(): string;
  /** SIGTERM (JetStream flushes and shuts down cleanly), then wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, then wait for the exit. */
  kill(): Promise<void>;
  /** Start again on the same port and store (stopping it first if it is running). */
  restart(): Promise<void>;
  /** stop(), then remove the store directory if this helper created it. Idempotent. */
  cleanup(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;
const EXIT_TIMEOUT_MS = 15_000;
const LOG_KEEP_LINES = 200;

/** A TCP port of 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolve when `child` has exited (at once if it already has). */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

class NatsServer implements NatsServerHandle {
  private child: ChildProcess | null = null;
  private lines: string[] = [];
  private unregister: (() => void) | null = null;
  private cleaned = false;

  constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly jetstream: boolean,
    private readonly ownStore: boolean,
    private readonly extra: Pick<NatsServerOptions, 'domain' | 'config'> = {},
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  log(): string {
    return this.lines.join('\n');
  }

  private keep(chunk: Buffer): void {
    for (const line of chunk.toString().split('\n')) {
      if (!line) continue;
      this.lines.push(line);
      if (this.lines.length > LOG_KEEP_LINES) this.lines.shift();
    }
  }

  /** Spawn and wait for "Server is ready"; rejects (with the log) if it exits first. */
  async start(): Promise<void> {
    const args = ['-a', '127.0.0.1', '-p', String(this.port)];
    if (this.extra.domain || this.extra.config) {
      // A config file for what has no flag; the flags still give address, port and store.
      const file = join(this.storeDir, 'netrig-test.conf');
      writeFileSync(file, [
        ...(this.jetstream ? [`jetstream { store_dir: ${JSON.stringify(this.storeDir)}${this.extra.domain ? `, domain: ${JSON.stringify(this.extra.domain)}` : ''} }`] : []),
        this.extra.config ?? '',
      ].join('\n'));
      args.push('-c', file);
    } else if (this.jetstream) {
      args.push('-js', '-sd', this.storeDir);
    }
    const child = spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.unregister?.();
    this.unregister = onExit(`nats-server ${child.pid}`, () => killSync(child.pid));
    await new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      // Output of this start only; a line may arrive in pieces.
      let seen = '';
      const onData = (chunk: Buffer) => {
        this.keep(chunk);
        if (done) return;
        seen = (seen + chunk.toString()).slice(-4096);
        if (/Server is ready/.test(seen)) finish();
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('error', (err) => finish(new Error(`cannot start nats-server: ${err.message}`)));
      child.once('exit', (code, sig) => finish(new Error(`nats-server exited (${code ?? sig}) before it was ready:\n${this.log()}`)));
      const timer = setTimeout(() => {
        killSync(child.pid);
        finish(new Error(`nats-server not ready after ${READY_TIMEOUT_MS} ms:\n${this.log()}`));
      }, READY_TIMEOUT_MS);
    });
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(sig);
      if (!(await waitExit(child, EXIT_TIMEOUT_MS))) {
        child.kill('SIGKILL');
        await waitExit(child, EXIT_TIMEOUT_MS);
      }
    }
    this.child = null;
    this.unregister?.();
    this.unregister = null;
  }

  stop(): Promise<void> {
    return this.signal('SIGTERM');
  }

  kill(): Promise<void> {
    return this.signal('SIGKILL');
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    await this.stop();
    if (this.ownStore) rmSync(this.storeDir, { recursive: true, force: true });
  }
}

/** Start a nats-server (JetStream on by default) and wait until it accepts clients. */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const ownStore = !opts.storeDir;
  const storeDir = opts.storeDir ?? mkdtempSync(join(tmpdir(), `netrig-nats-${process.pid}-`));
  const unregisterStore = ownStore ? onExit(`nats store ${storeDir}`, () => rmSync(storeDir, { recursive: true, force: true })) : () => {};
  // A free port can be taken between the probe and the bind: retry a few times with another.
  const attempts = opts.port ? 1 : 5;
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = opts.port ?? (await freePort());
    const server = new NatsServer(port, storeDir, opts.jetstream ?? true, ownStore, { domain: opts.domain, config: opts.config });
    try {
      await server.start();
      const cleanup = server.cleanup.bind(server);
      server.cleanup = async () => {
        await cleanup();
        unregisterStore();
      };
      return server;
    } catch (err) {
      lastErr = err;
      await server.stop();
      if (!/address already in use/i.test(String((err as Error).message))) break;
    }
  }
  if (ownStore) rmSync(storeDir, { recursive: true, force: true });
  unregisterStore();
  throw lastErr;
}

/**
 * Wait until JetStream domain `domain` answers through `nc` (a region's leaf node has joined
 * its hub); its account info, as it answered. `log` tells why when it never does.
 */
export async function waitForDomain(nc: NatsConnection, domain: string, log: () => string, timeoutMs = 30_000): Promise<{ domain?: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return (await nc.request(`$JS.${domain}.API.INFO`, '', { timeout: 1000 })).json<{ domain?: string }>();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`JetStream domain ${domain} not reachable through the hub after ${timeoutMs} ms:\n${log()}`, { cause: err });
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

