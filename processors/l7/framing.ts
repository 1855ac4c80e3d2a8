/**
 * The one length-prefixed framing reader under the L7 parsers: DNS over TCP (2-byte
 * length), HTTP/2 frames (9-byte header, 24-bit length, client preface), TLS records
 * (5-byte header, 16-bit length). A FrameFormat says what a header looks like; the reader
 * turns one direction's StreamEvents into frame starts, payload chunks and frame ends,
 * the same whatever the syscall and record boundaries.
 *
 * Payload is streamed, never buffered: each chunk is a view into the event, or null for
 * bytes in a gap. The reader holds at most one header, probe or preface; a format that
 * wants whole frames assembles them, bounded by its own length field and `valid` check.
 *
 * Sync. A direction seen from its start (position 0 with `fromStart`) begins in sync, with
 * the format's preface if it has one and the first byte agrees, else with a header. A
 * header breaking the format's rules (`valid`) loses sync. A gap inside a payload keeps
 * it — the header's length says where the next frame starts — and reaches the sink as a
 * null chunk; a gap over a header, between frames or past a frame's end loses it (the
 * frame it cut is still ended first), as does a jump in stream positions.
 *
 * Resync. Out of sync, bytes are skipped to a syscall start: senders write a header and
 * its frame in one syscall, so that is where a frame most likely starts. `probeBytes` are
 * collected there, reading on into later events of the same syscall; a probe still short
 * when the next syscall starts gives way to it. A probe the format finds `plausible`
 * starts a frame (its bytes past the header are delivered as payload). A format without
 * `plausible` never resynchronises: losing sync stops its reader.
 */
import { Cursor } from './cursor.js';
import type { StreamEvent } from './reassembly.js';

/** What a protocol's frame header looks like. Methods get a cursor at the header's first byte. */
export interface FrameFormat {
  /** Bytes of a frame header, the length field among them. */
  readonly headerBytes: number;
  /** Bytes a resync probe judges: the header and, if more, the payload's first bytes. */
  readonly probeBytes: number;
  /** Bytes that may stand before the first frame, or at a resync point (HTTP/2's client preface). */
  readonly preface: Buffer | null;
  /** Payload bytes the header declares. */
  payloadLength(header: Cursor): number;
  /** In sync: does the header keep the protocol's rules (types, versions, length caps)? */
  valid(header: Cursor, payloadLength: number): boolean;
  /**
   * Out of sync: do the probe's `probeBytes` at a syscall start look like a frame start?
   * Stricter than `valid`, since random bytes must rarely pass. Null: never resynchronise.
   */
  readonly plausible: ((probe: Cursor, payloadLength: number) => boolean) | null;
  /**
   * Can the stream's first `have` header bytes open this protocol? Called as they arrive,
   * so a stream of another protocol is given up on its first byte that disagrees. Null: no check.
   */
  readonly opens: ((header: Buffer, have: number) => boolean) | null;
}

/** Why framing was lost (or never held). */
export type FramingLoss =
  /** The direction was first seen after its start. */
  | 'midstream'
  /** Bytes of a header, or of more than the rest of a frame, were not seen. */
  | 'gap'
  /** Events skipped or repeated stream positions. */
  | 'discontinuity'
  /** A header in sync broke the format's rules. */
  | 'invalid'
  /** The stream began with the preface's first byte but is not the preface. */
  | 'preface'
  /** The stream's first header bytes cannot open this protocol (`opens`). */
  | 'not_opening';

/** What the reader tells its protocol parser. Buffers are views: consume them before returning. */
export interface FrameSink {
  /** The preface ended at `endPos`; `resynced` when found out of sync. */
  onPreface?(endPos: number, tsNs: number, resynced: boolean): void;
  /** A header was read; `tsNs`/`pos`: event time and stream position of its first byte. */
  onFrameStart(header: Cursor, payloadLength: number, pos: number, tsNs: number, resynced: boolean): void;
  /** Payload bytes in order; `chunk` is null for `len` bytes in a gap. */
  onPayload(chunk: Buffer | null, len: number, tsNs: number): void;
  /** The payload is complete; `tsNs` is the time of the event holding its last byte. */
  onFrameEnd(tsNs: number): void;
  /** Framing was lost: nothing more until a resync (or ever, without `plausible`). */
  onDesync(cause: FramingLoss): void;
  /** Data bytes passed over out of sync; `probeMissed` when they were a probe that failed. */
  onSkipped?(bytes: number, probeMissed: boolean): void;
}

type State =
  /** Before the first event. */
  | 'new'
  /** Framing held: the next byte starts or continues a header, a payload or the preface. */
  | 'sync'
  /** Framing lost: skip to a syscall start. */
  | 'lost'
  /** Collecting a probe (or the preface) from a syscall start. */
  | 'probe'
  | 'stopped';

/** Reads the frames of one direction. Never throws on input bytes. */
export class FramingReader {
  private state: State = 'new';
  /** Stream position of the next byte; -1 before the first event. */
  private pos = -1;
  /** The stream's first header (or preface) is next or being read: `opens` and the preface apply. */
  private first = false;
  /** Header, probe or preface bytes collected when they span events. */
  private readonly head: Buffer;
  private headLen = 0;
  /** Bytes the head being collected needs. */
  private headWant = 0;
  private headPos = 0;
  private headTs = 0;
  /** The head being collected is the preface. */
  private readingPreface = false;
  private inFrame = false;
  private payloadLeft = 0;
  /** The one cursor handed to the format and the sink, reset for each header. */
  private readonly cursor = new Cursor();

  constructor(
    private readonly format: FrameFormat,
    private readonly sink: FrameSink,
    /** Position 0 is the direction's start (not a capture begun mid-life). */
    private readonly fromStart: boolean,
  ) {
    this.head = Buffer.alloc(Math.max(format.probeBytes, format.preface?.length ?? 0));
  }

  /** Input bytes held: a header, probe or preface spanning events. */
  get bufferedBytes(): number {
    return this.headLen;
  }

  /** Framing is held, or will be at the stream's start. */
  get inSync(): boolean {
    return this.state === 'sync' || (this.state === 'new' && this.fromStart);
  }

  /** Not inside a frame, header, probe or preface: nothing would be lost by starting afresh. */
  get idle(): boolean {
    return this.headLen === 0 && !this.inFrame;
  }

  get stopped(): boolean {
    return this.state === 'stopped';
  }

  /** Stop for good; later events are ignored. */
  stop(): void {
    this.state = 'stopped';
    this.inFrame = false;
    this.headLen = 0;
  }

  push(ev: StreamEvent): void {
    if (this.state === 'stopped') return;
    if (this.pos < 0) {
      this.pos = ev.pos;
      if (this.fromStart && ev.pos === 0) {
        this.state = 'sync';
        this.first = true;
      } else {
        this.lose('midstream');
      }
    } else if (ev.pos !== this.pos) {
      this.lose('discontinuity');
    }
    if (ev.type === 'gap') {
      this.pos = ev.pos + ev.len;
      if (ev.len > 0) this.gap(ev.len, ev.tsNs);
      return;
    }
    const d = ev.data;
    this.pos = ev.pos + d.length;
    let i = 0;
    if (ev.syscallStart && this.state === 'probe') this.missProbe(0);
    while (i < d.length) {
      switch (this.state) {
        case 'sync':
          i = this.inFrame ? this.payload(d, i, ev.tsNs) : this.header(d, i, ev.pos, ev.tsNs);
          break;
        case 'lost':
          if (!(ev.syscallStart && i === 0)) {
            this.sink.onSkipped?.(d.length - i, false);
            return;
          }
          this.state = 'probe';
          this.headPos = ev.pos;
          this.headTs = ev.tsNs;
          break;
        case 'probe':
          i = this.probe(d, i, ev.tsNs);
          break;
        default:
          return;
      }
    }
  }

  private payload(d: Buffer, i: number, ts: number): number {
    const n = Math.min(this.payloadLeft, d.length - i);
    this.payloadLeft -= n;
    this.sink.onPayload(d.subarray(i, i + n), n, ts);
    if (this.payloadLeft === 0 && this.inFrame) this.endFrame(ts);
    return i + n;
  }

  /** In sync, between frames: read a header (or the preface) from `d[i]` on. */
  private header(d: Buffer, i: number, base: number, ts: number): number {
    const h = this.format.headerBytes;
    if (this.headLen === 0) {
      this.headPos = base + i;
      this.headTs = ts;
      // Usual case: the whole header inside this event, read in place.
      if (!this.first && d.length - i >= h) {
        this.startFrame(d, i, false, ts);
        return i + h;
      }
      const preface = this.format.preface;
      this.readingPreface = this.first && preface !== null && d[i] === preface[0];
      this.headWant = this.readingPreface ? preface!.length : h;
    }
    const n = this.collect(d, i);
    if (this.readingPreface) {
      if (!this.prefaceAgrees(n)) return this.loseInHead('preface', n, i);
    } else if (this.first && this.format.opens && !this.format.opens(this.head, this.headLen + n)) {
      return this.loseInHead('not_opening', n, i);
    }
    this.headLen += n;
    if (this.headLen < this.headWant) return i + n;
    if (this.readingPreface) this.prefaceDone(false);
    else this.startFrame(this.head, 0, false, ts);
    return i + n;
  }

  /** Out of sync, from a syscall start: collect a probe and judge it. */
  private probe(d: Buffer, i: number, ts: number): number {
    const preface = this.format.preface;
    if (this.headLen === 0) {
      this.readingPreface = preface !== null && d[i] === preface[0];
      this.headWant = this.readingPreface ? preface!.length : this.format.probeBytes;
    }
    const n = this.collect(d, i);
    if (this.readingPreface && !this.prefaceAgrees(n)) {
      this.missProbe(n);
      return i + n;
    }
    this.headLen += n;
    if (this.headLen < this.headWant) return i + n;
    if (this.readingPreface) {
      this.prefaceDone(true);
      return i + n;
    }
    const h = this.format.headerBytes;
    const extra = this.format.probeBytes - h;
    const len = this.format.payloadLength(this.cursor.reset(this.head, 0, h));
    // The probe must not reach past its own frame, or its extra bytes would belong to the next.
    if (len < extra || !this.format.plausible!(this.cursor.reset(this.head, 0, this.headLen), len)) {
      this.missProbe(0);
      return i + n;
    }
    this.state = 'sync';
    this.startFrame(this.head, 0, true, ts);
    if (extra > 0 && this.inFrame) {
      this.payloadLeft -= extra;
      this.sink.onPayload(this.head.subarray(h, h + extra), extra, ts);
      if (this.payloadLeft === 0 && this.inFrame) this.endFrame(ts);
    }
    return i + n;
  }

  /** Copy up to the bytes the head still wants; returns how many (`headLen` not yet advanced). */
  private collect(d: Buffer, i: number): number {
    const n = Math.min(this.headWant - this.headLen, d.length - i);
    d.copy(this.head, this.headLen, i, i + n);
    return n;
  }

  /** Do the `n` bytes just collected continue the preface? */
  private prefaceAgrees(n: number): boolean {
    return this.head.compare(this.format.preface!, this.headLen, this.headLen + n, this.headLen, this.headLen + n) === 0;
  }

  private prefaceDone(resynced: boolean): void {
    this.state = 'sync';
    this.first = false;
    this.headLen = 0;
    this.sink.onPreface?.(this.headPos + this.headWant, this.headTs, resynced);
  }

  /** A header is at `b[off]`: check it (in sync) and start its frame. */
  private startFrame(b: Buffer, off: number, resynced: boolean, ts: number): void {
    const h = this.format.headerBytes;
    const len = this.format.payloadLength(this.cursor.reset(b, off, off + h));
    if (!resynced && !this.format.valid(this.cursor.reset(b, off, off + h), len)) {
      this.sink.onSkipped?.(h, false);
      this.headLen = 0;
      this.lose('invalid');
      return;
    }
    this.first = false;
    this.headLen = 0;
    this.inFrame = true;
    this.payloadLeft = len;
    this.sink.onFrameStart(this.cursor.reset(b, off, off + h), len, this.headPos, this.headTs, resynced);
    if (this.payloadLeft === 0 && this.inFrame) this.endFrame(ts);
  }

  private endFrame(ts: number): void {
    this.inFrame = false;
    this.sink.onFrameEnd(ts);
  }

  private gap(len: number, ts: number): void {
    if (this.state === 'probe') {
      this.missProbe(0);
      return;
    }
    if (this.state !== 'sync') return;
    if (!this.inFrame) {
      this.lose('gap');
      return;
    }
    const n = Math.min(len, this.payloadLeft);
    this.payloadLeft -= n;
    this.sink.onPayload(null, n, ts);
    if (this.payloadLeft === 0 && this.inFrame) this.endFrame(ts);
    if (len > n && this.state === 'sync') this.lose('gap');
  }

  /** A probe failed (after `n` more bytes collected): its bytes are skipped, the rest of its syscall too. */
  private missProbe(n: number): void {
    this.sink.onSkipped?.(this.headLen + n, true);
    this.headLen = 0;
    this.state = 'lost';
  }

  /** Sync lost in a head just after collecting `n` more bytes from `d[i]`: the head is skipped. */
  private loseInHead(cause: FramingLoss, n: number, i: number): number {
    this.sink.onSkipped?.(this.headLen + n, false);
    this.lose(cause);
    return i + n;
  }

  /** Framing is lost: skip to a syscall start, or stop when the format cannot resynchronise. */
  private lose(cause: FramingLoss): void {
    if (this.state === 'probe') {
      this.missProbe(0);
      return;
    }
    if (this.state === 'lost') return;
    this.inFrame = false;
    this.headLen = 0;
    this.state = this.format.plausible ? 'lost' : 'stopped';
    this.sink.onDesync(cause);
  }
}
