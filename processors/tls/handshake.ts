/**
 * The TLS handshake of one TCP connection, seen from either end: both kernel directions
 * go through a record reader (./records.ts), the ClientHello and ServerHello are parsed
 * (./hello.ts), and one `TlsHandshake` is emitted per connection.
 *
 * Roles come from the bytes: the direction that sends the ClientHello is the client's
 * (a role hint that disagrees is counted, the bytes win).
 *
 * Timing (design: `handshake_ns`): from the ClientHello to the client's first encrypted
 * record after the ServerHello, i.e. the client's first application_data (23) record sent
 * at or after the ServerHello's time. In TLS 1.3 that record is the client's Finished; in
 * TLS 1.2 the client's Finished is an encrypted handshake record, so it is the client's
 * first application data after the handshake. Each time is that of the syscall that moved
 * the record's first byte, on this socket. 0-RTT early data goes out before the ServerHello
 * and does not count.
 *
 * HelloRetryRequest (a ServerHello with a special random): the client answers with a
 * second ClientHello and the server with the real ServerHello; the handshake starts at the
 * first ClientHello, offers are read from it, and `helloRetry` is set.
 *
 * What is not visible: in TLS 1.3 the server's ALPN choice travels in the encrypted
 * EncryptedExtensions, so `alpn` is '' and `alpnVisible` false; the certificate is
 * encrypted too. TLS 1.2 shows the ALPN choice in the ServerHello.
 *
 * A handshake that never completes (no such record before `close` or `handshakeTimeoutNs`
 * after the ClientHello, a fatal
 * alert — in TLS 1.3 an encrypted one is known by its size, its description is not
 * visible —, lost bytes, bytes that stop being TLS) is emitted with `complete` false,
 * `handshakeNs` 0 and the reason. A connection first seen after its start, whose first
 * bytes are not TLS, or whose ClientHello cannot be read makes no handshake (counted).
 */
import type { StreamEvent } from '../l7/reassembly.js';
import {
  cipherSuiteName, groupName, HELLO_FAILURES, parseClientHello, parseServerHello, tlsVersionName,
  type ClientHello, type HelloFailure, type ServerHello,
} from './hello.js';
import {
  ContentType, HandshakeType, newTlsRecordStats, TlsRecordReader, type TlsRecordStats, type TlsStopReason,
} from './records.js';
import type { Dir, RoleHint } from '../l7/sides.js';
import { GuardedTracker, type GuardStats, type L7Tracker } from '../l7/tracker.js';
export type { Dir, RoleHint };

/** Smallest TLS 1.3 record that can carry a Finished (32 bytes of verify_data, type, 8-byte tag). */
const TLS13_MIN_FINISHED_RECORD = 32 + 1 + 8;

/** Why a handshake was emitted without completing. */
export type IncompleteReason =
  /** A fatal alert (or close_notify) in plaintext; `alert` holds its description. */
  | 'alert'
  /** The connection closed first. */
  | 'closed'
  /** `expire` found it waiting for longer than the timeout. */
  | 'timeout'
  /** Bytes were lost in a direction still needed. */
  | 'gap'
  /** The bytes broke TLS rules (unreadable ServerHello, bad record, unexpected hello). */
  | 'protocol';

export const INCOMPLETE_REASONS: readonly IncompleteReason[] = ['alert', 'closed', 'timeout', 'gap', 'protocol'];

/** Why a connection makes no handshake at all. */
export type NoHandshakeReason =
  /** The first bytes are not a TLS hello. */
  | 'not_tls'
  /** Capture began after the connection's start. */
  | 'midstream'
  /** The ClientHello could not be read (malformed, oversize). */
  | 'bad_client_hello'
  /** The stream was cut (gap, alert, bad record) before any ClientHello. */
  | 'no_client_hello';

export const NO_HANDSHAKE_REASONS: readonly NoHandshakeReason[] = ['not_tls', 'midstream', 'bad_client_hello', 'no_client_hello'];

/** One TLS handshake as seen on the wire. */
export interface TlsHandshake {
  /** This socket's side: 'client' when it sent the ClientHello. */
  role: 'client' | 'server';
  /** server_name from the (first) ClientHello, lowercased; '' when absent. */
  sni: string;
  /** ALPN protocols offered by the client, in order. */
  alpnOffered: string[];
  /** ALPN protocol chosen, when visible (TLS 1.2 ServerHello); '' when none or not visible. */
  alpn: string;
  /** The choice could be seen: false for TLS 1.3 (EncryptedExtensions) and without ServerHello. */
  alpnVisible: boolean;
  /** 'TLS 1.2', 'TLS 1.3', ... or hex (0x7f1c); '' without ServerHello. */
  version: string;
  /** Negotiated version number; 0 without ServerHello. */
  versionCode: number;
  /** IANA cipher suite name, or hex; '' without ServerHello. */
  cipher: string;
  cipherCode: number;
  /** supported_versions offered ('TLS 1.3', 'TLS 1.2'); empty when the client did not send it. */
  versionsOffered: string[];
  /** Key-exchange groups the ClientHello carried shares for. */
  keyShareGroups: string[];
  /** Group the server chose (key_share); '' when not visible. */
  group: string;
  /** A HelloRetryRequest happened. */
  helloRetry: boolean;
  /** The server accepted resumption (TLS 1.3 pre_shared_key; TLS 1.2 session id echoed). */
  resumed: boolean;
  /** When the (first) ClientHello's first byte moved. */
  clientHelloTsNs: number;
  /** When the (final) ServerHello's first byte moved; 0 without one. */
  serverHelloTsNs: number;
  /** When the client's first encrypted record after the ServerHello moved; 0 if incomplete. */
  handshakeEndTsNs: number;
  /** handshakeEndTsNs − clientHelloTsNs; 0 if incomplete. */
  handshakeNs: number;
  complete: boolean;
  /** Why not complete; null when complete. */
  incomplete: IncompleteReason | null;
  /** Description of the plaintext alert that ended the handshake; -1 when none or encrypted. */
  alert: number;
}

/** Counters of one or more connections; pass one object to many trackers to sum them. */
export interface TlsStats extends GuardStats {
  handshakes: number;
  complete: number;
  /** Handshakes emitted incomplete, by reason. */
  incomplete: Record<IncompleteReason, number>;
  /** Connections that made no handshake, by reason. */
  noHandshake: Record<NoHandshakeReason, number>;
  helloRetries: number;
  /** Hellos that could not be parsed, by cause. */
  helloErrors: Record<HelloFailure, number>;
  /** The bytes contradicted the kernel's role hint. */
  roleMismatches: number;
  records: TlsRecordStats;
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  const r = {} as Record<K, number>;
  for (const k of keys) r[k] = 0;
  return r;
}

export function newTlsStats(): TlsStats {
  return {
    handshakes: 0, complete: 0, incomplete: zeroes(INCOMPLETE_REASONS), noHandshake: zeroes(NO_HANDSHAKE_REASONS),
    helloRetries: 0, helloErrors: zeroes(HELLO_FAILURES), roleMismatches: 0, records: newTlsRecordStats(), internalErrors: 0,
  };
}

/** A handshake not complete this long after its ClientHello (node time) is emitted incomplete. */
export const DEFAULT_HANDSHAKE_TIMEOUT_NS = 10e9;

export interface TlsHandshakeTrackerOptions {
  stats?: TlsStats;
  /** How long after its ClientHello `expire` lets a handshake go on (default 10 s). */
  handshakeTimeoutNs?: number;
  /** The connection was open before capture began: no handshake can be seen. */
  midlife?: boolean;
}

type Phase =
  /** Nothing decided yet. */
  | 'start'
  /** ClientHello seen; waiting for the ServerHello (or the second ClientHello after an HRR). */
  | 'hello'
  /** Final ServerHello seen; waiting for the client's first encrypted record. */
  | 'server_hello'
  /** Emitted, or given up: nothing more to do. */
  | 'done';

/** TLS handshake of one connection. Never throws on input; the result goes to `onHandshake`. */
export class TlsHandshakeTracker extends GuardedTracker<TlsHandshake, TlsStats> implements L7Tracker {
  /** The tracker itself decides within a few bytes whether a stream is TLS. */
  readonly recognized = true;
  private readonly readers: [TlsRecordReader, TlsRecordReader];
  private phase: Phase = 'start';
  private noHandshake: NoHandshakeReason | null = null;
  /** The handshake was emitted. */
  private emitted = false;
  private clientDir: -1 | Dir = -1;
  private ch: ClientHello | null = null;
  private chTs = 0;
  /** A HelloRetryRequest was answered; the next ClientHello from the client is expected. */
  private retryPending = false;
  private helloRetry = false;
  private sh: ServerHello | null = null;
  private shTs = 0;
  /** A ServerHello read before any ClientHello (directions delivered out of order). */
  private early: { dir: Dir; body: Buffer; tsNs: number } | null = null;
  private readonly handshakeTimeoutNs: number;

  constructor(
    private readonly hint: RoleHint,
    onHandshake: (h: TlsHandshake) => void,
    opts: TlsHandshakeTrackerOptions = {},
  ) {
    super(onHandshake, opts.stats ?? newTlsStats());
    this.handshakeTimeoutNs = opts.handshakeTimeoutNs ?? DEFAULT_HANDSHAKE_TIMEOUT_NS;
    const midlife = opts.midlife ?? false;
    this.readers = [this.newReader(0, midlife), this.newReader(1, midlife)];
  }

  /** Handshake emitted or given up: the rest of the connection needs no reading. */
  isIdle(): boolean {
    return this.phase === 'done';
  }

  /** Why no handshake came of this connection, or null. */
  get noHandshakeReason(): NoHandshakeReason | null {
    return this.noHandshake;
  }

  /** Not TLS, or the handshake is emitted: the rest of the connection needs no reading. */
  get stopReason(): NoHandshakeReason | 'handshake_done' | null {
    return this.noHandshake ?? (this.emitted ? 'handshake_done' : null);
  }

  /** The side the bytes showed, or the hint until a ClientHello was seen. */
  get role(): RoleHint {
    if (this.clientDir < 0) return this.hint;
    return this.clientDir === 0 ? 'client' : 'server';
  }

  /** Bytes held by the readers (a hello being assembled); at most 2 × 64 KiB. */
  get bufferedBytes(): number {
    return this.readers[0].bufferedBytes + this.readers[1].bufferedBytes;
  }

  /** Feed the next event of kernel direction `dir`. */
  data(dir: Dir, ev: StreamEvent): void {
    if (this.phase === 'done') return;
    this.run(() => this.readers[dir].push(ev));
  }

  /** A handshake begun `handshakeTimeoutNs` or more before `nowNs` and still not complete is emitted incomplete. */
  expire(nowNs: number): void {
    this.run(() => {
      if ((this.phase === 'hello' || this.phase === 'server_hello') && nowNs - this.chTs >= this.handshakeTimeoutNs) {
        this.finish('timeout');
      }
    });
  }

  /** The connection ended: a handshake under way is emitted incomplete. */
  close(): void {
    this.run(() => {
      if (this.phase === 'hello' || this.phase === 'server_hello') this.finish('closed');
      else if (this.phase === 'start') this.done();
    });
  }

  // ---- reader hooks ----------------------------------------------------------------

  private newReader(dir: Dir, midlife: boolean): TlsRecordReader {
    return new TlsRecordReader({
      onRecord: (type, _version, len, tsNs) => this.onRecord(dir, type, len, tsNs),
      onHandshake: (type, body, tsNs) => this.onMessage(dir, type, body, tsNs),
      onAlert: (level, desc) => this.onAlert(level, desc),
      onStop: (reason) => this.onStop(dir, reason),
    }, { stats: this.stats.records, midlife });
  }

  private onRecord(dir: Dir, type: number, len: number, tsNs: number): void {
    if (this.phase !== 'server_hello' || dir !== this.clientDir || type !== ContentType.ApplicationData || tsNs < this.shTs) return;
    // TLS 1.3 hides alerts in application_data records too. A Finished needs at least 32
    // bytes of verify_data; a record too short to hold one is an encrypted alert (2 bytes
    // plus content type plus AEAD tag: 19, or 11 with CCM_8).
    if (this.sh!.version === 0x0304 && len < TLS13_MIN_FINISHED_RECORD) this.finish('alert');
    else this.finish(null, tsNs);
  }

  private onMessage(dir: Dir, type: number, body: Buffer | null, tsNs: number): void {
    if (this.phase === 'done' || !body) return;
    if (type === HandshakeType.ClientHello) this.clientHello(dir, body, tsNs);
    else if (type === HandshakeType.ServerHello) this.serverHello(dir, body, tsNs);
  }

  private clientHello(dir: Dir, body: Buffer, tsNs: number): void {
    const r = parseClientHello(body);
    if (this.phase === 'start') {
      if (!r.ok) {
        this.stats.helloErrors[r.failure]++;
        this.giveUp('bad_client_hello');
        return;
      }
      this.clientDir = dir;
      if (this.hint !== 'unknown' && this.hint !== this.role) this.stats.roleMismatches++;
      this.ch = r.hello;
      this.chTs = tsNs;
      this.phase = 'hello';
      const early = this.early;
      this.early = null;
      if (early) this.serverHello(early.dir, early.body, early.tsNs);
      return;
    }
    // The second ClientHello answers a HelloRetryRequest; anything else breaks the rules.
    if (dir === this.clientDir && this.retryPending && this.phase === 'hello') {
      if (!r.ok) {
        this.stats.helloErrors[r.failure]++;
        this.finish('protocol');
        return;
      }
      this.retryPending = false;
      return;
    }
    this.finish('protocol');
  }

  private serverHello(dir: Dir, body: Buffer, tsNs: number): void {
    if (this.phase === 'start') {
      // Its ClientHello is still to come from the other direction: keep it until then.
      if (this.early) this.giveUp('no_client_hello');
      else this.early = { dir, body: Buffer.from(body), tsNs };
      return;
    }
    if (dir === this.clientDir || this.phase !== 'hello' || this.retryPending) {
      this.finish('protocol');
      return;
    }
    const r = parseServerHello(body);
    if (!r.ok) {
      this.stats.helloErrors[r.failure]++;
      this.finish('protocol');
      return;
    }
    if (r.hello.helloRetryRequest) {
      if (this.helloRetry) {
        this.finish('protocol'); // a second HelloRetryRequest is not allowed
        return;
      }
      this.helloRetry = true;
      this.retryPending = true;
      this.stats.helloRetries++;
      // Only TLS 1.3 has HelloRetryRequest: change_cipher_spec is a dummy from here on.
      for (const rd of this.readers) rd.encryptedAfterCcs = false;
      return;
    }
    this.sh = r.hello;
    this.shTs = tsNs;
    this.phase = 'server_hello';
    if (r.hello.version === 0x0304) for (const rd of this.readers) rd.encryptedAfterCcs = false;
  }

  private onAlert(level: number, desc: number): void {
    if (this.phase === 'start') {
      this.giveUp('no_client_hello');
      return;
    }
    // Fatal alerts end a handshake; so does close_notify (0). Warnings do not.
    if (this.phase !== 'done' && (level === 2 || desc === 0)) this.finish('alert', 0, desc);
  }

  private onStop(dir: Dir, reason: TlsStopReason): void {
    if (this.phase === 'done') return;
    if (this.phase === 'start') {
      if (reason === 'not_tls') this.giveUp('not_tls');
      else if (reason === 'midstream') this.giveUp('midstream');
      else if (reason === 'oversize_message' && !this.early) this.giveUp('bad_client_hello');
      else this.giveUp('no_client_hello');
      return;
    }
    // After the ServerHello only the client's direction still matters.
    if (this.phase === 'server_hello' && dir !== this.clientDir) return;
    this.finish(reason === 'gap' ? 'gap' : 'protocol');
  }

  // ---- results ---------------------------------------------------------------------

  /** Emit the handshake: complete when `why` is null (ending at `endTs`). */
  private finish(why: IncompleteReason | null, endTs = 0, alert = -1): void {
    const ch = this.ch!;
    const sh = this.sh;
    const complete = why === null;
    const versionCode = sh?.version ?? 0;
    const tls13 = versionCode === 0x0304;
    this.stats.handshakes++;
    if (complete) this.stats.complete++;
    else this.stats.incomplete[why]++;
    this.deliver({
      role: this.clientDir === 0 ? 'client' : 'server',
      sni: ch.sni,
      alpnOffered: ch.alpn,
      alpn: sh && !tls13 ? sh.alpn ?? '' : '',
      alpnVisible: sh !== null && !tls13,
      version: sh ? tlsVersionName(versionCode) : '',
      versionCode,
      cipher: sh ? cipherSuiteName(sh.cipherSuite) : '',
      cipherCode: sh?.cipherSuite ?? 0,
      versionsOffered: ch.versions.map(tlsVersionName),
      keyShareGroups: ch.keyShareGroups.map(groupName),
      group: sh && sh.keyShareGroup ? groupName(sh.keyShareGroup) : '',
      helloRetry: this.helloRetry,
      resumed: sh !== null && (tls13 ? sh.pskAccepted : sh.sessionId.length > 0 && sh.sessionId.equals(ch.sessionId)),
      clientHelloTsNs: this.chTs,
      serverHelloTsNs: sh ? this.shTs : 0,
      handshakeEndTsNs: complete ? endTs : 0,
      handshakeNs: complete ? Math.max(0, endTs - this.chTs) : 0,
      complete,
      incomplete: why,
      alert,
    });
    this.emitted = true;
    this.done();
  }

  private giveUp(reason: NoHandshakeReason): void {
    this.noHandshake = reason;
    this.stats.noHandshake[reason]++;
    this.done();
  }

  private done(): void {
    this.phase = 'done';
    this.early = null;
    this.readers[0].stop();
    this.readers[1].stop();
  }

  /** Stop tracking: a handshake cannot be read from its middle. */
  protected override recover(): void {
    this.done();
  }
}
