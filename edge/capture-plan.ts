/**
 * Which of the object's programs this kernel gets, chosen by probing the kernel's BTF
 * (feature probes, not version numbers), and set on the object before it loads.
 *
 * - Payload: `socket` where tp_btf/sock_send_length and sock_recv_length exist (6.3+): the
 *   socket and byte count inside every send and receive, socket state in the socket's own
 *   storage, the socket cookie as connection id. `syscall` elsewhere: the syscall
 *   tracepoints with the file descriptor resolved to its socket in the kernel, socket state
 *   in a table keyed by the socket's address, connection ids made at first sight.
 * - Drops: skb:kfree_skb with its reason and receiving socket where the kernel passes them.
 * - Resets sent: with the kernel's reset reason where it passes one (6.10+).
 */
import { PrerequisiteError } from '../lib/errors.js';
import type { BpfObject } from './bpf-object.js';
import { Btf } from './btf.js';

export type PayloadPath = 'socket' | 'syscall';

export interface CapturePlan {
  payload: PayloadPath;
  /** What is active on this kernel, for logs, metrics, envelopes and `netrig up`. */
  features: string[];
  /** Programs this kernel does not get. */
  skipped: string[];
}

/** Programs of the socket-tracepoint path (bpf/sock_data.bpf.c). */
const SOCKET_PATH = ['sock_send_length', 'sock_recv_length', 'sys_exit_recvfrom', 'sys_exit_recvmsg', 'sys_exit_recvmmsg', 'sys_exit_sendmmsg'];
/** Programs of the syscall-tracepoint path (bpf/sock_syscalls.bpf.c) are named fd_enter_* and fd_exit_*. */
const isSyscallPath = (name: string) => name.startsWith('fd_');
/** Variants of one tracepoint's program by the arguments it reads; the first that fits loads. */
const VARIANTS: { tracepoint: string; programs: [name: string, args: number, feature: string | null][] }[] = [
  { tracepoint: 'kfree_skb', programs: [['kfree_skb', 4, 'drop_reasons'], ['kfree_skb_reason', 3, 'drop_reasons'], ['kfree_skb_noreason', 2, null]] },
  { tracepoint: 'tcp_send_reset', programs: [['tcp_send_reset', 3, 'reset_reasons'], ['tcp_send_reset_noreason', 2, null]] },
];
/** conn_store values (enum conn_store in bpf/lib/netrig.bpf.h; checked against BTF in a test). */
export const CONN_STORE = { CONN_STORE_SOCKET: 0, CONN_STORE_TABLE: 1 } as const;
/** Maps only one path uses; on the other path they are sized to one entry. */
const PATH_MAPS: Record<PayloadPath, string[]> = { socket: ['sock_tasks'], syscall: ['conn_table', 'sock_calls'] };

/**
 * Decide from the kernel's BTF; `programs` are the object's program names. `force` picks
 * the payload path instead (the syscall path runs on every kernel; the socket path only
 * where its tracepoints exist).
 */
export function planCapture(kernel: Btf, programs: string[], force?: PayloadPath): CapturePlan {
  const socketPath = kernel.tracepointArgs('sock_send_length') >= 0 && kernel.tracepointArgs('sock_recv_length') >= 0;
  if (force === 'socket' && !socketPath) {
    throw new PrerequisiteError('this kernel has no sock_send_length/sock_recv_length tracepoints (Linux 6.3+): use the syscall capture path');
  }
  const payload: PayloadPath = force ?? (socketPath ? 'socket' : 'syscall');
  const skipped = new Set(programs.filter((p) => (payload === 'socket' ? isSyscallPath(p) : SOCKET_PATH.includes(p))));
  const features: string[] = [];
  for (const v of VARIANTS) {
    const args = kernel.tracepointArgs(v.tracepoint);
    const chosen = v.programs.find(([, need]) => args >= need);
    for (const [name] of v.programs) if (name !== chosen?.[0]) skipped.add(name);
    if (chosen?.[2]) features.push(chosen[2]);
  }
  features.push('tls_openssl');
  return { payload, features, skipped: [...skipped].filter((p) => programs.includes(p)) };
}

/** Set the plan on an opened, not yet loaded object. */
export function applyPlan(obj: BpfObject, plan: CapturePlan): void {
  for (const name of plan.skipped) obj.setAutoload(name, false);
  obj.setRodataByte('conn_store', plan.payload === 'socket' ? CONN_STORE.CONN_STORE_SOCKET : CONN_STORE.CONN_STORE_TABLE);
  for (const map of PATH_MAPS[plan.payload === 'socket' ? 'syscall' : 'socket']) obj.setMaxEntries(map, 1);
}

/** Probe the running kernel, plan and set the plan on an opened object; returns the plan. */
export function planObject(obj: BpfObject, force?: PayloadPath): CapturePlan {
  const kernel = Btf.vmlinux();
  try {
    const plan = planCapture(kernel, obj.programNames(), force);
    applyPlan(obj, plan);
    return plan;
  } finally {
    kernel.close();
  }
}
