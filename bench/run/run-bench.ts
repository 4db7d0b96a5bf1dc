// bench/run (issue 4): `stratum run --rm IMG true` against runc alone on a ready bundle (the
// floor) and against `umoci unpack` + `runc run` (what it takes without stratum), on the same
// image in the same run, everything on tmpfs.
//
//   npm run build && npx tsc -p bench/run && node dist-bench/run/run-bench.js [--reps N]
//
// Images: `busybox` and `debian` (src/testing/fixtures.ts: busybox-static with its applets, one
// ~1 MB layer; the debootstrap minbase rootfs, one ~95 MB gzip layer, ~6,800 entries).
//
// Tools, per image, all running the same process (the image's Entrypoint + ["true"]; busybox's
// Entrypoint is ["/bin/sh","-c"], so there it is `/bin/sh -c true`), no terminal:
//   stratum-warm  `stratum run --rm --pull never IMG true` in a store whose snapshots are
//                 there (one run made them before the measured runs)
//   stratum-cold  the same in a fresh store holding the image's blobs and nothing else: a copy
//                 (cp -a, not timed) of a template store made by `stratum copy oci:... NAME`,
//                 so no layer is extracted yet and the run extracts every one
//   runc          `runc run --bundle B ID` on a bundle made once by umoci unpack (the floor)
//   umoci+runc    `umoci unpack --image LAYOUT:TAG B && cp CONFIG B/config.json && runc run
//                 --bundle B ID` under one `sh -c` (the config copy puts the same process in)
//   node          `stratum --version`: what starting Node and the CLI costs before any work
//                 (no target; it shows how much of the runc floor's 1.5x a Node CLI has left)
// Each repetition runs each tool once, the order rotating; the median of N runs is reported.
// Every run goes under GNU time (bench/copy/measure.ts): wall time, CPU of the process and
// all its waited-for children (runc, the container's process), peak RSS of the largest one.
//
// Checks (a broken tool must not look fast): before the runs, each tool runs
// `/bin/sh -c 'echo ok-<image>; exit 7'` and must print that and exit 7; every measured run
// must exit 0; after each stratum run its store holds no container and nothing is left
// mounted under it, a cold run's store had no snapshot before and has one per layer after,
// a warm run extracted nothing; after each runc run runc's state directory is empty.
//
// stratum runs from a copy of dist/ taken at the start (others rebuild the checkout).
// Output: runs as they go (stderr), tables (stdout), JSON to bench/results/run-<time>.json.

import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
  split,
} from './common.js';

const UMOCI = '/usr/bin/umoci';
const RUNC_CANDIDATES = ['/usr/sbin/runc', '/usr/bin/runc'];

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    images: { type: 'string', default: 'busybox,debian' },
    tools: { type: 'string', default: 'stratum-warm,stratum-cold,runc,umoci+runc,node' },
    'tmpfs-dir': { type: 'string', default: TMP_ROOT },
    keep: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(`usage: node dist-bench/run/run-bench.js [options]
  --reps N          runs per tool and image (default 5; the median is reported)
  --images LIST     busybox,debian (default both)
  --tools LIST      stratum-warm,stratum-cold,runc,umoci+runc,node (default all)
  --tmpfs-dir DIR   where the stores, bundles and logs go (default ${TMP_ROOT})
  --keep            keep the work directory
  --out FILE        JSON results (default bench/results/run-<time>.json)
`);
  process.exit(0);
}

const REPS = Number(args.reps);
if (!Number.isInteger(REPS) || REPS < 1) throw new Error('--reps takes a whole number >= 1');
type Tool = 'stratum-warm' | 'stratum-cold' | 'runc' | 'umoci+runc' | 'node';
const ALL_TOOLS: readonly Tool[] = ['stratum-warm', 'stratum-cold', 'runc', 'umoci+runc', 'node'];
const TOOLS = split(args.tools) as Tool[];
for (const t of TOOLS) if (!ALL_TOOLS.includes(t)) throw new Error(`--tools: no tool ${t}`);
const RUNC = RUNC_CANDIDATES.find((p) => existsSync(p));
let CLI = STRATUM_BIN;

interface BenchImage {
  readonly name: string;
  readonly layout: string;
  readonly tag: string;
  readonly layers: number;
  readonly layerBytes: number;
  /** What `run IMG true` runs: the image's Entrypoint + ["true"]. */
  readonly trueArgs: readonly string[];
  readonly about: string;
}

const blobPath = (layout: string, digest: string): string => {
  const [alg, hex] = digest.split(':') as [string, string];
  return join(layout, 'blobs', alg, hex);
};

async function describe(name: string, layout: string, tag: string, about: string): Promise<BenchImage> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`${layout} has no image tagged ${tag}`);
  const manifest = JSON.parse(await readFile(blobPath(layout, entry.digest), 'utf8')) as {
    config: { digest: string };
    layers: { size: number }[];
  };
  const config = JSON.parse(await readFile(blobPath(layout, manifest.config.digest), 'utf8')) as {
    config?: { Entrypoint?: string[] | null };
  };
  return {
    name,
    layout,
    tag,
    layers: manifest.layers.length,
    layerBytes: manifest.layers.reduce((n, l) => n + l.size, 0),
    trueArgs: [...(config.config?.Entrypoint ?? []), 'true'],
    about,
  };
}

async function images(names: readonly string[]): Promise<{ images: BenchImage[]; skipped: string[] }> {
  const reason = fixturesSkipReason();
  if (reason) throw new Error(`the fixtures cannot be built here: ${reason}`);
  log('finding (or building) the fixtures (debootstrap takes ~75 s the first time)...');
  const set = await getFixtures();
  const out: BenchImage[] = [];
  const skipped: string[] = [];
  for (const name of names) {
    if (name !== 'busybox' && name !== 'debian')
      throw new Error(`--images: no image ${name} (busybox, debian)`);
    if (name === 'debian' && set.debianSkipReason) {
      skipped.push(`debian: ${set.debianSkipReason}`);
      continue;
    }
    const img = set.image(name);
    out.push(await describe(name, img.layout, img.name, img.about));
  }
  return { images: out, skipped };
}

// ---- per-image setup --------------------------------------------------------------------

interface Setup {
  readonly image: BenchImage;
  readonly dir: string;
  /** Store with the image's blobs, never run: copied for each cold run. */
  readonly template: string;
  /** Store whose snapshots exist. */
  readonly warm: string;
  /** Bundle made once (the runc floor). */
  readonly floor: string;
  /** config.json for the image running `true` (umoci's, with our process and no terminal). */
  readonly config: string;
  /** runc's state directory for the runc and umoci+runc runs. */
  readonly runcRoot: string;
  readonly ref: string;
}

const isSnapshot = (n: string): boolean => /^[0-9a-f]{64}$/.test(n);
const snapshotCount = (store: string): number =>
  existsSync(join(store, 'snapshots')) ? readdirSync(join(store, 'snapshots')).filter(isSnapshot).length : 0;
const entries = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);

async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((l) =>
      (l.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))),
    )
    .filter((p) => p === prefix || p.startsWith(`${prefix}/`));
}

/** `stratum CMD --root STORE ...` from the copy of dist/ (global options go after the command). */
const stratum = (store: string, cmd: string, ...rest: string[]): string[] => [
  process.execPath,
  CLI,
  cmd,
  '--root',
  store,
  ...rest,
];

async function setup(image: BenchImage, base: string): Promise<Setup> {
  const dir = join(base, image.name);
  await mkdir(dir);
  const ref = `bench/${image.name}:latest`;
  const template = join(dir, 'template-store');
  await run(stratum(template, 'copy', '-q', `oci:${image.layout}:${image.tag}`, ref));
  const warm = join(dir, 'warm-store');
  await run(['cp', '-a', template, warm]);
  const runcRoot = join(dir, 'runc-state');
  await mkdir(runcRoot);
  const floor = join(dir, 'floor-bundle');
  await run([UMOCI, 'unpack', '--image', `${image.layout}:${image.tag}`, floor]);
  const spec = JSON.parse(await readFile(join(floor, 'config.json'), 'utf8')) as {
    process: { args: string[]; terminal?: boolean };
  };
  spec.process.args = [...image.trueArgs];
  spec.process.terminal = false;
  const config = join(dir, 'config-true.json');
  await writeFile(config, JSON.stringify(spec, null, 2));
  await writeFile(join(floor, 'config.json'), JSON.stringify(spec, null, 2));
  // the checking runs' config: the same with another process
  spec.process.args = ['/bin/sh', '-c', `echo ok-${image.name}; exit 7`];
  await writeFile(join(dir, 'config-check.json'), JSON.stringify(spec, null, 2));
  return { image, dir, template, warm, floor, config, runcRoot, ref };
}

/** Each tool once with a process that prints and exits 7; the warm store's snapshots get made here. */
async function sanity(s: Setup): Promise<void> {
  const want = `ok-${s.image.name}`;
  const script = `echo ${want}; exit 7`;
  const expect = (what: string, r: { code: number; stdout: string; stderr: string }): void => {
    if (r.code !== 7 || r.stdout.trim() !== want) {
      throw new Error(
        `${s.image.name}: ${what} should print ${want} and exit 7; it exited ${r.code} printing ${JSON.stringify(r.stdout.slice(0, 200))} ${r.stderr.slice(-2000)}`,
      );
    }
  };
  expect(
    'stratum run (warm store, first run)',
    await runExit(
      stratum(s.warm, 'run', '--rm', '--pull', 'never', '--entrypoint', '/bin/sh', s.ref, '-c', script),
    ),
  );
  if (snapshotCount(s.warm) !== s.image.layers)
    throw new Error(
      `${s.image.name}: after a run the warm store has ${snapshotCount(s.warm)} snapshots, not ${s.image.layers}`,
    );
  // and once with `true`, as measured
  const t = await runExit(stratum(s.warm, 'run', '--rm', '--pull', 'never', s.ref, 'true'));
  if (t.code !== 0)
    throw new Error(`${s.image.name}: stratum run ${s.ref} true exited ${t.code}: ${t.stderr}`);
  const cold = join(s.dir, 'check-cold-store');
  await run(['cp', '-a', s.template, cold]);
  expect(
    'stratum run (cold store)',
    await runExit(
      stratum(cold, 'run', '--rm', '--pull', 'never', '--entrypoint', '/bin/sh', s.ref, '-c', script),
    ),
  );
  await rm(cold, { recursive: true, force: true });
  const b = join(s.dir, 'check-bundle');
  await run([UMOCI, 'unpack', '--image', `${s.image.layout}:${s.image.tag}`, b]);
  await run(['cp', join(s.dir, 'config-check.json'), join(b, 'config.json')]);
  expect(
    'umoci unpack + runc run',
    await runExit([RUNC as string, '--root', s.runcRoot, 'run', '--bundle', b, 'check']),
  );
  await rm(b, { recursive: true, force: true });
  await run(['cp', join(s.dir, 'config-check.json'), join(s.floor, 'config.json')]);
  expect(
    'runc run (floor bundle)',
    await runExit([RUNC as string, '--root', s.runcRoot, 'run', '--bundle', s.floor, 'check']),
  );
  await run(['cp', s.config, join(s.floor, 'config.json')]);
}

// ---- the runs ---------------------------------------------------------------------------

interface Prepared {
  readonly argv: string[];
  /** Checks after the run; returns the facts to record. */
  after(): Promise<Record<string, unknown>>;
  cleanup(): Promise<void>;
}

let seq = 0;

async function prepare(s: Setup, tool: Tool, rep: number): Promise<Prepared> {
  const id = `bench-${process.pid}-${seq++}`;
  const checkStore = async (
    store: string,
    before: number,
    cold: boolean,
  ): Promise<Record<string, unknown>> => {
    const left = entries(join(store, 'containers'));
    if (left.length > 0)
      throw new Error(
        `${s.image.name} ${tool} #${rep}: containers left in the store after --rm: ${left.join(' ')}`,
      );
    const mounts = await mountsUnder(store);
    if (mounts.length > 0)
      throw new Error(`${s.image.name} ${tool} #${rep}: still mounted: ${mounts.join(' ')}`);
    const after = snapshotCount(store);
    if (cold && (before !== 0 || after !== s.image.layers))
      throw new Error(
        `${s.image.name} cold #${rep}: snapshots ${before} before, ${after} after (want 0, ${s.image.layers})`,
      );
    if (!cold && after !== before)
      throw new Error(`${s.image.name} warm #${rep}: snapshots ${before} -> ${after}`);
    return { snapshotsBefore: before, snapshotsAfter: after };
  };
  const checkRunc = (): Record<string, unknown> => {
    const left = entries(s.runcRoot);
    if (left.length > 0)
      throw new Error(`${s.image.name} ${tool} #${rep}: runc state left: ${left.join(' ')}`);
    return {};
  };
  switch (tool) {
    case 'stratum-warm': {
      const before = snapshotCount(s.warm);
      return {
        argv: stratum(s.warm, 'run', '--rm', '--pull', 'never', s.ref, 'true'),
        after: () => checkStore(s.warm, before, false),
        cleanup: async () => {},
      };
    }
    case 'stratum-cold': {
      const store = join(s.dir, `cold-store-${rep}`);
      await run(['cp', '-a', s.template, store]);
      const before = snapshotCount(store);
      return {
        argv: stratum(store, 'run', '--rm', '--pull', 'never', s.ref, 'true'),
        after: () => checkStore(store, before, true),
        cleanup: () => rm(store, { recursive: true, force: true }),
      };
    }
    case 'node':
      return {
        argv: [process.execPath, CLI, '--version'],
        after: async () => ({}),
        cleanup: async () => {},
      };
    case 'runc':
      return {
        argv: [RUNC as string, '--root', s.runcRoot, 'run', '--bundle', s.floor, id],
        after: async () => checkRunc(),
        cleanup: async () => {},
      };
    case 'umoci+runc': {
      const b = join(s.dir, `bundle-${rep}`);
      const q = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`;
      const script =
        `${UMOCI} unpack --image ${q(`${s.image.layout}:${s.image.tag}`)} ${q(b)} >/dev/null && ` +
        `cp ${q(s.config)} ${q(join(b, 'config.json'))} && ` +
        `exec ${RUNC} --root ${q(s.runcRoot)} run --bundle ${q(b)} ${id}`;
      return {
        argv: ['/bin/sh', '-c', script],
        after: async () => {
          if (!existsSync(join(b, 'rootfs', 'bin')))
            throw new Error(`${s.image.name} umoci+runc #${rep}: no rootfs/bin in ${b}`);
          return checkRunc();
        },
        cleanup: () => rm(b, { recursive: true, force: true }),
      };
    }
  }
}

const COMPARISONS = (names: readonly string[]): Comparison[] =>
  names.flatMap((g) => [
    { group: g, title: 'warm run vs the runc floor', tool: 'stratum-warm', peer: 'runc', target: 1.5 },
    { group: g, title: 'warm run vs umoci unpack + runc', tool: 'stratum-warm', peer: 'umoci+runc' },
    {
      group: g,
      title: 'cold run vs umoci unpack + runc',
      tool: 'stratum-cold',
      peer: 'umoci+runc',
      ...(g === 'debian' ? { target: 0.5 } : {}),
    },
    { group: g, title: 'cold run vs the runc floor', tool: 'stratum-cold', peer: 'runc' },
    { group: g, title: 'warm run vs node + stratum --version', tool: 'stratum-warm', peer: 'node' },
    { group: g, title: 'stratum --version vs the runc floor', tool: 'node', peer: 'runc' },
  ]);

async function main(): Promise<void> {
  for (const [what, path] of [
    ['GNU time (apt-get install time)', TIME_BINARY],
    ['umoci (apt-get install umoci)', UMOCI],
    ['runc (apt-get install runc)', RUNC ?? RUNC_CANDIDATES[0]],
    ['the stratum CLI (npm run build)', CLI],
  ] as const) {
    if (path === undefined || !existsSync(path)) throw new Error(`${what} is missing: ${path}`);
  }
  if (process.getuid?.() !== 0) throw new Error('bench/run needs root (runc, overlay mounts)');
  const work = await mkdtemp(join(args['tmpfs-dir'], 'stratum-bench-run-'));
  removeOnExit(work, args.keep);
  CLI = await snapshotDist(join(work, 'snapshot'));
  const { commit, dirty } = await sourceState();
  const { images: imgs, skipped } = await images(split(args.images));
  for (const s of skipped) log(`skipped: ${s}`);
  if (imgs.length === 0) throw new Error('no image to measure');
  const logs = join(work, 'logs');
  await mkdir(logs);
  const loadBefore = loadavg();
  log(`work: ${work}; load before: ${loadBefore.map((x) => fmt(x)).join(' ')}`);

  const records: RunRecord[] = [];
  const notes: string[] = [...skipped];
  let label = 0;
  try {
    for (const image of imgs) {
      log(
        `-- ${image.name}: ${image.layers} layer(s), ${fmt(image.layerBytes / 1e6, 1)} MB; runs ${JSON.stringify(image.trueArgs)}`,
      );
      const s = await setup(image, work);
      await sanity(s);
      log('   checks passed (each tool printed and exited 7); measuring...');
      for (let rep = 0; rep < REPS; rep++) {
        const k = rep % TOOLS.length;
        const order = [...TOOLS.slice(k), ...TOOLS.slice(0, k)];
        for (const tool of order) {
          const p = await prepare(s, tool, rep);
          try {
            const busy = await othersBusy();
            const l1 = load1();
            const r = await measure(p.argv, {
              logDir: logs,
              label: `${image.name}-${tool}-${rep}-${label++}`,
            });
            const facts = await p.after();
            records.push({
              group: image.name,
              tool,
              rep,
              seconds: r.seconds,
              cpuSeconds: r.cpuSeconds,
              rssMiB: r.rssMiB,
              load1: l1,
              busy,
              facts,
            });
            log(
              `  ${image.name.padEnd(7)} ${tool.padEnd(12)} #${rep}  ${fmt(r.seconds, 3).padStart(7)} s  ` +
                `${fmt(r.cpuSeconds, 3).padStart(7)} s CPU  ${fmt(r.rssMiB, 0).padStart(4)} MiB  load ${fmt(l1)} busy ${fmt(busy, 1)}`,
            );
          } finally {
            await p.cleanup();
          }
        }
      }
      if (!args.keep) await rm(s.dir, { recursive: true, force: true });
    }
  } finally {
    if (args.keep) log(`kept: ${work}`);
  }

  const table = rows(records, COMPARISONS(imgs.map((i) => i.name)));
  const { info, line } = machineInfo(records, loadBefore);
  const runcVersion = (await run([RUNC as string, '--version'])).split('\n')[0];
  const umociVersion = (await run([UMOCI, '--version'])).trim();
  process.stdout.write(`\n${consoleTable(table)}\n\n${perToolTable(records)}\n\n`);
  const caption =
    `median of ${REPS} runs, tools alternating; ${line}; commit ${commit}${dirty ? ` + ${dirty} uncommitted src/ files` : ''}; ` +
    `${runcVersion}, ${umociVersion}; store, bundles and images on tmpfs; cold = a fresh store holding only the image's blobs (no snapshot)`;
  process.stdout.write(`${caption}\n\n${markdownTable(table)}\n\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);
  for (const r of table) {
    if (r.target !== undefined && r.ratio > r.target)
      process.stdout.write(`missed: ${r.group} ${r.title}: ${fmt(r.ratio)}x > ${fmt(r.target, 1)}x\n`);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const file = args.out ?? join(ROOT, 'bench', 'results', `run-${stamp}.json`);
  await mkdir(join(file, '..'), { recursive: true });
  await writeFile(
    file,
    `${JSON.stringify(
      {
        when: new Date().toISOString(),
        reps: REPS,
        commit,
        uncommittedSrcFiles: dirty,
        machine: { ...info, runc: runcVersion, umoci: umociVersion },
        images: imgs,
        notes,
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
