/**
 * The memory benchmark's server, run inside a network namespace:
 * `node conn-server.js <addr> <port,port,...>`. Accepts any number of connections, answers
 * each HTTP/1.1 request with a small 200, and keeps every connection open. Prints "listening"
 * once every port is bound, and "open <n>" when asked on stdin ("count").
 */
import { createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const [addr, portList] = process.argv.slice(2);
const ports = (portList ?? '').split(',').map(Number).filter(Boolean);
if (!addr || !ports.length) {
  process.stderr.write('usage: conn-server.js <addr> <port,port,...>\n');
  process.exit(2);
}
const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n', 'latin1');
let open = 0;
let bound = 0;

function serve(s: Socket): void {
  open++;
  s.setNoDelay(true);
  let buf = '';
  s.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    while (buf.includes('\r\n\r\n')) {
      buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
      s.write(RESPONSE);
    }
  });
  s.on('error', () => undefined);
  s.on('close', () => open--);
}

for (const port of ports) {
  const srv = createServer({ noDelay: true }, serve);
  srv.maxConnections = 1 << 22;
  srv.listen({ host: addr, port, backlog: 65535 }, () => {
    if (++bound === ports.length) process.stdout.write('listening\n');
  });
}
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() === 'count') process.stdout.write(`open ${open}\n`);
});
