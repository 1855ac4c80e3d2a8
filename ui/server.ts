/**
 * The page: a small web server on 127.0.0.1 that serves the bundled front end (dist/ui/,
 * built by scripts/build-ui.mjs) and its JSON API (ui/api.ts), behind HTTP Basic auth with
 * the credential of the ClickHouse endpoint's reader. It runs the reports' SQL through a
 * ClickHouse client it is given (`netrig up`: its endpoint as the reader, so read-only).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { ClickHouseClient } from '@clickhouse/client';
import { hasCredentials, type Credentials } from '../lib/basic-auth.js';
import { allowedHostNames, checkHostAndOrigin } from '../lib/endpoint/request.js';
import { AccessDeniedError } from '../lib/endpoint/errors.js';
import { ConfigError, NetrigError } from '../lib/errors.js';
import { closeNow, listen } from '../lib/http-listen.js';
import type { Logger } from '../lib/logger.js';
import { MAX_ROWS, viewList, viewRequest } from './api.js';

/** The bundle, beside this file in dist/ui/. */
const STATIC_DIR = new URL('./', import.meta.url);

/** The files of the bundle, and nothing else of the directory, by URL path. */
const STATIC_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

/** A view's SQL gets this long before the page answers 504. */
const QUERY_TIMEOUT_MS = 60_000;

/** The bundle is missing: the front end was not built (`npm run build`). */
export class PageBundleError extends NetrigError {
  constructor(dir: string, options?: ErrorOptions) {
    super('ERR_PAGE_BUNDLE', `the page's bundle is missing from ${dir}: build it with \`npm run build\` (scripts/build-ui.mjs)`, options);
  }
}

export interface PageOptions {
  /** Where the rows are read: a read-only credential where there is one. */
  client: ClickHouseClient;
  database: string;
  /** The credential a browser must send (the endpoint reader's). */
  credentials: Credentials;
  host: string;
  port: number;
  log: Logger;
}

const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
};

export class PageServer {
  private server: Server | null = null;
  private readonly files = new Map<string, Buffer>();
  private hosts = new Set<string>();
  /** Port actually listened on. */
  port = 0;

  constructor(private readonly o: PageOptions) {
    if (!o.credentials.password) throw new ConfigError('password', 'the page requires a password');
  }

  /** Where a browser opens the page. */
  get url(): string {
    return `http://${this.o.host.includes(':') ? `[${this.o.host}]` : this.o.host}:${this.port}/`;
  }

  async start(): Promise<void> {
    for (const { file } of Object.values(STATIC_FILES)) {
      try {
        this.files.set(file, readFileSync(new URL(file, STATIC_DIR)));
      } catch (err) {
        throw new PageBundleError(STATIC_DIR.pathname, { cause: err });
      }
    }
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.port = await listen(server, this.o.host, this.o.port, 'the page, --ui-port');
    this.hosts = allowedHostNames(this.o.host);
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await closeNow(s);
  }

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': 'application/json; charset=utf-8', ...headers }).end(JSON.stringify(body));
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof ConfigError) return this.json(res, 400, { error: err.message });
    if (err instanceof AccessDeniedError) return this.json(res, 403, { error: err.message });
    if ((err as Error).name === 'AbortError') return this.json(res, 504, { error: `the query took longer than ${QUERY_TIMEOUT_MS / 1000} s` });
    this.o.log.warn({ err: (err as Error).message }, 'page request failed');
    this.json(res, 502, { error: `ClickHouse: ${(err as Error).message}` });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A DNS name rebound to loopback, or another site's page, is refused before anything.
    checkHostAndOrigin(req, this.hosts, this.port);
    if (!hasCredentials(req, this.o.credentials)) {
      return this.json(res, 401, { error: 'this page needs the user and password of the ClickHouse endpoint\'s reader' }, { 'WWW-Authenticate': 'Basic realm="netrig", charset="UTF-8"' });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.json(res, 405, { error: `${req.method} is not allowed: the page only reads` }, { Allow: 'GET, HEAD' });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const asset = STATIC_FILES[url.pathname];
    if (asset) {
      res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': asset.type }).end(this.files.get(asset.file));
      return;
    }
    if (url.pathname === '/api/views') return this.json(res, 200, { views: viewList() });
    const m = /^\/api\/([a-z0-9-]{1,40})$/.exec(url.pathname);
    if (!m) return this.json(res, 404, { error: `no such page or view: ${url.pathname.slice(0, 100)}` });
    const v = viewRequest(m[1], url.searchParams, this.o.database);
    const rs = await this.o.client.query({
      query: v.query.query, query_params: v.query.params, format: 'JSONEachRow', abort_signal: AbortSignal.timeout(QUERY_TIMEOUT_MS),
    });
    const rows = await rs.json<Record<string, unknown>>();
    this.json(res, 200, {
      view: v.view, from: new Date(v.window.fromMs).toISOString(), to: new Date(v.window.toMs).toISOString(),
      rows: rows.slice(0, MAX_ROWS), truncated: rows.length > MAX_ROWS,
    });
  }
}
