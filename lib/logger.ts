/**
 * One pino logger for the process: JSON lines on stderr, level from NETRIG_LOG_LEVEL.
 * Components take child loggers named for themselves so every line says where it came from.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

/** The process logger; stderr so stdout stays free for command output. */
export const rootLogger: Logger = pino(
  {
    level: process.env.NETRIG_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  pino.destination({ dest: 2, sync: false }),
);

/** A child logger for one component, e.g. `logger('edge.ringbuf')`. */
export function logger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger.child({ component, ...bindings });
}
