// Volumes: `-v` specs (`/host:/ctr[:ro|rw]` binds a host path, `NAME:/ctr[:ro|rw]` a named
// volume) and the named volumes of a store, `<store>/volumes/<name>/_data`, made on first use
// (as docker keeps them). Both are bind mounts into the container: writes go straight to the
// host directory, never through the overlay's copy-on-write.
//
// A named volume is removed only when no container record mentions it; the check and the
// removal run under the containers' lock, as container creation does.

import { lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { StratumError } from '../errors/errors.js';
import { tempName } from '../internal/fs.js';
import { pidInName, processAlive } from '../layout/liveness.js';
import { containerPath } from './spec.js';

export const VOLUMES_DIR = 'volumes';
const DATA = '_data';
const TRASH_PREFIX = '.trash-';

/** Docker's rule for volume names. */
export const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface VolumeSpec {
  readonly type: 'bind' | 'volume';
  /** An absolute host path (bind) or a volume name. */
  readonly source: string;
  readonly destination: string;
  readonly readOnly: boolean;
}

/** Parse a `-v` value: `SRC:DST[:OPTS]`, OPTS a comma list of `ro` / `rw`. */
export function parseVolumeSpec(text: string): VolumeSpec {
  const parts = text.split(':');
  if (parts.length < 2 || parts.length > 3) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `volume ${JSON.stringify(text)}: want HOST_PATH:CONTAINER_PATH[:ro] or NAME:CONTAINER_PATH[:ro]`,
    );
  }
  const [src = '', dst = '', opts = ''] = parts;
  let readOnly = false;
  for (const o of opts === '' ? [] : opts.split(',')) {
    if (o === 'ro') readOnly = true;
    else if (o === 'rw') readOnly = false;
    else
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `volume ${JSON.stringify(text)}: unknown option ${JSON.stringify(o)} (ro or rw)`,
      );
  }
  const destination = containerPath(dst, `volume ${JSON.stringify(text)}: the container path`);
  if (isAbsolute(src)) return { type: 'bind', source: resolve(src), destination, readOnly };
  if (src.startsWith('.') && !VOLUME_NAME_RE.test(src)) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `volume ${JSON.stringify(text)}: a host path must be absolute (${JSON.stringify(src)} is relative)`,
    );
  }
  checkVolumeName(src);
  return { type: 'volume', source: src, destination, readOnly };
}

export function checkVolumeName(name: string): void {
  if (!VOLUME_NAME_RE.test(name)) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `invalid volume name ${JSON.stringify(name.slice(0, 140))}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit (or give an absolute host path)`,
    );
  }
}

export interface VolumeInfo {
  readonly name: string;
  /** The directory mounted into containers. */
  readonly path: string;
}

/** The named volumes of one store. */
export class Volumes {
  readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = join(storeRoot, VOLUMES_DIR);
  }

  pathOf(name: string): string {
    checkVolumeName(name);
    return join(this.dir, name, DATA);
  }

  /** Make the volume if it does not exist; returns its data directory. */
  async create(name: string): Promise<VolumeInfo> {
    const path = this.pathOf(name);
    await mkdir(path, { recursive: true, mode: 0o755 });
    return { name, path };
  }

  async exists(name: string): Promise<boolean> {
    return (await lstat(this.pathOf(name)).catch(() => undefined))?.isDirectory() ?? false;
  }

  async list(): Promise<VolumeInfo[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: VolumeInfo[] = [];
    for (const n of names.sort()) {
      if (!VOLUME_NAME_RE.test(n)) continue;
      if (await this.exists(n)) out.push({ name: n, path: this.pathOf(n) });
    }
    return out;
  }

  /** Remove a volume and its data (the caller checked that no container uses it). */
  async remove(name: string): Promise<void> {
    const path = join(this.dir, name);
    checkVolumeName(name);
    if (!(await lstat(path).catch(() => undefined))) {
      throw new StratumError('ERR_NOT_FOUND', `no volume named ${JSON.stringify(name)}`);
    }
    // move it aside first, so that it is gone at once even when its data is large
    const trash = tempName(this.dir, TRASH_PREFIX);
    await rename(path, trash);
    await rm(trash, { recursive: true, force: true });
  }

  /** Remove what removals interrupted by a crash left behind. */
  async cleanup(): Promise<void> {
    for (const n of await readdir(this.dir).catch(() => [] as string[])) {
      const pid = pidInName(n, TRASH_PREFIX);
      if (pid !== undefined && !processAlive(pid))
        await rm(join(this.dir, n), { recursive: true, force: true });
    }
  }
}
