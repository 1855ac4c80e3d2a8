/**
 * A real process that takes a data dir's lock on cue (test/helpers/data-dir-lock-main.ts),
 * for tests that race holders or need a live holder other than themselves.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { killSync, onExit } from './cleanup.js';
import { waitExit } from './nats-server.js';
import { REPO_ROOT } from './paths.js';

const LOCKER = join(REPO_ROOT, 'dist/test/helpers/data-dir-lock-main.js');

/** A lock-taking process: `answer` is its first line after the cue; `finish` lets it release and exit. */
export class DataDirLocker {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly answer: Promise<string>;
  private readonly unregister: () => void;

  constructor(dir: string) {
    this.child = spawn(process.execPath, [LOCKER, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    const pid = this.child.pid;
    this.unregister = onExit(`data dir locker ${pid}`, () => killSync(pid));
    const lines = createInterface({ input: this.child.stdout! });
    const next = () => new Promise<string>((resolve, reject) => {
      const onExit = () => reject(new Error(`locker ${pid} exited early`));
      this.child.once('exit', onExit);
      lines.once('line', (l) => {
        this.child.off('exit', onExit);
        resolve(l);
      });
    });
    this.ready = next().then((l) => assert.equal(l, 'ready'));
    this.answer = this.ready.then(next);
  }

  cue(): void {
    this.child.stdin!.write('go\n');
  }

  async finish(): Promise<number | null> {
    this.child.stdin!.end();
    if (!(await waitExit(this.child, 10_000))) this.child.kill('SIGKILL');
    await waitExit(this.child, 10_000);
    this.unregister();
    return this.child.exitCode;
  }

  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await waitExit(this.child, 10_000);
    this.unregister();
  }
}

