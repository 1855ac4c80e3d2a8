/**
 * `netrig up` with options the command line does not expose (the edge's linger), for the
 * freshness benchmark's lowest-latency baseline: `node up-main.js '<json UpInput>'`. Same
 * up() as `netrig up`; stops on SIGINT/SIGTERM like the CLI.
 */
import { up, type UpInput } from '../cli/up.js';

const input = JSON.parse(process.argv[2] ?? '{}') as UpInput & { flushIntervalMs?: number };
const running = await up(input);
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  running.stop().then(() => process.exit(0), (err: Error) => {
    process.stderr.write(`up-main: ${err.message}\n`);
    process.exit(1);
  });
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
