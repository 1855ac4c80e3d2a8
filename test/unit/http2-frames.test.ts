/**
 * Http2FrameParser on its own: framing, padding and prefix fields stripped, control
 * payloads capped, gaps inside a frame keeping sync and gaps between frames losing it,
 * and resynchronisation only at syscall boundaries on plausible frame headers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StreamEvent } from '../../processors/l7/reassembly.js';
import {
  CONTROL_PAYLOAD_BYTES, FrameFlags, FrameType, Http2FrameParser, PREFACE, frameHeaderValid,
  type Http2FrameHooks,
} from '../../processors/http2/frames.js';
import { frame } from '../fixtures/http2/fixture.js';

/** Parser events as readable lines. */
class Trace {
  readonly lines: string[] = [];
  readonly parser: Http2FrameParser;
  private pos = 0;
  /** Resynchronisation accepts only what this allows. */
  allow: (type: number, streamId: number) => boolean = () => true;

  constructor(fromStart = true) {
    const hooks: Http2FrameHooks = {
      onPreface: (pos) => this.lines.push(`preface@${pos}`),
      onFrameStart: (f) => this.lines.push(`start ${f.type}/${f.streamId} len=${f.length} @${f.pos}${f.resynced ? ' resynced' : ''}`),
      onContent: (f, chunk, len) => this.lines.push(`content ${f.type}/${f.streamId} ${chunk ? JSON.stringify(chunk.toString('latin1')) : `gap(${len})`}`),
      onFrameEnd: (f, payload) => this.lines.push(`end ${f.type}/${f.streamId} pad=${f.padLength} content=${f.contentLength} lost=${f.lostBytes}${f.malformed ? ' malformed' : ''}${payload.length ? ` payload=${payload.length}` : ''}`),
      onDesync: (cause) => this.lines.push(`desync ${cause}`),
      plausible: (type, _flags, streamId) => this.allow(type, streamId),
    };
    this.parser = new Http2FrameParser(hooks, { fromStart });
  }

  data(bytes: Buffer, syscallStart = true, at = this.pos): this {
    const ev: StreamEvent = { type: 'data', pos: at, data: bytes, tsNs: 1, syscallStart };
    this.parser.push(ev);
    this.pos = at + bytes.length;
    return this;
  }

  /** Feed `bytes` one byte per event, the first one a syscall start. */
  bytewise(bytes: Buffer): this {
    for (let i = 0; i < bytes.length; i++) this.data(bytes.subarray(i, i + 1), i === 0);
    return this;
  }

  gap(len: number): this {
    this.parser.push({ type: 'gap', pos: this.pos, len, tsNs: 1, cause: 'lost' });
    this.pos += len;
    return this;
  }
}

const headers = (id: number, block: string, flags = FrameFlags.END_HEADERS): Buffer => frame(FrameType.HEADERS, flags, id, Buffer.from(block));
const data = (id: number, body: string, flags = 0): Buffer => frame(FrameType.DATA, flags, id, Buffer.from(body));
const ping = (): Buffer => frame(FrameType.PING, 0, 0, Buffer.alloc(8));

test('preface, then frames; content is streamed, control payloads are delivered at the end', () => {
  const t = new Trace().data(Buffer.concat([PREFACE, frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(6)), headers(1, 'HB'), data(1, 'body', 1)]));
  assert.deepEqual(t.lines, [
    'preface@24',
    'start 4/0 len=6 @24', 'end 4/0 pad=0 content=6 lost=0 payload=6',
    'start 1/1 len=2 @39', 'content 1/1 "HB"', 'end 1/1 pad=0 content=2 lost=0',
    'start 0/1 len=4 @50', 'content 0/1 "body"', 'end 0/1 pad=0 content=4 lost=0',
  ]);
  assert.equal(t.parser.stats.frames, 3);
  assert.equal(t.parser.idle, true);
});

test('a server direction from its start begins with a frame; byte by byte gives the same events', () => {
  const bytes = Buffer.concat([frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(0)), headers(1, 'x')]);
  const whole = new Trace().data(bytes).lines;
  assert.deepEqual(new Trace().bytewise(bytes).lines.filter((l) => !l.startsWith('content')), whole.filter((l) => !l.startsWith('content')));
  assert.deepEqual(whole, ['start 4/0 len=0 @0', 'end 4/0 pad=0 content=0 lost=0', 'start 1/1 len=1 @9', 'content 1/1 "x"', 'end 1/1 pad=0 content=1 lost=0']);
});

test('padding, HEADERS priority and PUSH_PROMISE promised id are stripped', () => {
  const padded = Buffer.concat([Buffer.from([3]), Buffer.from([0, 0, 0, 0, 9]), Buffer.from('HB'), Buffer.alloc(3)]);
  const pp = Buffer.concat([Buffer.from([1]), Buffer.from([0, 0, 0, 2]), Buffer.from('PP'), Buffer.alloc(1)]);
  const t = new Trace().data(Buffer.concat([
    frame(FrameType.HEADERS, FrameFlags.END_HEADERS | FrameFlags.PADDED | FrameFlags.PRIORITY, 1, padded),
    frame(FrameType.PUSH_PROMISE, FrameFlags.END_HEADERS | FrameFlags.PADDED, 1, pp),
    frame(FrameType.DATA, FrameFlags.PADDED, 1, Buffer.from([0])),
  ]));
  assert.deepEqual(t.lines.filter((l) => !l.startsWith('start')), [
    'content 1/1 "HB"', 'end 1/1 pad=3 content=2 lost=0',
    'content 5/1 "PP"', 'end 5/1 pad=1 content=2 lost=0',
    'end 0/1 pad=0 content=0 lost=0',
  ]);
});

test('Pad Length beyond the payload: the frame is skipped by its length, sync is kept', () => {
  const t = new Trace().data(Buffer.concat([frame(FrameType.DATA, FrameFlags.PADDED, 1, Buffer.from([9, 1, 2])), ping()]));
  assert.deepEqual(t.lines, ['start 0/1 len=3 @0', 'end 0/1 pad=0 content=0 lost=0 malformed', 'start 6/0 len=8 @12', 'end 6/0 pad=0 content=8 lost=0 payload=8']);
  assert.equal(t.parser.stats.frameErrors.padding, 1);
});

test('control payloads are held up to CONTROL_PAYLOAD_BYTES; unknown frame types are skipped', () => {
  const t = new Trace().data(Buffer.concat([
    frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(6 * 500)), frame(0x42, 0xff, 7, Buffer.alloc(100)), ping(),
  ]));
  assert.deepEqual(t.lines, [
    'start 4/0 len=3000 @0', `end 4/0 pad=0 content=3000 lost=0 payload=${CONTROL_PAYLOAD_BYTES}`,
    'start 66/7 len=100 @3009', 'end 66/7 pad=0 content=100 lost=0',
    'start 6/0 len=8 @3118', 'end 6/0 pad=0 content=8 lost=0 payload=8',
  ]);
  assert.ok(t.parser.bufferedBytes <= CONTROL_PAYLOAD_BYTES);
  assert.equal(t.parser.stats.frameTypes.unknown, 1);
});

test('a frame header breaking its type rules loses sync', () => {
  const t = new Trace().data(Buffer.concat([frame(FrameType.PING, 0, 0, Buffer.alloc(7)), ping()]));
  assert.deepEqual(t.lines, ['desync parse_error']);
  assert.equal(t.parser.stats.frameErrors.header, 1);
  assert.equal(t.parser.stats.discardedBytes, 9 + 7 + 17);
});

test('a direction starting with P that is not the preface loses sync', () => {
  const t = new Trace().data(Buffer.from('PRI * HTTP/1.1\r\n'));
  assert.deepEqual(t.lines, ['desync parse_error']);
  assert.equal(t.parser.stats.frameErrors.preface, 1);
});

test('a gap inside a frame keeps sync; its content is reported unseen', () => {
  const body = data(1, 'x'.repeat(100), FrameFlags.END_STREAM);
  const t = new Trace().data(body.subarray(0, 30)).gap(70).data(body.subarray(100), false).data(ping());
  assert.deepEqual(t.lines, [
    'start 0/1 len=100 @0', `content 0/1 "${'x'.repeat(21)}"`, 'content 0/1 gap(70)', `content 0/1 "${'x'.repeat(9)}"`,
    'end 0/1 pad=0 content=100 lost=70', 'start 6/0 len=8 @109', 'end 6/0 pad=0 content=8 lost=0 payload=8',
  ]);
  assert.equal(t.parser.stats.desyncs.gap, 0);
});

test('a gap over the Pad Length: the rest of the payload counts as content', () => {
  const body = frame(FrameType.DATA, FrameFlags.PADDED, 1, Buffer.concat([Buffer.from([4]), Buffer.from('abcdef'), Buffer.alloc(4)]));
  const t = new Trace().data(body.subarray(0, 9)).gap(1).data(body.subarray(10), false);
  assert.deepEqual(t.lines, ['start 0/1 len=11 @0', 'content 0/1 "abcdef\\u0000\\u0000\\u0000\\u0000"', 'end 0/1 pad=0 content=10 lost=1']);
});

test('a gap ending exactly at a frame end keeps sync; one past it loses sync', () => {
  const f = data(1, 'abcdef');
  const keep = new Trace().data(f.subarray(0, 10)).gap(5).data(ping(), false);
  assert.equal(keep.parser.stats.desyncs.gap, 0);
  assert.ok(keep.lines.includes('start 6/0 len=8 @15'));
  const lose = new Trace().data(f.subarray(0, 10)).gap(6).data(ping(), false);
  assert.deepEqual(lose.lines.slice(-2), ['end 0/1 pad=0 content=6 lost=5', 'desync gap']);
  assert.equal(lose.parser.stats.discardedBytes, 17, 'no syscall boundary: the PING is skipped');
});

test('a gap between frames loses sync; a plausible header at the next syscall start resyncs', () => {
  const t = new Trace().data(ping()).gap(100).data(Buffer.from('garbage'), false).data(Buffer.concat([headers(3, 'H'), ping()]));
  assert.deepEqual(t.lines.slice(2), ['desync gap', 'start 1/3 len=1 @124 resynced', 'content 1/3 "H"', 'end 1/3 pad=0 content=1 lost=0', 'start 6/0 len=8 @134', 'end 6/0 pad=0 content=8 lost=0 payload=8']);
  assert.equal(t.parser.stats.resyncs, 1);
  assert.equal(t.parser.stats.discardedBytes, 7);
});

test('resynchronisation rejects implausible headers', () => {
  const implausible: Array<[string, Buffer]> = [
    ['CONTINUATION', frame(FrameType.CONTINUATION, FrameFlags.END_HEADERS, 1, Buffer.from('x'))],
    ['undefined flags', frame(FrameType.DATA, 0x80, 1, Buffer.from('x'))],
    ['unknown type', frame(0x0a, 0, 0, Buffer.alloc(0))],
    ['reserved bit', frame(FrameType.DATA, 0, 0x80000001, Buffer.from('x'))],
    ['too long', frame(FrameType.DATA, 0, 1, Buffer.alloc(16385))],
    ['SETTINGS on a stream', frame(FrameType.SETTINGS, 0, 1, Buffer.alloc(0))],
    ['SETTINGS ACK with payload', frame(FrameType.SETTINGS, FrameFlags.ACK, 0, Buffer.alloc(6))],
    ['DATA on stream 0', frame(FrameType.DATA, 0, 0, Buffer.from('x'))],
    ['WINDOW_UPDATE length', frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(5))],
    ['owner rejects', frame(FrameType.HEADERS, FrameFlags.END_HEADERS, 2, Buffer.from('x'))],
  ];
  for (const [what, bytes] of implausible) {
    const t = new Trace(false);
    t.allow = (type, id) => !(type === FrameType.HEADERS && id % 2 === 0);
    t.data(bytes);
    assert.deepEqual(t.lines, [], what);
    assert.equal(t.parser.stats.resyncs, 0, what);
    assert.equal(t.parser.inSync, false, what);
  }
});

test('a candidate only starts at a syscall boundary and gives way to the next one', () => {
  const h = headers(1, 'H');
  // Mid-syscall bytes never resync; a candidate cut by a new syscall start is dropped.
  const t = new Trace(false).data(h, false).data(h.subarray(0, 5)).data(h);
  assert.deepEqual(t.lines, ['start 1/1 len=1 @15 resynced', 'content 1/1 "H"', 'end 1/1 pad=0 content=1 lost=0']);
  assert.equal(t.parser.stats.discardedBytes, 10 + 5);
});

test('the preface is recognised at a syscall boundary while seeking', () => {
  const t = new Trace(false).data(Buffer.from('HTTP/1.1 101 Switching Protocols\r\n\r\n')).data(PREFACE).data(ping());
  assert.deepEqual(t.lines, ['preface@60', 'start 6/0 len=8 @60', 'end 6/0 pad=0 content=8 lost=0 payload=8']);
});

test('a position discontinuity loses sync', () => {
  const t = new Trace().data(data(1, 'abcdef').subarray(0, 12));
  t.data(ping(), true, 1000);
  assert.deepEqual(t.lines.slice(-3), ['desync discontinuity', 'start 6/0 len=8 @1000 resynced', 'end 6/0 pad=0 content=8 lost=0 payload=8']);
  assert.equal(t.parser.stats.desyncs.discontinuity, 1);
});

test('frames longer than the receiver allows are counted and parsed', () => {
  const t = new Trace().data(data(1, 'x'.repeat(20000)));
  assert.equal(t.parser.stats.frameErrors.oversized, 1);
  assert.equal(t.lines[t.lines.length - 1], 'end 0/1 pad=0 content=20000 lost=0');
  t.parser.maxFrameSize = 32768;
  t.data(data(1, 'x'.repeat(20000)));
  assert.equal(t.parser.stats.frameErrors.oversized, 1);
});

test('frameHeaderValid follows RFC 9113 §6', () => {
  assert.equal(frameHeaderValid(FrameType.RST_STREAM, 0, 1, 4), true);
  assert.equal(frameHeaderValid(FrameType.RST_STREAM, 0, 0, 4), false);
  assert.equal(frameHeaderValid(FrameType.PRIORITY, 0, 1, 4), false);
  assert.equal(frameHeaderValid(FrameType.GOAWAY, 0, 0, 7), false);
  assert.equal(frameHeaderValid(FrameType.SETTINGS, 0, 0, 7), false);
  assert.equal(frameHeaderValid(FrameType.WINDOW_UPDATE, 0, 5, 4), true);
  assert.equal(frameHeaderValid(0x20, 0xff, 5, 4), true);
});
