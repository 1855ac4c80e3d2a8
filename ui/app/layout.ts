/**
 * The service map's layout, our own and small: a node is an address with the processes seen
 * there; each node's column is its longest chain of callers (callers left of what they call),
 * nodes of a column stacked in name order. Edges that would go back (a cycle) just do.
 */
import type { Row } from './api';

export interface MapNode {
  id: string;
  process: string;
  addr: string;
  x: number;
  y: number;
}

export interface MapEdge {
  from: MapNode;
  to: MapNode;
  row: Row;
}

export interface MapLayout {
  nodes: MapNode[];
  edges: MapEdge[];
  width: number;
  height: number;
}

export const NODE_W = 190;
export const NODE_H = 44;
// Room between columns for an edge's two lines of numbers.
const COLUMN_GAP = NODE_W + 320;
const ROW_GAP = 76;
const MARGIN = 24;

/** Drop IPv4-mapped IPv6's prefix: rows keep IPv4 as ::ffff:a.b.c.d. */
export function shortAddr(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** Lay out the service-map view's rows (one per edge). */
export function layout(rows: Row[]): MapLayout {
  const nodes = new Map<string, MapNode>();
  const node = (addr: string, process: string) => {
    const id = `${process}@${addr}`;
    let n = nodes.get(id);
    if (!n) nodes.set(id, (n = { id, process, addr: shortAddr(addr), x: 0, y: 0 }));
    return n;
  };
  const edges = rows.map((row) => ({ from: node(String(row.client), String(row.client_process ?? '')), to: node(String(row.server), String(row.server_process ?? '')), row }));
  // Longest chain of callers, relaxed at most once per node (so a cycle cannot loop).
  const column = new Map<MapNode, number>([...nodes.values()].map((n) => [n, 0]));
  for (let pass = 0; pass < nodes.size; pass++) {
    let moved = false;
    for (const e of edges) {
      if (e.from !== e.to && column.get(e.to)! < column.get(e.from)! + 1 && column.get(e.from)! + 1 < nodes.size) {
        column.set(e.to, column.get(e.from)! + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const columns: MapNode[][] = [];
  for (const [n, c] of column) (columns[c] ??= []).push(n);
  let height = 0;
  columns.forEach((list, c) => {
    list.sort((a, b) => a.id.localeCompare(b.id));
    list.forEach((n, i) => {
      n.x = MARGIN + c * COLUMN_GAP;
      n.y = MARGIN + i * ROW_GAP;
      height = Math.max(height, n.y + NODE_H + MARGIN);
    });
  });
  const width = MARGIN * 2 + Math.max(0, columns.length - 1) * COLUMN_GAP + NODE_W;
  return { nodes: [...nodes.values()], edges, width, height };
}
