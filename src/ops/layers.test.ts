// imageLayers / imageDiff / flatten at locations: archives as destinations (finalized) and as
// sources, one shared session, a cancelled call, temp files cleaned up.

import assert from 'node:assert/strict';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { dir, file, makeTarball } from '../layer/apply-fixtures.js';
import { openLayout } from '../layout/layout.js';
import { makeImage, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { flatten, imageDiff, imageLayers } from './layers.js';
import { Session } from './session.js';

describe('layers operations at locations', () => {
  it('flattens into oci-archive and docker-archive files, which read back as the same filesystem', async (t) => {
    const d = await tempDir(t);
    const image = await makeImage({
      layers: [
        makeTarball([dir('app'), file('app/a', 'a'.repeat(30)), file('app/b', 'b')]),
        makeTarball([{ name: 'app/.wh.a' }, file('app/c', 'c')]),
      ],
    });
    const layout = await openLayout(join(d, 'oci'), { create: true });
    await pushImage(layout, image, 'v1');
    await layout.close();
    const tmp = join(d, 'tmp');
    await mkdir(tmp);
    const session = new Session({ root: join(d, 'store'), tmpDir: tmp });
    t.after(() => session.close());
    const src = `oci:${join(d, 'oci')}:v1`;

    const toOci = await flatten(src, `oci-archive:${join(d, 'flat.tar')}:flat`, { session });
    assert.equal(toOci.ref, 'flat');
    assert.equal(toOci.layers, 2);
    const toDocker = await flatten(src, `docker-archive:${join(d, 'flat-docker.tar')}:flat/app:1`, {
      session,
    });
    assert.equal(toDocker.ref, 'flat/app:1');

    for (const loc of [
      `oci-archive:${join(d, 'flat.tar')}:flat`,
      `docker-archive:${join(d, 'flat-docker.tar')}`,
    ]) {
      const report = await imageLayers(loc, { session });
      assert.equal(report.layers.length, 1, loc);
      assert.equal(report.wastedBytes, 0);
      assert.equal(report.totalBytes, 2);
      const diff = await imageDiff(src, loc, { session });
      assert.deepEqual(diff.paths, [], loc);
    }
    const original = await imageLayers(src, { session });
    assert.equal(original.wastedBytes, 30);
    // the compressed layer was made in the session's temp dir, and removed
    assert.deepEqual(await readdir(tmp), []);
  });

  it('a cancelled call ends with ERR_ABORTED; a missing image with ERR_NOT_FOUND', async (t) => {
    const d = await tempDir(t);
    const image = await makeImage();
    const layout = await openLayout(join(d, 'oci'), { create: true });
    await pushImage(layout, image, 'v1');
    await layout.close();
    const controller = new AbortController();
    controller.abort();
    const root = join(d, 'store');
    await assert.rejects(imageLayers(`oci:${join(d, 'oci')}:v1`, { root, signal: controller.signal }), {
      code: 'ERR_ABORTED',
    });
    await assert.rejects(flatten(`oci:${join(d, 'oci')}:v1`, 'x/y:1', { root, signal: controller.signal }), {
      code: 'ERR_ABORTED',
    });
    await assert.rejects(imageLayers('no/such:1', { root }), { code: 'ERR_NOT_FOUND' });
    await assert.rejects(imageDiff(`oci:${join(d, 'oci')}:v1`, `oci:${join(d, 'oci')}:v2`, { root }), {
      code: 'ERR_NOT_FOUND',
    });
  });
});
