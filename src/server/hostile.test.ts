// Hostile requests to `stratum serve`, one case each: wrong digests, chunks out of order,
// names and ids that try to climb out of the store, oversized manifests and blobs,
// manifests pointing at blobs that are not there, media type confusion, malformed headers.
// After each, the store must be as it was: nothing visible, no temp files left behind.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestBytes } from '../digest/digest.js';
import { MediaType } from '../spec/media-types.js';
import { blob, makeImage } from '../testing/images.js';
import { rawRequest, startServer, type TestServer } from '../testing/serve.js';
import { UPLOADS_DIR } from './server.js';

let srv: TestServer;
const req = (method: string, path: string, opts: Parameters<typeof rawRequest>[3] = {}) =>
  rawRequest(srv.url, method, path, opts);

/** Files in the store root and the upload dir that are not part of a clean store. */
async function leftovers(): Promise<string[]> {
  const root = (await readdir(srv.root)).filter(
    (n) => n.startsWith('.stratum-tmp-') || n.startsWith('.tmp-'),
  );
  const uploads = await readdir(join(srv.root, UPLOADS_DIR)).catch(() => []);
  return [...root, ...uploads.map((u) => `${UPLOADS_DIR}/${u}`)];
}

async function blobCount(): Promise<number> {
  return (await srv.store.layout.listBlobs()).length;
}

before(async () => {
  srv = await startServer({ maxManifestBytes: 4096, maxBlobBytes: 1024 * 1024 });
});
after(async () => {
  await srv?.stop();
});

describe('stratum serve: hostile requests', () => {
  it('a monolithic upload with the wrong digest is refused and stores nothing', async () => {
    const bytes = randomBytes(4000);
    const claimed = digestBytes('something else');
    const before = await blobCount();
    const r = await req('POST', `/v2/h/wrong/blobs/uploads/?digest=${claimed}`, { body: bytes });
    assert.equal(r.status, 400);
    assert.deepEqual(r.codes, ['DIGEST_INVALID']);
    assert.equal((await req('HEAD', `/v2/h/wrong/blobs/${claimed}`)).status, 404);
    assert.equal((await req('HEAD', `/v2/h/wrong/blobs/${digestBytes(bytes)}`)).status, 404);
    assert.equal(await blobCount(), before);
    assert.deepEqual(await leftovers(), []);
  });

  it('a session upload finished with the wrong digest is refused, cancelled, and leaves nothing', async () => {
    const bytes = randomBytes(50_000);
    const post = await req('POST', '/v2/h/wrong/blobs/uploads/');
    await req('PATCH', post.headers.location!, { body: bytes });
    const put = await req('PUT', `${post.headers.location}?digest=${digestBytes('not these bytes')}`);
    assert.equal(put.status, 400);
    assert.deepEqual(put.codes, ['DIGEST_INVALID']);
    assert.equal((await req('GET', post.headers.location!)).status, 404);
    assert.equal((await req('HEAD', `/v2/h/wrong/blobs/${digestBytes(bytes)}`)).status, 404);
    assert.deepEqual(await leftovers(), []);
  });

  it('a chunk out of order gets 416 with the offset to resume from; the upload is intact', async () => {
    const bytes = randomBytes(3000);
    const post = await req('POST', '/v2/h/order/blobs/uploads/');
    const loc = post.headers.location!;
    await req('PATCH', loc, { body: bytes.subarray(0, 1000), headers: { 'content-range': '0-999' } });
    const gap = await req('PATCH', loc, {
      body: bytes.subarray(2000),
      headers: { 'content-range': '2000-2999' },
    });
    assert.equal(gap.status, 416);
    assert.deepEqual(gap.codes, ['BLOB_UPLOAD_INVALID']);
    assert.equal(gap.headers.range, '0-999');
    const overlap = await req('PATCH', loc, {
      body: bytes.subarray(500, 1500),
      headers: { 'content-range': '500-1499' },
    });
    assert.equal(overlap.status, 416);
    await req('PATCH', loc, { body: bytes.subarray(1000), headers: { 'content-range': '1000-2999' } });
    assert.equal((await req('PUT', `${loc}?digest=${digestBytes(bytes)}`)).status, 201);
    assert.deepEqual((await req('GET', `/v2/h/order/blobs/${digestBytes(bytes)}`)).body, bytes);
  });

  it('names with .. (plain, encoded, in mount from=) are refused before any path is built', async () => {
    const d = digestBytes('x');
    const rootBefore = (await readdir(srv.root)).sort();
    const paths = [
      `/v2/../../etc/blobs/${d}`,
      '/v2/a/../../b/manifests/latest',
      '/v2/%2e%2e/%2e%2e/etc/tags/list',
      '/v2/a/./b/tags/list',
      '/v2//etc/passwd/manifests/latest',
      '/v2/a/..%2f..%2fb/manifests/latest',
    ];
    for (const p of paths) {
      const r = await req('GET', p);
      assert.equal(r.status, 400, p);
      assert.deepEqual(r.codes, ['NAME_INVALID'], p);
    }
    const put = await req('PUT', '/v2/../x/manifests/latest', {
      body: Buffer.from('{}'),
      headers: { 'content-type': MediaType.OciManifest },
    });
    assert.deepEqual(put.codes, ['NAME_INVALID']);
    const mount = await req('POST', `/v2/ok/blobs/uploads/?mount=${d}&from=../../etc`);
    assert.equal(mount.status, 400);
    assert.deepEqual(mount.codes, ['NAME_INVALID']);
    assert.deepEqual((await readdir(srv.root)).sort(), rootBefore);
  });

  it('digests and upload ids that are not what they claim are refused', async () => {
    for (const bad of [
      'sha256:..%2f..%2fetc%2fpasswd',
      'sha256:' + 'A'.repeat(64),
      'md5:d41d8cd98f00b204e9800998ecf8427e',
      'sha256',
    ]) {
      const r = await req('GET', `/v2/ok/blobs/${bad}`);
      assert.equal(r.status, 400, bad);
      assert.deepEqual(r.codes, ['DIGEST_INVALID'], bad);
    }
    for (const id of ['..%2f..%2fetc', '12345', `${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}`]) {
      const r = await req('PATCH', `/v2/ok/blobs/uploads/${id}`, { body: Buffer.from('x') });
      assert.equal(r.status, 404, id);
      assert.deepEqual(r.codes, ['BLOB_UPLOAD_UNKNOWN']);
    }
    // an upload of one repository is not reachable through another
    const post = await req('POST', '/v2/h/mine/blobs/uploads/');
    const id = post.headers.location!.split('/').pop()!;
    assert.equal((await req('GET', `/v2/h/theirs/blobs/uploads/${id}`)).status, 404);
    assert.equal((await req('GET', post.headers.location!)).status, 204);
    await req('DELETE', post.headers.location!);
  });

  it('an oversized manifest gets 413, whether it says its length or not', async () => {
    const big = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, pad: 'x'.repeat(5000) }),
    );
    const ct = { 'content-type': MediaType.OciManifest };
    const withLength = await req('PUT', '/v2/h/big/manifests/v1', { body: big, headers: ct });
    assert.equal(withLength.status, 413);
    assert.deepEqual(withLength.codes, ['SIZE_INVALID']);
    const chunked = await req('PUT', '/v2/h/big/manifests/v1', { body: big, headers: ct, chunked: true });
    assert.equal(chunked.status, 413);
    assert.equal((await req('GET', '/v2/h/big/manifests/v1')).status, 404);
    assert.equal((await req('GET', `/v2/h/big/manifests/${digestBytes(big)}`)).status, 404);
  });

  it('an oversized blob gets 413 and the upload is cancelled', async () => {
    const big = randomBytes(1024 * 1024 + 1);
    const mono = await req('POST', `/v2/h/big/blobs/uploads/?digest=${digestBytes(big)}`, { body: big });
    assert.equal(mono.status, 413);
    const post = await req('POST', '/v2/h/big/blobs/uploads/');
    const patch = await req('PATCH', post.headers.location!, { body: big, chunked: true });
    assert.equal(patch.status, 413);
    assert.deepEqual(patch.codes, ['SIZE_INVALID']);
    assert.equal((await req('GET', post.headers.location!)).status, 404);
    assert.deepEqual(await leftovers(), []);
  });

  it('a manifest that references missing blobs is refused, naming each one', async () => {
    const img = await makeImage({ layers: [[{ path: 'a', content: randomBytes(8).toString('hex') }]] });
    // push only the config
    await req('POST', `/v2/h/missing/blobs/uploads/?digest=${img.config.descriptor.digest}`, {
      body: img.config.bytes,
    });
    const r = await req('PUT', '/v2/h/missing/manifests/v1', {
      body: img.manifest.bytes,
      headers: { 'content-type': MediaType.OciManifest },
    });
    assert.equal(r.status, 400);
    assert.deepEqual(r.codes, ['MANIFEST_BLOB_UNKNOWN']);
    assert.match(r.body.toString(), new RegExp(img.layers[0]!.descriptor.digest));
    assert.equal((await req('GET', '/v2/h/missing/manifests/v1')).status, 404);
    assert.equal((await req('GET', `/v2/h/missing/manifests/${img.manifest.descriptor.digest}`)).status, 404);
    // an index whose manifests are not there, and a config of the wrong size
    const idx = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [img.manifest.descriptor],
      }),
    );
    const ri = await req('PUT', '/v2/h/missing/manifests/idx', {
      body: idx,
      headers: { 'content-type': MediaType.OciIndex },
    });
    assert.deepEqual(ri.codes, ['MANIFEST_BLOB_UNKNOWN']);
    const lying = JSON.parse(img.manifest.bytes.toString()) as {
      config: { size: number };
      layers: unknown[];
    };
    lying.config.size += 1;
    lying.layers = [];
    const rl = await req('PUT', '/v2/h/missing/manifests/lying', {
      body: Buffer.from(JSON.stringify(lying)),
      headers: { 'content-type': MediaType.OciManifest },
    });
    assert.deepEqual(rl.codes, ['MANIFEST_BLOB_UNKNOWN']);
  });

  it('invalid manifests are refused: not JSON, schema 1, index/manifest confusion, a bad tag', async () => {
    const empty = blob(MediaType.OciEmpty, Buffer.from('{}'));
    await req('POST', `/v2/h/bad/blobs/uploads/?digest=${empty.descriptor.digest}`, { body: empty.bytes });
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: empty.descriptor,
        layers: [],
      }),
    );
    const noType = Buffer.from(JSON.stringify({ schemaVersion: 2, config: empty.descriptor, layers: [] }));
    const cases: [string, Buffer, string][] = [
      ['not json', Buffer.from('{"schemaVersion": 2,'), MediaType.OciManifest],
      [
        'schema 1',
        Buffer.from('{"schemaVersion": 1, "name": "x", "fsLayers": []}'),
        MediaType.DockerSchema1Signed,
      ],
      ['manifest sent as index', manifest, MediaType.OciIndex],
      ['manifest shaped, typed index', noType, MediaType.OciIndex],
      [
        'both manifests and layers',
        Buffer.from(
          JSON.stringify({ schemaVersion: 2, manifests: [], layers: [], config: empty.descriptor }),
        ),
        MediaType.OciManifest,
      ],
    ];
    for (const [what, body, ct] of cases) {
      const r = await req('PUT', '/v2/h/bad/manifests/v1', { body, headers: { 'content-type': ct } });
      assert.equal(r.status, 400, what);
      assert.deepEqual(r.codes, ['MANIFEST_INVALID'], what);
    }
    const tag = await req('PUT', `/v2/h/bad/manifests/${'t'.repeat(129)}`, {
      body: manifest,
      headers: { 'content-type': MediaType.OciManifest },
    });
    assert.deepEqual(tag.codes, ['MANIFEST_INVALID']);
    const dot = await req('PUT', '/v2/h/bad/manifests/.hidden', {
      body: manifest,
      headers: { 'content-type': MediaType.OciManifest },
    });
    assert.deepEqual(dot.codes, ['MANIFEST_INVALID']);
    assert.equal((await req('GET', '/v2/h/bad/tags/list')).status, 404);
  });

  it('malformed headers and parameters are refused with a reason', async () => {
    const post = await req('POST', '/v2/h/hdr/blobs/uploads/');
    const loc = post.headers.location!;
    const badRange = await req('PATCH', loc, {
      body: Buffer.from('abc'),
      headers: { 'content-range': 'bytes=zero-two' },
    });
    assert.equal(badRange.status, 416);
    const mismatch = await req('PATCH', loc, {
      body: Buffer.from('abc'),
      headers: { 'content-range': '0-9' },
    });
    assert.equal(mismatch.status, 400);
    assert.deepEqual(mismatch.codes, ['SIZE_INVALID']);
    const twice = await req('PUT', `${loc}?digest=${digestBytes('a')}&digest=${digestBytes('b')}`);
    assert.equal(twice.status, 400);
    const noDigest = await req('PUT', loc);
    assert.deepEqual(noDigest.codes, ['DIGEST_INVALID']);
    const n = await req('GET', '/v2/h/hdr/tags/list?n=-1');
    assert.equal(n.status, 400);
    // the upload survived all of it
    assert.equal((await req('GET', loc)).status, 204);
  });

  it('nothing above left a temp file behind, and the store verifies', async () => {
    await new Promise((r) => setImmediate(r));
    const left = (await leftovers()).filter((f) => !f.startsWith(UPLOADS_DIR));
    assert.deepEqual(left, []);
    assert.deepEqual(await srv.store.verify(), []);
  });
});
