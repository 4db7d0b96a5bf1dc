// runProcess: one process in a fresh container over an already-mounted root, then the
// container is gone. This is what a build's RUN step needs: no store, no state kept.
//
// A bundle directory (config.json only; root.path points at the given rootfs) is made under
// the runtime root's sibling `bundles/`, named `proc-<pid>-<random>` like the container, so
// that a later cleanup can tell an abandoned one (its pid is dead) from a live one. runc runs
// in the foreground without a terminal: it hands its own stdio to the container process, so
// the pipes given here carry the process's output directly, and runc exits with the
// process's status (128+n for a process killed by signal n).
//
// On abort: `runc kill <id> KILL` until runc exits (a kill before the container exists
// fails, and is retried), then `runc delete --force`; the promise rejects with ERR_ABORTED.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveUserInRootfs } from '../bundle/user.js';
import { abortError, StratumError } from '../errors/errors.js';
import { pidInName, processAlive } from '../layout/liveness.js';
import { removeCgroups } from './cgroups.js';
import { DEFAULT_RUNTIME_ROOT, Runtime } from './runc.js';
import { containerSpec, type Resources, serializeSpec } from './spec.js';

export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface ProcessRunOptions {
  /** An already-mounted root (e.g. an overlay merged dir); used as-is. */
  readonly rootfs: string;
  readonly args: readonly string[];
  /** K=V; PATH is added (the usual default) when missing. */
  readonly env?: readonly string[];
  /** Default '/'. */
  readonly cwd?: string;
  /** 'uid[:gid]' or a name resolved via the rootfs's /etc/passwd; default root. */
  readonly user?: string;
  readonly hostname?: string;
  /** Default 'none' (a network namespace with only loopback). */
  readonly network?: 'none' | 'host';
  /** Bind mounts. */
  readonly mounts?: readonly { source: string; destination: string; readOnly?: boolean }[];
  readonly stdin?: Readable | 'ignore';
  /** Default: ignored. */
  readonly stdout?: Writable;
  readonly stderr?: Writable;
  /** Path of an OCI runtime, default 'runc' from PATH. */
  readonly runtime?: string;
  /** Abort: the container is killed and removed, and the promise rejects with ERR_ABORTED. */
  readonly signal?: AbortSignal;
  /** runc's state root (`--root`); default /run/stratum/runc. */
  readonly runtimeRoot?: string;
  /** cgroup limits. */
  readonly resources?: Resources;
}

export interface ProcessResult {
  readonly exitCode: number;
  /** The signal's name when the exit code is 128+n for a signal n (as runc reports a killed process). */
  readonly signal?: string;
}

/** Prefix of the ids (and bundle directory names) runProcess makes: `proc-<pid>-<random>`. */
export const PROCESS_ID_PREFIX = 'proc-';

/** The signal name for an exit status 128+n, if n is a signal. */
export function signalOfExitCode(code: number): string | undefined {
  if (code <= 128 || code > 128 + 64) return undefined;
  const n = code - 128;
  return Object.entries(osConstants.signals).find(([, v]) => v === n)?.[0];
}

/** Run one process in a fresh container (own namespaces, default caps, masked paths) and remove the container; resolves with its exit code. */
export async function runProcess(opts: ProcessRunOptions): Promise<ProcessResult> {
  if (opts.signal?.aborted) throw abortError(opts.signal);
  const runtime = await Runtime.open(opts.runtimeRoot ?? DEFAULT_RUNTIME_ROOT, opts.runtime);
  const rootfs = resolve(opts.rootfs);
  const user = await resolveUserInRootfs(rootfs, opts.user ?? '').catch((e: unknown) => {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot run as user ${JSON.stringify(opts.user ?? '')}: ${(e as Error).message}`,
      { cause: e },
    );
  });
  const env = [...(opts.env ?? [])];
  if (!env.some((e) => e.startsWith('PATH='))) env.unshift(DEFAULT_PATH_ENV);
  const id = `${PROCESS_ID_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`;
  const spec = containerSpec({
    rootfs,
    process: {
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      args: opts.args,
      env,
      cwd: opts.cwd ?? '/',
    },
    hostname: opts.hostname ?? 'stratum',
    network: opts.network ?? 'none',
    mounts: opts.mounts ?? [],
    cgroupsPath: `stratum/${id}`,
    ...(opts.resources ? { resources: opts.resources } : {}),
  });
  const bundle = join(dirname(runtime.root), 'bundles', id);
  await mkdir(bundle, { recursive: true, mode: 0o700 });
  try {
    await writeFile(join(bundle, 'config.json'), serializeSpec(spec), { mode: 0o600 });
    const r = await runForeground(runtime, id, bundle, opts);
    return r;
  } finally {
    await runtime.delete(id, { force: true }).catch(() => {});
    await rm(bundle, { recursive: true, force: true });
  }
}

/** `runc run` in the foreground without a terminal; stdio piped as asked. */
async function runForeground(
  runtime: Runtime,
  id: string,
  bundle: string,
  opts: Pick<ProcessRunOptions, 'stdin' | 'stdout' | 'stderr' | 'signal'>,
): Promise<ProcessResult> {
  const stdinMode = opts.stdin && opts.stdin !== 'ignore' ? 'pipe' : 'ignore';
  // runc's own log (why it could not create the container) goes to a file, so that stderr is
  // the process's alone
  const log = join(bundle, 'runtime.log');
  const child = spawn(
    runtime.binary,
    ['--log', log, '--log-format', 'json', ...runtime.args('run', '--bundle', bundle, id)],
    { stdio: [stdinMode, opts.stdout ? 'pipe' : 'ignore', opts.stderr ? 'pipe' : 'ignore'] },
  );
  const drained: Promise<void>[] = [];
  if (child.stdout && opts.stdout) drained.push(forward(child.stdout, opts.stdout));
  if (child.stderr && opts.stderr) drained.push(forward(child.stderr, opts.stderr));
  if (child.stdin && opts.stdin && opts.stdin !== 'ignore') {
    const input = opts.stdin;
    child.stdin.on('error', () => {}); // the process may exit without reading everything
    input.pipe(child.stdin);
    child.once('exit', () => input.unpipe(child.stdin ?? undefined));
  }

  let aborted = false;
  const onAbort = () => {
    aborted = true;
    void (async () => {
      while (child.exitCode === null && child.signalCode === null) {
        await runtime.kill(id, 'KILL').catch(() => {});
        await sleep(100);
      }
    })();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const [code, sig] = await new Promise<[number | null, NodeJS.Signals | null]>((res, rej) => {
      child.once('error', (e) => rej(spawnError(runtime, e)));
      child.once('exit', (c, s) => res([c, s]));
    });
    await Promise.all(drained);
    if (aborted) throw abortError(opts.signal);
    if (code === null) {
      throw new StratumError('ERR_RUNTIME', `${runtime.binary} run was killed by ${sig ?? 'a signal'}`);
    }
    // runc failed before the process ran: its log says so
    const failure = await runtimeFailure(log);
    if (failure !== undefined)
      throw new StratumError('ERR_RUNTIME', `the container did not start: ${failure}`);
    const signal = signalOfExitCode(code);
    return { exitCode: code, ...(signal ? { signal } : {}) };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** The error messages in a runc JSON log (`--log-format json`), or undefined when it has none. */
export async function runtimeFailure(logPath: string): Promise<string | undefined> {
  const text = await readFile(logPath, 'utf8').catch(() => '');
  const msgs: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if ((entry.level === 'error' || entry.level === 'fatal') && entry.msg) msgs.push(entry.msg);
    } catch {
      // a line that is not JSON (a crashed runtime): keep it as it is
      msgs.push(line.trim());
    }
  }
  return msgs.length > 0 ? msgs.slice(-3).join('; ') : undefined;
}

function spawnError(runtime: Runtime, e: Error): StratumError {
  if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
    return new StratumError(
      'ERR_RUNTIME_MISSING',
      `the OCI runtime ${runtime.binary} is missing (install runc with \`apt-get install runc\`)`,
      { cause: e },
    );
  }
  return new StratumError('ERR_RUNTIME', `cannot start ${runtime.binary}: ${e.message}`, { cause: e });
}

/** Copy `from` into `to` (or drop it), without ending `to`; resolves when `from` ends. */
function forward(from: Readable, to: Writable | undefined): Promise<void> {
  return new Promise((res) => {
    from.on('data', (c: Buffer) => {
      if (to && !to.destroyed && !to.writableEnded) {
        if (!to.write(c)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      }
    });
    from.once('end', res);
    from.once('close', res);
    from.once('error', () => res());
  });
}

/**
 * Clean up after runProcess calls whose process died (kill -9) while their container ran:
 * every `proc-<pid>-*` container of a dead pid in the runtime root is killed and deleted,
 * its cgroups swept and its bundle directory removed. Returns the ids it cleaned.
 */
export async function reapProcesses(
  opts: { runtimeRoot?: string; runtime?: string } = {},
): Promise<string[]> {
  const root = opts.runtimeRoot ?? DEFAULT_RUNTIME_ROOT;
  const bundles = join(dirname(root), 'bundles');
  const abandoned = (name: string) => {
    const pid = pidInName(name, PROCESS_ID_PREFIX);
    return pid !== undefined && !processAlive(pid);
  };
  const reaped = new Set<string>();
  const runtime = await Runtime.open(root, opts.runtime);
  for (const c of await runtime.list().catch(() => [])) {
    if (!abandoned(c.id)) continue;
    await runtime.kill(c.id, 'KILL', { all: true }).catch(() => {});
    await runtime.delete(c.id, { force: true }).catch(() => {});
    reaped.add(c.id);
  }
  for (const name of await readdir(bundles).catch(() => [] as string[])) {
    if (!abandoned(name)) continue;
    await removeCgroups(name);
    await rm(join(bundles, name), { recursive: true, force: true });
    reaped.add(name);
  }
  return [...reaped].sort();
}
