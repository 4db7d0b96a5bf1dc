// Containers of a store, run by an OCI runtime (runc): create, start (attached, or detached
// under a monitor process), exec, stop, kill, remove, list, logs.
//
// One container is `<store>/containers/<id>/`:
//   state.json      the record (state.ts), updated atomically under the containers' lock
//   config.json     the runtime spec (spec.ts); root.path is merged/
//   init/           the init layer, the overlay's top lower: etc/hosts, etc/hostname,
//                   etc/resolv.conf (host network: the host's own hosts and resolv.conf)
//   upper/ work/    the overlay's upper and work directories (what `commit` turns into a layer)
//   merged/         the overlay: init/ over the image's snapshots (snapshot/), upper on top
//   container.log   everything the process wrote to stdout and stderr, in order
//   runtime.log     runc's own log (JSON lines), read when it fails
//   pid             runc's pid file: it appears once the process has started
// runc keeps its state under `<store>/runc` and the cgroups at `stratum/<id>`.
//
// Lifecycle. create(): the record (status `creating`, with the creating pid) comes first, so
// that a crash at any later point leaves something `remove --force` finds; then the image's
// layers are prepared as snapshots and held for the container, the overlay mounted and the
// spec written (status `created`). start(): `runc run` in the foreground in this process; a
// detached start runs the same thing in a monitor process (monitor.ts) with stdio on the log
// file. Whoever waits for runc records the exit code, deletes the runc container and unmounts
// the overlay (status `exited`); with autoRemove it removes the container too.
//
// remove --force cleans whatever is there, in any state, even after a kill -9 of stratum:
// runc kill + delete --force, a sweep of the cgroups (cgroups.ts), every mount under the
// container directory (lazily when busy), the snapshot hold, the directory.

import { type ChildProcess, execFile, type StdioOptions, spawn } from 'node:child_process';
import { closeSync, createWriteStream, existsSync, openSync } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  lstat,
  mkdir,
  open,
  readFile,
  rm,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { buildRuntimeConfig } from '../bundle/runtime-config.js';
import { resolveInRoot, resolveUserInRootfs } from '../bundle/user.js';
import type { Digest } from '../digest/digest.js';
import { abortError, StratumError } from '../errors/errors.js';
import type { Image } from '../image/image.js';
import { tempName } from '../internal/fs.js';
import { processAlive } from '../layout/liveness.js';
import { mountOverlay, mountsUnder, unmount } from '../snapshot/overlay.js';
import { type SnapshotProgress, Snapshots } from '../snapshot/snapshots.js';
import type { Descriptor } from '../spec/types.js';
import { CGROUP_PARENT, containerCgroupDirs, removeCgroups } from './cgroups.js';
import { runtimeFailure, signalOfExitCode } from './process.js';
import { findRuntime, Runtime } from './runc.js';
import { containerPath, containerSpec, type Resources, serializeSpec } from './spec.js';
import { CONTAINER_NAME_RE, type ContainerRecord, ContainerRecords, newContainerId } from './state.js';
import { type VolumeSpec, Volumes } from './volumes.js';

export const RUNTIME_STATE_DIR = 'runc';
const LOG = 'container.log';
const RUNTIME_LOG = 'runtime.log';
const PID_FILE = 'pid';
const CONFIG = 'config.json';

/** What `ps` shows: the record's status, made current with the runtime's view. */
export type ContainerStatus = 'creating' | 'created' | 'running' | 'paused' | 'exited' | 'dead';

export interface ContainerInfo extends ContainerRecord {
  readonly state: ContainerStatus;
}

export interface CreateOptions {
  /** The image (its fetcher serves the layers). */
  readonly image: Image;
  /** How the user named the image (recorded, shown by ps). */
  readonly imageName: string;
  /** Replaces the image's Cmd. */
  readonly command?: readonly string[];
  /** Replaces the image's Entrypoint ('' clears it); the image's Cmd is then dropped unless a command is given. */
  readonly entrypoint?: string;
  readonly name?: string;
  /** K=V (set), or K alone (taken from this process's environment when set there). */
  readonly env?: readonly string[];
  readonly workdir?: string;
  /** USER[:GROUP], names or numbers, resolved in the container's /etc/passwd and /etc/group. */
  readonly user?: string;
  /** Default: the first 12 characters of the id (host network: this machine's hostname). */
  readonly hostname?: string;
  readonly network?: 'none' | 'host';
  readonly readOnly?: boolean;
  /** The default seccomp filter (runtime/spec.ts DEFAULT_SECCOMP), or none. Default 'default'. */
  readonly seccomp?: 'default' | 'unconfined';
  readonly volumes?: readonly VolumeSpec[];
  readonly resources?: Resources;
  readonly autoRemove?: boolean;
  readonly tty?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (e: SnapshotProgress) => void;
}

export interface AttachOptions {
  /** 'inherit' hands this process's stdin (fd 0) to the container; a stream is piped. Default none. */
  readonly stdin?: Readable | 'inherit' | 'ignore';
  readonly stdout?: Writable;
  readonly stderr?: Writable;
  /** Abort: the container is killed (the promise still resolves with its exit code). */
  readonly signal?: AbortSignal;
  /**
   * Forward SIGINT, SIGTERM, SIGHUP and SIGQUIT of this process to the container while it
   * runs (a third SIGINT kills it). For a CLI that owns its signals.
   */
  readonly forwardSignals?: boolean;
}

export interface ExecOptions extends AttachOptions {
  readonly args: readonly string[];
  readonly env?: readonly string[];
  readonly cwd?: string;
  readonly user?: string;
  readonly tty?: boolean;
}

export interface ExitResult {
  readonly exitCode: number;
  /** The signal's name when the exit code is 128+n. */
  readonly signal?: string;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function setEnv(env: string[], entry: string): void {
  const eq = entry.indexOf('=');
  const name = eq === -1 ? entry : entry.slice(0, eq);
  const i = env.findIndex((e) => e.startsWith(`${name}=`));
  if (i === -1) env.push(entry);
  else env[i] = entry;
}

/** -e values: K=V as given, K alone from this process's environment (skipped when unset there). */
export function resolveEnvArgs(entries: readonly string[], from: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  for (const e of entries) {
    const eq = e.indexOf('=');
    if (eq === 0 || e === '') {
      throw new StratumError('ERR_INVALID_ARGUMENT', `environment entry ${JSON.stringify(e)} has no name`);
    }
    if (e.includes('\0'))
      throw new StratumError('ERR_INVALID_ARGUMENT', 'an environment entry holds a NUL byte');
    if (eq > 0) out.push(e);
    else if (from[e] !== undefined) out.push(`${e}=${from[e]}`);
  }
  return out;
}

/** Lines of an --env-file: K=V or K, comments (#) and blank lines skipped. */
export function parseEnvFile(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
}

/** Whether this process has a controlling terminal (runc's -t needs one: it opens /dev/tty). */
export function hasControllingTerminal(): boolean {
  try {
    closeSync(openSync('/dev/tty', 'r'));
    return true;
  } catch {
    return false;
  }
}

export class Containers {
  readonly storeRoot: string;
  readonly records: ContainerRecords;
  readonly snapshots: Snapshots;
  readonly volumes: Volumes;
  /** runc's state root. */
  readonly runtimeRoot: string;
  readonly #runtime: string | undefined;

  private constructor(storeRoot: string, snapshots: Snapshots, runtime: string | undefined) {
    this.storeRoot = storeRoot;
    this.records = new ContainerRecords(storeRoot);
    this.snapshots = snapshots;
    this.volumes = new Volumes(storeRoot);
    this.runtimeRoot = join(storeRoot, RUNTIME_STATE_DIR);
    this.#runtime = runtime;
  }

  /** The containers of the store at `storeRoot`; `runtime` picks the OCI runtime for new containers (default runc). */
  static async open(storeRoot: string, opts: { runtime?: string } = {}): Promise<Containers> {
    const snapshots = await Snapshots.open(storeRoot);
    const c = new Containers(storeRoot, snapshots, opts.runtime);
    await mkdir(c.records.dir, { recursive: true, mode: 0o700 });
    await mkdir(c.runtimeRoot, { recursive: true, mode: 0o700 });
    return c;
  }

  dirOf(id: string): string {
    return this.records.dirOf(id);
  }

  /** The overlay root of a container (mounted while it exists and has not exited). */
  rootfsOf(id: string): string {
    return join(this.dirOf(id), 'merged');
  }

  upperOf(id: string): string {
    return join(this.dirOf(id), 'upper');
  }

  logOf(id: string): string {
    return join(this.dirOf(id), LOG);
  }

  #runtimeFor(r: Pick<ContainerRecord, 'runtime'>): Runtime {
    return new Runtime(r.runtime, this.runtimeRoot);
  }

  // ---- create ------------------------------------------------------------------------

  /** Make a container (not started): record, snapshots, overlay, spec. */
  async create(opts: CreateOptions): Promise<ContainerRecord> {
    opts.signal?.throwIfAborted();
    const runtime = await findRuntime(this.#runtime);
    if (opts.name !== undefined && !CONTAINER_NAME_RE.test(opts.name)) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `invalid container name ${JSON.stringify(opts.name.slice(0, 140))}: use letters, digits, '_', '.' or '-', starting with a letter or digit`,
      );
    }
    const network = opts.network ?? 'none';
    if (network !== 'none' && network !== 'host') {
      throw new StratumError('ERR_INVALID_ARGUMENT', `network ${JSON.stringify(network)}: use none or host`);
    }
    if (opts.tty && !hasControllingTerminal()) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        'cannot give the container a terminal: this process has no controlling terminal (runc opens /dev/tty for -t); run without -t',
      );
    }
    const image = opts.image;
    const [manifest, config] = await Promise.all([image.manifest(), image.config()]);
    if (config.os !== 'linux') {
      throw new StratumError(
        'ERR_UNSUPPORTED',
        `image ${opts.imageName} is for ${config.os}: only linux images run here`,
      );
    }
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length) {
      throw new StratumError(
        'ERR_INVALID_DOCUMENT',
        `image ${opts.imageName}: the manifest has ${manifest.layers.length} layers but the config lists ${diffIds.length} diff_ids`,
      );
    }
    const c = config.config ?? {};
    const entrypoint =
      opts.entrypoint === undefined
        ? [...(c.Entrypoint ?? [])]
        : opts.entrypoint === ''
          ? []
          : [opts.entrypoint];
    const cmd =
      opts.command && opts.command.length > 0
        ? [...opts.command]
        : opts.entrypoint === undefined
          ? [...(c.Cmd ?? [])]
          : [];
    if (entrypoint.length + cmd.length === 0) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `no command to run: image ${opts.imageName} has no Entrypoint or Cmd; give one after the image name`,
      );
    }
    const env = resolveEnvArgs(opts.env ?? []);
    const id = newContainerId();
    // the image's VOLUME paths that no -v covers get a volume of their own, as docker does
    const given = opts.volumes ?? [];
    const anonymous: VolumeSpec[] = [];
    for (const path of Object.keys(c.Volumes ?? {}).sort()) {
      const destination = containerPath(path, `image ${opts.imageName}: volume`);
      if (
        given.some((v) => v.destination === destination) ||
        anonymous.some((v) => v.destination === destination)
      )
        continue;
      const source = `anon-${id.slice(0, 12)}-${anonymous.length}`;
      anonymous.push({ type: 'volume', source, destination, readOnly: false });
    }
    const volumes = [...given, ...anonymous];
    const hostname = opts.hostname ?? (network === 'host' ? osHostname() : id.slice(0, 12));
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(hostname)) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `invalid hostname ${JSON.stringify(hostname.slice(0, 80))}`,
      );
    }
    const record: ContainerRecord = {
      version: 1,
      id,
      name: opts.name ?? `stratum-${id.slice(0, 12)}`,
      image: opts.imageName,
      manifest: image.descriptor,
      created: new Date().toISOString(),
      args: [...entrypoint, ...cmd],
      env: [],
      cwd: '/',
      user: { uid: 0, gid: 0, additionalGids: [] },
      hostname,
      network,
      tty: opts.tty ?? false,
      readOnly: opts.readOnly ?? false,
      volumes,
      ...(anonymous.length > 0 ? { anonymousVolumes: anonymous.map((v) => v.source) } : {}),
      resources: opts.resources ?? {},
      chainIds: [],
      stopSignal: c.StopSignal || 'SIGTERM',
      autoRemove: opts.autoRemove ?? false,
      runtime,
      status: 'creating',
      creatorPid: process.pid,
      cgroups: await containerCgroupDirs(id),
    };
    await this.records.create(record);
    const dir = this.dirOf(id);
    try {
      const chain = await this.snapshots.prepare(
        manifest.layers.map((descriptor, i) => ({ descriptor, diffId: diffIds[i] as Digest })),
        image.fetcher,
        {
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
        },
      );
      await this.snapshots.hold(id, chain.chainIds);
      for (const d of ['upper', 'work', 'merged', 'init']) await mkdir(join(dir, d), { mode: 0o755 });
      await this.#writeInitLayer(join(dir, 'init'), hostname, network, chain.lowers);
      opts.signal?.throwIfAborted();
      await mountOverlay({
        lowers: [join(dir, 'init'), ...chain.lowers],
        upper: join(dir, 'upper'),
        work: join(dir, 'work'),
        target: join(dir, 'merged'),
      });
      const merged = join(dir, 'merged');
      const userSpec = opts.user ?? c.User ?? '';
      const execUser = await resolveUserInRootfs(merged, userSpec).catch((e: unknown) => {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `cannot run as user ${JSON.stringify(userSpec)}: ${(e as Error).message.replace(/^image config: User "[^"]*": /, '')}`,
          { cause: e },
        );
      });
      // the image's Env, PATH and HOME the way bundle/runtime-config.ts resolves them
      const base = buildRuntimeConfig(
        { ...config, config: { ...c, Entrypoint: entrypoint, Cmd: cmd } },
        execUser,
      );
      const processEnv = base.process.env.filter(
        (e) => record.tty || e !== 'TERM=xterm' || (c.Env ?? []).some((x) => x.startsWith('TERM=')),
      );
      setEnv(processEnv, `HOSTNAME=${hostname}`);
      for (const e of env) setEnv(processEnv, e);
      // an old image's relative WorkingDir is taken from the root, as docker does
      const imageCwd = c.WorkingDir
        ? c.WorkingDir.startsWith('/')
          ? c.WorkingDir
          : `/${c.WorkingDir}`
        : '/';
      const cwd = opts.workdir || imageCwd;
      const mounts: { source: string; destination: string; readOnly?: boolean }[] = [];
      for (const v of volumes) {
        const source = v.type === 'volume' ? (await this.volumes.create(v.source)).path : v.source;
        if (v.type === 'bind') await mkdir(source, { recursive: true });
        // a new anonymous volume starts with what the image has there (owner and mode too)
        if (anonymous.includes(v)) await seedVolume(merged, v.destination, source);
        mounts.push({ source, destination: v.destination, readOnly: v.readOnly });
      }
      const user = { uid: execUser.uid, gid: execUser.gid, additionalGids: [...execUser.additionalGids] };
      const spec = containerSpec({
        rootfs: merged,
        readonlyRootfs: record.readOnly,
        process: { terminal: record.tty, user, args: record.args, env: processEnv, cwd },
        hostname,
        network,
        mounts,
        resources: record.resources,
        seccomp: opts.seccomp ?? 'default',
        cgroupsPath: `${CGROUP_PARENT}/${id}`,
        annotations: {
          'org.opencontainers.image.ref.name': opts.imageName,
          'io.stratum.container.name': record.name,
        },
      });
      await writeFile(join(dir, CONFIG), serializeSpec(spec), { mode: 0o600 });
      await writeFile(join(dir, LOG), '', { mode: 0o600 });
      const created = await this.records.update(id, (r) => ({
        ...r,
        env: processEnv,
        cwd: spec.process.cwd,
        user,
        chainIds: chain.chainIds,
        status: 'created',
      }));
      if (!created)
        throw new StratumError(
          'ERR_NOT_FOUND',
          `container ${id.slice(0, 12)} was removed while it was created`,
        );
      return created;
    } catch (e) {
      await this.#destroy(id)
        .then(() => this.records.remove(id))
        .then(() => this.#dropAnonymousVolumes(record))
        .catch(() => {});
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw e;
    }
  }

  async #writeInitLayer(
    init: string,
    hostname: string,
    network: 'none' | 'host',
    lowersTopFirst: readonly string[],
  ): Promise<void> {
    const etc = join(init, 'etc');
    await mkdir(etc, { mode: 0o755 });
    let etcTimes: { atime: Date; mtime: Date } | undefined;
    // the init layer's etc/ is the one the overlay shows (and copies up): give it the image's
    // owner, mode and time, so that a commit does not change them
    for (const lower of lowersTopFirst) {
      const st = await lstat(join(lower, 'etc')).catch(() => undefined);
      if (!st) continue;
      if (st.isDirectory()) {
        await chown(etc, st.uid, st.gid);
        await chmod(etc, st.mode & 0o7777);
        etcTimes = st;
      }
      break;
    }
    await writeFile(join(etc, 'hostname'), `${hostname}\n`, { mode: 0o644 });
    if (network === 'host') {
      await copyFile('/etc/hosts', join(etc, 'hosts')).catch(() =>
        writeFile(join(etc, 'hosts'), '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'),
      );
      await copyFile('/etc/resolv.conf', join(etc, 'resolv.conf')).catch(() =>
        writeFile(join(etc, 'resolv.conf'), ''),
      );
    } else {
      await writeFile(
        join(etc, 'hosts'),
        `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t${hostname}\n`,
        { mode: 0o644 },
      );
      await writeFile(join(etc, 'resolv.conf'), '# no network (--network none)\n', { mode: 0o644 });
    }
    if (etcTimes) await utimes(etc, etcTimes.atime, etcTimes.mtime);
  }

  // ---- start --------------------------------------------------------------------------

  /** Spawn `runc run` for a created container; the caller says where stdio goes. */
  async #spawnRun(r: ContainerRecord, stdio: StdioOptions, detached: boolean): Promise<ChildProcess> {
    const dir = this.dirOf(r.id);
    const rt = this.#runtimeFor(r);
    const child = spawn(
      rt.binary,
      [
        '--log',
        join(dir, RUNTIME_LOG),
        '--log-format',
        'json',
        ...rt.args('run', '--bundle', dir, '--pid-file', join(dir, PID_FILE), r.id),
      ],
      { stdio, detached, cwd: dir },
    );
    await new Promise<void>((res, rej) => {
      child.once('spawn', res);
      child.once('error', (e) =>
        rej(
          new StratumError('ERR_RUNTIME_MISSING', `cannot start the OCI runtime ${rt.binary}: ${e.message}`, {
            cause: e,
          }),
        ),
      );
    });
    return child;
  }

  /** Wait until runc wrote its pid file (the process started) or exited; true when started. */
  #waitStarted(id: string, child: ChildProcess): Promise<boolean> {
    return this.#waitStartedAt(join(this.dirOf(id), PID_FILE), child);
  }

  async #waitStartedAt(pidFile: string, child: ChildProcess): Promise<boolean> {
    for (;;) {
      if (existsSync(pidFile)) return true;
      if (child.exitCode !== null || child.signalCode !== null) return existsSync(pidFile);
      await sleep(5);
    }
  }

  /**
   * A container that can be started: a created one as it is; an exited one made ready again
   * — its overlay mounted anew over the same upper directory, so it starts with its changes,
   * as docker restarts a stopped container. Claimed first (status `creating` by this process),
   * so two starts cannot both mount it, and a crash meanwhile leaves a `dead` container that
   * `rm` cleans.
   */
  async #startable(ref: string): Promise<ContainerRecord> {
    const found = await this.records.find(ref);
    const info = await this.inspect(found.id);
    if (info.state === 'created') return found;
    if (info.state !== 'exited') {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `container ${info.name} is ${info.state}: only a created or exited container can be started`,
      );
    }
    const claimed = await this.records.update(found.id, (r) => {
      if (r.status !== 'exited' && r.status !== 'running') return undefined;
      const { exitCode: _e, finishedAt: _f, startedAt: _s, error: _x, monitorPid: _m, ...rest } = r;
      return { ...rest, status: 'creating', creatorPid: process.pid };
    });
    if (claimed?.status !== 'creating' || claimed.creatorPid !== process.pid) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `container ${info.name} changed while it was started; try again`,
      );
    }
    const dir = this.dirOf(found.id);
    await this.#runtimeFor(claimed)
      .delete(found.id, { force: true })
      .catch(() => {});
    await this.#unmountAll(found.id);
    const chain = await this.snapshots.chainOf(claimed.chainIds);
    await mountOverlay({
      lowers: [join(dir, 'init'), ...chain.lowers],
      upper: join(dir, 'upper'),
      work: join(dir, 'work'),
      target: join(dir, 'merged'),
    });
    const ready = await this.records.update(found.id, (r) => ({ ...r, status: 'created' }));
    if (!ready)
      throw new StratumError('ERR_NOT_FOUND', `container ${info.name} was removed while it was started`);
    return ready;
  }

  async #markStarted(id: string, monitorPid: number): Promise<void> {
    await this.records.update(id, (r) => ({
      ...r,
      status: 'running',
      monitorPid,
      startedAt: new Date().toISOString(),
    }));
  }

  /**
   * Start a created container attached to this process: stdout and stderr go to the given
   * streams and to the container's log; resolves with the exit code once the process is gone
   * (the container is then `exited`, or removed with autoRemove).
   */
  async start(ref: string, io: AttachOptions = {}): Promise<ExitResult> {
    const r = await this.#startable(ref);
    const stdinMode =
      io.stdin === undefined || io.stdin === 'ignore'
        ? 'ignore'
        : io.stdin === 'inherit'
          ? 'inherit'
          : 'pipe';
    // without a terminal, runc gets its own session: a Ctrl-C at the terminal reaches only us,
    // and we forward it once. With one, runc must stay in the terminal's foreground group.
    const child = await this.#spawnRun(r, [stdinMode, 'pipe', 'pipe'], !r.tty);
    const log = createWriteStream(this.logOf(r.id), { flags: 'a' });
    // until the process has started, only runc writes here (its complaint, which the error
    // repeats): hold those bytes back, and drop them if it never starts
    const gate = new Gate();
    const drained = [tee(child.stdout, io.stdout, log, gate), tee(child.stderr, io.stderr, log, gate)];
    if (child.stdin && io.stdin && typeof io.stdin !== 'string') {
      const input = io.stdin;
      child.stdin.on('error', () => {});
      input.pipe(child.stdin);
      child.once('exit', () => input.unpipe(child.stdin ?? undefined));
    }
    const rt = this.#runtimeFor(r);
    const killLoop = () => {
      void (async () => {
        while (child.exitCode === null && child.signalCode === null) {
          await rt.kill(r.id, 'KILL', { all: true }).catch(() => {});
          await sleep(100);
        }
      })();
    };
    io.signal?.addEventListener('abort', killLoop, { once: true });
    let interrupts = 0;
    const forward = (sig: NodeJS.Signals) => {
      if (sig === 'SIGINT' && ++interrupts >= 3) return killLoop();
      if (child.exitCode === null) child.kill(sig);
    };
    const forwarded: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
    if (io.forwardSignals) for (const s of forwarded) process.on(s, forward);
    try {
      const exited = exitOf(child);
      const started = await this.#waitStarted(r.id, child);
      if (started) await this.#markStarted(r.id, process.pid);
      if (started) gate.open();
      const [code, sig] = await exited;
      if (!started) gate.drop();
      await Promise.all(drained);
      await new Promise<void>((res) => log.end(res));
      return await this.#finishRun(r.id, started, code, sig);
    } finally {
      io.signal?.removeEventListener('abort', killLoop);
      if (io.forwardSignals) for (const s of forwarded) process.off(s, forward);
    }
  }

  /** After runc run exits: record the exit (or the failure to start), clean up, autoRemove. */
  async #finishRun(
    id: string,
    started: boolean,
    code: number | null,
    sig: NodeJS.Signals | null,
  ): Promise<ExitResult> {
    const failure = started ? undefined : await runtimeFailure(join(this.dirOf(id), RUNTIME_LOG));
    const exitCode = code ?? 128 + 9;
    const r = await this.records.update(id, (rec) => ({
      ...rec,
      status: 'exited',
      finishedAt: new Date().toISOString(),
      ...(started
        ? { exitCode }
        : { error: failure ?? `${rec.runtime} exited with ${code ?? sig} before the process started` }),
    }));
    await this.#stopped(id, r);
    if (!started) {
      throw new StratumError(
        'ERR_RUNTIME',
        `the container did not start: ${failure ?? `the OCI runtime exited with ${code ?? sig}`}`,
      );
    }
    const signal = signalOfExitCode(exitCode);
    return { exitCode, ...(signal ? { signal } : {}) };
  }

  /** The process is gone: delete the runtime's container, unmount, and remove when asked. */
  async #stopped(id: string, r: ContainerRecord | undefined): Promise<void> {
    if (!r) return;
    await this.#runtimeFor(r)
      .delete(id, { force: true })
      .catch(() => {});
    await this.#unmountAll(id).catch(() => {});
    if (r.autoRemove) await this.remove(id, { force: true }).catch(() => {});
  }

  /**
   * Start a created container in the background: a monitor process (monitor.ts) runs it with
   * stdio on the container's log and records its exit. Resolves once the process started.
   */
  async startDetached(ref: string): Promise<ContainerRecord> {
    const r = await this.#startable(ref);
    if (r.tty) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        'a detached container cannot have a terminal (-t) here; run it without -t',
      );
    }
    const script = fileURLToPath(new URL('./monitor.js', import.meta.url));
    const child = spawn(process.execPath, [script, this.storeRoot, r.id], {
      detached: true,
      stdio: ['ignore', 'pipe', 'ignore'],
      cwd: '/', // never pin the caller's working directory (a mount) for the container's life
    });
    const line = await new Promise<string>((res) => {
      let buf = '';
      child.stdout?.on('data', (c: Buffer) => {
        buf += c.toString();
        if (buf.includes('\n')) res(buf.slice(0, buf.indexOf('\n')));
      });
      child.once('exit', (code) => res(buf || `monitor exited with ${code}`));
    });
    child.stdout?.destroy();
    child.unref();
    if (line !== 'started') {
      const msg = line.startsWith('error: ') ? line.slice(7) : line;
      throw new StratumError('ERR_RUNTIME', `the container did not start: ${msg}`);
    }
    return (await this.records.get(r.id)) ?? r;
  }

  /**
   * The monitor's side of startDetached (monitor.ts calls it): run the container with stdio on
   * its log file, call `onStarted` (or `onFailed`), record the exit when it comes.
   */
  async monitor(id: string, onStarted: () => void, onFailed: (message: string) => void): Promise<void> {
    const r = await this.records.get(id);
    if (r?.status !== 'created') return onFailed(`container ${id.slice(0, 12)} is not in the created state`);
    const log = await open(this.logOf(id), 'a');
    let child: ChildProcess;
    try {
      child = await this.#spawnRun(r, ['ignore', log.fd, log.fd], false);
    } catch (e) {
      await log.close();
      return onFailed(errorText(e));
    }
    const exited = exitOf(child);
    // the child has its own copy of the descriptor
    await log.close();
    const started = await this.#waitStarted(id, child);
    if (started) {
      await this.#markStarted(id, process.pid);
      onStarted();
    }
    const [code, sig] = await exited;
    try {
      await this.#finishRun(id, started, code, sig);
    } catch (e) {
      if (!started) onFailed(errorText(e));
    }
  }

  /** create + start attached (the `run` of a CLI). */
  async run(opts: CreateOptions & AttachOptions): Promise<ExitResult & { id: string }> {
    const r = await this.create(opts);
    try {
      return { id: r.id, ...(await this.start(r.id, opts)) };
    } catch (e) {
      if (r.autoRemove) await this.remove(r.id, { force: true }).catch(() => {});
      throw e;
    }
  }

  // ---- exec ---------------------------------------------------------------------------

  /** Run another process in a running container (`runc exec`); resolves with its exit code. */
  async exec(ref: string, opts: ExecOptions): Promise<ExitResult> {
    const r = await this.records.find(ref);
    const info = await this.inspect(r.id);
    if (info.state !== 'running') {
      throw new StratumError('ERR_INVALID_ARGUMENT', `container ${r.name} is ${info.state}, not running`);
    }
    if (opts.args.length === 0) throw new StratumError('ERR_INVALID_ARGUMENT', 'exec: no command given');
    if (opts.tty && !hasControllingTerminal()) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        'cannot give the process a terminal: this process has no controlling terminal; run without -t',
      );
    }
    const flags: string[] = [];
    if (opts.tty) flags.push('--tty');
    if (opts.cwd) flags.push('--cwd', opts.cwd);
    for (const e of resolveEnvArgs(opts.env ?? [])) flags.push('--env', e);
    if (opts.user) {
      const u = await resolveUserInRootfs(this.rootfsOf(r.id), opts.user);
      flags.push('--user', `${u.uid}:${u.gid}`);
      for (const g of u.additionalGids) flags.push('--additional-gids', String(g));
    }
    const rt = this.#runtimeFor(r);
    const stdinMode =
      opts.stdin === undefined || opts.stdin === 'ignore'
        ? 'ignore'
        : opts.stdin === 'inherit'
          ? 'inherit'
          : 'pipe';
    const base = tempName(this.dirOf(r.id), '.exec-');
    const logFile = `${base}.log`;
    const pidFile = `${base}.pid`;
    const child = spawn(
      rt.binary,
      [
        '--log',
        logFile,
        '--log-format',
        'json',
        ...rt.args('exec', '--pid-file', pidFile, ...flags, r.id, ...opts.args),
      ],
      { stdio: [stdinMode, 'pipe', 'pipe'], detached: !opts.tty },
    );
    // until the process started only runc writes here: hold that back, drop it on failure
    const gate = new Gate();
    const drained = [
      tee(child.stdout, opts.stdout, undefined, gate),
      tee(child.stderr, opts.stderr, undefined, gate),
    ];
    if (child.stdin && opts.stdin && typeof opts.stdin !== 'string') {
      const input = opts.stdin;
      child.stdin.on('error', () => {});
      input.pipe(child.stdin);
      child.once('exit', () => input.unpipe(child.stdin ?? undefined));
    }
    const forward = (sig: NodeJS.Signals) => {
      if (child.exitCode === null) child.kill(sig);
    };
    const onAbort = () => {
      void (async () => {
        const pid = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        child.kill('SIGKILL');
      })();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const forwarded: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
    if (opts.forwardSignals) for (const s of forwarded) process.on(s, forward);
    try {
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((res, rej) => {
        child.once('error', (e) =>
          rej(new StratumError('ERR_RUNTIME', `cannot run ${rt.binary}: ${e.message}`, { cause: e })),
        );
        child.once('exit', (c, s) => res([c, s]));
      });
      const started = await this.#waitStartedAt(pidFile, child);
      if (started) gate.open();
      const [code, sig] = await exited;
      if (!started) gate.drop();
      await Promise.all(drained);
      if (!started) {
        const failure = await runtimeFailure(logFile);
        throw new StratumError(
          'ERR_RUNTIME',
          `exec in ${r.name} failed: ${failure ?? `${rt.binary} exited with ${code ?? sig}`}`,
        );
      }
      if (code === null) return { exitCode: 128 + 9, signal: sig ?? 'SIGKILL' };
      const signal = signalOfExitCode(code);
      return { exitCode: code, ...(signal ? { signal } : {}) };
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (opts.forwardSignals) for (const s of forwarded) process.off(s, forward);
      await rm(logFile, { force: true });
      await rm(pidFile, { force: true });
    }
  }

  // ---- state --------------------------------------------------------------------------

  #statusOf(r: ContainerRecord, runtimeStatus: string | undefined): ContainerStatus {
    switch (runtimeStatus) {
      case 'running':
        return 'running';
      case 'paused':
        return 'paused';
      case 'created':
      case 'creating':
        return r.status === 'running' ? 'running' : 'created';
      case 'stopped':
        return 'exited';
    }
    if (r.status === 'creating') return processAlive(r.creatorPid) ? 'creating' : 'dead';
    if (r.status === 'running') {
      // the runtime forgot it: it exited, and whoever waited for it died before recording it
      return r.monitorPid !== undefined && processAlive(r.monitorPid) ? 'running' : 'exited';
    }
    return r.status;
  }

  async #runtimeStatuses(records: readonly ContainerRecord[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const binaries = [...new Set(records.map((r) => r.runtime))];
    for (const b of binaries) {
      const list = await new Runtime(b, this.runtimeRoot).list().catch(() => []);
      for (const s of list) out.set(s.id, s.status);
    }
    return out;
  }

  /** The containers (default: running ones only; `all`: every one), oldest first. */
  async list(opts: { all?: boolean } = {}): Promise<ContainerInfo[]> {
    const records = await this.records.all();
    const statuses = await this.#runtimeStatuses(records);
    const out = records.map((r) => ({ ...r, state: this.#statusOf(r, statuses.get(r.id)) }));
    return opts.all ? out : out.filter((c) => c.state === 'running' || c.state === 'paused');
  }

  /** One container, by id, name or unique id prefix. */
  async inspect(ref: string): Promise<ContainerInfo> {
    const r = await this.records.find(ref);
    const s = await this.#runtimeFor(r)
      .state(r.id)
      .catch(() => undefined);
    return { ...r, state: this.#statusOf(r, s?.status) };
  }

  // ---- logs ---------------------------------------------------------------------------

  /** Copy the container's log to `out`; with `follow`, keep copying until it stops running (or the signal aborts). */
  async logs(
    ref: string,
    out: Writable,
    opts: { follow?: boolean; signal?: AbortSignal } = {},
  ): Promise<void> {
    const r = await this.records.find(ref);
    const path = this.logOf(r.id);
    let pos = 0;
    const fh = await open(path, 'r').catch(() => undefined);
    if (!fh) return;
    try {
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead > 0) {
          pos += bytesRead;
          if (!out.write(Buffer.from(buf.subarray(0, bytesRead)))) {
            await new Promise((res) => out.once('drain', res));
          }
          continue;
        }
        if (!opts.follow || opts.signal?.aborted) return;
        const info = await this.inspect(r.id).catch(() => undefined);
        if (
          !info ||
          (info.state !== 'running' &&
            info.state !== 'paused' &&
            info.state !== 'created' &&
            info.state !== 'creating')
        ) {
          // one last read: what it wrote just before it stopped
          const { bytesRead: last } = await fh.read(buf, 0, buf.length, pos);
          if (last > 0) {
            pos += last;
            out.write(Buffer.from(buf.subarray(0, last)));
            continue;
          }
          return;
        }
        await sleep(100);
      }
    } finally {
      await fh.close();
    }
  }

  // ---- stop, kill ---------------------------------------------------------------------

  /** Send a signal (name like TERM / SIGTERM, or a number) to the container's process. */
  async kill(ref: string, signal = 'KILL'): Promise<void> {
    const sig = normalizeSignal(signal);
    const r = await this.records.find(ref);
    const info = await this.inspect(r.id);
    if (info.state !== 'running' && info.state !== 'paused') {
      throw new StratumError('ERR_INVALID_ARGUMENT', `container ${r.name} is ${info.state}, not running`);
    }
    await this.#runtimeFor(r).kill(r.id, sig);
  }

  /**
   * Stop: the image's stop signal (default TERM), then KILL after `timeoutSeconds` (default
   * 10); resolves once the container has exited and was cleaned up.
   */
  async stop(ref: string, opts: { timeoutSeconds?: number } = {}): Promise<ContainerInfo> {
    const r = await this.records.find(ref);
    const rt = this.#runtimeFor(r);
    const running = async () => {
      const s = await rt.state(r.id).catch(() => undefined);
      return s !== undefined && (s.status === 'running' || s.status === 'paused' || s.status === 'created');
    };
    if (await running()) {
      await rt.kill(r.id, normalizeSignal(r.stopSignal)).catch(() => {});
      const deadline = Date.now() + Math.max(0, opts.timeoutSeconds ?? 10) * 1000;
      while ((await running()) && Date.now() < deadline) await sleep(50);
      while (await running()) {
        await rt.kill(r.id, 'KILL', { all: true }).catch(() => {});
        await sleep(50);
      }
    }
    await this.#settle(r.id);
    return this.inspect(r.id).catch(() => ({ ...r, state: 'exited' as const }));
  }

  /** After the process died: let its monitor record the exit; do its work if it is gone. */
  async #settle(id: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const r = await this.records.get(id);
      if (!r || r.status === 'exited') return;
      if (r.monitorPid === undefined || !processAlive(r.monitorPid) || r.monitorPid === process.pid) break;
      await sleep(50);
    }
    const r = await this.records.update(id, (rec) =>
      rec.status === 'exited' ? rec : { ...rec, status: 'exited', finishedAt: new Date().toISOString() },
    );
    if (r?.status === 'exited') await this.#stopped(id, r);
  }

  // ---- remove -------------------------------------------------------------------------

  async #unmountAll(id: string): Promise<void> {
    const dir = this.dirOf(id);
    for (let attempt = 0; attempt < 3; attempt++) {
      const mounts = await mountsUnder(dir);
      if (mounts.length === 0) return;
      for (const m of mounts) {
        await unmount(m).catch(() => unmount(m, { lazy: true }).catch(() => {}));
      }
    }
  }

  /** Everything but the record: runtime container, cgroups, mounts, snapshot hold. */
  async #destroy(id: string): Promise<void> {
    const r = await this.records.get(id);
    const rt = new Runtime(
      r?.runtime ?? (await findRuntime(this.#runtime).catch(() => 'runc')),
      this.runtimeRoot,
    );
    if (rt.known(id)) {
      await rt.kill(id, 'KILL', { all: true }).catch(() => {});
      await rt.delete(id, { force: true }).catch(() => {});
    }
    const left = await removeCgroups(id, r?.cgroups ?? []);
    await this.#unmountAll(id);
    const mounted = await mountsUnder(this.dirOf(id));
    if (mounted.length > 0) {
      throw new StratumError('ERR_IO', `container ${id.slice(0, 12)}: cannot unmount ${mounted.join(', ')}`);
    }
    await this.snapshots.release(id);
    if (left.length > 0) {
      throw new StratumError(
        'ERR_IO',
        `container ${id.slice(0, 12)}: cannot remove its cgroups ${left.join(', ')}`,
      );
    }
  }

  /** Remove a container: refused while it runs unless `force` (then it is killed first). */
  async remove(ref: string, opts: { force?: boolean } = {}): Promise<void> {
    const r = await this.records.find(ref);
    const info = await this.inspect(r.id);
    if (info.state === 'creating') {
      // its creator is alive and would mount into what we remove: let it finish (or fail)
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `container ${r.name} is being created by process ${r.creatorPid}; remove it once that is done`,
      );
    }
    const active = info.state === 'running' || info.state === 'paused';
    if (active && !opts.force) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `container ${r.name} is ${info.state}: stop it first, or remove it with --force`,
      );
    }
    await this.#destroy(r.id);
    await this.records.remove(r.id);
    await this.#dropAnonymousVolumes(r);
  }

  /** A removed container's anonymous volumes go with it. */
  async #dropAnonymousVolumes(r: ContainerRecord): Promise<void> {
    for (const name of r.anonymousVolumes ?? []) {
      await this.volumes.remove(name).catch((e: unknown) => {
        if (!(e instanceof StratumError && e.code === 'ERR_NOT_FOUND')) throw e;
      });
    }
  }

  /**
   * The image manifests existing containers were made from: roots for a store gc that should
   * keep them committable (their snapshots are held anyway), each once.
   */
  async manifestsInUse(): Promise<Descriptor[]> {
    const seen = new Map<string, Descriptor>();
    for (const r of await this.records.all()) seen.set(r.manifest.digest, r.manifest);
    return [...seen.values()];
  }

  /** Remove the records' trash and the volumes' trash left by crashed processes. */
  async sweep(): Promise<void> {
    await this.records.sweepTrash();
    await this.volumes.cleanup();
  }

  /** Remove a named volume, refused while a container record uses it. */
  async removeVolume(name: string): Promise<void> {
    await this.records.locked(async () => {
      const users = (await this.records.all()).filter((r) =>
        r.volumes.some((v) => v.type === 'volume' && v.source === name),
      );
      if (users.length > 0) {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `volume ${name} is used by container(s) ${users.map((u) => u.name).join(', ')}: remove them first`,
        );
      }
      await this.volumes.remove(name);
    });
  }
}

/** Normalise a signal for runc: `TERM`, `SIGTERM`, `15` -> `TERM`/`15`; unknown names are refused. */
/**
 * Fill a new volume with what the image has at `destination`, as docker does for a VOLUME:
 * the path is resolved inside the root (the image's symlinks never lead out), and `cp -a`
 * copies the directory's contents, owner and mode. Nothing there, or not a directory: empty.
 */
async function seedVolume(rootfs: string, destination: string, volume: string): Promise<void> {
  const from = await resolveInRoot(rootfs, destination);
  if (from === undefined || !(await lstat(from)).isDirectory()) return;
  await new Promise<void>((resolve, reject) => {
    execFile('cp', ['-a', '--', `${from}/.`, `${volume}/`], (err, _out, stderr) =>
      err
        ? reject(
            new StratumError(
              'ERR_IO',
              `cannot fill the volume for ${destination} with the image's files: ${stderr.trim() || err.message}`,
            ),
          )
        : resolve(),
    );
  });
}

export function normalizeSignal(signal: string): string {
  if (/^\d{1,2}$/.test(signal)) {
    const n = Number(signal);
    if (n >= 1 && n <= 64) return signal;
  }
  const name = signal.toUpperCase().replace(/^SIG/, '');
  if (KNOWN_SIGNALS.has(name)) return name;
  throw new StratumError('ERR_INVALID_ARGUMENT', `unknown signal ${JSON.stringify(signal)}`);
}

const KNOWN_SIGNALS = new Set([
  'ABRT',
  'ALRM',
  'BUS',
  'CHLD',
  'CONT',
  'FPE',
  'HUP',
  'ILL',
  'INT',
  'IO',
  'IOT',
  'KILL',
  'PIPE',
  'POLL',
  'PROF',
  'PWR',
  'QUIT',
  'SEGV',
  'STKFLT',
  'STOP',
  'SYS',
  'TERM',
  'TRAP',
  'TSTP',
  'TTIN',
  'TTOU',
  'URG',
  'USR1',
  'USR2',
  'VTALRM',
  'WINCH',
  'XCPU',
  'XFSZ',
]);

/** The exit code and signal of a child, whether it exited already or not. */
function exitOf(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve([child.exitCode, child.signalCode]);
  }
  return new Promise((res) => child.once('exit', (c, s) => res([c, s])));
}

/** Holds writes back until opened (then they flow, in order) or dropped. */
class Gate {
  #state: 'held' | 'open' | 'dropped' = 'held';
  #held: (() => void)[] = [];
  run(write: () => void): void {
    if (this.#state === 'open') write();
    else if (this.#state === 'held') this.#held.push(write);
  }
  open(): void {
    if (this.#state !== 'held') return;
    this.#state = 'open';
    for (const w of this.#held.splice(0)) w();
  }
  drop(): void {
    if (this.#state === 'held') this.#state = 'dropped';
    this.#held = [];
  }
}

/** Copy `from` into `to` (not ended) and into `log` (through `gate` when given); resolves when `from` ends. */
function tee(
  from: Readable | null,
  to: Writable | undefined,
  log: Writable | undefined,
  gate?: Gate,
): Promise<void> {
  if (!from) return Promise.resolve();
  return new Promise((res) => {
    from.on('data', (c: Buffer) => {
      const write = () => {
        log?.write(c);
        if (to && !to.destroyed && !to.writableEnded && !to.write(c)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      };
      if (gate) gate.run(write);
      else write();
    });
    from.once('end', res);
    from.once('close', res);
    from.once('error', () => res());
  });
}
