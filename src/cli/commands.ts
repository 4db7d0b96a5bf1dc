// The CLI's commands: each parses its options, calls one library operation and prints
// the result (text for people, --json for programs). No logic of their own.

import { readFile } from 'node:fs/promises';
import { parsePlatform } from '../image/platform.js';
import type { Store } from '../layout/store.js';
import type { CopyImageOptions, CopyImageResult } from '../ops/copy-image.js';
import { Session, type SessionOptions } from '../ops/session.js';
import { familiarName, familiarString, parseNormalizedReference } from '../reference/reference.js';
import type { LayerCompression, ManifestFormat } from '../spec/media-types.js';
import type { ContainerConfig } from '../spec/types.js';
import { formatLocation, type Location, parseLocation } from '../transport/location.js';
import { storeRefName } from '../transport/open.js';
import { type GLOBAL_OPTIONS, type OptionSpec, type Parsed, parse, UsageError } from './args.js';
import { buildCommands } from './build-commands.js';
import { formatTable, help, shortDigest } from './format.js';
import { diffCommand, flattenCommand, layersCommand } from './layers-command.js';
import { formatBytes, ProgressPrinter } from './progress.js';
import { runtimeCommands } from './runtime-commands.js';
import { serveCommand } from './serve-command.js';
import { unpackCommand } from './unpack-command.js';

export interface CommandContext {
  readonly signal: AbortSignal;
  readonly stdin: NodeJS.ReadStream;
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  readonly env: NodeJS.ProcessEnv;
}

export interface Command {
  readonly summary: string;
  readonly usage: string;
  /**
   * The command handles SIGINT/SIGTERM itself (e.g. `run` forwards them to the container):
   * the CLI then installs no handler of its own and never aborts `ctx.signal` on them.
   */
  readonly ownsSignals?: boolean;
  run(argv: readonly string[], ctx: CommandContext): Promise<number>;
}

type Values = Parsed<typeof GLOBAL_OPTIONS>['values'];

function sessionOptions(v: Values): SessionOptions {
  return {
    ...(v.root ? { root: v.root } : {}),
    ...(v['tls-verify'] === 'false' ? { tlsVerify: false } : {}),
  };
}

function printJson(ctx: CommandContext, v: unknown): void {
  ctx.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

const COPY_OPTIONS = {
  all: { type: 'boolean', short: 'a' },
  platform: { type: 'string' },
  'dest-compress': { type: 'string' },
  'dest-compress-level': { type: 'string' },
  format: { type: 'string' },
  jobs: { type: 'string', short: 'j' },
} as const satisfies OptionSpec;

const COPY_DETAIL = `
options:
  -a, --all               copy every platform of an index (default: this machine's platform)
  --platform OS/ARCH[/V]  pick this platform from an index
  --dest-compress KIND    recompress layers: gzip, zstd or none (default: keep bytes as they are)
  --dest-compress-level N  its level: gzip 0-9 (default 6), zstd 1-19 (default 3)
  --format oci|docker     write manifests with these media types (default: keep)
  -j, --jobs N            blobs copied at once (default 4)
  --json                  one JSON object per event, and the result
  -q, --quiet             no progress
  --tls-verify=false      do not verify registry certificates; allow plain HTTP
`;

function copyOptions(
  v: Parsed<typeof COPY_OPTIONS & typeof GLOBAL_OPTIONS>['values'],
  ctx: CommandContext,
): {
  opts: CopyImageOptions;
  printer: ProgressPrinter;
} {
  const comp = v['dest-compress'];
  if (comp !== undefined && !['gzip', 'zstd', 'none'].includes(comp)) {
    throw new UsageError(`--dest-compress takes gzip, zstd or none, not ${JSON.stringify(comp)}`);
  }
  const level = v['dest-compress-level'] === undefined ? undefined : Number(v['dest-compress-level']);
  if (level !== undefined && !Number.isInteger(level)) {
    throw new UsageError(
      `--dest-compress-level takes a whole number, not ${JSON.stringify(v['dest-compress-level'])}`,
    );
  }
  if (level !== undefined && (comp === undefined || comp === 'none')) {
    throw new UsageError('--dest-compress-level needs --dest-compress gzip or zstd');
  }
  const format = v.format;
  if (format !== undefined && format !== 'oci' && format !== 'docker') {
    throw new UsageError(`--format takes oci or docker, not ${JSON.stringify(format)}`);
  }
  const jobs = v.jobs === undefined ? undefined : Number(v.jobs);
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1 || jobs > 64)) {
    throw new UsageError(`--jobs takes a whole number from 1 to 64`);
  }
  let platform: ReturnType<typeof parsePlatform> | undefined;
  try {
    platform = v.platform === undefined ? undefined : parsePlatform(v.platform);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const mode = v.quiet ? 'quiet' : v.json ? 'json' : ctx.stderr.isTTY ? 'tty' : 'plain';
  const printer = new ProgressPrinter(mode, mode === 'json' ? ctx.stdout : ctx.stderr);
  return {
    printer,
    opts: {
      ...sessionOptions(v),
      signal: ctx.signal,
      onEvent: printer.onEvent,
      ...(v.all ? { all: true } : {}),
      ...(platform ? { platform } : {}),
      ...(comp ? { destCompression: comp as LayerCompression } : {}),
      ...(level !== undefined ? { destCompressionLevel: level } : {}),
      ...(format ? { format: format as ManifestFormat } : {}),
      ...(jobs ? { concurrency: jobs } : {}),
    },
  };
}

function printCopyResult(ctx: CommandContext, r: CopyImageResult, json: boolean | undefined): void {
  const summary = {
    from: formatLocation(r.from),
    to: formatLocation(r.to),
    digest: r.descriptor.digest,
    mediaType: r.descriptor.mediaType,
    ref: r.ref ?? null,
    ...r.stats,
  };
  if (json) {
    ctx.stdout.write(`${JSON.stringify({ event: 'result', ...summary })}\n`);
    return;
  }
  const s = r.stats;
  ctx.stdout.write(
    `Copied ${summary.from} -> ${summary.to}\nDigest: ${summary.digest}\nBlobs: ${s.copied} copied, ${s.skipped} already present, ${s.mounted} mounted\n`,
  );
}

function copyCommand(
  summary: string,
  usage: string,
  min: number,
  max: number,
  op: (args: string[], opts: CopyImageOptions) => Promise<CopyImageResult>,
): Command {
  return {
    summary,
    usage,
    async run(argv, ctx) {
      const p = parse(argv, COPY_OPTIONS, { min, max, usage });
      if (p.values.help) return help(ctx, this, COPY_DETAIL);
      const { opts, printer } = copyOptions(p.values, ctx);
      try {
        const r = await op(p.positionals, opts);
        printer.finish();
        printCopyResult(ctx, r, p.values.json);
      } catch (e) {
        printer.finish();
        throw e;
      }
      return 0;
    },
  };
}

/** docker import's `-c` changes: CMD, ENTRYPOINT (JSON or shell form), ENV, WORKDIR, USER. */
function parseChanges(changes: readonly string[]): ContainerConfig {
  const c: { -readonly [K in keyof ContainerConfig]: ContainerConfig[K] } = {};
  const words = (rest: string): string[] => {
    if (rest.startsWith('[')) {
      try {
        const v: unknown = JSON.parse(rest);
        if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
      } catch {}
      throw new UsageError(`bad JSON array in change: ${rest}`);
    }
    return ['/bin/sh', '-c', rest];
  };
  for (const change of changes) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/s.exec(change);
    if (!m) throw new UsageError(`bad change ${JSON.stringify(change)}: want INSTRUCTION ARGS`);
    const [, instr, rest] = m as unknown as [string, string, string];
    switch (instr.toUpperCase()) {
      case 'CMD':
        c.Cmd = words(rest.trim());
        break;
      case 'ENTRYPOINT':
        c.Entrypoint = words(rest.trim());
        break;
      case 'ENV': {
        const kv = rest.trim().includes('=') ? rest.trim() : rest.trim().replace(/\s+/, '=');
        c.Env = [...(c.Env ?? []), kv];
        break;
      }
      case 'WORKDIR':
        c.WorkingDir = rest.trim();
        break;
      case 'USER':
        c.User = rest.trim();
        break;
      default:
        throw new UsageError(
          `unsupported change instruction ${instr}: use CMD, ENTRYPOINT, ENV, WORKDIR or USER`,
        );
    }
  }
  return c;
}

const NO_OPTIONS = {} as const satisfies OptionSpec;

async function withStore<T>(v: Values, fn: (store: Store) => Promise<T>): Promise<T> {
  const session = new Session(sessionOptions(v));
  try {
    return await fn(await session.store());
  } finally {
    await session.close();
  }
}

function splitStoreRef(ref: string): { name: string; tag: string } {
  try {
    const r = parseNormalizedReference(ref);
    return { name: familiarName(r), tag: r.tag ?? (r.digest ? '<none>' : '-') };
  } catch {
    return { name: ref, tag: '-' };
  }
}

function ago(iso: string): string {
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(s)) return '-';
  const units: [number, string][] = [
    [365 * 86400, 'year'],
    [30 * 86400, 'month'],
    [7 * 86400, 'week'],
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
  ];
  for (const [n, u] of units) {
    const k = Math.floor(s / n);
    if (k >= 1) return `${k} ${u}${k > 1 ? 's' : ''} ago`;
  }
  return 'just now';
}

export const COMMANDS: Readonly<Record<string, Command>> = {
  copy: copyCommand(
    'Copy an image between any two locations',
    'stratum copy [OPTIONS] SRC DST',
    2,
    2,
    async ([s, d], o) => (await import('../ops/copy-image.js')).copyImage(s!, d!, o),
  ),
  pull: copyCommand(
    'Pull an image from a registry into the local store',
    'stratum pull [OPTIONS] NAME[:TAG|@DIGEST]',
    1,
    1,
    async ([r], o) => (await import('../ops/copy-image.js')).pull(r!, o),
  ),
  push: copyCommand(
    'Push an image from the local store to a registry',
    'stratum push [OPTIONS] NAME[:TAG] [docker://HOST/REPO[:TAG]]',
    1,
    2,
    async ([s, d], o) => (await import('../ops/copy-image.js')).push(s!, d, o),
  ),

  inspect: {
    summary: 'Show an image: digest, platform, config, layers (no layer is fetched)',
    usage: 'stratum inspect [--raw | --config] [--platform OS/ARCH] LOCATION',
    async run(argv, ctx) {
      const p = parse(
        argv,
        { raw: { type: 'boolean' }, config: { type: 'boolean' }, platform: { type: 'string' } },
        {
          min: 1,
          max: 1,
          usage: this.usage,
        },
      );
      if (p.values.help) return help(ctx, this);
      if (p.values.raw && p.values.config) throw new UsageError('--raw and --config cannot be used together');
      const loc = p.positionals[0]!;
      const opts = {
        ...sessionOptions(p.values),
        signal: ctx.signal,
        ...(p.values.platform ? { platform: parsePlatform(p.values.platform) } : {}),
      };
      if (p.values.raw || p.values.config) {
        const ops = await import('../ops/inspect.js');
        const bytes = p.values.raw ? await ops.inspectRaw(loc, opts) : await ops.inspectConfig(loc, opts);
        ctx.stdout.write(bytes);
        if (ctx.stdout.isTTY) ctx.stdout.write('\n');
        return 0;
      }
      printJson(ctx, await (await import('../ops/inspect.js')).inspect(loc, opts));
      return 0;
    },
  },

  import: {
    summary: 'Make a one-layer image from a root filesystem tarball, as docker import does',
    usage: 'stratum import [-c \'CMD ["sh"]\']... [--platform OS/ARCH] TARBALL NAME[:TAG]',
    async run(argv, ctx) {
      const p = parse(
        argv,
        { change: { type: 'string', short: 'c', multiple: true }, platform: { type: 'string' } },
        {
          min: 2,
          max: 2,
          usage: this.usage,
        },
      );
      if (p.values.help) return help(ctx, this);
      const [tarball, name] = p.positionals as [string, string];
      const loc = parseLocation(name);
      if (loc.transport !== 'store')
        throw new UsageError('import writes to the local store: give NAME[:TAG]');
      const session = new Session(sessionOptions(p.values));
      try {
        const store = await session.store();
        const { importTarball } = await import('../ops/import.js');
        const desc = await importTarball(tarball, store, storeRefName(loc.reference), {
          config: parseChanges(p.values.change ?? []),
          signal: ctx.signal,
          tmpDir: session.tmpDir,
          ...(p.values.platform ? { platform: parsePlatform(p.values.platform) } : {}),
        });
        if (p.values.json) printJson(ctx, { ref: formatLocation(loc), digest: desc.digest });
        else ctx.stdout.write(`Imported ${formatLocation(loc)}\nDigest: ${desc.digest}\n`);
      } finally {
        await session.close();
      }
      return 0;
    },
  },

  images: {
    summary: 'List the images in the local store',
    usage: 'stratum images [--json] [--digests]',
    async run(argv, ctx) {
      const p = parse(argv, { digests: { type: 'boolean' } }, { min: 0, max: 0, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      await withStore(p.values, async (store) => {
        const rows = await store.images();
        if (p.values.json) return printJson(ctx, rows);
        const table = [['REPOSITORY', 'TAG', p.values.digests ? 'DIGEST' : 'ID', 'CREATED', 'SIZE']];
        for (const r of rows) {
          const { name, tag } = splitStoreRef(r.ref);
          const id = p.values.digests ? r.digest : shortDigest(r.digest);
          table.push([name, tag, id, r.created ? ago(r.created) : '-', formatBytes(r.size)]);
        }
        ctx.stdout.write(formatTable(table, new Set(), 3));
      });
      return 0;
    },
  },

  tag: {
    summary: 'Give a store image another name',
    usage: 'stratum tag SOURCE[:TAG] TARGET[:TAG]',
    async run(argv, ctx) {
      const p = parse(argv, NO_OPTIONS, { min: 2, max: 2, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      const [from, to] = p.positionals.map((x) => parseLocation(x)) as [Location, Location];
      if (from.transport !== 'store' || to.transport !== 'store')
        throw new UsageError('tag works on store names: NAME[:TAG]');
      await withStore(p.values, async (store) => {
        const desc = await store.resolve(storeRefName(from.reference));
        await store.tag(desc, storeRefName(to.reference));
        if (p.values.json) printJson(ctx, { ref: storeRefName(to.reference), digest: desc.digest });
      });
      return 0;
    },
  },

  rmi: {
    summary: 'Remove names from the local store (blobs go at the next gc)',
    usage: 'stratum rmi NAME[:TAG]...',
    async run(argv, ctx) {
      const p = parse(argv, NO_OPTIONS, { min: 1, max: 1000, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      await withStore(p.values, async (store) => {
        const removed: { ref: string; digest: string }[] = [];
        for (const name of p.positionals) {
          const loc = parseLocation(name);
          if (loc.transport !== 'store') throw new UsageError(`rmi takes store names, not ${name}`);
          for (const e of await store.rmi(storeRefName(loc.reference))) {
            removed.push({ ref: e.ref ?? name, digest: e.descriptor.digest });
            if (!p.values.json) ctx.stdout.write(`Untagged: ${familiarString(loc.reference)}\n`);
          }
        }
        if (p.values.json) printJson(ctx, removed);
      });
      return 0;
    },
  },

  gc: {
    summary: 'Remove what nothing uses: blobs, extracted layers (snapshots), stale build cache',
    usage: 'stratum gc',
    async run(argv, ctx) {
      const p = parse(argv, NO_OPTIONS, { min: 0, max: 0, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      const { gc } = await import('../ops/gc.js');
      const r = await gc({ ...sessionOptions(p.values), signal: ctx.signal });
      if (p.values.json) {
        printJson(ctx, r);
        return 0;
      }
      ctx.stdout.write(
        `Removed ${r.blobs.removedBlobs.length} blobs, freed ${formatBytes(r.blobs.freedBytes)}\n` +
          `Removed ${r.snapshots.removed} snapshots, freed ${formatBytes(r.snapshots.bytes)}\n` +
          (r.buildCache.removed > 0 ? `Removed ${r.buildCache.removed} build cache entries\n` : ''),
      );
      return 0;
    },
  },

  verify: {
    summary: 'Recheck every blob digest in the store, and that every referenced blob exists',
    usage: 'stratum verify',
    async run(argv, ctx) {
      const p = parse(argv, NO_OPTIONS, { min: 0, max: 0, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      return withStore(p.values, async (store) => {
        const problems = await store.verify({ signal: ctx.signal });
        if (p.values.json) printJson(ctx, { ok: problems.length === 0, problems });
        else if (problems.length === 0) ctx.stdout.write(`Store ${store.root} verified: no problems\n`);
        else for (const q of problems) ctx.stdout.write(`${q.problem}: ${q.digest}: ${q.detail}\n`);
        return problems.length === 0 ? 0 : 1;
      });
    },
  },

  login: {
    summary: 'Log in to a registry (checks the credentials, then stores them like docker)',
    usage: 'stratum login [-u USER] [-p PASSWORD | --password-stdin] HOST[:PORT]',
    async run(argv, ctx) {
      const p = parse(
        argv,
        {
          username: { type: 'string', short: 'u' },
          password: { type: 'string', short: 'p' },
          'password-stdin': { type: 'boolean' },
        },
        { min: 1, max: 1, usage: this.usage },
      );
      if (p.values.help) return help(ctx, this);
      const username = p.values.username ?? ctx.env.STRATUM_USERNAME;
      if (!username) throw new UsageError('give a username with -u USER');
      let password = p.values.password;
      if (p.values['password-stdin']) password = (await readFile('/dev/stdin', 'utf8')).replace(/\r?\n$/, '');
      if (password === undefined)
        throw new UsageError('give a password with -p PASSWORD or --password-stdin');
      const host = p.positionals[0]!;
      const { login } = await import('../registry/credentials.js');
      await login(host, username, password, {
        signal: ctx.signal,
        ...(p.values['tls-verify'] === 'false' ? { client: { tlsVerify: false } } : {}),
      });
      if (p.values.json) printJson(ctx, { registry: host, username, loggedIn: true });
      else ctx.stdout.write(`Login Succeeded (${host})\n`);
      return 0;
    },
  },

  serve: serveCommand,
  unpack: unpackCommand,
  layers: layersCommand,
  diff: diffCommand,
  flatten: flattenCommand,
  ...runtimeCommands,
  ...buildCommands,
  logout: {
    summary: 'Remove stored credentials for a registry',
    usage: 'stratum logout HOST[:PORT]',
    async run(argv, ctx) {
      const p = parse(argv, NO_OPTIONS, { min: 1, max: 1, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      const host = p.positionals[0]!;
      const { logout } = await import('../registry/credentials.js');
      await logout(host, { signal: ctx.signal });
      if (p.values.json) printJson(ctx, { registry: host, loggedIn: false });
      else ctx.stdout.write(`Removed login credentials for ${host}\n`);
      return 0;
    },
  },
};
