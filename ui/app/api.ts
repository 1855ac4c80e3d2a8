/** The page's side of the API (ui/api.ts): one view's rows over a time range, with filters. */
import { useEffect, useState } from 'preact/hooks';

export type Row = Record<string, string | number | null>;

/** A time range [from, to) in epoch ms; `preset` names a look-back that ends when it is applied. */
export interface Range {
  fromMs: number;
  toMs: number;
  preset: string | null;
}

export interface ViewState {
  rows: Row[] | null;
  error: string | null;
  truncated: boolean;
}

/** Fetch a view; the server answers errors as JSON `{error}`. */
async function fetchView(view: string, range: Range, filters: Record<string, string>, signal: AbortSignal): Promise<{ rows: Row[]; truncated: boolean }> {
  const q = new URLSearchParams({ from: new Date(range.fromMs).toISOString(), to: new Date(range.toMs).toISOString(), ...filters });
  const res = await fetch(`/api/${view}?${q}`, { signal, headers: { Accept: 'application/json' } });
  const body = await res.json() as { rows?: Row[]; truncated?: boolean; error?: string };
  if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
  return { rows: body.rows ?? [], truncated: body.truncated === true };
}

/** A view's rows for the range and filters, refetched when they change (null filters: nothing to fetch). */
export function useView(view: string, range: Range, filters: Record<string, string> | null = {}): ViewState {
  const [state, setState] = useState<ViewState>({ rows: null, error: null, truncated: false });
  const key = JSON.stringify(filters);
  useEffect(() => {
    if (filters === null) {
      setState({ rows: null, error: null, truncated: false });
      return;
    }
    const ctl = new AbortController();
    setState({ rows: null, error: null, truncated: false });
    fetchView(view, range, filters, ctl.signal).then(
      (r) => setState({ rows: r.rows, error: null, truncated: r.truncated }),
      (err: Error) => { if (!ctl.signal.aborted) setState({ rows: null, error: err.message, truncated: false }); },
    );
    return () => ctl.abort();
  }, [view, range.fromMs, range.toMs, key]);
  return state;
}
