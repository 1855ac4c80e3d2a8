/**
 * A ClickHouse-compatible HTTP endpoint in front of the embedded engine, so `netrig query`,
 * more processors, @clickhouse/client and Grafana's ClickHouse data source reach the store
 * that `netrig up` holds exactly as they would reach a server.
 *
 * The part of ClickHouse's HTTP interface implemented: GET/POST / with the query in the
 * `query` parameter or the body (the body is the data of an INSERT when `query` is given),
 * `database`, `default_format`, `query_id`, `param_*` query parameters (also as
 * multipart/form-data), any other parameter as a setting, user and password (Basic auth,
 * X-ClickHouse-User/Key headers or user/password parameters), gzip request bodies and
 * responses, GET /ping and /replicas_status, errors as `Code: N. DB::Exception: ...` with
 * X-ClickHouse-Exception-Code.
 *
 * The engine applies settings session-wide, so requests run one at a time and the settings
 * a request changes are put back afterwards.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { createGunzip, gzipSync } from 'node:zlib';
import type { Connection } from '@clickhouse/client-common';
import type { Logger } from './logger.js';
import { PortInUseError } from './errors.js';

export interface EndpointOptions {
  /** The embedded engine's connection. */
  connection: Connection<Readable>;
  /** Database used when a request names none. */
  database: string;
  /** The one user and its password (empty: no password). */
  user: string;
  password: string;
  host: string;
  port: number;
  log: Logger;
}

/** URL parameters that are not settings. */
const NOT_SETTINGS = new Set(['query', 'database', 'default_format', 'query_id', 'user', 'password', 'session_id', 'session_timeout', 'session_check', 'compress', 'decompress', 'role', 'quota_key', 'buffer_size', 'wait_end_of_query']);
/** Settings only the HTTP layer knows; the engine would reject them. */
const HTTP_ONLY = new Set(['enable_http_compression', 'send_progress_in_http_headers', 'http_headers_progress_interval_ms', 'http_response_buffer_size', 'http_zlib_compression_level', 'http_response_compression_method', 'http_native_compression_disable_checksumming_on_decompress', 'http_send_progress_interval_ms', 'add_http_cors_header', 'cancel_http_readonly_queries_on_client_close', 'max_query_size']);

const CONTENT_TYPES: Record<string, string> = {
  JSON: 'application/json; charset=UTF-8',
  JSONCompact: 'application/json; charset=UTF-8',
  JSONEachRow: 'application/x-ndjson; charset=UTF-8',
  JSONCompactEachRow: 'application/x-ndjson; charset=UTF-8',
  JSONStringsEachRow: 'application/x-ndjson; charset=UTF-8',
  CSV: 'text/csv; charset=UTF-8; header=absent',
  CSVWithNames: 'text/csv; charset=UTF-8; header=present',
};

/** ClickHouse error codes for the failures the endpoint itself reports. */
const AUTH_FAILED = 516;
const SYNTAX_ERROR = 62;

interface Credentials {
  user: string;
  password: string;
}

function credentials(req: IncomingMessage, url: URL): Credentials {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Basic ')) {
    const text = Buffer.from(auth.slice(6), 'base64').toString();
    const i = text.indexOf(':');
    return { user: decodeURIComponent(i < 0 ? text : text.slice(0, i)), password: i < 0 ? '' : decodeURIComponent(text.slice(i + 1)) };
  }
  const hUser = req.headers['x-clickhouse-user'];
  if (typeof hUser === 'string') return { user: hUser, password: String(req.headers['x-clickhouse-key'] ?? '') };
  return { user: url.searchParams.get('user') ?? 'default', password: url.searchParams.get('password') ?? '' };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const src: NodeJS.ReadableStream = req.headers['content-encoding'] === 'gzip' ? req.pipe(createGunzip()) : req;
  const parts: Buffer[] = [];
  for await (const c of src) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Fields of a multipart/form-data body (clickhouse-js sends long parameters this way). */
function multipartFields(body: Buffer, contentType: string): Map<string, string> {
  const fields = new Map<string, string>();
  const m = /boundary=(?:"([^"]+)"|([^;]+))/.exec(contentType);
  if (!m) return fields;
  const boundary = `--${m[1] ?? m[2]}`;
  for (const part of body.toString('utf8').split(boundary)) {
    const sep = part.indexOf('\r\n\r\n');
    if (sep < 0) continue;
    const name = /name="([^"]+)"/.exec(part.slice(0, sep))?.[1];
    if (name) fields.set(name, part.slice(sep + 4).replace(/\r\n$/, ''));
  }
  return fields;
}

/** A settings value as SQL. */
function settingLiteral(v: string): string {
  return /^-?\d+(\.\d+)?$/.test(v) ? v : `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

interface ErrorLike {
  code?: string;
  type?: string;
  message?: string;
}

/** ClickHouse's own error text: what clients parse into code and type. */
function errorText(err: ErrorLike): { code: number; text: string } {
  const msg = err.message ?? String(err);
  const m = /Code: (\d+)\. (DB::Exception: [\s\S]*)/.exec(msg);
  if (m) return { code: Number(m[1]), text: `Code: ${m[1]}. ${m[2].trim()}\n` };
  const code = Number(err.code) || 1001;
  return { code, text: `Code: ${code}. DB::Exception: ${msg}${err.type ? ` (${err.type})` : ''}\n` };
}

export class ClickHouseEndpoint {
  private server: Server | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** Port actually listened on. */
  port = 0;

  constructor(private readonly o: EndpointOptions) {}

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        this.o.log.warn({ err: err.message }, 'endpoint request failed');
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' ? new PortInUseError(this.o.port, 'ClickHouse HTTP endpoint', { cause: err }) : err));
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    const addr = server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : this.o.port;
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
    await this.queue.catch(() => undefined);
  }

  private fail(res: ServerResponse, status: number, code: number, text: string): void {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=UTF-8', 'X-ClickHouse-Exception-Code': String(code) });
    res.end(text);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/ping' || url.pathname === '/replicas_status') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8' }).end('Ok.\n');
      return;
    }
    const cred = credentials(req, url);
    if (cred.user !== this.o.user || !sameSecret(cred.password, this.o.password)) {
      await readBody(req).catch(() => undefined);
      this.fail(res, 403, AUTH_FAILED, `Code: ${AUTH_FAILED}. DB::Exception: ${cred.user}: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)\n`);
      return;
    }
    const body = req.method === 'POST' ? await readBody(req) : Buffer.alloc(0);
    const params = new Map(url.searchParams);
    let data: Buffer | null = null;
    let query: string | null | undefined = params.get('query');
    const ctype = req.headers['content-type'] ?? '';
    if (ctype.startsWith('multipart/form-data')) {
      for (const [k, v] of multipartFields(body, ctype)) params.set(k, v);
      query = params.get('query');
    } else if (query === null || query === undefined) {
      query = body.toString('utf8');
    } else if (body.length) {
      data = body;
    }
    if (!query?.trim()) {
      this.fail(res, 400, SYNTAX_ERROR, `Code: ${SYNTAX_ERROR}. DB::Exception: Empty query. (SYNTAX_ERROR)\n`);
      return;
    }
    const queryParams: Record<string, string> = {};
    const settings: Record<string, string> = {};
    for (const [k, v] of params) {
      if (k.startsWith('param_')) queryParams[k.slice(6)] = v;
      else if (!NOT_SETTINGS.has(k) && !HTTP_ONLY.has(k) && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) settings[k] = v;
    }
    const database = params.get('database') || this.o.database;
    const format = params.get('default_format') || 'TabSeparated';
    const queryId = params.get('query_id') || randomUUID();
    const gzip = params.get('enable_http_compression') === '1' && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    const run = () => this.execute(query!, data, database, format, queryParams, settings, queryId);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    try {
      const out = await result;
      const headers: Record<string, string> = {
        'Content-Type': CONTENT_TYPES[format] ?? 'text/plain; charset=UTF-8',
        'X-ClickHouse-Format': format,
        'X-ClickHouse-Query-Id': queryId,
        'X-ClickHouse-Timezone': 'UTC',
        'X-ClickHouse-Server-Display-Name': 'netrig',
        'X-ClickHouse-Summary': JSON.stringify(out.summary),
      };
      if (gzip) headers['Content-Encoding'] = 'gzip';
      res.writeHead(200, headers).end(gzip ? gzipSync(out.bytes) : out.bytes);
    } catch (err) {
      const e = errorText(err as ErrorLike);
      this.fail(res, e.code === AUTH_FAILED ? 403 : e.code === SYNTAX_ERROR ? 400 : 500, e.code, e.text);
    }
  }

  /** Run one request against the engine; settings it changes are restored afterwards. */
  private async execute(query: string, data: Buffer | null, database: string, format: string, queryParams: Record<string, string>, settings: Record<string, string>, queryId: string) {
    const conn = this.o.connection;
    const names = Object.keys(settings);
    let restore: Record<string, string> = {};
    if (names.length) {
      const rs = await conn.query({ query: `SELECT ${names.map((n) => `toString(getSetting('${n}')) AS ${n}`).join(', ')} FORMAT JSONEachRow`, query_id: randomUUID() });
      restore = JSON.parse((await streamText(rs.stream)).trim() || '{}') as Record<string, string>;
    }
    const prefix = [`USE ${database}`, ...names.map((n) => `SET ${n} = ${settingLiteral(settings[n])}`)];
    // An insert without a token must not inherit another insert's token (settings are session-wide).
    if (!('insert_deduplication_token' in settings)) prefix.push(`SET insert_deduplication_token = ''`);
    const started = process.hrtime.bigint();
    try {
      const r = await conn.exec({
        query: `${prefix.join('; ')}; ${query}`,
        query_id: queryId,
        query_params: Object.keys(queryParams).length ? queryParams : undefined,
        clickhouse_settings: { default_format: format as 'JSON' },
        ...(data ? { values: Readable.from([data]) } : {}),
      });
      const bytes = Buffer.from(await streamBytes(r.stream));
      const elapsed = String(process.hrtime.bigint() - started);
      const summary = { read_rows: '0', read_bytes: '0', written_rows: '0', written_bytes: '0', total_rows_to_read: '0', result_rows: '0', result_bytes: String(bytes.length), elapsed_ns: elapsed, ...(r as { summary?: object }).summary };
      return { bytes, summary };
    } finally {
      const back = Object.entries(restore).map(([n, v]) => `SET ${n} = ${settingLiteral(v)}`);
      if (back.length) await conn.command({ query: back.join('; '), query_id: randomUUID() }).catch(() => undefined);
    }
  }
}

async function streamBytes(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array));
  return Buffer.concat(parts);
}

async function streamText(s: Readable): Promise<string> {
  return (await streamBytes(s)).toString('utf8');
}
