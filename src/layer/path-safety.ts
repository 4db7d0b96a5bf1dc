// Never write outside the root: entry names are made relative and clean (or refused), and
// every parent directory is reached through real directories only — never through a symlink,
// whether this layer or a lower one planted it.
//
// Names. A leading `./` is dropped, empty and `.` components collapse. A `..` component is
// refused, wherever it is (containerd would clamp `a/../../b` to `b`; a layer that says `..` is
// hostile or broken, and we say so). An absolute name is refused by default; with
// `absoluteNames: 'strip'` it is taken relative to the root, as containerd and GNU tar do.
//
// Parents. Resolving `a/b/c` means checking that `a` and `a/b` are directories, with lstat —
// never following a link. A symlink there is ERR_UNSAFE_PATH: we do not resolve symlinks
// inside the root the way containerd's RootPath or umoci's securejoin do, because a layer that
// writes through a symlink is not something a well-made image does (a diff of a tree never
// yields a path through a symlink). A missing directory is created (0755, or by the caller's
// hook); a non-directory in the way (a file or device from a lower layer) is replaced, as
// umoci does.
//
// The cache. Directories found or made are remembered in a tree, so a name costs a Map lookup
// instead of a syscall per component. The cache holds one invariant: every path in it is a
// real directory reached through real directories. Anything that removes or replaces a path
// calls `forget`, which drops that path and everything below it (the CVE-2021-32803 bug in
// node-tar was a stale entry here: a directory replaced by a symlink stayed cached). The root
// is checked once, at the start. Nothing outside this process is expected to change the root
// while a layer is applied; if something does, O_EXCL/O_NOFOLLOW opens and the final lstat
// checks still keep writes from following a final-component symlink.

import { lstatSync, mkdirSync, type Stats } from 'node:fs';
import { UnsafePathError } from '../errors/errors.js';

export type AbsoluteNames = 'reject' | 'strip';

/**
 * Make an entry name relative and clean: `./a//b/` → `a/b`; `.` and `./` → '' (the root).
 * Throws ERR_UNSAFE_PATH for a `..` component, or an absolute name unless `absolute` is 'strip'.
 */
export function normalizeEntryName(raw: string, absolute: AbsoluteNames = 'reject'): string {
  // fast path: already clean (no leading /, no //, no . or .. components, no trailing /)
  if (isClean(raw)) return raw;
  if (raw.startsWith('/') && absolute === 'reject') {
    throw new UnsafePathError(raw, 'the name is absolute; entries must be relative to the root');
  }
  const parts: string[] = [];
  for (const p of raw.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..')
      throw new UnsafePathError(raw, 'the name has a ".." component, which could climb out of the root');
    parts.push(p);
  }
  return parts.join('/');
}

function isClean(s: string): boolean {
  if (s === '' || s.charCodeAt(0) === 0x2f || s.charCodeAt(s.length - 1) === 0x2f) return false;
  let start = 0;
  for (;;) {
    const slash = s.indexOf('/', start);
    const end = slash === -1 ? s.length : slash;
    const len = end - start;
    if (len === 0) return false;
    if (s.charCodeAt(start) === 0x2e && (len === 1 || (len === 2 && s.charCodeAt(start + 1) === 0x2e)))
      return false;
    if (slash === -1) return true;
    start = slash + 1;
  }
}

/** The parent of a clean relative path ('' for a top-level name). */
export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i === -1 ? '' : rel.slice(0, i);
}

/** The last component of a clean relative path. */
export function baseOf(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

/** Whether `rel` is `dir` or below it (clean relative paths; '' is the root). */
export function isWithin(rel: string, dir: string): boolean {
  return dir === '' || rel === dir || (rel.startsWith(dir) && rel.charCodeAt(dir.length) === 0x2f);
}

interface DirNode {
  children: Set<string> | undefined;
  /** The directory had the setgid bit when we found it (new entries inherit its group). */
  setgid: boolean;
}

const S_ISGID = 0o2000;

/** Hooks a caller gives `ensureDir` to track what it changes. */
export interface EnsureDirHooks {
  /** A missing directory `rel` was just created (mode 0700 until the caller sets its own). */
  created(rel: string): void;
  /** `rel` is a non-directory in the way of a directory; it will be removed (the hook may do it). */
  replace(rel: string, st: Stats): void;
}

/** Directory resolution inside one root, without following symlinks, with a cache. */
export class SafeRoot {
  readonly root: string;
  readonly #nodes = new Map<string, DirNode>();

  readonly #onFound: ((rel: string, st: Stats) => void) | undefined;

  /** `onFound` is told of every existing directory the first time it is looked at (not the root). */
  constructor(root: string, onFound?: (rel: string, st: Stats) => void) {
    this.root = root;
    this.#onFound = onFound;
    this.#nodes.set('', { children: undefined, setgid: (lstatSync(root).mode & S_ISGID) !== 0 });
  }

  /** Remember an existing directory found on disk. */
  found(rel: string, st: Stats): void {
    this.remember(rel, (st.mode & S_ISGID) !== 0);
    this.#onFound?.(rel, st);
  }

  /** Absolute path of a clean relative path. */
  abs(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }

  /** Whether `rel` is known to be a real directory. */
  known(rel: string): boolean {
    return this.#nodes.has(rel);
  }

  /** Whether the known directory `rel` had the setgid bit when it was found. */
  isSetgid(rel: string): boolean {
    return this.#nodes.get(rel)?.setgid ?? true;
  }

  /**
   * Record that `rel` is a real directory (its parent must be known). `setgid`: it has the
   * setgid bit now (false for a directory this process just made).
   */
  remember(rel: string, setgid = false): void {
    const known = this.#nodes.get(rel);
    if (known !== undefined) {
      known.setgid = setgid;
      return;
    }
    this.#nodes.set(rel, { children: undefined, setgid });
    const parent = this.#nodes.get(parentOf(rel));
    if (parent === undefined) {
      this.#nodes.delete(rel);
      throw new Error(`path-safety: ${rel} remembered before its parent`);
    }
    parent.children ??= new Set();
    parent.children.add(rel);
  }

  /** `rel` was removed or replaced: drop it and everything below it from the cache. */
  forget(rel: string): void {
    if (rel === '') {
      throw new Error('path-safety: the root cannot be forgotten');
    }
    const node = this.#nodes.get(rel);
    if (node === undefined) return;
    this.#nodes.get(parentOf(rel))?.children?.delete(rel);
    const stack = [rel];
    while (stack.length > 0) {
      const p = stack.pop() as string;
      const n = this.#nodes.get(p);
      if (n === undefined) continue;
      this.#nodes.delete(p);
      if (n.children) for (const c of n.children) stack.push(c);
    }
  }

  /** Every known directory below `rel` (and `rel` itself when known), parents before children. */
  knownWithin(rel: string): string[] {
    const out: string[] = [];
    if (!this.#nodes.has(rel)) return out;
    const stack = [rel];
    while (stack.length > 0) {
      const p = stack.pop() as string;
      out.push(p);
      const n = this.#nodes.get(p);
      if (n?.children) for (const c of n.children) stack.push(c);
    }
    return out;
  }

  /**
   * Make sure directory `rel` exists as a real directory reached only through real
   * directories, creating what is missing. `entry` names the tar entry in errors.
   */
  ensureDir(rel: string, entry: string, hooks: EnsureDirHooks): void {
    if (this.#nodes.has(rel)) return;
    this.ensureDir(parentOf(rel), entry, hooks);
    const abs = this.abs(rel);
    try {
      mkdirSync(abs, 0o700);
      this.remember(rel);
      hooks.created(rel);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = lstatSync(abs);
    if (st.isDirectory()) {
      this.found(rel, st);
      return;
    }
    if (st.isSymbolicLink()) {
      throw new UnsafePathError(
        entry,
        `its parent directory ${JSON.stringify(rel)} is a symbolic link; writing through it could leave the root`,
      );
    }
    hooks.replace(rel, st);
    mkdirSync(abs, 0o700);
    this.remember(rel);
    hooks.created(rel);
  }

  /**
   * Check, without creating anything, that `rel` is a real directory reached through real
   * directories. false when something on the way is missing or not a directory; a symlink on
   * the way is ERR_UNSAFE_PATH.
   */
  existingDir(rel: string, entry: string): boolean {
    if (this.#nodes.has(rel)) return true;
    if (!this.existingDir(parentOf(rel), entry)) return false;
    let st: Stats;
    try {
      st = lstatSync(this.abs(rel));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw e;
    }
    if (st.isDirectory()) {
      this.found(rel, st);
      return true;
    }
    if (st.isSymbolicLink()) {
      throw new UnsafePathError(
        entry,
        `the path goes through ${JSON.stringify(rel)}, which is a symbolic link; following it could leave the root`,
      );
    }
    return false;
  }
}
