/**
 * Names the kernel's numbers for processors that run elsewhere: drop locations through
 * /proc/kallsyms ("tcp_v4_rcv+0x5e3") and drop reasons through the kfree_skb tracepoint's
 * format (the enum differs between kernels). Envelopes carry the names they need.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';

const TRACEFS_KFREE_SKB_FORMAT = '/sys/kernel/tracing/events/skb/kfree_skb/format';
const LF = 0x0a;
const TAB = 0x09;
const SP = 0x20;
const T_LOWER = 0x74;
const T_UPPER = 0x54;

/**
 * Sorted text symbols of the running kernel, packed: addresses as two 32-bit halves and the
 * names in one buffer (about 2 MiB for 100k symbols). As JS strings and BigInts they held
 * some 50 MiB of the edge's heap from the first drop on.
 */
export class KernelSymbols {
  private hi = new Uint32Array(0);
  private lo = new Uint32Array(0);
  private nameOff = new Uint32Array(0);
  private nameEnd = new Uint32Array(0);
  private names = Buffer.alloc(0);
  private loaded = false;

  /**
   * Opened now, read at the first lookup (reading and sorting take about 0.2 s): the kernel
   * decides at open whether addresses show, by the opener's CAP_SYSLOG, which the edge drops
   * once attached (edge/privileges.ts).
   */
  private fd: number | null;

  constructor(private readonly path = '/proc/kallsyms') {
    try {
      this.fd = openSync(path, 'r');
    } catch {
      this.fd = null;
    }
  }

  private load(): void {
    this.loaded = true;
    let text = Buffer.alloc(0);
    try {
      text = readFileSync(this.fd ?? this.path);
    } catch {
      // No symbols: locations stay hex.
    } finally {
      if (this.fd !== null) closeSync(this.fd);
      this.fd = null;
    }
    // "ffffffff81000000 T _text\t[module]": text symbols only.
    const hi: number[] = [];
    const lo: number[] = [];
    const start: number[] = [];
    const end: number[] = [];
    for (let pos = 0; pos < text.length;) {
      let eol = text.indexOf(LF, pos);
      if (eol < 0) eol = text.length;
      const type = text[pos + 17];
      if (eol - pos > 19 && text[pos + 16] === SP && (type === T_LOWER || type === T_UPPER) && text[pos + 18] === SP) {
        // Within the line: indexOf would scan on to the first module symbol's tab, past
        // every core symbol after this one (seconds for the whole file).
        let nameEnd = pos + 19;
        while (nameEnd < eol && text[nameEnd] !== TAB) nameEnd++;
        hi.push(parseInt(text.toString('latin1', pos, pos + 8), 16));
        lo.push(parseInt(text.toString('latin1', pos + 8, pos + 16), 16));
        start.push(pos + 19);
        end.push(nameEnd);
      }
      pos = eol + 1;
    }
    const order = Array.from({ length: hi.length }, (_, i) => i).sort((a, b) => hi[a] - hi[b] || lo[a] - lo[b]);
    const n = order.length;
    this.hi = new Uint32Array(n);
    this.lo = new Uint32Array(n);
    this.nameOff = new Uint32Array(n);
    this.nameEnd = new Uint32Array(n);
    let bytes = 0;
    for (const i of order) bytes += end[i] - start[i];
    this.names = Buffer.allocUnsafe(bytes);
    let at = 0;
    order.forEach((i, k) => {
      this.hi[k] = hi[i];
      this.lo[k] = lo[i];
      this.nameOff[k] = at;
      at += text.copy(this.names, at, start[i], end[i]);
      this.nameEnd[k] = at;
    });
  }

  /** "function+0xoffset" for a kernel text address, or its hex if unknown (or zeroed kallsyms). */
  resolve(addr: bigint): string {
    if (!this.loaded) this.load();
    const h = Number(addr >> 32n);
    const l = Number(addr & 0xffff_ffffn);
    let lo = 0;
    let hi = this.hi.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.hi[mid] < h || (this.hi[mid] === h && this.lo[mid] <= l)) {
        best = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (best < 0 || (this.hi[best] === 0 && this.lo[best] === 0)) return `0x${addr.toString(16)}`;
    const base = (BigInt(this.hi[best]) << 32n) | BigInt(this.lo[best]);
    return `${this.names.toString('latin1', this.nameOff[best], this.nameEnd[best])}+0x${(addr - base).toString(16)}`;
  }
}

/** Drop reason number → name on this kernel, from the tracepoint's print format. */
export function readDropReasons(path = TRACEFS_KFREE_SKB_FORMAT): Map<number, string> {
  const names = new Map<number, string>();
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return names;
  }
  for (const m of text.matchAll(/\{\s*(\d+),\s*"([A-Za-z0-9_]+)"\s*\}/g)) names.set(Number(m[1]), m[2]);
  return names;
}
