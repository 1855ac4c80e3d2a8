/**
 * The memory benchmark's client, run inside a network namespace:
 * `node conn-client.js <addr> <port,port,...> <connections> <concurrency>`. Opens the
 * connections spread over the ports (at most <concurrency> connecting at once), sends one
 * small HTTP/1.1 request on each and reads its response, then keeps every connection open
 * and idle. Prints "progress <n>" now and then, "ready <n> <failed>" when done, and closes
 * everything when stdin ends.
 */
import { connect, type Socket } from 'node:net';

const [addr, portList, nArg, concArg] = process.argv.slice(2);
const ports = (portList ?? '').split(',').map(Number).filter(Boolean);
const total = Number(nArg);
const concurrency = Number(concArg ?? 1000);
if (!addr || !ports.length || !(total > 0)) {
  process.stderr.write('usage: conn-client.js <addr> <port,port,...> <connections> <concurrency>\n');
  process.exit(2);
}
const sockets: Socket[] = [];
let started = 0;
let done = 0;
let failed = 0;
let inflight = 0;

function one(i: number): void {
  inflight++;
  const s = connect({ host: addr, port: ports[i % ports.length], noDelay: true });
  let finished = false;
  const finish = (ok: boolean) => {
    if (finished) return;
    finished = true;
    inflight--;
    if (ok) done++;
    else failed++;
    if ((done + failed) % 10000 === 0) process.stdout.write(`progress ${done + failed}\n`);
    if (done + failed === total) process.stdout.write(`ready ${done} ${failed}\n`);
    else pump();
  };
  s.once('connect', () => s.write(`GET /c/${i} HTTP/1.1\r\nHost: bench\r\nUser-Agent: netrig-bench\r\n\r\n`));
  s.on('data', (d: Buffer) => {
    if (d.includes('\r\n\r\nok\n')) finish(true);
  });
  s.on('error', () => finish(false));
  sockets.push(s);
}

function pump(): void {
  while (inflight < concurrency && started < total) one(started++);
}
pump();
process.stdin.on('end', () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
});
process.stdin.resume();
