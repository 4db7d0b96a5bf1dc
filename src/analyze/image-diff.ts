// diffImages: the paths that differ between two images' final filesystems, computed from their
// layer streams (image-tree.ts: whiteouts, opaque directories and hard links modelled as
// unpack applies them), without extracting either image.
//
// A path is added (only in b), removed (only in a) or changed, with what changed: its type,
// mode (permission bits incl. setuid/setgid/sticky), uid, gid, size, content, symlink target,
// device numbers, xattrs. Content is compared by sha256, computed while the layers stream;
// with `compare: 'fast'` nothing is hashed and a file's size and mtime stand in for its
// content (as rsync's quick check does). Otherwise mtimes are not compared (rebuilding an
// image touches them all), nor are directory mtimes ever, nor which names a file is hard-linked
// under. Everything below an added or removed directory is listed too. Paths start with `/`
// and come depth first, each directory's names in byte order; the root itself is `/`.
//
// Two images with the same diff_ids have the same filesystem: their layers are not read.

import type { Descriptor } from '../spec/types.js';
import { readImageTree } from './image-tree.js';
import type { ImageSourceOptions } from './layer-stream.js';
import { type ImageSource, openImage } from './layer-stream.js';
import { compareNames, type DirNode, type NodeType, type UnionNode } from './union.js';

export type DiffAttribute =
  | 'type'
  | 'mode'
  | 'uid'
  | 'gid'
  | 'size'
  | 'content'
  | 'mtime'
  | 'link'
  | 'device'
  | 'xattrs';

/** One side of a changed path. */
export interface PathState {
  readonly type: NodeType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Files: length. */
  readonly size?: number;
  /** Files, when contents were hashed. */
  readonly digest?: string;
  /** Files and symlinks: seconds since the epoch. */
  readonly mtime?: number;
  /** Symlinks: the target. */
  readonly link?: string;
  /** Devices: `major:minor`. */
  readonly device?: string;
  /** xattr names and values (hex). */
  readonly xattrs?: Readonly<Record<string, string>>;
}

export interface PathDiff {
  /** Starts with `/`. */
  readonly path: string;
  readonly kind: 'added' | 'removed' | 'changed';
  /** For 'changed': what differs. */
  readonly changes?: readonly DiffAttribute[];
  /** The path in image a ('removed', 'changed'). */
  readonly before?: PathState;
  /** The path in image b ('added', 'changed'). */
  readonly after?: PathState;
}

export interface ImageDiff {
  /** The two image manifests compared. */
  readonly a: Descriptor;
  readonly b: Descriptor;
  readonly added: number;
  readonly removed: number;
  readonly changed: number;
  readonly paths: readonly PathDiff[];
}

export interface DiffImagesOptions extends ImageSourceOptions {
  /** 'content' (default): compare file contents by sha256; 'fast': by size and mtime. */
  readonly compare?: 'content' | 'fast';
}

function stateOf(node: UnionNode, hashed: boolean): PathState {
  if (node.kind === 'dir') {
    return {
      type: 'directory',
      mode: node.mode,
      uid: node.uid,
      gid: node.gid,
      ...(node.xattrs && node.xattrs.size > 0 ? { xattrs: hexXattrs(node.xattrs) } : {}),
    };
  }
  const i = node.inode;
  return {
    type: i.type,
    mode: i.mode,
    uid: i.uid,
    gid: i.gid,
    ...(i.type === 'file' ? { size: i.size } : {}),
    ...(i.type === 'file' && hashed && i.digest !== undefined ? { digest: i.digest } : {}),
    ...(i.type === 'file' || i.type === 'symlink' ? { mtime: Math.floor(i.mtime) } : {}),
    ...(i.type === 'symlink' ? { link: i.linkname } : {}),
    ...(i.type === 'char' || i.type === 'block' ? { device: `${i.devmajor}:${i.devminor}` } : {}),
    ...(i.xattrs && i.xattrs.size > 0 ? { xattrs: hexXattrs(i.xattrs) } : {}),
  };
}

function hexXattrs(x: ReadonlyMap<string, Buffer>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of [...x.keys()].sort(compareNames)) out[k] = `0x${(x.get(k) as Buffer).toString('hex')}`;
  return out;
}

function sameXattrs(a: PathState['xattrs'], b: PathState['xattrs']): boolean {
  return JSON.stringify(a ?? {}) === JSON.stringify(b ?? {});
}

function changesOf(a: PathState, b: PathState, fast: boolean): DiffAttribute[] {
  if (a.type !== b.type) return ['type'];
  const out: DiffAttribute[] = [];
  if (a.mode !== b.mode) out.push('mode');
  if (a.uid !== b.uid) out.push('uid');
  if (a.gid !== b.gid) out.push('gid');
  if (a.type === 'file') {
    if (a.size !== b.size) out.push('size');
    if (fast) {
      if (a.mtime !== b.mtime) out.push('mtime');
    } else if (a.size === b.size && a.digest !== b.digest) out.push('content');
  }
  if (a.link !== b.link) out.push('link');
  if (a.device !== b.device) out.push('device');
  if (!sameXattrs(a.xattrs, b.xattrs)) out.push('xattrs');
  return out;
}

/** The paths that differ between image a's filesystem and image b's (see the top of this file). */
export async function diffImages(
  a: ImageSource,
  b: ImageSource,
  opts: DiffImagesOptions = {},
): Promise<ImageDiff> {
  const fast = opts.compare === 'fast';
  const [oa, ob] = await Promise.all([openImage(a, opts), openImage(b, opts)]);
  const empty = {
    a: oa.image.descriptor,
    b: ob.image.descriptor,
    added: 0,
    removed: 0,
    changed: 0,
    paths: [],
  };
  if (oa.diffIds.length === ob.diffIds.length && oa.diffIds.every((d, i) => d === ob.diffIds[i]))
    return empty;
  // one after the other: the layers of both would compete for the same two cores
  const ta = await readImageTree(oa.image, { ...opts, hash: !fast });
  const tb = await readImageTree(ob.image, { ...opts, hash: !fast });
  const paths: PathDiff[] = [];
  const counts = { added: 0, removed: 0, changed: 0 };
  const all = (path: string, node: UnionNode, kind: 'added' | 'removed'): void => {
    const state = stateOf(node, !fast);
    paths.push({ path: `/${path}`, kind, ...(kind === 'added' ? { after: state } : { before: state }) });
    counts[kind]++;
    if (node.kind === 'dir') {
      for (const name of [...node.children.keys()].sort(compareNames)) {
        all(`${path}/${name}`, node.children.get(name) as UnionNode, kind);
      }
    }
  };
  const compare = (path: string, na: UnionNode, nb: UnionNode): void => {
    const sa = stateOf(na, !fast);
    const sb = stateOf(nb, !fast);
    const changes = changesOf(sa, sb, fast);
    if (changes.length > 0) {
      paths.push({ path: path === '' ? '/' : `/${path}`, kind: 'changed', changes, before: sa, after: sb });
      counts.changed++;
    }
    const da = na.kind === 'dir' ? na : undefined;
    const db = nb.kind === 'dir' ? nb : undefined;
    if (da === undefined && db === undefined) return;
    const names = new Set<string>([...(da?.children.keys() ?? []), ...(db?.children.keys() ?? [])]);
    for (const name of [...names].sort(compareNames)) {
      const child = path === '' ? name : `${path}/${name}`;
      const ca = da?.children.get(name);
      const cb = db?.children.get(name);
      if (ca !== undefined && cb !== undefined) compare(child, ca, cb);
      else if (ca !== undefined) all(child, ca, 'removed');
      else if (cb !== undefined) all(child, cb, 'added');
    }
  };
  compare('', ta.tree.root as DirNode, tb.tree.root as DirNode);
  return { ...empty, ...counts, paths };
}
