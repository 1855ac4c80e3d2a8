/**
 * TCP trouble on a connection — its retransmits and the packets of it the kernel dropped —
 * as the connection table keeps it from the shard's retransmit and drop records (they come
 * through the same shard as the connection's data, in kernel order), and the columns an
 * exchange's row gets from it: what happened on its own connection while it was in flight.
 *
 * A record of trouble is kept with its connection for as long as the connection is tracked,
 * the last MAX_KEPT of them: an exchange looks back no further than its first request byte,
 * and a connection with more trouble than that in one exchange has its oldest forgotten
 * (counted by the table as `harm_forgotten`).
 */
import type { Row } from '../runtime/function.js';

export interface Harm {
  /** Kernel time of the retransmit or drop. */
  tsNs: number;
  drop: boolean;
}

const MAX_KEPT = 64;

/** Keep `h` on a connection's list (made on its first trouble); true when the oldest had to go. */
export function keepHarm(list: Harm[], h: Harm): boolean {
  list.push(h);
  if (list.length <= MAX_KEPT) return false;
  list.shift();
  return true;
}

/**
 * The row's retransmits, drops and harm_ns: the trouble between `startNs` and `endNs` (kernel
 * time; `endNs` null for an exchange without a response: everything since its start, up to
 * when it timed out), and from the first of it to the end.
 */
export function harmColumns(fields: Row, harms: readonly Harm[] | null, startNs: number, endNs: number | null): void {
  let retransmits = 0;
  let drops = 0;
  let first = Infinity;
  if (harms) {
    for (const h of harms) {
      if (h.tsNs < startNs || (endNs !== null && h.tsNs > endNs)) continue;
      if (h.drop) drops++;
      else retransmits++;
      if (h.tsNs < first) first = h.tsNs;
    }
  }
  fields.retransmits = Math.min(retransmits, 65_535);
  fields.drops = Math.min(drops, 65_535);
  fields.harm_ns = endNs !== null && first !== Infinity ? endNs - first : 0;
}
