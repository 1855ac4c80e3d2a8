/**
 * Hostile envelopes through a lane running every function: forged record sizes (one near
 * 2^32 used to wrap the next offset back onto the record and spin forever), forged
 * envelope fields, and real envelopes mutated at random. Every message is handled and
 * passed, every rejected one counted and dead-lettered, and no exception leaves the lane.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logger } from '../../lib/logger.js';
import { FUNCTIONS } from '../../processors/index.js';
import { ConnectionBudget } from '../../processors/l7/connection-table.js';
import type { DeadLetters } from '../../processors/runtime/dlq.js';
import { Lane } from '../../processors/runtime/lane.js';
import { ProcessorMetrics } from '../../processors/runtime/metrics.js';
import { decodeEnvelope, encodeEnvelope, type Envelope } from '../../schemas/envelope.js';
import { REC_HDR } from '../../schemas/layouts.js';
import { DataFlags, nextRecordOffset, Role } from '../../schemas/records.js';
import { Rng } from '../helpers/prng.js';
import { connInfo, envelope, sockData } from '../helpers/records.js';

async function harness() {
  const metrics = new ProcessorMetrics();
  const dead: string[] = [];
  const dlq = { send: (reason: string) => dead.push(reason) } as unknown as DeadLetters;
  const lane = await Lane.create({
    functions: Object.values(FUNCTIONS), shard: 0, query: async () => [], streamId: 's@1', resumeFrom: 1, committed: new Map(),
    budget: new ConnectionBudget(10_000), metrics, dlq, log: logger('test'),
  });
  let seq = 0;
  return {
    lane, metrics, dead,
    handle(data: Uint8Array) {
      seq++;
      lane.handle({ seq, subject: 'netrig.raw.r.n.0', data, reply: `ack.${seq}` });
      assert.equal(lane.processedSeq, seq, 'every message is handled and passed');
      lane.takeRows();
    },
    async failures(failure: string): Promise<number> {
      return (await metrics.decodeFailures.get()).values.filter((v) => v.labels.failure === failure).reduce((n, v) => n + v.value, 0);
    },
  };
}

/** A real envelope: an HTTP/1 exchange on one connection. */
function exchange(seq: number, cookie: number): Envelope {
  const t = 5e9 + seq * 1e6;
  const tuple = { saddr: '10.0.0.1', sport: 40000 + (cookie % 20000), daddr: '10.0.0.2', dport: 80 };
  const req = Buffer.from(`GET /x/${seq} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n`);
  const resp = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  return envelope({
    seq, mono: t + 1e5,
    records: [
      connInfo({ tsNs: t, connId: cookie, tgid: 7 }, tuple, Role.Client, 'curl'),
      sockData({ tsNs: t + 10, connId: cookie, tgid: 7 }, { direction: 0, posBytes: 0, payload: req, dataFlags: DataFlags.Last }),
      sockData({ tsNs: t + 20, connId: cookie, tgid: 7 }, { direction: 1, posBytes: 0, payload: resp, dataFlags: DataFlags.Last }),
    ],
  });
}

test('a forged record size is refused, whatever its value: near 2^32 it no longer wraps back onto the record', async () => {
  const h = await harness();
  for (const size of [0xffff_fff9, 0xffff_ffff, 0x8000_0008, 0x7fff_fff8, 4096, 8]) {
    const e = exchange(1, 1);
    e.records.writeUInt32LE(size, REC_HDR.fields.size_bytes);
    h.handle(encodeEnvelope(e));
  }
  assert.equal(await h.failures('bad_size'), 6);
  assert.deepEqual(h.dead, Array(6).fill('record_bad_size'));
});

test('forged envelope fields are refused and dead-lettered: boot id, names, clock, counts, maps', async () => {
  const h = await harness();
  const forged: Partial<Record<keyof Envelope, unknown>>[] = [
    { boot: 'not-a-boot-id!' }, { boot: 'x'.repeat(65) }, { node: 'a\nb' }, { region: 'r'.repeat(257) },
    { clock: [1e12, 0] }, { clock: [1_700_000_000, 1e9] }, { clock: [1, 2, 3] }, { mono: -1 }, { mono: 2e18 },
    { seq: 2 ** 53 }, { shard: 70_000 }, { count: 1.5 }, { lost: [{ kind: 1, cause: 'x', records: -1 }] },
    { lost: Array(5000).fill({ kind: 1, cause: 'x', records: 1 }) }, { ksyms: { a: 7 } }, { drop_reasons: 'NOT_A_MAP' },
    { capture: { path: 'socket', features: 'all' } }, { records: 'text' },
  ];
  for (const [i, f] of forged.entries()) h.handle(encodeEnvelope({ ...exchange(i + 1, i + 1), ...f } as Envelope));
  assert.equal(await h.failures('bad_field'), forged.length);
  assert.deepEqual(h.dead, Array(forged.length).fill('envelope_bad_field'));
});

test('5000 real envelopes mutated at random: each handled, each refusal counted and dead-lettered, no lane error', async () => {
  const h = await harness();
  const rng = new Rng(20261206);
  let refused = 0;
  for (let i = 1; i <= 5000; i++) {
    const e = exchange(i, 1 + rng.int(50));
    let data: Buffer;
    if (rng.int(2)) {
      // Bytes of the raw records: sizes, kinds, versions, positions, lengths, payload.
      for (let k = 1 + rng.int(8); k > 0; k--) e.records[rng.int(e.records.length)] = rng.int(256);
      data = encodeEnvelope(e);
    } else {
      // Bytes of the msgpack encoding itself.
      data = Buffer.from(encodeEnvelope(e));
      for (let k = 1 + rng.int(4); k > 0; k--) data[rng.int(data.length)] = rng.int(256);
    }
    if (typeof decodeEnvelope(data) === 'string') refused++;
    h.handle(data);
  }
  const envelopeFailures = (await h.metrics.decodeFailures.get()).values
    .filter((v) => v.labels.kind === 'envelope' && v.labels.failure !== 'function_error')
    .reduce((n, v) => n + v.value, 0);
  assert.ok(refused > 100, `the mutations reach the envelope checks (${refused} refused)`);
  assert.equal(envelopeFailures, refused, 'every refused envelope is counted');
  assert.equal(h.dead.filter((r) => r.startsWith('envelope_')).length, refused, 'and dead-lettered');
  assert.equal(await h.failures('lane_error'), 0, 'no exception reached the lane');
  assert.equal(await h.failures('function_error'), 0, 'no function threw');
  assert.ok(h.lane.connections().tracked <= 10_000);
});

test('records stamped in the future pin their message only until node time passes the pin age, not forever', async () => {
  const h = await harness();
  const future = 2 ** 62;
  const tuple = { saddr: '10.0.0.1', sport: 40001, daddr: '10.0.0.2', dport: 80 };
  // An owner and a request never answered, both stamped far past the envelope's sealing.
  h.handle(encodeEnvelope(envelope({
    seq: 1, mono: 5e9,
    records: [
      connInfo({ tsNs: future, connId: 9, tgid: 7 }, tuple, Role.Client, 'curl'),
      sockData({ tsNs: future, connId: 9, tgid: 7 }, { direction: 0, posBytes: 0, payload: Buffer.from('GET / HTTP/1.1\r\nHost: h\r\n\r\n'), dataFlags: DataFlags.Last }),
    ],
  })));
  assert.equal(h.lane.ackLimit(), 0, 'the open request pins its message');
  // Node time moves on past every pin age (a heartbeat of the same node).
  h.handle(encodeEnvelope(envelope({ seq: 2, mono: 5e9 + 600e9, records: [] })));
  assert.equal(h.lane.ackLimit(), 2, 'the pin is released and everything may be acknowledged');
});

test('a node whose time never moves on again holds its shard\'s acknowledgements at most 100,000 messages back', async () => {
  const h = await harness();
  const tuple = { saddr: '10.0.0.1', sport: 40001, daddr: '10.0.0.2', dport: 80 };
  // A request never answered on a node that then goes silent (its edge gone, or its name forged).
  h.handle(encodeEnvelope(envelope({
    seq: 1, node: 'gone', mono: 5e9,
    records: [
      connInfo({ tsNs: 5e9, connId: 9, tgid: 7 }, tuple, Role.Client, 'curl'),
      sockData({ tsNs: 5e9, connId: 9, tgid: 7 }, { direction: 0, posBytes: 0, payload: Buffer.from('GET / HTTP/1.1\r\nHost: h\r\n\r\n'), dataFlags: DataFlags.Last }),
    ],
  })));
  assert.equal(h.lane.ackLimit(), 0, 'the open request pins its message');
  // Another node's heartbeats go on, its time moving a second per message.
  const last = 110_000;
  let released = 0;
  for (let n = 2; n <= last; n++) {
    h.handle(encodeEnvelope(envelope({ seq: n, node: 'alive', mono: 5e9 + n * 1e9, records: [] })));
    if (!released && h.lane.ackLimit() > 0) released = n;
  }
  assert.ok(released > 100_000 && released <= 100_001 + 4096, `released once 100,000 messages passed it, at a check (at ${released})`);
  assert.equal(h.lane.ackLimit(), last, 'everything may be acknowledged');
  assert.equal(await h.failures('lane_error'), 0);
});

test('a message with several bad records is rejected once, under its first reason; forged kinds share one label', async () => {
  const h = await harness();
  const e = exchange(1, 1);
  e.records[REC_HDR.fields.version] = 9; // the owner: unknown version
  const second = nextRecordOffset(0, e.records.readUInt32LE(REC_HDR.fields.size_bytes));
  e.records[second + REC_HDR.fields.version] = 9; // the request too
  h.handle(encodeEnvelope(e));
  for (let kind = 0x100; kind < 0x100 + 500; kind++) {
    const u = exchange(kind, kind);
    u.records.writeUInt16LE(kind, REC_HDR.fields.kind);
    h.handle(encodeEnvelope(u));
  }
  const rejected = (await h.metrics.messagesRejected.get()).values;
  assert.deepEqual(rejected.map((v) => [v.labels.reason, v.value]), [['record_unknown_version', 1]]);
  assert.deepEqual(h.dead, ['record_unknown_version']);
  assert.equal(await h.failures('unknown_version'), 2, 'each bad record counted');
  const unknown = (await h.metrics.decodeFailures.get()).values.filter((v) => v.labels.failure === 'unknown_kind');
  assert.deepEqual(unknown.map((v) => [v.labels.kind, v.value]), [['unknown', 500]], '500 forged kinds, one label set');
});
