import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { gzipSync } from 'node:zlib';
import { compressStream } from '../compression/compression.js';
import type { Fetcher } from '../content/types.js';
import { digestBytes, encodedOf } from '../digest/digest.js';
import { readAll } from '../internal/streams.js';
import { openLayout } from '../layout/layout.js';
import { MediaType } from '../spec/media-types.js';
import type { Descriptor } from '../spec/types.js';
import {
  blob,
  type FileSpec,
  makeImage,
  makeIndex,
  makeTar,
  pushImage,
  type TestImage,
} from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { type UnpackProgress, unpackImage } from './unpack.js';

/** A fetcher over fixed blobs that serves them as they are (it checks nothing). */
function memoryFetcher(blobs: readonly { descriptor: Descriptor; bytes: Buffer }[]): Fetcher {
  return {
    async fetch(desc) {
      const b = blobs.find((x) => x.descriptor.digest === desc.digest);
      if (!b) throw new Error(`no blob ${desc.digest}`);
      return Readable.from([b.bytes]);
    },
  };
}

async function layoutWith(t: TestContext, image: TestImage, ref = 'img') {
  const dir = await tempDir(t);
  const layoutDir = join(dir, 'layout');
  const layout = await openLayout(layoutDir, { create: true });
  t.after(() => layout.close());
  await pushImage(layout, image, ref);
  return { dir, layoutDir, layout, descriptor: image.manifest.descriptor };
}

function imageOf(layers: readonly Descriptor[], diffIds: readonly string[], os = 'linux') {
  const config = blob(
    MediaType.OciConfig,
    Buffer.from(JSON.stringify({ architecture: 'amd64', os, rootfs: { type: 'layers', diff_ids: diffIds } })),
  );
  const manifest = blob(
    MediaType.OciManifest,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: config.descriptor,
        layers,
      }),
    ),
  );
  return { config, manifest };
}

/** Entries of a directory other than the ones named. */
async function leftovers(dir: string, expected: readonly string[]): Promise<string[]> {
  return (await readdir(dir)).filter((n) => !expected.includes(n));
}

const FILES: FileSpec[] = [
  { path: 'etc/', type: 'directory' },
  { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:500:500::/srv/app:/bin/sh\n' },
  { path: 'etc/group', content: 'root:x:0:\napp:x:500:\nextra:x:600:app\n' },
  { path: 'bin/', type: 'directory' },
  { path: 'bin/hello', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
  { path: 'bin/link', type: 'symlink', linkname: 'hello' },
];

describe('unpackImage', () => {
  it('makes a bundle: rootfs with every layer, config.json from the image config', async (t) => {
    const image = await makeImage({
      layers: [FILES, [{ path: 'bin/hello', content: 'replaced\n', mode: 0o700 }, { path: 'bin/.wh.link' }]],
      config: { config: { User: 'app', Cmd: ['/bin/hello'], Env: ['A=1'], WorkingDir: '/srv' } },
    });
    const { dir, layout, descriptor } = await layoutWith(t, image);
    const events: UnpackProgress['type'][] = [];
    const r = await unpackImage({ fetcher: layout, descriptor }, join(dir, 'bundle'), {
      onProgress: (e) => events.push(e.type),
    });
    assert.equal(r.bundle, join(dir, 'bundle'));
    assert.deepEqual(r.diffIds, image.diffIds);
    assert.equal(r.manifest.digest, descriptor.digest);
    assert.equal((await stat(r.bundle)).mode & 0o777, 0o700);
    assert.equal((await stat(join(r.bundle, 'config.json'))).mode & 0o777, 0o644);
    assert.deepEqual((await readdir(r.bundle)).sort(), ['config.json', 'rootfs']);
    assert.equal(await readFile(join(r.rootfs, 'bin/hello'), 'utf8'), 'replaced\n');
    assert.equal((await stat(join(r.rootfs, 'bin/hello'))).mode & 0o777, 0o700);
    await assert.rejects(lstat(join(r.rootfs, 'bin/link')), { code: 'ENOENT' });
    await assert.rejects(lstat(join(r.rootfs, 'bin/.wh.link')), { code: 'ENOENT' });
    const config = JSON.parse(await readFile(join(r.bundle, 'config.json'), 'utf8'));
    assert.deepEqual(config, JSON.parse(JSON.stringify(r.config)));
    assert.deepEqual(config.process.user, { uid: 500, gid: 500, additionalGids: [600] });
    assert.deepEqual(config.process.args, ['/bin/hello']);
    assert.equal(config.process.cwd, '/srv');
    assert.ok(config.process.env.includes('HOME=/srv/app'));
    assert.equal(config.root.path, 'rootfs');
    assert.deepEqual(
      events.filter((e) => e !== 'layer-progress'),
      ['layer-start', 'layer-done', 'layer-start', 'layer-done', 'config'],
    );
    assert.ok(events.includes('layer-progress'));
    assert.deepEqual(await leftovers(dir, ['layout', 'bundle']), []);
  });

  it('unpacks into an existing directory, keeping what else it holds', async (t) => {
    const image = await makeImage({ layers: [FILES] });
    const { dir, layout, descriptor } = await layoutWith(t, image);
    const bundle = join(dir, 'existing');
    await mkdir(bundle, { mode: 0o755 });
    await writeFile(join(bundle, 'notes.txt'), 'mine');
    await unpackImage({ fetcher: layout, descriptor }, bundle);
    assert.deepEqual((await readdir(bundle)).sort(), ['config.json', 'notes.txt', 'rootfs']);
    assert.equal((await stat(bundle)).mode & 0o777, 0o700);
    // a second unpack refuses: rootfs and config.json are there
    await assert.rejects(unpackImage({ fetcher: layout, descriptor }, bundle), {
      code: 'ERR_INVALID_ARGUMENT',
      message: /already holds rootfs/,
    });
    assert.deepEqual((await readdir(bundle)).sort(), ['config.json', 'notes.txt', 'rootfs']);
    const file = join(dir, 'a-file');
    await writeFile(file, '');
    await assert.rejects(unpackImage({ fetcher: layout, descriptor }, file), /not a directory/);
  });

  it('checks every diffID, and leaves nothing behind when one differs', async (t) => {
    const image = await makeImage({ layers: [FILES, [{ path: 'x', content: 'x' }]] });
    const { config, manifest } = imageOf(
      image.layers.map((l) => l.descriptor),
      [image.diffIds[0] as string, digestBytes('something else')],
    );
    const dir = await tempDir(t);
    const fetcher = memoryFetcher([manifest, config, ...image.layers]);
    await assert.rejects(unpackImage({ fetcher, descriptor: manifest.descriptor }, join(dir, 'b')), {
      code: 'ERR_DIGEST_MISMATCH',
      message: /layer 2 .*diffID/,
    });
    assert.deepEqual(await readdir(dir), []);
    // an existing bundle directory is left as it was
    await mkdir(join(dir, 'b'));
    await assert.rejects(unpackImage({ fetcher, descriptor: manifest.descriptor }, join(dir, 'b')), {
      code: 'ERR_DIGEST_MISMATCH',
    });
    assert.deepEqual(await readdir(join(dir, 'b')), []);
  });

  it('counts bytes after the end-of-archive in the diffID', async (t) => {
    const tar = Buffer.concat([await makeTar(FILES), Buffer.alloc(10240), Buffer.from('trailing junk')]);
    const image = await makeImage({ layers: [tar] });
    const { dir, layout, descriptor } = await layoutWith(t, image);
    const r = await unpackImage({ fetcher: layout, descriptor }, join(dir, 'b'));
    assert.deepEqual(r.diffIds, [digestBytes(tar)]);
  });

  it('reads plain, gzip and zstd layers, trusting the bytes over the media type', async (t) => {
    const tars = await Promise.all(
      ['plain', 'gzip', 'zstd', 'liar'].map((n) => makeTar([{ path: n, content: n }])),
    );
    const zstd = await readAll(
      Readable.from([tars[2] as Buffer]).pipe(compressStream('zstd')),
      1 << 20,
      'zstd',
    );
    const layers = [
      blob(MediaType.OciLayer, tars[0] as Buffer),
      blob(MediaType.OciLayerGzip, gzipSync(tars[1] as Buffer)),
      blob(MediaType.OciLayerZstd, zstd),
      // a docker archive's plain tar under a gzip media type
      blob(MediaType.DockerLayerGzip, tars[3] as Buffer),
    ];
    const { config, manifest } = imageOf(
      layers.map((l) => l.descriptor),
      tars.map((x) => digestBytes(x)),
    );
    const dir = await tempDir(t);
    const r = await unpackImage(
      { fetcher: memoryFetcher([manifest, config, ...layers]), descriptor: manifest.descriptor },
      join(dir, 'b'),
    );
    assert.deepEqual((await readdir(r.rootfs)).sort(), ['gzip', 'liar', 'plain', 'zstd']);
  });

  it('refuses layers that are not tars, configs that disagree with the manifest, non-linux images', async (t) => {
    const image = await makeImage({ layers: [FILES] });
    const dir = await tempDir(t);
    const odd = blob('application/vnd.example.thing', Buffer.from('x'));
    const open = (layers: Descriptor[], diffIds: string[], os?: string) => {
      const { config, manifest } = imageOf(layers, diffIds, os);
      return {
        fetcher: memoryFetcher([manifest, config, odd, ...image.layers]),
        descriptor: manifest.descriptor,
      };
    };
    await assert.rejects(unpackImage(open([odd.descriptor], [digestBytes('x')]), join(dir, 'b')), {
      code: 'ERR_UNSUPPORTED_MEDIA_TYPE',
    });
    await assert.rejects(
      unpackImage(
        open(
          image.layers.map((l) => l.descriptor),
          [],
        ),
        join(dir, 'b'),
      ),
      { code: 'ERR_INVALID_DOCUMENT', message: /1 layers but the config lists 0/ },
    );
    await assert.rejects(
      unpackImage(
        open(
          image.layers.map((l) => l.descriptor),
          [...image.diffIds],
          'windows',
        ),
        join(dir, 'b'),
      ),
      { code: 'ERR_UNSUPPORTED' },
    );
    assert.deepEqual(await readdir(dir), []);
  });

  it('stops on a corrupt layer blob, leaving nothing', async (t) => {
    const image = await makeImage({ layers: [FILES, [{ path: 'big', content: Buffer.alloc(1 << 20, 1) }]] });
    const { dir, layoutDir, layout, descriptor } = await layoutWith(t, image);
    const last = image.layers[1] as { descriptor: Descriptor; bytes: Buffer };
    const bytes = Buffer.from(last.bytes);
    bytes[bytes.length - 12] = (bytes[bytes.length - 12] ?? 0) ^ 0xff; // the gzip trailer's CRC
    await writeFile(join(layoutDir, 'blobs', 'sha256', encodedOf(last.descriptor.digest)), bytes);
    await assert.rejects(
      unpackImage({ fetcher: layout, descriptor }, join(dir, 'b')),
      (e: { code?: string }) => ['ERR_DIGEST_MISMATCH', 'ERR_COMPRESSION'].includes(e.code ?? ''),
    );
    assert.deepEqual(await leftovers(dir, ['layout']), []);
  });

  it('stops on an unsafe entry, leaving nothing', async (t) => {
    const tar = await makeTar([{ path: 'ok', content: 'x' }]);
    // tar-stream keeps names as given: `../escape` and an absolute name
    const hostile = await makeImage({ layers: [tar, [{ path: '../escape', content: 'x' }]] });
    const { dir, layout, descriptor } = await layoutWith(t, hostile);
    await assert.rejects(unpackImage({ fetcher: layout, descriptor }, join(dir, 'b')), {
      code: 'ERR_UNSAFE_PATH',
    });
    assert.deepEqual(await leftovers(dir, ['layout']), []);
  });

  it('is cancelled by its signal between and within layers, leaving nothing', async (t) => {
    const image = await makeImage({
      layers: [FILES, [{ path: 'big', content: Buffer.alloc(4 << 20, 7) }], [{ path: 'last', content: 'x' }]],
      compression: 'none',
    });
    const { dir, layout, descriptor } = await layoutWith(t, image);
    for (const at of ['layer-start', 'layer-progress'] as const) {
      const ac = new AbortController();
      let seen = 0;
      await assert.rejects(
        unpackImage({ fetcher: layout, descriptor }, join(dir, 'b'), {
          signal: ac.signal,
          onProgress: (e) => {
            if (e.type === at && ++seen === 2) ac.abort();
          },
        }),
        { code: 'ERR_ABORTED' },
      );
      assert.deepEqual(await leftovers(dir, ['layout']), [], at);
    }
  });

  it('picks the platform from an index', async (t) => {
    const amd = await makeImage({ layers: [[{ path: 'amd64', content: '' }]] });
    const arm = await makeImage({
      layers: [[{ path: 'arm64', content: '' }]],
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    });
    const index = makeIndex([
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ]);
    const fetcher = memoryFetcher([...amd.blobs, ...arm.blobs, index]);
    const dir = await tempDir(t);
    const r = await unpackImage({ fetcher, descriptor: index.descriptor }, join(dir, 'a'), {
      platform: { os: 'linux', architecture: 'arm64' },
    });
    assert.deepEqual(await readdir(r.rootfs), ['arm64']);
    assert.equal(r.manifest.digest, arm.manifest.descriptor.digest);
    await assert.rejects(
      unpackImage({ fetcher, descriptor: index.descriptor }, join(dir, 'b'), {
        platform: { os: 'linux', architecture: 's390x' },
      }),
      { code: 'ERR_PLATFORM_NOT_FOUND' },
    );
  });
});
