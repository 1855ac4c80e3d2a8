/**
 * A report (cli/reports.ts) made into a query: its time window and its typed filters become
 * ClickHouse query parameters (`{name:Type}`), the SQL text only ever holds fixed fragments.
 * `netrig report` and the page (ui/api.ts) both build their queries here.
 */
import { isIP } from 'node:net';
import { ConfigError } from '../lib/errors.js';
import { REPORTS, type FilterName, type Report } from './reports.js';

/** A half-open time range [from, to), in epoch milliseconds. */
export interface TimeWindow {
  fromMs: number;
  toMs: number;
}

/** The longest window a query may cover: the default row retention. */
export const MAX_WINDOW_MS = 31 * 86_400_000;

interface FilterDef {
  /** The condition, on the column, with the value as its parameter. */
  condition: string;
  /** The value as ClickHouse takes it, or a ConfigError naming the filter. */
  parse(v: string): string;
}

function text(name: string, max: number): (v: string) => string {
  return (v) => {
    if (v.length === 0 || v.length > max) throw new ConfigError(name, `expected 1 to ${max} characters, got ${v.length}`);
    return v;
  };
}

function address(name: string): (v: string) => string {
  return (v) => {
    const family = isIP(v);
    if (family === 0) throw new ConfigError(name, `expected an IPv4 or IPv6 address, got ${JSON.stringify(v)}`);
    // Rows hold IPv4 as IPv4-mapped IPv6.
    return family === 4 ? `::ffff:${v}` : v;
  };
}

function port(name: string): (v: string) => string {
  return (v) => {
    if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new ConfigError(name, `expected a port from 0 to 65535, got ${JSON.stringify(v)}`);
    return v;
  };
}

/** Every filter a report may take: the column it tests and the parameter's type. */
export const FILTERS: Readonly<Record<FilterName, FilterDef>> = {
  client: { condition: 'client_addr = {client:IPv6}', parse: address('client') },
  server: { condition: 'server_addr = {server:IPv6}', parse: address('server') },
  port: { condition: 'server_port = {port:UInt16}', parse: port('port') },
  host: { condition: 'host = {host:String}', parse: text('host', 255) },
  method: { condition: 'method = {method:String}', parse: text('method', 32) },
  endpoint: { condition: 'path_template = {endpoint:String}', parse: text('endpoint', 512) },
};

/** A report ready to run: the SQL and its parameters. */
export interface ReportQuery {
  query: string;
  params: Record<string, string>;
}

/** The report of that name, or a ConfigError listing the known ones. */
export function reportNamed(name: string): Report {
  if (!Object.hasOwn(REPORTS, name)) throw new ConfigError('report', `unknown report '${name}'; known: ${Object.keys(REPORTS).join(', ')}`);
  return REPORTS[name];
}

/** Check a window: from before to, at most MAX_WINDOW_MS long. */
export function checkedWindow(w: TimeWindow): TimeWindow {
  if (!Number.isSafeInteger(w.fromMs) || !Number.isSafeInteger(w.toMs) || w.fromMs < 0) throw new ConfigError('from', 'expected times after 1970');
  if (w.toMs <= w.fromMs) throw new ConfigError('to', 'expected the end of the range after its start');
  if (w.toMs - w.fromMs > MAX_WINDOW_MS) throw new ConfigError('from', `the range is at most ${MAX_WINDOW_MS / 86_400_000} days`);
  return w;
}

const INTERVAL_UNITS: Record<string, (d: Date, n: number) => void> = {
  SECOND: (d, n) => d.setTime(d.getTime() - n * 1000),
  MINUTE: (d, n) => d.setTime(d.getTime() - n * 60_000),
  HOUR: (d, n) => d.setTime(d.getTime() - n * 3_600_000),
  DAY: (d, n) => d.setTime(d.getTime() - n * 86_400_000),
  WEEK: (d, n) => d.setTime(d.getTime() - n * 7 * 86_400_000),
  MONTH: (d, n) => d.setUTCMonth(d.getUTCMonth() - n),
};

/** `--since "15 MINUTE"` as the window that ends now (not bounded: a look-back the user asked for). */
export function sinceWindow(since: string, nowMs = Date.now()): TimeWindow {
  const m = /^(\d+) (SECOND|MINUTE|HOUR|DAY|WEEK|MONTH)S?$/i.exec(since.trim());
  if (!m) throw new ConfigError('since', `expected e.g. "15 MINUTE" or "7 DAY", got ${JSON.stringify(since)}`);
  const from = new Date(nowMs);
  INTERVAL_UNITS[m[2].toUpperCase()](from, Number(m[1]));
  // One past now: a row written this millisecond is in.
  return { fromMs: from.getTime(), toMs: nowMs + 1 };
}

/**
 * The query of `report` over `window` with `filters` (names the report takes, raw values):
 * a filter the report does not take, or a bad value, is a ConfigError naming it.
 */
export function reportQuery(report: Report, database: string, window: TimeWindow, filters: Partial<Record<string, string>> = {}): ReportQuery {
  const params: Record<string, string> = { from_ms: String(window.fromMs), to_ms: String(window.toMs) };
  const conditions = ["ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')", "ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')"];
  for (const [name, value] of Object.entries(filters)) {
    if (value === undefined) continue;
    if (!(report.filters ?? []).includes(name as FilterName)) {
      throw new ConfigError(name, `not a filter of this report${report.filters?.length ? `; it takes ${report.filters.join(', ')}` : ' (it takes none)'}`);
    }
    const def = FILTERS[name as FilterName];
    params[name] = def.parse(value);
    conditions.push(def.condition);
  }
  return { query: report.sql(database, conditions.join(' AND '), '(({to_ms:Int64} - {from_ms:Int64}) / 1000)'), params };
}
