// A blob whose push failed on the destination's network or with a 5xx is fetched and pushed
// again (a streamed upload cannot be replayed by the registry client); other failures, and
// failures that keep coming, end the copy.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { CopyError } from '../errors/errors.js';
import { type LayoutTarget, openLayout } from '../layout/layout.js';
import { RegistryClient } from '../registry/client.js';
import { RegistryTarget } from '../registry/target.js';
import { type FaultProxy, startFaultProxy } from '../testing/fault-proxy.js';
import { makeImage, pushImage, type TestImage } from '../testing/images.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../testing/registry.js';
import { makeTempDir } from '../testing/tmp.js';
import { type CopyEvent, copy } from './copy.js';

const skip = registryAvailable() ? false : 'docker-registry is not installed';
// the layer's upload: the PUT that closes its session (the config is small and goes first)
const BLOB_PUT = /\/blobs\/uploads\/.*digest=/;

describe('copy retries a blob whose push failed on the way', { skip }, () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  let src: LayoutTarget;
  let img: TestImage;
  let cleanup: () => Promise<void>;
  let n = 0;

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    // no retries inside the client: what is tried again here is the copy's doing
    client = new RegistryClient({ retries: 0, backoff: { initialMs: 1, maxMs: 2 } });
    const tmp = await makeTempDir();
    cleanup = tmp.cleanup;
    src = await openLayout(join(tmp.path, 'src'), { create: true });
    img = await makeImage({ layers: [[{ path: 'big', content: 'z'.repeat(300_000) }]] });
    await pushImage(src, img, 'v1');
  });
  after(async () => {
    await client?.close();
    await proxy?.stop();
    await reg?.stop();
    await cleanup?.();
  });
  beforeEach(() => {
    proxy.setPlan([]);
    proxy.requests.length = 0;
  });
  // each test pushes to a repository of its own, and counts only its own requests (a request
  // of an earlier test's cancelled transfer can still arrive late)
  const target = () => new RegistryTarget(client, proxy.host, `retry${++n}`);
  const layerPuts = () =>
    proxy.requests.filter(
      (r) => r.method === 'PUT' && BLOB_PUT.test(r.url) && r.url.startsWith(`/v2/retry${n}/`),
    );

  for (const action of [{ kind: 'status', status: 503 } as const, { kind: 'reset' } as const]) {
    it(`a ${action.kind === 'reset' ? 'connection reset' : '503'} on the upload: fetched and pushed again`, async () => {
      proxy.setPlan([{ method: 'PUT', path: BLOB_PUT, times: 2, action }]);
      const dst = target();
      const events: CopyEvent[] = [];
      const r = await copy(src, 'v1', dst, 'v1', { onEvent: (e) => events.push(e) });
      assert.equal(r.descriptor.digest, img.manifest.descriptor.digest);
      assert.equal(r.stats.copied, 2);
      assert.equal(layerPuts().length, 4); // config + layer, each failed once
      for (const b of img.blobs) assert.equal(await dst.exists(b.descriptor), true);
      const done = events.filter((e) => e.type === 'blob-done');
      assert.equal(done.length, 2);
    });
  }

  it('failures that keep coming end the copy, blaming the destination', async () => {
    proxy.setPlan([{ method: 'PUT', path: BLOB_PUT, action: { kind: 'status', status: 503 } }]);
    const dst = target();
    await assert.rejects(copy(src, 'v1', dst, 'v1'), (e) => {
      assert.ok(e instanceof CopyError, String(e));
      assert.equal(e.side, 'destination');
      return true;
    });
    // a first try and two more for the blob that failed first; its sibling stops with it
    const puts = layerPuts().length;
    assert.ok(puts >= 3 && puts <= 6, `${puts} upload PUTs`);
  });

  it('a refusal (4xx) is not tried again', async () => {
    proxy.setPlan([{ method: 'PUT', path: BLOB_PUT, action: { kind: 'status', status: 400 } }]);
    await assert.rejects(
      copy(src, 'v1', target(), 'v1'),
      (e) => e instanceof CopyError && e.side === 'destination',
    );
    assert.ok(layerPuts().length <= 2, `${layerPuts().length} upload PUTs`);
  });
});
