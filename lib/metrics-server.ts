/**
 * A Prometheus /metrics endpoint for one prom-client registry. On loopback by default;
 * with a password (Basic auth, user `netrig`: Prometheus's `basic_auth` with
 * `password_file`) it requires it, and it listens beyond loopback only with one.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { hasCredentials, type Credentials } from './basic-auth.js';
import { intValue } from './config.js';
import { ConfigError } from './errors.js';
import { listen } from './http-listen.js';
import { secretOfFlag } from './secret-file.js';

/** The user Prometheus sends with the metrics password. */
export const METRICS_USER = 'netrig';

/** Where a metrics endpoint listens and what it requires, as the flags give it. */
export interface MetricsInput {
  metricsHost?: string;
  /** File holding the password (`--metrics-password-file`). */
  metricsPasswordFile?: string;
  /** The password itself (netrig up passes the one it generated). */
  metricsPassword?: string;
}

export interface MetricsAccess {
  port: number;
  host: string;
  credentials: Credentials | null;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** The password in the file `--metrics-password-file` names; never empty. */
export function metricsPasswordOfFile(path: string): string {
  const password = secretOfFlag('metrics-password-file', path);
  if (!password) throw new ConfigError('metrics-password-file', `${path} is empty`);
  return password;
}

/** Validate the metrics flags; `port` is the `--metrics-port` value. */
export function metricsAccess(input: MetricsInput, port: string | number, flag = 'metrics-port'): MetricsAccess {
  const host = input.metricsHost ?? '127.0.0.1';
  const password = input.metricsPassword ?? (input.metricsPasswordFile === undefined ? undefined : metricsPasswordOfFile(input.metricsPasswordFile));
  if (!password && !LOOPBACK.has(host)) {
    throw new ConfigError('metrics-host', `metrics on ${host} (beyond loopback) need a password: pass --metrics-password-file`);
  }
  return { port: intValue(flag, port, 0, 65535), host, credentials: password ? { user: METRICS_USER, password } : null };
}

/** Serve `registry` at /metrics as `access` says; port 0 picks a free port. */
export async function serveMetrics(registry: Registry, access: MetricsAccess): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (access.credentials && !hasCredentials(req, access.credentials)) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="netrig metrics"' }).end();
      return;
    }
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  return { server, port: await listen(server, access.host, access.port, 'metrics') };
}
