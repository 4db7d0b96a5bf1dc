// flatten: the one-layer image unpacks — with stratum unpack and with umoci unpack — to the
// same tree as the original (testing/tree.ts: path, type, mode, owner, size, content, link,
// device, xattrs, hard-link groups, file mtimes), by both methods; its config and history are
// the original's with one diff_id; the stream method is deterministic.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Image } from '../image/image.js';
import { dir, file, hardlink, makeTarball } from '../layer/apply-fixtures.js';
import { openLayout } from '../layout/layout.js';
import { unpack } from '../ops/unpack.js';
import { layerMediaType } from '../spec/media-types.js';
import { type FixtureSet, fixturesSkipReason, getFixtures, umociBundle } from '../testing/fixtures.js';
import { makeImage, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { compareTrees, describeTree } from '../testing/tree.js';
import { type FlattenMethod, flattenImage } from './flatten.js';
import { diffImages } from './image-diff.js';
import { analyzeLayers } from './layers.js';

const exec = promisify(execFile);
const skip = fixturesSkipReason();
const isRoot = process.geteuid?.() === 0;

async function sameTree(a: string, b: string, names: [string, string]): Promise<string[]> {
  const [ta, tb] = await Promise.all([describeTree(a, { mtimes: true }), describeTree(b, { mtimes: true })]);
  return compareTrees(ta, tb, names);
}

describe('flattenImage', () => {
  it('squashes generated layers: implicit and emptied directories, hard links across layers, whiteouts', async (t) => {
    const work = await tempDir(t);
    const image = await makeImage({
      compression: 'gzip',
      layers: [
        makeTarball([
          dir('etc', { mode: 0o750, uid: 3, gid: 4, mtime: 1_000 }),
          file('etc/conf', 'v1', { mtime: 2_000 }),
          file('implicit/deep/file', 'gone soon'), // parents made by the applier
          file('data', '0123456789', { mode: 0o600, uid: 1000, gid: 1000 }),
          hardlink('data-link', 'data'),
        ]),
        makeTarball([
          { name: 'implicit/deep/.wh.file' }, // leaves implicit/deep empty
          { name: '.wh.data' }, // data-link keeps the inode
          file('etc/conf', 'v2', { mtime: 3_000 }),
          hardlink('etc/conf2', 'etc/conf'),
          hardlink('data-link2', 'data-link'),
        ]),
      ],
      config: {
        config: { Env: ['A=1'], Cmd: ['/bin/true'], User: '1000', WorkingDir: '/etc' },
        history: [
          { created_by: 'ENV A=1', empty_layer: true },
          { created_by: 'ADD base' },
          { created_by: 'RUN change' },
        ],
      },
    });
    const layout = await openLayout(join(work, 'layout'), { create: true });
    t.after(() => layout.close());
    await pushImage(layout, image, 'orig');
    const src = { fetcher: layout, descriptor: image.manifest.descriptor };
    const created = new Date('2030-01-02T03:04:05Z');
    const r = await flattenImage(src, layout, 'flat', { created, tmpDir: work });
    assert.equal(r.layers, 2);
    assert.equal(r.method, 'stream');
    assert.equal(r.layer.mediaType, layerMediaType('oci', 'gzip'));

    const flat = new Image(layout, r.manifest);
    const config = await flat.config();
    assert.deepEqual(config.rootfs.diff_ids, [r.diffId]);
    assert.deepEqual(config.config, { Env: ['A=1'], Cmd: ['/bin/true'], User: '1000', WorkingDir: '/etc' });
    assert.equal(config.architecture, 'amd64');
    assert.equal(config.created, created.toISOString());
    assert.deepEqual(
      config.history?.map((h) => [h.created_by, h.empty_layer ?? false]),
      [
        ['ENV A=1', true],
        ['ADD base', true],
        ['RUN change', true],
        ['stratum flatten', false],
      ],
    );
    assert.equal((await flat.layers()).length, 1);

    // the same filesystem, as the model sees it and as unpack leaves it
    assert.deepEqual((await diffImages(src, { fetcher: layout, descriptor: r.manifest })).paths, []);
    const a = await unpack(`oci:${join(work, 'layout')}:orig`, join(work, 'a'), {
      root: join(work, 'store'),
    });
    const b = await unpack(`oci:${join(work, 'layout')}:flat`, join(work, 'b'), {
      root: join(work, 'store'),
    });
    assert.deepEqual(await sameTree(a.rootfs, b.rootfs, ['original', 'flattened']), []);
    const tree = await describeTree(b.rootfs, { mtimes: true });
    assert.deepEqual(
      tree.map((e) => e.path),
      ['data-link', 'data-link2', 'etc', 'etc/conf', 'etc/conf2', 'implicit', 'implicit/deep'],
    );
    assert.deepEqual(tree.find((e) => e.path === 'data-link')?.hardlinks, ['data-link2']);

    // nothing in it is wasted; the same input gives the same bytes
    const report = await analyzeLayers({ fetcher: layout, descriptor: r.manifest });
    assert.equal(report.wastedBytes, 0);
    assert.equal(report.efficiency, 1);
    const again = await flattenImage(src, layout, undefined, { created, tmpDir: work });
    assert.equal(again.manifest.digest, r.manifest.digest);
    const zstd = await flattenImage(src, layout, undefined, { created, tmpDir: work, compression: 'zstd' });
    assert.equal(zstd.diffId, r.diffId);
    assert.equal(zstd.layer.mediaType, layerMediaType('oci', 'zstd'));
  });

  it('refuses an unknown method, and the extract method without root', async (t) => {
    const work = await tempDir(t);
    const image = await makeImage();
    const layout = await openLayout(join(work, 'layout'), { create: true });
    t.after(() => layout.close());
    await pushImage(layout, image);
    const src = { fetcher: layout, descriptor: image.manifest.descriptor };
    await assert.rejects(flattenImage(src, layout, undefined, { method: 'squash' as FlattenMethod }), {
      code: 'ERR_INVALID_ARGUMENT',
    });
    if (!isRoot) {
      await assert.rejects(flattenImage(src, layout, undefined, { method: 'extract' }), {
        code: 'ERR_UNSUPPORTED',
      });
    }
  });
});

describe('flatten on the fixture images: stratum and umoci unpack it to the original tree', { skip }, () => {
  let set: FixtureSet;
  before(async () => {
    set = await getFixtures();
  });

  const cases: [string, FlattenMethod][] = [
    ['layers', 'stream'],
    ['layers', 'extract'],
    ['busybox', 'stream'],
  ];
  for (const [name, method] of cases) {
    it(`${name} (${method})`, async (t) => {
      const fx = set.image(name);
      const work = await tempDir(t);
      const src = await openLayout(fx.layout, { readOnly: true });
      t.after(() => src.close());
      const out = await openLayout(join(work, 'out'), { create: true });
      t.after(() => out.close());
      const desc = await src.resolve(name);
      const r = await flattenImage({ fetcher: src, descriptor: desc }, out, 'flat', { method, tmpDir: work });
      const original = join(await umociBundle(fx), 'rootfs');

      const ours = await unpack(`oci:${join(work, 'out')}:flat`, join(work, 'stratum'), {
        root: join(work, 'store'),
      });
      assert.deepEqual(
        await sameTree(original, ours.rootfs, ['original (umoci)', 'flattened (stratum)']),
        [],
      );
      await exec('umoci', ['unpack', '--image', `${join(work, 'out')}:flat`, join(work, 'umoci')]);
      assert.deepEqual(
        await sameTree(original, join(work, 'umoci', 'rootfs'), ['original (umoci)', 'flattened (umoci)']),
        [],
      );
      const config = await new Image(out, r.manifest).config();
      const before = await new Image(src, desc).config();
      assert.deepEqual(config.config, before.config);
      assert.equal(config.history?.length, (before.history?.length ?? 0) + 1);
    });
  }
});
