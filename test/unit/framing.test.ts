/**
 * FramingReader on a toy format: the same frames however records are split (whole, byte by
 * byte, at every boundary), gaps inside a payload keeping sync and gaps in a header or past
 * a frame's end losing it, resync by probe at syscall starts only, header caps, a
 * preface, a first-bytes check, and formats that cannot resynchronise.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataFlags } from '../../schemas/records.js';
import type { Cursor } from '../../processors/l7/cursor.js';
import { FramingReader, type FrameFormat, type FrameSink, type FramingLoss } from '../../processors/l7/framing.js';
import { StreamReassembler, type StreamEvent } from '../../processors/l7/reassembly.js';
import { byteByByte, splitAt, type Rec } from '../helpers/splits.js';

/** Largest payload the toy format allows. */
const MAX = 64;
/** First payload byte of every toy frame: what a resync probe looks for past the header. */
const SIGNATURE = 0x55; // 'U'

/** Toy frames: a kind byte 0xf0–0xff, a 16-bit length, the payload (starting with 'U'). */
const TOY: FrameFormat = {
  headerBytes: 3,
  probeBytes: 4,
  preface: null,
  payloadLength: (h) => {
    h.skip(1);
    return h.u16be();
  },
  valid: (h, len) => (h.u8() & 0xf0) === 0xf0 && len <= MAX,
  plausible: (p, len) => {
    const kind = p.u8();
    p.skip(2);
    return (kind & 0xf0) === 0xf0 && len <= MAX && p.u8() === SIGNATURE;
  },
  opens: null,
};

const toy = (kind: number, payload: string): Buffer => {
  const b = Buffer.alloc(3);
  b[0] = kind;
  b.writeUInt16BE(payload.length, 1);
  return Buffer.concat([b, Buffer.from(payload, 'latin1')]);
};

/** Reader events as readable lines; payload chunks and skipped bytes merged, since splits cut them anywhere. */
class Trace implements FrameSink {
  readonly lines: string[] = [];
  readonly reader: FramingReader;
  private pos = 0;

  constructor(format: FrameFormat = TOY, fromStart = true) {
    this.reader = new FramingReader(format, this, fromStart);
  }

  onPreface(endPos: number, tsNs: number, resynced: boolean): void {
    this.lines.push(`preface@${endPos} t${tsNs}${resynced ? ' resynced' : ''}`);
  }

  onFrameStart(h: Cursor, len: number, pos: number, tsNs: number, resynced: boolean): void {
    this.lines.push(`start ${h.u8().toString(16)} len=${len} @${pos} t${tsNs}${resynced ? ' resynced' : ''}`);
  }

  onPayload(chunk: Buffer | null, len: number): void {
    const text = chunk ? chunk.toString('latin1') : `<gap ${len}>`;
    const last = this.lines.length - 1;
    if (this.lines[last]?.startsWith('payload ')) this.lines[last] += text;
    else this.lines.push(`payload ${text}`);
  }

  onFrameEnd(tsNs: number): void {
    this.lines.push(`end t${tsNs}`);
  }

  onDesync(cause: FramingLoss): void {
    this.lines.push(`desync ${cause}`);
  }

  onSkipped(bytes: number, probeMissed: boolean): void {
    const last = this.lines.length - 1;
    const m = /^skip (\d+)$/.exec(this.lines[last] ?? '');
    if (probeMissed) this.lines.push(`miss ${bytes}`);
    else if (m) this.lines[last] = `skip ${Number(m[1]) + bytes}`;
    else this.lines.push(`skip ${bytes}`);
  }

  data(bytes: Buffer | string, syscallStart = true, tsNs = 1, at = this.pos): this {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
    const ev: StreamEvent = { type: 'data', pos: at, data, tsNs, syscallStart };
    this.reader.push(ev);
    this.pos = at + data.length;
    return this;
  }

  gap(len: number, tsNs = 1): this {
    this.reader.push({ type: 'gap', pos: this.pos, len, tsNs, cause: 'lost' });
    this.pos += len;
    return this;
  }
}

/** One record per syscall, at consecutive positions; each syscall's time is its index + 1. */
function syscalls(...writes: Buffer[]): Rec[] {
  let pos = 0;
  return writes.map((payload, k) => {
    const r: Rec = { dir: 0, posBytes: pos, offsetBytes: 0, lenBytes: payload.length, dataFlags: DataFlags.Last, payload, tsNs: k + 1 };
    pos += payload.length;
    return r;
  });
}

/** Records through a reassembler into a reader, as the processors feed it. */
function run(recs: Rec[], fromStart = true): Trace {
  const t = new Trace(TOY, fromStart);
  const r = new StreamReassembler();
  for (const rec of recs) r.push(rec, (ev) => t.reader.push(ev));
  return t;
}

test('frames are the same whole, byte by byte and split at every boundary', () => {
  const recs = syscalls(
    Buffer.concat([toy(0xf1, 'Uhello'), toy(0xf2, ''), toy(0xf3, 'U')]),
    Buffer.concat([toy(0xf4, 'U'.padEnd(MAX, 'x')), toy(0xf5, 'Ubye')]),
  );
  const whole = run(recs);
  assert.deepEqual(whole.lines, [
    'start f1 len=6 @0 t1', 'payload Uhello', 'end t1',
    'start f2 len=0 @9 t1', 'end t1',
    'start f3 len=1 @12 t1', 'payload U', 'end t1',
    'start f4 len=64 @16 t2', `payload ${'U'.padEnd(MAX, 'x')}`, 'end t2',
    'start f5 len=4 @83 t2', 'payload Ubye', 'end t2',
  ]);
  assert.equal(whole.reader.idle, true);
  assert.equal(whole.reader.bufferedBytes, 0);
  const bytewise = run(byteByByte(recs));
  assert.deepEqual(bytewise.lines, whole.lines);
  assert.equal(bytewise.reader.bufferedBytes, 0);
  const total = recs.reduce((n, r) => n + r.payload.length, 0);
  for (let i = 1; i < total; i++) assert.deepEqual(run(splitAt(recs, i)).lines, whole.lines, `split at ${i}`);
});

test('a header split across events is held, and only while it is incomplete', () => {
  const t = new Trace().data(toy(0xf1, 'Uab').subarray(0, 2));
  assert.deepEqual([t.reader.bufferedBytes, t.reader.idle, t.lines.length], [2, false, 0]);
  t.data(toy(0xf1, 'Uab').subarray(2), false, 2);
  assert.deepEqual(t.lines, ['start f1 len=3 @0 t1', 'payload Uab', 'end t2']);
  assert.equal(t.reader.bufferedBytes, 0);
});

test('payload chunks are views into the event when a frame arrives whole', () => {
  const bytes = Buffer.concat([toy(0xf1, 'Uabc'), toy(0xf2, 'Udef')]);
  const chunks: Buffer[] = [];
  const sink: FrameSink = {
    onFrameStart: () => {}, onFrameEnd: () => {}, onDesync: () => {},
    onPayload: (chunk) => chunks.push(chunk!),
  };
  new FramingReader(TOY, sink, true).push({ type: 'data', pos: 0, data: bytes, tsNs: 1, syscallStart: true });
  assert.deepEqual(chunks.map((c) => [c.buffer === bytes.buffer, c.byteOffset - bytes.byteOffset]), [[true, 3], [true, 10]]);
});

test('a gap inside a payload keeps sync; its bytes arrive as a null chunk', () => {
  const f = toy(0xf1, 'Uabcdefghi');
  const t = new Trace().data(f.subarray(0, 6)).gap(3, 2).data(f.subarray(9), false, 3).data(toy(0xf2, 'U'), false, 4);
  assert.deepEqual(t.lines, [
    'start f1 len=10 @0 t1', 'payload Uab<gap 3>fghi', 'end t3', 'start f2 len=1 @13 t4', 'payload U', 'end t4',
  ]);
  assert.equal(t.reader.inSync, true);
});

test('a gap ending at a frame end keeps sync; one past it ends the frame, then loses sync', () => {
  const f = toy(0xf1, 'Uabc');
  const keep = new Trace().data(f.subarray(0, 5)).gap(2, 2).data(toy(0xf2, 'U'), false, 3);
  assert.deepEqual(keep.lines, ['start f1 len=4 @0 t1', 'payload Ua<gap 2>', 'end t2', 'start f2 len=1 @7 t3', 'payload U', 'end t3']);
  const lose = new Trace().data(f.subarray(0, 5)).gap(3, 2).data(toy(0xf2, 'U').subarray(1), false, 3);
  assert.deepEqual(lose.lines, ['start f1 len=4 @0 t1', 'payload Ua<gap 2>', 'end t2', 'desync gap', 'skip 3']);
  assert.deepEqual([lose.reader.inSync, lose.reader.idle, lose.reader.bufferedBytes], [false, true, 0]);
});

test('a gap inside a header, or between frames, loses sync and drops the partial header', () => {
  const inHeader = new Trace().data(toy(0xf1, 'U').subarray(0, 2)).gap(1);
  assert.deepEqual(inHeader.lines, ['desync gap']);
  assert.equal(inHeader.reader.bufferedBytes, 0);
  const between = new Trace().data(toy(0xf1, 'U')).gap(4);
  assert.deepEqual(between.lines.slice(-1), ['desync gap']);
  // Nothing resynchronises away from a syscall start.
  between.data(toy(0xf2, 'Uxy'), false);
  assert.deepEqual(between.lines.slice(-1), ['skip 6']);
});

test('resync: a plausible probe at a syscall start; its bytes past the header are payload', () => {
  const t = new Trace().data(toy(0xf1, 'U')).gap(10)
    .data('garbage', true, 2)
    .data(Buffer.concat([toy(0xf7, 'Uresync'), toy(0xf8, 'U')]), true, 3);
  assert.deepEqual(t.lines.slice(3), [
    'desync gap', 'miss 4', 'skip 3',
    'start f7 len=7 @21 t3 resynced', 'payload Uresync', 'end t3', 'start f8 len=1 @31 t3', 'payload U', 'end t3',
  ]);
  assert.equal(t.reader.inSync, true);
});

test('resync: a probe reads on through its own syscall, and gives way to the next syscall start', () => {
  const f = toy(0xf3, 'Uxyz');
  const spanning = new Trace(TOY, false).data(f.subarray(0, 2), true, 5).data(f.subarray(2), false, 6);
  assert.deepEqual(spanning.lines, ['desync midstream', 'start f3 len=4 @0 t5 resynced', 'payload Uxyz', 'end t6']);
  const cut = new Trace(TOY, false).data(f.subarray(0, 3), true, 5).data(f, true, 6);
  assert.deepEqual(cut.lines, ['desync midstream', 'miss 3', 'start f3 len=4 @3 t6 resynced', 'payload Uxyz', 'end t6']);
  // A gap while probing: the probe fails, sync was already lost.
  const gapped = new Trace(TOY, false).data(f.subarray(0, 2)).gap(2);
  assert.deepEqual(gapped.lines, ['desync midstream', 'miss 2']);
  assert.equal(gapped.reader.bufferedBytes, 0);
});

test('resync rejects implausible probes, oversized lengths, and lengths shorter than the probe', () => {
  const implausible: Array<[string, Buffer]> = [
    ['kind', Buffer.from([0x01, 0, 1, SIGNATURE])],
    ['signature', Buffer.from([0xf1, 0, 1, 0x00])],
    ['oversized', Buffer.from([0xf1, 0, MAX + 1, SIGNATURE])],
    ['shorter than the probe', Buffer.from([0xf1, 0, 0, SIGNATURE])],
  ];
  for (const [what, bytes] of implausible) {
    const t = new Trace(TOY, false).data(Buffer.concat([bytes, Buffer.from('more')]));
    assert.deepEqual(t.lines, ['desync midstream', 'miss 4', 'skip 4'], what);
    assert.equal(t.reader.inSync, false, what);
  }
});

test('a header breaking the format in sync (oversized length) loses sync; the header is skipped', () => {
  const big = Buffer.from([0xf1, 0, MAX + 1]);
  const t = new Trace().data(Buffer.concat([toy(0xf0, 'U'), big, Buffer.from('tail')]));
  assert.deepEqual(t.lines, ['start f0 len=1 @0 t1', 'payload U', 'end t1', 'skip 3', 'desync invalid', 'skip 4']);
  const bytewise = new Trace();
  for (const b of Buffer.concat([big, Buffer.from('tail')])) bytewise.data(Buffer.from([b]), false);
  assert.deepEqual(bytewise.lines, ['skip 3', 'desync invalid', 'skip 4']);
});

test('a jump in positions loses sync', () => {
  const t = new Trace().data(toy(0xf1, 'Uabc').subarray(0, 5)).data(toy(0xf2, 'U'), true, 2, 100);
  assert.deepEqual(t.lines, ['start f1 len=4 @0 t1', 'payload Ua', 'desync discontinuity', 'start f2 len=1 @100 t2 resynced', 'payload U', 'end t2']);
});

test('stop() from a sink ends the reader at once, mid-event', () => {
  const t = new Trace();
  const onFrameEnd = t.onFrameEnd.bind(t);
  t.onFrameEnd = (ts) => {
    onFrameEnd(ts);
    t.reader.stop();
  };
  t.data(Buffer.concat([toy(0xf1, 'U'), toy(0xf2, 'U')])).data(toy(0xf3, 'U'));
  assert.deepEqual(t.lines, ['start f1 len=1 @0 t1', 'payload U', 'end t1']);
  assert.equal(t.reader.stopped, true);
});

const PREFACED: FrameFormat = { ...TOY, preface: Buffer.from('HI!') };

test('a preface at the stream start, byte by byte too; a wrong one loses sync', () => {
  const bytes = Buffer.concat([Buffer.from('HI!'), toy(0xf1, 'U')]);
  const whole = new Trace(PREFACED).data(bytes);
  assert.deepEqual(whole.lines, ['preface@3 t1', 'start f1 len=1 @3 t1', 'payload U', 'end t1']);
  const bytewise = new Trace(PREFACED);
  for (let i = 0; i < bytes.length; i++) bytewise.data(bytes.subarray(i, i + 1), i === 0);
  assert.deepEqual(bytewise.lines, whole.lines);
  const wrong = new Trace(PREFACED).data('HI?xx');
  assert.deepEqual(wrong.lines, ['skip 3', 'desync preface', 'skip 2']);
  // No preface: the first frame is read directly.
  assert.deepEqual(new Trace(PREFACED).data(toy(0xf1, 'U')).lines[0], 'start f1 len=1 @0 t1');
});

test('a preface at a syscall start resynchronises', () => {
  const t = new Trace(PREFACED, false).data('junk').data('HI!', true, 2).data(toy(0xf1, 'U'), false, 3);
  assert.deepEqual(t.lines, ['desync midstream', 'miss 4', 'preface@7 t2 resynced', 'start f1 len=1 @7 t3', 'payload U', 'end t3']);
  const wrong = new Trace(PREFACED, false).data('HIxx');
  assert.deepEqual(wrong.lines, ['desync midstream', 'miss 3', 'skip 1']);
});

/** Opens only with kind 0xf1, judged on the first byte; never resynchronises. */
const STRICT: FrameFormat = { ...TOY, plausible: null, opens: (h, have) => have < 1 || h[0] === 0xf1 };

test('opens judges the first header byte by byte; without plausible, losing sync stops the reader', () => {
  const t = new Trace(STRICT).data(Buffer.from([0xf2]));
  assert.deepEqual(t.lines, ['skip 1', 'desync not_opening']);
  assert.equal(t.reader.stopped, true);
  t.data(toy(0xf1, 'U'), true);
  assert.deepEqual(t.lines.length, 2, 'a stopped reader reports nothing');
  // Only the first header is judged by opens.
  const ok = new Trace(STRICT).data(Buffer.concat([toy(0xf1, 'U'), toy(0xf2, 'U')]));
  assert.deepEqual(ok.lines.filter((l) => l.startsWith('start')), ['start f1 len=1 @0 t1', 'start f2 len=1 @4 t1']);
  const gap = new Trace(STRICT).data(toy(0xf1, 'U')).gap(1);
  assert.deepEqual([gap.lines.slice(-1)[0], gap.reader.stopped], ['desync gap', true]);
  const mid = new Trace(STRICT, false).data(toy(0xf1, 'U'));
  assert.deepEqual([mid.lines, mid.reader.stopped], [['desync midstream'], true]);
});
