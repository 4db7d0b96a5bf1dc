// The architecture test: imports only go downwards through the layers of docs/DESIGN.md,
// and no two directories import each other (directly or through others).

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const LEVELS: Readonly<Record<string, number>> = {
  internal: 0,
  errors: 0,
  digest: 0,
  spec: 1,
  reference: 1,
  compression: 1,
  content: 2,
  layout: 3,
  registry: 3,
  archive: 3,
  layer: 3,
  image: 4,
  transport: 4,
  copy: 5,
  snapshot: 5,
  bundle: 5,
  runtime: 5,
  build: 5,
  server: 5,
  ops: 5,
  analyze: 5,
  lazy: 6,
  p2p: 6,
  cli: 7,
  '.': 8, // src/index.ts
};

// tests are compiled next to the sources; read the TypeScript sources instead
const here = dirname(fileURLToPath(import.meta.url));
const src = resolve(here, '..', 'src');

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function topDir(file: string): string {
  const rel = relative(src, file);
  return rel.includes('/') ? rel.slice(0, rel.indexOf('/')) : '.';
}

it('imports go only downwards, and directories form no cycle', () => {
  const edges = new Map<string, Set<string>>();
  const problems: string[] = [];
  for (const file of walk(src)) {
    if (file.endsWith('.test.ts') || topDir(file) === 'testing') continue;
    const from = topDir(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/gm)) {
      const target = resolve(dirname(file), m[1]!);
      const to = topDir(target);
      if (to === from) continue;
      if (to === 'testing') {
        // the conformance suite is a test itself
        if (relative(src, file) !== join('content', 'conformance.ts')) {
          problems.push(`${relative(src, file)} imports testing/`);
        }
        continue;
      }
      const lf = LEVELS[from];
      const lt = LEVELS[to];
      if (lf === undefined)
        problems.push(`${from}/ has no level in the architecture test (add it, and to docs/DESIGN.md)`);
      else if (lt === undefined) problems.push(`${to}/ has no level in the architecture test`);
      else if (lt > lf)
        problems.push(`${relative(src, file)} (L${lf} ${from}) imports ${m[1]} (L${lt} ${to}): upward`);
      if (!edges.has(from)) edges.set(from, new Set());
      edges.get(from)!.add(to);
    }
  }
  // cycle check between directories
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (n: string, path: string[]): void => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'visiting') {
      problems.push(`cycle: ${[...path.slice(path.indexOf(n)), n].join(' -> ')}`);
      return;
    }
    state.set(n, 'visiting');
    for (const m of edges.get(n) ?? []) visit(m, [...path, n]);
    state.set(n, 'done');
  };
  for (const n of edges.keys()) visit(n, []);
  assert.deepEqual(problems, []);
});

it('the CLI loads only what the command it runs needs (heavy parts are imported on use)', () => {
  // every `stratum` run pays for the modules cli/main.ts reaches through static imports (the CLI
  // bundle evaluates the same: src/cli/bundle.test.ts checks it on the bundle itself)
  const heavy = ['server', 'analyze', 'archive', 'bundle', 'runtime', 'build', 'snapshot'];
  const seen = new Set<string>();
  const reached: string[] = [];
  const visit = (file: string, via: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    if (heavy.includes(topDir(file))) reached.push(`${relative(src, file)} (via ${via})`);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^'"]*?from\s+'(\.[^']+)'/gm)) {
      visit(resolve(dirname(file), m[1]!).replace(/\.js$/, '.ts'), relative(src, file));
    }
  };
  visit(join(src, 'cli', 'main.ts'), 'the command line');
  assert.deepEqual(reached, []);
});
