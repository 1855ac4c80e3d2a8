/**
 * Names the kernel's numbers for processors that run elsewhere: drop locations through
 * /proc/kallsyms ("tcp_v4_rcv+0x5e3") and drop reasons through the kfree_skb tracepoint's
 * format (the enum differs between kernels). Envelopes carry the names they need.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';

const TRACEFS_KFREE_SKB_FORMAT = '/sys/kernel/tracing/events/skb/kfree_skb/format';

/** Sorted text symbols of the running kernel. */
export class KernelSymbols {
  private addrs: BigUint64Array | null = null;
  private names: string[] = [];

  /**
   * Opened now, read at the first lookup (reading takes about a second): the kernel decides
   * at open whether addresses show, by the opener's CAP_SYSLOG, which the edge drops once
   * attached (edge/privileges.ts).
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
    const entries: [bigint, string][] = [];
    let text = '';
    try {
      text = readFileSync(this.fd ?? this.path, 'latin1');
    } catch {
      // No symbols: locations stay hex.
    } finally {
      if (this.fd !== null) closeSync(this.fd);
      this.fd = null;
    }
    for (const line of text.split('\n')) {
      // "ffffffff81000000 T _text [module]": text symbols only.
      const sp1 = line.indexOf(' ');
      const type = line[sp1 + 1];
      if (sp1 !== 16 || (type !== 't' && type !== 'T')) continue;
      const rest = line.slice(sp1 + 3);
      const tab = rest.indexOf('\t');
      entries.push([BigInt('0x' + line.slice(0, sp1)), tab < 0 ? rest : rest.slice(0, tab)]);
    }
    entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.addrs = BigUint64Array.from(entries.map((e) => e[0]));
    this.names = entries.map((e) => e[1]);
  }

  /** "function+0xoffset" for a kernel text address, or its hex if unknown (or zeroed kallsyms). */
  resolve(addr: bigint): string {
    if (!this.addrs) this.load();
    const a = this.addrs!;
    let lo = 0, hi = a.length - 1, best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] <= addr) { best = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (best < 0 || a[best] === 0n) return `0x${addr.toString(16)}`;
    return `${this.names[best]}+0x${(addr - a[best]).toString(16)}`;
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
