/**
 * Bindings to Debian's libbpf (libbpf.so.1) through koffi: only the calls the loader makes.
 * Every pointer-returning call returns null and sets errno on failure (libbpf 1.x).
 */
import koffi from 'koffi';
import { vsnprintf } from './libc.js';

const lib = koffi.load('libbpf.so.1');

/** The loaded library, for bindings kept beside what they serve (edge/btf.ts). */
export const libbpfLibrary = lib;

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');
koffi.opaque('bpf_link');

/** Opaque libbpf handles; only ever passed back to libbpf. */
export type BpfObjectPtr = { readonly __brand: 'bpf_object' };
export type BpfMapPtr = { readonly __brand: 'bpf_map' };
export type BpfProgramPtr = { readonly __brand: 'bpf_program' };
export type BpfLinkPtr = { readonly __brand: 'bpf_link' };

/** struct bpf_uprobe_opts (libbpf 1.1): sz, ref_ctr_offset, bpf_cookie, retprobe, func_name. */
const UprobeOpts = koffi.struct('netrig_bpf_uprobe_opts', {
  sz: 'size_t',
  ref_ctr_offset: 'size_t',
  bpf_cookie: 'uint64_t',
  retprobe: 'bool',
  func_name: 'const char *',
});

/** Options of bpf_program__attach_uprobe_opts. */
export interface UprobeOptions {
  retprobe: boolean;
  funcName: string;
}

const attachUprobeOpts = lib.func('bpf_link *bpf_program__attach_uprobe_opts(bpf_program *prog, int pid, const char *path, size_t offset, netrig_bpf_uprobe_opts *opts)');

/** Attach a uprobe program to `funcName` in the ELF file at `path`, for every process (pid -1). */
export function attachUprobe(prog: BpfProgramPtr, path: string, o: UprobeOptions): BpfLinkPtr | null {
  const opts = { sz: koffi.sizeof(UprobeOpts), ref_ctr_offset: 0, bpf_cookie: 0, retprobe: o.retprobe, func_name: o.funcName };
  return attachUprobeOpts(prog, -1, path, 0, opts) as BpfLinkPtr | null;
}

export const libbpf = {
  openFile: lib.func('bpf_object *bpf_object__open_file(const char *path, void *opts)') as (path: string, opts: null) => BpfObjectPtr | null,
  load: lib.func('int bpf_object__load(bpf_object *obj)') as (o: BpfObjectPtr) => number,
  close: lib.func('void bpf_object__close(bpf_object *obj)') as (o: BpfObjectPtr) => void,
  findMap: lib.func('bpf_map *bpf_object__find_map_by_name(bpf_object *obj, const char *name)') as (o: BpfObjectPtr, name: string) => BpfMapPtr | null,
  mapFd: lib.func('int bpf_map__fd(bpf_map *map)') as (m: BpfMapPtr) => number,
  mapSetMaxEntries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t n)') as (m: BpfMapPtr, n: number) => number,
  mapMaxEntries: lib.func('uint32_t bpf_map__max_entries(bpf_map *map)') as (m: BpfMapPtr) => number,
  mapValueSize: lib.func('uint32_t bpf_map__value_size(bpf_map *map)') as (m: BpfMapPtr) => number,
  nextProgram: lib.func('bpf_program *bpf_object__next_program(bpf_object *obj, bpf_program *prev)') as (o: BpfObjectPtr, prev: BpfProgramPtr | null) => BpfProgramPtr | null,
  programName: lib.func('const char *bpf_program__name(bpf_program *prog)') as (p: BpfProgramPtr) => string,
  programSection: lib.func('const char *bpf_program__section_name(bpf_program *prog)') as (p: BpfProgramPtr) => string,
  programSetAutoload: lib.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)') as (p: BpfProgramPtr, on: boolean) => number,
  programFd: lib.func('int bpf_program__fd(bpf_program *prog)') as (p: BpfProgramPtr) => number,
  mapInitialValue: lib.func('void *bpf_map__initial_value(bpf_map *map, _Out_ size_t *size)') as (m: BpfMapPtr, size: number[]) => unknown,
  mapSetInitialValue: lib.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)') as (m: BpfMapPtr, data: Uint8Array, size: number) => number,
  objGetInfoByFd: lib.func('int bpf_obj_get_info_by_fd(int fd, _Inout_ uint8_t *info, _Inout_ uint32_t *len)') as (fd: number, info: Uint8Array, len: number[]) => number,
  attach: lib.func('bpf_link *bpf_program__attach(bpf_program *prog)') as (p: BpfProgramPtr) => BpfLinkPtr | null,
  linkDestroy: lib.func('int bpf_link__destroy(bpf_link *link)') as (l: BpfLinkPtr) => number,
  mapUpdate: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)') as (fd: number, key: Uint8Array, value: Uint8Array, flags: number) => number,
  mapLookup: lib.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)') as (fd: number, key: Uint8Array, value: Uint8Array) => number,
  mapDelete: lib.func('int bpf_map_delete_elem(int fd, const void *key)') as (fd: number, key: Uint8Array) => number,
  numPossibleCpus: lib.func('int libbpf_num_possible_cpus(void)') as () => number,
  strerror: lib.func('int libbpf_strerror(int err, _Out_ uint8_t *buf, size_t size)') as (err: number, buf: Uint8Array, size: number) => number,
};

/**
 * Offsets in struct bpf_prog_info (uapi, stable: fields are only ever appended). The buffer
 * passed is as long as the kernel may fill; older kernels leave later fields at zero.
 */
export const PROG_INFO = { size: 232, runTimeNs: 192, runCount: 200, verifiedInsns: 216 } as const;

/** libbpf's message for a (negative or positive) errno. */
export function libbpfStrerror(err: number): string {
  const buf = new Uint8Array(256);
  libbpf.strerror(Math.abs(err), buf, buf.length);
  const end = buf.indexOf(0);
  return Buffer.from(buf.subarray(0, end < 0 ? buf.length : end)).toString();
}

/** libbpf's largest verifier log buffer (BPF_LOG_BUF_SIZE, UINT32_MAX >> 8) and its framing. */
const LIBBPF_MAX_MESSAGE_BYTES = (0xffffffff >>> 8) + 64 * 1024;

/** Severity of a libbpf log line. */
export type LibbpfLevel = 'warn' | 'info' | 'debug';
const LEVELS: LibbpfLevel[] = ['warn', 'info', 'debug'];

const PrintFn = koffi.proto('int netrig_libbpf_print(int level, const char *fmt, void *ap)');
const setPrint = lib.func('void *libbpf_set_print(netrig_libbpf_print *fn)');
let registered: ReturnType<typeof koffi.register> | null = null;

/**
 * Route libbpf's log (verifier output included) to `sink`, one call per formatted line.
 * libbpf calls back synchronously from inside open/load/attach on this thread.
 */
export function setLibbpfLogger(sink: (level: LibbpfLevel, line: string) => void): void {
  // Room for the largest verifier log libbpf prints in one message (its 16 MiB log buffer):
  // the error that explains a rejection is the log's last line, which a smaller buffer cut
  // off. Untouched pages of the buffer cost no memory.
  const buf = new Uint8Array(LIBBPF_MAX_MESSAGE_BYTES);
  const fn = (level: number, fmt: string, ap: unknown): number => {
    const n = vsnprintf(buf, buf.length, fmt, ap) as number;
    const text = Buffer.from(buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1)))).toString();
    for (const line of text.split('\n')) if (line.length) sink(LEVELS[level] ?? 'debug', line);
    return n;
  };
  if (registered) koffi.unregister(registered);
  registered = koffi.register(fn, koffi.pointer(PrintFn));
  setPrint(registered);
}
