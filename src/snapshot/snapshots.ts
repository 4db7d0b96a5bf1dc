// The snapshot area of the store (`<store>/snapshots`): every layer extracted once, in the
// overlay form (whiteouts as 0/0 character devices, opaque directories marked with
// trusted.overlay.opaque=y), keyed by its ChainID, and shared as an overlayfs lower layer by
// every image and container that has it.
//
//   <hex>/                  a complete snapshot (sha512 chains: sha512-<hex>)
//     fs/                   its tree; an overlay lower layer
//     snapshot.json         { chainId, parent, diffId, layer?, created }
//   .tmp-<pid>-<rand>/      an extraction (or adoption) in progress; renamed to <hex> when done
//   .trash-<pid>-<rand>/    a snapshot gc took away, being removed
//   holders/<holder>        the chain IDs a container (or build) uses, one a line
//   leases/<pid>-<rand>     chain IDs a process prepared or adopted and has not yet given to a
//                           holder; void once that process is dead
//   locks/<hex>             per-chain extraction lock (internal/lock.ts)
//   .gc.lock                taken by lease, hold, release and gc
//
// Extracting once, across processes: a chain is extracted under its lock file; whoever waits
// for the lock finds the snapshot made and skips it (within one process, concurrent prepares
// of one chain share the same promise). A snapshot appears whole — built in a temp directory
// named with the pid and renamed into place — so a crash (kill -9) leaves only a temp
// directory, which gc removes once that pid is dead. A diffID mismatch, an abort or any
// other failure removes the temp directory.
//
// Hard links to files of lower layers: applyLayer gets the lower snapshots (topmost first)
// and copies the target up into this layer (a hard link cannot cross layers), so a layer
// is extracted after the ones below it.
//
// gc safety, as the store's leases do it (layout/store.ts): a prepare or adopt records its
// chain IDs in this process's lease file under .gc.lock BEFORE it looks at or makes the
// snapshots; gc reads leases and holders and moves snapshots away under the same lock. So a
// lease either comes before a gc (the gc keeps those snapshots) or after it (prepare sees
// what gc removed and extracts it again). hold() moves chain IDs from the lease to a holder.
// gc keeps every ancestor of what it keeps (a snapshot is useless without the layers under it).

import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Fetcher } from '../content/types.js';
import { algorithmOf, type Digest, encodedOf, isDigest, parseDigest } from '../digest/digest.js';
import { abortError, StratumError } from '../errors/errors.js';
import { writeFileAtomic } from '../internal/fs.js';
import { withFileLock } from '../internal/lock.js';
import { type ApplyResult, type ApplyWarning, applyLayer } from '../layer/apply.js';
import { pidInName, processAlive } from '../layout/liveness.js';
import { layerCompressionOf } from '../spec/media-types.js';
import type { Descriptor } from '../spec/types.js';
import { chainIdOf, chainIds as computeChainIds } from './chain-id.js';

export const SNAPSHOTS_DIR = 'snapshots';
const FS = 'fs';
const META = 'snapshot.json';
const TMP_PREFIX = '.tmp-';
const TRASH_PREFIX = '.trash-';
const HOLDERS = 'holders';
const LEASES = 'leases';
const LOCKS = 'locks';
const GC_LOCK = '.gc.lock';
/** A waiter for another process's extraction gives up after this long. */
const EXTRACT_LOCK_TIMEOUT_MS = 60 * 60_000;
const HOLDER_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface SnapshotLayer {
  readonly descriptor: Descriptor;
  readonly diffId: Digest;
}

export interface PreparedChain {
  /** Bottom first. */
  readonly chainIds: readonly Digest[];
  /** Absolute snapshot fs dirs, bottom first. */
  readonly dirs: readonly string[];
  /**
   * The overlay lowerdirs to mount, topmost first: `dirs` reversed, ending at the topmost
   * layer that made its root opaque (overlayfs ignores that mark on a layer's root, so the
   * layers it hides must be left out of the mount).
   */
  readonly lowers: readonly string[];
}

export type SnapshotProgress =
  | { readonly type: 'layer-exists'; readonly index: number; readonly chainId: Digest }
  | {
      readonly type: 'layer-start';
      readonly index: number;
      readonly count: number;
      readonly chainId: Digest;
      readonly layer: Descriptor;
    }
  | {
      /** Compressed bytes of this layer read so far. */
      readonly type: 'layer-progress';
      readonly index: number;
      readonly layer: Descriptor;
      readonly bytes: number;
    }
  | {
      readonly type: 'layer-done';
      readonly index: number;
      readonly chainId: Digest;
      readonly diffId: Digest;
    }
  | { readonly type: 'warning'; readonly index: number; readonly warning: ApplyWarning };

export interface PrepareOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (e: SnapshotProgress) => void;
}

export interface SnapshotInfo {
  readonly chainId: Digest;
  /** Bytes on disk (allocated blocks; hard links counted once). */
  readonly size: number;
  readonly holders: string[];
}

interface SnapshotMeta {
  readonly chainId: Digest;
  readonly parent: Digest | null;
  readonly diffId: Digest;
  readonly layer?: Descriptor;
  readonly created: string;
  /** The layer has `.wh..wh..opq` at its root: it hides every layer below it. */
  readonly opaqueRoot?: boolean;
}

/** The directory name of a chain: its hex for sha256, `<alg>-<hex>` otherwise. */
function keyOf(chainId: Digest): string {
  return algorithmOf(chainId) === 'sha256'
    ? encodedOf(chainId)
    : `${algorithmOf(chainId)}-${encodedOf(chainId)}`;
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function checkHolder(holder: string): void {
  if (typeof holder !== 'string' || !HOLDER_RE.test(holder)) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `invalid snapshot holder ${JSON.stringify(String(holder).slice(0, 140))}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit`,
    );
  }
}

/** Chain IDs in a holder or lease file (invalid lines are ignored). */
function parseIdList(text: string): Digest[] {
  return text.split('\n').filter((l): l is Digest => isDigest(l));
}

/** Bytes a tree occupies (st_blocks), each inode once. */
export async function diskUsage(path: string): Promise<number> {
  const seen = new Set<string>();
  const walk = async (p: string): Promise<number> => {
    let st: import('node:fs').Stats;
    try {
      st = await lstat(p);
    } catch {
      return 0;
    }
    let total = 0;
    if (st.nlink > 1 && !st.isDirectory()) {
      const k = `${st.dev}:${st.ino}`;
      if (seen.has(k)) return 0;
      seen.add(k);
    }
    total += st.blocks * 512;
    if (st.isDirectory()) {
      let names: string[] = [];
      try {
        names = await readdir(p);
      } catch {}
      for (const n of names) total += await walk(join(p, n));
    }
    return total;
  };
  return walk(path);
}

/** Remove a tree, making directories writable first when that is what stops it (not root). */
async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch (e) {
    if (errno(e) !== 'EACCES' && errno(e) !== 'EPERM') throw e;
  }
  const open = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isDirectory()) return;
    await chmod(p, 0o700).catch(() => {});
    for (const name of await readdir(p).catch(() => [] as string[])) await open(join(p, name));
  };
  await open(path);
  await rm(path, { recursive: true, force: true });
}

export class Snapshots {
  /** `<storeRoot>/snapshots`. */
  readonly dir: string;
  readonly #leaseId = `${process.pid}-${randomBytes(6).toString('hex')}`;
  /** Chain IDs in this instance's lease file. */
  readonly #leased = new Set<Digest>();
  /** Prepares and adopts under way in this instance, by chain: hold() leaves their lease. */
  readonly #active = new Map<Digest, number>();
  /** Extractions this instance is doing, by key. */
  readonly #inflight = new Map<string, Promise<void>>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Open (creating if needed) the snapshot area of the store at `storeRoot`. */
  static async open(storeRoot: string): Promise<Snapshots> {
    const dir = join(resolve(storeRoot), SNAPSHOTS_DIR);
    for (const d of [dir, join(dir, HOLDERS), join(dir, LEASES), join(dir, LOCKS)]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
    return new Snapshots(dir);
  }

  /** The fs directory of a chain (whether or not it exists). */
  dirOf(chainId: Digest): string {
    return join(this.dir, keyOf(parseDigest(chainId)), FS);
  }

  async has(chainId: Digest): Promise<boolean> {
    try {
      return (await lstat(this.dirOf(chainId))).isDirectory();
    } catch {
      return false;
    }
  }

  /**
   * Extract every missing layer once (overlay form, diffID checked), concurrently-safe across
   * processes; returns the chain. The chain stays protected from gc for as long as this
   * process lives, or until it is given to a holder with hold().
   */
  async prepare(
    layers: readonly SnapshotLayer[],
    fetcher: Fetcher,
    opts: PrepareOptions = {},
  ): Promise<PreparedChain> {
    opts.signal?.throwIfAborted();
    for (const [i, l] of layers.entries()) {
      parseDigest(l.diffId);
      if (layerCompressionOf(l.descriptor.mediaType) === undefined) {
        throw new StratumError(
          'ERR_UNSUPPORTED_MEDIA_TYPE',
          `layer ${i + 1} (${l.descriptor.digest}) has media type ${JSON.stringify(l.descriptor.mediaType)}, which is not a tar layer stratum can extract`,
        );
      }
    }
    const ids = computeChainIds(layers.map((l) => l.diffId));
    return this.#using(ids, async () => {
      await this.#lease(ids);
      await this.#prepareLeased(layers, ids, fetcher, opts);
      return this.#chain(ids);
    });
  }

  /**
   * The dirs and mount lowers of a chain already prepared (and held, so that gc keeps it):
   * to mount it again. ERR_NOT_FOUND when a snapshot of it is missing.
   */
  async chainOf(ids: readonly Digest[]): Promise<PreparedChain> {
    for (const id of ids) {
      if (!(await this.has(id))) {
        throw new StratumError(
          'ERR_NOT_FOUND',
          `snapshot ${id} is missing: the image's layers must be prepared again`,
        );
      }
    }
    return this.#chain(ids);
  }

  /** A prepared chain's dirs and mount lowers (see PreparedChain.lowers). */
  async #chain(ids: readonly Digest[]): Promise<PreparedChain> {
    const dirs = ids.map((id) => this.dirOf(id));
    const lowers: string[] = [];
    for (let i = ids.length - 1; i >= 0; i--) {
      lowers.push(dirs[i]!);
      if ((await this.#readMeta(keyOf(ids[i]!)))?.opaqueRoot) break;
    }
    return { chainIds: ids, dirs, lowers };
  }

  async #prepareLeased(
    layers: readonly SnapshotLayer[],
    ids: readonly Digest[],
    fetcher: Fetcher,
    opts: PrepareOptions,
  ): Promise<void> {
    for (const [i, layer] of layers.entries()) {
      const chainId = ids[i] as Digest;
      if (await this.has(chainId)) {
        opts.onProgress?.({ type: 'layer-exists', index: i, chainId });
        continue;
      }
      const parents = ids.slice(0, i);
      for (;;) {
        const { promise, shared } = this.#once(chainId, async () => {
          if (await this.has(chainId)) {
            opts.onProgress?.({ type: 'layer-exists', index: i, chainId });
            return;
          }
          await this.#extract(i, layers.length, layer, chainId, parents, fetcher, opts);
        });
        try {
          await promise;
          break;
        } catch (e) {
          // another prepare's extraction was cancelled by its caller, not by ours: do it ourselves
          const theirAbort = shared && e instanceof StratumError && e.code === 'ERR_ABORTED';
          if (!theirAbort || opts.signal?.aborted) throw e;
        }
      }
      if (!(await this.has(chainId))) {
        throw new StratumError(
          'ERR_IO',
          `the snapshot of layer ${i + 1} (${chainId}) vanished while preparing it`,
        );
      }
    }
  }

  /** Count `ids` as in use by this instance while fn runs. */
  async #using<T>(ids: readonly Digest[], fn: () => Promise<T>): Promise<T> {
    for (const id of ids) this.#active.set(id, (this.#active.get(id) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      for (const id of ids) {
        const n = (this.#active.get(id) ?? 1) - 1;
        if (n === 0) this.#active.delete(id);
        else this.#active.set(id, n);
      }
    }
  }

  /**
   * Add a snapshot on top of `parent` (undefined: a base layer) from an overlay-form upper
   * directory already on disk. `upperDir` is consumed: moved in (copied and removed if it is
   * on another file system), or removed when the snapshot already exists. `diffId` must be
   * the diffID of the layer that upper makes (e.g. from layer/diff.ts diffOverlayUpper); it
   * is not recomputed. Unmount the overlay first. The kernel's bookkeeping xattrs in an upper
   * (trusted.overlay.origin, impure, uuid) stay; overlayfs does not use them in a lower layer
   * (index=off, the default here), and the merged view is the same as the layer's.
   */
  async adopt(
    parent: Digest | undefined,
    diffId: Digest,
    upperDir: string,
  ): Promise<{ chainId: Digest; dir: string }> {
    const chainId = chainIdOf(parent, diffId);
    const st = await lstat(upperDir).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `cannot adopt ${upperDir} as a snapshot: it is not a directory`,
      );
    }
    const ids = parent === undefined ? [chainId] : [parent, chainId];
    return this.#using(ids, () => this.#adopt(ids, parent, chainId, upperDir, diffId));
  }

  async #adopt(
    ids: readonly Digest[],
    parent: Digest | undefined,
    chainId: Digest,
    upperDir: string,
    diffId: Digest,
  ): Promise<{ chainId: Digest; dir: string }> {
    await this.#lease(ids);
    if (parent !== undefined && !(await this.has(parent))) {
      throw new StratumError(
        'ERR_NOT_FOUND',
        `cannot adopt a snapshot on top of ${parent}: that snapshot does not exist (prepare it first)`,
      );
    }
    const once = this.#once(chainId, async () => {
      if (await this.has(chainId)) {
        await removeTree(upperDir);
        return;
      }
      const tmp = join(this.dir, `${TMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
      await mkdir(tmp, { mode: 0o700 });
      try {
        try {
          await rename(upperDir, join(tmp, FS));
        } catch (e) {
          if (errno(e) !== 'EXDEV') throw e;
          await copyTree(upperDir, join(tmp, FS));
          await removeTree(upperDir);
        }
        await this.#commit(tmp, {
          chainId,
          parent: parent ?? null,
          diffId,
          created: new Date().toISOString(),
        });
      } catch (e) {
        await removeTree(tmp);
        throw e;
      }
    });
    await once.promise;
    if (once.shared) await removeTree(upperDir);
    return { chainId, dir: this.dirOf(chainId) };
  }

  /** Holders: a container id (or build id) that uses snapshots; a held snapshot is never collected. */
  async hold(holder: string, chainIds: readonly Digest[]): Promise<void> {
    checkHolder(holder);
    const ids = chainIds.map((c) => parseDigest(c));
    await this.#locked(async () => {
      const path = join(this.dir, HOLDERS, holder);
      const have = parseIdList(await readFile(path, 'utf8').catch(() => ''));
      const all = [...new Set([...have, ...ids])];
      await writeFileAtomic(path, all.map((c) => `${c}\n`).join(''));
      let changed = false;
      // a chain that a prepare of this instance is still working on keeps its lease
      for (const id of ids) if (!this.#active.has(id)) changed = this.#leased.delete(id) || changed;
      if (changed) await this.#writeLease();
    });
  }

  /** Drop a holder (no error if it holds nothing). */
  async release(holder: string): Promise<void> {
    checkHolder(holder);
    await this.#locked(() => rm(join(this.dir, HOLDERS, holder), { force: true }));
  }

  /** The chain IDs each holder holds. */
  async holders(): Promise<Map<string, Digest[]>> {
    const out = new Map<string, Digest[]>();
    for (const name of await readdir(join(this.dir, HOLDERS)).catch(() => [] as string[])) {
      if (!HOLDER_RE.test(name)) continue;
      out.set(name, parseIdList(await readFile(join(this.dir, HOLDERS, name), 'utf8').catch(() => '')));
    }
    return out;
  }

  /**
   * Remove snapshots neither held, nor leased by a live process, nor in `keep` (chain IDs of
   * images still in the store), nor under one of those; a snapshot being extracted is never
   * touched. Also removes what dead processes left (temp dirs, leases).
   */
  async gc(keep: ReadonlySet<string>): Promise<{ removed: number; bytes: number }> {
    const doomed: { path: string; snapshot: boolean }[] = [];
    await this.#locked(async () => {
      const roots = new Set<string>(keep);
      for (const ids of (await this.holders()).values()) for (const id of ids) roots.add(id);
      for (const name of await readdir(join(this.dir, LEASES)).catch(() => [] as string[])) {
        const pid = pidInName(name, '');
        const path = join(this.dir, LEASES, name);
        if (pid === undefined || !processAlive(pid)) {
          await rm(path, { force: true });
          continue;
        }
        for (const id of parseIdList(await readFile(path, 'utf8').catch(() => ''))) roots.add(id);
      }
      const parents = new Map<string, string | null>();
      const names = await readdir(this.dir);
      for (const name of names) {
        if (name.startsWith('.') || name === HOLDERS || name === LEASES || name === LOCKS) continue;
        const meta = await this.#readMeta(name);
        parents.set(name, meta?.parent ? keyOf(meta.parent) : null);
      }
      // keep every root and its ancestors
      const kept = new Set<string>();
      for (const r of roots) {
        if (!isDigest(r)) continue;
        for (let k: string | null | undefined = keyOf(r); k && !kept.has(k); k = parents.get(k)) kept.add(k);
      }
      for (const name of parents.keys()) {
        if (kept.has(name)) continue;
        const trash = join(this.dir, `${TRASH_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
        await rename(join(this.dir, name), trash);
        doomed.push({ path: trash, snapshot: true });
      }
      for (const name of names) {
        const prefix = name.startsWith(TMP_PREFIX)
          ? TMP_PREFIX
          : name.startsWith(TRASH_PREFIX)
            ? TRASH_PREFIX
            : undefined;
        if (prefix === undefined) continue;
        const pid = pidInName(name, prefix);
        if (pid !== undefined && processAlive(pid)) continue;
        doomed.push({ path: join(this.dir, name), snapshot: false });
      }
      // lock temp files of processes that died taking a lock
      for (const [where, list] of [
        [join(this.dir, LOCKS), await readdir(join(this.dir, LOCKS)).catch(() => [] as string[])],
        [this.dir, names],
      ] as const) {
        for (const name of list) {
          const m = /\.(?:new|stale)-(\d+)-[0-9a-f]+$/.exec(name);
          if (m?.[1] && !processAlive(Number(m[1]))) await rm(join(where, name), { force: true });
        }
      }
    });
    let bytes = 0;
    let removed = 0;
    for (const d of doomed) {
      if (d.snapshot) {
        bytes += await diskUsage(d.path);
        removed++;
      }
      await removeTree(d.path);
    }
    return { removed, bytes };
  }

  /** Every complete snapshot, its size on disk and its holders. */
  async list(): Promise<{ chainId: Digest; size: number; holders: string[] }[]> {
    const byChain = new Map<string, string[]>();
    for (const [holder, ids] of await this.holders()) {
      for (const id of ids) byChain.set(id, [...(byChain.get(id) ?? []), holder]);
    }
    const out: SnapshotInfo[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      if (name.startsWith('.') || name === HOLDERS || name === LEASES || name === LOCKS) continue;
      const meta = await this.#readMeta(name);
      if (!meta) continue;
      out.push({
        chainId: meta.chainId,
        size: await diskUsage(join(this.dir, name)),
        holders: (byChain.get(meta.chainId) ?? []).sort(),
      });
    }
    return out;
  }

  // ---- internals ----

  async #readMeta(name: string): Promise<SnapshotMeta | undefined> {
    try {
      const m = JSON.parse(await readFile(join(this.dir, name, META), 'utf8')) as SnapshotMeta;
      if (!isDigest(m.chainId) || keyOf(m.chainId) !== name) return undefined;
      if (m.parent !== null && !isDigest(m.parent)) return undefined;
      return m;
    } catch {
      return undefined;
    }
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(join(this.dir, GC_LOCK), fn);
  }

  async #lease(ids: readonly Digest[]): Promise<void> {
    if (ids.every((id) => this.#leased.has(id))) return;
    await this.#locked(async () => {
      for (const id of ids) this.#leased.add(id);
      await this.#writeLease();
    });
  }

  async #writeLease(): Promise<void> {
    const path = join(this.dir, LEASES, this.#leaseId);
    if (this.#leased.size === 0) await rm(path, { force: true });
    else await writeFileAtomic(path, [...this.#leased].map((c) => `${c}\n`).join(''));
  }

  /** Run fn once per chain at a time: shared within this instance, locked across processes. */
  #once(chainId: Digest, fn: () => Promise<void>): { promise: Promise<void>; shared: boolean } {
    const key = keyOf(chainId);
    const known = this.#inflight.get(key);
    if (known) return { promise: known, shared: true };
    const p = withFileLock(join(this.dir, LOCKS, key), fn, { timeoutMs: EXTRACT_LOCK_TIMEOUT_MS }).finally(
      () => this.#inflight.delete(key),
    );
    this.#inflight.set(key, p);
    return { promise: p, shared: false };
  }

  async #extract(
    index: number,
    count: number,
    layer: SnapshotLayer,
    chainId: Digest,
    parents: readonly Digest[],
    fetcher: Fetcher,
    opts: PrepareOptions,
  ): Promise<void> {
    const { signal, onProgress } = opts;
    signal?.throwIfAborted();
    const desc = layer.descriptor;
    onProgress?.({ type: 'layer-start', index, count, chainId, layer: desc });
    const tmp = join(this.dir, `${TMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    const fs = join(tmp, FS);
    let applied: ApplyResult | undefined;
    await mkdir(tmp, { mode: 0o700 });
    try {
      await mkdir(fs, { mode: 0o755 });
      const lowers = parents.map((p) => this.dirOf(p)).reverse();
      // a layer without a `./` entry keeps the root its parent has (the merged root is the top layer's)
      if (lowers[0] !== undefined) {
        const st = await stat(lowers[0]);
        await chown(fs, st.uid, st.gid).catch(() => {});
        await chmod(fs, st.mode & 0o7777);
      }
      let bytes = 0;
      const stream = await fetcher.fetch(desc, {
        ...(signal ? { signal } : {}),
        ...(onProgress
          ? {
              onProgress: (n: number) => {
                bytes += n;
                onProgress({ type: 'layer-progress', index, layer: desc, bytes });
              },
            }
          : {}),
      });
      try {
        applied = await applyLayer(fs, stream, {
          form: 'overlay',
          lowers,
          diffID: layer.diffId,
          ...(signal ? { signal } : {}),
          ...(onProgress
            ? { onWarning: (warning: ApplyWarning) => onProgress({ type: 'warning', index, warning }) }
            : {}),
        });
      } finally {
        stream.destroy();
      }
      if (signal?.aborted) throw abortError(signal);
      await this.#commit(tmp, {
        chainId,
        parent: parents.at(-1) ?? null,
        diffId: layer.diffId,
        layer: desc,
        created: new Date().toISOString(),
        ...(applied?.opaqueRoot ? { opaqueRoot: true } : {}),
      });
    } catch (e) {
      await removeTree(tmp);
      if (e instanceof StratumError && e.code === 'ERR_DIGEST_MISMATCH') {
        throw new StratumError(
          'ERR_DIGEST_MISMATCH',
          `layer ${index + 1} (${desc.digest}) does not match its diffID in the image config: ${e.message}`,
          { cause: e },
        );
      }
      throw e;
    }
    onProgress?.({ type: 'layer-done', index, chainId, diffId: layer.diffId });
  }

  /** Write the metadata and move the temp directory into place. */
  async #commit(tmp: string, meta: SnapshotMeta): Promise<void> {
    await writeFileAtomic(join(tmp, META), `${JSON.stringify(meta)}\n`);
    try {
      await rename(tmp, join(this.dir, keyOf(meta.chainId)));
    } catch (e) {
      // someone made it meanwhile (another instance that did not share our lock): use theirs
      if (errno(e) !== 'EEXIST' && errno(e) !== 'ENOTEMPTY') throw e;
      await removeTree(tmp);
    }
  }
}

/** Copy a tree with everything (owners, modes, xattrs incl. trusted.overlay.*, devices, links). */
async function copyTree(from: string, to: string): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) => {
    execFile('cp', ['-a', '--reflink=auto', '--', from, to], (err, _out, stderr) => {
      if (err) {
        reject(
          new StratumError(
            'ERR_IO',
            `copying ${from} into the snapshot area failed: ${String(stderr).trim()}`,
            { cause: err },
          ),
        );
      } else resolve();
    });
  });
}
