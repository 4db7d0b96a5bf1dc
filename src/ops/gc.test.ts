// ops gc: one pass collects blobs, snapshots and the build cache. A snapshot of an image
// still in the store stays (runs start warm), one held by a container stays, and both go
// once their image is removed and nothing holds them; a build cache entry keeps its layer
// blob, and an entry whose blob is gone is dropped.

import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BuildCache } from '../build/cache.js';
import { openStore } from '../layout/store.js';
import { chainIds } from '../snapshot/chain-id.js';
import { Snapshots } from '../snapshot/snapshots.js';
import { makeImage, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { gc } from './gc.js';

describe('ops gc', () => {
  it('keeps what images, containers and the build cache use; removes the rest', async (t) => {
    const root = join(await tempDir(t), 'store');
    const store = await openStore({ root });
    const a = await makeImage({ layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }]] });
    const b = await makeImage({ layers: [[{ path: 'c', content: 'c' }]] });
    await pushImage(store, a, 'a');
    await pushImage(store, b, 'b');
    const snaps = await Snapshots.open(root);
    const layers = (img: typeof a) =>
      img.layers.map((l, i) => ({ descriptor: l.descriptor, diffId: img.diffIds[i]! }));
    const chainA = await snaps.prepare(layers(a), store);
    const chainB = await snaps.prepare(layers(b), store);
    await snaps.hold('container-1', chainB.chainIds);
    // prepare leases what it made until a holder takes it (or this process ends)
    await snaps.hold('run-once', chainA.chainIds);
    await snaps.release('run-once');

    // a build cache entry whose layer is a blob no image refers to
    const loose = await makeImage({ layers: [[{ path: 'cached', content: 'x' }]] });
    await store.push(loose.layers[0]!.descriptor, loose.layers[0]!.bytes);
    const cache = new BuildCache(root);
    await cache.put({
      key: chainIds(loose.diffIds)[0]!,
      diffIds: [...loose.diffIds],
      layer: { descriptor: loose.layers[0]!.descriptor, diffId: loose.diffIds[0]! },
      history: { created_by: 'RUN x' },
    });
    await store.close();

    const first = await gc({ root });
    assert.deepEqual(first.blobs.removedBlobs, []);
    assert.equal(first.snapshots.removed, 0);
    assert.equal(first.buildCache.removed, 0);

    // remove both images: a's snapshots go, b's stay while container-1 holds them
    const s2 = await openStore({ root });
    await s2.rmi('a');
    await s2.rmi('b');
    await s2.close();
    const second = await gc({ root });
    assert.equal(second.snapshots.removed, chainA.chainIds.length);
    assert.ok(await snaps.has(chainB.chainIds.at(-1)!));
    assert.ok(!(await snaps.has(chainA.chainIds.at(-1)!)));
    // the cached layer is kept, every image blob goes
    const left = await readdir(join(root, 'blobs', 'sha256'));
    assert.deepEqual(left, [loose.layers[0]!.descriptor.digest.slice('sha256:'.length)]);

    await snaps.release('container-1');
    const third = await gc({ root });
    assert.equal(third.snapshots.removed, chainB.chainIds.length);
  });

  it('Store.gc keeps what named roots reach (the image of a container whose tag is gone)', async (t) => {
    const root = join(await tempDir(t), 'store');
    const store = await openStore({ root });
    const img = await makeImage({ layers: [[{ path: 'a', content: 'a' }]] });
    await pushImage(store, img, 'a');
    await store.rmi('a');
    await store.close();
    const s2 = await openStore({ root });
    const kept = await s2.gc({ roots: [img.manifest.descriptor] });
    assert.deepEqual(kept.removedBlobs, []);
    const gone = await s2.gc();
    assert.equal(gone.removedBlobs.length, img.blobs.length);
    await s2.close();
  });
});
