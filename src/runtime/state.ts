// Container records in the store: `<store>/containers/<id>/state.json`, written atomically
// (temp file + rename) under one lock file (`containers/.lock`), so that every stratum
// process sees whole records and names stay unique. A container is found by its full id, its
// name, or a unique prefix of its id.
//
// A record is removed by renaming its directory to `.trash-<pid>-<random>` under the lock
// (at once, whatever its size) and deleting that afterwards; an update of a record whose
// directory is gone does nothing, so a monitor finishing late never brings a removed
// container back. Trash left by a crashed process is removed by the next sweep.

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { tempName, writeFileAtomic } from '../internal/fs.js';
import { withFileLock } from '../internal/lock.js';
import { pidInName, processAlive } from '../layout/liveness.js';
import { mountsUnder, unmount } from '../snapshot/overlay.js';
import type { Descriptor } from '../spec/types.js';
import type { Resources } from './spec.js';
import type { VolumeSpec } from './volumes.js';

export const CONTAINERS_DIR = 'containers';
export const STATE_FILE = 'state.json';
const LOCK = '.lock';
const TRASH_PREFIX = '.trash-';

/** Container names, as docker allows them. */
export const CONTAINER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
export const CONTAINER_ID_RE = /^[0-9a-f]{64}$/;

/** What stratum records; the container's live state comes from the runtime. */
export type RecordStatus = 'creating' | 'created' | 'running' | 'exited';

export interface ContainerRecord {
  readonly version: 1;
  readonly id: string;
  readonly name: string;
  /** The image as the user named it. */
  readonly image: string;
  readonly manifest: Descriptor;
  readonly created: string;
  /** The process: args, env, working directory, user. */
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly user: { readonly uid: number; readonly gid: number; readonly additionalGids: readonly number[] };
  readonly hostname: string;
  readonly network: 'none' | 'host';
  readonly tty: boolean;
  readonly readOnly: boolean;
  readonly volumes: readonly VolumeSpec[];
  /**
   * Volumes made for the image's VOLUME paths no `-v` covered (named `anon-<id>-<n>`); they
   * are removed with the container.
   */
  readonly anonymousVolumes?: readonly string[];
  readonly resources: Resources;
  readonly chainIds: readonly Digest[];
  /** Where its cgroups are (runc places the relative `stratum/<id>` under the creator's cgroups). */
  readonly cgroups?: readonly string[];
  readonly stopSignal: string;
  readonly autoRemove: boolean;
  /** The OCI runtime binary that runs it. */
  readonly runtime: string;
  readonly status: RecordStatus;
  /** The process that is creating it (status `creating`). */
  readonly creatorPid: number;
  /** The process that waits for it and records its exit (a foreground `run`, or a monitor). */
  readonly monitorPid?: number;
  readonly startedAt?: string;
  readonly finishedAt?: string;
  readonly exitCode?: number;
  /** Why it failed to start. */
  readonly error?: string;
}

export function newContainerId(): string {
  return randomBytes(32).toString('hex');
}

export class ContainerRecords {
  readonly dir: string;
  readonly #lock: string;

  constructor(storeRoot: string) {
    this.dir = join(storeRoot, CONTAINERS_DIR);
    this.#lock = join(this.dir, LOCK);
  }

  dirOf(id: string): string {
    if (!CONTAINER_ID_RE.test(id))
      throw new StratumError('ERR_INVALID_ARGUMENT', `invalid container id ${JSON.stringify(id)}`);
    return join(this.dir, id);
  }

  locked<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(this.#lock, fn);
  }

  async #read(id: string): Promise<ContainerRecord | undefined> {
    let text: string;
    try {
      text = await readFile(join(this.dirOf(id), STATE_FILE), 'utf8');
    } catch {
      return undefined;
    }
    try {
      const r = JSON.parse(text) as ContainerRecord;
      return r.id === id ? r : undefined;
    } catch {
      return undefined;
    }
  }

  /** Every record, oldest first. */
  async all(): Promise<ContainerRecord[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: ContainerRecord[] = [];
    for (const n of names) {
      if (!CONTAINER_ID_RE.test(n)) continue;
      const r = await this.#read(n);
      if (r) out.push(r);
    }
    return out.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
  }

  async get(id: string): Promise<ContainerRecord | undefined> {
    return CONTAINER_ID_RE.test(id) ? this.#read(id) : undefined;
  }

  /** A container by id, name or unique id prefix (ERR_NOT_FOUND, or ERR_INVALID_ARGUMENT when ambiguous). */
  async find(ref: string): Promise<ContainerRecord> {
    if (CONTAINER_ID_RE.test(ref)) {
      const r = await this.#read(ref);
      if (r) return r;
    }
    const all = await this.all();
    const byName = all.find((r) => r.name === ref);
    if (byName) return byName;
    if (/^[0-9a-f]+$/.test(ref)) {
      const matches = all.filter((r) => r.id.startsWith(ref));
      if (matches.length === 1) return matches[0] as ContainerRecord;
      if (matches.length > 1) {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `container id prefix ${ref} is ambiguous: ${matches.length} containers start with it; give more of the id`,
        );
      }
    }
    throw new StratumError('ERR_NOT_FOUND', `no container ${JSON.stringify(ref)} (by name or id)`);
  }

  /** Write a new record under the lock; ERR_INVALID_ARGUMENT when its name is taken. */
  async create(record: ContainerRecord): Promise<void> {
    await this.locked(async () => {
      const taken = (await this.all()).find((r) => r.name === record.name);
      if (taken) {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `the container name ${JSON.stringify(record.name)} is already used by container ${taken.id.slice(0, 12)}; remove it or choose another name`,
        );
      }
      await mkdir(this.dirOf(record.id), { mode: 0o700 });
      await writeFileAtomic(join(this.dirOf(record.id), STATE_FILE), `${JSON.stringify(record, null, 2)}\n`);
    });
  }

  /** Change a record under the lock; nothing happens (undefined) when it is gone. */
  async update(
    id: string,
    fn: (r: ContainerRecord) => ContainerRecord | undefined,
  ): Promise<ContainerRecord | undefined> {
    return this.locked(async () => {
      const r = await this.#read(id);
      if (!r) return undefined;
      const next = fn(r);
      if (next === undefined || next === r) return r;
      await writeFileAtomic(join(this.dirOf(id), STATE_FILE), `${JSON.stringify(next, null, 2)}\n`);
      return next;
    });
  }

  /**
   * Take the record's directory away (under the lock) and delete it. `check` runs under the
   * lock first and may refuse by throwing. The caller has unmounted everything inside.
   */
  async remove(id: string, check?: (r: ContainerRecord | undefined) => void | Promise<void>): Promise<void> {
    const dir = this.dirOf(id);
    const trash = tempName(this.dir, TRASH_PREFIX);
    const moved = await this.locked(async () => {
      await check?.(await this.#read(id));
      try {
        await rename(dir, trash);
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw e;
      }
    });
    if (!moved) return;
    // never delete through a mount (an overlay's lowers are shared snapshots)
    const mounted = await mountsUnder(trash);
    if (mounted.length > 0) {
      throw new StratumError(
        'ERR_IO',
        `container ${id.slice(0, 12)}: ${mounted[0]} is still mounted; its directory was left at ${trash}`,
      );
    }
    await rm(trash, { recursive: true, force: true });
  }

  /** Delete trash left by dead processes (unmounting what is still mounted inside first). */
  async sweepTrash(): Promise<void> {
    for (const n of await readdir(this.dir).catch(() => [] as string[])) {
      const pid = pidInName(n, TRASH_PREFIX);
      if (pid === undefined || processAlive(pid)) continue;
      const trash = join(this.dir, n);
      for (const m of await mountsUnder(trash)) await unmount(m, { lazy: true }).catch(() => {});
      if ((await mountsUnder(trash)).length === 0) await rm(trash, { recursive: true, force: true });
    }
  }
}
