import assert from 'node:assert/strict';
import { readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { digestBytes, encodedOf } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { MediaType } from '../spec/media-types.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME } from '../spec/types.js';
import { type RawMember, readStream, writeTar } from '../testing/archive-fixtures.js';
import { makeImage, makeIndex, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { openOciArchive } from './oci-archive-reader.js';
import { createOciArchive } from './oci-archive-writer.js';
import { TarIndex } from './tar-index.js';

const isCode = (code: string) => (e: unknown) => e instanceof StratumError && e.code === code;

test('round trip: an image and a multi-platform index, tagged, read back byte for byte', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'sub', 'out.tar');
  const single = await makeImage({ layers: [[{ path: 's', content: 's' }]] });
  const amd = await makeImage({ platform: { os: 'linux', architecture: 'amd64' } });
  const arm = await makeImage({
    platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    layers: [[{ path: 'arm', content: 'arm' }]],
  });
  const index = makeIndex([
    { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
    { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
  ]);
  const w = await createOciArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, single, 'single');
  await pushImage(w, amd);
  await pushImage(w, arm);
  await w.push(index.descriptor, index.bytes);
  await w.tag(index.descriptor, 'multi');
  await w.tag(index.descriptor, 'latest');
  await w.tag(single.manifest.descriptor, 'latest'); // moves `latest`
  await assert.rejects(w.tag(index.descriptor, 'bad name!'), isCode('ERR_INVALID_REFERENCE'));
  await assert.rejects(stat(file), { code: 'ENOENT' });
  await w.finalize();
  await assert.rejects(w.push(single.config.descriptor, single.config.bytes), isCode('ERR_INVALID_ARGUMENT'));

  const idx = await TarIndex.open(file);
  const names = [...idx.members()].map((m) => m.name);
  await idx.close();
  assert.deepEqual(names.slice(0, 4), ['oci-layout', 'index.json', 'blobs', 'blobs/sha256']);
  const blobs = [single, amd, arm].flatMap((i) =>
    i.blobs.map((b) => `blobs/sha256/${encodedOf(b.descriptor.digest)}`),
  );
  blobs.push(`blobs/sha256/${encodedOf(index.descriptor.digest)}`);
  assert.deepEqual(names.slice(4).sort(), [...new Set(blobs)].sort());

  const r = await openOciArchive(file);
  t.after(() => r.close());
  assert.deepEqual(
    r.index.manifests.map((m) => [m.annotations?.[ANNOTATION_REF_NAME], m.digest]),
    [
      ['single', single.manifest.descriptor.digest],
      ['multi', index.descriptor.digest],
      ['latest', single.manifest.descriptor.digest],
    ],
    'children of the index are not roots; every tag is one entry',
  );
  const multi = await r.resolve('multi');
  assert.equal(multi.mediaType, MediaType.OciIndex);
  assert.deepEqual(await readStream(await r.fetch(multi)), index.bytes);
  assert.equal((await r.resolve('latest')).digest, single.manifest.descriptor.digest);
  assert.equal((await r.resolve(amd.manifest.descriptor.digest)).mediaType, MediaType.OciManifest);
  assert.equal((await r.resolve('@1')).digest, index.descriptor.digest);
  await assert.rejects(r.resolve(''), (e) => isCode('ERR_INVALID_ARGUMENT')(e) && /multi/.test(String(e)));
  await assert.rejects(r.resolve('nope'), isCode('ERR_NOT_FOUND'));
  for (const b of [...single.blobs, ...amd.blobs, ...arm.blobs]) {
    assert.deepEqual(await readStream(await r.fetch(b.descriptor)), b.bytes);
    assert.equal(await r.exists(b.descriptor), true);
  }
  assert.deepEqual(
    (await r.roots()).map((x) => x.ref),
    ['single', 'multi', 'latest'],
  );
  await assert.rejects(r.push(single.config.descriptor, single.config.bytes), isCode('ERR_READ_ONLY'));
});

test('an untagged image is the only root and resolves with ""; a gzip-compressed archive reads too', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'one.tar');
  const img = await makeImage();
  const w = await createOciArchive(file, { tmpDir: dir });
  t.after(() => w.close());
  await pushImage(w, img);
  await w.finalize();
  const gz = join(dir, 'one.tar.gz');
  await writeFile(gz, gzipSync(await readFile(file)));
  for (const f of [file, gz]) {
    const r = await openOciArchive(f, { tmpDir: dir });
    t.after(() => r.close());
    const d = await r.resolve('');
    assert.equal(d.digest, img.manifest.descriptor.digest);
    assert.deepEqual(await r.roots(), [{ ref: undefined, descriptor: d }]);
  }
});

test('close() without finalize leaves nothing; an aborted finalize leaves nothing', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'out');
  const spool = join(dir, 'spool');
  await import('node:fs/promises').then(async (fs) => {
    await fs.mkdir(out);
    await fs.mkdir(spool);
  });
  const img = await makeImage();
  const w1 = await createOciArchive(join(out, 'a.tar'), { tmpDir: spool });
  await pushImage(w1, img, 'a');
  await w1.close();
  assert.deepEqual(await readdir(out), []);
  assert.deepEqual(await readdir(spool), []);

  const w2 = await createOciArchive(join(out, 'b.tar'), { tmpDir: spool });
  t.after(() => w2.close());
  await pushImage(w2, img, 'b');
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(w2.finalize({ signal: ac.signal }), isCode('ERR_ABORTED'));
  assert.deepEqual(await readdir(out), []);
});

test('containerd-style archives resolve by io.containerd.image.name too', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'ctr.tar');
  const img = await makeImage();
  const desc = {
    ...img.manifest.descriptor,
    annotations: { [ANNOTATION_IMAGE_NAME]: 'docker.io/library/app:2', [ANNOTATION_REF_NAME]: '2' },
  };
  await writeTar(file, [
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [desc] }) },
    ...img.blobs.map((b) => ({ name: `blobs/sha256/${encodedOf(b.descriptor.digest)}`, data: b.bytes })),
  ]);
  const r = await openOciArchive(file);
  t.after(() => r.close());
  assert.equal((await r.resolve('app:2')).digest, img.manifest.descriptor.digest);
  assert.equal((await r.resolve('docker.io/library/app:2')).digest, img.manifest.descriptor.digest);
  assert.equal((await r.resolve('2')).digest, img.manifest.descriptor.digest);
});

// ---- hostile archives ----

async function layoutMembers(): Promise<{
  members: RawMember[];
  img: Awaited<ReturnType<typeof makeImage>>;
}> {
  const img = await makeImage();
  const desc = { ...img.manifest.descriptor, annotations: { [ANNOTATION_REF_NAME]: 'x' } };
  return {
    img,
    members: [
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
      { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [desc] }) },
      ...img.blobs.map((b) => ({ name: `blobs/sha256/${encodedOf(b.descriptor.digest)}`, data: b.bytes })),
    ],
  };
}

async function hostileFile(
  t: { after: (fn: () => Promise<void>) => void },
  members: RawMember[],
): Promise<string> {
  const file = join(await tempDir(t), 'h.tar');
  await writeTar(file, members);
  return file;
}

test('hostile oci-archive: a member name with .. is ERR_INVALID_ARCHIVE', async (t) => {
  const { members } = await layoutMembers();
  const file = await hostileFile(t, [...members, { name: 'blobs/../../evil', data: 'x' }]);
  await assert.rejects(openOciArchive(file), isCode('ERR_INVALID_ARCHIVE'));
});

test('hostile oci-archive: no oci-layout, or an unknown layout version, is ERR_INVALID_ARCHIVE', async (t) => {
  const { members } = await layoutMembers();
  await assert.rejects(openOciArchive(await hostileFile(t, members.slice(1))), isCode('ERR_INVALID_ARCHIVE'));
  const v2 = [{ name: 'oci-layout', data: '{"imageLayoutVersion":"2.0.0"}' }, ...members.slice(1)];
  await assert.rejects(openOciArchive(await hostileFile(t, v2)), isCode('ERR_INVALID_ARCHIVE'));
});

test('hostile oci-archive: index.json not JSON / too large / naming a missing blob', async (t) => {
  const { members } = await layoutMembers();
  const layout = members[0]!;
  const blobs = members.slice(2);
  await assert.rejects(
    openOciArchive(await hostileFile(t, [layout, { name: 'index.json', data: '{nope' }, ...blobs])),
    isCode('ERR_INVALID_ARCHIVE'),
  );
  await assert.rejects(
    openOciArchive(
      await hostileFile(t, [
        layout,
        { name: 'index.json', data: Buffer.alloc(4 * 1024 * 1024 + 1, 0x20) },
        ...blobs,
      ]),
    ),
    isCode('ERR_TOO_LARGE'),
  );
  await assert.rejects(
    openOciArchive(await hostileFile(t, [layout, members[1]!])),
    (e) => isCode('ERR_INVALID_ARCHIVE')(e) && /not in the archive/.test(String(e)),
  );
  const manifestAsIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: digestBytes('{}'), size: 2 },
    layers: [],
  };
  await assert.rejects(
    openOciArchive(
      await hostileFile(t, [layout, { name: 'index.json', data: JSON.stringify(manifestAsIndex) }]),
    ),
    isCode('ERR_INVALID_ARCHIVE'),
  );
});

test('hostile oci-archive: a blob whose bytes do not match its name fails the fetch (ERR_DIGEST_MISMATCH)', async (t) => {
  const { members, img } = await layoutMembers();
  const cfgName = `blobs/sha256/${encodedOf(img.config.descriptor.digest)}`;
  const swapped = members.map((m) =>
    m.name === cfgName
      ? { name: m.name, data: Buffer.from(JSON.stringify({ evil: 1 }).padEnd(img.config.bytes.length)) }
      : m,
  );
  const r = await openOciArchive(await hostileFile(t, swapped));
  t.after(() => r.close());
  await assert.rejects(readStream(await r.fetch(img.config.descriptor)), isCode('ERR_DIGEST_MISMATCH'));
});

test('hostile oci-archive: a truncated tar is ERR_INVALID_ARCHIVE', async (t) => {
  const { members } = await layoutMembers();
  const file = await hostileFile(t, members);
  await truncate(file, (await stat(file)).size - 1500);
  await assert.rejects(openOciArchive(file), isCode('ERR_INVALID_ARCHIVE'));
});
