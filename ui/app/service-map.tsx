/**
 * The service map: processes and addresses as nodes, HTTP edges client → server with
 * requests/s, failure rate, p99, retransmits and drops (the service-map view), drawn as inline
 * SVG from ui/app/layout.ts; the same edges in a table below with what was captured of each.
 */
import type { Row, ViewState } from './api';
import { layout, NODE_H, NODE_W, shortAddr } from './layout';
import { percent, Table, type Column } from './table';

/** An edge of the map, as the exchanges view filters it. */
export interface EdgeKey {
  client: string;
  server: string;
  port: string;
}

export const edgeKey = (row: Row): EdgeKey => ({ client: String(row.client), server: String(row.server), port: String(row.port) });
const sameEdge = (a: EdgeKey | null, row: Row) => a !== null && a.client === row.client && a.server === row.server && a.port === String(row.port);

const capturePath = (row: Row) => `${row.captured === 'both' ? 'both ends' : `${row.captured} only`}${Number(row.tls_plaintext) ? ', TLS plaintext' : ''}`;

const COLUMNS: Column[] = [
  { key: 'client', label: 'client', format: (v, r) => `${r.client_process || '?'} ${shortAddr(String(v))}` },
  { key: 'server', label: 'server', format: (v, r) => `${r.server_process || '?'} ${shortAddr(String(v))}:${r.port}` },
  { key: 'requests', label: 'requests', numeric: true },
  { key: 'requests_per_s', label: 'req/s', numeric: true },
  { key: 'errors', label: 'failed', numeric: true },
  { key: 'error_rate', label: 'failure rate', numeric: true, format: percent },
  { key: 'p99_ms', label: 'p99 ms', numeric: true },
  { key: 'retransmits', label: 'retransmits', numeric: true },
  { key: 'resets', label: 'resets', numeric: true },
  { key: 'drops', label: 'drops', numeric: true },
  { key: 'captured', label: 'capture path', format: (_v, r) => capturePath(r) },
];

interface MapProps {
  state: ViewState;
  picked: EdgeKey | null;
  onPick: (e: EdgeKey) => void;
}

export function ServiceMap({ state, picked, onPick }: MapProps) {
  const rows = state.rows ?? [];
  const map = layout(rows);
  return (
    <div>
      {rows.length > 0 && (
        <div class="scroll">
          <svg class="map" width={map.width} height={map.height} viewBox={`0 0 ${map.width} ${map.height}`} role="img" aria-label="service map">
            <defs>
              <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                <path d="M 0 0 L 10 5 L 0 10 z" />
              </marker>
            </defs>
            {map.edges.map((e, i) => {
              const x1 = e.from.x + NODE_W, y1 = e.from.y + NODE_H / 2, x2 = e.to.x, y2 = e.to.y + NODE_H / 2;
              const bend = Math.max(40, Math.abs(x2 - x1) / 2);
              const d = `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
              const failing = Number(e.row.error_rate) > 0;
              return (
                <g key={i} class={`edge ${failing ? 'failing' : ''} ${sameEdge(picked, e.row) ? 'picked' : ''}`} data-edge={`${e.row.client} ${e.row.server}:${e.row.port}`}
                  data-requests={String(e.row.requests)} onClick={() => onPick(edgeKey(e.row))}>
                  <path d={d} class="hit" />
                  <path d={d} class="line" marker-end="url(#arrow)" />
                  <text x={(x1 + x2) / 2} y={(y1 + y2) / 2 - 8} text-anchor="middle">
                    {`${e.row.requests_per_s}/s · ${percent(e.row.error_rate)} · p99 ${e.row.p99_ms} ms`}
                  </text>
                  <text x={(x1 + x2) / 2} y={(y1 + y2) / 2 + 14} text-anchor="middle" class="minor">
                    {`:${e.row.port} · ${e.row.retransmits} retr · ${e.row.drops} drops · ${capturePath(e.row)}`}
                  </text>
                </g>
              );
            })}
            {map.nodes.map((n) => (
              <g key={n.id} class="node" data-node={n.process || n.addr} transform={`translate(${n.x} ${n.y})`}>
                <rect width={NODE_W} height={NODE_H} rx="6" />
                <text x="10" y="18" class="process">{n.process || 'not captured'}</text>
                <text x="10" y="35" class="addr">{n.addr}</text>
              </g>
            ))}
          </svg>
        </div>
      )}
      <Table id="edges" columns={COLUMNS} state={state} empty="no HTTP exchanges in this range" onPick={(r) => onPick(edgeKey(r))} picked={(r) => sameEdge(picked, r)} />
    </div>
  );
}
