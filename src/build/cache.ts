// The build cache: `<store>/build-cache/<hex of key>.json`, one small file per build step.
// A key is the sha256 of the previous step's key and of everything the step depends on (the
// instruction after substitution, the content hash of copied files, the build args in use,
// flags, the timestamp clamp); the first key of a stage hashes its base image's manifest
// digest. An entry records what the step produced: its layer (descriptor + diffID) or none,
// and its history entry, so a hit reuses both without running anything.
//
// Entries are written atomically (temp file + rename), so concurrent builds at worst write the
// same entry twice. An entry whose layer blob is gone from the store is a miss (the caller
// checks). gc: buildCacheRoots() lists what entries refer to, pruneBuildCache() removes old
// entries or those whose blobs are gone.

import { mkdir, readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { type Digest, digestBytes, encodedOf, isDigest } from '../digest/digest.js';
import { writeFileAtomic } from '../internal/fs.js';
import { pidInName, processAlive } from '../layout/liveness.js';
import { chainIds } from '../snapshot/chain-id.js';
import { mountsUnder, unmount } from '../snapshot/overlay.js';
import type { Descriptor, HistoryEntry } from '../spec/types.js';

export const BUILD_CACHE_DIR = 'build-cache';
/** Below BUILD_CACHE_DIR: one directory per running build, `build-<pid>-<random>`. */
export const BUILD_WORK_DIR = 'work';
const VERSION = 1;

export interface CacheEntry {
  readonly key: Digest;
  /** The step's layer, if it made one. */
  readonly layer?: { readonly descriptor: Descriptor; readonly diffId: Digest };
  /** diffIDs of the stage's layers after this step, bottom first (for chain ids). */
  readonly diffIds: readonly Digest[];
  readonly history: HistoryEntry;
}

/** Chain a cache key. */
export function cacheKey(parent: Digest | undefined, parts: unknown): Digest {
  return digestBytes(JSON.stringify({ v: VERSION, parent: parent ?? null, parts }));
}

function isEntry(v: unknown): v is CacheEntry & { v: number } {
  const e = v as Record<string, unknown>;
  return (
    typeof e === 'object' &&
    e !== null &&
    e.v === VERSION &&
    isDigest(e.key) &&
    Array.isArray(e.diffIds) &&
    e.diffIds.every(isDigest) &&
    typeof e.history === 'object' &&
    (e.layer === undefined ||
      (typeof e.layer === 'object' &&
        e.layer !== null &&
        isDigest((e.layer as { diffId?: unknown }).diffId) &&
        isDigest((e.layer as { descriptor?: { digest?: unknown } }).descriptor?.digest)))
  );
}

export class BuildCache {
  readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = join(storeRoot, BUILD_CACHE_DIR);
  }

  #path(key: Digest): string {
    return join(this.dir, `${encodedOf(key)}.json`);
  }

  async get(key: Digest): Promise<CacheEntry | undefined> {
    let text: string;
    try {
      text = await readFile(this.#path(key), 'utf8');
    } catch {
      return undefined;
    }
    try {
      const v: unknown = JSON.parse(text);
      if (!isEntry(v) || v.key !== key) return undefined;
      // last use, for pruning by age
      const now = new Date();
      await utimes(this.#path(key), now, now).catch(() => {});
      const { v: _v, ...entry } = v;
      return entry;
    } catch {
      return undefined;
    }
  }

  async put(entry: CacheEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.#path(entry.key), `${JSON.stringify({ v: VERSION, ...entry })}\n`);
  }

  async delete(key: Digest): Promise<void> {
    await rm(this.#path(key), { force: true });
  }

  async *entries(): AsyncGenerator<{ entry: CacheEntry; path: string; mtimeMs: number }> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    for (const n of names) {
      if (!/^[a-f0-9]{64}\.json$/.test(n)) continue;
      const p = join(this.dir, n);
      try {
        const v: unknown = JSON.parse(await readFile(p, 'utf8'));
        if (!isEntry(v)) continue;
        const { v: _v, ...entry } = v;
        yield { entry, path: p, mtimeMs: (await stat(p)).mtimeMs };
      } catch {}
    }
  }
}

/**
 * What the build cache refers to: the layer blobs of cached steps, and the snapshots (top chain
 * ids) those steps end with, for gc to keep.
 */
export async function buildCacheRoots(
  storeRoot: string,
): Promise<{ readonly blobs: Set<Digest>; readonly chainIds: Set<Digest> }> {
  const blobs = new Set<Digest>();
  const chains = new Set<Digest>();
  for await (const { entry } of new BuildCache(storeRoot).entries()) {
    // a metadata step's entry needs nothing kept: its layers are those of the step before
    if (!entry.layer) continue;
    blobs.add(entry.layer.descriptor.digest);
    const ids = chainIds(entry.diffIds);
    const top = ids[ids.length - 1];
    if (top) chains.add(top);
  }
  return { blobs, chainIds: chains };
}

/**
 * Remove cache entries not used for `olderThanMs` (default: all), and those whose layer blob
 * `hasBlob` says is gone. Returns how many were removed.
 */
export async function pruneBuildCache(
  storeRoot: string,
  opts: { readonly olderThanMs?: number; readonly hasBlob?: (d: Digest) => Promise<boolean> } = {},
): Promise<{ removed: number }> {
  const now = Date.now();
  let removed = 0;
  const cache = new BuildCache(storeRoot);
  for await (const { entry, path, mtimeMs } of cache.entries()) {
    const old = opts.olderThanMs === undefined || now - mtimeMs >= opts.olderThanMs;
    const gone = entry.layer && opts.hasBlob ? !(await opts.hasBlob(entry.layer.descriptor.digest)) : false;
    if (old || gone) {
      await rm(path, { force: true });
      removed++;
    }
  }
  await cleanDeadWork(join(cache.dir, BUILD_WORK_DIR));
  // temp files of dead writers
  for (const n of await readdir(cache.dir).catch(() => [] as string[])) {
    if (n.startsWith('.tmp-')) {
      const p = join(cache.dir, n);
      const st = await stat(p).catch(() => undefined);
      if (st && now - st.mtimeMs > 3600_000) await rm(p, { force: true });
    }
  }
  return { removed };
}

/** Unmount everything mounted at or below `dir` (latest first). */
export async function unmountAll(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir).catch(() => [] as string[])) {
    await unmount(m, { lazy: true }).catch(() => {});
  }
}

/** Remove work directories of builds whose process is gone (and their mounts). */
export async function cleanDeadWork(root: string): Promise<void> {
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const pid = pidInName(name, 'build-');
    if (pid === undefined || processAlive(pid)) continue;
    const dir = join(root, name);
    await unmountAll(dir);
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}
