// Helpers the analyze tests share (no tests of its own): feed crafted tars to a UnionTree, and
// describe a UnionTree the way testing/tree.ts describes a directory on disk, so the model can
// be compared with what unpackers leave.

import { TarReader } from '../layer/tar-reader.js';
import type { TreeEntry } from '../testing/tree.js';
import { compareNames, type Inode, UnionTree, type UnionTreeOptions } from './union.js';

/** Apply whole tars (uncompressed), one per layer; each layer's counts are returned too. */
export function unionOf(
  tars: readonly Buffer[],
  opts: UnionTreeOptions = {},
): { tree: UnionTree; layers: ReturnType<UnionTree['endLayer']>[] } {
  const tree = new UnionTree(opts);
  const layers: ReturnType<UnionTree['endLayer']>[] = [];
  for (const [i, tar] of tars.entries()) {
    tree.beginLayer(i);
    const reader = new TarReader({
      entry: (h) => {
        tree.entry(h);
      },
      data: () => {},
      entryEnd: () => {},
    });
    reader.write(tar);
    reader.end();
    layers.push(tree.endLayer());
  }
  return { tree, layers };
}

/** Linux's st_rdev for a device number (glibc's makedev). */
function makedev(major: number, minor: number): number {
  return ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & ~0xff) << 12) | ((major & ~0xfff) * 2 ** 32);
}

function hexXattrs(
  x: ReadonlyMap<string, Buffer> | undefined,
  ignore: readonly string[],
): Record<string, string> | undefined {
  if (x === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const k of [...x.keys()].sort(compareNames)) {
    if (ignore.some((p) => k.startsWith(p))) continue;
    out[k] = `0x${(x.get(k) as Buffer).toString('hex')}`;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * The tree as testing/tree.ts's describeTree would list it after an unpack: sha256 only where
 * the model hashed files, mtimes (whole seconds) of files and symlinks when asked.
 */
export function describeUnion(
  tree: UnionTree,
  opts: { mtimes?: boolean; ignoreXattrs?: readonly string[] } = {},
): TreeEntry[] {
  const ignore = opts.ignoreXattrs ?? [];
  const groups = new Map<Inode, string[]>();
  for (const [path, node] of tree.walk()) {
    if (node.kind === 'leaf' && node.inode.type === 'file') {
      groups.set(node.inode, [...(groups.get(node.inode) ?? []), path]);
    }
  }
  const out: TreeEntry[] = [];
  for (const [path, node] of tree.walk()) {
    if (node.kind === 'dir') {
      const x = hexXattrs(node.xattrs, ignore);
      out.push({
        path,
        type: 'dir',
        mode: node.mode,
        uid: node.uid,
        gid: node.gid,
        ...(x ? { xattrs: x } : {}),
      });
      continue;
    }
    const i = node.inode;
    const base = { path, type: i.type, mode: i.mode, uid: i.uid, gid: i.gid } as const;
    const mt =
      opts.mtimes && (i.type === 'file' || i.type === 'symlink') ? { mtime: Math.floor(i.mtime) } : {};
    let e: TreeEntry;
    if (i.type === 'file') {
      e = { ...base, ...mt, size: i.size, ...(i.digest ? { sha256: i.digest.slice('sha256:'.length) } : {}) };
    } else if (i.type === 'symlink') e = { ...base, ...mt, link: i.linkname };
    else if (i.type === 'char' || i.type === 'block') e = { ...base, rdev: makedev(i.devmajor, i.devminor) };
    else e = base;
    const x = hexXattrs(i.xattrs, ignore);
    const names = groups.get(i);
    const h = names && names.length > 1 ? names.filter((p) => p !== path).sort() : undefined;
    out.push({ ...e, ...(x ? { xattrs: x } : {}), ...(h ? { hardlinks: h } : {}) });
  }
  return out;
}
