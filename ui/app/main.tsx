/**
 * netrig's page: the service map, endpoints, the exchanges of what was clicked, TCP health,
 * DNS, TLS and capture losses over one time range. Each panel is a view of the server's API
 * (ui/api.ts), the same SQL as `netrig report <view>`.
 */
import { render, type ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { useView, type Range, type Row } from './api';
import { shortAddr } from './layout';
import { ServiceMap, type EdgeKey } from './service-map';
import { ms, Table, type Column } from './table';
import { presetRange, TimeRangePicker } from './time-range';

/** What the exchanges panel lists: an edge of the map, or an endpoint. */
type Selection = { kind: 'edge'; edge: EdgeKey } | { kind: 'endpoint'; host: string; method: string; endpoint: string };

const ENDPOINT_COLUMNS: Column[] = [
  { key: 'host', label: 'host' },
  { key: 'method', label: 'method' },
  { key: 'endpoint', label: 'path template' },
  { key: 'role', label: 'role' },
  { key: 'requests', label: 'requests', numeric: true },
  { key: 'errors', label: 'failed', numeric: true },
  { key: 'p50_ms', label: 'p50 ms', numeric: true },
  { key: 'p99_ms', label: 'p99 ms', numeric: true },
];

const EXCHANGE_COLUMNS: Column[] = [
  { key: 'started', label: 'time (UTC)' },
  { key: 'client', label: 'client', format: (v, r) => `${r.client_process || '?'} ${shortAddr(String(v))}:${r.client_port}` },
  { key: 'method', label: 'method' },
  { key: 'path', label: 'path' },
  { key: 'status', label: 'status', numeric: true, format: (v, r) => (Number(r.timed_out) ? `${v} (no response)` : String(v)) },
  { key: 'client_ms', label: 'client ms', numeric: true, format: ms },
  { key: 'server_ms', label: 'server ms', numeric: true, format: ms },
  { key: 'network', label: 'client − server', numeric: true, format: (_v, r) => (r.client_ms === null || r.server_ms === null ? '—' : `${(Number(r.client_ms) - Number(r.server_ms)).toFixed(3)} ms`) },
];

const TCP_COLUMNS: Column[] = [
  { key: 'kind', label: 'kind' },
  { key: 'reason', label: 'reason' },
  { key: 'location', label: 'kernel location' },
  { key: 'events', label: 'events', numeric: true },
  { key: 'connections', label: 'connections', numeric: true },
  { key: 'processes', label: 'processes' },
];

const DNS_COLUMNS: Column[] = [
  { key: 'qname', label: 'name' },
  { key: 'qtype', label: 'type' },
  { key: 'queries', label: 'queries', numeric: true },
  { key: 'nxdomain', label: 'NXDOMAIN', numeric: true },
  { key: 'timeouts', label: 'timeouts', numeric: true },
  { key: 'p50_ms', label: 'p50 ms', numeric: true },
  { key: 'p99_ms', label: 'p99 ms', numeric: true },
  { key: 'servers', label: 'servers', format: (v) => (Array.isArray(v) ? (v as string[]).map(shortAddr).join(', ') : String(v ?? '')) },
];

const TLS_COLUMNS: Column[] = [
  { key: 'sni', label: 'server name' },
  { key: 'version', label: 'version' },
  { key: 'cipher', label: 'cipher' },
  { key: 'alpn', label: 'ALPN' },
  { key: 'offered', label: 'offered' },
  { key: 'handshakes', label: 'handshakes', numeric: true },
  { key: 'incomplete', label: 'incomplete', numeric: true },
  { key: 'p50_ms', label: 'p50 ms', numeric: true },
];

const LOSS_COLUMNS: Column[] = [
  { key: 'node', label: 'node' },
  { key: 'kind', label: 'record kind' },
  { key: 'cause', label: 'cause' },
  { key: 'records', label: 'records', numeric: true },
  { key: 'first', label: 'first' },
  { key: 'last', label: 'last' },
];

function selectionFilters(s: Selection | null): Record<string, string> | null {
  if (!s) return null;
  if (s.kind === 'edge') return { client: s.edge.client, server: s.edge.server, port: s.edge.port };
  return { host: s.host, method: s.method, endpoint: s.endpoint };
}

function selectionTitle(s: Selection): string {
  if (s.kind === 'edge') return `${shortAddr(s.edge.client)} → ${shortAddr(s.edge.server)}:${s.edge.port}`;
  return `${s.method} ${s.host}${s.endpoint}`;
}

function Panel({ id, title, children }: { id: string; title: string; children: ComponentChildren }) {
  return (
    <section class="panel" id={id}>
      <h2>{title}</h2>
      {children}
    </section>
  );
}

function App() {
  const [range, setRange] = useState<Range>(() => presetRange('1h'));
  const [selection, setSelection] = useState<Selection | null>(null);
  const map = useView('service-map', range);
  const endpoints = useView('endpoints', range);
  const exchanges = useView('exchanges', range, selectionFilters(selection));
  const tcp = useView('tcp-health', range);
  const dns = useView('slow-dns', range);
  const tls = useView('tls', range);
  const losses = useView('losses', range);
  const pickEndpoint = (r: Row) => setSelection({ kind: 'endpoint', host: String(r.host), method: String(r.method), endpoint: String(r.endpoint) });
  const picked = (r: Row) => selection?.kind === 'endpoint' && selection.host === r.host && selection.method === r.method && selection.endpoint === r.endpoint;
  return (
    <main>
      <header>
        <h1>netrig</h1>
        <TimeRangePicker range={range} onChange={(r) => setRange(r)} />
        <p class="muted" data-testid="range-shown">{`${new Date(range.fromMs).toISOString()} – ${new Date(range.toMs).toISOString()}`}</p>
      </header>
      <Panel id="map" title="Service map">
        <ServiceMap state={map} picked={selection?.kind === 'edge' ? selection.edge : null} onPick={(edge) => setSelection({ kind: 'edge', edge })} />
      </Panel>
      <Panel id="endpoints" title="Endpoints">
        <Table id="endpoints-table" columns={ENDPOINT_COLUMNS} state={endpoints} empty="no HTTP endpoints in this range" onPick={pickEndpoint} picked={picked} />
      </Panel>
      <Panel id="exchanges" title={selection ? `Recent exchanges: ${selectionTitle(selection)}` : 'Recent exchanges'}>
        {selection
          ? <Table id="exchanges-table" columns={EXCHANGE_COLUMNS} state={exchanges} empty="no exchanges in this range" />
          : <p class="muted">click an edge of the map or an endpoint</p>}
      </Panel>
      <Panel id="tcp" title="TCP health">
        <Table id="tcp-table" columns={TCP_COLUMNS} state={tcp} empty="no retransmits, resets or drops in this range" />
      </Panel>
      <Panel id="dns" title="DNS">
        <Table id="dns-table" columns={DNS_COLUMNS} state={dns} empty="no DNS queries in this range" />
      </Panel>
      <Panel id="tls" title="TLS inventory">
        <Table id="tls-table" columns={TLS_COLUMNS} state={tls} empty="no TLS handshakes in this range" />
      </Panel>
      <Panel id="losses" title="Capture losses">
        <Table id="losses-table" columns={LOSS_COLUMNS} state={losses} empty="nothing lost in this range" />
      </Panel>
    </main>
  );
}

render(<App />, document.getElementById('app')!);
