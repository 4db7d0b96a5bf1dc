// diffImages: an image against itself and against the same filesystem layered differently is
// empty; against a modified copy it lists exactly the changes (each kind of attribute); fast
// mode compares size and mtime; an index picks the platform's image.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { dir, file, hardlink, makeTarball, symlink } from '../layer/apply-fixtures.js';
import { openLayout } from '../layout/layout.js';
import { fixturesSkipReason, getFixtures } from '../testing/fixtures.js';
import { makeImage, makeIndex, pushImage, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { flattenImage } from './flatten.js';
import { diffImages, type PathDiff } from './image-diff.js';

const BASE = makeTarball([
  dir('etc'),
  file('etc/passwd', 'root:x:0:0\n', { mtime: 100 }),
  file('etc/motd', 'hello', { mtime: 100 }),
  file('etc/mode', 'm', { mode: 0o644 }),
  file('etc/owner', 'o', { uid: 1, gid: 1 }),
  symlink('etc/link', 'passwd'),
  file('etc/becomes-link', 'x'),
  dir('var'),
  dir('var/cache'),
  file('var/cache/a', 'a'),
  file('var/cache/b', 'b'),
  file('xattr', 'x', { pax: { 'SCHILY.xattr.user.k': 'v1' } }),
  file('same', 'unchanged'),
]);

/** Every kind of change, in one layer on top of BASE. */
const CHANGES = makeTarball([
  file('etc/motd', 'HELLO', { mtime: 100 }), // same size and mtime, other content
  file('etc/mode', 'm', { mode: 0o755 }),
  file('etc/owner', 'o', { uid: 2, gid: 1 }),
  symlink('etc/link', 'motd'),
  symlink('etc/becomes-link', 'passwd'),
  { name: 'var/.wh.cache' },
  file('new/file', 'new'),
  file('xattr', 'x', { pax: { 'SCHILY.xattr.user.k': 'v2' } }),
  file('same', 'unchanged'), // written again, identical: not a difference
]);

async function layoutWith(t: { after: (fn: () => Promise<void>) => void }, ...images: TestImage[]) {
  const layout = await openLayout(join(await tempDir(t), 'layout'), { create: true });
  t.after(() => layout.close());
  for (const i of images) await pushImage(layout, i);
  return layout;
}

function summary(paths: readonly PathDiff[]): string[] {
  return paths.map((p) => `${p.kind} ${p.path}${p.changes ? ` ${p.changes.join(',')}` : ''}`);
}

describe('diffImages', () => {
  it('an image against itself, and against the same files in other layers, is empty', async (t) => {
    const a = await makeImage({ layers: [BASE, CHANGES] });
    // the same final tree, built differently: the changes applied by hand into one layer
    const b = await makeImage({
      layers: [
        makeTarball([
          dir('etc'),
          file('etc/passwd', 'root:x:0:0\n', { mtime: 100 }),
          file('etc/motd', 'HELLO', { mtime: 100 }),
          file('etc/mode', 'm', { mode: 0o755 }),
          file('etc/owner', 'o', { uid: 2, gid: 1 }),
          symlink('etc/link', 'motd'),
          symlink('etc/becomes-link', 'passwd'),
          dir('var'),
          file('new/file', 'new', { mtime: 5 }), // another mtime: not compared by content
          file('xattr', 'x', { pax: { 'SCHILY.xattr.user.k': 'v2' } }),
          file('same', 'unchanged'),
        ]),
      ],
    });
    const layout = await layoutWith(t, a, b);
    const da = { fetcher: layout, descriptor: a.manifest.descriptor };
    const db = { fetcher: layout, descriptor: b.manifest.descriptor };
    const self = await diffImages(da, da);
    assert.deepEqual([self.paths, self.added, self.removed, self.changed], [[], 0, 0, 0]);
    assert.deepEqual((await diffImages(da, db)).paths, []);
    // fast mode sees the mtime of new/file
    assert.deepEqual(summary((await diffImages(da, db, { compare: 'fast' })).paths), [
      'changed /new/file mtime',
    ]);
  });

  it('lists exactly the changes of a modified copy', async (t) => {
    const a = await makeImage({ layers: [BASE] });
    const b = await makeImage({ layers: [BASE, CHANGES] });
    const layout = await layoutWith(t, a, b);
    const d = await diffImages(
      { fetcher: layout, descriptor: a.manifest.descriptor },
      { fetcher: layout, descriptor: b.manifest.descriptor },
    );
    assert.deepEqual(summary(d.paths), [
      'changed /etc/becomes-link type',
      'changed /etc/link link',
      'changed /etc/mode mode',
      'changed /etc/motd content',
      'changed /etc/owner uid',
      'added /new',
      'added /new/file',
      'removed /var/cache',
      'removed /var/cache/a',
      'removed /var/cache/b',
      'changed /xattr xattrs',
    ]);
    assert.deepEqual([d.added, d.removed, d.changed], [2, 3, 6]);
    assert.equal(d.a.digest, a.manifest.descriptor.digest);
    const motd = d.paths.find((p) => p.path === '/etc/motd');
    assert.equal(motd?.before?.size, 5);
    assert.notEqual(motd?.before?.digest, motd?.after?.digest);
    assert.deepEqual(d.paths.find((p) => p.path === '/xattr')?.after?.xattrs, {
      'user.k': `0x${Buffer.from('v2').toString('hex')}`,
    });
    assert.deepEqual(d.paths.find((p) => p.path === '/etc/link')?.after?.link, 'motd');
    // the other way round, added and removed swap
    const back = await diffImages(
      { fetcher: layout, descriptor: b.manifest.descriptor },
      { fetcher: layout, descriptor: a.manifest.descriptor },
    );
    assert.deepEqual([back.added, back.removed, back.changed], [3, 2, 6]);
    // fast mode cannot see a same-size, same-mtime content change
    const fast = await diffImages(
      { fetcher: layout, descriptor: a.manifest.descriptor },
      { fetcher: layout, descriptor: b.manifest.descriptor },
      { compare: 'fast' },
    );
    assert.ok(!fast.paths.some((p) => p.path === '/etc/motd'));
    assert.ok(fast.paths.every((p) => p.before?.digest === undefined && p.after?.digest === undefined));
    assert.equal(fast.changed, 5);
  });

  it('a hard link against a copy of the same file is no difference', async (t) => {
    const a = await makeImage({ layers: [makeTarball([file('f', 'data'), hardlink('g', 'f')])] });
    const b = await makeImage({ layers: [makeTarball([file('f', 'data'), file('g', 'data')])] });
    const layout = await layoutWith(t, a, b);
    const d = await diffImages(
      { fetcher: layout, descriptor: a.manifest.descriptor },
      { fetcher: layout, descriptor: b.manifest.descriptor },
    );
    assert.deepEqual(d.paths, []);
  });

  it('picks the platform from an index', async (t) => {
    const amd = await makeImage({ layers: [[{ path: 'arch', content: 'amd64' }]] });
    const arm = await makeImage({
      layers: [[{ path: 'arch', content: 'arm64' }]],
      platform: { os: 'linux', architecture: 'arm64' },
    });
    const other = await makeImage({ layers: [[{ path: 'arch', content: 'arm64' }]] });
    const layout = await layoutWith(t, amd, arm, other);
    const index = makeIndex([
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    await layout.push(index.descriptor, index.bytes);
    const idx = { fetcher: layout, descriptor: index.descriptor };
    const o = { fetcher: layout, descriptor: other.manifest.descriptor };
    const onArm = await diffImages(idx, o, { platform: { os: 'linux', architecture: 'arm64' } });
    assert.deepEqual(onArm.paths, []);
    const onAmd = await diffImages(idx, o, { platform: { os: 'linux', architecture: 'amd64' } });
    assert.deepEqual(summary(onAmd.paths), ['changed /arch content']);
    await assert.rejects(diffImages(idx, o, { platform: { os: 'linux', architecture: 's390x' } }), {
      code: 'ERR_PLATFORM_NOT_FOUND',
    });
  });

  it('the crafted fixture layers against their flattened image: no difference', {
    skip: fixturesSkipReason(),
  }, async (t) => {
    const fx = (await getFixtures()).image('layers');
    const src = await openLayout(fx.layout, { readOnly: true });
    t.after(() => src.close());
    const work = await tempDir(t);
    const out = await openLayout(join(work, 'out'), { create: true });
    t.after(() => out.close());
    const desc = await src.resolve('layers');
    const flat = await flattenImage({ fetcher: src, descriptor: desc }, out, undefined, { tmpDir: work });
    const d = await diffImages(
      { fetcher: src, descriptor: desc },
      { fetcher: out, descriptor: flat.manifest },
    );
    assert.deepEqual(d.paths, []);
    // and against busybox, everything differs
    const bb = await diffImages(
      { fetcher: src, descriptor: desc },
      { fetcher: src, descriptor: await src.resolve('busybox') },
    );
    assert.ok(bb.added > 100 && bb.removed > 50);
  });
});
