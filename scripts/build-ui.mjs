#!/usr/bin/env node
// The page's front end (ui/app/) bundled into dist/ui/ beside its server: one app.js with
// Preact inside, app.css and index.html. Run by `npm run build` after tsc (which type-checks
// ui/app/ with its own tsconfig); nothing of it is fetched at run time.
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../', import.meta.url));
const out = `${root}dist/ui`;
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [`${root}ui/app/main.tsx`],
  outfile: `${out}/app.js`,
  bundle: true,
  format: 'esm',
  target: 'es2020',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
});
for (const f of ['index.html', 'app.css']) copyFileSync(`${root}ui/app/${f}`, `${out}/${f}`);
