/**
 * Host prerequisites of the libbpf source: root or the BPF capabilities, tracefs (tracepoint
 * ids) and bpffs mounted, BTF present; and node facts every envelope carries (boot id).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { PrerequisiteError, PrivilegeError } from '../lib/errors.js';

const TRACEFS = '/sys/kernel/tracing';
const BPFFS = '/sys/fs/bpf';
const BTF = '/sys/kernel/btf/vmlinux';
// CAP_NET_ADMIN 12, CAP_SYS_ADMIN 21, CAP_SYS_RESOURCE 24, CAP_PERFMON 38, CAP_BPF 39
const NEEDED_CAPS: [number, string][] = [[39, 'CAP_BPF'], [38, 'CAP_PERFMON'], [12, 'CAP_NET_ADMIN']];

function mountedFs(): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, dir, type] = line.split(' ');
    if (dir) m.set(dir, type);
  }
  return m;
}

function mount(type: string, dir: string): void {
  try {
    execFileSync('mount', ['-t', type, type === 'bpf' ? 'bpf' : 'nodev', dir], { stdio: 'pipe' });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new PrerequisiteError(`${type} is not mounted at ${dir} and mounting it failed (${stderr || (err as Error).message}): mount it by hand with 'mount -t ${type} ${type === 'bpf' ? 'bpf' : 'nodev'} ${dir}'`, { cause: err });
  }
}

/** Effective capability bits of this process. */
function effectiveCaps(): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? BigInt('0x' + m[1]) : 0n;
}

/** Check privileges and BTF, mount tracefs and bpffs when missing. Throws with what to do. */
export function prepareHost(): void {
  const caps = effectiveCaps();
  const hasSysAdmin = (caps >> 21n) & 1n;
  const missing = NEEDED_CAPS.filter(([bit]) => !((caps >> BigInt(bit)) & 1n)).map(([, n]) => n);
  if (!hasSysAdmin && missing.length) {
    throw new PrivilegeError(`the edge needs root (or ${missing.join(', ')}) to load eBPF programs: run it with sudo`);
  }
  if (!existsSync(BTF)) {
    throw new PrerequisiteError(`${BTF} is missing: netrig needs a kernel built with CONFIG_DEBUG_INFO_BTF (Linux 5.10 or later; Debian builds it so)`);
  }
  const mounts = mountedFs();
  if (mounts.get(TRACEFS) !== 'tracefs') mount('tracefs', TRACEFS);
  if (mounts.get(BPFFS) !== 'bpf') mount('bpf', BPFFS);
}

/** This boot's id: with a socket cookie it names a connection uniquely across reboots. */
export function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}
