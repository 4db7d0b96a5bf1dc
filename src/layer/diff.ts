// Making a layer: the changes between two directory trees (diffTrees), or the contents of an
// overlayfs upper directory (diffOverlayUpper), written as a deterministic tar, compressed,
// with diffID, digest and size computed in the same pass.
//
// How it works. (1) Scan: the tree (both trees for diffTrees) is read with synchronous
// readdir + lstat on this thread — on tmpfs and page cache that is 3-4x faster than the same
// calls through the thread pool, which stays free for compression — while `getfattr` reads
// every xattr of the tree in another process (xattr-read.ts). (2) Decide, once the xattrs are
// in: what goes into the layer, in order. (3) Write: headers and file bodies go into 4 MiB
// blocks (headers are encoded in place, file bodies read straight into the block), and blocks
// are compressed in parallel (layer-output.ts); this thread only reads, hashes and frames
// while the pool compresses. Reads are synchronous too: a tree that was just written is in the
// page cache; on a cold disk the reads are serial (one file at a time).
//
// What counts as changed (diffTrees), as containerd's fs.Changes decides: an entry is changed
// when its type, permission bits (incl. setuid/setgid/sticky), uid, gid or xattrs differ; a
// symlink also when its target differs, a device when its number differs, a regular file when
// its size or mtime differs — and when both mtimes are whole seconds (a tar extraction drops
// the fraction, so equal seconds prove nothing) the contents are compared byte for byte.
// `compareContent: 'always'` ignores file mtimes and compares contents whenever sizes agree
// (like umoci's mtree check of sha256 digests). Directory, symlink and device mtimes do not
// count. A directory that is not changed itself is still written when anything below it is
// (its parents come first, so an applier never has to invent them). A deleted path becomes
// `.wh.NAME` (one entry for a whole deleted directory); with `opaque` a directory whose old
// contents all went away (or one the caller names) becomes `.wh..wh..opq` plus its contents.
//
// Order and determinism: depth first, each directory's entries sorted bytewise by the name
// written (so `.wh.x` sorts as itself), as `tar --sort=name` and Go's filepath.Walk do; an
// opaque marker comes right after its directory. Names are relative (`etc/passwd`, directories
// end with `/`), the root itself is not written. Hardlinks (same device and inode, non-
// directories) become hardlink entries to the first path written; when any path of a hard-
// linked file changed, all its paths in the upper tree go in, so the link survives the apply
// (a first decide pass finds those files). uname/gname are empty; no
// atime/ctime; mtimes are whole seconds, clamped to SOURCE_DATE_EPOCH when one is given
// (`sourceDateEpoch` or the environment); whiteouts carry their directory's mtime (overlay: the
// whiteout device's), mode 0 and owner 0:0. Sockets cannot be put in a tar and are left out
// with a warning. The same tree (names, contents, metadata) always gives the same diffID; the
// compressed digest also depends on the compression engine (see parallel-gzip.ts).
//
// xattrs go in as PAX `SCHILY.xattr.NAME`. Never: `trusted.overlay.*` (overlay bookkeeping),
// `user.overlay.*` for an upper made with `userxattr`; by default also `security.selinux` (a
// host's label, not the image's) — an `xattrFilter` replaces that default.
//
// overlayfs upper (diffOverlayUpper): everything in the upper directory is a change; a 0/0
// character device is a whiteout (`.wh.NAME`), a directory with `trusted.overlay.opaque=y`
// gets `.wh..wh..opq` and its contents. Uppers that depend on their lower layers — files with
// `trusted.overlay.metacopy` (metacopy=on) or directories with `trusted.overlay.redirect`
// (redirect_dir=on) — are refused: the data is not in the upper directory.

import {
  type BigIntStats,
  closeSync,
  constants,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  realpathSync,
  type Stats,
  statSync,
} from 'node:fs';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import type { Compression } from '../compression/compression.js';
import type { Digest } from '../digest/digest.js';
import { abortError, SizeMismatchError, StratumError } from '../errors/errors.js';
import { layerMediaType } from '../spec/media-types.js';
import { LayerOutput } from './layer-output.js';
import {
  BLOCK,
  encodeHeader,
  splitDevice,
  type TarWriteHeader,
  type TarWriteType,
  writeHeader,
  type Xattr,
} from './tar-writer.js';
import { isOverlayOpaqueValue, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout.js';
import { getfattrPath, readTreeXattrs } from './xattr-read.js';

/**
 * The gzip level layers are made with unless the caller says otherwise. 5, not zlib's usual 6:
 * measured on this project's 2-core machine (bench/diff), level 5 takes 21-31 % less CPU than
 * level 6 for 0.4-1 % more bytes (generated tree: 128.5 MB against 127.1 MB; /usr/share: 242.8
 * against 241.8 MB), and its output is still smaller than umoci's or Go's default gzip.
 */
export const DEFAULT_LAYER_GZIP_LEVEL = 5;

export interface LayerWriteOptions {
  /** Where the (compressed) layer goes: a file path (created or truncated) or a Writable (ended when done). */
  readonly destination: string | Writable;
  /** 'gzip' (default), 'zstd' or 'none'. */
  readonly compression?: Compression;
  /** gzip 0-9 (default 5, see DEFAULT_LAYER_GZIP_LEVEL), zstd 1-19 (default 3). */
  readonly level?: number;
  /** gzip in parallel blocks (default) or as one zlib stream. */
  readonly gzipEngine?: 'parallel' | 'stream';
  /** gzip blocks compressed at once (default: the number of CPUs). */
  readonly concurrency?: number;
  /**
   * Clamp every mtime to this (seconds since the epoch, or a Date). Default: the
   * SOURCE_DATE_EPOCH environment variable when set; null ignores the environment.
   */
  readonly sourceDateEpoch?: number | Date | null;
  /**
   * Put xattrs in the layer (and compare them): 'auto' (default) when the getfattr program is
   * installed (a warning says when it is not), true requires it, false never.
   */
  readonly xattrs?: boolean | 'auto';
  /** Which xattr names to keep (replaces the default that drops `security.selinux`). */
  readonly xattrFilter?: (name: string) => boolean;
  readonly signal?: AbortSignal;
}

export interface DiffTreesOptions extends LayerWriteOptions {
  /**
   * Opaque directories: 'never' (default: one whiteout per deleted entry), 'auto' (a directory
   * none of whose old entries is left becomes `.wh..wh..opq` + its new contents), or a
   * function of the directory's relative path ('' is the root) that says which to make opaque.
   */
  readonly opaque?: 'never' | 'auto' | ((path: string) => boolean);
  /** 'auto' (default): containerd's rule, see above; 'always': ignore file mtimes, compare contents. */
  readonly compareContent?: 'auto' | 'always';
}

export interface OverlayDiffOptions extends LayerWriteOptions {
  /** The upper directory was used with overlayfs's `userxattr` (its xattrs are `user.overlay.*`). */
  readonly userXattr?: boolean;
}

export interface DiffResult {
  /** sha256 of the uncompressed tar. */
  readonly diffId: Digest;
  /** sha256 of the bytes written to the destination. */
  readonly digest: Digest;
  /** Bytes written to the destination. */
  readonly size: number;
  /** The OCI layer media type for the compression. */
  readonly mediaType: string;
  readonly compression: Compression;
  /** Tar entries written (whiteouts and markers included, PAX headers not). */
  readonly entries: number;
  /** Bytes of uncompressed tar. */
  readonly bytes: number;
  /** Things left out or not read, in words. */
  readonly warnings: readonly string[];
}

// --- scanning ------------------------------------------------------------------------------

type Kind = 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

interface Meta {
  readonly kind: Kind;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly rdev: number;
  /** `dev:ino` of a non-directory with more than one link (hardlink candidate). */
  readonly inode: string | undefined;
}

interface Node {
  /** Basename, byte string. */
  readonly name: string;
  up: Meta | undefined;
  low: Meta | undefined;
  link: string | undefined;
  lowLink: string | undefined;
  /** Upper is a directory: its entries (merged with the lower directory's), sorted by name. */
  children: Node[] | undefined;
  /** Compared with the lower entry: differs (memo of the decide passes). */
  changed: boolean | undefined;
}

function kindOf(st: Stats): Kind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

/** A byte-string path as a Buffer for fs calls. */
function fsPath(p: string): Buffer {
  return Buffer.from(p, 'latin1');
}

function metaOf(abs: string): Meta | undefined {
  const p = fsPath(abs);
  const st = lstatSync(p, { throwIfNoEntry: false });
  if (st === undefined) return undefined;
  const kind = kindOf(st);
  let inode: string | undefined;
  if (st.nlink > 1 && kind !== 'directory') {
    // exact 64-bit inode numbers: a double could merge two inodes
    const big = lstatSync(p, { bigint: true, throwIfNoEntry: false }) as BigIntStats | undefined;
    if (big !== undefined) inode = `${big.dev}:${big.ino}`;
  }
  return {
    kind,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: kind === 'file' ? st.size : 0,
    mtimeMs: st.mtimeMs,
    rdev: st.rdev,
    inode,
  };
}

function readNames(abs: string): string[] {
  const names = readdirSync(fsPath(abs), { encoding: 'buffer' }).map((b) => b.toString('latin1'));
  // byte strings: UTF-16 code unit order is byte order
  return names.sort();
}

function linkOf(abs: string): string {
  return readlinkSync(fsPath(abs), { encoding: 'buffer' }).toString('latin1');
}

interface ScanContext {
  readonly opaque: ((rel: string) => boolean) | undefined;
  readonly signal: AbortSignal | undefined;
  count: number;
  /** Some upper entry has other hard links. */
  links: boolean;
}

function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

function check(ctx: ScanContext): void {
  if (++ctx.count % 4096 === 0 && ctx.signal?.aborted) throw abortError(ctx.signal);
}

/** Scan upper directory `rel` against lower (undefined: no lower) into merged, sorted nodes. */
function scanDir(ctx: ScanContext, rel: string, upAbs: string, lowAbs: string | undefined): Node[] {
  const upNames = readNames(upAbs);
  const lowNames = lowAbs === undefined ? [] : readNames(lowAbs);
  const nodes: Node[] = [];
  let i = 0;
  let j = 0;
  while (i < upNames.length || j < lowNames.length) {
    const u = upNames[i];
    const l = lowNames[j];
    let name: string;
    let inUp = false;
    let inLow = false;
    if (l === undefined || (u !== undefined && u < l)) {
      name = u as string;
      inUp = true;
      i++;
    } else if (u === undefined || l < u) {
      name = l;
      inLow = true;
      j++;
    } else {
      name = u;
      inUp = inLow = true;
      i++;
      j++;
    }
    check(ctx);
    const upPath = `${upAbs}/${name}`;
    const lowPath = `${lowAbs}/${name}`;
    const up = inUp ? metaOf(upPath) : undefined;
    const low = inLow ? metaOf(lowPath) : undefined;
    if (up === undefined && low === undefined) continue;
    const node: Node = {
      name,
      up,
      low,
      link: up?.kind === 'symlink' ? linkOf(upPath) : undefined,
      lowLink: low?.kind === 'symlink' ? linkOf(lowPath) : undefined,
      children: undefined,
      changed: undefined,
    };
    if (up?.inode !== undefined) ctx.links = true;
    if (up?.kind === 'directory') {
      const childRel = join(rel, name);
      const lowerDir = low?.kind === 'directory' && !ctx.opaque?.(childRel) ? lowPath : undefined;
      node.children = scanDir(ctx, childRel, upPath, lowerDir);
    }
    nodes.push(node);
  }
  return nodes;
}

// --- deciding ------------------------------------------------------------------------------

type Rec =
  | {
      readonly t: 'entry';
      readonly rel: string;
      readonly abs: string;
      readonly m: Meta;
      readonly link: string | undefined;
      readonly xattrs: readonly Xattr[] | undefined;
    }
  | { readonly t: 'marker'; readonly rel: string; readonly mtimeMs: number };

interface DecideContext {
  readonly upRoot: string;
  readonly lowRoot: string | undefined;
  readonly upX: ReadonlyMap<string, readonly Xattr[]>;
  readonly lowX: ReadonlyMap<string, readonly Xattr[]>;
  readonly keep: (name: string) => boolean;
  readonly emitXattrs: boolean;
  readonly overlay: { readonly prefix: string } | undefined;
  readonly opaque: 'never' | 'auto' | ((rel: string) => boolean);
  readonly alwaysContent: boolean;
  readonly out: Rec[];
  readonly warnings: string[];
  readonly scratch: [Buffer, Buffer];
  /** Inodes (`dev:ino`) of which some path goes into the layer: every path of them must. */
  readonly changedInodes: Set<string>;
}

/** A byte string as text (names that are not UTF-8 get U+FFFD). */
function utf8(bytes: string): string {
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

function shown(rel: string): string {
  return JSON.stringify(utf8(rel));
}

function filtered(
  list: readonly Xattr[] | undefined,
  keep: (name: string) => boolean,
): readonly Xattr[] | undefined {
  if (list === undefined) return undefined;
  const kept = list.filter(([n]) => keep(n));
  return kept.length === 0 ? undefined : kept;
}

function sameXattrs(a: readonly Xattr[] | undefined, b: readonly Xattr[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  return a.every(([n, v], k) => {
    const o = b[k] as Xattr;
    return o[0] === n && Buffer.compare(o[1], v) === 0;
  });
}

function sameContent(ctx: DecideContext, a: string, b: string, size: number): boolean {
  if (size === 0) return true;
  const [ba, bb] = ctx.scratch;
  const fa = openSync(fsPath(a), constants.O_RDONLY);
  try {
    const fb = openSync(fsPath(b), constants.O_RDONLY);
    try {
      let pos = 0;
      while (pos < size) {
        const want = Math.min(ba.length, size - pos);
        const na = readFull(fa, ba, want, pos);
        const nb = readFull(fb, bb, want, pos);
        if (na !== nb || ba.compare(bb, 0, nb, 0, na) !== 0) return false;
        if (na < want) return true; // both shrank the same way; the write will notice
        pos += na;
      }
      return true;
    } finally {
      closeSync(fb);
    }
  } finally {
    closeSync(fa);
  }
}

function readFull(fd: number, buf: Buffer, want: number, pos: number): number {
  let got = 0;
  while (got < want) {
    const n = readSync(fd, buf, got, want - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

function wholeSecond(ms: number): boolean {
  return ms % 1000 === 0;
}

/** Whether an entry present in both trees, of the same kind, is unchanged. */
function unchanged(ctx: DecideContext, node: Node, rel: string, up: Meta, low: Meta): boolean {
  if (up.mode !== low.mode || up.uid !== low.uid || up.gid !== low.gid) return false;
  if (
    ctx.emitXattrs &&
    !sameXattrs(filtered(ctx.upX.get(rel), ctx.keep), filtered(ctx.lowX.get(rel), ctx.keep))
  )
    return false;
  switch (up.kind) {
    case 'symlink':
      return node.link === node.lowLink;
    case 'char':
    case 'block':
      return up.rdev === low.rdev;
    case 'file': {
      if (up.size !== low.size) return false;
      if (!ctx.alwaysContent) {
        if (Math.floor(up.mtimeMs / 1000) !== Math.floor(low.mtimeMs / 1000)) return false;
        if (!(wholeSecond(up.mtimeMs) && wholeSecond(low.mtimeMs))) return up.mtimeMs === low.mtimeMs;
      }
      return sameContent(ctx, `${ctx.upRoot}/${rel}`, `${ctx.lowRoot}/${rel}`, up.size);
    }
    default:
      return true;
  }
}

function overlayXattr(ctx: DecideContext, rel: string, name: string): Uint8Array | undefined {
  const list = ctx.upX.get(rel);
  const full = `${(ctx.overlay as { prefix: string }).prefix}${name}`;
  return list?.find(([n]) => n === full)?.[1];
}

function entry(ctx: DecideContext, rel: string, m: Meta, link: string | undefined): Rec {
  return {
    t: 'entry',
    rel,
    abs: `${ctx.upRoot}/${rel}`,
    m,
    link,
    xattrs: ctx.emitXattrs ? filtered(ctx.upX.get(rel), ctx.keep) : undefined,
  };
}

/**
 * Append the records for the entries of directory `rel` (whose upper mtime is `dirMtimeMs`).
 * `added`: the directory is new (or opaque), so nothing below it is compared with a lower one.
 */
function decideDir(
  ctx: DecideContext,
  rel: string,
  nodes: readonly Node[],
  dirMtimeMs: number,
  added: boolean,
): void {
  // the name each node is written under; whiteouts sort as `.wh.NAME`
  const items: { key: string; node: Node }[] = [];
  let resort = false;
  for (const node of nodes) {
    const up = node.up;
    if (up === undefined || (ctx.overlay && up.kind === 'char' && up.rdev === 0)) {
      // deleted (lower only), or an overlay whiteout device
      if (added && !ctx.overlay) continue;
      if (node.name.startsWith(WHITEOUT_PREFIX)) {
        ctx.warnings.push(
          `cannot record the deletion of ${shown(join(rel, node.name))}: its name starts with ".wh."`,
        );
        continue;
      }
      items.push({ key: `${WHITEOUT_PREFIX}${node.name}`, node });
      resort = true;
      continue;
    }
    if (node.name.startsWith(WHITEOUT_PREFIX)) {
      ctx.warnings.push(
        `left out ${shown(join(rel, node.name))}: a name that starts with ".wh." would be read as a whiteout`,
      );
      continue;
    }
    if (up.kind === 'socket') {
      ctx.warnings.push(`left out the socket ${shown(join(rel, node.name))}: a tar cannot hold sockets`);
      continue;
    }
    items.push({ key: node.name, node });
  }
  if (resort) items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

  for (const { key, node } of items) {
    const path = join(rel, node.name);
    const up = node.up;
    if (up === undefined || key !== node.name) {
      const mtimeMs = up === undefined ? dirMtimeMs : up.mtimeMs;
      ctx.out.push({ t: 'marker', rel: join(rel, key), mtimeMs });
      continue;
    }
    const low = added ? undefined : node.low;
    if (up.kind !== 'directory') {
      if (low !== undefined && low.kind === up.kind) {
        node.changed ??= !unchanged(ctx, node, path, up, low);
        // an unchanged path of a hard-linked file goes in when another path of it does, so
        // that the link survives (it is written as a hardlink entry, no content twice)
        if (!node.changed && !(up.inode !== undefined && ctx.changedInodes.has(up.inode))) continue;
      }
      if (up.inode !== undefined) ctx.changedInodes.add(up.inode);
      ctx.out.push(entry(ctx, path, up, node.link));
      continue;
    }
    const children = node.children ?? [];
    if (ctx.overlay) {
      const opaque = isOverlayOpaqueValue(overlayXattr(ctx, path, 'opaque'));
      ctx.out.push(entry(ctx, path, up, undefined));
      if (opaque) ctx.out.push({ t: 'marker', rel: join(path, WHITEOUT_OPAQUE), mtimeMs: up.mtimeMs });
      decideDir(ctx, path, children, up.mtimeMs, false);
      continue;
    }
    if (low === undefined || low.kind !== 'directory') {
      ctx.out.push(entry(ctx, path, up, undefined));
      decideDir(ctx, path, children, up.mtimeMs, true);
      continue;
    }
    const opaque = opaqueHere(ctx, path, children);
    const mark = ctx.out.length;
    ctx.out.push(entry(ctx, path, up, undefined));
    if (opaque) ctx.out.push({ t: 'marker', rel: join(path, WHITEOUT_OPAQUE), mtimeMs: up.mtimeMs });
    const changed = opaque || !unchanged(ctx, node, path, up, low);
    decideDir(ctx, path, children, up.mtimeMs, opaque);
    // an unchanged directory stays only as the parent of something that changed
    if (!changed && ctx.out.length === mark + 1) ctx.out.pop();
  }
}

function opaqueHere(ctx: DecideContext, rel: string, children: readonly Node[]): boolean {
  const o = ctx.opaque;
  if (o === 'never') return false;
  if (typeof o === 'function') return o(rel);
  // auto: the lower directory had entries and none of them is left
  return (
    children.some((c) => c.low !== undefined) &&
    children.every((c) => c.low === undefined || c.up === undefined)
  );
}

// --- writing -------------------------------------------------------------------------------

function tarType(kind: Kind): TarWriteType {
  return kind === 'socket' ? 'file' : kind;
}

/** The tar header of one record (hardlinks resolved against `firstPath`). */
function headerOf(rec: Rec, firstPath: Map<string, string>, clamp: (ms: number) => number): TarWriteHeader {
  if (rec.t === 'marker') {
    return { name: rec.rel, type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtime: clamp(rec.mtimeMs) };
  }
  const m = rec.m;
  // one object, filled in place (no spreads: this runs once per entry)
  const h: { -readonly [K in keyof TarWriteHeader]: TarWriteHeader[K] } = {
    name: rec.rel,
    type: 'file',
    mode: m.mode,
    uid: m.uid,
    gid: m.gid,
    size: 0,
    mtime: clamp(m.mtimeMs),
  };
  if (m.inode !== undefined) {
    const first = firstPath.get(m.inode);
    if (first !== undefined) {
      h.type = 'hardlink';
      h.linkname = first;
      return h;
    }
    firstPath.set(m.inode, rec.rel);
  }
  if (rec.xattrs !== undefined) h.xattrs = rec.xattrs;
  switch (m.kind) {
    case 'file':
      h.size = m.size;
      break;
    case 'directory':
      h.name = `${rec.rel}/`;
      h.type = 'directory';
      break;
    case 'symlink':
      h.type = 'symlink';
      h.linkname = rec.link ?? '';
      break;
    case 'char':
    case 'block': {
      const { major, minor } = splitDevice(m.rdev);
      h.type = m.kind;
      h.devmajor = major;
      h.devminor = minor;
      break;
    }
    default:
      h.type = tarType(m.kind);
  }
  return h;
}

async function writeRecords(
  out: LayerOutput,
  recs: readonly Rec[],
  epoch: number | undefined,
  signal: AbortSignal | undefined,
): Promise<number> {
  const firstPath = new Map<string, string>();
  const clamp = (ms: number): number => {
    const s = Math.floor(ms / 1000);
    return epoch !== undefined && s > epoch ? epoch : s;
  };
  let entries = 0;
  // awaits only where a block is full or a PAX header goes out: no promise per entry
  for (const rec of recs) {
    if (++entries % 1024 === 0 && signal?.aborted) throw abortError(signal);
    const h = headerOf(rec, firstPath, clamp);
    const p = putHeader(out, h);
    if (p) await p;
    if (h.type === 'file' && h.size > 0) await writeBody(out, (rec as { abs: string }).abs, h.size);
  }
  return entries;
}

/** Write a header; a promise only when a block had to be flushed or PAX records written. */
function putHeader(out: LayerOutput, h: TarWriteHeader): Promise<void> | undefined {
  if (out.pos >= out.buf.length) return (out.room() as Promise<void>).then(() => putHeader(out, h));
  // the common case: one ustar block written in place; PAX headers are built apart
  if (writeHeader(h, out.buf, out.pos)) {
    out.pos += BLOCK;
    return undefined;
  }
  return out.write(encodeHeader(h));
}

/** Copy `size` bytes of the file at `abs` into the output, straight into its blocks. */
async function writeBody(out: LayerOutput, abs: string, size: number): Promise<void> {
  const fd = openSync(fsPath(abs), constants.O_RDONLY);
  try {
    let pos = 0;
    while (pos < size) {
      if (out.pos >= out.buf.length) await out.room();
      const n = readSync(fd, out.buf, out.pos, Math.min(size - pos, out.buf.length - out.pos), pos);
      if (n === 0) {
        throw new SizeMismatchError(
          size,
          pos,
          `${Buffer.from(abs, 'latin1').toString('utf8')} (the file shrank while the layer was being written)`,
        );
      }
      out.pos += n;
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  out.pad();
}

// --- entry points ----------------------------------------------------------------------------

function resolveEpoch(v: number | Date | null | undefined): number | undefined {
  if (v === null) return undefined;
  if (v instanceof Date) v = Math.floor(v.getTime() / 1000);
  if (v === undefined) {
    const env = process.env.SOURCE_DATE_EPOCH;
    if (env === undefined || env === '') return undefined;
    if (!/^\d{1,15}$/.test(env)) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `SOURCE_DATE_EPOCH=${JSON.stringify(env.slice(0, 40))} is not a whole number of seconds since 1970`,
      );
    }
    return Number(env);
  }
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `sourceDateEpoch ${String(v)} is not a whole, non-negative number of seconds since 1970`,
    );
  }
  return v;
}

/** The root as an absolute real path (a symlink given as the root is followed; nothing below it is). */
function checkRoot(path: string, what: string): string {
  const abs = resolve(path);
  const st = statSync(abs, { throwIfNoEntry: false });
  if (st === undefined)
    throw new StratumError('ERR_NOT_FOUND', `the ${what} directory ${abs} does not exist`);
  if (!st.isDirectory())
    throw new StratumError('ERR_INVALID_ARGUMENT', `the ${what} ${abs} is not a directory`);
  return realpathSync(abs);
}

function defaultKeep(name: string): boolean {
  return name !== 'security.selinux';
}

interface Plan {
  readonly upper: string;
  readonly lower: string | undefined;
  readonly overlay: { readonly prefix: string } | undefined;
  readonly opaque: 'never' | 'auto' | ((rel: string) => boolean);
  readonly alwaysContent: boolean;
}

async function makeLayer(plan: Plan, opts: LayerWriteOptions): Promise<DiffResult> {
  const signal = opts.signal;
  if (signal?.aborted) throw abortError(signal);
  const compression = opts.compression ?? 'gzip';
  if (compression !== 'gzip' && compression !== 'zstd' && compression !== 'none') {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `unknown compression ${JSON.stringify(compression)}: expected gzip, zstd or none`,
    );
  }
  const epoch = resolveEpoch(opts.sourceDateEpoch);
  const warnings: string[] = [];
  const upper = checkRoot(plan.upper, plan.overlay ? 'overlay upper' : 'upper');
  const lower = plan.lower === undefined ? undefined : checkRoot(plan.lower, 'lower');

  // xattrs: overlay needs them for its opaque directories whatever the caller wants in the layer
  const want = opts.xattrs ?? 'auto';
  const have = getfattrPath() !== undefined;
  if (want === 'auto' && !have && !plan.overlay) {
    warnings.push('xattrs were not read: the getfattr program is not installed (apt-get install attr)');
  }
  const readX = plan.overlay !== undefined || want === true || (want === 'auto' && have);
  const emitXattrs = want === true || (want === 'auto' && have);
  if (plan.overlay && process.getuid?.() !== 0 && plan.overlay.prefix === 'trusted.overlay.') {
    throw new StratumError(
      'ERR_UNSUPPORTED',
      `cannot read the overlay upper ${upper} as an unprivileged user: trusted.overlay.* xattrs (opaque directories) are visible only to root; run as root, or pass userXattr for an upper made with the userxattr mount option`,
    );
  }
  const upXP = readX ? readTreeXattrs(upper, signal) : Promise.resolve(new Map<string, Xattr[]>());
  const lowXP =
    readX && emitXattrs && lower !== undefined
      ? readTreeXattrs(lower, signal)
      : Promise.resolve(new Map<string, Xattr[]>());
  upXP.catch(() => {});
  lowXP.catch(() => {});

  // scan while getfattr runs in its own processes
  const scanCtx: ScanContext = {
    opaque: typeof plan.opaque === 'function' ? plan.opaque : undefined,
    signal,
    count: 0,
    links: false,
  };
  // a root the caller made opaque hides the whole lower tree: no need to read it
  const rootHidden = typeof plan.opaque === 'function' && plan.opaque('');
  const nodes = scanDir(
    scanCtx,
    '',
    fsPath(upper).toString('latin1'),
    lower === undefined || rootHidden ? undefined : fsPath(lower).toString('latin1'),
  );
  const [upX, lowX] = await Promise.all([upXP, lowXP]);
  if (signal?.aborted) throw abortError(signal);

  const overlayPrefix = plan.overlay?.prefix;
  const filter = opts.xattrFilter;
  const userKeep = filter === undefined ? defaultKeep : (name: string) => filter(utf8(name));
  const keep = (name: string): boolean =>
    !name.startsWith('trusted.overlay.') &&
    !(overlayPrefix !== undefined && name.startsWith(overlayPrefix)) &&
    userKeep(name);
  const upRoot = fsPath(upper).toString('latin1');
  const ctx: DecideContext = {
    upRoot,
    lowRoot: lower && fsPath(lower).toString('latin1'),
    upX,
    lowX,
    keep,
    emitXattrs,
    overlay: plan.overlay,
    opaque: plan.opaque,
    alwaysContent: plan.alwaysContent,
    out: [],
    warnings,
    scratch: [Buffer.allocUnsafe(256 * 1024), Buffer.allocUnsafe(256 * 1024)],
    changedInodes: new Set(),
  };
  if (plan.overlay) {
    for (const [rel, list] of upX) {
      for (const [n] of list) {
        if (n === `${plan.overlay.prefix}metacopy` || n === `${plan.overlay.prefix}redirect`) {
          throw new StratumError(
            'ERR_UNSUPPORTED',
            `cannot make a layer from the overlay upper ${upper}: ${shown(rel)} has ${n}, so its data lives in a lower layer (mount overlayfs without metacopy and redirect_dir to diff its upper directory alone)`,
          );
        }
      }
    }
  }
  const rootMeta = metaOf(upRoot) as Meta;
  let rootOpaque = false;
  if (plan.overlay)
    rootOpaque = isOverlayOpaqueValue(upX.get('')?.find(([n]) => n === `${overlayPrefix}opaque`)?.[1]);
  else if (lower !== undefined) rootOpaque = opaqueHere(ctx, '', nodes);
  if (lower !== undefined && scanCtx.links) {
    // a first pass finds the hard-linked files that changed, so that the second one writes
    // every path of them
    decideDir({ ...ctx, out: [], warnings: [] }, '', nodes, rootMeta.mtimeMs, rootOpaque);
  }
  if (rootOpaque) ctx.out.push({ t: 'marker', rel: WHITEOUT_OPAQUE, mtimeMs: rootMeta.mtimeMs });
  decideDir(ctx, '', nodes, rootMeta.mtimeMs, lower === undefined || rootOpaque);

  const output = new LayerOutput({
    compression,
    destination: opts.destination,
    ...(opts.level !== undefined
      ? { level: opts.level }
      : compression === 'gzip'
        ? { level: DEFAULT_LAYER_GZIP_LEVEL }
        : {}),
    ...(opts.gzipEngine === undefined ? {} : { gzipEngine: opts.gzipEngine }),
    ...(opts.concurrency === undefined ? {} : { concurrency: opts.concurrency }),
    ...(signal === undefined ? {} : { signal }),
  });
  try {
    const entries = await writeRecords(output, ctx.out, epoch, signal);
    const r = await output.finish();
    return { ...r, mediaType: layerMediaType('oci', compression), compression, entries, warnings };
  } catch (e) {
    await output.abort(e);
    if (signal?.aborted) throw abortError(signal);
    throw e;
  }
}

/**
 * A layer holding the changes that turn `lower` into `upper` (both directories); with no lower,
 * everything in `upper`. See the top of this file for what counts as a change.
 */
export function diffTrees(
  lower: string | undefined,
  upper: string,
  opts: DiffTreesOptions,
): Promise<DiffResult> {
  const opaque = opts.opaque ?? 'never';
  if (opaque !== 'never' && opaque !== 'auto' && typeof opaque !== 'function') {
    return Promise.reject(
      new StratumError(
        'ERR_INVALID_ARGUMENT',
        `opaque must be 'never', 'auto' or a function, not ${JSON.stringify(opaque)}`,
      ),
    );
  }
  // the caller sees paths as UTF-8 text; inside, names are byte strings
  const decided = typeof opaque === 'function' ? (rel: string) => opaque(utf8(rel)) : opaque;
  return makeLayer(
    { upper, lower, overlay: undefined, opaque: decided, alwaysContent: opts.compareContent === 'always' },
    opts,
  );
}

/** A layer from an overlayfs upper directory: whiteout devices and opaque directories translated. */
export function diffOverlayUpper(upper: string, opts: OverlayDiffOptions): Promise<DiffResult> {
  const prefix = opts.userXattr ? 'user.overlay.' : 'trusted.overlay.';
  return makeLayer(
    { upper, lower: undefined, overlay: { prefix }, opaque: 'never', alwaysContent: false },
    opts,
  );
}
