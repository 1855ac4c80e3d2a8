/**
 * What BPF objects a process holds and what the kernel still has: program, link and map ids
 * from /proc/<pid>/fdinfo (bpftool on this machine lists no owning pids), `bpftool -j`
 * listings, and the entries under /sys/fs/bpf with the object each one pins.
 */
import { readdirSync, readFileSync, readlinkSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { runOk, run } from './netns.js';

export interface BpfIds {
  progs: Set<number>;
  links: Set<number>;
  maps: Set<number>;
}

/** Ids of the programs, links and maps whose descriptors process `pid` holds. */
export function bpfIdsOf(pid: number): BpfIds {
  const ids: BpfIds = { progs: new Set(), links: new Set(), maps: new Set() };
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    let info: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const field = (name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(info)?.[1] ?? NaN);
    if (target === 'anon_inode:bpf-prog') ids.progs.add(field('prog_id'));
    else if (target === 'anon_inode:bpf_link') ids.links.add(field('link_id'));
    else if (target === 'anon_inode:bpf-map') ids.maps.add(field('map_id'));
  }
  return ids;
}

export interface BpftoolProg { id: number; name?: string; type: string }
export interface BpftoolLink { id: number; prog_id?: number; type: string }
export interface BpftoolMap { id: number; name?: string; type: string }

async function bpftool<T>(args: string[]): Promise<T> {
  const r = await runOk('bpftool', ['-j', ...args]);
  return JSON.parse(r.stdout || '[]') as T;
}

export const bpftoolProgs = () => bpftool<BpftoolProg[]>(['prog', 'show']);
export const bpftoolLinks = () => bpftool<BpftoolLink[]>(['link', 'show']);
export const bpftoolMaps = () => bpftool<BpftoolMap[]>(['map', 'show']);

/** Every path under /sys/fs/bpf (directories included), depth-limited. */
export function bpffsEntries(root = '/sys/fs/bpf', depth = 6): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string, d: number) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(dir, n);
      out.add(p);
      try {
        if (d > 0 && lstatSync(p).isDirectory()) walk(p, d - 1);
      } catch {
        // Removed meanwhile.
      }
    }
  };
  walk(root, depth);
  return out;
}

/** The object a bpffs path pins, or null (a directory, or not a BPF object). */
export async function pinnedObject(path: string): Promise<{ kind: 'prog' | 'map' | 'link'; id: number } | null> {
  for (const kind of ['prog', 'map', 'link'] as const) {
    const r = await run('bpftool', ['-j', kind, 'show', 'pinned', path]);
    if (r.code !== 0) continue;
    try {
      const o = JSON.parse(r.stdout) as { id?: number } | { id?: number }[];
      const id = Array.isArray(o) ? o[0]?.id : o.id;
      if (typeof id === 'number') return { kind, id };
    } catch {
      // Not this kind.
    }
  }
  return null;
}
