import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openLayout } from '../layout/layout.js';
import { parseNormalizedReference } from '../reference/reference.js';
import { makeImage, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { storeRefName } from '../transport/open.js';
import { Session } from './session.js';
import { unpack } from './unpack.js';

describe('unpack (ops)', () => {
  it('unpacks from the store and from an oci: layout, sharing one session', async (t) => {
    const dir = await tempDir(t);
    const image = await makeImage({
      layers: [[{ path: 'hello.txt', content: 'hello\n' }]],
      config: { config: { Cmd: ['/bin/cat', '/hello.txt'] } },
    });
    const session = new Session({ root: join(dir, 'store') });
    t.after(() => session.close());
    await pushImage(await session.store(), image, storeRefName(parseNormalizedReference('demo/hello:1')));
    const layout = await openLayout(join(dir, 'layout'), { create: true });
    await pushImage(layout, image, 'v1');
    await layout.close();

    const a = await unpack('demo/hello:1', join(dir, 'a'), { session });
    // the session (and its store) is still usable after a store unpack
    const b = await unpack('demo/hello:1', join(dir, 'b'), { session });
    const c = await unpack(`oci:${join(dir, 'layout')}:v1`, join(dir, 'c'), { session });
    for (const r of [a, b, c]) {
      assert.equal(r.manifest.digest, image.manifest.descriptor.digest);
      assert.equal(await readFile(join(r.rootfs, 'hello.txt'), 'utf8'), 'hello\n');
      const config = JSON.parse(await readFile(join(r.bundle, 'config.json'), 'utf8'));
      assert.deepEqual(config.process.args, ['/bin/cat', '/hello.txt']);
    }
    await assert.rejects(unpack('demo/missing:1', join(dir, 'd'), { session }), { code: 'ERR_NOT_FOUND' });
    assert.deepEqual((await readdir(dir)).sort(), ['a', 'b', 'c', 'layout', 'store']);
  });
});
