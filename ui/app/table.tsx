/** A table of a view's rows: the columns named, numbers right-aligned, rows optionally clickable. */
import type { Row, ViewState } from './api';

export interface Column {
  key: string;
  label: string;
  /** How the cell reads; the raw value by default. */
  format?: (v: Row[string], row: Row) => string;
  numeric?: boolean;
}

interface TableProps {
  id: string;
  columns: Column[];
  state: ViewState;
  empty: string;
  onPick?: (row: Row) => void;
  /** Whether a row is the one picked. */
  picked?: (row: Row) => boolean;
}

export function Table({ id, columns, state, empty, onPick, picked }: TableProps) {
  if (state.error) return <p class="error" data-testid={`${id}-error`}>{state.error}</p>;
  if (!state.rows) return <p class="muted">loading…</p>;
  if (!state.rows.length) return <p class="muted" data-testid={`${id}-empty`}>{empty}</p>;
  return (
    <div class="scroll">
      <table data-testid={id}>
        <thead><tr>{columns.map((c) => <th key={c.key} class={c.numeric ? 'num' : ''}>{c.label}</th>)}</tr></thead>
        <tbody>
          {state.rows.map((row, i) => (
            <tr key={i} class={`${onPick ? 'pickable' : ''} ${picked?.(row) ? 'picked' : ''}`} onClick={onPick ? () => onPick(row) : undefined}>
              {columns.map((c) => <td key={c.key} data-col={c.key} class={c.numeric ? 'num' : ''}>{c.format ? c.format(row[c.key], row) : String(row[c.key] ?? '')}</td>)}
            </tr>
          ))}
        </tbody>
      </table>
      {state.truncated && <p class="muted">more rows than shown</p>}
    </div>
  );
}

/** Milliseconds, or a dash where the end was not captured. */
export const ms = (v: Row[string]) => (v === null || v === undefined ? '—' : `${v} ms`);
/** A share as a percentage. */
export const percent = (v: Row[string]) => `${(Number(v) * 100).toFixed(1)}%`;
