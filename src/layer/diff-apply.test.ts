// diff then apply: a layer made by diffTrees / diffOverlayUpper, applied with applyLayer on
// top of the lower tree, reproduces the upper tree exactly — path, type, mode, uid, gid, size,
// content hash, link target, device numbers, xattrs, hard link groups and (whole-second)
// mtimes, compared with the tree describer in src/testing/tree.ts.

import assert from 'node:assert/strict';
import { createReadStream, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../testing/tmp.js';
import { compareTrees, describeTree, type TreeOptions } from '../testing/tree.js';
import { applyLayer } from './apply.js';
import { type DiffTreesOptions, diffOverlayUpper, diffTrees } from './diff.js';
import {
  fixTimes,
  HAVE_SETFATTR,
  IS_ROOT,
  listLayer,
  richTree,
  setfattr,
  sh,
  write,
} from './diff-fixtures.test.js';

const TREE: TreeOptions = { mtimes: true, xattrs: HAVE_SETFATTR, ignoreXattrs: ['trusted.overlay.'] };

async function sameTree(want: string, got: string): Promise<void> {
  const diffs = compareTrees(await describeTree(want, TREE), await describeTree(got, TREE), [
    'upper',
    'applied',
  ]);
  assert.deepEqual(diffs, []);
}

/** diffTrees(lower, upper), then apply the layer to a copy of lower: it must equal upper. */
async function roundTrip(
  dir: string,
  lower: string | undefined,
  upper: string,
  opts: Omit<DiffTreesOptions, 'destination'> = {},
): Promise<string> {
  const layer = join(dir, `layer-${Math.random().toString(36).slice(2)}`);
  const r = await diffTrees(lower, upper, { ...opts, destination: layer });
  const target = join(dir, `applied-${Math.random().toString(36).slice(2)}`);
  if (lower === undefined) mkdirSync(target);
  else sh('cp', ['-a', '--preserve=all', lower, target]);
  const a = await applyLayer(target, createReadStream(layer), { form: 'plain' });
  assert.equal(a.diffID, r.diffId, 'apply sees the diffID diff computed');
  assert.equal(a.entries, r.entries);
  await sameTree(upper, target);
  return layer;
}

describe('diff then apply', () => {
  it('a rich tree from nothing', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    await roundTrip(dir, undefined, src);
    await roundTrip(dir, undefined, src, { compression: 'none' });
  });

  it('every kind of change against a lower tree, with and without opaque directories', async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, 'lower');
    richTree(lower);
    write(lower, 'gone/a/b/c', 'c');
    write(lower, 'emptied/x', 'x');
    write(lower, 'emptied/y/z', 'z');
    write(lower, 'to-file/inner', 'i');
    write(lower, 'to-dir', 'f');
    write(lower, 'same-size', 'AAAA');
    fixTimes(lower, ['same-size']);
    const upper = join(dir, 'upper');
    sh('cp', ['-a', '--preserve=all', lower, upper]);
    rmSync(join(upper, 'gone'), { recursive: true });
    rmSync(join(upper, 'emptied'), { recursive: true });
    write(upper, 'emptied/new', 'n');
    rmSync(join(upper, 'to-file'), { recursive: true });
    writeFileSync(join(upper, 'to-file'), 'now a file');
    rmSync(join(upper, 'to-dir'));
    write(upper, 'to-dir/inside', 'i');
    writeFileSync(join(upper, 'same-size'), 'BBBB');
    fixTimes(upper, ['same-size']);
    rmSync(join(upper, 'links/rel'));
    sh('ln', ['-s', 'elsewhere', join(upper, 'links/rel')]);
    sh('chmod', ['0700', join(upper, 'modes/private')]);
    rmSync(join(upper, 'hard/z'));
    write(upper, 'big/text.txt', 'replaced\n');
    if (HAVE_SETFATTR) setfattr(join(upper, 'small.txt'), 'user.comment', 'changed');
    if (IS_ROOT) sh('chown', ['99:99', join(upper, 'one')]);

    for (const opaque of ['never', 'auto'] as const) {
      const layer = await roundTrip(dir, lower, upper, { opaque });
      const names = (await listLayer(layer)).map((e) => e.name);
      assert.equal(names.includes('emptied/.wh..wh..opq'), opaque === 'auto');
      assert.ok(names.includes('.wh.gone'));
      assert.ok(!names.includes('empty'), 'unchanged files stay out');
    }
    await roundTrip(dir, lower, upper, { opaque: (p) => p === 'links' || p === '' });
  });

  it('hard links: a new link to an unchanged file keeps the pair linked', async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, 'lower');
    write(lower, 'a', 'shared\n');
    write(lower, 'old/p', 'p');
    write(lower, 'old/q', 'q');
    linkSync(join(lower, 'old/p'), join(lower, 'old/p2'));
    fixTimes(lower, ['a', 'old/p', 'old/q']);
    const upper = join(dir, 'upper');
    sh('cp', ['-a', lower, upper]);
    linkSync(join(upper, 'a'), join(upper, 'z-link')); // 'a' itself is unchanged
    write(upper, 'old/q', 'changed'); // unrelated change
    const layer = await roundTrip(dir, lower, upper);
    const e = await listLayer(layer);
    const byName = new Map(e.map((x) => [x.name, x]));
    assert.equal(byName.get('a')?.type, 'file', 'the unchanged path goes in too');
    assert.equal(byName.get('z-link')?.type, 'link');
    assert.equal(byName.get('z-link')?.linkname, 'a');
    assert.equal(byName.has('old/p'), false, 'an unchanged link group stays out');
  });

  it('an overlayfs upper, applied to its lower, equals what the mount showed', {
    skip: !IS_ROOT
      ? 'needs root to mount overlayfs'
      : !readFileSync('/proc/filesystems', 'utf8').includes('overlay')
        ? 'this kernel has no overlayfs'
        : false,
  }, async (t) => {
    const dir = await tempDir(t);
    const [L, U, W, M] = ['lower', 'upper', 'work', 'merged'].map((n) => join(dir, n)) as [
      string,
      string,
      string,
      string,
    ];
    for (const d of [U, W, M]) mkdirSync(d);
    richTree(L);
    write(L, 'var/cache/a', 'a');
    write(L, 'var/cache/sub/b', 'b');
    sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${L},upperdir=${U},workdir=${W}`, M]);
    let mounted = true;
    const umount = (): void => {
      if (mounted) sh('umount', [M]);
      mounted = false;
    };
    t.after(umount);
    rmSync(join(M, 'var/cache'), { recursive: true });
    mkdirSync(join(M, 'var/cache'));
    write(M, 'var/cache/fresh', 'fresh');
    rmSync(join(M, 'small.txt'));
    rmSync(join(M, 'links'), { recursive: true });
    write(M, 'big/text.txt', 'edited\n');
    sh('chmod', ['0751', join(M, 'modes/setuid')]);
    write(M, 'brand/new/file', 'new');
    linkSync(join(M, 'brand/new/file'), join(M, 'brand/link'));
    const merged = await describeTree(M, TREE);
    umount();

    const layer = join(dir, 'layer');
    const r = await diffOverlayUpper(U, { destination: layer });
    assert.equal(readFileSync(layer).includes('trusted.overlay'), false);
    // plain form on a copy of the lower tree
    const plain = join(dir, 'plain');
    sh('cp', ['-a', '--preserve=all', L, plain]);
    const a = await applyLayer(plain, createReadStream(layer), { form: 'plain' });
    assert.equal(a.diffID, r.diffId);
    assert.deepEqual(compareTrees(merged, await describeTree(plain, TREE), ['mounted', 'applied']), []);
    // overlay form into a fresh upper, mounted over the same lower
    const U2 = join(dir, 'upper2');
    const W2 = join(dir, 'work2');
    const M2 = join(dir, 'merged2');
    for (const d of [U2, W2, M2]) mkdirSync(d);
    await applyLayer(U2, createReadStream(layer), { form: 'overlay', lowers: [L] });
    sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${L},upperdir=${U2},workdir=${W2}`, M2]);
    try {
      assert.deepEqual(compareTrees(merged, await describeTree(M2, TREE), ['mounted', 'remounted']), []);
    } finally {
      sh('umount', [M2]);
    }
    // and diffing that upper again gives the same layer
    const again = await diffOverlayUpper(U2, { destination: join(dir, 'again'), sourceDateEpoch: 0 });
    const first = await diffOverlayUpper(U, { destination: join(dir, 'first'), sourceDateEpoch: 0 });
    assert.equal(again.diffId, first.diffId);
  });
});
