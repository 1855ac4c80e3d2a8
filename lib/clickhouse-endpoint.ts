/**
 * A ClickHouse-compatible HTTP endpoint in front of the embedded engine, so `netrig query`,
 * more processors, @clickhouse/client and Grafana's ClickHouse data source reach the store
 * that `netrig up` holds exactly as they would reach a server.
 *
 * The part of ClickHouse's HTTP interface implemented: GET/POST / with the query in the
 * `query` parameter or the body (the body is the rows of an INSERT when `query` is given),
 * `database`, `default_format`, `query_id`, `param_*` query parameters (also as
 * multipart/form-data), any other parameter as a setting, user and password (Basic auth,
 * X-ClickHouse-User/Key headers or user/password parameters), gzip request bodies and
 * responses, GET /ping and /replicas_status, errors as `Code: N. DB::Exception: ...` with
 * X-ClickHouse-Exception-Code.
 *
 * Locked down: two credentials, a reader (reads only) and a writer (processors: inserts and
 * netrig's migrations; lib/endpoint/statement.ts); every request runs in an engine session of
 * its own under limits (lib/endpoint/limits.ts), never in the session that ingests; Host and
 * Origin are checked (no web page, no rebound DNS name); bodies are capped before and after
 * decompression; results stream to the client as the engine produces them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { sameSecret } from './basic-auth.js';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { createGzip, gzipSync } from 'node:zlib';
import type { Connection } from '@clickhouse/client-common';
import type { Logger } from './logger.js';
import { ConfigError } from './errors.js';
import { closeNow, listen } from './http-listen.js';
import { identifier } from '../schemas/migrate.js';
import { AccessDeniedError, AuthenticationFailedError, EndpointRefusal, QuerySyntaxError, exceptionText } from './endpoint/errors.js';
import { loadChdb } from './chdb.js';
import { EngineSession, type ChdbModule } from './endpoint/engine-session.js';
import { endpointLimits, limitSettings, type EndpointLimits } from './endpoint/limits.js';
import { allowedHostNames, checkHostAndOrigin, credentials, discardBody, multipartFields, readBody, type Credentials } from './endpoint/request.js';
import { Slots } from './endpoint/slots.js';
import { classify, loadRules, type Role, type Statement, type StatementRules } from './endpoint/statement.js';

/** The writer's user name: processors attached to `netrig up` log in as it. */
export const WRITER_USER = 'netrig_writer';

export interface EndpointOptions {
  /** The embedded engine's connection: requests get sessions of their own on its data path. */
  connection: Connection<Readable>;
  /** Database used when a request names none. */
  database: string;
  /** The credential that reads. */
  reader: Credentials;
  /** The credential processors write with (inserts and netrig's migrations). */
  writer: Credentials;
  host: string;
  port: number;
  log: Logger;
  limits?: Partial<EndpointLimits>;
}

/** URL parameters that are not settings. */
const NOT_SETTINGS = new Set(['query', 'database', 'default_format', 'query_id', 'user', 'password', 'session_id', 'session_timeout', 'session_check', 'compress', 'decompress', 'role', 'quota_key', 'buffer_size', 'wait_end_of_query']);
/** Settings only the HTTP layer knows; the engine would reject them. */
const HTTP_ONLY = new Set(['enable_http_compression', 'send_progress_in_http_headers', 'http_headers_progress_interval_ms', 'http_response_buffer_size', 'http_zlib_compression_level', 'http_response_compression_method', 'http_native_compression_disable_checksumming_on_decompress', 'http_send_progress_interval_ms', 'add_http_cors_header', 'cancel_http_readonly_queries_on_client_close', 'max_query_size']);
/** Settings the endpoint decides, whatever a request asks. */
const ENFORCED = new Set(['readonly', 'allow_ddl', 'allow_introspection_functions']);

const CONTENT_TYPES: Record<string, string> = {
  JSON: 'application/json; charset=UTF-8',
  JSONCompact: 'application/json; charset=UTF-8',
  JSONEachRow: 'application/x-ndjson; charset=UTF-8',
  JSONCompactEachRow: 'application/x-ndjson; charset=UTF-8',
  JSONStringsEachRow: 'application/x-ndjson; charset=UTF-8',
  CSV: 'text/csv; charset=UTF-8; header=absent',
  CSVWithNames: 'text/csv; charset=UTF-8; header=present',
};

/** One request, parsed and authenticated. */
interface Request {
  role: Role;
  method: string;
  query: string;
  data: Buffer | null;
  database: string;
  format: string;
  queryId: string;
  queryParams: Record<string, string> | undefined;
  settings: Record<string, string>;
  gzip: boolean;
}

export class ClickHouseEndpoint {
  private server: Server | null = null;
  private readonly limits: EndpointLimits;
  private readonly reads: Slots;
  private readonly writes: Slots;
  private readonly running = new Set<Promise<unknown>>();
  private rules: StatementRules | null = null;
  private hosts = new Set<string>();
  private readonly path: string;
  private chdb: ChdbModule | null = null;
  /** Port actually listened on. */
  port = 0;

  constructor(private readonly o: EndpointOptions) {
    if (!o.reader.password || !o.writer.password) throw new ConfigError('password', 'the endpoint requires a password for its reader and its writer');
    if (o.reader.user === o.writer.user) throw new ConfigError('user', `the reader and the writer need different user names (both ${JSON.stringify(o.reader.user)})`);
    this.limits = endpointLimits(o.limits);
    this.reads = new Slots(this.limits.maxConcurrentReads);
    this.writes = new Slots(this.limits.maxConcurrentWrites);
    this.path = (o.connection as unknown as { chdb: { session: { path: string } } }).chdb.session.path;
  }

  async start(): Promise<void> {
    this.chdb = await loadChdb();
    const s = new EngineSession(this.chdb, this.path);
    try {
      this.rules = await loadRules(s);
    } finally {
      s.close();
    }
    const server = createServer((req, res) => {
      const p = this.handle(req, res).catch((err: unknown) => this.fail(req, res, err));
      this.running.add(p);
      void p.finally(() => this.running.delete(p));
    });
    this.port = await listen(server, this.o.host, this.o.port, 'ClickHouse HTTP endpoint');
    this.hosts = allowedHostNames(this.o.host);
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    await closeNow(s);
    await Promise.allSettled([...this.running]);
  }

  /** Answer with the error; a body left unread (over its cap) ends the connection. */
  private fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const e = exceptionText(err);
    if (!(err instanceof EndpointRefusal)) this.o.log.warn({ err: e.text.trim().slice(0, 300) }, 'endpoint request failed');
    if (res.headersSent) {
      // Mid-stream: ClickHouse's way, the exception at the end of the body.
      if (!res.writableEnded) res.end(`\n${e.text}`);
      return;
    }
    const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=UTF-8', 'X-ClickHouse-Exception-Code': String(e.code) };
    if (!req.complete) headers.Connection = 'close';
    res.writeHead(e.status, headers).end(e.text);
  }

  private roleOf(c: Credentials): Role | null {
    if (c.user === this.o.reader.user && sameSecret(c.password, this.o.reader.password)) return 'reader';
    if (c.user === this.o.writer.user && sameSecret(c.password, this.o.writer.password)) return 'writer';
    return null;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    checkHostAndOrigin(req, this.hosts, this.port);
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/ping' || url.pathname === '/replicas_status') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8' }).end('Ok.\n');
      return;
    }
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'POST') throw new AccessDeniedError(`HTTP method ${method} is not allowed (GET reads, POST reads and writes)`);
    const cred = credentials(req, url);
    const role = this.roleOf(cred);
    if (!role) {
      await discardBody(req, this.limits.maxQueryBytes);
      throw new AuthenticationFailedError(cred.user);
    }
    const r = await this.parse(req, url, role, method);
    await (role === 'reader' ? this.reads : this.writes).run(() => this.execute(r, res));
  }

  private async parse(req: IncomingMessage, url: URL, role: Role, method: string): Promise<Request> {
    const params = new Map(url.searchParams);
    const ctype = req.headers['content-type'] ?? '';
    const multipart = ctype.startsWith('multipart/form-data');
    const bodyIsData = method === 'POST' && params.has('query') && !multipart;
    const cap = bodyIsData && role === 'writer' ? this.limits.maxInsertBytes : this.limits.maxQueryBytes;
    const body = method === 'POST' ? await readBody(req, cap, bodyIsData ? 'the insert body' : 'the query') : Buffer.alloc(0);
    let query = params.get('query') ?? null;
    let data: Buffer | null = null;
    if (multipart) {
      for (const [k, v] of multipartFields(body, ctype)) params.set(k, v);
      query = params.get('query') ?? null;
    } else if (query === null) {
      query = body.toString('utf8');
    } else if (body.length) {
      data = body;
    }
    if (!query?.trim()) throw new QuerySyntaxError('Empty query');
    if (Buffer.byteLength(query) > this.limits.maxQueryBytes) throw new QuerySyntaxError(`Max query size exceeded (${this.limits.maxQueryBytes} bytes)`);
    const queryParams: Record<string, string> = {};
    const settings: Record<string, string> = {};
    for (const [k, v] of params) {
      if (k.startsWith('param_')) queryParams[k.slice(6)] = v;
      else if (!NOT_SETTINGS.has(k) && !HTTP_ONLY.has(k) && !ENFORCED.has(k)) settings[k] = v;
    }
    let database: string;
    try {
      database = identifier('database', params.get('database') || this.o.database);
    } catch {
      throw new QuerySyntaxError(`database ${JSON.stringify(params.get('database'))} is not a plain identifier`);
    }
    return {
      role, method, query, data, database, settings,
      format: params.get('default_format') || 'TabSeparated',
      queryId: params.get('query_id') || randomUUID(),
      queryParams: Object.keys(queryParams).length ? queryParams : undefined,
      gzip: params.get('enable_http_compression') === '1' && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? '')),
    };
  }

  /** Run one request in an engine session of its own, closed afterwards whatever happened. */
  private async execute(r: Request, res: ServerResponse): Promise<void> {
    const s = new EngineSession(this.chdb!, this.path);
    try {
      const st = await classify(s, r.query, r.queryParams, r.role, r.method, this.rules!);
      if (st.kind === 'nothing') return this.reply(res, r, r.format, Buffer.alloc(0));
      if (r.data && st.kind !== 'insert') throw new QuerySyntaxError('a request body with a query parameter is the rows of an INSERT; send the query alone');
      await s.use(r.database);
      await s.set(this.settingsFor(r, st));
      if (st.kind === 'read') await s.set({ readonly: '1' });
      // chdb binds query parameters process-wide: only its serialised (whole-result) path is
      // safe beside the processors' parameterised queries, so those results are not streamed.
      if (st.kind === 'read' && st.stream && !r.queryParams) return await this.stream(s, st.sql, st.format ?? r.format, r, res);
      if (st.kind === 'read') return this.reply(res, r, st.format ?? r.format, await s.bytes(st.sql, r.format, r.queryParams));
      const started = process.hrtime.bigint();
      let written = { rows: 0, bytes: 0 };
      if (st.kind === 'insert') written = await s.insert(st.table.includes('.') ? st.table : `${r.database}.${st.table}`, st.columns, r.data ?? Buffer.alloc(0), st.format);
      else await s.text(st.sql);
      const summary = {
        read_rows: '0', read_bytes: '0', written_rows: String(written.rows), written_bytes: String(written.bytes),
        total_rows_to_read: '0', result_rows: '0', result_bytes: '0', elapsed_ns: String(process.hrtime.bigint() - started),
      };
      this.reply(res, r, r.format, Buffer.alloc(0), summary);
    } finally {
      s.close();
    }
  }

  /** The request's own settings, with the endpoint's limits over any higher ones it asked for. */
  private settingsFor(r: Request, st: Statement): Record<string, string> {
    const out = { ...r.settings };
    for (const [name, cap] of Object.entries(limitSettings(this.limits, st.kind === 'read'))) {
      const asked = Number(out[name]);
      out[name] = String(Number.isFinite(asked) && asked > 0 && asked < cap ? asked : cap);
    }
    out.allow_introspection_functions = '0';
    return out;
  }

  private headers(r: Request, format: string): Record<string, string> {
    const h: Record<string, string> = {
      'Content-Type': CONTENT_TYPES[format] ?? 'text/plain; charset=UTF-8',
      'X-ClickHouse-Format': format,
      'X-ClickHouse-Query-Id': r.queryId,
      'X-ClickHouse-Timezone': 'UTC',
      'X-ClickHouse-Server-Display-Name': 'netrig',
    };
    if (r.gzip) h['Content-Encoding'] = 'gzip';
    return h;
  }

  private reply(res: ServerResponse, r: Request, format: string, bytes: Buffer, summary?: object): void {
    const h = this.headers(r, format);
    if (summary) h['X-ClickHouse-Summary'] = JSON.stringify(summary);
    res.writeHead(200, h).end(r.gzip ? gzipSync(bytes) : bytes);
  }

  /**
   * A SELECT's result as the engine produces it: the first chunk before the status (so an
   * error that comes at once gets its status), then each chunk when the client has taken the
   * last one; a client gone cancels the query.
   */
  private async stream(s: EngineSession, sql: string, format: string, r: Request, res: ServerResponse): Promise<void> {
    const it = s.stream(sql, format)[Symbol.asyncIterator]();
    try {
      let next = await it.next();
      res.writeHead(200, this.headers(r, format));
      let out: Writable = res;
      if (r.gzip) {
        const gz = createGzip();
        gz.pipe(res);
        out = gz;
      }
      let gone = false;
      const closed = new Promise<void>((resolve) => res.once('close', () => { gone = true; resolve(); }));
      try {
        for (; !next.done && !gone; next = await it.next()) {
          if (!out.write(next.value.raw())) await Promise.race([once(out, 'drain'), closed]);
        }
      } catch (err) {
        out.write(`\n${exceptionText(err).text}`);
      }
      if (!gone) await Promise.race([new Promise<void>((resolve) => out.end(resolve)), closed]);
    } finally {
      await it.return?.();
    }
  }
}
