/**
 * Exactly-once rows across crashes: a processor (the `netrig process` CLI, a child process)
 * is killed with SIGKILL three times in the middle of a stream, restarted on the same data
 * dir and database each time, and finally stopped once it has consumed everything. Every
 * row the stream implies must then be in ClickHouse exactly once: http_requests by (node,
 * conn_id, role, req_pos), connections by conn_id, capture_losses by (run_id, kind, cause,
 * records, ts).
 *
 * The stream (test/helpers/http1-stream.ts) is fed while the processor runs, as an edge
 * would, and each run is killed once a share of the rows is committed (asserted
 * afterwards: some, not all).
 *
 * The embedded engine allows one process per data dir, so the test never opens it itself:
 * it reads rows through `netrig query` (another child) while no processor runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { onExit } from '../helpers/cleanup.js';
import { assertExactlyOnce, committedRows, generate, pendingMessages, publish } from '../helpers/http1-stream.js';
import type { NatsServerHandle } from '../helpers/nats-server.js';
import { natsServerForFile } from '../helpers/nats-hooks.js';
import { ProcessorChild, queryStore as query } from '../helpers/processor-child.js';
import { prng } from '../helpers/prng.js';

let nats: NatsServerHandle;
let nc: NatsConnection;

natsServerForFile((server, conn) => {
  nats = server;
  nc = conn;
});

const SEED = 0x5eed_2024;
const FUNCTIONS = ['http1', 'tcp', 'losses'];
/** Envelopes published at a time while a processor runs, and the pause after each group. */
const FEED_BATCH = 32;
const FEED_PAUSE_MS = 10;
/** Each run is killed once this share of all rows is committed; the last run finishes. */
const KILL_AT = [0.2, 0.45, 0.7];

test('SIGKILL three times mid-stream, restart, and every row is there exactly once', async () => {
  const { envelopes, expected } = generate(SEED);
  const total = expected.http.size + expected.connections.length + expected.losses.length;
  assert.ok(expected.http.size > 3000, `a large stream (${expected.http.size} exchanges, ${envelopes.length} envelopes)`);

  const dataDir = mkdtempSync(join(tmpdir(), `netrig-kill-${process.pid}-`));
  const unregister = onExit(`processor data ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
  const database = `kill_${process.pid}`;
  const children: ProcessorChild[] = [];
  const start = () => {
    const c = new ProcessorChild({ natsUrl: nats.url, dataDir, database, functions: FUNCTIONS });
    children.push(c);
    return c;
  };
  try {
    // The stream is fed as an edge would, a few envelopes at a time, while the processor
    // runs; each run is killed once the rows committed so far pass a share of the total,
    // a seeded few milliseconds later, with the feed going on.
    let next = 0;
    const feed = async () => {
      const batch = envelopes.slice(next, next + FEED_BATCH);
      next += batch.length;
      await publish(nc, batch);
      await new Promise((r) => setTimeout(r, FEED_PAUSE_MS));
    };
    await feed();
    const rng = prng(SEED ^ 0x9e3779b9);
    let before = 0;
    for (const share of KILL_AT) {
      const c = start();
      await c.port;
      // At least one row of its own: a run before it may have overshot this share.
      const goal = Math.max(Math.floor(total * share) - before, 1);
      const deadline = Date.now() + 60_000;
      while ((await c.metric('netrig_processor_rows_total')) < goal) {
        assert.ok(Date.now() < deadline, `run ${children.length} did not commit ${goal} rows in time:\n${c.log()}`);
        if (next < envelopes.length) await feed();
        else await new Promise((r) => setTimeout(r, FEED_PAUSE_MS));
      }
      const killAt = Date.now() + Math.floor(rng() * 40);
      while (Date.now() < killAt && next < envelopes.length) await feed();
      await c.signal('SIGKILL');
      assert.equal(c.child.signalCode, 'SIGKILL', 'the processor was killed, not stopped');
      const committed = await committedRows((sql) => query(dataDir, database, sql), database);
      assert.ok(committed > before && committed < total, `kill ${children.length} landed mid-stream: ${before} < ${committed} < ${total}`);
      before = committed;
    }

    // The last run consumes the rest of the stream, then stops cleanly.
    const c = start();
    await c.port;
    while (next < envelopes.length) await feed();
    const deadline = Date.now() + 120_000;
    let stable = 0;
    let lastRows = -1;
    for (;;) {
      assert.ok(Date.now() < deadline, `the last run did not finish in time:\n${c.log()}`);
      await new Promise((r) => setTimeout(r, 250));
      const rowsNow = await c.metric('netrig_processor_rows_total');
      if (before + rowsNow === total) break;
      const pending = await pendingMessages(nc, database, FUNCTIONS);
      // Short of the expected count: done once nothing is pending and no row came for 2 s.
      stable = pending === 0 && rowsNow === lastRows ? stable + 1 : 0;
      lastRows = rowsNow;
      if (stable >= 8) break;
    }
    assert.equal(await c.signal('SIGTERM'), 0, `the last run stopped cleanly:\n${c.log()}`);

    await assertExactlyOnce((sql) => query(dataDir, database, sql), database, expected, `after ${children.length - 1} kills`);
  } finally {
    for (const c of children) await c.signal('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    unregister();
  }
});
