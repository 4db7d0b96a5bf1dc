// Interop with the real tools: a layout written by LayoutTarget is read by skopeo and
// unpacked by umoci (with our temp and lock files present), and layouts written by skopeo
// are read by LayoutTarget. Skips, saying why, when a tool is not installed or not root.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { digestBytes } from '../digest/digest.js';
import { readAll } from '../internal/streams.js';
import { MediaType } from '../spec/media-types.js';
import { parseManifestDocument } from '../spec/validate.js';
import { makeImage, pushImage, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { LAYOUT_INDEX_LOCK, LAYOUT_TEMP_PREFIX, type LayoutTarget, openLayout } from './layout.js';
import { openStore } from './store.js';

const run = promisify(execFile);

async function has(tool: string): Promise<boolean> {
  try {
    await run(tool, ['--version']);
    return true;
  } catch {
    return false;
  }
}

const skopeo = (await has('skopeo')) ? false : 'skopeo is not installed';
const umoci = (await has('umoci')) ? false : 'umoci is not installed';
const umociUnpack = umoci || (process.getuid?.() === 0 ? false : 'umoci unpack needs root here');

async function sampleImage(): Promise<TestImage> {
  return makeImage({
    layers: [
      [
        { path: 'etc/', type: 'directory' },
        { path: 'etc/hello.txt', content: 'hello from stratum\n' },
        { path: 'bin/', type: 'directory' },
        { path: 'bin/sh', content: '#!fake\n', mode: 0o755 },
      ],
      [
        { path: 'etc/second.txt', content: 'second layer\n' },
        { path: 'etc/link', type: 'symlink', linkname: 'hello.txt' },
      ],
    ],
  });
}

/** A layout of ours with a busy look: a temp file and a lock file from this (live) process. */
async function ourLayout(dir: string, img: TestImage, refs: readonly string[]): Promise<LayoutTarget> {
  const l = await openLayout(dir, { create: true });
  await pushImage(l, img);
  for (const ref of refs) await l.tag(img.manifest.descriptor, ref);
  await writeFile(join(dir, `${LAYOUT_TEMP_PREFIX}${process.pid}-inprogress`), 'partial blob');
  await writeFile(join(dir, LAYOUT_INDEX_LOCK), String(process.pid));
  return l;
}

async function readFully(l: LayoutTarget, ref: string, img?: TestImage): Promise<void> {
  const desc = await l.resolve(ref);
  const bytes = await readAll(await l.fetch(desc), 1 << 22);
  const doc = parseManifestDocument(bytes, { mediaType: desc.mediaType });
  assert.equal(doc.kind, 'manifest');
  if (doc.kind !== 'manifest') return;
  for (const d of [doc.manifest.config, ...doc.manifest.layers]) {
    const b = await readAll(await l.fetch(d), 1 << 24);
    assert.equal(digestBytes(b), d.digest);
  }
  if (img)
    assert.deepEqual(
      doc.manifest.layers.map((x) => x.digest),
      img.layers.map((x) => x.descriptor.digest),
    );
}

describe('layout interop', () => {
  it('skopeo inspects a layout we wrote, by short tag and by full reference name', {
    skip: skopeo,
  }, async (t) => {
    const dir = await tempDir(t);
    const img = await sampleImage();
    await ourLayout(dir, img, ['v1', 'docker.io/library/sample:latest']);
    for (const ref of ['v1', 'docker.io/library/sample:latest']) {
      const { stdout } = await run('skopeo', ['inspect', `oci:${dir}:${ref}`]);
      const info = JSON.parse(stdout) as { Digest: string; Layers: string[]; Architecture: string };
      assert.equal(info.Digest, img.manifest.descriptor.digest);
      assert.deepEqual(
        info.Layers,
        img.layers.map((l) => l.descriptor.digest),
      );
      assert.equal(info.Architecture, 'amd64');
    }
    const raw = await run('skopeo', ['inspect', '--raw', `oci:${dir}:v1`]);
    assert.equal(digestBytes(raw.stdout), img.manifest.descriptor.digest);
  });

  it('umoci lists and unpacks a layout we wrote', { skip: umociUnpack }, async (t) => {
    const dir = join(await tempDir(t), 'image');
    const img = await sampleImage();
    await ourLayout(dir, img, ['v1']);
    const ls = await run('umoci', ['ls', '--layout', dir]);
    assert.deepEqual(ls.stdout.trim().split('\n'), ['v1']);
    const bundle = join(await tempDir(t), 'bundle');
    await run('umoci', ['unpack', '--image', `${dir}:v1`, bundle]);
    assert.equal(await readFile(join(bundle, 'rootfs', 'etc', 'hello.txt'), 'utf8'), 'hello from stratum\n');
    assert.equal(await readFile(join(bundle, 'rootfs', 'etc', 'second.txt'), 'utf8'), 'second layer\n');
    assert.equal(await readlink(join(bundle, 'rootfs', 'etc', 'link')), 'hello.txt');
    const config = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as {
      process: { args: string[] };
    };
    assert.deepEqual(config.process.args, ['/bin/sh']);
  });

  it('reads layouts skopeo wrote: a fresh one, a docker-format one, and ours extended', {
    skip: skopeo,
  }, async (t) => {
    const src = await tempDir(t);
    const img = await sampleImage();
    await ourLayout(src, img, ['v1']);

    const fresh = join(await tempDir(t), 'fresh');
    await run('skopeo', ['copy', '-q', `oci:${src}:v1`, `oci:${fresh}:copied`]);
    const lf = await openLayout(fresh);
    assert.equal((await lf.resolve('copied')).digest, img.manifest.descriptor.digest);
    assert.equal((await lf.resolve('')).digest, img.manifest.descriptor.digest);
    await readFully(lf, 'copied', img);

    const docker = join(await tempDir(t), 'docker');
    await run('skopeo', ['copy', '-q', '--format', 'v2s2', `oci:${src}:v1`, `oci:${docker}:d`]);
    const ld = await openLayout(docker);
    assert.equal((await ld.resolve('d')).mediaType, MediaType.DockerManifest);
    await readFully(ld, 'd');

    // skopeo adds a tag to our layout; we keep both and can tag further
    await run('skopeo', ['copy', '-q', `oci:${src}:v1`, `oci:${src}:v2`]);
    const ls = await openLayout(src);
    await rm(join(src, LAYOUT_INDEX_LOCK)); // ourLayout left it as if held by this process
    assert.equal((await ls.resolve('v2')).digest, img.manifest.descriptor.digest);
    await ls.tag(await ls.resolve('v2'), 'v3');
    const tags: string[] = [];
    for await (const tag of ls.tags()) tags.push(tag);
    assert.deepEqual(tags, ['v1', 'v2', 'v3']);
    await readFully(ls, 'v3', img);
    const { stdout } = await run('skopeo', ['inspect', `oci:${src}:v3`]);
    assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, img.manifest.descriptor.digest);
  });

  it('skopeo and umoci read the store directly, by full reference; skopeo writes into it', {
    skip: skopeo || umociUnpack,
  }, async (t) => {
    const root = join(await tempDir(t), 'store');
    const store = await openStore({ root });
    t.after(() => store.close());
    const img = await sampleImage();
    await pushImage(store, img, 'docker.io/library/sample:latest'); // leaves a live lease
    await store.tag(img.manifest.descriptor, '127.0.0.1:5000/app:1');
    for (const ref of ['docker.io/library/sample:latest', '127.0.0.1:5000/app:1']) {
      const { stdout } = await run('skopeo', ['inspect', `oci:${root}:${ref}`]);
      assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, img.manifest.descriptor.digest);
    }
    const ls = await run('umoci', ['ls', '--layout', root]);
    assert.deepEqual(ls.stdout.trim().split('\n').sort(), [
      '127.0.0.1:5000/app:1',
      'docker.io/library/sample:latest',
    ]);
    const bundle = join(await tempDir(t), 'bundle');
    await run('umoci', ['unpack', '--image', `${root}:docker.io/library/sample:latest`, bundle]);
    assert.equal(await readFile(join(bundle, 'rootfs', 'etc', 'hello.txt'), 'utf8'), 'hello from stratum\n');

    await run('skopeo', [
      'copy',
      '-q',
      `oci:${root}:127.0.0.1:5000/app:1`,
      `oci:${root}:example.com/copied:2`,
    ]);
    assert.equal((await store.resolve('example.com/copied:2')).digest, img.manifest.descriptor.digest);
    await store.close();
    assert.deepEqual((await store.gc()).removedBlobs, []);
    assert.deepEqual(await store.verify(), []);
    assert.equal((await store.images()).length, 3);
  });
});
