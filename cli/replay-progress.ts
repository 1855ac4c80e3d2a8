/**
 * `netrig replay`'s progress on stderr (stdout keeps the result line): on a terminal one line
 * redrawn in place every second; otherwise a plain line per interval (10 s unless
 * --progress-interval says), which a log keeps readable.
 */
import type { ReplayProgressListener } from '../processors/replay.js';
import type { ReplayProgress } from '../processors/replay-progress.js';

const count = (n: number): string => Math.round(n).toLocaleString('en-US');

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** One line of progress. */
export function progressLine(p: ReplayProgress): string {
  const rate = p.elapsedMs > 0 ? (p.messages * 1000) / p.elapsedMs : 0;
  const left = p.share >= 1 ? 'done' : p.etaMs === null ? 'time left unknown yet' : `about ${duration(p.etaMs)} left`;
  return `replay: ${(p.share * 100).toFixed(1)}% of the window, ${count(p.messages)} messages, ${count(p.records)} records, ` +
    `${count(p.rows)} rows, ${count(rate)} messages/s, ${duration(p.elapsedMs)} so far, ${left}`;
}

/** Progress written to `out`; `intervalSeconds` overrides the interval. */
export function progressPrinter(out: NodeJS.WriteStream, intervalSeconds?: number): ReplayProgressListener & { end(): void } {
  const tty = Boolean(out.isTTY);
  let drawn = false;
  return {
    intervalMs: (intervalSeconds ?? (tty ? 1 : 10)) * 1000,
    report(p) {
      if (tty) {
        out.write(`\r\x1b[K${progressLine(p)}`);
        drawn = true;
      } else {
        out.write(`${progressLine(p)}\n`);
      }
    },
    end() {
      if (drawn) out.write('\n');
    },
  };
}
