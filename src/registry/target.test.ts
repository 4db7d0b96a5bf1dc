// RegistryTarget against a real registry (Debian's docker-registry, distribution 2.8):
// the shared Target conformance suite, then blobs (monolithic, chunked, streamed), manifests
// (OCI, Docker, indexes), resolve, exists, tags, mount, delete and the referrers fallback.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { describeTargetConformance } from '../content/conformance.js';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { MediaType } from '../spec/media-types.js';
import type { Descriptor } from '../spec/types.js';
import { blob, makeImage, makeIndex, pushImage } from '../testing/images.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../testing/registry.js';
import { RegistryClient } from './client.js';
import { RegistryTarget, referrersTagFor } from './target.js';

const skip = registryAvailable() ? false : 'docker-registry is not installed';
const code = (e: unknown) => (e instanceof StratumError ? e.code : String(e));
const read = (s: Readable) => readAll(s, 1 << 28);

let reg: TestRegistry;
let client: RegistryClient;
let counter = 0;
const repo = (prefix = 'r') => `${prefix}${++counter}-${process.pid}`;

before(async () => {
  if (skip) return;
  reg = await startRegistry();
  // small chunks so the chunked path runs on small blobs
  client = new RegistryClient({ chunkSize: 64 * 1024, backoff: { initialMs: 1, maxMs: 5 } });
});
after(async () => {
  await client?.close();
  await reg?.stop();
});

if (!skip) {
  describeTargetConformance('registry', async () => ({
    target: new RegistryTarget(client, reg.host, repo('conf')),
    cleanup: async () => {},
  }));
}

describe('RegistryTarget on distribution 2.8', { skip }, () => {
  it('names itself docker://host/repo', () => {
    const t = new RegistryTarget(client, reg.host, 'a/b');
    assert.equal(t.description, `docker://${reg.host}/a/b`);
    assert.equal(new RegistryTarget(client, 'docker.io', 'alpine').repository, 'library/alpine');
    assert.equal(new RegistryTarget(client, 'docker.io', 'alpine').host, 'registry-1.docker.io');
    assert.throws(
      () => new RegistryTarget(client, reg.host, 'UPPER'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
    assert.throws(
      () => new RegistryTarget(client, 'a/b', 'x'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
  });

  it('pushes and fetches a small blob in one PUT, streamed, with progress', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const b = blob(MediaType.OciLayer, randomBytes(10_000));
    let pushed = 0;
    await t.push(b.descriptor, Readable.from([b.bytes.subarray(0, 3000), b.bytes.subarray(3000)]), {
      onProgress: (n) => {
        pushed += n;
      },
    });
    assert.equal(pushed, b.bytes.length);
    assert.equal(await t.exists(b.descriptor), true);
    let fetched = 0;
    const got = await read(await t.fetch(b.descriptor, { onProgress: (n) => (fetched += n) }));
    assert.deepEqual(got, b.bytes);
    assert.equal(fetched, b.bytes.length);
  });

  it('pushes a large blob in chunks (bytes and stream) and fetches it back', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const b = blob(MediaType.OciLayerGzip, randomBytes(300_000)); // 5 chunks of 64 KiB
    await t.push(b.descriptor, Readable.from(b.bytes, { objectMode: false }));
    assert.deepEqual(await read(await t.fetch(b.descriptor)), b.bytes);
    const c = blob(MediaType.OciLayer, randomBytes(200_000));
    await t.push(c.descriptor, c.bytes);
    assert.deepEqual(await read(await t.fetch(c.descriptor)), c.bytes);
  });

  it('a streamed push with the wrong bytes fails and leaves nothing (monolithic and chunked)', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    for (const size of [5000, 150_000]) {
      const good = blob(MediaType.OciLayer, randomBytes(size));
      const wrong = randomBytes(size);
      await assert.rejects(
        t.push(good.descriptor, Readable.from([wrong])),
        (e) => code(e) === 'ERR_DIGEST_MISMATCH',
      );
      await assert.rejects(t.push(good.descriptor, Readable.from([wrong.subarray(0, size - 1)])), (e) =>
        ['ERR_SIZE_MISMATCH', 'ERR_DIGEST_MISMATCH'].includes(code(e)),
      );
      assert.equal(await t.exists(good.descriptor), false);
    }
  });

  it('pushing a blob that exists sends no bytes', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const b = blob(MediaType.OciLayer, randomBytes(1000));
    await t.push(b.descriptor, b.bytes);
    let read = false;
    const s = new Readable({
      read() {
        read = true;
        this.push(null);
      },
    });
    await t.push(b.descriptor, s);
    assert.equal(read, false);
    assert.equal(s.destroyed, true);
  });

  it('uploads with a single POST when asked', async () => {
    const t = new RegistryTarget(client, reg.host, repo(), { singlePost: true });
    const b = blob(MediaType.OciLayer, randomBytes(2000));
    await t.push(b.descriptor, b.bytes);
    assert.deepEqual(await read(await t.fetch(b.descriptor)), b.bytes);
  });

  it('resolves tags and digests for OCI, Docker, index and manifest list', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const oci = await makeImage();
    const docker = await makeImage({ format: 'docker', layers: [[{ path: 'd', content: 'docker' }]] });
    await pushImage(t, oci, 'oci');
    await pushImage(t, docker, 'docker');
    const list = makeIndex([{ image: docker, platform: { os: 'linux', architecture: 'amd64' } }], 'docker');
    await t.pushReference(list.descriptor, list.bytes, 'list');
    const index = makeIndex([{ image: oci, platform: { os: 'linux', architecture: 'amd64' } }]);
    await t.pushReference(index.descriptor, Readable.from([index.bytes]), 'index');
    for (const [ref, want] of [
      ['oci', oci.manifest],
      ['docker', docker.manifest],
      ['list', list],
      ['index', index],
    ] as const) {
      const d = await t.resolve(ref);
      assert.deepEqual(d, {
        mediaType: want.descriptor.mediaType,
        digest: want.descriptor.digest,
        size: want.descriptor.size,
      });
      assert.deepEqual(await t.resolve(d.digest), d);
      assert.deepEqual(await read(await t.fetch(d)), want.bytes);
      assert.equal(await t.exists(d), true);
    }
    await assert.rejects(t.resolve('nope'), (e) => code(e) === 'ERR_NOT_FOUND');
    await assert.rejects(t.resolve(digestBytes('nothing')), (e) => code(e) === 'ERR_NOT_FOUND');
  });

  it('says what failed: registry, repository and reference', async () => {
    const t = new RegistryTarget(client, reg.host, 'app');
    await assert.rejects(t.resolve('1'), (e) => {
      assert.equal(code(e), 'ERR_NOT_FOUND');
      assert.match((e as Error).message, new RegExp(`^pull manifest ${reg.host}/app:1: `));
      return true;
    });
  });

  it('lists every tag, with n as page size', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const img = await makeImage();
    await pushImage(t, img, 't1');
    for (const tag of ['t2', 't3', 't4', 't5']) await t.tag(img.manifest.descriptor, tag);
    const tags: string[] = [];
    for await (const tag of t.tags({ n: 2 })) tags.push(tag);
    assert.deepEqual(tags.sort(), ['t1', 't2', 't3', 't4', 't5']);
    const none = new RegistryTarget(client, reg.host, repo());
    await assert.rejects(
      (async () => {
        for await (const _ of none.tags()) {
        }
      })(),
      (e) => code(e) === 'ERR_NOT_FOUND',
    );
  });

  it('mounts a blob from another repository; declines what the source lacks', async () => {
    const a = new RegistryTarget(client, reg.host, repo('src'));
    const b = new RegistryTarget(client, reg.host, repo('dst'));
    const img = await makeImage();
    await pushImage(a, img, 'v1');
    assert.equal(b.mountSourceFor(a), a.repository);
    assert.equal(b.mountSourceFor(b), undefined);
    assert.equal(b.mountSourceFor(new RegistryTarget(client, '127.0.0.2:1', a.repository)), undefined);
    const layer = img.layers[0]!.descriptor;
    assert.equal(await b.exists(layer), false);
    assert.equal(await b.mount(layer, a.repository), true);
    assert.equal(await b.exists(layer), true);
    assert.deepEqual(await read(await b.fetch(layer)), img.layers[0]!.bytes);
    const absent = blob(MediaType.OciLayer, randomBytes(100)).descriptor;
    assert.equal(await b.mount(absent, a.repository), false);
    assert.equal(await b.exists(absent), false);
  });

  it('deletes manifests and blobs', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const img = await makeImage();
    await pushImage(t, img, 'v1');
    await t.delete(img.manifest.descriptor);
    await assert.rejects(t.resolve(img.manifest.descriptor.digest), (e) => code(e) === 'ERR_NOT_FOUND');
    const layer = img.layers[0]!.descriptor;
    await t.delete(layer);
    assert.equal(await t.exists(layer), false);
    await assert.rejects(t.delete(layer), (e) => code(e) === 'ERR_NOT_FOUND');
  });

  it('referrers: falls back to the tag schema (2.8 has no referrers API) and keeps it', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    const img = await makeImage();
    await pushImage(t, img, 'v1');
    const subject = img.manifest.descriptor;
    assert.deepEqual(await t.referrers(subject), []);
    const empty = blob(MediaType.OciEmpty, Buffer.from('{}'));
    await t.push(empty.descriptor, empty.bytes);
    const artifact = async (artifactType: string, payload: string): Promise<Descriptor> => {
      const layer = blob('text/plain', Buffer.from(payload));
      await t.push(layer.descriptor, layer.bytes);
      const doc = {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        artifactType,
        config: empty.descriptor,
        layers: [layer.descriptor],
        subject,
        annotations: { 'org.example.note': payload },
      };
      const m = blob(MediaType.OciManifest, Buffer.from(JSON.stringify(doc)));
      await t.push(m.descriptor, m.bytes);
      return m.descriptor;
    };
    const sbom = await artifact('application/vnd.example.sbom', 'sbom');
    const sig = await artifact('application/vnd.example.sig', 'sig');
    const all = await t.referrers(subject);
    assert.deepEqual(
      all.map((d) => [d.digest, d.artifactType, d.annotations?.['org.example.note']]),
      [
        [sbom.digest, 'application/vnd.example.sbom', 'sbom'],
        [sig.digest, 'application/vnd.example.sig', 'sig'],
      ],
    );
    const only = await t.referrers(subject, { artifactType: 'application/vnd.example.sig' });
    assert.deepEqual(
      only.map((d) => d.digest),
      [sig.digest],
    );
    // the fallback tag holds an OCI index
    const tagged = await t.resolve(referrersTagFor(subject.digest));
    assert.equal(tagged.mediaType, MediaType.OciIndex);
    // pushing the same referrer again does not duplicate it
    await t.push(sbom, await read(await t.fetch(sbom)));
    assert.equal((await t.referrers(subject)).length, 2);
  });

  it('validates descriptors and refs before any request', async () => {
    const t = new RegistryTarget(client, reg.host, repo());
    await assert.rejects(t.resolve('sha256:../../../etc/passwd'), (e) => code(e) === 'ERR_INVALID_DIGEST');
    await assert.rejects(
      t.fetch({ mediaType: MediaType.OciLayer, digest: 'sha256:/../x' as never, size: 1 }),
      (e) => code(e) === 'ERR_INVALID_DIGEST',
    );
    await assert.rejects(
      t.exists({ mediaType: MediaType.OciLayer, digest: digestBytes('x'), size: -1 }),
      (e) => code(e) === 'ERR_INVALID_ARGUMENT',
    );
    await assert.rejects(
      t.tag({ mediaType: MediaType.OciManifest, digest: digestBytes('x'), size: 1 }, 'a/b'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
    await assert.rejects(
      t.mount({ mediaType: MediaType.OciLayer, digest: digestBytes('x'), size: 1 }, '../other'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
  });
});

describe('registry with relative Location URLs', { skip }, () => {
  it('pushes chunked and monolithic uploads', async () => {
    const rel = await startRegistry({ relativeUrls: true });
    try {
      const t = new RegistryTarget(client, rel.host, 'rel');
      for (const size of [1000, 150_000]) {
        const b = blob(MediaType.OciLayer, randomBytes(size));
        await t.push(b.descriptor, Readable.from([b.bytes]));
        assert.deepEqual(await read(await t.fetch(b.descriptor)), b.bytes);
      }
    } finally {
      await rel.stop();
    }
  });
});
