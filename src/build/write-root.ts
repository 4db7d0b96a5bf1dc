// Writing COPY/ADD/WORKDIR results into a root filesystem (a mounted overlay's merged dir):
// container paths are resolved inside the root as under chroot (an absolute symlink or `..`
// in the image never leads out), missing parent directories are created (0755, owned by the
// step's owner), and files, directories and symlinks are written with the owner (0:0 unless
// --chown), mode (kept, or --chmod) and mtime of their source, as docker does.

import { constants } from 'node:fs';
import {
  chmod,
  copyFile,
  lchown,
  lstat,
  lutimes,
  mkdir,
  readlink,
  rm,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { join, posix } from 'node:path';
import { StratumError } from '../errors/errors.js';
import type { SourceEntry } from './sources.js';

export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

const MAX_LINKS = 40;

/** Root-relative directory resolution and writes. */
export class RootWriter {
  readonly root: string;
  readonly #where: string;

  constructor(root: string, where: string) {
    this.root = root;
    this.#where = where;
  }

  /**
   * Resolve a container path to a host path inside the root, following symlinks inside the
   * root. Components that do not exist are kept as they are. Returns the host path and the
   * clean container path it stands for.
   */
  async resolve(path: string, opts: { followLast?: boolean } = {}): Promise<{ host: string; path: string }> {
    const pending = path.split('/').filter((p) => p !== '' && p !== '.');
    const done: string[] = [];
    let links = 0;
    while (pending.length > 0) {
      const part = pending.shift() as string;
      if (part === '..') {
        done.pop();
        continue;
      }
      const isLast = pending.length === 0;
      const host = join(this.root, ...done, part);
      const st = await lstat(host).catch(() => undefined);
      if (st?.isSymbolicLink() && (!isLast || opts.followLast)) {
        if (++links > MAX_LINKS) {
          throw new StratumError(
            'ERR_BUILD_STEP_FAILED',
            `${this.#where}: too many symbolic links resolving ${path}`,
          );
        }
        const target = await readlink(host);
        if (target.startsWith('/')) done.length = 0;
        pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
        continue;
      }
      done.push(part);
    }
    return { host: join(this.root, ...done), path: `/${done.join('/')}` };
  }

  /** Make `path` a directory (and its parents), new ones 0755 owned by `owner`. Returns its host path. */
  async mkdirp(path: string, owner: Owner, mtime?: Date): Promise<string> {
    const { path: clean } = await this.resolve(path, { followLast: true });
    let cur = '';
    for (const part of clean.split('/').filter((p) => p !== '')) {
      const next = await this.resolve(`${cur}/${part}`, { followLast: true });
      const st = await lstat(next.host).catch(() => undefined);
      if (st === undefined) {
        await mkdir(next.host, { mode: 0o755 });
        await chmod(next.host, 0o755);
        await lchown(next.host, owner.uid, owner.gid);
        if (mtime) await lutimes(next.host, mtime, mtime);
      } else if (!st.isDirectory()) {
        throw new StratumError(
          'ERR_BUILD_STEP_FAILED',
          `${this.#where}: cannot make directory ${next.path}: a file is in the way`,
        );
      }
      cur = next.path;
    }
    return (await this.resolve(clean, { followLast: true })).host;
  }

  /** Whether the container path exists and is a directory (symlinks followed). */
  async isDir(path: string): Promise<boolean> {
    const { host } = await this.resolve(path, { followLast: true });
    return (await lstat(host).catch(() => undefined))?.isDirectory() ?? false;
  }

  /** Remove whatever is at host path `host` unless it is a directory and `keepDir`. */
  async #clear(host: string, keepDir: boolean): Promise<boolean> {
    const st = await lstat(host).catch(() => undefined);
    if (st === undefined) return false;
    if (st.isDirectory()) {
      if (keepDir) return true;
      await rm(host, { recursive: true, force: true });
      return false;
    }
    await unlink(host);
    return false;
  }

  /**
   * The host path to write container path `dest` at (its parent created): an existing symlink
   * there is followed inside the root, as docker does, when it leads to what is being written
   * (a directory for a directory, a file or nothing for a file); otherwise it is replaced.
   */
  async #target(dest: string, type: SourceEntry['type'], parentOwner: Owner, mtime?: Date): Promise<string> {
    const clean = posix.normalize(`/${dest}`);
    const parentHost = await this.mkdirp(posix.dirname(clean), parentOwner, mtime);
    const host = join(parentHost, posix.basename(clean));
    const st = await lstat(host).catch(() => undefined);
    if (!st?.isSymbolicLink() || (type !== 'directory' && type !== 'file')) return host;
    const real = await this.resolve(clean, { followLast: true });
    const tst = await lstat(real.host).catch(() => undefined);
    if (type === 'directory' && tst?.isDirectory()) return real.host;
    if (type === 'file' && (tst === undefined || tst.isFile())) {
      const parent = await this.mkdirp(posix.dirname(real.path), parentOwner, mtime);
      return join(parent, posix.basename(real.path));
    }
    return host;
  }

  /**
   * Write one source entry at container path `dest` (its parent must exist or is created).
   * Directories: created if missing (mode kept); `touchDir` sets their mtime afterwards.
   */
  async put(
    entry: SourceEntry,
    dest: string,
    opts: { owner: Owner; chmod?: number; parentOwner: Owner; mtime?: Date },
  ): Promise<void> {
    const host = await this.#target(dest, entry.type, opts.parentOwner, opts.mtime);
    const mode = opts.chmod ?? entry.mode;
    const time = new Date(entry.mtimeMs);
    switch (entry.type) {
      case 'directory': {
        const exists = await this.#clear(host, true);
        if (!exists) {
          await mkdir(host, { mode: 0o700 });
          await chmod(host, mode);
          await lchown(host, opts.owner.uid, opts.owner.gid);
        } else if (opts.chmod !== undefined) await chmod(host, mode);
        return;
      }
      case 'file':
        await this.#clear(host, false);
        await copyFile(entry.abs, host, constants.COPYFILE_EXCL);
        await lchown(host, opts.owner.uid, opts.owner.gid);
        await chmod(host, mode);
        await lutimes(host, time, time);
        return;
      case 'symlink':
        await this.#clear(host, false);
        await symlink(entry.link ?? '', host);
        await lchown(host, opts.owner.uid, opts.owner.gid);
        await lutimes(host, time, time);
        return;
      default:
        // sockets, fifos and devices in a context are not copied (docker cannot either)
        return;
    }
  }

  /** Write bytes as a file at container path `dest` (heredoc sources). */
  async putBytes(
    bytes: Uint8Array,
    dest: string,
    opts: { owner: Owner; mode: number; parentOwner: Owner; mtime: Date },
  ): Promise<void> {
    const host = await this.#target(dest, 'file', opts.parentOwner, opts.mtime);
    await this.#clear(host, false);
    await writeFile(host, bytes, { flag: 'wx', mode: 0o600 });
    await lchown(host, opts.owner.uid, opts.owner.gid);
    await chmod(host, opts.mode);
    await lutimes(host, opts.mtime, opts.mtime);
  }

  /** Set a copied directory's mtime after its contents were written. */
  async touchDir(dest: string, mtimeMs: number): Promise<void> {
    const { host } = await this.resolve(dest, { followLast: true });
    const t = new Date(mtimeMs);
    await lutimes(host, t, t).catch(() => {});
  }
}
