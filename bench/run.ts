/**
 * Benchmark runner: `npm run bench [-- NAME...]` (after `make -s -C bench`).
 *
 * Loads every `*.bench.js` module beside this file (bench/*.bench.ts compiled), keeps those
 * whose name contains one of the NAME arguments (all when none), prints a header with the
 * date and machine, then each benchmark's result lines. A failing benchmark is reported
 * and the others still run; the exit code is 1 if any failed.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { machineLine, type Benchmark } from './harness.js';

const here = dirname(fileURLToPath(import.meta.url));

async function loadBenchmarks(): Promise<Benchmark[]> {
  const files = readdirSync(here).filter((f) => f.endsWith('.bench.js')).sort();
  const out: Benchmark[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(join(here, f)).href)) as { benchmark?: Benchmark };
    if (!mod.benchmark) throw new Error(`${f} exports no 'benchmark'`);
    out.push(mod.benchmark);
  }
  return out;
}

async function main(): Promise<number> {
  const filters = process.argv.slice(2);
  const all = await loadBenchmarks();
  const chosen = filters.length ? all.filter((b) => filters.some((f) => b.name.includes(f))) : all;
  if (!chosen.length) {
    console.error(`no benchmark matches ${filters.join(', ')}; available: ${all.map((b) => b.name).join(', ')}`);
    return 2;
  }
  console.log(`netrig benchmarks  ${new Date().toISOString()}`);
  console.log(`machine: ${machineLine()}`);
  let failed = 0;
  for (const b of chosen) {
    console.log(`\n${b.name}: ${b.title}`);
    const started = performance.now();
    try {
      await b.run({ line: (text) => console.log(`  ${text}`) });
      console.log(`  (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    } catch (err) {
      failed++;
      console.log(`  FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    }
  }
  return failed ? 1 : 0;
}

process.exitCode = await main();
// Every benchmark cleans up after itself; if something still holds the event loop, say what
// and end anyway, rather than leave `npm run bench` hanging.
setTimeout(() => {
  console.error(`benchmarks done, but still open: ${process.getActiveResourcesInfo().join(', ')}; exiting`);
  process.exit();
}, 10_000).unref();
