// Tests of the local store: images, rmi, gc (exactly the unreachable blobs; leases of live
// writers in this and in other processes; referrers; stale temp files), verify, and gc
// racing a writer in another process. This file is also the writer: run with
// STRATUM_STORE_WORKER set, it acts as one instead of defining tests.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type Digest, digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { MediaType } from '../spec/media-types.js';
import type { Descriptor } from '../spec/types.js';
import { blob, makeImage, makeIndex, pushImage, type TestBlob, type TestImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { LAYOUT_TEMP_PREFIX } from './layout.js';
import { defaultStoreRoot, openStore, STORE_LEASES_DIR, type Store } from './store.js';

const WORKER_ENV = 'STRATUM_STORE_WORKER';

interface WorkerJob {
  readonly root: string;
  /** hold: push an untagged image under a lease, say "ready", wait to be killed.
   *  claim: say exists() for an image already stored (no push), "ready", wait.
   *  loop: push and tag `count` images, each under its own lease. */
  readonly mode: 'hold' | 'claim' | 'loop';
  readonly seed: string;
  readonly count?: number;
}

const imageFor = (seed: string): Promise<TestImage> =>
  makeImage({
    layers: [[{ path: 'seed', content: seed }], [{ path: 'big', content: Buffer.alloc(20_000, seed) }]],
  });

async function worker(job: WorkerJob): Promise<void> {
  const store = await openStore({ root: job.root });
  if (job.mode === 'loop') {
    for (let i = 0; i < (job.count ?? 1); i++) {
      const img = await imageFor(`${job.seed}-${i}`);
      await store.withLease((t) => pushImage(t, img, `example.com/loop:${i}`));
    }
    return;
  }
  const img = await imageFor(job.seed);
  const lease = store.lease();
  if (job.mode === 'hold') {
    for (const b of [...img.layers, img.config, img.manifest]) {
      await lease.add(b.descriptor.digest, b.descriptor.mediaType);
      await store.layout.push(b.descriptor, b.bytes);
    }
  } else {
    await lease.add(img.manifest.descriptor.digest, img.manifest.descriptor.mediaType);
    assert.equal(await store.layout.exists(img.manifest.descriptor), true);
  }
  process.stdout.write('ready\n');
  setInterval(() => {}, 1 << 30); // stay alive until killed
}

function startWorker(job: WorkerJob): {
  child: ChildProcess;
  ready: Promise<void>;
  exited: Promise<number | null>;
} {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, [WORKER_ENV]: JSON.stringify(job) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready\n')) resolve();
    });
    void exited.then((code) =>
      reject(new Error(`store worker exited (${code}) before it was ready: ${stderr}`)),
    );
  });
  ready.catch(() => {}); // a loop worker never says ready; whoever awaits `ready` still sees the error
  return { child, ready, exited };
}

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof StratumError, `want a StratumError, got ${String(e)}`);
  assert.equal(e.code, c, e.message);
  return true;
};

async function newStore(t: { after: (fn: () => Promise<void>) => void }): Promise<Store> {
  const store = await openStore({ root: join(await tempDir(t), 'store') });
  t.after(() => store.close());
  return store;
}

const digestsOf = (...blobs: readonly TestBlob[]): Digest[] => blobs.map((b) => b.descriptor.digest).sort();
const sorted = (ds: readonly Digest[]): Digest[] => [...ds].sort();

/** A referrer (an artifact manifest with a subject) of `subject`. */
function referrerOf(
  subject: Descriptor,
  label: string,
): { manifest: TestBlob; config: TestBlob; layer: TestBlob } {
  const config = blob(MediaType.OciEmpty, Buffer.from('{}'));
  const layer = blob('application/vnd.example.signature', Buffer.from(`signature ${label}`));
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: 'application/vnd.example.signature',
    config: config.descriptor,
    layers: [layer.descriptor],
    subject,
  };
  return { manifest: blob(MediaType.OciManifest, Buffer.from(JSON.stringify(doc))), config, layer };
}

const job = process.env[WORKER_ENV];
if (job !== undefined) {
  await worker(JSON.parse(job) as WorkerJob);
} else {
  describe('openStore', () => {
    it('creates the store as an OCI layout with a leases directory', async (t) => {
      const root = join(await tempDir(t), 'a', 'store');
      const store = await openStore({ root });
      assert.equal(store.root, root);
      assert.deepEqual((await readdir(root)).sort(), ['blobs', 'index.json', 'leases', 'oci-layout']);
      await store.close();
      await assert.rejects(openStore({ root: join(root, 'missing'), readOnly: true }), code('ERR_NOT_FOUND'));
      const ro = await openStore({ root, readOnly: true });
      const img = await makeImage();
      await assert.rejects(ro.push(img.config.descriptor, img.config.bytes), code('ERR_READ_ONLY'));
      await assert.rejects(ro.gc(), code('ERR_READ_ONLY'));
      assert.deepEqual(await ro.verify(), []);
    });

    it('finds its root in STRATUM_ROOT, else by user', () => {
      assert.equal(defaultStoreRoot({ STRATUM_ROOT: '/srv/images' }), '/srv/images');
      if (process.getuid?.() === 0) assert.equal(defaultStoreRoot({}), '/var/lib/stratum');
      else assert.equal(defaultStoreRoot({ XDG_DATA_HOME: '/xdg' }), '/xdg/stratum');
    });
  });

  describe('Store images and rmi', () => {
    it('lists tagged images with sizes and creation time; rmi untags and keeps blobs', async (t) => {
      const store = await newStore(t);
      const a = await imageFor('a');
      const arm = await makeImage({
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        layers: [[{ path: 'arm', content: 'arm' }]],
      });
      const index = makeIndex([
        { image: a, platform: { os: 'linux', architecture: 'amd64' } },
        { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      ]);
      await pushImage(store, a, 'docker.io/library/a:latest');
      await store.tag(a.manifest.descriptor, `docker.io/library/a@${a.manifest.descriptor.digest}`);
      // the index, with one child absent (a partial multi-platform pull)
      await store.push(index.descriptor, index.bytes);
      await store.tag(index.descriptor, '127.0.0.1:5000/multi:1');

      const sum = (img: TestImage) => img.blobs.reduce((n, b) => n + b.bytes.length, 0);
      const rows = await store.images();
      assert.deepEqual(rows, [
        {
          ref: '127.0.0.1:5000/multi:1',
          digest: index.descriptor.digest,
          mediaType: MediaType.OciIndex,
          size: index.bytes.length + sum(a),
          created: '2026-01-01T00:00:00Z',
          platforms: ['linux/amd64', 'linux/arm64/v8'],
        },
        {
          ref: 'docker.io/library/a:latest',
          digest: a.manifest.descriptor.digest,
          mediaType: MediaType.OciManifest,
          size: sum(a),
          created: '2026-01-01T00:00:00Z',
        },
        {
          ref: `docker.io/library/a@${a.manifest.descriptor.digest}`,
          digest: a.manifest.descriptor.digest,
          mediaType: MediaType.OciManifest,
          size: sum(a),
          created: '2026-01-01T00:00:00Z',
        },
      ]);

      const removed = await store.rmi('docker.io/library/a:latest');
      assert.deepEqual(
        removed.map((r) => r.ref),
        ['docker.io/library/a:latest'],
      );
      assert.equal(await store.exists(a.manifest.descriptor), true);
      assert.equal((await store.images()).length, 2);
      await assert.rejects(store.rmi('docker.io/library/a:latest'), code('ERR_NOT_FOUND'));
      await assert.rejects(store.rmi('not a ref'), code('ERR_INVALID_REFERENCE'));
    });
  });

  describe('Store gc', () => {
    it('removes exactly the blobs unreachable from index.json, keeping referrers of what stays', async (t) => {
      const store = await newStore(t);
      const shared = [{ path: 'shared', content: 'base layer' }];
      const kept = await makeImage({ layers: [shared, [{ path: 'k', content: 'kept' }]] });
      const dropped = await makeImage({ layers: [shared, [{ path: 'd', content: 'dropped' }]] });
      const child = await imageFor('child of an index');
      const index = makeIndex([{ image: child, platform: { os: 'linux', architecture: 'amd64' } }]);
      const stray = blob(MediaType.OciLayer, Buffer.from('pushed, never referenced'));
      const sigKept = referrerOf(kept.manifest.descriptor, 'kept');
      const sigDropped = referrerOf(dropped.manifest.descriptor, 'dropped');
      const sigOfSig = referrerOf(sigKept.manifest.descriptor, 'second order');

      await pushImage(store.layout, kept, 'example.com/kept:1');
      await pushImage(store.layout, dropped, 'example.com/dropped:1');
      await pushImage(store.layout, child);
      await store.layout.push(index.descriptor, index.bytes);
      await store.layout.tag(index.descriptor, 'example.com/index:1');
      await store.layout.push(stray.descriptor, stray.bytes);
      for (const r of [sigKept, sigDropped, sigOfSig]) {
        for (const b of [r.config, r.layer, r.manifest]) await store.layout.push(b.descriptor, b.bytes);
      }
      await store.rmi('example.com/dropped:1');

      const result = await store.gc();
      const want = [
        dropped.manifest,
        dropped.config,
        dropped.layers[1] as TestBlob,
        stray,
        sigDropped.manifest,
        sigDropped.layer,
      ];
      assert.deepEqual(sorted(result.removedBlobs), digestsOf(...want));
      assert.equal(
        result.freedBytes,
        want.reduce((n, b) => n + b.bytes.length, 0),
      );
      const left = (await store.layout.listBlobs()).map((b) => b.digest).sort();
      const keep = [
        ...kept.blobs,
        ...child.blobs,
        index,
        sigKept.manifest,
        sigKept.config, // also the config of sigDropped and sigOfSig: same bytes
        sigKept.layer,
        sigOfSig.manifest,
        sigOfSig.layer,
      ];
      assert.deepEqual(left, [...new Set(digestsOf(...keep))].sort());
      assert.deepEqual(await store.verify(), []);
      const again = await store.gc();
      assert.deepEqual(again.removedBlobs, []);
      assert.equal(again.freedBytes, 0);
    });

    it('keeps what a live lease in this process holds, and lets it go on release', async (t) => {
      const store = await newStore(t);
      const img = await imageFor('leased');
      const lease = store.lease();
      for (const b of img.blobs) await lease.add(b.descriptor.digest, b.descriptor.mediaType);
      await pushImage(store.layout, img);
      assert.deepEqual((await store.gc()).removedBlobs, []);
      await lease.release();
      assert.deepEqual(sorted((await store.gc()).removedBlobs), digestsOf(...img.blobs));
      await assert.rejects(lease.add(img.config.descriptor.digest), code('ERR_INVALID_ARGUMENT'));
      await assert.rejects(store.lease().add('sha256:nope'), code('ERR_INVALID_DIGEST'));
    });

    it('leases pushes through the store itself and withLease targets, until close / the end of fn', async (t) => {
      const store = await newStore(t);
      const viaStore = await imageFor('via the store');
      const viaLease = await imageFor('via withLease');
      await pushImage(store, viaStore);
      await store.withLease(async (target) => {
        await pushImage(target, viaLease);
        assert.deepEqual((await store.gc()).removedBlobs, []);
      });
      assert.deepEqual(sorted((await store.gc()).removedBlobs), digestsOf(...viaLease.blobs));
      assert.equal((await readdir(join(store.root, STORE_LEASES_DIR))).length, 1);
      await store.close();
      assert.deepEqual(await readdir(join(store.root, STORE_LEASES_DIR)), []);
      assert.deepEqual(sorted((await store.gc()).removedBlobs), digestsOf(...viaStore.blobs));
    });

    it('keeps the blobs of a writer in another process while it lives, and drops its lease when it dies', async (t) => {
      const store = await newStore(t);
      const held = await imageFor('held by a live writer');
      const claimed = await imageFor('claimed by a live writer');
      // `claimed` is in the store but unreachable: garbage, until a writer says it relies on it
      await pushImage(store.layout, claimed);
      const w1 = startWorker({ root: store.root, mode: 'hold', seed: 'held by a live writer' });
      const w2 = startWorker({ root: store.root, mode: 'claim', seed: 'claimed by a live writer' });
      t.after(() => {
        w1.child.kill('SIGKILL');
        w2.child.kill('SIGKILL');
      });
      await Promise.all([w1.ready, w2.ready]);
      const during = await store.gc();
      assert.deepEqual(
        during.removedBlobs,
        [],
        'a live writer keeps its blobs, and what its manifests reach',
      );
      assert.equal(during.removedLeases, 0);
      w1.child.kill('SIGKILL');
      w2.child.kill('SIGKILL');
      await Promise.all([w1.exited, w2.exited]);
      const after = await store.gc();
      assert.equal(after.removedLeases, 2);
      assert.deepEqual(
        sorted(after.removedBlobs),
        [...new Set(digestsOf(...held.blobs, ...claimed.blobs))].sort(),
      );
      assert.deepEqual(await readdir(join(store.root, STORE_LEASES_DIR)), []);
    });

    it('a writer in another process pushing and tagging while gc runs over and over loses nothing', async (t) => {
      const store = await newStore(t);
      const count = 20;
      const w = startWorker({ root: store.root, mode: 'loop', seed: 'race', count });
      t.after(() => w.child.kill('SIGKILL'));
      let done = false;
      const exited = w.exited.then((c) => {
        done = true;
        return c;
      });
      let runs = 0;
      while (!done) {
        await store.gc();
        runs++;
        // let the writer take the lock between runs (waiters poll; a tight loop would starve it)
        await sleep(5);
      }
      assert.equal(await exited, 0);
      assert.ok(runs > 0);
      assert.deepEqual(await store.verify(), []);
      for (let i = 0; i < count; i++) {
        const img = await imageFor(`race-${i}`);
        assert.equal((await store.resolve(`example.com/loop:${i}`)).digest, img.manifest.descriptor.digest);
        for (const b of img.blobs) assert.equal(await store.exists(b.descriptor), true);
      }
    });

    it('reads hostile lease files safely: bad lines are ignored, foreign names left alone', async (t) => {
      const store = await newStore(t);
      const kept = blob(MediaType.OciLayer, Buffer.from('named in a lease'));
      const gone = blob(MediaType.OciLayer, Buffer.from('not named'));
      await store.layout.push(kept.descriptor, kept.bytes);
      await store.layout.push(gone.descriptor, gone.bytes);
      const leases = join(store.root, STORE_LEASES_DIR);
      await writeFile(
        join(leases, `${process.pid}-hostile`),
        ['../../etc/passwd', 'sha256:xyz', `${kept.descriptor.digest} not/../a type`, '', '\u0000'].join(
          '\n',
        ),
      );
      await writeFile(join(leases, 'README'), `${gone.descriptor.digest}\n`);
      const r = await store.gc();
      assert.deepEqual(r.removedBlobs, [gone.descriptor.digest]);
      assert.equal(r.removedLeases, 0);
      assert.deepEqual((await readdir(leases)).sort(), [`${process.pid}-hostile`, 'README']);
    });

    it('removes temp files of dead processes, not of live ones', async (t) => {
      const store = await newStore(t);
      const w = startWorker({ root: store.root, mode: 'claim', seed: 'x' });
      const img = await imageFor('x');
      await pushImage(store.layout, img, 'x');
      await w.ready;
      const livePid = w.child.pid as number;
      w.child.kill('SIGKILL');
      await w.exited;
      const deadPid = livePid;
      await writeFile(join(store.root, `${LAYOUT_TEMP_PREFIX}${deadPid}-1`), 'partial');
      await writeFile(join(store.root, `${LAYOUT_TEMP_PREFIX}${process.pid}-2`), 'in progress');
      const r = await store.gc();
      assert.equal(r.removedTempFiles, 1);
      const names = await readdir(store.root);
      assert.ok(!names.includes(`${LAYOUT_TEMP_PREFIX}${deadPid}-1`));
      assert.ok(names.includes(`${LAYOUT_TEMP_PREFIX}${process.pid}-2`));
    });

    it('stops without deleting anything when a reachable manifest cannot be read', async (t) => {
      const store = await newStore(t);
      const img = await imageFor('corrupt manifest');
      const stray = blob(MediaType.OciLayer, Buffer.from('stray'));
      await pushImage(store.layout, img, 'x');
      await store.layout.push(stray.descriptor, stray.bytes);
      await writeFile(
        store.layout.blobPath(img.manifest.descriptor.digest),
        '{"schemaVersion":2,"broken":true}',
      );
      await assert.rejects(
        store.gc(),
        (e) => code('ERR_INVALID_DOCUMENT')(e) && /nothing was deleted/.test(String(e)),
      );
      assert.equal((await store.layout.listBlobs()).length, img.blobs.length + 1);
    });
  });

  describe('Store verify', () => {
    it('finds missing, corrupt, wrongly sized and invalid blobs', async (t) => {
      const store = await newStore(t);
      const img = await imageFor('verify me');
      const other = await imageFor('another');
      await pushImage(store, img, 'example.com/img:1');
      await pushImage(store, other, 'example.com/other:1');
      assert.deepEqual(await store.verify(), []);

      const [l0, l1] = img.layers as [TestBlob, TestBlob];
      // corrupt, same size
      const flipped = Buffer.from(l0.bytes);
      flipped[flipped.length - 1] = (flipped.at(-1) ?? 0) ^ 0xff;
      await writeFile(store.layout.blobPath(l0.descriptor.digest), flipped);
      // truncated
      await writeFile(store.layout.blobPath(l1.descriptor.digest), l1.bytes.subarray(0, 10));
      // missing
      await rm(store.layout.blobPath(img.config.descriptor.digest));
      // a tagged "manifest" that is not one
      const bogus = blob(MediaType.OciManifest, Buffer.from('{"schemaVersion":2}'));
      await store.push(bogus.descriptor, bogus.bytes);
      await store.tag(bogus.descriptor, 'example.com/bogus:1');

      const problems = await store.verify({ concurrency: 2 });
      const m = img.manifest.descriptor.digest;
      const summary = problems.map((p) => [p.digest, p.problem, p.referencedBy]).sort();
      assert.deepEqual(
        summary,
        [
          [l0.descriptor.digest, 'corrupt', undefined],
          [l1.descriptor.digest, 'corrupt', undefined],
          [l1.descriptor.digest, 'size', m],
          [img.config.descriptor.digest, 'missing', m],
          [bogus.descriptor.digest, 'invalid', 'index.json'],
        ].sort(),
      );
      for (const p of problems) assert.ok(p.detail.length > 0);
    });
  });

  describe('Store refs', () => {
    it('accepts full normalised references as names, and nothing unsafe', async (t) => {
      const store = await newStore(t);
      const img = await makeImage();
      await pushImage(store, img);
      const d = img.manifest.descriptor;
      for (const ref of [
        'docker.io/library/busybox:latest',
        '127.0.0.1:5000/app:1',
        `docker.io/library/busybox@${digestBytes('x')}`,
      ]) {
        await store.tag(d, ref);
        assert.equal((await store.resolve(ref)).digest, d.digest);
      }
      for (const bad of ['busybox latest', '../../etc', 'a\n', '']) {
        await assert.rejects(store.tag(d, bad), code('ERR_INVALID_REFERENCE'));
      }
    });
  });
}
