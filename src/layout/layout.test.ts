// Tests of the OCI layout Target: opening and validation, push/fetch/exists, atomicity,
// corruption on disk, tags, delete, hostile paths, stale locks and temp files.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import type { Digest } from '../digest/digest.js';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { MediaType } from '../spec/media-types.js';
import { isRefName } from '../spec/ref-name.js';
import { ANNOTATION_REF_NAME, type Descriptor } from '../spec/types.js';
import { blob, makeImage, makeIndex, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { LAYOUT_INDEX_LOCK, LAYOUT_TEMP_PREFIX, openLayout } from './layout.js';

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof StratumError, `want a StratumError, got ${String(e)}`);
  assert.equal(e.code, c, e.message);
  return true;
};

const read = (s: Readable) => readAll(s, 1 << 26);

/** A pid that surely belongs to no running process (a child that has exited). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  assert.ok(r.pid && r.pid > 0);
  return r.pid;
}

function chunked(bytes: Buffer, size = 7): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size));
  return Readable.from(parts);
}

async function rootEntries(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

describe('openLayout', () => {
  it('creates a layout that reopens, with oci-layout, index.json and blobs/sha256', async (t) => {
    const dir = join(await tempDir(t), 'new', 'layout');
    const l = await openLayout(dir, { create: true });
    assert.equal(l.dir, dir);
    assert.equal(l.description, `oci:${dir}`);
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8')), {
      imageLayoutVersion: '1.0.0',
    });
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    assert.deepEqual(index, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] });
    assert.deepEqual(await rootEntries(dir), ['blobs', 'index.json', 'oci-layout']);
    assert.deepEqual(await readdir(join(dir, 'blobs')), ['sha256']);
    assert.deepEqual(await (await openLayout(dir)).roots(), []);
  });

  it('a path the kernel will not create (under /proc) fails at once, not in an endless retry', {
    timeout: 10_000,
  }, async () => {
    // Node's recursive mkdir retries forever there
    await assert.rejects(openLayout('/proc/stratum-no-such/layout', { create: true }), { code: 'ENOENT' });
  });

  it('create keeps an existing layout and its tags', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const img = await makeImage();
    await pushImage(l, img, 'v1');
    const again = await openLayout(dir, { create: true });
    assert.equal((await again.resolve('v1')).digest, img.manifest.descriptor.digest);
  });

  it('a missing directory is ERR_NOT_FOUND; a directory without oci-layout is ERR_INVALID_LAYOUT', async (t) => {
    const dir = await tempDir(t);
    await assert.rejects(openLayout(join(dir, 'nope')), code('ERR_NOT_FOUND'));
    await assert.rejects(
      openLayout(dir),
      (e) => code('ERR_INVALID_LAYOUT')(e) && /oci-layout/.test(String(e)),
    );
    await writeFile(join(dir, 'file'), 'x');
    await assert.rejects(openLayout(join(dir, 'file')), code('ERR_INVALID_LAYOUT'));
  });

  it('rejects a bad oci-layout: wrong version, not JSON, not an object', async (t) => {
    for (const [content, why] of [
      ['{"imageLayoutVersion":"2.0.0"}', /2\.0\.0/],
      ['{"imageLayoutVersion":1}', /imageLayoutVersion/],
      ['{}', /imageLayoutVersion/],
      ['not json', /not JSON/],
      ['[]', /not a JSON object/],
    ] as const) {
      const dir = await tempDir(t);
      await writeFile(join(dir, 'oci-layout'), content);
      await writeFile(join(dir, 'index.json'), '{"schemaVersion":2,"manifests":[]}');
      await assert.rejects(openLayout(dir), (e) => code('ERR_INVALID_LAYOUT')(e) && why.test(String(e)));
      // create never overwrites what is there, nor adds to it
      await assert.rejects(openLayout(dir, { create: true }), code('ERR_INVALID_LAYOUT'));
      assert.deepEqual(await rootEntries(dir), ['index.json', 'oci-layout']);
    }
  });

  it('create refuses, untouched, a directory holding some other index.json', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'index.json'), '{"name":"a web project"}');
    await assert.rejects(openLayout(dir, { create: true }), code('ERR_INVALID_LAYOUT'));
    assert.deepEqual(await rootEntries(dir), ['index.json']);
  });

  it('rejects a bad index.json: missing, bad digest, bad size, wrong shape, wrong media type', async (t) => {
    const good = { mediaType: MediaType.OciManifest, digest: digestBytes('x'), size: 1 };
    const cases: [string | undefined, RegExp][] = [
      [undefined, /index\.json is missing/],
      ['{', /not JSON/],
      ['[]', /not a JSON object/],
      ['{"schemaVersion":1,"manifests":[]}', /schemaVersion/],
      ['{"schemaVersion":2}', /manifests/],
      [JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, manifests: [] }), /mediaType/],
      [
        JSON.stringify({ schemaVersion: 2, manifests: [{ ...good, digest: 'sha256:../../etc/passwd' }] }),
        /digest/,
      ],
      [
        JSON.stringify({ schemaVersion: 2, manifests: [{ ...good, digest: `sha256:${'A'.repeat(64)}` }] }),
        /digest/,
      ],
      [JSON.stringify({ schemaVersion: 2, manifests: [{ ...good, size: -1 }] }), /size/],
      [JSON.stringify({ schemaVersion: 2, manifests: [{ ...good, annotations: { a: 1 } }] }), /annotation/],
      [JSON.stringify({ schemaVersion: 2, manifests: ['x'] }), /manifests\[0\]/],
    ];
    for (const [content, why] of cases) {
      const dir = await tempDir(t);
      await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      if (content !== undefined) await writeFile(join(dir, 'index.json'), content);
      await assert.rejects(openLayout(dir), (e) => code('ERR_INVALID_LAYOUT')(e) && why.test(String(e)));
    }
  });

  it('refuses create together with readOnly, and writes to a read-only layout', async (t) => {
    const dir = await tempDir(t);
    await assert.rejects(openLayout(dir, { create: true, readOnly: true }), code('ERR_INVALID_ARGUMENT'));
    await openLayout(dir, { create: true });
    const ro = await openLayout(dir, { readOnly: true });
    const b = blob(MediaType.OciLayer, Buffer.from('x'));
    await assert.rejects(ro.push(b.descriptor, b.bytes), code('ERR_READ_ONLY'));
    await assert.rejects(ro.tag(b.descriptor, 'x'), code('ERR_READ_ONLY'));
    await assert.rejects(ro.untag('x'), code('ERR_READ_ONLY'));
    await assert.rejects(ro.delete(b.descriptor), code('ERR_READ_ONLY'));
  });
});

describe('LayoutTarget blobs', () => {
  it('round-trips blobs pushed as bytes and as streams, to blobs/<alg>/<hex>', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const a = blob(MediaType.OciLayer, Buffer.from('bytes content'));
    const big = Buffer.alloc(300_000, 'z');
    big.write('start');
    const b = blob(MediaType.OciLayer, big);
    assert.equal(await l.exists(a.descriptor), false);
    await l.push(a.descriptor, a.bytes);
    let progress = 0;
    await l.push(b.descriptor, chunked(b.bytes, 4096), { onProgress: (n) => (progress += n) });
    assert.equal(progress, big.length);
    for (const x of [a, b]) {
      assert.equal(await l.exists(x.descriptor), true);
      assert.deepEqual(await read(await l.fetch(x.descriptor)), x.bytes);
      const hex = x.descriptor.digest.slice('sha256:'.length);
      assert.deepEqual(await readFile(join(dir, 'blobs', 'sha256', hex)), x.bytes);
    }
    let fetched = 0;
    await read(await l.fetch(b.descriptor, { onProgress: (n) => (fetched += n) }));
    assert.equal(fetched, big.length);
    // exists is false when the size differs from the file's
    assert.equal(await l.exists({ ...a.descriptor, size: a.bytes.length + 1 }), false);
    assert.deepEqual(await rootEntries(dir), ['blobs', 'index.json', 'oci-layout']);
  });

  it('handles sha512 and empty blobs', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const bytes = Buffer.from('five hundred twelve');
    const d: Descriptor = {
      mediaType: MediaType.OciLayer,
      digest: digestBytes(bytes, 'sha512'),
      size: bytes.length,
    };
    await l.push(d, chunked(bytes));
    assert.deepEqual(await read(await l.fetch(d)), bytes);
    const empty = blob(MediaType.OciEmpty, Buffer.alloc(0));
    await l.push(empty.descriptor, Readable.from([]));
    assert.equal((await read(await l.fetch(empty.descriptor))).length, 0);
  });

  it('pushing what exists is a no-op that does not fail, even with bytes that would not verify', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const a = blob(MediaType.OciLayer, Buffer.from('same'));
    await l.push(a.descriptor, a.bytes);
    await l.push(a.descriptor, chunked(a.bytes));
    await l.push(a.descriptor, Buffer.from('nope'));
    assert.deepEqual(await read(await l.fetch(a.descriptor)), a.bytes);
  });

  it('a push with the wrong digest or size leaves no blob and no temp file', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const good = blob(MediaType.OciLayer, Buffer.from('the right bytes'));
    for (const [content, c] of [
      [Buffer.from('the wrong bytes'), 'ERR_DIGEST_MISMATCH'],
      [chunked(Buffer.from('the wrong bytes')), 'ERR_DIGEST_MISMATCH'],
      [chunked(Buffer.from('the right bytes, and more')), 'ERR_SIZE_MISMATCH'],
      [chunked(Buffer.from('short')), 'ERR_SIZE_MISMATCH'],
      [Buffer.from('short'), 'ERR_SIZE_MISMATCH'],
    ] as const) {
      await assert.rejects(l.push(good.descriptor, content), code(c));
      assert.equal(await l.exists(good.descriptor), false);
      assert.deepEqual(await rootEntries(dir), ['blobs', 'index.json', 'oci-layout']);
      assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), []);
    }
  });

  it('a source stream that fails, or an abort, leaves nothing', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const good = blob(MediaType.OciLayer, Buffer.alloc(100_000, 1));
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(1000, 1));
        this.destroy(new Error('connection reset'));
      },
    });
    await assert.rejects(l.push(good.descriptor, failing), /connection reset/);
    const ac = new AbortController();
    let sent = 0;
    const slow = new Readable({
      read() {
        sent++;
        if (sent === 3) ac.abort();
        if (sent < 10) setImmediate(() => this.push(Buffer.alloc(1000, 1)));
      },
    });
    await assert.rejects(l.push(good.descriptor, slow, { signal: ac.signal }), code('ERR_ABORTED'));
    await assert.rejects(l.push(good.descriptor, good.bytes, { signal: ac.signal }), code('ERR_ABORTED'));
    assert.deepEqual(await rootEntries(dir), ['blobs', 'index.json', 'oci-layout']);
    assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256')), []);
  });

  it('detects a corrupted or truncated blob on disk while fetching', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const a = blob(MediaType.OciLayer, Buffer.from('original content'));
    await l.push(a.descriptor, a.bytes);
    const path = l.blobPath(a.descriptor.digest);
    await writeFile(path, 'original CONTENT');
    await assert.rejects(l.fetch(a.descriptor).then(read), code('ERR_DIGEST_MISMATCH'));
    await writeFile(path, 'original');
    await assert.rejects(l.fetch(a.descriptor).then(read), code('ERR_SIZE_MISMATCH'));
    // a push repairs a blob whose size is wrong
    await l.push(a.descriptor, a.bytes);
    assert.deepEqual(await read(await l.fetch(a.descriptor)), a.bytes);
  });

  it('a missing blob is ERR_NOT_FOUND', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const a = blob(MediaType.OciLayer, Buffer.from('absent'));
    await assert.rejects(l.fetch(a.descriptor), code('ERR_NOT_FOUND'));
  });

  it('never builds a path from an unvalidated digest', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    for (const digest of ['sha256:../../../etc/passwd', 'md5:abc', `sha256:${'0'.repeat(63)}/`, '../x']) {
      const d = { mediaType: MediaType.OciLayer, digest: digest as Digest, size: 1 };
      const isDigestError = (e: unknown) =>
        e instanceof StratumError && ['ERR_INVALID_DIGEST', 'ERR_UNSUPPORTED_ALGORITHM'].includes(e.code);
      await assert.rejects(l.push(d, Buffer.from('x')), isDigestError);
      await assert.rejects(l.fetch(d), isDigestError);
      await assert.rejects(l.exists(d), isDigestError);
      assert.throws(() => l.blobPath(digest), isDigestError);
    }
  });

  it('refuses to write through a symlinked blobs directory, or to read a symlinked blob', async (t) => {
    const dir = await tempDir(t);
    const outside = await tempDir(t);
    await openLayout(dir, { create: true });
    await rm(join(dir, 'blobs', 'sha256'), { recursive: true });
    await symlink(outside, join(dir, 'blobs', 'sha256'));
    const l = await openLayout(dir);
    const a = blob(MediaType.OciLayer, Buffer.from('x'));
    await assert.rejects(l.push(a.descriptor, a.bytes), code('ERR_UNSAFE_PATH'));
    assert.deepEqual(await readdir(outside), []);

    const dir2 = await tempDir(t);
    const l2 = await openLayout(dir2, { create: true });
    await writeFile(join(outside, 'target'), a.bytes);
    await symlink(join(outside, 'target'), l2.blobPath(a.descriptor.digest));
    await assert.rejects(l2.fetch(a.descriptor), code('ERR_UNSAFE_PATH'));
  });

  it('delete removes the blob and index entries pointing at it', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const img = await makeImage();
    await pushImage(l, img, 'v1');
    await l.delete(img.manifest.descriptor);
    assert.equal(await l.exists(img.manifest.descriptor), false);
    assert.deepEqual(await l.roots(), []);
    await l.delete(img.layers[0]?.descriptor as Descriptor);
    await assert.rejects(l.delete(img.layers[0]?.descriptor as Descriptor), code('ERR_NOT_FOUND'));
  });
});

describe('LayoutTarget tags', () => {
  it('tags, resolves by name, digest and "", and lists tags and roots', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const a = await makeImage({ layers: [[{ path: 'a', content: 'a' }]] });
    const b = await makeImage({ layers: [[{ path: 'b', content: 'b' }]] });
    await pushImage(l, a, 'docker.io/library/a:latest');
    assert.equal((await l.resolve('')).digest, a.manifest.descriptor.digest);
    await pushImage(l, b, '127.0.0.1:5000/b:1');
    await assert.rejects(l.resolve(''), (e) => code('ERR_NOT_FOUND')(e) && /holds 2 images/.test(String(e)));
    const ra = await l.resolve('docker.io/library/a:latest');
    assert.deepEqual(ra, a.manifest.descriptor); // the ref name annotation is not part of the answer
    assert.deepEqual(await l.resolve(b.manifest.descriptor.digest), b.manifest.descriptor);
    await assert.rejects(l.resolve('missing'), code('ERR_NOT_FOUND'));
    await assert.rejects(l.resolve('bad name!'), code('ERR_INVALID_REFERENCE'));
    await assert.rejects(l.resolve('sha256:123'), code('ERR_INVALID_DIGEST'));
    await l.tag(a.manifest.descriptor, 'x/alias');
    const tags: string[] = [];
    for await (const tag of l.tags()) tags.push(tag);
    assert.deepEqual(tags, ['127.0.0.1:5000/b:1', 'docker.io/library/a:latest', 'x/alias']);
    const page: string[] = [];
    for await (const tag of l.tags({ last: '127.0.0.1:5000/b:1', n: 1 })) page.push(tag);
    assert.deepEqual(page, ['docker.io/library/a:latest']);
    const roots = await l.roots();
    assert.deepEqual(
      roots.map((r) => [r.ref, r.descriptor.digest]),
      [
        ['docker.io/library/a:latest', a.manifest.descriptor.digest],
        ['127.0.0.1:5000/b:1', b.manifest.descriptor.digest],
        ['x/alias', a.manifest.descriptor.digest],
      ],
    );
    const raw = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    assert.equal(raw.manifests[0].annotations[ANNOTATION_REF_NAME], 'docker.io/library/a:latest');
  });

  it('resolves a digest that is a manifest blob but not in index.json; not a layer', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const amd = await makeImage({ platform: { os: 'linux', architecture: 'amd64' } });
    const index = makeIndex([{ image: amd, platform: { os: 'linux', architecture: 'amd64' } }]);
    await pushImage(l, amd);
    await l.push(index.descriptor, index.bytes);
    await l.tag(index.descriptor, 'multi');
    const child = await l.resolve(amd.manifest.descriptor.digest);
    assert.deepEqual(child, {
      mediaType: MediaType.OciManifest,
      digest: amd.manifest.descriptor.digest,
      size: amd.manifest.descriptor.size,
    });
    await assert.rejects(l.resolve(amd.layers[0]?.descriptor.digest ?? ''), code('ERR_NOT_FOUND'));
    await assert.rejects(l.resolve(digestBytes('absent')), code('ERR_NOT_FOUND'));
  });

  it('retagging replaces the entry in place and keeps unrelated entries, annotations and fields', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const a = await makeImage({ layers: [[{ path: 'a', content: 'a' }]] });
    const b = await makeImage({ layers: [[{ path: 'b', content: 'b' }]] });
    await pushImage(l, a);
    await pushImage(l, b);
    // an index.json written by another tool, with fields we do not know
    const foreign = {
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [
        {
          ...a.manifest.descriptor,
          annotations: { [ANNOTATION_REF_NAME]: 'v1', 'org.example.keep': 'yes' },
          'x-unknown': 1,
        },
        { ...b.manifest.descriptor, annotations: { [ANNOTATION_REF_NAME]: 'other' } },
      ],
      annotations: { 'org.example.index': 'kept' },
    };
    await writeFile(join(dir, 'index.json'), JSON.stringify(foreign));
    await l.tag(b.manifest.descriptor, 'v1');
    await l.tag(a.manifest.descriptor, 'third');
    const raw = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    assert.deepEqual(raw.annotations, { 'org.example.index': 'kept' });
    assert.equal(raw.manifests.length, 3);
    assert.deepEqual(raw.manifests[0], {
      ...b.manifest.descriptor,
      annotations: { [ANNOTATION_REF_NAME]: 'v1' },
    });
    assert.deepEqual(raw.manifests[1], foreign.manifests[1]);
    assert.equal(raw.manifests[2].annotations[ANNOTATION_REF_NAME], 'third');
    assert.equal((await l.resolve('v1')).digest, b.manifest.descriptor.digest);
    // the annotations of a descriptor being tagged are kept
    await l.tag({ ...a.manifest.descriptor, annotations: { 'org.example.d': '1' } }, 'annotated');
    assert.deepEqual((await l.resolve('annotated')).annotations, { 'org.example.d': '1' });
  });

  it('a digest "tag" records an unnamed root, which a later name absorbs', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const a = await makeImage();
    await pushImage(l, a);
    await l.tag(a.manifest.descriptor, a.manifest.descriptor.digest);
    await l.tag(a.manifest.descriptor, a.manifest.descriptor.digest);
    assert.deepEqual(await l.roots(), [{ ref: undefined, descriptor: a.manifest.descriptor }]);
    await l.tag(a.manifest.descriptor, 'named');
    assert.deepEqual(await l.roots(), [{ ref: 'named', descriptor: a.manifest.descriptor }]);
    await assert.rejects(l.tag(a.manifest.descriptor, digestBytes('other')), code('ERR_INVALID_ARGUMENT'));
  });

  it('untag removes a name (blobs stay); untag by digest removes every entry for it', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const a = await makeImage();
    await pushImage(l, a, 'one');
    await l.tag(a.manifest.descriptor, 'two');
    const removed = await l.untag('one');
    assert.deepEqual(
      removed.map((r) => r.ref),
      ['one'],
    );
    assert.equal(await l.exists(a.manifest.descriptor), true);
    await assert.rejects(l.untag('one'), code('ERR_NOT_FOUND'));
    await l.tag(a.manifest.descriptor, 'three');
    assert.equal((await l.untag(a.manifest.descriptor.digest)).length, 2);
    assert.deepEqual(await l.roots(), []);
  });

  it('refuses to tag what is absent, what is not a manifest, and bad names', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const a = await makeImage();
    await assert.rejects(l.tag(a.manifest.descriptor, 'v1'), code('ERR_NOT_FOUND'));
    await pushImage(l, a);
    await assert.rejects(
      l.tag(a.layers[0]?.descriptor as Descriptor, 'v1'),
      code('ERR_UNSUPPORTED_MEDIA_TYPE'),
    );
    for (const bad of ['', 'a b', '../x', '/abs', 'a//b', 'x/', '-lead', 'a\nb', 'ü', 'a'.repeat(1025)]) {
      await assert.rejects(
        l.tag(a.manifest.descriptor, bad),
        code('ERR_INVALID_REFERENCE'),
        JSON.stringify(bad),
      );
    }
    assert.deepEqual(await l.roots(), []);
  });

  it('a stale index lock left by a dead process does not block a tag', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const a = await makeImage();
    await pushImage(l, a);
    await writeFile(join(dir, LAYOUT_INDEX_LOCK), String(deadPid()));
    await l.tag(a.manifest.descriptor, 'v1');
    assert.equal((await l.resolve('v1')).digest, a.manifest.descriptor.digest);
    assert.deepEqual(await rootEntries(dir), ['blobs', 'index.json', 'oci-layout']);
  });

  it('concurrent tags within one process all land', async (t) => {
    const l = await openLayout(await tempDir(t), { create: true });
    const a = await makeImage();
    await pushImage(l, a);
    await Promise.all(Array.from({ length: 25 }, (_, i) => l.tag(a.manifest.descriptor, `t${i}`)));
    assert.equal((await l.roots()).length, 25);
  });
});

describe('LayoutTarget housekeeping', () => {
  it('cleanTemp removes temp files of dead processes only', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const dead = deadPid();
    await writeFile(join(dir, `${LAYOUT_TEMP_PREFIX}${dead}-abc`), 'partial');
    await writeFile(join(dir, `.tmp-${dead}-abc`), 'partial');
    await writeFile(join(dir, `${LAYOUT_TEMP_PREFIX}${process.pid}-abc`), 'mine, in progress');
    await writeFile(join(dir, `${LAYOUT_TEMP_PREFIX}notapid`), 'not ours');
    await mkdir(join(dir, `${LAYOUT_TEMP_PREFIX}${dead}-dir`));
    assert.equal(await l.cleanTemp(), 2);
    assert.deepEqual(
      await rootEntries(dir),
      [
        `${LAYOUT_TEMP_PREFIX}${dead}-dir`,
        `${LAYOUT_TEMP_PREFIX}${process.pid}-abc`,
        `${LAYOUT_TEMP_PREFIX}notapid`,
        'blobs',
        'index.json',
        'oci-layout',
      ].sort(),
    );
  });

  it('listBlobs lists valid digests only, with sizes', async (t) => {
    const dir = await tempDir(t);
    const l = await openLayout(dir, { create: true });
    const a = blob(MediaType.OciLayer, Buffer.from('abc'));
    await l.push(a.descriptor, a.bytes);
    await writeFile(join(dir, 'blobs', 'sha256', 'not-a-digest'), 'x');
    await mkdir(join(dir, 'blobs', 'md5'));
    assert.deepEqual(await l.listBlobs(), [{ digest: a.descriptor.digest, size: 3 }]);
  });
});

describe('ref names', () => {
  it('follow the image-spec grammar', () => {
    for (const ok of [
      'latest',
      'v1.0.0-vendor.0',
      'docker.io/library/busybox:latest',
      '127.0.0.1:5000/app:1',
      `docker.io/library/busybox@sha256:${'a'.repeat(64)}`,
      'a--b',
      'a+b',
    ]) {
      assert.equal(isRefName(ok), true, ok);
    }
    for (const bad of ['', 'a---b', 'a..b', '.a', 'a.', 'a//b', 'a b', 'a\u0000', 'a/', '/a', 'ä']) {
      assert.equal(isRefName(bad), false, JSON.stringify(bad));
    }
  });
});
