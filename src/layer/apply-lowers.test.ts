// Overlay-form apply with lower layers must see the merged view overlayfs shows: a lookup in
// the lowers (for the metadata of a directory a layer needs but does not carry, and for a
// hard link to a lower file) stops at whiteouts, non-directories and opaque directories of
// higher layers, and at this layer's own whiteouts and opaque markers. Each case applies the
// same layers in plain form into one directory and in overlay form (each layer its own upper,
// the ones before it as `lowers`), then mounts the uppers read-only with overlayfs and
// compares the trees; where the plain form refuses a layer, the overlay form must refuse it
// with the same code.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { describe, it, type TestContext } from 'node:test';
import { findProgram } from '../compression/compression.js';
import { tempDir } from '../testing/tmp.js';
import { compareTrees, describeTree, type TreeEntry } from '../testing/tree.js';
import { applyLayer } from './apply.js';
import {
  dir,
  execFileP,
  type FixtureEntry,
  file,
  hardlink,
  isRoot,
  makeTarball,
  streamOf,
} from './apply-fixtures.js';

function skipReason(): string | false {
  if (!isRoot) return 'needs root (trusted.overlay xattrs, whiteout devices, overlay mounts)';
  if (findProgram('getfattr') === undefined) return 'needs getfattr (the attr package)';
  if (!existsSync('/proc/filesystems') || !readFileSync('/proc/filesystems', 'utf8').includes('overlay')) {
    return 'the kernel has no overlayfs';
  }
  return false;
}

const skip = skipReason();

interface BothForms {
  /** The plain-form tree (all layers applied in order, up to the first failure). */
  readonly plain: string;
  /** One overlay-form upper per layer applied (the first failure's upper included). */
  readonly uppers: readonly string[];
  /** The code each form failed with, and at which layer; undefined when all layers applied. */
  readonly plainFailure?: { readonly code: string | undefined; readonly layer: number };
  readonly overlayFailure?: { readonly code: string | undefined; readonly layer: number };
}

async function bothForms(t: TestContext, layers: readonly (readonly FixtureEntry[])[]): Promise<BothForms> {
  const plain = await tempDir(t);
  let plainFailure: BothForms['plainFailure'];
  for (const [i, l] of layers.entries()) {
    try {
      await applyLayer(plain, streamOf(makeTarball(l)), { form: 'plain' });
    } catch (e) {
      plainFailure = { code: (e as { code?: string }).code, layer: i };
      break;
    }
  }
  const uppers: string[] = [];
  let overlayFailure: BothForms['overlayFailure'];
  for (const [i, l] of layers.entries()) {
    const u = await tempDir(t);
    const lowers = [...uppers].reverse();
    uppers.push(u);
    try {
      await applyLayer(u, streamOf(makeTarball(l)), {
        form: 'overlay',
        ...(lowers.length > 0 ? { lowers } : {}),
      });
    } catch (e) {
      overlayFailure = { code: (e as { code?: string }).code, layer: i };
      break;
    }
  }
  return {
    plain,
    uppers,
    ...(plainFailure ? { plainFailure } : {}),
    ...(overlayFailure ? { overlayFailure } : {}),
  };
}

/** Mount the uppers (bottom first) read-only and list how the merged tree differs from `plain`. */
async function mergedDiffs(t: TestContext, uppers: readonly string[], plain: string): Promise<string[]> {
  const mnt = await tempDir(t);
  const opts = { ignoreXattrs: ['trusted.overlay.'], mtimes: true } as const;
  await execFileP('mount', [
    '-t',
    'overlay',
    'overlay',
    '-o',
    `ro,lowerdir=${[...uppers].reverse().join(':')}`,
    mnt,
  ]);
  let merged: TreeEntry[];
  let flat: TreeEntry[];
  try {
    [merged, flat] = await Promise.all([describeTree(mnt, opts), describeTree(plain, opts)]);
  } finally {
    await execFileP('umount', [mnt]);
  }
  // a hard link to a lower file is a copy in overlay form: compare without link groups
  const strip = (es: TreeEntry[]): TreeEntry[] => es.map(({ hardlinks: _h, ...e }) => e);
  return compareTrees(strip(merged), strip(flat), ['overlay', 'plain']);
}

/** All layers apply in both forms and the mounted overlay equals the plain tree. */
async function assertSameTree(
  t: TestContext,
  layers: readonly (readonly FixtureEntry[])[],
): Promise<BothForms> {
  const r = await bothForms(t, layers);
  assert.equal(r.plainFailure, undefined, 'the plain form applies every layer');
  assert.equal(r.overlayFailure, undefined, 'the overlay form applies every layer');
  assert.deepEqual(await mergedDiffs(t, r.uppers, r.plain), []);
  return r;
}

/** The plain form refuses the last layer with ERR_INVALID_ARCHIVE, and so does the overlay form. */
async function assertBothRefuse(t: TestContext, layers: readonly (readonly FixtureEntry[])[]): Promise<void> {
  const r = await bothForms(t, layers);
  const last = layers.length - 1;
  assert.deepEqual(r.plainFailure, { code: 'ERR_INVALID_ARCHIVE', layer: last }, 'plain form');
  assert.deepEqual(r.overlayFailure, { code: 'ERR_INVALID_ARCHIVE', layer: last }, 'overlay form');
}

const modeOf = (path: string): number => statSync(path).mode & 0o7777;

describe('applyLayer overlay form with lowers: opaque directories in the lowers', { skip }, () => {
  it('a directory the layer needs does not take the metadata of one an opaque directory hides', async (t) => {
    const r = await assertSameTree(t, [
      [dir('d/'), dir('d/sub/', { mode: 0o700 }), file('d/sub/old', 'old')],
      [dir('d/'), file('d/.wh..wh..opq'), file('d/keep', 'keep')],
      [file('d/sub/z', 'z')], // no d/sub entry: a plain unpack makes it 0755
    ]);
    assert.equal(modeOf(`${r.plain}/d/sub`), 0o755);
    assert.equal(modeOf(`${r.uppers[2]}/d/sub`), 0o755);
  });

  it('an opaque directory deep in the chain hides the layers below it, not the ones above', async (t) => {
    const r = await assertSameTree(t, [
      [dir('a/'), dir('a/b/', { mode: 0o700 }), dir('a/b/c/', { mode: 0o700 }), file('a/b/c/old')],
      [dir('a/'), file('a/.wh..wh..opq')],
      [dir('a/'), dir('a/b/', { mode: 0o711, mtime: 1_234_567 })],
      [file('a/b/c/z', 'z'), file('a/b/y', 'y')], // a/b from the third layer, a/b/c new
    ]);
    assert.equal(modeOf(`${r.uppers[3]}/a/b`), 0o711);
    assert.equal(statSync(`${r.uppers[3]}/a/b`).mtimeMs, 1_234_567_000);
    assert.equal(modeOf(`${r.uppers[3]}/a/b/c`), 0o755);
  });

  it('a hard link to a file an opaque directory hides is refused, as the plain form refuses it', async (t) => {
    await assertBothRefuse(t, [
      [dir('d/'), file('d/f', 'hidden')],
      [dir('d/'), file('d/.wh..wh..opq'), file('d/g', 'visible')],
      [hardlink('x', 'd/f')],
    ]);
  });

  it('a hard link to a file of the opaque directory itself, or of a layer above it, is copied up', async (t) => {
    const r = await assertSameTree(t, [
      [dir('d/'), file('d/f', 'one'), file('d/g', 'bottom')],
      [dir('d/'), file('d/.wh..wh..opq'), file('d/f', 'two', { mode: 0o640 })],
      [dir('e/'), file('e/h', 'three')],
      [hardlink('x', 'd/f'), hardlink('y', 'e/h')],
    ]);
    assert.equal(readFileSync(`${r.uppers[3]}/x`, 'utf8'), 'two');
    assert.equal(modeOf(`${r.uppers[3]}/x`), 0o640);
    assert.equal(readFileSync(`${r.uppers[3]}/y`, 'utf8'), 'three');
  });

  it('an opaque root of a lower layer hides everything below it', async (t) => {
    // overlayfs ignores trusted.overlay.opaque on a layer's root, so the mounted tree is not
    // compared here: what this layer writes must still follow the plain form
    const layers: FixtureEntry[][] = [
      [dir('d/'), dir('d/sub/', { mode: 0o700 }), file('d/f', 'f')],
      [file('.wh..wh..opq'), file('new', 'n')],
      [file('d/sub/z', 'z')],
    ];
    const r = await bothForms(t, layers);
    assert.equal(r.plainFailure, undefined);
    assert.equal(r.overlayFailure, undefined);
    assert.equal(modeOf(`${r.plain}/d/sub`), 0o755);
    assert.equal(modeOf(`${r.uppers[2]}/d/sub`), 0o755);
    await assertBothRefuse(t, [...layers.slice(0, 2), [hardlink('x', 'd/f')]]);
  });
});

describe('applyLayer overlay form with lowers: whiteouts in the lowers', { skip }, () => {
  it('a whiteout of a directory in a higher lower hides it and its metadata', async (t) => {
    const r = await assertSameTree(t, [
      [dir('d/'), dir('d/sub/', { mode: 0o700 }), file('d/sub/old'), dir('e/', { mode: 0o750 }), file('e/f')],
      [dir('d/'), file('d/.wh.sub'), file('.wh.e')],
      [file('d/sub/z', 'z'), file('e/g', 'g')],
    ]);
    assert.equal(modeOf(`${r.uppers[2]}/d/sub`), 0o755);
    assert.equal(modeOf(`${r.uppers[2]}/e`), 0o755);
  });

  it('a hard link to a whited-out file, or to one below a whited-out directory, is refused', async (t) => {
    const base: FixtureEntry[] = [dir('d/'), file('d/f', 'f'), dir('e/'), file('e/g', 'g')];
    await assertBothRefuse(t, [base, [dir('d/'), file('d/.wh.f')], [hardlink('x', 'd/f')]]);
    await assertBothRefuse(t, [base, [file('.wh.e')], [hardlink('x', 'e/g')]]);
    // a file in a higher layer where a lower has a directory: the directory's files are gone
    await assertBothRefuse(t, [base, [file('.wh.e'), file('e', 'now a file')], [hardlink('x', 'e/g')]]);
  });
});

describe("applyLayer overlay form with lowers: this layer's own whiteouts and opaque markers", {
  skip,
}, () => {
  const base: FixtureEntry[] = [
    dir('d/'),
    dir('d/sub/', { mode: 0o700 }),
    file('d/f', 'f'),
    dir('o/'),
    dir('o/sub/', { mode: 0o700 }),
    file('o/g', 'g'),
    file('top', 'top'),
  ];

  it('a directory the layer needs after it whited out or emptied the lower one gets plain metadata', async (t) => {
    const r = await assertSameTree(t, [
      base,
      [
        dir('d/'),
        file('d/.wh.sub'),
        file('d/sub/z', 'z'),
        dir('o/'),
        file('o/.wh..wh..opq'),
        file('o/sub/z', 'z'),
      ],
    ]);
    assert.equal(modeOf(`${r.uppers[1]}/d/sub`), 0o755);
    assert.equal(modeOf(`${r.uppers[1]}/o/sub`), 0o755);
  });

  it('a directory the layer needs before its opaque marker keeps the lower metadata (as plain does)', async (t) => {
    const r = await assertSameTree(t, [base, [file('o/sub/z', 'z'), dir('o/'), file('o/.wh..wh..opq')]]);
    assert.equal(modeOf(`${r.plain}/o/sub`), 0o700);
  });

  it('a hard link to what the layer whited out or emptied is refused', async (t) => {
    await assertBothRefuse(t, [base, [file('.wh.top'), hardlink('x', 'top')]]);
    await assertBothRefuse(t, [base, [file('.wh.d'), hardlink('x', 'd/f')]]);
    await assertBothRefuse(t, [base, [dir('o/'), file('o/.wh..wh..opq'), hardlink('x', 'o/g')]]);
    await assertBothRefuse(t, [base, [file('d', 'a file now'), hardlink('x', 'd/f')]]);
  });

  it('a second hard link after the layer whited out the target is refused (not linked to the first copy)', async (t) => {
    await assertBothRefuse(t, [base, [hardlink('x', 'top'), file('.wh.top'), hardlink('y', 'top')]]);
  });

  it('hard links before the whiteout are kept', async (t) => {
    const r = await assertSameTree(t, [base, [hardlink('x', 'top'), hardlink('y', 'd/f'), file('.wh.top')]]);
    assert.equal(readFileSync(`${r.uppers[1]}/x`, 'utf8'), 'top');
  });
});

/** Put a getfattr first on PATH that counts its runs (for the rest of the test); returns the count. */
async function countGetfattrRuns(t: TestContext): Promise<() => Promise<number>> {
  const real = findProgram('getfattr') as string;
  const bin = await tempDir(t);
  const log = `${bin}/runs`;
  await writeFile(log, '');
  await writeFile(`${bin}/getfattr`, `#!/bin/sh\necho run >> '${log}'\nexec '${real}' "$@"\n`, {
    mode: 0o755,
  });
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path ?? ''}`;
  t.after(() => {
    process.env.PATH = path;
  });
  return async () => (await readFile(log, 'utf8')).split('\n').length - 1;
}

describe('applyLayer overlay form with lowers: reading the opaque xattr', { skip }, () => {
  it('handles directory names getfattr escapes (space, backslash, newline, non-ASCII)', async (t) => {
    const name = 'we ird\\\nné';
    const r = await assertSameTree(t, [
      [dir(`${name}/`), dir(`${name}/sub/`, { mode: 0o700 }), file(`${name}/f`, 'f')],
      [dir(`${name}/`), file(`${name}/.wh..wh..opq`)],
      [file(`${name}/sub/z`, 'z')],
    ]);
    assert.equal(modeOf(`${r.uppers[2]}/${name}/sub`), 0o755);
    await assertBothRefuse(t, [
      [dir(`${name}/`), file(`${name}/f`, 'f')],
      [dir(`${name}/`), file(`${name}/.wh..wh..opq`)],
      [hardlink('x', `${name}/f`)],
    ]);
  });

  it('reads many directories in several getfattr runs (long paths through 40 lowers)', async (t) => {
    // each layer above the bottom one carries the same chain of long directory names, so a
    // lookup of chain/sub passes 40 x 11 directories (more bytes than one run takes); the
    // opaque one is near the end of that list
    const runs = await countGetfattrRuns(t);
    const chain = Array.from({ length: 10 }, (_, i) => `${String(i).padStart(2, '0')}${'x'.repeat(60)}`);
    const long = { gnuLongName: true } as const;
    const dirs = chain.map((_, i) => dir(`${chain.slice(0, i + 1).join('/')}/`, long));
    const deep = chain.join('/');
    const layers: FixtureEntry[][] = [
      [...dirs, dir(`${deep}/sub/`, { mode: 0o700, ...long }), file(`${deep}/sub/old`, '', long)],
    ];
    layers.push([...dirs, file(`${deep}/.wh..wh..opq`, '', long)]);
    for (let i = 0; i < 38; i++) layers.push([...dirs]);
    layers.push([file(`${deep}/sub/z`, 'z', long)]);
    const r = await bothForms(t, layers);
    // one lookup (of chain/sub) passes 440 directories: about 165 KB of paths, two runs
    assert.equal(await runs(), 2);
    assert.equal(r.overlayFailure, undefined);
    assert.equal(modeOf(`${r.uppers.at(-1)}/${deep}/sub`), 0o755);
    assert.deepEqual(await mergedDiffs(t, r.uppers, r.plain), []);
  });

  it('reads each directory once per apply, and only when a lookup passes through it', async (t) => {
    const runs = await countGetfattrRuns(t);
    const subs = Array.from({ length: 20 }, (_, i) => `s${i}`);
    const lowers: string[] = [];
    const bottom = await tempDir(t);
    await applyLayer(
      bottom,
      streamOf(makeTarball([dir('d/'), ...subs.map((s) => dir(`d/${s}/`, { mode: 0o700 }))])),
      { form: 'overlay' },
    );
    lowers.unshift(bottom);
    for (let i = 0; i < 5; i++) {
      const u = await tempDir(t);
      await applyLayer(u, streamOf(makeTarball([dir('d/')])), { form: 'overlay', lowers: [...lowers] });
      lowers.unshift(u);
    }
    assert.equal(await runs(), 0, 'layers that carry their directories look nothing up');
    const top = await tempDir(t);
    await applyLayer(top, streamOf(makeTarball(subs.map((s) => file(`d/${s}/z`)))), {
      form: 'overlay',
      lowers,
    });
    // d is found in the topmost lower (nothing passed); d/s0 passes the five d's and roots
    // above the bottom layer (one run); d/s1.. pass the same directories (cached)
    assert.equal(await runs(), 1);
    for (const s of subs) assert.equal(modeOf(`${top}/d/${s}`), 0o700);
  });
});
