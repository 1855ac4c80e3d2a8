/**
 * A real nginx inside a test host's namespace, from a generated config in a temporary
 * directory (pid, logs and temp paths included), serving a generated web root:
 *
 *   /small.txt, /hello.html   small static files (sendfile)
 *   /big.bin                  1 MiB of deterministic bytes (sendfile: no user buffer)
 *   /copy/<file>              the same files with sendfile off (read + write: user buffers)
 *   /status/404               missing file: nginx's in-memory 404 page
 *   /status/500               `return 500` (nginx then closes the connection: no keepalive after a 500)
 *   /status/503               `return 503` (keepalive stays)
 *   /echo                     POST (or any method): the body is read and `ok\n` returned
 *   /chunked/<file>           the file through sub_filter, which drops Content-Length: chunked
 *   /text                     `return 200` with a fixed text
 *
 * Keepalive is on (1000 requests per connection, 65 s idle by default), one worker.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killSync, onExit } from './cleanup.js';
import type { Host } from './netns.js';
import { waitExit } from './nats-server.js';

export interface NginxOptions {
  /** Port on the host's addresses (default 8080; the namespace is the test's own). */
  port?: number;
  /** Also listen on the host's IPv6 address (default true). */
  ipv6?: boolean;
  /** Seconds an idle keep-alive connection stays open (default 65). */
  keepaliveTimeoutS?: number;
}

export interface NginxHandle {
  readonly port: number;
  /** The web root directory. */
  readonly root: string;
  /** Exact bytes of the files served, by name (small.txt, hello.html, big.bin). */
  readonly files: Readonly<Record<string, Buffer>>;
  /** Pid of the master process. */
  readonly pid: number;
  /** The error log so far. */
  errorLog(): string;
  /** Stop nginx (SIGTERM, then SIGKILL to its process group) and remove its directory. Idempotent. */
  stop(): Promise<void>;
}

export const BIG_FILE_BYTES = 1024 * 1024;
const READY_TIMEOUT_MS = 15_000;

/** 1 MiB of deterministic, non-repeating-looking bytes (a simple LCG). */
function bigFile(): Buffer {
  const b = Buffer.alloc(BIG_FILE_BYTES);
  let x = 0x12345678;
  for (let i = 0; i < b.length; i += 4) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

function config(dir: string, root: string, host: Host, port: number, ipv6: boolean, keepaliveS: number): string {
  return `
daemon off;
master_process on;
worker_processes 1;
user root;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  types { text/plain txt; text/html html; application/octet-stream bin; }
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush off;
  keepalive_timeout ${keepaliveS}s;
  keepalive_requests 1000;
  client_max_body_size 64m;
  server {
    listen ${host.addr}:${port};
    ${ipv6 ? `listen [${host.addr6}]:${port};` : ''}
    server_name _;
    root ${root};
    location = /status/500 { return 500; }
    location = /status/503 { return 503; }
    location = /status/404 { try_files /does-not-exist =404; }
    location = /echo { return 200 "ok\\n"; }
    location = /text { return 200 "netrig test text\\n"; }
    location /copy/ { alias ${root}/; sendfile off; }
    location /chunked/ {
      alias ${root}/;
      sendfile off;
      sub_filter_types *;
      sub_filter 'netrig' 'NETRIG';
      sub_filter_once off;
    }
  }
}
`;
}

/** Start nginx in `host`'s namespace and wait until it answers over HTTP. */
export async function startNginx(host: Host, opts: NginxOptions = {}): Promise<NginxHandle> {
  const port = opts.port ?? 8080;
  const ipv6 = opts.ipv6 ?? true;
  const dir = mkdtempSync(join(tmpdir(), `netrig-nginx-${process.pid}-`));
  const root = join(dir, 'www');
  mkdirSync(root);
  const files: Record<string, Buffer> = {
    'small.txt': Buffer.from('netrig small file\n'.repeat(8)),
    'hello.html': Buffer.from('<!doctype html>\n<html><body><h1>hello from netrig</h1></body></html>\n'),
    'big.bin': bigFile(),
  };
  for (const [name, data] of Object.entries(files)) writeFileSync(join(root, name), data);
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, config(dir, root, host, port, ipv6, opts.keepaliveTimeoutS ?? 65));

  // Own process group, so the workers can be killed with the master as a last resort.
  const child = host.spawn('nginx', ['-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  const pid = child.pid!;
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const unregister = onExit(`nginx ${pid}`, () => {
    killSync(pid, true);
    rmSync(dir, { recursive: true, force: true });
  });
  let stopped = false;
  const readLog = () => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      if (!(await waitExit(child, 10_000))) {
        killSync(pid, true);
        await waitExit(child, 10_000);
      }
    }
    // Workers normally exit with the master; make sure nothing of the group remains.
    killSync(pid, true);
    rmSync(dir, { recursive: true, force: true });
    unregister();
  };

  // Ready when a request over the host's address answers.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = readLog();
      await stop();
      throw new Error(`nginx exited (${child.exitCode ?? child.signalCode}) before it answered: ${stderr}\n${log}`);
    }
    const r = await host.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${host.addr}:${port}/small.txt`]);
    if (r.stdout === '200') break;
    if (Date.now() > deadline) {
      const log = readLog();
      await stop();
      throw new Error(`nginx did not answer within ${READY_TIMEOUT_MS} ms: ${stderr}\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, root, files, pid, errorLog: readLog, stop };
}
