// Hostile layers: a sparse file whose header claims a petabyte (diff must not hash the holes,
// flatten must refuse to write them), corrupt compressed data, and names that climb out — each
// ends with a clear error or a bounded result, never a hang.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { file, makeTarball } from '../layer/apply-fixtures.js';
import { openLayout } from '../layout/layout.js';
import { makeImage, pushImage, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { flattenImage } from './flatten.js';
import { diffImages } from './image-diff.js';
import { analyzeLayers } from './layers.js';

const PETABYTE = 2 ** 50;

/** A PAX (GNU 0.1) sparse file `huge` of 1 PiB holding `data` at offset 0. */
function hugeSparse(data: string): Buffer {
  return makeTarball([
    file('placeholder', data, {
      pax: {
        'GNU.sparse.name': 'huge',
        'GNU.sparse.size': String(PETABYTE),
        'GNU.sparse.map': `0,${data.length}`,
      },
    }),
  ]);
}

async function stored(t: { after: (fn: () => Promise<void>) => void }, ...images: TestImage[]) {
  const layout = await openLayout(join(await tempDir(t), 'layout'), { create: true });
  t.after(() => layout.close());
  for (const i of images) await pushImage(layout, i);
  return (i: TestImage) => ({ fetcher: layout, descriptor: i.manifest.descriptor });
}

describe('analyze on hostile layers', () => {
  it('a petabyte sparse file: layers counts its data, diff compares it without hashing the holes', async (t) => {
    const a = await makeImage({ layers: [hugeSparse('hello')] });
    const b = await makeImage({ layers: [hugeSparse('HELLO')] });
    const c = await makeImage({ layers: [hugeSparse('hello'), makeTarball([file('other', 'x')])] });
    const src = await stored(t, a, b, c);
    const report = await analyzeLayers(src(a));
    assert.equal(report.totalBytes, 5);
    const d = await diffImages(src(a), src(b));
    assert.deepEqual(
      d.paths.map((p) => [p.path, p.changes]),
      [['/huge', ['content']]],
    );
    assert.equal(d.paths[0]?.before?.size, PETABYTE);
    assert.match(d.paths[0]?.before?.digest ?? '', /^sparse-sha256:[0-9a-f]{64}$/);
    assert.deepEqual(
      (await diffImages(src(a), src(c))).paths.map((p) => p.path),
      ['/other'],
    );
  });

  it('flatten refuses to write a petabyte of holes', async (t) => {
    const a = await makeImage({ layers: [hugeSparse('hello')] });
    const src = await stored(t, a);
    const work = await tempDir(t);
    const out = await openLayout(join(work, 'out'), { create: true });
    t.after(() => out.close());
    await assert.rejects(flattenImage(src(a), out, 'x', { tmpDir: work }), {
      code: 'ERR_TOO_LARGE',
      message: /"\/huge" is one/,
    });
  });

  it('cut gzip data, and a tar that ends inside a header', async (t) => {
    const tar = makeTarball([file('a', 'x'.repeat(4000))]);
    const gz = gzipSync(tar);
    const corrupt = gz.subarray(0, gz.length >> 1); // the compressed stream is cut
    const truncated = gzipSync(tar.subarray(0, 1024));
    const i1 = await makeImage({ layers: [corrupt], compression: 'none' }); // the blob as it is
    const i2 = await makeImage({ layers: [truncated], compression: 'none' });
    const src = await stored(t, i1, i2);
    await assert.rejects(analyzeLayers(src(i1)), { code: 'ERR_COMPRESSION' });
    await assert.rejects(analyzeLayers(src(i2)), { code: 'ERR_INVALID_ARCHIVE', message: /truncated/ });
  });

  it('a layer that climbs out is refused by every operation, naming the entry', async (t) => {
    const evil = await makeImage({ layers: [makeTarball([file('../../etc/cron.d/x', 'boom')])] });
    const fine = await makeImage();
    const src = await stored(t, evil, fine);
    const work = await tempDir(t);
    const out = await openLayout(join(work, 'out'), { create: true });
    t.after(() => out.close());
    const unsafe = { code: 'ERR_UNSAFE_PATH', message: /"\.\.\/\.\.\/etc\/cron\.d\/x"/ };
    await assert.rejects(analyzeLayers(src(evil)), unsafe);
    await assert.rejects(diffImages(src(fine), src(evil)), unsafe);
    await assert.rejects(flattenImage(src(evil), out, 'x', { tmpDir: work }), unsafe);
  });
});
