/**
 * The edge's privileges: which capabilities it needs to start and which it keeps once its
 * programs are attached, and the drop itself.
 *
 * Measured on Linux 6.18 (uid 0 under `setpriv --bounding-set`): loading and attaching the
 * tracing programs needs CAP_BPF and CAP_PERFMON only (CAP_NET_ADMIN is not needed); the
 * uprobe PMU refuses CAP_PERFMON (EACCES) and needs CAP_SYS_ADMIN, so TLS plaintext needs
 * it; libssl inside other processes' mount namespaces and /proc/<pid>/maps of other users'
 * processes need CAP_SYS_PTRACE; kernel addresses in /proc/kallsyms (drop locations) read
 * as zeros without CAP_SYSLOG while perf_event_paranoid > 1.
 *
 * Capabilities are per thread on Linux and Node cannot run code on libuv's or V8's threads,
 * so the drop goes through a uid change, which glibc applies to every thread: every thread
 * becomes `runAs` and loses every capability (a uid change from 0 clears them), except the
 * main thread, which keeps its permitted set across the change (PR_SET_KEEPCAPS, a per-
 * thread flag) and then narrows it to what the running edge still uses. All JavaScript and
 * every synchronous libbpf call run on the main thread; file access from the thread pool
 * (asynchronous fs) runs as `runAs` with no capability.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { access } from 'node:fs/promises';
import koffi from 'koffi';
import { ConfigError, NetrigError } from '../lib/errors.js';

/** Capability numbers (linux/capability.h) of the ones the edge deals with. */
export const Cap = {
  SETGID: 6,
  SETUID: 7,
  NET_ADMIN: 12,
  SYS_PTRACE: 19,
  SYS_ADMIN: 21,
  SYS_RESOURCE: 24,
  SYSLOG: 34,
  PERFMON: 38,
  BPF: 39,
} as const;
export type CapName = keyof typeof Cap;

/** What each capability is for, in the edge's words (README and error messages). */
export const CAP_USES: Record<CapName, string> = {
  BPF: 'load programs and create maps',
  PERFMON: 'attach tracing programs and tracepoints',
  SYS_ADMIN: 'attach the TLS uprobes (the uprobe PMU refuses CAP_PERFMON); mount tracefs if it is not mounted',
  SYS_PTRACE: "find libssl inside other processes (their /proc/<pid>/maps and /proc/<pid>/root)",
  SYSLOG: 'read kernel addresses in /proc/kallsyms (names of drop locations)',
  SETUID: 'become --run-as after attaching',
  SETGID: 'become --run-as after attaching',
  SYS_RESOURCE: 'raise RLIMIT_MEMLOCK on kernels before 5.11',
  NET_ADMIN: 'not needed',
};

/** Kept by the main thread after the drop: map updates (control bucket) and the periodic TLS scan. */
export const KEPT_CAPS: readonly CapName[] = ['BPF', 'PERFMON', 'SYS_ADMIN', 'SYS_PTRACE'];

/** The capability drop failed or did not take effect on every thread. */
export class PrivilegeDropError extends NetrigError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_PRIVILEGE_DROP', message, options);
  }
}

const libc = koffi.load('libc.so.6');
const prctl = libc.func('int prctl(int option, ...)');
const capset = libc.func('int capset(void *hdrp, void *datap)');
const passwd = koffi.struct('netrig_passwd', {
  pw_name: 'const char *', pw_passwd: 'const char *', pw_uid: 'uint32_t', pw_gid: 'uint32_t',
  pw_gecos: 'const char *', pw_dir: 'const char *', pw_shell: 'const char *',
});
const getpwnam = libc.func('getpwnam', koffi.pointer(passwd), ['const char *']);

const PR_SET_KEEPCAPS = 8;
const PR_SET_NO_NEW_PRIVS = 38;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** The bit mask of `caps`. */
export function capMask(caps: readonly CapName[]): bigint {
  return caps.reduce((m, c) => m | (1n << BigInt(Cap[c])), 0n);
}

/** Uid, gid and capability sets of one thread, from /proc. */
export interface ThreadCreds {
  tid: number;
  uid: number;
  effective: bigint;
  permitted: bigint;
}

/** Uid and capability sets of a /proc status file, or null if the thread is gone. */
function statusCreds(path: string, tid: number): ThreadCreds | null {
  let status: string;
  try {
    status = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  const hex = (k: string) => BigInt('0x' + (new RegExp(`^${k}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? '0'));
  return { tid, uid: Number(/^Uid:\s*(\d+)/m.exec(status)?.[1]), effective: hex('CapEff'), permitted: hex('CapPrm') };
}

/** The credentials of every thread of this process. */
export function threadCreds(pid: number | 'self' = 'self'): ThreadCreds[] {
  const out: ThreadCreds[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const c = statusCreds(`/proc/${pid}/task/${tid}/status`, Number(tid));
    if (c) out.push(c);
  }
  return out;
}

/** The credentials of the calling thread. */
function ownCreds(): ThreadCreds {
  return statusCreds('/proc/thread-self/status', 0) ?? { tid: 0, uid: -1, effective: 0n, permitted: 0n };
}

/** Whether this thread holds `cap` now. */
export function hasCap(cap: CapName): boolean {
  return ((ownCreds().effective >> BigInt(Cap[cap])) & 1n) === 1n;
}

/** Uid and gid of `user`; a ConfigError naming `--run-as` if there is none. */
function lookupUser(user: string): { uid: number; gid: number } {
  const p = getpwnam(user);
  if (!p) throw new ConfigError('run-as', `no user '${user}' on this host: name an existing user (nobody, or a netrig user) or 'root' to keep root`);
  const pw = koffi.decode(p, passwd) as { pw_uid: number; pw_gid: number };
  return { uid: pw.pw_uid, gid: pw.pw_gid };
}

/**
 * Become `user` on every thread and keep only `keep` on the main thread (none on the
 * others); checks the result in /proc and throws if any thread kept more. Only a process
 * running as uid 0 drops; returns what it did.
 */
export async function dropPrivileges(user: string, keep: readonly CapName[] = KEPT_CAPS): Promise<{ uid: number; kept: CapName[] }> {
  const { uid, gid } = lookupUser(user);
  // Start the thread pool now (it starts on first use, and a thread started after the drop
  // would inherit the main thread's capabilities).
  await access('/');
  const keepMask = capMask(keep) & ownCreds().permitted;
  if (prctl(PR_SET_KEEPCAPS, 'unsigned long', 1, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0) !== 0) {
    throw new PrivilegeDropError(`prctl(PR_SET_KEEPCAPS) failed (errno ${koffi.errno()})`);
  }
  try {
    process.setgroups!([]);
    process.setgid!(gid);
    process.setuid!(uid);
  } catch (err) {
    throw new PrivilegeDropError(`cannot become ${user} (uid ${uid}): ${(err as Error).message}; the edge needs CAP_SETUID and CAP_SETGID to drop to --run-as`, { cause: err });
  }
  const header = Buffer.alloc(8);
  header.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  const data = Buffer.alloc(24);
  const lo = Number(keepMask & 0xffffffffn);
  const hi = Number(keepMask >> 32n);
  data.writeUInt32LE(lo, 0); // effective
  data.writeUInt32LE(lo, 4); // permitted
  data.writeUInt32LE(hi, 12);
  data.writeUInt32LE(hi, 16);
  if (capset(header, data) !== 0) throw new PrivilegeDropError(`capset failed (errno ${koffi.errno()})`);
  // Nothing this process executes from now on gains privileges (setuid binaries, file caps).
  prctl(PR_SET_NO_NEW_PRIVS, 'unsigned long', 1, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0);

  for (const t of threadCreds()) {
    const allowed = t.tid === process.pid ? keepMask : 0n;
    if (t.uid !== uid || (t.effective | t.permitted) & ~allowed) {
      throw new PrivilegeDropError(`thread ${t.tid} kept uid ${t.uid} or capabilities ${(t.effective | t.permitted).toString(16)} after the drop to ${user}`);
    }
  }
  return { uid, kept: keep.filter((c) => (keepMask >> BigInt(Cap[c])) & 1n) };
}
