/**
 * A nats-server owned by a netrig process (`netrig up`): Debian's nats-server with
 * JetStream, its store under the data dir, bound to 127.0.0.1. It is started through
 * `setpriv --pdeathsig` so it dies with its owner even if the owner is killed outright.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { PortInUseError, PrerequisiteError } from './errors.js';
import type { Logger } from './logger.js';

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;

export interface OwnedNatsServer {
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Start nats-server with JetStream on 127.0.0.1:`port`, store in `storeDir`; resolves when ready. */
export async function startOwnedNatsServer(port: number, storeDir: string, log: Logger): Promise<OwnedNatsServer> {
  if (!has('nats-server')) {
    throw new PrerequisiteError("nats-server is not installed: run 'scripts/setup.sh' (it installs Debian's nats-server) or pass --nats to use a running one");
  }
  mkdirSync(storeDir, { recursive: true });
  const args = ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir, '-n', 'netrig'];
  const child: ChildProcess = has('setpriv')
    ? spawn('setpriv', ['--pdeathsig', 'SIGTERM', 'nats-server', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new PrerequisiteError(`nats-server did not become ready in ${READY_TIMEOUT_MS} ms:\n${output.slice(-2000)}`));
    }, READY_TIMEOUT_MS);
    const onData = (c: Buffer) => {
      output += c.toString();
      if (/Server is ready/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (/address already in use/i.test(output)) reject(new PortInUseError(port, 'nats-server; pass --nats-port'));
      else reject(new PrerequisiteError(`nats-server exited (${code}) before it was ready:\n${output.slice(-2000)}`));
    });
  });
  child.removeAllListeners('exit');
  log.info({ port, storeDir, pid: child.pid }, 'nats-server started');
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(t);
      log.info('nats-server stopped');
    },
  };
}
