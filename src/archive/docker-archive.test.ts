import assert from 'node:assert/strict';
import { watch } from 'node:fs';
import { readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { compressStream, zstdSupport } from '../compression/compression.js';
import { type Digest, digestBytes, encodedOf } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { MediaType } from '../spec/media-types.js';
import { readStream, tarBytes, writeTar } from '../testing/archive-fixtures.js';
import { blob, makeImage, makeIndex, makeTar, pushImage, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { openDockerArchive } from './docker-archive-reader.js';
import { createDockerArchive } from './docker-archive-writer.js';
import { TarIndex } from './tar-index.js';

const isCode = (code: string) => (e: unknown) => e instanceof StratumError && e.code === code;

async function writeArchive(
  file: string,
  images: readonly { image: TestImage; tags?: readonly string[] }[],
  tmpDir?: string,
): Promise<void> {
  const w = await createDockerArchive(file, tmpDir ? { tmpDir } : {});
  try {
    for (const { image, tags } of images) {
      await pushImage(w, image);
      await w.tag(image.manifest.descriptor, '');
      for (const t of tags ?? []) await w.tag(image.manifest.descriptor, t);
    }
    await w.finalize();
  } finally {
    await w.close();
  }
}

async function listMembers(file: string): Promise<string[]> {
  const idx = await TarIndex.open(file);
  try {
    return [...idx.members()].map((m) => m.name);
  } finally {
    await idx.close();
  }
}

async function memberText(file: string, name: string): Promise<string> {
  const idx = await TarIndex.open(file);
  try {
    return (await idx.read(idx.lookup(name)!, 1 << 20, name)).toString();
  } finally {
    await idx.close();
  }
}

test('round trip: gzip layers are stored uncompressed and read back with the same config and diffIDs', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'out', 'app.tar');
  const img = await makeImage({
    format: 'docker',
    layers: [[{ path: 'etc/a', content: 'a' }], [{ path: 'etc/b', content: 'b'.repeat(5000) }]],
  });
  await writeArchive(file, [{ image: img, tags: ['app:1'] }]);

  const names = await listMembers(file);
  assert.deepEqual(
    names.sort(),
    [
      `${encodedOf(img.config.descriptor.digest)}.json`,
      `${encodedOf(img.diffIds[0]!)}.tar`,
      `${encodedOf(img.diffIds[1]!)}.tar`,
      'manifest.json',
      'repositories',
    ].sort(),
  );
  assert.deepEqual(JSON.parse(await memberText(file, 'manifest.json')), [
    {
      Config: `${encodedOf(img.config.descriptor.digest)}.json`,
      RepoTags: ['app:1'],
      Layers: img.diffIds.map((d) => `${encodedOf(d)}.tar`),
    },
  ]);
  const repos = JSON.parse(await memberText(file, 'repositories')) as Record<string, Record<string, string>>;
  assert.match(repos.app?.['1'] ?? '', /^[a-f0-9]{64}$/);

  const r = await openDockerArchive(file);
  t.after(() => r.close());
  const desc = await r.resolve('app:1');
  assert.equal(desc.mediaType, MediaType.OciManifest);
  const manifest = JSON.parse((await readStream(await r.fetch(desc))).toString());
  assert.equal(manifest.config.digest, img.config.descriptor.digest);
  assert.equal(manifest.config.mediaType, MediaType.OciConfig);
  assert.deepEqual(
    manifest.layers.map((l: { digest: Digest; mediaType: string }) => [l.digest, l.mediaType]),
    img.diffIds.map((d) => [d, MediaType.OciLayer]),
  );
  assert.deepEqual(await readStream(await r.fetch(manifest.config)), img.config.bytes);
  for (const l of manifest.layers) {
    assert.equal(digestBytes(await readStream(await r.fetch(l))), l.digest);
    assert.equal(await r.exists(l), true);
  }
  // the synthesised manifest is deterministic: same digest from a second reader
  const again = await openDockerArchive(file);
  t.after(() => again.close());
  assert.equal((await again.resolve('')).digest, desc.digest);
  assert.deepEqual(await r.roots(), [{ ref: 'app:1', descriptor: desc }]);
});

test('several images with a shared layer: the layer is stored once; RepoTags in familiar form', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'multi.tar');
  const base = await makeTar([{ path: 'bin/sh', content: 'shell' }]);
  const a = await makeImage({ layers: [base, [{ path: 'a', content: 'a' }]] });
  const b = await makeImage({ layers: [base, [{ path: 'b', content: 'b' }]], compression: 'none' });
  const c = await makeImage({ layers: [[{ path: 'c', content: 'c' }]] });
  await writeArchive(file, [
    { image: a, tags: ['docker.io/library/busybox:latest', 'busybox:1.36'] },
    { image: b, tags: ['localhost:5000/app:1'] },
    { image: c },
  ]);
  const names = await listMembers(file);
  assert.equal(names.filter((n) => n === `${encodedOf(digestBytes(base))}.tar`).length, 1);
  assert.equal(names.filter((n) => n.endsWith('.tar')).length, 4);
  const entries = JSON.parse(await memberText(file, 'manifest.json')) as {
    RepoTags: string[];
    Layers: string[];
  }[];
  assert.deepEqual(
    entries.map((e) => e.RepoTags),
    [['busybox:latest', 'busybox:1.36'], ['localhost:5000/app:1'], []],
  );
  assert.equal(entries[0]!.Layers[0], entries[1]!.Layers[0]);

  const r = await openDockerArchive(file);
  t.after(() => r.close());
  const cfg = async (ref: string) =>
    JSON.parse((await readStream(await r.fetch(await r.resolve(ref)))).toString()).config.digest as string;
  assert.equal(await cfg('busybox:latest'), a.config.descriptor.digest);
  assert.equal(await cfg('docker.io/library/busybox:latest'), a.config.descriptor.digest);
  assert.equal(await cfg('busybox'), a.config.descriptor.digest);
  assert.equal(await cfg('index.docker.io/library/busybox:1.36'), a.config.descriptor.digest);
  assert.equal(await cfg('localhost:5000/app:1'), b.config.descriptor.digest);
  assert.equal(await cfg('@1'), b.config.descriptor.digest);
  assert.equal(await cfg('@2'), c.config.descriptor.digest);
  await assert.rejects(
    r.resolve(''),
    (e) => isCode('ERR_INVALID_ARGUMENT')(e) && /busybox:latest/.test(String(e)) && /@2/.test(String(e)),
  );
  await assert.rejects(r.resolve('busybox:nope'), isCode('ERR_NOT_FOUND'));
  await assert.rejects(r.resolve('@3'), isCode('ERR_NOT_FOUND'));
  const roots = await r.roots();
  assert.deepEqual(
    roots.map((x) => x.ref),
    ['busybox:latest', 'busybox:1.36', 'localhost:5000/app:1', undefined],
  );
  // resolve by the synthesised manifest's digest
  assert.equal((await r.resolve(roots[2]!.descriptor.digest)).digest, roots[2]!.descriptor.digest);
  assert.deepEqual(
    r.images().map((i) => i.index),
    [0, 1, 2],
  );
});

test('a gzip-compressed archive (docker save | gzip) reads the same', async (t) => {
  const dir = await tempDir(t);
  const plain = join(dir, 'a.tar');
  const img = await makeImage();
  await writeArchive(plain, [{ image: img, tags: ['x:y'] }]);
  const gz = join(dir, 'a.tar.gz');
  await writeFile(gz, gzipSync(await readFile(plain)));
  const r1 = await openDockerArchive(plain);
  const r2 = await openDockerArchive(gz, { tmpDir: dir });
  t.after(() => r1.close());
  t.after(() => r2.close());
  assert.equal((await r2.resolve('x:y')).digest, (await r1.resolve('x:y')).digest);
  const m = JSON.parse((await readStream(await r2.fetch(await r2.resolve('x:y')))).toString());
  assert.equal(digestBytes(await readStream(await r2.fetch(m.layers[0]))), img.diffIds[0]);
  // the decompressed copy lives in tmpDir while open and is removed on close
  assert.equal((await readdir(dir)).filter((n) => n.startsWith('stratum-archive-read-')).length, 1);
  await r2.close();
  assert.equal((await readdir(dir)).filter((n) => n.startsWith('stratum-archive-read-')).length, 0);
});

test('a Docker 25+ archive (OCI layout inside, manifest.json naming blobs/, legacy symlinks) reads', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'd25.tar');
  const img = await makeImage({ compression: 'none', layers: [[{ path: 'x', content: 'x' }]] });
  const layer = img.layers[0]!;
  const cfgHex = encodedOf(img.config.descriptor.digest);
  const layerHex = encodedOf(layer.descriptor.digest);
  const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [img.manifest.descriptor] };
  await writeTar(file, [
    { name: 'blobs/', type: 'directory' },
    { name: 'blobs/sha256/', type: 'directory' },
    { name: `blobs/sha256/${cfgHex}`, data: img.config.bytes },
    { name: `blobs/sha256/${layerHex}`, data: layer.bytes },
    { name: `blobs/sha256/${encodedOf(img.manifest.descriptor.digest)}`, data: img.manifest.bytes },
    { name: `${layerHex}/`, type: 'directory' },
    { name: `${layerHex}/layer.tar`, type: 'symlink', linkname: `../blobs/sha256/${layerHex}` },
    { name: 'index.json', data: JSON.stringify(index) },
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    {
      name: 'manifest.json',
      data: JSON.stringify([
        { Config: `blobs/sha256/${cfgHex}`, RepoTags: ['d25:latest'], Layers: [`blobs/sha256/${layerHex}`] },
      ]),
    },
  ]);
  const r = await openDockerArchive(file);
  t.after(() => r.close());
  const m = await r.manifest('d25');
  assert.equal(m.config.digest, img.config.descriptor.digest);
  assert.equal(m.layers[0]!.digest, layer.descriptor.digest);
  // a legacy layout (Layers naming <id>/layer.tar symlinks) resolves through the link
  const legacy = join(dir, 'legacy.tar');
  await writeTar(legacy, [
    { name: `blobs/sha256/${layerHex}`, data: layer.bytes },
    { name: `${layerHex}/layer.tar`, type: 'symlink', linkname: `../blobs/sha256/${layerHex}` },
    { name: `${cfgHex}.json`, data: img.config.bytes },
    {
      name: 'manifest.json',
      data: JSON.stringify([{ Config: `${cfgHex}.json`, RepoTags: null, Layers: [`${layerHex}/layer.tar`] }]),
    },
  ]);
  const l = await openDockerArchive(legacy);
  t.after(() => l.close());
  assert.equal((await l.manifest('')).layers[0]!.digest, layer.descriptor.digest);
});

test('layer media types follow the magic bytes (tar, gzip)', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'gz-layers.tar');
  const img = await makeImage({ layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }]] });
  const cfgHex = encodedOf(img.config.descriptor.digest);
  // a hand-made archive whose second layer is stored gzip'd (as some tools do)
  const plain = await makeTar([{ path: 'a', content: 'a' }]);
  await writeTar(file, [
    { name: `${cfgHex}.json`, data: img.config.bytes },
    { name: 'l0.tar', data: plain },
    { name: 'l1.tar.gz', data: img.layers[1]!.bytes },
    {
      name: 'manifest.json',
      data: JSON.stringify([{ Config: `${cfgHex}.json`, Layers: ['l0.tar', 'l1.tar.gz'] }]),
    },
  ]);
  const r = await openDockerArchive(file);
  t.after(() => r.close());
  const m = await r.manifest('');
  assert.deepEqual(
    m.layers.map((l) => [l.mediaType, l.digest]),
    [
      [MediaType.OciLayer, img.diffIds[0]],
      [MediaType.OciLayerGzip, img.layers[1]!.descriptor.digest],
    ],
  );
});

test('an index cannot go into a docker archive (ERR_UNSUPPORTED, says to pick a platform)', async (t) => {
  const dir = await tempDir(t);
  const w = await createDockerArchive(join(dir, 'x.tar'), { tmpDir: dir });
  t.after(() => w.close());
  const img = await makeImage();
  const index = makeIndex([{ image: img, platform: { os: 'linux', architecture: 'amd64' } }]);
  await pushImage(w, img);
  await assert.rejects(
    w.push(index.descriptor, index.bytes),
    (e) => isCode('ERR_UNSUPPORTED')(e) && /--platform/.test(String(e)),
  );
  await assert.rejects(w.tag(index.descriptor, 'x:1'), isCode('ERR_UNSUPPORTED'));
  await assert.rejects(
    w.tag(img.manifest.descriptor, `x@${img.manifest.descriptor.digest}`),
    isCode('ERR_INVALID_ARGUMENT'),
  );
  const artifact = blob(
    MediaType.OciManifest,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: 'application/vnd.example+json', digest: digestBytes('{}'), size: 2 },
        layers: [],
      }),
    ),
  );
  await assert.rejects(w.push(artifact.descriptor, artifact.bytes), isCode('ERR_UNSUPPORTED'));
});

test('nothing is visible until finalize; close() without finalize discards everything', async (t) => {
  const dir = await tempDir(t);
  const spool = join(dir, 'spool');
  await import('node:fs/promises').then((fs) => fs.mkdir(spool));
  const file = join(dir, 'never.tar');
  const w = await createDockerArchive(file, { tmpDir: spool });
  const img = await makeImage();
  await pushImage(w, img, 'a:b');
  assert.equal((await w.resolve('a:b')).digest, img.manifest.descriptor.digest);
  assert.deepEqual(await readdir(dir), ['spool']);
  assert.equal((await readdir(spool)).length, 1, 'blobs wait in the spool');
  await w.close();
  assert.deepEqual(await readdir(dir), ['spool']);
  assert.deepEqual(await readdir(spool), [], 'the spool is removed on close');
});

test('an interrupted finalize (abort signal) leaves no file behind', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'out');
  await import('node:fs/promises').then((fs) => fs.mkdir(out));
  const file = join(out, 'big.tar');
  const big = Buffer.alloc(48 * 1024 * 1024, 1);
  const img = await makeImage({ layers: [big], compression: 'none' });
  const w = await createDockerArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, img, 'big:1');

  // aborted before it starts
  const pre = new AbortController();
  pre.abort();
  await assert.rejects(w.finalize({ signal: pre.signal }), isCode('ERR_ABORTED'));
  assert.deepEqual(await readdir(out), []);

  // aborted while the archive is being written: as soon as its temp file appears
  const ac = new AbortController();
  const watcher = watch(out, (_ev, name) => {
    if (name && String(name).startsWith('.stratum-archive-')) ac.abort();
  });
  try {
    await assert.rejects(w.finalize({ signal: ac.signal }), isCode('ERR_ABORTED'));
  } finally {
    watcher.close();
  }
  assert.equal(ac.signal.aborted, true);
  assert.deepEqual(await readdir(out), []);

  // the writer is still usable: a later finalize succeeds
  await w.finalize();
  assert.deepEqual(await readdir(out), ['big.tar']);
  assert.ok((await stat(file)).size > big.length);
});

test('finalize refuses a gzip layer whose uncompressed bytes do not match the config diff_id', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'bad.tar');
  const good = await makeImage();
  const other = await makeImage({ layers: [[{ path: 'other', content: 'other' }]] });
  // config claims good's diffID, the manifest carries other's layer
  const manifest = blob(
    MediaType.OciManifest,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: good.config.descriptor,
        layers: [other.layers[0]!.descriptor],
      }),
    ),
  );
  const w = await createDockerArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  await w.push(other.layers[0]!.descriptor, other.layers[0]!.bytes);
  await w.push(good.config.descriptor, good.config.bytes);
  await w.push(manifest.descriptor, manifest.bytes);
  await w.tag(manifest.descriptor, 'bad:1');
  await assert.rejects(w.finalize(), isCode('ERR_DIGEST_MISMATCH'));
  assert.equal((await readdir(dir)).includes('bad.tar'), false);
  assert.equal((await readdir(dir)).filter((n) => n.startsWith('.stratum-archive-')).length, 0);
});

// ---- hostile archives: one test each, with the code it must fail with ----

async function hostile(
  t: { after: (fn: () => Promise<void>) => void },
  members: Parameters<typeof writeTar>[1],
) {
  const dir = await tempDir(t);
  const file = join(dir, 'hostile.tar');
  await writeTar(file, members);
  return file;
}

async function validParts() {
  const img = await makeImage({ compression: 'none' });
  const cfg = `${encodedOf(img.config.descriptor.digest)}.json`;
  const layer = `${encodedOf(img.diffIds[0]!)}.tar`;
  return {
    img,
    cfg,
    layer,
    members: [
      { name: cfg, data: img.config.bytes },
      { name: layer, data: img.layers[0]!.bytes },
    ],
  };
}

test('hostile: a member name with .. is ERR_INVALID_ARCHIVE', async (t) => {
  const { members, cfg, layer } = await validParts();
  const file = await hostile(t, [
    ...members,
    { name: '../../etc/cron.d/evil', data: 'x' },
    { name: 'manifest.json', data: JSON.stringify([{ Config: cfg, RepoTags: ['a:b'], Layers: [layer] }]) },
  ]);
  await assert.rejects(
    openDockerArchive(file),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /\.\./.test(String(e)),
  );
});

test('hostile: manifest.json pointing outside with .. is ERR_INVALID_ARCHIVE', async (t) => {
  const { members, cfg } = await validParts();
  const file = await hostile(t, [
    ...members,
    { name: 'manifest.json', data: JSON.stringify([{ Config: cfg, Layers: ['../../../etc/passwd'] }]) },
  ]);
  await assert.rejects(openDockerArchive(file), isCode('ERR_INVALID_ARCHIVE'));
});

test('hostile: manifest.json over the size limit is ERR_TOO_LARGE', async (t) => {
  const { members } = await validParts();
  const file = await hostile(t, [
    ...members,
    { name: 'manifest.json', data: Buffer.alloc(4 * 1024 * 1024 + 1, 0x20) },
  ]);
  await assert.rejects(openDockerArchive(file), isCode('ERR_TOO_LARGE'));
});

test('hostile: manifest.json naming a missing member is ERR_INVALID_ARCHIVE', async (t) => {
  const { members, cfg } = await validParts();
  const file = await hostile(t, [
    ...members,
    { name: 'manifest.json', data: JSON.stringify([{ Config: cfg, RepoTags: [], Layers: ['nope.tar'] }]) },
  ]);
  await assert.rejects(
    openDockerArchive(file),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /nope\.tar/.test(String(e)),
  );
});

test('hostile: manifest.json that is not JSON is ERR_INVALID_ARCHIVE', async (t) => {
  const { members } = await validParts();
  const file = await hostile(t, [...members, { name: 'manifest.json', data: '[{"Config": ' }]);
  await assert.rejects(
    openDockerArchive(file),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /not JSON/.test(String(e)),
  );
});

test('hostile: manifest.json of the wrong shape is ERR_INVALID_ARCHIVE', async (t) => {
  const { members, cfg, layer } = await validParts();
  for (const doc of [
    {},
    [],
    [{ Config: cfg }],
    [{ Config: cfg, Layers: [layer], RepoTags: [7] }],
    [{ Config: 1, Layers: [] }],
  ]) {
    const file = await hostile(t, [...members, { name: 'manifest.json', data: JSON.stringify(doc) }]);
    await assert.rejects(openDockerArchive(file), isCode('ERR_INVALID_ARCHIVE'), JSON.stringify(doc));
  }
});

test("hostile: a layer whose bytes do not match the config's diff_id is ERR_INVALID_ARCHIVE", async (t) => {
  const { members, cfg } = await validParts();
  const other = await makeTar([{ path: 'swapped', content: 'not the layer the config describes' }]);
  const file = await hostile(t, [
    members[0]!,
    { name: 'swapped.tar', data: other },
    {
      name: 'manifest.json',
      data: JSON.stringify([{ Config: cfg, RepoTags: ['a:b'], Layers: ['swapped.tar'] }]),
    },
  ]);
  const r = await openDockerArchive(file);
  t.after(() => r.close());
  await assert.rejects(
    r.resolve('a:b'),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /diff_ids/.test(String(e)),
  );
});

test('hostile: a config with fewer diff_ids than layers, or not a config, is ERR_INVALID_ARCHIVE', async (t) => {
  const { members, cfg, layer } = await validParts();
  const f1 = await hostile(t, [
    ...members,
    { name: 'manifest.json', data: JSON.stringify([{ Config: cfg, Layers: [layer, layer] }]) },
  ]);
  const r1 = await openDockerArchive(f1);
  t.after(() => r1.close());
  await assert.rejects(r1.resolve(''), isCode('ERR_INVALID_ARCHIVE'));
  const f2 = await hostile(t, [
    ...members,
    { name: 'junk.json', data: '{"not":"a config"}' },
    { name: 'manifest.json', data: JSON.stringify([{ Config: 'junk.json', Layers: [layer] }]) },
  ]);
  const r2 = await openDockerArchive(f2);
  t.after(() => r2.close());
  await assert.rejects(r2.resolve(''), isCode('ERR_INVALID_ARCHIVE'));
});

test('hostile: a truncated tar is ERR_INVALID_ARCHIVE', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'trunc.tar');
  const img = await makeImage({ layers: [Buffer.alloc(100_000, 3)], compression: 'none' });
  await writeArchive(file, [{ image: img, tags: ['t:1'] }]);
  const { size } = await stat(file);
  await truncate(file, Math.floor(size / 2));
  await assert.rejects(openDockerArchive(file), isCode('ERR_INVALID_ARCHIVE'));
});

test('hostile: not an archive at all, and a missing file', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'x.tar');
  await writeFile(file, 'hello');
  await assert.rejects(openDockerArchive(file), isCode('ERR_INVALID_ARCHIVE'));
  await assert.rejects(openDockerArchive(join(dir, 'missing.tar')), isCode('ERR_NOT_FOUND'));
  const oci = join(dir, 'oci.tar');
  await writeFile(
    oci,
    await tarBytes([
      { name: 'index.json', data: '{}' },
      { name: 'oci-layout', data: '{}' },
    ]),
  );
  await assert.rejects(
    openDockerArchive(oci),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /oci-archive/.test(String(e)),
  );
});

test('the reader is read-only', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'ro.tar');
  const img = await makeImage();
  await writeArchive(file, [{ image: img, tags: ['ro:1'] }]);
  const r = await openDockerArchive(file);
  t.after(() => r.close());
  await assert.rejects(r.push(img.config.descriptor, img.config.bytes), isCode('ERR_READ_ONLY'));
  await assert.rejects(r.tag(img.manifest.descriptor, 'x'), isCode('ERR_READ_ONLY'));
  const absent = blob(MediaType.OciLayer, Buffer.from('absent'));
  assert.equal(await r.exists(absent.descriptor), false);
  await assert.rejects(r.fetch(absent.descriptor), isCode('ERR_NOT_FOUND'));
  // a descriptor with the right digest but a wrong size fails while streaming
  const m = await r.manifest('ro:1');
  const wrong = { ...m.layers[0]!, size: m.layers[0]!.size - 1 };
  await assert.rejects(readStream(await r.fetch(wrong)), isCode('ERR_SIZE_MISMATCH'));
});

// ---- zstd: layers and whole archives ----

async function zstd(data: Buffer): Promise<Buffer> {
  return readStream(Readable.from([data]).pipe(compressStream('zstd')));
}

const zstdSkip = (() => {
  const s = zstdSupport();
  return s.node || s.program
    ? false
    : 'no zstd codec on this machine (neither node:zlib nor the zstd program)';
})();

test('zstd layers: the writer decompresses them into the archive; the reader detects zstd members', {
  skip: zstdSkip,
}, async (t) => {
  const dir = await tempDir(t);
  const tar = await makeTar([{ path: 'z.txt', content: 'zstd layer\n'.repeat(100) }]);
  const diffId = digestBytes(tar);
  const layer = blob(MediaType.OciLayerZstd, await zstd(tar));
  const config = blob(
    MediaType.OciConfig,
    Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } }),
    ),
  );
  const manifest = blob(
    MediaType.OciManifest,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: config.descriptor,
        layers: [layer.descriptor],
      }),
    ),
  );
  const file = join(dir, 'z.tar');
  const w = await createDockerArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  for (const b of [layer, config, manifest]) await w.push(b.descriptor, b.bytes);
  await w.tag(manifest.descriptor, 'z:1');
  await w.finalize();
  assert.ok((await listMembers(file)).includes(`${encodedOf(diffId)}.tar`));
  const r = await openDockerArchive(file);
  t.after(() => r.close());
  const m = await r.manifest('z:1');
  assert.deepEqual(
    m.layers.map((l) => [l.mediaType, l.digest]),
    [[MediaType.OciLayer, diffId]],
  );

  // a hand-made archive keeping the zstd layer as is: media type by magic bytes
  const kept = join(dir, 'kept.tar');
  const cfgName = `${encodedOf(config.descriptor.digest)}.json`;
  await writeTar(kept, [
    { name: cfgName, data: config.bytes },
    { name: 'layer.tar.zst', data: layer.bytes },
    {
      name: 'manifest.json',
      data: JSON.stringify([{ Config: cfgName, RepoTags: ['k:1'], Layers: ['layer.tar.zst'] }]),
    },
  ]);
  const k = await openDockerArchive(kept);
  t.after(() => k.close());
  assert.deepEqual(
    (await k.manifest('k:1')).layers.map((l) => [l.mediaType, l.digest]),
    [[MediaType.OciLayerZstd, layer.descriptor.digest]],
  );

  // and the whole archive zstd-compressed
  const zfile = join(dir, 'z.tar.zst');
  await writeFile(zfile, await zstd(await readFile(file)));
  const zr = await openDockerArchive(zfile, { tmpDir: dir });
  t.after(() => zr.close());
  assert.equal((await zr.resolve('z:1')).digest, (await r.resolve('z:1')).digest);
});

test('hostile: a corrupt gzip-compressed archive is ERR_INVALID_ARCHIVE', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'bad.tar.gz');
  const gz = gzipSync(await tarBytes([{ name: 'manifest.json', data: '[]' }]));
  await writeFile(file, gz.subarray(0, gz.length - 10));
  await assert.rejects(openDockerArchive(file, { tmpDir: dir }), isCode('ERR_INVALID_ARCHIVE'));
  assert.deepEqual((await readdir(dir)).sort(), ['bad.tar.gz'], 'the decompressed temp copy is removed');
});
