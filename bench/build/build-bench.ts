// bench/build (issue 5): the same Dockerfile built by `stratum build` and by
// `buildah --storage-driver vfs bud --isolation chroot --layers`, cold and cached, in the same
// run, everything (context, stores) on tmpfs.
//
//   npm run build && npx tsc -p bench/build && node dist-bench/build/build-bench.js [--reps N]
//
// Input (context.ts): `ARG BASE` / `FROM $BASE`, two RUNs writing files (300 small ones; a
// 1.3 MB one and its sha256), ENV, WORKDIR, COPY of a generated context (3,000 text files of
// 200 B..3 KB in 60 directories, ~4.9 MB), a RUN counting them, CMD. The base is the busybox
// fixture (src/testing/fixtures.ts), put in each tool's own store before the runs, not timed:
// `stratum copy oci:FIXTURES:busybox localhost/bench-base:latest` into the stratum store, and
// `buildah pull oci:FIXTURES:busybox` + `buildah tag ... localhost/bench-base:latest` into
// buildah's; both build with BASE=localhost/bench-base:latest and without pulling.
//
// Per repetition and tool (the tool order alternates each repetition):
//   cold    stratum: `stratum build --no-cache` into the one store (the base image's snapshot
//           is already there, as buildah's vfs storage has the base extracted);
//           buildah: `buildah bud --layers` into a fresh storage root holding only the base
//   cached  the same build again right after, nothing changed
//   fresh   (stratum) a fresh store holding the base's blobs only (cp -a of a template, not
//           timed): nothing cached, the base's snapshot still to extract
//   nocache (buildah) `--no-cache` in the root the cached build used
// The issue's targets are on cold and cached; the other two pairings are shown for symmetry.
// Every run goes under GNU time (bench/copy/measure.ts: wall, CPU of the process and its
// waited-for children, peak RSS).
//
// Checks: every build exits 0; stratum's `--json` result says 6 layers (base + 3 RUN + WORKDIR +
// COPY), cold and fresh build 5 new and hit 0 cache entries, cached hits all 7 steps and gives
// the cold build's image id; buildah's image has 5 layers (its WORKDIR makes none), its cold and
// nocache builds print no "Using cache", its cached build prints it for every step and gives the
// cold build's image id; once at the end each
// tool's last image runs `cat /app/count` and must print the number of context files.
//
// stratum runs from a copy of dist/ taken at the start (others rebuild the checkout).
// Output: runs as they go (stderr), tables (stdout), JSON to bench/results/build-<time>.json.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { STRATUM_BIN } from '../../dist/testing/cli.js';
import { fixturesSkipReason, getFixtures } from '../../dist/testing/fixtures.js';
import { TMP_ROOT } from '../../dist/testing/tmp.js';
import { measure, run, TIME_BINARY } from '../copy/measure.js';
import {
  type Comparison,
  consoleTable,
  fmt,
  load1,
  log,
  machineInfo,
  markdownTable,
  othersBusy,
  perToolTable,
  ROOT,
  type RunRecord,
  removeOnExit,
  rows,
  runExit,
  snapshotDist,
  sourceState,
} from '../run/common.js';
import { type Context, makeContext } from './context.js';

const BUILDAH = '/usr/bin/buildah';
const BASE = 'localhost/bench-base:latest';
const TAG = 'localhost/bench-out:latest';
const STRATUM_LAYERS = 6;
const STRATUM_NEW_LAYERS = 5;
const STRATUM_STEPS = 7;
const BUILDAH_LAYERS = 5;
const BUILDAH_STEPS = 7;

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    files: { type: 'string', default: '3000' },
    'tmpfs-dir': { type: 'string', default: TMP_ROOT },
    'no-install': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(`usage: node dist-bench/build/build-bench.js [options]
  --reps N          cold + cached builds per tool (default 5; the median is reported)
  --files N         files in the generated COPY context (default 3000)
  --tmpfs-dir DIR   where the context, the stores and the logs go (default ${TMP_ROOT})
  --no-install      fail when buildah is missing (default: apt-get install -y buildah)
  --keep            keep the work directory
  --out FILE        JSON results (default bench/results/build-<time>.json)
`);
  process.exit(0);
}

const REPS = Number(args.reps);
if (!Number.isInteger(REPS) || REPS < 1) throw new Error('--reps takes a whole number >= 1');
const FILES = Number(args.files);
if (!Number.isInteger(FILES) || FILES < 1) throw new Error('--files takes a whole number >= 1');
let CLI = STRATUM_BIN;

type Tool = 'stratum' | 'buildah';
/**
 * cold: stratum --no-cache in its store / buildah in a fresh root (the issue's comparison);
 * cached: the same build again; fresh: stratum in a fresh store holding only the base's blobs;
 * nocache: buildah --no-cache in the root the cached build used.
 */
type Phase = 'cold' | 'cached' | 'fresh' | 'nocache';
const PHASES: Record<Tool, readonly Phase[]> = {
  stratum: ['cold', 'cached', 'fresh'],
  buildah: ['cold', 'cached', 'nocache'],
};

const stratum = (store: string, cmd: string, ...rest: string[]): string[] => [
  process.execPath,
  CLI,
  cmd,
  '--root',
  store,
  ...rest,
];

const buildah = (root: string, ...rest: string[]): string[] => [
  BUILDAH,
  '--root',
  join(root, 'root'),
  '--runroot',
  join(root, 'runroot'),
  '--storage-driver',
  'vfs',
  ...rest,
];

async function ensureBuildah(): Promise<void> {
  if (existsSync(BUILDAH)) return;
  if (args['no-install']) throw new Error(`buildah is missing (${BUILDAH}): apt-get install -y buildah`);
  log('buildah is missing: installing it with `apt-get install -y buildah` (Debian 12: buildah 1.28)...');
  await run(['apt-get', 'install', '-y', 'buildah'], { ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
  if (!existsSync(BUILDAH)) throw new Error(`apt-get install buildah did not give ${BUILDAH}`);
}

interface StratumResult {
  imageId: string;
  steps: number;
  cacheHits: number;
  layers: number;
  builtLayers: number;
}

/** The `result` event of `stratum build --json`, from either stream. */
function stratumResult(text: string): StratumResult {
  for (const line of text.split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    try {
      const ev = JSON.parse(line) as { event?: string } & StratumResult;
      if (ev.event === 'result') return ev;
    } catch {}
  }
  throw new Error(`stratum build --json printed no result event: ${text.slice(-2000)}`);
}

async function buildahImage(root: string): Promise<{ id: string; layers: number }> {
  const out = await run(buildah(root, 'inspect', '--type', 'image', TAG));
  const d = JSON.parse(out) as { FromImageID?: string; OCIv1: { rootfs: { diff_ids: string[] } } };
  return { id: d.FromImageID ?? '', layers: d.OCIv1.rootfs.diff_ids.length };
}

interface State {
  readonly ctx: Context;
  readonly fixtures: string;
  readonly store: string;
  /** A store holding the base image's blobs and nothing else, copied for each fresh build. */
  readonly template: string;
  readonly work: string;
  /** Image ids of the last cold build, per tool. */
  readonly coldIds: Map<Tool, string>;
  /** buildah's storage root of this repetition. */
  buildahRoot?: string;
  /** stratum's fresh store of this repetition. */
  freshStore?: string;
}

let rootSeq = 0;

async function freshBuildahRoot(st: State): Promise<string> {
  const root = join(st.work, `buildah-${rootSeq++}`);
  const id =
    (await run(buildah(root, 'pull', '-q', `oci:${st.fixtures}:busybox`))).trim().split('\n').pop() ?? '';
  await run(buildah(root, 'tag', id, BASE));
  return root;
}

function command(st: State, tool: Tool, phase: Phase): string[] {
  if (tool === 'stratum') {
    return stratum(
      phase === 'fresh' ? (st.freshStore as string) : st.store,
      'build',
      '--json',
      '--pull=false',
      ...(phase === 'cold' ? ['--no-cache'] : []),
      '--build-arg',
      `BASE=${BASE}`,
      '-t',
      TAG,
      st.ctx.dir,
    );
  }
  return buildah(
    st.buildahRoot as string,
    'bud',
    '--isolation',
    'chroot',
    '--layers',
    '--pull=false',
    ...(phase === 'nocache' ? ['--no-cache'] : []),
    '--build-arg',
    `BASE=${BASE}`,
    '-t',
    TAG,
    st.ctx.dir,
  );
}

async function check(st: State, tool: Tool, phase: Phase, out: string): Promise<Record<string, unknown>> {
  const fail = (why: string): never => {
    throw new Error(`${tool} ${phase} build: ${why}\n${out.slice(-3000)}`);
  };
  if (tool === 'stratum') {
    const r = stratumResult(out);
    if (r.layers !== STRATUM_LAYERS) fail(`${r.layers} layers, not ${STRATUM_LAYERS}`);
    if (phase === 'cold' || phase === 'fresh') {
      if (r.cacheHits !== 0 || r.builtLayers !== STRATUM_NEW_LAYERS)
        fail(
          `it hit ${r.cacheHits} cache entries and built ${r.builtLayers} layers (want 0, ${STRATUM_NEW_LAYERS})`,
        );
      if (phase === 'cold') st.coldIds.set(tool, r.imageId);
    } else {
      if (r.cacheHits !== STRATUM_STEPS || r.builtLayers !== 0)
        fail(`the cached build hit ${r.cacheHits} of ${r.steps} steps and built ${r.builtLayers} layers`);
      if (r.imageId !== st.coldIds.get(tool))
        fail(`image ${r.imageId}, the cold build made ${st.coldIds.get(tool)}`);
    }
    return { imageId: r.imageId, layers: r.layers, cacheHits: r.cacheHits, builtLayers: r.builtLayers };
  }
  const img = await buildahImage(st.buildahRoot as string);
  if (img.layers !== BUILDAH_LAYERS) fail(`${img.layers} layers, not ${BUILDAH_LAYERS}`);
  const hits = out.split('\n').filter((l) => l.startsWith('--> Using cache')).length;
  const lastLine = out.trim().split('\n').pop() ?? '';
  if (phase === 'cold' || phase === 'nocache') {
    if (hits !== 0) fail(`it used the cache ${hits} times`);
    if (phase === 'cold') st.coldIds.set(tool, img.id);
  } else {
    if (hits !== BUILDAH_STEPS) fail(`the cached build used the cache ${hits} times, not ${BUILDAH_STEPS}`);
    if (img.id !== st.coldIds.get(tool)) fail(`image ${img.id}, the cold build made ${st.coldIds.get(tool)}`);
  }
  if (!img.id.startsWith(lastLine)) fail(`its last line ${lastLine} is not the image id ${img.id}`);
  return { imageId: img.id, layers: img.layers, cacheHits: hits };
}

/** Each tool's image runs `cat /app/count`: the COPY and the RUNs after it really happened. */
async function contentCheck(st: State): Promise<void> {
  const want = String(st.ctx.files);
  const s = await runExit(
    stratum(st.store, 'run', '--rm', '--pull', 'never', '--entrypoint', '', TAG, 'cat', '/app/count'),
  );
  if (s.code !== 0 || s.stdout.trim() !== want)
    throw new Error(
      `stratum's image: cat /app/count exited ${s.code} printing ${JSON.stringify(s.stdout)} (want ${want}) ${s.stderr}`,
    );
  const root = st.buildahRoot as string;
  const cid = (await run(buildah(root, 'from', '--pull=false', TAG))).trim();
  const b = await runExit(buildah(root, 'run', '--isolation', 'chroot', cid, 'cat', '/app/count'));
  await run(buildah(root, 'rm', cid));
  if (b.code !== 0 || b.stdout.trim() !== want)
    throw new Error(
      `buildah's image: cat /app/count exited ${b.code} printing ${JSON.stringify(b.stdout)} (want ${want}) ${b.stderr}`,
    );
}

async function main(): Promise<void> {
  for (const [what, path] of [
    ['GNU time (apt-get install time)', TIME_BINARY],
    ['the stratum CLI (npm run build)', CLI],
  ] as const) {
    if (!existsSync(path)) throw new Error(`${what} is missing: ${path}`);
  }
  if (process.getuid?.() !== 0)
    throw new Error('bench/build needs root (runc, overlay mounts, buildah chroot)');
  await ensureBuildah();
  const reason = fixturesSkipReason();
  if (reason) throw new Error(`the fixtures cannot be built here: ${reason}`);
  const work = await mkdtemp(join(args['tmpfs-dir'], 'stratum-bench-build-'));
  removeOnExit(work, args.keep);
  CLI = await snapshotDist(join(work, 'snapshot'));
  const { commit, dirty } = await sourceState();
  log('finding (or building) the fixtures...');
  const fixtures = (await getFixtures()).image('busybox').layout;
  const ctx = await makeContext(join(work, 'context'), FILES);
  const template = join(work, 'stratum-template-store');
  await run(stratum(template, 'copy', '-q', `oci:${fixtures}:busybox`, BASE));
  const store = join(work, 'stratum-store');
  await run(['cp', '-a', template, store]);
  const logs = join(work, 'logs');
  await mkdir(logs);
  const st: State = { ctx, fixtures, store, template, work, coldIds: new Map() };
  const buildahVersion = (await run([BUILDAH, '--version'])).trim();
  const loadBefore = loadavg();
  log(
    `work: ${work}; context ${ctx.files} files, ${fmt(ctx.bytes / 1e6, 1)} MB; ${buildahVersion}; load before: ${loadBefore.map((x) => fmt(x)).join(' ')}`,
  );
  // one build each, not measured: stratum's base snapshot gets extracted, both tools' code gets read
  st.buildahRoot = await freshBuildahRoot(st);
  await run(command(st, 'buildah', 'cold'));
  await run(command(st, 'stratum', 'cold'));

  const records: RunRecord[] = [];
  let label = 0;
  try {
    for (let rep = 0; rep < REPS; rep++) {
      const order: Tool[] = rep % 2 === 0 ? ['stratum', 'buildah'] : ['buildah', 'stratum'];
      for (const tool of order) {
        if (tool === 'buildah') {
          const old = st.buildahRoot;
          st.buildahRoot = await freshBuildahRoot(st);
          if (old) await rm(old, { recursive: true, force: true });
        } else {
          const old = st.freshStore;
          st.freshStore = join(work, `stratum-fresh-${rep}`);
          await run(['cp', '-a', template, st.freshStore]);
          if (old) await rm(old, { recursive: true, force: true });
        }
        for (const phase of PHASES[tool]) {
          const busy = await othersBusy();
          const l1 = load1();
          const r = await measure(command(st, tool, phase), {
            logDir: logs,
            label: `${tool}-${phase}-${rep}-${label++}`,
          });
          const facts = await check(st, tool, phase, `${r.stdout}\n${r.stderr}`);
          records.push({
            group: 'build',
            tool: `${tool} ${phase}`,
            rep,
            seconds: r.seconds,
            cpuSeconds: r.cpuSeconds,
            rssMiB: r.rssMiB,
            load1: l1,
            busy,
            facts,
          });
          log(
            `  ${tool.padEnd(8)} ${phase.padEnd(7)} #${rep}  ${fmt(r.seconds, 3).padStart(7)} s  ` +
              `${fmt(r.cpuSeconds, 3).padStart(7)} s CPU  ${fmt(r.rssMiB, 0).padStart(4)} MiB  load ${fmt(l1)} busy ${fmt(busy, 1)}`,
          );
        }
      }
    }
    await contentCheck(st);
    log(`content check passed: both images print ${ctx.files} for cat /app/count`);
  } finally {
    if (args.keep) log(`kept: ${work}`);
  }

  const comparisons: Comparison[] = [
    {
      group: 'build',
      title: 'cold: stratum --no-cache vs buildah in a fresh root',
      tool: 'stratum cold',
      peer: 'buildah cold',
      target: 1.0,
    },
    {
      group: 'build',
      title: 'cached: the same build again',
      tool: 'stratum cached',
      peer: 'buildah cached',
      target: 1.0,
    },
    {
      group: 'build',
      title: 'cold: fresh store vs fresh root',
      tool: 'stratum fresh',
      peer: 'buildah cold',
    },
    {
      group: 'build',
      title: 'cold: --no-cache vs --no-cache',
      tool: 'stratum cold',
      peer: 'buildah nocache',
    },
  ];
  const table = rows(records, comparisons);
  const { info, line } = machineInfo(records, loadBefore);
  process.stdout.write(`\n${consoleTable(table)}\n\n${perToolTable(records)}\n\n`);
  const caption =
    `median of ${REPS} runs, tools alternating; ${line}; commit ${commit}${dirty ? ` + ${dirty} uncommitted src/ files` : ''}; ` +
    `${buildahVersion} (vfs, --isolation chroot, --layers); context ${ctx.files} files, ${fmt(ctx.bytes / 1e6, 1)} MB; all on tmpfs; ` +
    'cold = stratum --no-cache (base snapshot present) / buildah in a fresh storage root holding the base; ' +
    "fresh = stratum in a fresh store holding the base's blobs only; nocache = buildah --no-cache in the cached build's root";
  process.stdout.write(`${caption}\n\n${markdownTable(table)}\n\n`);
  for (const r of table) {
    if (r.target !== undefined && r.ratio > r.target)
      process.stdout.write(`missed: ${r.group} ${r.title}: ${fmt(r.ratio)}x > ${fmt(r.target, 1)}x\n`);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const file = args.out ?? join(ROOT, 'bench', 'results', `build-${stamp}.json`);
  await mkdir(join(file, '..'), { recursive: true });
  await writeFile(
    file,
    `${JSON.stringify(
      {
        when: new Date().toISOString(),
        reps: REPS,
        commit,
        uncommittedSrcFiles: dirty,
        machine: { ...info, buildah: buildahVersion },
        context: { files: ctx.files, bytes: ctx.bytes },
        rows: table,
        records,
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`results: ${file}\n`);
}

await main();
