// buildImage with a real registry (docker-registry): a base image missing from the store is
// pulled, the result is pushed with `push`, and skopeo sees the same digest.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isStratumError } from '../errors/errors.js';
import { openStore } from '../layout/store.js';
import { makeImage, pushImage } from '../testing/images.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../testing/registry.js';
import { tempDir } from '../testing/tmp.js';
import { buildImage, storeTagNames } from './build.js';
import { copyImage } from './copy-image.js';

const exec = promisify(execFile);

const skip =
  process.geteuid?.() !== 0
    ? 'builds mount overlays and run runc: they need root'
    : !registryAvailable()
      ? 'docker-registry is missing (apt-get install docker-registry)'
      : !existsSync('/bin/busybox')
        ? '/bin/busybox is missing'
        : undefined;

describe('buildImage', () => {
  it('store tag names are normalised; other transports and digests are refused', () => {
    assert.deepEqual(storeTagNames(['app', 'app:1', 'host:5000/x/app:2']), [
      'docker.io/library/app:latest',
      'docker.io/library/app:1',
      'host:5000/x/app:2',
    ]);
    for (const bad of ['docker://host/app:1', 'oci:/tmp/x:1', `app@sha256:${'a'.repeat(64)}`]) {
      assert.throws(
        () => storeTagNames([bad]),
        (e: unknown) => isStratumError(e) && e.code === 'ERR_INVALID_ARGUMENT',
      );
    }
  });
});

describe('buildImage with a registry', { skip }, () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry();
  });
  after(async () => {
    await registry?.stop();
  });

  it('pulls a missing base image, builds, tags and pushes', async (t) => {
    const dir = await tempDir(t, 'stratum-ops-build-');
    // the base image, pushed to the registry from a scratch store
    const seed = await openStore({ root: join(dir, 'seed') });
    const image = await makeImage({
      layers: [
        [
          { path: 'bin/', type: 'directory' },
          { path: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
          { path: 'bin/sh', type: 'symlink', linkname: 'busybox' },
          { path: 'bin/echo', type: 'symlink', linkname: 'busybox' },
        ],
      ],
    });
    await pushImage(seed, image, 'docker.io/library/seed:1');
    await seed.close();
    const base = `${registry.host}/base/busybox:1`;
    await copyImage('seed:1', `docker://${base}`, { root: join(dir, 'seed') });

    const ctx = join(dir, 'ctx');
    await mkdir(ctx);
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${base}\nRUN echo built > /built\n`);
    const root = join(dir, 'store');
    const pulled: string[] = [];
    const r = await buildImage(ctx, {
      root,
      tags: ['app:1'],
      push: `docker://${registry.host}/app:1`,
      onEvent: (e) => {
        if (e.type === 'pull') pulled.push(e.ref);
      },
    });
    assert.deepEqual(pulled, [base]);
    assert.deepEqual(r.tags, ['docker.io/library/app:1']);
    assert.equal(r.pushed?.descriptor.digest, r.manifest.digest);
    const { stdout } = await exec('skopeo', [
      'inspect',
      '--tls-verify=false',
      `docker://${registry.host}/app:1`,
    ]);
    assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, r.manifest.digest);

    // without pulling, a missing base image is an error that says what to do
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${registry.host}/base/missing:1\n`);
    await assert.rejects(buildImage(ctx, { root, pull: false }), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_NOT_FOUND');
      assert.match(e.message, /Dockerfile:1: base image .* is not in the store \(stratum pull/);
      return true;
    });
  });
});
