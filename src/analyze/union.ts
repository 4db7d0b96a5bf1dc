// The union of an image's layers as a tree in memory, built from tar headers alone — no file
// is extracted. Each entry is applied with the same rules as layer/apply.ts in its plain form,
// so the tree is what `stratum unpack` would leave on disk:
//
//   - a whiteout `.wh.NAME` and an opaque marker `.wh..wh..opq` remove what LOWER layers put
//     there, never what the same layer wrote (or a directory above something it wrote),
//     whatever the order of the entries;
//   - an entry over something else replaces it (a directory over a directory merges: the new
//     entry's mode, owner and mtime win, xattrs add up); a missing parent is made (0755,
//     root-owned) and a non-directory in a parent's place is replaced by one;
//   - a hard link shares its target's inode (data and metadata); replacing one of its names
//     leaves the others as they were;
//   - names are cleaned and checked as path-safety.ts does: `..`, absolute names, a symlink in
//     a parent path, hard links to directories are ERR_UNSAFE_PATH naming the entry; aufs
//     metadata (`.wh..wh.plnk`, ...) is skipped.
//
// Files are inodes with a link count. When the last name of an inode goes, its bytes are wasted
// (they are in a layer but not in the image's filesystem): the `drop` hook is told, with the
// layer that stored them and whether a later entry shadowed them or a whiteout deleted them.
// Per layer the tree counts paths added (new), changed (something was there) and deleted (by a
// whiteout or an opaque directory, each top path once).

import { StratumError, UnsafePathError } from '../errors/errors.js';
import { type AbsoluteNames, baseOf, normalizeEntryName, parentOf } from '../layer/path-safety.js';
import type { TarHeader } from '../layer/tar-reader.js';
import { classifyWhiteout, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE } from '../layer/whiteout.js';

export type LeafType = 'file' | 'symlink' | 'char' | 'block' | 'fifo';
export type NodeType = LeafType | 'directory';

/** A non-directory: what every hard-linked name of it shares. */
export interface Inode {
  readonly type: LeafType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Seconds since the epoch (with a fraction when PAX gave one). */
  readonly mtime: number;
  /** A file's length (a sparse file's logical length); 0 for the rest. */
  readonly size: number;
  /** Bytes of file data the layer stores for it (a sparse file: its data segments). */
  readonly stored: number;
  /** Symlink target, as written. */
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  readonly xattrs: ReadonlyMap<string, Buffer> | undefined;
  /** The layer (0-based) and the entry of it (0-based, in archive order) that made it. */
  readonly layer: number;
  readonly entry: number;
  /** The path it was made at. */
  readonly path: string;
  /** `sha256:` of its content, when the reader hashed it (files only; see image-tree.ts). */
  digest: string | undefined;
  /** Names it has in the tree now. */
  links: number;
}

export interface DirNode {
  readonly kind: 'dir';
  mode: number;
  uid: number;
  gid: number;
  /** undefined for a directory no entry described (made for an entry below it). */
  mtime: number | undefined;
  xattrs: Map<string, Buffer> | undefined;
  /** Made because an entry needed it, not by an entry of its own. */
  implicit: boolean;
  /** The layer that made it. */
  readonly layer: number;
  readonly children: Map<string, UnionNode>;
}

export interface LeafNode {
  readonly kind: 'leaf';
  readonly inode: Inode;
}

export type UnionNode = DirNode | LeafNode;

export type DropReason = 'shadowed' | 'deleted';

export type PathChangeKind = 'added' | 'changed' | 'deleted';

export interface LayerPathChange {
  /** Relative path. */
  readonly path: string;
  readonly kind: PathChangeKind;
}

export interface LayerCounts {
  /** Tar entries (PAX / GNU metadata headers not counted). */
  readonly entries: number;
  /** Paths this layer made that did not exist below it. */
  readonly added: number;
  /** Paths this layer wrote over something that existed below it (a directory: only when its mode, owner or xattrs change). */
  readonly changed: number;
  /** Paths a whiteout or an opaque marker of this layer removed (each top path once). */
  readonly deleted: number;
  readonly whiteouts: number;
  readonly opaques: number;
  /** Entries skipped: aufs metadata, hard links to themselves. */
  readonly skipped: number;
  /** Bytes of file data stored in this layer. */
  readonly fileBytes: number;
}

export interface UnionTreeOptions {
  /** An inode lost its last name: its `stored` bytes are wasted, charged to `inode.layer`. */
  readonly drop?: (inode: Inode, why: DropReason, byLayer: number) => void;
  /** Keep each layer's changed paths (`endLayer().paths`). */
  readonly listChanges?: boolean;
  /** Names starting with `/`: 'reject' (default, as unpack does) or 'strip'. */
  readonly absoluteNames?: AbsoluteNames;
}

type Existed = 'ours' | 'lower' | 'same' | undefined;

function newDir(layer: number, implicit: boolean): DirNode {
  return {
    kind: 'dir',
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: undefined,
    xattrs: undefined,
    implicit,
    layer,
    children: new Map(),
  };
}

function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

function sameXattrsAfterMerge(
  have: ReadonlyMap<string, Buffer> | undefined,
  add: ReadonlyMap<string, Buffer> | undefined,
): boolean {
  if (add === undefined) return true;
  for (const [k, v] of add) {
    const old = have?.get(k);
    if (old === undefined || !old.equals(v)) return false;
  }
  return true;
}

/** The union of layers applied so far. Call beginLayer, entry (per tar entry), endLayer, per layer. */
export class UnionTree {
  readonly root: DirNode = newDir(-1, true);
  readonly #opts: UnionTreeOptions;
  readonly #absolute: AbsoluteNames;
  /** Whether some layer had an entry for the root itself (`./`). */
  #rootEntry = false;
  // --- the layer being applied ---
  #layer = -1;
  #entry = -1;
  /** Paths this layer wrote. */
  #written = new Set<string>();
  /** Directories above paths this layer wrote or made (whiteouts leave them). */
  #ancestors = new Set<string>();
  #counts = zeroCounts();
  #paths: LayerPathChange[] | undefined;

  constructor(opts: UnionTreeOptions = {}) {
    this.#opts = opts;
    this.#absolute = opts.absoluteNames ?? 'reject';
  }

  get hasRootEntry(): boolean {
    return this.#rootEntry;
  }

  beginLayer(index: number): void {
    this.#layer = index;
    this.#entry = -1;
    this.#written = new Set();
    this.#ancestors = new Set();
    this.#counts = zeroCounts();
    this.#paths = this.#opts.listChanges ? [] : undefined;
  }

  endLayer(): LayerCounts & { readonly paths?: readonly LayerPathChange[] } {
    const out = { ...this.#counts, ...(this.#paths ? { paths: this.#paths } : {}) };
    this.#written = new Set();
    this.#ancestors = new Set();
    return out;
  }

  /** The node at a clean relative path ('' is the root), without following symlinks. */
  lookup(rel: string): UnionNode | undefined {
    if (rel === '') return this.root;
    let node: UnionNode = this.root;
    for (const part of rel.split('/')) {
      if (node.kind !== 'dir') return undefined;
      const next: UnionNode | undefined = node.children.get(part);
      if (next === undefined) return undefined;
      node = next;
    }
    return node;
  }

  /** Every node below the root, depth first, each directory's names in code-unit order. */
  *walk(): Generator<[string, UnionNode]> {
    const stack: [string, DirNode][] = [['', this.root]];
    // an explicit stack of iterators keeps deep trees off the call stack
    const iters: Iterator<string>[] = [sortedNames(this.root)[Symbol.iterator]()];
    while (iters.length > 0) {
      const it = iters[iters.length - 1] as Iterator<string>;
      const [dirPath, dir] = stack[stack.length - 1] as [string, DirNode];
      const r = it.next();
      if (r.done) {
        iters.pop();
        stack.pop();
        continue;
      }
      const node = dir.children.get(r.value) as UnionNode;
      const path = join(dirPath, r.value);
      yield [path, node];
      if (node.kind === 'dir') {
        stack.push([path, node]);
        iters.push(sortedNames(node)[Symbol.iterator]());
      }
    }
  }

  /**
   * Apply one tar entry of the current layer. Returns the new inode for a regular file (its
   * body follows; the caller may hash it into `digest`), undefined otherwise.
   */
  entry(h: TarHeader): Inode | undefined {
    this.#entry++;
    const c = this.#counts;
    c.entries++;
    if (h.type === 'file') c.fileBytes += h.size;
    const rel = normalizeEntryName(h.name, this.#absolute);
    if (rel === '') {
      if (h.type !== 'directory') {
        throw new UnsafePathError(
          h.name,
          `a ${h.type} entry for the root itself would replace the root directory (CVE-2021-29136)`,
        );
      }
      this.#rootEntry = true;
      this.#setDirMeta(this.root, h);
      return undefined;
    }
    if (rel.includes('.wh.') && this.#whiteout(rel, h)) return undefined;
    switch (h.type) {
      case 'directory':
        this.#directory(h, rel);
        return undefined;
      case 'hardlink':
        this.#hardlink(h, rel);
        return undefined;
      default:
        return this.#leaf(h, rel);
    }
  }

  // --- directories ---------------------------------------------------------------------

  /**
   * The directory `rel`, made (implicitly) where missing; a non-directory in the way is
   * replaced, a symlink in the way is ERR_UNSAFE_PATH naming `entry`.
   */
  #ensureDir(rel: string, entry: string): DirNode {
    let dir = this.root;
    if (rel === '') return dir;
    let path = '';
    for (const part of rel.split('/')) {
      path = join(path, part);
      const child = dir.children.get(part);
      if (child?.kind === 'dir') {
        dir = child;
        continue;
      }
      if (child !== undefined) {
        if (child.inode.type === 'symlink') {
          throw new UnsafePathError(
            entry,
            `its parent directory ${JSON.stringify(path)} is a symbolic link; writing through it could leave the root`,
          );
        }
        this.#unlink(dir, part, 'shadowed');
      }
      const made = newDir(this.#layer, true);
      dir.children.set(part, made);
      for (let d = path; d !== '' && !this.#ancestors.has(d); d = parentOf(d)) this.#ancestors.add(d);
      dir = made;
    }
    return dir;
  }

  /**
   * The directory `rel` if it exists and is reached through directories only; undefined when
   * something on the way is missing or not a directory; a symlink on the way is ERR_UNSAFE_PATH.
   */
  #existingDir(rel: string, entry: string): DirNode | undefined {
    let dir = this.root;
    if (rel === '') return dir;
    let path = '';
    for (const part of rel.split('/')) {
      path = join(path, part);
      const child = dir.children.get(part);
      if (child === undefined) return undefined;
      if (child.kind === 'leaf') {
        if (child.inode.type === 'symlink') {
          throw new UnsafePathError(
            entry,
            `the path goes through ${JSON.stringify(path)}, which is a symbolic link; following it could leave the root`,
          );
        }
        return undefined;
      }
      dir = child;
    }
    return dir;
  }

  #setDirMeta(dir: DirNode, h: TarHeader): void {
    dir.mode = h.mode;
    dir.uid = h.uid;
    dir.gid = h.gid;
    dir.mtime = h.mtime;
    dir.implicit = false;
    if (h.xattrs !== undefined && h.xattrs.size > 0) {
      dir.xattrs ??= new Map();
      for (const [k, v] of h.xattrs) dir.xattrs.set(k, v);
    }
  }

  #directory(h: TarHeader, rel: string): void {
    const parent = this.#ensureDir(parentOf(rel), h.name);
    const name = baseOf(rel);
    const old = parent.children.get(name);
    let existed: Existed;
    if (old?.kind === 'dir') {
      if (this.#written.has(rel)) existed = 'ours';
      else if (old.implicit && old.layer === this.#layer)
        existed = undefined; // made for an entry below: new
      else {
        const same =
          old.mode === h.mode &&
          old.uid === h.uid &&
          old.gid === h.gid &&
          sameXattrsAfterMerge(old.xattrs, h.xattrs);
        existed = same ? 'same' : 'lower';
      }
      this.#setDirMeta(old, h);
    } else {
      existed = this.#clear(parent, rel, name);
      const dir = newDir(this.#layer, false);
      this.#setDirMeta(dir, h);
      parent.children.set(name, dir);
    }
    this.#markWritten(rel, existed);
  }

  // --- files, links, devices --------------------------------------------------------------

  #leaf(h: TarHeader, rel: string): Inode | undefined {
    if (h.type === 'symlink' && h.linkname === '') {
      throw new StratumError(
        'ERR_INVALID_ARCHIVE',
        `layer entry ${JSON.stringify(h.name)}: a symlink with an empty target`,
      );
    }
    const parent = this.#ensureDir(parentOf(rel), h.name);
    const name = baseOf(rel);
    const existed = this.#clear(parent, rel, name);
    const inode: Inode = {
      type: h.type as LeafType,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      mtime: h.mtime,
      size: h.type === 'file' ? h.realSize : 0,
      stored: h.type === 'file' ? h.size : 0,
      linkname: h.type === 'symlink' ? h.linkname : '',
      devmajor: h.type === 'char' || h.type === 'block' ? h.devmajor : 0,
      devminor: h.type === 'char' || h.type === 'block' ? h.devminor : 0,
      xattrs: h.xattrs !== undefined && h.xattrs.size > 0 ? h.xattrs : undefined,
      layer: this.#layer,
      entry: this.#entry,
      path: rel,
      digest: undefined,
      links: 1,
    };
    parent.children.set(name, { kind: 'leaf', inode });
    this.#markWritten(rel, existed);
    return h.type === 'file' ? inode : undefined;
  }

  #hardlink(h: TarHeader, rel: string): void {
    let target: string;
    try {
      target = normalizeEntryName(h.linkname, this.#absolute);
    } catch (e) {
      if (e instanceof UnsafePathError) {
        throw new UnsafePathError(
          h.name,
          `its hard link target ${JSON.stringify(h.linkname)} is unsafe: ${e.message}`,
        );
      }
      throw e;
    }
    if (target === '') throw new UnsafePathError(h.name, 'a hard link to the root directory');
    if (target === rel) {
      this.#counts.skipped++;
      return;
    }
    const find = (): UnionNode | undefined =>
      this.#existingDir(parentOf(target), h.name)?.children.get(baseOf(target));
    if (find()?.kind === 'dir') {
      throw new UnsafePathError(h.name, `its hard link target ${JSON.stringify(h.linkname)} is a directory`);
    }
    const parent = this.#ensureDir(parentOf(rel), h.name);
    const found = find(); // making the parent may have replaced the target
    if (found === undefined || found.kind === 'dir') {
      throw new StratumError(
        'ERR_INVALID_ARCHIVE',
        `layer entry ${JSON.stringify(h.name)}: its hard link target ${JSON.stringify(h.linkname)} does not exist`,
      );
    }
    const name = baseOf(rel);
    const old = parent.children.get(name);
    let existed: Existed;
    if (old?.kind === 'leaf' && old.inode === found.inode) {
      existed = this.#written.has(rel) ? 'ours' : 'lower';
    } else {
      existed = this.#clear(parent, rel, name);
      found.inode.links++;
      parent.children.set(name, { kind: 'leaf', inode: found.inode });
    }
    this.#markWritten(rel, existed);
  }

  /** Make room at `rel` (in `parent`) for a new entry: what was there goes. */
  #clear(parent: DirNode, rel: string, name: string): Existed {
    const old = parent.children.get(name);
    if (old === undefined) return undefined;
    const ours = this.#written.has(rel);
    if (old.kind === 'dir') {
      this.#dropTree(old, 'shadowed');
      parent.children.delete(name);
      // what this layer wrote below is gone too
      const prefix = `${rel}/`;
      for (const p of this.#written) if (p.startsWith(prefix)) this.#written.delete(p);
    } else {
      this.#unlink(parent, name, 'shadowed');
    }
    return ours ? 'ours' : 'lower';
  }

  #unlink(parent: DirNode, name: string, why: DropReason): void {
    const node = parent.children.get(name);
    if (node === undefined) return;
    parent.children.delete(name);
    if (node.kind === 'dir') {
      this.#dropTree(node, why);
      return;
    }
    this.#release(node.inode, why);
  }

  #release(inode: Inode, why: DropReason): void {
    inode.links--;
    if (inode.links === 0) this.#opts.drop?.(inode, why, this.#layer);
  }

  #dropTree(dir: DirNode, why: DropReason): void {
    const stack = [dir];
    while (stack.length > 0) {
      const d = stack.pop() as DirNode;
      for (const child of d.children.values()) {
        if (child.kind === 'dir') stack.push(child);
        else this.#release(child.inode, why);
      }
    }
  }

  #markWritten(rel: string, existed: Existed): void {
    const before = this.#written.has(rel);
    this.#written.add(rel);
    for (let d = parentOf(rel); d !== '' && !this.#ancestors.has(d); d = parentOf(d)) this.#ancestors.add(d);
    if (before || existed === 'ours' || existed === 'same') return; // counted once per layer
    const kind: PathChangeKind = existed === undefined ? 'added' : 'changed';
    this.#counts[kind]++;
    this.#paths?.push({ path: rel, kind });
  }

  // --- whiteouts ---------------------------------------------------------------------------

  /** Handle `rel` if it is a whiteout or aufs metadata (true); false for an ordinary name. */
  #whiteout(rel: string, h: TarHeader): boolean {
    if (rel.includes(WHITEOUT_META_PREFIX)) {
      const parts = rel.split('/');
      const last = parts[parts.length - 1] as string;
      if (
        parts.slice(0, -1).some((p) => p.startsWith(WHITEOUT_META_PREFIX)) ||
        (last.startsWith(WHITEOUT_META_PREFIX) && last !== WHITEOUT_OPAQUE)
      ) {
        this.#counts.skipped++;
        return true;
      }
    }
    const kind = classifyWhiteout(rel); // ERR_UNSAFE_PATH for .wh. / .wh.. / .wh...
    if (kind.kind === 'none') return false;
    const dir = parentOf(rel);
    if (kind.kind === 'opaque') {
      this.#counts.opaques++;
      const d = this.#existingDir(dir, h.name);
      if (d !== undefined)
        for (const name of [...d.children.keys()]) this.#removeLower(d, join(dir, name), name);
      return true;
    }
    if (kind.kind === 'whiteout') {
      this.#counts.whiteouts++;
      const d = this.#existingDir(dir, h.name);
      if (d !== undefined) this.#removeLower(d, join(dir, kind.target), kind.target);
      return true;
    }
    this.#counts.skipped++;
    return true;
  }

  /** Remove `rel` and what is below it, except what this layer wrote (and its ancestors). */
  #removeLower(parent: DirNode, rel: string, name: string): void {
    const node = parent.children.get(name);
    if (node === undefined) return;
    if (!this.#written.has(rel) && !this.#ancestors.has(rel)) {
      this.#unlink(parent, name, 'deleted');
      this.#counts.deleted++;
      this.#paths?.push({ path: rel, kind: 'deleted' });
      return;
    }
    if (node.kind !== 'dir') return;
    for (const child of [...node.children.keys()]) this.#removeLower(node, join(rel, child), child);
  }
}

function zeroCounts(): { -readonly [K in keyof LayerCounts]: number } {
  return { entries: 0, added: 0, changed: 0, deleted: 0, whiteouts: 0, opaques: 0, skipped: 0, fileBytes: 0 };
}

function sortedNames(dir: DirNode): string[] {
  return [...dir.children.keys()].sort(compareNames);
}

/**
 * Byte order of the UTF-8 names (what `tar --sort=name` and Go use). UTF-16 code units sort the
 * same way except surrogates against U+E000..U+FFFF, which are put in code point order here.
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let ca = a.charCodeAt(i);
    let cb = b.charCodeAt(i);
    if (ca === cb) continue;
    if (ca >= 0xd800 && cb >= 0xd800) {
      ca = ca >= 0xe000 ? ca - 0x800 : ca + 0x2000;
      cb = cb >= 0xe000 ? cb - 0x800 : cb + 0x2000;
    }
    return ca - cb;
  }
  return a.length - b.length;
}
