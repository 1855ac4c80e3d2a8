/**
 * A bounds-checked read cursor over one Buffer, shared by every byte parser (frame
 * headers, DNS messages, TLS hellos), as pg-protocol's parser sits on one BufferReader.
 *
 * A read past `end` throws CursorRangeError rather than returning a sentinel: parsers
 * read many fields in a row and want one check at the message boundary (a try/catch that
 * turns the error into their own failure kind), not a test after every read. In-bounds
 * reads cost a compare and an add; the error object is built only for malformed input.
 * One cursor can be reused for many buffers (`reset`), so the hot path allocates nothing.
 */

/** A read ran past the end of a cursor's range. */
export class CursorRangeError extends RangeError {
  /** Offset the read started at. */
  readonly offset: number;
  /** Bytes the read wanted. */
  readonly want: number;
  /** End of the cursor's range. */
  readonly end: number;

  constructor(offset: number, want: number, end: number, options?: ErrorOptions) {
    super(`read of ${want} bytes at offset ${offset} runs past the end (${end})`, options);
    this.name = 'CursorRangeError';
    this.offset = offset;
    this.want = want;
    this.end = end;
  }
}

const EMPTY = Buffer.alloc(0);

export class Cursor {
  buf: Buffer;
  /** Next byte to read. */
  offset: number;
  /** First byte past the readable range. */
  end: number;

  constructor(buf: Buffer = EMPTY, offset = 0, end = buf.length) {
    this.buf = buf;
    this.offset = offset;
    this.end = end;
  }

  /** Point the cursor at `buf[offset, end)`. */
  reset(buf: Buffer, offset = 0, end = buf.length): this {
    this.buf = buf;
    this.offset = offset;
    this.end = end;
    return this;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  u8(): number {
    if (this.offset + 1 > this.end) throw new CursorRangeError(this.offset, 1, this.end);
    return this.buf[this.offset++];
  }

  u16be(): number {
    const o = this.offset;
    if (o + 2 > this.end) throw new CursorRangeError(o, 2, this.end);
    this.offset = o + 2;
    return (this.buf[o] << 8) | this.buf[o + 1];
  }

  u24be(): number {
    const o = this.offset;
    if (o + 3 > this.end) throw new CursorRangeError(o, 3, this.end);
    this.offset = o + 3;
    return (this.buf[o] << 16) | (this.buf[o + 1] << 8) | this.buf[o + 2];
  }

  u32be(): number {
    const o = this.offset;
    if (o + 4 > this.end) throw new CursorRangeError(o, 4, this.end);
    this.offset = o + 4;
    // Multiplied, not shifted: a shift by 24 would turn the top bit into a sign.
    return this.buf[o] * 0x1000000 + ((this.buf[o + 1] << 16) | (this.buf[o + 2] << 8) | this.buf[o + 3]);
  }

  /** The next `n` bytes as a view (no copy), valid as long as the buffer is. */
  bytes(n: number): Buffer {
    const o = this.offset;
    if (n < 0 || o + n > this.end) throw new CursorRangeError(o, n, this.end);
    this.offset = o + n;
    return this.buf.subarray(o, o + n);
  }

  skip(n: number): void {
    if (n < 0 || this.offset + n > this.end) throw new CursorRangeError(this.offset, n, this.end);
    this.offset += n;
  }

  /** A new cursor over the next `n` bytes, which this one skips (a length-delimited field). */
  take(n: number): Cursor {
    const o = this.offset;
    this.skip(n);
    return new Cursor(this.buf, o, o + n);
  }
}
