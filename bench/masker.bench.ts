/**
 * The edge's secret masker on the drain path: Batcher.add with the masker against without it,
 * same records, same run. Three loads: HTTP/1 request and response heads with secrets (the
 * masker's work), 16 KiB HTTP/1 bodies (outside header blocks: one indexOf per record), and
 * 16 KiB of binary (TLS ciphertext, HTTP/2 frames). A micro benchmark: one core, no kernel.
 */
import { Batcher } from '../edge/batcher.js';
import { SecretMasker } from '../edge/secret-masker.js';
import { REC_HDR, SOCK_DATA_REC } from '../schemas/layouts.js';
import { RecordKind } from '../schemas/records.js';
import { sockData } from '../test/helpers/records.js';
import { prng } from '../test/helpers/prng.js';
import { median, type Benchmark, type BenchContext } from './harness.js';

const CONNS = 1024;
const ROUNDS = 5;
const MIN_MS = 200;

const REQUEST = 'GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n'
  + 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl\r\nCookie: sid=4f1a9c; theme=dark\r\n\r\n';
const RESPONSE = 'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: 2\r\n'
  + 'Set-Cookie: sid=4f1a9c; Path=/; HttpOnly\r\nConnection: keep-alive\r\n\r\n{}';

/** Records of `conns` connections, each one `payloads` exchange at consecutive positions. */
function records(payloads: { dir: 0 | 1; bytes: Buffer }[]): Buffer[] {
  const out: Buffer[] = [];
  for (let c = 0; c < CONNS; c++) {
    const pos = [0, 0];
    for (const p of payloads) {
      const r = sockData({ tsNs: 1, connId: 1000 + c }, { direction: p.dir, posBytes: pos[p.dir], payload: p.bytes });
      r.writeUInt16LE(RecordKind.SockData, 0);
      pos[p.dir] += p.bytes.length;
      out.push(r);
    }
  }
  return out;
}

/**
 * Nanoseconds per record through Batcher.add, median of ROUNDS. Every pass moves each record's
 * position on by what its connection sent in the pass before, so the masker sees one long
 * conversation per connection rather than gaps.
 */
function nsPerRecord(recs: Buffer[], masker: boolean): number {
  const ring = Buffer.alloc(recs.reduce((n, r) => n + ((r.length + 7) & ~7), 0));
  const offsets: number[] = [];
  let at = 0;
  for (const r of recs) {
    r.copy(ring, at);
    offsets.push(at);
    at += (r.length + 7) & ~7;
  }
  const perPass = new Map<string, number>();
  for (let i = 0; i < recs.length; i++) {
    const key = `${recs[i].readUInt32LE(REC_HDR.fields.conn_id)}.${recs[i][SOCK_DATA_REC.fields.direction]}`;
    perPass.set(key, (perPass.get(key) ?? 0) + recs[i].readUInt32LE(SOCK_DATA_REC.fields.cap_bytes));
  }
  const advance = recs.map((r) => perPass.get(`${r.readUInt32LE(REC_HDR.fields.conn_id)}.${r[SOCK_DATA_REC.fields.direction]}`)!);
  const b = new Batcher({ shards: 16, maxBatchBytes: 256 * 1024, maxBatchRecords: 2048, masker: masker ? new SecretMasker() : undefined }, () => undefined);
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    let n = 0;
    let passTime = 0;
    while (passTime < MIN_MS) {
      const t0 = performance.now();
      for (let i = 0; i < recs.length; i++) b.add(ring, offsets[i], recs[i].length, 0);
      b.flush();
      passTime += performance.now() - t0;
      n += recs.length;
      // Untimed: the positions of the next pass.
      for (let i = 0; i < recs.length; i++) {
        const o = offsets[i] + SOCK_DATA_REC.fields.pos_bytes;
        ring.writeUInt32LE(ring.readUInt32LE(o) + advance[i], o);
      }
    }
    times.push((passTime * 1e6) / n);
  }
  return median(times);
}

async function run(ctx: BenchContext): Promise<void> {
  const rand = prng(7);
  const binary = Buffer.alloc(16384);
  for (let i = 0; i < binary.length; i++) binary[i] = Math.floor(rand() * 256);
  const body = Buffer.from('{"id": 1, "name": "item", "tags": ["a", "b"]}\n'.repeat(400).slice(0, 16384 - 200), 'latin1');
  const loads: [string, Buffer[]][] = [
    ['HTTP/1 heads with secrets', records([{ dir: 0, bytes: Buffer.from(REQUEST) }, { dir: 1, bytes: Buffer.from(RESPONSE) }])],
    ['HTTP/1 16 KiB JSON bodies', records([{ dir: 1, bytes: Buffer.concat([Buffer.from(RESPONSE.replace('Content-Length: 2', `Content-Length: ${body.length + 2}`)), body]) }])],
    ['16 KiB binary (ciphertext)', records([{ dir: 1, bytes: binary }])],
  ];
  for (const [name, recs] of loads) {
    const off = nsPerRecord(recs, false);
    const on = nsPerRecord(recs, true);
    const bytes = recs.reduce((n, r) => n + r.length, 0) / recs.length;
    ctx.line(`${name.padEnd(28)} without ${off.toFixed(0).padStart(6)} ns/record   with ${on.toFixed(0).padStart(6)} ns/record   masking +${(on - off).toFixed(0)} ns (${((on - off) / bytes).toFixed(3)} ns/byte)`);
  }
}

export const benchmark: Benchmark = {
  name: 'masker',
  title: 'edge secret masker: Batcher.add with the masker vs without, per record',
  run,
};
