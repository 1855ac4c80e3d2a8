/**
 * Where OpenSSL lives: every libssl.so.3 on this host's usual library paths and every one
 * mapped by a running process (containers have their own files), each attached once with
 * the TLS plaintext uprobes. Uprobes follow the file, so processes started later that map
 * an attached file are covered without another scan; a periodic scan finds new files.
 *
 * Node.js links OpenSSL statically and does its TLS socket I/O asynchronously, outside
 * SSL_read/SSL_write, so its plaintext cannot be tied to a socket this way: not attached.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import type { Logger } from '../lib/logger.js';
import type { BpfObject } from './bpf-object.js';
import { CAP_USES, hasCap } from './privileges.js';

const SYSTEM_PATHS = [
  '/usr/lib/x86_64-linux-gnu/libssl.so.3', '/lib/x86_64-linux-gnu/libssl.so.3',
  '/usr/lib/aarch64-linux-gnu/libssl.so.3', '/lib/aarch64-linux-gnu/libssl.so.3',
  '/usr/lib64/libssl.so.3', '/usr/lib/libssl.so.3', '/usr/local/lib/libssl.so.3', '/usr/local/lib64/libssl.so.3',
];
const LIBSSL = /\/libssl\.so\.3$/;

/** The uprobe programs of bpf/tls.bpf.c and the functions they probe. */
const PROBES: { prog: string; func: string; retprobe: boolean }[] = [
  { prog: 'ssl_write_entry', func: 'SSL_write', retprobe: false },
  { prog: 'ssl_write_return', func: 'SSL_write', retprobe: true },
  { prog: 'ssl_read_entry', func: 'SSL_read', retprobe: false },
  { prog: 'ssl_read_return', func: 'SSL_read', retprobe: true },
  { prog: 'ssl_write_ex_entry', func: 'SSL_write_ex', retprobe: false },
  { prog: 'ssl_write_ex_return', func: 'SSL_write_ex', retprobe: true },
  { prog: 'ssl_read_ex_entry', func: 'SSL_read_ex', retprobe: false },
  { prog: 'ssl_read_ex_return', func: 'SSL_read_ex', retprobe: true },
  { prog: 'ssl_handshake_entry', func: 'SSL_do_handshake', retprobe: false },
  { prog: 'ssl_handshake_return', func: 'SSL_do_handshake', retprobe: true },
];

/** Paths (as this process can open them) of libssl files mapped by running processes. */
function mappedLibssl(): string[] {
  const out: string[] = [];
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    let maps = '';
    try {
      maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    } catch {
      continue; // gone, or not ours to read
    }
    for (const line of maps.split('\n')) {
      const path = line.slice(line.indexOf('/'));
      if (line.includes('/') && LIBSSL.test(path)) out.push(`/proc/${pid}/root${path}`);
    }
  }
  return out;
}

export class TlsTargets {
  /** `${dev}:${ino}` of files attached. */
  private readonly attached = new Set<string>();

  /** Whether this process may create uprobes at all (told once, not per probe). */
  private readonly allowed: boolean;

  constructor(private readonly obj: BpfObject, private readonly log: Logger) {
    this.allowed = hasCap('SYS_ADMIN');
    if (!this.allowed) log.warn(`TLS plaintext is not captured: the edge lacks CAP_SYS_ADMIN (to ${CAP_USES.SYS_ADMIN})`);
    else if (!hasCap('SYS_PTRACE')) log.warn(`only libssl on the host's library paths is probed: the edge lacks CAP_SYS_PTRACE (to ${CAP_USES.SYS_PTRACE})`);
  }

  /** Attach to every libssl not attached yet; returns how many files were added. */
  scan(): number {
    if (!this.allowed) return 0;
    let added = 0;
    for (const path of [...SYSTEM_PATHS, ...mappedLibssl()]) {
      let id: string;
      try {
        const st = statSync(path);
        id = `${st.dev}:${st.ino}`;
      } catch {
        continue;
      }
      if (this.attached.has(id)) continue;
      this.attached.add(id);
      const ok = PROBES.filter((p) => this.obj.attachUprobe(p.prog, path, { retprobe: p.retprobe, funcName: p.func })).length;
      if (ok) {
        added++;
        this.log.info({ path, probes: ok }, 'TLS plaintext uprobes attached');
      } else {
        this.log.warn({ path }, 'libssl found but no SSL_read/SSL_write symbol could be probed');
      }
    }
    return added;
  }

  /** Files attached so far. */
  get files(): number {
    return this.attached.size;
  }
}
