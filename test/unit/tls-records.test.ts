/**
 * TlsRecordReader: records and handshake messages across any split, what is kept and what
 * skipped, change_cipher_spec in TLS 1.2 and 1.3, alerts, and every reason to stop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_HANDSHAKE_MESSAGE_BYTES, TlsRecordReader, type TlsStopReason } from '../../processors/tls/records.js';
import { alert, appData, ccs, clientHello, handshake, record, serverHello } from '../fixtures/tls/build.js';

interface Seen {
  records: string[];
  messages: string[];
  alerts: string[];
  stops: TlsStopReason[];
}

function reader(opts = {}): { r: TlsRecordReader; seen: Seen } {
  const seen: Seen = { records: [], messages: [], alerts: [], stops: [] };
  const r = new TlsRecordReader({
    onRecord: (type, version, len, tsNs, pos) => seen.records.push(`${type}/${version.toString(16)}/${len}@${pos}t${tsNs}`),
    onHandshake: (type, body, tsNs, pos) => seen.messages.push(`${type}:${body ? body.length : 'skipped'}@${pos}t${tsNs}`),
    onAlert: (level, desc) => seen.alerts.push(`${level}/${desc}`),
    onStop: (reason) => seen.stops.push(reason),
  }, opts);
  return { r, seen };
}

/** Feed `stream` cut at `cuts`; each piece its own event at time = its index. */
function feed(r: TlsRecordReader, stream: Buffer, cuts: number[] = []): void {
  const points = [0, ...cuts, stream.length];
  for (let k = 0; k + 1 < points.length; k++) {
    r.push({ type: 'data', pos: points[k], data: stream.subarray(points[k], points[k + 1]), tsNs: k, syscallStart: true });
  }
}

test('records and messages, the same however the stream is cut', () => {
  const hello = clientHello();
  // A handshake message split across two records, then an unkept message, then app data.
  const msg = handshake(11, Buffer.alloc(300, 1));
  const stream = Buffer.concat([hello, record(22, msg.subarray(0, 100)), record(22, msg.subarray(100)), appData(10)]);
  const whole = reader();
  feed(whole.r, stream);
  assert.deepEqual(whole.seen.messages, ['1:41@5t0', '11:skipped@' + (hello.length + 5) + 't0']);
  assert.equal(whole.seen.records.length, 4);
  for (let a = 1; a < stream.length; a++) {
    const cut = reader();
    feed(cut.r, stream, [a]);
    const strip = (xs: string[]): string[] => xs.map((x) => x.replace(/t\d+$/, ''));
    assert.deepEqual(strip(cut.seen.messages), strip(whole.seen.messages), `cut at ${a}`);
    assert.deepEqual(strip(cut.seen.records), strip(whole.seen.records), `cut at ${a}`);
  }
  // Times are those of the event holding each message's first byte.
  const late = reader();
  feed(late.r, stream, [4, hello.length + 5 + 2]);
  assert.deepEqual(late.seen.messages, ['1:41@5t1', `11:skipped@${hello.length + 5}t1`]);
  assert.equal(whole.r.stats.handshakeMessages, 2);
});

test('TLS 1.2: handshake records after change_cipher_spec are encrypted and skipped', () => {
  const { r, seen } = reader();
  feed(r, Buffer.concat([serverHello(), ccs(), record(22, Buffer.alloc(40, 0x99)), alert(2, 20)]));
  assert.deepEqual(seen.messages.map((m) => m.split('@')[0]), ['2:38']);
  assert.deepEqual(seen.alerts, []); // an alert after change_cipher_spec is encrypted too
  assert.equal(r.stats.changeCipherSpec, 1);
  assert.deepEqual(seen.stops, []);
});

test('TLS 1.3: change_cipher_spec is a dummy once the caller says so', () => {
  const { r, seen } = reader();
  r.encryptedAfterCcs = false;
  feed(r, Buffer.concat([clientHello(), ccs(), clientHello()]));
  assert.deepEqual(seen.messages.map((m) => m.split('@')[0]), ['1:41', '1:41']);
});

test('plaintext alerts, split or not', () => {
  const { r, seen } = reader();
  const s = Buffer.concat([alert(2, 40)]);
  feed(r, s, [6]);
  assert.deepEqual(seen.alerts, ['2/40']);
});

test('zero-length records and messages', () => {
  const { r, seen } = reader();
  feed(r, Buffer.concat([serverHello(), record(23, Buffer.alloc(0)), record(22, handshake(14, Buffer.alloc(0)))]));
  assert.deepEqual(seen.messages.map((m) => m.split('@')[0]), ['2:38', '14:skipped']);
  assert.equal(seen.records.length, 3);
});

test('why a reader stops', () => {
  const cases: Array<[string, Buffer | null, TlsStopReason, object?]> = [
    ['http', Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'not_tls'],
    ['wrong major version', Buffer.from([22, 2, 1, 0, 5]), 'not_tls'],
    ['record version 0x0300', Buffer.from([22, 3, 0, 0, 5]), 'not_tls'],
    ['starts with application data', appData(5), 'not_tls'],
    ['first message not a hello', record(22, handshake(11, Buffer.alloc(3))), 'not_tls'],
    ['record too long', Buffer.from([22, 3, 1, 0x48, 0x01]), 'not_tls'],
    ['bad later record', Buffer.concat([clientHello(), Buffer.from([24, 3, 3, 0, 1, 0])]), 'bad_record'],
    ['later record too long', Buffer.concat([clientHello(), Buffer.from([23, 3, 3, 0x48, 0x01])]), 'bad_record'],
    ['interleaved', Buffer.concat([record(22, handshake(1, Buffer.alloc(50)).subarray(0, 20)), appData(3)]), 'interleaved'],
    ['oversize hello', record(22, Buffer.from([1, 1, 0, 1])), 'oversize_message'],
    ['midlife', clientHello(), 'midstream', { midlife: true }],
  ];
  for (const [what, bytes, reason, opts] of cases) {
    const { r, seen } = reader(opts);
    feed(r, bytes!);
    assert.deepEqual(seen.stops, [reason], what);
    assert.equal(r.stopped, reason, what);
    assert.equal(r.bufferedBytes, 0, what);
  }
  // A kept message just under the cap is fine; unkept messages of any size are skipped.
  const big = reader();
  feed(big.r, Buffer.concat([record(22, handshake(1, Buffer.alloc(16000))), record(22, Buffer.from([11, 0xff, 0xff, 0xff]))]));
  assert.deepEqual(big.seen.stops, []);
  assert.ok(MAX_HANDSHAKE_MESSAGE_BYTES >= 16000);
  // Not at position 0, and gaps.
  const mid = reader();
  mid.r.push({ type: 'data', pos: 10, data: clientHello(), tsNs: 1, syscallStart: true });
  assert.deepEqual(mid.seen.stops, ['midstream']);
  const gap = reader();
  gap.r.push({ type: 'data', pos: 0, data: clientHello().subarray(0, 9), tsNs: 1, syscallStart: true });
  gap.r.push({ type: 'gap', pos: 9, len: 10, tsNs: 2, cause: 'lost' });
  assert.deepEqual(gap.seen.stops, ['gap']);
  // stop() is quiet and final.
  const st = reader();
  st.r.stop();
  feed(st.r, clientHello());
  assert.deepEqual([st.seen.stops, st.seen.records], [[], []]);
});

test('a kept message larger than a record is reassembled up to the cap', () => {
  const body = Buffer.alloc(40000, 5);
  const msg = handshake(1, body);
  const parts: Buffer[] = [];
  for (let i = 0; i < msg.length; i += 16384) parts.push(record(22, msg.subarray(i, i + 16384)));
  const { r, seen } = reader();
  feed(r, Buffer.concat(parts), [7, 20000]);
  assert.deepEqual(seen.messages.map((m) => m.split('@')[0]), ['1:40000']);
});
