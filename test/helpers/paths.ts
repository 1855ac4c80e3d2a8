/** Paths tests need, resolved from the compiled file's place in dist/test/. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BPF_OBJECT = join(REPO_ROOT, 'bpf/build/netrig.bpf.o');
export const CLI = join(REPO_ROOT, 'dist/cli/main.js');
