/**
 * The sink's insert (processors/runtime/sink.ts insertBlock) against the real engine, both
 * ways a processor reaches it: the embedded engine's raw insert (settings in the INSERT's
 * SETTINGS clause) and a ClickHouse endpoint by URL (settings in the request's URL), here
 * `netrig up`'s endpoint over the same engine, as its writer. On each: a block inserted again
 * with its deduplication token is stored once, another token stores it again, every value
 * arrives as it was sent, and a row the engine cannot take is refused with a code the sink
 * recognises (so the block is split and the row dead-lettered, not retried forever).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isRefusedInsert, openClickHouse, type ClickHouse } from '../../lib/clickhouse.js';
import type { ClickHouseEndpoint } from '../../lib/clickhouse-endpoint.js';
import { WRITER_USER } from '../../lib/clickhouse-endpoint.js';
import type { Row } from '../../processors/runtime/function.js';
import { insertBlock } from '../../processors/runtime/sink.js';
import { startTestEndpoint } from '../helpers/endpoint.js';
import { freshClickHouse, removeClickHouseData } from '../helpers/processor-run.js';

const WRITER_PASSWORD = randomBytes(12).toString('hex');

let embedded: ClickHouse;
let endpoint: ClickHouseEndpoint;
let byUrl: ClickHouse;

before(async () => {
  embedded = await freshClickHouse('sink');
  endpoint = await startTestEndpoint(embedded, WRITER_PASSWORD);
  byUrl = await openClickHouse({ url: `http://127.0.0.1:${endpoint.port}`, user: WRITER_USER, password: WRITER_PASSWORD, database: embedded.database });
});

after(async () => {
  await byUrl?.close();
  await endpoint?.stop();
  await embedded?.close();
  removeClickHouseData();
});

/** Rows with the kinds of values netrig's rows carry: nanosecond times as decimal strings, addresses, arrays, text that needs escaping. */
function rows(n: number, tag: string): Row[] {
  return Array.from({ length: n }, (_, i) => ({
    ts: `${1_765_000_000 + i}${String(123_456_789 + i).padStart(9, '0')}`,
    addr: i % 2 ? '::ffff:10.0.0.1' : 'fe80::1',
    n: i,
    big: 2 ** 53 - 1 - i,
    path: `/${tag}/${i}?q="x"\\\n\t\u00e9\u{1F600}`,
    answers: [`a${i}`, 'b'],
  }));
}

async function table(name: string): Promise<string> {
  await embedded.client.command({
    query: `CREATE TABLE ${embedded.database}.${name} (ts DateTime64(9, 'UTC'), addr IPv6, n UInt32, big UInt64, path String, answers Array(String))
            ENGINE = MergeTree ORDER BY n SETTINGS non_replicated_deduplication_window = 100`,
  });
  return name;
}

async function stored(name: string): Promise<{ count: number; rows: Record<string, unknown>[] }> {
  const rs = await embedded.client.query({ query: `SELECT toString(ts) AS ts, toString(addr) AS addr, n, toString(big) AS big, path, answers FROM ${embedded.database}.${name} ORDER BY n, ts`, format: 'JSONEachRow' });
  const all = await rs.json<Record<string, unknown>>();
  return { count: all.length, rows: all };
}

for (const way of ['embedded engine (raw insert)', 'server by URL (netrig up endpoint, writer)'] as const) {
  describe(`insertBlock into the ${way}`, () => {
    const ch = () => (way.startsWith('embedded') ? embedded : byUrl);
    const tag = way.startsWith('embedded') ? 'e' : 'u';

    test('a block inserted again with its token is stored once; another token stores it again', async () => {
      const t = await table(`dedup_${tag}`);
      const block = rows(50, tag);
      await insertBlock(ch(), t, block, `tok-${tag}-1`);
      await insertBlock(ch(), t, block, `tok-${tag}-1`);
      assert.equal((await stored(t)).count, 50);
      await insertBlock(ch(), t, block, `tok-${tag}-2`);
      assert.equal((await stored(t)).count, 100);
    });

    test('every value arrives as sent', async () => {
      const t = await table(`values_${tag}`);
      const block = rows(3, tag);
      await insertBlock(ch(), t, block, `values-${tag}`);
      const got = (await stored(t)).rows;
      assert.deepEqual(got.map((r) => r.path), block.map((r) => r.path));
      assert.deepEqual(got.map((r) => r.answers), block.map((r) => r.answers));
      assert.deepEqual(got.map((r) => r.big), block.map((r) => String(r.big)));
      assert.deepEqual(got.map((r) => r.addr), ['fe80::1', '::ffff:10.0.0.1', 'fe80::1']);
      assert.deepEqual(got.map((r) => r.ts), ['2025-12-06 05:46:40.123456789', '2025-12-06 05:46:41.123456790', '2025-12-06 05:46:42.123456791']);
    });

    test('a row the engine cannot take is refused with a code the sink splits on', async () => {
      const t = await table(`refused_${tag}`);
      const bad = [...rows(2, tag), { ...rows(1, tag)[0], addr: 'not an address' }];
      await assert.rejects(insertBlock(ch(), t, bad, `refused-${tag}`), (err) => {
        assert.ok(isRefusedInsert(err), `not recognised as refused: ${(err as Error).message}`);
        return true;
      });
      assert.equal((await stored(t)).count, 0, 'the block lands whole or not at all');
    });
  });
}
