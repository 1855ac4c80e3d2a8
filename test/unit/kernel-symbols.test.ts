/**
 * Kernel drop locations by name (edge/symbols.ts): text symbols of a kallsyms file, in any
 * order, module names after a tab, data symbols ignored, addresses zeroed when the reader may
 * not see them; and the running kernel's own /proc/kallsyms.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KernelSymbols } from '../../edge/symbols.js';

function withFile(text: string, body: (path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'netrig-kallsyms-'));
  try {
    const path = join(dir, 'kallsyms');
    writeFileSync(path, text);
    body(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('text symbols in any order resolve to name+offset; data symbols and unknown addresses do not', () => {
  withFile([
    'ffffffff81200000 T tcp_v4_rcv',
    'ffffffff81000000 T _text',
    'ffffffff81100000 D some_data',
    'ffffffff81100000 t skb_release_data',
    'ffffffffc0a00000 t nf_hook_slow\t[nf_tables]',
    'ffffffff81300000 b bss_thing',
    '',
  ].join('\n'), (path) => {
    const k = new KernelSymbols(path);
    assert.equal(k.resolve(0xffffffff81200000n), 'tcp_v4_rcv+0x0');
    assert.equal(k.resolve(0xffffffff812005e3n), 'tcp_v4_rcv+0x5e3');
    assert.equal(k.resolve(0xffffffff81100010n), 'skb_release_data+0x10');
    assert.equal(k.resolve(0xffffffff81310000n), 'tcp_v4_rcv+0x110000', 'data symbols are not locations');
    assert.equal(k.resolve(0xffffffffc0a00042n), 'nf_hook_slow+0x42');
    assert.equal(k.resolve(0xffffffff80000000n), '0xffffffff80000000', 'below the first symbol');
  });
});

test('kallsyms read without the right to see addresses (all zero): locations stay hex', () => {
  withFile('0000000000000000 T _text\n0000000000000000 T tcp_v4_rcv\n', (path) => {
    assert.equal(new KernelSymbols(path).resolve(0xffffffff81200010n), '0xffffffff81200010');
  });
});

test('a missing file: locations stay hex', () => {
  assert.equal(new KernelSymbols('/nonexistent/kallsyms').resolve(0xffffffff81000000n), '0xffffffff81000000');
});

test('the running kernel: a known function resolves from /proc/kallsyms', () => {
  const lines = readFileSync('/proc/kallsyms', 'latin1').split('\n');
  const line = lines.find((l) => / [tT] tcp_v4_rcv$/.test(l));
  assert.ok(line, 'tcp_v4_rcv in /proc/kallsyms');
  const addr = BigInt(`0x${line.slice(0, 16)}`);
  assert.notEqual(addr, 0n, 'addresses visible to this (root) test');
  // Another text symbol may share the address (an alias): any of them is the right name.
  const names = lines.filter((l) => l.startsWith(line.slice(0, 16)) && /^\S+ [tT] /.test(l)).map((l) => l.slice(19).split('\t')[0]);
  const got = new KernelSymbols().resolve(addr + 0x10n);
  assert.ok(names.map((n) => `${n}+0x10`).includes(got), `${got} is one of ${names.join(', ')} +0x10`);
});
