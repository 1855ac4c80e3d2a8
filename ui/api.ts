/**
 * The page's JSON API: `GET /api/<view>?from=<iso>&to=<iso>&<filter>=<value>...`. A view is
 * a report of cli/reports.ts by name, never SQL from the browser; every parameter is checked
 * here (a ConfigError naming it, answered 400) and the values reach ClickHouse as query
 * parameters (cli/report-query.ts).
 */
import { ConfigError } from '../lib/errors.js';
import { checkedWindow, reportNamed, reportQuery, type ReportQuery, type TimeWindow } from '../cli/report-query.js';
import { REPORTS } from '../cli/reports.js';

/** Rows a view returns at most, whatever its SQL's own LIMIT. */
export const MAX_ROWS = 1000;

/** How far past now a window may end (clocks of browser and host differ a little). */
const FUTURE_SLACK_MS = 86_400_000;

/** One API call, checked. */
export interface ViewRequest {
  view: string;
  window: TimeWindow;
  query: ReportQuery;
}

/** A time of the API: ISO 8601 with a zone (`2026-12-07T14:00:00Z`) or epoch milliseconds. */
function timeParam(name: string, v: string | null): number {
  if (v === null) throw new ConfigError(name, 'missing: give an ISO time such as 2026-12-07T14:00:00Z or epoch milliseconds');
  const ms = /^\d{1,15}$/.test(v) ? Number(v) : /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:\d\d)$/.test(v) ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw new ConfigError(name, `expected an ISO time with a zone such as 2026-12-07T14:00:00Z, or epoch milliseconds, got ${JSON.stringify(v.slice(0, 64))}`);
  return ms;
}

/** The views the page may ask for, with what each shows. */
export function viewList(): { name: string; description: string; filters: readonly string[] }[] {
  return Object.entries(REPORTS).map(([name, r]) => ({ name, description: r.description, filters: r.filters ?? [] }));
}

/** Check an API call of view `view` with the URL's parameters; `database` is where the rows are. */
export function viewRequest(view: string, params: URLSearchParams, database: string, nowMs = Date.now()): ViewRequest {
  const report = reportNamed(view);
  const seen = new Set<string>();
  const filters: Record<string, string> = {};
  for (const [k, v] of params) {
    if (seen.has(k)) throw new ConfigError(k, 'given more than once');
    seen.add(k);
    if (k !== 'from' && k !== 'to') filters[k] = v;
  }
  const window = checkedWindow({ fromMs: timeParam('from', params.get('from')), toMs: timeParam('to', params.get('to')) });
  if (window.toMs > nowMs + FUTURE_SLACK_MS) throw new ConfigError('to', 'the range ends more than a day from now');
  return { view, window, query: reportQuery(report, database, window, filters) };
}
