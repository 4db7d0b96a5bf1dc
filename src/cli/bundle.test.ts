// The CLI bundle (dist/cli/stratum-bundle.cjs, made by scripts/bundle.mjs) evaluates what
// tsc's modules would: a command evaluates the modules main.js imports statically and, lazily,
// those the command imports on use — never the heavy parts a command does not need. Found by
// running the bundle with esbuild's lazy-module helper (__esm) instrumented to record each
// module it evaluates.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CLI_BUNDLE as BUNDLE } from '../testing/cli.js';
import { tempDir } from '../testing/tmp.js';

const DIST = fileURLToPath(new URL('..', import.meta.url));
const HEAVY = ['server', 'analyze', 'archive', 'bundle', 'runtime', 'build', 'snapshot'];

const ESM_HELPER = 'var __esm = (fn, res, err) => function __init() {';

/** Modules of dist/ (as `dist/cli/main.js`) that `stratum ...args` evaluates through the bundle. */
function evaluated(args: readonly string[], root: string): string[] {
  const source = readFileSync(BUNDLE, 'utf8');
  assert.ok(source.includes(ESM_HELPER), "esbuild's lazy-module helper changed: update this test");
  // modules evaluated as the bundle loads: every module but those wrapped in __esm
  const all = [...source.matchAll(/^\/\/ (dist\/\S+\.js)$/gm)].map((m) => m[1]!);
  const wrapped = new Set([...source.matchAll(/^ {2}"(dist\/\S+\.js)"\(\) \{$/gm)].map((m) => m[1]!));
  assert.ok(all.length > 50 && wrapped.size > 10, `${all.length} modules, ${wrapped.size} wrapped`);
  const runner = `
    const { readFileSync, writeFileSync } = require('node:fs');
    const { createRequire } = require('node:module');
    const { dirname } = require('node:path');
    const vm = require('node:vm');
    const [bundle, out, ...args] = process.argv.slice(1);
    const src = readFileSync(bundle, 'utf8').replace(${JSON.stringify(ESM_HELPER)},
      ${JSON.stringify(`${ESM_HELPER} if (fn) globalThis.__evaluated.push(__getOwnPropNames(fn)[0]);`)});
    globalThis.__evaluated = [];
    process.argv = [process.argv[0], bundle, ...args];
    process.on('exit', () => writeFileSync(out, JSON.stringify(globalThis.__evaluated)));
    const run = vm.runInThisContext('(function (exports, require, module, __filename, __dirname) {' + src + '\\n})', { filename: bundle });
    const module = { exports: {} };
    run(module.exports, createRequire(bundle), module, bundle, dirname(bundle));
  `;
  const out = join(root, 'evaluated.json');
  const r = spawnSync(process.execPath, ['-e', runner, BUNDLE, out, ...args], {
    encoding: 'utf8',
    env: { ...process.env, STRATUM_ROOT: join(root, 'store') },
  });
  assert.ok(r.status === 0 || r.status === 1, `${r.status} ${r.stderr}`);
  const lazy = JSON.parse(readFileSync(out, 'utf8')) as string[];
  return [...new Set([...all.filter((m) => !wrapped.has(m)), ...lazy])].sort();
}

/** What evaluating `file` as an ES module evaluates: its static imports, transitively. */
function staticClosure(file: string): string[] {
  const seen = new Set<string>();
  const visit = (f: string): void => {
    if (seen.has(f)) return;
    seen.add(f);
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(
      /^\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|^\s*import\s+'(\.[^']+)'/gm,
    )) {
      visit(resolve(dirname(f), (m[1] ?? m[2])!));
    }
  };
  visit(file);
  return [...seen].map((f) => `dist/${relative(DIST, f)}`).sort();
}

it('--version evaluates exactly what main.js imports statically, and no heavy part', async (t) => {
  const root = await tempDir(t);
  const got = evaluated(['--version'], root);
  assert.deepEqual(got, staticClosure(join(DIST, 'cli', 'main.js')));
  assert.deepEqual(
    got.filter((m) => HEAVY.includes(m.split('/')[1]!)),
    [],
  );
});

it('a command evaluates the heavy parts it uses, and only on use', async (t) => {
  const root = await tempDir(t);
  const base = new Set(staticClosure(join(DIST, 'cli', 'main.js')));
  // `run --help` prints its usage: the runtime stays unevaluated
  assert.deepEqual(
    evaluated(['run', '--help'], root).filter((m) => !base.has(m)),
    [],
  );
  // a copy evaluates the copy operation (imported on use), and not the server, runtime or build
  const copy = evaluated(['copy', 'oci:/nonexistent:t', `oci:${root}/out:t`], root).filter(
    (m) => !base.has(m),
  );
  assert.ok(copy.includes('dist/ops/copy-image.js'), copy.join(' '));
  assert.deepEqual(
    copy.filter((m) => ['server', 'runtime', 'build', 'snapshot'].includes(m.split('/')[1]!)),
    [],
  );
});

it('keeps no import() (a vm.Script cannot load modules) and no import.meta', () => {
  const source = readFileSync(BUNDLE, 'utf8');
  assert.doesNotMatch(source, /(?<![\w$.])import\s*\(/);
  assert.doesNotMatch(source, /\bimport\.meta\b/);
});
