/**
 * End to end in containers: deploy/compose/'s stacks, built from deploy/Dockerfile and run by
 * docker-compose on a Docker engine of the test's own. No image registry is reachable here,
 * so two things are substituted, and the test says so: the base image
 * (scripts/docker-base.sh: Debian bookworm by debootstrap with this host's Node.js, for
 * node:20-bookworm-slim) and the ClickHouse server image (deploy/compose/embedded.yml:
 * `netrig store`, the embedded engine, for clickhouse/clickhouse-server). The single-host
 * stack's edge, capturing every port as it does by default, captures nginx and curl in two
 * network namespaces: every request is a row per end in the store, as nginx logged it and
 * as curl completed it, once, and no container restarted (so the stack's own NATS and
 * ClickHouse traffic did not feed back into the capture). The two-region stack: each
 * region's edge captures its own nginx port, fanin sources both regions into the hub, and
 * each region's requests are rows of that region only. Everything comes down with its
 * volumes. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupAll, sleep } from '../helpers/cleanup-all.js';
import { uniqueToken } from '../helpers/cleanup.js';
import { startDockerEngine, type DockerEngine } from '../helpers/docker.js';
import { freePort } from '../helpers/nats-server.js';
import { createHostPair, run, type ExecResult, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { waitFor } from '../helpers/processor-run.js';

const BASE_IMAGE = 'netrig-base:bookworm-node20';
const IMAGE = 'netrig:compose-test';
const COMPOSE_DIR = join(REPO_ROOT, 'deploy/compose');
const REQUESTS = 120;
/** Each of the base image and the build; within the test runner's 600 s per test (both take under 3 min on a fresh machine). */
const BUILD_MS = 8 * 60_000;

const project = uniqueToken('netrig-compose').toLowerCase();
const secrets = mkdtempSync(join(tmpdir(), 'netrig-compose-secrets-'));
let engine: DockerEngine | undefined;
let hosts: HostPair | undefined;
let nginx: NginxHandle | undefined;
let usNginx: NginxHandle | undefined;
let env: NodeJS.ProcessEnv = {};
let clickhousePort = 0;
/** The stack's compose file (embedded.yml goes after it). */
let stackFile = 'docker-compose.yml';
/** A stack is up, to be taken down at the end. */
let stackUp = false;
/** The store's reader password, read from its volume once per stack. */
let readerPassword: string | null = null;

function compose(args: string[], timeoutMs = 120_000): Promise<ExecResult> {
  return run('docker-compose', ['-f', join(COMPOSE_DIR, stackFile), '-f', join(COMPOSE_DIR, 'embedded.yml'), '--project-directory', COMPOSE_DIR, ...args], { env, timeoutMs });
}

async function composeOk(args: string[], timeoutMs?: number): Promise<ExecResult> {
  const r = await compose(args, timeoutMs);
  if (r.code !== 0) throw new Error(`docker-compose ${args.join(' ')} failed (${r.code}):\n${(r.stderr + r.stdout).slice(-4000)}`);
  return r;
}

const logsOf = async (service: string) => (await compose(['logs', '--no-color', '--tail', '200', service])).stdout;

async function down(): Promise<void> {
  if (!stackUp) return;
  stackUp = false;
  readerPassword = null;
  const r = await compose(['down', '--volumes', '--remove-orphans', '--timeout', '20'], 180_000);
  if (r.code === 0) return;
  // Whatever compose could not take down, by the project's label: nothing may start again
  // with the next engine (restart: unless-stopped).
  const label = `label=com.docker.compose.project=${project}`;
  const containers = (await engine!.docker(['ps', '--all', '--quiet', '--filter', label])).stdout.split('\n').filter(Boolean);
  if (containers.length) await engine!.docker(['rm', '--force', '--volumes', ...containers]);
  const volumes = (await engine!.docker(['volume', 'ls', '--quiet', '--filter', label])).stdout.split('\n').filter(Boolean);
  if (volumes.length) await engine!.docker(['volume', 'rm', '--force', ...volumes]);
  throw new Error(`docker-compose down failed (${r.code}); removed ${containers.length} containers and ${volumes.length} volumes by label: ${r.stderr}`);
}

/** Bring `file`'s stack up (with embedded.yml) under the test's project name. */
async function upWith(file: string): Promise<void> {
  await down();
  stackFile = file;
  stackUp = true;
  await composeOk(['up', '--detach'], 300_000);
}

/** Rows of `query` through the store's endpoint (its reader password is in its volume). */
async function sql<T>(query: string): Promise<T[]> {
  readerPassword ??= (await composeOk(['exec', '-T', 'clickhouse', 'cat', '/var/lib/netrig/endpoint/reader.password'])).stdout.trim();
  const res = await fetch(`http://127.0.0.1:${clickhousePort}/?database=netrig`, {
    method: 'POST', signal: AbortSignal.timeout(10_000), body: `${query} FORMAT JSONEachRow`, headers: { authorization: `Basic ${Buffer.from(`default:${readerPassword}`).toString('base64')}` },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`query failed (${res.status}): ${text}`);
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
}

/** `n` requests from the client host to `port`; how many completed with a 200. */
async function requests(port: number, n: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const c = await hosts!.client.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://${hosts!.server.addr}:${port}/hello.html`]);
    if (c.stdout.trim() === '200') ok++;
  }
  return ok;
}

before(async () => {
  engine = await startDockerEngine();
  const base = await run(join(REPO_ROOT, 'scripts/docker-base.sh'), [BASE_IMAGE], { env: { ...process.env, DOCKER_HOST: engine.host }, timeoutMs: BUILD_MS });
  assert.equal(base.code, 0, `the base image: ${base.stderr}`);
  const made = await run(join(COMPOSE_DIR, 'make-secrets.sh'), [secrets]);
  assert.equal(made.code, 0, `make-secrets.sh: ${made.stderr}`);
  hosts = await createHostPair();
  nginx = await startNginx(hosts.server, { port: 8095, ipv6: false });
  clickhousePort = await freePort();
  env = {
    ...process.env, DOCKER_HOST: engine.host, COMPOSE_PROJECT_NAME: project,
    BASE_IMAGE, NETRIG_IMAGE: IMAGE, NETRIG_SECRETS_DIR: secrets, NETRIG_REGION: 'compose',
    NETRIG_NATS_PORT: String(await freePort()), NETRIG_CLICKHOUSE_PORT: String(clickhousePort), NETRIG_INCLUDE_PORTS: '',
  };
  await composeOk(['build', '--build-arg', `BASE_IMAGE=${BASE_IMAGE}`], BUILD_MS);
});

after(() => cleanupAll(
  () => down(),
  () => engine?.stop(),
  () => nginx?.stop(),
  () => usNginx?.stop(),
  () => hosts?.destroy(),
  () => rmSync(secrets, { recursive: true, force: true }),
));

test('the single-host stack in containers, capturing every port, captures nginx and curl: every request once per end', async (t) => {
  t.diagnostic(`substituted: base image ${BASE_IMAGE} (debootstrap bookworm + this host's Node.js ${process.version}) for node:20-bookworm-slim; `
    + 'netrig store (embedded engine, deploy/compose/embedded.yml) for clickhouse/clickhouse-server');
  await upWith('docker-compose.yml');
  await waitFor('the edge attached and publishing', async () => /privileges dropped/.test(await logsOf('edge')), 120_000,
    async () => `edge:\n${(await logsOf('edge')).slice(-3000)}\nnats:\n${(await logsOf('nats')).slice(-1000)}`);
  await waitFor('the processor holding its shards', async () => /processor running/.test(await logsOf('processor')), 120_000,
    async () => `processor:\n${(await logsOf('processor')).slice(-3000)}\nclickhouse:\n${(await logsOf('clickhouse')).slice(-2000)}`);

  const ok = await requests(nginx!.port, REQUESTS);
  const served = () => nginx!.accessLog().filter((e) => e.uri === '/hello.html').length;
  assert.ok(ok === REQUESTS && served() === REQUESTS, `curl completed ${ok}, nginx logged ${served()} of ${REQUESTS}`);

  const counts = async () => new Map((await sql<{ role: string; n: string }>(
    `SELECT toString(role) AS role, count() AS n FROM http_requests WHERE server_port = ${nginx!.port} AND path = '/hello.html' GROUP BY role`,
  ).catch(() => [])).map((r) => [r.role, Number(r.n)]));
  await waitFor('a row per request and end', async () => {
    const c = await counts();
    return (c.get('server') ?? 0) >= REQUESTS && (c.get('client') ?? 0) >= REQUESTS;
  }, 120_000, async () => `${JSON.stringify([...(await counts())])}; processor:\n${(await logsOf('processor')).slice(-2000)}`);
  await sleep(2000);
  const c = await counts();
  assert.equal(c.get('server'), served(), "server rows = nginx's access log");
  assert.equal(c.get('client'), ok, "client rows = curl's completed requests");
  const [dups] = await sql<{ n: string }>('SELECT count() - uniqExact(node, conn_id, role, req_pos) AS n FROM http_requests');
  assert.equal(Number(dups.n), 0, 'no exchange twice');
  const [regions] = await sql<{ r: string[] }>(`SELECT groupUniqArray(region) AS r FROM http_requests WHERE server_port = ${nginx!.port}`);
  assert.deepEqual(regions.r, ['compose'], 'rows carry the stack\'s region');

  // Every service still running, none restarted along the way.
  const ps = await engine!.docker(['ps', '--all', '--filter', `label=com.docker.compose.project=${project}`, '--format', '{{.Label "com.docker.compose.service"}} {{.State}} {{.Status}}']);
  const states = ps.stdout.trim().split('\n').sort();
  assert.deepEqual(states.map((s) => s.split(' ').slice(0, 2).join(' ')), ['clickhouse running', 'edge running', 'nats running', 'processor running'], ps.stdout);
  const restarts = await engine!.docker(['inspect', '--format', '{{.Name}} {{.RestartCount}}', ...(await engine!.docker(['ps', '-q', '--filter', `label=com.docker.compose.project=${project}`])).stdout.trim().split('\n')]);
  assert.ok(restarts.stdout.trim().split('\n').every((l) => l.endsWith(' 0')), `no container restarted:\n${restarts.stdout}`);
});

test('the two-region stack: each region\'s edge through its NATS, the leaf node and the hub; every request once, with its region', async () => {
  usNginx = await startNginx(hosts!.server, { port: 8096, ipv6: false });
  env = {
    ...env, NETRIG_EU_PORTS: String(nginx!.port), NETRIG_US_PORTS: String(usNginx.port),
    NETRIG_HUB_PORT: String(await freePort()), NETRIG_EU_NATS_PORT: String(await freePort()), NETRIG_US_NATS_PORT: String(await freePort()),
    NETRIG_LEAF_PORT: String(await freePort()),
  };
  await upWith('two-regions.yml');
  for (const edge of ['eu-edge', 'us-edge']) {
    await waitFor(`${edge} attached`, async () => /privileges dropped/.test(await logsOf(edge)), 120_000, async () => (await logsOf(edge)).slice(-3000));
  }
  // fanin (restart: on-failure) creates the hub's stream sourcing both regions, then exits 0.
  const faninState = async () => {
    const id = (await compose(['ps', '-q', 'fanin'])).stdout.trim();
    return id ? (await engine!.docker(['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}}', id])).stdout.trim() : 'not created';
  };
  await waitFor('fanin done', async () => (await faninState()) === 'exited 0', 120_000, async () => `fanin ${await faninState()}:\n${(await logsOf('fanin')).slice(-2000)}`);
  assert.match(await logsOf('fanin'), /NETRIG_RAW[^\n]*: eu=eu us=us/, 'the hub stream sources both regions');
  await waitFor('the processor on the hub', async () => /processor running/.test(await logsOf('processor')), 120_000, async () => (await logsOf('processor')).slice(-3000));

  const before = { eu: nginx!.accessLog().filter((e) => e.uri === '/hello.html').length, us: 0 };
  const ok = { eu: await requests(nginx!.port, REQUESTS / 2), us: await requests(usNginx.port, REQUESTS / 2) };
  const served = { eu: nginx!.accessLog().filter((e) => e.uri === '/hello.html').length - before.eu, us: usNginx.accessLog().filter((e) => e.uri === '/hello.html').length };
  assert.deepEqual({ ok, served }, { ok: { eu: REQUESTS / 2, us: REQUESTS / 2 }, served: { eu: REQUESTS / 2, us: REQUESTS / 2 } });

  const counts = async () => new Map((await sql<{ k: string; n: string }>(
    "SELECT concat(region, '|', toString(role), '|', toString(server_port)) AS k, count() AS n FROM http_requests WHERE path = '/hello.html' GROUP BY k",
  ).catch(() => [])).map((r) => [r.k, Number(r.n)]));
  const want = new Map([
    [`eu|server|${nginx!.port}`, served.eu], [`eu|client|${nginx!.port}`, ok.eu],
    [`us|server|${usNginx.port}`, served.us], [`us|client|${usNginx.port}`, ok.us],
  ]);
  await waitFor('a row per request and end in each region', async () => {
    const c = await counts();
    return [...want].every(([k, n]) => (c.get(k) ?? 0) >= n);
  }, 120_000, async () => `${JSON.stringify([...(await counts())])}; processor:\n${(await logsOf('processor')).slice(-2000)}\nfanin:\n${(await logsOf('fanin')).slice(-1000)}`);
  await sleep(2000);
  assert.deepEqual(await counts(), want, 'each region holds exactly its own nginx\'s exchanges, each once per end');
});
