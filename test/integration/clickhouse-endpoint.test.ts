/**
 * The SQL endpoint of `netrig up` locked down (lib/clickhouse-endpoint.ts), against the real
 * embedded engine, through @clickhouse/client and raw node:http:
 *
 * - no or wrong credentials: 516, nothing runs;
 * - the reader reads, and nothing else: file(), url(), remote(), the file function, INTO
 *   OUTFILE, INSERT INTO FUNCTION, DROP, SET, USE, a second statement are refused and did
 *   nothing (a secret file's content never comes back, no file is written, tables stay);
 * - a reader's `readonly` (parameter or SET) never reaches the ingesting session;
 * - the writer inserts and applies migrations, but cannot DROP, ALTER, read files or create
 *   other tables; GET never writes;
 * - a foreign Host (DNS rebinding) or Origin (a web page) is refused;
 * - bodies over the cap get 413, as declared and once decompressed (a gzip bomb), with the
 *   memory of this process bounded;
 * - a result too large to buffer arrives as it is produced, plain and gzip;
 * - the password files are 0600 and `netrig query` finds its password there.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGunzip, createGzip, gzipSync } from 'node:zlib';
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import type { ClickHouse } from '../../lib/clickhouse.js';
import { ClickHouseEndpoint, WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import { logger } from '../../lib/logger.js';
import { migrate, migrationFiles } from '../../schemas/migrate.js';
import { endpointCredentials, writeEndpoint, writerPasswordFile } from '../../cli/endpoint-file.js';
import { runCli } from '../helpers/cli.js';
import { freshClickHouse, removeClickHouseData, rows } from '../helpers/processor-run.js';

const MiB = 1024 * 1024;
/** The writer's body cap here: small, so the gzip bomb's test inflates little. */
const INSERT_CAP = 16 * MiB;

let ch: ClickHouse;
let endpoint: ClickHouseEndpoint;
let creds: ReturnType<typeof endpointCredentials>;
let reader: ClickHouseClient;
let writer: ClickHouseClient;
let base: string;
let scratch: string;
let removeEndpointFile: () => void;
/** A file whose content must never come back through the endpoint. */
let secretPath: string;
const SECRET = `secret-${randomBytes(12).toString('hex')}`;

before(async () => {
  ch = await freshClickHouse('endpoint');
  await migrate(ch.client, { database: ch.database, ttlDays: 30 });
  await ch.client.command({ query: `CREATE TABLE ${ch.database}.kept (n UInt32, s String) ENGINE = MergeTree ORDER BY n` });
  await ch.client.command({ query: `INSERT INTO ${ch.database}.kept VALUES (1, 'one')` });
  creds = endpointCredentials(ch.where, 'default');
  endpoint = new ClickHouseEndpoint({
    connection: ch.connection!, database: ch.database, ...creds, host: '127.0.0.1', port: 0, log: logger('test'),
    limits: { maxInsertBytes: INSERT_CAP },
  });
  await endpoint.start();
  base = `http://127.0.0.1:${endpoint.port}`;
  removeEndpointFile = writeEndpoint(ch.where, { url: base, user: 'default', database: ch.database, pid: process.pid });
  const client = (c: { user: string; password: string }) => createClient({
    url: base, username: c.user, password: c.password, database: ch.database, log: { level: ClickHouseLogLevel.OFF },
  });
  reader = client(creds.reader);
  writer = client(creds.writer);
  scratch = mkdtempSync(join(tmpdir(), `netrig-endpoint-${process.pid}-`));
  secretPath = join(scratch, 'secret.txt');
  writeFileSync(secretPath, `${SECRET}\n`);
});

after(async () => {
  await reader?.close();
  await writer?.close();
  removeEndpointFile?.();
  await endpoint?.stop();
  await ch?.close();
  removeClickHouseData();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

interface RawRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string | number>;
  body?: Buffer | string;
  /** Send the headers only (a body declared by Content-Length and never sent). */
  headersOnly?: boolean;
}

/** One request by node:http, its whole answer (bounded: 30 s). */
function raw(o: RawRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${o.path ?? '/'}`, { method: o.method ?? 'POST', headers: o.headers, timeout: 30_000 }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 30 s')));
    req.on('error', reject);
    if (o.headersOnly) req.flushHeaders();
    else req.end(o.body);
  });
}

const basic = (c: { user: string; password: string }) => `Basic ${Buffer.from(`${c.user}:${c.password}`).toString('base64')}`;
const asReader = () => ({ Authorization: basic(creds.reader) });
const asWriter = () => ({ Authorization: basic(creds.writer) });

/** The ClickHouse error code of a refused @clickhouse/client call. */
async function refusedCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return String((err as { code?: unknown }).code);
  }
  assert.fail('the call was not refused');
}

async function keptRows(): Promise<number> {
  return Number((await rows<{ n: string }>(ch, `SELECT count() AS n FROM ${ch.database}.kept`))[0].n);
}

test('no credentials or a wrong password: 516 (AUTHENTICATION_FAILED), and nothing runs', async () => {
  const none = await raw({ body: `CREATE TABLE ${ch.database}.made_by_nobody (n UInt8) ENGINE = Memory` });
  assert.equal(none.status, 403);
  assert.equal(none.headers['x-clickhouse-exception-code'], '516');
  assert.match(none.body, /^Code: 516\. DB::Exception: .*\(AUTHENTICATION_FAILED\)/);
  const wrong = createClient({ url: base, username: 'default', password: 'wrong', log: { level: ClickHouseLogLevel.OFF } });
  try {
    assert.equal(await refusedCode(wrong.query({ query: 'SELECT 1', format: 'JSONEachRow' })), '516');
  } finally {
    await wrong.close();
  }
  const writerAsReaderUser = await raw({ headers: { Authorization: basic({ user: 'default', password: creds.writer.password }) }, body: 'SELECT 1' });
  assert.equal(writerAsReaderUser.headers['x-clickhouse-exception-code'], '516', "the writer's password is not the reader's");
  assert.deepEqual(await rows(ch, `EXISTS TABLE ${ch.database}.made_by_nobody`), [{ result: 0 }]);
});

test('the reader reads: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS, query parameters; CREATE DATABASE IF NOT EXISTS of its database is a no-op', async () => {
  const r = await reader.query({ query: 'WITH 2 AS x SELECT toUInt16(n * x) AS v, s FROM kept WHERE s = {s:String}', query_params: { s: 'one' }, format: 'JSONEachRow' });
  assert.deepEqual(await r.json(), [{ v: 2, s: 'one' }]);
  const existing = `CREATE DATABASE IF NOT EXISTS ${ch.database}`;
  for (const q of ['SHOW TABLES', 'DESCRIBE TABLE kept', 'EXPLAIN SELECT 1', 'EXISTS TABLE kept', 'SELECT count() FROM numbers(10)', existing]) {
    const a = await raw({ headers: asReader(), body: q });
    assert.equal(a.status, 200, `${q}: ${a.body}`);
  }
});

test('the reader cannot reach files, URLs or servers, write, SET or USE: refused, and nothing happened', async () => {
  const outfile = join(scratch, 'outfile.csv');
  const viaFunction = join(scratch, 'function.csv');
  const refusals: [string, string][] = [
    [`SELECT * FROM file('${secretPath}', 'LineAsString')`, '497'],
    [`SELECT * FROM /* a comment */ FiLe('${secretPath}', 'LineAsString')`, '497'],
    [`sElEcT fIlE('${secretPath}')`, '497'],
    [`SELECT n FROM kept WHERE s IN (SELECT * FROM file('${secretPath}', 'LineAsString'))`, '497'],
    [`DESCRIBE file('${secretPath}', 'LineAsString')`, '497'],
    [`SELECT * FROM url('http://127.0.0.1:${endpoint.port}/ping', 'LineAsString')`, '497'],
    [`SELECT * FROM remote('127.0.0.1', system.one)`, '497'],
    [`SELECT * FROM s3('http://127.0.0.1:1/b/k', 'LineAsString')`, '497'],
    [`SELECT * FROM executable('cat ${secretPath}', 'LineAsString', 'x String')`, '497'],
    [`SELECT s FROM kept INTO OUTFILE '${outfile}'`, '497'],
    [`INSERT INTO FUNCTION file('${viaFunction}', 'CSV') SELECT 1`, '497'],
    [`INSERT INTO kept VALUES (2, 'two')`, '164'],
    [`DROP TABLE kept`, '164'],
    [`ALTER TABLE kept DELETE WHERE 1`, '164'],
    [`SET readonly = 0`, '164'],
    [`CREATE DATABASE IF NOT EXISTS endpoint_by_reader_${process.pid}`, '164'],
    [`USE system`, '164'],
    [`SELECT 1; DROP TABLE kept`, '62'],
    [`SELECT 1 /* ; */; DROP TABLE kept`, '62'],
  ];
  for (const [q, code] of refusals) {
    const a = await raw({ headers: asReader(), body: q });
    assert.equal(a.headers['x-clickhouse-exception-code'], code, `${q} → ${a.status} ${a.body}`);
    assert.ok(a.status === 403 || a.status === 400, `${q}: status ${a.status}`);
    assert.ok(!a.body.includes(SECRET), `${q}: the secret came back`);
  }
  assert.equal(await refusedCode(reader.command({ query: 'DROP TABLE kept' })), '164', 'as @clickhouse/client reports it');
  assert.equal(await refusedCode(reader.query({ query: `SELECT * FROM file('${secretPath}', 'LineAsString')` })), '497');
  assert.equal(existsSync(outfile), false, 'INTO OUTFILE wrote nothing');
  assert.equal(existsSync(viaFunction), false, 'INSERT INTO FUNCTION wrote nothing');
  assert.equal(await keptRows(), 1, 'the table is there, unchanged');
});

test("a reader's readonly (parameter or SET) never reaches the ingesting session or the writer", async () => {
  const param = await raw({ headers: asReader(), path: '/?readonly=1', body: "SELECT getSetting('readonly')" });
  assert.equal(param.status, 200, param.body);
  await raw({ headers: asReader(), body: 'SET readonly = 1' });
  await raw({ headers: asReader(), path: '/?readonly=2&max_execution_time=100000', body: "SELECT getSetting('max_execution_time')" })
    .then((a) => assert.equal(Number(a.body), 120, 'a limit asked above the cap stays at the cap'));
  // The processor's own session (the engine's ingesting connection) and a writer still insert.
  await ch.client.insert({ table: `${ch.database}.kept`, values: [{ n: 2, s: 'two' }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: `kept-2-${process.pid}` } });
  await writer.insert({ table: 'kept', values: [{ n: 3, s: 'three' }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: `kept-3-${process.pid}` } });
  assert.deepEqual((await rows<{ n: number }>(ch, `SELECT n FROM ${ch.database}.kept ORDER BY n`)).map((r) => r.n), [1, 2, 3]);
  await ch.client.command({ query: `DELETE FROM ${ch.database}.kept WHERE n > 1` });
});

test('the writer inserts and applies migrations, but cannot DROP, ALTER, read files or create other tables; GET never writes', async () => {
  await writer.insert({ table: 'kept', values: [[10, 'ten'], [11, 'eleven']], columns: ['n', 's'], format: 'JSONCompactEachRow', clickhouse_settings: { insert_deduplication_token: `kept-10-${process.pid}` } });
  assert.deepEqual(await (await writer.query({ query: 'SELECT n FROM kept WHERE n >= 10 ORDER BY n', format: 'JSONEachRow' })).json(), [{ n: 10 }, { n: 11 }], 'the writer reads what it committed');
  const fresh = `endpoint_migrated_${process.pid}`;
  assert.deepEqual(await migrate(writer, { database: fresh, ttlDays: 7 }), migrationFiles().map((f) => Number(f.slice(0, 3))), "netrig's migrations, through the writer");
  assert.deepEqual(await migrate(writer, { database: fresh, ttlDays: 7 }), [], 'applied once');
  const tableFile = join(scratch, 'table.csv');
  const refusals: [string, string][] = [
    ['DROP TABLE kept', '497'],
    [`DROP DATABASE ${fresh}`, '497'],
    ['ALTER TABLE kept DELETE WHERE 1', '497'],
    ['TRUNCATE TABLE kept', '497'],
    [`CREATE TABLE ${ch.database}.by_writer (s String) ENGINE = File(LineAsString, '${secretPath}')`, '497'],
    [`CREATE TABLE IF NOT EXISTS ${ch.database}.http_requests (s String) ENGINE = File(CSV, '${tableFile}')`, '497'],
    [`INSERT INTO kept SELECT 5, * FROM file('${secretPath}', 'LineAsString')`, '497'],
    [`INSERT INTO FUNCTION file('${tableFile}', 'CSV') SELECT 1`, '497'],
    [`SELECT * FROM file('${secretPath}', 'LineAsString')`, '497'],
  ];
  for (const [q, code] of refusals) {
    const a = await raw({ headers: asWriter(), body: q });
    assert.equal(a.headers['x-clickhouse-exception-code'], code, `${q} → ${a.status} ${a.body}`);
    assert.ok(!a.body.includes(SECRET), `${q}: the secret came back`);
  }
  assert.equal(await refusedCode(writer.command({ query: 'DROP TABLE kept' })), '497', 'as @clickhouse/client reports it');
  const get = await raw({ method: 'GET', headers: asWriter(), path: `/?query=${encodeURIComponent("INSERT INTO kept VALUES (12, 'twelve')")}` });
  assert.equal(get.headers['x-clickhouse-exception-code'], '164', `GET with an INSERT: ${get.body}`);
  const getDdl = await raw({ method: 'GET', headers: asWriter(), path: `/?query=${encodeURIComponent(`CREATE DATABASE IF NOT EXISTS endpoint_get_${process.pid}`)}` });
  assert.equal(getDdl.headers['x-clickhouse-exception-code'], '164');
  assert.equal(existsSync(tableFile), false);
  assert.deepEqual((await rows<{ n: number }>(ch, `SELECT n FROM ${ch.database}.kept ORDER BY n`)).map((r) => r.n), [1, 10, 11], 'no other row, the table kept');
  assert.deepEqual(await rows(ch, `EXISTS DATABASE ${fresh}`), [{ result: 1 }]);
  assert.deepEqual(await rows(ch, `EXISTS DATABASE endpoint_get_${process.pid}`), [{ result: 0 }]);
  await ch.client.command({ query: `DROP DATABASE ${fresh}` });
  await ch.client.command({ query: `DELETE FROM ${ch.database}.kept WHERE n > 1` });
});

test('a foreign Host (DNS rebinding) or Origin (a web page) is refused; the endpoint\'s own pass', async () => {
  for (const host of [`attacker.example:${endpoint.port}`, 'attacker.example', `127.0.0.2.nip.io:${endpoint.port}`]) {
    const a = await raw({ headers: { ...asReader(), Host: host }, body: 'SELECT 1' });
    assert.equal(a.status, 403, `Host ${host}: ${a.body}`);
    assert.equal(a.headers['x-clickhouse-exception-code'], '497');
  }
  for (const origin of ['http://attacker.example', 'null', `http://localhost:${endpoint.port + 1}`]) {
    const a = await raw({ headers: { ...asReader(), Origin: origin }, body: 'SELECT 1' });
    assert.equal(a.status, 403, `Origin ${origin}: ${a.body}`);
  }
  const ping = await raw({ method: 'GET', path: '/ping', headers: { Host: 'attacker.example' } });
  assert.equal(ping.status, 403, 'not even /ping answers a rebound name');
  // A port forward or a proxy in front of the endpoint changes the port, not the name.
  const own: Record<string, string>[] = [{ Host: `localhost:${endpoint.port}` }, { Host: `127.0.0.1:${endpoint.port + 1}` }, { Host: 'localhost' }, { Origin: base }];
  for (const headers of own) {
    const a = await raw({ headers: { ...asReader(), ...headers }, body: 'SELECT 1' });
    assert.equal(a.status, 200, `${JSON.stringify(headers)}: ${a.body}`);
  }
});

/** `bytes` zeros, gzip-compressed, built a MiB at a time. */
async function gzipBomb(bytes: number): Promise<Buffer> {
  const gz = createGzip({ level: 9 });
  const parts: Buffer[] = [];
  gz.on('data', (c: Buffer) => parts.push(c));
  const zeros = Buffer.alloc(MiB);
  for (let i = 0; i < bytes / MiB; i++) if (!gz.write(zeros)) await new Promise((r) => gz.once('drain', r));
  await new Promise((r) => gz.end(r));
  return Buffer.concat(parts);
}

/** Run `f`, sampling this process's RSS every 10 ms; the highest growth seen. */
async function rssGrowth<T>(f: () => Promise<T>): Promise<{ result: T; growth: number }> {
  const start = process.memoryUsage().rss;
  let peak = start;
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);
  try {
    const result = await f();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { result, growth: peak - start };
  } finally {
    clearInterval(timer);
  }
}

test('bodies over the cap: 413 as declared (nothing read) and once decompressed (a gzip bomb), memory bounded', async () => {
  const declared = await raw({ headers: { ...asReader(), 'Content-Length': 2 * MiB }, headersOnly: true });
  assert.equal(declared.status, 413, declared.body);
  assert.equal(declared.headers['x-clickhouse-exception-code'], '307');
  const insertDeclared = await raw({ path: `/?query=${encodeURIComponent('INSERT INTO kept FORMAT JSONEachRow')}`, headers: { ...asWriter(), 'Content-Length': INSERT_CAP + 1 }, headersOnly: true });
  assert.equal(insertDeclared.status, 413);

  // A query body of 256 MiB of zeros (about 256 KiB sent): stopped at the 1 MiB query cap.
  const queryBomb = await gzipBomb(256 * MiB);
  // An insert body of 1 GiB of zeros (about 1 MiB sent): stopped at the writer's cap.
  const insertBomb = await gzipBomb(1024 * MiB);
  assert.ok(insertBomb.length < 2 * MiB, `the bomb is small when sent (${insertBomb.length} bytes)`);
  const { result, growth } = await rssGrowth(async () => [
    await raw({ headers: { ...asReader(), 'Content-Encoding': 'gzip' }, body: queryBomb }),
    await raw({ path: `/?query=${encodeURIComponent('INSERT INTO kept FORMAT JSONEachRow')}`, headers: { ...asWriter(), 'Content-Encoding': 'gzip' }, body: insertBomb }),
  ]);
  for (const a of result) {
    assert.equal(a.status, 413, a.body);
    assert.match(a.body, /decompressed/);
  }
  assert.ok(growth < 256 * MiB, `RSS grew ${Math.round(growth / MiB)} MiB while 1.25 GiB of zeros were refused`);
  const corrupt = await raw({ headers: { ...asReader(), 'Content-Encoding': 'gzip' }, body: Buffer.from('not gzip at all') });
  assert.equal(corrupt.status, 400);
  const gzipped = await raw({ headers: { ...asReader(), 'Content-Encoding': 'gzip' }, body: gzipSync('SELECT 42') });
  assert.equal(gzipped.body, '42\n', 'a gzip query within the cap runs');
  assert.equal(await keptRows(), 1);
});

/**
 * Read the first `want` bytes of a SELECT whose whole result is far larger than this process
 * could hold (and than the endpoint lets a result be: 1 GiB), then hang up.
 */
function firstBytes(query: string, want: number, gzip: boolean): Promise<{ status: number; head: string }> {
  return new Promise((resolve, reject) => {
    const path = `/?${gzip ? 'enable_http_compression=1&' : ''}query=${encodeURIComponent(query)}`;
    const req = request(`${base}${path}`, { method: 'GET', headers: { ...asReader(), ...(gzip ? { 'Accept-Encoding': 'gzip' } : {}) }, timeout: 60_000 }, (res) => {
      const body = gzip ? res.pipe(createGunzip()) : res;
      const parts: Buffer[] = [];
      let got = 0;
      body.on('data', (c: Buffer) => {
        parts.push(c);
        got += c.length;
        if (got >= want) {
          resolve({ status: res.statusCode ?? 0, head: Buffer.concat(parts).toString('utf8') });
          req.destroy();
        }
      });
      body.on('error', () => undefined);
      res.on('end', () => reject(new Error(`the result ended after ${got} bytes`)));
    });
    req.on('timeout', () => req.destroy(new Error('no first bytes in 60 s')));
    req.on('error', (err) => { if (!req.destroyed || err.message.startsWith('no first')) reject(err); });
    req.end();
  });
}

test('a result far larger than memory arrives as the engine produces it (plain and gzip), and hanging up cancels it', async () => {
  const { result, growth } = await rssGrowth(async () => [
    await firstBytes('SELECT number FROM numbers(100000000000)', 4 * MiB, false),
    await firstBytes('SELECT number FROM numbers(100000000000)', 4 * MiB, true),
  ]);
  for (const r of result) {
    assert.equal(r.status, 200);
    assert.ok(r.head.startsWith('0\n1\n2\n3\n'), r.head.slice(0, 40));
  }
  assert.ok(growth < 256 * MiB, `RSS grew ${Math.round(growth / MiB)} MiB`);
  // The cancelled reads gave their slots back: more reads than slots still run.
  for (let i = 0; i < 4; i++) assert.equal((await raw({ headers: asReader(), body: 'SELECT 7' })).body, '7\n');
});

test('the password files are 0600 in a 0700 directory, and `netrig query` reads through the endpoint with its password', async () => {
  const readerFile = join(ch.where, 'endpoint', 'reader.password');
  for (const f of [readerFile, writerPasswordFile(ch.where)]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
  assert.equal(statSync(join(ch.where, 'endpoint')).mode & 0o777, 0o700);
  assert.deepEqual(endpointCredentials(ch.where, 'default'), creds, 'the same passwords at the next start');
  const q = await runCli(['query', '--data-dir', ch.where, '--database', ch.database, '--format', 'json', 'SELECT n, s FROM kept']);
  assert.equal(q.code, 0, q.stderr);
  assert.deepEqual(q.stdout.trim().split('\n').map((l) => JSON.parse(l)), [{ n: 1, s: 'one' }]);
  const drop = await runCli(['query', '--data-dir', ch.where, '--database', ch.database, 'DROP TABLE kept']);
  assert.notEqual(drop.code, 0, 'the reader cannot drop');
  assert.match(drop.stderr, /READONLY|readonly/);
  const asWriterByFile = await runCli(['query', '--clickhouse-url', base, '--clickhouse-user', WRITER_USER, '--clickhouse-password-file', writerPasswordFile(ch.where),
    '--database', ch.database, '--format', 'json', 'SELECT count() AS n FROM kept']);
  assert.equal(asWriterByFile.code, 0, asWriterByFile.stderr);
  assert.equal(await keptRows(), 1);
});
