// Test helper: describe a directory tree (path, type, mode, uid, gid, size, content hash,
// link target, device numbers, xattrs, hardlink groups) and compare two trees, listing
// every difference. xattrs come from `getfattr` (Debian package `attr`) when installed, read
// by the layer code's parser (octal escapes undone).

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { readTreeXattrs } from '../layer/xattr-read.js';

export interface TreeEntry {
  readonly path: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  readonly mode: number; // permission bits incl. setuid/setgid/sticky
  readonly uid: number;
  readonly gid: number;
  readonly size?: number;
  readonly sha256?: string;
  readonly link?: string;
  readonly rdev?: number;
  readonly mtime?: number; // seconds, only when asked
  readonly xattrs?: Readonly<Record<string, string>>;
  /** Other paths of the same inode (hardlinks), sorted. */
  readonly hardlinks?: readonly string[];
}

export interface TreeOptions {
  /** Include mtimes (seconds) for files and symlinks. */
  readonly mtimes?: boolean;
  /** Read xattrs with getfattr (if installed). Default true. */
  readonly xattrs?: boolean;
  /** Paths (relative, no leading /) to leave out, with everything below them. */
  readonly exclude?: readonly string[];
  /** xattr names to ignore (prefix match), e.g. 'trusted.overlay.'. */
  readonly ignoreXattrs?: readonly string[];
}

function typeOf(s: import('node:fs').Stats): TreeEntry['type'] {
  if (s.isFile()) return 'file';
  if (s.isDirectory()) return 'dir';
  if (s.isSymbolicLink()) return 'symlink';
  if (s.isCharacterDevice()) return 'char';
  if (s.isBlockDevice()) return 'block';
  if (s.isFIFO()) return 'fifo';
  return 'socket';
}

export const haveGetfattr = existsSync('/usr/bin/getfattr');

async function readXattrs(
  root: string,
  ignore: readonly string[],
): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>();
  if (!haveGetfattr) return out;
  // the layer code's getfattr reader undoes its octal escapes and keeps names as bytes
  for (const [rel, list] of await readTreeXattrs(root)) {
    const rec: Record<string, string> = {};
    for (const [name, value] of list) {
      if (!ignore.some((p) => name.startsWith(p))) rec[name] = `0x${Buffer.from(value).toString('hex')}`;
    }
    if (Object.keys(rec).length > 0) out.set(Buffer.from(rel, 'latin1').toString('utf8'), rec);
  }
  return out;
}

/** Describe every entry below `root` (the root itself is not listed), sorted by path. */
export async function describeTree(root: string, opts: TreeOptions = {}): Promise<TreeEntry[]> {
  const entries: TreeEntry[] = [];
  const inodes = new Map<string, string[]>();
  const exclude = new Set(opts.exclude ?? []);
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      if (exclude.has(path)) continue;
      const abs = join(root, path);
      const s = await lstat(abs);
      const type = typeOf(s);
      const base = { path, type, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid };
      const mt = opts.mtimes && type !== 'dir' ? { mtime: Math.floor(s.mtimeMs / 1000) } : {};
      if (type === 'file') {
        const key = `${s.dev}:${s.ino}`;
        if (s.nlink > 1) inodes.set(key, [...(inodes.get(key) ?? []), path]);
        const sha256 = createHash('sha256')
          .update(await readFile(abs))
          .digest('hex');
        entries.push({ ...base, ...mt, size: s.size, sha256 });
      } else if (type === 'symlink') {
        entries.push({ ...base, ...mt, link: await readlink(abs) });
      } else if (type === 'char' || type === 'block') {
        entries.push({ ...base, rdev: s.rdev });
      } else {
        entries.push(base);
      }
      if (type === 'dir') await walk(path);
    }
  };
  await walk('');
  const xattrs = opts.xattrs === false ? new Map() : await readXattrs(root, opts.ignoreXattrs ?? []);
  const groups = new Map<string, string[]>();
  for (const paths of inodes.values()) {
    if (paths.length < 2) continue;
    for (const p of paths) groups.set(p, paths.filter((q) => q !== p).sort());
  }
  return entries.map((e) => {
    const x = xattrs.get(e.path);
    const h = groups.get(e.path);
    return { ...e, ...(x ? { xattrs: x } : {}), ...(h ? { hardlinks: h } : {}) };
  });
}

/** Differences between two trees, as readable lines (empty = the same). */
export function compareTrees(
  a: readonly TreeEntry[],
  b: readonly TreeEntry[],
  names = ['left', 'right'],
): string[] {
  const out: string[] = [];
  const ma = new Map(a.map((e) => [e.path, e]));
  const mb = new Map(b.map((e) => [e.path, e]));
  for (const [path, ea] of ma) {
    const eb = mb.get(path);
    if (!eb) {
      out.push(`only in ${names[0]}: ${path} (${ea.type})`);
      continue;
    }
    const ja = JSON.stringify(ea);
    const jb = JSON.stringify(eb);
    if (ja !== jb) out.push(`differs: ${path}\n  ${names[0]}: ${ja}\n  ${names[1]}: ${jb}`);
  }
  for (const [path, eb] of mb) if (!ma.has(path)) out.push(`only in ${names[1]}: ${path} (${eb.type})`);
  return out;
}
