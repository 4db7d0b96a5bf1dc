// End-to-end: stratum's copy/pull/push against Debian's docker-registry, with skopeo and
// umoci as oracles (they must read what we write, and we what they write), the CLI's exit
// codes and messages, credentials, faults through a proxy, and two processes pulling into
// one store at once.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { openLayout } from '../layout/layout.js';
import { openStore } from '../layout/store.js';
import { STRATUM_BIN as CLI } from '../testing/cli.js';
import { startFaultProxy } from '../testing/fault-proxy.js';
import { type FileSpec, makeImage, makeTar, pushImage } from '../testing/images.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../testing/registry.js';
import { makeTempDir, tempDir } from '../testing/tmp.js';
import { copyImage, pull, push } from './copy-image.js';
import { importTarball } from './import.js';

const exec = promisify(execFile);
const haveTools = registryAvailable() && existsSync('/usr/bin/skopeo');
const skipReason = haveTools ? false : 'needs docker-registry and skopeo (scripts/setup.sh installs them)';

function cli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function skopeoDigest(location: string): Promise<string> {
  const { stdout } = await exec('skopeo', ['inspect', '--tls-verify=false', location]);
  return (JSON.parse(stdout) as { Digest: string }).Digest;
}

describe('interop with docker-registry, skopeo and umoci', { skip: skipReason }, () => {
  let registry: TestRegistry;
  let work: { path: string; cleanup: () => Promise<void> };
  before(async () => {
    registry = await startRegistry();
    work = await makeTempDir('stratum-interop-');
  });
  after(async () => {
    await registry?.stop();
    await work?.cleanup();
  });

  async function seedStore(
    root: string,
    ref: string,
    files: readonly FileSpec[] = [{ path: 'etc/hello', content: 'hello\n' }],
  ) {
    const tar = await makeTar(files);
    const store = await openStore({ root });
    try {
      const { Readable } = await import('node:stream');
      return await importTarball(Readable.from([tar]), store, ref, { config: { Cmd: ['/bin/sh'] } });
    } finally {
      await store.close();
    }
  }

  it('stratum push, then skopeo reads the same manifest digest', async () => {
    const root = join(work.path, 'push-store');
    const desc = await seedStore(root, 'docker.io/library/app:1');
    const r = await push('app:1', `docker://${registry.host}/app:1`, { root });
    assert.equal(r.descriptor.digest, desc.digest);
    assert.equal(await skopeoDigest(`docker://${registry.host}/app:1`), desc.digest);
    const dir = join(work.path, 'skopeo-out');
    await exec('skopeo', [
      'copy',
      '--src-tls-verify=false',
      `docker://${registry.host}/app:1`,
      `oci:${dir}:app`,
    ]);
    const layout = await openLayout(dir);
    assert.equal((await layout.resolve('app')).digest, desc.digest);
  });

  it('skopeo push, then stratum pull gets the same digest, in docker and oci formats', async () => {
    const src = join(work.path, 'skopeo-src');
    const layout = await openLayout(src, { create: true });
    const img = await makeImage({ layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }]] });
    await pushImage(layout, img, 'v1');
    for (const format of ['v2s2', 'oci']) {
      const dest = `docker://${registry.host}/from-skopeo/${format}:1`;
      await exec('skopeo', ['copy', '--dest-tls-verify=false', '--format', format, `oci:${src}:v1`, dest]);
      const want = await skopeoDigest(dest);
      const root = join(work.path, `pull-${format}`);
      const r = await pull(`${registry.host}/from-skopeo/${format}:1`, { root });
      assert.equal(r.descriptor.digest, want, format);
      const store = await openStore({ root });
      assert.equal((await store.resolve(`${registry.host}/from-skopeo/${format}:1`)).digest, want);
      assert.deepEqual(await store.verify(), []);
      await store.close();
    }
  });

  it('layouts and archives stratum writes are read by skopeo and unpacked by umoci', async (t) => {
    const root = join(work.path, 'write-store');
    const desc = await seedStore(root, 'docker.io/library/tool:2', [
      { path: 'bin/', type: 'directory' },
      { path: 'bin/tool', content: '#!/bin/sh\necho tool\n', mode: 0o755 },
    ]);
    const dir = join(work.path, 'ours-oci');
    await copyImage('tool:2', `oci:${dir}:t`, { root });
    assert.equal(await skopeoDigest(`oci:${dir}:t`), desc.digest);
    if (process.getuid?.() === 0 && existsSync('/usr/bin/umoci')) {
      const bundle = join(await tempDir(t), 'bundle');
      await exec('umoci', ['unpack', '--image', `${dir}:t`, bundle]);
      assert.equal(await readFile(join(bundle, 'rootfs', 'bin', 'tool'), 'utf8'), '#!/bin/sh\necho tool\n');
    }
    const darchive = join(work.path, 'tool.tar');
    await copyImage('tool:2', `docker-archive:${darchive}:tool:2`, { root });
    const { stdout } = await exec('skopeo', ['inspect', `docker-archive:${darchive}:tool:2`]);
    assert.equal((JSON.parse(stdout) as { Layers: string[] }).Layers.length, 1);
    const oarchive = join(work.path, 'tool-oci.tar');
    await copyImage('tool:2', `oci-archive:${oarchive}:t`, { root });
    assert.equal(await skopeoDigest(`oci-archive:${oarchive}:t`), desc.digest);
  });

  it("reads skopeo's docker archive with several RepoTags, and its layouts", async () => {
    const src = join(work.path, 'multi-src');
    const layout = await openLayout(src, { create: true });
    const img = await makeImage();
    await pushImage(layout, img, 'v1');
    const archive = join(work.path, 'multi.tar');
    await exec('skopeo', [
      'copy',
      '--additional-tag',
      'other:2',
      `oci:${src}:v1`,
      `docker-archive:${archive}:first:1`,
    ]);
    const root = join(work.path, 'multi-store');
    const a = await copyImage(`docker-archive:${archive}:other:2`, 'other:2', { root });
    const b = await copyImage(`docker-archive:${archive}:first:1`, 'first:1', { root });
    assert.equal(a.descriptor.digest, b.descriptor.digest);
    const store = await openStore({ root });
    const { fetchManifest } = await import('../image/image.js');
    const { document } = await fetchManifest(store, await store.resolve('docker.io/library/first:1'));
    assert.equal(
      document.kind === 'manifest' && document.manifest.config.digest,
      img.config.descriptor.digest,
    );
    await store.close();
  });

  it('copies within one registry by mounting blobs, not uploading them', async () => {
    const src = join(work.path, 'mount-src');
    const layout = await openLayout(src, { create: true });
    const img = await makeImage({
      layers: [[{ path: 'm1', content: 'm1' }], [{ path: 'm2', content: 'm2' }]],
    });
    await pushImage(layout, img, 'v1');
    await copyImage(`oci:${src}:v1`, `docker://${registry.host}/mount/a:1`);
    const r = await copyImage(`docker://${registry.host}/mount/a:1`, `docker://${registry.host}/mount/b:1`);
    assert.deepEqual({ mounted: r.stats.mounted, copied: r.stats.copied }, { mounted: 3, copied: 0 });
    assert.equal(await skopeoDigest(`docker://${registry.host}/mount/b:1`), img.manifest.descriptor.digest);
  });

  it('Ctrl-C during a pull exits 130 and leaves no tag and no temp file', async () => {
    const src = join(work.path, 'sigint-src');
    const layout = await openLayout(src, { create: true });
    const img = await makeImage({
      layers: [[{ path: 'x', content: Buffer.alloc(2 * 1024 * 1024, 1) }]],
      compression: 'none',
    });
    await pushImage(layout, img, 'v1');
    await copyImage(`oci:${src}:v1`, `docker://${registry.host}/sigint:1`);
    // a proxy that sends the first MiB of the layer and then stalls
    const proxy = await startFaultProxy(registry.url, [
      {
        method: 'GET',
        path: new RegExp(img.layers[0]!.descriptor.digest),
        action: { kind: 'stall', afterBytes: 1024 * 1024 },
      },
    ]);
    const root = join(work.path, 'sigint-store');
    try {
      const child = spawn(process.execPath, [CLI, 'pull', '--json', `${proxy.host}/sigint:1`], {
        env: { ...process.env, STRATUM_ROOT: root },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      const started = new Promise<void>((resolve) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d;
          if (out.includes('"blob-start"') && out.includes(img.layers[0]!.descriptor.digest)) resolve();
        });
      });
      await started;
      child.kill('SIGINT');
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 130);
      const store = await openStore({ root });
      assert.deepEqual(await store.roots(), []);
      assert.equal(await store.exists(img.layers[0]!.descriptor), false);
      const leftovers = (await readdir(root)).filter((n) => n.includes('tmp'));
      assert.deepEqual(leftovers, []);
      await store.close();
    } finally {
      await proxy.stop();
    }
  });

  it('CLI: --json result, exit codes, and errors that name the side', async () => {
    const root = join(work.path, 'cli-store');
    await seedStore(root, 'docker.io/library/cli:1');
    const env = { STRATUM_ROOT: root };
    const ok = await cli(['push', '--json', 'cli:1', `docker://${registry.host}/cli:1`], env);
    assert.equal(ok.code, 0, ok.stderr);
    const lines = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; digest?: string });
    assert.equal(lines.at(-1)?.event, 'result');
    const missing = await cli(['pull', `${registry.host}/cli:nope`], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /source: .*not found|source: .*unknown/i);
    assert.match(missing.stderr, /\[ERR_NOT_FOUND\]/);
    const usage = await cli(['copy', 'only-one'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /usage: stratum copy/);
    const bad = await cli(['pull', 'a/B'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /ERR_INVALID_REFERENCE/);
    const images = await cli(['images', '--json'], env);
    assert.ok(
      (JSON.parse(images.stdout) as { ref: string }[]).some((r) => r.ref === 'docker.io/library/cli:1'),
    );
  });

  it('two processes pulling images that share layers into one store both succeed', async () => {
    const src = join(work.path, 'shared-src');
    const layout = await openLayout(src, { create: true });
    const base = Array.from({ length: 50 }, (_, i) => ({
      path: `base/f${i}`,
      content: `base ${i}\n`.repeat(500),
    }));
    const a = await makeImage({ layers: [base, [{ path: 'a', content: 'a' }]] });
    const b = await makeImage({ layers: [base, [{ path: 'b', content: 'b' }]] });
    await pushImage(layout, a, 'a');
    await pushImage(layout, b, 'b');
    await copyImage(`oci:${src}:a`, `docker://${registry.host}/shared/a:1`);
    await copyImage(`oci:${src}:b`, `docker://${registry.host}/shared/b:1`);
    const root = join(work.path, 'shared-store');
    await mkdir(root, { recursive: true });
    const env = { STRATUM_ROOT: root };
    const [ra, rb] = await Promise.all([
      cli(['pull', '-q', `${registry.host}/shared/a:1`], env),
      cli(['pull', '-q', `${registry.host}/shared/b:1`], env),
    ]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    const v = await cli(['verify', '--json'], env);
    assert.equal(v.code, 0, v.stdout);
    assert.equal((JSON.parse(v.stdout) as { ok: boolean }).ok, true);
  });

  it('faults: a dropped blob download is resumed; corrupt bytes fail and leave the store unchanged', async () => {
    const src = join(work.path, 'fault-src');
    const layout = await openLayout(src, { create: true });
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const img = await makeImage({ layers: [[{ path: 'big', content: big }]], compression: 'none' });
    await pushImage(layout, img, 'v1');
    await copyImage(`oci:${src}:v1`, `docker://${registry.host}/faulty:1`);
    const proxy = await startFaultProxy(registry.url, [
      {
        method: 'GET',
        path: new RegExp(img.layers[0]!.descriptor.digest),
        times: 1,
        action: { kind: 'drop', afterBytes: 1024 * 1024 },
      },
      { method: 'GET', path: /\/manifests\//, times: 1, action: { kind: 'status', status: 503 } },
    ]);
    try {
      const root = join(work.path, 'fault-store');
      const r = await pull(`${proxy.host}/faulty:1`, {
        root,
        registry: { backoff: { initialMs: 1, maxMs: 5 } },
      });
      assert.equal(r.descriptor.digest, img.manifest.descriptor.digest);
      assert.ok(
        proxy.requests.some((q) => q.headers.range !== undefined),
        'resumed with a Range request',
      );

      proxy.setPlan([{ method: 'GET', path: /\/blobs\//, action: { kind: 'corrupt' } }]);
      const root2 = join(work.path, 'fault-store-2');
      await assert.rejects(
        pull(`${proxy.host}/faulty:1`, { root: root2, registry: { backoff: { initialMs: 1, maxMs: 5 } } }),
        (e: Error & { code?: string; side?: string }) => {
          assert.equal(e.code, 'ERR_DIGEST_MISMATCH');
          assert.equal(e.side, 'source');
          return true;
        },
      );
      const store = await openStore({ root: root2 });
      assert.deepEqual(await store.roots(), []);
      const blobs = existsSync(join(root2, 'blobs', 'sha256'))
        ? await readdir(join(root2, 'blobs', 'sha256'))
        : [];
      assert.ok(!blobs.includes(img.layers[0]!.descriptor.digest.slice(7)), 'no corrupt layer stored');
      await store.close();
    } finally {
      await proxy.stop();
    }
  });

  it('auth: a wrong password is refused with ERR_UNAUTHORIZED and writes nothing; the right one works', async (t) => {
    const authed = await startRegistry({ auth: { htpasswd: { user: 'alice', password: 's3cret' } } });
    t.after(() => authed.stop());
    const cfg = await tempDir(t);
    const env = { DOCKER_CONFIG: cfg };
    const wrong = await cli(['login', '-u', 'alice', '-p', 'nope', authed.host], env);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /ERR_UNAUTHORIZED/);
    assert.equal(existsSync(join(cfg, 'config.json')), false);
    const root = join(work.path, 'auth-store');
    await seedStore(root, 'docker.io/library/secret:1');
    const denied = await cli(['push', '-q', 'secret:1', `docker://${authed.host}/secret:1`], {
      ...env,
      STRATUM_ROOT: root,
    });
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /destination: .*ERR_UNAUTHORIZED/s);
    const right = await cli(['login', '-u', 'alice', '-p', 's3cret', authed.host], env);
    assert.equal(right.code, 0, right.stderr);
    const pushed = await cli(['push', '-q', 'secret:1', `docker://${authed.host}/secret:1`], {
      ...env,
      STRATUM_ROOT: root,
    });
    assert.equal(pushed.code, 0, pushed.stderr);
    const out = await cli(['logout', authed.host], env);
    assert.equal(out.code, 0);
    await writeFile(join(cfg, 'unused'), '');
  });
});
