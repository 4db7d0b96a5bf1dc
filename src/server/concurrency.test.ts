// 100 concurrent pushes to `stratum serve` of images that share layers (each also has a
// layer of its own), through stratum's client, while `stratum gc` runs on the same store
// over and over. Afterwards every tag resolves to its image, every blob is there, and the
// store verifies clean: shared blobs written by concurrent uploads stay consistent, and
// blobs uploaded before their manifest are not collected in between (server leases).

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { mapLimit } from '../internal/pool.js';
import { RegistryClient } from '../registry/client.js';
import { RegistryTarget } from '../registry/target.js';
import { makeImage, makeTar, pushImage, type TestImage } from '../testing/images.js';
import { startServer, type TestServer } from '../testing/serve.js';

const PUSHES = 100;

let srv: TestServer;
let client: RegistryClient;

before(async () => {
  srv = await startServer();
  client = new RegistryClient({ connections: 32, backoff: { initialMs: 1, maxMs: 20 } });
});
after(async () => {
  await client?.close();
  await srv?.stop();
});

it(`${PUSHES} concurrent pushes sharing layers, with gc running, leave a consistent store`, {
  timeout: 120_000,
}, async () => {
  const shared = await Promise.all(
    [0, 1, 2].map((i) => makeTar([{ path: `shared/${i}`, content: `shared layer ${i} `.repeat(20_000) }])),
  );
  const images: TestImage[] = [];
  for (let i = 0; i < PUSHES; i++) {
    images.push(
      await makeImage({
        layers: [...shared, [{ path: `own/${i}`, content: `image ${i}` }]],
        config: { config: { Env: [`N=${i}`] } },
      }),
    );
  }
  let pushing = true;
  let gcRuns = 0;
  const gcLoop = (async () => {
    while (pushing) {
      await srv.store.gc();
      gcRuns++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  try {
    await Promise.all(
      images.map((img, i) =>
        // alternate between one repository and many, so tags and blobs collide both ways
        pushImage(new RegistryTarget(client, srv.host, i % 2 ? 'load/one' : `load/r${i}`), img, `t${i}`),
      ),
    );
  } finally {
    pushing = false;
    await gcLoop;
  }
  assert.ok(gcRuns > 0);
  await mapLimit(images, 8, async (img, i) => {
    const ref = i % 2 ? `docker.io/load/one:t${i}` : `docker.io/load/r${i}:t${i}`;
    assert.equal((await srv.store.resolve(ref)).digest, img.manifest.descriptor.digest, ref);
  });
  assert.deepEqual(await srv.store.verify(), []);
  // a gc now (no pushes) keeps every tagged image whole
  await srv.store.gc();
  assert.deepEqual(await srv.store.verify(), []);
  assert.equal(srv.errors.length, 0, String(srv.errors[0]));
  const tags: string[] = [];
  for await (const t of new RegistryTarget(client, srv.host, 'load/one').tags()) tags.push(t);
  assert.equal(tags.length, PUSHES / 2);
});
