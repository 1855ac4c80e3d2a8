/**
 * A record source over bytes recorded earlier: concatenated 8-byte-aligned records, each
 * starting with rec_hdr (the layout of an envelope's `records`). Lets everything above the
 * kernel boundary run without eBPF, in tests, benchmarks and replays.
 */
import { readFileSync } from 'node:fs';
import { REC_HDR } from '../schemas/layouts.js';
import type { RecordSource, RecordVisitor, SourceLoss } from './source.js';

export class FileSource implements RecordSource {
  readonly capture = { path: 'file', features: [] };
  private readonly data: Uint8Array;
  private off = 0;
  /** Records whose header claimed an impossible size; delivery stops there. */
  malformed = 0;

  /** `input`: a file path, or the bytes themselves. */
  constructor(input: string | Uint8Array, private readonly recordsPerPoll = 4096) {
    const bytes = typeof input === 'string' ? readFileSync(input) : input;
    // Own aligned copy: the batcher reads records as 32-bit words.
    const aligned = Buffer.allocUnsafeSlow(bytes.byteLength);
    aligned.set(bytes);
    this.data = aligned;
  }

  get exhausted(): boolean {
    return this.off >= this.data.length;
  }

  poll(visit: RecordVisitor): number {
    const d = this.data;
    let n = 0;
    while (n < this.recordsPerPoll && this.off + REC_HDR.size <= d.length) {
      const size = d[this.off + 4] | (d[this.off + 5] << 8) | (d[this.off + 6] << 16) | (d[this.off + 7] << 24);
      if (size < REC_HDR.size || this.off + size > d.length) {
        this.malformed++;
        this.off = d.length;
        break;
      }
      visit(d, this.off, size);
      this.off += (size + 7) & ~7;
      n++;
    }
    return n;
  }

  takeLosses(): SourceLoss[] {
    return [];
  }

  fill(): number {
    return 0;
  }

  close(): void {}
}
