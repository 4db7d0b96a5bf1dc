// `stratum gc`: everything the store keeps that nothing uses any more, in one pass —
// blobs no image (nor a build cache entry) refers to, snapshots no image, container or
// cached build step uses, build cache entries whose layer is gone, and what crashed
// processes left behind (temp files, leases, container and volume trash).

import { buildCacheRoots, pruneBuildCache } from '../build/cache.js';
import type { Digest } from '../digest/digest.js';
import { fetchConfig, fetchManifest } from '../image/image.js';
import { pathExists } from '../internal/fs.js';
import type { GcResult, Store } from '../layout/store.js';
import { Containers } from '../runtime/containers.js';
import { reapProcesses } from '../runtime/process.js';
import { chainIds } from '../snapshot/chain-id.js';
import { Snapshots } from '../snapshot/snapshots.js';
import type { Descriptor } from '../spec/types.js';
import { Session, type SessionOptions } from './session.js';

export interface GcOptions extends SessionOptions {
  readonly signal?: AbortSignal;
}

export interface GcAllResult {
  /** Blobs removed from the store. */
  readonly blobs: GcResult;
  /** Extracted layers removed from the snapshot area. */
  readonly snapshots: { readonly removed: number; readonly bytes: number };
  /** Build cache entries removed (their layer blob was gone). */
  readonly buildCache: { readonly removed: number };
}

/** The top chain ID of every image in the store (every platform of an index). */
async function imageChains(store: Store, signal: AbortSignal | undefined): Promise<Set<string>> {
  const out = new Set<string>();
  const seen = new Set<string>();
  const visit = async (desc: Descriptor): Promise<void> => {
    if (seen.has(desc.digest)) return;
    seen.add(desc.digest);
    let doc: Awaited<ReturnType<typeof fetchManifest>>['document'];
    try {
      doc = (await fetchManifest(store, desc, signal ? { signal } : {})).document;
    } catch {
      return; // not an image we can run (an artifact, a platform not pulled): nothing extracted
    }
    if (doc.kind === 'index') {
      for (const m of doc.index.manifests) await visit(m);
      return;
    }
    try {
      const { config } = await fetchConfig(store, doc.manifest.config, signal ? { signal } : {});
      const ids = chainIds(config.rootfs.diff_ids as Digest[]);
      const top = ids[ids.length - 1];
      if (top) out.add(top);
    } catch {
      // a config that is missing or not an image config: no snapshots of it
    }
  };
  for (const r of await store.roots()) await visit(r.descriptor);
  return out;
}

/** Collect the store: build cache, blobs, snapshots, and crashed processes' leftovers. */
export async function gc(opts: GcOptions = {}): Promise<GcAllResult> {
  const session = new Session(opts);
  try {
    const store = await session.store();
    const root = session.root;
    const containers = await Containers.open(root);
    await containers.sweep();
    // one-off containers (build steps) whose process died
    await reapProcesses();
    const buildCache = await pruneBuildCache(root, {
      olderThanMs: Number.POSITIVE_INFINITY,
      hasBlob: (d) => pathExists(store.layout.blobPath(d)),
    });
    const cached = await buildCacheRoots(root);
    // the images of existing containers stay, so a container can still be committed
    const blobs = await store.gc({
      ...(opts.signal ? { signal: opts.signal } : {}),
      roots: await containers.manifestsInUse(),
      keep: cached.blobs,
    });
    const keep = await imageChains(store, opts.signal);
    for (const c of cached.chainIds) keep.add(c);
    const snapshots = await (await Snapshots.open(root)).gc(keep);
    return { blobs, snapshots, buildCache };
  } finally {
    await session.close();
  }
}
