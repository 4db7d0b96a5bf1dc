// bench/copy: stratum's `copy` against skopeo's on the same image in the same run.
//
//   npm run build && npx tsc -p bench/copy && node dist-bench/copy/copy-bench.js [--reps N] [--only a,b]
//
// 1. generates a ~220 MB, 5-layer gzip image on tmpfs (generate.ts) as an OCI layout, and
//    checks that skopeo reads it;
// 2. starts Debian's docker-registry (storage on tmpfs) and pushes the image there once;
//    writes a docker-archive of it once, with skopeo;
// 3. per scenario, N runs of each tool (alternating which goes first), each into a fresh
//    destination; a push goes to a fresh registry every time, so no blob exists or can be
//    mounted (distribution 2.8 only answers HEAD for blobs linked into the repository, and
//    skopeo's blob-info cache would otherwise offer cross-repository mounts). Each run is
//    checked: the manifest digest at the destination, and what each tool said it did;
// 4. prints the medians, ratios, CPU time and peak RSS (GNU time), as a table and as
//    markdown, and writes everything to bench/results/copy-<date>.json (report.ts).
// Both tools run as CLI processes: `stratum copy` (the bin, dist/cli/stratum.cjs) and `skopeo copy`.

import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MediaType } from '../../dist/spec/media-types.js';
import { STRATUM_BIN } from '../../dist/testing/cli.js';
import { REGISTRY_BINARY, startRegistry, type TestRegistry } from '../../dist/testing/registry.js';
import { TMP_ROOT } from '../../dist/testing/tmp.js';
import { type GeneratedImage, generateImage } from './generate.js';
import { measure, run, TIME_BINARY } from './measure.js';
import {
  consoleTable,
  fmt,
  markdownTable,
  type RunRecord,
  summarize,
  type Tool,
  targetChecks,
} from './report.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEFAULT_CLI = STRATUM_BIN;
const SKOPEO = '/usr/bin/skopeo';
const TOOLS: readonly Tool[] = ['stratum', 'skopeo'];

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    only: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'image-cache': { type: 'string' },
    'node-args': { type: 'string', default: '' },
    'stratum-args': { type: 'string', default: '' },
    'stratum-cli': { type: 'string', default: DEFAULT_CLI },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(`usage: node dist-bench/copy/copy-bench.js [options]
  --reps N              runs per tool and scenario (default 3; the median is reported)
  --only IDS            comma-separated scenarios: pull, push, archive, archive-gzip (default all)
  --keep                keep the work directory (image, archive, logs) on tmpfs
  --image-cache DIR     generate the image into DIR once and reuse it in later runs
  --node-args "..."     extra node options for stratum (e.g. --cpu-prof --cpu-prof-dir=DIR)
  --stratum-args "..."  extra \`stratum copy\` options (e.g. -j 8)
  --stratum-cli FILE    the stratum CLI to run (default dist/cli/stratum.cjs; another build to compare)
  --out FILE            JSON results (default bench/results/copy-<date>.json)
`);
  process.exit(0);
}

const CLI = args['stratum-cli'];
const REPS = Number(args.reps);
if (!Number.isInteger(REPS) || REPS < 1) throw new Error('--reps takes a whole number >= 1');
const split = (s: string) => s.split(/\s+/).filter((x) => x !== '');

interface Context {
  readonly dst: string;
  readonly registry?: TestRegistry;
  readonly expectedDigest?: string;
}

interface Scenario {
  readonly id: string;
  readonly title: string;
  /** Fresh destination (and registry) for one run. */
  prepare(tool: Tool, rep: number): Promise<Context>;
  command(tool: Tool, ctx: Context): string[];
  /** Check the result; returns facts worth keeping. */
  check(tool: Tool, ctx: Context, stdout: string): Promise<Record<string, unknown>>;
  cleanup(ctx: Context): Promise<void>;
}

function stratumCopy(src: string, dst: string, extra: readonly string[] = []): string[] {
  return [
    process.execPath,
    ...split(args['node-args']),
    CLI,
    'copy',
    '-q',
    '--json',
    ...extra,
    ...split(args['stratum-args']),
    src,
    dst,
  ];
}

/** What stratum said it did (its --json result line). */
function stratumStats(stdout: string): { copied: number; skipped: number; mounted: number; digest: string } {
  const line = stdout.trim().split('\n').pop() ?? '';
  const r = JSON.parse(line) as {
    event?: string;
    copied: number;
    skipped: number;
    mounted: number;
    digest: string;
  };
  if (r.event !== 'result') throw new Error(`stratum printed no result: ${line.slice(0, 300)}`);
  return r;
}

/** What skopeo said it did: blobs copied, and blobs it skipped because they were there. */
function skopeoStats(stdout: string): { copied: number; skipped: number } {
  const lines = stdout.split('\n').filter((l) => l.startsWith('Copying blob'));
  const skipped = lines.filter((l) => /skipped|already exists/i.test(l)).length;
  return { copied: lines.length - skipped, skipped };
}

async function layoutRoot(dir: string, ref: string): Promise<{ digest: string; mediaType: string }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
  };
  const e = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === ref);
  if (!e) throw new Error(`${dir}: index.json has no image named ${ref}`);
  return e;
}

/** Media types and total size of the layers of the image `ref` in a layout. */
async function layoutLayers(dir: string, ref: string): Promise<{ mediaTypes: string[]; size: number }> {
  const root = await layoutRoot(dir, ref);
  const [alg, hex] = root.digest.split(':') as [string, string];
  const m = JSON.parse(await readFile(join(dir, 'blobs', alg, hex), 'utf8')) as {
    layers: { mediaType: string; size: number }[];
  };
  return {
    mediaTypes: [...new Set(m.layers.map((l) => l.mediaType))],
    size: m.layers.reduce((n, l) => n + l.size, 0),
  };
}

async function registryDigest(reg: TestRegistry, repo: string, tag: string): Promise<string> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: `${MediaType.OciManifest}, ${MediaType.DockerManifest}` },
  });
  if (res.status !== 200) throw new Error(`${reg.host}/${repo}:${tag}: HTTP ${res.status}`);
  return res.headers.get('docker-content-digest') ?? '';
}

function counts(
  tool: Tool,
  stdout: string,
  expectBlobs: number,
  mustCopyAll: boolean,
): Record<string, unknown> {
  const s = tool === 'stratum' ? stratumStats(stdout) : { ...skopeoStats(stdout), mounted: 0 };
  const copied = s.copied;
  const skipped = s.skipped + s.mounted;
  if (mustCopyAll && (skipped > 0 || copied < expectBlobs)) {
    throw new Error(`${tool} did not copy every blob (copied ${copied}, skipped or mounted ${skipped})`);
  }
  return { blobsCopied: copied, blobsSkipped: skipped };
}

function scenarios(img: GeneratedImage, work: string, source: TestRegistry, archive: string): Scenario[] {
  const layers = img.layers.length;
  let n = 0;
  const freshDir = () => join(work, `dst-${n++}`);
  const toLayout = (
    id: string,
    title: string,
    src: string,
    skopeoSrcArgs: string[],
    opts: { expect?: string; stratumExtra?: string[] } = {},
  ): Scenario => ({
    id,
    title,
    async prepare() {
      return { dst: freshDir(), ...(opts.expect ? { expectedDigest: opts.expect } : {}) };
    },
    command(tool, ctx) {
      return tool === 'stratum'
        ? stratumCopy(src, `oci:${ctx.dst}:t`, opts.stratumExtra)
        : [SKOPEO, 'copy', ...skopeoSrcArgs, src, `oci:${ctx.dst}:t`];
    },
    async check(tool, ctx, stdout) {
      const root = await layoutRoot(ctx.dst, 't');
      if (ctx.expectedDigest && root.digest !== ctx.expectedDigest) {
        throw new Error(`${tool} wrote ${root.digest}, want ${ctx.expectedDigest}`);
      }
      const out = await layoutLayers(ctx.dst, 't');
      return {
        ...counts(tool, stdout, layers, false),
        manifest: root.digest,
        layerMediaTypes: out.mediaTypes,
        layerBytes: out.size,
      };
    },
    async cleanup(ctx) {
      await rm(ctx.dst, { recursive: true, force: true });
    },
  });
  return [
    toLayout('pull', 'registry → layout', `docker://${source.host}/bench:1`, ['--src-tls-verify=false'], {
      expect: img.manifest.digest,
    }),
    {
      id: 'push',
      title: 'layout → registry',
      async prepare() {
        // a registry of its own: nothing to skip, nothing to mount
        return { dst: 'bench/push:1', registry: await startRegistry(), expectedDigest: img.manifest.digest };
      },
      command(tool, ctx) {
        const dst = `docker://${ctx.registry!.host}/${ctx.dst}`;
        const src = `oci:${img.dir}:${img.ref}`;
        return tool === 'stratum'
          ? stratumCopy(src, dst)
          : [SKOPEO, 'copy', '--dest-tls-verify=false', src, dst];
      },
      async check(tool, ctx, stdout) {
        const got = await registryDigest(ctx.registry!, 'bench/push', '1');
        if (got !== ctx.expectedDigest) throw new Error(`${tool} pushed ${got}, want ${ctx.expectedDigest}`);
        return { ...counts(tool, stdout, layers, true), manifest: got };
      },
      async cleanup(ctx) {
        await ctx.registry?.stop();
      },
    },
    toLayout('archive', 'docker-archive → layout', `docker-archive:${archive}`, []),
    // skopeo gzips layers written to an oci: layout; stratum keeps bytes unless asked
    toLayout('archive-gzip', 'docker-archive → layout, gzip', `docker-archive:${archive}`, [], {
      stratumExtra: ['--dest-compress', 'gzip'],
    }),
  ];
}

/** Generate the image, or reuse the one a previous run left in `cache`. */
async function cachedImage(cache: string | undefined, fresh: string): Promise<GeneratedImage> {
  if (cache === undefined) return generateImage(fresh);
  const meta = join(cache, 'bench-image.json');
  if (existsSync(meta)) return JSON.parse(await readFile(meta, 'utf8')) as GeneratedImage;
  await rm(cache, { recursive: true, force: true });
  const img = await generateImage(cache);
  await writeFile(meta, JSON.stringify(img));
  return img;
}

async function main(): Promise<void> {
  for (const [what, path] of [
    ['GNU time (apt-get install time)', TIME_BINARY],
    ['skopeo', SKOPEO],
    ['docker-registry', REGISTRY_BINARY],
    ['stratum CLI (npm run build)', CLI],
  ] as const) {
    if (!existsSync(path)) throw new Error(`${what} is missing: ${path}`);
  }
  const work = await mkdtemp(join(TMP_ROOT, 'stratum-bench-copy-'));
  const logs = join(work, 'logs');
  await mkdir(logs);
  const registries: TestRegistry[] = [];
  try {
    process.stderr.write(`work directory ${work}\ngenerating the image...\n`);
    const t0 = Date.now();
    const img = await cachedImage(args['image-cache'], join(work, 'src'));
    process.stderr.write(
      `  ${img.layers.length} layers, ${img.files} files, ${fmt(img.totalSize / 1e6, 1)} MB compressed, ` +
        `${fmt(img.uncompressedSize / 1e6, 1)} MB uncompressed, ${img.manifest.digest} (${fmt((Date.now() - t0) / 1000, 1)} s)\n`,
    );
    for (const l of img.layers) {
      process.stderr.write(
        `  ${l.name.padEnd(13)} ${String(l.files).padStart(6)} files ${fmt(l.descriptor.size / 1e6, 1).padStart(7)} MB gz ${fmt(l.uncompressedSize / 1e6, 1).padStart(7)} MB tar\n`,
      );
    }
    if (img.totalSize < 200e6) throw new Error(`the image is only ${img.totalSize} bytes; want >= 200 MB`);
    const ociSrc = `oci:${img.dir}:${img.ref}`;
    const inspected = JSON.parse(await run([SKOPEO, 'inspect', ociSrc])) as {
      Digest: string;
      Layers: string[];
    };
    if (inspected.Digest !== img.manifest.digest || inspected.Layers.length !== img.layers.length) {
      throw new Error(`skopeo reads the layout as ${inspected.Digest}, want ${img.manifest.digest}`);
    }

    process.stderr.write('starting the registry, pushing the image once, writing a docker-archive...\n');
    const source = await startRegistry();
    registries.push(source);
    await run([SKOPEO, 'copy', '-q', '--dest-tls-verify=false', ociSrc, `docker://${source.host}/bench:1`]);
    const pushed = await registryDigest(source, 'bench', '1');
    if (pushed !== img.manifest.digest)
      throw new Error(`the registry holds ${pushed}, want ${img.manifest.digest}`);
    const archive = join(work, 'bench.tar');
    await run([SKOPEO, 'copy', '-q', ociSrc, `docker-archive:${archive}:bench:1`]);

    const loadBefore = loadavg();
    const only = args.only ? new Set(args.only.split(',')) : undefined;
    const all = scenarios(img, work, source, archive);
    for (const id of only ?? []) {
      if (!all.some((s) => s.id === id)) throw new Error(`--only: no scenario ${JSON.stringify(id)}`);
    }
    const list = all.filter((s) => !only || only.has(s.id));
    const records: RunRecord[] = [];
    for (const sc of list) {
      for (let rep = 0; rep < REPS; rep++) {
        const order: readonly Tool[] = rep % 2 === 0 ? TOOLS : [...TOOLS].reverse();
        for (const tool of order) {
          const ctx = await sc.prepare(tool, rep);
          try {
            const label = `${sc.id}-${tool}-${rep}`;
            const r = await measure(sc.command(tool, ctx), { logDir: logs, label });
            const facts = await sc.check(tool, ctx, r.stdout);
            const { seconds, cpuSeconds, rssMiB } = r;
            records.push({ scenario: sc.id, tool, rep, seconds, cpuSeconds, rssMiB, facts });
            process.stderr.write(
              `  ${sc.id.padEnd(12)} ${tool.padEnd(7)} #${rep}  ${fmt(seconds).padStart(6)} s  ` +
                `${fmt(cpuSeconds).padStart(6)} s CPU  ${fmt(rssMiB, 0).padStart(5)} MiB\n`,
            );
          } finally {
            await sc.cleanup(ctx);
          }
        }
      }
    }

    const loadAfter = loadavg();
    const rows = summarize(list, records);
    process.stdout.write(`\n${consoleTable(rows)}\n\n`);
    const when = new Date().toISOString();
    const machine = {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: cpus().length,
      node: process.version,
      skopeo: (await run([SKOPEO, '--version'])).trim(),
      commit: (await run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']).catch(() => '')).trim(),
      loadBefore,
      loadAfter,
    };
    const md = markdownTable(
      rows,
      `${img.layers.length} gzip layers, ${img.files} files, ${fmt(img.totalSize / 1e6, 0)} MB compressed; ` +
        `median of ${REPS} runs, tools alternating; peak RSS is the largest of the runs and CPU is user + system ` +
        `(GNU time); tmpfs, loopback registry (distribution 2.8), a fresh one for every push; ` +
        `${machine.cores} cores, ${machine.cpu}; ${machine.skopeo}; node ${machine.node}.`,
    );
    process.stdout.write(`${md}\n`);
    const notes: string[] = [];
    const gz = rows.find((r) => r.id === 'archive');
    if (gz) {
      const a = gz.stratum.facts.layerMediaTypes;
      const b = gz.skopeo.facts.layerMediaTypes;
      if (JSON.stringify(a) !== JSON.stringify(b)) {
        notes.push(
          `docker-archive → layout writes different layers: stratum ${JSON.stringify(a)}, skopeo ${JSON.stringify(b)}; ` +
            `the "gzip" row asks stratum for gzip layers too`,
        );
      }
    }
    if (Math.max(...loadBefore, ...loadAfter) > 1.5) {
      notes.push(
        `the machine was busy (load average ${loadBefore.map((x) => fmt(x)).join(' ')} before, ` +
          `${loadAfter.map((x) => fmt(x)).join(' ')} after): wall times are noisy, CPU times less so`,
      );
    }
    const misses = targetChecks(rows);
    for (const note of notes) process.stdout.write(`\nnote: ${note}\n`);
    for (const miss of misses) process.stdout.write(`over target: ${miss}\n`);

    const out =
      args.out ?? join(ROOT, 'bench', 'results', `copy-${when.slice(0, 19).replace(/:/g, '-')}.json`);
    await mkdir(join(out, '..'), { recursive: true });
    await writeFile(
      out,
      `${JSON.stringify(
        {
          benchmark: 'copy',
          date: when,
          machine,
          reps: REPS,
          nodeArgs: args['node-args'],
          stratumArgs: args['stratum-args'],
          image: {
            digest: img.manifest.digest,
            totalBytes: img.totalSize,
            uncompressedBytes: img.uncompressedSize,
            files: img.files,
            layers: img.layers.map((l) => ({
              name: l.name,
              files: l.files,
              digest: l.descriptor.digest,
              bytes: l.descriptor.size,
              uncompressedBytes: l.uncompressedSize,
            })),
          },
          results: rows,
          runs: records,
          notes,
          overTarget: misses,
          markdown: md,
        },
        null,
        2,
      )}\n`,
    );
    process.stderr.write(`\nresults: ${out}\n`);
  } finally {
    for (const r of registries) await r.stop().catch(() => {});
    if (args.keep) process.stderr.write(`kept ${work}\n`);
    else await rm(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/copy: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
