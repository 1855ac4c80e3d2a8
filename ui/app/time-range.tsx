/** The time-range picker: a look-back that ends now (applied again by Refresh), or a from–to of the user's. */
import { useState } from 'preact/hooks';
import type { Range } from './api';

export const PRESETS: Record<string, number> = { '5m': 5 * 60_000, '15m': 15 * 60_000, '1h': 3_600_000, '6h': 6 * 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 };

export function presetRange(preset: string): Range {
  const now = Date.now();
  return { fromMs: now - PRESETS[preset], toMs: now + 1, preset };
}

/** A datetime-local input's value (the browser's zone) for epoch ms, to the second. */
function localValue(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}

interface PickerProps {
  range: Range;
  onChange: (r: Range) => void;
}

export function TimeRangePicker({ range, onChange }: PickerProps) {
  const [from, setFrom] = useState(localValue(range.fromMs));
  const [to, setTo] = useState(localValue(range.toMs));
  const [problem, setProblem] = useState<string | null>(null);
  const apply = (e: Event) => {
    e.preventDefault();
    const f = new Date(from).getTime();
    const t = new Date(to).getTime();
    if (!Number.isFinite(f) || !Number.isFinite(t) || t <= f) return setProblem('the end must come after the start');
    setProblem(null);
    onChange({ fromMs: f, toMs: t, preset: null });
  };
  const pick = (p: string) => {
    const r = presetRange(p);
    setFrom(localValue(r.fromMs));
    setTo(localValue(r.toMs));
    setProblem(null);
    onChange(r);
  };
  return (
    <form class="range" onSubmit={apply} data-testid="time-range">
      <span class="presets">
        {Object.keys(PRESETS).map((p) => (
          <button type="button" key={p} class={range.preset === p ? 'on' : ''} data-preset={p} onClick={() => pick(p)}>{p}</button>
        ))}
      </span>
      <label>from <input type="datetime-local" name="from" step="1" value={from} onInput={(e) => setFrom(e.currentTarget.value)} /></label>
      <label>to <input type="datetime-local" name="to" step="1" value={to} onInput={(e) => setTo(e.currentTarget.value)} /></label>
      <button type="submit" name="apply">Apply</button>
      <button type="button" name="refresh" onClick={() => (range.preset ? pick(range.preset) : onChange({ ...range }))}>Refresh</button>
      {problem && <span class="error">{problem}</span>}
    </form>
  );
}
