/**
 * The netrig command line as a user runs it: `node dist/cli/main.js ...` as a child process.
 * runCli() runs a command to its end; spawnCli() starts a long-running one (up, process,
 * edge), keeps its stdout lines and its stderr (pino JSON log lines, parsed, and any other
 * line), and stops it with a signal. The exit safety net SIGKILLs what a test leaves.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { killSync, onExit } from './cleanup.js';
import { pollUntil, sleep } from './cleanup-all.js';
import { waitExit } from './nats-server.js';
import { run, type ExecResult } from './netns.js';
import { CLI } from './paths.js';

/** One pino log line of a netrig process. */
export interface LogLine {
  level: number;
  msg?: string;
  component?: string;
  [k: string]: unknown;
}

/** Options of a netrig child: its log level (unset: netrig's default), more environment, its working directory. */
interface CliOptions {
  logLevel?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** Environment of a netrig child: ours and `extra`, with NETRIG_LOG_LEVEL as given. */
function cliEnv(logLevel?: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  if (logLevel) env.NETRIG_LOG_LEVEL = logLevel;
  else delete env.NETRIG_LOG_LEVEL;
  return env;
}

/** Run `netrig <args>` to its end (killed after `timeoutMs`). */
export function runCli(args: string[], opts: CliOptions & { timeoutMs?: number } = {}): Promise<ExecResult> {
  return run(process.execPath, [CLI, ...args], { timeoutMs: opts.timeoutMs ?? 60_000, env: cliEnv(opts.logLevel, opts.env), cwd: opts.cwd });
}

/** Split stderr into pino log lines and the other (plain) lines. */
export function splitStderr(stderr: string): { logs: LogLine[]; plain: string[] } {
  const logs: LogLine[] = [];
  const plain: string[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.trim()) continue;
    try {
      const l = JSON.parse(line) as LogLine;
      if (l && typeof l === 'object' && typeof l.level === 'number') {
        logs.push(l);
        continue;
      }
    } catch {
      // Not a log line.
    }
    plain.push(line);
  }
  return { logs, plain };
}

/**
 * The one-line error a user meets: exit code 1, exactly one non-log line on stderr that
 * starts with `netrig:` and matches `pattern`, nothing on stderr that looks like a stack trace.
 */
export function assertOneLineError(r: { code: number | null; stderr: string }, pattern: RegExp, what: string): string {
  assert.equal(r.code, 1, `${what}: exit code 1 (stderr: ${r.stderr})`);
  const { logs, plain } = splitStderr(r.stderr);
  assert.equal(plain.length, 1, `${what}: one plain line on stderr, got ${JSON.stringify(plain)}`);
  assert.match(plain[0], /^netrig: /, `${what}: the line starts with 'netrig:'`);
  assert.match(plain[0], pattern, what);
  assert.doesNotMatch(r.stderr, /^\s+at |\n\s+at /, `${what}: no stack trace`);
  assert.ok(logs.every((l) => l.level < 50 && !('stack' in l) && !(typeof l.err === 'object')), `${what}: no error logged besides the line: ${JSON.stringify(logs)}`);
  return plain[0];
}

export interface CliChild {
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout so far, line by line. */
  readonly stdout: string[];
  /** stderr lines that are not log lines. */
  readonly stderrPlain: string[];
  /** Parsed log lines so far. */
  readonly logs: LogLine[];
  /** The last lines of both outputs, for failure messages. */
  tail(n?: number): string;
  /** Whether it has exited. */
  exited(): boolean;
  /** Wait (bounded) for a log line matching `pred`; rejects if the process exits first. */
  waitLog(what: string, pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /**
   * Send `signal` and wait up to `timeoutMs` for the exit (and its output); returns exit
   * code and signal (both null: still running).
   */
  stop(signal: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL it if it still runs, and wait for the exit and its output. Idempotent. */
  kill(): Promise<void>;
}

/**
 * Start `netrig <args>` with piped output; `prefix` is a command that execs it (such as
 * setpriv with its arguments and `--`), so the pid is still netrig's.
 */
export function spawnCli(args: string[], opts: CliOptions & { prefix?: string[] } = {}): CliChild {
  const [cmd, ...cmdArgs] = [...(opts.prefix ?? []), process.execPath, CLI, ...args];
  const child = spawn(cmd, cmdArgs, { env: cliEnv(opts.logLevel, opts.env), cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid!;
  const unregister = onExit(`netrig ${args[0]} ${pid}`, () => killSync(pid));
  child.once('exit', unregister);
  const stdout: string[] = [];
  const stderrPlain: string[] = [];
  const logs: LogLine[] = [];
  const raw: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    stdout.push(l);
    raw.push(`out: ${l}`);
  });
  createInterface({ input: child.stderr! }).on('line', (l) => {
    raw.push(`err: ${l}`);
    const s = splitStderr(l);
    logs.push(...s.logs);
    stderrPlain.push(...s.plain);
  });
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const tail = (n = 30) => raw.slice(-n).join('\n');
  // After the exit, its output is complete once the pipes have closed (bounded: a grandchild may hold them).
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  const outputDone = () => Promise.race([closed, sleep(5000)]);
  return {
    child, pid, stdout, stderrPlain, logs, tail, exited,
    async waitLog(what, pred, timeoutMs = 60_000) {
      let found: LogLine | undefined;
      await pollUntil(() => (found = logs.find(pred)) !== undefined || exited(), timeoutMs, 50);
      if (found) return found;
      if (exited()) await outputDone();
      throw new Error(`netrig ${args[0]}: ${exited() ? `exited (${child.exitCode ?? child.signalCode}) before ${what}` : `no ${what} within ${timeoutMs} ms`}:\n${tail()}`);
    },
    async stop(signal, timeoutMs = 30_000) {
      if (!exited()) child.kill(signal);
      if (await waitExit(child, timeoutMs)) await outputDone();
      return { code: child.exitCode, signal: child.signalCode };
    },
    async kill() {
      if (!exited()) child.kill('SIGKILL');
      if (await waitExit(child, 10_000)) await outputDone();
      unregister();
    },
  };
}
