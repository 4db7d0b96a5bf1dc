// Writing COPY/ADD/WORKDIR results into a root filesystem (a mounted overlay's merged dir):
// container paths are resolved inside the root as under chroot (an absolute symlink or `..`
// in the image never leads out), missing parent directories are created (0755, owned by the
// step's owner), and files, directories and symlinks are written with the owner (0:0 unless
// --chown), mode (kept, or --chmod) and mtime of their source, as docker does.
//
// The calls are synchronous, on purpose: nothing else runs during a COPY step, and one
// thread-pool round trip per call (lstat, copy, chown, chmod, utimes for each of thousands of
// files) cost more than the work itself. Directories already made or found real are
// remembered, so a file's parents are not looked up again for every file.

import {
  chmodSync,
  constants,
  copyFileSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readlinkSync,
  rmSync,
  type Stats,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join, posix } from 'node:path';
import { StratumError } from '../errors/errors.js';
import type { SourceEntry } from './sources.js';

export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

const MAX_LINKS = 40;

function lstatOrUndefined(p: string): Stats | undefined {
  return lstatSync(p, { throwIfNoEntry: false });
}

/** Root-relative directory resolution and writes. */
export class RootWriter {
  readonly root: string;
  readonly #where: string;
  /** Clean container paths known to be real directories (no symlink on the way). */
  readonly #dirs = new Set<string>(['/']);

  constructor(root: string, where: string) {
    this.root = root;
    this.#where = where;
  }

  /**
   * Resolve a container path to a host path inside the root, following symlinks inside the
   * root. Components that do not exist are kept as they are. Returns the host path and the
   * clean container path it stands for.
   */
  resolveSync(path: string, opts: { followLast?: boolean } = {}): { host: string; path: string } {
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
      done.push(part);
      if (this.#dirs.has(`/${done.join('/')}`)) continue;
      const host = join(this.root, ...done);
      const st = lstatOrUndefined(host);
      if (st?.isSymbolicLink() && (!isLast || opts.followLast)) {
        done.pop();
        if (++links > MAX_LINKS) {
          throw new StratumError(
            'ERR_BUILD_STEP_FAILED',
            `${this.#where}: too many symbolic links resolving ${path}`,
          );
        }
        const target = readlinkSync(host);
        if (target.startsWith('/')) done.length = 0;
        pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
      }
    }
    return { host: join(this.root, ...done), path: `/${done.join('/')}` };
  }

  async resolve(path: string, opts: { followLast?: boolean } = {}): Promise<{ host: string; path: string }> {
    return this.resolveSync(path, opts);
  }

  /** mkdir -p of a container path; returns the real directory's host and container paths. */
  #mkdirp(path: string, owner: Owner, mtime?: Date): { host: string; path: string } {
    const { path: clean } = this.resolveSync(path, { followLast: true });
    if (this.#dirs.has(clean)) return { host: join(this.root, clean), path: clean };
    let cur = '/';
    for (const part of clean.split('/').filter((p) => p !== '')) {
      const next = this.resolveSync(posix.join(cur, part), { followLast: true });
      if (!this.#dirs.has(next.path)) {
        const st = lstatOrUndefined(next.host);
        if (st === undefined) {
          mkdirSync(next.host, { mode: 0o755 });
          chmodSync(next.host, 0o755);
          lchownSync(next.host, owner.uid, owner.gid);
          if (mtime) lutimesSync(next.host, mtime, mtime);
        } else if (!st.isDirectory()) {
          throw new StratumError(
            'ERR_BUILD_STEP_FAILED',
            `${this.#where}: cannot make directory ${next.path}: a file is in the way`,
          );
        }
        this.#dirs.add(next.path);
      }
      cur = next.path;
    }
    return { host: join(this.root, cur), path: cur };
  }

  /** Make `path` a directory (and its parents), new ones 0755 owned by `owner`. Returns its host path. */
  async mkdirp(path: string, owner: Owner, mtime?: Date): Promise<string> {
    return this.#mkdirp(path, owner, mtime).host;
  }

  /** Whether the container path exists and is a directory (symlinks followed). */
  async isDir(path: string): Promise<boolean> {
    const { host } = this.resolveSync(path, { followLast: true });
    return lstatOrUndefined(host)?.isDirectory() ?? false;
  }

  /** Remove whatever is at host path `host` unless it is a directory and `keepDir`; whether a directory stayed. */
  #clear(host: string, keepDir: boolean): boolean {
    const st = lstatOrUndefined(host);
    if (st === undefined) return false;
    if (st.isDirectory()) {
      if (keepDir) return true;
      rmSync(host, { recursive: true, force: true });
      return false;
    }
    unlinkSync(host);
    return false;
  }

  /**
   * The host path to write container path `dest` at (its parent created): an existing symlink
   * there is followed inside the root, as docker does, when it leads to what is being written
   * (a directory for a directory, a file or nothing for a file); otherwise it is replaced.
   */
  #target(
    dest: string,
    type: SourceEntry['type'],
    parentOwner: Owner,
    mtime?: Date,
  ): { host: string; path: string } {
    const clean = posix.normalize(`/${dest}`);
    const parent = this.#mkdirp(posix.dirname(clean), parentOwner, mtime);
    const path = posix.join(parent.path, posix.basename(clean));
    const host = join(this.root, path);
    const st = lstatOrUndefined(host);
    if (!st?.isSymbolicLink() || (type !== 'directory' && type !== 'file')) return { host, path };
    const real = this.resolveSync(path, { followLast: true });
    const tst = lstatOrUndefined(real.host);
    if (type === 'directory' && tst?.isDirectory()) return real;
    if (type === 'file' && (tst === undefined || tst.isFile())) {
      const p = this.#mkdirp(posix.dirname(real.path), parentOwner, mtime);
      const rp = posix.join(p.path, posix.basename(real.path));
      return { host: join(this.root, rp), path: rp };
    }
    return { host, path };
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
    const { host, path } = this.#target(dest, entry.type, opts.parentOwner, opts.mtime);
    const mode = opts.chmod ?? entry.mode;
    const time = new Date(entry.mtimeMs);
    switch (entry.type) {
      case 'directory': {
        const exists = this.#clear(host, true);
        if (!exists) {
          mkdirSync(host, { mode: 0o700 });
          chmodSync(host, mode);
          lchownSync(host, opts.owner.uid, opts.owner.gid);
        } else if (opts.chmod !== undefined) chmodSync(host, mode);
        this.#dirs.add(path);
        return;
      }
      case 'file':
        this.#clear(host, false);
        this.#forget(path);
        copyFileSync(entry.abs, host, constants.COPYFILE_EXCL);
        lchownSync(host, opts.owner.uid, opts.owner.gid);
        chmodSync(host, mode);
        lutimesSync(host, time, time);
        return;
      case 'symlink':
        this.#clear(host, false);
        this.#forget(path);
        symlinkSync(entry.link ?? '', host);
        lchownSync(host, opts.owner.uid, opts.owner.gid);
        lutimesSync(host, time, time);
        return;
      default:
        // sockets, fifos and devices in a context are not copied (docker cannot either)
        return;
    }
  }

  /** Something else changed the tree (a tar was extracted): look everything up again. */
  forgetAll(): void {
    this.#dirs.clear();
    this.#dirs.add('/');
  }

  /** `path` (and what is below it) is no longer a known directory. */
  #forget(path: string): void {
    if (!this.#dirs.has(path)) return;
    for (const d of this.#dirs) if (d === path || d.startsWith(`${path}/`)) this.#dirs.delete(d);
  }

  /** Write bytes as a file at container path `dest` (heredoc sources). */
  async putBytes(
    bytes: Uint8Array,
    dest: string,
    opts: { owner: Owner; mode: number; parentOwner: Owner; mtime: Date },
  ): Promise<void> {
    const { host, path } = this.#target(dest, 'file', opts.parentOwner, opts.mtime);
    this.#clear(host, false);
    this.#forget(path);
    writeFileSync(host, bytes, { flag: 'wx', mode: 0o600 });
    lchownSync(host, opts.owner.uid, opts.owner.gid);
    chmodSync(host, opts.mode);
    lutimesSync(host, opts.mtime, opts.mtime);
  }

  /** Set a copied directory's mtime after its contents were written. */
  async touchDir(dest: string, mtimeMs: number): Promise<void> {
    const { host } = this.resolveSync(dest, { followLast: true });
    const t = new Date(mtimeMs);
    try {
      lutimesSync(host, t, t);
    } catch {}
  }
}
