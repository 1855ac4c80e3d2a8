/**
 * A Docker engine of the test's own: Debian's dockerd on a private socket, without touching
 * the host's firewall or bridges (`--iptables=false --bridge=none`: containers use the
 * host's network), stopped when the test ends. Its images live under a data root kept
 * between runs (a cache, like npm's: the base image and unchanged build layers are not
 * rebuilt); what is dangling is pruned at stop. Containers are the test's alone: every one
 * is removed at start (an earlier run that died) and when the test process exits.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { pollUntil } from './cleanup-all.js';
import { killSync, onExit } from './cleanup.js';
import { run, type ExecOptions, type ExecResult } from './netns.js';
import { commandExists } from '../../lib/nats-server.js';
import { waitExit } from './nats-server.js';

/** Where the test engine keeps its images between runs. */
export const DOCKER_DATA_ROOT = '/var/lib/netrig-test-docker';
const READY_MS = 60_000;

export interface DockerEngine {
  /** DOCKER_HOST for clients of this engine. */
  readonly host: string;
  /** `docker <args>` against this engine. */
  docker(args: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** The engine's log, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

/** Fail naming what is missing: scripts/setup.sh installs these. */
function requireCommands(cmds: string[]): void {
  const missing = cmds.find((cmd) => !commandExists(cmd));
  if (missing) throw new Error(`${missing} is not installed: scripts/setup.sh installs it (Debian's docker.io, docker-compose and debootstrap)`);
}

export async function startDockerEngine(): Promise<DockerEngine> {
  requireCommands(['dockerd', 'docker', 'docker-compose', 'debootstrap']);
  const runDir = mkdtempSync(join(tmpdir(), 'netrig-dockerd-'));
  const host = `unix://${runDir}/docker.sock`;
  const lines: string[] = [];
  const child: ChildProcess = spawn('dockerd', [
    '--data-root', DOCKER_DATA_ROOT, '--exec-root', join(runDir, 'exec'), '--pidfile', join(runDir, 'docker.pid'),
    '-H', host, '--iptables=false', '--ip6tables=false', '--bridge=none',
    '--containerd-namespace', 'netrig-test', '--containerd-plugins-namespace', 'netrig-test-plugins',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (c: Buffer) => {
    lines.push(...c.toString().split('\n').filter(Boolean));
    if (lines.length > 400) lines.splice(0, lines.length - 400);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const env = { ...process.env, DOCKER_HOST: host };
  // A test that dies leaves no container running: containers outlive a killed dockerd (their
  // shims go on), and `restart: unless-stopped` would start them again with the next engine.
  const removeAllSync = () => {
    const ids = spawnSync('docker', ['ps', '--all', '--quiet'], { env, timeout: 10_000 }).stdout?.toString().split('\n').filter(Boolean) ?? [];
    if (ids.length) spawnSync('docker', ['rm', '--force', '--volumes', ...ids], { env, timeout: 60_000, stdio: 'ignore' });
  };
  const unregister = onExit(`dockerd ${child.pid}`, () => {
    removeAllSync();
    killSync(child.pid);
  });
  const docker = (args: string[], opts: ExecOptions = {}) => run('docker', args, { ...opts, env: { ...env, ...opts.env } });
  const engine: DockerEngine = {
    host,
    docker,
    log: () => lines.join('\n'),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        await docker(['image', 'prune', '--force']).catch(() => undefined);
        child.kill('SIGTERM');
        if (!(await waitExit(child, 30_000))) {
          child.kill('SIGKILL');
          await waitExit(child, 10_000);
        }
      }
      unregister();
      // dockerd leaves its network namespace file bind-mounted under its exec root.
      for (const m of (await run('findmnt', ['-rno', 'TARGET'])).stdout.split('\n').filter((t) => t.startsWith(`${runDir}/`)).reverse()) {
        await run('umount', ['--lazy', m]);
      }
      rmSync(runDir, { recursive: true, force: true });
    },
  };
  const ready = await pollUntil(async () => child.exitCode !== null || (await docker(['version', '--format', '{{.Server.Version}}'])).code === 0, READY_MS, 250);
  if (!ready || child.exitCode !== null) {
    const log = engine.log();
    await engine.stop();
    throw new Error(`dockerd did not come up within ${READY_MS} ms:\n${log.slice(-3000)}`);
  }
  // What an earlier run left (it died before its cleanup) goes before anything starts.
  removeAllSync();
  return engine;
}
