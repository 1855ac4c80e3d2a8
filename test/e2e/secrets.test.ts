/**
 * End to end: secrets curl sends (an Authorization header, a Cookie, a query value) and one
 * nginx sends back (a Set-Cookie) never reach the disk by default — not the NATS store under
 * the data dir, not the ClickHouse parts — and do with `--raw-secrets keep` and
 * `--keep-query-values`, which proves the search finds them when they are there.
 *
 * Two protections are checked apart: the edge's masking, by reading the raw stream through
 * NATS (as the admin of `netrig up`'s nats-server): the header values are masked there, the
 * request line is not (query values are masked in rows); and the store's encryption at
 * rest, by searching the files: no secret is in them either way. nginx sends the request's
 * cookie back in its Set-Cookie. ClickHouse column files are searched after decompressing
 * their ZSTD blocks (zstd(1)), or the search could not fail.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../lib/nats.js';
import { cleanupAll, pollUntil } from '../helpers/cleanup-all.js';
import { testLogger } from '../helpers/edge-run.js';
import { onExit } from '../helpers/cleanup.js';
import { runCli, spawnCli, type CliChild } from '../helpers/cli.js';
import { freePort } from '../helpers/nats-server.js';
import { createHostPair, type HostPair } from '../helpers/netns.js';
import { startNginx, type NginxHandle } from '../helpers/nginx.js';

/** ClickHouse's compression method byte of a ZSTD block. */
const CH_ZSTD = 0x90;
/** A compressed block's header: checksum (16), method (1), compressed size (4), size (4). */
const CH_BLOCK_HEADER = 25;

/**
 * The ZSTD blocks of a ClickHouse column file decompressed (our string columns are
 * CODEC(ZSTD)), so their text can be searched; empty for a file that is not made of
 * compressed blocks.
 */
function clickhouseBlocks(file: Buffer): Buffer {
  const out: Buffer[] = [];
  for (let o = 0; o + CH_BLOCK_HEADER <= file.length; ) {
    const method = file[o + 16];
    const size = file.readUInt32LE(o + 17);
    if (size < 9 || o + 16 + size > file.length) break;
    if (method === CH_ZSTD) {
      const z = spawnSync('zstd', ['-d', '-c', '-q'], { input: file.subarray(o + CH_BLOCK_HEADER, o + 16 + size) });
      if (z.status === 0) out.push(z.stdout);
    }
    o += 16 + size;
  }
  return Buffer.concat(out);
}

/**
 * Files under `dir` (recursively) whose bytes — or, for ClickHouse column files, whose
 * decompressed blocks — contain `needle`, relative to `dir`.
 */
function filesContaining(dir: string, needle: string): string[] {
  const bytes = Buffer.from(needle, 'latin1');
  const out: string[] = [];
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    const b = readFileSync(path);
    if (b.includes(bytes) || (path.endsWith('.bin') && clickhouseBlocks(b).includes(bytes))) out.push(path.slice(dir.length + 1));
  }
  return out;
}

interface Secrets {
  authorization: string;
  /** Sent in Cookie and sent back by nginx in Set-Cookie. */
  cookie: string;
  query: string;
}

function newSecrets(): Secrets {
  const s = () => randomBytes(16).toString('hex');
  return { authorization: `auth${s()}`, cookie: `ck${s()}`, query: `q${s()}` };
}

/** What nginx's /set-cookie location sends back (test/helpers/nginx.ts). */
const setCookieValue = (s: Secrets) => `sid=${s.cookie}; Path=/`;

describe('secrets on disk', () => {
  let hosts: HostPair | undefined;
  let nginx: NginxHandle | undefined;
  const children: CliChild[] = [];
  const temps: (() => void)[] = [];

  before(async () => {
    hosts = await createHostPair();
    nginx = await startNginx(hosts.server);
  });

  after(() => cleanupAll(...children.map((c) => () => c.kill()), () => nginx?.stop(), () => hosts?.destroy(), ...temps));

  /** Every message of the raw stream of the `netrig up` on `natsPort`, read as its admin. */
  async function rawStream(dataDir: string, natsPort: number): Promise<Buffer> {
    const natsPassword = readFileSync(join(dataDir, 'nats-auth', 'admin.password'), 'utf8').trim();
    const nc = await connectNats({ nats: `nats://127.0.0.1:${natsPort}`, natsUser: 'admin', natsPassword }, 'netrig-test-secrets', testLogger('test'));
    try {
      const last = (await (await jetstreamManager(nc)).streams.info('NETRIG_RAW')).state.last_seq;
      const consumer = await jetstream(nc).consumers.get('NETRIG_RAW');
      const parts: Buffer[] = [];
      for (let seq = 0; seq < last; ) {
        const m = await consumer.next({ expires: 5000 });
        if (!m) throw new Error(`raw stream: read ${seq} of ${last} messages`);
        parts.push(Buffer.from(m.data));
        seq = m.seq;
      }
      return Buffer.concat(parts);
    } finally {
      await nc.close();
    }
  }

  /**
   * `netrig up` with `flags` in a fresh data dir; curl sends the secrets and gets a Set-Cookie;
   * once both rows of the exchange are in ClickHouse, the raw stream is read and it stops with
   * SIGINT. Returns the data dir, the rows' distinct paths and the raw stream's bytes.
   */
  async function capture(flags: string[], secrets: Secrets): Promise<{ dataDir: string; paths: string[]; stream: Buffer }> {
    const dataDir = mkdtempSync(join(tmpdir(), `netrig-secrets-${process.pid}-`));
    const unregister = onExit(`temp ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
    temps.push(() => {
      rmSync(dataDir, { recursive: true, force: true });
      unregister();
    });
    const natsPort = await freePort();
    const up = spawnCli([
      'up', '--data-dir', dataDir, '--nats-port', String(natsPort), '--http-port', String(await freePort()), '--ui-port', '0',
      '--metrics-port', '0', '--processor-metrics-port', '0',
      '--include-netns', `${hosts!.client.netnsIno()},${hosts!.server.netnsIno()}`, ...flags,
    ]);
    children.push(up);
    await up.waitLog("'netrig up: running'", (l) => /^netrig up: running/.test(l.msg ?? ''));

    const url = `http://${hosts!.server.addr}:${nginx!.port}/set-cookie?k=${secrets.query}`;
    const r = await hosts!.client.exec('curl', ['-sS', '--max-time', '30', '-D', '-', '-o', '/dev/null',
      '-H', `Authorization: Bearer ${secrets.authorization}`, '-b', `sid=${secrets.cookie}`, url]);
    assert.equal(r.code, 0, `curl: ${r.stderr}`);
    assert.ok(r.stdout.includes(`Set-Cookie: ${setCookieValue(secrets)}`), `nginx sent the Set-Cookie: ${r.stdout}`);

    const sql = `SELECT path FROM http_requests WHERE startsWith(path, '/set-cookie?')`;
    let paths: string[] = [];
    const rows = await pollUntil(async () => {
      const q = await runCli(['query', '--data-dir', dataDir, '--format', 'json', sql]);
      paths = q.code === 0 ? q.stdout.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { path: string }).path) : [];
      return paths.length >= 2;
    }, 60_000, 500);
    assert.ok(rows, `both ends of the exchange in http_requests within 60 s (${paths.length}):\n${up.tail(10)}`);
    const stream = await rawStream(dataDir, natsPort);
    const end = await up.stop('SIGINT', 60_000);
    assert.deepEqual(end, { code: 0, signal: null }, `exit 0 after SIGINT:\n${up.tail()}`);
    return { dataDir, paths: [...new Set(paths)], stream };
  }

  const headerSecrets = (s: Secrets) => [`Authorization: Bearer ${s.authorization}`, `Cookie: sid=${s.cookie}`, `Set-Cookie: ${setCookieValue(s)}`];

  test('by default no secret is in the data dir, the raw stream holds the header values masked, rows the query values', async () => {
    const secrets = newSecrets();
    const { dataDir: dir, paths, stream } = await capture([], secrets);
    for (const [what, secret] of Object.entries(secrets)) assert.deepEqual(filesContaining(dir, secret), [], `${what} in files of the data dir`);
    const masked = (header: string, value: string) => `${header}: ${'*'.repeat(value.length)}`;
    for (const h of headerSecrets(secrets)) assert.ok(!stream.includes(h), `not in the raw stream: ${h}`);
    assert.ok(stream.includes(masked('Authorization', `Bearer ${secrets.authorization}`)), 'the masked Authorization value is in the raw stream');
    assert.ok(stream.includes(masked('Cookie', `sid=${secrets.cookie}`)), 'the masked Cookie value is in the raw stream');
    assert.ok(stream.includes(masked('Set-Cookie', setCookieValue(secrets))), 'the masked Set-Cookie value is in the raw stream');
    assert.ok(stream.includes(`GET /set-cookie?k=${secrets.query} `), 'the request line travels unmasked (encrypted at rest)');
    assert.deepEqual(paths, ['/set-cookie?k=***'], 'the rows keep the parameter names');
  });

  test('with --raw-secrets keep and --keep-query-values they are in the stream and the rows, and still not in the NATS store files', async () => {
    const secrets = newSecrets();
    const { dataDir: dir, paths, stream } = await capture(['--raw-secrets', 'keep', '--keep-query-values'], secrets);
    assert.deepEqual(paths, [`/set-cookie?k=${secrets.query}`], 'the rows keep the query values');
    for (const h of headerSecrets(secrets)) assert.ok(stream.includes(h), `in the raw stream: ${h}`);
    assert.ok(filesContaining(dir, secrets.query).some((f) => !f.startsWith('nats/')), 'the query value in the ClickHouse files');
    for (const [what, secret] of Object.entries(secrets)) assert.deepEqual(filesContaining(join(dir, 'nats'), secret), [], `${what} in the NATS store files (encrypted at rest)`);
  });
});
