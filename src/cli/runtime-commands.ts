// The container commands: run, create, start, ps, logs, exec, stop, kill, rm, commit, volume. Each parses
// its options and calls src/runtime (through src/ops); no logic of its own.
//
// run and exec stop reading options at the first argument that is not one (the image, or
// the container): what follows is the command, with its own options (`run img sh -c 'x'`).

import { readFile } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { StratumError } from '../errors/errors.js';
import { parsePlatform } from '../image/platform.js';
import type { ContainerOpOptions, RunImageOptions } from '../ops/run.js';
import type { ContainerInfo, Containers } from '../runtime/containers.js';
import type { VolumeSpec } from '../runtime/volumes.js';
import { GLOBAL_OPTIONS, type OptionSpec, type Parsed, parse, UsageError } from './args.js';
import type { Command, CommandContext } from './commands.js';
import { formatTable, help, shortDigest } from './format.js';

type Values = { root?: string | undefined; 'tls-verify'?: string | undefined };

function sessionOptions(v: Values): { root?: string; tlsVerify?: boolean } {
  return {
    ...(v.root ? { root: v.root } : {}),
    ...(v['tls-verify'] === 'false' ? { tlsVerify: false } : {}),
  };
}

// the runtime is loaded only by the commands that use it (every `stratum` run pays for what
// the CLI imports statically)
const ops = () => import('../ops/run.js');

async function withContainers<T>(opts: ContainerOpOptions, fn: (c: Containers) => Promise<T>): Promise<T> {
  return (await ops()).withContainers(opts, fn);
}

function printJson(ctx: CommandContext, v: unknown): void {
  ctx.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/**
 * Split argv at the first positional argument, given which options take a value: options
 * before it, then the positional, then everything after it untouched.
 */
export function splitAtFirstPositional(
  argv: readonly string[],
  options: OptionSpec,
): { options: string[]; first: string | undefined; rest: string[] } {
  const all = { ...GLOBAL_OPTIONS, ...options } as OptionSpec;
  const takesValue = new Set<string>();
  const shortValue = new Set<string>();
  for (const [name, o] of Object.entries(all)) {
    if (o.type === 'string') {
      takesValue.add(name);
      if (o.short) shortValue.add(o.short);
    }
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') return { options: out, first: argv[i + 1], rest: argv.slice(i + 2) };
    if (a.startsWith('--')) {
      out.push(a);
      if (!a.includes('=') && takesValue.has(a.slice(2)) && i + 1 < argv.length)
        out.push(argv[++i] as string);
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      out.push(a);
      // -it, -e K=V, -eK=V: a value option takes the rest of the token, or the next one
      for (let j = 1; j < a.length; j++) {
        if (shortValue.has(a[j] as string)) {
          if (j === a.length - 1 && i + 1 < argv.length) out.push(argv[++i] as string);
          break;
        }
      }
      continue;
    }
    return { options: out, first: a, rest: argv.slice(i + 1) };
  }
  return { options: out, first: undefined, rest: [] };
}

/** Docker's exit codes when the command could not run: 127 not found, 126 not executable, 125 otherwise. */
function startFailureCode(e: StratumError): number {
  if (/not found|no such file or directory/i.test(e.message)) return 127;
  if (/permission denied|exec format error/i.test(e.message)) return 126;
  return 125;
}

function reportStartFailure(ctx: CommandContext, name: string, e: unknown): number {
  if (e instanceof StratumError && (e.code === 'ERR_RUNTIME' || e.code === 'ERR_RUNTIME_MISSING')) {
    ctx.stderr.write(`stratum ${name}: ${e.message} [${e.code}]\n`);
    return e.code === 'ERR_RUNTIME_MISSING' ? 125 : startFailureCode(e);
  }
  throw e;
}

/** This process's own stdin (fd 0) is handed to runc as it is; any other stream is piped. */
function stdinOf(ctx: CommandContext): 'inherit' | NodeJS.ReadStream {
  return (ctx.stdin as { fd?: unknown }).fd === 0 ? 'inherit' : ctx.stdin;
}

function ago(iso: string | undefined): string {
  if (!iso) return '-';
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(s)) return '-';
  const units: [number, string][] = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [n, u] of units) {
    const k = Math.floor(s / n);
    if (k >= 1) return `${k} ${u}${k > 1 ? 's' : ''}`;
  }
  return 'less than a second';
}

/** What `ps` shows in STATUS, as docker words it. */
export function statusText(c: ContainerInfo): string {
  switch (c.state) {
    case 'running':
      return `Up ${ago(c.startedAt)}`;
    case 'paused':
      return `Up ${ago(c.startedAt)} (Paused)`;
    case 'exited':
      return c.exitCode === undefined
        ? c.error
          ? 'Exited (failed to start)'
          : 'Exited (unknown)'
        : `Exited (${c.exitCode}) ${ago(c.finishedAt)} ago`;
    case 'created':
      return 'Created';
    case 'creating':
      return 'Creating';
    case 'dead':
      return 'Dead';
  }
}

const RUN_OPTIONS = {
  rm: { type: 'boolean' },
  detach: { type: 'boolean', short: 'd' },
  interactive: { type: 'boolean', short: 'i' },
  tty: { type: 'boolean', short: 't' },
  name: { type: 'string' },
  env: { type: 'string', short: 'e', multiple: true },
  'env-file': { type: 'string', multiple: true },
  volume: { type: 'string', short: 'v', multiple: true },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
  hostname: { type: 'string' },
  entrypoint: { type: 'string' },
  network: { type: 'string' },
  'read-only': { type: 'boolean' },
  memory: { type: 'string', short: 'm' },
  'pids-limit': { type: 'string' },
  cpus: { type: 'string' },
  runtime: { type: 'string' },
  'security-opt': { type: 'string', multiple: true },
  pull: { type: 'string' },
  platform: { type: 'string' },
} as const satisfies OptionSpec;

const RUN_DETAIL = `
Runs COMMAND (default: the image's Entrypoint + Cmd) in a new container: the image's layers
as shared overlay snapshots, the container's changes in its own upper directory, runc as the
runtime. The image is pulled when the store lacks it. Exit code: the command's (128+n when
killed by signal n); 125 when the container could not be made, 126/127 when the command
cannot run / does not exist.

options:
  --rm                    remove the container when it exits
  -d, --detach            run in the background, print the container id
  -i, --interactive       pass stdin to the container
  -t, --tty               give it a terminal (needs one here)
  --name NAME             the container's name (default stratum-<id>)
  -e, --env K[=V]         set an environment variable (K alone: from this environment)
  --env-file FILE         read K=V lines
  -v, --volume SRC:DST[:ro]  bind a host path (absolute SRC) or a named volume (NAME)
  -w, --workdir DIR       working directory in the container
  -u, --user USER[:GROUP] user (name or number) to run as
  --hostname NAME         the container's hostname (default: the id's first 12 characters)
  --entrypoint CMD        replace the image's Entrypoint ('' clears it)
  --network none|host     no network but loopback (default), or the host's
  --read-only             mount the root filesystem read-only
  -m, --memory SIZE       memory limit (e.g. 32m, 1g; no swap beyond it)
  --pids-limit N          most processes at once
  --cpus N                CPU time, in CPUs (e.g. 0.5)
  --runtime PATH          the OCI runtime (default runc)
  --security-opt seccomp=unconfined  no seccomp filter (default: deny kernel-level syscalls
                          and new namespaces, as docker's default profile)
  --pull missing|never    pull when the image is missing (default), or never
  --platform OS/ARCH[/V]  pick this platform from an index
`;

/** The container a `run` or `create` command line asks for (options validated). */
async function createOptions(
  v: Parsed<typeof RUN_OPTIONS & typeof GLOBAL_OPTIONS>['values'],
  command: readonly string[],
): Promise<RunImageOptions> {
  const network = v.network ?? 'none';
  if (network !== 'none' && network !== 'host') {
    throw new UsageError(`--network takes none or host, not ${JSON.stringify(network)}`);
  }
  if (v.pull !== undefined && v.pull !== 'missing' && v.pull !== 'never') {
    throw new UsageError(`--pull takes missing or never, not ${JSON.stringify(v.pull)}`);
  }
  const { parseEnvFile } = await import('../runtime/containers.js');
  const { parseByteSize } = await import('../runtime/spec.js');
  const { parseVolumeSpec } = await import('../runtime/volumes.js');
  const env: string[] = [];
  for (const f of v['env-file'] ?? []) env.push(...parseEnvFile(await readFile(f, 'utf8')));
  env.push(...(v.env ?? []));
  let volumes: VolumeSpec[];
  let memory: number | undefined;
  let platform: ReturnType<typeof parsePlatform> | undefined;
  try {
    volumes = (v.volume ?? []).map(parseVolumeSpec);
    memory = v.memory === undefined ? undefined : parseByteSize(v.memory);
    platform = v.platform === undefined ? undefined : parsePlatform(v.platform);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const pids = v['pids-limit'] === undefined ? undefined : Number(v['pids-limit']);
  if (pids !== undefined && (!Number.isSafeInteger(pids) || pids < 1)) {
    throw new UsageError('--pids-limit takes a whole number of processes, at least 1');
  }
  let seccomp: 'default' | 'unconfined' = 'default';
  for (const o of v['security-opt'] ?? []) {
    if (o === 'seccomp=unconfined' || o === 'seccomp:unconfined') seccomp = 'unconfined';
    else throw new UsageError(`--security-opt takes seccomp=unconfined, not ${JSON.stringify(o)}`);
  }
  const cpus = v.cpus === undefined ? undefined : Number(v.cpus);
  if (cpus !== undefined && (!Number.isFinite(cpus) || cpus <= 0)) {
    throw new UsageError('--cpus takes a positive number (e.g. 0.5)');
  }
  return {
    ...sessionOptions(v),
    ...(command.length > 0 ? { command } : {}),
    ...(v.entrypoint !== undefined ? { entrypoint: v.entrypoint } : {}),
    ...(v.name !== undefined ? { name: v.name } : {}),
    env,
    ...(v.workdir !== undefined ? { workdir: v.workdir } : {}),
    ...(v.user !== undefined ? { user: v.user } : {}),
    ...(v.hostname !== undefined ? { hostname: v.hostname } : {}),
    network,
    readOnly: v['read-only'] ?? false,
    seccomp,
    volumes,
    resources: {
      ...(memory !== undefined ? { memory } : {}),
      ...(pids !== undefined ? { pids } : {}),
      ...(cpus !== undefined ? { cpus } : {}),
    },
    autoRemove: v.rm ?? false,
    tty: v.tty ?? false,
    ...(v.runtime !== undefined ? { runtime: v.runtime } : {}),
    ...(v.pull !== undefined ? { pull: v.pull as 'missing' | 'never' } : {}),
    ...(platform ? { platform } : {}),
  };
}

const runCommand: Command = {
  summary: 'Run a command in a new container',
  usage: 'stratum run [OPTIONS] IMAGE [COMMAND [ARG...]]',
  ownsSignals: true,
  async run(argv, ctx) {
    const split = splitAtFirstPositional(argv, RUN_OPTIONS);
    const p = parse([...split.options, ...(split.first !== undefined ? [split.first] : [])], RUN_OPTIONS, {
      min: 1,
      max: 1,
      usage: this.usage,
    });
    const v = p.values;
    if (v.help) return help(ctx, this, RUN_DETAIL);
    const image = p.positionals[0] as string;
    if (v.detach && v.tty) throw new UsageError('a detached container cannot have a terminal (-t) here');
    if (v.detach && v.interactive) throw new UsageError('a detached container cannot read stdin (-i)');
    const create = await createOptions(v, split.rest);
    const stdin = !v.interactive ? 'ignore' : stdinOf(ctx);
    const { runImage } = await ops();
    // this command owns SIGINT/SIGTERM: until the container exists they cancel its creation
    // (which cleans up); after that, start() forwards them to the container
    const creating = new AbortController();
    let created = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (!created) creating.abort(new StratumError('ERR_ABORTED', `cancelled by ${sig}`));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const onAbort = () => creating.abort(ctx.signal.reason);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const r = await runImage(image, {
        ...create,
        detach: v.detach ?? false,
        stdin,
        stdout: ctx.stdout,
        stderr: ctx.stderr,
        signal: creating.signal,
        forwardSignals: true,
        onCreated: () => {
          created = true;
        },
        onPull: (name) => {
          if (!v.quiet) ctx.stderr.write(`Unable to find image ${name} locally: pulling it\n`);
        },
      });
      if (v.detach) {
        ctx.stdout.write(v.json ? `${JSON.stringify({ id: r.id, name: r.container.name })}\n` : `${r.id}\n`);
        return 0;
      }
      return r.exitCode ?? 0;
    } catch (e) {
      return reportStartFailure(ctx, 'run', e);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      ctx.signal.removeEventListener('abort', onAbort);
    }
  },
};

const createCommand: Command = {
  summary: 'Create a container from an image without starting it',
  usage: 'stratum create [OPTIONS] IMAGE [COMMAND [ARG...]]',
  async run(argv, ctx) {
    const split = splitAtFirstPositional(argv, RUN_OPTIONS);
    const p = parse([...split.options, ...(split.first !== undefined ? [split.first] : [])], RUN_OPTIONS, {
      min: 1,
      max: 1,
      usage: this.usage,
    });
    const v = p.values;
    if (v.help)
      return help(
        ctx,
        this,
        '\nTakes the options of `stratum run` (but -d, which `start` decides); start it with `stratum start [-a] NAME`.\n',
      );
    if (v.detach)
      throw new UsageError(
        'create does not start the container: start it with `stratum start`, attached (-a) or not',
      );
    const { createContainer } = await ops();
    const r = await createContainer(p.positionals[0] as string, {
      ...(await createOptions(v, split.rest)),
      signal: ctx.signal,
      onPull: (name) => {
        if (!v.quiet) ctx.stderr.write(`Unable to find image ${name} locally: pulling it\n`);
      },
    });
    ctx.stdout.write(v.json ? `${JSON.stringify({ id: r.id, name: r.name })}\n` : `${r.id}\n`);
    return 0;
  },
};

const startCommand: Command = {
  summary: 'Start a created or exited container (in the background, or attached with -a)',
  usage: 'stratum start [-a] [-i] CONTAINER',
  ownsSignals: true,
  async run(argv, ctx) {
    const p = parse(
      argv,
      { attach: { type: 'boolean', short: 'a' }, interactive: { type: 'boolean', short: 'i' } },
      { min: 1, max: 1, usage: this.usage },
    );
    const v = p.values;
    if (v.help) return help(ctx, this);
    if (v.interactive && !v.attach) throw new UsageError('-i needs -a: only an attached start reads stdin');
    const { startContainer } = await ops();
    try {
      const r = await startContainer(p.positionals[0] as string, {
        ...sessionOptions(v),
        attach: v.attach ?? false,
        stdin: v.interactive ? stdinOf(ctx) : 'ignore',
        stdout: ctx.stdout,
        stderr: ctx.stderr,
        forwardSignals: true,
      });
      if (!v.attach) {
        ctx.stdout.write(
          v.json ? `${JSON.stringify({ id: r.id, name: r.container.name })}\n` : `${r.container.name}\n`,
        );
        return 0;
      }
      return r.exitCode ?? 0;
    } catch (e) {
      return reportStartFailure(ctx, 'start', e);
    }
  },
};

const psCommand: Command = {
  summary: 'List containers',
  usage: 'stratum ps [-a] [-q] [--no-trunc] [--json]',
  async run(argv, ctx) {
    const p = parse(
      argv,
      { all: { type: 'boolean', short: 'a' }, 'no-trunc': { type: 'boolean' } },
      { min: 0, max: 0, usage: this.usage },
    );
    const v = p.values;
    if (v.help)
      return help(
        ctx,
        this,
        '\n  -a, --all    every container, not only running ones\n  -q, --quiet  ids only\n',
      );
    const list = await withContainers(sessionOptions(v), (c) => c.list({ all: v.all ?? false }));
    const { commandLine } = await import('../runtime/commit.js');
    if (v.json) {
      printJson(
        ctx,
        list.map((c) => ({
          id: c.id,
          name: c.name,
          image: c.image,
          command: c.args,
          created: c.created,
          state: c.state,
          status: statusText(c),
          exitCode: c.exitCode ?? null,
          startedAt: c.startedAt ?? null,
          finishedAt: c.finishedAt ?? null,
        })),
      );
      return 0;
    }
    if (v.quiet) {
      for (const c of list) ctx.stdout.write(`${v['no-trunc'] ? c.id : c.id.slice(0, 12)}\n`);
      return 0;
    }
    const rows = [['CONTAINER ID', 'IMAGE', 'COMMAND', 'CREATED', 'STATUS', 'NAMES']];
    for (const c of list) {
      let cmd = commandLine(c.args);
      if (!v['no-trunc'] && cmd.length > 22) cmd = `${cmd.slice(0, 21)}…`;
      rows.push([
        v['no-trunc'] ? c.id : c.id.slice(0, 12),
        c.image,
        `"${cmd}"`,
        `${ago(c.created)} ago`,
        statusText(c),
        c.name,
      ]);
    }
    ctx.stdout.write(formatTable(rows, new Set(), 3));
    return 0;
  },
};

const logsCommand: Command = {
  summary: "Print a container's output",
  usage: 'stratum logs [-f] CONTAINER',
  async run(argv, ctx) {
    const p = parse(argv, { follow: { type: 'boolean', short: 'f' } }, { min: 1, max: 1, usage: this.usage });
    if (p.values.help) return help(ctx, this, '\n  -f, --follow  keep printing until the container stops\n');
    await withContainers(sessionOptions(p.values), (c) =>
      c.logs(p.positionals[0] as string, ctx.stdout as Writable, {
        follow: p.values.follow ?? false,
        signal: ctx.signal,
      }),
    );
    return 0;
  },
};

const EXEC_OPTIONS = {
  interactive: { type: 'boolean', short: 'i' },
  tty: { type: 'boolean', short: 't' },
  env: { type: 'string', short: 'e', multiple: true },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
} as const satisfies OptionSpec;

const execCommand: Command = {
  summary: 'Run a command in a running container',
  usage: 'stratum exec [-i] [-t] [-e K=V] [-w DIR] [-u USER[:GROUP]] CONTAINER COMMAND [ARG...]',
  ownsSignals: true,
  async run(argv, ctx) {
    const split = splitAtFirstPositional(argv, EXEC_OPTIONS);
    const p = parse([...split.options, ...(split.first !== undefined ? [split.first] : [])], EXEC_OPTIONS, {
      min: 1,
      max: 1,
      usage: this.usage,
    });
    const v = p.values;
    if (v.help) {
      return help(
        ctx,
        this,
        '\n  -i  pass stdin\n  -t  a terminal\n  -e K[=V]  environment\n  -w DIR  working directory\n  -u USER[:GROUP]  user\n',
      );
    }
    if (split.rest.length === 0) throw new UsageError(`missing the command to run\nusage: ${this.usage}`);
    const stdin = !v.interactive ? 'ignore' : stdinOf(ctx);
    try {
      const r = await withContainers(sessionOptions(v), (c) =>
        c.exec(p.positionals[0] as string, {
          args: split.rest,
          ...(v.env ? { env: v.env } : {}),
          ...(v.workdir ? { cwd: v.workdir } : {}),
          ...(v.user ? { user: v.user } : {}),
          tty: v.tty ?? false,
          stdin,
          stdout: ctx.stdout,
          stderr: ctx.stderr,
          signal: ctx.signal,
          forwardSignals: true,
        }),
      );
      return r.exitCode;
    } catch (e) {
      if (e instanceof StratumError && e.code === 'ERR_RUNTIME') {
        ctx.stderr.write(`stratum exec: ${e.message} [${e.code}]\n`);
        return startFailureCode(e);
      }
      throw e;
    }
  },
};

const stopCommand: Command = {
  summary: 'Stop running containers (TERM, then KILL after a grace period)',
  usage: 'stratum stop [-t SECONDS] CONTAINER...',
  async run(argv, ctx) {
    const p = parse(argv, { time: { type: 'string', short: 't' } }, { min: 1, max: 1000, usage: this.usage });
    if (p.values.help)
      return help(ctx, this, '\n  -t, --time SECONDS  grace period before KILL (default 10)\n');
    const t = p.values.time === undefined ? 10 : Number(p.values.time);
    if (!Number.isFinite(t) || t < 0) throw new UsageError('-t takes a number of seconds');
    await withContainers(sessionOptions(p.values), async (c) => {
      for (const ref of p.positionals) {
        await c.stop(ref, { timeoutSeconds: t });
        if (!p.values.quiet) ctx.stdout.write(`${ref}\n`);
      }
    });
    return 0;
  },
};

const killCommand: Command = {
  summary: 'Send a signal to running containers (default KILL)',
  usage: 'stratum kill [-s SIGNAL] CONTAINER...',
  async run(argv, ctx) {
    const p = parse(
      argv,
      { signal: { type: 'string', short: 's' } },
      { min: 1, max: 1000, usage: this.usage },
    );
    if (p.values.help) return help(ctx, this, '\n  -s, --signal SIG  a name (TERM, SIGHUP) or a number\n');
    await withContainers(sessionOptions(p.values), async (c) => {
      for (const ref of p.positionals) {
        await c.kill(ref, p.values.signal ?? 'KILL');
        if (!p.values.quiet) ctx.stdout.write(`${ref}\n`);
      }
    });
    return 0;
  },
};

const rmCommand: Command = {
  summary: 'Remove containers',
  usage: 'stratum rm [-f] CONTAINER...',
  async run(argv, ctx) {
    const p = parse(
      argv,
      { force: { type: 'boolean', short: 'f' } },
      { min: 1, max: 1000, usage: this.usage },
    );
    if (p.values.help)
      return help(ctx, this, '\n  -f, --force  kill it first if it runs; clean up whatever a crash left\n');
    let failed = 0;
    await withContainers(sessionOptions(p.values), async (c) => {
      for (const ref of p.positionals) {
        try {
          await c.remove(ref, { force: p.values.force ?? false });
          if (!p.values.quiet) ctx.stdout.write(`${ref}\n`);
        } catch (e) {
          if (p.positionals.length === 1) throw e;
          failed++;
          ctx.stderr.write(`stratum rm: ${ref}: ${(e as Error).message}\n`);
        }
      }
      await c.sweep().catch(() => {});
    });
    return failed > 0 ? 1 : 0;
  },
};

const commitCommand: Command = {
  summary: "Make an image from a container's changes",
  usage: 'stratum commit [-m MESSAGE] [-a AUTHOR] [--no-pause] CONTAINER [NAME[:TAG]]',
  async run(argv, ctx) {
    const p = parse(
      argv,
      {
        message: { type: 'string', short: 'm' },
        author: { type: 'string', short: 'a' },
        'no-pause': { type: 'boolean' },
      },
      { min: 1, max: 2, usage: this.usage },
    );
    const v = p.values;
    if (v.help) {
      return help(
        ctx,
        this,
        '\n  -m, --message TEXT  the history comment\n  -a, --author NAME   the image author\n  --no-pause          do not pause a running container while reading its changes\n',
      );
    }
    const [container, name] = p.positionals as [string, string | undefined];
    const { commit } = await ops();
    const r = await commit(container, name, {
      ...sessionOptions(v),
      ...(v.message !== undefined ? { comment: v.message } : {}),
      ...(v.author !== undefined ? { author: v.author } : {}),
      pause: !v['no-pause'],
      signal: ctx.signal,
    });
    if (v.json)
      printJson(ctx, { ref: r.ref ?? null, digest: r.manifest.digest, layer: r.layer, diffId: r.diffId });
    else ctx.stdout.write(`sha256:${shortDigest(r.manifest.digest)}${r.ref ? ` ${r.ref}` : ''}\n`);
    return 0;
  },
};

const volumeCommand: Command = {
  summary: 'Manage named volumes: ls, create NAME, rm NAME',
  usage: 'stratum volume ls | create NAME... | rm NAME...',
  async run(argv, ctx) {
    const p = parse(argv, {}, { min: 1, max: 1000, usage: this.usage });
    if (p.values.help) return help(ctx, this, '\nNamed volumes live in <store>/volumes/NAME/_data.\n');
    const [sub, ...names] = p.positionals as [string, ...string[]];
    return withContainers(sessionOptions(p.values), async (c) => {
      switch (sub) {
        case 'ls':
        case 'list': {
          const list = await c.volumes.list();
          if (p.values.json) printJson(ctx, list);
          else
            ctx.stdout.write(
              formatTable([['NAME', 'PATH'], ...list.map((x) => [x.name, x.path])], new Set(), 3),
            );
          return 0;
        }
        case 'create':
          if (names.length === 0) throw new UsageError(`volume create needs a NAME\nusage: ${this.usage}`);
          for (const n of names) ctx.stdout.write(`${(await c.volumes.create(n)).name}\n`);
          return 0;
        case 'rm':
        case 'remove':
          if (names.length === 0) throw new UsageError(`volume rm needs a NAME\nusage: ${this.usage}`);
          for (const n of names) {
            await c.removeVolume(n);
            ctx.stdout.write(`${n}\n`);
          }
          return 0;
        default:
          throw new UsageError(`unknown volume command ${JSON.stringify(sub)}\nusage: ${this.usage}`);
      }
    });
  },
};

export const runtimeCommands: Readonly<Record<string, Command>> = {
  run: runCommand,
  create: createCommand,
  start: startCommand,
  ps: psCommand,
  logs: logsCommand,
  exec: execCommand,
  stop: stopCommand,
  kill: killCommand,
  rm: rmCommand,
  commit: commitCommand,
  volume: volumeCommand,
};
