/**
 * Verifier headroom: every program of the object, on each payload path this kernel can
 * run, loads with at most a tenth of the verifier's 1M-instruction limit. A kernel patch
 * release once made a program that had loaded fine need more than the whole limit; a
 * tenth leaves room for that. The figures are printed for the README's table.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject } from '../../edge/bpf-object.js';
import { planObject, type PayloadPath } from '../../edge/capture-plan.js';
import { prepareHost } from '../../edge/system.js';
import { testLogger } from '../helpers/edge-run.js';
import { BPF_OBJECT } from '../helpers/paths.js';

/** A tenth of BPF_COMPLEXITY_LIMIT_INSNS. */
const MAX_VERIFIED_INSNS = 100_000;

for (const path of ['socket', 'syscall'] as PayloadPath[]) {
  test(`every program on the ${path} path verifies in at most ${MAX_VERIFIED_INSNS} instructions`, (t) => {
    prepareHost();
    const obj = BpfObject.open(process.env.NETRIG_BPF_OBJECT || BPF_OBJECT, testLogger('headroom'));
    try {
      planObject(obj, path);
      obj.load();
      const stats = obj.programStats();
      assert.ok(stats.length >= 10, `only ${stats.length} programs loaded`);
      for (const p of stats) t.diagnostic(`${p.name} ${p.verifiedInsns}`);
      for (const p of stats) {
        assert.ok(p.verifiedInsns > 0, `${p.name}: the kernel reported no verified instruction count`);
        assert.ok(p.verifiedInsns <= MAX_VERIFIED_INSNS,
          `${p.name} (${p.section}) needed ${p.verifiedInsns} verified instructions, more than ${MAX_VERIFIED_INSNS}`);
      }
    } finally {
      obj.close();
    }
  });
}
