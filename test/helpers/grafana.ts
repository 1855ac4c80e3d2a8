/**
 * Grafana dashboards of deploy/grafana/ as Grafana and its ClickHouse data source
 * (grafana-clickhouse-datasource 4.x) would run them: each panel's SQL with the dashboard's
 * variables and the data source's macros expanded for a time range, as that plugin expands
 * them (pkg/macros/macros.go). A macro the test does not know fails the expansion, so a
 * panel cannot pass with SQL the data source would not run.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './paths.js';

export const GRAFANA_DIR = join(REPO_ROOT, 'deploy/grafana');
export const CLICKHOUSE_PLUGIN = 'grafana-clickhouse-datasource';

export interface GrafanaTarget {
  refId: string;
  datasource: { type: string; uid: string };
  editorType: string;
  queryType: string;
  rawSql: string;
}

export interface GrafanaPanel {
  id: number;
  type: string;
  title: string;
  targets?: GrafanaTarget[];
}

export interface GrafanaDashboard {
  title: string;
  uid: string;
  panels: GrafanaPanel[];
  templating: { list: { name: string; type: string; query: string }[] };
}

/** Every dashboard in deploy/grafana/, by file name. */
export function dashboards(): Map<string, GrafanaDashboard> {
  const out = new Map<string, GrafanaDashboard>();
  for (const f of readdirSync(GRAFANA_DIR).filter((x) => x.endsWith('.json')).sort()) {
    out.set(f, JSON.parse(readFileSync(join(GRAFANA_DIR, f), 'utf8')) as GrafanaDashboard);
  }
  return out;
}

export interface Expansion {
  from: Date;
  to: Date;
  /** The panel's interval, seconds (at least 1, as the plugin makes it). */
  intervalS: number;
  /** Dashboard variables by name. */
  vars: Record<string, string>;
}

const seconds = (d: Date) => Math.floor(d.getTime() / 1000);

/** `sql` with variables (`${name}`, `$name`) and the data source's macros expanded. */
export function expandPanelSql(sql: string, e: Expansion): string {
  const macros: Record<string, (args: string[]) => string> = {
    timeFilter: ([c]) => `${c} >= toDateTime(${seconds(e.from)}) AND ${c} <= toDateTime(${seconds(e.to)})`,
    timeFilter_ms: ([c]) => `${c} >= fromUnixTimestamp64Milli(${e.from.getTime()}) AND ${c} <= fromUnixTimestamp64Milli(${e.to.getTime()})`,
    fromTime: () => `toDateTime(${seconds(e.from)})`,
    toTime: () => `toDateTime(${seconds(e.to)})`,
    timeInterval: ([c]) => `toStartOfInterval(toDateTime(${c}), INTERVAL ${Math.max(1, Math.floor(e.intervalS))} second)`,
    interval_s: () => String(Math.max(1, Math.floor(e.intervalS))),
  };
  let out = sql.replace(/\$__(\w+)(?:\(([^()]*)\))?/g, (whole, name: string, args: string | undefined) => {
    const m = macros[name];
    if (!m) throw new Error(`unknown macro ${whole}`);
    return m(args === undefined ? [] : args.split(',').map((a) => a.trim()));
  });
  out = out.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a: string | undefined, b: string | undefined) => {
    const name = a ?? b!;
    if (!(name in e.vars)) throw new Error(`unknown variable ${whole}`);
    return e.vars[name];
  });
  return out;
}
