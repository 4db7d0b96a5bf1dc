// The shared conformance suite: the same cases run against every Target (layout store,
// registries, archives, the server). A backend that cannot run a case says why in `skip`,
// and the reason is printed in the test output.

import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { MediaType } from '../spec/media-types.js';
import { blob, makeImage, makeIndex, pushImage } from '../testing/images.js';
import { isFinalizer, isRootLister, isTagLister, type Target } from './types.js';

export const ConformanceCases = [
  'push-fetch-blob',
  'fetch-progress',
  'push-idempotent',
  'push-wrong-digest',
  'push-wrong-size',
  'missing',
  'image-tag-resolve',
  'retag',
  'resolve-digest',
  'index',
  'docker-media-types',
  'list-tags',
] as const;
export type ConformanceCase = (typeof ConformanceCases)[number];

export interface ConformanceSubject {
  /** The target to write to. */
  readonly target: Target;
  /**
   * For targets written as a whole (Finalizer): after finalize(), open what was written
   * for reading. Defaults to reading from `target` itself.
   */
  readonly reopen?: () => Promise<Target>;
  readonly cleanup: () => Promise<void>;
}

export interface ConformanceOptions {
  /** Cases this backend skips, each with the reason. */
  readonly skip?: Partial<Record<ConformanceCase, string>>;
}

async function read(stream: Readable): Promise<Buffer> {
  return readAll(stream, 64 * 1024 * 1024);
}

async function readBack(s: ConformanceSubject): Promise<Target> {
  if (isFinalizer(s.target)) {
    await s.target.finalize();
    if (s.reopen) return s.reopen();
  }
  return s.target;
}

function codeOf(e: unknown): string | undefined {
  return e instanceof StratumError ? e.code : undefined;
}

export function describeTargetConformance(
  name: string,
  make: () => Promise<ConformanceSubject>,
  opts: ConformanceOptions = {},
): void {
  const skip = opts.skip ?? {};
  const run = (c: ConformanceCase, fn: (s: ConformanceSubject) => Promise<void>) => {
    const reason = skip[c];
    it(c, reason ? { skip: reason } : {}, async () => {
      const s = await make();
      try {
        await fn(s);
      } finally {
        await s.target.close().catch(() => {});
        await s.cleanup();
      }
    });
  };

  describe(`Target conformance: ${name}`, () => {
    run('push-fetch-blob', async (s) => {
      const img = await makeImage();
      await pushImage(s.target, img, 'v1');
      const t = await readBack(s);
      for (const b of img.blobs) {
        assert.equal(await t.exists(b.descriptor), true, `exists ${b.descriptor.digest}`);
        assert.deepEqual(await read(await t.fetch(b.descriptor)), b.bytes);
      }
    });

    run('fetch-progress', async (s) => {
      const img = await makeImage();
      await pushImage(s.target, img, 'v1');
      const t = await readBack(s);
      for (const b of img.blobs) {
        let counted = 0;
        const stream = await t.fetch(b.descriptor, { onProgress: (n) => (counted += n) });
        // reading starts later: counting must not set the bytes flowing before then
        await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(await read(stream), b.bytes, `bytes of ${b.descriptor.digest}`);
        assert.equal(counted, b.bytes.length, `progress of ${b.descriptor.digest}`);
      }
    });

    run('push-idempotent', async (s) => {
      const img = await makeImage();
      await pushImage(s.target, img);
      await pushImage(s.target, img, 'v1');
      const t = await readBack(s);
      assert.equal((await t.resolve('v1')).digest, img.manifest.descriptor.digest);
    });

    run('push-wrong-digest', async (s) => {
      const good = blob(MediaType.OciLayer, Buffer.from('the right bytes'));
      const wrong = Buffer.from('the wrong bytes');
      await assert.rejects(s.target.push(good.descriptor, wrong), (e) => codeOf(e) === 'ERR_DIGEST_MISMATCH');
      assert.equal(await s.target.exists(good.descriptor), false);
    });

    run('push-wrong-size', async (s) => {
      const good = blob(MediaType.OciLayer, Buffer.from('twelve bytes'));
      const err = await s.target.push(good.descriptor, Buffer.from('thirteen byte')).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(
        ['ERR_SIZE_MISMATCH', 'ERR_DIGEST_MISMATCH'].includes(codeOf(err) ?? ''),
        `want a size or digest error, got ${String(err)}`,
      );
      assert.equal(await s.target.exists(good.descriptor), false);
    });

    run('missing', async (s) => {
      const img = await makeImage();
      await pushImage(s.target, img, 'present');
      const t = await readBack(s);
      const absent = blob(MediaType.OciLayer, Buffer.from('never pushed'));
      assert.equal(await t.exists(absent.descriptor), false);
      await assert.rejects(t.fetch(absent.descriptor).then(read), (e) => codeOf(e) === 'ERR_NOT_FOUND');
      await assert.rejects(t.resolve('absent'), (e) => codeOf(e) === 'ERR_NOT_FOUND');
    });

    run('image-tag-resolve', async (s) => {
      const img = await makeImage({ layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }]] });
      await pushImage(s.target, img, 'v1');
      const t = await readBack(s);
      const d = await t.resolve('v1');
      assert.equal(d.digest, img.manifest.descriptor.digest);
      assert.equal(d.size, img.manifest.descriptor.size);
      assert.equal(d.mediaType, img.manifest.descriptor.mediaType);
    });

    run('retag', async (s) => {
      const a = await makeImage({ layers: [[{ path: 'a', content: 'a' }]] });
      const b = await makeImage({ layers: [[{ path: 'b', content: 'b' }]] });
      await pushImage(s.target, a, 'v1');
      await pushImage(s.target, b);
      await s.target.tag(b.manifest.descriptor, 'v1');
      await s.target.tag(a.manifest.descriptor, 'old');
      const t = await readBack(s);
      assert.equal((await t.resolve('v1')).digest, b.manifest.descriptor.digest);
      assert.equal((await t.resolve('old')).digest, a.manifest.descriptor.digest);
    });

    run('resolve-digest', async (s) => {
      const img = await makeImage();
      await pushImage(s.target, img, 'v1');
      const t = await readBack(s);
      const d = await t.resolve(img.manifest.descriptor.digest);
      assert.equal(d.digest, img.manifest.descriptor.digest);
      assert.equal(d.mediaType, img.manifest.descriptor.mediaType);
    });

    run('index', async (s) => {
      const amd = await makeImage({ platform: { os: 'linux', architecture: 'amd64' } });
      const arm = await makeImage({
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        layers: [[{ path: 'arm', content: 'arm' }]],
      });
      const index = makeIndex([
        { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
        { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ]);
      await pushImage(s.target, amd);
      await pushImage(s.target, arm);
      await s.target.push(index.descriptor, index.bytes);
      await s.target.tag(index.descriptor, 'multi');
      const t = await readBack(s);
      const d = await t.resolve('multi');
      assert.equal(d.digest, index.descriptor.digest);
      assert.equal(d.mediaType, MediaType.OciIndex);
      assert.deepEqual(await read(await t.fetch(d)), index.bytes);
    });

    run('docker-media-types', async (s) => {
      const img = await makeImage({ format: 'docker' });
      await pushImage(s.target, img, 'docker');
      const t = await readBack(s);
      const d = await t.resolve('docker');
      assert.equal(d.mediaType, MediaType.DockerManifest);
      const bytes = await read(await t.fetch(d));
      assert.equal(digestBytes(bytes), img.manifest.descriptor.digest);
    });

    run('list-tags', async (s) => {
      const img = await makeImage();
      await pushImage(s.target, img, 't1');
      await s.target.tag(img.manifest.descriptor, 't2');
      const t = await readBack(s);
      let tags: string[] = [];
      if (isTagLister(t)) {
        for await (const tag of t.tags()) tags.push(tag);
      } else if (isRootLister(t)) {
        tags = (await t.roots()).flatMap((r) => (r.ref === undefined ? [] : [r.ref]));
      } else {
        assert.fail('target lists neither tags nor roots');
      }
      assert.ok(tags.includes('t1') && tags.includes('t2'), `tags: ${tags.join(', ')}`);
    });
  });
}
