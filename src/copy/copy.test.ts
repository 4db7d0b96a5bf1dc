import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { decompressStream } from '../compression/compression.js';
import { digestBytes } from '../digest/digest.js';
import { CopyError } from '../errors/errors.js';
import { fetchConfig, fetchManifest } from '../image/image.js';
import { readAll } from '../internal/streams.js';
import { openLayout } from '../layout/layout.js';
import { MediaType } from '../spec/media-types.js';
import { makeImage, makeIndex, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { type CopyEvent, copy } from './copy.js';

async function layouts(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  const src = await openLayout(join(dir, 'src'), { create: true });
  const dst = await openLayout(join(dir, 'dst'), { create: true });
  t.after(async () => {
    await src.close();
    await dst.close();
  });
  return { dir, src, dst };
}

describe('copy', () => {
  it('copies an image exactly, then skips what the destination has', async (t) => {
    const { src, dst } = await layouts(t);
    const img = await makeImage({ layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }]] });
    await pushImage(src, img, 'v1');
    const events: CopyEvent[] = [];
    const r = await copy(src, 'v1', dst, 'v2', { onEvent: (e) => events.push(e) });
    assert.equal(r.descriptor.digest, img.manifest.descriptor.digest);
    assert.deepEqual(r.stats, {
      copied: 3,
      skipped: 0,
      mounted: 0,
      bytes: img.config.bytes.length + img.layers.reduce((n, l) => n + l.bytes.length, 0),
    });
    assert.equal((await dst.resolve('v2')).digest, img.manifest.descriptor.digest);
    for (const b of img.blobs)
      assert.deepEqual(await readAll(await dst.fetch(b.descriptor), 1 << 20), b.bytes);
    assert.ok(events.some((e) => e.type === 'tagged'));

    const again = await copy(src, 'v1', dst, 'v3');
    assert.deepEqual({ copied: again.stats.copied, skipped: again.stats.skipped }, { copied: 0, skipped: 3 });
  });

  it('shares one transfer between manifests that have a blob in common', async (t) => {
    const { src, dst } = await layouts(t);
    const shared = [{ path: 'shared', content: 'x'.repeat(1000) }];
    const a = await makeImage({
      layers: [shared, [{ path: 'a', content: 'a' }]],
      platform: { os: 'linux', architecture: 'amd64' },
    });
    const b = await makeImage({
      layers: [shared, [{ path: 'b', content: 'b' }]],
      platform: { os: 'linux', architecture: 'arm64' },
    });
    const idx = makeIndex([
      { image: a, platform: { os: 'linux', architecture: 'amd64' } },
      { image: b, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    await pushImage(src, a);
    await pushImage(src, b);
    await src.push(idx.descriptor, idx.bytes);
    await src.tag(idx.descriptor, 'multi');
    const events: CopyEvent[] = [];
    const r = await copy(src, 'multi', dst, 'multi', { all: true, onEvent: (e) => events.push(e) });
    assert.equal(r.descriptor.digest, idx.descriptor.digest);
    const starts = events.filter((e) => e.type === 'blob-start').map((e) => e.descriptor.digest);
    assert.equal(new Set(starts).size, starts.length, 'each blob transferred once');
    assert.equal(starts.length, 5); // 2 configs, 1 shared layer, 2 own layers
  });

  it('picks one platform from an index, and says which exist when none match', async (t) => {
    const { src, dst } = await layouts(t);
    const amd = await makeImage({ platform: { os: 'linux', architecture: 'amd64' } });
    const arm = await makeImage({
      layers: [[{ path: 'arm', content: 'arm' }]],
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    });
    const idx = makeIndex([
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ]);
    await pushImage(src, amd);
    await pushImage(src, arm);
    await src.push(idx.descriptor, idx.bytes);
    await src.tag(idx.descriptor, 'multi');
    const r = await copy(src, 'multi', dst, 'arm', { platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(r.descriptor.digest, arm.manifest.descriptor.digest);
    assert.equal(await dst.exists(amd.layers[0]!.descriptor), false);
    await assert.rejects(
      copy(src, 'multi', dst, 'x', { platform: { os: 'linux', architecture: 's390x' } }),
      (e) => {
        assert.ok(e instanceof CopyError);
        assert.equal(e.code, 'ERR_PLATFORM_NOT_FOUND');
        assert.equal(e.side, 'source');
        assert.match(e.message, /linux\/amd64, linux\/arm64\/v8/);
        return true;
      },
    );
  });

  it('recompresses layers to zstd: diffIDs stay, digests change consistently', async (t) => {
    const { src, dst } = await layouts(t);
    const img = await makeImage({
      layers: [[{ path: 'big', content: 'z'.repeat(100_000) }], [{ path: 'c', content: 'c' }]],
    });
    await pushImage(src, img, 'v1');
    const r = await copy(src, 'v1', dst, 'zstd', { destCompression: 'zstd' });
    assert.notEqual(r.descriptor.digest, img.manifest.descriptor.digest);
    const { document } = await fetchManifest(dst, await dst.resolve('zstd'));
    assert.equal(document.kind, 'manifest');
    if (document.kind !== 'manifest') return;
    assert.equal(document.manifest.config.digest, img.config.descriptor.digest, 'config unchanged');
    const { config } = await fetchConfig(dst, document.manifest.config);
    for (const [i, l] of document.manifest.layers.entries()) {
      assert.equal(l.mediaType, MediaType.OciLayerZstd);
      const tar = await readAll((await dst.fetch(l)).pipe(decompressStream('zstd')), 1 << 24);
      assert.equal(digestBytes(tar), config.rootfs.diff_ids[i], `layer ${i} diffID`);
    }
    // and back to gzip, as docker media types
    const back = await copy(dst, 'zstd', src, 'docker', { destCompression: 'gzip', format: 'docker' });
    const m2 = await fetchManifest(src, back.descriptor);
    assert.equal(m2.document.mediaType, MediaType.DockerManifest);
    if (m2.document.kind !== 'manifest') return;
    assert.equal(m2.document.manifest.config.mediaType, MediaType.DockerConfig);
    const l0 = m2.document.manifest.layers[0]!;
    assert.equal(l0.mediaType, MediaType.DockerLayerGzip);
    assert.equal(digestBytes(gunzipSync(await readAll(await src.fetch(l0), 1 << 24))), img.diffIds[0]);
  });

  it('refuses zstd layers in the docker format', async (t) => {
    const { src, dst } = await layouts(t);
    const img = await makeImage();
    await pushImage(src, img, 'v1');
    await assert.rejects(copy(src, 'v1', dst, 'x', { destCompression: 'zstd', format: 'docker' }), {
      code: 'ERR_UNSUPPORTED',
    });
  });

  it('recompresses at the level asked for, and refuses a level out of range before copying', async (t) => {
    const { src, dst } = await layouts(t);
    // plain tar layers: a gzip layer asked to become gzip keeps its bytes
    const img = await makeImage({
      compression: 'none',
      layers: [[{ path: 'big', content: 'abcdefgh'.repeat(50_000) }]],
    });
    await pushImage(src, img, 'v1');
    const fast = await copy(src, 'v1', dst, 'l0', { destCompression: 'gzip', destCompressionLevel: 0 });
    const best = await copy(src, 'v1', dst, 'l9', { destCompression: 'gzip', destCompressionLevel: 9 });
    const layerOf = async (d: typeof fast.descriptor) => {
      const { document } = await fetchManifest(dst, d);
      assert.equal(document.kind, 'manifest');
      return document.kind === 'manifest' ? document.manifest.layers[0]! : assert.fail();
    };
    const [l1, l9] = [await layerOf(fast.descriptor), await layerOf(best.descriptor)];
    assert.notEqual(l1.digest, l9.digest);
    for (const l of [l1, l9]) {
      assert.equal(digestBytes(gunzipSync(await readAll(await dst.fetch(l), 1 << 24))), img.diffIds[0]);
    }
    for (const bad of [10, -1, 1.5]) {
      await assert.rejects(
        copy(src, 'v1', dst, 'bad', { destCompression: 'gzip', destCompressionLevel: bad }),
        {
          code: 'ERR_INVALID_ARGUMENT',
        },
      );
    }
    await assert.rejects(copy(src, 'v1', dst, 'bad', { destCompressionLevel: 5 }), {
      code: 'ERR_INVALID_ARGUMENT',
    });
    await assert.rejects(dst.resolve('bad'), { code: 'ERR_NOT_FOUND' });
  });

  it('blames the source for corrupt bytes and leaves the destination without them', async (t) => {
    const { src, dst } = await layouts(t);
    const img = await makeImage({ layers: [[{ path: 'a', content: 'a'.repeat(5000) }]] });
    await pushImage(src, img, 'v1');
    const layer = img.layers[0]!.descriptor;
    const path = src.blobPath(layer.digest);
    const bytes = await readFile(path);
    bytes[bytes.length - 20] = (bytes[bytes.length - 20] ?? 0) ^ 0xff;
    await writeFile(path, bytes);
    await assert.rejects(copy(src, 'v1', dst, 'v1'), (e) => {
      assert.ok(e instanceof CopyError, String(e));
      assert.equal(e.side, 'source');
      assert.equal(e.code, 'ERR_DIGEST_MISMATCH');
      return true;
    });
    assert.equal(await dst.exists(layer), false);
    await assert.rejects(dst.resolve('v1'), { code: 'ERR_NOT_FOUND' });
    const left = await readdir(dst.dir);
    assert.deepEqual(
      left.filter((n) => n.startsWith('.stratum-tmp')),
      [],
    );
  });

  it('stops on abort with ERR_ABORTED and writes no tag', async (t) => {
    const { src, dst } = await layouts(t);
    const img = await makeImage({ layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }]] });
    await pushImage(src, img, 'v1');
    const ac = new AbortController();
    const p = copy(src, 'v1', dst, 'v1', {
      signal: ac.signal,
      concurrency: 1,
      onEvent: (e) => {
        if (e.type === 'blob-start') ac.abort();
      },
    });
    await assert.rejects(p, { code: 'ERR_ABORTED' });
    await assert.rejects(dst.resolve('v1'), { code: 'ERR_NOT_FOUND' });
  });

  it('checks the gzip stream of converted layers too', async (t) => {
    const { src, dst } = await layouts(t);
    const img = await makeImage({ compression: 'none' });
    await pushImage(src, img, 'v1');
    const r = await copy(src, 'v1', dst, 'gz', { destCompression: 'gzip' });
    const { document } = await fetchManifest(dst, r.descriptor);
    if (document.kind !== 'manifest') assert.fail('not a manifest');
    const l = document.manifest.layers[0]!;
    assert.equal(l.mediaType, MediaType.OciLayerGzip);
    assert.deepEqual(gunzipSync(await readAll(await dst.fetch(l), 1 << 20)), img.layers[0]!.bytes);
  });
});
