// The snapshot area: chain IDs, extraction once per chain (within a process and across two),
// the merged overlay of a chain equal to a plain unpack (busybox and the crafted layers with
// whiteouts, opaque directories and cross-layer hardlinks), failures and aborts leaving
// nothing, 20 containers sharing one chain, adopt, holders, leases and gc.

import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Fetcher, FetchOptions } from '../content/types.js';
import { type Digest, digestBytes } from '../digest/digest.js';
import type { StratumError } from '../errors/errors.js';
import { Image } from '../image/image.js';
import { applyLayer } from '../layer/apply.js';
import { dir, file, hardlink, makeTarball } from '../layer/apply-fixtures.js';
import { diffOverlayUpper } from '../layer/diff.js';
import { type LayoutTarget, openLayout } from '../layout/layout.js';
import type { Descriptor } from '../spec/types.js';
import { type FixtureSet, fixturesSkipReason, getFixtures } from '../testing/fixtures.js';
import { makeImage, pushImage } from '../testing/images.js';
import { makeTempDir } from '../testing/tmp.js';
import { compareTrees, describeTree, type TreeEntry } from '../testing/tree.js';
import { chainIdOf, chainIds } from './chain-id.js';
import { mountOverlay, mountsUnder, unmount } from './overlay.js';
import { diskUsage, type SnapshotLayer, type SnapshotProgress, Snapshots } from './snapshots.js';

const rootSkip =
  process.geteuid?.() === 0
    ? undefined
    : 'snapshots need root (owners, devices, trusted.overlay xattrs, mounts)';
const fixtureSkip = rootSkip ?? fixturesSkipReason();

const sha = (s: string): Digest => `sha256:${createHash('sha256').update(s).digest('hex')}` as Digest;

describe('chainIds', () => {
  it('follows the image-spec definition', () => {
    const a = sha('a');
    const b = sha('b');
    const c = sha('c');
    const ab = sha(`${a} ${b}`);
    assert.deepEqual(chainIds([a, b, c]), [a, ab, sha(`${ab} ${c}`)]);
    assert.deepEqual(chainIds([]), []);
    assert.equal(chainIdOf(undefined, a), a);
    assert.equal(chainIdOf(ab, c), chainIds([a, b, c])[2]);
  });

  it('matches a published vector (opencontainers/image-tools TestChainID)', () => {
    const ids = chainIds([
      'sha256:8b2564fc821995bf961877c06e676591297178a4438293ec1c2e20f66855d3a8',
      'sha256:ecf239b31bd1723014debab23dd82b3b4b87114e3254370c366f7f712fb9b075',
      'sha256:eab89ad04ba05c973e3fb95f9b10a2875a18779d9977743c779c8238aa3fd742',
    ] as Digest[]);
    assert.equal(ids[2], 'sha256:26ab43e7d8f84043e608d1be92d9918a8aa6860489b6f221f29bc49d0081c3c3');
  });

  it('refuses what is not a digest', () => {
    assert.throws(() => chainIds(['sha256:../../etc' as Digest]), { code: 'ERR_INVALID_DIGEST' });
  });
});

// ---- helpers ----

/** A temp dir whose mounts are undone (lazily) before it is removed when the test ends. */
async function scratch(t: TestContext): Promise<string> {
  const { path, cleanup } = await makeTempDir();
  t.after(async () => {
    for (const m of await mountsUnder(path)) await unmount(m, { lazy: true });
    await cleanup();
  });
  return path;
}

/** A fetcher that counts fetches and can hold them until released. */
class CountingFetcher implements Fetcher {
  fetches = 0;
  #gate: Promise<void> | undefined;
  constructor(readonly inner: Fetcher) {}
  hold(): () => void {
    let open!: () => void;
    this.#gate = new Promise((r) => {
      open = r;
    });
    return () => {
      this.#gate = undefined;
      open();
    };
  }
  async fetch(desc: Descriptor, opts?: FetchOptions): Promise<Readable> {
    this.fetches++;
    await this.#gate;
    return this.inner.fetch(desc, opts);
  }
}

async function layoutWith(
  root: string,
  layers: Parameters<typeof makeImage>[0],
): Promise<{
  layout: LayoutTarget;
  layers: SnapshotLayer[];
}> {
  const layout = await openLayout(join(root, 'layout'), { create: true });
  const img = await makeImage(layers);
  await pushImage(layout, img);
  return {
    layout,
    layers: img.layers.map((l, i) => ({ descriptor: l.descriptor, diffId: img.diffIds[i] as Digest })),
  };
}

async function imageLayers(layout: LayoutTarget, tag: string): Promise<SnapshotLayer[]> {
  const image = new Image(layout, await layout.resolve(tag));
  const [descs, config] = await Promise.all([image.layers(), image.config()]);
  return descs.map((descriptor, i) => ({ descriptor, diffId: config.rootfs.diff_ids[i] as Digest }));
}

/** The plain form of the same layers, applied one after another into one directory. */
async function plainUnpack(fetcher: Fetcher, layers: readonly SnapshotLayer[], into: string): Promise<void> {
  await mkdir(into, { recursive: true });
  for (const l of layers)
    await applyLayer(into, await fetcher.fetch(l.descriptor), { form: 'plain', diffID: l.diffId });
}

async function mountChain(
  dirs: readonly string[],
  target: string,
  rw?: { upper: string; work: string },
): Promise<void> {
  await mkdir(target, { recursive: true });
  if (rw) {
    await mkdir(rw.upper, { recursive: true });
    await mkdir(rw.work, { recursive: true });
  }
  await mountOverlay({ lowers: [...dirs].reverse(), target, ...(rw ?? {}) });
}

/** What a tree holds, as one hash (paths, types, modes, owners, contents, xattrs). */
async function treeHash(root: string): Promise<string> {
  return digestBytes(JSON.stringify(await describeTree(root, { mtimes: true })));
}

function deadPid(): number {
  return spawnSync('true').pid as number;
}

async function areaNames(s: Snapshots): Promise<string[]> {
  return (await readdir(s.dir)).filter((n) => !['holders', 'leases', 'locks'].includes(n)).sort();
}

const TREE = { mtimes: true } as const;

/**
 * Compare a merged overlay with a plain unpack. A hard link to a file of a lower layer is a
 * copy in the overlay form (one inode cannot span two layers): same content and metadata,
 * another inode. Those paths are compared without their hardlink groups and returned.
 */
async function compareMerged(
  merged: string,
  plain: string,
): Promise<{ diffs: string[]; splitLinks: string[] }> {
  const [a, b] = await Promise.all([describeTree(merged, TREE), describeTree(plain, TREE)]);
  const bm = new Map(b.map((e) => [e.path, e]));
  const splitLinks: string[] = [];
  const strip = ({ hardlinks: _, ...rest }: TreeEntry): TreeEntry => rest;
  const a2 = a.map((e) => {
    const other = bm.get(e.path);
    if (other && JSON.stringify(e.hardlinks) !== JSON.stringify(other.hardlinks)) {
      splitLinks.push(e.path);
      return strip(e);
    }
    return e;
  });
  const split = new Set(splitLinks);
  const b2 = b.map((e) => (split.has(e.path) ? strip(e) : e));
  return { diffs: compareTrees(a2, b2, ['overlay', 'plain']), splitLinks };
}

// ---- tests ----

describe('Snapshots', { skip: rootSkip }, () => {
  it('prepares a chain once; the merged overlay holds every layer; whiteouts and opaque dirs work', async (t) => {
    const root = await scratch(t);
    const l1 = makeTarball([
      dir('etc/'),
      file('etc/keep', 'keep\n'),
      file('etc/gone', 'gone\n'),
      dir('opq/'),
      file('opq/old', 'old\n'),
      file('big', 'x'.repeat(10_000), { mode: 0o600 }),
    ]);
    const l2 = makeTarball([
      file('etc/.wh.gone'),
      file('opq/.wh..wh..opq'),
      file('opq/new', 'new\n'),
      hardlink('etc/big-link', 'big'), // to a file of the layer below: copied up
    ]);
    const { layout, layers } = await layoutWith(root, { layers: [l1, l2] });
    const s = await Snapshots.open(join(root, 'store'));
    const events: SnapshotProgress[] = [];
    const chain = await s.prepare(layers, layout, { onProgress: (e) => events.push(e) });
    assert.deepEqual(chain.chainIds, chainIds(layers.map((l) => l.diffId)));
    assert.deepEqual(
      chain.dirs,
      chain.chainIds.map((c) => s.dirOf(c)),
    );
    assert.equal(events.filter((e) => e.type === 'layer-done').length, 2);
    for (const c of chain.chainIds) assert.ok(await s.has(c));

    // overlay form on disk
    const top = chain.dirs[1] as string;
    const wh = (await describeTree(top)).find((e) => e.path === 'etc/gone');
    assert.equal(wh?.type, 'char');
    assert.equal(wh?.rdev, 0);
    const opq = (await describeTree(top)).find((e) => e.path === 'opq');
    assert.equal(opq?.xattrs?.['trusted.overlay.opaque'], `0x${Buffer.from('y').toString('hex')}`);

    const merged = join(root, 'merged');
    await mountChain(chain.dirs, merged);
    const plain = join(root, 'plain');
    await plainUnpack(layout, layers, plain);
    const { diffs, splitLinks } = await compareMerged(merged, plain);
    assert.deepEqual(diffs, []);
    assert.deepEqual(splitLinks, ['big', 'etc/big-link']);

    // a second prepare extracts nothing
    const again: SnapshotProgress[] = [];
    await s.prepare(layers, layout, { onProgress: (e) => again.push(e) });
    assert.deepEqual(
      again.map((e) => e.type),
      ['layer-exists', 'layer-exists'],
    );
    // the area holds the two snapshots and nothing else
    assert.equal((await areaNames(s)).filter((n) => !n.startsWith('.')).length, 2);
    assert.deepEqual(
      (await areaNames(s)).filter((n) => n.startsWith('.tmp-')),
      [],
    );
  });

  it('a layer that makes its root opaque hides the layers below it in the mount (overlayfs ignores a root opaque mark)', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, {
      layers: [
        [
          { path: 'old', content: 'from below' },
          { path: 'd/', type: 'directory' },
          { path: 'd/x', content: 'x' },
        ],
        [
          { path: '.wh..wh..opq', content: '' },
          { path: 'new', content: 'from above' },
        ],
        [{ path: 'top', content: 'on top' }],
      ],
    });
    const s = await Snapshots.open(join(root, 'store'));
    const chain = await s.prepare(layers, layout);
    assert.deepEqual(chain.lowers, [chain.dirs[2], chain.dirs[1]]);
    const merged = join(root, 'merged');
    await mkdir(merged);
    await mountOverlay({ lowers: chain.lowers, target: merged });
    const plain = join(root, 'plain');
    await plainUnpack(layout, layers, plain);
    const { diffs } = await compareMerged(merged, plain);
    assert.deepEqual(diffs, []);
    assert.deepEqual((await readdir(merged)).sort(), ['new', 'top']);
  });

  it('shares the bottom of two images (one extraction of the common layer)', async (t) => {
    const root = await scratch(t);
    const base = [{ path: 'base.txt', content: 'base\n' }];
    const a = await layoutWith(join(root, 'a'), { layers: [base, [{ path: 'a.txt', content: 'a' }]] });
    const b = await layoutWith(join(root, 'b'), {
      layers: [base, [{ path: 'b.txt', content: 'b' }]],
      compression: 'none', // another blob, the same diffID
    });
    assert.notEqual(a.layers[0]?.descriptor.digest, b.layers[0]?.descriptor.digest);
    const s = await Snapshots.open(join(root, 'store'));
    const ca = await s.prepare(a.layers, a.layout);
    const fb = new CountingFetcher(b.layout);
    const cb = await s.prepare(b.layers, fb);
    assert.equal(fb.fetches, 1);
    assert.equal(ca.dirs[0], cb.dirs[0]);
  });

  it('two prepares at once, and two Snapshots instances, extract each layer once', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, {
      layers: [[{ path: 'a', content: 'a' }], [{ path: 'b', content: 'b' }], [{ path: 'c', content: 'c' }]],
    });
    const store = join(root, 'store');
    const s1 = await Snapshots.open(store);
    const s2 = await Snapshots.open(store); // another instance: only the lock files join them
    const f = new CountingFetcher(layout);
    const release = f.hold();
    const runs = [s1.prepare(layers, f), s1.prepare(layers, f), s2.prepare(layers, f), s2.prepare(layers, f)];
    setTimeout(release, 50);
    const chains = await Promise.all(runs);
    assert.equal(f.fetches, 3);
    for (const c of chains) assert.deepEqual(c, chains[0]);
  });

  it('two processes preparing one image extract each layer once', async (t) => {
    const root = await scratch(t);
    const { layers } = await layoutWith(root, {
      layers: Array.from({ length: 6 }, (_, i) => [{ path: `f${i}`, content: 'x'.repeat(200_000 + i) }]),
    });
    const child = fileURLToPath(new URL('./prepare-child.test-helper.js', import.meta.url));
    const args = [child, join(root, 'store'), join(root, 'layout'), JSON.stringify(layers)];
    const runOne = (): Promise<number> =>
      new Promise((resolve, reject) => {
        execFile(process.execPath, args, (err, stdout, stderr) => {
          if (err) reject(new Error(`${err.message}\n${stderr}`));
          else resolve(Number(stdout.trim()));
        });
      });
    const counts = await Promise.all([runOne(), runOne()]);
    assert.equal(counts[0]! + counts[1]!, 6, `extractions per process: ${counts}`);
    const s = await Snapshots.open(join(root, 'store'));
    assert.equal((await s.list()).length, 6);
  });

  it('kill -9 in the middle of an extraction leaves a temp dir only; the next prepare and gc recover', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, {
      layers: [[{ path: 'noise', content: randomBytes(400_000) }]],
    });
    const store = join(root, 'store');
    const child = fileURLToPath(new URL('./prepare-child.test-helper.js', import.meta.url));
    const proc = spawn(
      process.execPath,
      [child, store, join(root, 'layout'), JSON.stringify(layers), 'slow'],
      {
        stdio: 'ignore',
      },
    );
    const exited = new Promise((r) => proc.once('exit', r));
    const s = await Snapshots.open(store);
    // wait until its extraction has written part of the file
    const tmpName = `.tmp-${proc.pid}-`;
    for (;;) {
      const tmp = (await readdir(s.dir).catch(() => [] as string[])).find((n) => n.startsWith(tmpName));
      const st = tmp ? await lstat(join(s.dir, tmp, 'fs', 'noise')).catch(() => undefined) : undefined;
      if (st && st.size > 0) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    proc.kill('SIGKILL');
    await exited;
    const chainId = chainIds([layers[0]!.diffId])[0]!;
    assert.equal(await s.has(chainId), false);
    assert.equal((await areaNames(s)).filter((n) => n.startsWith(tmpName)).length, 1);
    assert.deepEqual(await readdir(join(s.dir, 'locks')), [chainId.slice('sha256:'.length)]); // its lock, stale
    // the next prepare breaks the stale lock and extracts; gc removes the dead temp dir
    const chain = await s.prepare(layers, layout);
    assert.equal((await readFile(join(chain.dirs[0]!, 'noise'))).length, 400_000);
    await s.gc(new Set());
    assert.deepEqual(
      (await areaNames(s)).filter((n) => n.startsWith('.')),
      [],
    );
    assert.equal(await s.has(chainId), true); // leased by this process
  });

  it('a corrupt layer (diffID mismatch) leaves no snapshot', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, {
      layers: [[{ path: 'a', content: 'a' }], [{ path: 'b' }]],
    });
    const s = await Snapshots.open(join(root, 'store'));
    const bad = [layers[0]!, { ...layers[1]!, diffId: sha('not this layer') }];
    await assert.rejects(
      s.prepare(bad, layout),
      (e: StratumError) => e.code === 'ERR_DIGEST_MISMATCH' && /layer 2 .* diffID/.test(e.message),
    );
    const ids = chainIds(bad.map((l) => l.diffId));
    assert.equal(await s.has(ids[0]!), true); // the good bottom layer stays
    assert.equal(await s.has(ids[1]!), false);
    assert.deepEqual(
      (await areaNames(s)).filter((n) => n.startsWith('.tmp-')),
      [],
    );
    assert.deepEqual(await readdir(join(s.dir, 'locks')), []);
  });

  it('refuses a layer that is not a tar, and a hostile holder name', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, { layers: [[{ path: 'a' }]] });
    const s = await Snapshots.open(join(root, 'store'));
    const odd = [
      { ...layers[0]!, descriptor: { ...layers[0]!.descriptor, mediaType: 'application/vnd.example.blob' } },
    ];
    await assert.rejects(s.prepare(odd, layout), { code: 'ERR_UNSUPPORTED_MEDIA_TYPE' });
    for (const h of ['../escape', '', '.hidden', 'a/b', 'x'.repeat(129)]) {
      await assert.rejects(s.hold(h, []), { code: 'ERR_INVALID_ARGUMENT' });
    }
    await assert.rejects(s.hold('ok', ['sha256:nope' as Digest]), { code: 'ERR_INVALID_DIGEST' });
  });

  it('an aborted prepare leaves no snapshot, and a concurrent one still succeeds', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, { layers: [[{ path: 'a', content: 'a' }]] });
    const s = await Snapshots.open(join(root, 'store'));
    // a layer stream that stalls halfway
    let fetched!: () => void;
    const fetching = new Promise<void>((r) => {
      fetched = r;
    });
    const stalled: Fetcher = {
      async fetch(desc, opts) {
        fetched();
        const src = await layout.fetch(desc, opts);
        const out = new PassThrough();
        src.once('data', (chunk: Buffer) => {
          src.destroy();
          out.write(chunk.subarray(0, Math.floor(chunk.length / 2)));
        });
        return out;
      },
    };
    const ac = new AbortController();
    const p = s.prepare(layers, stalled, { signal: ac.signal });
    await fetching;
    // a second prepare in the same instance joins the first one's extraction
    const q = s.prepare(layers, layout);
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, { code: 'ERR_ABORTED' });
    const chain = await q; // it did the work itself after the abort
    assert.equal(await readFile(join(chain.dirs[0]!, 'a'), 'utf8'), 'a');

    const s2 = await Snapshots.open(join(root, 'store2'));
    const ac2 = new AbortController();
    const p2 = s2.prepare(layers, stalled, { signal: ac2.signal });
    setTimeout(() => ac2.abort(), 50);
    await assert.rejects(p2, { code: 'ERR_ABORTED' });
    assert.equal(await s2.has(chainIds([layers[0]!.diffId])[0]!), false);
    assert.deepEqual(await areaNames(s2), []);
  });

  it('gc removes what no one holds, keeps held, kept, leased and in-progress snapshots, and their parents', async (t) => {
    const root = await scratch(t);
    const base = [{ path: 'base', content: 'base' }];
    const a = await layoutWith(join(root, 'a'), { layers: [base, [{ path: 'a' }]] });
    const b = await layoutWith(join(root, 'b'), { layers: [base, [{ path: 'b' }], [{ path: 'bb' }]] });
    const c = await layoutWith(join(root, 'c'), { layers: [[{ path: 'c' }]] });
    const store = join(root, 'store');
    const s = await Snapshots.open(store);
    const ca = await s.prepare(a.layers, a.layout);
    const cb = await s.prepare(b.layers, b.layout);
    const cc = await s.prepare(c.layers, c.layout);
    // leased by this live process: nothing goes
    assert.deepEqual(await s.gc(new Set()), { removed: 0, bytes: 0 });
    await s.hold('ctr-a', ca.chainIds);
    await s.hold('ctr-b', cb.chainIds);
    await s.hold('ctr-c', cc.chainIds);
    assert.deepEqual((await s.list()).find((i) => i.chainId === ca.chainIds[0])?.holders, ['ctr-a', 'ctr-b']);
    await s.release('ctr-b');
    await s.release('ctr-c');
    await s.release('ctr-c'); // twice: nothing to do
    // b's top is kept by the caller's set, which keeps its parent too; c goes
    const bTop = cb.chainIds[2]!;
    const sizeC = await diskUsage(join(cc.dirs[0]!, '..'));
    const r = await s.gc(new Set([bTop]));
    assert.deepEqual(r, { removed: 1, bytes: sizeC });
    assert.equal(await s.has(cc.chainIds[0]!), false);
    for (const id of [...ca.chainIds, ...cb.chainIds]) assert.equal(await s.has(id), true, id);
    // without the keep set, b's own layers go; the shared base stays (held through a)
    const r2 = await s.gc(new Set());
    assert.equal(r2.removed, 2);
    assert.equal(await s.has(cb.chainIds[0]!), true);
    assert.equal(await s.has(cb.chainIds[1]!), false);
    // held only through a parent link: releasing a frees everything
    await s.release('ctr-a');
    assert.equal((await s.gc(new Set())).removed, 2);
    assert.deepEqual(await s.list(), []);

    // an extraction in progress survives gc, and what it makes is kept
    const f = new CountingFetcher(c.layout);
    const open = f.hold();
    const preparing = s.prepare(c.layers, f);
    while (f.fetches === 0) await new Promise((r) => setImmediate(r));
    const other = await Snapshots.open(store); // gc from another instance (as another process would)
    assert.deepEqual(await other.gc(new Set()), { removed: 0, bytes: 0 });
    assert.equal((await areaNames(s)).filter((n) => n.startsWith('.tmp-')).length, 1);
    open();
    const chain = await preparing;
    assert.deepEqual(await other.gc(new Set()), { removed: 0, bytes: 0 }); // leased by s
    assert.equal(await s.has(chain.chainIds[0]!), true);
  });

  it('hold() during another prepare of the same chain leaves that prepare protected', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, { layers: [[{ path: 'a' }], [{ path: 'b' }]] });
    const s = await Snapshots.open(join(root, 'store'));
    const chain = await s.prepare(layers, layout);
    // a second prepare, of an image with the same two bottom layers, is under way
    const more = await layoutWith(join(root, 'more'), {
      layers: [[{ path: 'a' }], [{ path: 'b' }], [{ path: 'c' }]],
    });
    const f = new CountingFetcher(more.layout);
    const open = f.hold();
    const running = s.prepare(more.layers, f);
    while (f.fetches === 0) await new Promise((r) => setImmediate(r));
    await s.hold('h', chain.chainIds);
    await s.release('h');
    assert.equal((await s.gc(new Set())).removed, 0); // still leased for the running prepare
    open();
    const c3 = await running;
    assert.deepEqual(c3.chainIds.slice(0, 2), chain.chainIds);
  });

  it('gc cleans what dead processes left (temp dirs, leases), never a live one', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, { layers: [[{ path: 'a' }]] });
    const store = join(root, 'store');
    const s = await Snapshots.open(store);
    const chain = await s.prepare(layers, layout);
    await s.hold('h', chain.chainIds);
    await s.release('h');
    const dead = deadPid();
    await mkdir(join(s.dir, `.tmp-${dead}-abcdef/fs/deep`), { recursive: true });
    await mkdir(join(s.dir, `.tmp-${process.pid}-abcdef/fs`), { recursive: true });
    await mkdir(join(s.dir, `.trash-${dead}-abcdef`), { recursive: true });
    await writeFile(join(s.dir, 'leases', `${dead}-abcdef`), `${chain.chainIds[0]}\n`);
    // what a process killed while taking a lock leaves
    await writeFile(join(s.dir, `.gc.lock.new-${dead}-abcdef`), String(dead));
    await writeFile(join(s.dir, 'locks', `abc.new-${dead}-abcdef`), String(dead));
    await writeFile(join(s.dir, 'locks', `abc.new-${process.pid}-abcdef`), String(process.pid));
    const r = await s.gc(new Set());
    assert.equal(r.removed, 1); // the snapshot only a dead process leased
    assert.deepEqual(await areaNames(s), [`.tmp-${process.pid}-abcdef`]);
    assert.deepEqual(await readdir(join(s.dir, 'leases')), []);
    assert.deepEqual(await readdir(join(s.dir, 'locks')), [`abc.new-${process.pid}-abcdef`]);
    await rm(join(s.dir, `.tmp-${process.pid}-abcdef`), { recursive: true });
  });

  it('list ignores a tampered snapshot.json; has() refuses a non-digest', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, { layers: [[{ path: 'a' }], [{ path: 'b' }]] });
    const s = await Snapshots.open(join(root, 'store'));
    const chain = await s.prepare(layers, layout);
    const metaPath = join(chain.dirs[1]!, '..', 'snapshot.json');
    const meta = JSON.parse(await readFile(metaPath, 'utf8'));
    await writeFile(metaPath, JSON.stringify({ ...meta, chainId: chain.chainIds[0] }));
    const listed = await s.list();
    assert.deepEqual(
      listed.map((i) => i.chainId),
      [chain.chainIds[0]],
    );
    assert.ok((listed[0]?.size ?? 0) > 0);
    assert.throws(() => s.dirOf('sha256:../../x' as Digest), { code: 'ERR_INVALID_DIGEST' });
  });

  it('20 containers over one chain: writes land in their uppers, the snapshots stay as they were', async (t) => {
    // a tmpfs of its own, so that other tests' files do not move its free space
    const root = join(await scratch(t), 'fs');
    await mkdir(root);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512m', 'tmpfs', root]);
    const files = Array.from({ length: 50 }, (_, i) => ({
      path: `usr/lib/f${i}`,
      content: 'z'.repeat(100_000),
    }));
    const { layout, layers } = await layoutWith(root, {
      layers: [files, [{ path: 'etc/conf', content: 'v1' }]],
    });
    const s = await Snapshots.open(join(root, 'store'));
    const chain = await s.prepare(layers, layout);
    const before = await Promise.all(chain.dirs.map(treeHash));
    const snapBytes = await diskUsage(s.dir);
    const free0 = statfsSync(root).bfree * statfsSync(root).bsize;
    const N = 20;
    for (let i = 0; i < N; i++) {
      const c = join(root, 'containers', String(i));
      await mountChain(chain.dirs, join(c, 'merged'), { upper: join(c, 'upper'), work: join(c, 'work') });
      await writeFile(join(c, 'merged', 'etc/conf'), `container ${i}`);
      await writeFile(join(c, 'merged', 'usr/lib/f0'), 'changed');
      await rm(join(c, 'merged', 'usr/lib/f1'));
    }
    for (let i = 0; i < N; i++) {
      const c = join(root, 'containers', String(i));
      assert.equal(await readFile(join(c, 'merged', 'etc/conf'), 'utf8'), `container ${i}`);
      assert.equal(await readFile(join(c, 'upper', 'etc/conf'), 'utf8'), `container ${i}`);
      assert.equal(await readFile(join(c, 'merged', 'usr/lib/f2'), 'utf8'), 'z'.repeat(100_000));
    }
    const free1 = statfsSync(root).bfree * statfsSync(root).bsize;
    const grown = free0 - free1;
    let uppers = 0;
    for (let i = 0; i < N; i++) uppers += await diskUsage(join(root, 'containers', String(i), 'upper'));
    t.diagnostic(
      `snapshot area ${snapBytes} bytes; ${N} containers grew the disk by ${grown} bytes (uppers ${uppers})`,
    );
    // each container costs its upper, not a copy of the chain
    assert.ok(grown < snapBytes, `disk grew by ${grown}, the chain is ${snapBytes}`);
    assert.ok(uppers < snapBytes / 4, `uppers take ${uppers}`);
    assert.deepEqual(await Promise.all(chain.dirs.map(treeHash)), before);
    assert.equal(await diskUsage(s.dir), snapBytes);
  });

  it('adopt: a container upper becomes a snapshot on top of its chain', async (t) => {
    const root = await scratch(t);
    const { layout, layers } = await layoutWith(root, {
      layers: [
        [
          { path: 'etc/a', content: 'a' },
          { path: 'etc/b', content: 'b' },
          { path: 'd/x', content: 'x' },
        ],
      ],
    });
    const s = await Snapshots.open(join(root, 'store'));
    const chain = await s.prepare(layers, layout);
    const c = join(root, 'c');
    await mountChain(chain.dirs, join(c, 'merged'), { upper: join(c, 'upper'), work: join(c, 'work') });
    await writeFile(join(c, 'merged', 'etc/a'), 'A');
    await rm(join(c, 'merged', 'etc/b'));
    await rm(join(c, 'merged', 'd'), { recursive: true });
    await mkdir(join(c, 'merged', 'd'));
    await writeFile(join(c, 'merged', 'd/y'), 'y');
    const want = await describeTree(join(c, 'merged'), TREE);
    spawnSync('umount', [join(c, 'merged')]);
    const diff = await diffOverlayUpper(join(c, 'upper'), {
      destination: join(root, 'layer.tar'),
      compression: 'none',
    });
    const adopted = await s.adopt(chain.chainIds[0], diff.diffId, join(c, 'upper'));
    assert.equal(adopted.chainId, chainIdOf(chain.chainIds[0], diff.diffId));
    assert.equal(adopted.dir, s.dirOf(adopted.chainId));
    await assert.rejects(readdir(join(c, 'upper')), { code: 'ENOENT' }); // moved, not copied
    await mountChain([...chain.dirs, adopted.dir], join(root, 'view'));
    assert.deepEqual(
      compareTrees(await describeTree(join(root, 'view'), TREE), want, ['adopted', 'container']),
      [],
    );
    // the same again: the existing snapshot is used, the new upper is consumed
    await mkdir(join(root, 'upper2'));
    assert.deepEqual(await s.adopt(chain.chainIds[0], diff.diffId, join(root, 'upper2')), adopted);
    await assert.rejects(readdir(join(root, 'upper2')), { code: 'ENOENT' });
    // a parent that does not exist
    await mkdir(join(root, 'upper3'));
    await assert.rejects(s.adopt(sha('nothing'), diff.diffId, join(root, 'upper3')), {
      code: 'ERR_NOT_FOUND',
    });
    // and a prepare of the layer tar gives the same tree as the adopted upper
    const s2 = await Snapshots.open(join(root, 'store2'));
    const tarBytes = await readFile(join(root, 'layer.tar'));
    const tarDesc: Descriptor = {
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      digest: digestBytes(tarBytes),
      size: tarBytes.length,
    };
    await layout.push(tarDesc, tarBytes);
    const c2 = await s2.prepare([...layers, { descriptor: tarDesc, diffId: diff.diffId }], layout);
    assert.equal(c2.chainIds[1], adopted.chainId);
    await mountChain(c2.dirs, join(root, 'view2'));
    assert.deepEqual(
      compareTrees(await describeTree(join(root, 'view2'), TREE), want, ['prepared', 'container']),
      [],
    );
  });
});

describe('Snapshots of the fixture images equal a plain unpack', { skip: fixtureSkip }, () => {
  let set: FixtureSet;
  before(async () => {
    set = await getFixtures();
  });

  for (const name of ['busybox', 'layers', 'layers-zstd'] as const) {
    it(name, async (t) => {
      const fx = set.images.find((i) => i.name === name);
      if (!fx) return t.skip(`no fixture ${name}`);
      const root = await scratch(t);
      const layout = await openLayout(fx.layout);
      const layers = await imageLayers(layout, fx.location.slice(fx.location.lastIndexOf(':') + 1));
      const s = await Snapshots.open(join(root, 'store'));
      const chain = await s.prepare(layers, layout);
      const merged = join(root, 'merged');
      await mountChain(chain.dirs, merged);
      const plain = join(root, 'plain');
      await plainUnpack(layout, layers, plain);
      const { diffs, splitLinks } = await compareMerged(merged, plain);
      t.diagnostic(`hard links to lower layers, copied: ${splitLinks.join(' ') || 'none'}`);
      // the crafted layers link to lower files in hl/ (and only there)
      assert.ok(
        splitLinks.every((p) => p.startsWith('hl/')),
        splitLinks.join(' '),
      );
      assert.equal(splitLinks.length, name === 'busybox' ? 0 : 2);
      assert.deepEqual(diffs, []);
    });
  }
});
