// Tests of diffTrees / diffOverlayUpper: a rich tree round-trips through GNU tar; the layer's
// entries as tar-stream (an independent parser) reads them — order, owners, PAX, xattrs, hard
// links, devices, names that are not UTF-8; determinism (same bytes twice, whatever the
// concurrency, SOURCE_DATE_EPOCH against touched mtimes); what a diff against a lower tree
// contains; overlayfs uppers made by a real overlay mount; errors and destinations.

import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { MediaType } from '../spec/media-types.js';
import { tempDir } from '../testing/tmp.js';
import { compareTrees, describeTree } from '../testing/tree.js';
import { diffOverlayUpper, diffTrees } from './diff.js';
import {
  bytes,
  fixTimes,
  HAVE_SETFATTR,
  have,
  IS_ROOT,
  LONG_DIR,
  LONG_NAME,
  LONG_TARGET,
  layerTar,
  listLayer,
  names,
  ROOT_SKIP,
  richTree,
  setfattr,
  sh,
  write,
} from './diff-fixtures.test.js';

const XATTR_SKIP = HAVE_SETFATTR ? false : 'setfattr (Debian package attr) is not installed';

function allPaths(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const d of readdirSync(join(root, rel), { withFileTypes: true })) {
    const r = rel === '' ? d.name : `${rel}/${d.name}`;
    out.push(r);
    if (d.isDirectory()) out.push(...allPaths(root, r));
  }
  return out;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StratumError, `expected a StratumError, got ${String(e)}`);
    return e.code;
  }
  assert.fail('expected an error');
}

describe('diffTrees with no lower tree', () => {
  it('round-trips a rich tree through GNU tar (types, modes, owners, contents, links, xattrs)', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const layer = join(dir, 'layer.tar.gz');
    const r = await diffTrees(undefined, src, { destination: layer });
    assert.equal(r.mediaType, MediaType.OciLayerGzip);
    assert.equal(r.compression, 'gzip');
    assert.deepEqual(r.warnings, []);
    const tar = layerTar(layer);
    assert.equal(r.diffId, digestBytes(tar));
    assert.equal(r.digest, digestBytes(readFileSync(layer)));
    assert.equal(r.size, readFileSync(layer).length);
    assert.equal(r.bytes, tar.length);
    sh('gzip', ['-t', layer]);

    const dst = join(dir, 'dst');
    mkdirSync(dst);
    const xattrFlags = HAVE_SETFATTR ? ['--xattrs', '--xattrs-include=*'] : [];
    sh('tar', [
      '-x',
      '-f',
      layer,
      '-C',
      dst,
      '--numeric-owner',
      '-p',
      ...(IS_ROOT ? ['--same-owner'] : []),
      ...xattrFlags,
    ]);
    const opts = { mtimes: true, ignoreXattrs: ['trusted.overlay.'] } as const;
    const want = await describeTree(src, opts);
    const got = await describeTree(dst, opts);
    assert.deepEqual(compareTrees(want, got, ['source', 'extracted']), []);
    assert.ok(
      got.some((e) => e.hardlinks?.length === 2),
      'the hard link triple survives',
    );
  });

  it('writes entries depth first, sorted by name bytes, parents first, numeric owners, whole-second mtimes', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    for (const f of ['b', 'a-b', 'a/b', 'a/.hidden', 'A', '_', 'a/c/d', 'a.b']) write(src, f, f);
    const layer = join(dir, 'l.tar');
    utimesSync(join(src, 'b'), 1_600_000_000.75, 1_600_000_000.75);
    const r = await diffTrees(undefined, src, { destination: layer, compression: 'none' });
    assert.equal(r.mediaType, MediaType.OciLayer);
    assert.equal(r.digest, r.diffId);
    const entries = await listLayer(layer);
    assert.deepEqual(names(entries), [
      'A',
      '_',
      'a/',
      'a/.hidden',
      'a/b',
      'a/c/',
      'a/c/d',
      'a-b',
      'a.b',
      'b',
    ]);
    assert.equal(r.entries, entries.length);
    for (const e of entries) {
      assert.equal(e.uname, '');
      assert.equal(e.gname, '');
      assert.equal(Number.isInteger(e.mtime), true);
      for (const k of Object.keys(e.pax)) assert.ok(!/^(atime|ctime|mtime)$/.test(k), `no ${k} record`);
    }
    assert.equal(entries.find((e) => e.name === 'b')?.mtime, 1_600_000_000);
    // the archive ends with two zero blocks and nothing else
    const tar = readFileSync(layer);
    assert.equal(tar.length % 512, 0);
    assert.ok(tar.subarray(tar.length - 1024).every((b) => b === 0));
  });

  it('writes hard links as link entries to the first path, and symlinks with their targets', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const layer = join(dir, 'l.tar');
    await diffTrees(undefined, src, { destination: layer, compression: 'none' });
    const byName = new Map((await listLayer(layer)).map((e) => [e.name, e]));
    assert.equal(byName.get('hard/a')?.type, 'file');
    assert.equal(byName.get('hard/a')?.size, 15);
    for (const n of ['hard/sub/b', 'hard/z']) {
      assert.equal(byName.get(n)?.type, 'link');
      assert.equal(byName.get(n)?.linkname, 'hard/a');
      assert.equal(byName.get(n)?.size, 0);
    }
    assert.equal(byName.get('links/rel')?.linkname, '../small.txt');
    assert.equal(byName.get('links/long-target')?.linkname, LONG_TARGET);
    assert.equal(byName.get('links/long-target')?.pax.linkpath, LONG_TARGET);
    assert.equal(byName.get('fifo')?.type, 'fifo');
    assert.equal(byName.get('modes/setuid')?.mode, 0o4755);
    assert.equal(byName.get('modes/setgid-dir/')?.mode, 0o2755);
    assert.equal(byName.get('modes/sticky-dir/')?.mode, 0o1777);
    if (IS_ROOT) assert.equal(byName.get('modes/none')?.mode, 0);
    // a long name in the ustar prefix where it fits, in PAX where it does not
    assert.deepEqual(byName.get(`${LONG_DIR}/short`)?.pax, {});
    assert.equal(byName.get(`${LONG_DIR}/${LONG_NAME}`)?.pax.path, `${LONG_DIR}/${LONG_NAME}`);
    assert.equal(byName.get(`${LONG_DIR}/${LONG_NAME}`)?.sha256, digestBytes('deep and long\n').slice(7));
  });

  it('records owners, large ids and device numbers', { skip: ROOT_SKIP }, async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const layer = join(dir, 'l.tar');
    await diffTrees(undefined, src, { destination: layer, compression: 'none' });
    const byName = new Map((await listLayer(layer)).map((e) => [e.name, e]));
    assert.deepEqual([byName.get('small.txt')?.uid, byName.get('small.txt')?.gid], [1234, 5678]);
    const big = byName.get('big/text.txt');
    // ustar cannot hold them: 0 in the header, the real ids in PAX records
    assert.deepEqual([big?.uid, big?.gid, big?.pax.uid, big?.pax.gid], [0, 0, '3000000', '3000001']);
    assert.deepEqual([byName.get('links/abs')?.uid, byName.get('links/abs')?.gid], [7, 8]);
    const nul = byName.get('null-dev');
    assert.deepEqual([nul?.type, nul?.devmajor, nul?.devminor], ['character-device', 1, 3]);
    const blk = byName.get('block-dev');
    assert.deepEqual([blk?.type, blk?.devmajor, blk?.devminor], ['block-device', 7, 200]);
    const wide = byName.get('big-minor');
    assert.deepEqual([wide?.devmajor, wide?.devminor], [240, 1048575]);
  });

  it('writes xattrs as SCHILY.xattr with their exact bytes, never trusted.overlay.*', {
    skip: XATTR_SKIP,
  }, async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    if (IS_ROOT) setfattr(join(src, 'small.txt'), 'security.selinux', 'system_u:object_r:host_t:s0');
    const layer = join(dir, 'l.tar');
    await diffTrees(undefined, src, { destination: layer, compression: 'none' });
    const tar = readFileSync(layer);
    assert.equal(tar.includes('trusted.overlay'), false, 'no overlay xattr leaks');
    assert.equal(tar.includes('security.selinux'), false, 'no host selinux label by default');
    const byName = new Map((await listLayer(layer)).map((e) => [e.name, e]));
    assert.equal(byName.get('small.txt')?.pax['SCHILY.xattr.user.comment'], 'plain text');
    assert.equal(byName.get('one')?.pax['SCHILY.xattr.user.empty'], '');
    assert.equal(byName.get('empty-dir/')?.pax['SCHILY.xattr.user.dir'], 'on a directory');
    // binary values: find the record's raw bytes in the tar
    assert.ok(tar.includes(Buffer.from('SCHILY.xattr.user.binary=\x00\xff\x7f\x0a\x3d\n', 'latin1')));
    if (IS_ROOT) {
      assert.ok(byName.get('modes/setuid')?.pax['SCHILY.xattr.security.capability'] !== undefined);
      assert.equal(byName.get('links/rel')?.pax['SCHILY.xattr.trusted.on-link'], 'yes');
    }
    // a filter replaces the default
    const layer2 = join(dir, 'l2.tar');
    await diffTrees(undefined, src, {
      destination: layer2,
      compression: 'none',
      xattrFilter: (n) => n.startsWith('security.'),
    });
    const tar2 = readFileSync(layer2);
    assert.equal(tar2.includes('user.comment'), false);
    assert.equal(tar2.includes('security.selinux'), IS_ROOT);
    assert.equal(tar2.includes('trusted.overlay'), false, 'never, whatever the filter');
    // and xattrs: false leaves them all out
    const layer3 = join(dir, 'l3.tar');
    await diffTrees(undefined, src, { destination: layer3, compression: 'none', xattrs: false });
    assert.equal(readFileSync(layer3).includes('SCHILY.xattr'), false);
  });

  it('passes names that are not UTF-8 through byte for byte', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    mkdirSync(src);
    const raw = Buffer.concat([Buffer.from(`${src}/`), Buffer.from([0x62, 0x69, 0x6e, 0xff, 0xfe, 0x0a])]);
    writeFileSync(raw, 'latin');
    const long = Buffer.concat([Buffer.from(`${src}/`), Buffer.alloc(120, 0xe9)]); // needs PAX
    writeFileSync(long, 'long');
    const layer = join(dir, 'l.tar');
    await diffTrees(undefined, src, { destination: layer, compression: 'none' });
    const got = names(await listLayer(layer));
    assert.equal(got[0], 'bin\xff\xfe\n');
    // the long one is a PAX path (tar-stream decodes PAX as UTF-8): look at the raw record
    const tar = readFileSync(layer);
    assert.ok(
      tar.includes(Buffer.concat([Buffer.from(' path='), Buffer.alloc(120, 0xe9), Buffer.from('\n')])),
    );
    assert.ok(tar.includes('hdrcharset=BINARY'));
    assert.equal(got.length, 2);
  });

  it('leaves out sockets and names that would read as whiteouts, with warnings', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    write(src, 'keep', 'k');
    write(src, '.wh.fake', '');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(src, 'sock'), resolve));
    t.after(() => server.close());
    const layer = join(dir, 'l.tar');
    const r = await diffTrees(undefined, src, { destination: layer, compression: 'none' });
    assert.deepEqual(names(await listLayer(layer)), ['keep']);
    assert.equal(r.warnings.length, 2);
    assert.match(r.warnings.join('\n'), /socket "sock"/);
    assert.match(r.warnings.join('\n'), /"\.wh\.fake"/);
  });
});

describe('determinism', () => {
  it('the same tree gives the same bytes, whatever the gzip concurrency', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const a = await diffTrees(undefined, src, { destination: join(dir, 'a') });
    const b = await diffTrees(undefined, src, { destination: join(dir, 'b'), concurrency: 1 });
    const c = await diffTrees(undefined, src, { destination: join(dir, 'c'), concurrency: 7 });
    assert.deepEqual(readFileSync(join(dir, 'a')), readFileSync(join(dir, 'b')));
    assert.deepEqual(readFileSync(join(dir, 'a')), readFileSync(join(dir, 'c')));
    assert.equal(a.digest, b.digest);
    assert.equal(a.digest, c.digest);
    // a copy of the tree (other inodes, same metadata) gives the same layer
    const copy = join(dir, 'copy');
    sh('cp', ['-a', src, copy]);
    const d = await diffTrees(undefined, copy, { destination: join(dir, 'd') });
    assert.equal(d.digest, a.digest);
    // one zlib stream: same tar, other compressed bytes, still one valid gzip
    const s = await diffTrees(undefined, src, { destination: join(dir, 's'), gzipEngine: 'stream' });
    assert.equal(s.diffId, a.diffId);
    sh('gzip', ['-t', join(dir, 's')]);
  });

  it('zstd and uncompressed layers are deterministic too, with the same diffID', {
    skip: have('zstd') ? false : 'zstd not installed',
  }, async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const z1 = await diffTrees(undefined, src, { destination: join(dir, 'z1'), compression: 'zstd' });
    const z2 = await diffTrees(undefined, src, { destination: join(dir, 'z2'), compression: 'zstd' });
    const n = await diffTrees(undefined, src, { destination: join(dir, 'n'), compression: 'none' });
    assert.equal(z1.mediaType, MediaType.OciLayerZstd);
    assert.equal(z1.digest, z2.digest);
    assert.equal(z1.diffId, n.diffId);
    assert.deepEqual(layerTar(join(dir, 'z1')), readFileSync(join(dir, 'n')));
  });

  it('with SOURCE_DATE_EPOCH, touching every mtime changes nothing', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const epoch = 1_500_000_000;
    const before = await diffTrees(undefined, src, { destination: join(dir, 'a'), sourceDateEpoch: epoch });
    const plainBefore = await diffTrees(undefined, src, {
      destination: join(dir, 'p'),
      sourceDateEpoch: null,
    });
    // a time surely unlike the one the files were made at (2030), later than the epoch
    const touched = 1_900_000_000.25;
    for (const p of allPaths(src)) sh('touch', ['-h', '-d', `@${touched}`, join(src, p)]);
    const after = await diffTrees(undefined, src, {
      destination: join(dir, 'b'),
      sourceDateEpoch: new Date(epoch * 1000),
    });
    assert.equal(after.digest, before.digest);
    const plainAfter = await diffTrees(undefined, src, {
      destination: join(dir, 'q'),
      sourceDateEpoch: null,
    });
    assert.notEqual(plainAfter.diffId, plainBefore.diffId, 'without the epoch the mtimes show');
    // mtimes older than the epoch are kept, newer ones clamped
    for (const e of await listLayer(join(dir, 'b'))) assert.equal(e.mtime, epoch);
    // the environment variable works the same way
    const saved = process.env.SOURCE_DATE_EPOCH;
    process.env.SOURCE_DATE_EPOCH = String(epoch);
    try {
      const env = await diffTrees(undefined, src, { destination: join(dir, 'c') });
      assert.equal(env.digest, before.digest);
      process.env.SOURCE_DATE_EPOCH = "12 o'clock";
      assert.equal(
        await code(diffTrees(undefined, src, { destination: join(dir, 'd') })),
        'ERR_INVALID_ARGUMENT',
      );
      assert.equal(existsSync(join(dir, 'd')), false);
    } finally {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    }
  });
});

/** A lower tree and an upper copy of it with every kind of change. */
function lowerUpper(dir: string): { lower: string; upper: string } {
  const lower = join(dir, 'lower');
  const upper = join(dir, 'upper');
  write(lower, 'etc/keep', 'unchanged\n');
  write(lower, 'etc/edit-same-size', 'version 1\n');
  write(lower, 'etc/edit-size', 'short\n');
  write(lower, 'etc/chmod', 'x', 0o644);
  write(lower, 'etc/gone', 'bye');
  write(lower, 'gone-dir/a', 'a');
  write(lower, 'gone-dir/sub/b', 'b');
  write(lower, 'dir-to-file/x', 'x');
  write(lower, 'file-to-dir', 'f');
  write(lower, 'deep/er/unchanged', 'u');
  write(lower, 'deep/er/est/touched', 't');
  write(lower, 'emptied/a', 'a');
  write(lower, 'emptied/b', 'b');
  symlinkSync('target-1', join(lower, 'etc/link'));
  symlinkSync('same', join(lower, 'etc/same-link'));
  fixTimes(
    lower,
    allPaths(lower).filter((p) => !p.endsWith('link')),
  );
  sh('cp', ['-a', lower, upper]);

  writeFileSync(join(upper, 'etc/edit-same-size'), 'version 2\n'); // same size…
  fixTimes(upper, ['etc/edit-same-size']); // …and the same whole-second mtime: content decides
  writeFileSync(join(upper, 'etc/edit-size'), 'longer now\n');
  chmodSync(join(upper, 'etc/chmod'), 0o600);
  rmSync(join(upper, 'etc/gone'));
  rmSync(join(upper, 'gone-dir'), { recursive: true });
  rmSync(join(upper, 'dir-to-file'), { recursive: true });
  writeFileSync(join(upper, 'dir-to-file'), 'now a file');
  rmSync(join(upper, 'file-to-dir'));
  write(upper, 'file-to-dir/inside', 'i');
  write(upper, 'new/dir/file', 'new');
  writeFileSync(join(upper, 'deep/er/est/touched'), 'T');
  rmSync(join(upper, 'emptied'), { recursive: true });
  write(upper, 'emptied/c', 'c');
  rmSync(join(upper, 'etc/link'));
  symlinkSync('target-2', join(upper, 'etc/link'));
  // restore the mtimes of untouched parents the removals changed, so only real changes show
  return { lower, upper };
}

describe('diffTrees against a lower tree', () => {
  it('writes what changed: edits, chmods, deletions as whiteouts, replacements, parents first', async (t) => {
    const dir = await tempDir(t);
    const { lower, upper } = lowerUpper(dir);
    const layer = join(dir, 'l.tar');
    const r = await diffTrees(lower, upper, { destination: layer, compression: 'none' });
    const entries = await listLayer(layer);
    assert.deepEqual(
      names(entries),
      [
        'deep/',
        'deep/er/',
        'deep/er/est/',
        'deep/er/est/touched',
        'dir-to-file',
        'emptied/',
        'emptied/.wh.a',
        'emptied/.wh.b',
        'emptied/c',
        'etc/',
        'etc/.wh.gone',
        'etc/chmod',
        'etc/edit-same-size',
        'etc/edit-size',
        'etc/link',
        'file-to-dir/',
        'file-to-dir/inside',
        '.wh.gone-dir',
        'new/',
        'new/dir/',
        'new/dir/file',
      ].sort((a, b) => {
        // depth-first order with the whiteout sorted under its own name
        const ka = a.replace(/\/$/, '').split('/');
        const kb = b.replace(/\/$/, '').split('/');
        for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
          if (ka[i] !== kb[i]) return (ka[i] as string) < (kb[i] as string) ? -1 : 1;
        }
        return ka.length - kb.length;
      }),
    );
    assert.equal(r.entries, entries.length);
    const byName = new Map(entries.map((e) => [e.name, e]));
    assert.equal(byName.get('etc/link')?.linkname, 'target-2');
    assert.equal(byName.get('etc/chmod')?.mode, 0o600);
    assert.equal(byName.get('etc/.wh.gone')?.size, 0);
    assert.equal(byName.get('etc/.wh.gone')?.type, 'file');
    assert.equal(byName.get('.wh.gone-dir')?.mode, 0);
    assert.equal(byName.get('dir-to-file')?.type, 'file');
  });

  it('compares file contents only when the mtimes cannot tell (containerd’s rule), or always when asked', async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, 'lower');
    write(lower, 'whole', 'aaaa');
    write(lower, 'fraction', 'aaaa');
    write(lower, 'same', 'same');
    utimesSync(join(lower, 'whole'), 1_600_000_000, 1_600_000_000);
    utimesSync(join(lower, 'fraction'), 1_600_000_000.5, 1_600_000_000.5);
    utimesSync(join(lower, 'same'), 1_600_000_000, 1_600_000_000);
    const upper = join(dir, 'upper');
    sh('cp', ['-a', lower, upper]);
    writeFileSync(join(upper, 'whole'), 'bbbb');
    writeFileSync(join(upper, 'fraction'), 'bbbb');
    utimesSync(join(upper, 'whole'), 1_600_000_000, 1_600_000_000);
    utimesSync(join(upper, 'fraction'), 1_600_000_000.5, 1_600_000_000.5);
    await diffTrees(lower, upper, { destination: join(dir, 'auto'), compression: 'none' });
    // whole seconds prove nothing: compared and found changed. Equal sub-second mtimes are
    // trusted, as containerd trusts them.
    assert.deepEqual(names(await listLayer(join(dir, 'auto'))), ['whole']);
    await diffTrees(lower, upper, {
      destination: join(dir, 'always'),
      compression: 'none',
      compareContent: 'always',
    });
    assert.deepEqual(names(await listLayer(join(dir, 'always'))), ['fraction', 'whole']);
    // a touched file whose content did not change: mtime differs, so it is in (auto) or not (always)
    utimesSync(join(upper, 'same'), 1_700_000_000, 1_700_000_000);
    await diffTrees(lower, upper, { destination: join(dir, 'touch'), compression: 'none' });
    assert.deepEqual(names(await listLayer(join(dir, 'touch'))), ['same', 'whole']);
    await diffTrees(lower, upper, {
      destination: join(dir, 'touch2'),
      compression: 'none',
      compareContent: 'always',
    });
    assert.deepEqual(names(await listLayer(join(dir, 'touch2'))), ['fraction', 'whole']);
  });

  it('an identical copy gives an empty layer', async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, 'lower');
    richTree(lower);
    const upper = join(dir, 'upper');
    sh('cp', ['-a', lower, upper]);
    const r = await diffTrees(lower, upper, { destination: join(dir, 'l'), compression: 'none' });
    assert.equal(r.entries, 0);
    assert.equal(r.bytes, 1024);
  });

  it('sees xattr, owner and symlink-target changes', { skip: XATTR_SKIP }, async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, 'lower');
    write(lower, 'x', 'x');
    write(lower, 'y', 'y');
    setfattr(join(lower, 'x'), 'user.v', '1');
    fixTimes(lower, ['x', 'y']);
    const upper = join(dir, 'upper');
    sh('cp', ['-a', '--preserve=all', lower, upper]);
    setfattr(join(upper, 'x'), 'user.v', '2');
    if (IS_ROOT) sh('chown', ['5:5', join(upper, 'y')]);
    await diffTrees(lower, upper, { destination: join(dir, 'l'), compression: 'none' });
    const e = await listLayer(join(dir, 'l'));
    assert.deepEqual(names(e), IS_ROOT ? ['x', 'y'] : ['x']);
    assert.equal(e[0]?.pax['SCHILY.xattr.user.v'], '2');
  });

  it("opaque: 'auto' marks a directory whose old entries are all gone; a function names them", async (t) => {
    const dir = await tempDir(t);
    const { lower, upper } = lowerUpper(dir);
    await diffTrees(lower, upper, { destination: join(dir, 'auto'), compression: 'none', opaque: 'auto' });
    const auto = names(await listLayer(join(dir, 'auto')));
    assert.deepEqual(
      auto.filter((n) => n.startsWith('emptied')),
      ['emptied/', 'emptied/.wh..wh..opq', 'emptied/c'],
    );
    assert.ok(auto.includes('etc/.wh.gone'), 'etc keeps entries, so it gets whiteouts');
    await diffTrees(lower, upper, {
      destination: join(dir, 'fn'),
      compression: 'none',
      opaque: (p) => p === 'etc',
    });
    const fn = await listLayer(join(dir, 'fn'));
    const etc = names(fn).filter((n) => n.startsWith('etc'));
    // opaque: the marker right after the directory, then everything it holds now
    assert.deepEqual(etc, [
      'etc/',
      'etc/.wh..wh..opq',
      'etc/chmod',
      'etc/edit-same-size',
      'etc/edit-size',
      'etc/keep',
      'etc/link',
      'etc/same-link',
    ]);
    // the root itself can be opaque
    await diffTrees(lower, upper, {
      destination: join(dir, 'root'),
      compression: 'none',
      opaque: (p) => p === '',
    });
    const root = names(await listLayer(join(dir, 'root')));
    assert.equal(root[0], '.wh..wh..opq');
    assert.equal(
      root.some((n) => n.includes('.wh.gone')),
      false,
    );
    assert.equal(root.length, 1 + allPaths(upper).length);
  });

  it('opaque() sees paths as UTF-8 text', async (t) => {
    const dir = await tempDir(t);
    const lower = join(dir, 'lower');
    write(lower, 'ünï/old', 'o');
    const upper = join(dir, 'upper');
    write(upper, 'ünï/new', 'n');
    const seen: string[] = [];
    await diffTrees(lower, upper, {
      destination: join(dir, 'l'),
      compression: 'none',
      opaque: (p) => {
        seen.push(p);
        return p === 'ünï';
      },
    });
    assert.ok(seen.includes('ünï'));
    const got = names(await listLayer(join(dir, 'l'))).map((n) => Buffer.from(n, 'latin1').toString('utf8'));
    assert.deepEqual(got, ['ünï/', 'ünï/.wh..wh..opq', 'ünï/new']);
  });
});

describe('diffOverlayUpper', () => {
  const overlaySkip = !IS_ROOT
    ? 'needs root to mount overlayfs'
    : !readFileSync('/proc/filesystems', 'utf8').includes('overlay')
      ? 'this kernel has no overlayfs'
      : !HAVE_SETFATTR
        ? 'setfattr (Debian package attr) is not installed'
        : false;

  it('turns a real overlay mount’s upper into whiteouts, an opaque marker and the new files', {
    skip: overlaySkip,
  }, async (t) => {
    const dir = await tempDir(t);
    const [L, U, W, M] = ['lower', 'upper', 'work', 'merged'].map((n) => join(dir, n)) as [
      string,
      string,
      string,
      string,
    ];
    for (const d of [U, W, M]) mkdirSync(d);
    write(L, 'etc/passwd', 'root:x:0:0\n');
    write(L, 'etc/hosts', 'localhost\n');
    write(L, 'etc/motd', 'hello\n');
    write(L, 'var/cache/a', 'a');
    write(L, 'var/cache/sub/b', 'b');
    write(L, 'var/log/keep', 'k');
    write(L, 'bin/tool', 'tool', 0o755);
    sh('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${L},upperdir=${U},workdir=${W}`, M]);
    let mounted = true;
    const umount = (): void => {
      if (mounted) sh('umount', [M]);
      mounted = false;
    };
    t.after(umount);
    rmSync(join(M, 'etc/motd'));
    writeFileSync(join(M, 'etc/hosts'), 'localhost\n10.0.0.1 db\n');
    rmSync(join(M, 'var/cache'), { recursive: true });
    mkdirSync(join(M, 'var/cache'));
    writeFileSync(join(M, 'var/cache/fresh'), 'fresh');
    write(M, 'new/file', 'new');
    chmodSync(join(M, 'bin/tool'), 0o700);
    renameSync(join(M, 'var/log/keep'), join(M, 'var/log/moved'));
    umount();

    const layer = join(dir, 'l.tar');
    const r = await diffOverlayUpper(U, { destination: layer, compression: 'none' });
    const entries = await listLayer(layer);
    assert.deepEqual(names(entries), [
      'bin/',
      'bin/tool',
      'etc/',
      'etc/.wh.motd',
      'etc/hosts',
      'new/',
      'new/file',
      'var/',
      'var/cache/',
      'var/cache/.wh..wh..opq',
      'var/cache/fresh',
      'var/log/',
      'var/log/.wh.keep',
      'var/log/moved',
    ]);
    assert.equal(r.entries, entries.length);
    const tar = readFileSync(layer);
    assert.equal(tar.includes('trusted.overlay'), false, 'overlay xattrs never leak');
    const byName = new Map(entries.map((e) => [e.name, e]));
    assert.equal(byName.get('bin/tool')?.mode, 0o700);
    assert.equal(byName.get('etc/.wh.motd')?.type, 'file');
    assert.equal(byName.get('etc/.wh.motd')?.size, 0);
    assert.equal(byName.get('etc/hosts')?.sha256, digestBytes('localhost\n10.0.0.1 db\n').slice(7));
  });

  it('translates 0/0 devices and trusted.overlay.opaque made by hand; other devices stay', {
    skip: overlaySkip,
  }, async (t) => {
    const dir = await tempDir(t);
    const U = join(dir, 'upper');
    write(U, 'a/file', 'f');
    sh('mknod', [join(U, 'a/deleted'), 'c', '0', '0']);
    sh('mknod', [join(U, 'a/null'), 'c', '1', '3']);
    mkdirSync(join(U, 'opaque'));
    setfattr(join(U, 'opaque'), 'trusted.overlay.opaque', 'y');
    setfattr(join(U, 'opaque'), 'trusted.overlay.impure', 'y');
    mkdirSync(join(U, 'xwhiteouts'));
    setfattr(join(U, 'xwhiteouts'), 'trusted.overlay.opaque', 'x'); // "has xwhiteouts", not opaque
    setfattr(join(U, 'a/file'), 'user.kept', 'yes');
    const layer = join(dir, 'l.tar');
    await diffOverlayUpper(U, { destination: layer, compression: 'none' });
    const entries = await listLayer(layer);
    assert.deepEqual(names(entries), [
      'a/',
      'a/.wh.deleted',
      'a/file',
      'a/null',
      'opaque/',
      'opaque/.wh..wh..opq',
      'xwhiteouts/',
    ]);
    assert.equal(entries[2]?.pax['SCHILY.xattr.user.kept'], 'yes');
    assert.equal(entries[3]?.type, 'character-device');
    // the upper root itself opaque: the marker comes first
    setfattr(U, 'trusted.overlay.opaque', 'y');
    await diffOverlayUpper(U, { destination: layer, compression: 'none' });
    assert.equal(names(await listLayer(layer))[0], '.wh..wh..opq');
  });

  it('with userxattr, user.overlay.* is the bookkeeping and never leaks', { skip: XATTR_SKIP }, async (t) => {
    const dir = await tempDir(t);
    const U = join(dir, 'upper');
    write(U, 'o/x', 'x');
    setfattr(join(U, 'o'), 'user.overlay.opaque', 'y');
    setfattr(join(U, 'o/x'), 'user.overlay.origin', '0x00');
    const layer = join(dir, 'l.tar');
    await diffOverlayUpper(U, { destination: layer, compression: 'none', userXattr: true });
    assert.deepEqual(names(await listLayer(layer)), ['o/', 'o/.wh..wh..opq', 'o/x']);
    assert.equal(readFileSync(layer).includes('user.overlay'), false);
  });

  it('refuses uppers whose data lives in the lower layers (metacopy, redirect_dir)', {
    skip: overlaySkip,
  }, async (t) => {
    const dir = await tempDir(t);
    for (const [name, kind] of [
      ['trusted.overlay.metacopy', 'file'],
      ['trusted.overlay.redirect', 'dir'],
    ] as const) {
      const U = join(dir, `upper-${kind}`);
      if (kind === 'file') write(U, 'f', '');
      else mkdirSync(join(U, 'f'), { recursive: true });
      setfattr(join(U, 'f'), name, kind === 'file' ? '' : '/elsewhere');
      const layer = join(dir, `l-${kind}`);
      assert.equal(await code(diffOverlayUpper(U, { destination: layer })), 'ERR_UNSUPPORTED');
      assert.equal(existsSync(layer), false, 'nothing written');
    }
  });
});

describe('destinations and errors', () => {
  it('streams to a Writable with backpressure and ends it', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    richTree(src);
    const file = await diffTrees(undefined, src, { destination: join(dir, 'f') });
    const chunks: Buffer[] = [];
    let ended = false;
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        setImmediate(cb);
      },
      final(cb) {
        ended = true;
        cb();
      },
    });
    const r = await diffTrees(undefined, src, { destination: slow });
    assert.equal(ended, true);
    assert.equal(r.digest, file.digest);
    assert.deepEqual(Buffer.concat(chunks), readFileSync(join(dir, 'f')));
    // zstd through the codec stream into a Writable as well
    if (have('zstd')) {
      const pt = new PassThrough();
      const got: Buffer[] = [];
      pt.on('data', (c: Buffer) => got.push(c));
      const z = await diffTrees(undefined, src, { destination: pt, compression: 'zstd' });
      assert.equal(z.digest, digestBytes(Buffer.concat(got)));
      assert.equal(z.diffId, file.diffId);
    }
  });

  it('a failing Writable fails the diff', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    write(src, 'big', bytes(9 << 20, 'fail'));
    for (const compression of ['none', 'gzip', ...(have('zstd') ? ['zstd' as const] : [])] as const) {
      let writes = 0;
      const bad = new Writable({
        write(_c, _e, cb) {
          // fail on the second write, after the first was taken
          cb(++writes > 1 ? new Error('disk full') : null);
        },
      });
      await assert.rejects(
        diffTrees(undefined, src, { destination: bad, compression }),
        /disk full/,
        compression,
      );
      assert.equal(bad.destroyed, true);
    }
  });

  it('an abort stops the diff with ERR_ABORTED and removes the file', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    for (let i = 0; i < 8; i++) write(src, `f${i}`, bytes(1 << 20, `abort${i}`));
    const ac = new AbortController();
    const dest = join(dir, 'l.tgz');
    const p = diffTrees(undefined, src, { destination: dest, signal: ac.signal, concurrency: 1 });
    setImmediate(() => ac.abort());
    assert.equal(await code(p), 'ERR_ABORTED');
    assert.equal(existsSync(dest), false);
    const pre = AbortSignal.abort();
    assert.equal(await code(diffTrees(undefined, src, { destination: dest, signal: pre })), 'ERR_ABORTED');
    assert.equal(existsSync(dest), false);
  });

  it('refuses bad arguments before writing anything', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    write(src, 'f', 'f');
    const dest = join(dir, 'out');
    assert.equal(
      await code(diffTrees(undefined, join(dir, 'missing'), { destination: dest })),
      'ERR_NOT_FOUND',
    );
    assert.equal(await code(diffTrees(join(dir, 'missing'), src, { destination: dest })), 'ERR_NOT_FOUND');
    assert.equal(
      await code(diffTrees(undefined, join(src, 'f'), { destination: dest })),
      'ERR_INVALID_ARGUMENT',
    );
    assert.equal(
      await code(diffTrees(undefined, src, { destination: dest, level: 11 })),
      'ERR_INVALID_ARGUMENT',
    );
    assert.equal(
      await code(diffTrees(undefined, src, { destination: dest, compression: 'zstd', level: 0 })),
      'ERR_INVALID_ARGUMENT',
    );
    assert.equal(
      await code(diffTrees(undefined, src, { destination: dest, compression: 'lz4' as 'gzip' })),
      'ERR_INVALID_ARGUMENT',
    );
    assert.equal(
      await code(diffTrees(undefined, src, { destination: dest, sourceDateEpoch: -1 })),
      'ERR_INVALID_ARGUMENT',
    );
    assert.equal(
      await code(diffTrees(undefined, src, { destination: dest, opaque: 'sometimes' as 'auto' })),
      'ERR_INVALID_ARGUMENT',
    );
    assert.equal(existsSync(dest), false);
  });

  it('without getfattr: a warning for xattrs "auto", ERR_UNSUPPORTED when they are required', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    write(src, 'f', 'f');
    const saved = process.env.PATH;
    process.env.PATH = join(dir, 'no-programs-here');
    try {
      const r = await diffTrees(undefined, src, { destination: join(dir, 'a') });
      assert.match(r.warnings.join('\n'), /getfattr/);
      assert.equal(
        await code(diffTrees(undefined, src, { destination: join(dir, 'b'), xattrs: true })),
        'ERR_UNSUPPORTED',
      );
      assert.equal(
        await code(diffOverlayUpper(src, { destination: join(dir, 'c'), userXattr: true })),
        'ERR_UNSUPPORTED',
      );
      const off = await diffTrees(undefined, src, { destination: join(dir, 'd'), xattrs: false });
      assert.deepEqual(off.warnings, []);
    } finally {
      process.env.PATH = saved;
    }
  });

  it('a symlink given as the root is followed, symlinks below it are not', async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    write(src, 'f', 'f');
    write(dir, 'outside/secret', 's');
    symlinkSync(join(dir, 'outside'), join(src, 'out'));
    symlinkSync(src, join(dir, 'link'));
    await diffTrees(undefined, join(dir, 'link'), { destination: join(dir, 'o'), compression: 'none' });
    const e = await listLayer(join(dir, 'o'));
    assert.deepEqual(names(e), ['f', 'out']);
    assert.equal(e[1]?.type, 'symlink');
  });

  it('the layer of an unreadable file fails cleanly', {
    skip: IS_ROOT ? 'root reads every file' : false,
  }, async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    write(src, 'secret', 's', 0o000);
    await assert.rejects(diffTrees(undefined, src, { destination: join(dir, 'o') }), /EACCES/);
    assert.equal(existsSync(join(dir, 'o')), false);
  });
});
