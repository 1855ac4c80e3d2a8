/**
 * Host prerequisites of the libbpf source: the capabilities it starts with
 * (edge/privileges.ts says which and why), tracefs mounted (tracepoint ids), BTF present;
 * and node facts every envelope carries (boot id). Nothing is pinned, so bpffs is not needed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { PrerequisiteError, PrivilegeError } from '../lib/errors.js';
import { CAP_USES, hasCap, type CapName } from './privileges.js';

const TRACEFS = '/sys/kernel/tracing';
const BTF = '/sys/kernel/btf/vmlinux';
/** Without these nothing loads (CAP_SYS_ADMIN stands in for both on kernels before 5.8). */
const NEEDED_CAPS: CapName[] = ['BPF', 'PERFMON'];

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
    execFileSync('mount', ['-t', type, 'nodev', dir], { stdio: 'pipe' });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new PrerequisiteError(`${type} is not mounted at ${dir} and mounting it failed (${stderr || (err as Error).message}): mount it by hand with 'mount -t ${type} nodev ${dir}' (mounting needs CAP_SYS_ADMIN)`, { cause: err });
  }
}

/** Check privileges and BTF, mount tracefs when missing. Throws with what to do. */
export function prepareHost(): void {
  const missing = NEEDED_CAPS.filter((c) => !hasCap(c));
  if (!hasCap('SYS_ADMIN') && missing.length) {
    throw new PrivilegeError(`the edge needs root (or ${missing.map((c) => `CAP_${c} to ${CAP_USES[c]}`).join(', ')}) to load eBPF programs: run it with sudo`);
  }
  if (!existsSync(BTF)) {
    throw new PrerequisiteError(`${BTF} is missing: netrig needs a kernel built with CONFIG_DEBUG_INFO_BTF (Linux 5.10 or later; Debian builds it so)`);
  }
  const mounts = mountedFs();
  if (mounts.get(TRACEFS) !== 'tracefs') mount('tracefs', TRACEFS);
}

/** This boot's id: with a socket cookie it names a connection uniquely across reboots. */
export function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}
