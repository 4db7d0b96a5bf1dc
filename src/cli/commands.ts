// The CLI's commands: each parses its options, calls one library operation and prints
// the result (text for people, --json for programs). No logic of their own.

import { readFile } from 'node:fs/promises';
import { StratumError } from '../errors/errors.js';
import { parsePlatform } from '../image/platform.js';
import { type CopyImageOptions, type CopyImageResult, copyImage, pull, push } from '../ops/copy-image.js';
import { inspect, inspectConfig, inspectRaw } from '../ops/inspect.js';
import { Session, type SessionOptions } from '../ops/session.js';
import { login, logout } from '../registry/credentials.js';
import type { LayerCompression, ManifestFormat } from '../spec/media-types.js';
import { formatLocation } from '../transport/location.js';
import { type GLOBAL_OPTIONS, type OptionSpec, type Parsed, parse, UsageError } from './args.js';
import { ProgressPrinter } from './progress.js';

export interface CommandContext {
  readonly signal: AbortSignal;
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  readonly env: NodeJS.ProcessEnv;
}

export interface Command {
  readonly summary: string;
  readonly usage: string;
  run(argv: readonly string[], ctx: CommandContext): Promise<number>;
}

type Values = Parsed<typeof GLOBAL_OPTIONS>['values'];

function sessionOptions(v: Values): SessionOptions {
  return {
    ...(v.root ? { root: v.root } : {}),
    ...(v['tls-verify'] === 'false' ? { tlsVerify: false } : {}),
  };
}

function help(ctx: CommandContext, c: { usage: string; summary: string }, detail = ''): number {
  ctx.stdout.write(`${c.summary}\n\nusage: ${c.usage}\n${detail}`);
  return 0;
}

function printJson(ctx: CommandContext, v: unknown): void {
  ctx.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

const COPY_OPTIONS = {
  all: { type: 'boolean', short: 'a' },
  platform: { type: 'string' },
  'dest-compress': { type: 'string' },
  format: { type: 'string' },
  jobs: { type: 'string', short: 'j' },
} as const satisfies OptionSpec;

const COPY_DETAIL = `
options:
  -a, --all               copy every platform of an index (default: this machine's platform)
  --platform OS/ARCH[/V]  pick this platform from an index
  --dest-compress KIND    recompress layers: gzip, zstd or none (default: keep bytes as they are)
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

const NO_OPTIONS = {} as const satisfies OptionSpec;

export const COMMANDS: Readonly<Record<string, Command>> = {
  copy: copyCommand(
    'Copy an image between any two locations',
    'stratum copy [OPTIONS] SRC DST',
    2,
    2,
    ([s, d], o) => copyImage(s!, d!, o),
  ),
  pull: copyCommand(
    'Pull an image from a registry into the local store',
    'stratum pull [OPTIONS] NAME[:TAG|@DIGEST]',
    1,
    1,
    ([r], o) => pull(r!, o),
  ),
  push: copyCommand(
    'Push an image from the local store to a registry',
    'stratum push [OPTIONS] NAME[:TAG] [docker://HOST/REPO[:TAG]]',
    1,
    2,
    ([s, d], o) => push(s!, d, o),
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
        const bytes = p.values.raw ? await inspectRaw(loc, opts) : await inspectConfig(loc, opts);
        ctx.stdout.write(bytes);
        if (ctx.stdout.isTTY) ctx.stdout.write('\n');
        return 0;
      }
      printJson(ctx, await inspect(loc, opts));
      return 0;
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
      await login(host, username, password, {
        signal: ctx.signal,
        ...(p.values['tls-verify'] === 'false' ? { client: { tlsVerify: false } } : {}),
      });
      if (p.values.json) printJson(ctx, { registry: host, username, loggedIn: true });
      else ctx.stdout.write(`Login Succeeded (${host})\n`);
      return 0;
    },
  },

  logout: {
    summary: 'Remove stored credentials for a registry',
    usage: 'stratum logout HOST[:PORT]',
    async run(argv, ctx) {
      const p = parse(argv, NO_OPTIONS, { min: 1, max: 1, usage: this.usage });
      if (p.values.help) return help(ctx, this);
      const host = p.positionals[0]!;
      await logout(host, { signal: ctx.signal });
      if (p.values.json) printJson(ctx, { registry: host, loggedIn: false });
      else ctx.stdout.write(`Removed login credentials for ${host}\n`);
      return 0;
    },
  },
};

export { Session, StratumError };
