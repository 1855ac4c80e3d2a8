/**
 * Reading BTF through libbpf: the kernel's own (feature probes: does a type exist, how many
 * arguments does a tracepoint pass) and the BPF object's (where a load-time constant sits
 * in .rodata). Only what the loader asks; every other use of BTF is the kernel's.
 */
import koffi from 'koffi';
import { BpfError } from '../lib/errors.js';
import { libbpfLibrary, type BpfObjectPtr } from './libbpf.js';

koffi.opaque('btf');
type BtfPtr = { readonly __brand: 'btf' };

const lib = libbpfLibrary;
const api = {
  loadVmlinux: lib.func('btf *btf__load_vmlinux_btf(void)') as () => BtfPtr | null,
  objectBtf: lib.func('btf *bpf_object__btf(bpf_object *obj)') as (o: BpfObjectPtr) => BtfPtr | null,
  free: lib.func('void btf__free(btf *btf)') as (b: BtfPtr) => void,
  findByNameKind: lib.func('int32_t btf__find_by_name_kind(btf *btf, const char *name, uint32_t kind)') as (b: BtfPtr, name: string, kind: number) => number,
  typeById: lib.func('void *btf__type_by_id(btf *btf, uint32_t id)') as (b: BtfPtr, id: number) => unknown,
  nameByOffset: lib.func('const char *btf__name_by_offset(btf *btf, uint32_t off)') as (b: BtfPtr, off: number) => string | null,
};

/** BTF kinds (include/uapi/linux/btf.h). */
export const BtfKind = { PTR: 2, STRUCT: 4, ENUM: 6, TYPEDEF: 8, FUNC_PROTO: 13, VAR: 14, DATASEC: 15 } as const;

/** struct btf_type: name_off, info (vlen in bits 0-15, kind in bits 24-28), size or type. */
interface BtfType { nameOff: number; kind: number; vlen: number; sizeOrType: number; ptr: unknown }

export class Btf {
  private constructor(private readonly btf: BtfPtr, private readonly owned: boolean) {}

  /** The running kernel's BTF (/sys/kernel/btf/vmlinux). */
  static vmlinux(): Btf {
    const b = api.loadVmlinux();
    if (!b) throw new BpfError(`cannot read the kernel's BTF: ${koffi.errno()}`, -koffi.errno());
    return new Btf(b, true);
  }

  /** A BPF object's own BTF; it lives as long as the object. */
  static ofObject(obj: BpfObjectPtr): Btf {
    const b = api.objectBtf(obj);
    if (!b) throw new BpfError('the BPF object carries no BTF: build it with -g', 0);
    return new Btf(b, false);
  }

  private type(id: number): BtfType {
    const ptr = api.typeById(this.btf, id);
    const [nameOff, info, sizeOrType] = koffi.decode(ptr, 'uint32_t', 3) as number[];
    return { nameOff, kind: (info >>> 24) & 0x1f, vlen: info & 0xffff, sizeOrType, ptr };
  }

  /** Whether a named type of this kind exists. */
  has(name: string, kind: number): boolean {
    return api.findByNameKind(this.btf, name, kind) > 0;
  }

  /**
   * How many arguments a tp_btf tracepoint passes a BPF program (its btf_trace_<name>
   * typedef points at a prototype whose first parameter is the tracepoint's own data
   * pointer), or -1 when the kernel has no such tracepoint.
   */
  tracepointArgs(name: string): number {
    const id = api.findByNameKind(this.btf, `btf_trace_${name}`, BtfKind.TYPEDEF);
    if (id <= 0) return -1;
    let t = this.type(this.type(id).sizeOrType);
    if (t.kind === BtfKind.PTR) t = this.type(t.sizeOrType);
    return t.kind === BtfKind.FUNC_PROTO ? t.vlen - 1 : -1;
  }

  /** Byte offset of global variable `name` in data section `section` (e.g. `.rodata`). */
  variableOffset(section: string, name: string): number {
    const id = api.findByNameKind(this.btf, section, BtfKind.DATASEC);
    if (id <= 0) throw new BpfError(`the BPF object has no ${section} section`, 0);
    const sec = this.type(id);
    // struct btf_var_secinfo { type, offset, size } follows the 12-byte btf_type.
    const entries = koffi.decode(sec.ptr, 12, 'uint32_t', 3 * sec.vlen) as number[];
    for (let i = 0; i < sec.vlen; i++) {
      const v = this.type(entries[3 * i]);
      if (api.nameByOffset(this.btf, v.nameOff) === name) return entries[3 * i + 1];
    }
    throw new BpfError(`the BPF object has no variable '${name}' in ${section}`, 0);
  }

  close(): void {
    if (this.owned) api.free(this.btf);
  }
}
