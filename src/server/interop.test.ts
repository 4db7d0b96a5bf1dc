// `stratum serve` with real clients: skopeo pushes to it and pulls from it (gzip layers,
// zstd layers, a multi-arch index with --all, an artifact with a `subject`), and stratum's
// own client does the same (copyImage between layouts and the server, mounts between its
// repositories, the referrers API). The oracle is the digest: what comes back out must be
// byte for byte what went in.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { digestBytes } from '../digest/digest.js';
import { openLayout } from '../layout/layout.js';
import { copyImage } from '../ops/copy-image.js';
import { RegistryClient } from '../registry/client.js';
import { RegistryTarget } from '../registry/target.js';
import { MediaType } from '../spec/media-types.js';
import { blob, makeImage, makeIndex, pushImage, type TestBlob, type TestImage } from '../testing/images.js';
import { rawRequest, startServer, type TestServer } from '../testing/serve.js';
import { makeTempDir } from '../testing/tmp.js';

const exec = promisify(execFile);
const skip = existsSync('/usr/bin/skopeo') ? false : 'skopeo is not installed (apt-get install skopeo)';

let srv: TestServer;
let work: { path: string; cleanup: () => Promise<void> };
let client: RegistryClient;
let dirs = 0;

async function skopeo(...args: string[]): Promise<string> {
  const { stdout } = await exec('skopeo', args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** A fresh OCI layout with `img` tagged `ref`. */
async function layoutWith(img: TestImage, ref: string): Promise<string> {
  const dir = join(work.path, `src-${++dirs}`);
  const l = await openLayout(dir, { create: true });
  await pushImage(l, img, ref);
  return dir;
}

async function manifestOf(
  name: string,
  ref: string,
): Promise<{ digest: string; type: string; body: Buffer }> {
  const r = await rawRequest(srv.url, 'GET', `/v2/${name}/manifests/${ref}`);
  assert.equal(r.status, 200, `${name}:${ref}: ${r.body.toString()}`);
  return {
    digest: r.headers['docker-content-digest'] as string,
    type: r.headers['content-type'] as string,
    body: r.body,
  };
}

function artifactFor(
  subject: TestBlob['descriptor'],
  note: string,
): { manifest: TestBlob; blobs: TestBlob[] } {
  const empty = blob(MediaType.OciEmpty, Buffer.from('{}'));
  const sbom = blob(
    'application/spdx+json',
    Buffer.from(JSON.stringify({ spdxVersion: 'SPDX-2.3', name: note })),
  );
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: 'application/vnd.example.sbom.v1',
    config: empty.descriptor,
    layers: [sbom.descriptor],
    subject,
    annotations: { 'org.example.note': note },
  };
  return { manifest: blob(MediaType.OciManifest, Buffer.from(JSON.stringify(doc))), blobs: [empty, sbom] };
}

before(async () => {
  srv = await startServer();
  work = await makeTempDir('stratum-serve-interop-');
  client = new RegistryClient({ backoff: { initialMs: 1, maxMs: 5 } });
});
after(async () => {
  await client?.close();
  await srv?.stop();
  await work?.cleanup();
});

describe('skopeo against stratum serve', { skip }, () => {
  it('pushes and pulls a gzip image, byte for byte', async () => {
    const img = await makeImage({
      layers: [
        [{ path: 'etc/os-release', content: 'ID=test\n' }],
        [{ path: 'bin/tool', content: 'x'.repeat(100_000) }],
      ],
    });
    const src = await layoutWith(img, 'v1');
    await skopeo('copy', '--dest-tls-verify=false', `oci:${src}:v1`, `docker://${srv.host}/interop/gzip:1`);
    const m = await manifestOf('interop/gzip', '1');
    assert.equal(m.digest, img.manifest.descriptor.digest);
    const inspect = JSON.parse(
      await skopeo('inspect', '--tls-verify=false', `docker://${srv.host}/interop/gzip:1`),
    ) as {
      Digest: string;
      Layers: string[];
    };
    assert.equal(inspect.Digest, img.manifest.descriptor.digest);
    assert.deepEqual(
      inspect.Layers,
      img.layers.map((l) => l.descriptor.digest),
    );
    const out = join(work.path, 'gzip-out');
    await skopeo('copy', '--src-tls-verify=false', `docker://${srv.host}/interop/gzip:1`, `oci:${out}:x`);
    assert.equal((await (await openLayout(out)).resolve('x')).digest, img.manifest.descriptor.digest);
    // the store names it the way `stratum images` shows it
    assert.equal(
      (await srv.store.resolve('docker.io/interop/gzip:1')).digest,
      img.manifest.descriptor.digest,
    );
  });

  it('pushes zstd layers (skopeo recompresses) and pulls them back unchanged', async () => {
    const img = await makeImage({ layers: [[{ path: 'z/file', content: 'zstd '.repeat(10_000) }]] });
    const src = await layoutWith(img, 'v1');
    await skopeo(
      'copy',
      '--dest-tls-verify=false',
      '--dest-compress',
      '--dest-compress-format',
      'zstd',
      `oci:${src}:v1`,
      `docker://${srv.host}/interop/zstd:1`,
    );
    const m = await manifestOf('interop/zstd', '1');
    const doc = JSON.parse(m.body.toString()) as { layers: { mediaType: string }[] };
    assert.deepEqual(
      doc.layers.map((l) => l.mediaType),
      [MediaType.OciLayerZstd],
    );
    const out = join(work.path, 'zstd-out');
    await skopeo('copy', '--src-tls-verify=false', `docker://${srv.host}/interop/zstd:1`, `oci:${out}:x`);
    assert.equal((await (await openLayout(out)).resolve('x')).digest, m.digest);
    assert.deepEqual(await srv.store.verify(), []);
  });

  it('copies a multi-arch index with --all, both ways', async () => {
    const amd = await makeImage({ platform: { os: 'linux', architecture: 'amd64' } });
    const arm = await makeImage({
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
      layers: [[{ path: 'arm', content: 'arm64' }]],
    });
    const index = makeIndex([
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ]);
    const dir = join(work.path, 'multi-src');
    const l = await openLayout(dir, { create: true });
    await pushImage(l, amd);
    await pushImage(l, arm);
    await l.push(index.descriptor, index.bytes);
    await l.tag(index.descriptor, 'multi');
    await skopeo(
      'copy',
      '--all',
      '--dest-tls-verify=false',
      `oci:${dir}:multi`,
      `docker://${srv.host}/interop/multi:1`,
    );
    const m = await manifestOf('interop/multi', '1');
    assert.equal(m.digest, index.descriptor.digest);
    assert.equal(m.type, MediaType.OciIndex);
    for (const child of [amd, arm]) {
      assert.equal(
        (await manifestOf('interop/multi', child.manifest.descriptor.digest)).digest,
        child.manifest.descriptor.digest,
      );
    }
    const out = join(work.path, 'multi-out');
    await skopeo(
      'copy',
      '--all',
      '--src-tls-verify=false',
      `docker://${srv.host}/interop/multi:1`,
      `oci:${out}:x`,
    );
    assert.equal((await (await openLayout(out)).resolve('x')).digest, index.descriptor.digest);
    const raw = await skopeo(
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${srv.host}/interop/multi:1`,
    );
    assert.equal(digestBytes(Buffer.from(raw)), index.descriptor.digest);
  });

  it('pushes an artifact with a subject; the referrers API lists it and skopeo pulls it back', async () => {
    const img = await makeImage({ annotations: { 'org.example.which': 'subject-of-skopeo-artifact' } });
    const art = artifactFor(img.manifest.descriptor, 'skopeo');
    const dir = join(work.path, 'artifact-src');
    const l = await openLayout(dir, { create: true });
    await pushImage(l, img, 'img');
    for (const b of [...art.blobs, art.manifest]) await l.push(b.descriptor, b.bytes);
    await l.tag(art.manifest.descriptor, 'sbom');
    await skopeo('copy', '--dest-tls-verify=false', `oci:${dir}:img`, `docker://${srv.host}/interop/art:img`);
    await skopeo(
      'copy',
      '--dest-tls-verify=false',
      `oci:${dir}:sbom`,
      `docker://${srv.host}/interop/art:sbom`,
    );
    assert.equal((await manifestOf('interop/art', 'sbom')).digest, art.manifest.descriptor.digest);
    const r = await rawRequest(srv.url, 'GET', `/v2/interop/art/referrers/${img.manifest.descriptor.digest}`);
    const list = r.json() as {
      manifests: { digest: string; artifactType: string; annotations: Record<string, string> }[];
    };
    assert.deepEqual(
      list.manifests.map((m) => [m.digest, m.artifactType, m.annotations['org.example.note']]),
      [[art.manifest.descriptor.digest, 'application/vnd.example.sbom.v1', 'skopeo']],
    );
    const out = join(work.path, 'artifact-out');
    await skopeo('copy', '--src-tls-verify=false', `docker://${srv.host}/interop/art:sbom`, `oci:${out}:x`);
    assert.equal((await (await openLayout(out)).resolve('x')).digest, art.manifest.descriptor.digest);
  });
});

describe("stratum's client against stratum serve", () => {
  it('copyImage pushes from a layout and pulls back into another, same digests', async () => {
    const img = await makeImage({
      layers: [[{ path: 'a', content: 'client' }], [{ path: 'b', content: 'y'.repeat(300_000) }]],
    });
    const src = await layoutWith(img, 'v1');
    const up = await copyImage(`oci:${src}:v1`, `docker://${srv.host}/client/app:1`);
    assert.equal(up.descriptor.digest, img.manifest.descriptor.digest);
    assert.equal(up.stats.copied, 3); // config and two layers (stats count blobs)
    const out = join(work.path, 'client-out');
    const down = await copyImage(`docker://${srv.host}/client/app:1`, `oci:${out}:x`);
    assert.equal(down.descriptor.digest, img.manifest.descriptor.digest);
    // again: everything is there already
    const again = await copyImage(`oci:${src}:v1`, `docker://${srv.host}/client/app:1`);
    assert.equal(again.stats.copied, 0);
  });

  it('copyImage between two repositories of the server mounts instead of copying', async () => {
    const img = await makeImage({ layers: [[{ path: 'mount', content: 'me' }]] });
    await copyImage(`oci:${await layoutWith(img, 'v1')}:v1`, `docker://${srv.host}/client/from:1`);
    const r = await copyImage(`docker://${srv.host}/client/from:1`, `docker://${srv.host}/client/to:1`);
    assert.equal(r.descriptor.digest, img.manifest.descriptor.digest);
    assert.equal(r.stats.copied, 0);
    assert.ok(r.stats.mounted + r.stats.skipped >= 2, JSON.stringify(r.stats));
  });

  it('copies an index with all platforms, and finds a referrer through RegistryTarget', async () => {
    const amd = await makeImage({
      platform: { os: 'linux', architecture: 'amd64' },
      layers: [[{ path: 'c', content: 'amd' }]],
    });
    const arm = await makeImage({
      platform: { os: 'linux', architecture: 'arm64' },
      layers: [[{ path: 'c', content: 'arm' }]],
    });
    const index = makeIndex([
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    const dir = join(work.path, 'client-multi');
    const l = await openLayout(dir, { create: true });
    await pushImage(l, amd);
    await pushImage(l, arm);
    await l.push(index.descriptor, index.bytes);
    await l.tag(index.descriptor, 'm');
    const r = await copyImage(`oci:${dir}:m`, `docker://${srv.host}/client/multi:1`, { all: true });
    assert.equal(r.descriptor.digest, index.descriptor.digest);
    const t = new RegistryTarget(client, srv.host, 'client/multi');
    const art = artifactFor(index.descriptor, 'client');
    for (const b of [...art.blobs, art.manifest]) await t.push(b.descriptor, b.bytes);
    const refs = await t.referrers(index.descriptor);
    assert.deepEqual(
      refs.map((d) => d.digest),
      [art.manifest.descriptor.digest],
    );
    assert.deepEqual(await t.referrers(index.descriptor, { artifactType: 'application/other' }), []);
    // the server indexed it, so the client did not write a referrers tag
    const tags: string[] = [];
    for await (const tag of t.tags()) tags.push(tag);
    assert.deepEqual(tags, ['1']);
  });
});
