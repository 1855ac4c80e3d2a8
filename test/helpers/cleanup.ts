/**
 * A last-resort safety net for test resources: synchronous undo actions that run when the
 * test process exits (normally, on an uncaught error, or on SIGINT/SIGTERM/SIGHUP), for
 * whatever the tests' own `after` hooks did not get to. Each helper registers its undo
 * action when it creates something and unregisters it once it has cleaned up itself.
 */
import { execFileSync } from 'node:child_process';

type Undo = () => void;

const actions = new Map<number, { what: string; undo: Undo }>();
let nextId = 1;
let installed = false;

function runAll(): void {
  // Newest first: undo in reverse order of creation.
  const ids = [...actions.keys()].sort((a, b) => b - a);
  for (const id of ids) {
    const a = actions.get(id);
    actions.delete(id);
    try {
      a?.undo();
    } catch {
      // Best effort: one failed undo must not stop the others.
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', runAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      runAll();
      // Others listening (the test harness) decide how to exit; otherwise re-raise with
      // the default action so the exit status says what happened.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

/**
 * Register `undo` (synchronous, idempotent, never throwing on "already gone") to run if the
 * process exits before the returned function is called. The returned function unregisters
 * it without running it.
 */
export function onExit(what: string, undo: Undo): () => void {
  install();
  const id = nextId++;
  actions.set(id, { what, undo });
  return () => {
    actions.delete(id);
  };
}

/** Descriptions of the undo actions still pending, for diagnostics. */
export function pendingCleanups(): string[] {
  return [...actions.values()].map((a) => a.what);
}

/** SIGKILL a process (or, with `group`, its process group) if it still exists. */
export function killSync(pid: number | undefined, group = false): void {
  if (!pid) return;
  try {
    process.kill(group ? -pid : pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** Run a command synchronously, ignoring failure (for undo actions). */
export function runQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // Best effort.
  }
}

/** A unique token for names: this process's pid and a counter. */
let counter = 0;
export function uniqueToken(prefix = 'nr'): string {
  counter++;
  return `${prefix}${process.pid}x${counter}`;
}
