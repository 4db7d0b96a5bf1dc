// A blob copied between two Targets is hashed once: the source's verifying stream is marked,
// and the destination (layout, registry) relies on it failing before it ends. These tests
// make the source lie in every way it can — wrong bytes, bytes missing, bytes added — and
// check that the destination never keeps them, and that a mark for other content is ignored.

import assert from 'node:assert/strict';
import { readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { digestBytes } from '../digest/digest.js';
import { CopyError } from '../errors/errors.js';
import { bytesStream } from '../internal/streams.js';
import { markVerified } from '../internal/verified.js';
import { type LayoutTarget, openLayout } from '../layout/layout.js';
import { RegistryClient } from '../registry/client.js';
import { RegistryTarget } from '../registry/target.js';
import { MediaType } from '../spec/media-types.js';
import { makeImage, pushImage, type TestImage } from '../testing/images.js';
import { registryAvailable, startRegistry } from '../testing/registry.js';
import { tempDir } from '../testing/tmp.js';
import { copy } from './copy.js';

type Damage = 'flipped' | 'truncated' | 'extended';
const DAMAGES: readonly Damage[] = ['flipped', 'truncated', 'extended'];

async function damagedSource(t: Parameters<typeof tempDir>[0], damage: Damage) {
  const dir = await tempDir(t);
  const src = await openLayout(join(dir, 'src'), { create: true });
  const img = await makeImage({ layers: [[{ path: 'a', content: 'a'.repeat(200_000) }]] });
  await pushImage(src, img, 'v1');
  const layer = img.layers[0]!.descriptor;
  const path = src.blobPath(layer.digest);
  if (damage === 'flipped') {
    const bytes = await readFile(path);
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 0xff;
    await writeFile(path, bytes);
  } else if (damage === 'truncated') {
    await truncate(path, layer.size - 100);
  } else {
    await writeFile(path, Buffer.alloc(100, 1), { flag: 'a' });
  }
  return { dir, src, img, layer };
}

function rejectsAsSource(code: string) {
  return (e: unknown) => {
    assert.ok(e instanceof CopyError, String(e));
    assert.equal(e.side, 'source');
    assert.equal(e.code, code);
    return true;
  };
}

const codeFor = (d: Damage) => (d === 'flipped' ? 'ERR_DIGEST_MISMATCH' : 'ERR_SIZE_MISMATCH');

describe('layout -> layout with a damaged source blob', () => {
  for (const damage of DAMAGES) {
    it(`${damage}: the copy fails and the destination keeps nothing`, async (t) => {
      const { dir, src, img, layer } = await damagedSource(t, damage);
      const dst = await openLayout(join(dir, 'dst'), { create: true });
      await assert.rejects(copy(src, 'v1', dst, 'v1'), rejectsAsSource(codeFor(damage)));
      assert.equal(await dst.exists(layer), false);
      assert.equal(await dst.exists(img.manifest.descriptor), false);
      const left = await readdir(dst.dir);
      assert.deepEqual(
        left.filter((n) => n.startsWith('.stratum-tmp')),
        [],
      );
    });
  }
});

describe('a verified mark only covers the content it was made for', () => {
  it('a layout push of a stream marked for other bytes still checks them', async (t) => {
    const dst = await openLayout(join(await tempDir(t), 'dst'), { create: true });
    const good = Buffer.from('good bytes');
    const bad = Buffer.from('bad bytes!');
    const desc = { mediaType: MediaType.OciLayer, digest: digestBytes(good), size: good.length };
    // marked as verifying the bad bytes' own digest: says nothing about `desc`
    const lying = markVerified(bytesStream(bad), digestBytes(bad), bad.length);
    await assert.rejects(dst.push(desc, lying), { code: 'ERR_DIGEST_MISMATCH' });
    assert.equal(await dst.exists(desc), false);
  });
});

const skip = registryAvailable() ? false : 'docker-registry is not installed';

describe('layout -> registry with a damaged source blob', { skip }, () => {
  for (const damage of DAMAGES) {
    it(`${damage}: the copy fails and the registry has neither blob nor manifest`, async (t) => {
      const { src, img, layer } = await damagedSource(t, damage);
      const reg = await startRegistry();
      const client = new RegistryClient();
      t.after(async () => {
        await client.close();
        await reg.stop();
      });
      const dst = new RegistryTarget(client, reg.host, 'damaged');
      await assert.rejects(copy(src, 'v1', dst, 'v1'), rejectsAsSource(codeFor(damage)));
      assert.equal(await dst.exists(layer), false);
      assert.equal(await dst.exists(img.manifest.descriptor), false);
      // (the undamaged config may or may not have made it: the first failure cancels the rest)
    });
  }

  it('a registry push of a stream marked for other bytes still checks them', async (t) => {
    const reg = await startRegistry();
    const client = new RegistryClient();
    t.after(async () => {
      await client.close();
      await reg.stop();
    });
    const dst = new RegistryTarget(client, reg.host, 'lying');
    const good = Buffer.from('good bytes');
    const bad = Buffer.from('bad bytes!');
    const desc = { mediaType: MediaType.OciLayer, digest: digestBytes(good), size: good.length };
    const lying = markVerified(bytesStream(bad), digestBytes(bad), bad.length);
    await assert.rejects(dst.push(desc, lying), { code: 'ERR_DIGEST_MISMATCH' });
    assert.equal(await dst.exists(desc), false);
  });
});

describe('registry -> layout with a registry that serves damaged bytes', { skip }, () => {
  it('the layout keeps nothing', async (t) => {
    const dir = await tempDir(t);
    const reg = await startRegistry();
    const client = new RegistryClient({ resumeAttempts: 0 });
    t.after(async () => {
      await client.close();
      await reg.stop();
    });
    const img: TestImage = await makeImage({ layers: [[{ path: 'b', content: 'b'.repeat(100_000) }]] });
    const remote = new RegistryTarget(client, reg.host, 'served');
    await pushImage(remote, img, 'v1');
    // damage the blob in the registry's own storage
    const layer = img.layers[0]!.descriptor;
    const hex = layer.digest.slice('sha256:'.length);
    const data = join(reg.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    const bytes = await readFile(data);
    bytes[10] = (bytes[10] ?? 0) ^ 0xff;
    await writeFile(data, bytes);
    const dst: LayoutTarget = await openLayout(join(dir, 'dst'), { create: true });
    await assert.rejects(copy(remote, 'v1', dst, 'v1'), rejectsAsSource('ERR_DIGEST_MISMATCH'));
    assert.equal(await dst.exists(layer), false);
    assert.equal(await dst.exists(img.manifest.descriptor), false);
  });
});
