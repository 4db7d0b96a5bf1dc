// `stratum layers`, `stratum diff` and `stratum flatten`: parse options, call ops/layers.ts,
// print a table or lines for people, or the result as JSON (--json). No logic of their own.

import type { ImageDiff, PathDiff } from '../analyze/image-diff.js';
import type { LayerReport } from '../analyze/layers.js';
import { parsePlatform } from '../image/platform.js';
import type { SessionOptions } from '../ops/session.js';
import type { LayerCompression } from '../spec/media-types.js';
import type { Platform } from '../spec/types.js';
import { formatLocation } from '../transport/location.js';
import { type GLOBAL_OPTIONS, type OptionSpec, type Parsed, parse, UsageError } from './args.js';
import type { Command, CommandContext } from './commands.js';
import { formatTable, help, shortDigest } from './format.js';
import { formatBytes } from './progress.js';

const GLOBAL_DETAIL = `  --platform OS/ARCH[/V]  pick this platform from an index (default: this machine's)
  --json                  the result as JSON
  -q, --quiet             no progress
  --tls-verify=false      do not verify registry certificates; allow plain HTTP
`;

function common(
  v: Parsed<{ platform: { type: 'string' } } & typeof GLOBAL_OPTIONS>['values'],
): SessionOptions & { platform?: Platform } {
  let platform: Platform | undefined;
  try {
    platform = v.platform === undefined ? undefined : parsePlatform(v.platform);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return {
    ...(v.root ? { root: v.root } : {}),
    ...(v['tls-verify'] === 'false' ? { tlsVerify: false } : {}),
    ...(platform ? { platform } : {}),
  };
}

/** A history instruction on one line, shortened unless asked not to. */
function instruction(s: string | undefined, noTrunc: boolean): string {
  if (s === undefined) return '-';
  const one = s.replace(/\s+/g, ' ').trim();
  return noTrunc || one.length <= 60 ? one : `${one.slice(0, 59)}…`;
}

function percent(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

const KIND_LETTER = { added: 'A', changed: 'C', deleted: 'D', removed: 'D' } as const;

function printReport(ctx: CommandContext, r: LayerReport, noTrunc: boolean, withPaths: boolean): void {
  const rows: string[][] = [
    ['#', 'DIGEST', 'COMPRESSED', 'SIZE', 'ADDED', 'CHANGED', 'DELETED', 'WASTED', 'CREATED BY'],
  ];
  for (const l of r.layers) {
    rows.push([
      String(l.index + 1),
      shortDigest(l.digest),
      formatBytes(l.compressedSize),
      formatBytes(l.size),
      String(l.added),
      String(l.changed),
      String(l.deleted),
      formatBytes(l.wastedBytes),
      instruction(l.instruction, noTrunc),
    ]);
  }
  ctx.stdout.write(`Image: ${r.manifest.digest}\n`);
  ctx.stdout.write(formatTable(rows, new Set([0, 2, 3, 4, 5, 6, 7])));
  ctx.stdout.write(
    `\nTotal: ${r.layers.length} layer${r.layers.length === 1 ? '' : 's'}, ${formatBytes(r.compressedSize)} compressed, ${formatBytes(r.size)} uncompressed, ${formatBytes(r.totalBytes)} of file data\n`,
  );
  ctx.stdout.write(`Wasted: ${formatBytes(r.wastedBytes)}   Efficiency: ${percent(r.efficiency)}\n`);
  if (r.wasted.length > 0) {
    const top = noTrunc ? r.wasted : r.wasted.slice(0, 10);
    ctx.stdout.write(
      `\nWasted paths (largest first${top.length < r.wasted.length ? `, ${top.length} of ${r.wasted.length}` : ''}):\n`,
    );
    const w = formatTable(
      top.map((p) => [
        formatBytes(p.bytes),
        p.path,
        `(layer${p.layers.length === 1 ? '' : 's'} ${p.layers.map((i) => i + 1).join(', ')})`,
      ]),
      new Set([0]),
    );
    ctx.stdout.write(w.replace(/^/gm, '  ').replace(/ {2}$/, ''));
  }
  if (withPaths) {
    for (const l of r.layers) {
      ctx.stdout.write(`\nLayer ${l.index + 1} (${shortDigest(l.digest)}):\n`);
      for (const p of l.paths ?? []) ctx.stdout.write(`  ${KIND_LETTER[p.kind]} ${p.path}\n`);
    }
  }
}

const LAYERS_OPTIONS = {
  platform: { type: 'string' },
  paths: { type: 'boolean' },
  'no-trunc': { type: 'boolean' },
} as const satisfies OptionSpec;

export const layersCommand: Command = {
  summary: "List an image's layers: sizes, what made them, files added/changed/deleted, wasted bytes",
  usage: 'stratum layers [--paths] [--no-trunc] [--platform OS/ARCH[/V]] [--json] LOCATION',
  async run(argv, ctx) {
    const p = parse(argv, LAYERS_OPTIONS, { min: 1, max: 1, usage: this.usage });
    const v = p.values;
    if (v.help) {
      return help(
        ctx,
        this,
        `
Each layer is streamed once (nothing is extracted). ADDED counts paths new in the layer,
CHANGED paths it writes over, DELETED paths its whiteouts remove. WASTED is the file data a
layer stores that later layers shadow or delete (counted against the layer that stored it,
as dive does); efficiency is 1 - wasted / all file data.

options:
  --paths                 list each layer's added (A), changed (C) and deleted (D) paths
  --no-trunc              do not shorten instructions; list every wasted path
${GLOBAL_DETAIL}`,
      );
    }
    const location = p.positionals[0] as string;
    const report = await (await import('../ops/layers.js')).imageLayers(location, {
      ...common(v),
      signal: ctx.signal,
      ...(v.paths ? { paths: true } : {}),
      onProgress: (e) => {
        if (!v.quiet && !v.json && e.type === 'layer-start' && ctx.stderr.isTTY) {
          ctx.stderr.write(`\rReading layer ${e.index + 1}/${e.count} (${formatBytes(e.layer.size)})\x1b[K`);
        }
      },
    });
    if (!v.quiet && !v.json && ctx.stderr.isTTY) ctx.stderr.write('\r\x1b[K');
    if (v.json) ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else printReport(ctx, report, v['no-trunc'] === true, v.paths === true);
    return 0;
  },
};

function describeChange(d: PathDiff): string {
  if (d.kind !== 'changed') return `${KIND_LETTER[d.kind]} ${d.path}`;
  const what = (d.changes ?? []).map((c) => {
    const a = d.before;
    const b = d.after;
    switch (c) {
      case 'type':
        return `type ${a?.type} -> ${b?.type}`;
      case 'mode':
        return `mode ${a?.mode.toString(8).padStart(4, '0')} -> ${b?.mode.toString(8).padStart(4, '0')}`;
      case 'uid':
        return `uid ${a?.uid} -> ${b?.uid}`;
      case 'gid':
        return `gid ${a?.gid} -> ${b?.gid}`;
      case 'size':
        return `size ${a?.size} -> ${b?.size}`;
      case 'link':
        return `link ${JSON.stringify(a?.link)} -> ${JSON.stringify(b?.link)}`;
      case 'device':
        return `device ${a?.device} -> ${b?.device}`;
      default:
        return c;
    }
  });
  return `C ${d.path} (${what.join(', ')})`;
}

function printDiff(ctx: CommandContext, d: ImageDiff, quiet: boolean): void {
  for (const p of d.paths) ctx.stdout.write(`${describeChange(p)}\n`);
  if (!quiet) ctx.stderr.write(`${d.added} added, ${d.removed} removed, ${d.changed} changed\n`);
}

export const diffCommand: Command = {
  summary: "List the paths that differ between two images' filesystems",
  usage: 'stratum diff [--fast] [--exit-code] [--platform OS/ARCH[/V]] [--json] LOCATION1 LOCATION2',
  async run(argv, ctx) {
    const p = parse(
      argv,
      { platform: { type: 'string' }, fast: { type: 'boolean' }, 'exit-code': { type: 'boolean' } },
      { min: 2, max: 2, usage: this.usage },
    );
    const v = p.values;
    if (v.help) {
      return help(
        ctx,
        this,
        `
Both images are read from their layer streams (whiteouts, opaque directories and hard links
applied as unpack applies them); nothing is extracted. Each line is A (only in the second
image), D (only in the first) or C (in both, different: type, mode, owner, size, content,
link target, device, xattrs). Contents are compared by sha256; mtimes are not compared.

options:
  --fast                  compare files by size and mtime instead of content (no hashing)
  --exit-code             exit with 1 when the images differ (like git diff --exit-code)
${GLOBAL_DETAIL}`,
      );
    }
    const [a, b] = p.positionals as [string, string];
    const d = await (await import('../ops/layers.js')).imageDiff(a, b, {
      ...common(v),
      signal: ctx.signal,
      ...(v.fast ? { compare: 'fast' } : {}),
    });
    if (v.json) ctx.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
    else printDiff(ctx, d, v.quiet === true);
    return v['exit-code'] && d.paths.length > 0 ? 1 : 0;
  },
};

export const flattenCommand: Command = {
  summary: 'Squash all layers of an image into one, as a new image',
  usage:
    'stratum flatten [--compress gzip|zstd|none] [--method stream|extract] [--platform OS/ARCH[/V]] LOCATION NEW[:TAG]',
  async run(argv, ctx) {
    const p = parse(
      argv,
      { platform: { type: 'string' }, compress: { type: 'string' }, method: { type: 'string' } },
      { min: 2, max: 2, usage: this.usage },
    );
    const v = p.values;
    if (v.help) {
      return help(
        ctx,
        this,
        `
NEW is written to the local store unless it names another location (oci:DIR:TAG,
docker://..., archives). The new image has one layer holding the image's final filesystem,
and the same config (platform, Env, Cmd, ...); its history keeps the old entries marked
empty_layer, plus one for the new layer (as docker build --squash does).

options:
  --compress KIND         the new layer's compression: gzip (default), zstd or none
  --method stream|extract stream (default): from the layer streams, nothing extracted;
                          extract: apply the layers into a temp dir, then diff it (needs root)
${GLOBAL_DETAIL}`,
      );
    }
    const compress = v.compress ?? 'gzip';
    if (!['gzip', 'zstd', 'none'].includes(compress)) {
      throw new UsageError(`--compress takes gzip, zstd or none, not ${JSON.stringify(compress)}`);
    }
    const method = v.method ?? 'stream';
    if (method !== 'stream' && method !== 'extract') {
      throw new UsageError(`--method takes stream or extract, not ${JSON.stringify(method)}`);
    }
    const [src, dst] = p.positionals as [string, string];
    const log = (line: string): void => {
      if (!v.quiet && !v.json) ctx.stderr.write(`${line}\n`);
    };
    const r = await (await import('../ops/layers.js')).flatten(src, dst, {
      ...common(v),
      signal: ctx.signal,
      compression: compress as LayerCompression,
      method,
      onProgress: (e) => {
        if (e.type === 'read')
          log(`Reading layer ${e.index + 1}/${e.count} (${shortDigest(e.layer.digest)})`);
        else if (e.type === 'write')
          log(`Copying files of layer ${e.index + 1}/${e.count} (${shortDigest(e.layer.digest)})`);
        else log(`Writing layer ${shortDigest(e.layer.digest)} (${formatBytes(e.layer.size)})`);
      },
    });
    if (v.json) {
      ctx.stdout.write(
        `${JSON.stringify(
          {
            from: formatLocation(r.from),
            to: formatLocation(r.to),
            ref: r.ref ?? null,
            source: r.source.digest,
            digest: r.manifest.digest,
            layer: r.layer,
            diffId: r.diffId,
            layers: r.layers,
            size: r.size,
            method: r.method,
          },
          null,
          2,
        )}\n`,
      );
    } else {
      ctx.stdout.write(
        `Flattened ${formatLocation(r.from)} (${r.layers} layer${r.layers === 1 ? '' : 's'}) -> ${formatLocation(r.to)}\nDigest: ${r.manifest.digest}\nLayer: ${r.layer.digest} (${formatBytes(r.layer.size)}, ${formatBytes(r.size)} uncompressed)\n`,
      );
    }
    return 0;
  },
};
