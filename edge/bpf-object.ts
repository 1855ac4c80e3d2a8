/**
 * The loader lifecycle of one BPF object: open → configure → load → attach → close, with
 * links destroyed in reverse order on close so nothing stays attached in the kernel.
 * Nothing is pinned: if the process dies, the kernel drops every program with its fds.
 */
import { BpfError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import {
  attachUprobe, libbpf, libbpfStrerror, PROG_INFO, setLibbpfLogger, type UprobeOptions,
  type BpfLinkPtr, type BpfMapPtr, type BpfObjectPtr, type BpfProgramPtr,
} from './libbpf.js';
import koffi from 'koffi';
import { Btf } from './btf.js';


/** A map of a loaded object: its descriptor and geometry. */
export interface BpfMapHandle {
  readonly name: string;
  readonly fd: number;
  readonly maxEntries: number;
  readonly valueSize: number;
}

/** What the kernel says of one loaded program. */
export interface ProgramStats {
  readonly name: string;
  readonly section: string;
  /** Instructions the verifier processed to accept it (kernel 5.16+; 0 before). */
  readonly verifiedInsns: number;
  /** Time spent in the program and how often it ran, while kernel.bpf_stats_enabled is 1. */
  readonly runTimeNs: number;
  readonly runCount: number;
}

/** An attached program, by its C function name and ELF section. */
export interface AttachedProgram {
  readonly name: string;
  readonly section: string;
}

export class BpfObject {
  private obj: BpfObjectPtr | null;
  private readonly links: BpfLinkPtr[] = [];
  private readonly attached: AttachedProgram[] = [];
  private readonly logTail: string[] = [];

  private constructor(private readonly log: Logger) {
    this.obj = null;
  }

  /** Open the object file; nothing reaches the kernel until load(). */
  static open(path: string, log: Logger): BpfObject {
    const o = new BpfObject(log);
    setLibbpfLogger((level, line) => o.onLibbpfLine(level, line));
    const obj = libbpf.openFile(path, null);
    if (!obj) {
      const errno = koffi.errno();
      throw new BpfError(`cannot open BPF object ${path}: ${libbpfStrerror(errno)}; build it with 'make -C bpf'`, -errno);
    }
    o.obj = obj;
    return o;
  }

  private onLibbpfLine(level: string, line: string): void {
    this.logTail.push(line);
    if (this.logTail.length > 400) this.logTail.shift();
    if (level === 'warn') this.log.warn({ libbpf: line }, 'libbpf');
    else this.log.debug({ libbpf: line }, 'libbpf');
  }

  private handle(): BpfObjectPtr {
    if (!this.obj) throw new BpfError('BPF object already closed', 0);
    return this.obj;
  }

  private findMap(name: string): BpfMapPtr {
    const m = libbpf.findMap(this.handle(), name);
    if (!m) throw new BpfError(`BPF object has no map '${name}'`, 0);
    return m;
  }

  /** Every program of the object, in its order. */
  private *programPtrs(): Generator<BpfProgramPtr> {
    let prog: BpfProgramPtr | null = null;
    while ((prog = libbpf.nextProgram(this.handle(), prog))) yield prog;
  }

  private findProgram(name: string): BpfProgramPtr {
    for (const prog of this.programPtrs()) if (libbpf.programName(prog) === name) return prog;
    throw new BpfError(`BPF object has no program '${name}'`, 0);
  }

  /** Names of every program in the object. */
  programNames(): string[] {
    return [...this.programPtrs()].map((p) => libbpf.programName(p));
  }

  /** Whether a program is loaded at all (before load): another capture path's are not. */
  setAutoload(name: string, on: boolean): void {
    const err = libbpf.programSetAutoload(this.findProgram(name), on);
    if (err) throw new BpfError(`cannot set autoload of program '${name}': ${libbpfStrerror(err)}`, err);
  }

  /** Set a one-byte load-time constant (`const volatile __u8` in .rodata) before load. */
  setRodataByte(name: string, value: number): void {
    const map = this.findMap('.rodata');
    const size = [0];
    const initial = libbpf.mapInitialValue(map, size);
    if (!initial) throw new BpfError('the BPF object has no .rodata to set', 0);
    const data = Buffer.from(koffi.decode(initial, 'uint8_t', size[0]) as number[]);
    const btf = Btf.ofObject(this.handle());
    data[btf.variableOffset('.rodata', name)] = value;
    const err = libbpf.mapSetInitialValue(map, data, data.length);
    if (err) throw new BpfError(`cannot set ${name}: ${libbpfStrerror(err)}`, err);
  }

  /** Resize a map before load (ring buffer bytes, table entries). */
  setMaxEntries(name: string, n: number): void {
    const err = libbpf.mapSetMaxEntries(this.findMap(name), n);
    if (err) throw new BpfError(`cannot size map '${name}' to ${n}: ${libbpfStrerror(err)}`, err);
  }

  /** Verify and load every program and create every map. */
  load(): void {
    const err = libbpf.load(this.handle());
    if (err === 0) return;
    const detail = this.logTail.slice(-30).join('\n');
    // Privileges are checked before (prepareHost): EACCES here is the verifier refusing a program.
    throw new BpfError(`loading the BPF object failed: ${libbpfStrerror(err)}\n${detail}`, err);
  }

  /**
   * Attach every program by its section name; on failure, detach what was attached.
   * Uprobe programs name no binary in their section: attachUprobe() attaches them.
   */
  attachAll(): AttachedProgram[] {
    for (const prog of this.programPtrs()) {
      const name = libbpf.programName(prog);
      const section = libbpf.programSection(prog);
      if (section === 'uprobe' || section === 'uretprobe') continue;
      if (libbpf.programFd(prog) < 0) continue; // not loaded on this kernel (capture plan)
      const link = libbpf.attach(prog);
      if (!link) {
        const errno = koffi.errno();
        this.detachAll();
        throw new BpfError(`attaching ${name} (${section}) failed: ${libbpfStrerror(errno)}\n${this.logTail.slice(-10).join('\n')}`, -errno);
      }
      this.links.push(link);
      this.attached.push({ name, section });
    }
    this.log.info({ programs: this.attached.length }, 'bpf programs attached');
    return [...this.attached];
  }

  /**
   * Attach the uprobe program `name` to a function of the ELF file at `path`, in every
   * process that maps the file now or later. Returns false (and logs) when it cannot.
   */
  attachUprobe(name: string, path: string, o: UprobeOptions): boolean {
    const link = attachUprobe(this.findProgram(name), path, o);
    if (!link) {
      this.log.debug({ prog: name, path, func: o.funcName, err: libbpfStrerror(koffi.errno()) }, 'uprobe not attached');
      return false;
    }
    this.links.push(link);
    this.attached.push({ name, section: `${o.retprobe ? 'uretprobe' : 'uprobe'}:${path}:${o.funcName}` });
    return true;
  }

  /** Verifier and run-time figures of every loaded program, from bpf_prog_info. */
  programStats(): ProgramStats[] {
    const out: ProgramStats[] = [];
    const info = Buffer.alloc(PROG_INFO.size);
    for (const prog of this.programPtrs()) {
      const fd = libbpf.programFd(prog);
      if (fd < 0) continue; // not loaded: another capture path's program
      info.fill(0);
      const len = [info.length];
      const err = libbpf.objGetInfoByFd(fd, info, len);
      if (err) throw new BpfError(`reading the info of program ${libbpf.programName(prog)} failed: ${libbpfStrerror(err)}`, err);
      out.push({
        name: libbpf.programName(prog),
        section: libbpf.programSection(prog),
        verifiedInsns: info.readUInt32LE(PROG_INFO.verifiedInsns),
        runTimeNs: Number(info.readBigUInt64LE(PROG_INFO.runTimeNs)),
        runCount: Number(info.readBigUInt64LE(PROG_INFO.runCount)),
      });
    }
    return out;
  }

  /** A loaded map by name. */
  map(name: string): BpfMapHandle {
    const m = this.findMap(name);
    const fd = libbpf.mapFd(m);
    if (fd < 0) throw new BpfError(`map '${name}' has no descriptor: load the object first`, fd);
    return { name, fd, maxEntries: libbpf.mapMaxEntries(m), valueSize: libbpf.mapValueSize(m) };
  }

  private detachAll(): void {
    while (this.links.length) libbpf.linkDestroy(this.links.pop()!);
    this.attached.length = 0;
  }

  /** Detach in reverse order and free the object (maps, programs). Idempotent. */
  close(): void {
    if (!this.obj) return;
    this.detachAll();
    libbpf.close(this.obj);
    this.obj = null;
  }
}
