// bench/unpack: stratum's unpack, layer apply and layer creation against umoci and GNU tar, on
// the same images in the same run, on tmpfs and on the disk (ext4).
//
//   npm run build && npx tsc -p bench/unpack && node dist-bench/unpack/unpack-bench.js [--reps N]
//
// Images: `debian` (the debootstrap minbase fixture of src/testing/fixtures.ts: one 95 MB gzip
// layer, ~6,800 entries) and `gen` (bench/copy/generate.ts: five gzip layers, one of them
// 24,000 small files, the others a few big files; 220 MB compressed). Each is copied into a
// layout of its own on each medium, so that every byte read and written is on that medium.
//
// Scenarios, per image and medium:
//   unpack  `stratum unpack` vs `umoci unpack` (whole image -> bundle, into a fresh directory)
//   apply   the same layer blobs, in order, into a fresh empty directory: stratum's applyLayer
//           (driver.ts, one process) vs `tar --numeric-owner -xzf` once per layer (both
//           decompress gzip; tar through a gzip child process)
//   create  the unpacked rootfs as one new gzip layer: stratum's diffTrees (driver.ts) vs
//           `umoci repack` of an empty image's bundle whose rootfs got the tree (cp -a, not
//           timed) vs `tar --numeric-owner -czf`
//
// Every run goes under GNU time (bench/copy/measure.ts: wall, CPU of all threads and children,
// peak RSS), into a fresh destination; tools alternate (the order rotates each repetition);
// the inputs are read once before each run and `sync` runs before it, so that neither a cold
// page cache nor the previous run's writeback lands in a measurement. Nothing is synced after
// a run: like tar and umoci, stratum's figures are up to the data being in the page cache.
// The median of N runs is reported.
//
// ext4: creating a file right after many files were deleted is slow. This VM's ext4 has no
// journal, and without one the inode allocator skips inodes deleted in the last 60-300 s
// (recently_deleted() in fs/ext4/ialloc.c), reading the inode table for each one it passes.
// Measured here: 24,000 files took 1.0 s into a fresh directory, and 9-12 s right after a tree
// of 24,000 files had been removed — that is where this VM's "~0.8 ms per file" comes from
// (perf: find_get_block_common / recently_deleted under ext4_create). So on ext4 each run's
// tree is kept until the medium is done (15-20 GB of disk for a while; --eager-delete removes
// them at once, as on tmpfs, to measure that case). Other people's deletions on the same disk
// still land in the figures: they vary more than tmpfs's.
//
// stratum runs from a copy of dist/ taken at the start (as bench/diff does): others rebuild the
// shared checkout while a run goes on.
//
// Output: the runs as they go (stderr), a table and a markdown table (stdout), and JSON with
// every run to bench/results/unpack-<commit>.json.

import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, readdirSync, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BIN_IN_DIST, STRATUM_BIN } from '../../dist/testing/cli.js';
import { fixturesSkipReason, getFixtures } from '../../dist/testing/fixtures.js';
import { TMP_ROOT } from '../../dist/testing/tmp.js';
import { type GeneratedImage, generateImage } from '../copy/generate.js';
import { measure, median, run, TIME_BINARY } from '../copy/measure.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BUILT_DRIVER = fileURLToPath(new URL('./driver.js', import.meta.url));
const UMOCI = '/usr/bin/umoci';
const TAR = '/usr/bin/tar';

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    images: { type: 'string', default: 'debian,gen' },
    media: { type: 'string', default: 'tmpfs,ext4' },
    only: { type: 'string', default: 'unpack,apply,create' },
    'ext4-dir': { type: 'string', default: '/var/tmp' },
    'tmpfs-dir': { type: 'string', default: TMP_ROOT },
    'image-cache': { type: 'string', default: join(TMP_ROOT, 'stratum-bench-unpack-image') },
    'max-load': { type: 'string' },
    'max-wait': { type: 'string', default: '30' },
    'max-busy': { type: 'string' },
    'node-args': { type: 'string', default: '' },
    keep: { type: 'boolean', default: false },
    'eager-delete': { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(`usage: node dist-bench/unpack/unpack-bench.js [options]
  --reps N            runs per tool and scenario (default 3; the median is reported)
  --images LIST       debian,gen (default both)
  --media LIST        tmpfs,ext4 (default both)
  --only LIST         unpack,apply,create (default all)
  --ext4-dir DIR      where the disk runs work (default /var/tmp)
  --tmpfs-dir DIR     where the tmpfs runs work (default ${TMP_ROOT})
  --image-cache DIR   the generated image, made once and reused (default ${args['image-cache']})
  --max-load X        wait (up to --max-wait minutes, default 30) for the 1-minute load to be <= X
  --max-busy X        before each run, wait (up to --max-wait minutes) until other processes keep
                      at most X cores busy on average (runnable tasks, sampled for 2 s)
  --node-args "..."   extra node options for stratum (e.g. "--cpu-prof --cpu-prof-dir=DIR")
  --keep              keep the work directories
  --eager-delete      on ext4 too, remove each run's tree right after it (the next run then pays
                      for ext4 skipping the recently deleted inodes: see the top of this file)
  --out FILE          JSON results (default bench/results/unpack-<commit>.json)
`);
  process.exit(0);
}

const REPS = Number(args.reps);
if (!Number.isInteger(REPS) || REPS < 1) throw new Error('--reps takes a whole number >= 1');
const split = (s: string) => s.split(/[\s,]+/).filter((x) => x !== '');
const NODE = [process.execPath, ...split(args['node-args'])];
/** The copy of dist/ the runs use, with its CLI and the driver (set by snapshot()). */
let CLI = STRATUM_BIN;
let DRIVER = BUILT_DRIVER;

type Medium = 'tmpfs' | 'ext4';
type Tool = 'stratum' | 'umoci' | 'tar';
type ScenarioId = 'unpack' | 'apply' | 'create';

const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

// ---- images -----------------------------------------------------------------------------

interface BenchImage {
  readonly name: string;
  /** OCI layout on the medium, holding this one image, tagged `t`. */
  readonly layout: string;
  readonly manifest: string;
  /** The layer blob files, in order. */
  readonly blobs: readonly string[];
  readonly layerBytes: number;
  readonly about: string;
}

interface SourceImage {
  readonly name: string;
  readonly layout: string;
  readonly tag: string;
  readonly about: string;
}

interface IndexJson {
  manifests: { digest: string; mediaType: string; size: number; annotations?: Record<string, string> }[];
}

const blobPath = (layout: string, digest: string): string => {
  const [alg, hex] = digest.split(':') as [string, string];
  return join(layout, 'blobs', alg, hex);
};

/** Copy one image (manifest, config, layers) of a layout into a new layout `dst`, tagged `t`. */
async function copyImage(src: SourceImage, dst: string): Promise<BenchImage> {
  const index = JSON.parse(await readFile(join(src.layout, 'index.json'), 'utf8')) as IndexJson;
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === src.tag);
  if (!entry) throw new Error(`${src.layout} has no image tagged ${src.tag}`);
  const manifest = JSON.parse(await readFile(blobPath(src.layout, entry.digest), 'utf8')) as {
    config: { digest: string };
    layers: { digest: string; size: number }[];
  };
  await mkdir(join(dst, 'blobs', 'sha256'), { recursive: true });
  for (const d of [entry.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    await copyFile(blobPath(src.layout, d), blobPath(dst, d));
  }
  await writeFile(join(dst, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const tagged = { ...entry, annotations: { 'org.opencontainers.image.ref.name': 't' } };
  await writeFile(join(dst, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [tagged] }));
  return {
    name: src.name,
    layout: dst,
    manifest: entry.digest,
    blobs: manifest.layers.map((l) => blobPath(dst, l.digest)),
    layerBytes: manifest.layers.reduce((n, l) => n + l.size, 0),
    about: src.about,
  };
}

async function generatedImage(cache: string): Promise<GeneratedImage> {
  const meta = join(cache, 'bench-image.json');
  if (existsSync(meta)) return JSON.parse(await readFile(meta, 'utf8')) as GeneratedImage;
  log(`generating the image into ${cache} (once)...`);
  await rm(cache, { recursive: true, force: true });
  const img = await generateImage(cache);
  await writeFile(meta, JSON.stringify(img));
  return img;
}

async function sourceImages(names: readonly string[]): Promise<{ images: SourceImage[]; skipped: string[] }> {
  const images: SourceImage[] = [];
  const skipped: string[] = [];
  for (const name of names) {
    if (name === 'debian') {
      const reason = fixturesSkipReason();
      if (reason) {
        skipped.push(`debian: ${reason}`);
        continue;
      }
      log('finding (or building) the fixtures...');
      const set = await getFixtures();
      if (set.debianSkipReason) {
        skipped.push(`debian: ${set.debianSkipReason}`);
        continue;
      }
      const img = set.image('debian');
      images.push({ name, layout: img.layout, tag: img.name, about: img.about });
    } else if (name === 'gen') {
      const g = await generatedImage(args['image-cache']);
      images.push({
        name,
        layout: g.dir,
        tag: g.ref,
        about: `bench/copy/generate.ts: ${g.layers.length} gzip layers (${g.layers.map((l) => `${l.name} ${l.files} files`).join(', ')})`,
      });
    } else throw new Error(`--images: no image ${JSON.stringify(name)} (debian, gen)`);
  }
  return { images, skipped };
}

// ---- helpers ----------------------------------------------------------------------------

/** Read files once so that the runs find them in the page cache. */
async function warm(files: readonly string[]): Promise<void> {
  for (const f of files) {
    await new Promise<void>((resolve, reject) => {
      createReadStream(f, { highWaterMark: 1 << 20 })
        .on('data', () => {})
        .on('end', resolve)
        .on('error', reject);
    });
  }
}

/** Every regular file under a directory. */
function treeFiles(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) treeFiles(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Entries under a directory (not counting it). */
function countEntries(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    n++;
    if (e.isDirectory()) n += countEntries(join(dir, e.name));
  }
  return n;
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path)).size;
}

/** The size of the last layer of the image tagged `t` in a layout (what umoci repack added). */
async function lastLayerSize(layout: string): Promise<{ size: number; layers: number }> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as IndexJson;
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 't');
  if (!entry) throw new Error(`${layout}: no image tagged t`);
  const m = JSON.parse(await readFile(blobPath(layout, entry.digest), 'utf8')) as {
    layers: { size: number }[];
  };
  return { size: m.layers.at(-1)?.size ?? 0, layers: m.layers.length };
}

/** Runnable tasks other than this one, averaged over 2 s (the 4th field of /proc/loadavg). */
async function othersBusy(): Promise<number> {
  let sum = 0;
  const n = 20;
  for (let i = 0; i < n; i++) {
    const running = Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[3]?.split('/')[0]);
    sum += Math.max(0, running - 1);
    await new Promise((r) => setTimeout(r, 100));
  }
  return sum / n;
}

/** Wait (--max-busy) for the machine to be quiet enough; returns how busy it was at the start of the run. */
async function waitForQuiet(): Promise<number> {
  let busy = await othersBusy();
  if (args['max-busy'] === undefined) return busy;
  const max = Number(args['max-busy']);
  const deadline = Date.now() + Number(args['max-wait']) * 60_000;
  while (busy > max && Date.now() < deadline) {
    log(`  others keep ${fmt(busy, 1)} cores busy (> ${max}): waiting...`);
    await new Promise((r) => setTimeout(r, 10_000));
    busy = await othersBusy();
  }
  return busy;
}

async function waitForLoad(): Promise<string | undefined> {
  if (args['max-load'] === undefined) return undefined;
  const max = Number(args['max-load']);
  const deadline = Date.now() + Number(args['max-wait']) * 60_000;
  for (;;) {
    const l = loadavg()[0] as number;
    if (l <= max) return undefined;
    if (Date.now() > deadline)
      return `the load stayed above ${max} (${fmt(l)}) for ${args['max-wait']} min; ran anyway`;
    log(`load ${fmt(l)} > ${max}: waiting...`);
    await new Promise((r) => setTimeout(r, 30_000));
  }
}

/** Copy dist/ and the driver where a rebuild of the checkout cannot reach them. */
async function snapshot(dir: string): Promise<void> {
  await run(['cp', '-a', join(ROOT, 'dist'), join(dir, 'dist')]);
  await copyFile(join(ROOT, 'package.json'), join(dir, 'package.json'));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  await mkdir(join(dir, 'dist-bench', 'unpack'), { recursive: true });
  CLI = join(dir, 'dist', BIN_IN_DIST);
  DRIVER = join(dir, 'dist-bench', 'unpack', 'driver.js');
  await copyFile(BUILT_DRIVER, DRIVER);
}

// ---- scenarios --------------------------------------------------------------------------

interface RunContext {
  readonly dst: string;
  /** Files to read before the run. */
  readonly warm: readonly string[];
  readonly layout?: string;
}

interface Scenario {
  readonly id: ScenarioId;
  readonly title: string;
  readonly tools: readonly Tool[];
  prepare(tool: Tool, n: number): Promise<RunContext>;
  command(tool: Tool, ctx: RunContext): string[];
  check(tool: Tool, ctx: RunContext, stdout: string): Promise<Record<string, unknown>>;
}

interface Inputs {
  readonly image: BenchImage;
  readonly work: string;
  /** The unpacked rootfs (for create), made once per image and medium. */
  rootfs?: string;
}

function scenarios(inp: Inputs): Scenario[] {
  const { image, work } = inp;
  const fresh = (n: number, tool: Tool, what: string) => join(work, `${what}-${tool}-${n}`);
  return [
    {
      id: 'unpack',
      title: 'unpack image -> bundle',
      tools: ['stratum', 'umoci'],
      async prepare(tool, n) {
        return { dst: fresh(n, tool, 'bundle'), warm: image.blobs };
      },
      command(tool, ctx) {
        return tool === 'stratum'
          ? [...NODE, CLI, 'unpack', '-q', `oci:${image.layout}:t`, ctx.dst]
          : [UMOCI, 'unpack', '--image', `${image.layout}:t`, ctx.dst];
      },
      async check(tool, ctx) {
        if (!existsSync(join(ctx.dst, 'config.json'))) throw new Error(`${tool} wrote no config.json`);
        return { entries: countEntries(join(ctx.dst, 'rootfs')) };
      },
    },
    {
      id: 'apply',
      title: 'apply layers in order',
      tools: ['stratum', 'tar'],
      async prepare(tool, n) {
        const dst = fresh(n, tool, 'apply');
        await mkdir(dst);
        return { dst, warm: image.blobs };
      },
      command(tool, ctx) {
        return tool === 'stratum'
          ? [...NODE, DRIVER, 'apply', ctx.dst, ...image.blobs]
          : [
              '/bin/sh',
              '-c',
              `for b do ${TAR} --numeric-owner -xzf "$b" -C "$0" || exit 1; done`,
              ctx.dst,
              ...image.blobs,
            ];
      },
      async check(_tool, ctx) {
        return { entries: countEntries(ctx.dst) };
      },
    },
    {
      id: 'create',
      title: 'create a layer from the rootfs',
      tools: ['stratum', 'umoci', 'tar'],
      async prepare(tool, n) {
        const rootfs = inp.rootfs as string;
        const dst = fresh(n, tool, 'create');
        await mkdir(dst);
        if (tool !== 'umoci') return { dst, warm: [] };
        // an empty image, unpacked; its rootfs gets the tree; repack makes the tree a layer
        const layout = join(dst, 'img');
        const bundle = join(dst, 'bundle');
        await run([UMOCI, 'init', '--layout', layout]);
        await run([UMOCI, 'new', '--image', `${layout}:t`]);
        await run([UMOCI, 'unpack', '--image', `${layout}:t`, bundle]);
        await run(['cp', '-a', `${rootfs}/.`, join(bundle, 'rootfs')]);
        return { dst: bundle, layout, warm: [] };
      },
      command(tool, ctx) {
        const rootfs = inp.rootfs as string;
        if (tool === 'stratum') return [...NODE, DRIVER, 'diff', rootfs, join(ctx.dst, 'layer.tgz')];
        if (tool === 'tar')
          return [TAR, '--numeric-owner', '-C', rootfs, '-czf', join(ctx.dst, 'layer.tgz'), '.'];
        return [UMOCI, 'repack', '--image', `${ctx.layout}:t`, ctx.dst];
      },
      async check(tool, ctx, stdout) {
        if (tool === 'umoci') {
          const l = await lastLayerSize(ctx.layout as string);
          if (l.layers !== 1) throw new Error(`umoci repack made ${l.layers} layers, want 1`);
          return { layerBytes: l.size };
        }
        const facts: Record<string, unknown> = { layerBytes: await sizeOf(join(ctx.dst, 'layer.tgz')) };
        if (tool === 'stratum') {
          const r = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
            entries?: number;
            warnings?: string[];
          };
          facts.entries = r.entries;
          if (r.warnings?.length) facts.warnings = r.warnings;
        }
        return facts;
      },
    },
  ];
}

// ---- running ----------------------------------------------------------------------------

interface RunRecord {
  readonly image: string;
  readonly medium: Medium;
  readonly scenario: ScenarioId;
  readonly tool: Tool;
  readonly rep: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly rssMiB: number;
  readonly load1: number;
  /** Cores kept busy by other processes just before the run (see othersBusy). */
  readonly busy: number;
  readonly facts: Record<string, unknown>;
}

interface ToolStats {
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly peakRssMiB: number;
  readonly runs: readonly number[];
}

interface Row {
  readonly image: string;
  readonly medium: Medium;
  readonly scenario: string;
  readonly peer: string;
  readonly stratum: ToolStats;
  readonly other: ToolStats;
  readonly ratio: number;
  /** The issue's target for the ratio, when it sets one. */
  readonly target?: number;
}

function stats(records: readonly RunRecord[]): ToolStats | undefined {
  if (records.length === 0) return undefined;
  return {
    seconds: median(records.map((r) => r.seconds)),
    cpuSeconds: median(records.map((r) => r.cpuSeconds)),
    peakRssMiB: Math.max(...records.map((r) => r.rssMiB)),
    runs: records.map((r) => r.seconds),
  };
}

const PEER_NAME: Record<string, string> = {
  'unpack/umoci': 'umoci unpack',
  'apply/tar': 'tar -xzf per layer',
  'unpack/tar': 'tar -xzf per layer',
  'create/umoci': 'umoci repack',
  'create/tar': 'tar -czf',
};

function target(scenario: ScenarioId, peer: Tool, medium: Medium): number | undefined {
  if (scenario === 'unpack' && peer === 'umoci' && medium === 'tmpfs') return 0.5;
  if ((scenario === 'unpack' || scenario === 'apply') && peer === 'tar')
    return medium === 'tmpfs' ? 1.5 : 1.0;
  if (scenario === 'create' && peer === 'umoci') return 1.0;
  return undefined;
}

function rows(records: readonly RunRecord[], images: readonly string[], media: readonly Medium[]): Row[] {
  const out: Row[] = [];
  const pick = (image: string, medium: Medium, scenario: ScenarioId, tool: Tool) =>
    stats(
      records.filter(
        (r) => r.image === image && r.medium === medium && r.scenario === scenario && r.tool === tool,
      ),
    );
  for (const image of images) {
    for (const medium of media) {
      const pairs: [ScenarioId, Tool, ScenarioId, string][] = [
        ['unpack', 'umoci', 'unpack', 'unpack image -> bundle'],
        // the issue's "unpack vs tar layer by layer": stratum unpack against the apply runs' tar
        ['unpack', 'tar', 'apply', 'unpack image -> bundle'],
        ['apply', 'tar', 'apply', 'apply layers (same blobs)'],
        ['create', 'umoci', 'create', 'create layer from rootfs (gzip)'],
        ['create', 'tar', 'create', 'create layer from rootfs (gzip)'],
      ];
      for (const [sc, peer, peerScenario, title] of pairs) {
        const s = pick(image, medium, sc, 'stratum');
        const o = pick(image, medium, peerScenario, peer);
        if (!s || !o) continue;
        const t = target(sc, peer, medium);
        out.push({
          image,
          medium,
          scenario: title,
          peer: PEER_NAME[`${sc}/${peer}`] as string,
          stratum: s,
          other: o,
          ratio: s.seconds / o.seconds,
          ...(t === undefined ? {} : { target: t }),
        });
      }
    }
  }
  return out;
}

const HEADER = [
  'image',
  'scenario',
  'medium',
  'stratum s',
  'peer',
  'peer s',
  'ratio',
  'target',
  'stratum RSS MiB',
  'peer RSS MiB',
  'stratum CPU s',
  'peer CPU s',
];

function cells(r: Row): string[] {
  return [
    r.image,
    r.scenario,
    r.medium,
    fmt(r.stratum.seconds),
    r.peer,
    fmt(r.other.seconds),
    `${fmt(r.ratio)}x`,
    r.target === undefined ? '' : `<= ${fmt(r.target, 1)}x ${r.ratio <= r.target ? 'ok' : 'MISSED'}`,
    fmt(r.stratum.peakRssMiB, 0),
    fmt(r.other.peakRssMiB, 0),
    fmt(r.stratum.cpuSeconds),
    fmt(r.other.cpuSeconds),
  ];
}

function consoleTable(rs: readonly Row[]): string {
  const all = [HEADER, ...rs.map(cells)];
  const widths = HEADER.map((_, i) => Math.max(...all.map((c) => (c[i] ?? '').length)));
  return all
    .map((c) =>
      c
        .map((x, i) => (i <= 2 || i === 4 ? x.padEnd(widths[i] as number) : x.padStart(widths[i] as number)))
        .join('  '),
    )
    .join('\n');
}

function markdownTable(rs: readonly Row[]): string {
  const line = (c: readonly string[]) => `| ${c.join(' | ')} |`;
  return [
    line(HEADER),
    line(HEADER.map((_, i) => (i <= 2 || i === 4 ? '---' : '---:'))),
    ...rs.map((r) => line(cells(r))),
  ].join('\n');
}

async function main(): Promise<void> {
  const media = split(args.media) as Medium[];
  for (const m of media)
    if (m !== 'tmpfs' && m !== 'ext4') throw new Error(`--media: tmpfs or ext4, not ${m}`);
  const only = new Set(split(args.only));
  for (const s of only) {
    if (s !== 'unpack' && s !== 'apply' && s !== 'create') throw new Error(`--only: no scenario ${s}`);
  }
  for (const [what, path] of [
    ['GNU time (apt-get install time)', TIME_BINARY],
    ['umoci', UMOCI],
    ['GNU tar', TAR],
    ['the stratum CLI (npm run build)', CLI],
    ['the bench driver (npx tsc -p bench/unpack)', BUILT_DRIVER],
  ] as const) {
    if (!existsSync(path)) throw new Error(`${what} is missing: ${path}`);
  }
  const workDirs: string[] = [];
  const removeWork = (): void => {
    if (!args.keep) for (const d of workDirs) rmSync(d, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      removeWork();
      process.exit(130);
    });
  }
  const snap = await mkdtemp(join(TMP_ROOT, 'stratum-bench-unpack-snapshot-'));
  workDirs.push(snap);
  await snapshot(snap);
  // what dist/ was built from: HEAD, and whether src/ had uncommitted changes then
  const commit = (await run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']).catch(() => '')).trim();
  const dirty = (await run(['git', '-C', ROOT, 'status', '--porcelain', '--', 'src']).catch(() => ''))
    .split('\n')
    .filter((l) => l.trim() !== '').length;
  const { images: sources, skipped } = await sourceImages(split(args.images));
  for (const s of skipped) log(`skipped: ${s}`);
  if (sources.length === 0) throw new Error('no image to measure');

  const waited = await waitForLoad();
  if (waited) log(waited);
  const loadBefore = loadavg();
  log(`load before: ${loadBefore.map((x) => fmt(x)).join(' ')}`);

  const records: RunRecord[] = [];
  const notes: string[] = [...skipped];
  const imageInfo: Record<string, unknown>[] = [];
  let label = 0;
  try {
    for (const medium of media) {
      const base = await mkdtemp(
        join(medium === 'tmpfs' ? args['tmpfs-dir'] : args['ext4-dir'], 'stratum-bench-unpack-'),
      );
      workDirs.push(base);
      const fsType = execFileSync('stat', ['-f', '-c', '%T', base], { encoding: 'utf8' }).trim();
      const deferDeletes = medium === 'ext4' && !args['eager-delete'];
      log(`\n== ${medium}: ${base} (${fsType})`);
      if ((medium === 'tmpfs') !== (fsType === 'tmpfs')) {
        notes.push(`${medium} runs went to ${base}, which is ${fsType}`);
      }
      const logs = join(base, 'logs');
      await mkdir(logs);
      for (const src of sources) {
        const work = join(base, src.name);
        await mkdir(work);
        const image = await copyImage(src, join(work, 'layout'));
        if (medium === media[0]) {
          imageInfo.push({
            name: image.name,
            about: image.about,
            manifest: image.manifest,
            layers: image.blobs.length,
            layerBytes: image.layerBytes,
          });
        }
        log(
          `-- ${image.name}: ${image.blobs.length} layers, ${fmt(image.layerBytes / 1e6, 1)} MB gzip (${image.about})`,
        );
        const inp: Inputs = { image, work };
        if (only.has('create')) {
          const b = join(work, 'input-bundle');
          await run([...NODE, CLI, 'unpack', '-q', `oci:${image.layout}:t`, b]);
          inp.rootfs = join(b, 'rootfs');
          await warm(treeFiles(inp.rootfs));
        }
        for (const sc of scenarios(inp).filter((s) => only.has(s.id))) {
          for (let rep = 0; rep < REPS; rep++) {
            const k = rep % sc.tools.length;
            const order = [...sc.tools.slice(k), ...sc.tools.slice(0, k)];
            for (const tool of order) {
              const ctx = await sc.prepare(tool, rep);
              try {
                await warm(ctx.warm);
                await run(['sync']);
                const busy = await waitForQuiet();
                const load1 = loadavg()[0] as number;
                const r = await measure(sc.command(tool, ctx), {
                  logDir: logs,
                  label: `${image.name}-${sc.id}-${tool}-${rep}-${label++}`,
                });
                const facts = await sc.check(tool, ctx, r.stdout);
                records.push({
                  image: image.name,
                  medium,
                  scenario: sc.id,
                  tool,
                  rep,
                  seconds: r.seconds,
                  cpuSeconds: r.cpuSeconds,
                  rssMiB: r.rssMiB,
                  load1,
                  busy,
                  facts,
                });
                log(
                  `  ${medium.padEnd(5)} ${image.name.padEnd(6)} ${sc.id.padEnd(6)} ${tool.padEnd(7)} #${rep}  ` +
                    `${fmt(r.seconds).padStart(6)} s  ${fmt(r.cpuSeconds).padStart(6)} s CPU  ` +
                    `${fmt(r.rssMiB, 0).padStart(4)} MiB  load ${fmt(load1)} busy ${fmt(busy, 1)}  ${JSON.stringify(facts)}`,
                );
              } finally {
                const dir = ctx.layout ? join(ctx.dst, '..') : ctx.dst;
                if (deferDeletes) {
                  // the layer file is one inode: it can go now; the trees wait (see the top)
                  await rm(join(ctx.dst, 'layer.tgz'), { force: true });
                } else await rm(dir, { recursive: true, force: true });
              }
            }
          }
        }
        // the same tree from every unpacker
        for (const sc of ['unpack', 'apply'] as const) {
          const counts = new Set(
            records
              .filter((r) => r.image === image.name && r.medium === medium && r.scenario === sc)
              .map((r) => r.facts.entries),
          );
          if (counts.size > 1)
            notes.push(
              `${image.name} ${medium} ${sc}: the tools made different entry counts ${[...counts].join(', ')}`,
            );
        }
        if (!args.keep && !deferDeletes) await rm(work, { recursive: true, force: true });
      }
      if (deferDeletes && !args.keep) {
        log(`removing the ${medium} runs' trees...`);
        await rm(base, { recursive: true, force: true });
      }
    }
  } finally {
    removeWork();
    if (args.keep) log(`kept: ${workDirs.join(' ')}`);
  }

  const loadAfter = loadavg();
  const loads = records.map((r) => r.load1);
  const busies = records.map((r) => r.busy);
  const table = rows(
    records,
    sources.map((s) => s.name),
    media,
  );
  const missed = table.filter((r) => r.target !== undefined && r.ratio > r.target);
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    umoci: (await run([UMOCI, '--version'])).trim(),
    tar: (await run([TAR, '--version'])).split('\n')[0],
    commit,
    uncommittedSrcFiles: dirty,
    loadBefore,
    loadAfter,
    load1DuringRuns: { min: Math.min(...loads), median: median(loads), max: Math.max(...loads) },
    othersBusyBeforeRuns: { min: Math.min(...busies), median: median(busies), max: Math.max(...busies) },
  };
  const loadLine =
    `load (1 min) ${fmt(machine.load1DuringRuns.min)} .. ${fmt(machine.load1DuringRuns.max)}, median ${fmt(machine.load1DuringRuns.median)} ` +
    `on ${machine.cores} cores; other processes kept ${fmt(machine.othersBusyBeforeRuns.min, 1)} .. ${fmt(machine.othersBusyBeforeRuns.max, 1)} ` +
    `(median ${fmt(machine.othersBusyBeforeRuns.median, 1)}) cores busy just before the runs`;
  process.stdout.write(`\n${consoleTable(table)}\n\n`);
  process.stdout.write(
    `median of ${REPS} runs, tools alternating, fresh destination each run; ${loadLine}; commit ${commit}${dirty ? ` + ${dirty} uncommitted src/ files` : ''}\n` +
      `ext4: ${args['eager-delete'] ? "each run's tree removed right after it (the next run pays for ext4 skipping recently deleted inodes)" : 'trees kept until the medium is done (no recently deleted inodes of ours to skip)'}; the disk is shared: expect more spread than tmpfs\n` +
      '"unpack vs tar -xzf per layer" uses the tar runs of the apply scenario (same blobs, empty directory)\n\n',
  );
  process.stdout.write(`${markdownTable(table)}\n\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);
  for (const r of missed) {
    process.stdout.write(
      `missed: ${r.image} ${r.medium} ${r.scenario} vs ${r.peer}: ${fmt(r.ratio)}x > ${fmt(r.target as number, 1)}x\n`,
    );
  }
  const file = args.out ?? join(ROOT, 'bench', 'results', `unpack-${commit || 'nocommit'}.json`);
  await mkdir(join(file, '..'), { recursive: true });
  await writeFile(
    file,
    `${JSON.stringify({ when: new Date().toISOString(), reps: REPS, machine, images: imageInfo, notes, rows: table, records }, null, 2)}\n`,
  );
  process.stdout.write(`results: ${file}\n`);
}

await main();
