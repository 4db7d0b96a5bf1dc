// The OCI runtime binary (runc, or another with runc's command line: crun, youki): finding
// it, and its short commands (state, list, kill, delete, start) with their failures turned
// into StratumErrors that say what the runtime printed. Long-running commands (run, exec)
// are spawned by their callers with `Runtime.args()`.

import { execFile } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { StratumError } from '../errors/errors.js';

/** Where runc keeps container state when no store is involved (runProcess). */
export const DEFAULT_RUNTIME_ROOT = '/run/stratum/runc';

const EXTRA_PATH = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

async function executable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The absolute path of an OCI runtime: `runtime` as given when it holds a `/`, else looked
 * up in PATH (and the sbin directories, which a non-root PATH lacks), or in `searchPath`.
 * Default `runc`.
 */
export async function findRuntime(
  runtime = 'runc',
  searchPath: readonly string[] = [
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean),
    ...EXTRA_PATH,
  ],
): Promise<string> {
  if (runtime.includes('/')) {
    if (await executable(runtime)) return runtime;
    throw new StratumError(
      'ERR_RUNTIME_MISSING',
      `the OCI runtime ${runtime} does not exist or is not executable`,
    );
  }
  for (const d of searchPath) {
    const p = join(d, runtime);
    if (await executable(p)) return p;
  }
  throw new StratumError(
    'ERR_RUNTIME_MISSING',
    runtime === 'runc'
      ? 'cannot run containers: the OCI runtime runc is not installed (install it with `apt-get install runc`, or pass --runtime PATH)'
      : `cannot run containers: the OCI runtime ${JSON.stringify(runtime)} was not found in PATH`,
  );
}

/** `runc state` output (the fields stratum reads). */
export interface RuntimeState {
  readonly id: string;
  readonly pid: number;
  readonly status: 'creating' | 'created' | 'running' | 'stopped' | 'paused' | string;
  readonly bundle: string;
}

/** One OCI runtime binary with one state root (`--root`). */
export class Runtime {
  readonly binary: string;
  readonly root: string;

  constructor(binary: string, root: string) {
    this.binary = binary;
    this.root = root;
  }

  static async open(root: string, runtime?: string): Promise<Runtime> {
    return new Runtime(await findRuntime(runtime), root);
  }

  /** The argument list for a runtime command (global options first). */
  args(...rest: readonly string[]): string[] {
    return ['--root', this.root, ...rest];
  }

  /** Run a short runtime command; resolves with its stdout, rejects with ERR_RUNTIME and its stderr. */
  exec(args: readonly string[], what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        this.binary,
        this.args(...args),
        { maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (!err) return resolve(stdout);
          const said = runtimeMessage(stderr) || err.message;
          reject(new StratumError('ERR_RUNTIME', `${what}: ${this.binary} failed: ${said}`, { cause: err }));
        },
      );
    });
  }

  /**
   * Whether the runtime may know the container: runc and crun keep a directory per container
   * under their root. When it is absent, asking them (a process each) can be skipped — the
   * common case after a container ran in the foreground, which the runtime deletes itself.
   */
  known(id: string): boolean {
    return existsSync(join(this.root, id));
  }

  /** The container's runtime state, or undefined when the runtime does not know it. */
  async state(id: string): Promise<RuntimeState | undefined> {
    if (!this.known(id)) return undefined;
    try {
      return JSON.parse(await this.exec(['state', id], `state of container ${id}`)) as RuntimeState;
    } catch (e) {
      if (e instanceof StratumError && /does not exist|not exist|no such/i.test(e.message)) return undefined;
      throw e;
    }
  }

  /** Every container in this root. */
  async list(): Promise<RuntimeState[]> {
    const out = await this.exec(['list', '--format', 'json'], 'list containers');
    const parsed = JSON.parse(out.trim() === '' ? 'null' : out) as RuntimeState[] | null;
    return parsed ?? [];
  }

  /** Send a signal to the container's init process (or to all its processes). */
  async kill(id: string, signal: string, opts: { all?: boolean } = {}): Promise<void> {
    await this.exec(
      ['kill', ...(opts.all ? ['--all'] : []), id, signal],
      `send ${signal} to container ${id}`,
    );
  }

  /** Start a created container. */
  async start(id: string): Promise<void> {
    await this.exec(['start', id], `start container ${id}`);
  }

  /** Remove the container (force: kill it first); no error when it does not exist. */
  async delete(id: string, opts: { force?: boolean } = {}): Promise<void> {
    if (!this.known(id)) return;
    try {
      await this.exec(['delete', ...(opts.force ? ['--force'] : []), id], `delete container ${id}`);
    } catch (e) {
      if (e instanceof StratumError && /does not exist|not exist|no such/i.test(e.message)) return;
      throw e;
    }
  }
}

/** The useful part of what runc printed on stderr (its logrus `msg="..."` when in that form). */
export function runtimeMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const msgs = lines.map((l) => {
    const m = /(?:^|\s)msg="((?:[^"\\]|\\.)*)"/.exec(l);
    return m?.[1] ? m[1].replace(/\\"/g, '"').replace(/\\\\/g, '\\') : l;
  });
  return msgs.join('; ');
}
