/**
 * The HTTP side of a request: who sends it (credentials as ClickHouse takes them), whether a
 * browser or a rebound DNS name sent it (Host and Origin), and its body, read within a cap
 * both as sent and once decompressed, so a gzip bomb is stopped at the cap and never
 * inflated further.
 */
import type { IncomingMessage } from 'node:http';
import { networkInterfaces, hostname } from 'node:os';
import { createGunzip, type Gunzip } from 'node:zlib';
import { basicCredentials, type Credentials } from '../basic-auth.js';
import { AccessDeniedError, BodyEncodingError, BodyTooLargeError } from './errors.js';

export type { Credentials };

/** User and password by Basic auth, X-ClickHouse-User/Key headers or user/password parameters. */
export function credentials(req: IncomingMessage, url: URL): Credentials {
  const basic = basicCredentials(req);
  if (basic) return basic;
  const hUser = req.headers['x-clickhouse-user'];
  if (typeof hUser === 'string') return { user: hUser, password: String(req.headers['x-clickhouse-key'] ?? '') };
  return { user: url.searchParams.get('user') ?? 'default', password: url.searchParams.get('password') ?? '' };
}

/** Host names a request may name in its Host header: where the endpoint listens, and loopback. */
export function allowedHostNames(listenHost: string): Set<string> {
  const names = new Set(['localhost', '127.0.0.1', '[::1]', bracket(listenHost).toLowerCase()]);
  if (listenHost === '0.0.0.0' || listenHost === '::' || listenHost === '') {
    // Listening everywhere: the machine's own names and addresses.
    names.add(hostname().toLowerCase());
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) names.add(bracket(a.address).toLowerCase());
  }
  return names;
}

function bracket(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/**
 * Refuse a request whose Host is not the endpoint (a DNS name rebound to loopback) or whose
 * Origin is another site (a web page's fetch or form): only the endpoint's own origin passes.
 * The port is not checked: a port forward or a proxy in front of the endpoint changes it,
 * while a rebinding attack shows in the name.
 */
export function checkHostAndOrigin(req: IncomingMessage, hosts: Set<string>, port: number): void {
  const host = req.headers.host;
  let url: URL | null = null;
  try {
    url = host ? new URL(`http://${host}`) : null;
  } catch {
    url = null;
  }
  if (!url || !hosts.has(url.hostname.toLowerCase())) {
    throw new AccessDeniedError(`Host ${JSON.stringify(host ?? '')} is not this endpoint; use http://127.0.0.1:${port}`);
  }
  const origin = req.headers.origin;
  if (origin !== undefined && origin.toLowerCase() !== `http://${host!.toLowerCase()}`) {
    throw new AccessDeniedError(`requests from origin ${JSON.stringify(origin)} are not allowed`);
  }
}

/**
 * The body, at most `cap` bytes both as sent and decompressed. A Content-Length over the cap
 * is refused before any byte is read; past the cap inflation stops at once and the rest of
 * the (compressed, itself capped) body is drained unread, so the answer can still be sent.
 */
export function readBody(req: IncomingMessage, cap: number, what: string): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > cap) return Promise.reject(new BodyTooLargeError(cap, what));
  const encoding = String(req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== '') {
    return Promise.reject(new BodyEncodingError(`Content-Encoding ${JSON.stringify(encoding)} is not supported (gzip is)`));
  }
  return new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let sent = 0;
    let size = 0;
    let failure: Error | null = null;
    let gunzip: Gunzip | null = null;
    const fail = (err: Error) => {
      failure ??= err;
      parts.length = 0;
      gunzip?.destroy();
      gunzip = null;
    };
    const take = (c: Buffer) => {
      if (failure) return;
      size += c.length;
      if (size > cap) fail(new BodyTooLargeError(cap, `${what} (decompressed)`));
      else parts.push(c);
    };
    const done = () => (failure ? reject(failure) : resolve(Buffer.concat(parts, size)));
    if (encoding === 'gzip') {
      gunzip = createGunzip();
      gunzip.on('data', take);
      gunzip.on('error', (err) => fail(new BodyEncodingError(`cannot decompress the gzip body: ${err.message}`, { cause: err })));
    }
    req.on('data', (c: Buffer) => {
      sent += c.length;
      if (sent > cap) {
        // Sent without a Content-Length and over the cap: stop reading altogether.
        fail(new BodyTooLargeError(cap, what));
        req.pause();
        reject(failure);
        return;
      }
      if (gunzip) gunzip.write(c);
      else take(c);
    });
    req.on('error', (err) => reject(err));
    req.on('end', () => {
      if (!gunzip) return done();
      const g = gunzip;
      g.once('end', done);
      g.once('close', () => { if (failure) done(); });
      g.end();
    });
  });
}

/** Read and drop at most `cap` bytes of a body (so a refusal can be answered), then stop. */
export function discardBody(req: IncomingMessage, cap: number): Promise<void> {
  return new Promise((resolve) => {
    if (req.complete) return resolve();
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > cap) {
        req.pause();
        resolve();
      }
    });
    req.on('end', () => resolve());
    req.on('error', () => resolve());
  });
}

/** Fields of a multipart/form-data body (clickhouse-js sends long parameters this way). */
export function multipartFields(body: Buffer, contentType: string): Map<string, string> {
  const fields = new Map<string, string>();
  const m = /boundary=(?:"([^"]+)"|([^;]+))/.exec(contentType);
  if (!m) return fields;
  const boundary = `--${m[1] ?? m[2]}`;
  for (const part of body.toString('utf8').split(boundary)) {
    const sep = part.indexOf('\r\n\r\n');
    if (sep < 0) continue;
    const name = /name="([^"]+)"/.exec(part.slice(0, sep))?.[1];
    if (name) fields.set(name, part.slice(sep + 4).replace(/\r\n$/, ''));
  }
  return fields;
}
