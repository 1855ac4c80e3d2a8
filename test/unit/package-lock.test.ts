/**
 * The lockfile is complete, so `npm ci` (scripts/setup.sh, deploy/Dockerfile) installs from
 * it on any platform without calling it out of sync: every dependency and optional
 * dependency of every locked package has an entry of its own, at a version its range takes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths.js';

interface LockedPackage {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { lockfileVersion: number; packages: Record<string, LockedPackage> };
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as LockedPackage;

/** Where node finds `name` from the package at `at`: its own node_modules, then each parent's. */
function resolveFrom(at: string, name: string): string | undefined {
  for (let dir = at; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf('/node_modules/')))) {
    const key = `${dir ? `${dir}/` : ''}node_modules/${name}`;
    if (lock.packages[key]) return key;
    if (!dir) return undefined;
  }
}

test('package.json and the lockfile name the same direct dependencies', () => {
  assert.equal(lock.lockfileVersion, 3);
  const root = lock.packages[''];
  for (const field of ['dependencies', 'optionalDependencies', 'devDependencies'] as const) {
    assert.deepEqual(root[field] ?? {}, pkg[field] ?? {}, `${field} of package.json are the lockfile's`);
  }
});

test('every dependency and optional dependency of every locked package is locked (every platform\'s binaries)', () => {
  const missing: string[] = [];
  for (const [at, p] of Object.entries(lock.packages)) {
    const wanted = { ...p.dependencies, ...p.optionalDependencies, ...(at === '' ? p.devDependencies : {}) };
    for (const name of Object.keys(wanted)) if (!resolveFrom(at, name)) missing.push(`${at || '(root)'} → ${name}`);
    for (const [name, meta] of Object.entries(p.peerDependenciesMeta ?? {})) {
      // A required peer must be there; optional peers may be absent.
      if (!meta.optional && p.peerDependencies?.[name] && !resolveFrom(at, name)) missing.push(`${at} → peer ${name}`);
    }
  }
  assert.deepEqual(missing, [], 'locked packages whose dependencies have no entry');
  for (const name of ['@chdb/lib-darwin-arm64', '@chdb/lib-darwin-x64', '@chdb/lib-linux-arm64-gnu', '@chdb/lib-linux-x64-gnu', '@msgpackr-extract/msgpackr-extract-darwin-arm64', '@msgpackr-extract/msgpackr-extract-linux-arm64']) {
    assert.ok(lock.packages[`node_modules/${name}`], `${name} is locked`);
  }
});
