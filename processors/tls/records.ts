/**
 * The TLS record layer of one direction of a TCP stream (RFC 8446 §5, RFC 5246 §6.2),
 * read incrementally from StreamEvents through the shared framing reader
 * (processors/l7/framing.ts): record headers, handshake messages reassembled across
 * records and syscalls, and plaintext alerts.
 *
 * A TLS stream starts with a handshake record carrying a ClientHello (client side) or a
 * ServerHello (server side; a server may also open with an alert). Anything else at
 * position 0 is not TLS, decided on the first byte that disagrees — for HTTP or SSH that
 * is the first byte, and at most 6 bytes are ever looked at (type, version, length,
 * handshake type). A stream seen from the middle, or losing bytes (a gap), loses the
 * record framing for good: the reader stops and says why.
 *
 * Bounds: records ≤ 2^14 + 2048 bytes (the TLSCiphertext limit); only the handshake
 * message types asked for are kept, each ≤ 64 KiB; everything else is skipped as it
 * streams by. After a change_cipher_spec, handshake records are encrypted in TLS 1.2 and
 * below and are skipped; in TLS 1.3 the change_cipher_spec is a dummy and encrypted
 * handshake messages travel as application_data, so the caller turns
 * `encryptedAfterCcs` off once TLS 1.3 is negotiated.
 */
import { Cursor } from '../l7/cursor.js';
import { FramingReader, type FrameFormat, type FrameSink, type FramingLoss } from '../l7/framing.js';
import type { StreamEvent } from '../l7/reassembly.js';

export const ContentType = {
  ChangeCipherSpec: 20,
  Alert: 21,
  Handshake: 22,
  ApplicationData: 23,
} as const;

export const HandshakeType = {
  ClientHello: 1,
  ServerHello: 2,
} as const;

export const RECORD_HEADER_BYTES = 5;
const HANDSHAKE_HEADER_BYTES = 4;
/** Largest record: 2^14 plaintext plus 2048 of expansion (RFC 5246 §6.2.3). */
export const MAX_RECORD_BYTES = 16384 + 2048;
/** Largest handshake message kept (a ClientHello with post-quantum key shares is ~2 KiB). */
export const MAX_HANDSHAKE_MESSAGE_BYTES = 64 * 1024;

/** Why a reader stopped. */
export type TlsStopReason =
  /** The first bytes are not a TLS hello record. */
  | 'not_tls'
  /** The stream was first seen after its start: record framing unknown. */
  | 'midstream'
  /** Bytes were lost: record framing lost. */
  | 'gap'
  /** A record header with an unknown type, version or an impossible length. */
  | 'bad_record'
  /** Another record type inside a fragmented handshake message. */
  | 'interleaved'
  /** A kept handshake message longer than MAX_HANDSHAKE_MESSAGE_BYTES. */
  | 'oversize_message'
  /** The caller stopped it (handshake done, or given up). */
  | 'stopped';

/** Counters of one or more readers. */
export interface TlsRecordStats {
  /** Record headers read, by content type. */
  changeCipherSpec: number;
  alert: number;
  handshake: number;
  applicationData: number;
  /** Handshake messages read whole (kept or skipped). */
  handshakeMessages: number;
  /** Readers stopped on a bad record header (after the first record). */
  badRecords: number;
  /** Readers stopped on interleaved handshake fragments. */
  interleaved: number;
  /** Readers stopped on a kept handshake message over the cap. */
  oversizeMessages: number;
}

export function newTlsRecordStats(): TlsRecordStats {
  return {
    changeCipherSpec: 0, alert: 0, handshake: 0, applicationData: 0, handshakeMessages: 0,
    badRecords: 0, interleaved: 0, oversizeMessages: 0,
  };
}

export interface TlsRecordHooks {
  /** A record header was read; `tsNs` is the time of the event holding its first byte. */
  onRecord?(type: number, version: number, length: number, tsNs: number, pos: number): void;
  /**
   * A whole handshake message; `body` (without the 4-byte header) for kept types, else
   * null. `tsNs`/`pos`: the event time and stream position of its first header byte.
   */
  onHandshake?(type: number, body: Buffer | null, tsNs: number, pos: number): void;
  /** A plaintext alert record (level 1 warning, 2 fatal). */
  onAlert?(level: number, description: number, tsNs: number): void;
  /** The reader stopped; it reports nothing more. Not called for `stop()`. */
  onStop?(reason: TlsStopReason): void;
}

export interface TlsRecordReaderOptions {
  stats?: TlsRecordStats;
  /** Handshake message types to keep (default ClientHello and ServerHello). */
  keep?: readonly number[];
  /** Position 0 is not the stream's start (the connection was open before capture). */
  midlife?: boolean;
}

/** First-record check: can header bytes `b[0..n)` start a TLS stream's first flight? */
function plausibleStart(b: Buffer, n: number): boolean {
  if (n > 0 && b[0] !== ContentType.Handshake && b[0] !== ContentType.Alert) return false;
  if (n > 1 && b[1] !== 3) return false;
  if (n > 2 && (b[2] < 1 || b[2] > 4)) return false;
  if (n > 4 && b.readUInt16BE(3) > MAX_RECORD_BYTES) return false;
  return true;
}

/** TLS records for the shared reader. No resync: record boundaries cannot be told from ciphertext. */
const TLS_RECORD_FORMAT: FrameFormat = {
  headerBytes: RECORD_HEADER_BYTES,
  probeBytes: RECORD_HEADER_BYTES,
  preface: null,
  payloadLength: (header) => {
    header.skip(3);
    return header.u16be();
  },
  valid: (header, length) => {
    const type = header.u8();
    const major = header.u8();
    const minor = header.u8();
    return type >= ContentType.ChangeCipherSpec && type <= ContentType.ApplicationData
      && major === 3 && minor >= 1 && minor <= 4 && length <= MAX_RECORD_BYTES;
  },
  plausible: null,
  opens: plausibleStart,
};

/** Why a reader stops when the framing reader loses the records. */
const STOP_REASONS: Record<FramingLoss, TlsStopReason> = {
  midstream: 'midstream', gap: 'gap', discontinuity: 'gap', invalid: 'bad_record', preface: 'not_tls',
  not_opening: 'not_tls',
};

/** Reads one direction's TLS records. Never throws on input. */
export class TlsRecordReader implements FrameSink {
  readonly stats: TlsRecordStats;
  /** Handshake records after a change_cipher_spec are encrypted (true until TLS 1.3 is known). */
  encryptedAfterCcs = true;
  private readonly reader: FramingReader;
  private stopReason: TlsStopReason | null = null;
  /** No handshake message started yet: the first must be a hello. */
  private firstMessage = true;
  private recType = 0;
  private recLen = 0;
  private recTs = 0;
  /** Stream position of the next payload byte of the current record. */
  private payloadPos = 0;
  private ccsSeen = false;
  private readonly hsHead = Buffer.alloc(HANDSHAKE_HEADER_BYTES);
  private readonly hsCursor = new Cursor();
  private hsHeadLen = 0;
  private hsType = 0;
  private hsLen = 0;
  private hsBody: Buffer | null = null;
  private hsFilled = 0;
  private hsTs = 0;
  private hsPos = 0;
  private readonly alertBuf = Buffer.alloc(2);
  private alertLen = 0;
  private readonly keep: readonly number[];

  constructor(private readonly hooks: TlsRecordHooks, opts: TlsRecordReaderOptions = {}) {
    this.stats = opts.stats ?? newTlsRecordStats();
    this.keep = opts.keep ?? [HandshakeType.ClientHello, HandshakeType.ServerHello];
    this.reader = new FramingReader(TLS_RECORD_FORMAT, this, !opts.midlife);
  }

  /** Why the reader stopped, or null while it reads. */
  get stopped(): TlsStopReason | null {
    return this.stopReason;
  }

  /** Bytes held: a kept handshake message being assembled, and small headers. */
  get bufferedBytes(): number {
    return (this.hsBody?.length ?? 0) + this.reader.bufferedBytes + this.hsHeadLen;
  }

  /** Stop reading; later events are ignored at no cost. */
  stop(): void {
    this.halt('stopped');
  }

  push(ev: StreamEvent): void {
    this.reader.push(ev);
  }

  // ---- reader events -----------------------------------------------------------------

  onFrameStart(header: Cursor, length: number, pos: number, tsNs: number): void {
    this.recType = header.u8();
    const version = header.u16be();
    this.recLen = length;
    this.recTs = tsNs;
    this.payloadPos = pos + RECORD_HEADER_BYTES;
    switch (this.recType) {
      case ContentType.ChangeCipherSpec: this.stats.changeCipherSpec++; break;
      case ContentType.Alert: this.stats.alert++; break;
      case ContentType.Handshake: this.stats.handshake++; break;
      default: this.stats.applicationData++; break;
    }
    if (this.hsHeadLen > 0 && this.recType !== ContentType.Handshake) {
      this.stats.interleaved++;
      this.fail('interleaved');
      return;
    }
    this.alertLen = 0;
    this.hooks.onRecord?.(this.recType, version, length, tsNs, pos);
  }

  onPayload(chunk: Buffer | null, len: number, tsNs: number): void {
    // Bytes lost inside a record: a handshake message may straddle them, so framing is given up.
    if (chunk === null) {
      this.fail('gap');
      return;
    }
    const pos = this.payloadPos;
    this.payloadPos += len;
    switch (this.recType) {
      case ContentType.Handshake:
        if (!(this.ccsSeen && this.encryptedAfterCcs)) this.handshakeBytes(chunk, len, tsNs, pos);
        return;
      case ContentType.Alert:
        if (this.recLen !== 2 || (this.ccsSeen && this.encryptedAfterCcs)) return;
        for (let k = 0; k < len; k++) this.alertBuf[this.alertLen++] = chunk[k];
        if (this.alertLen === 2) this.hooks.onAlert?.(this.alertBuf[0], this.alertBuf[1], this.recTs);
        return;
      default:
        return;
    }
  }

  onFrameEnd(): void {
    if (this.recType === ContentType.ChangeCipherSpec) {
      this.ccsSeen = true;
      // A handshake message cannot straddle a change_cipher_spec: drop what was partial.
      this.resetMessage();
    }
  }

  onDesync(loss: FramingLoss): void {
    if (loss === 'invalid') this.stats.badRecords++;
    this.fail(STOP_REASONS[loss]);
  }

  // ---- handshake messages ------------------------------------------------------------

  private handshakeBytes(d: Buffer, n: number, tsNs: number, pos: number): void {
    let i = 0;
    while (i < n && this.stopReason === null) {
      if (this.hsHeadLen < HANDSHAKE_HEADER_BYTES) {
        if (this.hsHeadLen === 0) {
          this.hsTs = tsNs;
          this.hsPos = pos + i;
        }
        const k = Math.min(HANDSHAKE_HEADER_BYTES - this.hsHeadLen, n - i);
        d.copy(this.hsHead, this.hsHeadLen, i, i + k);
        this.hsHeadLen += k;
        i += k;
        if (this.firstMessage) {
          // The stream's sixth byte: a hello, or this is not TLS.
          if (this.hsHead[0] !== HandshakeType.ClientHello && this.hsHead[0] !== HandshakeType.ServerHello) {
            this.fail('not_tls');
            return;
          }
          this.firstMessage = false;
        }
        if (this.hsHeadLen < HANDSHAKE_HEADER_BYTES) return;
        const c = this.hsCursor.reset(this.hsHead);
        this.hsType = c.u8();
        this.hsLen = c.u24be();
        this.hsFilled = 0;
        if (this.keep.includes(this.hsType)) {
          if (this.hsLen > MAX_HANDSHAKE_MESSAGE_BYTES) {
            this.stats.oversizeMessages++;
            this.fail('oversize_message');
            return;
          }
          this.hsBody = Buffer.allocUnsafe(this.hsLen);
        }
        if (this.hsLen === 0) this.endMessage();
        continue;
      }
      const k = Math.min(this.hsLen - this.hsFilled, n - i);
      if (this.hsBody) d.copy(this.hsBody, this.hsFilled, i, i + k);
      this.hsFilled += k;
      i += k;
      if (this.hsFilled === this.hsLen) this.endMessage();
    }
  }

  private endMessage(): void {
    const { hsType, hsBody, hsTs, hsPos } = this;
    this.resetMessage();
    this.stats.handshakeMessages++;
    this.hooks.onHandshake?.(hsType, hsBody, hsTs, hsPos);
  }

  private resetMessage(): void {
    this.hsHeadLen = 0;
    this.hsBody = null;
    this.hsFilled = 0;
  }

  private fail(reason: TlsStopReason): void {
    if (this.stopReason !== null) return;
    this.halt(reason);
    this.hooks.onStop?.(reason);
  }

  private halt(reason: TlsStopReason): void {
    if (this.stopReason !== null) return;
    this.stopReason = reason;
    this.reader.stop();
    this.resetMessage();
  }
}
