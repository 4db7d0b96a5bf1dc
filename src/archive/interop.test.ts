// Interop with real tools as oracles: skopeo reads the archives we write, we read the archives
// skopeo writes, and umoci unpacks an image that went through our oci-archive. Tests skip
// (and say so) when a tool is missing or, for umoci unpack, when not running as root.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { type Digest, digestBytes } from '../digest/digest.js';
import { have, readStream, run } from '../testing/archive-fixtures.js';
import { makeImage, makeTar, pushImage, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { openDockerArchive } from './docker-archive-reader.js';
import { createDockerArchive } from './docker-archive-writer.js';
import { openOciArchive } from './oci-archive-reader.js';
import { createOciArchive } from './oci-archive-writer.js';

const hasSkopeo = await have('skopeo');
const hasUmoci = await have('umoci');
const isRoot = process.getuid?.() === 0;
const NO_SKOPEO = hasSkopeo ? false : 'skopeo is not installed';

async function skopeo(...args: string[]): Promise<string> {
  const r = await run('skopeo', ['--insecure-policy', ...args]);
  assert.equal(r.code, 0, `skopeo ${args.join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

async function sampleImages(): Promise<{ a: TestImage; b: TestImage }> {
  const base = await makeTar([
    { path: 'etc/', type: 'directory' },
    { path: 'etc/os-release', content: 'ID=stratum\n' },
  ]);
  const a = await makeImage({ layers: [base, [{ path: 'hello.txt', content: 'hello from a\n' }]] });
  const b = await makeImage({ layers: [base, [{ path: 'hello.txt', content: 'hello from b\n' }]] });
  return { a, b };
}

/** The config digest and diffIDs of the image `ref` in the OCI layout `dir` (read with plain fs). */
async function layoutImage(
  dir: string,
  ref: string,
): Promise<{ config: Digest; diffIds: readonly Digest[] }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  const m = index.manifests.find(
    (x: { annotations?: Record<string, string> }) =>
      x.annotations?.['org.opencontainers.image.ref.name'] === ref,
  );
  assert.ok(m, `no ${ref} in ${dir}`);
  const blob = (d: string) => readFile(join(dir, 'blobs', ...d.split(':')));
  const manifest = JSON.parse((await blob(m.digest)).toString());
  const config = JSON.parse((await blob(manifest.config.digest)).toString());
  return { config: manifest.config.digest, diffIds: config.rootfs.diff_ids };
}

test('skopeo reads our docker-archive: copy to oci:, and selects the image by each RepoTag', {
  skip: NO_SKOPEO,
}, async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'ours.tar');
  const { a, b } = await sampleImages();
  const w = await createDockerArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, a, 'app:1');
  await w.tag(a.manifest.descriptor, 'localhost:5000/team/app:latest');
  await pushImage(w, b, 'docker.io/library/other:2');
  await w.finalize();

  await skopeo('copy', `docker-archive:${file}:app:1`, `oci:${join(dir, 'layout')}:x`);
  const got = await layoutImage(join(dir, 'layout'), 'x');
  assert.equal(got.config, a.config.descriptor.digest);
  assert.deepEqual(got.diffIds, a.diffIds);
  await skopeo('copy', `docker-archive:${file}:other:2`, `oci:${join(dir, 'layout')}:y`);
  assert.equal((await layoutImage(join(dir, 'layout'), 'y')).config, b.config.descriptor.digest);

  // skopeo 1.9's inspect lists RepoTags only for registries; what it shows for an archive is
  // the Name of the RepoTag it found, so every RepoTag we wrote must be selectable
  for (const [ref, name, img] of [
    ['app:1', 'docker.io/library/app', a],
    ['localhost:5000/team/app:latest', 'localhost:5000/team/app', a],
    ['other:2', 'docker.io/library/other', b],
  ] as const) {
    const info = JSON.parse(await skopeo('inspect', `docker-archive:${file}:${ref}`));
    assert.equal(info.Name, name);
    assert.deepEqual(info.Layers, img.diffIds);
  }
  const byIndex = JSON.parse(await skopeo('inspect', `docker-archive:${file}:@1`));
  assert.deepEqual(byIndex.Layers, b.diffIds);
});

test('we read skopeo docker-archives, with several RepoTags (--additional-tag)', {
  skip: NO_SKOPEO,
}, async (t) => {
  const dir = await tempDir(t);
  const { a } = await sampleImages();
  // source: an OCI layout made by skopeo from our oci-archive
  const ours = join(dir, 'ours-oci.tar');
  const w = await createOciArchive(ours, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, a, 'src');
  await w.finalize();
  const layout = join(dir, 'layout');
  await skopeo('copy', `oci-archive:${ours}:src`, `oci:${layout}:src`);
  const file = join(dir, 'skopeo.tar');
  await skopeo(
    'copy',
    '--additional-tag',
    'localhost:5000/extra/name:7',
    '--additional-tag',
    'third:x',
    `oci:${layout}:src`,
    `docker-archive:${file}:name:tag`,
  );
  const r = await openDockerArchive(file);
  t.after(() => r.close());
  assert.equal(r.images().length, 1);
  const want = (await r.resolve('')).digest;
  for (const ref of ['name:tag', 'docker.io/library/name:tag', 'localhost:5000/extra/name:7', 'third:x']) {
    assert.equal((await r.resolve(ref)).digest, want, ref);
  }
  const m = await r.manifest('name:tag');
  assert.equal(m.config.digest, a.config.descriptor.digest);
  assert.deepEqual(
    m.layers.map((l) => l.digest),
    a.diffIds,
  );
  for (const l of m.layers) assert.equal(digestBytes(await readStream(await r.fetch(l))), l.digest);
  assert.deepEqual(await readStream(await r.fetch(m.config)), a.config.bytes);
});

test('skopeo reads our oci-archive, and we read skopeo oci-archives', { skip: NO_SKOPEO }, async (t) => {
  const dir = await tempDir(t);
  const { a, b } = await sampleImages();
  const ours = join(dir, 'ours.tar');
  const w = await createOciArchive(ours, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, a, 'tag-a');
  await pushImage(w, b, 'tag-b');
  await w.finalize();
  const layout = join(dir, 'layout');
  await skopeo('copy', `oci-archive:${ours}:tag-b`, `oci:${layout}:tag-b`);
  const got = await layoutImage(layout, 'tag-b');
  assert.equal(got.config, b.config.descriptor.digest);
  assert.deepEqual(got.diffIds, b.diffIds);

  const theirs = join(dir, 'theirs.tar');
  await skopeo('copy', `oci:${layout}:tag-b`, `oci-archive:${theirs}:again`);
  const r = await openOciArchive(theirs);
  t.after(() => r.close());
  const d = await r.resolve('again');
  assert.equal((await r.resolve('')).digest, d.digest);
  const manifest = JSON.parse((await readStream(await r.fetch(d))).toString());
  assert.equal(manifest.config.digest, b.config.descriptor.digest);
  for (const l of manifest.layers) assert.equal(await r.exists(l), true);
  assert.deepEqual(await readStream(await r.fetch(manifest.config)), b.config.bytes);
});

test('umoci unpacks a layout that skopeo made from our oci-archive', {
  skip: !hasSkopeo
    ? 'skopeo is not installed'
    : !hasUmoci
      ? 'umoci is not installed'
      : !isRoot
        ? 'umoci unpack needs root'
        : false,
}, async (t) => {
  const dir = await tempDir(t);
  const { a } = await sampleImages();
  const ours = join(dir, 'ours.tar');
  const w = await createOciArchive(ours, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, a, 'app');
  await w.finalize();
  const layout = join(dir, 'layout');
  await skopeo('copy', `oci-archive:${ours}:app`, `oci:${layout}:app`);
  const bundle = join(dir, 'bundle');
  const r = await run('umoci', ['unpack', '--image', `${layout}:app`, bundle]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await readFile(join(bundle, 'rootfs', 'hello.txt'), 'utf8'), 'hello from a\n');
  assert.equal(await readFile(join(bundle, 'rootfs', 'etc', 'os-release'), 'utf8'), 'ID=stratum\n');
  const cfg = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.process.args, ['/bin/sh']);
});

test('skopeo copies our docker-archive into our oci-archive path and back (round trip through skopeo)', {
  skip: NO_SKOPEO,
}, async (t) => {
  const dir = await tempDir(t);
  const { a } = await sampleImages();
  const file = join(dir, 'd.tar');
  const w = await createDockerArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, a, 'rt:1');
  await w.finalize();
  const oci = join(dir, 'o.tar');
  await skopeo('copy', `docker-archive:${file}:rt:1`, `oci-archive:${oci}:rt`);
  const r = await openOciArchive(oci);
  t.after(() => r.close());
  const manifest = JSON.parse((await readStream(await r.fetch(await r.resolve('rt')))).toString());
  assert.equal(manifest.config.digest, a.config.descriptor.digest);
});
