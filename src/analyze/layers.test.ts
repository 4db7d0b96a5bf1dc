// analyzeLayers: figures computed by hand for a generated image (sizes, history alignment,
// counts, wasted bytes by layer, efficiency), the crafted fixture layers, and the failures
// (a diffID that does not match, a layer that is not a tar).

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { digestBytes } from '../digest/digest.js';
import { dir, file, makeTarball } from '../layer/apply-fixtures.js';
import { openLayout } from '../layout/layout.js';
import { MediaType } from '../spec/media-types.js';
import { fixturesSkipReason, getFixtures } from '../testing/fixtures.js';
import { blob, makeImage, pushImage, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { analyzeLayers, layerHistory } from './layers.js';

const bytes = (n: number, c = 'x'): string => c.repeat(n);

/**
 * Layer 1: a.txt 100, big.bin 1000, dir/keep 10, dir/gone 50 (+ the dir): 1160 bytes of files.
 * Layer 2: a.txt 200 (shadows 100 of layer 1), whites out dir/gone (50), new.txt 5: 205 bytes.
 * Layer 3: whites out big.bin (1000 of layer 1), a.txt 300 (shadows 200 of layer 2): 300 bytes.
 * Wasted: layer 1 100 + 50 + 1000 = 1150 (shadowed 100, deleted 1050), layer 2 200: 1350 of 1665.
 */
const TARS = [
  makeTarball([
    file('a.txt', bytes(100)),
    file('big.bin', bytes(1000)),
    dir('dir'),
    file('dir/keep', bytes(10)),
    file('dir/gone', bytes(50)),
  ]),
  makeTarball([file('a.txt', bytes(200, 'y')), { name: 'dir/.wh.gone' }, file('new.txt', bytes(5))]),
  makeTarball([{ name: '.wh.big.bin' }, file('a.txt', bytes(300, 'z'))]),
];

async function stored(t: { after: (fn: () => Promise<void>) => void }, image: TestImage) {
  const layout = await openLayout(join(await tempDir(t), 'layout'), { create: true });
  t.after(() => layout.close());
  await pushImage(layout, image);
  return { fetcher: layout, descriptor: image.manifest.descriptor };
}

describe('analyzeLayers', () => {
  it('reports sizes, instructions, counts, wasted bytes and efficiency as computed by hand', async (t) => {
    const image = await makeImage({
      layers: TARS,
      config: {
        history: [
          { created_by: 'ENV A=1', empty_layer: true },
          { created_by: 'ADD base /', created: '2026-01-01T00:00:00Z' },
          { created_by: 'RUN update', comment: 'buildkit' },
          { created_by: 'CMD ["sh"]', empty_layer: true },
          { created_by: 'RUN clean' },
        ],
      },
    });
    const r = await analyzeLayers(await stored(t, image), { paths: true });
    assert.equal(r.manifest.digest, image.manifest.descriptor.digest);
    assert.deepEqual(
      r.layers.map((l) => [l.instruction, l.created, l.comment]),
      [
        ['ADD base /', '2026-01-01T00:00:00Z', undefined],
        ['RUN update', undefined, 'buildkit'],
        ['RUN clean', undefined, undefined],
      ],
    );
    for (const [i, l] of r.layers.entries()) {
      assert.equal(l.index, i);
      assert.equal(l.size, TARS[i]!.length);
      assert.equal(l.diffId, digestBytes(TARS[i]!));
      assert.equal(l.compressedSize, image.layers[i]!.descriptor.size);
      assert.equal(l.digest, image.layers[i]!.descriptor.digest);
    }
    assert.deepEqual(
      r.layers.map((l) => [l.entries, l.fileBytes, l.added, l.changed, l.deleted]),
      [
        [5, 1160, 5, 0, 0],
        [3, 205, 1, 1, 1],
        [2, 300, 0, 1, 1],
      ],
    );
    assert.deepEqual(
      r.layers.map((l) => [l.wastedBytes, l.shadowedBytes, l.deletedBytes]),
      [
        [1150, 100, 1050],
        [200, 200, 0],
        [0, 0, 0],
      ],
    );
    assert.equal(r.totalBytes, 1665);
    assert.equal(r.wastedBytes, 1350);
    assert.equal(r.efficiency, 1 - 1350 / 1665);
    assert.equal(r.size, TARS[0]!.length + TARS[1]!.length + TARS[2]!.length);
    assert.deepEqual(r.wasted, [
      { path: '/big.bin', bytes: 1000, layers: [0] },
      { path: '/a.txt', bytes: 300, layers: [0, 1] },
      { path: '/dir/gone', bytes: 50, layers: [0] },
    ]);
    assert.deepEqual(r.layers[1]!.paths, [
      { path: '/a.txt', kind: 'changed' },
      { path: '/dir/gone', kind: 'deleted' },
      { path: '/new.txt', kind: 'added' },
    ]);
  });

  it('an image without waste scores 1, and an empty one too', async (t) => {
    const r = await analyzeLayers(await stored(t, await makeImage()));
    assert.equal(r.wastedBytes, 0);
    assert.equal(r.efficiency, 1);
    assert.equal(r.layers[0]!.instruction, 'layer 0');
    const empty = await analyzeLayers(
      await stored(t, await makeImage({ layers: [[{ path: 'd', type: 'directory' }]] })),
    );
    assert.equal(empty.totalBytes, 0);
    assert.equal(empty.efficiency, 1);
  });

  it('lines history up with layers, skipping empty_layer entries', () => {
    assert.deepEqual(
      layerHistory([
        { created_by: 'a', empty_layer: true },
        { created_by: 'b' },
        { created_by: 'c', empty_layer: false },
      ]).map((h) => h.created_by),
      ['b', 'c'],
    );
    assert.deepEqual(layerHistory(undefined), []);
  });

  it('refuses a layer whose diffID is not the config’s, and a layer that is not a tar', async (t) => {
    const good = await makeImage({ layers: [TARS[0]!] });
    const config = JSON.parse(good.config.bytes.toString());
    config.rootfs.diff_ids = [digestBytes('something else')];
    const cfg = blob(MediaType.OciConfig, Buffer.from(JSON.stringify(config)));
    const man = blob(
      MediaType.OciManifest,
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciManifest,
          config: cfg.descriptor,
          layers: [good.layers[0]!.descriptor],
        }),
      ),
    );
    const bad: TestImage = { ...good, config: cfg, manifest: man, blobs: [man, cfg, ...good.layers] };
    await assert.rejects(analyzeLayers(await stored(t, bad)), {
      code: 'ERR_DIGEST_MISMATCH',
      message: /layer 1 .*diffID/,
    });

    const notTar = gzipSync(Buffer.from('this is not a tar archive, just some words'.repeat(20)));
    const img = await makeImage({ layers: [notTar] });
    await assert.rejects(analyzeLayers(await stored(t, img)), {
      code: 'ERR_INVALID_ARCHIVE',
      message: /^layer 1 \(sha256:[0-9a-f]{64}\): invalid tar/,
    });

    const artifact = {
      ...good.layers[0]!,
      descriptor: { ...good.layers[0]!.descriptor, mediaType: 'application/x-thing' },
    };
    const art = blob(
      MediaType.OciManifest,
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciManifest,
          config: good.config.descriptor,
          layers: [artifact.descriptor],
        }),
      ),
    );
    await assert.rejects(
      analyzeLayers(
        await stored(t, { ...good, manifest: art, layers: [artifact], blobs: [art, good.config, artifact] }),
      ),
      { code: 'ERR_UNSUPPORTED_MEDIA_TYPE' },
    );
  });

  it('reads the crafted fixture layers: whiteouts, opaque directories, hard links, type changes', {
    skip: fixturesSkipReason(),
  }, async (t) => {
    const fx = (await getFixtures()).image('layers');
    const layout = await openLayout(fx.layout, { readOnly: true });
    t.after(() => layout.close());
    const r = await analyzeLayers({ fetcher: layout, descriptor: await layout.resolve('layers') });
    // layer 2 (see LAYER2 in testing/fixtures.ts): 8 new paths, 6 written over, 7 removed
    assert.deepEqual([r.layers[1]!.added, r.layers[1]!.changed, r.layers[1]!.deleted], [8, 6, 7]);
    // what its whiteouts and opaque markers removed of layer 1: w/file1 11, w/dir1 2 + 2,
    // w/dir3/old 4, opq/lower1 6, opq/sub/lower2 6, opq2/lower3 6 (links/hard3 keeps its data)
    assert.equal(r.layers[0]!.deletedBytes, 37);
    const wasted = new Set(r.wasted.map((w) => w.path));
    for (const p of ['/sparse/holes', '/xattrs/file', '/hl/lowerfile2', '/replace/dir-becomes-file/child']) {
      assert.ok(wasted.has(p), `${p} is wasted`);
    }
    // hard-linked names that went while another name keeps the data
    assert.ok(!wasted.has('/links/hard1'));
    assert.ok(r.efficiency > 0 && r.efficiency < 1);
    assert.equal(
      r.wastedBytes,
      r.layers.reduce((n, l) => n + l.wastedBytes, 0),
    );
  });
});
