/**
 * End to end: `netrig up` as a child process with a temporary data dir, while curl in one
 * network namespace talks to nginx in another. While it runs: its summary lines on stdout,
 * `netrig query` (json and table) and `netrig report` through its endpoint, and with no
 * target from another directory (`query`, `report`, `status` find it), a second
 * `netrig process` attached to its NATS and endpoint (as its writer) writing the same rows
 * into a database of its own, a wrong password refused with one clear line. Errors a user can meet are one
 * `netrig:` line each: the data dir held by the running `up`, ClickHouse or NATS
 * unreachable, a port in use. After SIGINT it exits 0: the rows are still in the store
 * (opened directly), none of its BPF objects remain, its nats-server is gone, the data dir
 * is free again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { onExit, uniqueToken } from '../helpers/cleanup.js';
import { bpfIdsOf, bpftoolLinks, bpftoolMaps, bpftoolProgs, type BpfIds } from '../helpers/bpf-objects.js';
import { assertOneLineError, runCli, spawnCli, type CliChild } from '../helpers/cli.js';
import { freePort } from '../helpers/nats-server.js';
import { createHostPair, run, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';

/** A row of the rows query, as `--format json` prints it. */
interface ExchangeRow {
  role: string;
  method: string;
  path: string;
  status: number;
  host: string;
}

/** Temporary directories of this file, removed after it (and by the exit safety net). */
function tempDir(what: string): string {
  const dir = mkdtempSync(join(tmpdir(), `netrig-${what}-${process.pid}-`));
  const unregister = onExit(`temp ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  temps.push(() => {
    rmSync(dir, { recursive: true, force: true });
    unregister();
  });
  return dir;
}
const temps: (() => void)[] = [];

/** Listen on 127.0.0.1:`port` (something else holding a port netrig wants). */
function holdPort(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

/** Pids of processes whose command line mentions `text` (other than pgrep itself). */
async function pidsMentioning(text: string): Promise<number[]> {
  const r = await run('pgrep', ['-f', text]);
  return r.stdout.split('\n').filter(Boolean).map(Number).filter((p) => p !== process.pid);
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

describe('netrig up as a user runs it', () => {
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  let up: CliChild | undefined;
  let second: CliChild | undefined;
  const holders: Server[] = [];
  let dataDir = '';
  let natsPort = 0;
  let httpPort = 0;
  const password = randomBytes(12).toString('hex');
  // Long enough to be an id segment of a path template (`/t/{id}`) whatever the pid.
  const token = uniqueToken('up-test');
  /** Database of the second processor. */
  const otherDb = `netrig_second_${process.pid}`;
  /** up's BPF objects and its nats-server, noted while it runs. */
  let own: BpfIds | undefined;
  let natsPid = 0;
  /** The curl connection's client port and the rows it made, as `up` stored them. */
  let clientPort = 0;
  let upRows: ExchangeRow[] = [];
  /** Where this up advertises itself (lib/running-ups.ts): a directory of this test's, so other tests' ups are not found. */
  const runDirEnv = { NETRIG_RUN_DIR: '' };

  // The token is in the first path itself: query values are masked in rows (`?t=***`).
  const paths = [`/t/${token}?t=${token}`, `/small.txt?t=${token}`, `/status/404?t=${token}`];
  const storedPaths = paths.map((p) => p.replace(`?t=${token}`, '?t=***'));
  const statuses = [200, 200, 404];
  /** The endpoints of those paths (the path_template column). */
  const endpoints = ['/t/{id}', '/small.txt', '/status/{id}'];
  /** The processor role's credential of up's nats-server, as its data dir holds it. */
  const processorCredential = () => ['--nats-user', 'processor', '--nats-password', readFileSync(join(dataDir, 'nats-auth', 'processor.password'), 'utf8').trim()];
  const rowsSql = () => `SELECT role, method, path, status, host FROM http_requests
    WHERE client_port = ${clientPort} AND client_addr = toIPv6('::ffff:${hosts!.client.addr}') ORDER BY role, req_pos`;

  before(async () => {
    hosts = await createHostPair();
    nginx = await startNginx(hosts.server);
    dataDir = tempDir('up');
    runDirEnv.NETRIG_RUN_DIR = join(tempDir('up-run'), 'run');
    // A free port can be taken between the probe and the bind: a few attempts with others.
    for (let attempt = 1; ; attempt++) {
      natsPort = await freePort();
      httpPort = await freePort();
      up = spawnCli([
        'up', '--data-dir', dataDir, '--nats-port', String(natsPort), '--http-port', String(httpPort), '--ui-port', '0',
        '--metrics-port', '0', '--processor-metrics-port', '0', '--password', password,
        '--include-netns', `${hosts.client.netnsIno()},${hosts.server.netnsIno()}`,
      ], { env: runDirEnv });
      try {
        await up.waitLog("'netrig up: running'", (l) => /^netrig up: running/.test(l.msg ?? ''));
        break;
      } catch (err) {
        await up.kill();
        if (attempt >= 3 || !up.stderrPlain.some((l) => / is in use/.test(l))) throw err;
      }
    }
    // Ready for commands once its endpoint file is there and the endpoint answers.
    const endpointFile = join(dataDir, 'endpoint.json');
    assert.ok(await pollUntil(() => existsSync(endpointFile), 30_000), `endpoint.json written:\n${up.tail()}`);
    const ep = JSON.parse(readFileSync(endpointFile, 'utf8')) as { url: string; pid: number };
    assert.equal(ep.url, `http://127.0.0.1:${httpPort}`, 'the endpoint listens where asked');
    assert.equal(ep.pid, up.pid, 'the endpoint file names the up process');
    assert.ok(await pollUntil(async () => (await fetch(`${ep.url}/ping`).then((r) => r.text()).catch(() => '')) === 'Ok.\n', 30_000), 'the endpoint answers /ping');
  });

  after(() => cleanupAll(
    () => second?.kill(),
    () => up?.kill(),
    ...holders.map((s) => () => new Promise<void>((r) => s.close(() => r()))),
    () => nginx?.stop(),
    () => hosts?.destroy(),
    ...temps,
  ));

  /** `netrig query` through up (the data dir's endpoint), as JSON rows. */
  async function queryJson<T>(sql: string, extra: string[] = []): Promise<T[]> {
    const r = await runCli(['query', '--data-dir', dataDir, '--clickhouse-password', password, '--format', 'json', ...extra, sql]);
    assert.equal(r.code, 0, `netrig query failed: ${r.stderr}`);
    const lines = r.stdout.split('\n').filter(Boolean);
    return lines.map((l) => {
      try {
        return JSON.parse(l) as T;
      } catch {
        assert.fail(`--format json printed a line that is not JSON: ${JSON.stringify(l)}`);
      }
    });
  }

  /** Poll a JSON query (one process per poll) until it returns `n` rows; bounded. */
  async function pollRows<T>(sql: string, n: number, fetchRows: (sql: string) => Promise<T[]>, timeoutMs = 60_000): Promise<T[]> {
    let got: T[] = [];
    const ok = await pollUntil(async () => (got = await fetchRows(sql)).length >= n, timeoutMs, 500);
    assert.ok(ok, `${n} rows within ${timeoutMs} ms for ${sql}; got ${JSON.stringify(got)}\n${up!.tail(10)}`);
    return got;
  }

  test('while it runs: its BPF programs are attached and its own nats-server runs under the data dir', async () => {
    own = bpfIdsOf(up!.pid);
    assert.ok(own.progs.size > 0 && own.links.size > 0 && own.maps.size > 0, `it holds programs, links and maps: ${JSON.stringify({ progs: own.progs.size, links: own.links.size, maps: own.maps.size })}`);
    const progs = new Set((await bpftoolProgs()).map((p) => p.id));
    assert.ok([...own.progs].every((id) => progs.has(id)), 'bpftool lists its programs');
    const pids = await pidsMentioning(join(dataDir, 'nats'));
    assert.equal(pids.length, 1, `one nats-server with its store under the data dir: ${pids.map(cmdline).join(' | ')}`);
    natsPid = pids[0];
    assert.match(cmdline(natsPid), /^nats-server /, 'that process is nats-server');
    assert.equal(cmdline(natsPid).trimEnd(), `nats-server -c ${join(dataDir, 'nats.conf')}`, 'run from the configuration it wrote');
    assert.match(readFileSync(join(dataDir, 'nats.conf'), 'utf8'), new RegExp(`^port: ${natsPort}$`, 'm'), 'on the port asked for');
  });

  test('its processor\'s /metrics requires the password it generated into the data dir', async () => {
    const port = Number(up!.logs.find((l) => l.msg === 'processor metrics served')?.metricsPort);
    assert.ok(port > 0, `it logged the processor's metrics port:\n${up!.tail()}`);
    const url = `http://127.0.0.1:${port}/metrics`;
    assert.equal((await fetch(url)).status, 401, 'no credentials: 401');
    assert.equal((await fetch(url, { headers: { authorization: `Basic ${Buffer.from('netrig:wrong').toString('base64')}` } })).status, 401, 'a wrong password: 401');
    assert.equal(statSync(join(dataDir, 'metrics', 'metrics.password')).mode & 0o777, 0o600, 'the password file is 0600');
    const secret = readFileSync(join(dataDir, 'metrics', 'metrics.password'), 'utf8').trim();
    const res = await fetch(url, { headers: { authorization: `Basic ${Buffer.from(`netrig:${secret}`).toString('base64')}` } });
    assert.equal(res.status, 200, 'the password from the data dir: 200');
    assert.match(await res.text(), /^netrig_processor_/m, 'the processor\'s metrics');
  });

  test('stdout is not a terminal: one plain summary line per second with records/s', async () => {
    assert.ok(await pollUntil(() => up!.stdout.length >= 3, 30_000), `three summary lines within 30 s:\n${up!.tail()}`);
    for (const l of up!.stdout) assert.match(l, /^netrig: capture=socket \(\S*\) records\/s=\d+ rows\/s \S.* lost=\d+ lag=\d+ processors=1 shards=\d+/, 'a plain summary line');
    assert.ok(up!.stdout.every((l) => !l.includes('\x1b')), 'no terminal escapes');
  });

  test('traffic made, then `netrig query` (json and table) and `netrig report` through its endpoint', async () => {
    const base = `http://${hosts!.server.addr}:${nginx!.port}`;
    const r = await hosts!.client.exec('curl', ['-sS', '--max-time', '30', '-w', '%{local_port} %{http_code}\\n', ...paths.flatMap((p) => ['-o', '/dev/null', `${base}${p}`])]);
    assert.equal(r.code, 0, `curl: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n').map((l) => l.split(' '));
    assert.deepEqual(lines.map((l) => Number(l[1])), statuses);
    clientPort = Number(lines[0][0]);
    assert.ok(lines.every((l) => Number(l[0]) === clientPort), 'one keep-alive connection');

    const host = `${hosts!.server.addr}:${nginx!.port}`;
    const expected = ['client', 'server'].flatMap((role) => storedPaths.map((path, i) => ({ role, method: 'GET', path, status: statuses[i], host })));
    upRows = await pollRows<ExchangeRow>(rowsSql(), expected.length, (sql) => queryJson<ExchangeRow>(sql));
    assert.deepEqual(upRows, expected, 'both ends of each request, as curl made them, query values masked');
    assert.ok(upRows.every((row) => !row.path.includes(`?t=${token}`)), 'no row keeps the query value');

    const table = await runCli(['query', '--data-dir', dataDir, '--clickhouse-password', password, rowsSql()]);
    assert.equal(table.code, 0, table.stderr);
    const tl = table.stdout.trimEnd().split('\n');
    assert.match(tl[0], /^role\s+method\s+path\s+status\s+host$/, 'a header line with the column names');
    assert.match(tl[1], /^-+( +-+){4}$/, 'an underline');
    assert.equal(tl.length, 2 + expected.length + 1, `header, underline, ${expected.length} rows, count:\n${table.stdout}`);
    assert.equal(tl[tl.length - 1], `(${expected.length} rows)`, 'a row count line');
    for (const [i, e] of expected.entries()) assert.match(tl[2 + i], new RegExp(`^${e.role}\\s+GET\\s+${e.path.replace(/[?.*]/g, '\\$&')}\\s+${e.status}\\s+${host}$`));

    const report = await runCli(['report', 'top-endpoints', '--data-dir', dataDir, '--clickhouse-password', password, '--format', 'json']);
    assert.equal(report.code, 0, report.stderr);
    const top = report.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { host: string; method: string; endpoint: string; seen_by: string; requests: string });
    for (const endpoint of endpoints) {
      const e = top.filter((t) => t.endpoint === endpoint);
      assert.equal(e.length, 1, `top-endpoints lists ${endpoint} once: ${report.stdout}`);
      assert.deepEqual({ ...e[0], p50_ms: undefined, p99_ms: undefined, errors_5xx: undefined, timeouts: undefined },
        { host, method: 'GET', endpoint, seen_by: 'server', requests: '1', p50_ms: undefined, p99_ms: undefined, errors_5xx: undefined, timeouts: undefined },
        `${endpoint}: one request, counted once from the server's row though both ends were captured`);
    }
    const text = await runCli(['report', 'top-endpoints', '--data-dir', dataDir, '--clickhouse-password', password]);
    assert.equal(text.code, 0, text.stderr);
    for (const endpoint of endpoints) assert.ok(text.stdout.includes(endpoint), `the table report shows ${endpoint}`);
  });

  test('given no target, from any directory: query, report and status find the running up; nothing is created', async () => {
    assert.ok(clientPort > 0, 'traffic was made');
    const elsewhere = tempDir('up-elsewhere');
    const opts = { env: runDirEnv, cwd: elsewhere };
    const q = await runCli(['query', '--format', 'json', rowsSql()], opts);
    assert.equal(q.code, 0, q.stderr);
    assert.deepEqual(q.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ExchangeRow), upRows, 'the same rows as through --data-dir');
    const report = await runCli(['report', 'top-endpoints', '--format', 'json'], opts);
    assert.equal(report.code, 0, report.stderr);
    for (const endpoint of endpoints) assert.ok(report.stdout.includes(JSON.stringify(endpoint)), `the report lists ${endpoint}: ${report.stdout}`);
    const status = await runCli(['status', '--format', 'json'], opts);
    assert.equal(status.code, 0, status.stderr);
    const entries = status.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string; pid: number });
    assert.deepEqual(entries.map((e) => e.kind).sort(), ['edge', 'processor'], `status lists its edge and its processor: ${status.stdout}`);
    assert.ok(entries.every((e) => e.pid === up!.pid), 'both are the up process');
    assert.deepEqual(readdirSync(elsewhere), [], 'no store or data dir was created where the commands ran');
  });

  test('a second `netrig process` attached to the running up writes the same rows into its own database, and stops on SIGTERM', async () => {
    assert.ok(clientPort > 0, 'traffic was made');
    const url = `http://127.0.0.1:${httpPort}`;
    second = spawnCli([
      'process', '--nats', `nats://127.0.0.1:${natsPort}`, ...processorCredential(), '--clickhouse-url', url,
      '--clickhouse-user', 'netrig_writer', '--clickhouse-password-file', join(dataDir, 'endpoint', 'writer.password'),
      '--database', otherDb, '--functions', 'http1,tcp', '--metrics-port', '0',
    ]);
    const running = await second.waitLog("'processor running'", (l) => /^processor running/.test(l.msg ?? ''));
    assert.equal(running.clickhouse, url, 'it writes through the endpoint');
    const viaUrl = async <T>(sql: string): Promise<T[]> => {
      const r = await runCli(['query', '--clickhouse-url', url, '--clickhouse-password', password, '--database', otherDb, '--format', 'json', sql]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
    };
    const rows = await pollRows(rowsSql(), upRows.length, viaUrl<ExchangeRow>);
    assert.deepEqual(rows, upRows, 'the same rows as up\'s own processor');
    const conns = await pollRows<{ role: string }>(`SELECT role FROM connections WHERE (role = 'client' AND sport = ${clientPort}) OR (role = 'server' AND dport = ${clientPort}) ORDER BY role`, 2, viaUrl<{ role: string }>);
    assert.deepEqual(conns.map((c) => c.role), ['client', 'server'], 'its tcp function wrote both ends of the connection');

    const end = await second.stop('SIGTERM', 30_000);
    assert.deepEqual(end, { code: 0, signal: null }, `exit code 0 after SIGTERM:\n${second.tail()}`);
    assert.deepEqual(second.stderrPlain, [], 'nothing but log lines on stderr');
  });

  test('a wrong password is refused with one clear line; none given, the data dir\'s is used', async () => {
    const viaDir = await runCli(['query', '--data-dir', dataDir, '--clickhouse-password', 'wrong', 'SELECT 1']);
    assertOneLineError(viaDir, new RegExp(`refused user 'default'.*--clickhouse-password`), 'query through the data dir');
    const viaUrl = await runCli(['query', '--clickhouse-url', `http://127.0.0.1:${httpPort}`, '--clickhouse-password', 'wrong', 'SELECT 1']);
    assertOneLineError(viaUrl, new RegExp(`127\\.0\\.0\\.1:${httpPort} refused user 'default'`), 'query by URL');
    const noPassword = await runCli(['report', 'top-endpoints', '--data-dir', dataDir, '--format', 'json']);
    assert.equal(noPassword.code, 0, `without --clickhouse-password, report reads the reader's password from the data dir: ${noPassword.stderr}`);
  });

  test('a second `netrig up` on the same data dir: one line naming the holder pid', async () => {
    const r = await runCli(['up', '--data-dir', dataDir, '--nats-port', String(await freePort()), '--http-port', String(await freePort()), '--ui-port', '0',
      '--metrics-port', '0', '--processor-metrics-port', '0']);
    assertOneLineError(r, new RegExp(`data dir ${dataDir.replace(/[.]/g, '\\.')} is held by another netrig process \\(pid ${up!.pid}\\)`), 'data dir held');
  });

  test('more than one replica on `netrig up`\'s own single nats-server: one line saying why', async () => {
    const r = await runCli(['up', '--data-dir', dataDir, '--stream-replicas', '3']);
    assertOneLineError(r, /stream-replicas: netrig up's own nats-server is one server, which holds one replica: give --nats with a JetStream cluster/, 'replicas on one server');
  });

  test('ClickHouse unreachable: `netrig process` says it cannot reach ClickHouse', async () => {
    const closed = await freePort();
    const r = await runCli(['process', '--nats', `nats://127.0.0.1:${natsPort}`, ...processorCredential(), '--clickhouse-url', `http://127.0.0.1:${closed}`,
      '--database', `netrig_unreachable_${process.pid}`, '--metrics-port', '0']);
    assertOneLineError(r, new RegExp(`cannot reach ClickHouse at http://127\\.0\\.0\\.1:${closed}`), 'ClickHouse unreachable');
  });

  test('NATS unreachable: `netrig process` says it cannot reach NATS', async () => {
    const closed = await freePort();
    const r = await runCli(['process', '--nats', `nats://127.0.0.1:${closed}`, '--clickhouse-url', `http://127.0.0.1:${httpPort}`,
      '--clickhouse-password', password, '--metrics-port', '0']);
    assertOneLineError(r, new RegExp(`cannot reach NATS at nats://127\\.0\\.0\\.1:${closed}`), 'NATS unreachable');
  });

  test('a port in use: `netrig up` names the port and leaves nothing running', async () => {
    for (const which of ['http', 'nats', 'ui'] as const) {
      const dir = tempDir(`up-${which}-busy`);
      const busy = await freePort();
      holders.push(await holdPort(busy));
      const ports = { http: which === 'http' ? busy : await freePort(), nats: which === 'nats' ? busy : await freePort(), ui: which === 'ui' ? busy : 0 };
      const r = await runCli(['up', '--data-dir', dir, '--nats-port', String(ports.nats), '--http-port', String(ports.http), '--ui-port', String(ports.ui),
        '--metrics-port', '0', '--processor-metrics-port', '0']);
      assertOneLineError(r, new RegExp(`port ${busy} \\(.*\\) is in use`), `${which} port in use`);
      assert.ok(await pollUntil(async () => (await pidsMentioning(dir)).length === 0, 10_000), `nothing of the failed up runs: ${(await pidsMentioning(dir)).map(cmdline).join(' | ')}`);
      assert.ok(!existsSync(join(dir, 'netrig.lock')), 'the data dir is released');
    }
  });

  test('SIGINT: exit 0; rows still in the store; no BPF object, nats-server or lock of it left', async () => {
    assert.ok(own && natsPid > 0, 'its BPF objects and nats-server were noted while it ran');
    const end = await up!.stop('SIGINT', 60_000);
    assert.deepEqual(end, { code: 0, signal: null }, `exit code 0 after SIGINT:\n${up!.tail()}`);
    assert.ok(up!.logs.some((l) => l.msg === 'bpf programs detached'), 'it logged the detach');
    // Its edge and processor ran in their NATS roles, from start to stop, with every subject they use granted.
    assert.deepEqual(up!.logs.filter((l) => /NATS denied/.test(l.msg ?? '')), [], 'no part of it was denied a NATS subject');

    // Nothing of it runs: its nats-server is gone, nothing mentions the data dir.
    assert.ok(await pollUntil(() => !cmdline(natsPid).includes(dataDir), 15_000), `its nats-server (pid ${natsPid}) is gone`);
    assert.deepEqual(await pidsMentioning(dataDir), [], 'no process mentions the data dir');

    // Nothing of it in the kernel (freeing after the last descriptor closes is deferred a little).
    let left = {};
    const gone = await pollUntil(async () => {
      const [p, l, m] = await Promise.all([bpftoolProgs(), bpftoolLinks(), bpftoolMaps()]);
      const progs = p.filter((x) => own!.progs.has(x.id)).map((x) => x.id);
      const links = l.filter((x) => own!.links.has(x.id)).map((x) => x.id);
      const maps = m.filter((x) => own!.maps.has(x.id)).map((x) => x.id);
      left = { progs, links, maps };
      return progs.length + links.length + maps.length === 0;
    }, 10_000, 100);
    assert.ok(gone, `programs, links or maps of it remain: ${JSON.stringify(left)}`);

    // The lock is released and the endpoint file gone: `netrig query` opens the store itself.
    assert.ok(!existsSync(join(dataDir, 'endpoint.json')), 'endpoint.json removed');
    assert.ok(!existsSync(join(dataDir, 'netrig.lock')), 'the lock file removed');
    const after = await queryJson<ExchangeRow>(rowsSql());
    assert.deepEqual(after, upRows, 'the rows are still there, read from the store directly');
    assert.deepEqual(readdirSync(runDirEnv.NETRIG_RUN_DIR), [], 'it no longer advertises itself');
    const elsewhere = tempDir('up-gone');
    const none = await runCli(['query', 'SELECT 1'], { env: runDirEnv, cwd: elsewhere });
    assertOneLineError(none, /no rows to read: no `netrig up` runs on this host and \.\/\.netrig holds no store; start `netrig up`, or name the rows with --data-dir DIR or --clickhouse-url URL/, 'query with no up and no store');
    assert.deepEqual(readdirSync(elsewhere), [], 'reading created nothing');
    const other = await queryJson<ExchangeRow>(rowsSql(), ['--database', otherDb]);
    assert.deepEqual(other, upRows, 'and the second processor\'s database too');
  });
});
