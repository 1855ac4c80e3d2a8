/**
 * HTTP Basic authentication, shared by the services netrig starts (the SQL endpoint, the
 * Prometheus endpoints): the credentials a request sends, and a comparison of secrets in
 * constant time.
 */
import type { IncomingMessage } from 'node:http';
import { timingSafeEqual } from 'node:crypto';

export interface Credentials {
  user: string;
  password: string;
}

/** User and password of an `Authorization: Basic` header, or null without one. */
export function basicCredentials(req: IncomingMessage): Credentials | null {
  const auth = req.headers.authorization;
  if (!auth?.startsWith('Basic ')) return null;
  const text = Buffer.from(auth.slice(6), 'base64').toString();
  const i = text.indexOf(':');
  return { user: safeDecode(i < 0 ? text : text.slice(0, i)), password: i < 0 ? '' : safeDecode(text.slice(i + 1)) };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Whether two secrets are equal, in time that does not depend on where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Whether `req` carries exactly `expected` by Basic auth. */
export function hasCredentials(req: IncomingMessage, expected: Credentials): boolean {
  const c = basicCredentials(req);
  return c !== null && c.user === expected.user && sameSecret(c.password, expected.password);
}
