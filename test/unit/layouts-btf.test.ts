/**
 * The TypeScript decoders' struct layouts against the BTF of the built BPF object: sizes
 * and the byte offset of every member they read. C and TypeScript cannot drift apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { ALL_LAYOUTS } from '../../schemas/layouts.js';
import { CONN_STORE } from '../../edge/capture-plan.js';
import { BPF_OBJECT } from '../helpers/paths.js';

interface BtfMember { name: string; bits_offset: number }
interface BtfType { kind: string; name: string; size?: number; members?: BtfMember[]; values?: { name: string; val: number }[] }

const btf = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', BPF_OBJECT], { maxBuffer: 64 << 20 }).toString()) as { types: BtfType[] };
const structs = new Map(btf.types.filter((t) => t.kind === 'STRUCT').map((t) => [t.name, t]));

for (const layout of ALL_LAYOUTS) {
  test(`${layout.name} matches BTF`, () => {
    const s = structs.get(layout.name);
    assert.ok(s, `struct ${layout.name} is not in the BTF of ${BPF_OBJECT}`);
    assert.equal(s.size, layout.size, `sizeof(struct ${layout.name})`);
    const offsets = new Map(s.members!.map((m) => [m.name, m.bits_offset / 8]));
    for (const [field, offset] of Object.entries(layout.fields)) {
      assert.equal(offsets.get(field), offset, `offsetof(struct ${layout.name}, ${field})`);
    }
  });
}

test('every wire struct in BTF has a TypeScript layout', () => {
  const known = new Set(ALL_LAYOUTS.map((l) => l.name));
  const wire = [...structs.keys()].filter((n) => /_rec$/.test(n));
  assert.ok(wire.length >= 6, `found only ${wire.join(', ')}`);
  for (const n of wire) assert.ok(known.has(n), `struct ${n} has no decoder layout in schemas/layouts.ts`);
});

test('the loader sets conn_store to values of enum conn_store', () => {
  const e = btf.types.find((t) => t.kind === 'ENUM' && t.name === 'conn_store');
  assert.ok(e?.values, `enum conn_store is not in the BTF of ${BPF_OBJECT}`);
  assert.deepEqual(Object.fromEntries(e.values.map((v) => [v.name, v.val])), CONN_STORE);
});
