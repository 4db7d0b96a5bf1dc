// applyLayer: every entry kind, formats (PAX, GNU, base-256, sparse), compression, xattrs,
// hard links across layers, whiteouts in both forms (including same-layer orders), type
// replacement, change accounting, limits, malformed input. Hostile names: hostile.test.ts.

import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { symlink as fsSymlink, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { findProgram } from '../compression/compression.js';
import { digestBytes } from '../digest/digest.js';
import { tempDir } from '../testing/tmp.js';
import { compareTrees, describeTree } from '../testing/tree.js';
import { type ApplyOptions, type ApplyResult, applyLayer } from './apply.js';
import {
  dir,
  entryBlocks,
  execFileP,
  type FixtureEntry,
  file,
  gzip,
  hardlink,
  isRoot,
  makeTarball,
  streamOf,
  symlink,
} from './apply-fixtures.js';

const haveGetfattr = findProgram('getfattr') !== undefined && findProgram('setfattr') !== undefined;
const haveZstd = findProgram('zstd') !== undefined;

function apply(
  root: string,
  entries: readonly FixtureEntry[] | Buffer,
  opts: Partial<ApplyOptions> = {},
  chunk?: number,
): Promise<ApplyResult> {
  const tar = Buffer.isBuffer(entries) ? entries : makeTarball(entries);
  return applyLayer(root, streamOf(tar, chunk), { form: 'plain', ...opts });
}

async function getXattrs(path: string): Promise<Record<string, string>> {
  const { stdout } = await execFileP('getfattr', [
    '-h',
    '-d',
    '-m',
    '-',
    '-e',
    'hex',
    '--absolute-names',
    path,
  ]);
  const out: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (line.startsWith('#') || eq === -1) continue;
    out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

const hex = (s: string | Buffer): string => `0x${Buffer.from(s).toString('hex')}`;

describe('applyLayer: entry kinds', () => {
  it('regular files, directories, symlinks, hard links with content, modes and mtimes', async (t) => {
    const root = await tempDir(t);
    const r = await apply(root, [
      dir('etc/', { mode: 0o755, mtime: 1_000_000_000 }),
      file('etc/hostname', 'box\n', { mode: 0o644, mtime: 1_100_000_000 }),
      file('bin/su', 'ELF', { mode: 0o4755 }),
      file('bin/wall', 'ELF', { mode: 0o2755 }),
      dir('tmp/', { mode: 0o1777, mtime: 1_200_000_000 }),
      file('secret', 'x', { mode: 0o000 }),
      symlink('etc/localtime', '/usr/share/zoneinfo/UTC', { mtime: 1_300_000_000 }),
      hardlink('etc/hostname2', 'etc/hostname'),
      file('empty', ''),
    ]);
    assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'box\n');
    assert.equal(statSync(join(root, 'bin/su')).mode & 0o7777, 0o4755);
    assert.equal(statSync(join(root, 'bin/wall')).mode & 0o7777, 0o2755);
    assert.equal(statSync(join(root, 'tmp')).mode & 0o7777, 0o1777);
    assert.equal(statSync(join(root, 'secret')).mode & 0o7777, 0o000);
    assert.equal(statSync(join(root, 'empty')).size, 0);
    assert.equal(readlinkSync(join(root, 'etc/localtime')), '/usr/share/zoneinfo/UTC');
    assert.equal(lstatSync(join(root, 'etc/localtime')).mtimeMs, 1_300_000_000_000);
    assert.equal(statSync(join(root, 'etc/hostname')).ino, statSync(join(root, 'etc/hostname2')).ino);
    // directory mtimes are set after their contents are written
    assert.equal(statSync(join(root, 'etc')).mtimeMs, 1_000_000_000_000);
    assert.equal(statSync(join(root, 'tmp')).mtimeMs, 1_200_000_000_000);
    assert.equal(statSync(join(root, 'etc/hostname')).mtimeMs, 1_100_000_000_000);
    // a directory the layer needed but did not carry: 0755
    assert.equal(statSync(join(root, 'bin')).mode & 0o7777, 0o755);
    assert.equal(r.counts.files, 5);
    assert.equal(r.counts.directories, 2);
    assert.equal(r.counts.symlinks, 1);
    assert.equal(r.counts.hardlinks, 1);
    assert.equal(r.entries, 9);
    assert.equal(r.bytes, 4 + 3 + 3 + 1);
    assert.equal(r.compression, 'none');
    assert.equal(
      r.diffID,
      digestBytes(
        makeTarball([
          dir('etc/', { mode: 0o755, mtime: 1_000_000_000 }),
          file('etc/hostname', 'box\n', { mode: 0o644, mtime: 1_100_000_000 }),
          file('bin/su', 'ELF', { mode: 0o4755 }),
          file('bin/wall', 'ELF', { mode: 0o2755 }),
          dir('tmp/', { mode: 0o1777, mtime: 1_200_000_000 }),
          file('secret', 'x', { mode: 0o000 }),
          symlink('etc/localtime', '/usr/share/zoneinfo/UTC', { mtime: 1_300_000_000 }),
          hardlink('etc/hostname2', 'etc/hostname'),
          file('empty', ''),
        ]),
      ),
    );
  });

  it('owners: preserved as root, mapped to a fixed pair, or by a function', {
    skip: isRoot ? false : 'needs root to chown',
  }, async (t) => {
    const entries = [
      dir('d/', { uid: 1000, gid: 1001 }),
      file('d/f', 'x', { uid: 33, gid: 34 }),
      symlink('d/l', 'f', { uid: 7, gid: 8 }),
    ];
    const a = await tempDir(t);
    await apply(a, entries);
    assert.deepEqual([statSync(join(a, 'd')).uid, statSync(join(a, 'd')).gid], [1000, 1001]);
    assert.deepEqual([statSync(join(a, 'd/f')).uid, statSync(join(a, 'd/f')).gid], [33, 34]);
    assert.deepEqual([lstatSync(join(a, 'd/l')).uid, lstatSync(join(a, 'd/l')).gid], [7, 8]);
    const b = await tempDir(t);
    await apply(b, entries, { owner: { uid: 4242, gid: 4343 } });
    for (const p of ['d', 'd/f', 'd/l'])
      assert.deepEqual([lstatSync(join(b, p)).uid, lstatSync(join(b, p)).gid], [4242, 4343]);
    const c = await tempDir(t);
    await apply(c, entries, { owner: (uid, gid) => ({ uid: uid + 100_000, gid: gid + 100_000 }) });
    assert.equal(statSync(join(c, 'd/f')).uid, 100_033);
    const d = await tempDir(t);
    await apply(d, entries, { owner: 'caller' });
    assert.equal(statSync(join(d, 'd/f')).uid, 0);
    // a setgid directory of a lower layer must not give its group to a root-owned file
    const e = await tempDir(t);
    await apply(e, [dir('g/', { mode: 0o2775, gid: 50 })]);
    await apply(e, [
      file('g/f', 'x', { uid: 0, gid: 0 }),
      symlink('g/l', 'f', { uid: 0, gid: 0 }),
      file('g/h', 'x', { gid: 50 }),
    ]);
    assert.equal(statSync(join(e, 'g/f')).gid, 0);
    assert.equal(lstatSync(join(e, 'g/l')).gid, 0);
    assert.equal(statSync(join(e, 'g/h')).gid, 50);
    assert.equal(statSync(join(e, 'g')).mode & 0o7777, 0o2775);
  });

  it('large numbers in base-256 and PAX (uid, gid, size, mtime with a fraction, before 1970)', async (t) => {
    const root = await tempDir(t);
    const big = Buffer.alloc(70_000, 7);
    await apply(root, [
      file('b256', big, { base256: ['size', 'mtime'], mtime: 1_500_000_000 }),
      file('old', 'x', { base256: ['mtime'], mtime: -86_400 }),
      file('frac', 'x', { pax: { mtime: '1234567890.5' } }),
      ...(isRoot ? [file('ids', 'x', { base256: ['uid', 'gid'], uid: 3_000_000, gid: 3_000_001 })] : []),
      ...(isRoot ? [file('paxids', 'x', { pax: { uid: '4000000000', gid: '4000000001' } })] : []),
    ]);
    assert.deepEqual(readFileSync(join(root, 'b256')), big);
    assert.equal(statSync(join(root, 'b256')).mtimeMs, 1_500_000_000_000);
    assert.equal(statSync(join(root, 'old')).mtimeMs, -86_400_000);
    assert.equal(statSync(join(root, 'frac')).mtimeMs, 1_234_567_890_500);
    if (isRoot) {
      assert.equal(statSync(join(root, 'ids')).uid, 3_000_000);
      assert.equal(statSync(join(root, 'paxids')).gid, 4_000_000_001);
    }
  });

  it('long names and links: ustar prefix, PAX path/linkpath, GNU L/K', async (t) => {
    const root = await tempDir(t);
    const deep = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`;
    const long = `${deep}/${'n'.repeat(150)}.txt`;
    const gnu = `${deep}/${'g'.repeat(120)}`;
    const target = `${deep}/${'t'.repeat(130)}`;
    const unicode = 'ünï/cødé/文件.txt';
    await apply(root, [
      file(`${deep}/short-in-prefix.txt`, 'prefix'),
      file(long, 'pax', { pax: { path: long }, name: 'short' } as FixtureEntry),
      file(gnu, 'gnu', { gnuLongName: true, format: 'gnu' }),
      file(target, 'target', { pax: { path: target } }),
      symlink('paxlink', target, { pax: { linkpath: target } }),
      symlink('gnulink', target, { gnuLongLink: true, format: 'gnu' }),
      hardlink('paxhard', 'ignored', { pax: { linkpath: target } }),
      file(unicode, 'utf8', { pax: { path: unicode } }),
    ]);
    assert.equal(readFileSync(join(root, deep, 'short-in-prefix.txt'), 'utf8'), 'prefix');
    assert.equal(readFileSync(join(root, long), 'utf8'), 'pax');
    assert.equal(readFileSync(join(root, gnu), 'utf8'), 'gnu');
    assert.equal(readlinkSync(join(root, 'paxlink')), target);
    assert.equal(readlinkSync(join(root, 'gnulink')), target);
    assert.equal(statSync(join(root, 'paxhard')).ino, statSync(join(root, target)).ino);
    assert.equal(readFileSync(join(root, unicode), 'utf8'), 'utf8');
  });

  it('fifos and device nodes (as root); devices are skipped with a warning otherwise', async (t) => {
    const root = await tempDir(t);
    const warnings: string[] = [];
    const r = await apply(
      root,
      [
        { name: 'dev/null', type: '3', devmajor: 1, devminor: 3, mode: 0o666 },
        { name: 'dev/sda', type: '4', devmajor: 8, devminor: 0, mode: 0o660 },
        { name: 'run/initctl', type: '6', mode: 0o600, mtime: 1_400_000_000 },
      ],
      { onWarning: (w) => warnings.push(w.code) },
    );
    assert.ok(lstatSync(join(root, 'run/initctl')).isFIFO());
    assert.equal(lstatSync(join(root, 'run/initctl')).mode & 0o7777, 0o600);
    assert.equal(lstatSync(join(root, 'run/initctl')).mtimeMs, 1_400_000_000_000);
    if (isRoot) {
      const c = lstatSync(join(root, 'dev/null'));
      assert.ok(c.isCharacterDevice());
      assert.equal(c.rdev, (1 << 8) | 3);
      assert.equal(c.mode & 0o7777, 0o666);
      assert.ok(lstatSync(join(root, 'dev/sda')).isBlockDevice());
      assert.equal(r.counts.devices, 2);
      const s = await tempDir(t);
      const skipped = await apply(s, [{ name: 'null', type: '3', devmajor: 1, devminor: 3 }], {
        devices: 'skip',
      });
      assert.equal(skipped.counts.skipped, 1);
      assert.equal(existsSync(join(s, 'null')), false);
      assert.deepEqual(
        skipped.warnings.map((w) => w.code),
        ['W_DEVICE_SKIPPED'],
      );
    } else {
      assert.deepEqual(warnings, ['W_DEVICE_SKIPPED', 'W_DEVICE_SKIPPED']);
      assert.equal(existsSync(join(root, 'dev/null')), false);
    }
  });

  it('a directory entry over an existing directory keeps its contents and takes the metadata', async (t) => {
    const root = await tempDir(t);
    await apply(root, [dir('d/', { mode: 0o700 }), file('d/lower', 'l')]);
    const r = await apply(root, [dir('d/', { mode: 0o751, mtime: 1_000_000 })], { listChanges: true });
    assert.equal(readFileSync(join(root, 'd/lower'), 'utf8'), 'l');
    assert.equal(statSync(join(root, 'd')).mode & 0o7777, 0o751);
    assert.equal(statSync(join(root, 'd')).mtimeMs, 1_000_000_000);
    assert.deepEqual(r.paths, [{ path: 'd', kind: 'modified', size: 0 }]);
  });

  it('type changes: an existing entry of another type is removed first (never followed)', async (t) => {
    const root = await tempDir(t);
    const outside = await tempDir(t);
    await writeFile(join(outside, 'keep'), 'outside');
    await apply(root, [
      dir('was-dir/'),
      file('was-dir/child', 'c'),
      file('was-file', 'f'),
      symlink('was-link', outside),
      symlink('was-link-to-file', join(outside, 'keep')),
    ]);
    const r = await apply(
      root,
      [file('was-dir', 'now a file'), dir('was-file/'), dir('was-link/'), file('was-link-to-file', 'mine')],
      { listChanges: true },
    );
    assert.equal(readFileSync(join(root, 'was-dir'), 'utf8'), 'now a file');
    assert.ok(lstatSync(join(root, 'was-file')).isDirectory());
    assert.ok(lstatSync(join(root, 'was-link')).isDirectory());
    assert.equal(readFileSync(join(root, 'was-link-to-file'), 'utf8'), 'mine');
    assert.deepEqual(await readdir(outside), ['keep']);
    assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'outside');
    assert.equal(r.changes.modified, 4);
    assert.equal(r.changes.shadowedBytes, 2); // 'c' and 'f'
  });

  it('a later entry for the same path replaces the earlier one (last wins)', async (t) => {
    const root = await tempDir(t);
    const r = await apply(
      root,
      [file('a', 'one'), file('a', 'two'), dir('b/'), file('b/x', 'x'), symlink('b', 'a')],
      {
        listChanges: true,
      },
    );
    assert.equal(readFileSync(join(root, 'a'), 'utf8'), 'two');
    assert.equal(readlinkSync(join(root, 'b')), 'a');
    assert.equal(r.changes.added, 3);
  });

  it('a directory that becomes read-only is still filled, then gets its mode', async (t) => {
    const root = await tempDir(t);
    await apply(root, [
      dir('ro/', { mode: 0o555 }),
      file('ro/a', 'a'),
      dir('ro/sub/', { mode: 0o500 }),
      file('ro/sub/b', 'b'),
    ]);
    assert.equal(statSync(join(root, 'ro')).mode & 0o7777, 0o555);
    assert.equal(statSync(join(root, 'ro/sub')).mode & 0o7777, 0o500);
    assert.equal(readFileSync(join(root, 'ro/sub/b'), 'utf8'), 'b');
  });

  it('the root entry ./ sets the root directory metadata', async (t) => {
    const root = await tempDir(t);
    await apply(root, [dir('./', { mode: 0o711, mtime: 2_000_000 }), file('./a', 'a')]);
    assert.equal(statSync(root).mode & 0o7777, 0o711);
    assert.equal(statSync(root).mtimeMs, 2_000_000_000);
  });

  it('parses at any chunk boundary (1-byte to 1 MiB chunks give the same tree)', async (t) => {
    const entries = [
      dir('a/'),
      file('a/x', Buffer.alloc(1500, 1), { pax: { 'SCHILY.xattr.user.k': 'v', mtime: '1.25' } }),
      file(`a/${'l'.repeat(200)}`, 'long', { gnuLongName: true, format: 'gnu' }),
      symlink('a/s', 'x'),
      hardlink('a/h', 'a/x'),
    ];
    const tar = makeTarball(entries);
    const trees: string[] = [];
    for (const chunk of [1, 7, 511, 512, 513, 1 << 20]) {
      const root = await tempDir(t);
      await applyLayer(root, streamOf(tar, chunk), { form: 'plain' });
      trees.push(JSON.stringify(await describeTree(root, { mtimes: true, xattrs: haveGetfattr })));
    }
    for (const tree of trees) assert.equal(tree, trees[0]);
  });
});

describe('applyLayer: rootless', () => {
  const setpriv = findProgram('setpriv');
  it('as an unprivileged user: read-only lower directories are filled and keep their mode; devices and trusted.* xattrs are skipped with warnings', {
    skip: isRoot && setpriv ? false : 'needs root (to drop to uid 65534 with setpriv)',
  }, async (t) => {
    const base = await tempDir(t);
    const { chown } = await import('node:fs/promises');
    await chown(base, 65534, 65534);
    writeFileSync(
      join(base, 'lower.tar'),
      makeTarball([
        dir('ro/', { mode: 0o555 }),
        file('ro/old', 'old'),
        dir('ro/sub/', { mode: 0o500 }),
        file('ro/sub/x', 'x'),
      ]),
    );
    writeFileSync(
      join(base, 'upper.tar'),
      makeTarball([
        file('ro/new', 'new'),
        file('ro/sub/.wh.x'),
        { name: 'dev/null', type: '3', devmajor: 1, devminor: 3 },
        { name: 'fifo', type: '6' },
        file('f', 'x', { pax: { 'SCHILY.xattr.trusted.t': 'v', 'SCHILY.xattr.user.u': 'v' } }),
        file('owned', 'x', { uid: 123, gid: 456 }),
      ]),
    );
    const script = join(base, 'run.mjs');
    writeFileSync(
      script,
      `import { createReadStream } from 'node:fs';
import { applyLayer } from ${JSON.stringify(new URL('./apply.js', import.meta.url).href)};
const base = process.argv[2];
const root = base + '/root';
const { mkdirSync } = await import('node:fs');
mkdirSync(root);
await applyLayer(root, createReadStream(base + '/lower.tar'), { form: 'plain' });
const r = await applyLayer(root, createReadStream(base + '/upper.tar'), { form: 'plain' });
console.log(JSON.stringify(r.warnings.map((w) => w.code)));
`,
    );
    const { stdout } = await execFileP(setpriv as string, [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      process.execPath,
      script,
      base,
    ]);
    const root = join(base, 'root');
    assert.deepEqual(JSON.parse(stdout), ['W_DEVICE_SKIPPED', 'W_XATTR_SKIPPED']);
    assert.equal(readFileSync(join(root, 'ro/new'), 'utf8'), 'new');
    assert.equal(statSync(join(root, 'ro')).mode & 0o7777, 0o555);
    assert.equal(statSync(join(root, 'ro/sub')).mode & 0o7777, 0o500);
    assert.equal(existsSync(join(root, 'ro/sub/x')), false);
    assert.ok(lstatSync(join(root, 'fifo')).isFIFO());
    assert.equal(existsSync(join(root, 'dev/null')), false);
    assert.equal(statSync(join(root, 'owned')).uid, 65534);
    if (haveGetfattr) assert.deepEqual(await getXattrs(join(root, 'f')), { 'user.u': hex('v') });
  });
});

describe('applyLayer: compression and the diffID', () => {
  const entries = [dir('d/'), file('d/f', Buffer.alloc(300_000, 'z')), symlink('l', 'd/f')];
  const tar = makeTarball(entries);
  const diffID = digestBytes(tar);

  it('gzip: detected, decompressed, hashed', async (t) => {
    const root = await tempDir(t);
    const gz = gzip(tar);
    const r = await applyLayer(root, streamOf(gz, 1000), { form: 'plain' });
    assert.equal(r.compression, 'gzip');
    assert.equal(r.diffID, diffID);
    assert.equal(r.size, tar.length);
    assert.equal(r.compressedSize, gz.length);
    assert.equal(statSync(join(root, 'd/f')).size, 300_000);
  });

  it('zstd: detected and decompressed', { skip: haveZstd ? false : 'no zstd program' }, async (t) => {
    const root = await tempDir(t);
    const dirp = await tempDir(t);
    writeFileSync(join(dirp, 'l.tar'), tar);
    await execFileP('zstd', ['-q', '-3', join(dirp, 'l.tar'), '-o', join(dirp, 'l.tar.zst')]);
    const zst = readFileSync(join(dirp, 'l.tar.zst'));
    const r = await applyLayer(root, streamOf(zst), { form: 'plain' });
    assert.equal(r.compression, 'zstd');
    assert.equal(r.diffID, diffID);
    assert.equal(r.compressedSize, zst.length);
  });

  it('plain tar, and an expected diffID that matches', async (t) => {
    const root = await tempDir(t);
    const r = await applyLayer(root, streamOf(tar), { form: 'plain', diffID });
    assert.equal(r.compression, 'none');
    assert.equal(r.compressedSize, tar.length);
  });

  it('an expected diffID that differs is ERR_DIGEST_MISMATCH', async (t) => {
    const root = await tempDir(t);
    await assert.rejects(
      applyLayer(root, streamOf(tar), { form: 'plain', diffID: digestBytes('other') }),
      (e: Error & { code?: string }) => e.code === 'ERR_DIGEST_MISMATCH',
    );
  });

  it('corrupt gzip is ERR_COMPRESSION', async (t) => {
    const root = await tempDir(t);
    const gz = gzip(tar);
    const mid = Math.floor(gz.length / 2);
    gz.writeUInt16BE(gz.readUInt16BE(mid) ^ 0xffff, mid);
    await assert.rejects(applyLayer(root, streamOf(gz), { form: 'plain' }), (e: Error & { code?: string }) =>
      ['ERR_COMPRESSION', 'ERR_INVALID_ARCHIVE'].includes(e.code ?? ''),
    );
    const whole = gzip(tar);
    const cut = whole.subarray(0, whole.length - 100);
    await assert.rejects(
      applyLayer(await tempDir(t), streamOf(cut), { form: 'plain' }),
      (e: Error & { code?: string }) => e.code === 'ERR_COMPRESSION',
    );
  });

  it('an abort signal stops the apply with ERR_ABORTED', async (t) => {
    const root = await tempDir(t);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      applyLayer(root, streamOf(tar), { form: 'plain', signal: ac.signal }),
      (e: Error & { code?: string }) => e.code === 'ERR_ABORTED',
    );
    // a source that never ends: the abort is what stops it
    const ac2 = new AbortController();
    let n = 0;
    const endless = new Readable({
      read() {
        setImmediate(() => this.push(entryBlocks(file(`f${n++}`, 'x'))));
      },
    });
    const p = applyLayer(await tempDir(t), endless, { form: 'plain', signal: ac2.signal });
    setTimeout(() => ac2.abort(), 50);
    await assert.rejects(p, (e: Error & { code?: string }) => e.code === 'ERR_ABORTED');
    assert.ok(n > 0);
    assert.ok(endless.destroyed);
  });
});

describe('applyLayer: malformed tars', () => {
  const bad = async (
    t: { after: (fn: () => Promise<void>) => void },
    tar: Buffer,
    code = 'ERR_INVALID_ARCHIVE',
  ): Promise<void> => {
    const root = await tempDir(t);
    await assert.rejects(
      applyLayer(root, streamOf(tar), { form: 'plain' }),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, code, e.message);
        return true;
      },
    );
  };

  it('a bad header checksum', async (t) => {
    await bad(t, makeTarball([file('a', 'x'), file('b', 'y', { checksum: 1234 })]));
  });
  it('a truncated body, a truncated header', async (t) => {
    const tar = makeTarball([file('a', Buffer.alloc(2000))], { end: false });
    await bad(t, tar.subarray(0, 1000));
    await bad(t, tar.subarray(0, 300));
  });
  it('an empty stream, and something that is not a tar', async (t) => {
    await bad(t, Buffer.alloc(0));
    await bad(t, Buffer.from('hello, this is not a tar archive at all'.repeat(20)));
  });
  it('a zero block followed by more entries (hidden from tools that stop there)', async (t) => {
    await bad(
      t,
      Buffer.concat([
        makeTarball([file('a', 'x')], { end: false }),
        Buffer.alloc(512),
        makeTarball([file('b', 'y')]),
      ]),
    );
  });
  it('an unknown type flag, a malformed PAX record, a hard link to nothing', async (t) => {
    await bad(t, makeTarball([{ name: 'a', type: 'Z' }]));
    await bad(t, makeTarball([file('a', 'x', { pax: { path: 'a' } })]).fill(0x41, 512 + 0, 512 + 2));
    await bad(t, makeTarball([hardlink('a', 'does/not/exist')]));
  });
  it('a symlink with an empty target', async (t) => {
    await bad(t, makeTarball([symlink('a', '')]));
  });
  it('no end marker on a block boundary is accepted', async (t) => {
    const root = await tempDir(t);
    await applyLayer(root, streamOf(makeTarball([file('a', 'x')], { end: false })), { form: 'plain' });
    assert.equal(readFileSync(join(root, 'a'), 'utf8'), 'x');
  });
  it('limits: entries and bytes (ERR_TOO_LARGE)', async (t) => {
    await assert.rejects(
      apply(await tempDir(t), [file('a'), file('b'), file('c')], { maxEntries: 2 }),
      (e: Error & { code?: string }) => e.code === 'ERR_TOO_LARGE' && e.message.includes('"c"'),
    );
    await assert.rejects(
      apply(await tempDir(t), [file('a', Buffer.alloc(600)), file('b', Buffer.alloc(600))], {
        maxBytes: 1000,
      }),
      (e: Error & { code?: string }) => e.code === 'ERR_TOO_LARGE',
    );
    const ok = await apply(await tempDir(t), [file('a'), file('b')], { maxEntries: 2, maxBytes: 10_000 });
    assert.equal(ok.entries, 2);
  });
});

describe('applyLayer: sparse files (GNU tar as the oracle)', () => {
  const formats: [string, string[]][] = [
    ['old GNU (type S)', ['--format=gnu']],
    ['PAX 0.0', ['--format=posix', '--sparse-version=0.0']],
    ['PAX 0.1', ['--format=posix', '--sparse-version=0.1']],
    ['PAX 1.0', ['--format=posix', '--sparse-version=1.0']],
  ];
  for (const [label, args] of formats) {
    it(label, async (t) => {
      const src = await tempDir(t);
      // 40 MiB file with a few data islands; many islands force old-GNU extension blocks
      const f = join(src, 'sparse.img');
      await execFileP('truncate', ['-s', '40M', f]);
      const { openSync, writeSync, closeSync } = await import('node:fs');
      const fd = openSync(f, 'r+');
      for (let i = 0; i < 12; i++) writeSync(fd, Buffer.alloc(5000, 65 + i), 0, 5000, i * 3_000_000 + 123);
      writeSync(fd, Buffer.from('end'), 0, 3, 40 * 1024 * 1024 - 3);
      closeSync(fd);
      await writeFile(join(src, 'plain.txt'), 'after the sparse file');
      const tarPath = join(src, 'l.tar');
      await execFileP('tar', ['--sparse', ...args, '-C', src, '-cf', tarPath, 'sparse.img', 'plain.txt']);
      const root = await tempDir(t);
      const r = await applyLayer(root, streamOf(readFileSync(tarPath)), { form: 'plain' });
      assert.deepEqual(readFileSync(join(root, 'sparse.img')), readFileSync(f));
      assert.equal(readFileSync(join(root, 'plain.txt'), 'utf8'), 'after the sparse file');
      assert.equal(r.bytes, 40 * 1024 * 1024 + 21);
      // holes stay holes
      assert.ok(statSync(join(root, 'sparse.img')).blocks * 512 < 2 * 1024 * 1024);
    });
  }
});

describe('applyLayer: xattrs', {
  skip: haveGetfattr ? false : 'getfattr/setfattr (Debian package attr) not installed',
}, () => {
  it('SCHILY.xattr.* and LIBARCHIVE.xattr.* on files and directories; binary values kept', async (t) => {
    const root = await tempDir(t);
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const r = await apply(root, [
      dir('d/', { pax: { 'SCHILY.xattr.user.dir': 'yes' } }),
      file('d/f', 'content', { pax: { 'SCHILY.xattr.user.bin': Buffer.from([0, 1, 2, 255, 10]) } }),
      hardlink('d/f-link', 'd/f'),
      file('d/lib', 'x', {
        pax: { [`LIBARCHIVE.xattr.user.${encodeURIComponent('a b')}`]: Buffer.from('v1').toString('base64') },
      }),
      ...(isRoot
        ? [file('ping', 'ELF', { mode: 0o755, pax: { 'SCHILY.xattr.security.capability': cap } })]
        : []),
      ...(isRoot ? [file('tr', 't', { pax: { 'SCHILY.xattr.trusted.thing': 'tv' } })] : []),
      ...(isRoot
        ? [symlink('sl', '/abs/target', { mtime: 1_000, pax: { 'SCHILY.xattr.trusted.sym': 'sv' } })]
        : []),
      ...(isRoot ? [{ name: 'fifo', type: '6', pax: { 'SCHILY.xattr.trusted.f': 'fv' } }] : []),
    ]);
    assert.deepEqual(await getXattrs(join(root, 'd')), { 'user.dir': hex('yes') });
    assert.deepEqual(await getXattrs(join(root, 'd/f')), {
      'user.bin': hex(Buffer.from([0, 1, 2, 255, 10])),
    });
    assert.equal(readFileSync(join(root, 'd/f'), 'utf8'), 'content');
    assert.deepEqual(await getXattrs(join(root, 'd/lib')), { 'user.a b': hex('v1') });
    // a hard link to a file made through the tar helper waits for it
    assert.equal(statSync(join(root, 'd/f-link')).ino, statSync(join(root, 'd/f')).ino);
    if (isRoot) {
      assert.deepEqual(await getXattrs(join(root, 'ping')), { 'security.capability': hex(cap) });
      assert.equal(statSync(join(root, 'ping')).mode & 0o7777, 0o755);
      assert.deepEqual(await getXattrs(join(root, 'tr')), { 'trusted.thing': hex('tv') });
      assert.equal(readlinkSync(join(root, 'sl')), '/abs/target');
      assert.equal(lstatSync(join(root, 'sl')).mtimeMs, 1_000_000);
      assert.deepEqual(await getXattrs(join(root, 'sl')), { 'trusted.sym': hex('sv') });
      assert.ok(lstatSync(join(root, 'fifo')).isFIFO());
      assert.deepEqual(await getXattrs(join(root, 'fifo')), { 'trusted.f': hex('fv') });
    }
    assert.deepEqual(r.warnings, []);
  });

  it('a layer cannot set trusted.overlay.* itself (dropped with a warning)', async (t) => {
    const root = await tempDir(t);
    const r = await apply(root, [dir('d/', { pax: { 'SCHILY.xattr.trusted.overlay.opaque': 'y' } })], {
      form: 'overlay',
    });
    assert.deepEqual(await getXattrs(join(root, 'd')), {});
    assert.deepEqual(
      r.warnings.map((w) => w.code),
      ['W_OVERLAY_XATTR_DROPPED'],
    );
  });

  it('user.* on a symlink cannot be set: warning, the link is still made', async (t) => {
    const root = await tempDir(t);
    const r = await apply(root, [symlink('l', 'x', { pax: { 'SCHILY.xattr.user.k': 'v' } })]);
    assert.equal(readlinkSync(join(root, 'l')), 'x');
    assert.deepEqual(
      r.warnings.map((w) => w.code),
      ['W_XATTR_SKIPPED'],
    );
  });

  it('strict mode turns a warning into an error', async (t) => {
    await assert.rejects(
      apply(await tempDir(t), [symlink('l', 'x', { pax: { 'SCHILY.xattr.user.k': 'v' } })], { strict: true }),
      (e: Error & { code?: string }) => e.code === 'ERR_UNSUPPORTED',
    );
  });
});

describe('applyLayer: hard links across layers', () => {
  it('plain form: a hard link to a lower layer file', async (t) => {
    const root = await tempDir(t);
    await apply(root, [dir('usr/'), file('usr/bin-a', 'binary', { mode: 0o755 })]);
    await apply(root, [hardlink('usr/bin-b', 'usr/bin-a'), hardlink('usr/bin-a-again', './usr/bin-a')]);
    const a = statSync(join(root, 'usr/bin-a'));
    assert.equal(statSync(join(root, 'usr/bin-b')).ino, a.ino);
    assert.equal(statSync(join(root, 'usr/bin-a-again')).ino, a.ino);
    assert.equal(a.nlink, 3);
  });

  it('overlay form: a hard link to a lower file is copied up (with lowers), an error without', async (t) => {
    const lower = await tempDir(t);
    await apply(
      lower,
      [dir('usr/', { mode: 0o750 }), file('usr/bin-a', 'binary', { mode: 0o4755, mtime: 1_000 })],
      {
        form: 'overlay',
      },
    );
    const upper = await tempDir(t);
    await apply(upper, [hardlink('usr/bin-b', 'usr/bin-a'), hardlink('usr/bin-c', 'usr/bin-a')], {
      form: 'overlay',
      lowers: [lower],
    });
    assert.equal(readFileSync(join(upper, 'usr/bin-b'), 'utf8'), 'binary');
    const b = statSync(join(upper, 'usr/bin-b'));
    assert.equal(b.mode & 0o7777, 0o4755);
    assert.equal(b.mtimeMs, 1_000_000);
    assert.equal(statSync(join(upper, 'usr/bin-c')).ino, b.ino);
    assert.equal(existsSync(join(upper, 'usr/bin-a')), false);
    // the directory the layer needed takes the lower one's metadata
    assert.equal(statSync(join(upper, 'usr')).mode & 0o7777, 0o750);
    await assert.rejects(
      apply(await tempDir(t), [hardlink('usr/bin-b', 'usr/bin-a')], { form: 'overlay' }),
      (e: Error & { code?: string }) => e.code === 'ERR_INVALID_ARCHIVE' && /lowers/.test(e.message),
    );
  });

  it('CVE-2018-20834 pattern: a file written over a hard link does not write through it', async (t) => {
    const root = await tempDir(t);
    await apply(root, [file('orig', 'original'), hardlink('alias', 'orig'), file('alias', 'replaced')]);
    assert.equal(readFileSync(join(root, 'orig'), 'utf8'), 'original');
    assert.equal(readFileSync(join(root, 'alias'), 'utf8'), 'replaced');
  });
});

describe('applyLayer: whiteouts, plain form', () => {
  async function lowerTree(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
    const root = await tempDir(t);
    await apply(root, [
      dir('a/'),
      file('a/gone', 'gone!'),
      file('a/kept', 'kept'),
      dir('a/sub/'),
      file('a/sub/deep', 'deep'),
      dir('o/'),
      file('o/lower1', '1'),
      dir('o/lowerdir/'),
      file('o/lowerdir/x', 'x'),
      file('top', 'top'),
    ]);
    return root;
  }

  it('.wh.NAME removes a file or a whole directory of a lower layer', async (t) => {
    const root = await lowerTree(t);
    const r = await apply(
      root,
      [file('a/.wh.gone'), file('a/.wh.sub'), file('.wh.top'), file('a/.wh.never-existed')],
      {
        listChanges: true,
      },
    );
    assert.deepEqual((await readdir(join(root, 'a'))).sort(), ['kept']);
    assert.equal(existsSync(join(root, 'top')), false);
    assert.equal(r.counts.whiteouts, 4);
    assert.equal(r.changes.deleted, 3);
    assert.equal(r.changes.deletedBytes, 5 + 4 + 3);
    assert.deepEqual(
      r.paths?.map((p) => `${p.kind} ${p.path} ${p.size}`),
      ['deleted a/gone 5', 'deleted a/sub 4', 'deleted top 3'],
    );
  });

  it('.wh..wh..opq empties a lower directory but keeps what this layer puts there, in any order', async (t) => {
    for (const order of ['marker-first', 'marker-last', 'marker-middle'] as const) {
      const root = await lowerTree(t);
      const mine = [file('o/new1', 'n1'), dir('o/newdir/'), file('o/newdir/n2', 'n2')];
      const marker = file('o/.wh..wh..opq');
      const entries =
        order === 'marker-first'
          ? [dir('o/'), marker, ...mine]
          : order === 'marker-last'
            ? [dir('o/'), ...mine, marker]
            : [dir('o/'), mine[0] as FixtureEntry, marker, ...mine.slice(1)];
      const r = await apply(root, entries);
      assert.deepEqual((await readdir(join(root, 'o'))).sort(), ['new1', 'newdir'], order);
      assert.deepEqual(await readdir(join(root, 'o/newdir')), ['n2'], order);
      assert.equal(r.counts.opaques, 1);
    }
  });

  it('a whiteout after the same layer wrote the path does not remove it', async (t) => {
    const root = await lowerTree(t);
    await apply(root, [
      file('a/gone', 'rewritten'),
      file('a/.wh.gone'),
      file('fresh', 'f'),
      file('.wh.fresh'),
    ]);
    assert.equal(readFileSync(join(root, 'a/gone'), 'utf8'), 'rewritten');
    assert.equal(readFileSync(join(root, 'fresh'), 'utf8'), 'f');
  });

  it('a whiteout of a directory this layer also writes removes only the lower content', async (t) => {
    for (const whiteoutFirst of [true, false]) {
      const root = await lowerTree(t);
      const w = file('a/.wh.sub');
      const mine = [dir('a/sub/'), file('a/sub/mine', 'mine')];
      await apply(root, whiteoutFirst ? [w, ...mine] : [...mine, w]);
      assert.deepEqual(await readdir(join(root, 'a/sub')), ['mine'], `whiteout first: ${whiteoutFirst}`);
    }
  });

  it('a whiteout keeps implicit parents of what this layer wrote below the path', async (t) => {
    const root = await lowerTree(t);
    await apply(root, [file('a/sub/new/file', 'n'), file('a/.wh.sub')]);
    assert.deepEqual(await readdir(join(root, 'a/sub')), ['new']);
    assert.equal(readFileSync(join(root, 'a/sub/new/file'), 'utf8'), 'n');
  });

  it('aufs metadata (.wh..wh.plnk, .wh..wh.aufs) is skipped', async (t) => {
    const root = await tempDir(t);
    const r = await apply(root, [
      dir('.wh..wh.plnk/'),
      file('.wh..wh.plnk/1234.5', 'x'),
      file('.wh..wh.aufs'),
      file('ok', 'ok'),
    ]);
    assert.deepEqual(await readdir(root), ['ok']);
    assert.equal(r.counts.skipped, 3);
  });
});

describe('applyLayer: whiteouts, overlay form', () => {
  it('whiteouts become 0/0 character devices, opaque markers the trusted.overlay.opaque xattr', {
    skip: isRoot ? false : 'needs root (mknod, trusted.* xattrs)',
  }, async (t) => {
    const upper = await tempDir(t);
    const r = await apply(
      upper,
      [dir('a/'), file('a/.wh.gone'), dir('o/'), file('o/.wh..wh..opq'), file('o/new', 'n'), file('b/.wh.x')],
      { form: 'overlay' },
    );
    const wo = lstatSync(join(upper, 'a/gone'));
    assert.ok(wo.isCharacterDevice());
    assert.equal(wo.rdev, 0);
    assert.ok(lstatSync(join(upper, 'b/x')).isCharacterDevice());
    assert.equal(readFileSync(join(upper, 'o/new'), 'utf8'), 'n');
    if (haveGetfattr) {
      assert.deepEqual(await getXattrs(join(upper, 'o')), { 'trusted.overlay.opaque': hex('y') });
      assert.deepEqual(await getXattrs(join(upper, 'a')), {});
    }
    assert.equal(r.counts.whiteouts, 2);
    assert.equal(r.counts.opaques, 1);
    assert.equal(r.changes.deleted, 2);
  });

  it('same-layer orders: a whiteout of a directory the layer writes makes it opaque; whiteouts under an opaque directory are dropped', {
    skip: isRoot && haveGetfattr ? false : 'needs root and getfattr',
  }, async (t) => {
    const upper = await tempDir(t);
    await apply(
      upper,
      [
        dir('d1/'),
        file('d1/mine', 'm'),
        file('.wh.d1'), // after: d1 is this layer's, so it becomes opaque
        file('.wh.d2'), // before: a device first...
        dir('d2/'), // ...then the directory replaces it and is opaque
        file('o/.wh.early'), // a whiteout under a directory that becomes opaque later
        file('o/.wh..wh..opq'),
        file('o/.wh.late'),
        file('f'),
        file('.wh.f'), // a file of this layer: untouched
      ],
      { form: 'overlay' },
    );
    assert.deepEqual(await getXattrs(join(upper, 'd1')), { 'trusted.overlay.opaque': hex('y') });
    assert.ok(lstatSync(join(upper, 'd2')).isDirectory());
    assert.deepEqual(await getXattrs(join(upper, 'd2')), { 'trusted.overlay.opaque': hex('y') });
    assert.deepEqual(await readdir(join(upper, 'o')), []);
    assert.deepEqual(await getXattrs(join(upper, 'o')), { 'trusted.overlay.opaque': hex('y') });
    assert.ok(lstatSync(join(upper, 'f')).isFile());
  });

  it('overlay-form layers mounted with overlayfs equal plain-form apply', {
    skip: overlaySkip(),
  }, async (t) => {
    const layers: FixtureEntry[][] = [
      [
        dir('etc/', { mode: 0o755 }),
        file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n'),
        file('etc/group', 'root:x:0:\n'),
        dir('usr/'),
        dir('usr/bin/'),
        file('usr/bin/tool', 'v1', { mode: 0o755 }),
        file('usr/bin/other', 'o', { mode: 0o755 }),
        symlink('bin', 'usr/bin'),
        dir('var/'),
        dir('var/cache/'),
        file('var/cache/a', 'a'),
        dir('var/cache/sub/'),
        file('var/cache/sub/b', 'b'),
        dir('data/'),
        file('data/old', 'old'),
        { name: 'dev/null', type: '3', devmajor: 1, devminor: 3, mode: 0o666 },
        { name: 'run/fifo', type: '6' },
      ],
      [
        dir('etc/'),
        file('etc/.wh.group'),
        file('etc/passwd', 'root:x:0:0::/root:/bin/bash\n'),
        dir('usr/'),
        dir('usr/bin/'),
        hardlink('usr/bin/tool2', 'usr/bin/tool'),
        dir('var/'),
        dir('var/cache/'),
        file('var/cache/new', 'new'),
        file('var/cache/.wh..wh..opq'),
        file('.wh.data'),
        dir('data/'),
        file('data/fresh', 'fresh'),
      ],
      [
        file('usr/bin/.wh.other'),
        dir('var/'),
        file('var/.wh.cache'),
        dir('etc/'),
        file('etc/group', 'new group\n'),
        file('etc/added', 'added'),
      ],
    ];
    const plain = await tempDir(t);
    for (const l of layers) await apply(plain, l, { form: 'plain' });
    const uppers: string[] = [];
    for (const l of layers) {
      const u = await tempDir(t);
      await apply(u, l, { form: 'overlay', lowers: [...uppers].reverse() });
      uppers.push(u);
    }
    const mnt = await tempDir(t);
    await execFileP('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `ro,lowerdir=${[...uppers].reverse().join(':')}`,
      mnt,
    ]);
    let a: Awaited<ReturnType<typeof describeTree>>;
    let b: typeof a;
    try {
      [a, b] = await Promise.all([
        describeTree(plain, { ignoreXattrs: ['trusted.overlay.'] }),
        describeTree(mnt, { ignoreXattrs: ['trusted.overlay.'] }),
      ]);
    } finally {
      await execFileP('umount', [mnt]);
    }
    // overlayfs shows a copied-up hard link as its own file: compare without link groups
    const strip = (es: typeof a) => es.map(({ hardlinks: _h, ...e }) => e);
    assert.deepEqual(compareTrees(strip(a), strip(b), ['plain', 'overlay']), []);
    assert.ok(a.some((e) => e.path === 'etc/added'));
  });
});

function overlaySkip(): string | false {
  if (!isRoot) return 'needs root to mount overlayfs';
  if (!existsSync('/proc/filesystems') || !readFileSync('/proc/filesystems', 'utf8').includes('overlay')) {
    return 'the kernel has no overlayfs';
  }
  return false;
}

describe('applyLayer: changes', () => {
  it('counts added, modified, shadowed and deleted bytes against the lower tree', async (t) => {
    const root = await tempDir(t);
    await apply(root, [dir('d/'), file('d/a', 'aaaa'), file('d/b', 'bb'), file('c', 'ccc')]);
    const r = await apply(root, [file('d/a', 'A'), file('d/new', 'nnnnn'), file('.wh.c'), file('d/.wh.b')], {
      listChanges: true,
    });
    assert.deepEqual(r.changes, {
      added: 1,
      modified: 1,
      deleted: 2,
      addedBytes: 5,
      modifiedBytes: 1,
      shadowedBytes: 4,
      deletedBytes: 5,
    });
    assert.deepEqual(
      r.paths?.map((p) => `${p.kind}:${p.path}`),
      ['modified:d/a', 'added:d/new', 'deleted:c', 'deleted:d/b'],
    );
  });

  it('rejects a root that is not a directory, and options that make no sense', async (t) => {
    const root = await tempDir(t);
    await writeFile(join(root, 'file'), 'x');
    await assert.rejects(
      applyLayer(join(root, 'file'), streamOf(makeTarball([])), { form: 'plain' }),
      /not a directory/,
    );
    await assert.rejects(
      applyLayer(root, streamOf(makeTarball([])), { form: 'weird' as 'plain' }),
      (e: Error & { code?: string }) => e.code === 'ERR_INVALID_ARGUMENT',
    );
    await assert.rejects(
      applyLayer(root, streamOf(makeTarball([])), { form: 'plain', lowers: [root] }),
      (e: Error & { code?: string }) => e.code === 'ERR_INVALID_ARGUMENT',
    );
  });

  it('a symlinked root is resolved once (the layer cannot move it)', async (t) => {
    const base = await tempDir(t);
    await mkdir(join(base, 'real'));
    await fsSymlink(join(base, 'real'), join(base, 'link'));
    await apply(join(base, 'link'), [file('x', 'x')]);
    assert.equal(readFileSync(join(base, 'real/x'), 'utf8'), 'x');
  });
});
