/**
 * Records of a captured conversation, split the ways the kernel may split them: every parser
 * test feeds its fixtures whole, byte by byte and split at every boundary, and must get the
 * same result each time.
 */
import { DataFlags } from '../../schemas/records.js';
import type { StreamRecord } from '../../processors/l7/reassembly.js';

/** A kernel record and its direction (0 egress, 1 ingress). */
export interface Rec extends StreamRecord {
  dir: 0 | 1;
}

/** Split `rec` at the given payload offsets, as the kernel splits a syscall into records. */
export function splitRecord(rec: Rec, cuts: number[]): Rec[] {
  const points = [0, ...cuts.filter((c) => c > 0 && c < rec.payload.length), rec.payload.length];
  if (points.length === 2) return [rec];
  const out: Rec[] = [];
  for (let k = 0; k + 1 < points.length; k++) {
    const last = k + 2 === points.length;
    out.push({
      ...rec, posBytes: rec.posBytes + points[k], offsetBytes: rec.offsetBytes + points[k],
      payload: rec.payload.subarray(points[k], points[k + 1]),
      dataFlags: last ? rec.dataFlags : rec.dataFlags & ~(DataFlags.Last | DataFlags.Truncated),
    });
  }
  return out;
}

/** Every record split into one-byte records. */
export function byteByByte(recs: Rec[]): Rec[] {
  return recs.flatMap((r) => splitRecord(r, Array.from({ length: r.payload.length }, (_, i) => i)));
}

/** Records split once at captured byte `i` of the whole conversation. */
export function splitAt(recs: Rec[], i: number): Rec[] {
  let base = 0;
  return recs.flatMap((r) => {
    const out = i > base && i < base + r.payload.length ? splitRecord(r, [i - base]) : [r];
    base += r.payload.length;
    return out;
  });
}

