// Layer creation: stratum's diffTrees against `tar -cf` and `umoci repack`, on the same trees in
// the same run, on tmpfs. Two trees: a generated one (20,000 files in 200 directories, sizes
// spread 10 B .. 100 KB on a log scale, half text-like, half random; the same bytes every time)
// and a copy of /usr/share. Two scenarios per tree:
//
//   full    every file is new: `tar -cf`, stratum with no compression (the same work as tar),
//           `umoci repack` of a freshly unpacked empty image whose rootfs got the tree, and
//           stratum gzip: its default (level 5, parallel blocks), level 6, and level 5 as one
//           zlib stream (what the parallel blocks gain).
//   modify  an image holding the tree is unpacked by umoci; 1 % of the files are rewritten,
//           0.5 % deleted and 100 added; `umoci repack` (which checks every file against the
//           mtree it kept, sha256 included) against stratum diffTrees(pristine copy, rootfs).
//
// Each command runs as its own process under GNU time (bench/copy/measure.ts): wall time, CPU
// (user + system, all threads and children) and peak RSS. Runs alternate between tools;
// medians are reported with ratios. JSON goes to bench/results/diff-<commit>.json. stratum runs
// from a copy of dist/ taken at the start, so a rebuild in the checkout cannot disturb a run.
//
//   npx tsc -p . && npx tsc -p bench/diff && node dist-bench/diff/diff-bench.js [--runs 3]
//     [--trees gen,share] [--work /dev/shm/stratum-diff-bench] [--keep]

import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { measure, type RunResult, run } from '../copy/measure.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    trees: { type: 'string', default: 'gen,share' },
    work: { type: 'string', default: '/dev/shm/stratum-diff-bench' },
    keep: { type: 'boolean', default: false },
  },
});
const RUNS = Number(args.runs);
const WORK = resolve(args.work);
const HERE = new URL('.', import.meta.url).pathname;
const REPO = resolve(HERE, '..', '..');
// the runner and dist/ are copied here, keeping their relative layout
const SNAPSHOT = join(WORK, 'snapshot');
const RUNNER = join(SNAPSHOT, 'dist-bench', 'diff', 'stratum-diff.js');
const UMOCI = '/usr/bin/umoci';

class Rng {
  readonly #cipher;
  #pool: Buffer = Buffer.alloc(0);
  #at = 0;
  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest().subarray(0, 16);
    this.#cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  }
  bytes(n: number): Buffer {
    return this.#cipher.update(Buffer.alloc(n));
  }
  int(n: number): number {
    if (this.#at + 4 > this.#pool.length) {
      this.#pool = this.bytes(65536);
      this.#at = 0;
    }
    const v = this.#pool.readUInt32LE(this.#at);
    this.#at += 4;
    return v % n;
  }
}

const WORDS = ['alpha', 'beta', 'layer', 'container', 'image', 'return', 'function', '0123', '\n', 'lorem'];

async function generateTree(dir: string): Promise<void> {
  const rng = new Rng('stratum diff bench');
  for (let d = 0; d < 200; d++) {
    const sub = join(dir, `d${String(d).padStart(3, '0')}`, `sub${d % 7}`);
    await mkdir(sub, { recursive: true });
    for (let f = 0; f < 100; f++) {
      const size = Math.round(10 * 10_000 ** (rng.int(1_000_000) / 1_000_000));
      let data: Buffer;
      if (f % 2 === 1) data = rng.bytes(size);
      else {
        const parts: string[] = [];
        let n = 0;
        while (n < size) {
          const w = WORDS[rng.int(WORDS.length)] as string;
          parts.push(w);
          n += w.length + 1;
        }
        data = Buffer.from(parts.join(' ')).subarray(0, size);
      }
      await writeFile(join(sub, `file${String(f).padStart(3, '0')}.txt`), data);
    }
  }
}

async function treeFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...(await treeFiles(dir, r)));
    else if (e.isFile()) out.push(r);
  }
  return out.sort();
}

/** Deterministic changes: every 100th file rewritten, every 200th (offset 50) deleted, 100 added. */
async function modify(root: string): Promise<void> {
  const files = await treeFiles(root);
  for (let i = 0; i < files.length; i++) {
    const p = join(root, files[i] as string);
    if (i % 100 === 0) await writeFile(p, `rewritten ${i}\n`);
    else if (i % 200 === 50) await unlink(p);
  }
  await mkdir(join(root, 'added'), { recursive: true });
  for (let i = 0; i < 100; i++)
    await writeFile(join(root, 'added', `new${i}`), `new file ${i}\n`.repeat(i + 1));
}

interface Sample extends RunResult {
  readonly size: number;
}

interface Row {
  readonly tree: string;
  readonly scenario: string;
  readonly tool: string;
  readonly samples: Sample[];
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function sizeOf(path: string): Promise<number> {
  return existsSync(path) ? (await stat(path)).size : 0;
}

/** The newest layer blob umoci wrote: the largest blob modified in this run. */
async function umociLayerSize(layout: string, since: number): Promise<number> {
  let best = 0;
  for (const name of await readdir(join(layout, 'blobs', 'sha256'))) {
    const s = await stat(join(layout, 'blobs', 'sha256', name));
    if (s.mtimeMs >= since && s.size > best) best = s.size;
  }
  return best;
}

async function umociImage(
  dir: string,
  tree: string | undefined,
): Promise<{ layout: string; bundle: string }> {
  const layout = join(dir, 'img');
  const bundle = join(dir, 'bundle');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await run([UMOCI, 'init', '--layout', layout]);
  await run([UMOCI, 'new', '--image', `${layout}:t`]);
  await run([UMOCI, 'unpack', '--image', `${layout}:t`, bundle]);
  if (tree) await run(['cp', '-a', `${tree}/.`, join(bundle, 'rootfs')]);
  return { layout, bundle };
}

async function main(): Promise<void> {
  await mkdir(WORK, { recursive: true });
  await rm(SNAPSHOT, { recursive: true, force: true });
  await mkdir(join(SNAPSHOT, 'dist-bench', 'diff'), { recursive: true });
  await run(['cp', '-a', join(REPO, 'dist'), join(SNAPSHOT, 'dist')]);
  await run(['cp', join(HERE, 'stratum-diff.js'), RUNNER]);
  const logs = join(WORK, 'logs');
  await mkdir(logs, { recursive: true });
  const rows: Row[] = [];
  const row = (tree: string, scenario: string, tool: string): Row => {
    let r = rows.find((x) => x.tree === tree && x.scenario === scenario && x.tool === tool);
    if (!r) {
      r = { tree, scenario, tool, samples: [] };
      rows.push(r);
    }
    return r;
  };
  let label = 0;
  const time = async (r: Row, argv: string[], out: string): Promise<void> => {
    const res = await measure(argv, { logDir: logs, label: `${r.tree}-${r.scenario}-${label++}` });
    r.samples.push({ ...res, size: await sizeOf(out) });
    process.stdout.write(
      `  ${r.tree} ${r.scenario} ${r.tool}: ${res.seconds.toFixed(2)} s, cpu ${res.cpuSeconds.toFixed(2)} s\n`,
    );
  };

  for (const tree of args.trees.split(',')) {
    const src = join(WORK, 'trees', tree);
    if (!existsSync(src)) {
      process.stdout.write(`making the ${tree} tree in ${src}\n`);
      await mkdir(join(WORK, 'trees'), { recursive: true });
      if (tree === 'gen') await generateTree(src);
      else if (tree === 'share') await run(['cp', '-a', '/usr/share', src]);
      else throw new Error(`unknown tree ${tree}: gen or share`);
    }
    const out = join(WORK, 'out');
    await mkdir(out, { recursive: true });
    const node = process.execPath;

    // full: everything is new
    for (let rep = 0; rep < RUNS; rep++) {
      await time(
        row(tree, 'full', 'tar -cf'),
        ['tar', '-C', src, '-cf', join(out, 'tar.tar'), '.'],
        join(out, 'tar.tar'),
      );
      await time(
        row(tree, 'full', 'stratum none'),
        [node, RUNNER, '-', src, join(out, 's.tar'), 'none'],
        join(out, 's.tar'),
      );
      const u = await umociImage(join(WORK, 'umoci-full'), src);
      const since = Date.now() - 1000;
      await time(
        row(tree, 'full', 'umoci repack'),
        [UMOCI, 'repack', '--image', `${u.layout}:t`, u.bundle],
        '',
      );
      const last = row(tree, 'full', 'umoci repack').samples.pop() as Sample;
      row(tree, 'full', 'umoci repack').samples.push({
        ...last,
        size: await umociLayerSize(u.layout, since),
      });
      await time(
        row(tree, 'full', 'stratum gzip'),
        [node, RUNNER, '-', src, join(out, 's.tgz'), 'gzip'],
        join(out, 's.tgz'),
      );
      await time(
        row(tree, 'full', 'stratum gzip -6'),
        [node, RUNNER, '-', src, join(out, 's6.tgz'), 'gzip', '-', '6'],
        join(out, 's6.tgz'),
      );
      await time(
        row(tree, 'full', 'stratum gzip (1 stream)'),
        [node, RUNNER, '-', src, join(out, 's1.tgz'), 'gzip', 'stream'],
        join(out, 's1.tgz'),
      );
    }

    // modify: unpack an image of the tree, change 1.5 % of it, repack
    const m = await umociImage(join(WORK, 'umoci-mod'), src);
    await run([UMOCI, 'repack', '--image', `${m.layout}:t`, m.bundle]);
    const bundle2 = join(WORK, 'umoci-mod', 'bundle2');
    await run([UMOCI, 'unpack', '--image', `${m.layout}:t`, bundle2]);
    const pristine = join(WORK, 'umoci-mod', 'pristine');
    await run(['cp', '-a', join(bundle2, 'rootfs'), pristine]);
    await modify(join(bundle2, 'rootfs'));
    for (let rep = 0; rep < RUNS; rep++) {
      const since = Date.now() - 1000;
      await time(
        row(tree, 'modify', 'umoci repack'),
        [UMOCI, 'repack', '--image', `${m.layout}:t`, bundle2],
        '',
      );
      const last = row(tree, 'modify', 'umoci repack').samples.pop() as Sample;
      row(tree, 'modify', 'umoci repack').samples.push({
        ...last,
        size: await umociLayerSize(m.layout, since),
      });
      await time(
        row(tree, 'modify', 'stratum gzip'),
        [node, RUNNER, pristine, join(bundle2, 'rootfs'), join(out, 'm.tgz'), 'gzip'],
        join(out, 'm.tgz'),
      );
    }
    if (!args.keep) await rm(join(WORK, 'umoci-mod'), { recursive: true, force: true });
    await rm(join(WORK, 'umoci-full'), { recursive: true, force: true });
  }

  // report
  const lines: string[] = [];
  const summary = rows.map((r) => ({
    tree: r.tree,
    scenario: r.scenario,
    tool: r.tool,
    seconds: median(r.samples.map((s) => s.seconds)),
    cpuSeconds: median(r.samples.map((s) => s.cpuSeconds)),
    rssMiB: Math.max(...r.samples.map((s) => s.rssMiB)),
    bytes: median(r.samples.map((s) => s.size)),
    runs: r.samples.map((s) => s.seconds),
  }));
  lines.push(
    'tree   scenario  tool                      wall s   cpu s   RSS MiB   output MB   vs umoci   vs tar',
  );
  for (const s of summary) {
    const umoci = summary.find(
      (x) => x.tree === s.tree && x.scenario === s.scenario && x.tool === 'umoci repack',
    );
    const tar = summary.find((x) => x.tree === s.tree && x.scenario === s.scenario && x.tool === 'tar -cf');
    lines.push(
      [
        s.tree.padEnd(6),
        s.scenario.padEnd(9),
        s.tool.padEnd(25),
        s.seconds.toFixed(2).padStart(6),
        s.cpuSeconds.toFixed(2).padStart(7),
        s.rssMiB.toFixed(0).padStart(9),
        (s.bytes / 1e6).toFixed(3).padStart(11),
        (umoci ? `${(s.seconds / umoci.seconds).toFixed(2)}x` : '').padStart(10),
        (tar ? `${(s.seconds / tar.seconds).toFixed(2)}x` : '').padStart(8),
      ].join(' '),
    );
  }
  process.stdout.write(`\n${lines.join('\n')}\n`);
  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  const results = join(REPO, 'bench', 'results');
  await mkdir(results, { recursive: true });
  const file = join(results, `diff-${commit}.json`);
  await writeFile(
    file,
    `${JSON.stringify({ commit, runs: RUNS, node: process.version, cpus: (await import('node:os')).availableParallelism(), load: (await import('node:os')).loadavg(), summary }, null, 2)}\n`,
  );
  process.stdout.write(`\nresults: ${file}\n`);
}

await main();
