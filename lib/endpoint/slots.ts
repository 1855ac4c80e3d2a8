/** At most `max` tasks at a time; the rest wait their turn in order. */
export class Slots {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.busy < this.max) this.busy++;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await task();
    } finally {
      // The slot passes straight to the next waiter, or frees.
      const next = this.waiting.shift();
      if (next) next();
      else this.busy--;
    }
  }
}
