/**
 * The freshness benchmark's client, run as its own process inside a network namespace:
 * `node fresh-client.js <base-url> <rate> <seconds> <run-id>`. Sends GET <base>/fresh/<run>/<i>
 * at a steady rate over a few keep-alive connections and notes the wall-clock time just
 * before each request is written. At the end prints one JSON line:
 * {"sent":[[i, sentMs, status, doneMs], ...]}.
 */
import { Agent, request } from 'node:http';

const [base, rateArg, secondsArg, runId] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
if (!base || !(rate > 0) || !(seconds > 0) || !runId) {
  process.stderr.write('usage: fresh-client.js <base-url> <rate> <seconds> <run-id>\n');
  process.exit(2);
}
const agent = new Agent({ keepAlive: true, maxSockets: 8 });
const total = Math.round(rate * seconds);
const sent: [number, number, number, number][] = [];
const now = () => performance.timeOrigin + performance.now();
let done = 0;
const start = now() + 200;

function send(i: number): void {
  const req = request(`${base}/fresh/${runId}/${i}`, { agent, method: 'GET' }, (res) => {
    res.resume();
    res.on('end', () => {
      sent[i][2] = res.statusCode ?? 0;
      sent[i][3] = now();
      if (++done === total) finish();
    });
  });
  req.on('error', () => {
    sent[i][2] = -1;
    if (++done === total) finish();
  });
  sent[i] = [i, now(), 0, 0];
  req.end();
}

function finish(): void {
  agent.destroy();
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
}

let next = 0;
function tick(): void {
  const due = Math.min(total, Math.floor(((now() - start) / 1000) * rate) + 1);
  while (next < due) send(next++);
  if (next < total) setTimeout(tick, Math.max(0, start + (next / rate) * 1000 - now()));
}
setTimeout(tick, 200);
// Bounded: give up 30 s after the last request was due.
setTimeout(() => {
  finish();
  process.exit(1);
}, (seconds + 30) * 1000).unref();
