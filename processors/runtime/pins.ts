/**
 * Pins: stream sequences a lane still needs to re-read after a crash, one per connection
 * with state in progress. Pins are only ever taken at the message being handled, so they
 * arrive in increasing order and the lowest live one is found at the head of a queue.
 */
interface PinEntry {
  seq: number;
  count: number;
}

export class PinSet {
  private queue: PinEntry[] = [];
  private head = 0;
  private readonly bySeq = new Map<number, PinEntry>();

  /** Pin at `seq`, which must be at least every pin taken before. */
  add(seq: number): void {
    const e = this.bySeq.get(seq);
    if (e) {
      e.count++;
      return;
    }
    const entry = { seq, count: 1 };
    this.bySeq.set(seq, entry);
    this.queue.push(entry);
  }

  /** Release one pin taken at `seq`. */
  release(seq: number): void {
    const e = this.bySeq.get(seq);
    if (!e) return;
    if (--e.count === 0) this.bySeq.delete(seq);
    while (this.head < this.queue.length && this.queue[this.head].count === 0) this.head++;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** The lowest pinned sequence, or Infinity when nothing is pinned. */
  min(): number {
    return this.head < this.queue.length ? this.queue[this.head].seq : Infinity;
  }
}
