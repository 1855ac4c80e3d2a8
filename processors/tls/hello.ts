/**
 * ClientHello and ServerHello bodies (RFC 8446 §4.1.2–4.1.4, RFC 5246 §7.4.1) read with
 * every length checked against its container, plus the names of versions, cipher suites
 * and groups. Only what a `tls_handshakes` row and pairing need is kept; values read from
 * the wire are capped and made printable.
 *
 * GREASE values (RFC 8701: 0x0a0a, 0x1a1a, ...) are dropped from the offered lists: they
 * are noise by design.
 */
import { Cursor, CursorRangeError } from '../l7/cursor.js';

/** Why a hello could not be read; counted by callers. */
export type HelloFailure =
  /** A field runs past the end of the message. */
  | 'truncated'
  /** A vector length that its container cannot hold, or of an impossible size. */
  | 'bad_vector';

export const HELLO_FAILURES: readonly HelloFailure[] = ['truncated', 'bad_vector'];

/** Entries kept per offered list (ALPN protocols, versions, groups, extensions). */
export const MAX_LIST = 32;
/** Characters kept of a server name. */
export const MAX_SNI_CHARS = 255;

export const ExtensionType = {
  ServerName: 0,
  SupportedGroups: 10,
  Alpn: 16,
  PreSharedKey: 41,
  EarlyData: 42,
  SupportedVersions: 43,
  KeyShare: 51,
} as const;

export interface ClientHello {
  /** legacy_version (0x0303 from TLS 1.3 clients; the offered versions are in `versions`). */
  legacyVersion: number;
  sessionId: Buffer;
  /** Offered cipher suites in preference order, GREASE dropped (at most MAX_LIST × 4). */
  cipherSuites: number[];
  /** server_name host name, lowercased and printable; '' when absent. */
  sni: string;
  /** application_layer_protocol_negotiation: offered protocols in order. */
  alpn: string[];
  /** supported_versions: offered versions in order; empty when the extension is absent. */
  versions: number[];
  /** key_share: groups with a share in this hello. */
  keyShareGroups: number[];
  /** supported_groups. */
  groups: number[];
  /** Extension types in wire order (GREASE kept: its position is part of a client's shape). */
  extensions: number[];
  /** A pre_shared_key was offered (resumption attempt). */
  pskOffered: boolean;
  /** early_data (0-RTT) was offered. */
  earlyData: boolean;
}

export interface ServerHello {
  legacyVersion: number;
  /** The special random of a HelloRetryRequest (RFC 8446 §4.1.3): not a real ServerHello. */
  helloRetryRequest: boolean;
  sessionId: Buffer;
  cipherSuite: number;
  /** The negotiated version: supported_versions when present (TLS 1.3), else legacyVersion. */
  version: number;
  /** The ALPN protocol chosen in this message (TLS 1.2 and below); null when absent. */
  alpn: string | null;
  /** key_share group (the selected group of a HelloRetryRequest); 0 when absent. */
  keyShareGroup: number;
  /** pre_shared_key accepted (TLS 1.3 resumption). */
  pskAccepted: boolean;
  extensions: number[];
}

export type HelloResult<T> = { ok: true; hello: T } | { ok: false; failure: HelloFailure };

/** SHA-256 of "HelloRetryRequest": the random of a HelloRetryRequest. */
const HRR_RANDOM = Buffer.from('cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c', 'hex');

/**
 * Thrown inside this module only, caught by the parse functions; never escapes. Reads past
 * a vector's end throw the cursor's CursorRangeError instead, caught alike.
 */
class HelloError {
  constructor(readonly failure: HelloFailure) {}
}

/** A cursor over a vector with a `lenBytes`-byte length, which must fit in `c`; `c` skips it. */
function vec(c: Cursor, lenBytes: 1 | 2): Cursor {
  const len = lenBytes === 1 ? c.u8() : c.u16be();
  if (len > c.remaining) throw new HelloError('bad_vector');
  return c.take(len);
}

/** The failure a parse error stands for: a read past a vector's end is a truncated field. */
function failureOf(err: unknown): HelloFailure {
  if (err instanceof HelloError) return err.failure;
  if (err instanceof CursorRangeError) return 'truncated';
  throw err;
}

export function isGrease(v: number): boolean {
  return (v & 0x0f0f) === 0x0a0a && (v >> 8) === (v & 0xff);
}

/** u16 values of a vector, GREASE dropped, at most `max` kept (all are read). */
function u16List(c: Cursor, max = MAX_LIST): number[] {
  if (c.remaining % 2 !== 0) throw new HelloError('bad_vector');
  const out: number[] = [];
  while (c.remaining > 0) {
    const v = c.u16be();
    if (!isGrease(v) && out.length < max) out.push(v);
  }
  return out;
}

/** Printable ASCII as is, other bytes as \xHH, at most `max` characters. */
export function printable(b: Buffer, max: number): string {
  let s = '';
  for (let i = 0; i < b.length && s.length < max; i++) {
    const c = b[i];
    s += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return s.length <= max ? s : s.slice(0, max);
}

function alpnList(c: Cursor, max: number): string[] {
  const list = vec(c, 2);
  const out: string[] = [];
  while (list.remaining > 0) {
    const len = list.u8();
    if (len === 0) throw new HelloError('bad_vector');
    const name = list.bytes(len);
    if (out.length < max) out.push(printable(name, 255));
  }
  return out;
}

function sniHost(c: Cursor): string {
  const list = vec(c, 2);
  while (list.remaining > 0) {
    const type = list.u8();
    const name = vec(list, 2);
    if (type === 0) return printable(name.bytes(name.remaining), MAX_SNI_CHARS).toLowerCase();
  }
  return '';
}

/** Extensions block: each extension handed to `onExt` with a cursor over its data. */
function extensions(c: Cursor, onExt: (type: number, data: Cursor) => void): number[] {
  const types: number[] = [];
  if (c.remaining === 0) return types; // no extensions at all (allowed before TLS 1.3)
  const list = vec(c, 2);
  while (list.remaining > 0) {
    const type = list.u16be();
    const data = vec(list, 2);
    if (types.length < MAX_LIST * 2) types.push(type);
    onExt(type, data);
  }
  return types;
}

/** Parse a ClientHello body (the handshake message without its 4-byte header). Never throws. */
export function parseClientHello(body: Buffer): HelloResult<ClientHello> {
  try {
    const c = new Cursor(body);
    const legacyVersion = c.u16be();
    c.bytes(32);
    const sid = vec(c, 1);
    if (sid.remaining > 32) throw new HelloError('bad_vector');
    const sessionId = sid.bytes(sid.remaining);
    const suites = vec(c, 2);
    if (suites.remaining === 0) throw new HelloError('bad_vector');
    const cipherSuites = u16List(suites, MAX_LIST * 4);
    const comp = vec(c, 1);
    if (comp.remaining === 0) throw new HelloError('bad_vector');
    const h: ClientHello = {
      legacyVersion, sessionId, cipherSuites, sni: '', alpn: [], versions: [], keyShareGroups: [], groups: [],
      extensions: [], pskOffered: false, earlyData: false,
    };
    h.extensions = extensions(c, (type, d) => {
      switch (type) {
        case ExtensionType.ServerName:
          // An empty server_name is legal in a ServerHello only; here it must hold a list.
          h.sni = sniHost(d);
          break;
        case ExtensionType.Alpn:
          h.alpn = alpnList(d, MAX_LIST);
          break;
        case ExtensionType.SupportedVersions:
          h.versions = u16List(vec(d, 1));
          break;
        case ExtensionType.SupportedGroups:
          h.groups = u16List(vec(d, 2));
          break;
        case ExtensionType.KeyShare: {
          const shares = vec(d, 2);
          while (shares.remaining > 0) {
            const group = shares.u16be();
            vec(shares, 2);
            if (!isGrease(group) && h.keyShareGroups.length < MAX_LIST) h.keyShareGroups.push(group);
          }
          break;
        }
        case ExtensionType.PreSharedKey:
          h.pskOffered = true;
          break;
        case ExtensionType.EarlyData:
          h.earlyData = true;
          break;
      }
    });
    return { ok: true, hello: h };
  } catch (err) {
    return { ok: false, failure: failureOf(err) };
  }
}

/** Parse a ServerHello body (also a HelloRetryRequest). Never throws. */
export function parseServerHello(body: Buffer): HelloResult<ServerHello> {
  try {
    const c = new Cursor(body);
    const legacyVersion = c.u16be();
    const random = c.bytes(32);
    const sid = vec(c, 1);
    if (sid.remaining > 32) throw new HelloError('bad_vector');
    const h: ServerHello = {
      legacyVersion, helloRetryRequest: random.equals(HRR_RANDOM), sessionId: sid.bytes(sid.remaining),
      cipherSuite: c.u16be(), version: legacyVersion, alpn: null, keyShareGroup: 0, pskAccepted: false, extensions: [],
    };
    c.u8(); // legacy_compression_method
    h.extensions = extensions(c, (type, d) => {
      switch (type) {
        case ExtensionType.SupportedVersions:
          h.version = d.u16be();
          break;
        case ExtensionType.Alpn: {
          const chosen = alpnList(d, 1);
          h.alpn = chosen[0] ?? null;
          break;
        }
        case ExtensionType.KeyShare:
          h.keyShareGroup = d.u16be();
          break;
        case ExtensionType.PreSharedKey:
          h.pskAccepted = true;
          break;
      }
    });
    return { ok: true, hello: h };
  } catch (err) {
    return { ok: false, failure: failureOf(err) };
  }
}

// ---- names -----------------------------------------------------------------------------

const hex4 = (v: number): string => `0x${v.toString(16).padStart(4, '0')}`;

/** 'TLS 1.0' … 'TLS 1.3', 'SSL 3.0'; hex (0x7f1c) for anything else. */
export function tlsVersionName(v: number): string {
  switch (v) {
    case 0x0300: return 'SSL 3.0';
    case 0x0301: return 'TLS 1.0';
    case 0x0302: return 'TLS 1.1';
    case 0x0303: return 'TLS 1.2';
    case 0x0304: return 'TLS 1.3';
    default: return hex4(v);
  }
}

/** IANA names of the cipher suites seen in practice (TLS 1.3, and TLS 1.2 and older). */
export const CIPHER_SUITES: ReadonlyMap<number, string> = new Map([
  // TLS 1.3 (RFC 8446 §B.4)
  [0x1301, 'TLS_AES_128_GCM_SHA256'],
  [0x1302, 'TLS_AES_256_GCM_SHA384'],
  [0x1303, 'TLS_CHACHA20_POLY1305_SHA256'],
  [0x1304, 'TLS_AES_128_CCM_SHA256'],
  [0x1305, 'TLS_AES_128_CCM_8_SHA256'],
  // ECDHE, AEAD (RFC 5289, RFC 7905)
  [0xc02b, 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'],
  [0xc02c, 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384'],
  [0xc02f, 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
  [0xc030, 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'],
  [0xcca8, 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256'],
  [0xcca9, 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256'],
  [0xccaa, 'TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256'],
  [0xc0ac, 'TLS_ECDHE_ECDSA_WITH_AES_128_CCM'],
  [0xc0ad, 'TLS_ECDHE_ECDSA_WITH_AES_256_CCM'],
  // ECDHE, CBC
  [0xc009, 'TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA'],
  [0xc00a, 'TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA'],
  [0xc013, 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA'],
  [0xc014, 'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA'],
  [0xc023, 'TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256'],
  [0xc024, 'TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384'],
  [0xc027, 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256'],
  [0xc028, 'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384'],
  [0xc012, 'TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA'],
  [0xc011, 'TLS_ECDHE_RSA_WITH_RC4_128_SHA'],
  // DHE
  [0x009e, 'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256'],
  [0x009f, 'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384'],
  [0x0033, 'TLS_DHE_RSA_WITH_AES_128_CBC_SHA'],
  [0x0039, 'TLS_DHE_RSA_WITH_AES_256_CBC_SHA'],
  [0x0067, 'TLS_DHE_RSA_WITH_AES_128_CBC_SHA256'],
  [0x006b, 'TLS_DHE_RSA_WITH_AES_256_CBC_SHA256'],
  // RSA key exchange
  [0x009c, 'TLS_RSA_WITH_AES_128_GCM_SHA256'],
  [0x009d, 'TLS_RSA_WITH_AES_256_GCM_SHA384'],
  [0x002f, 'TLS_RSA_WITH_AES_128_CBC_SHA'],
  [0x0035, 'TLS_RSA_WITH_AES_256_CBC_SHA'],
  [0x003c, 'TLS_RSA_WITH_AES_128_CBC_SHA256'],
  [0x003d, 'TLS_RSA_WITH_AES_256_CBC_SHA256'],
  [0x000a, 'TLS_RSA_WITH_3DES_EDE_CBC_SHA'],
  [0x0005, 'TLS_RSA_WITH_RC4_128_SHA'],
  [0x0004, 'TLS_RSA_WITH_RC4_128_MD5'],
  // PSK
  [0x00a8, 'TLS_PSK_WITH_AES_128_GCM_SHA256'],
  [0x00a9, 'TLS_PSK_WITH_AES_256_GCM_SHA384'],
  // Signalling values (only ever offered)
  [0x00ff, 'TLS_EMPTY_RENEGOTIATION_INFO_SCSV'],
  [0x5600, 'TLS_FALLBACK_SCSV'],
]);

/** IANA name of a cipher suite, hex (0x1234) when not in the table. */
export function cipherSuiteName(v: number): string {
  return CIPHER_SUITES.get(v) ?? hex4(v);
}

const GROUPS: ReadonlyMap<number, string> = new Map([
  [0x0017, 'secp256r1'], [0x0018, 'secp384r1'], [0x0019, 'secp521r1'], [0x001d, 'x25519'], [0x001e, 'x448'],
  [0x0100, 'ffdhe2048'], [0x0101, 'ffdhe3072'], [0x0102, 'ffdhe4096'], [0x0103, 'ffdhe6144'], [0x0104, 'ffdhe8192'],
  [0x11ec, 'X25519MLKEM768'], [0x11eb, 'SecP256r1MLKEM768'], [0x6399, 'X25519Kyber768Draft00'],
]);

/** Name of a key-exchange group, hex when not in the table. */
export function groupName(v: number): string {
  return GROUPS.get(v) ?? hex4(v);
}
