/**
 * A reader of a BPF ring buffer mapped into this process: no FFI call per record.
 *
 * Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (we write it), page 1 holds
 * producer_pos (the kernel writes it), then the data area, which the kernel lets a reader map
 * twice in a row so a record that wraps reads in one piece. This reader maps it once: the
 * second mapping would double the edge's resident size (a 32 MiB ring showed as 64 MiB of
 * RSS), and the few records that wrap are copied into a scratch buffer instead. Each record
 * has an 8-byte header: u32 length with BUSY (bit 31) and DISCARD (bit 30) flags, u32 page
 * offset; records are 8-byte aligned, so a header never wraps.
 */
import { mmap, munmap, PAGE_SIZE, PROT_READ, PROT_WRITE, type Mapping } from './libc.js';

const BUSY_BIT = 0x80000000;
const DISCARD_BIT = 0x40000000;
const HDR_BYTES = 8;
/**
 * Consumed space goes back to the kernel every this many bytes during a drain, not only at
 * its end: a drain that starts on a ring filled during a stall (GC, a busy CPU) then frees
 * room while it runs instead of leaving the producer only what was free when it started.
 * One store per 64 KiB (~900 small records) costs nothing measurable (bench/drain.bench.ts).
 */
const RELEASE_BYTES = 64 * 1024;
/** Room for a wrapped record put together (see RingBufferReader.scratch). */
const SCRATCH_BYTES = 64 * 1024;

/** Called for each committed record: its bytes are data[off, off + len), valid until the callback returns. */
export type RecordVisitor = (data: Uint8Array, off: number, len: number) => void;

export class RingBufferReader {
  private readonly consumerMap: Mapping;
  private readonly producerMap: Mapping;
  private readonly consumerPos: BigUint64Array;
  private readonly producerPos: BigUint64Array;
  /** The data area, once. */
  readonly data: Uint8Array;
  /**
   * A record that wraps, in one piece: larger than any record netrig's programs write (8 KiB
   * chunks), and a whole number of 8-byte words, like the ring, since readers copy records by
   * the word, padding included (a scratch of exactly a record's length cut the last bytes of
   * short records off).
   */
  private scratch = new Uint8Array(SCRATCH_BYTES);
  private readonly words: Uint32Array;
  private readonly mask: number;
  /** Where this reader has consumed up to (bytes since the map was created). */
  private pos: number;

  /** Map the ring buffer behind `fd`; `size` is its max_entries (a power of two). */
  constructor(fd: number, readonly size: number) {
    this.consumerMap = mmap(fd, PAGE_SIZE, PROT_READ | PROT_WRITE, 0);
    this.producerMap = mmap(fd, PAGE_SIZE + size, PROT_READ, PAGE_SIZE);
    this.consumerPos = new BigUint64Array(this.consumerMap.buffer, 0, 1);
    this.producerPos = new BigUint64Array(this.producerMap.buffer, 0, 1);
    this.data = new Uint8Array(this.producerMap.buffer, PAGE_SIZE, size);
    this.words = new Uint32Array(this.producerMap.buffer, PAGE_SIZE, size >>> 2);
    this.mask = size - 1;
    this.pos = Number(this.consumerPos[0]);
  }

  /** Bytes committed or reserved by the kernel and not yet consumed. */
  pending(): number {
    return Number(this.producerPos[0]) - this.pos;
  }

  /**
   * Visit every committed record up to the producer position, releasing their space to
   * the kernel as it goes (every RELEASE_BYTES and at the end). Stops at a record still
   * being written. Returns the records visited.
   */
  drain(visit: RecordVisitor, maxBytes = Infinity): number {
    const end = Math.min(Number(this.producerPos[0]), this.pos + maxBytes);
    const words = this.words;
    const data = this.data;
    const mask = this.mask;
    let pos = this.pos;
    let off = pos & mask;
    let n = 0;
    let released = pos;
    while (pos < end) {
      const hdr = words[off >>> 2];
      if (hdr & BUSY_BIT) break;
      const len = hdr & ~(BUSY_BIT | DISCARD_BIT);
      if (!(hdr & DISCARD_BIT)) {
        const start = off + HDR_BYTES;
        if (start + len <= this.size) visit(data, start, len);
        else visit(this.unwrap(start, len), 0, len);
        n++;
      }
      const step = (len + HDR_BYTES + 7) & ~7;
      pos += step;
      off = (off + step) & mask;
      if (pos - released >= RELEASE_BYTES) {
        this.consumerPos[0] = BigInt(pos);
        released = pos;
      }
    }
    if (pos !== this.pos) {
      this.pos = pos;
      this.consumerPos[0] = BigInt(pos);
    }
    return n;
  }

  /**
   * The record at data[start, start + len) that runs past the end (start <= size) and on from
   * offset 0, in one piece.
   */
  private unwrap(start: number, len: number): Uint8Array {
    if (this.scratch.length < len + 8) this.scratch = new Uint8Array((len + 15) & ~7);
    const first = this.size - start;
    this.scratch.set(this.data.subarray(start, this.size), 0);
    this.scratch.set(this.data.subarray(0, len - first), first);
    return this.scratch;
  }

  /** Unmap both regions; the reader must not be used afterwards. */
  close(): void {
    munmap(this.producerMap);
    munmap(this.consumerMap);
  }
}
