/**
 * What the endpoint refuses, one class per condition, each carrying the HTTP status and the
 * real ClickHouse error code and name a ClickHouse server would answer with, so
 * @clickhouse/client and Grafana report them as they report a server's.
 */
import { NetrigError } from '../errors.js';

/** A request the endpoint refuses before or instead of running it. */
export abstract class EndpointRefusal extends NetrigError {
  /** HTTP status of the answer. */
  abstract readonly status: number;
  /** ClickHouse error code (X-ClickHouse-Exception-Code) and its name. */
  abstract readonly chCode: number;
  abstract readonly chName: string;
}

/** No credentials, an unknown user or a wrong password. */
export class AuthenticationFailedError extends EndpointRefusal {
  readonly status = 403;
  readonly chCode = 516;
  readonly chName = 'AUTHENTICATION_FAILED';
  constructor(user: string) {
    super('ERR_ENDPOINT_AUTH', `${user}: Authentication failed: password is incorrect, or there is no user with such name`);
  }
}

/** A statement that changes something, from a credential (or a GET) that may only read. */
export class ReadonlyError extends EndpointRefusal {
  readonly status = 403;
  readonly chCode = 164;
  readonly chName = 'READONLY';
  constructor(message: string) {
    super('ERR_ENDPOINT_READONLY', message);
  }
}

/** A statement, function or origin the credential or the endpoint does not allow. */
export class AccessDeniedError extends EndpointRefusal {
  readonly status = 403;
  readonly chCode = 497;
  readonly chName = 'ACCESS_DENIED';
  constructor(message: string) {
    super('ERR_ENDPOINT_ACCESS', message);
  }
}

/** No query, or a query the endpoint cannot take as one statement. */
export class QuerySyntaxError extends EndpointRefusal {
  readonly status = 400;
  readonly chCode = 62;
  readonly chName = 'SYNTAX_ERROR';
  constructor(message: string) {
    super('ERR_ENDPOINT_SYNTAX', message);
  }
}

/** A request body over its cap, as sent or once decompressed. */
export class BodyTooLargeError extends EndpointRefusal {
  readonly status = 413;
  readonly chCode = 307;
  readonly chName = 'TOO_MANY_BYTES';
  constructor(cap: number, what: string) {
    super('ERR_ENDPOINT_BODY_TOO_LARGE', `${what} is larger than ${cap} bytes, the endpoint's cap`);
  }
}

/** A request body the endpoint cannot decode (an unknown Content-Encoding, corrupt gzip). */
export class BodyEncodingError extends EndpointRefusal {
  readonly status = 400;
  readonly chCode = 271;
  readonly chName = 'CANNOT_DECOMPRESS';
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_ENDPOINT_BODY_ENCODING', message, options);
  }
}

/** The `Code: N. DB::Exception: ...` text and code of a refusal or of the engine's own error. */
export function exceptionText(err: unknown): { status: number; code: number; text: string } {
  if (err instanceof EndpointRefusal) {
    return { status: err.status, code: err.chCode, text: `Code: ${err.chCode}. DB::Exception: ${err.message}. (${err.chName})\n` };
  }
  const e = err as { code?: unknown; type?: unknown; message?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  const m = /Code: (\d+)\. (DB::Exception: [\s\S]*)/.exec(msg);
  const code = m ? Number(m[1]) : Number(e?.code) || 1001;
  const text = m ? `Code: ${code}. ${m[2].trim()}\n` : `Code: ${code}. DB::Exception: ${msg}${typeof e?.type === 'string' ? ` (${e.type})` : ''}\n`;
  return { status: statusOf(code), code, text };
}

/** The HTTP status a ClickHouse server gives an engine error code. */
function statusOf(code: number): number {
  if (code === 516 || code === 164 || code === 497) return 403;
  if (code === 62 || code === 36 || code === 115 || code === 456) return 400;
  if (code === 60 || code === 81) return 404;
  return 500;
}
