/**
 * The few libc calls the edge needs through koffi: mmap for the ring buffer, clock_gettime
 * for the monotonic-to-realtime offset, vsnprintf to format libbpf's log lines.
 */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x1;
const MAP_FAILED = 0xffffffffffffffffn;
export const CLOCK_REALTIME = 0;
export const CLOCK_MONOTONIC = 1;
/** CPU time of the calling thread. */
export const CLOCK_THREAD_CPUTIME_ID = 3;
const SC_PAGESIZE = 30;

const timespec = koffi.struct('netrig_timespec', { tv_sec: 'int64_t', tv_nsec: 'int64_t' });

const mmapFn = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmapFn = libc.func('int munmap(void *addr, size_t len)');
const sysconf = libc.func('long sysconf(int name)');
const clockGettime = libc.func('clock_gettime', 'int', ['int', koffi.out(koffi.pointer(timespec))]);
const strerrorFn = libc.func('const char *strerror(int errnum)');
/** vsnprintf with the va_list passed through as the opaque pointer x86-64 uses. */
export const vsnprintf = libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *ap)');

/** Page size of this machine. */
export const PAGE_SIZE = Number(sysconf(SC_PAGESIZE));

/** A mapping of a file descriptor, exposed as an ArrayBuffer over the shared pages. */
export interface Mapping {
  readonly ptr: unknown;
  readonly length: number;
  readonly buffer: ArrayBuffer;
}

/** mmap(2) a descriptor; throws with errno on failure. */
export function mmap(fd: number, length: number, prot: number, offset: number): Mapping {
  const ptr = mmapFn(null, length, prot, MAP_SHARED, fd, offset);
  if (ptr === null || koffi.address(ptr) === MAP_FAILED) {
    const errno = koffi.errno();
    throw new Error(`mmap of fd ${fd} (${length} bytes at ${offset}) failed: ${strerror(errno)}`);
  }
  return { ptr, length, buffer: koffi.view(ptr, length) };
}

export function munmap(m: Mapping): void {
  munmapFn(m.ptr, m.length);
}

export function strerror(errno: number): string {
  return `${strerrorFn(errno)} (errno ${errno})`;
}

/** clock_gettime(2) in nanoseconds as a bigint. */
export function clockNs(clock: number): bigint {
  const ts = { tv_sec: 0, tv_nsec: 0 };
  if (clockGettime(clock, ts) !== 0) throw new Error(`clock_gettime(${clock}) failed: ${strerror(koffi.errno())}`);
  return BigInt(ts.tv_sec) * 1_000_000_000n + BigInt(ts.tv_nsec);
}
